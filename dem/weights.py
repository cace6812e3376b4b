"""Sample weights: one non-negative finite number per sample, aligned with the data.

Every estimator's ``fit(X, sample_weight=...)`` passes its weights through
:func:`as_sample_weight`, which validates them and aligns them with the data's sample
chunks; the engine then receives them as one more input array, named
:data:`SAMPLE_WEIGHT` (``"sample_weight"``), and each model's E-step reads
``block.get("sample_weight")`` (absent: every weight is 1). A weighted fit maximises the
weighted log-likelihood Σ_i w_i log p(x_i): integer weights give the fit of the data
with each row repeated that many times, weight 0 that of the data without the row.

:func:`init_sample` draws the rows an initialisation works on in proportion to their
weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from numbers import Real
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
import zarr
from zarr.abc.store import Store

from dem.data import Samples, as_samples, sample_rows

SAMPLE_WEIGHT = "sample_weight"
"""The name of the weights among the engine's input arrays (and in checkpoints)."""


def as_sample_weight(
    sample_weight: Any,
    X: Any,
    samples: Samples,
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> Samples | None:
    """Validate ``sample_weight`` and align it with ``samples`` (the data ``X`` as read).

    Parameters
    ----------
    sample_weight : array-like of shape (n_samples,), dask array, xarray.DataArray, str or None
        One weight per sample (a row; a sequence for 3-D input; a document for a
        corpus). A string names a variable of the same store as ``X`` (a Zarr store, an
        xarray Dataset, or a Parquet column). None: no weights.
    X : any
        The data as the user passed it (to open the store a string names).
    samples : Samples
        The data as :func:`dem.data.as_samples` read them.
    storage_options : mapping, optional
        Options of the store's filesystem when ``X`` is a URL.

    Returns
    -------
    Samples or None
        The weights as a 1-D float64 dask array chunked like ``samples`` along the
        samples (rechunked when they are not), named ``"sample_weight"`` (its
        fingerprint goes into a checkpoint's header), or None without weights.

    Raises
    ------
    ValueError
        Weights of another length, not 1-D, of unknown chunk sizes, negative, NaN,
        infinite, or all zero; a variable name with in-memory data.
    TypeError
        Weights that are not numbers.

    Notes
    -----
    Validating lazy weights reads them once (one number per sample: a small fraction
    of the data).
    """
    if sample_weight is None:
        return None
    if isinstance(sample_weight, str):
        weights = _stored_weights(sample_weight, X, samples, storage_options)
    else:
        if isinstance(sample_weight, xr.Dataset):
            raise TypeError(
                "sample_weight is an xarray Dataset; pass one of its variables "
                "(ds['w']), or its name as a string when X is that Dataset."
            )
        if isinstance(sample_weight, Real) or np.ndim(sample_weight) == 0:
            raise ValueError(
                f"sample_weight must hold one weight per sample, got the scalar "
                f"{sample_weight!r}; pass np.full(n_samples, value), or nothing for equal "
                "weights."
            )
        values = (
            np.asarray(sample_weight) if isinstance(sample_weight, list | tuple) else sample_weight
        )
        weights = _read(values, samples, "sample_weight")
    weights = _aligned(weights, samples)
    _check_values(weights)
    return weights


def _stored_weights(
    variable: str, X: Any, samples: Samples, storage_options: Mapping[str, Any] | None
) -> Samples:
    """The weights stored as ``variable`` beside the data in the store (or Dataset) ``X``."""
    # a Zarr store, a Parquet source (the weights: one of its columns) or a Dataset
    stored = isinstance(X, str | os.PathLike | Store | zarr.Group | xr.Dataset)
    if not stored:
        raise ValueError(
            f"sample_weight={variable!r} names a variable of a store, but X is not a store "
            f"({type(X).__name__}); pass the weights as an array (one per sample), or X as "
            "a Zarr store path with variable=..."
        )
    return _read(X, samples, variable, variable=variable, storage_options=storage_options)


def _read(
    data: Any,
    samples: Samples,
    name: str,
    *,
    variable: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Samples:
    try:
        weights = as_samples(
            data,
            variable=variable,
            name=name,
            ndim=1,
            sample_dim=samples.sample_dim,
            storage_options=storage_options,
        )
    except ValueError as exc:
        if "-D" not in str(exc):
            raise
        raise ValueError(
            f"sample_weight must be 1-D with one weight per sample ({samples.n_samples}); {exc}"
        ) from exc
    array = weights.array.astype(np.float64)
    return Samples(array, weights.name, weights.source, weights.kind, samples.sample_dim)


def _aligned(weights: Samples, samples: Samples) -> Samples:
    """``weights`` chunked like ``samples`` along the samples, after checking the length."""
    if weights.n_samples != samples.n_samples:
        what = "sequences" if samples.array.ndim == 3 else "samples"
        raise ValueError(
            f"sample_weight has {weights.n_samples} values but {samples.name} has "
            f"{samples.n_samples} {what}; pass one weight per {what[:-1]}, in the data's order."
        )
    chunks = samples.array.chunks[0]
    array = weights.array
    if array.chunks[0] != chunks:
        array = array.rechunk({0: chunks})  # a 1-D rechunk: a few small reads per chunk
    return Samples(array, SAMPLE_WEIGHT, weights.source, weights.kind, samples.sample_dim)


def _summary(block: np.ndarray, offset: int) -> np.ndarray:
    """[sum of the finite weights, first non-finite index, first negative index] (-1: none)."""
    values = np.asarray(block, dtype=np.float64)
    finite = np.isfinite(values)
    bad = np.flatnonzero(~finite)
    with np.errstate(invalid="ignore"):
        negative = np.flatnonzero(values < 0)
    return np.array(
        [
            float(values[finite].sum()),
            offset + bad[0] if bad.size else -1,
            offset + negative[0] if negative.size else -1,
            float(np.count_nonzero(~finite)),
            float(negative.size),
        ]
    )


def _check_values(weights: Samples) -> None:
    """Refuse NaN, infinite, negative or all-zero weights, naming the first offender."""
    array = weights.array
    offsets = np.concatenate([[0], np.cumsum(array.chunks[0])[:-1]]).astype(int)
    if weights.kind == "numpy":
        summaries = [_summary(np.asarray(array.compute(scheduler="sync")), 0)]
    else:
        blocks = array.to_delayed().ravel()
        summaries = list(
            dask.compute(
                *[
                    dask.delayed(_summary)(block, int(offset))
                    for block, offset in zip(blocks, offsets, strict=True)
                ]
            )
        )
    table = np.array(summaries)
    firsts = [int(next((v for v in table[:, col] if v >= 0), -1)) for col in (1, 2)]
    if firsts[0] >= 0:
        raise ValueError(
            f"sample_weight holds {int(table[:, 3].sum())} NaN or infinite value(s), the "
            f"first at sample {firsts[0]}; weights must be finite non-negative numbers "
            "(use 0 to leave a sample out)."
        )
    if firsts[1] >= 0:
        raise ValueError(
            f"sample_weight holds {int(table[:, 4].sum())} negative value(s), the first at "
            f"sample {firsts[1]}; weights must be non-negative (use 0 to leave a sample out)."
        )
    if not table[:, 0].sum() > 0:
        raise ValueError(
            "sample_weight is zero for every sample: nothing would be fitted. Give at "
            "least one sample a positive weight."
        )


def init_sample(
    array: da.Array, weights: Samples | da.Array | None, size: int, rng: np.random.Generator
) -> np.ndarray:
    """About ``size`` rows of ``array`` for an initialisation, drawn in proportion to
    ``weights`` (:func:`dem.data.sample_rows` without weights).

    With weights, the rows are a sample of the data with each row repeated in
    proportion to its weight, so that any initialisation computed from an unweighted
    sample applies unchanged: integer weights summing to at most ``size`` (with at most
    ``size`` samples) give exactly ``np.repeat(X, weights, axis=0)``, the sample a fit
    of the repeated rows would draw; otherwise ``size`` draws with replacement with
    probabilities proportional to the weights (one compute of the weights' chunk sums,
    one of the rows drawn). Rows keep their order in the data.
    """
    if weights is None:
        return sample_rows(array, size, rng)
    w = weights.array if isinstance(weights, Samples) else weights
    n_samples = int(array.shape[0])
    if n_samples <= size:
        values, w_values = dask.compute(array, w)
        w_values = np.asarray(w_values, dtype=np.float64)
        counts = np.round(w_values)
        if np.array_equal(counts, w_values) and counts.sum() <= size:
            return np.repeat(np.asarray(values), counts.astype(np.int64), axis=0)
        picks = rng.multinomial(size, w_values / w_values.sum())
        return np.repeat(np.asarray(values), picks, axis=0)
    sums = np.asarray(
        dask.compute(*[dask.delayed(np.sum)(b) for b in w.to_delayed().ravel()]),
        dtype=np.float64,
    )
    per_chunk = rng.multinomial(size, sums / sums.sum())
    x_blocks = array.to_delayed().reshape(len(array.chunks[0]), -1)[:, 0]
    w_blocks = w.to_delayed().ravel()
    seeds = rng.integers(0, 2**63, size=len(per_chunk))
    drawn = dask.compute(
        *[
            dask.delayed(_draw_in_chunk)(x_blocks[i], w_blocks[i], int(count), int(seeds[i]))
            for i, count in enumerate(per_chunk)
            if count > 0
        ]
    )
    return np.concatenate(drawn)


def _draw_in_chunk(x: np.ndarray, w: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` draws with replacement from the rows of one chunk, in proportion to ``w``
    (the rows drawn, in their order)."""
    w = np.asarray(w, dtype=np.float64)
    picks = np.random.default_rng(seed).multinomial(count, w / w.sum())
    return np.repeat(np.asarray(x), picks, axis=0)


def with_weights(inputs: Mapping[str, Samples], weights: Samples | None) -> dict[str, Samples]:
    """The engine's inputs ``inputs`` plus the weights (named ``"sample_weight"``), if any."""
    return {**inputs, SAMPLE_WEIGHT: weights} if weights is not None else dict(inputs)
