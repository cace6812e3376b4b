"""Gaussian mixture: the E-step, M-step and initialisation, and the estimator.

The E-step of one chunk walks it in row blocks that stay in cache, held transposed
(see :mod:`dem.models.gaussian`); for each block it computes the block's second
moments, the weighted log densities (for full covariances one matrix product for all
components), the responsibilities, and adds the sufficient statistics ``resp_sum``
(Σ r), ``sum_x`` (Σ r (x - c)) and ``scatter`` (Σ r (x - c)(x - c)ᵀ, or its diagonal)
about the shift ``c``: a fixed reference point (the mean of the initialisation sample)
that travels with the parameters, so that the statistics of different iterations are
comparable (online EM blends them). The M-step reproduces scikit-learn's formulas
exactly, including its ``10 * eps`` added to the component counts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy.special import logsumexp
from sklearn.base import DensityMixin, _fit_context
from sklearn.utils._param_validation import StrOptions

from dem.data import sample_rows
from dem.display import HTMLRepr
from dem.engine import map_reduce, prepare
from dem.estimator import (
    EMEstimator,
    NotFittedError,
    RandomState,
    as_generator,
    counts,
    per_sample,
    reals,
)
from dem.model import Block, Params, Stats, add_stats
from dem.models import gaussian
from dem.models.scratch import thread_scratch
from dem.online import blend, fit_online, step_rate
from dem.seeding import kmeans_parallel

BLOCK_ROWS = 2048
EPS = 10 * np.finfo(np.float64).eps
INIT_METHODS = ("auto", "kmeans", "k-means||", "k-means++", "random", "random_from_data")


@dataclass(frozen=True)
class MixtureModel:
    """The pure functions of a Gaussian mixture (see :mod:`dem.model`)."""

    n_components: int
    covariance_type: str = "full"
    reg_covar: float = 1e-6

    name: ClassVar[str] = "gaussian_mixture"
    inputs: ClassVar[tuple[str, ...]] = ("X",)
    missing_ok: ClassVar[frozenset[str]] = frozenset()
    remedy: ClassVar[str] = (
        "Decrease n_components, increase reg_covar, or scale the input data to unit variance."
    )

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
            "shift": ("feature",),
        }

    def e_step(self, block: Block, params: Params) -> Stats:
        return self.e_step_many(block, [params])[0]

    def e_step_many(self, block: Block, runs: Sequence[Params]) -> list[Stats]:
        """Statistics of one chunk at several parameter sets (restarts) in one walk of it.

        Runs with the same shift, product dtype and kind of distances are evaluated as
        one mixture of R·K components: the block is centred and its moments computed
        once, and the distances and the statistics of all runs are each one batched
        matrix product (a product per run, so that a run's statistics are the same bits
        whichever runs share the pass). Tied covariances (one factor per run) are
        evaluated run by run.
        """
        x = block["X"]
        ctype = self.covariance_type
        groups: dict[tuple[Any, ...], list[int]] = {}
        for index, params in enumerate(runs):
            dm = params["means"] - params["shift"]
            dtype = gaussian.product_dtype(
                x.dtype, ctype, gaussian.spread(dm, params["covariances"], ctype)
            )
            key = (
                params["shift"].tobytes(),
                dtype,
                gaussian.expandable(dm, params["precisions_cholesky"], ctype, dtype),
                index if ctype == "tied" else 0,
            )
            groups.setdefault(key, []).append(index)
        stats: list[Stats] = [{} for _ in runs]
        for (_, dtype, _, _), members in groups.items():
            stacked = self._stacked_e_step(x, [runs[i] for i in members], dtype)
            for index, run_stats in zip(members, stacked, strict=True):
                stats[index] = run_stats
        return stats

    def _stacked_e_step(
        self, x: np.ndarray, runs: Sequence[Params], dtype: type[np.floating]
    ) -> list[Stats]:
        """:meth:`e_step_many` for runs sharing the shift: their components side by side.

        For float32 data of a full mixture the large products and the exponentials run
        in float32 on each block; log densities and every sum across blocks are float64.
        """
        n_runs, n_components, n_features = len(runs), self.n_components, x.shape[1]
        ctype = self.covariance_type
        shift = runs[0]["shift"]
        distances, constants = self._log_density_terms(runs, shift, dtype)
        loglik = np.zeros(n_runs)
        resp_sum = np.zeros(n_runs * n_components)
        sum_x = np.zeros((n_runs * n_components, n_features))
        scatter = gaussian.scatter_zeros(ctype, n_runs * n_components, n_features)
        scratch = thread_scratch("mixture")  # every statistic below is a fresh array
        for xt in gaussian.transposed_blocks(x, shift, dtype, BLOCK_ROWS, scratch):
            moments = gaussian.MOMENTS[ctype](xt, scratch)
            log_prob = _log_prob(constants, distances(xt, moments, scratch), scratch)
            shape = (n_runs, n_components, xt.shape[1])
            resp, log_norm = responsibilities(log_prob.reshape(shape), dtype, scratch)
            loglik += log_norm.sum(axis=-1)
            # batched over runs (a product per run, see gaussian's DISTANCES notes)
            block_resp, block_x, block_scatter = gaussian.SUMS[ctype](xt, moments, resp)
            resp_sum += block_resp.reshape(resp_sum.shape)
            sum_x += block_x.reshape(sum_x.shape)
            scatter += block_scatter.reshape(scatter.shape)
        runs_of = [slice(run * n_components, (run + 1) * n_components) for run in range(n_runs)]
        return [
            {
                "n": np.float64(len(x)),
                "loglik": loglik[run],
                "resp_sum": resp_sum[rows],
                "sum_x": sum_x[rows],
                # tied: one run per call, and its scatter is not per component
                "scatter": gaussian.unpack_scatter(
                    scatter if ctype == "tied" else scatter[rows], ctype, n_features
                ),
            }
            for run, rows in enumerate(runs_of)
        ]

    def _log_density_terms(
        self, runs: Sequence[Params], shift: np.ndarray, dtype: type[np.floating]
    ) -> tuple[gaussian.DistanceFunction, np.ndarray]:
        """The distance function of the runs' components side by side, about ``shift``,
        and their constants log(w_k) + log det P_k - (d/2) log 2π (R·K, 1)."""
        ctype = self.covariance_type
        prec_chol = (
            runs[0]["precisions_cholesky"]  # a single run
            if ctype == "tied"
            else np.concatenate([p["precisions_cholesky"] for p in runs])
        )
        dm = np.concatenate([p["means"] for p in runs]) - shift
        n_features = dm.shape[1]
        distances = gaussian.DISTANCES[ctype](dm, prec_chol, dtype, len(runs))
        constants = np.concatenate(
            [
                gaussian.log_prob_constants(
                    np.log(p["weights"]), p["precisions_cholesky"], ctype, n_features
                )
                for p in runs
            ]
        )
        return distances, constants

    def combine(self, a: Stats, b: Stats) -> Stats:
        return add_stats(a, b)

    def m_step(self, stats: Stats, params: Params) -> Params:
        return estimate_params(stats, params["shift"], self.covariance_type, self.reg_covar)

    # --- parameters as a flat vector, for SQUAREM ----------------------------------------

    def pack(self, params: Params) -> np.ndarray:
        """Weights, means and covariances as one vector."""
        return np.concatenate([params[k].ravel() for k in ("weights", "means", "covariances")])

    def unpack(self, vector: np.ndarray, like: Params) -> Params:
        """Parameters from a vector, projected onto valid ones.

        Weights are clipped at 1e-12 and renormalised; covariances are symmetrised and
        their eigenvalues (variances, for diag and spherical) floored at ``reg_covar``,
        the smallest value an EM step can produce.
        """
        parts, offset = {}, 0
        for key in ("weights", "means", "covariances"):
            size = like[key].size
            parts[key] = vector[offset : offset + size].reshape(like[key].shape)
            offset += size
        weights = np.maximum(parts["weights"], 1e-12)
        floor = max(self.reg_covar, 1e-12)
        covariances = parts["covariances"]
        if self.covariance_type in ("full", "tied"):
            stack = covariances.reshape(-1, *covariances.shape[-2:])
            values, vectors = np.linalg.eigh(0.5 * (stack + stack.transpose(0, 2, 1)))
            stack = np.einsum("kij,kj,klj->kil", vectors, np.maximum(values, floor), vectors)
            covariances = stack.reshape(covariances.shape)
        else:
            covariances = np.maximum(covariances, floor)
        return {
            "weights": weights / weights.sum(),
            "means": parts["means"].copy(),
            "covariances": covariances,
            "precisions_cholesky": gaussian.precision_cholesky(covariances, self.covariance_type),
            "shift": like["shift"],
        }

    # --- per-sample functions, applied to any rows ---------------------------------

    def weighted_log_prob(self, x: np.ndarray, params: Params) -> np.ndarray:
        """log(w_k) + log N(x | mu_k, Sigma_k) for each row of ``x``: (n, K)."""
        ctype = self.covariance_type
        shift = mixture_mean(params)
        dtype = gaussian.product_dtype(
            x.dtype, ctype, gaussian.spread(params["means"] - shift, params["covariances"], ctype)
        )
        distances, constants = self._log_density_terms([params], shift, dtype)
        out = np.empty((self.n_components, len(x)))
        start = 0
        scratch = gaussian.Scratch()
        for xt in gaussian.transposed_blocks(x, shift, dtype, BLOCK_ROWS):
            distance = distances(xt, gaussian.MOMENTS[ctype](xt, scratch), scratch)
            out[:, start : start + xt.shape[1]] = _log_prob(constants, distance, scratch)
            start += xt.shape[1]
        return out.T


def _log_prob(
    constants: np.ndarray, distances: np.ndarray, scratch: gaussian.Scratch
) -> np.ndarray:
    """constants - distances / 2 in float64 (K, n), in the scratch buffer "log_prob"."""
    log_prob = np.multiply(distances, -0.5, out=scratch("log_prob", distances.shape))
    log_prob += constants
    return log_prob


def responsibilities(
    log_prob: np.ndarray,
    dtype: type[np.floating] = np.float64,
    scratch: gaussian.Scratch | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Responsibilities (..., K, n) in ``dtype`` and log Σ_k exp (..., n) in float64.

    ``log_prob`` (..., K, n, float64, weighted log densities; leading axes for stacked
    runs) is overwritten: for float64 it becomes the responsibilities. The reductions
    run over the components axis -2, as fast elementwise passes over rows of n; only
    the exponentials of log_prob - max run in ``dtype`` (float32 ones in ``scratch``).
    """
    top = log_prob.max(axis=-2, keepdims=True)
    log_prob -= top
    if dtype == np.float64:
        resp = log_prob
    else:
        resp = (scratch or gaussian.Scratch())("resp", log_prob.shape, dtype)
        resp[...] = log_prob
    np.exp(resp, out=resp)
    total = resp.sum(axis=-2, keepdims=True)
    resp /= total
    return resp, (np.log(total, dtype=np.float64) + top).squeeze(-2)


