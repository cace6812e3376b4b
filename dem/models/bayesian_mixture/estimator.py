"""The user API of the variational Gaussian mixture: :class:`BayesianGaussianMixture`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import dask.array as da
import numpy as np
from scipy.special import logsumexp
from sklearn.base import _fit_context
from sklearn.utils._param_validation import StrOptions

from dem.display import HTMLRepr
from dem.estimator import (
    EMEstimator,
    NonNegativeArray,
    NotFittedError,
    RandomState,
    counts,
    reals,
)
from dem.model import Params
from dem.models import gaussian
from dem.models.bayesian_mixture import init, kernels
from dem.models.bayesian_mixture.model import BayesianMixtureModel
from dem.models.mixture.base import BaseMixture
from dem.models.mixture.init import INIT_METHODS, resolve_init
from dem.weights import init_sample, with_weights


class BayesianGaussianMixture(HTMLRepr, BaseMixture):
    """Variational Bayesian Gaussian mixture fitted over Dask chunks, with scikit-learn's
    interface (:class:`sklearn.mixture.BayesianGaussianMixture`).

    A Dirichlet-process (stick-breaking) or Dirichlet-distribution prior on the weights,
    a Gaussian prior on the means and a Wishart prior on the precisions; variational EM
    (Attias 2000; Bishop 2006, §10.2) maximises the evidence lower bound. Components the
    data do not need get weights near zero, so a generous ``n_components`` shrinks to
    the number of clusters. Each E-step is a map over chunks giving the Gaussian
    mixture's additive statistics; the variational M-step and the lower bound run on the
    client from them (no extra pass). From the same initial responsibilities
    (``resp_init``) every iteration equals scikit-learn's to round-off.

    Parameters
    ----------
    n_components : int, default=1
        Upper bound on the number of components.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
    tol : float, default=1e-3
        Convergence threshold on the change of the lower bound (scikit-learn's: the
        total over the samples, not a mean).
    reg_covar : float, default=1e-6
        Added to the diagonal of every component's sample covariance.
    max_iter : int, default=100
    n_init : int, default=1
        Initialisations (run in lockstep, one read of a chunk for all); the highest
        lower bound is kept.
    init_params : {"auto", "kmeans", "k-means||", "k-means++", "random", \
"random_from_data"}, default="auto"
        How the initial responsibilities are found (as :class:`dem.GaussianMixture`:
        on a row sample, their statistics scaled to the number of rows, or k-means‖
        over all the data; ``"auto"``: k-means‖ when the data exceed
        ``init_sample_size`` rows, else k-means). Ignored when ``resp_init`` is given.
    weight_concentration_prior_type : {"dirichlet_process", "dirichlet_distribution"}, \
default="dirichlet_process"
    weight_concentration_prior : float > 0, optional
        Dirichlet concentration (γ); default ``1 / n_components``.
    mean_precision_prior : float > 0, optional
        Precision prior of the means (β₀); default 1.
    mean_prior : array-like of shape (n_features,), optional
        Prior of the means (m₀); default the data mean (one pass over the data).
    degrees_of_freedom_prior : float > n_features - 1, optional
        Wishart degrees of freedom (ν₀); default ``n_features``.
    covariance_prior : float or array-like, optional
        Wishart covariance prior: (d, d) for full and tied, (d,) for diag, a number for
        spherical; default the data covariance (``np.cov(X.T)``; variances for diag,
        their mean for spherical), in the same pass as the mean.
    resp_init : array-like or dask array of shape (n_samples, n_components), optional
        Initial responsibilities of every row (dem's, not scikit-learn's): the fit starts
        from their variational M-step, as scikit-learn's ``_initialize`` does with the
        responsibilities its ``init_params`` draws. A dask array is rechunked along the
        data's sample chunks.
    random_state : int, numpy.random.RandomState or numpy.random.Generator, optional
    checkpoint, resume, storage_options, checkpoint_storage_options, split_every, persist, \
