"""The user API of PPCA and factor analysis: scikit-learn estimators on the EM engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin, _fit_context
from sklearn.utils import Tags
from sklearn.utils._param_validation import StrOptions

from dem.accelerate import DEFAULT_ALPHA
from dem.data import as_samples
from dem.display import HTMLRepr
from dem.estimator import (
    EMEstimator,
    NotFittedError,
    RandomState,
    counts,
    per_sample,
)
from dem.model import Params
from dem.models.ppca.init import INIT_METHODS, initial_params
from dem.models.ppca.kernels import Terms
from dem.models.ppca.model import LinearGaussianModel
from dem.weights import init_sample, with_weights


class _LinearGaussian(HTMLRepr, ClassNamePrefixFeaturesOutMixin, TransformerMixin, EMEstimator):
    """What PPCA and FactorAnalysis share; they differ only in ``_noise``."""

    _noise: ClassVar[str]

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **EMEstimator._parameter_constraints,
        "n_components": counts(1),
        "init_params": [StrOptions(set(INIT_METHODS))],
        "init_sample_size": counts(2),
        "method": [StrOptions({"batch", "incremental"})],
    }

    def __init__(
        self,
        n_components: int = 2,
        *,
        tol: float = 1e-4,
        max_iter: int = 200,
        n_init: int = 1,
        init_params: str = "pca",
        random_state: RandomState = None,
        checkpoint: Any = None,
        resume: bool = False,
        storage_options: dict[str, Any] | None = None,
        checkpoint_storage_options: dict[str, Any] | None = None,
        split_every: int = 8,
        persist: bool | None = None,
        init_sample_size: int = 20_000,
        accelerate: str = "none",
        alpha: float = DEFAULT_ALPHA,
        method: str = "batch",
        incremental_chunks: int = 1,
        callback: Callable[[Any], Any] | None = None,
        sample_dim: str = "sample",
        feature_dim: str = "feature",
    ) -> None:
        self.n_components = n_components
        self.tol = tol
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
        self.method = method
        self.incremental_chunks = incremental_chunks
        self.callback = callback
        self.sample_dim = sample_dim
        self.feature_dim = feature_dim

    # --- fitting ----------------------------------------------------------------------

    def _model(self) -> LinearGaussianModel:
        return LinearGaussianModel(int(self.n_components), self._noise)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(
        self, X: Any, y: Any = None, *, variable: str | None = None, sample_weight: Any = None
    ) -> Any:
        """Fit the model by EM; NaN entries of ``X`` are treated as missing.

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
        n_samples, n_features = samples.array.shape
        if model.n_components >= n_features:
            raise ValueError(
                f"n_components={model.n_components} must be smaller than n_features="
                f"{n_features}: with as many components as features there is no noise "
                "left to model. Use fewer components."
            )
        if n_samples <= model.n_components:
            raise ValueError(
                f"Expected n_samples > n_components, got n_samples={n_samples} and "
                f"n_components={model.n_components}. Use fewer components or more data."
            )

        def make_init(rng: np.random.Generator) -> Params:
            sample = init_sample(samples.array, weights, int(self.init_sample_size), rng)
            return initial_params(model, sample, rng, self.init_params)

        self._set_features(X, variable, n_features)
        self._fit_restarts(model, with_weights({"X": samples}, weights), make_init)
        return self

    def _set_params(self, params: Params) -> None:
        """Fitted attributes in the canonical rotation of the loadings."""
        left, singular, _ = np.linalg.svd(params["loadings"], full_matrices=False)
        largest = np.argmax(np.abs(left), axis=0)
        signs = np.where(left[largest, np.arange(left.shape[1])] < 0, -1.0, 1.0)
        left = left * signs
        noise = np.asarray(params["noise_variance"], dtype=np.float64)
        per_feature = np.broadcast_to(noise, (self.n_features_in_,))
        explained = singular**2 + np.square(left).T @ per_feature
        order = np.argsort(-explained, kind="stable")  # already sorted for PPCA
        self.components_ = np.ascontiguousarray(left[:, order].T)
        self.loadings_ = self.components_ * singular[order, None]
        self.mean_ = np.asarray(params["mean"], dtype=np.float64)
        self.noise_variance_: float | np.ndarray = float(noise) if noise.ndim == 0 else noise.copy()
        self.explained_variance_ = explained[order]
        self.explained_variance_ratio_ = self.explained_variance_ / (
            singular @ singular + per_feature.sum()
        )

    def _params(self) -> Params:
        if not hasattr(self, "components_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit first.")
        return {
            "loadings": self.loadings_.T,
            "mean": self.mean_,
            "noise_variance": np.asarray(self.noise_variance_, dtype=np.float64),
        }

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # NaN entries are missing values
        return tags

    @property
    def _n_features_out(self) -> int:
        """Columns of :meth:`transform` (``get_feature_names_out`` names them)."""
        return int(self.components_.shape[0])

    # --- per-sample results (lazy for lazy input) ----------------------------------------

    def transform(self, X: Any, *, variable: str | None = None) -> Any:
        """Posterior mean of the latent variables, ``E[z | observed x]``.

        Missing values (NaN) are marginalised; a row with nothing observed gets 0.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), dask array, xarray.DataArray, or path
        variable : str, optional

        Returns
        -------
        ndarray, dask array or xarray.DataArray of shape (n_samples, n_components)
            Lazy for dask, Zarr and xarray input (dims ``sample_dim`` and ``"component"``).
        """
        return self._fitted_per_sample(
            X,
            variable,
            lambda model, x, p: model.posterior(x, p)[0],
            columns=self.n_components,
            missing_ok=True,
        )

    def fit_transform(self, X: Any, y: Any = None, *, variable: str | None = None) -> Any:
        """Fit, then return the posterior means of the latents of the same data."""
        return self.fit(X, variable=variable).transform(X, variable=variable)

    def inverse_transform(self, Z: Any) -> Any:
        """Map latent values back to feature space: ``Z @ loadings_ + mean_``.

        Parameters
        ----------
        Z : array-like of shape (n_samples, n_components), dask array or xarray.DataArray
            Latent values (for example from :meth:`transform`); an xarray input has dims
            ``sample_dim`` and ``"component"``.

        Returns
        -------
        ndarray, dask array or xarray.DataArray of shape (n_samples, n_features)
        """
        params = self._params()
        latents = as_samples(Z, sample_dim=self.sample_dim, feature_dim="component", name="Z")
        if latents.array.shape[1] != self.n_components:
            raise ValueError(
                f"Z has {latents.array.shape[1]} columns; expected n_components="
                f"{self.n_components}."
            )
        loadings, mean = params["loadings"], params["mean"]
        return per_sample(
            latents,
            lambda z: z.astype(np.float64) @ loadings.T + mean,
            columns=self.n_features_in_,
            column_dim=self.feature_dim,
        )

    def score_samples(self, X: Any, *, variable: str | None = None) -> Any:
        """Log-likelihood of each sample's observed values (missing ones marginalised).

        Returns
        -------
        ndarray, dask array or xarray.DataArray of shape (n_samples,)
            0 for a row with nothing observed.
        """
        return self._fitted_per_sample(
            X, variable, lambda model, x, p: model.posterior(x, p)[1], columns=None, missing_ok=True
        )

    def score(
        self,
        X: Any,
        y: Any = None,
        *,
        variable: str | None = None,
        sample_weight: Any = None,
    ) -> float:
        """Mean log-likelihood over the rows with at least one observed value (one pass);
        with ``sample_weight`` (as for :meth:`fit`), the weighted mean over those rows."""
        total, n = self._fitted_loglik(
            X,
            variable,
            sample_weight,
            lambda model, x, p: model.posterior(x, p)[1],
            check=False,  # the posterior refuses infinity; NaN are missing values
            observed_only=True,
        )
        return total / n

    def impute(self, X: Any, *, variable: str | None = None) -> Any:
        """Fill each missing entry with its conditional expectation given the row's
        observed entries, ``E[x_missing | x_observed] = μ_m + W_m E[z | x_observed]``.

        Returns
        -------
        ndarray, dask array or xarray.DataArray of shape (n_samples, n_features)
            Observed entries unchanged; the input's float dtype.
        """
        params = self._params()
        samples = self._checked_samples(X, variable)
        model = self._model()
        loadings, mean = params["loadings"], params["mean"]

        def fill(x: np.ndarray) -> np.ndarray:
            filled = np.array(x, copy=True)
            missing = np.isnan(filled)
            rows = np.flatnonzero(missing.any(axis=1))
            if rows.size:
                ez, _ = model.posterior(filled[rows], params)
                expected = ez @ loadings.T + mean
                filled[rows] = np.where(missing[rows], expected, filled[rows])
            return filled

        return per_sample(
            samples,
            fill,
            columns=self.n_features_in_,
            dtype=samples.array.dtype,
            column_dim=self.feature_dim,
            missing_ok=True,
        )

    def sample(self, n_samples: int = 1, *, random_state: RandomState = None) -> np.ndarray:
        """Draw ``n_samples`` rows from the fitted model, shape (n_samples, n_features)."""
        rng = self._sampling_rng(n_samples, random_state)
        params = self._params()
        latents = rng.standard_normal((n_samples, self.n_components))
        noise = rng.standard_normal((n_samples, self.n_features_in_)) * np.sqrt(
            params["noise_variance"]
        )
        return latents @ params["loadings"].T + params["mean"] + noise

    def get_covariance(self) -> np.ndarray:
        """The model covariance ``W Wᵀ + Ψ``, shape (n_features, n_features)."""
        params = self._params()
        noise = np.broadcast_to(params["noise_variance"], (self.n_features_in_,))
        return params["loadings"] @ params["loadings"].T + np.diag(noise)

    def get_precision(self) -> np.ndarray:
        """Inverse of :meth:`get_covariance`, by the Woodbury identity (no d × d solve)."""
        terms = Terms.of(self._params())
        return (
            np.diag(terms.inv_noise)
            - terms.weighted @ terms.shared_precision_inv @ terms.weighted.T
        )


