"""Synthetic data stores of any size, written chunk by chunk with bounded memory.

A generator is a pair: the ground truth (small parameter arrays, drawn once from a
seed) and a function that draws any number of samples from it. :func:`write_store`
streams chunks of samples into a Zarr group, so the memory used is a few chunks,
whatever the number of samples, and keeps the ground truth in the group's
attributes (JSON, read back by :func:`read_truth`). The store is marked as dem's
output (:mod:`dem.outputs`) before its first array and complete after its last write,
so an interrupted store says it is incomplete.

Each chunk is drawn from its own child of the seed, so a store's content depends only
on the seed and the chunking, not on the order in which chunks were written.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from dem.outputs import ATTRIBUTE as OUTPUT_ATTRIBUTE
from dem.outputs import mark_complete, marker

Truth = dict[str, np.ndarray]
Draw = Callable[[Truth, np.random.Generator, int], dict[str, np.ndarray]]

ATTRIBUTE = "dem_synth"
#: Observations per chunk when no chunking is given.
DEFAULT_CHUNK_STEPS = 100_000


@dataclass(frozen=True)
class Generator:
    """How to make ground truth and draw samples from it for one model family.

    Attributes
    ----------
    truth : callable
        ``truth(n_features, rng, **options) -> dict`` of parameter arrays.
    draw : callable
        ``draw(truth, rng, n_rows) -> dict`` of per-sample arrays (the stored
        variables, e.g. ``X`` and ``labels``), each with ``n_rows`` rows.
    dims : dict
        Dimension names of each stored variable.
    row_steps : callable
        ``row_steps(truth)``: observations in one stored row (1 for samples × features
        data, the number of time steps for sequences); sets the default chunking.
    """

    truth: Callable[..., Truth]
    draw: Draw
    dims: dict[str, tuple[str, ...]]
    row_steps: Callable[[Truth], int] = lambda truth: 1
    writer: Callable[..., None] | None = None
    """``writer(group, truth, seeds, n_samples, chunk_rows, dtype, threads, on_chunk)``
    writes the store's variables itself (a layout other than one array per variable,
    such as a sparse corpus); the truth and the markers are written around it."""


# --- Gaussian mixture ----------------------------------------------------------------


def gmm_truth(
    n_features: int,
    rng: np.random.Generator,
    *,
    n_components: int = 8,
    separation: float = 1.0,
    missing: float = 0.0,
) -> Truth:
    """Weights, means and full covariances of a random Gaussian mixture.

    Means are drawn with standard deviation ``separation`` per coordinate, so two
    means lie about ``separation * sqrt(2 * n_features)`` apart; covariances have
    random orientations and eigenvalues between 0.5 and 1.5. With ``missing`` > 0 each
    entry of the drawn data is missing (NaN) with that probability (for
    ``GaussianMixture(missing="marginalize")``).
    """
    if n_components < 1 or n_features < 1:
        raise ValueError("n_components and n_features must be at least 1.")
    if not 0 <= missing < 1:
        raise ValueError(f"missing must be in [0, 1); got {missing}.")
    weights = rng.dirichlet(np.full(n_components, 8.0))
    means = rng.normal(0.0, separation, size=(n_components, n_features))
    covariances = np.empty((n_components, n_features, n_features))
    for k in range(n_components):
        rotation, _ = np.linalg.qr(rng.standard_normal((n_features, n_features)))
        eigenvalues = rng.uniform(0.5, 1.5, size=n_features)
        covariances[k] = (rotation * eigenvalues) @ rotation.T
    truth = {"weights": weights, "means": means, "covariances": covariances}
    if missing > 0:  # complete data keep the truth (and the draws) they always had
        truth["missing"] = np.asarray(missing, dtype=np.float64)
    return truth


def gmm_draw(truth: Truth, rng: np.random.Generator, n_rows: int) -> dict[str, np.ndarray]:
    """``n_rows`` samples of the mixture (``X``) and the component each came from."""
    weights, means = truth["weights"], truth["means"]
    labels = rng.choice(len(weights), size=n_rows, p=weights / weights.sum())
    x = rng.standard_normal((n_rows, means.shape[1]))
    factors = np.linalg.cholesky(truth["covariances"])
    for k in range(len(weights)):
        rows = labels == k
        x[rows] = x[rows] @ factors[k].T + means[k]
    if "missing" in truth:
        x[rng.random(x.shape) < truth["missing"]] = np.nan
    return {"X": x, "labels": labels.astype(np.int32)}


# --- probabilistic PCA and factor analysis ------------------------------------------


def linear_gaussian_truth(
    n_features: int,
    rng: np.random.Generator,
    *,
    n_components: int = 2,
    noise_variance: float = 0.1,
    missing: float = 0.0,
    diagonal: bool = False,
) -> Truth:
    """Loadings, mean and noise of ``x = W z + μ + ε``, and the fraction of missing entries.

    ``W`` (``loadings``, shape (n_features, n_components)) has standard normal entries
    with column ``k`` scaled by ``sqrt(n_components - k)``, so the latent directions
    carry distinct variances. The noise is ``noise_variance`` on every feature, or with
    ``diagonal``, ``noise_variance`` times a uniform draw in [0.5, 1.5] per feature
    (factor analysis). Each entry is missing (NaN) with probability ``missing``.
    """
    if not 1 <= n_components < n_features:
        raise ValueError(
            f"n_components must be at least 1 and below n_features={n_features}; got "
            f"{n_components}."
        )
    if noise_variance <= 0 or not 0 <= missing < 1:
        raise ValueError("noise_variance must be positive and missing in [0, 1).")
    scales = np.sqrt(np.arange(n_components, 0, -1, dtype=np.float64))
    loadings = rng.standard_normal((n_features, n_components)) * scales
    mean = rng.normal(0.0, 1.0, n_features)
    noise = np.asarray(noise_variance, dtype=np.float64)
    if diagonal:
        noise = noise_variance * rng.uniform(0.5, 1.5, n_features)
    return {
        "loadings": loadings,
        "mean": mean,
        "noise_variance": noise,
        "missing": np.asarray(missing, dtype=np.float64),
    }


def linear_gaussian_draw(
    truth: Truth, rng: np.random.Generator, n_rows: int
) -> dict[str, np.ndarray]:
    """``n_rows`` samples ``X`` (NaN where missing) and their latent values ``Z``."""
    loadings = truth["loadings"]
    z = rng.standard_normal((n_rows, loadings.shape[1]))
    noise = rng.standard_normal((n_rows, loadings.shape[0])) * np.sqrt(truth["noise_variance"])
    x = z @ loadings.T + truth["mean"] + noise
    x[rng.random(x.shape) < truth["missing"]] = np.nan
    return {"X": x, "Z": z}


def factor_analysis_truth(n_features: int, rng: np.random.Generator, **options: Any) -> Truth:
    """:func:`linear_gaussian_truth` with one noise variance per feature."""
    return linear_gaussian_truth(n_features, rng, diagonal=True, **options)


# --- censored (Tobit) regression -------------------------------------------------------


def tobit_truth(
    n_features: int,
    rng: np.random.Generator,
    *,
    left: float = 0.0,
    right: float = np.inf,
    scale: float = 1.0,
    limit_spread: float = 0.0,
) -> Truth:
    """Coefficients, intercept and scale of ``y* = intercept + X coef + scale ε``, and limits.

    ``coef`` and ``intercept`` are standard normal draws. Each row's limits are
    ``left`` and ``right`` plus one uniform draw in [-limit_spread, limit_spread]
    (the same for both), so ``limit_spread > 0`` gives per-row censoring points.
    """
    if not left < right or scale <= 0 or limit_spread < 0:
        raise ValueError("Need left < right, scale > 0 and limit_spread >= 0.")
    return {
        "coef": rng.standard_normal(n_features),
        "intercept": np.asarray(rng.standard_normal()),
        "scale": np.asarray(scale, dtype=np.float64),
        "left": np.asarray(left, dtype=np.float64),
        "right": np.asarray(right, dtype=np.float64),
        "limit_spread": np.asarray(limit_spread, dtype=np.float64),
    }


def tobit_draw(truth: Truth, rng: np.random.Generator, n_rows: int) -> dict[str, np.ndarray]:
    """Features ``X``, the observed ``y = clip(y*, left, right)`` and each row's limits."""
    x = rng.standard_normal((n_rows, len(truth["coef"])))
    latent = truth["intercept"] + x @ truth["coef"] + truth["scale"] * rng.standard_normal(n_rows)
    shift = truth["limit_spread"] * rng.uniform(-1.0, 1.0, n_rows)
    left, right = truth["left"] + shift, truth["right"] + shift
    return {"X": x, "y": np.clip(latent, left, right), "left": left, "right": right}


