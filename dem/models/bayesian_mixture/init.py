"""Starting state of a variational Gaussian mixture: the priors, then initial responsibilities.

As scikit-learn's ``_initialize``: the first parameters are the variational M-step of
the statistics of initial responsibilities. Those come from the Gaussian mixture's
methods (:mod:`dem.models.mixture.init`) on a bounded sample of rows, their statistics
scaled to the number of rows of the data (so the counts are those of all the data); or
from k-means‖ over all the data; or from responsibilities the user gives for every
row (``resp_init``: one pass, and then every iteration equals scikit-learn's from the
same responsibilities). The priors the user leaves out are scikit-learn's defaults; the
data mean and covariance take one pass over all the data (:func:`data_priors`).
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np

from dem.engine import map_reduce
from dem.model import Block, Params, Stats, add_stats
from dem.models import gaussian
from dem.models.bayesian_mixture import kernels
from dem.models.bayesian_mixture.model import BayesianMixtureModel
from dem.models.mixture.init import INIT_RESPONSIBILITIES
from dem.models.mixture.kernels import BLOCK_ROWS
from dem.models.sample_weight import SAMPLE_WEIGHT, block_weights, positive
from dem.seeding import kmeans_parallel


def _moments(block: Block, params: Params) -> Stats:
    weights, (x,) = positive(block_weights(block), block["X"])
    return kernels.data_moments(x, bool(params["diagonal"]), weights)


def _combine_moments(a: Stats, b: Stats) -> Stats:
    return kernels.combine_moments(a, b)


def data_priors(
    model: BayesianMixtureModel,
    array: da.Array,
    *,
    split_every: int,
    weights: da.Array | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The data's mean and covariance as scikit-learn's default priors take them: one pass
    (the moments of each chunk about its own mean, merged exactly in the tree); with
    sample ``weights``, those of the rows repeated as often as their weights say."""
    diagonal = model.covariance_type in ("diag", "spherical")
    moments = map_reduce(
        _moments,
        _combine_moments,
        _with_weights({"X": array}, weights),
        {"diagonal": np.asarray(diagonal)},
        split_every=split_every,
        missing_ok=model.missing_ok,
    )
    return kernels.default_priors(moments, model.covariance_type)


def priors(
    model: BayesianMixtureModel,
    n_features: int,
    data: tuple[np.ndarray, np.ndarray] | None,
) -> Params:
    """The priors in use: the model's where it has them, else scikit-learn's defaults
    (``data``: the data's mean and covariance, needed when the model lacks either)."""

    def given(value: Any, default: Any) -> np.ndarray:
        return np.asarray(default if value is None else value, dtype=np.float64)

    mean, covariance = data if data is not None else (None, None)
    return {
        "weight_concentration_prior": given(
            model.weight_concentration_prior, 1.0 / model.n_components
        ),
        "mean_precision_prior": given(model.mean_precision_prior, 1.0),
        "degrees_of_freedom_prior": given(model.degrees_of_freedom_prior, float(n_features)),
        "mean_prior": given(model.mean_prior, mean),
        "covariance_prior": given(model.covariance_prior, covariance),
    }


def from_statistics(
    model: BayesianMixtureModel, stats: Stats, shift: np.ndarray, prior: Params
) -> Params:
    """The first parameters: the variational M-step of the responsibilities' statistics
    (about ``shift``)."""
    return model.m_step(stats, {**prior, "shift": np.asarray(shift, dtype=np.float64)})


def sample_statistics(
    model: BayesianMixtureModel,
    sample: np.ndarray,
    n_samples: float,
    rng: np.random.Generator,
    method: str,
) -> tuple[Stats, np.ndarray]:
    """Statistics of the responsibilities ``method`` gives on a row sample, about the
    sample's mean, scaled to ``n_samples`` rows (unchanged when the sample is the data;
    for a weighted fit, ``n_samples`` is the total weight)."""
    x = sample.astype(np.float64)
    resp = INIT_RESPONSIBILITIES[method](x, model.n_components, rng)
    shift = x.mean(axis=0)
    xc = x - shift
    stats: Stats = {
        "resp_sum": resp.sum(axis=0),
        "sum_x": resp.T @ xc,
        "scatter": gaussian.scatter_statistic(xc, resp, model.covariance_type, BLOCK_ROWS),
    }
    if len(x) != n_samples:
        stats = {key: value * (n_samples / len(x)) for key, value in stats.items()}
    return stats, shift


def kmeans_parallel_statistics(
    model: BayesianMixtureModel,
    array: da.Array,
    rng: np.random.Generator,
    *,
    split_every: int,
    weights: da.Array | None = None,
) -> tuple[Stats, np.ndarray]:
    """Statistics of the hard assignment to k-means‖ clusters over all the data (weighted
    by the sample ``weights``, when given)."""
    (seeding,) = kmeans_parallel(
        array,
        [model.n_components],
        [rng],
        scatter=model.covariance_type,
        split_every=split_every,
        weights=weights,
    )
    return seeding.stats, seeding.shift


def _resp_statistics(block: Block, params: Params) -> Stats:
    weights, (x, resp) = positive(block_weights(block), block["X"], block["resp"])
    x = np.asarray(x, dtype=np.float64)
    resp = np.asarray(resp, dtype=np.float64)
    if weights is not None:
        resp = resp * weights[:, None]
    xc = x - params["shift"]
    return {
        "resp_sum": resp.sum(axis=0),
        "sum_x": resp.T @ xc,
        "scatter": gaussian.scatter_statistic(xc, resp, str(params["ctype"]), BLOCK_ROWS),
    }


def resp_statistics(
    model: BayesianMixtureModel,
    array: da.Array,
    resp: da.Array,
    shift: np.ndarray,
    *,
    split_every: int,
    weights: da.Array | None = None,
) -> Stats:
    """Statistics of the given responsibilities of every row (one pass, ``resp``
    chunked as ``array``), about ``shift``; each row's times its sample weight."""
    return map_reduce(
        _resp_statistics,
        add_stats,
        _with_weights({"X": array, "resp": resp}, weights),
        {"shift": shift, "ctype": np.asarray(model.covariance_type)},
        split_every=split_every,
        missing_ok=model.missing_ok,
    )


def _with_weights(arrays: dict[str, da.Array], weights: da.Array | None) -> dict[str, da.Array]:
    return arrays if weights is None else {**arrays, SAMPLE_WEIGHT: weights}
