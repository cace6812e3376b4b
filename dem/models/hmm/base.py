"""What :class:`GaussianHMM` and :class:`CategoricalHMM` share: :class:`BaseHMM`.

:class:`BaseHMM`: the input layout (sequences and lengths), fitting by EM over Dask
chunks with restarts and checkpoints, the per-sequence outputs (``predict``,
``predict_proba``, ``score_sequences``), ``score``, ``bic``/``aic`` and ``sample``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import xarray as xr
from sklearn.base import _fit_context
from sklearn.utils._param_validation import StrOptions

from dem.data import Samples, as_samples, sample_rows
from dem.display import HTMLRepr
from dem.engine import map_reduce
from dem.estimator import (
    EMEstimator,
    NonNegativeArray,
    NotFittedError,
    RandomState,
    as_generator,
    counts,
    in_memory_array,
    per_sample_aligned,
)
from dem.model import Block, Params, Stats, add_stats
from dem.models.hmm import long
from dem.models.hmm.init import uniform
from dem.models.hmm.kernels import checked_lengths, valid_lengths
from dem.models.hmm.long import LongHMMModel
from dem.models.hmm.model import HMMModel
from dem.models.sample_weight import positive_block, weighted_sum
from dem.weights import SAMPLE_WEIGHT, init_sample, with_weights

#: Values (time steps × features) per chunk when numpy input is chunked.
CHUNK_ELEMENTS = 2**20

LAYOUT_HINT = (
    "Arrange the sequences as an array of shape (n_sequences, n_times{features}), padding "
    "shorter ones and passing their lengths; dem.models.hmm.pad_sequences turns hmmlearn-style "
    "concatenated sequences and lengths into that layout."
)


def _sample_states(
    startprob: np.ndarray,
    transmat: np.ndarray,
    n_sequences: int,
    n_times: int,
    rng: np.random.Generator,
) -> np.ndarray:
    last = len(startprob) - 1
    states = np.empty((n_sequences, n_times), dtype=np.int64)
    states[:, 0] = np.minimum(
        np.searchsorted(np.cumsum(startprob), rng.random(n_sequences), side="right"), last
    )
    cdf = np.cumsum(transmat, axis=1)
    for t in range(1, n_times):
        draws = rng.random(n_sequences)[:, None]
        states[:, t] = np.minimum((draws >= cdf[states[:, t - 1]]).sum(axis=1), last)
    return states


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


class BaseHMM(HTMLRepr, EMEstimator, ABC):
    """What :class:`GaussianHMM` and :class:`CategoricalHMM` share: fitting by EM over
    Dask chunks of sequences, checkpoints, and the per-sequence outputs."""

    _ndim: ClassVar[int]
    _emission_codes: ClassVar[str]
    #: The emission parameter whose last axis is the number of features (or symbols).
    _features_param: ClassVar[str]

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **EMEstimator._parameter_constraints,
        "n_components": counts(1),
        "startprob_prior": [NonNegativeArray()],
        "transmat_prior": [NonNegativeArray()],
        "startprob_init": ["array-like", None],
        "transmat_init": ["array-like", None],
        "sequence_dim": [str],
        "time_dim": [str],
        "method": [StrOptions({"batch", "incremental"})],
    }

    # set by subclasses' __init__
    n_components: int
    startprob_prior: Any
    transmat_prior: Any
    tol: float
    max_iter: int
    n_init: int
    accelerate: str
    startprob_init: Any
    transmat_init: Any
    random_state: RandomState
    checkpoint: Any
    storage_options: dict[str, Any] | None
    resume: bool
    split_every: int
    persist: bool | None
    init_sample_size: int
    callback: Callable[[Any], Any] | None
    sequence_dim: str
    time_dim: str

    # --- hooks ---------------------------------------------------------------------------

    @abstractmethod
    def _model(self, n_features: int) -> HMMModel:
        """The model's pure functions for this configuration."""

    @abstractmethod
    def _n_features(self, inputs: dict[str, Samples]) -> int:
        """Number of features (or of symbols) of the data."""

    @abstractmethod
    def _initial_emissions(
        self, model: HMMModel, n_features: int, inputs: dict[str, Samples], rng: np.random.Generator
    ) -> Params:
        """Initial emission parameters (from ``*_init`` or a sample of the data)."""

    @abstractmethod
    def _emission_params(self) -> Params:
        """The fitted emission parameters, keyed as the model's."""

    @abstractmethod
    def _set_emission_params(self, params: Params) -> None:
        """Store fitted emission parameters as attributes."""

    @abstractmethod
    def _emission_scalars(self) -> int:
        """Number of free scalars of the emission parameters."""

    @abstractmethod
    def _sample_emissions(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw one observation per state of ``states``."""

    # --- inputs ----------------------------------------------------------------------------

    def _inputs(self, X: Any, lengths: Any, variable: str | None) -> dict[str, Samples]:
        X = in_memory_array(X, self, samples_by_features=False)  # the layout is checked below
        chunk_rows = None
        if not isinstance(X, str | os.PathLike | xr.Dataset):
            shape = np.shape(X)
            if len(shape) >= 2:
                chunk_rows = max(1, CHUNK_ELEMENTS // max(1, int(np.prod(shape[1:]))))
        dims: dict[str, Any] = {"sample_dim": self.sequence_dim, "time_dim": self.time_dim}
        dims["feature_dim"] = (
            getattr(self, "feature_dim", "feature") if self._ndim == 3 else self.time_dim
        )
        try:
            samples = as_samples(
                X,
                variable=variable,
                ndim=self._ndim,
                chunk_rows=chunk_rows,
                storage_options=self.storage_options,
                **dims,
            )
        except ValueError as exc:
            if "must be" not in str(exc) and "has dims" not in str(exc):
                raise
            samples = self._long_input(X, variable, exc)
            if lengths is not None:
                features = ", n_features" if self._ndim == 3 else ""
                raise ValueError(
                    f"X is one sequence ({self._ndim - 1}-D, time first), which has no lengths; "
                    f"pass lengths only with many sequences ({self._ndim}-D X). "
                    + LAYOUT_HINT.format(features=features)
                ) from None
        if lengths is None:
            return {"X": samples}
        n_sequences, n_times = samples.array.shape[:2]
        if isinstance(lengths, str):
            if not isinstance(X, str | os.PathLike | xr.Dataset):
                raise TypeError(
                    f"lengths={lengths!r} names a variable, which needs X to be a Zarr store "
                    "path or an xarray Dataset; otherwise pass the lengths themselves."
                )
            found = as_samples(
                X,
                variable=lengths,
                ndim=1,
                name="lengths",
                sample_dim=self.sequence_dim,
                storage_options=self.storage_options,
            )
        else:
            found = as_samples(
                lengths,
                ndim=1,
                name="lengths",
                sample_dim=self.sequence_dim,
                chunk_rows=samples.array.chunks[0][0],
            )
        if found.n_samples != n_sequences:
            raise ValueError(
                f"lengths has {found.n_samples} entries but X has {n_sequences} sequences; "
                "pass one length per sequence."
            )
        if found.array.chunks[0] != samples.array.chunks[0]:
            found = replace(found, array=found.array.rechunk({0: samples.array.chunks[0]}))
        if found.kind == "numpy":  # cheap to check now rather than in the first pass
            checked_lengths(found.array.compute(scheduler="sync"), n_sequences, n_times)
        return {"X": samples, "lengths": found}

    def _long_input(self, X: Any, variable: str | None, failure: ValueError) -> Samples:
        """``X`` as one long sequence (time × features, or time for symbols), chunked along
        time; ``failure`` (refusing it as many sequences) explains any other shape."""
        long_ndim = self._ndim - 1
        chunk_rows = None
        if not isinstance(X, str | os.PathLike | xr.Dataset) and np.ndim(X) == long_ndim:
            chunk_rows = max(1, CHUNK_ELEMENTS // max(1, int(np.prod(np.shape(X)[1:]))))
        dims: dict[str, Any] = {"sample_dim": self.time_dim}
        if long_ndim == 2:
            dims["feature_dim"] = getattr(self, "feature_dim", "feature")
        try:
            return as_samples(
                X,
                variable=variable,
                ndim=long_ndim,
                chunk_rows=chunk_rows,
                storage_options=self.storage_options,
                **dims,
            )
        except ValueError as exc:
            if "must be" not in str(exc) and "has dims" not in str(exc):
                raise
            features = ", n_features" if self._ndim == 3 else ""
            one = "time, n_features" if self._ndim == 3 else "time"
            raise ValueError(
                f"{failure} {LAYOUT_HINT.format(features=features)} One long sequence is an "
                f"array of shape ({one}), chunked along time."
            ) from failure

    def _is_long(self, inputs: dict[str, Samples]) -> bool:
        """Whether the input is one sequence spanning the chunks (see dem.models.hmm.long)."""
        return bool(inputs["X"].array.ndim == self._ndim - 1)

    def _sampled_observations(
        self, inputs: dict[str, Samples], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """At most ``init_sample_size`` random sequences: (sequences, valid steps); for one
        long sequence, at most ``init_sample_size`` random time steps (as sequences of one)."""
        seed = int(rng.integers(2**63))
        if self._is_long(inputs):
            x = sample_rows(inputs["X"].array, int(self.init_sample_size), rng)
            return x[:, None], np.ones((len(x), 1), dtype=bool)
        weights = inputs.get(SAMPLE_WEIGHT)  # sequences drawn in proportion to their weights
        size = int(self.init_sample_size)
        x = init_sample(inputs["X"].array, weights, size, np.random.default_rng(seed))
        n_times = x.shape[1]
        if "lengths" in inputs:  # the same draws (the same weights and seed)
            found = init_sample(inputs["lengths"].array, weights, size, np.random.default_rng(seed))
            # sequences of invalid lengths are left out, for the first pass to name
            lengths = np.where(valid_lengths(found, n_times), found, 0).astype(np.int64)
        else:
            lengths = np.full(len(x), n_times)
        return x, np.arange(n_times)[None, :] < lengths[:, None]

    # --- fitting ---------------------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(
        self,
        X: Any,
        lengths: Any = None,
        *,
        variable: str | None = None,
        sample_weight: Any = None,
    ) -> BaseHMM:
        """Fit the HMM by Baum–Welch (EM) over the sequences' chunks.

        Parameters
        ----------
        X : array-like, dask array, xarray.DataArray or Dataset, or path
            The sequences, shape (n_sequences, n_times, n_features) for
            :class:`GaussianHMM` and (n_sequences, n_times) for :class:`CategoricalHMM`,
            chunked along sequences only; a Zarr store path (or Dataset) needs
            ``variable``.
        lengths : array-like of int of shape (n_sequences,), or str, optional
            Valid steps of each sequence (ragged sequences); what follows is padding.
            A string names a variable of the same Zarr store or Dataset as ``X``.
        variable : str, optional
            Name of ``X`` in a Zarr store or Dataset.
        sample_weight : array-like of shape (n_sequences,), dask array, or str, optional
            Non-negative finite weight of each sequence (a string: the name of a variable
            of the same store). Baum–Welch then maximises the weighted log-likelihood
            Σ_i w_i log p(sequence i): integer weights fit as if each sequence were
            repeated that many times, weight 0 as if it were absent; ``lower_bounds_``
            are the weighted log-likelihood per weighted time step. The initialisation
            draws its sequences in proportion to the weights, and a checkpoint resumes
            only with the same weights. Not for one long sequence (2-D ``X`` for
            :class:`GaussianHMM`), whose single weight would change nothing.

        Returns
        -------
        self
        """
        inputs = self._weighted(X, self._inputs(X, lengths, variable), sample_weight)
        n_features = self._n_features(inputs)
        model = self._model(n_features)
        transitions = self._checked_transition_inits()

        def make_init(rng: np.random.Generator) -> Params:
            startprob, transmat = uniform(model.n_components)
            params = {
                "startprob": startprob if transitions[0] is None else transitions[0],
                "transmat": transmat if transitions[1] is None else transitions[1],
            }
            return {**params, **self._initial_emissions(model, n_features, inputs, rng)}

        fitted = LongHMMModel(model) if self._is_long(inputs) else model
        self._fit_restarts(fitted, inputs, make_init)
        self.n_features_in_ = int(n_features)
        return self

    def _weighted(
        self, X: Any, inputs: dict[str, Samples], sample_weight: Any
    ) -> dict[str, Samples]:
        """``inputs`` with the sequences' weights, validated and aligned, if any."""
        if sample_weight is not None and self._is_long(inputs):
            raise ValueError(
                "sample_weight weighs whole sequences, and X is one long sequence: a single "
                "weight changes nothing. Leave sample_weight out, or pass many sequences "
                f"({self._ndim}-D X) to weigh them."
            )
        return with_weights(inputs, self._sample_weight(sample_weight, X, inputs["X"]))

    def _checked_transition_inits(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        k = int(self.n_components)
        checked = []
        for name, shape in (("startprob_init", (k,)), ("transmat_init", (k, k))):
            value = getattr(self, name)
            if value is not None:
                value = np.array(value, dtype=np.float64)
                if value.shape != shape:
                    raise ValueError(f"{name} must have shape {shape}, got {value.shape}.")
                if (
                    not np.all(np.isfinite(value))
                    or np.any(value < 0)
                    or not np.allclose(value.sum(axis=-1), 1.0)
                ):
                    raise ValueError(
                        f"{name} must hold probabilities: non-negative, each row summing to 1."
                    )
            checked.append(value)
        return checked[0], checked[1]

    def _set_params(self, params: Params) -> None:
        """Fitted attributes from parameters as the model writes them (and checkpoints hold)."""
        self.startprob_ = params["startprob"]
        self.transmat_ = params["transmat"]
        self._set_emission_params(params)
        self.n_features_in_ = int(np.shape(params[self._features_param])[-1])

    def _params(self) -> Params:
        if not hasattr(self, "startprob_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit first.")
        return {"startprob": self.startprob_, "transmat": self.transmat_, **self._emission_params()}

    # --- per-sequence results (lazy for lazy input) -----------------------------------------

    def _fitted_inputs(
        self, X: Any, lengths: Any, variable: str | None
    ) -> tuple[HMMModel, Params, dict[str, Samples]]:
        params = self._params()
        inputs = self._inputs(X, lengths, variable)
        if self._ndim == 3 and inputs["X"].array.shape[-1] != self.n_features_in_:
            raise ValueError(
                f"X has {inputs['X'].array.shape[-1]} features, but the HMM was fitted with "
                f"{self.n_features_in_}."
            )
        return self._model(self.n_features_in_), params, inputs

    def _per_sequence(
        self,
        X: Any,
        lengths: Any,
        variable: str | None,
        method: str,
        trailing: Callable[[int], tuple[int, ...]],
        dims: tuple[str, ...],
        dtype: Any = np.float64,
    ) -> Any:
        model, params, inputs = self._fitted_inputs(X, lengths, variable)
        if self._is_long(inputs):
            return self._per_step(model, params, inputs["X"], method)

        def function(x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
            result: np.ndarray = getattr(model, method)(x, lengths, params)
            return result

        n_times = int(inputs["X"].array.shape[1])
        return per_sample_aligned(  # the model refuses NaN inside sequences (padding may hold it)
            list(inputs.values()),
            function,
            trailing=trailing(n_times),
            dims=dims,
            dtype=dtype,
            missing_ok=None,
        )

    def _per_step(self, model: HMMModel, params: Params, samples: Samples, method: str) -> Any:
        """``method``'s result for one long sequence: lazy for lazy input, as its input."""
        if method == "sequence_loglik":
            return np.array([long.loglik(model, params, samples.array)])
        if method == "decode":
            result = long.lazy_path(model, params, samples.array)
            dims: tuple[str, ...] = (self.time_dim,)
        else:
            result = long.lazy_posteriors(model, params, samples.array)
            dims = (self.time_dim, "state")
        if samples.kind == "numpy":
            return result.compute()
        if samples.kind == "xarray":
            return xr.DataArray(result, dims=dims, coords=samples.coords)
        return result

    def score_sequences(self, X: Any, lengths: Any = None, *, variable: str | None = None) -> Any:
        """Log-likelihood of each sequence, shape (n_sequences,)."""
        return self._per_sequence(X, lengths, variable, "sequence_loglik", lambda t: (), ())

    def predict_proba(self, X: Any, lengths: Any = None, *, variable: str | None = None) -> Any:
        """State posteriors, shape (n_sequences, n_times, n_components); NaN at padding."""
        return self._per_sequence(
            X,
            lengths,
            variable,
            "state_posteriors",
            lambda t: (t, self.n_components),
            (self.time_dim, "state"),
        )

    def predict(self, X: Any, lengths: Any = None, *, variable: str | None = None) -> Any:
        """Most probable state sequences (Viterbi), shape (n_sequences, n_times); -1 at padding."""
        return self._per_sequence(
            X, lengths, variable, "decode", lambda t: (t,), (self.time_dim,), np.int64
        )

    def _score_stats(
        self, X: Any, lengths: Any, variable: str | None, sample_weight: Any = None
    ) -> Stats:
        """The (weighted) total log-likelihood and (weighted) number of time steps."""
        model, params, inputs = self._fitted_inputs(X, lengths, variable)
        inputs = self._weighted(X, inputs, sample_weight)
        if self._is_long(inputs):
            array = inputs["X"].array
            value = long.loglik(model, params, array)
            return {"n": np.float64(array.shape[0]), "loglik": np.float64(value)}

        def loglik(block: Block, p: Params) -> Stats:
            w, kept = positive_block(block)  # a sequence of weight 0 is not even evaluated
            x, found = kept["X"], kept.get("lengths")
            steps = np.full(x.shape[0], x.shape[1]) if found is None else np.asarray(found)
            values = model.sequence_loglik(x, found, p)
            return {"n": weighted_sum(steps, w), "loglik": weighted_sum(values, w)}

        arrays = {name: s.array for name, s in inputs.items()}
        return map_reduce(loglik, add_stats, arrays, params, split_every=int(self.split_every))

    def score(
        self,
        X: Any,
        lengths: Any = None,
        *,
        variable: str | None = None,
        sample_weight: Any = None,
    ) -> float:
        """Total log-likelihood of the sequences (as hmmlearn's ``score``; one pass).

        With ``sample_weight`` (one weight per sequence, as for :meth:`fit`), the weighted
        total Σ_i w_i log p(sequence i): for integer weights, the score of the sequences
        repeated that many times; a sequence of weight 0 is left out.
        """
        return float(self._score_stats(X, lengths, variable, sample_weight)["loglik"])

    def _n_parameters(self) -> int:
        k = self.n_components
        return int((k - 1) + k * (k - 1) + self._emission_scalars())

    def bic(
        self,
        X: Any,
        lengths: Any = None,
        *,
        variable: str | None = None,
        sample_weight: Any = None,
    ) -> float:
        """Bayesian information criterion (lower is better): -2 log L + p log n, with n
        the number of observations (time steps).

        With ``sample_weight``, log L is the weighted log-likelihood (see :meth:`score`)
        and n the weighted number of time steps Σ_i w_i T_i (the BIC of the sequences
        repeated, for integer weights).
        """
        stats = self._score_stats(X, lengths, variable, sample_weight)
        return float(-2.0 * stats["loglik"] + self._n_parameters() * np.log(stats["n"]))

    def aic(
        self,
        X: Any,
        lengths: Any = None,
        *,
        variable: str | None = None,
        sample_weight: Any = None,
    ) -> float:
        """Akaike information criterion (lower is better): -2 log L + 2 p.

        With ``sample_weight``, log L is the weighted log-likelihood (see :meth:`score`).
        """
        stats = self._score_stats(X, lengths, variable, sample_weight)
        return float(-2.0 * stats["loglik"] + 2.0 * self._n_parameters())

    def sample(
        self,
        n_sequences: int = 1,
        n_times: int = 100,
        *,
        random_state: RandomState = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw sequences from the fitted HMM.

        Returns
        -------
        X : ndarray of shape (n_sequences, n_times, n_features) or (n_sequences, n_times)
        states : ndarray of int64 of shape (n_sequences, n_times)
        """
        params = self._params()
        if not (_is_int(n_sequences) and n_sequences >= 1 and _is_int(n_times) and n_times >= 1):
            raise ValueError(
                "n_sequences and n_times must be integers >= 1, got "
                f"{n_sequences!r} and {n_times!r}."
            )
        rng = as_generator(self.random_state if random_state is None else random_state)
        states = _sample_states(params["startprob"], params["transmat"], n_sequences, n_times, rng)
        return self._sample_emissions(states, rng), states
