"""The HMM with Gaussian-mixture emissions: :class:`GMMHMM`.

Adds its emission parameters (hyperparameters, initialisation, sampling) to
:class:`~dem.models.hmm.base.BaseHMM`; the maths is in :mod:`dem.models.hmm.gmm`.
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Real
from typing import Any, ClassVar

import numpy as np
from sklearn.utils._param_validation import StrOptions

from dem.accelerate import DEFAULT_ALPHA
from dem.data import Samples
from dem.estimator import NonNegativeArray, RandomState, counts, reals
from dem.model import Params
from dem.models import gaussian
from dem.models.hmm.base import BaseHMM
from dem.models.hmm.gmm import GMMHMMModel, covars_shape, precision_cholesky
from dem.models.hmm.kernels import COVARIANCE_TYPES
from dem.models.hmm.model import HMMModel
from dem.models.mixture.init import kmeans_labels


def initial_mixture_means(
    observations: np.ndarray,
    n_components: int,
    n_mix: int,
    covariance: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """hmmlearn's scheme: k-means into ``n_components`` clusters, then k-means of each
    into ``n_mix``; a cluster with fewer than ``n_mix`` points gets means drawn around
    the centroid of the clusters' centres with the data ``covariance``."""
    labels = kmeans_labels(observations, n_components, rng)
    centres = np.array(
        [
            observations[labels == k].mean(axis=0)
            if np.any(labels == k)
            else observations[rng.integers(len(observations))]
            for k in range(n_components)
        ]
    )
    centroid = centres.mean(axis=0)
    means = np.empty((n_components, n_mix, observations.shape[1]))
    for k in range(n_components):
        members = observations[labels == k]
        if len(members) >= n_mix:
            inner = kmeans_labels(members, n_mix, rng)
            for j in range(n_mix):
                chosen = members[inner == j]
                means[k, j] = (
                    chosen.mean(axis=0) if len(chosen) else members[rng.integers(len(members))]
                )
        else:
            means[k] = rng.multivariate_normal(centroid, covariance, size=n_mix)
    return means


