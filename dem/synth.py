"""Synthetic data stores of any size, written chunk by chunk with bounded memory.

A generator is a pair: the ground truth (small parameter arrays, drawn once from a
seed) and a function that draws any number of samples from it. :func:`write_store`
streams chunks of samples into a Zarr group, so the memory used is a few chunks,
whatever the number of samples, and keeps the ground truth in the group's
attributes (JSON, read back by :func:`read_truth`).

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

Truth = dict[str, np.ndarray]
Draw = Callable[[Truth, np.random.Generator, int], dict[str, np.ndarray]]

ATTRIBUTE = "dem_synth"


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
    """

    truth: Callable[..., Truth]
    draw: Draw
    dims: dict[str, tuple[str, ...]]


# --- Gaussian mixture ----------------------------------------------------------------


def gmm_truth(
    n_features: int, rng: np.random.Generator, *, n_components: int = 8, separation: float = 1.0
) -> Truth:
    """Weights, means and full covariances of a random Gaussian mixture.

    Means are drawn with standard deviation ``separation`` per coordinate, so two
    means lie about ``separation * sqrt(2 * n_features)`` apart; covariances have
    random orientations and eigenvalues between 0.5 and 1.5.
    """
    if n_components < 1 or n_features < 1:
        raise ValueError("n_components and n_features must be at least 1.")
    weights = rng.dirichlet(np.full(n_components, 8.0))
    means = rng.normal(0.0, separation, size=(n_components, n_features))
    covariances = np.empty((n_components, n_features, n_features))
    for k in range(n_components):
        rotation, _ = np.linalg.qr(rng.standard_normal((n_features, n_features)))
        eigenvalues = rng.uniform(0.5, 1.5, size=n_features)
        covariances[k] = (rotation * eigenvalues) @ rotation.T
    return {"weights": weights, "means": means, "covariances": covariances}


def gmm_draw(truth: Truth, rng: np.random.Generator, n_rows: int) -> dict[str, np.ndarray]:
    """``n_rows`` samples of the mixture (``X``) and the component each came from."""
    weights, means = truth["weights"], truth["means"]
    labels = rng.choice(len(weights), size=n_rows, p=weights / weights.sum())
    x = rng.standard_normal((n_rows, means.shape[1]))
    factors = np.linalg.cholesky(truth["covariances"])
    for k in range(len(weights)):
        rows = labels == k
        x[rows] = x[rows] @ factors[k].T + means[k]
    return {"X": x, "labels": labels.astype(np.int32)}


GENERATORS: dict[str, Generator] = {
    "gmm": Generator(gmm_truth, gmm_draw, {"X": ("sample", "feature"), "labels": ("sample",)}),
}


# --- writing -------------------------------------------------------------------------


def write_store(
    path: str | os.PathLike[str],
    model: str,
    *,
    n_samples: int,
    n_features: int,
    seed: int = 0,
    chunk_rows: int = 100_000,
    dtype: str = "float64",
    threads: int = 2,
    options: dict[str, Any] | None = None,
    on_chunk: Callable[[int, int], Any] | None = None,
) -> Truth:
    """Write a synthetic store for ``model`` chunk by chunk; return its ground truth.

    Parameters
    ----------
    path : str or path-like
        The Zarr store to create (it must not exist).
    model : str
        A key of :data:`GENERATORS` (``"gmm"``).
    n_samples, n_features : int
        Size of the data.
    seed : int
        Seeds the ground truth and every chunk.
    chunk_rows : int
        Samples per chunk (the store's chunking along samples).
    dtype : {"float64", "float32"}
        Data type of the feature matrix.
    threads : int
        Chunks drawn and compressed at once; memory stays near ``threads`` chunks.
    options : dict, optional
        Model-specific options passed to the generator's ``truth`` function.
    on_chunk : callable, optional
        Called as ``on_chunk(rows_done, n_samples)`` after each chunk is written.

    Returns
    -------
    dict of str to numpy.ndarray
        The ground-truth parameters (also stored in the group's attributes).
    """
    if model not in GENERATORS:
        raise ValueError(f"Unknown synthetic model {model!r}; choose one of {sorted(GENERATORS)}.")
    if n_samples < 1 or n_features < 1 or chunk_rows < 1:
        raise ValueError("n_samples, n_features and chunk_rows must be at least 1.")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}.")
    if os.path.exists(path):
        raise FileExistsError(
            f"{os.fspath(path)!r} already exists; choose a new path or delete it."
        )
    generator = GENERATORS[model]
    truth_seed, chunk_seeds = np.random.SeedSequence(seed).spawn(2)
    truth = generator.truth(n_features, np.random.default_rng(truth_seed), **(options or {}))
    n_chunks = -(-n_samples // chunk_rows)
    seeds = chunk_seeds.spawn(n_chunks)

    # One draw of one row tells the variables' shapes and dtypes.
    probe = generator.draw(truth, np.random.default_rng(0), 1)
    group = zarr.open_group(os.fspath(path), mode="w-")
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
    group.attrs[ATTRIBUTE] = {
        "model": model,
        "seed": seed,
        "n_samples": n_samples,
        "n_features": n_features,
        "options": options or {},
        "truth": {name: value.tolist() for name, value in truth.items()},
    }
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