init_sample_size, callback, sample_dim, feature_dim
        As :class:`dem.GaussianMixture`. The checkpoint's trace holds the lower bound.

    Attributes
    ----------
    weights_, means_, covariances_, precisions_, precisions_cholesky_ : ndarray
        As scikit-learn's (``weights_`` the expected weights; ``covariances_`` the
        Wishart scale over the degrees of freedom).
    weight_concentration_ : tuple of two ndarray, or ndarray
        The Beta parameters of each stick (Dirichlet process), or the Dirichlet's.
    mean_precision_, degrees_of_freedom_ : ndarray (float for tied degrees of freedom)
    weight_concentration_prior_, mean_precision_prior_, degrees_of_freedom_prior_ : float
    mean_prior_, covariance_prior_ : ndarray (float for spherical)
        The priors in use.
    lower_bound_ : float
        scikit-learn's lower bound (the ELBO without constant terms) of the last
        iteration of the best initialisation.
    lower_bounds_ : list of float
    converged_ : bool
    n_iter_ : int
    n_features_in_ : int

    Notes
    -----
    The methods are the Gaussian mixture's but for ``bic`` and ``aic``, which
    scikit-learn's variational mixture has not either: its criterion is the lower bound.
    SQUAREM (``accelerate``) and online EM (``partial_fit``) are not offered.
    """

    accelerate: str = "none"  # no SQUAREM: the model has no pack/unpack
    _objective: ClassVar[str] = "lower bound"

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "auto",
        weight_concentration_prior_type: str = "dirichlet_process",
        weight_concentration_prior: float | None = None,
        mean_precision_prior: float | None = None,
        mean_prior: Any = None,
        degrees_of_freedom_prior: float | None = None,
        covariance_prior: Any = None,
        resp_init: Any = None,
        random_state: RandomState = None,
        checkpoint: Any = None,
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
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.resp_init = resp_init
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
        "n_components": counts(1),
        "covariance_type": [StrOptions(set(gaussian.COVARIANCE_TYPES))],
        "reg_covar": reals(0),
        "init_params": [StrOptions(set(INIT_METHODS))],
        "weight_concentration_prior_type": [StrOptions(set(kernels.PRIOR_TYPES))],
        "weight_concentration_prior": [None, *reals(0, None, closed="neither")],
        "mean_precision_prior": [None, *reals(0, None, closed="neither")],
        "mean_prior": [None, "array-like"],
        "degrees_of_freedom_prior": [None, *reals(0, None, closed="neither")],
        "covariance_prior": [None, NonNegativeArray(diagonal=True)],
        "resp_init": [None, "array-like", da.Array],
    }

    # --- fitting ----------------------------------------------------------------------

    def _model(self, n_features: int | None = None) -> BayesianMixtureModel:
        self._validate_params()

        def listed(value: Any) -> Any:
            return None if value is None else np.asarray(value, dtype=np.float64).tolist()

        def number(value: Any) -> float | None:
            return None if value is None else float(value)

        model = BayesianMixtureModel(
            int(self.n_components),
            self.covariance_type,
            float(self.reg_covar),
            self.weight_concentration_prior_type,
            number(self.weight_concentration_prior),
            number(self.mean_precision_prior),
            number(self.degrees_of_freedom_prior),
            listed(self.mean_prior),
            listed(self.covariance_prior),
        )
        if n_features is not None:
            self._check_priors(model, n_features)
        return model

    def _check_priors(self, model: BayesianMixtureModel, d: int) -> None:
        """scikit-learn's checks of the priors' shapes and values."""
        dof = model.degrees_of_freedom_prior
        if dof is not None and not dof > d - 1.0:
            raise ValueError(
                f"The parameter 'degrees_of_freedom_prior' should be greater than {d - 1}, "
                f"but got {dof:.3f}."
            )
        if model.mean_prior is not None:
            mean = np.asarray(model.mean_prior)
            if mean.shape != (d,) or not np.all(np.isfinite(mean)):
                raise ValueError(
                    f"mean_prior must be {d} finite numbers (one per feature); got shape "
                    f"{mean.shape}."
                )
        if model.covariance_prior is None:
            return
        prior = np.asarray(model.covariance_prior)
        ctype = model.covariance_type
        shape = {"full": (d, d), "tied": (d, d), "diag": (d,), "spherical": ()}[ctype]
        if prior.shape != shape:
            raise ValueError(
                f"covariance_prior must have shape {shape} for covariance_type={ctype!r}; "
                f"got {prior.shape}."
            )
        if ctype in ("full", "tied"):
            if not np.allclose(prior, prior.T) or np.any(np.linalg.eigvalsh(prior) <= 0.0):
                raise ValueError(
                    f"'{ctype} covariance_prior' should be symmetric, positive-definite."
                )
        elif np.any(prior <= 0.0):
            raise ValueError(f"'{ctype} covariance_prior' should be positive.")

    def _resp_init(self, samples: Any, n_samples: int) -> da.Array:
        resp = self.resp_init
        shape = (n_samples, int(self.n_components))
        if not isinstance(resp, da.Array):
            resp = np.asarray(resp, dtype=np.float64)
            if resp.shape != shape:
                raise ValueError(f"resp_init must have shape {shape}, got {resp.shape}.")
            if not np.all(np.isfinite(resp)) or np.any(resp < 0):
                raise ValueError("resp_init must hold finite, non-negative numbers.")
            resp = da.from_array(resp, chunks=(samples.array.chunks[0], shape[1]))
        elif resp.shape != shape:
            raise ValueError(f"resp_init must have shape {shape}, got {resp.shape}.")
        return resp.astype(np.float64).rechunk((samples.array.chunks[0], shape[1]))

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        variable: str | None = None,
        sample_weight: Any = None,
    ) -> BayesianGaussianMixture:
        """Fit the variational posterior.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), dask array, xarray.DataArray, or path
            The data; a Zarr store path needs ``variable``.
        y : ignored
        variable : str, optional
            Name of the array in a Zarr store (or xarray Dataset).
        sample_weight : array-like of shape (n_samples,), dask array, or str, optional
            Non-negative finite weight of each sample (a string: a variable of the same
            store): the posterior of the data with each row repeated that many times
            (for integer weights; weight 0 drops the row), its data-dependent default
            priors (mean and covariance) and initialisation included. A checkpoint
            resumes only with the same weights.

        Returns
        -------
        self
        """
        samples, weights = self._weighted_samples(X, variable, sample_weight)
        n_samples, n_features = samples.array.shape
        model = self._model(n_features)
        if n_samples < max(2, model.n_components):
            raise ValueError(
                f"Expected n_samples >= max(2, n_components), got n_samples={n_samples} and "
                f"n_components={model.n_components}. Use fewer components or more data."
            )
        resp = None if self.resp_init is None else self._resp_init(samples, n_samples)
        method = resolve_init(self.init_params, n_samples, int(self.init_sample_size))
        split_every = int(self.split_every)
        if method == "k-means||" and resp is None:  # passes before EM: persist now if at all
            samples, weights = self._persisted(samples, weights)
        w = None if weights is None else weights.array
        shared: dict[str, Any] = {}

        def data_priors() -> Params:
            """The priors (one pass for the data's defaults), shared by the restarts."""
            if "priors" not in shared:
                data = None
                needs = model.mean_prior is None or model.covariance_prior is None
                if needs or resp is not None:
                    data = init.data_priors(
                        model, samples.array, split_every=split_every, weights=w
                    )
                    shared["shift"] = data[0]  # the data mean: the restarts' reference
                shared["priors"] = init.priors(model, n_features, data)
            return dict(shared["priors"])

        def make_init(rng: np.random.Generator) -> Params:
            prior = data_priors()
            if resp is not None:
                stats = init.resp_statistics(
                    model, samples.array, resp, shared["shift"], split_every=split_every, weights=w
                )
                shift = shared["shift"]
            elif method == "k-means||":
                stats, shift = init.kmeans_parallel_statistics(
                    model, samples.array, rng, split_every=split_every, weights=w
                )
            else:
                sample = init_sample(samples.array, w, self.init_sample_size, rng)
                total = n_samples if w is None else float(w.sum().compute())
                stats, shift = init.sample_statistics(model, sample, total, rng, method)
            start = init.from_statistics(model, stats, shift, prior)
            # restarts share one reference point, so each pass evaluates them together
            start["shift"] = shared.setdefault("shift", start["shift"])
            return start

        self._fit_restarts(model, with_weights({"X": samples}, weights), make_init)
        self._set_features(X, variable, n_features)
        return self

    def _set_params(self, params: Params) -> None:
        ctype = self.covariance_type
        concentration = np.asarray(params["weight_concentration"])
        self.weight_concentration_ = (
            (concentration[0], concentration[1]) if concentration.ndim == 2 else concentration
        )
        self.weights_ = np.asarray(params["weights"])
        self.means_ = np.asarray(params["means"])
        self.covariances_ = np.asarray(params["covariances"])
        self.precisions_cholesky_ = np.asarray(params["precisions_cholesky"])
        self.precisions_ = gaussian.precisions_from_cholesky(self.precisions_cholesky_, ctype)
        self.mean_precision_ = np.asarray(params["mean_precision"])
        dof = np.asarray(params["degrees_of_freedom"])
        self.degrees_of_freedom_ = float(dof) if dof.ndim == 0 else dof
        self.weight_concentration_prior_ = float(params["weight_concentration_prior"])
        self.mean_precision_prior_ = float(params["mean_precision_prior"])
        self.degrees_of_freedom_prior_ = float(params["degrees_of_freedom_prior"])
        self.mean_prior_ = np.asarray(params["mean_prior"])
        cov_prior = np.asarray(params["covariance_prior"])
        self.covariance_prior_ = float(cov_prior) if cov_prior.ndim == 0 else cov_prior

    def _params(self) -> Params:
        if not hasattr(self, "weights_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit first.")
        params: Params = {
            "weight_concentration": np.asarray(self.weight_concentration_),
            "weights": self.weights_,
            "means": self.means_,
            "covariances": self.covariances_,
            "precisions_cholesky": self.precisions_cholesky_,
            "mean_precision": self.mean_precision_,
            "degrees_of_freedom": np.asarray(self.degrees_of_freedom_),
        }
        params["log_weights"] = kernels.log_weights(
            params, self.weight_concentration_prior_type, self.means_.shape[1]
        )
        return params

    # --- per-sample results (lazy for lazy input) ----------------------------------------

    def score_samples(self, X: Any, *, variable: str | None = None) -> Any:
        """scikit-learn's ``score_samples``: log Σ_k exp of the variational weighted log
        densities (not a normalised density), shape (n_samples,)."""
        return self._per_sample(X, variable, lambda w: logsumexp(w, axis=1), None)