class GMMHMM(BaseHMM):
    """Hidden Markov model with Gaussian-mixture emissions, fitted by Baum–Welch over Dask
    chunks.

    Parameters follow :class:`hmmlearn.hmm.GMMHMM` in name, shape and meaning (its
    ``n_iter`` is ``max_iter`` here); from the same initial parameters every iteration
    matches hmmlearn's (its M-step included: the covariances are formed from the scatter
    about the previous iteration's means). The data are many sequences in one array of
    shape (n_sequences, n_times, n_features), with optional ``lengths`` for ragged ones,
    or one long sequence (n_times, n_features) chunked along time (see
    :mod:`dem.models.hmm.long`).

    Parameters
    ----------
    n_components : int, default=1
        Number of hidden states.
    n_mix : int, default=1
        Number of Gaussian components of each state's emission mixture.
    covariance_type : {"diag", "full", "tied", "spherical"}, default="diag"
        Form of the component covariances; "tied" is one full matrix per state, shared
        by its components (hmmlearn's meaning).
    min_covar : float, default=1e-3
        Added to the diagonal of the initial covariance (as in hmmlearn, only there).
    startprob_prior, transmat_prior : float or array-like, default=1.0
        Dirichlet prior parameters of ``startprob_`` and of each row of ``transmat_``.
    weights_prior : float or array-like, default=1.0
        Dirichlet prior parameters of each row of ``weights_``.
    means_prior, means_weight : float or array-like, default=0
        Mean and precision weight of the normal prior on ``means_``.
    covars_prior, covars_weight : float or array-like, optional
        hmmlearn's prior on the covariances: for "full" and "tied" the scale matrix and
        degrees of freedom of an inverse Wishart, for "diag" and "spherical" the shape
        (``covars_prior``) and scale (``covars_weight``) of an inverse gamma. By
        default hmmlearn's values for each covariance type.
    tol : float, default=1e-3
        Convergence threshold on the change of the mean per-observation log-likelihood.
    max_iter : int, default=100
        Maximum number of EM iterations per initialisation.
    n_init : int, default=1
        Number of initialisations; the best (highest lower bound) is kept.
    accelerate : {"none", "squarem", "alpha"}, default="none"
        ``"squarem"`` extrapolates between EM steps (see :mod:`dem.accelerate`).
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
    weights_init : array-like of shape (n_components, n_mix), optional
    means_init : array-like of shape (n_components, n_mix, n_features), optional
    covars_init : array-like, optional
        Initial parameters, shaped as the fitted attributes. By default the
        probabilities start uniform, the means as hmmlearn's (k-means of a random
        sample of at most ``init_sample_size`` sequences into states, then of each
        state's points into its components) and every covariance at the sample's
        covariance (plus ``min_covar``).
    random_state, checkpoint, resume, storage_options, \
checkpoint_storage_options, split_every, persist, init_sample_size, callback
        As for :class:`~dem.models.hmm.estimator.GaussianHMM`.
    sequence_dim, time_dim, feature_dim : str
        Dimension names of xarray input.

    Attributes
    ----------
    startprob_ : ndarray of shape (n_components,)
    transmat_ : ndarray of shape (n_components, n_components)
    weights_ : ndarray of shape (n_components, n_mix)
    means_ : ndarray of shape (n_components, n_mix, n_features)
    covars_ : ndarray
        (n_components, n_mix, n_features, n_features) for "full", (n_components,
        n_features, n_features) for "tied", (n_components, n_mix, n_features) for
        "diag", (n_components, n_mix) for "spherical".
    precisions_cholesky_ : ndarray
        Upper-triangular factors of the precisions, shaped as ``covars_``.
    converged_, n_iter_, lower_bound_, lower_bounds_, n_features_in_
        As for :class:`~dem.models.hmm.estimator.GaussianHMM`.

    See Also
    --------
    GaussianHMM : one Gaussian per state.
    """

    _ndim = 3
    _features_param = "means"

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **BaseHMM._parameter_constraints,
        "n_mix": counts(1),
        "covariance_type": [StrOptions(set(COVARIANCE_TYPES))],
        "min_covar": reals(0),
        "weights_prior": [NonNegativeArray()],
        "means_prior": ["array-like", Real],
        "means_weight": [NonNegativeArray()],
        "covars_prior": ["array-like", Real, None],
        "covars_weight": ["array-like", Real, None],
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "covars_init": ["array-like", None],
    }

    def __init__(
        self,
        n_components: int = 1,
        n_mix: int = 1,
        *,
        covariance_type: str = "diag",
        min_covar: float = 1e-3,
        startprob_prior: Any = 1.0,
        transmat_prior: Any = 1.0,
        weights_prior: Any = 1.0,
        means_prior: Any = 0.0,
        means_weight: Any = 0.0,
        covars_prior: Any = None,
        covars_weight: Any = None,
        tol: float = 1e-3,
        max_iter: int = 100,
        n_init: int = 1,
        accelerate: str = "none",
        alpha: float = DEFAULT_ALPHA,
        method: str = "batch",
        incremental_chunks: int = 1,
        startprob_init: Any = None,
        transmat_init: Any = None,
        weights_init: Any = None,
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
        self.n_mix = n_mix
        self.covariance_type = covariance_type
        self.min_covar = min_covar
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.weights_prior = weights_prior
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
        self.weights_init = weights_init
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

    def _model(self, n_features: int) -> GMMHMMModel:
        return GMMHMMModel(
            int(self.n_components),
            startprob_prior=self.startprob_prior,
            transmat_prior=self.transmat_prior,
            n_mix=int(self.n_mix),
            covariance_type=self.covariance_type,
            weights_prior=self.weights_prior,
            means_prior=self.means_prior,
            means_weight=self.means_weight,
            covars_prior=self.covars_prior,
            covars_weight=self.covars_weight,
        )

    def _n_features(self, inputs: dict[str, Samples]) -> int:
        return int(inputs["X"].array.shape[-1])

    def _checked_emission_inits(
        self, n_features: int
    ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        k, m, ctype = int(self.n_components), int(self.n_mix), self.covariance_type
        weights = means = covars = None
        if self.weights_init is not None:
            weights = np.array(self.weights_init, dtype=np.float64)
            if weights.shape != (k, m):
                raise ValueError(f"weights_init must have shape {(k, m)}, got {weights.shape}.")
            if (
                not np.all(np.isfinite(weights))
                or np.any(weights < 0)
                or not np.allclose(weights.sum(axis=1), 1.0)
            ):
                raise ValueError(
                    "weights_init must hold probabilities: non-negative rows summing to 1."
                )
        if self.means_init is not None:
            means = np.array(self.means_init, dtype=np.float64)
            if means.shape != (k, m, n_features):
                raise ValueError(
                    f"means_init must have shape {(k, m, n_features)}, got {means.shape}."
                )
            if not np.all(np.isfinite(means)):
                raise ValueError("means_init contains NaN or infinity.")
        if self.covars_init is not None:
            covars = np.array(self.covars_init, dtype=np.float64)
            shape = covars_shape(ctype, k, m, n_features)
            if covars.shape != shape:
                raise ValueError(
                    f"covars_init must have shape {shape} for covariance_type={ctype!r}, got "
                    f"{covars.shape}."
                )
            if ctype in ("full", "tied") and not np.allclose(covars, np.swapaxes(covars, -1, -2)):
                raise ValueError("covars_init must be symmetric.")
            try:
                precision_cholesky(covars, ctype)
            except ValueError as exc:
                raise ValueError(
                    "covars_init must be positive (diag, spherical) or symmetric positive "
                    "definite (full, tied)."
                ) from exc
        return weights, means, covars

    def _initial_emissions(
        self, model: HMMModel, n_features: int, inputs: dict[str, Samples], rng: np.random.Generator
    ) -> Params:
        k, m, ctype = int(self.n_components), int(self.n_mix), self.covariance_type
        weights, means, covars = self._checked_emission_inits(n_features)
        if means is None or covars is None:
            sequences, valid = self._sampled_observations(inputs, rng)
            observations = sequences[valid].astype(np.float64)
            # NaN or infinity inside a sequence are left to the first pass, which says where
            observations = observations[np.isfinite(observations).all(axis=1)]
            if len(observations) < k * m:
                raise ValueError(
                    f"The initialisation sample holds {len(observations)} finite observations, "
                    f"fewer than n_components × n_mix = {k * m} (one per component). Use fewer "
                    "states or components, more data, or a larger init_sample_size."
                )
            covariance = (
                np.atleast_2d(np.cov(observations.T))
                if len(observations) > 1
                else np.zeros((n_features, n_features))
            ) + float(self.min_covar) * np.eye(n_features)
            if means is None:
                means = initial_mixture_means(observations, k, m, covariance, rng)
            if covars is None:
                covars = {
                    "full": lambda: np.tile(covariance, (k, m, 1, 1)),
                    "tied": lambda: np.tile(covariance, (k, 1, 1)),
                    "diag": lambda: np.tile(np.diag(covariance), (k, m, 1)),
                    "spherical": lambda: np.full((k, m), np.diag(covariance).mean()),
                }[ctype]()
        if weights is None:
            weights = np.full((k, m), 1.0 / m)
        return {
            "weights": weights,
            "means": means,
            "covars": covars,
            "precisions_cholesky": precision_cholesky(covars, ctype),
        }

    def _emission_params(self) -> Params:
        return {
            "weights": self.weights_,
            "means": self.means_,
            "covars": self.covars_,
            "precisions_cholesky": self.precisions_cholesky_,
        }

    def _set_emission_params(self, params: Params) -> None:
        self.weights_ = params["weights"]
        self.means_ = params["means"]
        self.covars_ = params["covars"]
        self.precisions_cholesky_ = params["precisions_cholesky"]

    def _emission_scalars(self) -> int:
        k, m, d = self.means_.shape
        ctype = self.covariance_type
        if ctype == "tied":
            covariances = gaussian.n_covariance_parameters("full", k, d)
        else:
            covariances = gaussian.n_covariance_parameters(ctype, k * m, d)
        return int(k * (m - 1) + k * m * d + covariances)

    def _sample_emissions(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _, m, d = self.means_.shape
        cdf = np.cumsum(self.weights_, axis=1)[states]
        mix = np.minimum((rng.random(states.shape)[..., None] >= cdf).sum(axis=-1), m - 1)
        noise = rng.standard_normal((*states.shape, d))
        means = self.means_[states, mix]
        ctype = self.covariance_type
        if ctype == "full":
            factors = np.linalg.cholesky(self.covars_)[states, mix]
            return means + np.einsum("...ij,...j->...i", factors, noise)
        if ctype == "tied":
            factors = np.linalg.cholesky(self.covars_)[states]
            return means + np.einsum("...ij,...j->...i", factors, noise)
        if ctype == "diag":
            return means + noise * np.sqrt(self.covars_[states, mix])
        return means + noise * np.sqrt(self.covars_[states, mix])[..., None]