def mixture_mean(params: Params) -> np.ndarray:
    """Σ w_k μ_k: a good reference point for the rows of this mixture."""
    return params["weights"] @ params["means"]


def estimate_params(
    stats: Stats, shift: np.ndarray, covariance_type: str, reg_covar: float
) -> Params:
    """Weights, means, covariances and precision factors from statistics about ``shift``."""
    resp_sum = np.asarray(stats["resp_sum"])
    counts = resp_sum + EPS
    # means = Σ r x / counts, written about the shift so nothing cancels
    dm = stats["sum_x"] / counts[:, None] - shift * (EPS / counts)[:, None]
    covariances = gaussian.COVARIANCE[covariance_type](
        stats["scatter"], resp_sum, stats["sum_x"], dm, counts, reg_covar
    )
    return {
        "weights": counts / counts.sum(),
        "means": shift + dm,
        "shift": shift,
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


def kmeans_labels(
    x: np.ndarray, n_clusters: int, rng: np.random.Generator, max_iter: int = 100
) -> np.ndarray:
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
    "random": lambda x, k, rng: (lambda r: r / r.sum(axis=1, keepdims=True))(
        rng.uniform(size=(len(x), k))
    ),
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
    return _overridden(params, ctype, weights_init, means_init, precisions_init)


def resolve_init(init_params: str, n_samples: int, init_sample_size: int) -> str:
    """The method ``"auto"`` stands for, given the number of rows.

    ``"k-means||"`` over all the data when they have more rows than the initialisation
    sample (``init_sample_size``); else ``"kmeans"`` on the sample, which is then all
    the rows.
    """
    if init_params != "auto":
        return init_params
    return "k-means||" if n_samples > init_sample_size else "kmeans"


def kmeans_parallel_params(
    models: list[MixtureModel],
    array: Any,
    rngs: list[np.random.Generator],
    *,
    split_every: int,
    weights_init: np.ndarray | None = None,
    means_init: np.ndarray | None = None,
    precisions_init: np.ndarray | None = None,
) -> list[Params]:
    """Starting parameters from k-means‖ over all the data, one per (model, generator).

    The seedings share their passes (see :mod:`dem.seeding`); the parameters are those
    of the hard assignment of the rows to the K clusters, as for ``"kmeans"``.
    """
    ctype = models[0].covariance_type
    seedings = kmeans_parallel(
        array, [m.n_components for m in models], rngs, scatter=ctype, split_every=split_every
    )
    return [
        _overridden(
            estimate_params(seeding.stats, seeding.shift, ctype, model.reg_covar),
            ctype,
            weights_init,
            means_init,
            precisions_init,
        )
        for model, seeding in zip(models, seedings, strict=True)
    ]


def _overridden(
    params: Params,
    ctype: str,
    weights_init: np.ndarray | None,
    means_init: np.ndarray | None,
    precisions_init: np.ndarray | None,
) -> Params:
    if weights_init is not None:
        params["weights"] = np.asarray(weights_init, dtype=np.float64).copy()
    if means_init is not None:
        params["means"] = np.asarray(means_init, dtype=np.float64).copy()
    if precisions_init is not None:
        precisions = np.asarray(precisions_init, dtype=np.float64)
        params["precisions_cholesky"] = gaussian.precision_cholesky_from_precisions(
            precisions, ctype
        )
        params["covariances"] = gaussian.covariances_from_precisions(precisions, ctype)
    if "shift" not in params:  # every start was given: no sample was drawn
        params["shift"] = mixture_mean(params)
    return params


# --- the estimator ----------------------------------------------------------------


class GaussianMixture(HTMLRepr, DensityMixin, EMEstimator):
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
    split_every : int, default=8
        Fan-in of the tree that sums the per-chunk statistics.
    persist : bool, optional
        Keep the data in cluster memory between iterations. By default, data
        taking at most half the cluster's memory are persisted; larger data are
        re-read from their store every iteration.
    init_sample_size : int, default=100_000
        Rows drawn for the initialisation.
    accelerate : {"none", "squarem"}, default="none"
        ``"squarem"`` extrapolates between EM steps (Varadhan & Roland 2008), usually
        reaching the same optimum in far fewer passes over the data; ``max_iter``
        then counts passes and ``lower_bounds_`` has one entry per cycle.
    method : {"batch", "online"}, default="batch"
        ``"online"`` starts with ``online_passes`` passes of online (stepwise) EM
        (Cappé & Moulines 2009; see :mod:`dem.online`), updating the parameters after
        every ``batch_chunks`` chunks with rate ``(t + 1) ** -step_exponent``, then
        continues with batch EM for up to ``max_iter`` iterations (``max_iter=0``:
        online only).
    online_passes, batch_chunks : int
    step_exponent : float in (0.5, 1]
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
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "auto",
        weights_init: Any = None,
        means_init: Any = None,
        precisions_init: Any = None,
        random_state: RandomState = None,
        checkpoint: Any = None,
        resume: bool = False,
        split_every: int = 8,
        persist: bool | None = None,
        init_sample_size: int = 100_000,
        accelerate: str = "none",
        method: str = "batch",
        online_passes: int = 1,
        batch_chunks: int = 1,
        step_exponent: float = 0.6,
        warm_start: bool = False,
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
        self.accelerate = accelerate
        self.method = method
        self.online_passes = online_passes
        self.batch_chunks = batch_chunks
        self.step_exponent = step_exponent
        self.warm_start = warm_start
        self.callback = callback
        self.sample_dim = sample_dim
        self.feature_dim = feature_dim

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **EMEstimator._parameter_constraints,
        "n_components": counts(1),
        "covariance_type": [StrOptions(set(gaussian.COVARIANCE_TYPES))],
        "reg_covar": reals(0),
        "max_iter": counts(0),
        "init_params": [StrOptions(set(INIT_METHODS))],
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "precisions_init": ["array-like", None],
    }

    # --- fitting ----------------------------------------------------------------------

    def _model(self) -> MixtureModel:
        self._validate_params()  # also for dem.select_n_components, which fits no template
        return MixtureModel(int(self.n_components), self.covariance_type, float(self.reg_covar))

    @_fit_context(prefer_skip_nested_validation=True)
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
        if self.max_iter == 0 and self.method == "batch":
            raise ValueError("max_iter must be >= 1 for method='batch' (0 is for online only).")
        samples = self._samples(X, variable)
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
            persisted = prepare({"X": samples.array}, self.persist)["X"]
            samples = dataclasses.replace(samples, array=persisted)

        def first_start(rng: np.random.Generator) -> Params:
            if needs_data and method == "k-means||":
                return kmeans_parallel_params(
                    [model], samples.array, [rng], split_every=int(self.split_every), **initial
                )[0]
            sample = (
                sample_rows(samples.array, self.init_sample_size, rng)
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
            if self.method == "batch":
                return start
            online = fit_online(
                model,
                {"X": samples.array},
                lambda: start,
                n_passes=int(self.online_passes),
                batch_chunks=int(self.batch_chunks),
                step_exponent=float(self.step_exponent),
                random_state=rng,
                split_every=int(self.split_every),
                persist=self.persist,
            )
            online_stages.append(online)
            return online.params

        online_stages: list[Any] = []  # in run order (runs resumed from a checkpoint skip this)
        best, results = self._fit_restarts(model, {"X": samples}, make_init)
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
        ``(t + 1) ** -step_exponent`` and runs the M-step on it. ``lower_bound_`` is
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
            state["running"], stats, step_rate(state["updates"], float(self.step_exponent))
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

    def _per_sample(
        self,
        X: Any,
        variable: str | None,
        function: Callable[[np.ndarray], np.ndarray],
        columns: int | None,
        dtype: Any = np.float64,
    ) -> Any:
        params = self._params()
        samples = self._samples(X, variable)
        self._check_features(X, variable, int(samples.array.shape[1]))
        model = self._model()
        return per_sample(
            samples,
            lambda x: function(model.weighted_log_prob(x, params)),
            columns=columns,
            dtype=dtype,
        )

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
        self._check_features(X, variable, int(samples.array.shape[1]))
        model = self._model()

        def loglik(block: Block, p: Params) -> Stats:
            return {
                "n": np.float64(len(block["X"])),
                "loglik": np.float64(
                    logsumexp(model.weighted_log_prob(block["X"], p), axis=1).sum()
                ),
            }

        stats = map_reduce(
            loglik,
            add_stats,
            {"X": samples.array},
            params,
            split_every=int(self.split_every),
            missing_ok=model.missing_ok,
        )
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

    def sample(
        self, n_samples: int = 1, *, random_state: RandomState = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n_samples`` points from the fitted mixture; returns (X, component labels)."""
        params = self._params()
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}.")
        rng = as_generator(self.random_state if random_state is None else random_state)
        counts = rng.multinomial(n_samples, params["weights"])
        k, d = self.means_.shape
        draws = []
        for component, count in enumerate(counts):
            standard = rng.standard_normal((count, d))
            if self.covariance_type == "full":
                factor = np.linalg.cholesky(self.covariances_[component])
                draws.append(self.means_[component] + standard @ factor.T)
            elif self.covariance_type == "tied":
                draws.append(
                    self.means_[component] + standard @ np.linalg.cholesky(self.covariances_).T
                )
            else:  # diag and spherical scale each coordinate
                draws.append(
                    self.means_[component] + standard * np.sqrt(self.covariances_[component])
                )
        labels = np.repeat(np.arange(k), counts)
        return np.vstack(draws), labels