# --- hidden Markov models ----------------------------------------------------------------


def _markov_truth(rng: np.random.Generator, n_components: int, n_times: int, ragged: bool) -> Truth:
    if n_components < 1 or n_times < 1:
        raise ValueError("n_components and n_times must be at least 1.")
    # sticky chains: each state is kept with probability about 0.8
    stay = np.eye(n_components) * 4.0 * max(1, n_components - 1)
    return {
        "startprob": rng.dirichlet(np.full(n_components, 5.0)),
        "transmat": np.array([rng.dirichlet(1.0 + row) for row in stay]),
        "n_times": np.asarray(n_times, dtype=np.int64),
        "ragged": np.asarray(ragged),
    }


def gaussian_hmm_truth(
    n_features: int,
    rng: np.random.Generator,
    *,
    n_components: int = 3,
    n_times: int = 100,
    separation: float = 3.0,
    ragged: bool = False,
) -> Truth:
    """Start and transition probabilities, state means and diagonal covariances.

    Means are drawn with standard deviation ``separation`` per coordinate, variances
    uniformly in [0.5, 1.5]. With ``ragged``, sequence lengths are uniform between
    ``n_times // 2`` and ``n_times`` (NaN padding after each).
    """
    return {
        **_markov_truth(rng, n_components, n_times, ragged),
        "means": rng.normal(0.0, separation, (n_components, n_features)),
        "covars": rng.uniform(0.5, 1.5, (n_components, n_features)),
    }


