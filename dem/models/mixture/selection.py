"""Choosing the number of mixture components: every K fitted in the same passes.

One :class:`~dem.models.mixture.model.MixtureModel` per K (and per restart) runs in lockstep
under :func:`dem.engine.fit_runs`, so each read of a chunk serves every K. One more
pass computes the log-likelihood of every fit at its final parameters, from which the
information criteria follow.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, cast

import numpy as np
import xarray as xr
from scipy.special import logsumexp

from dem import engine
from dem.estimator import _child_rngs
from dem.model import Block, Params, Stats
from dem.models import gaussian
from dem.models.kmeans import add_pass
from dem.models.mixture.estimator import GaussianMixture
from dem.models.mixture.init import initial_params, kmeans_parallel_params, resolve_init
from dem.models.mixture.model import MixtureModel
from dem.models.sample_weight import block_weights, count, positive, weighted_sum
from dem.weights import SAMPLE_WEIGHT, init_sample, with_weights

CRITERIA = ("bic", "aic")


class ComponentSelection(NamedTuple):
    """What :func:`select_n_components` returns.

    Attributes
    ----------
    best : GaussianMixture
        The fitted mixture whose K minimises the criterion.
    table : xarray.Dataset
        Per K (dimension ``n_components``): ``bic``, ``aic``, ``loglik`` (mean
        per-sample log-likelihood at the fitted parameters), ``n_parameters``,
        ``n_iter`` and ``converged``.
    models : dict of int to GaussianMixture
        The fitted mixture of every K.
    """

    best: GaussianMixture
    table: xr.Dataset
    models: dict[int, GaussianMixture]


def n_parameters(n_components: int, n_features: int, covariance_type: str) -> int:
    """Free parameters of a Gaussian mixture: weights, means and covariances."""
    covariances = gaussian.n_covariance_parameters(covariance_type, n_components, n_features)
    return int(covariances + n_components * n_features + n_components - 1)


def loglik_pass(block: Block, fits: list[tuple[MixtureModel, Params]]) -> list[Stats]:
    """Summed log-likelihood of one chunk under each (model, parameters), weighted by the
    block's sample weights when it has them."""
    weights, (x,) = positive(block_weights(block), block["X"])
    return [
        {
            "n": count(len(x), weights),
            "loglik": weighted_sum(logsumexp(model.weighted_log_prob(x, params), axis=1), weights),
        }
        for model, params in fits
    ]


