"""Gaussian mixtures with missing values (NaN), handled exactly by EM.

NaN entries are missing at random. A row's responsibilities come from the marginal
density of its observed coordinates o, ``w_k N(x_o | μ_k,o, Σ_k,oo)``; the M-step takes
the expected sufficient statistics: each missing block replaced by its conditional mean
``x̂_k,m = E[x_m | x_o, k] = μ_k,m + Σ_k,mo Σ_k,oo⁻¹ (x_o − μ_k,o)`` and each scatter
completed by the conditional covariance ``C_k,m = Σ_k,mm − Σ_k,mo Σ_k,oo⁻¹ Σ_k,om``
(Ghahramani & Jordan 1994). The statistics are those of :mod:`.kernels` (``resp_sum``,
``sum_x``, ``scatter`` about the shift), so the M-step is the mixture's own.

Full and tied covariances work with the precision ``P = Σ⁻¹`` and only the small
missing block: with ``y = x − μ`` set to 0 where missing and ``v = (P y)_m``,

- ``C_m = (P_mm)⁻¹`` and ``x̂_m − μ_m = −C_m v``;
- ``(x_o − μ_o)ᵀ Σ_oo⁻¹ (x_o − μ_o) = yᵀ P y − vᵀ C_m v`` (the Schur complement);
- ``log det Σ_oo = log det Σ + log det P_mm``.

So a block of rows costs the products of complete rows (its moments with the
coefficients of every component) plus work on its missing entries only: rows are
grouped by their number of missing values, not by pattern, and the small blocks
``P_mm`` of all rows and components of a group are factorised at once
(:mod:`.missing_kernels`). Diagonal and spherical covariances need no grouping: the
missing coordinates are independent of the observed ones given the component
(``x̂_m = μ_m``, ``C_m`` the variances), and a block is two products, as for complete rows.

Rows must have at least one observed value here; the model
(:class:`MarginalMixtureModel`) leaves rows with none out of the statistics and counts
them (``n_unobserved``), and the estimator warns once per fit.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from dem.model import Block, Params, Stats, add_stats
from dem.models import gaussian
from dem.models.mixture import kernels
from dem.models.mixture.missing_kernels import (
    DiagTerms,
    FullTerms,
    block_rows,
    diag_features,
    diag_log_prob,
    diag_statistics,
    full_conditionals,
    full_statistics,
)
from dem.models.mixture.model import MixtureModel
from dem.models.scratch import thread_scratch

MISSING_OPTIONS = ("raise", "marginalize")


class UnobservedRowsWarning(UserWarning):
    """Rows with no observed value were left out of a fit with missing values."""


# --- statistics, densities and conditional means of rows with some value observed ------


def _terms(params: Params, covariance_type: str) -> FullTerms | DiagTerms:
    if covariance_type in ("full", "tied"):
        return FullTerms.of(params, covariance_type)
    return DiagTerms.of(params, covariance_type)


def statistics(
    x: np.ndarray,
    params: Params,
    covariance_type: str,
    sample_weight: np.ndarray | None = None,
    rows: np.ndarray | None = None,
) -> Stats:
    """The mixture's sufficient statistics (:mod:`.kernels`) of rows with NaN entries.

    ``rows`` (indices) picks the rows of ``x`` to take (absent: all), gathered block by
    block. ``sample_weight`` (one per row of ``x``) multiplies each row's contribution
    (absent: ones): ``n`` is their sum and ``loglik`` the weighted sum of the rows'
    observed-data log-likelihoods. Rows with no observed value contribute nothing and
    are counted in ``n_unobserved``.
    """
    n_components, n_features = params["means"].shape
    resp_sum = np.zeros(n_components)
    sum_x = np.zeros((n_components, n_features))
    scatter = np.zeros(
        (n_components, n_features, n_features)
        if covariance_type in ("full", "tied")
        else (n_components, n_features)
    )
    loglik = total = 0.0
    unobserved = 0
    terms = _terms(params, covariance_type)
    scratch = thread_scratch("mixture_missing")  # the statistics are fresh arrays
    step = block_rows(n_components)
    n_rows = len(x) if rows is None else len(rows)
    for start in range(0, n_rows, step):
        if rows is None:
            piece = x[start : start + step]
            given = None if sample_weight is None else sample_weight[start : start + step]
        else:
            index = rows[start : start + step]
            out = scratch("rows", (len(index), n_features), x.dtype.type)
            piece = np.take(x, index, axis=0, out=out, mode="clip")
            given = None if sample_weight is None else np.asarray(sample_weight)[index]
        xt = next(gaussian.transposed_blocks(piece, params["shift"], np.float64, step, scratch))
        weight = np.ones(len(piece)) if given is None else np.array(given, dtype=np.float64)
        unseen = np.count_nonzero(np.isnan(xt[:n_features]), axis=0) == n_features
        if unseen.any():  # no observed value: nothing to add
            unobserved += int(np.count_nonzero(unseen & (weight > 0)))
            weight[unseen] = 0.0
        total += float(weight.sum())
        if isinstance(terms, FullTerms):
            conditionals = full_conditionals(xt, terms, scratch)
            log_prob = conditionals.log_prob
            weight = weight[conditionals.order]  # the block's rows, sorted
        else:
            features = diag_features(xt, scratch)
            log_prob = diag_log_prob(features, terms, scratch)
        resp, log_norm = kernels.responsibilities(log_prob)
        loglik += float(weight @ log_norm)
        resp *= weight
        resp_sum += resp.sum(axis=1)
        if isinstance(terms, FullTerms):
            block_x, block = full_statistics(conditionals, resp, scratch)
        else:
            block_x, block = diag_statistics(features, resp, terms)
        sum_x += block_x
        scatter += block
    return {
        "n": np.float64(total),
        "loglik": np.float64(loglik),
        "resp_sum": resp_sum,
        "sum_x": sum_x,
        "scatter": scatter.sum(axis=0) if covariance_type == "tied" else scatter,
        "n_unobserved": np.float64(unobserved),
    }


def _with_shift(params: Params) -> Params:
    """``params`` with a shift (the fitted parameters carry none: the mixture mean)."""
    return params if "shift" in params else {**params, "shift": kernels.mixture_mean(params)}


def log_prob(x: np.ndarray, params: Params, covariance_type: str) -> np.ndarray:
    """``log w_k + log N(x_o | μ_k,o, Σ_k,oo)`` of each row (n, K); a row with no
    observed value gets ``log w_k`` (the density of nothing is 1)."""
    params = _with_shift(params)
    terms = _terms(params, covariance_type)
    scratch = gaussian.Scratch()
    out = np.empty((len(x), len(params["means"])))
    step = block_rows(len(params["means"]))
    blocks = gaussian.transposed_blocks(x, params["shift"], np.float64, step, scratch)
    for start, xt in zip(range(0, len(x), step), blocks, strict=True):
        if isinstance(terms, FullTerms):
            conditionals = full_conditionals(xt, terms, scratch, second=False)
            out[start + conditionals.order] = conditionals.log_prob.T
        else:
            block = diag_log_prob(diag_features(xt, scratch), terms, scratch)
            out[start : start + xt.shape[1]] = block.T
    return out


def conditional_means(x: np.ndarray, params: Params, covariance_type: str) -> np.ndarray:
    """``x`` with each missing entry replaced by ``E[x_m | x_o] = Σ_k r_k x̂_k,m``.

    ``r_k`` are the row's responsibilities given its observed values and ``x̂_k,m`` the
    conditional mean under component k (for diagonal and spherical covariances,
    ``μ_k,m``). A row with no observed value gets the mixture mean ``Σ_k w_k μ_k``.
    Returns a float64 copy.
    """
    params = _with_shift(params)
    terms = _terms(params, covariance_type)
    scratch = gaussian.Scratch()
    out = np.array(x, dtype=np.float64, copy=True)
    step = block_rows(len(params["means"]))
    for start in range(0, len(x), step):
        rows = out[start : start + step]
        missing = np.isnan(rows)
        if not missing.any():
            continue
        xt = next(gaussian.transposed_blocks(rows, params["shift"], np.float64, len(rows), scratch))
        if isinstance(terms, FullTerms):
            conditionals = full_conditionals(xt, terms, scratch, second=False)
            resp, _ = kernels.responsibilities(conditionals.log_prob)
            layout = conditionals.layout
            expected = np.einsum("ke,ke->e", resp[:, layout.rows], conditionals.filled)
            rows[conditionals.order[layout.rows], layout.columns] = (
                expected + params["shift"][layout.columns]
            )
        else:
            log_prob_block = diag_log_prob(diag_features(xt, scratch), terms, scratch)
            resp, _ = kernels.responsibilities(log_prob_block)
            rows[missing] = (resp.T @ params["means"])[missing]
    return out


# --- the model the engine calls -------------------------------------------------------


@dataclass(frozen=True)
class MarginalMixtureModel(MixtureModel):
    """The Gaussian mixture with NaN entries missing at random (``missing="marginalize"``).

    Complete rows of unweighted chunks take :class:`MixtureModel`'s fast path; rows with
    NaN (and every row of a weighted chunk) take :func:`statistics`. Rows with no
    observed value (or weight 0) are left out; the statistics count the former in
    ``n_unobserved``, and the M-step warns once per model
    (:class:`UnobservedRowsWarning`).
    """

    free_energy: ClassVar[bool] = False  # the Gaussian expected_loglik misses terms
    missing_ok: ClassVar[frozenset[str]] = frozenset({"X"})
    _warned: set[int] = field(default_factory=set, compare=False, repr=False)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "missing": "marginalize"}

    def e_step_many(self, block: Block, runs: Sequence[Params]) -> list[Stats]:
        x = block["X"]
        weight = block.get("sample_weight")
        # a row holds a NaN where its sum is NaN: one product, no pass per entry
        incomplete = np.isnan(x @ np.ones(x.shape[1], dtype=x.dtype))
        if weight is None and not incomplete.any():
            fast = super().e_step_many(block, runs)
            return [{**s, "n_unobserved": np.float64(0.0)} for s in fast]
        if weight is None:
            rows = np.flatnonzero(incomplete)
            complete = np.flatnonzero(~incomplete)
        else:  # weighted chunks: every row of positive weight takes the kernels below
            rows, complete = np.flatnonzero(np.asarray(weight) > 0), np.zeros(0, np.intp)
        fast_stats = super().e_step_many({"X": x[complete]}, runs) if len(complete) else None
        results = []
        for index, params in enumerate(runs):
            stats = statistics(x, params, self.covariance_type, weight, rows)
            if fast_stats is not None:
                stats = add_stats(stats, {**fast_stats[index], "n_unobserved": np.float64(0.0)})
            results.append(stats)
        return results

    def m_step(self, stats: Stats, params: Params) -> Params:
        unobserved = round(float(stats.get("n_unobserved", 0.0)))
        if unobserved and unobserved not in self._warned:
            self._warned.add(unobserved)
            warnings.warn(
                f"{unobserved} row(s) of X have no observed value (every entry NaN); they "
                "contribute nothing to the fit. Drop them to silence this warning.",
                UnobservedRowsWarning,
                stacklevel=2,
            )
        return super().m_step(stats, params)

    def weighted_log_prob(self, x: np.ndarray, params: Params) -> np.ndarray:
        """log(w_k) + log N(x_o | mu_k,o, Sigma_k,oo) of each row's observed values (n, K)."""
        missing = np.isnan(x).any(axis=1)
        if not missing.any():
            return super().weighted_log_prob(x, params)
        out = np.empty((len(x), self.n_components))
        out[missing] = log_prob(x[missing], params, self.covariance_type)
        if not missing.all():
            out[~missing] = super().weighted_log_prob(x[~missing], params)
        return out