class PPCA(_LinearGaussian):
    """Probabilistic PCA (Tipping & Bishop 1999) fitted by EM over Dask chunks.

    The model is ``x = W z + μ + ε`` with ``z ~ N(0, I)`` and isotropic noise
    ``ε ~ N(0, σ² I)``; at the maximum of the likelihood the columns of ``W`` span the
    leading principal subspace. NaN entries are missing values: the fit maximises the
    likelihood of the observed entries exactly (mean, loadings and noise jointly).
    An iteration over complete data costs O(n_samples · n_features · n_components).

    Parameters
    ----------
    n_components : int, default=2
        Number of latent dimensions, smaller than the number of features.
    tol : float, default=1e-4
        Convergence threshold on the change of the mean per-sample log-likelihood.
    max_iter : int, default=200
        Maximum number of EM iterations per initialisation.
    n_init : int, default=1
        Number of initialisations; the best (highest log-likelihood) is kept.
    init_params : {"pca", "random"}, default="pca"
        ``"pca"`` starts from the closed-form solution for the covariance of a random
        sample of at most ``init_sample_size`` rows (with missing values, the
        available-case covariance: each entry from the rows where both features are
        observed);
        ``"random"`` from random loadings.
    random_state : int, numpy.random.RandomState or numpy.random.Generator, optional
        Seeds the initialisation (a ``RandomState`` gives four 32-bit words of seed:
        the same state, the same fit).
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
        Keep the data in cluster memory between iterations. By default, data taking
        at most half the cluster's memory are persisted; larger data are re-read from
        their store every iteration.
    init_sample_size : int, default=20_000
        Rows drawn for the initialisation.
    accelerate : {"none", "squarem", "alpha"}, default="none"
        ``"squarem"`` extrapolates between EM steps (Varadhan & Roland 2008; loadings,
        mean and log noise variances as one vector), reaching the same maximum in fewer
        passes where EM crawls (close eigenvalues); ``max_iter`` then counts passes and
        ``lower_bounds_`` has one entry per cycle.
    alpha : float in [-1, 1), default=0.9
        α of ``accelerate="alpha"`` (α-EM, Matsuyama 2003: a momentum step from the last
        two EM steps, weighted ``(1 + alpha) / 2``; see :func:`dem.accelerate.alpha_em`):
        -1 is plain EM, larger values take larger steps. Ignored by the other methods.
    method : {"batch", "incremental"}, default="batch"
        ``"incremental"`` is Neal & Hinton's incremental EM (see :mod:`dem.incremental`):
        an M-step after every ``incremental_chunks`` chunks, each group's statistics
        (taken about a mean fixed for the fit) replaced in the cached total; ``max_iter``
        and ``n_iter_`` count passes. Takes ``accelerate="none"``.
    incremental_chunks : int, default=1
        Chunks per group of ``method="incremental"``.
    callback : callable, optional
        Called after every iteration with a :class:`dem.engine.IterationInfo`.
    sample_dim, feature_dim : str
        Dimension names of xarray input.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Orthonormal principal axes, sorted by decreasing explained variance; the sign
        of each makes its largest entry positive.
    explained_variance_ : ndarray of shape (n_components,)
        Variance of the fitted model along each component (``s_k² + σ²``, the
        eigenvalues of the 1/N sample covariance at the maximum likelihood).
    explained_variance_ratio_ : ndarray of shape (n_components,)
        ``explained_variance_`` over the model's total variance.
    loadings_ : ndarray of shape (n_components, n_features)
        The loading matrix ``Wᵀ`` in canonical rotation: ``components_`` scaled by
        the singular values of ``W``.
    noise_variance_ : float
        σ².
    mean_ : ndarray of shape (n_features,)
    n_iter_ : int
    converged_ : bool
    lower_bound_ : float
        Mean per-sample log-likelihood at the start of the last iteration.
    lower_bounds_ : list of float
        ``lower_bound_`` of every iteration of the best initialisation.
    n_features_in_ : int

    See Also
    --------
    FactorAnalysis : the same model with one noise variance per feature.

    Notes
    -----
    Rows with no observed value are left out of the fit; ``transform`` maps them to 0,
    ``impute`` to ``mean_`` and ``score_samples`` to 0. A feature with no observed
    value is an error. See :mod:`dem.models.ppca` for the algorithm.
    """

    _noise: ClassVar[str] = "isotropic"


