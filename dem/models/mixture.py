"""Gaussian mixture: the E-step, M-step and initialisation, and the estimator.

The E-step of one chunk walks it in row blocks that stay in cache, held transposed
(see :mod:`dem.models.gaussian`); for each block it computes the block's second
moments, the weighted log densities (for full covariances one matrix product for all
components), the responsibilities, and adds the sufficient statistics ``resp_sum``
(Σ r), ``sum_x`` (Σ r (x - c)) and ``scatter`` (Σ r (x - c)(x - c)ᵀ, or its diagonal)
about the shift ``c`` (the mixture mean at the start of the iteration). The M-step reproduces scikit-learn's formulas exactly,
including its ``10 * eps`` added to the component counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy.special import logsumexp

from dem.data import Samples, as_samples, sample_rows
from dem.engine import map_reduce
from dem.estimator import NotFittedError, check_hyperparameters, fit_restarts, per_sample
from dem.model import Block, Params, Stats, add_stats
from dem.models import gaussian

BLOCK_ROWS = 2048
EPS = 10 * np.finfo(np.float64).eps
INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")


@dataclass(frozen=True)
class MixtureModel:
    """The pure functions of a Gaussian mixture (see :mod:`dem.model`)."""

    n_components: int
    covariance_type: str = "full"
    reg_covar: float = 1e-6

    name: ClassVar[str] = "gaussian_mixture"
    inputs: ClassVar[tuple[str, ...]] = ("X",)
    missing_ok: ClassVar[frozenset[str]] = frozenset()

    def config(self) -> dict[str, Any]:
        return {
            "n_components": self.n_components,
            "covariance_type": self.covariance_type,
            "reg_covar": self.reg_covar,
        }

    def param_dims(self) -> dict[str, tuple[str, ...]]:
        cov = {
            "full": ("component", "feature", "feature_"),
            "tied": ("feature", "feature_"),
            "diag": ("component", "feature"),
            "spherical": ("component",),
        }[self.covariance_type]
        return {
            "weights": ("component",),
            "means": ("component", "feature"),
            "covariances": cov,
            "precisions_cholesky": cov,
        }

    def e_step(self, block: Block, params: Params) -> Stats:
        x = block["X"]
        n_features = x.shape[1]
        ctype = self.covariance_type
        shift = mixture_mean(params)
        prec_chol = params["precisions_cholesky"]
        # float32 data of a full mixture: the large products and the exponentials run in
        # float32 on each block; log densities and every sum across blocks are float64
        dtype = gaussian.product_dtype(x.dtype, ctype)
        distances = gaussian.DISTANCES[ctype](params["means"] - shift, prec_chol, dtype)
        log_weights = np.log(params["weights"])
        constants = gaussian.log_prob_constants(log_weights, prec_chol, ctype, n_features)
        loglik = np.float64(0.0)
        resp_sum = np.zeros(self.n_components)
        sum_x = np.zeros((self.n_components, n_features))
        scatter = gaussian.scatter_zeros(ctype, self.n_components, n_features)
        for xc, xt in gaussian.transposed_blocks(x, shift, dtype, BLOCK_ROWS):
            moments = gaussian.MOMENTS[ctype](xt)
            log_prob = constants - 0.5 * distances(xt, moments)  # (K, n) float64
            resp, log_norm = responsibilities(log_prob, dtype)
            loglik += log_norm.sum()
            resp_sum += resp.sum(axis=1, dtype=np.float64)
            sum_x += resp.astype(np.float64, copy=False) @ xc.T
            scatter += gaussian.SCATTER[ctype](xt, moments, resp)
        return {
            "n": np.float64(len(x)),
            "loglik": loglik,
            "resp_sum": resp_sum,
            "sum_x": sum_x,
            "scatter": gaussian.unpack_scatter(scatter, ctype, n_features),
        }

    def combine(self, a: Stats, b: Stats) -> Stats:
        return add_stats(a, b)

    def m_step(self, stats: Stats, params: Params) -> Params:
        return estimate_params(stats, mixture_mean(params), self.covariance_type, self.reg_covar)

    # --- per-sample functions, applied to any rows ---------------------------------

    def weighted_log_prob(self, x: np.ndarray, params: Params) -> np.ndarray:
        """log(w_k) + log N(x | mu_k, Sigma_k) for each row of ``x``: (n, K)."""
        ctype = self.covariance_type
        shift = mixture_mean(params)
        prec_chol = params["precisions_cholesky"]
        dtype = gaussian.product_dtype(x.dtype, ctype)
        distances = gaussian.DISTANCES[ctype](params["means"] - shift, prec_chol, dtype)
        log_weights = np.log(params["weights"])
        constants = gaussian.log_prob_constants(log_weights, prec_chol, ctype, x.shape[1])
        out = np.empty((self.n_components, len(x)))
        start = 0
        for _, xt in gaussian.transposed_blocks(x, shift, dtype, BLOCK_ROWS):
            distance = distances(xt, gaussian.MOMENTS[ctype](xt))
            out[:, start : start + xt.shape[1]] = constants - 0.5 * distance
            start += xt.shape[1]
        return out.T


def responsibilities(
    log_prob: np.ndarray, dtype: type[np.floating] = np.float64
) -> tuple[np.ndarray, np.ndarray]:
    """Responsibilities (K, n) in ``dtype`` and log Σ_k exp (n,) in float64.

    ``log_prob`` (K, n, float64, weighted log densities) is overwritten: for float64
    it becomes the responsibilities. The reductions run over the leading axis, as fast
    elementwise passes; only the exponentials of log_prob - max run in ``dtype``.
    """
    top = log_prob.max(axis=0)
    log_prob -= top
    resp = log_prob if dtype == np.float64 else log_prob.astype(dtype)
    np.exp(resp, out=resp)
    total = resp.sum(axis=0)
    resp /= total
    return resp, np.log(total, dtype=np.float64) + top


def mixture_mean(params: Params) -> np.ndarray:
    """Σ w_k μ_k: the shift the statistics are taken about."""
    return params["weights"] @ params["means"]


def estimate_params(stats: Stats, shift: np.ndarray, covariance_type: str, reg_covar: float) -> Params:
    """Weights, means, covariances and precision factors from statistics about ``shift``."""
    resp_sum = stats["resp_sum"]
    counts = resp_sum + EPS
    # means = Σ r x / counts, written about the shift so nothing cancels
    dm = stats["sum_x"] / counts[:, None] - shift * (EPS / counts)[:, None]
    covariances = gaussian.COVARIANCE[covariance_type](
        stats["scatter"], resp_sum, stats["sum_x"], dm, counts, reg_covar
    )
    return {
        "weights": counts / counts.sum(),
        "means": shift + dm,
        "covariances": covariances,
        "precisions_cholesky": gaussian.precision_cholesky(covariances, covariance_type),
    }


# --- initialisation on a bounded sample of rows --------------------------------------


def kmeans_plusplus(x: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n_clusters`` rows chosen by greedy k-means++ (Arthur & Vassilvitskii)."""
    n_trials = 2 + int(np.log(n_clusters))
    squared_norms = np.einsum("ij,ij->i", x, x)

    def sq_dist(rows: np.ndarray) -> np.ndarray:
        d2 = squared_norms[rows][:, None] - 2.0 * x[rows] @ x.T + squared_norms[None, :]
        return np.maximum(d2, 0.0)

    chosen = [int(rng.integers(len(x)))]
    closest = sq_dist(np.array(chosen))[0]
    for _ in range(1, n_clusters):
        total = closest.sum()
        if total <= 0.0:  # fewer distinct points than clusters: take any unused row
            candidates = rng.choice(np.setdiff1d(np.arange(len(x)), chosen), n_trials)
        else:
            candidates = np.searchsorted(np.cumsum(closest), rng.uniform(size=n_trials) * total)
            candidates = np.minimum(candidates, len(x) - 1)
        trial = np.minimum(closest[None, :], sq_dist(candidates))
        best = int(np.argmin(trial.sum(axis=1)))
        chosen.append(int(candidates[best]))
        closest = trial[best]
    return np.array(chosen)


