"""The Student-t mixture's block maths: t log densities, scale weights, the ECM steps.

Pure numpy (and scipy's special functions) on blocks of rows. A component k is a
multivariate t with location μ_k, scale matrix Σ_k and ν_k degrees of freedom; with
δ² = (x - μ_k)ᵀ Σ_k⁻¹ (x - μ_k) (the Gaussian kernels' squared distance) and
h = d / 2 its log density is

    log t_k(x) = log N(x | μ_k, Σ_k) + δ²/2 + G(ν_k) - ((ν_k + d)/2) log(1 + δ²/ν_k),

that is the Gaussian constants (:func:`dem.models.gaussian.log_prob_constants`) plus
``G(ν) = log Γ(ν/2 + h) - log Γ(ν/2) - h log(ν/2)`` (:func:`dof_constants`, computed
through ``betaln`` so that it stays accurate for ν up to 1e12, where the difference of
two log-gammas would lose every digit) minus ``((ν + d)/2) log1p(δ²/ν)``.

Given the component, a row's latent scale τ has the posterior Gamma((ν + d)/2,
(ν + δ²)/2), so ``u = E[τ] = (ν + d)/(ν + δ²)`` and
``E[log τ] = ψ((ν + d)/2) - log(ν/2) - log1p(δ²/ν)``. The E-step sums, per component,
Σ r, Σ r u, Σ r u (x - c), the scatter Σ r u (x - c)(x - c)ᵀ (about the shift c, as the
Gaussian mixture) and Σ r E[log τ]: additive statistics whose meaning does not depend on
the parameters they were taken at (online EM blends them).

The M-step is that of Peel & McLachlan (2000): weights Σr / N, means Σ r u x / Σ r u,
scale matrices Σ r u (x - μ)(x - μ)ᵀ / Σ r (the Gaussian mixture's covariance formulas
with r u as weights and Σ r as the count), then each ν_k by a one-dimensional root solve
(:func:`solve_dof`) of the complete-data score with the same statistics.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special

from dem.model import Params, Stats
from dem.models import gaussian
from dem.models.mixture.kernels import EPS
from dem.models.scratch import Scratch

DOF_BOUNDS = (1e-2, 1e6)
"""Degrees of freedom an estimate is kept within: below 1e-2 a component is a spike with
no moments; above 1e6 it is a Gaussian to 1e-6 and the score equation has no digits left."""

DOF_START = 10.0
"""The degrees of freedom estimated ones start from (heavy enough tails to discount the
outliers a k-means start leaves in a cluster, light enough to keep its scale)."""


def dof_constants(dofs: np.ndarray, n_features: int) -> np.ndarray:
    """``G(ν) = log Γ(ν/2 + d/2) - log Γ(ν/2) - (d/2) log(ν/2)`` per component (K,).

    The t density's constant is the Gaussian one plus this; it tends to 0 as ν → ∞.
    Written as ``log Γ(h) - log B(ν/2, h) - h log(ν/2)``: scipy's ``betaln`` is accurate
    for large ν, where the two log-gammas cancel.
    """
    half, h = np.asarray(dofs, dtype=np.float64) / 2.0, n_features / 2.0
    return np.asarray(special.gammaln(h) - special.betaln(half, h) - h * np.log(half))


def log_scale_offset(dofs: np.ndarray, n_features: int) -> np.ndarray:
    """``ψ((ν + d)/2) - log(ν/2)`` (K,): E[log τ] = this - log1p(δ²/ν)."""
    dofs = np.asarray(dofs, dtype=np.float64)
    return np.asarray(special.digamma((dofs + n_features) / 2.0) - np.log(dofs / 2.0))


def log_densities(
    distances: np.ndarray,
    dofs: np.ndarray,
    constants: np.ndarray,
    n_features: int,
    scratch: Scratch,
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted t log densities (K, n) and ``log1p(δ²/ν)`` (K, n), in scratch buffers.

    ``distances`` (K, n) are the squared distances δ² (floored at 0 here: the expanded
    quadratic form may round a few ulps below); ``constants`` (K, 1) are
    ``log w + log det P - (d/2) log 2π + G(ν)``.
    """
    np.maximum(distances, 0.0, out=distances)
    log_ratio = np.divide(distances, dofs[:, None], out=scratch("log_ratio", distances.shape))
    np.log1p(log_ratio, out=log_ratio)
    log_prob = np.multiply(
        log_ratio, (-0.5 * (dofs + n_features))[:, None], out=scratch("log_prob", distances.shape)
    )
    log_prob += constants
    return log_prob, log_ratio


def scale_weights(distances: np.ndarray, dofs: np.ndarray, n_features: int) -> np.ndarray:
    """``u = (ν + d)/(ν + δ²)`` (K, n), computed in place of ``distances``."""
    np.add(distances, dofs[:, None], out=distances)
    return np.divide((dofs + n_features)[:, None], distances, out=distances)