def select_n_components(
    X: Any,
    n_components: Iterable[int] = range(1, 11),
    *,
    covariance_type: str = "full",
    criterion: str = "bic",
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    max_iter: int = 100,
    n_init: int = 1,
    init_params: str = "auto",
    random_state: int | np.random.Generator | None = None,
    split_every: int = 8,
    persist: bool | None = None,
    init_sample_size: int = 100_000,
    accelerate: str = "none",
    callback: Callable[[engine.IterationInfo], Any] | None = None,
    variable: str | None = None,
    sample_dim: str = "sample",
    feature_dim: str = "feature",
    sample_weight: Any = None,
) -> ComponentSelection:
    """Fit a Gaussian mixture for every K in the same passes; keep the best by BIC or AIC.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features), dask array, xarray.DataArray, or path
        The data; a Zarr store path needs ``variable``.
    n_components : iterable of int, default=range(1, 11)
        The numbers of components to try.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
    criterion : {"bic", "aic"}, default="bic"
        What ``best`` minimises: ``-2 log L + p log N`` (BIC) or ``-2 log L + 2 p``
        (AIC), with ``p`` free parameters, as scikit-learn's ``bic`` and ``aic``.
    tol, reg_covar, max_iter, n_init, init_params, random_state, split_every, persist, \
init_sample_size, accelerate, sample_dim, feature_dim
        As for :class:`GaussianMixture`; they apply to every K. With ``n_init`` > 1 each
        K keeps its restart of highest final log-likelihood. With k-means‖ the
        seedings of every K and restart share their passes too.
    callback : callable, optional
        Called after every step of every fit; ``IterationInfo.run`` numbers the fits
        K by K in the order given, restarts of one K together.
    variable : str, optional
        Name of the array in a Zarr store (or xarray Dataset).
    sample_weight : array-like of shape (n_samples,), dask array, or str, optional
        As for :meth:`GaussianMixture.fit`: every fit, the log-likelihoods and the
        criteria are weighted (BIC's N is then the sum of the weights).

    Returns
    -------
    ComponentSelection
        ``(best, table, models)``.

    Notes
    -----
    Passes over the data: the initialisation's (one read of a sample, or k-means‖'s
    six), then as many as the slowest fit takes, then one for the final
    log-likelihoods.
    """
    template = GaussianMixture(
        1,
        covariance_type=covariance_type,
        tol=tol,
        reg_covar=reg_covar,
        max_iter=max_iter,
        n_init=n_init,
        init_params=init_params,
        random_state=random_state,
        split_every=split_every,
        persist=persist,
        init_sample_size=init_sample_size,
        accelerate=accelerate,
        sample_dim=sample_dim,
        feature_dim=feature_dim,
    )
    template._model()  # validates the shared hyperparameters
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}; got {criterion!r}.")
    samples = template._samples(X, variable)
    weights = template._sample_weight(sample_weight, X, samples)
    n_samples, n_features = (int(s) for s in samples.array.shape)
    counts = _checked_counts(n_components, n_samples)

    models = [
        MixtureModel(k, covariance_type, float(reg_covar)) for k in counts for _ in range(n_init)
    ]
    rngs = _child_rngs(random_state, len(models) + 1)
    arrays = engine.prepare(
        {name: s.array for name, s in with_weights({"X": samples}, weights).items()}, persist
    )
    w = arrays.get(SAMPLE_WEIGHT)
    method = resolve_init(init_params, n_samples, int(init_sample_size))
    if method == "k-means||":
        starts = kmeans_parallel_params(
            models, arrays["X"], rngs[1:], split_every=int(split_every), sample_weight=w
        )
    else:  # one sample serves every K
        sample = init_sample(arrays["X"], w, int(init_sample_size), rngs[0])
        starts = [
            initial_params(model, sample, rng, method)
            for model, rng in zip(models, rngs[1:], strict=True)
        ]
    results = engine.fit_runs(
        models,
        arrays,
        [functools.partial(dict, p) for p in starts],
        tol=float(tol),
        max_iter=int(max_iter),
        split_every=int(split_every),
        accelerate=accelerate,
        callback=callback,
        persist=False,
    )
    fits = [(model, result.params) for model, result in zip(models, results, strict=True)]
    final = cast(
        list[Stats],
        engine.map_reduce(
            cast(Any, loglik_pass),
            cast(Any, add_pass),
            arrays,
            cast(Any, fits),
            split_every=int(split_every),
        ),
    )
    logliks = [float(stats["loglik"]) for stats in final]
    total = float(final[0]["n"])  # the number of samples, or the sum of their weights

    fitted: dict[int, GaussianMixture] = {}
    rows: dict[str, list[Any]] = {
        "bic": [],
        "aic": [],
        "loglik": [],
        "n_parameters": [],
        "n_iter": [],
        "converged": [],
    }
    for i, k in enumerate(counts):
        runs = range(i * n_init, (i + 1) * n_init)
        best = max(runs, key=lambda r: logliks[r])
        p = n_parameters(k, n_features, covariance_type)
        rows["bic"].append(-2.0 * logliks[best] + p * np.log(total))
        rows["aic"].append(-2.0 * logliks[best] + 2.0 * p)
        rows["loglik"].append(logliks[best] / total)
        rows["n_parameters"].append(p)
        rows["n_iter"].append(results[best].n_iter)
        rows["converged"].append(results[best].converged)
        fitted[k] = _fitted(template, k, results[best], n_features)
    table = xr.Dataset(
        {name: ("n_components", np.asarray(values)) for name, values in rows.items()},
        coords={"n_components": counts},
        attrs={"criterion": criterion, "covariance_type": covariance_type, "n_samples": n_samples},
    )
    chosen = counts[int(np.argmin(table[criterion].values))]
    table.attrs["best_n_components"] = chosen
    return ComponentSelection(fitted[chosen], table, fitted)


def _checked_counts(n_components: Iterable[int], n_samples: int) -> list[int]:
    counts = list(n_components)
    if not counts or not all(isinstance(k, int | np.integer) and k >= 1 for k in counts):
        raise ValueError(
            f"n_components must be a non-empty sequence of integers >= 1; got {counts!r}."
        )
    if len(set(counts)) != len(counts):
        raise ValueError(f"n_components repeats a value: {counts!r}.")
    if max(counts) > n_samples:
        raise ValueError(
            f"n_components goes up to {max(counts)} but there are only {n_samples} samples. "
            "Try fewer components or more data."
        )
    return [int(k) for k in counts]


def _fitted(
    template: GaussianMixture, n_components: int, result: engine.EMResult, n_features: int
) -> GaussianMixture:
    options = {
        name: getattr(template, name)
        for name in (
            "covariance_type",
            "tol",
            "reg_covar",
            "max_iter",
            "n_init",
            "init_params",
            "random_state",
            "split_every",
            "persist",
            "init_sample_size",
            "accelerate",
            "sample_dim",
            "feature_dim",
        )
    }
    estimator = GaussianMixture(n_components, **options)
    estimator._set_params(result.params)
    estimator.converged_ = result.converged
    estimator.n_iter_ = result.n_iter
    estimator.lower_bounds_ = list(result.lower_bounds)
    estimator.lower_bound_ = result.lower_bound
    estimator.n_features_in_ = n_features
    return estimator
