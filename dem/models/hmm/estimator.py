"""The HMM estimators: :class:`GaussianHMM` and :class:`CategoricalHMM`.

Each adds its emission parameters (hyperparameters, initialisation, sampling) to
:class:`~dem.models.hmm.base.BaseHMM`.
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Real
from typing import Any, ClassVar

import numpy as np
from sklearn.utils._param_validation import StrOptions

from dem.accelerate import DEFAULT_ALPHA
from dem.data import Samples
from dem.engine import map_reduce
from dem.estimator import (
    NonNegativeArray,
    RandomState,
    counts,
    reals,
)
from dem.model import Block, Params, Stats
from dem.models import gaussian
from dem.models.hmm.base import BaseHMM
from dem.models.hmm.init import initial_gaussian_covars, initial_gaussian_means
from dem.models.hmm.kernels import (
    COVARIANCE_TYPES,
    MAX_SYMBOLS,
    check_finite,
    checked_lengths,
    checked_symbols,
    covars_shape,
    precision_cholesky,
)
from dem.models.hmm.model import CategoricalHMMModel, GaussianHMMModel, HMMModel


class GaussianHMM(BaseHMM):
    """Hidden Markov model with Gaussian emissions, fitted by Baum–Welch over Dask chunks.

    Parameters follow :class:`hmmlearn.hmm.GaussianHMM` in name and meaning (its
    ``n_iter`` is ``max_iter`` here); from the same initial parameters every iteration
    matches hmmlearn's. The data are many sequences in one array of shape
    (n_sequences, n_times, n_features), with optional ``lengths`` for ragged ones.

    Parameters
    ----------
    n_components : int, default=1
        Number of hidden states.
    covariance_type : {"full", "diag", "tied", "spherical"}, default="diag"
        Form of the state covariances.
    min_covar : float, default=1e-3
        Added to the diagonal of the initial covariance (as in hmmlearn, only there).
    startprob_prior, transmat_prior : float or array-like, default=1.0
        Dirichlet prior parameters of ``startprob_`` and of each row of ``transmat_``.
    means_prior, means_weight : float or array-like, default=0
        Mean and precision weight of the normal prior on ``means_``.
    covars_prior : float or array-like, default=1e-2
        Scale of the (inverse-gamma or inverse-Wishart) prior on the covariances, added
        to the scatter of every state. For "full" and "tied" a scalar means that
        multiple of the identity (hmmlearn adds a scalar to every entry; pass it
        ``covars_prior * np.eye(n_features)`` to compare).
    covars_weight : float, default=1
        Weight of that prior.
    tol : float, default=1e-3
        Convergence threshold on the change of the mean per-observation log-likelihood.
    max_iter : int, default=100
        Maximum number of EM iterations per initialisation.
    n_init : int, default=1
        Number of initialisations; the best (highest lower bound) is kept.
    accelerate : {"none", "squarem", "alpha"}, default="none"
        ``"squarem"`` extrapolates between EM steps (Varadhan & Roland 2008; see
        :mod:`dem.accelerate`) in the probabilities and the emission parameters
        (covariances as log-Cholesky factors); ``max_iter`` then counts passes and
        ``lower_bounds_`` has one entry per cycle.
    alpha : float in [-1, 1), default=0.9
        α of ``accelerate="alpha"`` (α-EM, Matsuyama 2003: a momentum step from the last
        two EM steps, weighted ``(1 + alpha) / 2``; see :func:`dem.accelerate.alpha_em`):
        -1 is plain EM, larger values take larger steps. Ignored by the other methods.
    method : {"batch", "incremental"}, default="batch"
        ``"incremental"`` is Neal & Hinton's incremental EM (see :mod:`dem.incremental`):
        an M-step after every ``incremental_chunks`` chunks of sequences, each group's
        statistics replaced in the cached total; ``max_iter`` and ``n_iter_`` count
        passes. Takes ``accelerate="none"``, and many sequences (one long sequence
        spanning chunks is refused).
    incremental_chunks : int, default=1
        Chunks per group of ``method="incremental"``.
    startprob_init : array-like of shape (n_components,), optional
    transmat_init : array-like of shape (n_components, n_components), optional
    means_init : array-like of shape (n_components, n_features), optional
    covars_init : array-like, optional
        Initial parameters, shaped as the fitted attributes. By default ``startprob``
        and ``transmat`` start uniform, the means at k-means centres and every
        covariance at the data covariance (plus ``min_covar``), both from a random
        sample of at most ``init_sample_size`` sequences.
    random_state : int, numpy.random.RandomState or numpy.random.Generator, optional
        Seeds the initialisation (and :meth:`sample`); a ``RandomState`` gives four
        32-bit words of seed: the same state, the same fit.
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
        Keep the data in cluster memory between iterations (default: when they take at
        most half of it).
    init_sample_size : int, default=1000
        Sequences drawn for the initialisation.
    callback : callable, optional
        Called after every iteration with a :class:`dem.engine.IterationInfo`.
    sequence_dim, time_dim, feature_dim : str
        Dimension names of xarray input.

    Attributes
    ----------
    startprob_ : ndarray of shape (n_components,)
    transmat_ : ndarray of shape (n_components, n_components)
    means_ : ndarray of shape (n_components, n_features)
    covars_ : ndarray
        (n_components, n_features, n_features) for "full", (n_features, n_features)
        for "tied", (n_components, n_features) for "diag", (n_components,) for
        "spherical".
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean per-observation log-likelihood at the start of the last iteration.
    lower_bounds_ : list of float
        ``lower_bound_`` of every iteration of the best initialisation.
    n_features_in_ : int

    See Also
    --------
    CategoricalHMM : the same with categorical emissions.
    dem.GaussianMixture : the model without time dependence.
    """

    _ndim = 3
    _features_param = "means"

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **BaseHMM._parameter_constraints,
        "covariance_type": [StrOptions(set(COVARIANCE_TYPES))],
        "min_covar": reals(0),
        "means_prior": ["array-like", Real],
        "means_weight": [NonNegativeArray()],
        "covars_prior": [NonNegativeArray(diagonal=True)],
        "covars_weight": reals(None),
        "means_init": ["array-like", None],
        "covars_init": ["array-like", None],
    }

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "diag",
        min_covar: float = 1e-3,
        startprob_prior: Any = 1.0,
        transmat_prior: Any = 1.0,
        means_prior: Any = 0.0,
        means_weight: Any = 0.0,
        covars_prior: Any = 1e-2,
        covars_weight: float = 1.0,
        tol: float = 1e-3,
        max_iter: int = 100,
        n_init: int = 1,
        accelerate: str = "none",
        alpha: float = DEFAULT_ALPHA,
        method: str = "batch",
        incremental_chunks: int = 1,
        startprob_init: Any = None,
        transmat_init: Any = None,
        means_init: Any = None,
        covars_init: Any = None,
        random_state: RandomState = None,
        checkpoint: Any = None,
        resume: bool = False,
        storage_options: dict[str, Any] | None = None,
        checkpoint_storage_options: dict[str, Any] | None = None,
        split_every: int = 8,
        persist: bool | None = None,
        init_sample_size: int = 1000,
        callback: Callable[[Any], Any] | None = None,
        sequence_dim: str = "sequence",
        time_dim: str = "time",
        feature_dim: str = "feature",
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.min_covar = min_covar
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.means_prior = means_prior
        self.means_weight = means_weight
        self.covars_prior = covars_prior
        self.covars_weight = covars_weight
        self.tol = tol
        self.max_iter = max_iter
        self.n_init = n_init
        self.accelerate = accelerate
        self.alpha = alpha
        self.method = method
        self.incremental_chunks = incremental_chunks
        self.startprob_init = startprob_init
        self.transmat_init = transmat_init
        self.means_init = means_init
        self.covars_init = covars_init
        self.random_state = random_state
        self.checkpoint = checkpoint
        self.resume = resume
        self.storage_options = storage_options
        self.checkpoint_storage_options = checkpoint_storage_options
        self.split_every = split_every
        self.persist = persist
        self.init_sample_size = init_sample_size
        self.callback = callback
        self.sequence_dim = sequence_dim
        self.time_dim = time_dim
        self.feature_dim = feature_dim

    def _model(self, n_features: int) -> GaussianHMMModel:
        return GaussianHMMModel(
            int(self.n_components),
            startprob_prior=self.startprob_prior,
            transmat_prior=self.transmat_prior,
            covariance_type=self.covariance_type,
            means_prior=self.means_prior,
            means_weight=self.means_weight,
            covars_prior=self.covars_prior,
            covars_weight=float(self.covars_weight),
        )

    def _n_features(self, inputs: dict[str, Samples]) -> int:
        return int(inputs["X"].array.shape[-1])

    def _checked_emission_inits(
        self, n_features: int
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        k, ctype = int(self.n_components), self.covariance_type
        means = covars = None
        if self.means_init is not None:
            means = np.array(self.means_init, dtype=np.float64)
            if means.shape != (k, n_features):
                raise ValueError(
                    f"means_init must have shape {(k, n_features)}, got {means.shape}."
                )
            if not np.all(np.isfinite(means)):
                raise ValueError("means_init contains NaN or infinity.")
        if self.covars_init is not None:
            covars = np.array(self.covars_init, dtype=np.float64)
            shape = covars_shape(ctype, k, n_features)
            if covars.shape != shape:
                raise ValueError(
                    f"covars_init must have shape {shape} for covariance_type={ctype!r}, got "
                    f"{covars.shape}."
                )
            try:
                precision_cholesky(covars, ctype)
            except ValueError as exc:
                raise ValueError(
                    "covars_init must be positive (diag, spherical) or symmetric positive "
                    "definite (full, tied)."
                ) from exc
            if ctype in ("full", "tied") and not np.allclose(covars, np.swapaxes(covars, -1, -2)):
                raise ValueError("covars_init must be symmetric.")
        return means, covars

    def _initial_emissions(
        self, model: HMMModel, n_features: int, inputs: dict[str, Samples], rng: np.random.Generator
    ) -> Params:
        means, covars = self._checked_emission_inits(n_features)
        if means is None or covars is None:
            sequences, valid = self._sampled_observations(inputs, rng)
            observations = sequences[valid].astype(np.float64)
            # NaN or infinity inside a sequence are left to the first pass, which says where
            observations = observations[np.isfinite(observations).all(axis=1)]
            if len(observations) < self.n_components:
                raise ValueError(
                    f"The initialisation sample holds {len(observations)} finite observations, "
                    f"fewer than n_components={self.n_components}. Use fewer states, more data, "
                    "or a larger init_sample_size."
                )
            if means is None:
                means = initial_gaussian_means(observations, int(self.n_components), rng)
            if covars is None:
                covars = initial_gaussian_covars(
                    observations,
                    int(self.n_components),
                    self.covariance_type,
                    float(self.min_covar),
                )
        return {
            "means": means,
            "covars": covars,
            "precisions_cholesky": precision_cholesky(covars, self.covariance_type),
        }

    def _emission_params(self) -> Params:
        return {
            "means": self.means_,
            "covars": self.covars_,
            "precisions_cholesky": self.precisions_cholesky_,
        }

    def _set_emission_params(self, params: Params) -> None:
        self.means_ = params["means"]
        self.covars_ = params["covars"]
        self.precisions_cholesky_ = params["precisions_cholesky"]

    def _emission_scalars(self) -> int:
        k, d = self.means_.shape
        return int(k * d + gaussian.n_covariance_parameters(self.covariance_type, k, d))

    def _sample_emissions(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        d = self.means_.shape[1]
        noise = rng.standard_normal((*states.shape, d))
        means = self.means_[states]
        ctype = self.covariance_type
        if ctype == "full":
            factors = np.linalg.cholesky(self.covars_)
            return means + np.einsum("...ij,...j->...i", factors[states], noise)
        if ctype == "tied":
            return means + noise @ np.linalg.cholesky(self.covars_).T
        if ctype == "diag":
            return means + noise * np.sqrt(self.covars_[states])
        return means + noise * np.sqrt(self.covars_[states])[..., None]


class CategoricalHMM(BaseHMM):
    """Hidden Markov model with categorical emissions, fitted by Baum–Welch over Dask chunks.

    Parameters follow :class:`hmmlearn.hmm.CategoricalHMM` in name and meaning (its
    ``n_iter`` is ``max_iter`` here); from the same initial parameters every iteration
    matches hmmlearn's. The data are integer symbols 0, 1, ..., n_features - 1 in one
    array of shape (n_sequences, n_times), with optional ``lengths`` for ragged
    sequences.

    Parameters
    ----------
    n_components : int, default=1
        Number of hidden states.
    n_features : int, optional
        Number of distinct symbols (hmmlearn's name); a symbol >= n_features is an error
        naming it and its sequence. By default one more than the largest symbol in the
        data (found in one extra pass), at most ``dem.models.hmm.MAX_SYMBOLS``
        (1,000,000; a larger symbol is an error naming it), the bound of ``n_features``
        too. Symbols must be non-negative whole numbers.
    startprob_prior, transmat_prior, emissionprob_prior : float or array-like, default=1.0
        Dirichlet prior parameters of ``startprob_``, and of each row of ``transmat_``
        and ``emissionprob_``.
    tol : float, default=1e-3
        Convergence threshold on the change of the mean per-observation log-likelihood.
    max_iter : int, default=100
        Maximum number of EM iterations per initialisation.
    n_init : int, default=1
        Number of initialisations; the best (highest lower bound) is kept.
    accelerate : {"none", "squarem", "alpha"}, default="none"
        ``"squarem"`` extrapolates between EM steps (Varadhan & Roland 2008; see
        :mod:`dem.accelerate`) in the probabilities and the emission parameters
        (covariances as log-Cholesky factors); ``max_iter`` then counts passes and
        ``lower_bounds_`` has one entry per cycle.
    alpha : float in [-1, 1), default=0.9
        α of ``accelerate="alpha"`` (α-EM, Matsuyama 2003: a momentum step from the last
        two EM steps, weighted ``(1 + alpha) / 2``; see :func:`dem.accelerate.alpha_em`):
        -1 is plain EM, larger values take larger steps. Ignored by the other methods.
    method : {"batch", "incremental"}, default="batch"
        ``"incremental"`` is Neal & Hinton's incremental EM (see :mod:`dem.incremental`):
        an M-step after every ``incremental_chunks`` chunks of sequences, each group's
        statistics replaced in the cached total; ``max_iter`` and ``n_iter_`` count
        passes. Takes ``accelerate="none"``, and many sequences (one long sequence
        spanning chunks is refused).
    incremental_chunks : int, default=1
        Chunks per group of ``method="incremental"``.
    startprob_init : array-like of shape (n_components,), optional
    transmat_init : array-like of shape (n_components, n_components), optional
    emissionprob_init : array-like of shape (n_components, n_features), optional
        Initial parameters. By default ``startprob`` and ``transmat`` start uniform and
        each row of ``emissionprob`` at normalised uniform random numbers.
    random_state, checkpoint, resume, storage_options, \
checkpoint_storage_options, split_every, persist, init_sample_size, callback
        As for :class:`GaussianHMM`.
    sequence_dim, time_dim : str
        Dimension names of xarray input.

    Attributes
    ----------
    startprob_ : ndarray of shape (n_components,)
    transmat_ : ndarray of shape (n_components, n_components)
    emissionprob_ : ndarray of shape (n_components, n_features)
    converged_, n_iter_, lower_bound_, lower_bounds_, n_features_in_
        As for :class:`GaussianHMM` (``n_features_in_`` is the number of symbols).
    """

    _ndim = 2
    _features_param = "emissionprob"

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **BaseHMM._parameter_constraints,
        "n_features": [*counts(1, MAX_SYMBOLS), None],
        "emissionprob_prior": [NonNegativeArray()],
        "emissionprob_init": ["array-like", None],
    }

    def __init__(
        self,
        n_components: int = 1,
        *,
        n_features: int | None = None,
        startprob_prior: Any = 1.0,
        transmat_prior: Any = 1.0,
        emissionprob_prior: Any = 1.0,
        tol: float = 1e-3,
        max_iter: int = 100,
        n_init: int = 1,
        accelerate: str = "none",
        alpha: float = DEFAULT_ALPHA,
        method: str = "batch",
        incremental_chunks: int = 1,
        startprob_init: Any = None,
        transmat_init: Any = None,
        emissionprob_init: Any = None,
        random_state: RandomState = None,
        checkpoint: Any = None,
        resume: bool = False,
        storage_options: dict[str, Any] | None = None,
        checkpoint_storage_options: dict[str, Any] | None = None,
        split_every: int = 8,
        persist: bool | None = None,
        init_sample_size: int = 1000,
        callback: Callable[[Any], Any] | None = None,
        sequence_dim: str = "sequence",
        time_dim: str = "time",
    ) -> None:
        self.n_components = n_components
        self.n_features = n_features
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.emissionprob_prior = emissionprob_prior
        self.tol = tol
        self.max_iter = max_iter
        self.n_init = n_init
        self.accelerate = accelerate
        self.alpha = alpha
        self.method = method
        self.incremental_chunks = incremental_chunks
        self.startprob_init = startprob_init
        self.transmat_init = transmat_init
        self.emissionprob_init = emissionprob_init
        self.random_state = random_state
        self.checkpoint = checkpoint
        self.resume = resume
        self.storage_options = storage_options
        self.checkpoint_storage_options = checkpoint_storage_options
        self.split_every = split_every
        self.persist = persist
        self.init_sample_size = init_sample_size
        self.callback = callback
        self.sequence_dim = sequence_dim
        self.time_dim = time_dim

    def _model(self, n_features: int) -> CategoricalHMMModel:
        return CategoricalHMMModel(
            int(self.n_components),
            startprob_prior=self.startprob_prior,
            transmat_prior=self.transmat_prior,
            n_features=int(n_features),
            emissionprob_prior=self.emissionprob_prior,
        )

    def _n_features(self, inputs: dict[str, Samples]) -> int:
        if self.n_features is not None:
            return int(self.n_features)
        if self.emissionprob_init is not None:
            return int(np.shape(self.emissionprob_init)[-1])

        def largest(block: Block, params: Params) -> Stats:
            x = block["X"]
            if x.ndim == 1:  # one long sequence
                return {"largest": np.float64(checked_symbols(x, None).max())}
            lengths = checked_lengths(
                block.get("lengths"), x.shape[0], x.shape[1], " of this chunk"
            )
            valid = np.arange(x.shape[1])[None, :] < lengths[:, None]
            check_finite(x.T, valid.T, "X")
            return {"largest": np.float64(checked_symbols(np.where(valid, x, 0).T, None).max())}

        def larger(a: Stats, b: Stats) -> Stats:
            return {"largest": np.maximum(a["largest"], b["largest"])}

        arrays = {name: s.array for name, s in inputs.items()}
        return (
            int(
                map_reduce(largest, larger, arrays, {}, split_every=int(self.split_every))[
                    "largest"
                ]
            )
            + 1
        )

    def _initial_emissions(
        self, model: HMMModel, n_features: int, inputs: dict[str, Samples], rng: np.random.Generator
    ) -> Params:
        k = int(self.n_components)
        if self.emissionprob_init is None:
            draws = rng.random((k, n_features))
            return {"emissionprob": draws / draws.sum(axis=1, keepdims=True)}
        emissionprob = np.array(self.emissionprob_init, dtype=np.float64)
        if emissionprob.shape != (k, n_features):
            raise ValueError(
                f"emissionprob_init must have shape {(k, n_features)}, got {emissionprob.shape}."
            )
        if (
            not np.all(np.isfinite(emissionprob))
            or np.any(emissionprob < 0)
            or not np.allclose(emissionprob.sum(axis=1), 1.0)
        ):
            raise ValueError(
                "emissionprob_init must hold probabilities: non-negative rows summing to 1."
            )
        return {"emissionprob": emissionprob}

    def _emission_params(self) -> Params:
        return {"emissionprob": self.emissionprob_}

    def _set_emission_params(self, params: Params) -> None:
        self.emissionprob_ = params["emissionprob"]

    def _emission_scalars(self) -> int:
        k, m = self.emissionprob_.shape
        return int(k * (m - 1))

    def _sample_emissions(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cdf = np.cumsum(self.emissionprob_, axis=1)[states]
        draws = rng.random(states.shape)[..., None]
        return np.minimum((draws >= cdf).sum(axis=-1), cdf.shape[-1] - 1)
