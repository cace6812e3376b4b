"""Plumbing every estimator shares: restarts and checkpoints around the engine, and
per-sample outputs that stay lazy for lazy input."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import string
import warnings
from collections.abc import Callable, Mapping, Sequence
from numbers import Integral, Real
from typing import Any, ClassVar

import dask.array as da
import numpy as np
import sklearn.exceptions
import xarray as xr
import zarr
from scipy import sparse
from sklearn.base import BaseEstimator
from sklearn.utils import check_array
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from zarr.abc.store import Store

from dem import engine, storage, tabular
from dem.accelerate import DEFAULT_ALPHA, STEPS
from dem.checkpoint import Checkpoint
from dem.data import Samples, as_samples, masked_as_nan
from dem.graph import check_block
from dem.heap import reusing_heap
from dem.model import Block, EMModel, Params, Stats, add_stats
from dem.models.sample_weight import block_weights, positive, weighted_sum
from dem.weights import SAMPLE_WEIGHT, as_sample_weight, with_weights

RandomState = int | np.random.RandomState | np.random.Generator | None
"""What ``random_state`` may be: a seed (int >= 0), a numpy ``RandomState`` or
``Generator``, or None (fresh entropy)."""


def fit_restarts(
    model: EMModel,
    inputs: Mapping[str, Samples],
    make_init: Callable[[np.random.Generator], Params],
    *,
    n_init: int,
    random_state: RandomState,
    tol: float,
    max_iter: int,
    split_every: int,
    checkpoint: str | os.PathLike[str] | None,
    resume: bool,
    callback: Callable[[engine.IterationInfo], Any] | None,
    persist: bool | None,
    accelerate: str = "none",
    finish: Callable[[engine.EMResult], tuple[Params, dict[str, Any]]] | None = None,
    checkpoint_storage_options: Mapping[str, Any] | None = None,
    method: str = "batch",
    incremental_chunks: int = 1,
    alpha: float = DEFAULT_ALPHA,
) -> tuple[engine.EMResult, list[engine.EMResult]]:
    """Run ``n_init`` EM fits in lockstep; return the best (highest lower bound) and all.

    The restarts share every pass over the data (one read of a chunk serves all of
    them). Each draws its initialisation from its own child of ``random_state``, so
    restart r starts the same whether or not restarts before it were resumed.

    ``resume=True`` continues the fit in ``checkpoint``, or starts one there when the
    path does not exist yet; with no ``checkpoint`` it is a ValueError (there is
    nothing to resume from). ``checkpoint`` may be an fsspec URL, opened with
    ``checkpoint_storage_options``.

    ``finish(best)`` runs after the last iteration, while the checkpoint is still held;
    the arrays and attributes it returns (fitted attributes such as standard errors,
    without their trailing underscore) are written to the checkpoint's ``final`` group,
    so that :func:`dem.from_checkpoint` restores them.

    ``method="incremental"`` fits by incremental EM in groups of ``incremental_chunks``
    chunks (:mod:`dem.incremental`); its checkpoint records both. ``alpha`` is α of
    ``accelerate="alpha"`` (α-EM, :func:`dem.accelerate.alpha_em`).
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
            config={
                **model.config(),
                "n_init": n_init,
                "split_every": split_every,
                **(
                    {"method": method, "incremental_chunks": incremental_chunks}
                    if method == "incremental"
                    else {}
                ),
            },
            fingerprint={name: s.fingerprint() for name, s in inputs.items()},
            resume=resume,
            storage_options=dict(checkpoint_storage_options or {}),
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
            method=method,
            incremental_chunks=incremental_chunks,
            alpha=alpha,
        )
        best = max(
            results, key=lambda r: r.lower_bound if math.isfinite(r.lower_bound) else -math.inf
        )
        if finish is not None:
            values, attrs = finish(best)
            if store is not None:
                store.write_final(results.index(best), values, attrs)
    finally:
        if store is not None:
            store.close()
    return best, results


class Bounded(Interval):
    """scikit-learn's :class:`~sklearn.utils._param_validation.Interval` that also refuses
    booleans (``True`` is not a count) and, unless a bound is infinite, NaN and infinity."""

    def is_satisfied_by(self, val: Any) -> bool:
        if isinstance(val, bool | np.bool_):
            return False
        if isinstance(val, Real) and not math.isfinite(float(val)):
            return False
        return bool(super().is_satisfied_by(val))

    def __str__(self) -> str:
        return f"{super().__str__()} (finite, not a bool)"


