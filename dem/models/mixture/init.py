"""Starting parameters of a Gaussian mixture.

On a bounded sample of rows (one read, never the whole data on the client): k-means
from k-means++ seeds (``"kmeans"``), k-means++ seeds alone, random responsibilities
or random rows, as scikit-learn's ``_initialize`` computes them; or k-means‖ over all
the data (``"k-means||"``, distributed passes, see :mod:`dem.seeding`). Any of the
user's ``weights_init``/``means_init``/``precisions_init`` override what these give.

With missing values (``missing="marginalize"``) every method runs on the data with each
NaN replaced by its feature's mean over the observed values (of the sample, or, for
k-means‖, of all the data: one more pass), rows with no observed value left out of the
sample; the parameters of those responsibilities start EM, which then treats the
values as missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np

from dem.engine import map_reduce
from dem.model import Block, Params, Stats, add_stats
from dem.models import gaussian
from dem.models.mixture.kernels import BLOCK_ROWS, estimate_params, mixture_mean
from dem.models.mixture.model import MixtureModel
from dem.seeding import kmeans_parallel

INIT_METHODS = ("auto", "kmeans", "k-means||", "k-means++", "random", "random_from_data")


def kmeans_plusplus(x: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n_clusters`` rows chosen by greedy k-means++ (Arthur & Vassilvitskii)."""
    n_trials = 2 + int(np.log(n_clusters))
    squared_norms = np.einsum("ij,ij->i", x, x)

    def sq_dist(rows: np.ndarray) -> np.ndarray:
        d2 = squared_norms[rows][:, None] - 2.0 * x[rows] @ x.T + squared_norms[None, :]
        return np.maximum(d2, 0.0)

    chosen = [int(rng.integers(len(x)))]
    closest = sq_dist(np.array(chosen))[0]
    for _ in range(1, n_clusters):
        total = closest.sum()
        if total <= 0.0:  # fewer distinct points than clusters: take any unused row
            candidates = rng.choice(np.setdiff1d(np.arange(len(x)), chosen), n_trials)
        else:
            candidates = np.searchsorted(np.cumsum(closest), rng.uniform(size=n_trials) * total)
            candidates = np.minimum(candidates, len(x) - 1)
        trial = np.minimum(closest[None, :], sq_dist(candidates))
        best = int(np.argmin(trial.sum(axis=1)))
        chosen.append(int(candidates[best]))
        closest = trial[best]
    return np.array(chosen)


def kmeans_labels(
    x: np.ndarray, n_clusters: int, rng: np.random.Generator, max_iter: int = 100
) -> np.ndarray:
    """Lloyd's k-means from k-means++ seeds; returns each row's cluster."""
    centers = x[kmeans_plusplus(x, n_clusters, rng)].copy()
    labels = np.full(len(x), -1)
    for _ in range(max_iter):
        d2 = -2.0 * x @ centers.T + np.einsum("ij,ij->i", centers, centers)
        new_labels = np.argmin(d2, axis=1)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        for k in range(n_clusters):
            members = labels == k
            if members.any():
                centers[k] = x[members].mean(axis=0)
    return labels


def _one_hot(rows: np.ndarray, n_rows: int, n_components: int) -> np.ndarray:
    resp = np.zeros((n_rows, n_components))
    resp[rows, np.arange(n_components)] = 1.0
    return resp


INIT_RESPONSIBILITIES: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "kmeans": lambda x, k, rng: np.eye(k)[kmeans_labels(x, k, rng)],
    "k-means++": lambda x, k, rng: _one_hot(kmeans_plusplus(x, k, rng), len(x), k),
    "random": lambda x, k, rng: (lambda r: r / r.sum(axis=1, keepdims=True))(
        rng.uniform(size=(len(x), k))
    ),
    "random_from_data": lambda x, k, rng: _one_hot(rng.choice(len(x), k, replace=False), len(x), k),
}


def initial_params(
    model: MixtureModel,
    sample: np.ndarray,
    rng: np.random.Generator,
    init_params: str,
    weights_init: np.ndarray | None = None,
    means_init: np.ndarray | None = None,
    precisions_init: np.ndarray | None = None,
) -> Params:
    """Starting parameters, as scikit-learn's ``_initialize`` computes them, on a sample.

    Responsibilities come from ``init_params`` on the sample; the parameters they
    imply are then overridden by whichever of the ``*_init`` arrays are given.
    """
    ctype = model.covariance_type
    params: Params = {}
    if weights_init is None or means_init is None or precisions_init is None:
        x = sample.astype(np.float64)
        if "X" in model.missing_ok:  # missing="marginalize": NaN are missing values
            x = mean_filled(x, model.n_components)
        resp = INIT_RESPONSIBILITIES[init_params](x, model.n_components, rng)
        shift = x.mean(axis=0)
        xc = x - shift
        stats = {
            "resp_sum": resp.sum(axis=0),
            "sum_x": resp.T @ xc,
            "scatter": gaussian.scatter_statistic(xc, resp, ctype, BLOCK_ROWS),
        }
        params = estimate_params(stats, shift, ctype, model.reg_covar)
    return model.start(_overridden(params, ctype, weights_init, means_init, precisions_init))


