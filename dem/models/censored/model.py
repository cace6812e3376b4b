"""The EM model of censored regression (see :mod:`dem.model`): the chunk passes the engine calls.

:class:`CensoredModel` gives the E-step, M-step and convergence rule, the parameters as a
vector for SQUAREM, and the other passes over the data: the observed information for
the standard errors, the log-likelihood, and the check of ``y`` and the limits
(:data:`CHECKS`, combined by :func:`combine_checks`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy import linalg

from dem.model import Block, Params, Stats, add_stats
from dem.models.censored.kernels import (
    as_lower,
    as_upper,
    conditional_moments,
    hessian_weights,
    interval_bounds,
    limit_rows,
)
from dem.models.sample_weight import block_weights, count, positive_block, weighted_sum
from dem.models.scratch import Scratch, thread_scratch

# Rows per block of the kernels: their buffers (in this thread's scratch "censored",
# kept from chunk to chunk) are 128 KiB each; smaller blocks cost more in per-call
# overhead than they gain in cache.
BLOCK_ROWS = 16_384
SCRATCH = "censored"
# X'X is called singular when its correlation form has condition number above this.
MAX_CONDITION = 1e12


# --- checking the rows (one pass, global row numbers) ---------------------------------

CHECKS = {  # name: (what is wrong, what to do)
    "bad_limits": ("left >= right", "Give each row left < right."),
    "nan_y": (
        "y is NaN",
        "Remove those rows, or, for interval censoring, pass per-observation left and right "
        "arrays holding each row's interval.",
    ),
    "bad_interval": (
        "left > right for a row with NaN y (an interval-censored row)",
        "Give each interval left <= right (equal limits mean an exact value).",
    ),
    "no_limits": (
        "y is NaN and neither limit is finite",
        "Remove those rows (they carry no information), or give their interval.",
    ),
}


def combine_checks(a: Stats, b: Stats) -> Stats:
    """Sum the counts; keep the first offending row (rows of ``b`` follow those of ``a``)."""
    out = {key: a[key] + b[key] for key in a if not key.startswith("first_")}
    for key in a:
        if key.startswith("first_"):
            out[key] = np.minimum(a[key], a["n"] + b[key])
    return out


# --- the model ------------------------------------------------------------------------


@dataclass(frozen=True)
class CensoredModel:
    """The pure functions of censored regression (see :mod:`dem.model`).

    ``left`` and ``right`` are scalar limits (±inf for none), or None when the block
    holds a per-row array of that name (NaN meaning no limit). ``has_y`` False means
    every row is interval-censored by its limits.
    """

    fit_intercept: bool = True
    left: float | None = -math.inf
    right: float | None = math.inf
    has_y: bool = True

    name: ClassVar[str] = "censored_regression"
    missing_ok: ClassVar[frozenset[str]] = frozenset({"y", "left", "right"})
    remedy: ClassVar[str] = (
        "Drop collinear or constant columns of X, scale X and y to unit variance, or check "
        "the censoring limits."
    )

    @property
    def inputs(self) -> tuple[str, ...]:
        names = ["X"] + ["y"] * self.has_y
        names += ["left"] * (self.left is None) + ["right"] * (self.right is None)
        return tuple(names)

    def config(self) -> dict[str, Any]:
        def limit(value: float | None) -> float | str | None:
            if value is None:
                return "per-observation"
            return None if math.isinf(value) else float(value)

        return {
            "fit_intercept": self.fit_intercept,
            "left": limit(self.left),
            "right": limit(self.right),
            "has_y": self.has_y,
        }

    def param_dims(self) -> dict[str, tuple[str, ...]]:
        return {"coef": ("term",), "scale": (), "mean_xxT": ("term", "term_")}

    # --- pieces shared by every pass --------------------------------------------------

    def targets(self, block: Block) -> tuple[np.ndarray, np.ndarray | float, np.ndarray | float]:
        """y (NaN where absent) and the limits, with ±inf for no limit."""
        n = len(block["X"])
        y = block["y"] if self.has_y else np.full(n, np.nan)
        left = as_lower(block["left"]) if self.left is None else self.left
        right = as_upper(block["right"]) if self.right is None else self.right
        return np.asarray(y, dtype=np.float64), left, right

    def linear(self, x: np.ndarray, coef: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The linear predictor x β (intercept first in ``coef``), into ``out`` when given."""
        if not self.fit_intercept:
            return np.matmul(x, coef, out=out)
        mu = np.matmul(x, coef[1:], out=out)
        mu += coef[0]
        return mu

    def cross(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Σ x_i v_i over the rows, with the intercept's 1 first."""
        if self.fit_intercept:
            return np.concatenate([[v.sum()], x.T @ v])
        return x.T @ v

    def gram(
        self, x: np.ndarray, w: np.ndarray | None = None, scratch: Scratch | None = None
    ) -> np.ndarray:
        """Σ w_i x_i x_iᵀ (w = 1 when None), with the intercept's 1 first.

        ``x * w`` is formed in the buffer "weighted_x" of ``scratch`` when given.
        """
        out = None if w is None or scratch is None else scratch("weighted_x", x.shape)
        wx = x if w is None else np.multiply(x, w[:, None], out=out)
        inner = x.T @ wx
        if not self.fit_intercept:
            return inner
        col = wx.sum(axis=0)
        out = np.empty((len(inner) + 1, len(inner) + 1))
        out[0, 0] = len(x) if w is None else w.sum()
        out[0, 1:] = out[1:, 0] = col
        out[1:, 1:] = inner
        return out

    def _rows(
        self, block: Block, scratch: Scratch
    ) -> Iterator[tuple[np.ndarray, Any, Any, np.ndarray | None]]:
        """(x, lower, upper, weights) for each row block, in float64 (weights None
        without sample weights; rows of weight 0 left out).

        Each block's arrays are in the buffers of ``scratch`` (or views of the chunk),
        valid until the next block.
        """
        weights, block = positive_block(block)
        x_all = block["X"]
        for start in range(0, len(x_all), BLOCK_ROWS):
            rows = slice(start, start + BLOCK_ROWS)
            x = scratch.float64("x", x_all[rows])
            if self.has_y:
                y = scratch.float64("y", block["y"][rows])
            else:
                y = scratch("y", (len(x),))
                y.fill(np.nan)
            left: np.ndarray | float = (
                limit_rows(block["left"][rows], -np.inf, "left", scratch)
                if self.left is None
                else self.left
            )
            right: np.ndarray | float = (
                limit_rows(block["right"][rows], np.inf, "right", scratch)
                if self.right is None
                else self.right
            )
            lower, upper = interval_bounds(y, left, right, scratch=scratch)
            yield x, lower, upper, None if weights is None else weights[rows]

    # --- the EM protocol ---------------------------------------------------------------

    def e_step(self, block: Block, params: Params) -> Stats:
        coef, scale = params["coef"], float(params["scale"])
        anchor = params.get("anchor_coef")
        # XᵀX on the first pass only (it is kept in the parameters), but on every pass with
        # an anchor: statistics taken at different parameters then have the same keys
        first_pass = "mean_xxT" not in params or anchor is not None
        stats: Stats = {
            "n": count(len(block["X"]), block_weights(block)),
            "loglik": np.float64(0.0),
            "sum_x_resid": np.zeros(len(coef)),
            "sum_resid_sq": np.float64(0.0),
        }
        if first_pass:
            stats["sum_xxT"] = np.zeros((len(coef), len(coef)))
        scratch = thread_scratch(SCRATCH)
        for x, lower, upper, w in self._rows(block, scratch):
            mu = self.linear(x, coef, out=scratch("mu", (len(x),)))
            resid, resid_sq, loglik = conditional_moments(
                lower, upper, mu, scale, scratch=scratch, weights=w
            )
            if anchor is not None:  # about x β₀: E[y* - x β₀] and E[(y* - x β₀)²], row by row
                shift = mu - self.linear(x, anchor, out=scratch("anchor_mu", (len(x),)))
                resid_sq += shift * (2.0 * resid + shift)
                resid += shift
            stats["loglik"] += loglik
            stats["sum_x_resid"] += self.cross(x, resid if w is None else resid * w)
            stats["sum_resid_sq"] += weighted_sum(resid_sq, w)
            if first_pass:
                stats["sum_xxT"] += self.gram(x, w, scratch)
        return stats

    def anchor(self, params: Params) -> Params:
        """The coefficients of ``params``, as ``anchor_coef``: with it among the
        parameters, the E-step takes the residuals about ``x β₀`` (and XᵀX on every pass)
        instead of about the current ``x β``, so statistics taken at different parameters
        add up (incremental EM; see :mod:`dem.incremental`), and the M-step steps from
        ``β₀``."""
        return {"anchor_coef": np.array(params["coef"], dtype=np.float64)}

    def combine(self, a: Stats, b: Stats) -> Stats:
        return add_stats(a, b)

    def m_step(self, stats: Stats, params: Params) -> Params:
        n = stats["n"]
        if "sum_xxT" in stats:
            mean_xxT = stats["sum_xxT"] / n
            check_design(mean_xxT, self.fit_intercept)
        else:
            mean_xxT = params["mean_xxT"]
        mean_x_resid = stats["sum_x_resid"] / n
        delta = linalg.cho_solve(linalg.cho_factor(mean_xxT), mean_x_resid)
        variance = stats["sum_resid_sq"] / n - delta @ mean_x_resid
        if not (np.isfinite(variance) and variance > 0.0):
            raise FloatingPointError(
                f"The scale of the latent variable collapsed (σ² = {variance}): the uncensored "
                "rows are fitted exactly. Use more uncensored rows or fewer features."
            )
        base = params.get("anchor_coef", params["coef"])  # what the residuals are about
        return {"coef": base + delta, "scale": np.sqrt(variance), "mean_xxT": mean_xxT}

    def converged(self, change: float, tol: float, previous: Params, params: Params) -> bool:
        """Stop when one iteration moves the fit by less than ``tol`` (see the estimator).

        The step is the larger of the RMS change of the linear predictor over the data
        in units of σ, ``sqrt(Δβᵀ (XᵀX/n) Δβ) / σ``, and the change of ``log σ``.
        """
        delta = params["coef"] - previous["coef"]
        step = math.sqrt(max(float(delta @ params["mean_xxT"] @ delta), 0.0)) / float(
            params["scale"]
        )
        step = max(step, abs(math.log(float(params["scale"]) / float(previous["scale"]))))
        return step < tol

    # --- parameters as a flat vector, for SQUAREM ----------------------------------------

    def pack(self, params: Params) -> np.ndarray:
        """The coefficients and ``log σ`` as one vector (log σ: every real is valid)."""
        return np.concatenate([params["coef"], [math.log(float(params["scale"]))]])

    def unpack(self, vector: np.ndarray, like: Params) -> Params:
        """Parameters from a vector: ``σ = exp(last entry)``; ``mean_xxT`` from ``like``.

        ``XᵀX / n`` is not a parameter and is carried through unchanged (when ``like``
        has it). A vector that is not finite, or whose σ overflows or underflows, is
        refused with a ValueError (SQUAREM then keeps the plain EM step).
        """
        coef = np.array(vector[:-1], dtype=np.float64)
        with np.errstate(over="ignore", under="ignore"):
            scale = np.exp(np.float64(vector[-1]))
        if not (np.all(np.isfinite(coef)) and np.isfinite(scale) and scale > 0.0):
            raise ValueError(f"No valid parameters: coef {coef}, scale {scale}.")
        params: Params = {"coef": coef, "scale": scale}
        if "mean_xxT" in like:
            params["mean_xxT"] = like["mean_xxT"]
        return params

    # --- the other passes --------------------------------------------------------------

    def information(self, block: Block, params: Params) -> Stats:
        """Gradient and Hessian of the log-likelihood in (β, log σ), summed over the chunk."""
        coef, scale = params["coef"], float(params["scale"])
        k = len(coef)
        stats: Stats = {
            "n": count(len(block["X"]), block_weights(block)),
            "loglik": np.float64(0.0),
            "grad": np.zeros(k + 1),
            "hessian": np.zeros((k + 1, k + 1)),
        }
        scratch = thread_scratch(SCRATCH)
        for x, lower, upper, w in self._rows(block, scratch):
            mu = self.linear(x, coef, out=scratch("mu", (len(x),)))
            stats["loglik"] += conditional_moments(
                lower, upper, mu, scale, scratch=scratch, weights=w
            )[2]
            g_mu, g_tau, h_mumu, h_mutau, h_tautau = hessian_weights(
                lower, upper, mu, scale, scratch=scratch
            )
            if w is not None:  # each row's terms times its weight
                g_mu, g_tau, h_mumu, h_mutau, h_tautau = (
                    g_mu * w,
                    g_tau * w,
                    h_mumu * w,
                    h_mutau * w,
                    h_tautau * w,
                )
            stats["grad"][:k] += self.cross(x, g_mu) / scale
            stats["grad"][k] += g_tau.sum()
            stats["hessian"][:k, :k] += self.gram(x, h_mumu, scratch) / scale**2
            cross = self.cross(x, h_mutau) / scale
            stats["hessian"][:k, k] += cross
            stats["hessian"][k, :k] += cross
            stats["hessian"][k, k] += h_tautau.sum()
        return stats

    def loglik(self, block: Block, params: Params) -> Stats:
        """The chunk's log-likelihood and size."""
        coef, scale = params["coef"], float(params["scale"])
        total = 0.0
        scratch = thread_scratch(SCRATCH)
        for x, lower, upper, w in self._rows(block, scratch):
            mu = self.linear(x, coef, out=scratch("mu", (len(x),)))
            total += conditional_moments(lower, upper, mu, scale, scratch=scratch, weights=w)[2]
        return {"n": count(len(block["X"]), block_weights(block)), "loglik": np.float64(total)}

    def check(self, block: Block, params: Params) -> Stats:
        """Counts of each kind of row, and the first invalid row of each kind (``inf`` if none).

        Only ``y`` and the limits are read; combine with :func:`combine_checks`.
        """
        first = next(iter(block.values()))
        n = len(first)
        y = block["y"] if self.has_y else np.full(n, np.nan)
        left = as_lower(block["left"]) if self.left is None else self.left
        right = as_upper(block["right"]) if self.right is None else self.right
        observed = ~np.isnan(y)
        bad = {
            "bad_limits": observed & (left >= right),
            "bad_interval": ~observed & (left > right),
            "no_limits": ~observed & np.isinf(left) & np.isinf(right),
            "nan_y": ~observed & (self.left is not None or self.right is not None),
        }
        stats: Stats = {"n": np.float64(n)}
        for key, mask in bad.items():
            mask = np.broadcast_to(mask, (n,))
            stats[f"n_{key}"] = np.float64(mask.sum())
            stats[f"first_{key}"] = np.float64(np.argmax(mask) if mask.any() else np.inf)
        valid = ~np.any([np.broadcast_to(m, (n,)) for m in bad.values()], axis=0)
        below = observed & (y <= left)
        above = observed & ~below & (y >= right)
        stats["n_left"] = np.float64(np.sum(below & valid))
        stats["n_right"] = np.float64(np.sum(above & valid))
        stats["n_exact"] = np.float64(
            np.sum(valid & ((observed & ~below & ~above) | (~observed & (left == right))))
        )
        stats["n_interval"] = np.float64(np.sum(valid & ~observed & (left < right)))
        return stats


def check_design(mean_xxT: np.ndarray, fit_intercept: bool) -> None:
    """Raise a ValueError naming the columns of X that make XᵀX singular."""
    names = (["the intercept"] if fit_intercept else []) + [
        f"column {j}" for j in range(len(mean_xxT) - fit_intercept)
    ]
    norms = np.sqrt(np.diag(mean_xxT))
    zero = np.flatnonzero(norms == 0.0)
    if zero.size:
        raise ValueError(
            f"X's {', '.join(names[j] for j in zero)} is all zeros, so XᵀX is singular. "
            "Drop that column."
        )
    correlation = mean_xxT / np.outer(norms, norms)
    eigenvalues, eigenvectors = np.linalg.eigh(correlation)
    if eigenvalues[0] > eigenvalues[-1] / MAX_CONDITION:
        return
    weights = np.abs(eigenvectors[:, 0])
    involved = [names[j] for j in np.flatnonzero(weights > 0.1 * weights.max())]
    hint = (
        " A constant column duplicates the intercept (fit_intercept=True)."
        if fit_intercept and "the intercept" in involved
        else ""
    )
    raise ValueError(
        f"Columns of X are collinear: {', '.join(involved)} are linearly dependent (XᵀX is "
        f"singular, condition number {eigenvalues[-1] / max(eigenvalues[0], 1e-300):.1e}). "
        f"Drop one of them, or centre and scale X.{hint}"
    )