def block_sums(
    covariance_type: str,
    xt: np.ndarray,
    moments: np.ndarray,
    resp: np.ndarray,
    weights: np.ndarray,
    log_ratio: np.ndarray,
    scratch: Scratch,
) -> tuple[np.ndarray, ...]:
    """One block's Σ r, Σ r u, Σ r u x, scatter and Σ r log1p(δ²/ν).

    ``resp``, ``weights`` (u) and ``log_ratio`` are (R, K, n) for R runs side by side
    (tied covariances: one run). The weighted sums are the Gaussian mixture's
    (:data:`dem.models.gaussian.SUMS`) with r u in place of r; for tied covariances the
    scatter is weighted by each row's Σ_k r u.
    """
    weighted = np.multiply(resp, weights, out=scratch("weighted", resp.shape))
    resp_sum = resp.sum(axis=-1)
    log_ratio_sum = np.einsum("...n,...n->...", resp, log_ratio)
    if covariance_type == "tied":
        x = xt[:-1]
        row_weights = weighted.sum(axis=-2)  # (1, n): one run
        weighted_x = np.multiply(x, row_weights, out=scratch("weighted_x", x.shape))
        return resp_sum, weighted.sum(axis=-1), weighted @ x.T, weighted_x @ x.T, log_ratio_sum
    u_sum, sum_x, scatter = gaussian.SUMS[covariance_type](xt, moments, weighted)
    return resp_sum, u_sum, sum_x, scatter, log_ratio_sum


# --- the M-step --------------------------------------------------------------------


def _dof_score(log_dof: float, mean_statistic: float) -> float:
    """The complete-data score of ν (up to the factor n/2) at ν = exp(log_dof)."""
    half = np.exp(log_dof) / 2.0
    return float(np.log(half) - special.digamma(half) + 1.0 + mean_statistic)


def solve_dof(mean_statistic: float) -> float:
    """The ν maximising the complete-data log-likelihood of the scales, within ``DOF_BOUNDS``.

    Solves ``log(ν/2) - ψ(ν/2) + 1 + m = 0`` with ``m`` the mean over the component's
    rows of ``E[log τ] - E[τ]`` (Peel & McLachlan 2000, eq. 30), by Brent's method on
    log ν. The left side decreases in ν (the objective is concave), and ``m < -1``
    always (Jensen), so the root exists; outside the bounds the nearer bound is the
    constrained maximum.
    """
    low, high = np.log(DOF_BOUNDS[0]), np.log(DOF_BOUNDS[1])
    if _dof_score(low, mean_statistic) <= 0.0:
        return DOF_BOUNDS[0]
    if _dof_score(high, mean_statistic) >= 0.0:
        return DOF_BOUNDS[1]
    root = optimize.brentq(
        _dof_score, low, high, args=(mean_statistic,), xtol=1e-14, rtol=4 * np.finfo(float).eps
    )
    return float(np.exp(root))


def estimate_dofs(stats: Stats, dof: float | str | None, previous: np.ndarray) -> np.ndarray:
    """The degrees of freedom's CM-step: per component (``dof=None``), shared
    (``"tied"``: the pooled equation), or fixed (a number: returned as they are)."""
    if dof is not None and dof != "tied":
        return np.full(len(previous), float(dof))
    resp_sum = np.asarray(stats["resp_sum"], dtype=np.float64)
    statistic = np.asarray(stats["log_u_sum"]) - np.asarray(stats["u_sum"])
    if dof == "tied":
        total = float(resp_sum.sum())
        shared = solve_dof(float(statistic.sum()) / total) if total > 0 else float(previous[0])
        return np.full(len(previous), shared)
    return np.array(
        [
            solve_dof(float(s / n)) if n > 0 else float(old)  # an empty component keeps its ν
            for s, n, old in zip(statistic, resp_sum, previous, strict=True)
        ]
    )


def estimate_params(
    stats: Stats,
    shift: np.ndarray,
    covariance_type: str,
    reg_covar: float,
    dof: float | str | None,
    previous_dofs: np.ndarray,
) -> Params:
    """Weights, locations, scale matrices (``covariances``), their precision factors and
    the degrees of freedom from the statistics (taken about ``shift``)."""
    resp_sum = np.asarray(stats["resp_sum"])
    u_sum = np.asarray(stats["u_sum"])
    counts = resp_sum + EPS
    u_counts = u_sum + EPS
    # means = Σ r u x / (Σ r u + eps), about the shift as the Gaussian mixture's
    dm = stats["sum_x"] / u_counts[:, None] - shift * (EPS / u_counts)[:, None]
    covariances = gaussian.COVARIANCE[covariance_type](
        stats["scatter"], u_sum, stats["sum_x"], dm, counts, reg_covar
    )
    return {
        "weights": counts / counts.sum(),
        "means": shift + dm,
        "shift": shift,
        "covariances": covariances,
        "precisions_cholesky": gaussian.precision_cholesky(covariances, covariance_type),
        "dofs": estimate_dofs(stats, dof, previous_dofs),
    }