class FactorAnalysis(_LinearGaussian):
    """Factor analysis fitted by EM over Dask chunks, with missing values.

    The model is ``x = W z + μ + ε`` with ``z ~ N(0, I)`` and diagonal noise
    ``ε ~ N(0, diag(ψ))`` (one variance per feature). NaN entries are missing values:
    the fit maximises the likelihood of the observed entries exactly (mean, loadings
    and noise jointly). An iteration over complete data costs
    O(n_samples · n_features · n_components).

    Parameters
    ----------
    n_components : int, default=2
        Number of factors, smaller than the number of features.
    tol : float, default=1e-4
        Convergence threshold on the change of the mean per-sample log-likelihood.
    max_iter : int, default=200
        Maximum number of EM iterations per initialisation.
    n_init : int, default=1
        Number of initialisations; the best (highest log-likelihood) is kept.
    init_params : {"pca", "random"}, default="pca"
        ``"pca"`` starts from the probabilistic PCA closed-form solution for the
        covariance of a random sample of at most ``init_sample_size`` rows (its σ² on
        every feature; with missing values, the available-case covariance, as for
        :class:`PPCA`);
        ``"random"`` from random loadings.
    random_state : int, numpy.random.RandomState or numpy.random.Generator, optional
        Seeds the initialisation (a ``RandomState`` gives four 32-bit words of seed:
        the same state, the same fit).
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
        Keep the data in cluster memory between iterations (see :class:`PPCA`).
    init_sample_size : int, default=20_000
        Rows drawn for the initialisation.
    accelerate : {"none", "squarem", "alpha"}, default="none"
        ``"squarem"`` extrapolates between EM steps (Varadhan & Roland 2008; loadings,
        mean and log noise variances as one vector), reaching the same maximum in fewer
        passes where EM crawls (close eigenvalues); ``max_iter`` then counts passes and
        ``lower_bounds_`` has one entry per cycle.
    alpha : float in [-1, 1), default=0.9
        α of ``accelerate="alpha"`` (α-EM, Matsuyama 2003: a momentum step from the last
        two EM steps, weighted ``(1 + alpha) / 2``; see :func:`dem.accelerate.alpha_em`):
        -1 is plain EM, larger values take larger steps. Ignored by the other methods.
    method : {"batch", "incremental"}, default="batch"
        ``"incremental"`` is Neal & Hinton's incremental EM (see :mod:`dem.incremental`):
        an M-step after every ``incremental_chunks`` chunks, each group's statistics
        (taken about a mean fixed for the fit) replaced in the cached total; ``max_iter``
        and ``n_iter_`` count passes. Takes ``accelerate="none"``.
    incremental_chunks : int, default=1
        Chunks per group of ``method="incremental"``.
    callback : callable, optional
        Called after every iteration with a :class:`dem.engine.IterationInfo`.
    sample_dim, feature_dim : str
        Dimension names of xarray input.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Orthonormal basis of the span of the loadings, sorted by the variance of the
        fitted model along each direction; the largest entry of each is positive.
    explained_variance_ : ndarray of shape (n_components,)
        Variance of the fitted model along each component, ``s_k² + u_kᵀ Ψ u_k``.
    explained_variance_ratio_ : ndarray of shape (n_components,)
        ``explained_variance_`` over the model's total variance.
    loadings_ : ndarray of shape (n_components, n_features)
        The loading matrix ``Wᵀ`` (scikit-learn's ``FactorAnalysis.components_``) in
        canonical rotation: rows orthogonal, ``components_`` scaled by the singular
        values of ``W``.
    noise_variance_ : ndarray of shape (n_features,)
        ψ, one variance per feature.
    mean_ : ndarray of shape (n_features,)
    n_iter_ : int
    converged_ : bool
    lower_bound_ : float
        Mean per-sample log-likelihood at the start of the last iteration.
    lower_bounds_ : list of float
    n_features_in_ : int

    See Also
    --------
    PPCA : the same model with one noise variance shared by all features.

    Notes
    -----
    Missing values follow the rules of :class:`PPCA`. EM converges slowly where a
    uniqueness ψ_j is small next to its feature's variance (near a Heywood case); raise
    ``max_iter`` there.
    """

    _noise: ClassVar[str] = "diagonal"
