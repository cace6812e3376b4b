"""Gaussian kernels for the mixture, one small function per covariance type.

Conventions follow scikit-learn so parameters can be compared one to one:
``precisions_cholesky`` is the upper-triangular ``P`` with ``inv(cov) = P @ P.T``;
shapes are (K, d, d) full, (d, d) tied, (K, d) diag, (K,) spherical.

All statistics are taken about a shift ``c`` (the mixture's mean), which keeps the
scatter sums accurate for data far from the origin. Every function here works on one
in-cache row block of float64 data.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import linalg

LOG_2PI = np.log(2.0 * np.pi)

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

COLLAPSED = (
    "The {what} of component(s) {which} is not positive definite: a component has "
    "collapsed onto too few distinct points. Decrease n_components, increase reg_covar, "
    "or scale the input data."
)


def _group_sum_matrix(n_components: int, n_features: int) -> np.ndarray:
    """(K·d, K) block of ones: ``y @ G`` sums each group of d columns (a fast reduction)."""
    return np.kron(np.eye(n_components), np.ones((n_features, 1)))


# --- squared Mahalanobis distances: (n, d) centred block -> (n, K) -------------------


def _mahalanobis_full(xc: np.ndarray, dm: np.ndarray, prec_chol: np.ndarray) -> np.ndarray:
    n_components, n_features = dm.shape
    stacked = prec_chol.transpose(1, 0, 2).reshape(n_features, n_components * n_features)
    offsets = np.einsum("kd,kde->ke", dm, prec_chol).reshape(-1)
    whitened = xc @ stacked
    whitened -= offsets
    np.square(whitened, out=whitened)
    return whitened @ _group_sum_matrix(n_components, n_features)


def _mahalanobis_tied(xc: np.ndarray, dm: np.ndarray, prec_chol: np.ndarray) -> np.ndarray:
    n_components, n_features = dm.shape
    whitened_x = xc @ prec_chol
    whitened_means = dm @ prec_chol
    out = np.empty((len(xc), n_components))
    for k in range(n_components):
        diff = whitened_x - whitened_means[k]
        out[:, k] = np.einsum("ij,ij->i", diff, diff)
    return out


def _mahalanobis_diag(xc: np.ndarray, dm: np.ndarray, prec_chol: np.ndarray) -> np.ndarray:
    precisions = prec_chol**2
    return (
        np.sum(dm**2 * precisions, axis=1)
        - 2.0 * (xc @ (dm * precisions).T)
        + (xc**2) @ precisions.T
    )


def _mahalanobis_spherical(xc: np.ndarray, dm: np.ndarray, prec_chol: np.ndarray) -> np.ndarray:
    precisions = prec_chol**2
    return (
        np.sum(dm**2, axis=1) * precisions
        - 2.0 * (xc @ dm.T) * precisions
        + np.outer(np.einsum("ij,ij->i", xc, xc), precisions)
    )


MAHALANOBIS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "full": _mahalanobis_full,
    "tied": _mahalanobis_tied,
    "diag": _mahalanobis_diag,
    "spherical": _mahalanobis_spherical,
}


def log_det_cholesky(prec_chol: np.ndarray, covariance_type: str, n_features: int) -> np.ndarray | float:
    """log det of the precision Cholesky factor, per component (scalar for tied)."""
    if covariance_type == "full":
        return np.sum(np.log(np.diagonal(prec_chol, axis1=1, axis2=2)), axis=1)
    if covariance_type == "tied":
        return float(np.sum(np.log(np.diag(prec_chol))))
    if covariance_type == "diag":
        return np.sum(np.log(prec_chol), axis=1)
    return n_features * np.log(prec_chol)


def weighted_log_prob(
    xc: np.ndarray,
    dm: np.ndarray,
    log_weights: np.ndarray,
    prec_chol: np.ndarray,
    covariance_type: str,
) -> np.ndarray:
    """log(w_k) + log N(x | mu_k, Sigma_k) for a centred block: (n, K)."""
    n_features = xc.shape[1]
    distances = MAHALANOBIS[covariance_type](xc, dm, prec_chol)
    log_det = log_det_cholesky(prec_chol, covariance_type, n_features)
    return -0.5 * (n_features * LOG_2PI + distances) + log_det + log_weights


# --- scatter statistics: centred block and responsibilities -> sums --------------------


def _scatter_full(xc: np.ndarray, resp: np.ndarray) -> np.ndarray:
    n, n_features = xc.shape
    n_components = resp.shape[1]
    weighted = (resp[:, :, None] * xc[:, None, :]).reshape(n, n_components * n_features)
    return (xc.T @ weighted).reshape(n_features, n_components, n_features).transpose(1, 0, 2)


def _scatter_tied(xc: np.ndarray, resp: np.ndarray) -> np.ndarray:
    return xc.T @ xc


def _scatter_diag(xc: np.ndarray, resp: np.ndarray) -> np.ndarray:
    return resp.T @ (xc * xc)


SCATTER: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "full": _scatter_full,
    "tied": _scatter_tied,
    "diag": _scatter_diag,
    "spherical": _scatter_diag,
}


# --- covariances from statistics ---------------------------------------------------


def _covariance_full(scatter, resp_sum, sum_x, dm, nk, reg_covar):  # type: ignore[no-untyped-def]
    outer = np.einsum("ki,kj->kij", dm, sum_x)
    centred = scatter - outer - outer.transpose(0, 2, 1) + resp_sum[:, None, None] * np.einsum("ki,kj->kij", dm, dm)
    covariances = centred / nk[:, None, None]
    covariances[:, np.arange(dm.shape[1]), np.arange(dm.shape[1])] += reg_covar
    return covariances


def _covariance_tied(scatter, resp_sum, sum_x, dm, nk, reg_covar):  # type: ignore[no-untyped-def]
    outer = np.einsum("ki,kj->ij", dm, sum_x)
    centred = scatter - outer - outer.T + np.einsum("k,ki,kj->ij", resp_sum, dm, dm)
    covariance = centred / nk.sum()
    covariance.flat[:: len(covariance) + 1] += reg_covar
    return covariance


def _covariance_diag(scatter, resp_sum, sum_x, dm, nk, reg_covar):  # type: ignore[no-untyped-def]
    centred = scatter - 2.0 * dm * sum_x + resp_sum[:, None] * dm**2
    return centred / nk[:, None] + reg_covar


def _covariance_spherical(scatter, resp_sum, sum_x, dm, nk, reg_covar):  # type: ignore[no-untyped-def]
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


def n_covariance_parameters(covariance_type: str, n_components: int, n_features: int) -> int:
    return {
        "full": n_components * n_features * (n_features + 1) // 2,
        "tied": n_features * (n_features + 1) // 2,
        "diag": n_components * n_features,
        "spherical": n_components,
    }[covariance_type]