def kmeans_labels(x: np.ndarray, n_clusters: int, rng: np.random.Generator, max_iter: int = 100) -> np.ndarray:
    """Lloyd's k-means from k-means++ seeds; returns each row's cluster."""
    centers = x[kmeans_plusplus(x, n_clusters, rng)].copy()
    labels = np.full(len(x), -1)
    for _ in range(max_iter):
        d2 = -2.0 * x @ centers.T + np.einsum("ij,ij->i", centers, centers)
        new_labels = np.argmin(d2, axis=1)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        for k in range(n_clusters):
            members = labels == k
            if members.any():
                centers[k] = x[members].mean(axis=0)
    return labels


def _one_hot(rows: np.ndarray, n_rows: int, n_components: int) -> np.ndarray:
    resp = np.zeros((n_rows, n_components))
    resp[rows, np.arange(n_components)] = 1.0
    return resp


INIT_RESPONSIBILITIES: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "kmeans": lambda x, k, rng: np.eye(k)[kmeans_labels(x, k, rng)],
    "k-means++": lambda x, k, rng: _one_hot(kmeans_plusplus(x, k, rng), len(x), k),
    "random": lambda x, k, rng: (lambda r: r / r.sum(axis=1, keepdims=True))(rng.uniform(size=(len(x), k))),
    "random_from_data": lambda x, k, rng: _one_hot(rng.choice(len(x), k, replace=False), len(x), k),
}