def counts(low: int, high: int | None = None) -> list[Any]:
    """Constraint: an integer (not a bool) in ``[low, high]``."""
    return [Bounded(Integral, low, high, closed="both" if high is not None else "left")]


def reals(low: float | None, high: float | None = None, closed: str = "left") -> list[Any]:
    """Constraint: a finite real number (not a bool) between ``low`` and ``high``."""
    return [Bounded(Real, low, high, closed=closed)]


class NonNegativeArray(HasMethods):
    """Constraint: a number or array of finite, non-negative numbers (a Dirichlet or
    Gaussian prior); ``diagonal=True`` checks only the diagonal of (stacked) matrices.
    (A :class:`HasMethods` of no methods only because scikit-learn takes constraints of
    its own classes; the test is this class's own.)"""

    def __init__(self, diagonal: bool = False) -> None:
        super().__init__([])
        self.diagonal = diagonal

    def is_satisfied_by(self, val: Any) -> bool:
        if isinstance(val, bool | np.bool_):
            return False
        try:
            array = np.asarray(val, dtype=np.float64)
        except (TypeError, ValueError):
            return False
        if self.diagonal:
            array = np.diagonal(np.atleast_2d(array), axis1=-2, axis2=-1)
        return bool(np.all(np.isfinite(array)) and np.all(array >= 0))

    def __str__(self) -> str:
        where = "on the diagonal " if self.diagonal else ""
        return f"a number or array of finite non-negative numbers {where}".rstrip()


