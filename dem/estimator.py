"""Plumbing every estimator shares: restarts and checkpoints around the engine, and
per-sample outputs that stay lazy for lazy input."""

from __future__ import annotations

import functools
import math
import os
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from dem import engine
from dem.checkpoint import Checkpoint
from dem.data import Samples, as_samples
from dem.model import EMModel, Params


def fit_restarts(
    model: EMModel,
    inputs: Mapping[str, Samples],
    make_init: Callable[[np.random.Generator], Params],
    *,
    n_init: int,
    random_state: int | np.random.Generator | None,
    tol: float,
    max_iter: int,
    split_every: int,
    checkpoint: str | os.PathLike[str] | None,
    resume: bool,
    callback: Callable[[engine.IterationInfo], Any] | None,
    persist: bool | None,
    accelerate: str = "none",
) -> tuple[engine.EMResult, list[engine.EMResult]]:
    """Run ``n_init`` EM fits in lockstep; return the best (highest lower bound) and all.

    The restarts share every pass over the data (one read of a chunk serves all of
    them). Each draws its initialisation from its own child of ``random_state``, so
    restart r starts the same whether or not restarts before it were resumed.

    ``resume=True`` continues the fit in ``checkpoint``, or starts one there when the
    path does not exist yet; with no ``checkpoint`` it is a ValueError (there is
    nothing to resume from).
    """
    if resume and checkpoint is None:
        raise ValueError(
            "resume=True needs the checkpoint to resume from: pass checkpoint=PATH (a path "
            "that does not exist yet starts a new fit there), or resume=False."
        )
    store = None
    if checkpoint is not None:
        store = Checkpoint.open(
            checkpoint,
            model=model.name,
            config={**model.config(), "n_init": n_init, "split_every": split_every},
            fingerprint={name: s.fingerprint() for name, s in inputs.items()},
            resume=resume,
        )
    arrays = {name: s.array for name, s in inputs.items()}
    try:
        results = engine.fit_runs(
            [model] * n_init,
            arrays,
            [functools.partial(make_init, rng) for rng in _child_rngs(random_state, n_init)],
            tol=tol,
            max_iter=max_iter,
            split_every=split_every,
            accelerate=accelerate,
            checkpoint=store,
            callback=callback,
            persist=persist,
        )
    finally:
        if store is not None:
            store.close()
    best = max(results, key=lambda r: r.lower_bound if math.isfinite(r.lower_bound) else -math.inf)
    return best, results


class EMEstimator:
    """What the estimators share: reading their input, and running their restarts on the
    engine with the options they were given, keeping the best fit.

    A subclass stores the options under these names in ``__init__`` and defines
    ``_set_params`` (the fitted attributes from the engine's parameters).
    """

    n_init: int
    random_state: int | np.random.Generator | None
    tol: float
    max_iter: int
    split_every: int
    checkpoint: str | os.PathLike[str] | None
    resume: bool
    callback: Callable[[engine.IterationInfo], Any] | None
    persist: bool | None
    accelerate: str
    sample_dim: str
    feature_dim: str
    _set_params: Callable[[Params], None]

    def _samples(self, X: Any, variable: str | None) -> Samples:
        return as_samples(
            X, variable=variable, sample_dim=self.sample_dim, feature_dim=self.feature_dim
        )

    def _fit_restarts(
        self,
        model: EMModel,
        inputs: Mapping[str, Samples],
        make_init: Callable[[np.random.Generator], Params],
        *,
        n_init: int | None = None,
        persist: bool | None = None,
    ) -> tuple[engine.EMResult, list[engine.EMResult]]:
        """:func:`fit_restarts` with this estimator's options (``n_init`` and ``persist``
        override its own); sets the best fit's parameters and trace."""
        best, results = fit_restarts(
            model,
            inputs,
            make_init,
            n_init=int(self.n_init if n_init is None else n_init),
            random_state=self.random_state,
            tol=float(self.tol),
            max_iter=int(self.max_iter),
            split_every=int(self.split_every),
            checkpoint=self.checkpoint,
            resume=self.resume,
            callback=self.callback,
            persist=self.persist if persist is None else persist,
            accelerate=self.accelerate,
        )
        self._set_params(best.params)
        self.converged_ = best.converged
        self.n_iter_ = best.n_iter
        self.lower_bounds_ = list(best.lower_bounds)
        self.lower_bound_ = best.lower_bound
        return best, results


