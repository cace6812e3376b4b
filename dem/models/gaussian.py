"""Gaussian kernels for the mixture, one small function per covariance type.

Conventions follow scikit-learn so parameters can be compared one to one:
``precisions_cholesky`` is the upper-triangular ``P`` with ``inv(cov) = P @ P.T``;
shapes are (K, d, d) full, (d, d) tied, (K, d) diag, (K,) spherical.

All statistics are taken about a shift ``c`` (the mixture's mean), which keeps the
scatter sums accurate for data far from the origin.

Layout
------
The E-step kernels work on one in-cache block of n rows held *transposed*: ``xt``
of shape (d + 1, n), the centred features ``x - c`` in the first d rows and ones in
the last, so that an offset rides along inside a matrix product. Per-component
results are (K, n). Reductions over the K components then run along the leading
axis, which numpy does as fast elementwise passes, where a reduction over a short
last axis is slow.

Each covariance type computes the block's second moments once (``MOMENTS``: the packed
products x_i x_j for full, x² for diag and spherical); the squared distances and the
scatter statistic both read them. For full covariances the distances are then one
product with per-component coefficients (the expanded quadratic form) while that is
accurate, else one product with the stacked precision factors (whitening).

The moments of full, diagonal and spherical covariances end with the rows x and 1, so
that one product of the responsibilities with them gives every statistic of the block
(``SUMS``): Σ r, Σ r x and the scatter.

For float32 input of a full-covariance mixture, the two large matrix products
(distances and statistics, O(K d²) flops per row; the distances expanded only within
the tighter ``EXPANSION_LIMIT_FLOAT32``) and the normalisation of the
responsibilities run in float32 within each block of a few thousand rows; every sum
across blocks is float64. Float32 data whose spread about
the shift lies outside ``FLOAT32_SPREAD`` (values near float32's overflow, whose squares
float32 cannot hold) are computed in float64 throughout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from scipy import linalg

from dem.models.scratch import Scratch

LOG_2PI = np.log(2.0 * np.pi)

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

BLOCK_ROWS = 2048
"""Rows per block in the kernels that form per-row moments (the mixture, the HMMs' emissions);
blocks of 512 to 4096 rows measured no different (README, Performance)."""

FLOAT32_PRODUCTS = frozenset({"full"})
"""Covariance types whose large products run in float32 for float32 input."""

COLLAPSED = (
    "The {what} of component(s) {which} is not positive definite: a component has "
    "collapsed onto too few distinct points. Decrease n_components, increase reg_covar, "
    "or scale the input data."
)


DistanceFunction = Callable[[np.ndarray, np.ndarray, Scratch], np.ndarray]


FLOAT32_SPREAD = (1e-12, 1e14)
"""Spreads of the data about the shift for which float32 products are safe: their squares
stay 14 orders of magnitude inside float32's normal range (1.2e-38 to 3.4e38)."""


def product_dtype(
    data_dtype: np.dtype, covariance_type: str, spread: float = 1.0
) -> type[np.floating]:
    """The dtype of the large per-block matrix products for data of ``data_dtype``.

    ``spread`` is the scale of the data about the shift (see :func:`spread`): float32
    data far from unit scale (near float32's overflow, say) are computed in float64.
    """
    low, high = FLOAT32_SPREAD
    if data_dtype == np.float32 and covariance_type in FLOAT32_PRODUCTS and low <= spread <= high:
        return np.float32
    return np.float64


def spread(dm: np.ndarray, covariances: np.ndarray, covariance_type: str) -> float:
    """The scale of data from these components about the shift: the largest distance of a
    mean from the shift plus the largest standard deviation (``dm`` = means - shift)."""
    if covariance_type in ("full", "tied"):
        variances = np.diagonal(covariances, axis1=-2, axis2=-1)
    else:
        variances = covariances
    return float(np.max(np.abs(dm)) + np.sqrt(np.max(variances)))


# --- second moments of a block -------------------------------------------------------
# What both the distances and the scatter statistic of a covariance type read, computed
# once per block from the transposed block ``xt`` (d + 1, n).


def _upper_offsets(n_features: int) -> np.ndarray:
    """Where row i of the packed upper triangle starts: 0, d, 2d - 1, ..., d(d+1)/2."""
    return np.concatenate([[0], np.cumsum(np.arange(n_features, 0, -1))])


def _moments_full(xt: np.ndarray, scratch: Scratch) -> np.ndarray:
    """[x_i x_j for i <= j (packed upper triangle); x; 1]: (d(d+1)/2 + d + 1, n)."""
    n_features = len(xt) - 1
    offsets = _upper_offsets(n_features)
    moments = scratch("moments", (offsets[-1] + n_features + 1, xt.shape[1]), xt.dtype.type)
    for i in range(n_features):
        np.multiply(xt[i], xt[i:n_features], out=moments[offsets[i] : offsets[i + 1]])
    moments[offsets[-1] :] = xt
    return moments


def _moments_tied(xt: np.ndarray, scratch: Scratch) -> np.ndarray:
    return xt[:-1]


def _moments_diag(xt: np.ndarray, scratch: Scratch) -> np.ndarray:
    """[x_i²; x; 1]: (2d + 1, n)."""
    n_features = len(xt) - 1
    moments = scratch("moments", (2 * n_features + 1, xt.shape[1]), xt.dtype.type)
    np.square(xt[:-1], out=moments[:n_features])
    moments[n_features:] = xt
    return moments


MOMENTS: dict[str, Callable[[np.ndarray, Scratch], np.ndarray]] = {
    "full": _moments_full,
    "tied": _moments_tied,
    "diag": _moments_diag,
    "spherical": _moments_diag,
}


# --- squared Mahalanobis distances ---------------------------------------------------
# Each factory takes the means relative to the shift ``dm`` (K, d) and the precision
# factors, does the per-iteration work once, and returns a function of the transposed
# block ``xt`` (d + 1, n), its moments and the scratch buffers giving the squared
# distances (K, n), in the scratch buffer "distances". With ``runs`` > 1 the K components
# are those of several mixtures (restarts) side by side, K / runs each: every product is
# then a batch of one matrix product per run, all of the same shape, so that a run's
# distances are the same bits whichever runs share the call (a single product over all
# of them would round each row according to where it falls in the BLAS tiling).


EXPANSION_LIMIT = 1e4
"""Largest squared distance (in its own metric) of a component's mean from the shift for
which the full covariance's distances are expanded rather than whitened."""

EXPANSION_LIMIT_FLOAT32 = 1e3
"""The same for float32 products: their rounding error is about 6e-8 of the terms, so
the distances carry an error of ~1e-4 of this limit at most (on the benchmark's mixture,
whose means lie within 550 of the shift, the statistics agree with float64 to 4e-8)."""


def expandable(
    dm: np.ndarray, prec_chol: np.ndarray, covariance_type: str, dtype: type[np.floating]
) -> bool:
    """Whether full covariances' distances are computed expanded (half the flops), which
    is accurate to ~1e-12 for float64 when every mean lies within ``EXPANSION_LIMIT``
    (``EXPANSION_LIMIT_FLOAT32`` for float32 products)."""
    if covariance_type != "full":
        return False
    limit = EXPANSION_LIMIT if dtype == np.float64 else EXPANSION_LIMIT_FLOAT32
    whitened_means = np.einsum("kd,kde->ke", dm, prec_chol)
    return bool(np.max(np.sum(whitened_means**2, axis=1)) <= limit)


def _distances_full(
    dm: np.ndarray, prec_chol: np.ndarray, dtype: type[np.floating], runs: int = 1
) -> DistanceFunction:
    """Expanded where that is accurate (see :func:`expandable`), else whitened."""
    if expandable(dm, prec_chol, "full", dtype):
        return _distances_full_expanded(dm, prec_chol, runs, dtype)
    return _distances_full_whitened(dm, prec_chol, dtype, runs)


def _distances_full_expanded(
    dm: np.ndarray, prec_chol: np.ndarray, runs: int = 1, dtype: type[np.floating] = np.float64
) -> DistanceFunction:
    """(x - m)ᵀ Λ (x - m) = Σ_{i<=j} c_ij Λ_ij x_i x_j - 2 (Λ m)ᵀ x + mᵀ Λ m, for all k at once.

    One product of the (K, d(d+1)/2 + d + 1) coefficients with the block's moments,
    which the scatter statistic reads too: half the flops of whitening. The terms of a
    point near component k are about m_kᵀ Λ_k m_k (its mean's squared distance from
    the shift), so the distance carries that many ulps of rounding; hence the limit.
    """
    n_components, n_features = dm.shape
    rows, cols = np.triu_indices(n_features)
    precisions = np.einsum("kij,klj->kil", prec_chol, prec_chol)
    weighted = precisions @ dm[:, :, None]  # Λ_k m_k: (K, d, 1)
    coefficients = np.empty((n_components, len(rows) + n_features + 1))
    coefficients[:, : len(rows)] = precisions[:, rows, cols] * np.where(rows == cols, 1.0, 2.0)
    coefficients[:, len(rows) : -1] = -2.0 * weighted[:, :, 0]
    coefficients[:, -1] = np.einsum("ki,ki->k", dm, weighted[:, :, 0])
    coefficients = coefficients.reshape(runs, n_components // runs, -1).astype(dtype)

    def distances(xt: np.ndarray, moments: np.ndarray, scratch: Scratch) -> np.ndarray:
        out = scratch("distances", (*coefficients.shape[:2], xt.shape[1]), dtype)
        return np.matmul(coefficients, moments, out=out).reshape(n_components, -1)

    return distances


def _distances_full_whitened(
    dm: np.ndarray, prec_chol: np.ndarray, dtype: type[np.floating], runs: int = 1
) -> DistanceFunction:
    """|P_kᵀ (x - m_k)|²: one product against the stacked factors, then squares summed.

    Exact to a few ulps of the distance wherever x lies, which float32 needs for
    components far from the shift.
    """
    n_components, n_features = dm.shape
    # row (k, j) maps [x - c, 1] to (P_kᵀ (x - c - dm_k))_j: one product for all k
    factors = np.empty((n_components * n_features, n_features + 1))
    factors[:, :n_features] = prec_chol.transpose(0, 2, 1).reshape(-1, n_features)
    factors[:, n_features] = -np.einsum("kd,kde->ke", dm, prec_chol).reshape(-1)
    factors = factors.astype(dtype).reshape(runs, -1, n_features + 1)
    ones = np.ones((1, n_features), dtype=dtype)

    def distances(xt: np.ndarray, moments: np.ndarray, scratch: Scratch) -> np.ndarray:
        n = xt.shape[1]
        whitened = np.matmul(factors, xt, out=scratch("whitened", (*factors.shape[:2], n), dtype))
        np.square(whitened, out=whitened)
        # summing each group of d rows as a product with a ones vector is fast
        out = scratch("distances", (n_components, 1, n), dtype)
        np.matmul(ones, whitened.reshape(n_components, n_features, n), out=out)
        return out.reshape(n_components, n)

    return distances


def _distances_tied(
    dm: np.ndarray, prec_chol: np.ndarray, dtype: type[np.floating], runs: int = 1
) -> DistanceFunction:
    if runs != 1:
        raise ValueError("tied covariances have one factor per run: evaluate runs one by one")
    n_components, n_features = dm.shape
    factor_t = np.ascontiguousarray(prec_chol.T, dtype=dtype)
    whitened_means = (dm @ prec_chol).astype(dtype)[:, :, None]
    ones = np.ones((1, n_features), dtype=dtype)

    def distances(xt: np.ndarray, moments: np.ndarray, scratch: Scratch) -> np.ndarray:
        n = xt.shape[1]
        whitened = np.matmul(
            factor_t, xt[:n_features], out=scratch("whitened", (n_features, n), dtype)
        )
        diff = scratch("differences", (n_components, n_features, n), dtype)
        np.subtract(whitened[None, :, :], whitened_means, out=diff)
        np.square(diff, out=diff)
        out = scratch("distances", (n_components, 1, n), dtype)
        np.matmul(ones, diff, out=out)
        return out.reshape(n_components, n)

    return distances


def _distances_diag(
    dm: np.ndarray, prec_chol: np.ndarray, dtype: type[np.floating], runs: int = 1
) -> DistanceFunction:
    """Σ_i λ_i x_i² - 2 Σ_i λ_i m_i x_i + Σ_i λ_i m_i²: one product with the moments."""
    precisions = prec_chol**2
    coefficients = np.concatenate(
        [precisions, -2.0 * dm * precisions, np.sum(dm**2 * precisions, axis=1, keepdims=True)],
        axis=1,
    ).reshape(runs, len(dm) // runs, -1)

    def distances(xt: np.ndarray, moments: np.ndarray, scratch: Scratch) -> np.ndarray:
        out = scratch("distances", (*coefficients.shape[:2], xt.shape[1]))
        return np.matmul(coefficients, moments, out=out).reshape(len(dm), -1)

    return distances


def _distances_spherical(
    dm: np.ndarray, prec_chol: np.ndarray, dtype: type[np.floating], runs: int = 1
) -> DistanceFunction:
    """The diagonal case with every variance of a component equal."""
    return _distances_diag(dm, np.repeat(prec_chol[:, None], dm.shape[1], axis=1), dtype, runs)


DISTANCES: dict[str, Callable[..., DistanceFunction]] = {
    "full": _distances_full,
    "tied": _distances_tied,
    "diag": _distances_diag,
    "spherical": _distances_spherical,
}


def log_det_cholesky(
    prec_chol: np.ndarray, covariance_type: str, n_features: int
) -> np.ndarray | float:
    """log det of the precision Cholesky factor, per component (scalar for tied)."""
    if covariance_type == "full":
        return np.sum(np.log(np.diagonal(prec_chol, axis1=1, axis2=2)), axis=1)
    if covariance_type == "tied":
        return float(np.sum(np.log(np.diag(prec_chol))))
    if covariance_type == "diag":
        return np.sum(np.log(prec_chol), axis=1)
    return n_features * np.log(prec_chol)


def log_prob_constants(
    log_weights: np.ndarray, prec_chol: np.ndarray, covariance_type: str, n_features: int
) -> np.ndarray:
    """log(w_k) + log det P_k - (d/2) log 2π: the per-component part of the log density, (K, 1)."""
    log_det = log_det_cholesky(prec_chol, covariance_type, n_features)
    return np.asarray(log_weights + log_det - 0.5 * n_features * LOG_2PI)[:, None]


def transposed_blocks(
    x: np.ndarray,
    shift: np.ndarray,
    dtype: type[np.floating],
    block_rows: int,
    scratch: Scratch | None = None,
) -> Iterator[np.ndarray]:
    """Walk ``x`` (n, d) in blocks of ``block_rows`` rows, centred on ``shift`` and transposed.

    Yields ``xt`` (d + 1, m): the centred block in ``dtype`` (rounded once, from the
    float64 difference) with a row of ones below; a view of a buffer reused for the
    next block (the buffer "augmented" of ``scratch`` when given).
    """
    n_features = x.shape[1]
    shape = (n_features + 1, min(block_rows, len(x)))
    augmented = np.empty(shape, dtype) if scratch is None else scratch("augmented", shape, dtype)
    augmented[n_features] = 1.0
    for start in range(0, len(x), block_rows):
        block = x[start : start + block_rows]
        xt = augmented[:, : len(block)]
        np.subtract(block.T, shift[:, None], out=xt[:n_features], casting="same_kind")
        yield xt


# --- scatter statistics: block, its moments, responsibilities (K, n) -> sums ---------


def _sums_from_moments(
    xt: np.ndarray, moments: np.ndarray, resp: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moments ending with the rows x and 1: Σ r, Σ r x and the scatter in one product."""
    n_features = len(xt) - 1
    sums = resp @ moments.T
    return sums[..., -1], sums[..., -1 - n_features : -1], sums[..., : -1 - n_features]


def _sums_tied(
    xt: np.ndarray, moments: np.ndarray, resp: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return resp.sum(axis=-1), resp @ xt[:-1].T, moments @ moments.T


SUMS: dict[
    str, Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
] = {
    "full": _sums_from_moments,
    "tied": _sums_tied,
    "diag": _sums_from_moments,
    "spherical": _sums_from_moments,
}
"""Σ r, Σ r x and the scatter statistic of a block from its moments and responsibilities
(..., K, n): the E-step's sufficient statistics, summed in the block's dtype."""


def scatter_zeros(covariance_type: str, n_components: int, n_features: int) -> np.ndarray:
    """A float64 accumulator shaped like the scatter ``SUMS[covariance_type]`` returns."""
    shape = {
        "full": (n_components, n_features * (n_features + 1) // 2),
        "tied": (n_features, n_features),
        "diag": (n_components, n_features),
        "spherical": (n_components, n_features),
    }[covariance_type]
    return np.zeros(shape)


def scatter_statistic(
    xc: np.ndarray, resp: np.ndarray, covariance_type: str, block_rows: int = 2048
) -> np.ndarray:
    """Σ r x xᵀ (or its diagonal) of centred rows ``xc`` (n, d), responsibilities (n, K).

    The statistic as the M-step reads it, summed over blocks of ``block_rows`` rows.
    """
    n_components, n_features = resp.shape[1], xc.shape[1]
    total = scatter_zeros(covariance_type, n_components, n_features)
    scratch = Scratch()
    for start in range(0, len(xc), block_rows):
        block = xc[start : start + block_rows]
        xt = np.vstack([block.T, np.ones((1, len(block)))])
        moments = MOMENTS[covariance_type](xt, scratch)
        total += SUMS[covariance_type](xt, moments, resp[start : start + block_rows].T)[2]
    return unpack_scatter(total, covariance_type, n_features)


def unpack_scatter(scatter: np.ndarray, covariance_type: str, n_features: int) -> np.ndarray:
    """The scatter statistic as the M-step reads it: full ones unpacked to (K, d, d)."""
    if covariance_type != "full":
        return scatter
    rows, cols = np.triu_indices(n_features)
    full = np.empty((len(scatter), n_features, n_features))
    full[:, rows, cols] = scatter
    full[:, cols, rows] = scatter
    return full


# --- covariances from statistics ---------------------------------------------------


def _covariance_full(
    scatter: np.ndarray,
    resp_sum: np.ndarray,
    sum_x: np.ndarray,
    dm: np.ndarray,
    nk: np.ndarray,
    reg_covar: float,
) -> np.ndarray:
    outer = np.einsum("ki,kj->kij", dm, sum_x)
    centred = (
        scatter
        - outer
        - outer.transpose(0, 2, 1)
        + resp_sum[:, None, None] * np.einsum("ki,kj->kij", dm, dm)
    )
    covariances = centred / nk[:, None, None]
    covariances[:, np.arange(dm.shape[1]), np.arange(dm.shape[1])] += reg_covar
    return covariances


def _covariance_tied(
    scatter: np.ndarray,
    resp_sum: np.ndarray,
    sum_x: np.ndarray,
    dm: np.ndarray,
    nk: np.ndarray,
    reg_covar: float,
) -> np.ndarray:
    outer = np.einsum("ki,kj->ij", dm, sum_x)
    centred = scatter - outer - outer.T + np.einsum("k,ki,kj->ij", resp_sum, dm, dm)
    covariance = centred / nk.sum()
    covariance.flat[:: len(covariance) + 1] += reg_covar
    return covariance


def _covariance_diag(
    scatter: np.ndarray,
    resp_sum: np.ndarray,
    sum_x: np.ndarray,
    dm: np.ndarray,
    nk: np.ndarray,
    reg_covar: float,
) -> np.ndarray:
    centred = scatter - 2.0 * dm * sum_x + resp_sum[:, None] * dm**2
    return centred / nk[:, None] + reg_covar


def _covariance_spherical(
    scatter: np.ndarray,
    resp_sum: np.ndarray,
    sum_x: np.ndarray,
    dm: np.ndarray,
    nk: np.ndarray,
    reg_covar: float,
) -> np.ndarray:
    return _covariance_diag(scatter, resp_sum, sum_x, dm, nk, reg_covar).mean(axis=1)


COVARIANCE = {
    "full": _covariance_full,
    "tied": _covariance_tied,
    "diag": _covariance_diag,
    "spherical": _covariance_spherical,
}


# --- precision Cholesky factors ----------------------------------------------------


def _chol_inverse_transpose(covariance: np.ndarray) -> np.ndarray:
    chol = linalg.cholesky(covariance, lower=True)
    # LAPACK's triangular inverse: as exact as a triangular solve against I, and it
    # avoids solve_triangular's per-call overhead (milliseconds for a 16 x 16 matrix)
    inverse, info = linalg.lapack.dtrtri(chol, lower=1)
    if info != 0:
        raise linalg.LinAlgError(f"singular Cholesky factor (trtri info {info})")
    return inverse.T


def precision_cholesky(covariances: np.ndarray, covariance_type: str) -> np.ndarray:
    """Upper-triangular ``P`` with ``inv(cov) = P P^T`` (elementwise for diag/spherical).

    Raises
    ------
    ValueError
        A covariance is not positive definite (a collapsed component).
    """
    if covariance_type in ("full", "tied"):
        stack = covariances if covariance_type == "full" else covariances[None]
        factors = np.empty_like(stack)
        failed = []
        for k, covariance in enumerate(stack):
            try:
                factors[k] = _chol_inverse_transpose(covariance)
            except linalg.LinAlgError:
                failed.append(k)
        if failed:
            raise ValueError(COLLAPSED.format(what="covariance", which=failed))
        return factors if covariance_type == "full" else factors[0]
    if np.any(covariances <= 0.0) or not np.all(np.isfinite(covariances)):
        which = sorted({int(i) for i in np.argwhere(~(covariances > 0.0))[:, 0]})
        raise ValueError(COLLAPSED.format(what="variance", which=which))
    return 1.0 / np.sqrt(covariances)


def _flip(matrix: np.ndarray) -> np.ndarray:
    return matrix[::-1, ::-1]


def precision_cholesky_from_precisions(precisions: np.ndarray, covariance_type: str) -> np.ndarray:
    """The same upper-triangular factor, from precision matrices."""
    if covariance_type == "full":
        return np.array([_flip(linalg.cholesky(_flip(p), lower=True)) for p in precisions])
    if covariance_type == "tied":
        return _flip(linalg.cholesky(_flip(precisions), lower=True))
    return np.sqrt(precisions)


def precisions_from_cholesky(prec_chol: np.ndarray, covariance_type: str) -> np.ndarray:
    if covariance_type == "full":
        return np.einsum("kij,klj->kil", prec_chol, prec_chol)
    if covariance_type == "tied":
        return prec_chol @ prec_chol.T
    return prec_chol**2


def covariances_from_precisions(precisions: np.ndarray, covariance_type: str) -> np.ndarray:
    if covariance_type == "full":
        return np.array([linalg.inv(p) for p in precisions])
    if covariance_type == "tied":
        return linalg.inv(precisions)
    return 1.0 / precisions


def correlated(
    standard: np.ndarray, covariances: np.ndarray, covariance_type: str, component: int
) -> np.ndarray:
    """Standard normal rows ``standard`` (n, d) made draws of N(0, Σ_k), Σ_k the covariance
    of ``component`` in ``covariances`` (shapes as above): ``z Lᵀ`` with ``L`` the Cholesky
    factor of Σ_k for full and tied, ``z √σ²_k`` elementwise for diag and spherical."""
    if covariance_type == "full":
        return standard @ np.linalg.cholesky(covariances[component]).T
    if covariance_type == "tied":
        return standard @ np.linalg.cholesky(covariances).T
    return standard * np.sqrt(covariances[component])


def n_covariance_parameters(covariance_type: str, n_components: int, n_features: int) -> int:
    return {
        "full": n_components * n_features * (n_features + 1) // 2,
        "tied": n_features * (n_features + 1) // 2,
        "diag": n_components * n_features,
        "spherical": n_components,
    }[covariance_type]
