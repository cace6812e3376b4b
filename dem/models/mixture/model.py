"""The Gaussian mixture as an :class:`~dem.model.EMModel`: what the engine calls.

:class:`MixtureModel` holds the configuration (K, the covariance type, ``reg_covar``)
and its pure functions: the E-step of one chunk (several restarts at once with
``e_step_many``), ``combine``, the M-step, ``pack``/``unpack`` for SQUAREM, and the
weighted log densities of any rows for the per-sample methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from dem.model import Block, Params, Stats, add_stats
from dem.models import gaussian
from dem.models.mixture import kernels
from dem.models.scratch import thread_scratch


def log_weights(params: Params) -> np.ndarray:
    """The per-component term added to the Gaussian log densities: ``params["log_weights"]``
    where the parameters carry it (the variational mixture's expected log weights and
    Wishart terms, :mod:`dem.models.bayesian_mixture`), else log(weights)."""
    if "log_weights" in params:
        return np.asarray(params["log_weights"])
    return np.log(params["weights"])


def _sums(
    covariance_type: str,
    xt: np.ndarray,
    moments: np.ndarray,
    resp: np.ndarray,
    weights: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``gaussian.SUMS`` with the responsibilities already scaled by the weights; the
    tied scatter Σ w x xᵀ, which is no product with them, weighted here."""
    if covariance_type == "tied" and weights is not None:
        return resp.sum(axis=-1), resp @ xt[:-1].T, (moments * weights) @ moments.T
    return gaussian.SUMS[covariance_type](xt, moments, resp)


@dataclass(frozen=True)
class MixtureModel:
    """The pure functions of a Gaussian mixture (see :mod:`dem.model`)."""

    n_components: int
    covariance_type: str = "full"
    reg_covar: float = 1e-6

    name: ClassVar[str] = "gaussian_mixture"
    inputs: ClassVar[tuple[str, ...]] = ("X",)
    missing_ok: ClassVar[frozenset[str]] = frozenset()
    comparable_stats: ClassVar[bool] = True  # sums about a shift fixed for the fit
    # expected_loglik is the expected complete-data log-likelihood of its statistics
    # (subclasses whose statistics hold more, or other terms, set this False)
    free_energy: ClassVar[bool] = True
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

    def start(self, params: Params) -> Params:
        """Starting parameters from the Gaussian ones the initialisation (:mod:`.init`)
        computes: unchanged here; a subclass adds its own (the Student mixture's ν)."""
        return params

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
        weights = block.get("sample_weight")  # absent: every row has weight 1
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
            stacked = self._stacked_e_step(x, [runs[i] for i in members], dtype, weights)
            for index, run_stats in zip(members, stacked, strict=True):
                stats[index] = run_stats
        return stats

    def _stacked_e_step(
        self,
        x: np.ndarray,
        runs: Sequence[Params],
        dtype: type[np.floating],
        weights: np.ndarray | None = None,
    ) -> list[Stats]:
        """:meth:`e_step_many` for runs sharing the shift: their components side by side.

        For float32 data of a full mixture the large products and the exponentials run
        in float32 on each block; log densities and every sum across blocks are float64.
        With ``weights`` (one per row) every statistic is the weighted sum: the
        responsibilities are scaled by the weights, and rows of weight 0 are zeroed
        first so that no value of theirs reaches a sum.
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
        blocks = gaussian.transposed_blocks(x, shift, dtype, kernels.BLOCK_ROWS, scratch)
        for start, xt in zip(range(0, len(x), kernels.BLOCK_ROWS), blocks, strict=True):
            w = None if weights is None else weights[start : start + xt.shape[1]]
            if w is not None and not w.all():
                xt[:-1, w == 0] = 0.0  # rows of weight 0 add nothing, whatever they hold
            moments = gaussian.MOMENTS[ctype](xt, scratch)
            log_prob = kernels.log_prob(constants, distances(xt, moments, scratch), scratch)
            shape = (n_runs, n_components, xt.shape[1])
            resp, log_norm = kernels.responsibilities(log_prob.reshape(shape), dtype, scratch)
            if w is None:
                loglik += log_norm.sum(axis=-1)
            else:
                loglik += log_norm @ w
                resp *= w.astype(resp.dtype, copy=False)
            # batched over runs (a product per run, see gaussian's DISTANCES notes)
            block_resp, block_x, block_scatter = _sums(ctype, xt, moments, resp, w)
            resp_sum += block_resp.reshape(resp_sum.shape)
            sum_x += block_x.reshape(sum_x.shape)
            scatter += block_scatter.reshape(scatter.shape)
        runs_of = [slice(run * n_components, (run + 1) * n_components) for run in range(n_runs)]
        return [
            {
                "n": np.float64(len(x) if weights is None else np.sum(weights)),
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
                    log_weights(p), p["precisions_cholesky"], ctype, n_features
                )
                for p in runs
            ]
        )
        return distances, constants

    def combine(self, a: Stats, b: Stats) -> Stats:
        return add_stats(a, b)

    def m_step(self, stats: Stats, params: Params) -> Params:
        return kernels.estimate_params(stats, params["shift"], self.covariance_type, self.reg_covar)

    def expected_loglik(self, stats: Stats, params: Params) -> float:
        """Expected complete-data log-likelihood of ``stats`` at ``params`` (incremental
        EM's free energy; :func:`kernels.expected_complete_loglik`)."""
        return kernels.expected_complete_loglik(stats, params, self.covariance_type)

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
        shift = kernels.mixture_mean(params)
        dtype = gaussian.product_dtype(
            x.dtype, ctype, gaussian.spread(params["means"] - shift, params["covariances"], ctype)
        )
        distances, constants = self._log_density_terms([params], shift, dtype)
        out = np.empty((self.n_components, len(x)))
        start = 0
        scratch = gaussian.Scratch()
        for xt in gaussian.transposed_blocks(x, shift, dtype, kernels.BLOCK_ROWS):
            distance = distances(xt, gaussian.MOMENTS[ctype](xt, scratch), scratch)
            out[:, start : start + xt.shape[1]] = kernels.log_prob(constants, distance, scratch)
            start += xt.shape[1]
        return out.T