def _child_rngs(
    random_state: int | np.random.Generator | None, count: int
) -> list[np.random.Generator]:
    if isinstance(random_state, np.random.Generator):
        return list(random_state.spawn(count))
    return [np.random.default_rng(s) for s in np.random.SeedSequence(random_state).spawn(count)]


def per_sample(
    samples: Samples,
    function: Callable[[np.ndarray], np.ndarray],
    *,
    columns: int | None,
    dtype: Any = np.float64,
    column_dim: str = "component",
) -> np.ndarray | da.Array | xr.DataArray:
    """Apply a row-wise ``function`` to every sample chunk.

    Returns numpy for numpy input, a lazy dask array with the input's sample chunks for
    dask or Zarr input, and a lazy ``xarray.DataArray`` (dims ``sample_dim`` and
    ``column_dim``) for xarray input. ``columns=None`` means one value per sample.
    """
    if samples.kind == "numpy":
        return function(samples.array.compute(scheduler="sync"))
    if columns is None:
        result = da.map_blocks(function, samples.array, dtype=dtype, drop_axis=1)
    else:
        chunks = (samples.array.chunks[0], (columns,))
        result = da.map_blocks(function, samples.array, dtype=dtype, chunks=chunks)
    if samples.kind != "xarray":
        return result
    dims = (samples.sample_dim,) if columns is None else (samples.sample_dim, column_dim)
    return xr.DataArray(result, dims=dims, coords=samples.coords)


def per_sample_aligned(
    inputs: Sequence[Samples],
    function: Callable[..., np.ndarray],
    *,
    trailing: tuple[int, ...],
    dims: tuple[str, ...],
    dtype: Any = np.float64,
) -> np.ndarray | da.Array | xr.DataArray:
    """Apply ``function(block, *aligned_blocks)`` to the aligned sample chunks of ``inputs``.

    :func:`per_sample` for functions of several aligned inputs (each of any number of
    dimensions, whole along every axis but the first) whose result has the trailing
    axes ``trailing`` (their sizes) named ``dims`` (for xarray output). The first input
    decides what is returned, as for :func:`per_sample`.
    """
    first = inputs[0]
    if first.kind == "numpy":
        return function(*(s.array.compute(scheduler="sync") for s in inputs))
    letters = iter(string.ascii_lowercase[1:])
    args: list[Any] = []
    for samples in inputs:
        args += [samples.array, "a" + "".join(next(letters) for _ in range(samples.array.ndim - 1))]
    out = "".join(next(letters) for _ in trailing)
    result = da.blockwise(
        function,
        "a" + out,
        *args,
        new_axes=dict(zip(out, trailing, strict=True)),
        dtype=dtype,
        concatenate=True,
    )
    if first.kind != "xarray":
        return result
    return xr.DataArray(result, dims=(first.sample_dim, *dims), coords=first.coords)


class NotFittedError(AttributeError, ValueError):
    """A method that needs fitted parameters was called before ``fit``."""


def check_hyperparameters(
    estimator: Any, constraints: Mapping[str, tuple[Callable[[Any], bool], str]]
) -> None:
    """Validate hyperparameters against a declared table of (predicate, description)."""
    for name, (valid, description) in constraints.items():
        value = getattr(estimator, name)
        if not valid(value):
            raise ValueError(
                f"{type(estimator).__name__}: {name} must be {description}; got {value!r}."
            )
