"""Starting parameters of a mixture of factor analyzers.

Rows are clustered first (k-means on a bounded sample of rows, k-means‖ over all the
data, or the nearest of K random rows), then each cluster gets the closed-form PPCA
maximum (Tipping & Bishop 1999) of its rows: its mean, the leading ``q`` eigenpairs of
its covariance for the loadings and the mean of the other eigenvalues for the noise (on
every feature for per-feature noise); the weights are the clusters' shares of the rows.
A cluster too small to give ``q`` directions (fewer than ``q + 2`` rows) takes the
loadings and noise of all the rows together, about its own mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dem.model import Params
from dem.models.factor_mixture.model import FactorMixtureModel
from dem.models.mixture.init import kmeans_labels
from dem.models.ppca.init import MAX_COVARIANCE_FEATURES, closed_form_ppca
from dem.models.ppca.init import initial_params as ppca_params
from dem.models.ppca.model import LinearGaussianModel
from dem.seeding import kmeans_parallel

INIT_METHODS = ("auto", "kmeans", "k-means||", "random_from_data")
PPCA_NOISE = {"per_feature": "diagonal", "isotropic": "isotropic"}


def resolve_init(init_params: str, n_samples: int, init_sample_size: int) -> str:
    """``"auto"``: ``"k-means||"`` when the data have more rows than the sample, else
    ``"kmeans"`` (on the sample, which is then all the rows)."""
    if init_params != "auto":
        return init_params
    return "k-means||" if n_samples > init_sample_size else "kmeans"


def _filled(x: np.ndarray) -> np.ndarray:
    """Rows with NaN replaced by their column's observed mean (for clustering only)."""
    observed = ~np.isnan(x)
    mean = np.where(observed, x, 0.0).sum(axis=0) / np.maximum(observed.sum(axis=0), 1)
    return np.where(observed, x, mean)


def sample_labels(
    x: np.ndarray, n_clusters: int, rng: np.random.Generator, method: str
) -> np.ndarray:
    """Cluster of each sampled row: k-means from k-means++ seeds (``"kmeans"``), or the
    nearest of ``n_clusters`` distinct random rows (``"random_from_data"``)."""
    filled = _filled(x)
    if method == "kmeans":
        return kmeans_labels(filled, n_clusters, rng)
    centres = filled[rng.choice(len(filled), n_clusters, replace=False)]
    d2 = -2.0 * filled @ centres.T + np.einsum("ij,ij->i", centres, centres)
    return np.argmin(d2, axis=1)


def _broadcast_noise(model: FactorMixtureModel, noise: np.ndarray, n_features: int) -> np.ndarray:
    noise = np.asarray(noise, dtype=np.float64)
    if model.noise == "isotropic":
        return np.asarray(noise.mean())
    return np.broadcast_to(noise, (n_features,)).copy()


def initial_params(
    model: FactorMixtureModel, sample: np.ndarray, rng: np.random.Generator, method: str
) -> Params:
    """Starting parameters from a sample of rows (NaN = missing): clusters by ``method``
    (``"kmeans"`` or ``"random_from_data"``), then each cluster's PPCA maximum."""
    x = np.asarray(sample, dtype=np.float64)
    if np.isinf(x).any():
        raise ValueError(
            "X contains infinity. Replace infinite values (for example by NaN, meaning missing)."
        )
    x = x[~np.isnan(x).all(axis=1)]  # rows with nothing observed tell nothing
    if len(x) < model.n_components:
        raise ValueError(
            f"The initialisation sample has {len(x)} rows with an observed value, fewer than "
            f"n_components={model.n_components}. Use fewer components or more data."
        )
    labels = sample_labels(x, model.n_components, rng, method)
    linear = LinearGaussianModel(model.n_factors, PPCA_NOISE[model.noise])
    overall = ppca_params(linear, x, rng, "pca")
    k, d = model.n_components, x.shape[1]
    params: Params = {
        "weights": np.empty(k),
        "means": np.empty((k, d)),
        "loadings": np.empty((k, d, model.n_factors)),
        "noise_variance": np.empty((k,) if model.noise == "isotropic" else (k, d)),
    }
    for c in range(k):
        rows = x[labels == c]
        params["weights"][c] = max(len(rows), 1)
        start = overall
        if len(rows) >= model.n_factors + 2:
            try:
                start = ppca_params(linear, rows, rng, "pca")
            except ValueError:  # no variance, or a feature never observed in the cluster
                start = overall
        if len(rows) and start is overall:
            observed = ~np.isnan(rows)
            counts = observed.sum(axis=0)
            own = np.where(observed, rows, 0.0).sum(axis=0) / np.maximum(counts, 1)
            start = {**overall, "mean": np.where(counts > 0, own, overall["mean"])}
        params["means"][c] = start["mean"]
        params["loadings"][c] = start["loadings"]
        params["noise_variance"][c] = _broadcast_noise(model, start["noise_variance"], d)
    params["weights"] /= params["weights"].sum()
    params["shift"] = np.asarray(overall["mean"], dtype=np.float64)
    return params


