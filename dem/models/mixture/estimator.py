"""The user API of the Gaussian mixture: :class:`GaussianMixture`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from scipy.special import logsumexp
from sklearn.base import _fit_context
from sklearn.utils._param_validation import StrOptions

from dem.accelerate import DEFAULT_ALPHA
from dem.data import sample_rows
from dem.display import HTMLRepr
from dem.engine import map_reduce
from dem.estimator import (
    EMEstimator,
    NotFittedError,
    RandomState,
    as_generator,
    counts,
    per_sample,
    reals,
)
from dem.model import Params
from dem.models import gaussian
from dem.models.mixture.base import BaseMixture
from dem.models.mixture.init import (
    INIT_METHODS,
    initial_params,
    kmeans_parallel_params,
    mean_filled_array,
    resolve_init,
)
from dem.models.mixture.kernels import mixture_mean
from dem.models.mixture.missing import (
    MISSING_OPTIONS,
    MarginalMixtureModel,
    conditional_means,
)
from dem.models.mixture.model import MixtureModel
from dem.online import blend, check_forgetting, fit_online, step_rate
from dem.weights import init_sample, with_weights


class GaussianMixture(HTMLRepr, BaseMixture):
    """Gaussian mixture fitted by EM over Dask chunks, with scikit-learn's interface.

    Parameters follow :class:`sklearn.mixture.GaussianMixture` in name and meaning;
    from the same initial parameters every iteration matches scikit-learn's.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        Form of the component covariances.
    tol : float, default=1e-3
        Convergence threshold on the change of the mean per-sample log-likelihood.
    reg_covar : float, default=1e-6
        Added to the diagonal of every covariance.
    missing : {"raise", "marginalize"}, default="raise"
        What NaN entries of ``X`` mean. ``"raise"``: invalid input (a ``ValueError``
        naming the rows). ``"marginalize"``: values missing at random, handled exactly:
        each row's responsibilities and log-likelihood use the marginal density of its
        observed coordinates, and the M-step the conditional expectations of the
        missing ones (see :mod:`dem.models.mixture.missing`). ``predict``,
        ``predict_proba``, ``score_samples`` and ``score`` then take rows with NaN too.
        Rows with no observed value contribute nothing (one ``UnobservedRowsWarning``
        per fit counts them).
    max_iter : int, default=100
        Maximum number of EM iterations per initialisation.
    n_init : int, default=1
        Number of initialisations; the best (highest lower bound) is kept. They run
        in lockstep: each pass over the data serves every initialisation.
    init_params : {"auto", "kmeans", "k-means||", "k-means++", "random", \
"random_from_data"}, default="auto"
        How the starting parameters are found. ``"k-means||"`` runs distributed
        k-means‖ (Bahmani et al. 2012) over all the data: 6 passes (see
        :mod:`dem.seeding`), then the parameters of the hard assignment to the K
        clusters. The others work on a random sample of at most ``init_sample_size``
        rows (one read; never the whole data on the client): ``"kmeans"`` is k-means on
        it, the rest as in scikit-learn. ``"auto"`` is ``"k-means||"`` when the data
        have more than ``init_sample_size`` rows, else ``"kmeans"``. Each restart of
        ``n_init`` runs its own initialisation.
    weights_init : array-like of shape (n_components,), optional
    means_init : array-like of shape (n_components, n_features), optional
    precisions_init : array-like, optional
        Initial precisions, shaped as ``covariances_`` for the covariance type.
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
        Keep the data in cluster memory between iterations. By default, data
        taking at most half the cluster's memory are persisted; larger data are
        re-read from their store every iteration.
    init_sample_size : int, default=100_000
        Rows drawn for the initialisation.
    accelerate : {"none", "squarem", "alpha"}, default="none"
        ``"squarem"`` extrapolates between EM steps (Varadhan & Roland 2008), usually
        reaching the same optimum in far fewer passes over the data; ``max_iter``
        then counts passes and ``lower_bounds_`` has one entry per cycle. ``"alpha"``
        is α-EM (Matsuyama 2003): a momentum step from the last two EM steps, weighted
        ``(1 + alpha) / 2`` (see :func:`dem.accelerate.alpha_momentum`), with the same
        monotone fallback, counting and checkpoints.
    alpha : float in [-1, 1), default=0.9
        α of ``accelerate="alpha"``: -1 is plain EM (the same bits), larger values take
        larger steps. Ignored by the other methods.
    method : {"batch", "online", "incremental"}, default="batch"
        ``"online"`` starts with ``online_passes`` passes of online (stepwise) EM
        (Cappé & Moulines 2009; see :mod:`dem.online`), updating the parameters after
        every ``batch_chunks`` chunks with rate ``(t + 1) ** -step_exponent`` (or, with
        ``forgetting``, a rate that tends to the constant ``forgetting``), then
        continues with batch EM for up to ``max_iter`` iterations (``max_iter=0``:
        online only). ``"incremental"`` is Neal & Hinton's incremental EM (see
        :mod:`dem.incremental`): an M-step after every ``incremental_chunks`` chunks,
        each group's statistics replaced in the cached total; ``max_iter`` and
        ``n_iter_`` count passes.
    online_passes, batch_chunks, incremental_chunks : int
    step_exponent : float in (0.5, 1]
    forgetting : float in (0, 1], optional
        Online EM (``method="online"`` and ``partial_fit``) with Sato & Ishii's discount:
        the running statistics weigh the batch ``j`` updates back by
        ``(1 - forgetting) ** j``, so the fit tracks a drifting stream (about the last
        ``1 / forgetting`` batches) instead of averaging all the past; see
        :mod:`dem.online`. None (the default): the decaying rate.
    warm_start : bool, default=False
        Start from the current fitted parameters when ``fit`` is called again.
    callback : callable, optional
        Called after every iteration with a :class:`dem.engine.IterationInfo`.
    sample_dim, feature_dim : str
        Dimension names of xarray input.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_, precisions_, precisions_cholesky_ : ndarray
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean per-sample log-likelihood at the start of the last iteration.
    lower_bounds_ : list of float
        ``lower_bound_`` of every iteration of the best initialisation.
    n_online_updates_ : int
        Online-EM updates before batch EM (``method="online"``), else 0.
    online_lower_bounds_ : list of float
        Mean log-likelihood of each online pass, measured as it went.
    n_features_in_ : int
    """

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        missing: str = "raise",
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "auto",
        weights_init: Any = None,
        means_init: Any = None,
        precisions_init: Any = None,
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
        method: str = "batch",
        online_passes: int = 1,
        batch_chunks: int = 1,
        step_exponent: float = 0.6,
        forgetting: float | None = None,
        incremental_chunks: int = 1,
        warm_start: bool = False,
        callback: Callable[[Any], Any] | None = None,
        sample_dim: str = "sample",
        feature_dim: str = "feature",
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.missing = missing
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
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
        self.online_passes = online_passes
        self.batch_chunks = batch_chunks
        self.step_exponent = step_exponent
        self.forgetting = forgetting
        self.incremental_chunks = incremental_chunks
        self.warm_start = warm_start
        self.callback = callback
        self.sample_dim = sample_dim
        self.feature_dim = feature_dim

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **EMEstimator._parameter_constraints,
        "n_components": counts(1),
        "covariance_type": [StrOptions(set(gaussian.COVARIANCE_TYPES))],
        "reg_covar": reals(0),
        "missing": [StrOptions(set(MISSING_OPTIONS))],
        "max_iter": counts(0),
        "init_params": [StrOptions(set(INIT_METHODS))],
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "precisions_init": ["array-like", None],
    }

    # --- fitting ----------------------------------------------------------------------

    def _model(self) -> MixtureModel:
        self._validate_params()  # also for dem.select_n_components, which fits no template
        kind = MarginalMixtureModel if self._marginalize() else MixtureModel
        return kind(int(self.n_components), self.covariance_type, float(self.reg_covar))

    def _marginalize(self) -> bool:
        """Whether NaN entries are missing values (``missing="marginalize"``)."""
        return getattr(self, "missing", "raise") == "marginalize"

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self._marginalize()
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        variable: str | None = None,
        sample_weight: Any = None,
    ) -> GaussianMixture:
        """Fit the mixture by EM.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), dask array, xarray.DataArray, or path
            The data; a Zarr store path needs ``variable``.
        y : ignored
        variable : str, optional
            Name of the array in a Zarr store (or xarray Dataset).
        sample_weight : array-like of shape (n_samples,), dask array, or str, optional
            Non-negative finite weight of each sample (a string: the name of a variable of
            the same store). EM then maximises the weighted log-likelihood: integer
            weights fit as if each row were repeated that many times, weight 0 as if the
            row were absent; ``lower_bounds_`` are weighted means. The initialisation
            draws its rows in proportion to the weights. A checkpoint records the
            weights' fingerprint and content, so it resumes only with the same weights.

        Returns
        -------
        self
        """
        model = self._model()
        if self.max_iter == 0 and self.method != "online":
            raise ValueError(
                f"max_iter must be >= 1 for method={self.method!r} (0 is for online only)."
            )
        samples, weights = self._weighted_samples(X, variable, sample_weight)
        n_samples, n_features = samples.array.shape
        if n_samples < model.n_components:
            raise ValueError(
                f"Expected n_samples >= n_components, got n_samples={n_samples} and "
                f"n_components={model.n_components}. Use fewer components or more data."
            )
        initial = self._checked_inits(n_features)
        method = resolve_init(self.init_params, n_samples, int(self.init_sample_size))
        needs_data = any(v is None for v in initial.values())
        if needs_data and method == "k-means||":  # passes before EM: persist now if at all
            samples, weights = self._persisted(samples, weights)

        def first_start(rng: np.random.Generator) -> Params:
            if needs_data and method == "k-means||":
                array = samples.array
                if self._marginalize():
                    array = mean_filled_array(array, int(self.split_every))
                return kmeans_parallel_params(
                    [model],
                    array,
                    [rng],
                    split_every=int(self.split_every),
                    sample_weight=None if weights is None else weights.array,
                    **initial,
                )[0]
            sample = (
                init_sample(samples.array, weights, self.init_sample_size, rng)
                if needs_data
                else np.empty((0, n_features))
            )
            return initial_params(model, sample, rng, method, **initial)

        shared: Params = {}

        def make_init(rng: np.random.Generator) -> Params:
            if self.warm_start and hasattr(self, "weights_"):
                return {**self._params(), "shift": mixture_mean(self._params())}
            start = first_start(rng)
            # restarts share one reference point (any point amid the data serves), so
            # that each pass evaluates them together (MixtureModel.e_step_many)
            start["shift"] = shared.setdefault("shift", start["shift"])
            if self.method != "online":
                return start
            online = fit_online(
                model,
                {name: s.array for name, s in with_weights({"X": samples}, weights).items()},
                lambda: start,
                n_passes=int(self.online_passes),
                batch_chunks=int(self.batch_chunks),
                step_exponent=float(self.step_exponent),
                forgetting=self._forgetting(),
                random_state=rng,
                split_every=int(self.split_every),
                persist=self.persist,
            )
            online_stages.append(online)
            return online.params

        online_stages: list[Any] = []  # in run order (runs resumed from a checkpoint skip this)
        best, results = self._fit_restarts(model, with_weights({"X": samples}, weights), make_init)
        self._set_features(X, variable, n_features)
        stage = online_stages[results.index(best)] if len(online_stages) == len(results) else None
        self.n_online_updates_ = stage.n_iter if stage is not None else 0
        self.online_lower_bounds_ = list(stage.lower_bounds) if stage is not None else []
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X: Any, y: Any = None, *, variable: str | None = None) -> GaussianMixture:
        """One online-EM update from the batch ``X`` (Cappé & Moulines 2009).

        The first call initialises from ``X`` (or from the fitted parameters); every
        call blends the batch's per-sample statistics into a running average with rate
        ``(t + 1) ** -step_exponent`` (with ``forgetting``: Sato & Ishii's discounted
        average, which tracks a drifting stream) and runs the M-step on it. ``lower_bound_`` is
        the batch's mean log-likelihood before the update; ``n_iter_`` counts updates.
        """
        model = self._model()
        samples = self._samples(X, variable)
        if hasattr(self, "weights_"):
            self._check_features(X, variable, int(samples.array.shape[1]))
        state = getattr(self, "_online_state", None)
        if state is None:
            if hasattr(self, "weights_"):
                params = {**self._params(), "shift": mixture_mean(self._params())}
            else:
                if samples.n_samples < model.n_components:
                    raise ValueError(
                        f"The first batch has {samples.n_samples} samples, fewer than "
                        f"n_components={model.n_components}; pass a larger first batch."
                    )
                rng = as_generator(self.random_state)
                sample = sample_rows(samples.array, self.init_sample_size, rng)
                method = "kmeans" if self.init_params in ("auto", "k-means||") else self.init_params
                params = initial_params(
                    model, sample, rng, method, **self._checked_inits(sample.shape[1])
                )
            state = {"params": params, "running": None, "updates": 0, "n_seen": 0.0}
        stats = map_reduce(
            model.e_step,
            model.combine,
            {"X": samples.array},
            state["params"],
            split_every=int(self.split_every),
            missing_ok=model.missing_ok,
        )
        running = blend(
            state["running"],
            stats,
            step_rate(state["updates"], float(self.step_exponent), self._forgetting()),
        )
        n_seen = state["n_seen"] + float(stats["n"])
        params = model.m_step({k: v * n_seen for k, v in running.items()}, state["params"])
        self._online_state = {
            "params": params,
            "running": running,
            "updates": state["updates"] + 1,
            "n_seen": n_seen,
        }
        self._set_params(params)
        self.lower_bound_ = float(stats["loglik"] / stats["n"])
        self.lower_bounds_ = [*getattr(self, "lower_bounds_", []), self.lower_bound_]
        self.n_iter_ = self._online_state["updates"]
        self.converged_ = False
        self._set_features(X, variable, int(samples.array.shape[1]))
        return self

    def _forgetting(self) -> float | None:
        """The forgetting factor (None: the decaying rate), checked."""
        forgetting = getattr(self, "forgetting", None)
        value = None if forgetting is None else float(forgetting)
        check_forgetting(value)
        return value

    def _checked_inits(self, n_features: int) -> dict[str, np.ndarray | None]:
        k, d, ctype = self.n_components, n_features, self.covariance_type
        shapes = {
            "weights_init": (k,),
            "means_init": (k, d),
            "precisions_init": {
                "full": (k, d, d),
                "tied": (d, d),
                "diag": (k, d),
                "spherical": (k,),
            }[ctype],
        }
        checked: dict[str, np.ndarray | None] = {}
        for name, shape in shapes.items():
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, dtype=np.float64)
                if value.shape != shape:
                    raise ValueError(f"{name} must have shape {shape}, got {value.shape}.")
                if not np.all(np.isfinite(value)):
                    raise ValueError(f"{name} contains NaN or infinity.")
            checked[name] = value
        weights = checked["weights_init"]
        if weights is not None and (np.any(weights < 0) or not np.isclose(weights.sum(), 1.0)):
            raise ValueError("weights_init must be non-negative and sum to 1.")
        precisions = checked["precisions_init"]
        if precisions is not None:
            try:
                gaussian.precision_cholesky_from_precisions(precisions, ctype)
            except np.linalg.LinAlgError as exc:
                raise ValueError("precisions_init must be symmetric positive definite.") from exc
            if ctype in ("diag", "spherical") and np.any(precisions <= 0):
                raise ValueError("precisions_init must be positive.")
        return {
            "weights_init": checked["weights_init"],
            "means_init": checked["means_init"],
            "precisions_init": checked["precisions_init"],
        }

    def _set_params(self, params: Params) -> None:
        self.weights_ = params["weights"]
        self.means_ = params["means"]
        self.covariances_ = params["covariances"]
        self.precisions_cholesky_ = params["precisions_cholesky"]
        self.precisions_ = gaussian.precisions_from_cholesky(
            self.precisions_cholesky_, self.covariance_type
        )

    def _params(self) -> Params:
        if not hasattr(self, "weights_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit first.")
        return {
            "weights": self.weights_,
            "means": self.means_,
            "covariances": self.covariances_,
            "precisions_cholesky": self.precisions_cholesky_,
        }

    # --- per-sample results (lazy for lazy input) ----------------------------------------

    def score_samples(self, X: Any, *, variable: str | None = None) -> Any:
        """Log-likelihood of each sample, shape (n_samples,)."""
        return self._per_sample(X, variable, lambda w: logsumexp(w, axis=1), None)

    def impute(self, X: Any, *, variable: str | None = None) -> Any:
        """``X`` with each NaN replaced by its conditional mean given the row's observed values.

        ``E[x_m | x_o] = Σ_k r_k(x_o) (μ_k,m + Σ_k,mo Σ_k,oo⁻¹ (x_o − μ_k,o))``, where
        ``r_k(x_o)`` are the row's responsibilities given its observed coordinates ``o``
        (``predict_proba``) and the bracket is the conditional mean of the missing
        coordinates ``m`` under component k (for diagonal and spherical covariances,
        ``μ_k,m``). A row with no observed value gets the mixture mean ``Σ_k w_k μ_k``.
        Works for a mixture fitted with either ``missing`` option.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), dask array, xarray.DataArray, or path
        variable : str, optional
            Name of the array in a Zarr store (or xarray Dataset).

        Returns
        -------
        ndarray, dask array or xarray.DataArray of shape (n_samples, n_features)
            Observed entries unchanged, float64; lazy for lazy input.
        """
        params = self._params()
        samples = self._checked_samples(X, variable)
        ctype = self.covariance_type
        return per_sample(
            samples,
            lambda x: conditional_means(x, params, ctype),
            columns=self.n_features_in_,
            column_dim=self.feature_dim,
            missing_ok=True,
        )

    def _n_parameters(self) -> int:
        k, d = self.means_.shape
        return int(gaussian.n_covariance_parameters(self.covariance_type, k, d) + k * d + k - 1)

    def bic(self, X: Any, *, variable: str | None = None, sample_weight: Any = None) -> float:
        """Bayesian information criterion (lower is better): -2 log L + p log n.

        With ``sample_weight``, log L is the weighted log-likelihood and n the sum of the
        weights (the BIC of the data with each row repeated, for integer weights).
        """
        mean, n = self._loglik(X, variable, sample_weight)
        return -2 * mean * n + self._n_parameters() * np.log(n)

    def aic(self, X: Any, *, variable: str | None = None, sample_weight: Any = None) -> float:
        """Akaike information criterion (lower is better): -2 log L + 2 p.

        With ``sample_weight``, log L is the weighted log-likelihood Σ w_i log p(x_i).
        """
        mean, n = self._loglik(X, variable, sample_weight)
        return -2 * mean * n + 2 * self._n_parameters()