def categorical_hmm_truth(
    n_features: int,
    rng: np.random.Generator,
    *,
    n_components: int = 3,
    n_times: int = 100,
    ragged: bool = False,
) -> Truth:
    """Start and transition probabilities, and emission probabilities over ``n_features``
    symbols (rows drawn from a Dirichlet with parameter 0.5: peaked on a few symbols)."""
    return {
        **_markov_truth(rng, n_components, n_times, ragged),
        "emissionprob": rng.dirichlet(np.full(n_features, 0.5), size=n_components),
    }


def _draw_states(
    truth: Truth, rng: np.random.Generator, n_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """State paths (n_rows, n_times) and lengths; -1 at padding."""
    n_times = int(truth["n_times"])
    start, trans = np.cumsum(truth["startprob"]), np.cumsum(truth["transmat"], axis=1)
    states = np.empty((n_rows, n_times), dtype=np.int64)
    states[:, 0] = np.minimum(
        np.searchsorted(start, rng.random(n_rows), side="right"), len(start) - 1
    )
    for t in range(1, n_times):
        above = rng.random(n_rows)[:, None] >= trans[states[:, t - 1]]
        states[:, t] = np.minimum(above.sum(axis=1), len(start) - 1)
    lengths = np.full(n_rows, n_times, dtype=np.int64)
    if truth["ragged"]:
        lengths = rng.integers(max(1, n_times // 2), n_times + 1, n_rows)
    padding = np.arange(n_times)[None, :] >= lengths[:, None]
    states[padding] = -1
    return states, lengths


def gaussian_hmm_draw(truth: Truth, rng: np.random.Generator, n_rows: int) -> dict[str, np.ndarray]:
    """``n_rows`` sequences ``X`` (NaN at padding), their ``states`` and ``lengths``."""
    states, lengths = _draw_states(truth, rng, n_rows)
    valid = states >= 0
    at = np.maximum(states, 0)
    x = truth["means"][at] + np.sqrt(truth["covars"][at]) * rng.standard_normal(
        (*states.shape, truth["means"].shape[1])
    )
    x[~valid] = np.nan
    return {"X": x, "states": states, "lengths": lengths}


def categorical_hmm_draw(
    truth: Truth, rng: np.random.Generator, n_rows: int
) -> dict[str, np.ndarray]:
    """``n_rows`` sequences of symbols ``X`` (NaN at padding), ``states`` and ``lengths``."""
    states, lengths = _draw_states(truth, rng, n_rows)
    cdf = np.cumsum(truth["emissionprob"], axis=1)[np.maximum(states, 0)]
    symbols = np.minimum(
        (rng.random(states.shape)[..., None] >= cdf).sum(axis=-1), cdf.shape[-1] - 1
    )
    x = symbols.astype(np.float64)
    x[states < 0] = np.nan
    return {"X": x, "states": states, "lengths": lengths}


def gmm_hmm_truth(
    n_features: int,
    rng: np.random.Generator,
    *,
    n_components: int = 3,
    n_mix: int = 2,
    n_times: int = 100,
    separation: float = 4.0,
    ragged: bool = False,
) -> Truth:
    """Start and transition probabilities, and per state a mixture of ``n_mix`` Gaussians.

    State centres are drawn with standard deviation ``separation`` per coordinate, each
    component's mean about its state's centre with standard deviation 1, its diagonal
    variances uniformly in [0.2, 0.6], and each state's weights from a Dirichlet(5).
    """
    if n_mix < 1:
        raise ValueError("n_mix must be at least 1.")
    centres = rng.normal(0.0, separation, (n_components, 1, n_features))
    return {
        **_markov_truth(rng, n_components, n_times, ragged),
        "weights": rng.dirichlet(np.full(n_mix, 5.0), size=n_components),
        "means": centres + rng.normal(0.0, 1.0, (n_components, n_mix, n_features)),
        "covars": rng.uniform(0.2, 0.6, (n_components, n_mix, n_features)),
    }


def gmm_hmm_draw(truth: Truth, rng: np.random.Generator, n_rows: int) -> dict[str, np.ndarray]:
    """``n_rows`` sequences ``X`` (NaN at padding), their ``states`` and ``lengths``."""
    states, lengths = _draw_states(truth, rng, n_rows)
    valid = states >= 0
    at = np.maximum(states, 0)
    cdf = np.cumsum(truth["weights"], axis=1)[at]
    mix = np.minimum((rng.random(at.shape)[..., None] >= cdf).sum(axis=-1), cdf.shape[-1] - 1)
    x = truth["means"][at, mix] + np.sqrt(truth["covars"][at, mix]) * rng.standard_normal(
        (*states.shape, truth["means"].shape[-1])
    )
    x[~valid] = np.nan
    return {"X": x, "states": states, "lengths": lengths}


# --- mixture of factor analyzers -------------------------------------------------------


def mfa_truth(
    n_features: int,
    rng: np.random.Generator,
    *,
    n_components: int = 4,
    n_factors: int = 2,
    noise_variance: float = 0.1,
    separation: float = 3.0,
    missing: float = 0.0,
) -> Truth:
    """Weights, means, loadings and per-feature noise of a mixture of factor analyzers.

    Each component lies near its own random ``n_factors``-dimensional subspace: its
    loadings (``loadings``, shape (K, n_features, n_factors)) have standard normal
    entries, column ``j`` scaled by ``sqrt(n_factors - j)``; its noise is
    ``noise_variance`` times a uniform draw in [0.5, 1.5] per feature. Means are drawn
    with standard deviation ``separation`` per coordinate. Each entry is missing (NaN)
    with probability ``missing``.
    """
    if n_components < 1 or not 1 <= n_factors < n_features:
        raise ValueError(
            f"n_components must be at least 1 and n_factors between 1 and n_features - 1 "
            f"(n_features={n_features}); got {n_components} and {n_factors}."
        )
    if noise_variance <= 0 or not 0 <= missing < 1:
        raise ValueError("noise_variance must be positive and missing in [0, 1).")
    scales = np.sqrt(np.arange(n_factors, 0, -1, dtype=np.float64))
    return {
        "weights": rng.dirichlet(np.full(n_components, 8.0)),
        "means": rng.normal(0.0, separation, size=(n_components, n_features)),
        "loadings": rng.standard_normal((n_components, n_features, n_factors)) * scales,
        "noise_variance": noise_variance * rng.uniform(0.5, 1.5, (n_components, n_features)),
        "missing": np.asarray(missing, dtype=np.float64),
    }


def mfa_draw(truth: Truth, rng: np.random.Generator, n_rows: int) -> dict[str, np.ndarray]:
    """``n_rows`` samples ``X`` (NaN where missing) and the component each came from."""
    weights, loadings = truth["weights"], truth["loadings"]
    labels = rng.choice(len(weights), size=n_rows, p=weights / weights.sum())
    z = rng.standard_normal((n_rows, loadings.shape[2]))
    x = rng.standard_normal((n_rows, loadings.shape[1])) * np.sqrt(truth["noise_variance"][labels])
    x += np.einsum("nq,njq->nj", z, loadings[labels]) + truth["means"][labels]
    x[rng.random(x.shape) < truth["missing"]] = np.nan
    return {"X": x, "labels": labels.astype(np.int32)}


def _n_times(truth: Truth) -> int:
    return int(truth["n_times"])


_SEQUENCES = {
    "X": ("sequence", "time", "feature"),
    "states": ("sequence", "time"),
    "lengths": ("sequence",),
}

GENERATORS: dict[str, Generator] = {
    "gmm": Generator(gmm_truth, gmm_draw, {"X": ("sample", "feature"), "labels": ("sample",)}),
    "ppca": Generator(
        linear_gaussian_truth,
        linear_gaussian_draw,
        {"X": ("sample", "feature"), "Z": ("sample", "component")},
    ),
    "fa": Generator(
        factor_analysis_truth,
        linear_gaussian_draw,
        {"X": ("sample", "feature"), "Z": ("sample", "component")},
    ),
    "tobit": Generator(
        tobit_truth,
        tobit_draw,
        {"X": ("sample", "feature"), "y": ("sample",), "left": ("sample",), "right": ("sample",)},
    ),
    "hmm": Generator(gaussian_hmm_truth, gaussian_hmm_draw, _SEQUENCES, _n_times),
    "categorical-hmm": Generator(
        categorical_hmm_truth,
        categorical_hmm_draw,
        {**_SEQUENCES, "X": ("sequence", "time")},
        _n_times,
    ),
    "mfa": Generator(mfa_truth, mfa_draw, {"X": ("sample", "feature"), "labels": ("sample",)}),
}
GENERATORS["gmmhmm"] = Generator(gmm_hmm_truth, gmm_hmm_draw, _SEQUENCES, _n_times)


# --- writing -------------------------------------------------------------------------


def write_store(
    path: str | os.PathLike[str],
    model: str,
    *,
    n_samples: int,
    n_features: int,
    seed: int = 0,
    chunk_rows: int | None = None,
    dtype: str = "float64",
    threads: int = 2,
    options: dict[str, Any] | None = None,
    on_chunk: Callable[[int, int], Any] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Truth:
    """Write a synthetic store for ``model`` chunk by chunk; return its ground truth.

    Parameters
    ----------
    path : str or path-like
        The Zarr store to create (it must not exist): a path or an fsspec URL.
    model : str
        A key of :data:`GENERATORS` (``"gmm"``, ``"ppca"``, ``"fa"``, ``"tobit"``,
        ``"hmm"``, ``"categorical-hmm"``, ``"mfa"``).
    n_samples, n_features : int
        Size of the data: samples (sequences for HMMs) and features (symbols for
        ``"categorical-hmm"``).
    seed : int
        Seeds the ground truth and every chunk.
    chunk_rows : int, optional
        Samples (sequences) per chunk, the store's chunking along its first axis. By
        default, 100,000 observations: 100,000 samples, or 100,000 // n_times sequences.
    dtype : {"float64", "float32"}
        Data type of the feature matrix.
    threads : int
        Chunks drawn and compressed at once; memory stays near ``threads`` chunks.
    options : dict, optional
        Model-specific options passed to the generator's ``truth`` function.
    on_chunk : callable, optional
        Called as ``on_chunk(rows_done, n_samples)`` after each chunk is written.
    storage_options : dict, optional
        Options of the URL's fsspec filesystem (credentials, endpoint).

    Returns
    -------
    dict of str to numpy.ndarray
        The ground-truth parameters (also stored in the group's attributes).

    Notes
    -----
    The group's ``dem_output`` attribute is ``{"writer": "dem synth", "complete":
    false}`` until every chunk and the truth are written, then ``complete`` is true.
    """
    if model not in GENERATORS:
        raise ValueError(f"Unknown synthetic model {model!r}; choose one of {sorted(GENERATORS)}.")
    if n_samples < 1 or n_features < 1 or (chunk_rows is not None and chunk_rows < 1):
        raise ValueError("n_samples, n_features and chunk_rows must be at least 1.")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}.")
    from dem import outputs, storage

    remote = storage.is_remote(path)
    if outputs.output_exists(path, storage_options) if remote else os.path.exists(path):
        raise FileExistsError(
            f"{storage.location(path) if storage.is_remote(path) else os.fspath(path)!r} "
            "already exists; choose a new path or delete it."
        )
    generator = GENERATORS[model]
    truth_seed, chunk_seeds = np.random.SeedSequence(seed).spawn(2)
    truth = generator.truth(n_features, np.random.default_rng(truth_seed), **(options or {}))
    if chunk_rows is None:
        chunk_rows = max(1, DEFAULT_CHUNK_STEPS // generator.row_steps(truth))
    n_chunks = -(-n_samples // chunk_rows)
    seeds = chunk_seeds.spawn(n_chunks)

    where = storage.writable(os.fspath(path), storage_options)[2] if remote else os.fspath(path)
    group = zarr.open_group(where, mode="w-")
    group.attrs[OUTPUT_ATTRIBUTE] = marker("dem synth", complete=False)  # first: not yet whole
    if generator.writer is not None:
        generator.writer(group, truth, seeds, n_samples, chunk_rows, dtype, threads, on_chunk)
        return _finish(
            path, group, model, seed, n_samples, n_features, options, truth, storage_options
        )
    # One draw of one row tells the variables' shapes and dtypes.
    probe = generator.draw(truth, np.random.default_rng(0), 1)
    arrays = {}
    for name, value in probe.items():
        stored_dtype = dtype if name == "X" else value.dtype
        arrays[name] = group.create_array(
            name,
            shape=(n_samples, *value.shape[1:]),
            chunks=(chunk_rows, *value.shape[1:]),
            dtype=stored_dtype,
            dimension_names=generator.dims[name],
        )

    def write_chunk(index: int) -> int:
        start = index * chunk_rows
        stop = min(start + chunk_rows, n_samples)
        values = generator.draw(truth, np.random.default_rng(seeds[index]), stop - start)
        for name, array in arrays.items():
            array[start:stop] = values[name].astype(array.dtype, copy=False)
        return stop - start

    done = 0
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for rows in pool.map(write_chunk, range(n_chunks)):
            done += rows
            if on_chunk is not None:
                on_chunk(done, n_samples)
    return _finish(path, group, model, seed, n_samples, n_features, options, truth, storage_options)


def _finish(
    path: str | os.PathLike[str],
    group: zarr.Group,
    model: str,
    seed: int,
    n_samples: int,
    n_features: int,
    options: dict[str, Any] | None,
    truth: Truth,
    storage_options: dict[str, Any] | None,
) -> Truth:
    """The truth in the attributes (what a writer stored as arrays left out), then the
    store marked complete."""
    stored = {name for name, _ in group.arrays()}
    group.attrs[ATTRIBUTE] = {
        "model": model,
        "seed": seed,
        "n_samples": n_samples,
        "n_features": n_features,
        "options": options or {},
        "truth": {name: value.tolist() for name, value in truth.items() if name not in stored},
    }
    mark_complete(path, storage_options)  # last: every chunk and the truth are written
    return truth


def read_truth(path: str | os.PathLike[str]) -> Truth:
    """The ground truth that :func:`write_store` kept in a store's attributes."""
    attrs = dict(zarr.open_group(os.fspath(path), mode="r").attrs)
    if ATTRIBUTE not in attrs:
        raise KeyError(
            f"{os.fspath(path)!r} was not written by dem synth (no {ATTRIBUTE!r} attribute)."
        )
    stored: dict[str, Any] = attrs[ATTRIBUTE]  # type: ignore[assignment]
    return {name: np.asarray(value) for name, value in stored["truth"].items()}


# --- Student-t mixture (appended: the generator registers itself below) ----------------


def student_mixture_truth(
    n_features: int,
    rng: np.random.Generator,
    *,
    n_components: int = 8,
    separation: float = 1.0,
    dof: float = 5.0,
) -> Truth:
    """:func:`gmm_truth` (the scale matrices as ``covariances``) with ``dof`` degrees of
    freedom for every component (``dofs``)."""
    if not dof > 0:
        raise ValueError(f"dof must be positive, got {dof}.")
    truth = gmm_truth(n_features, rng, n_components=n_components, separation=separation)
    return {**truth, "dofs": np.full(n_components, float(dof))}


def student_mixture_draw(
    truth: Truth, rng: np.random.Generator, n_rows: int
) -> dict[str, np.ndarray]:
    """``n_rows`` samples of the t mixture (``X``) and the component each came from:
    a Gaussian draw of the component divided, about its mean, by ``sqrt(τ)`` with
    ``τ ~ Gamma(ν/2, rate ν/2)``."""
    drawn = gmm_draw(truth, rng, n_rows)
    x, labels = drawn["X"], drawn["labels"]
    dofs = np.asarray(truth["dofs"], dtype=np.float64)[labels]
    tau = rng.gamma(dofs / 2.0, 2.0 / dofs)
    means = np.asarray(truth["means"])[labels]
    return {"X": means + (x - means) / np.sqrt(tau)[:, None], "labels": labels}


GENERATORS["tmix"] = Generator(
    student_mixture_truth, student_mixture_draw, {"X": ("sample", "feature"), "labels": ("sample",)}
)


# --- latent Dirichlet allocation (a sparse corpus, written in the CSR layout) ---------


def lda_truth(
    n_features: int,
    rng: np.random.Generator,
    *,
    n_components: int = 10,
    words: float = 100.0,
    doc_topic_prior: float = 0.1,
    topic_word_prior: float = 0.05,
) -> Truth:
    """Topics (K × V word distributions, each ~ Dirichlet(``topic_word_prior``)), the
    documents' prior α and their mean length (words per document, Poisson)."""
    if n_components < 1 or n_features < 2:
        raise ValueError("n_components must be at least 1 and the vocabulary at least 2.")
    if not (words > 0 and doc_topic_prior > 0 and topic_word_prior > 0):
        raise ValueError("words, doc_topic_prior and topic_word_prior must be positive.")
    topics = rng.dirichlet(np.full(n_features, float(topic_word_prior)), size=n_components)
    return {
        "topics": topics,
        "doc_topic_prior": np.asarray(float(doc_topic_prior)),
        "words": np.asarray(float(words)),
    }


def lda_draw_sparse(truth: Truth, rng: np.random.Generator, n_rows: int) -> tuple[Any, np.ndarray]:
    """``n_rows`` documents of the generative model: word counts (CSR, documents × terms)
    and each document's topic proportions θ. Each document has Poisson(``words``)
    words; its topic counts are multinomial in θ ~ Dirichlet(α), and each topic's words
    are drawn from its distribution by inverse CDF (no dense documents × terms array)."""
    from scipy import sparse

    topics = np.asarray(truth["topics"], dtype=np.float64)
    k, v = topics.shape
    theta = rng.dirichlet(np.full(k, float(truth["doc_topic_prior"])), size=n_rows)
    lengths = rng.poisson(float(truth["words"]), size=n_rows)
    per_topic = rng.multinomial(lengths, theta)  # (n_rows, K) words of each topic
    docs, terms = [], []
    for topic in range(k):
        counts = per_topic[:, topic]
        cdf = np.cumsum(topics[topic])
        drawn = np.searchsorted(cdf, rng.random(int(counts.sum())) * cdf[-1], side="right")
        docs.append(np.repeat(np.arange(n_rows), counts))
        terms.append(np.minimum(drawn, v - 1))
    rows, cols = np.concatenate(docs), np.concatenate(terms)
    matrix = sparse.csr_matrix(
        (np.ones(len(rows)), (rows, cols)), shape=(n_rows, v), dtype=np.float64
    )
    matrix.sum_duplicates()
    return matrix, theta


def lda_draw(truth: Truth, rng: np.random.Generator, n_rows: int) -> dict[str, np.ndarray]:
    """:func:`lda_draw_sparse` as dense arrays (``X``: counts; ``doc_topics``: θ)."""
    matrix, theta = lda_draw_sparse(truth, rng, n_rows)
    return {"X": matrix.toarray(), "doc_topics": theta}


def lda_write(
    group: zarr.Group,
    truth: Truth,
    seeds: list[np.random.SeedSequence],
    n_samples: int,
    chunk_rows: int,
    dtype: str,
    threads: int,
    on_chunk: Callable[[int, int], Any] | None,
) -> None:
    """The corpus as the CSR layout ``X`` (:mod:`dem.models.lda.corpus`), the documents'
    topic proportions ``doc_topics``, the ``topics`` and the ``vocabulary`` (synthetic
    words ``w00000``, ``w00001``, ...), chunk by chunk."""
    from dem.models.lda.corpus import VOCABULARY, synthetic_vocabulary, write_csr

    topics = np.asarray(truth["topics"])
    k, v = topics.shape
    group.create_array("topics", data=topics, dimension_names=("component", "feature"))
    vocabulary = group.create_array(VOCABULARY, shape=(v,), dtype=str, dimension_names=("feature",))
    vocabulary[:] = synthetic_vocabulary(v)
    proportions = group.create_array(
        "doc_topics",
        shape=(n_samples, k),
        chunks=(chunk_rows, k),
        dtype=np.float32,
        dimension_names=("sample", "component"),
    )
    writer = write_csr(group, "X", n_samples, v, chunk_rows, dtype)

    def draw(index: int) -> tuple[int, Any, np.ndarray]:
        start = index * chunk_rows
        rows = min(start + chunk_rows, n_samples) - start
        matrix, theta = lda_draw_sparse(truth, np.random.default_rng(seeds[index]), rows)
        return start, matrix, theta

    width = max(1, threads)
    with ThreadPoolExecutor(max_workers=width) as pool:
        for first in range(0, len(seeds), width):  # `threads` chunks in memory at most
            for start, matrix, theta in pool.map(
                draw, range(first, min(first + width, len(seeds)))
            ):
                writer.append(matrix)  # in document order
                proportions[start : start + matrix.shape[0]] = theta.astype(np.float32)
                if on_chunk is not None:
                    on_chunk(start + matrix.shape[0], n_samples)


GENERATORS["lda"] = Generator(
    lda_truth,
    lda_draw,
    {"topics": ("component", "feature"), "doc_topics": ("sample", "component")},
    row_steps=lambda truth: max(1, int(truth["words"])),
    writer=lda_write,
)
