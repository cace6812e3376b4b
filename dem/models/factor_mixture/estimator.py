"""The user API of the mixture of factor analyzers: :class:`MixtureOfFactorAnalyzers`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from scipy.special import logsumexp
from sklearn.base import (
    ClassNamePrefixFeaturesOutMixin,
    DensityMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils import Tags
from sklearn.utils._param_validation import StrOptions

from dem.accelerate import DEFAULT_ALPHA
from dem.display import HTMLRepr
from dem.estimator import (
    EMEstimator,
    NotFittedError,
    RandomState,
    counts,
    reals,
)
from dem.model import Params
from dem.models.factor_mixture.init import (
    INIT_METHODS,
    initial_params,
    kmeans_parallel_params,
    resolve_init,
)
from dem.models.factor_mixture.model import NOISE_TYPES, FactorMixtureModel
from dem.weights import init_sample, with_weights


class MixtureOfFactorAnalyzers(
    HTMLRepr, ClassNamePrefixFeaturesOutMixin, TransformerMixin, DensityMixin, EMEstimator
):
    """Mixture of factor analyzers (Ghahramani & Hinton 1996) fitted by EM over Dask chunks;
    with ``noise="isotropic"``, mixture of probabilistic PCA (Tipping & Bishop 1999).

    Component ``k`` (weight ``w_k``) draws ``x = W_k z + μ_k + ε`` with factors
    ``z ~ N(0, I_q)`` and noise ``ε ~ N(0, Ψ_k)``, ``Ψ_k`` diagonal (one variance per
    feature) or ``σ_k² I``: a Gaussian mixture whose covariances ``W_k W_kᵀ + Ψ_k`` have
    ``d·q + d`` parameters instead of ``d(d+1)/2``. Every density uses the Woodbury
    identity, so an iteration costs O(n_samples · K · d · q), never O(K · d²) per row.
    NaN entries are missing values: the fit maximises the likelihood of the observed
    entries exactly (see :mod:`dem.models.factor_mixture`).

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components.
    n_factors : int, default=2
        Number of factors (latent dimensions) of each component, below the number of
        features.
    noise : {"per_feature", "isotropic"}, default="per_feature"
        ``"per_feature"``: each component has one noise variance per feature (factor
        analyzers); ``"isotropic"``: one per component (probabilistic PCA).
    tol : float, default=1e-4
        Convergence threshold on the change of the mean per-sample log-likelihood.
    reg_noise : float, default=1e-6
        Floor of every noise variance, as a fraction of the mean variance of the
        features (so the floor follows the scale of the data). It keeps the likelihood
        bounded where a component collapses onto a few rows.
    max_iter : int, default=200
        Maximum number of EM iterations per initialisation.
    n_init : int, default=1
        Number of initialisations; the best (highest log-likelihood) is kept. They run
        in lockstep: each pass over the data serves every initialisation.
    init_params : {"auto", "kmeans", "k-means||", "random_from_data"}, default="auto"
        How rows are clustered before each cluster gets its closed-form PPCA start:
        ``"k-means||"`` runs distributed k-means‖ over all the data (6 passes; complete
        data only), ``"kmeans"`` k-means on a random sample of at most
        ``init_sample_size`` rows, ``"random_from_data"`` assigns the sample's rows to the
        nearest of K random rows. ``"auto"`` is ``"k-means||"`` when the data have more
        rows than ``init_sample_size`` (``"kmeans"`` when they hold NaN), else
        ``"kmeans"``.
    random_state : int, numpy.random.RandomState or numpy.random.Generator, optional
        Seeds the initialisation.
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
        Keep the data in cluster memory between iterations (by default when they take at
        most half the cluster's memory).
    init_sample_size : int, default=100_000
        Rows drawn for the initialisation.
    accelerate : {"none", "squarem", "alpha"}, default="none"
        ``"squarem"`` extrapolates between EM steps (weights, means, loadings and log
        noise variances as one vector).
    alpha : float in [-1, 1), default=0.9
        α of ``accelerate="alpha"`` (α-EM, Matsuyama 2003: a momentum step from the last
        two EM steps, weighted ``(1 + alpha) / 2``; see :func:`dem.accelerate.alpha_em`):
        -1 is plain EM, larger values take larger steps. Ignored by the other methods.
    callback : callable, optional
        Called after every iteration with a :class:`dem.engine.IterationInfo`.
    sample_dim, feature_dim : str
        Dimension names of xarray input.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    components_ : ndarray of shape (n_components, n_factors, n_features)
        Each component's loading matrix ``W_kᵀ`` in canonical rotation: rows orthogonal,
        sorted by decreasing norm, the largest entry of each positive.
    noise_variance_ : ndarray of shape (n_components, n_features) or (n_components,)
        ``Ψ_k``'s diagonal, or ``σ_k²`` for isotropic noise.
    covariances_ : ndarray of shape (n_components, n_features, n_features)
        ``W_k W_kᵀ + Ψ_k`` (computed on access; d × d per component).
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean per-sample log-likelihood at the start of the last iteration.
    lower_bounds_ : list of float
        ``lower_bound_`` of every iteration of the best initialisation.
    n_features_in_ : int

    Notes
    -----
    ``transform`` gives the posterior mean of the factors under the most probable
    component of each row (in that component's canonical rotation), not a mixture of
    the components' posteriors (their factors are different coordinates).
    ``transform_all`` gives those of every component. Rows with no observed value are
    left out of the fit; they score 0 and are given the weights as probabilities.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **EMEstimator._parameter_constraints,
        "n_components": counts(1),
        "n_factors": counts(1),
        "noise": [StrOptions(set(NOISE_TYPES))],
        "reg_noise": reals(0),
        "init_params": [StrOptions(set(INIT_METHODS))],
        "init_sample_size": counts(2),
    }

    def __init__(
        self,
        n_components: int = 1,
        n_factors: int = 2,
        *,
        noise: str = "per_feature",
        tol: float = 1e-4,
        reg_noise: float = 1e-6,
        max_iter: int = 200,
        n_init: int = 1,
        init_params: str = "auto",
        random_state: RandomState = None,
        checkpoint: Any = None,
        resume: bool = False,
        storage_options: dict[str, Any] | None = None,
        checkpoint_storage_options: dict[str, Any] | None = None,
        split_every: int = 8,
        persist: bool | None = None,
        init_sample_size: int = 100_000,
        accelerate: str = "none",
        alpha: float = DEFAULT_ALPHA,
        callback: Callable[[Any], Any] | None = None,
        sample_dim: str = "sample",
        feature_dim: str = "feature",
    ) -> None:
        self.n_components = n_components
        self.n_factors = n_factors
        self.noise = noise
        self.tol = tol
        self.reg_noise = reg_noise
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state
        self.checkpoint = checkpoint
        self.resume = resume
        self.storage_options = storage_options
        self.checkpoint_storage_options = checkpoint_storage_options
        self.split_every = split_every
        self.persist = persist
        self.init_sample_size = init_sample_size
        self.accelerate = accelerate
        self.alpha = alpha
        self.callback = callback
        self.sample_dim = sample_dim
        self.feature_dim = feature_dim

    # --- fitting ----------------------------------------------------------------------

    def _model(self) -> FactorMixtureModel:
        return FactorMixtureModel(
            int(self.n_components), int(self.n_factors), self.noise, float(self.reg_noise)
        )

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(
        self, X: Any, y: Any = None, *, variable: str | None = None, sample_weight: Any = None
    ) -> Any:
        """Fit the mixture by EM; NaN entries of ``X`` are treated as missing.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), dask array, xarray.DataArray, or path
            The data; a Zarr store path needs ``variable``.
        y : ignored
        variable : str, optional
            Name of the array in a Zarr store (or xarray Dataset).
        sample_weight : array-like of shape (n_samples,), dask array, or str, optional
            Non-negative finite weight of each sample (a string: a variable of the same
            store). EM maximises the weighted log-likelihood: integer weights fit as if
            each row were repeated that many times, weight 0 as if it were absent; the
            initial sample is drawn in proportion to the weights. A checkpoint resumes
            only with the same weights.

        Returns
        -------
        self
        """
        model = self._model()
        samples, weights = self._weighted_samples(X, variable, sample_weight)
        n_samples, n_features = (int(s) for s in samples.array.shape)
        if model.n_factors >= n_features:
            raise ValueError(
                f"n_factors={model.n_factors} must be smaller than n_features={n_features}: "
                "with as many factors as features there is no noise left to model. Use "
                "fewer factors."
            )
        if n_samples < model.n_components:
            raise ValueError(
                f"Expected n_samples >= n_components, got n_samples={n_samples} and "
                f"n_components={model.n_components}. Use fewer components or more data."
            )
        if n_samples < 2:
            raise ValueError(
                f"Got n_samples={n_samples}: at least 2 samples are needed to estimate a "
                "variance. Use more data."
            )
        method = resolve_init(self.init_params, n_samples, int(self.init_sample_size))
        if method == "k-means||":  # passes before EM: persist now if at all
            samples, weights = self._persisted(samples, weights)

        def make_init(rng: np.random.Generator) -> Params:
            if method == "k-means||":
                try:
                    return kmeans_parallel_params(
                        model,
                        samples.array,
                        rng,
                        split_every=int(self.split_every),
                        weights=None if weights is None else weights.array,
                    )
                except ValueError:
                    if self.init_params != "auto":
                        raise
                    # NaN (missing values) somewhere: k-means on a sample instead
            sample = init_sample(samples.array, weights, int(self.init_sample_size), rng)
            return initial_params(model, sample, rng, "kmeans" if method == "k-means||" else method)

        self._set_features(X, variable, n_features)
        self._fit_restarts(model, with_weights({"X": samples}, weights), make_init)
        return self

    def _set_params(self, params: Params) -> None:
        """Fitted attributes, the loadings in canonical rotation."""
        loadings = np.asarray(params["loadings"], dtype=np.float64)
        components = np.empty(loadings.transpose(0, 2, 1).shape)
        for k, matrix in enumerate(loadings):
            left, singular, _ = np.linalg.svd(matrix, full_matrices=False)
            largest = np.argmax(np.abs(left), axis=0)
            signs = np.where(left[largest, np.arange(left.shape[1])] < 0, -1.0, 1.0)
            components[k] = (left * (signs * singular)).T
        self.weights_ = np.asarray(params["weights"], dtype=np.float64).copy()
        self.means_ = np.asarray(params["means"], dtype=np.float64).copy()
        self.components_: np.ndarray = components
        self.noise_variance_: np.ndarray = np.asarray(
            params["noise_variance"], dtype=np.float64
        ).copy()

    def _params(self) -> Params:
        if not hasattr(self, "components_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit first.")
        return {
            "weights": self.weights_,
            "means": self.means_,
            "loadings": self.components_.transpose(0, 2, 1),
            "noise_variance": self.noise_variance_,
            "shift": self.weights_ @ self.means_,
        }

    @property
    def covariances_(self) -> np.ndarray:
        """``W_k W_kᵀ + Ψ_k`` of every component, (n_components, n_features, n_features)."""
        params = self._params()
        loadings = params["loadings"]
        noise = np.broadcast_to(self.noise_variance_.reshape(len(loadings), -1), loadings.shape[:2])
        covariances = np.matmul(loadings, loadings.transpose(0, 2, 1))
        diagonal = np.arange(loadings.shape[1])
        covariances[:, diagonal, diagonal] += noise
        return covariances

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # NaN entries are missing values
        return tags

    @property
    def _n_features_out(self) -> int:
        """Columns of :meth:`transform` (``get_feature_names_out`` names them)."""
        return int(self.components_.shape[1])

    # --- per-sample results (lazy for lazy input) ----------------------------------------

    def _per_sample(
        self,
        X: Any,
        variable: str | None,
        function: Callable[[np.ndarray, np.ndarray], np.ndarray],
        columns: int | None,
        dtype: Any = np.float64,
    ) -> Any:
        return self._fitted_per_sample(
            X,
            variable,
            lambda model, x, p: function(*model.posterior(x, p)),
            columns=columns,
            dtype=dtype,
            missing_ok=True,
        )

    def score_samples(self, X: Any, *, variable: str | None = None) -> Any:
        """Log-likelihood of each sample's observed values, shape (n_samples,)."""
        return self._per_sample(X, variable, lambda w, z: logsumexp(w, axis=1), None)

    def predict_proba(self, X: Any, *, variable: str | None = None) -> Any:
        """Responsibilities of each component for each sample, shape (n_samples, n_components)."""
        return self._per_sample(
            X, variable, lambda w, z: np.exp(w - logsumexp(w, axis=1)[:, None]), self.n_components
        )

    def predict(self, X: Any, *, variable: str | None = None) -> Any:
        """Most probable component of each sample, shape (n_samples,)."""
        return self._per_sample(
            X, variable, lambda w, z: np.argmax(w, axis=1), None, dtype=np.int64
        )

    def fit_predict(self, X: Any, y: Any = None, *, variable: str | None = None) -> Any:
        """Fit, then label the same data with the fitted parameters."""
        return self.fit(X, variable=variable).predict(X, variable=variable)

    def transform(self, X: Any, *, variable: str | None = None) -> Any:
        """Posterior mean of the factors under each sample's most probable component,
        ``E[z | x, k̂]``, shape (n_samples, n_factors); 0 for a row with nothing observed.

        The factors are in the coordinates of ``components_[k̂]``: compare rows of the
        same component (``predict``), or use :meth:`transform_all`.
        """

        def responsible(w: np.ndarray, z: np.ndarray) -> np.ndarray:
            return z[np.arange(len(z)), np.argmax(w, axis=1)]

        return self._per_sample(X, variable, responsible, self.components_.shape[1])

    def transform_all(self, X: Any, *, variable: str | None = None) -> Any:
        """Posterior means of the factors under every component, ``E[z | x, k]``, shape
        (n_samples, n_components · n_factors): component ``k``'s in columns
        ``k·q`` to ``(k+1)·q − 1``."""
        q = self.components_.shape[1]
        return self._per_sample(
            X, variable, lambda w, z: z.reshape(len(z), -1), self.n_components * q
        )

    def score(
        self,
        X: Any,
        y: Any = None,
        *,
        variable: str | None = None,
        sample_weight: Any = None,
    ) -> float:
        """Mean per-sample log-likelihood (one pass over the data); with ``sample_weight``
        (as for :meth:`fit`), the weighted mean Σ w_i log p(x_i) / Σ w_i."""
        total, n = self._loglik(X, variable, sample_weight)
        return total / n

    def _loglik(self, X: Any, variable: str | None, sample_weight: Any) -> tuple[float, float]:
        """The (weighted) total log-likelihood and (weighted) number of samples."""
        return self._fitted_loglik(
            X,
            variable,
            sample_weight,
            lambda model, x, p: logsumexp(model.posterior(x, p)[0], axis=1),
        )

    def _n_parameters(self) -> int:
        """Weights, means, loadings (less the q(q−1)/2 of their rotation) and noise."""
        k, q, d = self.components_.shape
        noise = k * d if self.noise_variance_.ndim == 2 else k
        return int(k - 1 + k * d + k * (d * q - q * (q - 1) // 2) + noise)

    def bic(self, X: Any, *, variable: str | None = None, sample_weight: Any = None) -> float:
        """Bayesian information criterion (lower is better): -2 log L + p log n; with
        ``sample_weight``, log L weighted and n the sum of the weights."""
        total, n = self._loglik(X, variable, sample_weight)
        return -2 * total + self._n_parameters() * np.log(n)

    def aic(self, X: Any, *, variable: str | None = None, sample_weight: Any = None) -> float:
        """Akaike information criterion (lower is better): -2 log L + 2 p; with
        ``sample_weight``, log L weighted."""
        total, _ = self._loglik(X, variable, sample_weight)
        return -2 * total + 2 * self._n_parameters()

    def sample(
        self, n_samples: int = 1, *, random_state: RandomState = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n_samples`` points from the fitted mixture; returns (X, component labels)."""
        rng = self._sampling_rng(n_samples, random_state)
        params = self._params()
        draws = rng.multinomial(n_samples, params["weights"])
        k, d, q = params["loadings"].shape
        noise = np.broadcast_to(self.noise_variance_.reshape(k, -1), (k, d))
        parts = [
            self.means_[c]
            + rng.standard_normal((count, q)) @ params["loadings"][c].T
            + rng.standard_normal((count, d)) * np.sqrt(noise[c])
            for c, count in enumerate(draws)
        ]
        return np.vstack(parts), np.repeat(np.arange(k), draws)