class EMEstimator(BaseEstimator):
    """What the estimators share: scikit-learn's estimator protocol (``get_params``,
    ``set_params``, ``clone``, ``repr``), the engine's options and their constraints,
    reading their input, and running their restarts on the engine, keeping the best fit.

    A subclass stores its constructor arguments unchanged in ``__init__`` (scikit-learn's
    rule), declares ``_parameter_constraints`` as
    ``{**EMEstimator._parameter_constraints, ...its own...}``, validates them in ``fit``
    (``self._validate_params()``, done by :func:`sklearn.base._fit_context`) and defines
    ``_set_params`` (the fitted attributes from the engine's parameters).
    """

    #: The engine's options, shared by every estimator (those a class lacks are ignored).
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "tol": reals(0),
        "max_iter": counts(1),
        "n_init": counts(1),
        "random_state": [
            Bounded(Integral, 0, None, closed="left"),
            np.random.RandomState,
            np.random.Generator,
            None,
        ],
        "checkpoint": [str, os.PathLike, None],
        "resume": ["boolean"],
        "storage_options": [dict, None],
        "checkpoint_storage_options": [dict, None],
        "split_every": counts(2),
        "persist": ["boolean", None],
        "accelerate": [StrOptions(set(STEPS))],
        "alpha": reals(-1, 1, closed="left"),
        "init_sample_size": counts(1),
        "callback": [callable, None],
        "method": [StrOptions({"batch", "online", "incremental"})],
        "incremental_chunks": counts(1),
        "online_passes": counts(1),
        "batch_chunks": counts(1),
        "step_exponent": reals(0.5, 1, closed="right"),
        "forgetting": [*reals(0, 1, closed="right"), None],
        "warm_start": ["boolean"],
        "sample_dim": [str],
        "feature_dim": [str],
    }

    n_init: int
    random_state: RandomState
    tol: float
    max_iter: int
    split_every: int
    checkpoint: str | os.PathLike[str] | None
    resume: bool
    storage_options: dict[str, Any] | None
    checkpoint_storage_options: dict[str, Any] | None
    callback: Callable[[engine.IterationInfo], Any] | None
    persist: bool | None
    accelerate: str
    sample_dim: str
    feature_dim: str
    n_features_in_: int
    feature_names_in_: np.ndarray
    _set_params: Callable[[Params], None]
    _params: Callable[[], Params]
    _model: Callable[..., Any]

    def __repr__(self, N_CHAR_MAX: int = 700) -> str:
        """scikit-learn's repr, with the credentials of ``storage_options`` and
        ``checkpoint_storage_options`` shown as ``***``."""
        text = str(super().__repr__(N_CHAR_MAX))
        for name in ("storage_options", "checkpoint_storage_options"):
            text = storage.redact(text, getattr(self, name, None))
        return text

    def _samples(self, X: Any, variable: str | None) -> Samples:
        return as_samples(
            in_memory_array(X, self),
            variable=variable,
            sample_dim=self.sample_dim,
            feature_dim=self.feature_dim,
            storage_options=getattr(self, "storage_options", None),
        )

    def _sample_weight(self, sample_weight: Any, X: Any, samples: Samples) -> Samples | None:
        """``sample_weight`` validated and aligned with ``samples`` (see
        :func:`dem.weights.as_sample_weight`; a string names a variable of ``X``'s store,
        read with this estimator's ``storage_options``); None without weights."""
        return as_sample_weight(
            sample_weight, X, samples, storage_options=getattr(self, "storage_options", None)
        )

    def _checked_samples(self, X: Any, variable: str | None) -> Samples:
        """New data ``X`` as read, after checking its features against the fit's."""
        samples = self._samples(X, variable)
        self._check_features(X, variable, int(samples.array.shape[1]))
        return samples

    def _weighted_samples(
        self, X: Any, variable: str | None, sample_weight: Any
    ) -> tuple[Samples, Samples | None]:
        """``X`` as read and ``sample_weight`` validated and aligned with it (None
        without weights; see :meth:`_sample_weight`)."""
        samples = self._samples(X, variable)
        return samples, self._sample_weight(sample_weight, X, samples)

    def _persisted(
        self, samples: Samples, weights: Samples | None
    ) -> tuple[Samples, Samples | None]:
        """``samples`` and their weights persisted together as :func:`dem.engine.prepare`
        decides with this estimator's ``persist``: for passes over the data before EM
        (k-means‖), so that EM finds the data where they left them."""
        inputs = with_weights({"X": samples}, weights)
        arrays = engine.prepare({name: s.array for name, s in inputs.items()}, self.persist)
        moved = {name: dataclasses.replace(s, array=arrays[name]) for name, s in inputs.items()}
        return moved["X"], moved.get(SAMPLE_WEIGHT)

    def _fitted_per_sample(
        self,
        X: Any,
        variable: str | None,
        function: Callable[[Any, np.ndarray, Params], np.ndarray],
        *,
        columns: int | None,
        dtype: Any = np.float64,
        missing_ok: bool = False,
    ) -> Any:
        """:func:`per_sample` over new data ``X`` of ``function(model, rows, params)``, the
        fitted parameters' result for each row (``model``: ``self._model()``)."""
        params = self._params()
        samples = self._checked_samples(X, variable)
        model = self._model()
        return per_sample(
            samples,
            lambda x: function(model, x, params),
            columns=columns,
            dtype=dtype,
            missing_ok=missing_ok,
        )

    def _fitted_loglik(
        self,
        X: Any,
        variable: str | None,
        sample_weight: Any,
        row_loglik: Callable[[Any, np.ndarray, Params], np.ndarray],
        *,
        check: bool = True,
        observed_only: bool = False,
    ) -> tuple[float, float]:
        """One pass over new data: the (weighted) total log-likelihood of ``X`` under the
        fitted parameters and the (weighted) number of samples counted.

        ``row_loglik(model, rows, params)`` is the log-likelihood of each row
        (``model``: ``self._model()``); ``sample_weight`` as ``fit`` takes it. With
        ``check``, blocks are checked for invalid values as the model's ``missing_ok``
        says (see :meth:`_total_loglik`). With ``observed_only``, a row with nothing
        observed (every entry NaN) is not counted, and a ValueError says so when no row
        of positive weight is left.
        """
        params = self._params()
        samples = self._checked_samples(X, variable)
        weights = self._sample_weight(sample_weight, X, samples)
        model = self._model()

        def rows_loglik(x: np.ndarray, p: Params) -> np.ndarray:
            loglik = row_loglik(model, x, p)
            if not observed_only:
                return loglik
            return np.where(np.isnan(x).all(axis=1), np.nan, loglik)  # nothing seen: not counted

        missing_ok = model.missing_ok if check else None
        total, n = self._total_loglik(samples, weights, rows_loglik, params, missing_ok)
        if observed_only and n == 0:
            raise ValueError(
                "X has no observed value (every entry is NaN) in a sample of positive weight; "
                "there is nothing to score."
            )
        return total, n

    def _sampling_rng(self, n_samples: int, random_state: RandomState) -> np.random.Generator:
        """For ``sample``: refuse an estimator not fitted, and ``n_samples < 1``; the
        generator of ``random_state`` (None: of the estimator's own)."""
        self._params()
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}.")
        return as_generator(self.random_state if random_state is None else random_state)

    def _total_loglik(
        self,
        samples: Samples,
        weights: Samples | None,
        row_loglik: Callable[[np.ndarray, Params], np.ndarray],
        params: Params,
        missing_ok: frozenset[str] | None = None,
    ) -> tuple[float, float]:
        """One pass: the (weighted) sum of ``row_loglik(rows, params)`` over the samples,
        and the (weighted) number of samples counted (a NaN row log-likelihood: a row not
        counted). Rows of weight 0 are left out before ``row_loglik`` sees them; blocks
        are checked for invalid values as :func:`dem.engine.map_reduce` does with
        ``missing_ok`` (None: not checked)."""

        def loglik(block: Block, p: Params) -> Stats:
            w, (x,) = positive(block_weights(block), block["X"])
            values = np.asarray(row_loglik(x, p), dtype=np.float64)
            counted = ~np.isnan(values)
            return {
                "n": np.float64(counted.sum() if w is None else w[counted].sum()),
                "loglik": weighted_sum(np.where(counted, values, 0.0), w),
            }

        inputs = {name: s.array for name, s in with_weights({"X": samples}, weights).items()}
        stats = engine.map_reduce(
            loglik,
            add_stats,
            inputs,
            params,
            split_every=int(self.split_every),
            missing_ok=missing_ok,
        )
        return float(stats["loglik"]), float(stats["n"])

    def _set_features(self, X: Any, variable: str | None, n_features: int) -> None:
        """``n_features_in_`` and, when ``X`` names its features, ``feature_names_in_``
        (scikit-learn's convention: only when every name is a string)."""
        self.n_features_in_ = int(n_features)
        names = feature_names(X, variable, getattr(self, "feature_dim", "feature"))
        if names is None:
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        else:
            self.feature_names_in_ = names

    def _check_features(self, X: Any, variable: str | None, n_features: int) -> None:
        """Refuse new data whose features are not the fit's (count, or names where both
        have names; scikit-learn's rules and messages)."""
        if n_features != self.n_features_in_:
            raise ValueError(
                f"X has {n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
        fitted = getattr(self, "feature_names_in_", None)
        given = feature_names(X, variable, getattr(self, "feature_dim", "feature"))
        if fitted is None and given is not None:
            warnings.warn(
                f"X has feature names, but {type(self).__name__} was fitted without feature names",
                UserWarning,
                stacklevel=3,
            )
        elif fitted is not None and given is None and _is_in_memory(X):
            warnings.warn(
                f"X does not have valid feature names, but {type(self).__name__} was fitted "
                "with feature names",
                UserWarning,
                stacklevel=3,
            )
        elif fitted is not None and given is not None and list(fitted) != list(given):
            raise ValueError(
                "The feature names should match those that were passed during fit: fitted "
                f"with {list(fitted)}, got {list(given)}."
            )

    def _checkpoint_options(self) -> dict[str, Any]:
        """The checkpoint's ``storage_options``: its own, else the data's."""
        own = getattr(self, "checkpoint_storage_options", None)
        return dict(own if own is not None else getattr(self, "storage_options", None) or {})

    def _fit_restarts(
        self,
        model: EMModel,
        inputs: Mapping[str, Samples],
        make_init: Callable[[np.random.Generator], Params],
        *,
        n_init: int | None = None,
        persist: bool | None = None,
        finish: Callable[[engine.EMResult], tuple[Params, dict[str, Any]]] | None = None,
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
            finish=finish,
            checkpoint_storage_options=self._checkpoint_options(),
            method="incremental" if getattr(self, "method", None) == "incremental" else "batch",
            incremental_chunks=int(getattr(self, "incremental_chunks", 1)),
            alpha=float(getattr(self, "alpha", DEFAULT_ALPHA)),
        )
        self._set_params(best.params)
        self.converged_ = best.converged
        self.n_iter_ = best.n_iter
        self.lower_bounds_ = list(best.lower_bounds)
        self.lower_bound_ = best.lower_bound
        return best, results


def in_memory_array(X: Any, estimator: Any, samples_by_features: bool = True) -> Any:
    """In-memory input as scikit-learn's estimators take it, before dem's own checks
    (:func:`dem.data.as_samples`): DataFrames as floats (nullable dtypes' NA as NaN),
    object arrays of numbers as floats; 1-D arrays refused ("Reshape your data") where X is
    ``samples_by_features``, empty arrays (with scikit-learn's
    wording), and sparse matrices and complex numbers with
    :func:`~sklearn.utils.check_array`'s errors. Lazy input, store paths and every
    other array are returned as they are."""
    if not _is_in_memory(X):
        return X
    X = masked_as_nan(X)  # masked entries are missing values (NaN), as dem.data reads them
    if sparse.issparse(X) or hasattr(X, "dtypes"):  # sparse, or a pandas DataFrame
        return _checked_array(X, estimator)
    values = np.asarray(X)
    if samples_by_features and values.ndim == 1:
        raise ValueError(
            f"X must be 2-D; got 1-D of shape {values.shape}. Reshape your data with "
            "X.reshape(-1, 1) for one feature, or X.reshape(1, -1) for one sample."
        )
    if values.ndim == 2 and values.size == 0:
        what = "sample" if values.shape[0] == 0 else "feature"
        raise ValueError(
            f"X is empty: 0 {what}(s) (shape={values.shape}) while a minimum of 1 is "
            "required; it needs at least one sample and feature."
        )
    if values.dtype.kind == "c":
        return _checked_array(values, estimator)
    if values.dtype == object:
        return values.astype(np.float64)  # numbers convert; anything else is refused here
    return values


def _checked_array(X: Any, estimator: Any) -> np.ndarray:
    return np.asarray(
        check_array(
            X,
            dtype=(np.float64, np.float32),
            ensure_all_finite=False,
            estimator=estimator,
            input_name="X",
        )
    )


def _is_in_memory(X: Any) -> bool:
    """Input held in memory (not a store, a path, xarray or a dask array or DataFrame)."""
    lazy = (str, os.PathLike, da.Array, xr.Dataset, xr.DataArray, Store, zarr.Group, zarr.Array)
    return not isinstance(X, lazy) and not type(X).__module__.startswith("dask")


def feature_names(X: Any, variable: str | None, feature_dim: str) -> np.ndarray | None:
    """The names of ``X``'s features: a DataFrame's columns, or the ``feature_dim``
    coordinate of xarray input; None unless every name is a string (scikit-learn's rule)."""
    names: Any = getattr(X, "columns", None)
    if names is None and isinstance(X, str | os.PathLike) and tabular.is_parquet(X):
        names = tabular.open_parquet(X, variable).columns
    if names is None:
        data = X[variable] if isinstance(X, xr.Dataset) and variable in X else X
        if isinstance(data, xr.DataArray) and feature_dim in data.coords:
            names = data.coords[feature_dim].values
    if names is None:
        return None
    names = np.asarray(list(names), dtype=object)
    if len(names) == 0 or not all(isinstance(n, str) for n in names):
        return None
    return names


def as_generator(random_state: RandomState) -> np.random.Generator:
    """A numpy ``Generator`` for ``random_state`` (see :func:`_child_rngs` for how a
    ``RandomState`` is used)."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(_seed(random_state))


def _seed(random_state: int | np.random.RandomState | None) -> int | np.ndarray | None:
    """A seed for :class:`numpy.random.SeedSequence`: an int or None as is; from a
    ``RandomState``, four 32-bit words drawn from it (so a fit from
    ``RandomState(s)`` is reproducible: the same ``s``, the same fit; as in
    scikit-learn, the draw advances that ``RandomState``)."""
    if isinstance(random_state, np.random.RandomState):
        return random_state.randint(0, 2**32, size=4, dtype=np.uint64)
    return random_state


def _child_rngs(random_state: RandomState, count: int) -> list[np.random.Generator]:
    if isinstance(random_state, np.random.Generator):
        return list(random_state.spawn(count))
    seeds = np.random.SeedSequence(_seed(random_state)).spawn(count)
    return [np.random.default_rng(s) for s in seeds]


def per_sample(
    samples: Samples,
    function: Callable[[np.ndarray], np.ndarray],
    *,
    columns: int | None,
    dtype: Any = np.float64,
    column_dim: str = "component",
    missing_ok: bool = False,
) -> np.ndarray | da.Array | xr.DataArray:
    """Apply a row-wise ``function`` to every sample chunk.

    Returns numpy for numpy input, a lazy dask array with the input's sample chunks for
    dask or Zarr input, and a lazy ``xarray.DataArray`` (dims ``sample_dim`` and
    ``column_dim``) for xarray input. ``columns=None`` means one value per sample.
    Rows holding NaN (unless ``missing_ok``: the model takes NaN as missing) or infinity
    are refused with a ``ValueError`` naming them, when the chunk is computed.
    """
    trailing, dims = ((), ()) if columns is None else ((columns,), (column_dim,))
    return per_sample_aligned(
        [samples], function, trailing=trailing, dims=dims, dtype=dtype, missing_ok=missing_ok
    )


def per_sample_aligned(
    inputs: Sequence[Samples],
    function: Callable[..., np.ndarray],
    *,
    trailing: tuple[int, ...],
    dims: tuple[str, ...],
    dtype: Any = np.float64,
    missing_ok: bool | None = False,
) -> np.ndarray | da.Array | xr.DataArray:
    """Apply ``function(block, *aligned_blocks)`` to the aligned sample chunks of ``inputs``.

    :func:`per_sample` for functions of several aligned inputs (each of any number of
    dimensions, whole along every axis but the first) whose result has the trailing
    axes ``trailing`` (their sizes) named ``dims`` (for xarray output). The first input
    decides what is returned, as for :func:`per_sample`, and is checked as there
    (``missing_ok=None``: not checked, for models whose function checks its blocks).
    """
    first = inputs[0]
    checked = _refusing_invalid_rows(function, first.name, missing_ok)
    if first.kind == "numpy":
        return checked(*(s.array.compute(scheduler="sync") for s in inputs), np.zeros(1))
    letters = iter(string.ascii_lowercase[1:])
    args: list[Any] = []
    for samples in inputs:
        args += [samples.array, "a" + "".join(next(letters) for _ in range(samples.array.ndim - 1))]
    rows = da.arange(first.n_samples, chunks=(first.array.chunks[0],))  # to name bad rows
    out = "".join(next(letters) for _ in trailing)
    result = da.blockwise(
        checked,
        "a" + out,
        *args,
        rows,
        "a",
        new_axes=dict(zip(out, trailing, strict=True)),
        dtype=dtype,
        concatenate=True,
    )
    if first.kind != "xarray":
        return result
    return xr.DataArray(result, dims=(first.sample_dim, *dims), coords=first.coords)


def _refusing_invalid_rows(
    function: Callable[..., np.ndarray], name: str, missing_ok: bool | None
) -> Callable[..., np.ndarray]:
    """``function(*blocks)`` called as ``(*blocks, rows)`` (the chunk's row numbers),
    after refusing the rows of the first block holding NaN (unless ``missing_ok``) or
    infinity: a per-sample result is never made of them. It runs in
    :func:`dem.heap.heap_reuse` as the engine's map tasks do (a worker's large
    temporaries reuse the heap instead of fresh mappings)."""

    def checked(*blocks: np.ndarray) -> np.ndarray:
        *values, rows = blocks
        if missing_ok is not None:
            allowed = frozenset({name}) if missing_ok else frozenset()
            first = int(rows[0]) if len(rows) else 0
            check_block((name,), (values[0],), allowed, first, before="predicting")
        return function(*values)

    return reusing_heap(checked)


class NotFittedError(sklearn.exceptions.NotFittedError):
    """A method that needs fitted parameters was called before ``fit`` (scikit-learn's
    :class:`~sklearn.exceptions.NotFittedError`, so ``except`` clauses for either work)."""