def kmeans_parallel_params(
    model: FactorMixtureModel,
    array: Any,
    rng: np.random.Generator,
    *,
    split_every: int,
    weights: Any = None,
) -> Params:
    """Starting parameters from k-means‖ over all the data (complete rows only: a NaN
    anywhere raises ``ValueError``): the clusters' hard-assignment statistics give each
    its mean and covariance, whose PPCA maximum gives the loadings and noise. Above
    ``MAX_COVARIANCE_FEATURES`` features only the variances are summed and the loadings
    are random, carrying half of each cluster's variance."""
    n_features = int(array.shape[1])
    full = n_features <= MAX_COVARIANCE_FEATURES
    (seeding,) = kmeans_parallel(
        array,
        [model.n_components],
        [rng],
        scatter="full" if full else "diag",
        split_every=split_every,
        weights=weights,
    )
    stats = seeding.stats
    counts = np.asarray(stats["resp_sum"], dtype=np.float64)
    sum_x = np.asarray(stats["sum_x"], dtype=np.float64)
    scatter = np.asarray(stats["scatter"], dtype=np.float64)
    total_n = counts.sum()
    overall_mean = sum_x.sum(axis=0) / total_n
    overall_scatter = scatter.sum(axis=0) / total_n
    k, q = model.n_components, model.n_factors
    params: Params = {
        "weights": np.maximum(counts, 1.0) / np.maximum(counts, 1.0).sum(),
        "means": np.empty((k, n_features)),
        "loadings": np.empty((k, n_features, q)),
        "noise_variance": np.empty((k,) if model.noise == "isotropic" else (k, n_features)),
        "shift": seeding.shift + overall_mean,
    }
    for c in range(k):
        big = counts[c] >= q + 2
        mean = sum_x[c] / counts[c] if counts[c] > 0 else overall_mean
        second = scatter[c] / counts[c] if big else overall_scatter
        centre = mean if big else overall_mean
        covariance = second - (np.outer(centre, centre) if full else centre**2)
        loadings, noise = _ppca_of(covariance, q, rng)
        params["means"][c] = seeding.shift + mean
        params["loadings"][c] = loadings
        params["noise_variance"][c] = _broadcast_noise(model, noise, n_features)
    return params


def _ppca_of(
    covariance: np.ndarray, n_factors: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Loadings and σ² of the PPCA maximum of a covariance (d × d), or of variances (d,)
    (random loadings carrying half the variance)."""
    if covariance.ndim == 1:
        total = float(np.maximum(covariance, 0.0).sum())
        d = len(covariance)
        scale = np.sqrt(total / (2.0 * d * n_factors))
        return scale * rng.standard_normal((d, n_factors)), np.asarray(total / (2.0 * d))
    spectrum, basis = np.linalg.eigh(0.5 * (covariance + covariance.T))
    spectrum = np.maximum(spectrum, 0.0)  # ascending
    q = n_factors
    start = closed_form_ppca(
        spectrum[: -q - 1 : -1],
        basis[:, : -q - 1 : -1],
        float(spectrum[:-q].sum()),
        float(spectrum.sum()),
    )
    return start["loadings"], start["noise_variance"]
