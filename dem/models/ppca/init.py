"""Initial parameters of PPCA and factor analysis from a bounded sample of rows."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dem.model import Params
from dem.models.ppca.kernels import NOISE_FLOOR
from dem.models.ppca.model import LinearGaussianModel

POWER_ITERATIONS = 4
MAX_COVARIANCE_FEATURES = 1024
INIT_METHODS = ("pca", "random")


def top_eigenpairs(
    xc: np.ndarray, n_components: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Leading eigenvalues (q,) and eigenvectors (d, q) of ``xcᵀ xc / n``.

    Subspace iteration with ten extra directions and a final Rayleigh-Ritz step
    (Halko, Martinsson & Tropp 2011): O(n·d·q) work in tall matrix products, never a
    d × d matrix; only d × (q + 10) matrices are orthonormalised.
    """
    n, d = xc.shape
    width = min(n_components + 10, d, n)
    basis = rng.standard_normal((d, width))
    for _ in range(POWER_ITERATIONS + 1):
        basis, _ = np.linalg.qr(xc.T @ (xc @ basis))
    projected = xc @ basis
    values, vectors = np.linalg.eigh(projected.T @ projected / n)
    order = np.argsort(values)[::-1][:n_components]
    return values[order], basis @ vectors[:, order]


def available_case_covariance(xc: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Available-case (pairwise-complete) covariance of rows with missing values.

    Entry ``(j, k)`` is the mean of ``xc_j xc_k`` over the rows where features ``j``
    and ``k`` are both observed (0 where no row has both); the diagonal is each
    feature's variance over its observed entries (1/n). It is consistent when values
    are missing completely at random, but need not be positive semidefinite.

    Parameters
    ----------
    xc : ndarray of shape (n, d)
        The rows minus each feature's observed mean, with 0 where a value is missing.
    observed : ndarray of shape (n, d)
        True where a value is observed.

    Returns
    -------
    ndarray of shape (d, d)
    """
    mask = observed.astype(np.float64)
    pairs = mask.T @ mask
    return (xc.T @ xc) / np.maximum(pairs, 1.0)


def closed_form_ppca(values: np.ndarray, vectors: np.ndarray, rest: float, total: float) -> Params:
    """The PPCA maximum (Tipping & Bishop 1999) of a covariance from its spectrum.

    ``values`` (q,) and ``vectors`` (d, q) are the leading eigenpairs, ``rest`` the
    sum of the other ``d − q`` eigenvalues and ``total`` the trace: σ² is the mean of
    the rest (floored at ``NOISE_FLOOR`` times the mean variance) and
    ``W = U (Λ − σ² I)^½`` (each ``λ − σ²`` at least ``1e-3 σ²``).
    """
    n_features, n_components = vectors.shape
    sigma2 = max(rest / (n_features - n_components), NOISE_FLOOR * total / n_features)
    loadings = vectors * np.sqrt(np.maximum(values - sigma2, 1e-3 * sigma2))
    return {"loadings": loadings, "noise_variance": np.asarray(sigma2)}


def _init_pca(
    model: LinearGaussianModel,
    xc: np.ndarray,
    observed: np.ndarray,
    total: float,
    rng: np.random.Generator,
) -> Params:
    """The closed-form PPCA solution of the sample's covariance.

    For complete rows, the leading eigenpairs of ``xcᵀ xc / n`` by subspace iteration
    (:func:`top_eigenpairs`). With missing values, those of the
    :func:`available_case_covariance` (while ``d ≤ MAX_COVARIANCE_FEATURES``), its
    eigenvalues clipped at 0: it starts much nearer the maximum than the covariance
    of the mean-filled rows, which shrinks every covariance towards 0, and so saves
    passes over the data. Wider data fall back to the mean-filled rows.
    """
    n_features = xc.shape[1]
    q = model.n_components
    if observed.all() or n_features > MAX_COVARIANCE_FEATURES:
        values, vectors = top_eigenpairs(xc, q, rng)
        return closed_form_ppca(values, vectors, total - float(values.sum()), total)
    spectrum, basis = np.linalg.eigh(available_case_covariance(xc, observed))
    spectrum = np.maximum(spectrum, 0.0)  # ascending
    return closed_form_ppca(
        spectrum[: -q - 1 : -1], basis[:, : -q - 1 : -1], float(spectrum[:-q].sum()), total
    )


def _init_random(
    model: LinearGaussianModel,
    xc: np.ndarray,
    observed: np.ndarray,
    total: float,
    rng: np.random.Generator,
) -> Params:
    """Gaussian random loadings carrying about half the sample's variance."""
    n_features = xc.shape[1]
    scale = np.sqrt(total / (2.0 * n_features * model.n_components))
    loadings = scale * rng.standard_normal((n_features, model.n_components))
    return {"loadings": loadings, "noise_variance": np.asarray(total / (2.0 * n_features))}


INIT: dict[
    str,
    Callable[[LinearGaussianModel, np.ndarray, np.ndarray, float, np.random.Generator], Params],
] = {
    "pca": _init_pca,
    "random": _init_random,
}


def initial_params(
    model: LinearGaussianModel, sample: np.ndarray, rng: np.random.Generator, method: str
) -> Params:
    """Starting parameters from a sample of rows (NaN = missing).

    The mean is the sample's observed column mean; ``method`` (a key of :data:`INIT`)
    sets the loadings and an isotropic noise from the rows minus that mean (factor
    analysis starts with that variance on every feature).
    """
    x = np.asarray(sample, dtype=np.float64)
    if np.isinf(x).any():
        raise ValueError(
            "X contains infinity. Replace infinite values (for example by NaN, meaning missing)."
        )
    observed = ~np.isnan(x)
    if not observed.any():
        raise ValueError("X has no observed value (every entry is NaN); there is nothing to fit.")
    counts = observed.sum(axis=0)
    mean = np.where(observed, x, 0.0).sum(axis=0) / np.maximum(counts, 1)
    xc = np.where(observed, x - mean, 0.0)
    total = float((np.square(xc).sum(axis=0) / np.maximum(counts, 1)).sum())
    if not total > 0.0:
        raise ValueError(
            "X has no variance in the sampled rows (every feature is constant), so it has "
            "no principal subspace. Check the data."
        )
    params = INIT[method](model, xc, observed, total, rng)
    n_features = x.shape[1]
    if model.noise == "diagonal":
        params["noise_variance"] = np.full(n_features, float(params["noise_variance"]))
    params["mean"] = mean
    return params