def initial_params(
    model: MixtureModel,
    sample: np.ndarray,
    rng: np.random.Generator,
    init_params: str,
    weights_init: np.ndarray | None = None,
    means_init: np.ndarray | None = None,
    precisions_init: np.ndarray | None = None,
) -> Params:
    """Starting parameters, as scikit-learn's ``_initialize`` computes them, on a sample.

    Responsibilities come from ``init_params`` on the sample; the parameters they
    imply are then overridden by whichever of the ``*_init`` arrays are given.
    """
    ctype = model.covariance_type
    params: Params = {}
    if weights_init is None or means_init is None or precisions_init is None:
        x = sample.astype(np.float64)
        resp = INIT_RESPONSIBILITIES[init_params](x, model.n_components, rng)
        shift = x.mean(axis=0)
        xc = x - shift
        stats = {
            "resp_sum": resp.sum(axis=0),
            "sum_x": resp.T @ xc,
            "scatter": gaussian.scatter_statistic(xc, resp, ctype, BLOCK_ROWS),
        }
        params = estimate_params(stats, shift, ctype, model.reg_covar)
    if weights_init is not None:
        params["weights"] = np.asarray(weights_init, dtype=np.float64).copy()
    if means_init is not None:
        params["means"] = np.asarray(means_init, dtype=np.float64).copy()
    if precisions_init is not None:
        precisions = np.asarray(precisions_init, dtype=np.float64)
        params["precisions_cholesky"] = gaussian.precision_cholesky_from_precisions(precisions, ctype)
        params["covariances"] = gaussian.covariances_from_precisions(precisions, ctype)
    return params


# --- the estimator ----------------------------------------------------------------


