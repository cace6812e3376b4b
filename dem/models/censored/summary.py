"""Results of censored regression as tables: the R-style summary and the marginal effects."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class MarginalEffects(NamedTuple):
    """Marginal effects ∂E[y | x]/∂x_j of the observed (censored) outcome.

    Attributes
    ----------
    at_means : ndarray of shape (n_features,)
        At the mean of X.
    average : ndarray of shape (n_features,)
        Averaged over the rows of X.
    """

    at_means: np.ndarray
    average: np.ndarray


@dataclass(frozen=True)
class CensoredSummary:
    """What :meth:`~.estimator.CensoredRegression.summary` returns; ``str()`` prints it as R."""

    names: list[str]
    estimate: np.ndarray
    std_error: np.ndarray
    z_value: np.ndarray
    p_value: np.ndarray
    counts: dict[str, int]
    scale: float
    loglik: float
    n_iter: int
    converged: bool
    wald: float
    wald_df: int
    wald_p_value: float

    def __str__(self) -> str:
        labels = {
            "total": "Total",
            "left": "Left-censored",
            "exact": "Uncensored",
            "right": "Right-censored",
            "interval": "Interval-censored",
        }
        shown = [k for k in labels if k != "interval" or self.counts.get("interval", 0)]
        width = max(max(len(labels[k]), len(str(self.counts[k]))) for k in shown)
        estimate, std_error = _column(self.estimate), _column(self.std_error)
        z_value = [f"{z:.3f}" for z in self.z_value]
        p_value = [_format_p(p) for p in self.p_value]
        cells = list(zip(estimate, std_error, z_value, p_value, strict=True))
        header = ("Estimate", "Std. Error", "z value", "Pr(>|z|)")
        widths = [max(len(header[j]), *(len(row[j]) for row in cells)) for j in range(4)]
        name_width = max(len(name) for name in self.names)
        lines = [
            "Observations:",
            " ".join(f"{labels[k]:>{width}}" for k in shown),
            " ".join(f"{self.counts[k]:>{width}}" for k in shown),
            "",
            "Coefficients:",
            " " * name_width
            + " "
            + " ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)),
        ]
        for name, row, p in zip(self.names, cells, self.p_value, strict=True):
            values = " ".join(f"{c:>{w}}" for c, w in zip(row, widths, strict=True))
            lines.append(f"{name:<{name_width}} {values} {_stars(p)}".rstrip())
        lines += [
            "---",
            "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1",
            "",
            f"Scale: {_significant(self.scale, 4)}",
            "",
            "Gaussian distribution",
            f"Number of EM iterations: {self.n_iter}"
            + ("" if self.converged else " (not converged)"),
            f"Log-likelihood: {_significant(self.loglik, 4)} on {len(self.names)} Df",
        ]
        if self.wald_df:
            lines.append(
                f"Wald-statistic: {_significant(self.wald, 4)} on {self.wald_df} Df, "
                f"p-value: {_format_p(self.wald_p_value, 5)}"
            )
        return "\n".join(lines)

    __repr__ = __str__


def _decimals(value: float, digits: int) -> int:
    """Decimals that show ``value`` with at least ``digits`` significant digits (at most 15)."""
    if value == 0 or not math.isfinite(value):
        return 0
    return int(min(max(digits - 1 - math.floor(math.log10(abs(value))), 0), 15))


def _significant(value: float, digits: int) -> str:
    """Fixed notation with ``digits`` significant digits, as R's ``format(x, digits=)``."""
    return f"{value:.{_decimals(value, digits)}f}"


def _column(values: np.ndarray, digits: int = 4) -> list[str]:
    """One number of decimals for a whole column, enough for ``digits`` significant digits
    in every entry (R's ``printCoefmat``)."""
    decimals = max(_decimals(float(v), digits) for v in values)
    return [f"{v:.{decimals}f}" for v in values]


def _format_p(p: float, digits: int = 3) -> str:
    """A p-value as R's ``format.pval``: ``< 2e-16`` below machine precision."""
    if p < 2.2e-16:
        return "< 2e-16"
    return f"{p:.{digits}g}" if p >= 1e-4 else f"{p:.{digits - 1}e}"


def _stars(p: float) -> str:
    for cut, mark in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")):
        if p < cut:
            return mark
    return ""