def observed_means(sums: np.ndarray, counts: np.ndarray, where: str) -> np.ndarray:
    """Each feature's mean over its observed values; a feature with none is an error."""
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise ValueError(
            f"Feature(s) {empty[:10].tolist()} have no observed value (all NaN) {where}, so "
            "nothing can be estimated for them. Drop those columns (or, if the sample "
            "missed their values, raise init_sample_size)."
        )
    return sums / counts


def mean_filled(x: np.ndarray, n_components: int) -> np.ndarray:
    """Initialisation rows with missing values: rows with no observed value dropped and
    each missing entry replaced by its feature's mean over the sample's observed values
    (so the k-means of the initialisation runs on the coordinates each row has, and
    moves its rows towards the middle along the others)."""
    missing = np.isnan(x)
    if not missing.any():
        return x
    x = x[~missing.all(axis=1)]
    missing = np.isnan(x)
    if len(x) < n_components:
        raise ValueError(
            f"The initialisation sample has {len(x)} rows with an observed value, fewer than "
            f"n_components={n_components}. Raise init_sample_size or pass more data."
        )
    sums, counts = np.where(missing, 0.0, x).sum(axis=0), (~missing).sum(axis=0)
    means = observed_means(sums, counts, "in the initialisation sample")
    return np.where(missing, means, x)


def mean_filled_array(array: da.Array, split_every: int) -> da.Array:
    """The data for k-means‖ with missing values: each NaN replaced (lazily) by its
    feature's mean over all the observed values (one pass to find the means)."""

    def sums(block: Block, _: Params) -> Stats:
        x = block["X"]
        missing = np.isnan(x)
        return {
            "sum": np.where(missing, 0.0, x).sum(axis=0, dtype=np.float64),
            "count": (~missing).sum(axis=0).astype(np.float64),
        }

    totals = map_reduce(
        sums, add_stats, {"X": array}, {}, split_every=split_every, missing_ok=frozenset({"X"})
    )
    means = observed_means(totals["sum"], totals["count"], "in X").astype(array.dtype)
    return da.where(da.isnan(array), means, array)


def resolve_init(init_params: str, n_samples: int, init_sample_size: int) -> str:
    """The method ``"auto"`` stands for, given the number of rows.

    ``"k-means||"`` over all the data when they have more rows than the initialisation
    sample (``init_sample_size``); else ``"kmeans"`` on the sample, which is then all
    the rows.
    """
    if init_params != "auto":
        return init_params
    return "k-means||" if n_samples > init_sample_size else "kmeans"


def kmeans_parallel_params(
    models: list[MixtureModel],
    array: Any,
    rngs: list[np.random.Generator],
    *,
    split_every: int,
    sample_weight: Any = None,
    weights_init: np.ndarray | None = None,
    means_init: np.ndarray | None = None,
    precisions_init: np.ndarray | None = None,
) -> list[Params]:
    """Starting parameters from k-means‖ over all the data, one per (model, generator).

    The seedings share their passes (see :mod:`dem.seeding`); the parameters are those
    of the hard assignment of the rows to the K clusters, as for ``"kmeans"``, weighted
    by ``sample_weight`` (a dask array chunked like ``array``) when given.
    """
    ctype = models[0].covariance_type
    seedings = kmeans_parallel(
        array,
        [m.n_components for m in models],
        rngs,
        scatter=ctype,
        split_every=split_every,
        weights=sample_weight,
    )
    return [
        model.start(
            _overridden(
                estimate_params(seeding.stats, seeding.shift, ctype, model.reg_covar),
                ctype,
                weights_init,
                means_init,
                precisions_init,
            )
        )
        for model, seeding in zip(models, seedings, strict=True)
    ]


def _overridden(
    params: Params,
    ctype: str,
    weights_init: np.ndarray | None,
    means_init: np.ndarray | None,
    precisions_init: np.ndarray | None,
) -> Params:
    if weights_init is not None:
        params["weights"] = np.asarray(weights_init, dtype=np.float64).copy()
    if means_init is not None:
        params["means"] = np.asarray(means_init, dtype=np.float64).copy()
    if precisions_init is not None:
        precisions = np.asarray(precisions_init, dtype=np.float64)
        params["precisions_cholesky"] = gaussian.precision_cholesky_from_precisions(
            precisions, ctype
        )
        params["covariances"] = gaussian.covariances_from_precisions(precisions, ctype)
    if "shift" not in params:  # every start was given: no sample was drawn
        params["shift"] = mixture_mean(params)
    return params
