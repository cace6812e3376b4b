"""The user API of censored regression: :class:`CensoredRegression`, a scikit-learn regressor.

Fitting runs EM over the chunks (:mod:`dem.models.censored.model`), then one more pass
for the observed information at the optimum: the standard errors and
:meth:`~CensoredRegression.summary`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Mapping
from numbers import Real
from typing import Any, ClassVar

import dask.array as da
import numpy as np
import xarray as xr
from scipy import linalg, stats
from scipy.special import ndtr
from sklearn.base import RegressorMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import column_or_1d

from dem.accelerate import DEFAULT_ALPHA
from dem.data import Samples, as_samples, sample_rows
from dem.display import HTMLRepr
from dem.engine import EMResult, map_reduce, prepare
from dem.estimator import (
    EMEstimator,
    NotFittedError,
    RandomState,
    per_sample,
    per_sample_aligned,
)
from dem.model import Block, Params, Stats, add_stats
from dem.models.censored.init import initial_params
from dem.models.censored.kernels import as_lower, as_upper, standard_moments, truncated_normal
from dem.models.censored.model import CHECKS, CensoredModel, combine_checks
from dem.models.censored.summary import CensoredSummary, MarginalEffects
from dem.weights import SAMPLE_WEIGHT, init_sample, with_weights


def _real_limit(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not np.isnan(v)


def target_vector(y: Any) -> Any:
    """In-memory ``y`` as scikit-learn's regressors take it: an object array of numbers
    as floats (anything else refused with its "Unknown label type"), a column vector of
    shape (n, 1) as (n,) with its ``DataConversionWarning``. Lazy input as is."""
    if isinstance(y, str | os.PathLike | xr.DataArray | xr.Dataset) or hasattr(y, "dask"):
        return y
    y = np.asarray(y)
    if y.dtype == object:  # numbers stored as objects; anything else is not a target
        type_of_target(y, input_name="y", raise_unknown=True)
        y = y.astype(np.float64)
    if y.ndim == 2 and y.shape[1] == 1:
        return column_or_1d(y, warn=True)
    return y


def _infinite_as_nan(block: np.ndarray) -> np.ndarray:
    """Limits as the engine takes them: NaN, not ±inf, for no limit."""
    return np.where(np.isinf(block), np.nan, block).astype(np.float64, copy=False)


class CensoredRegression(HTMLRepr, RegressorMixin, EMEstimator):
    """Censored (Tobit) regression fitted by EM over Dask chunks.

    The latent ``y* = intercept + X coef + scale · ε`` (ε standard normal) is seen
    through censoring. Each row is classified from ``y`` and its limits:

    - ``y`` observed and ``y <= left``: left-censored, ``y* <= left``;
    - else ``y`` observed and ``y >= right``: right-censored, ``y* >= right``;
    - else ``y`` observed: uncensored, ``y* = y``;
    - ``y`` NaN (only with per-observation ``left`` and ``right`` arrays):
      interval-censored, ``left <= y* <= right`` (R's ``Surv(type="interval2")``): an
      infinite (or NaN) limit leaves that side open, and ``left == right`` is an exact
      value.

    Parameters
    ----------
    left, right : float, default=-inf, inf
        Censoring limits used when :meth:`fit` is given none (±inf: no limit).
    fit_intercept : bool, default=True
        Add an intercept.
    tol : float, default=1e-8
        EM stops when one iteration moves the fit by less than ``tol``: the RMS change
        of the linear predictor over the data, in units of ``scale``, and the change of
        ``log(scale)``. (A rule on the change of the log-likelihood would stop EM far
        from the optimum under heavy censoring, where EM is slow.)
    max_iter : int, default=1000
        Maximum number of EM iterations; heavy censoring needs hundreds.
    accelerate : {"none", "squarem", "alpha"}, default="none"
        ``"squarem"`` extrapolates between EM steps in (coef, log scale) (Varadhan &
        Roland 2008; see :mod:`dem.accelerate`), reaching the same optimum in far fewer
        passes over the data when censoring is heavy; ``max_iter`` then counts passes
        and ``lower_bounds_`` has one entry per cycle.
    alpha : float in [-1, 1), default=0.9
        α of ``accelerate="alpha"`` (α-EM, Matsuyama 2003: a momentum step from the last
        two EM steps, weighted ``(1 + alpha) / 2``; see :func:`dem.accelerate.alpha_em`):
        -1 is plain EM, larger values take larger steps. Ignored by the other methods.
    method : {"batch", "incremental"}, default="batch"
        ``"incremental"`` is Neal & Hinton's incremental EM (see :mod:`dem.incremental`):
        an M-step after every ``incremental_chunks`` chunks, each group's statistics
        (residuals about the initial coefficients' ``X β₀``) replaced in the cached
        total; ``max_iter`` and ``n_iter_`` count passes. Takes ``accelerate="none"``.
    incremental_chunks : int, default=1
        Chunks per group of ``method="incremental"``.
    random_state : int, numpy.random.RandomState or numpy.random.Generator, optional
        Seeds the sample of rows the initial least-squares fit uses (a ``RandomState``
        gives four 32-bit words of seed: the same state, the same fit).
    checkpoint : str or path-like, optional
        Zarr store where every iteration's parameters are written.
    resume : bool, default=False
        Continue from the checkpoint's latest complete iteration.
    storage_options : dict, optional
        Options of the input's fsspec filesystem when ``X`` is a URL (``key``,
        ``secret``, ``endpoint_url``, ``token``, ...); without them credentials come
        from the environment. Never recorded in the checkpoint or shown in messages.
    checkpoint_storage_options : dict, optional
        Options of the checkpoint's filesystem when ``checkpoint`` is a URL; by default
        ``storage_options`` (pass ``{}`` for the environment's credentials).
    split_every : int, default=8
        Fan-in of the tree that sums the per-chunk statistics.
    persist : bool, optional
        Keep the data in cluster memory between passes. By default, data taking at
        most half the cluster's memory are persisted.
    init_sample_size : int, default=100_000
        Rows drawn for the initial least-squares fit.
    callback : callable, optional
        Called after every iteration with a :class:`dem.engine.IterationInfo`.
    sample_dim, feature_dim : str
        Dimension names of xarray input.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
    intercept_ : float
        0.0 when ``fit_intercept`` is False.
    scale_ : float
        σ, the standard deviation of the latent errors.
    loglik_ : float
        Log-likelihood (summed over rows) at the fitted parameters.
    bse_ : ndarray of shape (n_features + 2,) or (n_features + 1,)
        Standard errors of (intercept, ``coef_``..., ``log(scale_)``), the order in which R's
        ``AER::tobit`` reports them, from the observed information at the optimum.
    cov_ : ndarray
        Their covariance matrix, the inverse of the negative Hessian.
    n_iter_ : int
    converged_ : bool
    lower_bounds_ : list of float
        Mean per-row log-likelihood at the start of every iteration (or SQUAREM cycle),
        never decreasing.
    gradient_ : ndarray
        Gradient of the log-likelihood in (intercept, ``coef_``..., ``log(scale_)``) at the
        fitted parameters: near 0 at the optimum, a check on convergence.
    counts_ : dict of str to int
        Rows that are ``total``, ``left``-, ``right``- and ``interval``-censored and
        ``exact`` (uncensored).
    fit_limits_ : tuple of (float or None)
        The scalar (left, right) limits of the fit, None where they were per-observation;
        the default limits of :meth:`predict_expected` and :meth:`marginal_effects`.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X names its features (DataFrame columns, or the xarray feature
        coordinate), as in scikit-learn; :meth:`summary` then uses them.
    """

    def __init__(
        self,
        left: float = -math.inf,
        right: float = math.inf,
        *,
        fit_intercept: bool = True,
        tol: float = 1e-8,
        max_iter: int = 1000,
        accelerate: str = "none",
        alpha: float = DEFAULT_ALPHA,
        method: str = "batch",
        incremental_chunks: int = 1,
        random_state: RandomState = None,
        checkpoint: str | os.PathLike[str] | None = None,
        resume: bool = False,
        storage_options: dict[str, Any] | None = None,
        checkpoint_storage_options: dict[str, Any] | None = None,
        split_every: int = 8,
        persist: bool | None = None,
        init_sample_size: int = 100_000,
        callback: Callable[[Any], Any] | None = None,
        sample_dim: str = "sample",
        feature_dim: str = "feature",
    ) -> None:
        self.left = left
        self.right = right
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.accelerate = accelerate
        self.alpha = alpha
        self.method = method
        self.incremental_chunks = incremental_chunks
        self.random_state = random_state
        self.checkpoint = checkpoint
        self.resume = resume
        self.storage_options = storage_options
        self.checkpoint_storage_options = checkpoint_storage_options
        self.split_every = split_every
        self.persist = persist
        self.init_sample_size = init_sample_size
        self.callback = callback
        self.sample_dim = sample_dim
        self.feature_dim = feature_dim

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **EMEstimator._parameter_constraints,
        "left": [Interval(Real, None, None, closed="both")],  # ±inf: no limit
        "right": [Interval(Real, None, None, closed="both")],
        "fit_intercept": ["boolean"],
        "method": [StrOptions({"batch", "incremental"})],
    }

    # --- inputs -----------------------------------------------------------------------

    def _vector(self, value: Any, name: str, X: Any, x: Samples) -> Samples:
        """A per-row input aligned with X: a variable of X's store or Dataset, or an array."""
        if isinstance(value, str):
            if not isinstance(X, str | os.PathLike | xr.Dataset):
                raise TypeError(
                    f"{name}={value!r} names a variable, but X is not a Zarr store path or an "
                    f"xarray Dataset. Pass {name} as an array."
                )
            samples = as_samples(
                X,
                variable=value,
                sample_dim=self.sample_dim,
                name=value,
                ndim=1,
                storage_options=self.storage_options,
            )
        else:
            samples = as_samples(value, sample_dim=self.sample_dim, name=name, ndim=1)
        if samples.n_samples != x.n_samples:
            raise ValueError(
                f"{name} has {samples.n_samples} samples but X has {x.n_samples}; they must "
                "describe the same rows."
            )
        if samples.array.chunks[0] != x.array.chunks[0]:
            if samples.kind == "numpy":  # in memory: chunk it as X is, at no cost
                samples = dataclasses.replace(
                    samples, array=samples.array.rechunk({0: x.array.chunks[0]})
                )
            else:
                raise ValueError(
                    f"{name} and X must have the same sample chunks; {name} has "
                    f"{samples.array.chunks[0][:3]}... and X {x.array.chunks[0][:3]}.... Rechunk "
                    f"one, e.g. {name} = {name}.rechunk({{0: X.chunks[0]}}), or store them alike."
                )
        return samples

    def _limit(
        self, value: Any, default: float, name: str, X: Any, x: Samples
    ) -> tuple[float | None, Samples | None]:
        """A scalar limit (and None), or None and the per-row limits (NaN for none)."""
        if value is None:
            value = default
        if not isinstance(value, str) and np.ndim(value) == 0:
            value = value.item() if isinstance(value, np.ndarray) else value
            if not _real_limit(value):
                raise ValueError(
                    f"{name} must be a number or an array (±inf for no limit); got {value!r}."
                )
            return float(value), None
        samples = self._vector(value, name, X, x)
        return None, dataclasses.replace(
            samples,
            array=samples.array.map_blocks(_infinite_as_nan, dtype=np.float64),  # type: ignore[call-arg, arg-type]
        )

    def _inputs(
        self, X: Any, y: Any, left: Any, right: Any, variable: str | None
    ) -> tuple[CensoredModel, Samples, dict[str, Samples]]:
        x = self._samples(X, variable)
        lo, lo_samples = self._limit(left, self.left, "left", X, x)
        hi, hi_samples = self._limit(right, self.right, "right", X, x)
        if lo is not None and hi is not None and lo >= hi:
            raise ValueError(f"left must be below right; got left={lo}, right={hi}.")
        if y is None and (lo is not None or hi is not None):
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None: y "
                "is required unless left and right are both per-observation arrays (interval "
                "censoring)."
            )
        model = CensoredModel(bool(self.fit_intercept), lo, hi, y is not None)
        inputs = {"X": x}
        if y is not None:
            inputs["y"] = self._vector(target_vector(y), "y", X, x)
        if lo_samples is not None:
            inputs["left"] = lo_samples
        if hi_samples is not None:
            inputs["right"] = hi_samples
        return model, x, inputs

    def _check_rows(self, model: CensoredModel, arrays: Mapping[str, Any]) -> dict[str, int]:
        """One pass over y and the limits: the counts of each kind of row, or a clear error."""
        targets = {name: a for name, a in arrays.items() if name != "X"}
        found = map_reduce(
            model.check,
            combine_checks,
            targets,
            {},
            split_every=int(self.split_every),
            missing_ok=model.missing_ok,
        )
        for key, (what, fix) in CHECKS.items():
            count = int(found[f"n_{key}"])
            if count:
                raise ValueError(
                    f"Invalid rows: {what} in {count} row(s), the first at row "
                    f"{int(found[f'first_{key}'])}. {fix}"
                )
        counts = {k: int(found[f"n_{k}"]) for k in ("left", "right", "exact", "interval")}
        counts["total"] = int(found["n"])
        return counts

    # --- fitting ----------------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        left: Any = None,
        right: Any = None,
        variable: str | None = None,
        sample_weight: Any = None,
    ) -> CensoredRegression:
        """Fit by EM, then compute standard errors in one more pass.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), dask array, xarray, or path
            The features; a Zarr store path or an xarray Dataset needs ``variable``.
        y : array-like of shape (n_samples,), or str, optional
            The observed outcome (NaN for interval-censored rows); a string names a
            variable of X's store or Dataset. None means every row is
            interval-censored by ``left`` and ``right``.
        left, right : float, array-like of shape (n_samples,), or str, optional
            Censoring limits, one for all rows or one per row (±inf or NaN: no limit);
            default the estimator's ``left`` and ``right``. Per-row limits must have
            the same sample chunks as X (in-memory arrays are chunked to match).
        variable : str, optional
            Name of X in a Zarr store or xarray Dataset.
        sample_weight : array-like of shape (n_samples,), dask array, or str, optional
            Non-negative finite weight of each row (a string: a variable of X's store).
            EM maximises the weighted log-likelihood: integer weights fit as if each row
            were repeated that many times, weight 0 as if it were absent; ``loglik_``
            and the standard errors (the weighted observed information) are those of
            the repeated rows. The initial sample is drawn in proportion to the
            weights; a checkpoint resumes only with the same weights.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            Mismatched lengths or chunks, NaN or infinity in X or y, ``left >= right``,
            every row left- or right-censored, collinear columns of X.
        """
        model, x, inputs = self._inputs(X, y, left, right, variable)
        inputs = with_weights(inputs, self._sample_weight(sample_weight, X, x))
        n_samples, n_features = (int(n) for n in x.array.shape)
        n_coef = n_features + int(model.fit_intercept)
        if n_samples <= n_coef:
            raise ValueError(
                f"Expected more samples than coefficients, got n_samples={n_samples} and "
                f"{n_coef} coefficients (n_features={n_features}"
                f"{' plus the intercept' if model.fit_intercept else ''}): the scale cannot be "
                "estimated. Use more data or fewer features."
            )
        arrays = prepare({name: s.array for name, s in inputs.items()}, self.persist)
        inputs = {name: dataclasses.replace(s, array=arrays[name]) for name, s in inputs.items()}
        counts = self._check_rows(model, arrays)
        if counts["exact"] == 0 and counts["interval"] == 0:
            raise ValueError(
                f"Every row is censored ({counts['left']} left, {counts['right']} right): the "
                "scale of the latent variable cannot be estimated and the likelihood has no "
                "maximum. Check the limits, or fit a probit model to the censoring indicator."
            )

        def make_init(rng: np.random.Generator) -> Params:
            return initial_params(model, _init_block(arrays, int(self.init_sample_size), rng))

        def finish(best: EMResult) -> tuple[Params, dict[str, Any]]:
            self._at_optimum(model, arrays, best.params, counts)
            self._set_features(X, variable, n_features)
            return self._final_results()

        # persist=False: the inputs are already where prepare() put them
        self._fit_restarts(model, inputs, make_init, n_init=1, persist=False, finish=finish)
        return self

    def standard_errors(
        self,
        X: Any,
        y: Any = None,
        *,
        left: Any = None,
        right: Any = None,
        variable: str | None = None,
        sample_weight: Any = None,
    ) -> CensoredRegression:
        """Standard errors and the other results of the fit's last pass, from its data.

        :meth:`fit` computes them; an estimator restored from a checkpoint
        (:func:`dem.from_checkpoint`, ``dem show``) has the parameters only. This pass
        over the training data sets ``bse_``, ``cov_``, ``loglik_``, ``gradient_``,
        ``counts_``, ``fit_limits_`` and ``feature_names_in_`` at the current
        parameters, as :meth:`fit` would have, so that :meth:`summary` works.

        Parameters
        ----------
        X, y, left, right, variable, sample_weight
            The data, limits and weights of the fit, as :meth:`fit` takes them.

        Returns
        -------
        self
        """
        params = self._params()
        model, x, inputs = self._inputs(X, y, left, right, variable)
        inputs = with_weights(inputs, self._sample_weight(sample_weight, X, x))
        n_features = int(x.array.shape[1])
        if n_features != self.n_features_in_:
            raise ValueError(
                f"X has {n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
        arrays = prepare({name: s.array for name, s in inputs.items()}, self.persist)
        self._at_optimum(model, arrays, params, self._check_rows(model, arrays))
        self._set_features(X, variable, n_features)
        return self

    def _at_optimum(
        self,
        model: CensoredModel,
        arrays: Mapping[str, Any],
        params: Params,
        counts: dict[str, int],
    ) -> None:
        """The observed information pass at ``params``: standard errors and the rest."""
        info = map_reduce(
            model.information, add_stats, arrays, params, split_every=int(self.split_every)
        )
        self.loglik_ = float(info["loglik"])
        self.cov_ = _covariance(info["hessian"])
        self.bse_ = np.sqrt(np.diag(self.cov_))
        self.gradient_ = info["grad"]
        self.counts_ = counts
        self.fit_limits_ = (model.left, model.right)

    def _final_results(self) -> tuple[Params, dict[str, Any]]:
        """What the checkpoint's ``final`` group keeps of :meth:`_at_optimum`'s pass, so
        that an estimator restored from it has its standard errors and :meth:`summary`."""
        limits = [math.nan if v is None else float(v) for v in self.fit_limits_]
        values = {
            "bse": self.bse_,
            "cov": self.cov_,
            "gradient": np.asarray(self.gradient_, dtype=np.float64),
            "fit_limits": np.array(limits),
        }
        names = getattr(self, "feature_names_in_", None)
        attrs = {
            "loglik": self.loglik_,
            "counts": {k: int(v) for k, v in self.counts_.items()},
            "feature_names": None if names is None else [str(n) for n in names],
        }
        return values, attrs

    def _set_final(self, final: dict[str, Any]) -> None:
        """The inverse of :meth:`_final_results` (see :func:`dem.from_checkpoint`)."""
        self.bse_ = np.asarray(final["bse"], dtype=np.float64)
        self.cov_ = np.asarray(final["cov"], dtype=np.float64)
        self.gradient_ = np.asarray(final["gradient"], dtype=np.float64)
        left, right = (None if math.isnan(v) else float(v) for v in final["fit_limits"])
        self.fit_limits_ = (left, right)
        self.loglik_ = float(final["loglik"])
        self.counts_ = {str(k): int(v) for k, v in final["counts"].items()}
        if final.get("feature_names") is not None:
            self.feature_names_in_ = np.asarray(final["feature_names"], dtype=object)

    def _set_params(self, params: Params) -> None:
        coef = np.asarray(params["coef"], dtype=np.float64)
        self._coef = coef
        self.intercept_ = float(coef[0]) if self.fit_intercept else 0.0
        self.coef_ = coef[1:].copy() if self.fit_intercept else coef.copy()
        self.scale_ = float(params["scale"])

    def _params(self) -> Params:
        if not hasattr(self, "_coef"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit first.")
        return {"coef": self._coef, "scale": np.asarray(self.scale_)}

    def _model(self) -> CensoredModel:
        return CensoredModel(bool(self.fit_intercept))

    def _new_x(self, X: Any, variable: str | None) -> Samples:
        self._params()
        x = self._samples(X, variable)
        self._check_features(X, variable, int(x.array.shape[1]))
        return x

    def _scalar_limits(self, left: float | None, right: float | None) -> tuple[float, float]:
        """The limits given, else the scalar limits the model was fitted with."""
        limits = []
        for name, given, fitted in zip(
            ("left", "right"), (left, right), self.fit_limits_, strict=True
        ):
            value = fitted if given is None else given
            if value is None:
                raise ValueError(
                    f"The model was fitted with per-observation {name} limits; pass {name}= "
                    "(a number) for these predictions."
                )
            if not _real_limit(value):
                raise ValueError(f"{name} must be a number (±inf for no limit); got {value!r}.")
            limits.append(float(value))
        lo, hi = limits
        if lo >= hi:
            raise ValueError(f"left must be below right; got left={lo}, right={hi}.")
        return lo, hi

    # --- results ----------------------------------------------------------------------

    def predict(self, X: Any, *, variable: str | None = None) -> Any:
        """The latent mean ``intercept_ + X coef_``, shape (n_samples,)."""
        x = self._new_x(X, variable)
        model, coef = self._model(), self._coef
        return per_sample(
            x, lambda block: model.linear(block.astype(np.float64), coef), columns=None
        )

    def predict_expected(
        self,
        X: Any,
        *,
        left: Any = None,
        right: Any = None,
        variable: str | None = None,
    ) -> Any:
        """E[y | x] of the observed outcome ``clip(y*, left, right)``, shape (n_samples,).

        ``left`` and ``right`` are numbers, or per-row limits as in :meth:`fit` (an
        array, or the name of a variable of X's store or Dataset; ±inf or NaN: no
        limit); by default those of the fit (``fit_limits_``).
        """
        x = self._new_x(X, variable)
        limits = []
        for name, given, fitted in zip(
            ("left", "right"), (left, right), self.fit_limits_, strict=True
        ):
            value = fitted if given is None else given
            if value is None:
                raise ValueError(
                    f"The model was fitted with per-observation {name} limits; pass {name}= "
                    "(a number, per-row limits or the name of their variable) for these "
                    "predictions."
                )
            limits.append(self._limit(value, math.nan, name, X, x))
        (lo, lo_rows), (hi, hi_rows) = limits
        if lo is not None and hi is not None and lo >= hi:
            raise ValueError(f"left must be below right; got left={lo}, right={hi}.")
        model, coef, scale = self._model(), self._coef, self.scale_

        def expected(block: np.ndarray, *per_row: np.ndarray) -> np.ndarray:
            rows = iter(per_row)
            low = as_lower(next(rows)) if lo is None else lo
            high = as_upper(next(rows)) if hi is None else hi
            mu = model.linear(block.astype(np.float64), coef)
            a, b = (low - mu) / scale, (high - mu) / scale
            log_prob, pa, pb = truncated_normal(a, b)
            inside = np.exp(log_prob) * (mu + scale * standard_moments(a, b, pa, pb)[0])
            below = np.where(np.isfinite(low), low, 0.0) * ndtr(a)
            above = np.where(np.isfinite(high), high, 0.0) * ndtr(-b)
            return inside + below + above

        per_row = [s for s in (lo_rows, hi_rows) if s is not None]
        if not per_row:
            return per_sample(x, expected, columns=None)
        return per_sample_aligned([x, *per_row], expected, trailing=(), dims=())

    def marginal_effects(
        self,
        X: Any,
        *,
        left: float | None = None,
        right: float | None = None,
        variable: str | None = None,
    ) -> MarginalEffects:
        """Marginal effects of the features on E[y | x], at the means of X and averaged.

        For limits ``left < right`` (scalars, by default those of the fit),
        ∂E[y | x]/∂x_j = coef_j · P(left < y* < right | x) (McDonald & Moffitt 1980).
        One pass over X.
        """
        x = self._new_x(X, variable)
        lo, hi = self._scalar_limits(left, right)
        model = self._model()
        params = self._params()

        def uncensored(block: Block, p: Params) -> Stats:
            xb = block["X"].astype(np.float64)
            mu = model.linear(xb, p["coef"])
            scale = float(p["scale"])
            log_prob = truncated_normal((lo - mu) / scale, (hi - mu) / scale)[0]
            return {
                "n": np.float64(len(xb)),
                "sum_x": xb.sum(axis=0),
                "sum_prob": np.exp(log_prob).sum(),
            }

        sums = map_reduce(
            uncensored, add_stats, {"X": x.array}, params, split_every=int(self.split_every)
        )
        mean_x = sums["sum_x"] / sums["n"]
        mu = float(model.linear(mean_x[None, :], self._coef)[0])
        prob_at_means = float(
            np.exp(
                truncated_normal(
                    np.array([(lo - mu) / self.scale_]), np.array([(hi - mu) / self.scale_])
                )[0][0]
            )
        )
        return MarginalEffects(
            self.coef_ * prob_at_means, self.coef_ * float(sums["sum_prob"] / sums["n"])
        )

    def score(
        self,
        X: Any,
        y: Any = None,
        *,
        left: Any = None,
        right: Any = None,
        variable: str | None = None,
        sample_weight: Any = None,
    ) -> float:
        """Mean log-likelihood per row of (X, y) with the given limits (as in :meth:`fit`);
        with ``sample_weight``, the weighted mean Σ w_i log p_i / Σ w_i."""
        params = self._params()
        model, x, inputs = self._inputs(X, y, left, right, variable)
        inputs = with_weights(inputs, self._sample_weight(sample_weight, X, x))
        self._check_features(X, variable, int(inputs["X"].array.shape[1]))
        arrays = {name: s.array for name, s in inputs.items()}
        self._check_rows(model, arrays)
        found = map_reduce(
            model.loglik,
            add_stats,
            arrays,
            params,
            split_every=int(self.split_every),
            missing_ok=model.missing_ok,
        )
        return float(found["loglik"] / found["n"])

    def _feature_labels(self) -> list[str]:
        """``feature_names_in_`` where the data named their features, else x0, x1, ..."""
        names = getattr(self, "feature_names_in_", None)
        if names is None:
            return [f"x{j}" for j in range(self.n_features_in_)]
        return [str(n) for n in names]

    def summary(self) -> CensoredSummary:
        """Coefficient table with standard errors, z values and p-values, as R's
        ``summary(tobit(...))`` prints it (``print(model.summary())``)."""
        self._params()
        if not hasattr(self, "bse_"):
            raise NotFittedError(
                "This estimator has parameters but no standard errors: it was restored from "
                "a checkpoint, which stores the parameters only. Call "
                "standard_errors(X, y, left=..., right=...) with the training data first."
            )
        estimate = np.concatenate([self._coef, [math.log(self.scale_)]])
        z = estimate / self.bse_
        p = 2.0 * stats.norm.sf(np.abs(z))
        names = (
            (["(Intercept)"] if self.fit_intercept else [])
            + self._feature_labels()
            + ["Log(scale)"]
        )
        slopes = slice(int(self.fit_intercept), len(self._coef))
        wald_df = self.n_features_in_
        cov = self.cov_[slopes, slopes]
        try:
            wald = float(estimate[slopes] @ np.linalg.solve(cov, estimate[slopes]))
        except np.linalg.LinAlgError:
            wald = math.nan
        return CensoredSummary(
            names=names,
            estimate=estimate,
            std_error=self.bse_,
            z_value=z,
            p_value=p,
            counts=dict(self.counts_),
            scale=self.scale_,
            loglik=self.loglik_,
            n_iter=self.n_iter_,
            converged=self.converged_,
            wald=wald,
            wald_df=wald_df,
            wald_p_value=float(stats.chi2.sf(wald, wald_df)) if wald_df else math.nan,
        )


def _init_block(
    arrays: Mapping[str, Any], size: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """The same rows of every input for the initialisation (drawn in proportion to the
    sample weights, when the fit has them: :func:`dem.weights.init_sample`)."""
    if SAMPLE_WEIGHT not in arrays:
        seed = int(rng.integers(2**63))
        return {
            name: sample_rows(array, size, np.random.default_rng(seed))
            for name, array in arrays.items()
        }
    names = [name for name in arrays if name != SAMPLE_WEIGHT]
    columns = [arrays[n] if arrays[n].ndim == 2 else arrays[n][:, None] for n in names]
    stacked = da.concatenate([c.astype(np.float64) for c in columns], axis=1)
    sample = init_sample(stacked, arrays.get(SAMPLE_WEIGHT), size, rng)
    edges = np.cumsum([0, *(c.shape[1] for c in columns)])
    return {
        name: sample[:, a:b] if arrays[name].ndim == 2 else sample[:, a]
        for name, a, b in zip(names, edges[:-1], edges[1:], strict=True)
    }


def _covariance(hessian: np.ndarray) -> np.ndarray:
    """Inverse of the observed information -H (NaN, with a warning, unless positive definite)."""
    information = -hessian
    try:
        factor = linalg.cho_factor(information)
    except linalg.LinAlgError:
        warnings.warn(
            "The observed information is not positive definite at the fitted parameters (EM "
            "may not have converged, or the model is not identified): standard errors are NaN. "
            "Increase max_iter or lower tol.",
            UserWarning,
            stacklevel=3,
        )
        return np.full_like(information, np.nan)
    return linalg.cho_solve(factor, np.eye(len(information)))