class GaussianMixture:
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
    max_iter : int, default=100
        Maximum number of EM iterations per initialisation.
    n_init : int, default=1
        Number of initialisations; the best (highest lower bound) is kept.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        How responsibilities are initialised, on a random sample of at most
        ``init_sample_size`` rows (never the whole data on the client).
    weights_init : array-like of shape (n_components,), optional
    means_init : array-like of shape (n_components, n_features), optional
    precisions_init : array-like, optional
        Initial precisions, shaped as ``covariances_`` for the covariance type.
    random_state : int or numpy.random.Generator, optional
        Seeds the initialisation.
    checkpoint : str or path-like, optional
        Zarr store where every iteration's parameters are written.
    resume : bool, default=False
        Continue from the checkpoint's latest complete iteration.
    split_every : int, default=8
        Fan-in of the tree that sums the per-chunk statistics.
    persist : bool, optional
        Keep the data in cluster memory between iterations. By default, data
        taking at most half the cluster's memory are persisted; larger data are
        re-read from their store every iteration.
    init_sample_size : int, default=100_000
        Rows drawn for the initialisation.
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
    n_features_in_ : int
    """

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weights_init: Any = None,
        means_init: Any = None,
        precisions_init: Any = None,
        random_state: int | np.random.Generator | None = None,
        checkpoint: Any = None,
        resume: bool = False,
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
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.checkpoint = checkpoint
        self.resume = resume
        self.split_every = split_every
        self.persist = persist
        self.init_sample_size = init_sample_size
        self.callback = callback
        self.sample_dim = sample_dim
        self.feature_dim = feature_dim

    _constraints: ClassVar[dict[str, tuple[Callable[[Any], bool], str]]] = {
        "n_components": (lambda v: isinstance(v, int | np.integer) and v >= 1, "an integer >= 1"),
        "covariance_type": (lambda v: v in gaussian.COVARIANCE_TYPES, f"one of {gaussian.COVARIANCE_TYPES}"),
        "tol": (lambda v: isinstance(v, float | int) and v >= 0, "a number >= 0"),
        "reg_covar": (lambda v: isinstance(v, float | int) and v >= 0, "a number >= 0"),
        "max_iter": (lambda v: isinstance(v, int | np.integer) and v >= 1, "an integer >= 1"),
        "n_init": (lambda v: isinstance(v, int | np.integer) and v >= 1, "an integer >= 1"),
        "init_params": (lambda v: v in INIT_METHODS, f"one of {INIT_METHODS}"),
        "split_every": (lambda v: isinstance(v, int | np.integer) and v >= 2, "an integer >= 2"),
        "init_sample_size": (lambda v: isinstance(v, int | np.integer) and v >= 1, "an integer >= 1"),
    }

    # --- fitting ----------------------------------------------------------------------

    def _model(self) -> MixtureModel:
        check_hyperparameters(self, self._constraints)
        return MixtureModel(int(self.n_components), self.covariance_type, float(self.reg_covar))

    def _samples(self, X: Any, variable: str | None) -> Samples:
        return as_samples(X, variable=variable, sample_dim=self.sample_dim, feature_dim=self.feature_dim)

    def fit(self, X: Any, y: Any = None, *, variable: str | None = None) -> GaussianMixture:
        """Fit the mixture by EM.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), dask array, xarray.DataArray, or path
            The data; a Zarr store path needs ``variable``.
        y : ignored
        variable : str, optional
            Name of the array in a Zarr store (or xarray Dataset).

        Returns
        -------
        self
        """
        model = self._model()
        samples = self._samples(X, variable)
        n_samples, n_features = samples.array.shape
        if n_samples < model.n_components:
            raise ValueError(
                f"Expected n_samples >= n_components, got n_samples={n_samples} and "
                f"n_components={model.n_components}. Use fewer components or more data."
            )
        initial = self._checked_inits(n_features)

        def make_init(rng: np.random.Generator) -> Params:
            needs_sample = any(v is None for v in initial.values())
            sample = sample_rows(samples.array, self.init_sample_size, rng) if needs_sample else np.empty((0, n_features))
            return initial_params(model, sample, rng, self.init_params, **initial)

        best, _ = fit_restarts(
            model,
            {"X": samples},
            make_init,
            n_init=int(self.n_init),
            random_state=self.random_state,
            tol=float(self.tol),
            max_iter=int(self.max_iter),
            split_every=int(self.split_every),
            checkpoint=self.checkpoint,
            resume=self.resume,
            callback=self.callback,
            persist=self.persist,
        )
        self._set_params(best.params)
        self.converged_ = best.converged
        self.n_iter_ = best.n_iter
        self.lower_bounds_ = list(best.lower_bounds)
        self.lower_bound_ = best.lower_bound
        self.n_features_in_ = int(n_features)
        return self

    def _checked_inits(self, n_features: int) -> dict[str, np.ndarray | None]:
        k, d, ctype = self.n_components, n_features, self.covariance_type
        shapes = {
            "weights_init": (k,),
            "means_init": (k, d),
            "precisions_init": {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[ctype],
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
        return {"weights_init": checked["weights_init"], "means_init": checked["means_init"],
                "precisions_init": checked["precisions_init"]}

    def _set_params(self, params: Params) -> None:
        self.weights_ = params["weights"]
        self.means_ = params["means"]
        self.covariances_ = params["covariances"]
        self.precisions_cholesky_ = params["precisions_cholesky"]
        self.precisions_ = gaussian.precisions_from_cholesky(self.precisions_cholesky_, self.covariance_type)

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

    def _per_sample(self, X: Any, variable: str | None, function: Callable[[np.ndarray], np.ndarray],
                    columns: int | None, dtype: Any = np.float64) -> Any:
        params = self._params()
        samples = self._samples(X, variable)
        if samples.array.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {samples.array.shape[1]} features, but the mixture was fitted with "
                f"{self.n_features_in_}."
            )
        model = self._model()
        return per_sample(samples, lambda x: function(model.weighted_log_prob(x, params)), columns=columns, dtype=dtype)

    def score_samples(self, X: Any, *, variable: str | None = None) -> Any:
        """Log-likelihood of each sample, shape (n_samples,)."""
        return self._per_sample(X, variable, lambda w: logsumexp(w, axis=1), None)

    def predict_proba(self, X: Any, *, variable: str | None = None) -> Any:
        """Responsibilities of each component for each sample, shape (n_samples, n_components)."""
        return self._per_sample(
            X, variable, lambda w: np.exp(w - logsumexp(w, axis=1)[:, None]), self.n_components
        )

    def predict(self, X: Any, *, variable: str | None = None) -> Any:
        """Most probable component of each sample, shape (n_samples,)."""
        return self._per_sample(X, variable, lambda w: np.argmax(w, axis=1), None, dtype=np.int64)

    def fit_predict(self, X: Any, y: Any = None, *, variable: str | None = None) -> Any:
        """Fit, then label the same data with the fitted parameters."""
        return self.fit(X, variable=variable).predict(X, variable=variable)

    def score(self, X: Any, y: Any = None, *, variable: str | None = None) -> float:
        """Mean per-sample log-likelihood (one pass over the data)."""
        params = self._params()
        samples = self._samples(X, variable)
        model = self._model()

        def loglik(block: Block, p: Params) -> Stats:
            return {"n": np.float64(len(block["X"])),
                    "loglik": np.float64(logsumexp(model.weighted_log_prob(block["X"], p), axis=1).sum())}

        stats = map_reduce(loglik, add_stats, {"X": samples.array}, params, split_every=int(self.split_every))
        return float(stats["loglik"] / stats["n"])

    def _n_parameters(self) -> int:
        k, d = self.means_.shape
        return int(gaussian.n_covariance_parameters(self.covariance_type, k, d) + k * d + k - 1)

    def bic(self, X: Any, *, variable: str | None = None) -> float:
        """Bayesian information criterion (lower is better)."""
        n = self._samples(X, variable).n_samples
        return -2 * self.score(X, variable=variable) * n + self._n_parameters() * np.log(n)

    def aic(self, X: Any, *, variable: str | None = None) -> float:
        """Akaike information criterion (lower is better)."""
        n = self._samples(X, variable).n_samples
        return -2 * self.score(X, variable=variable) * n + 2 * self._n_parameters()

    def sample(self, n_samples: int = 1, *, random_state: int | np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n_samples`` points from the fitted mixture; returns (X, component labels)."""
        params = self._params()
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}.")
        rng = np.random.default_rng(self.random_state if random_state is None else random_state)
        counts = rng.multinomial(n_samples, params["weights"])
        k, d = self.means_.shape
        draws = []
        for component, count in enumerate(counts):
            standard = rng.standard_normal((count, d))
            if self.covariance_type == "full":
                factor = np.linalg.cholesky(self.covariances_[component])
                draws.append(self.means_[component] + standard @ factor.T)
            elif self.covariance_type == "tied":
                draws.append(self.means_[component] + standard @ np.linalg.cholesky(self.covariances_).T)
            else:  # diag and spherical scale each coordinate
                draws.append(self.means_[component] + standard * np.sqrt(self.covariances_[component]))
        labels = np.repeat(np.arange(k), counts)
        return np.vstack(draws), labels
