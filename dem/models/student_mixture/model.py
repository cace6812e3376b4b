"""The Student-t mixture as an :class:`~dem.model.EMModel`: what the engine calls.

:class:`StudentMixtureModel` extends the Gaussian mixture's model
(:class:`~dem.models.mixture.model.MixtureModel`: configuration, distances, SQUAREM
packing) with the degrees of freedom: the E-step adds the latent scale weights and
E[log τ] to the statistics, the M-step the ν step (see :mod:`.kernels`). Everything is
computed in float64, also for float32 data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from dem.model import Block, Params, Stats
from dem.models import gaussian
from dem.models.mixture import kernels as mixture_kernels
from dem.models.mixture.model import MixtureModel
from dem.models.sample_weight import block_weights, count, positive
from dem.models.scratch import thread_scratch
from dem.models.student_mixture import kernels


@dataclass(frozen=True)
class StudentMixtureModel(MixtureModel):
    """The pure functions of a mixture of multivariate t distributions (see :mod:`dem.model`).

    ``dof`` is None (one ν per component, estimated), ``"tied"`` (one shared ν,
    estimated) or a positive number (every ν fixed to it).
    """

    dof: float | str | None = None

    free_energy: ClassVar[bool] = False  # the Gaussian expected_loglik misses terms
    name: ClassVar[str] = "student_mixture"
    remedy: ClassVar[str] = (
        "Decrease n_components, increase reg_covar, fix dof (e.g. dof=4), or scale the "
        "input data to unit variance."
    )

    def config(self) -> dict[str, Any]:
        return {**super().config(), "dof": self.dof}

    def param_dims(self) -> dict[str, tuple[str, ...]]:
        return {**super().param_dims(), "dofs": ("component",)}

    def start(self, params: Params) -> Params:
        """The Gaussian start with degrees of freedom: the fixed value, else ``DOF_START``."""
        fixed = self.dof is not None and self.dof != "tied"
        value = float(self.dof) if fixed else kernels.DOF_START  # type: ignore[arg-type]
        return {**params, "dofs": np.full(self.n_components, value)}

    def e_step_many(self, block: Block, runs: Sequence[Params]) -> list[Stats]:
        """Statistics of one chunk at several parameter sets (restarts) in one walk of it.

        As the Gaussian mixture's: runs with the same shift and kind of distances are
        one mixture of R·K components, each product batched per run so that a run's
        statistics are the same bits whichever runs share the pass; tied covariances
        run by run.
        """
        sample_weight, (x,) = positive(block_weights(block), block["X"])
        groups: dict[tuple[Any, ...], list[int]] = {}
        for index, params in enumerate(runs):
            key = (
                params["shift"].tobytes(),
                gaussian.expandable(
                    params["means"] - params["shift"],
                    params["precisions_cholesky"],
                    self.covariance_type,
                    np.float64,
                ),
                index if self.covariance_type == "tied" else 0,
            )
            groups.setdefault(key, []).append(index)
        stats: list[Stats] = [{} for _ in runs]
        for members in groups.values():
            stacked = self._stacked_t_e_step(x, [runs[i] for i in members], sample_weight)
            for index, run_stats in zip(members, stacked, strict=True):
                stats[index] = run_stats
        return stats

    def _stacked_t_e_step(
        self, x: np.ndarray, runs: Sequence[Params], sample_weight: np.ndarray | None = None
    ) -> list[Stats]:
        """The statistics of runs sharing the shift; with ``sample_weight`` (rows of
        weight 0 already removed) every sum weighted, through the responsibilities."""
        n_runs, n_components, n_features = len(runs), self.n_components, x.shape[1]
        ctype = self.covariance_type
        shift = runs[0]["shift"]
        distances, constants = self._log_density_terms(runs, shift, np.float64)
        dofs = np.concatenate([p["dofs"] for p in runs])
        constants = constants + kernels.dof_constants(dofs, n_features)[:, None]
        loglik = np.zeros(n_runs)
        sums = [
            np.zeros(n_runs * n_components),  # Σ r
            np.zeros(n_runs * n_components),  # Σ r u
            np.zeros((n_runs * n_components, n_features)),  # Σ r u (x - c)
            gaussian.scatter_zeros(ctype, n_runs * n_components, n_features),
            np.zeros(n_runs * n_components),  # Σ r log1p(δ²/ν)
        ]
        scratch = thread_scratch("student_mixture")  # every statistic is a fresh array
        blocks = gaussian.transposed_blocks(
            x, shift, np.float64, mixture_kernels.BLOCK_ROWS, scratch
        )
        for start, xt in zip(range(0, len(x), mixture_kernels.BLOCK_ROWS), blocks, strict=True):
            w = None if sample_weight is None else sample_weight[start : start + xt.shape[1]]
            moments = gaussian.MOMENTS[ctype](xt, scratch)
            squared = distances(xt, moments, scratch)
            log_prob, log_ratio = kernels.log_densities(
                squared, dofs, constants, n_features, scratch
            )
            shape = (n_runs, n_components, xt.shape[1])
            resp, log_norm = mixture_kernels.responsibilities(log_prob.reshape(shape))
            if w is None:
                loglik += log_norm.sum(axis=-1)
            else:
                loglik += log_norm @ w
                resp *= w
            weights = kernels.scale_weights(squared, dofs, n_features)
            block = kernels.block_sums(
                ctype,
                xt,
                moments,
                resp,
                weights.reshape(shape),
                log_ratio.reshape(shape),
                scratch,
            )
            for total, part in zip(sums, block, strict=True):
                total += part.reshape(total.shape)
        resp_sum, u_sum, sum_x, scatter, log_ratio_sum = sums
        log_u_sum = kernels.log_scale_offset(dofs, n_features) * resp_sum - log_ratio_sum
        rows = [slice(run * n_components, (run + 1) * n_components) for run in range(n_runs)]
        return [
            {
                "n": count(len(x), sample_weight),
                "loglik": loglik[run],
                "resp_sum": resp_sum[part],
                "u_sum": u_sum[part],
                "sum_x": sum_x[part],
                # tied: one run per call, and its scatter is not per component
                "scatter": gaussian.unpack_scatter(
                    scatter if ctype == "tied" else scatter[part], ctype, n_features
                ),
                "log_u_sum": log_u_sum[part],
            }
            for run, part in enumerate(rows)
        ]

    def m_step(self, stats: Stats, params: Params) -> Params:
        return kernels.estimate_params(
            stats,
            params["shift"],
            self.covariance_type,
            self.reg_covar,
            self.dof,
            params["dofs"],
        )

    # --- parameters as a flat vector, for SQUAREM ----------------------------------------

    def pack(self, params: Params) -> np.ndarray:
        """The Gaussian mixture's vector, then log ν."""
        return np.concatenate([super().pack(params), np.log(params["dofs"])])

    def unpack(self, vector: np.ndarray, like: Params) -> Params:
        """The Gaussian mixture's projection, and ν clipped to ``DOF_BOUNDS`` (fixed
        degrees of freedom stay as they are)."""
        n_dofs = len(like["dofs"])
        params = super().unpack(vector[:-n_dofs], like)
        if self.dof is not None and self.dof != "tied":
            return {**params, "dofs": like["dofs"].copy()}
        dofs = np.clip(np.exp(vector[-n_dofs:]), *kernels.DOF_BOUNDS)
        if self.dof == "tied":
            dofs = np.full(n_dofs, dofs.mean())
        return {**params, "dofs": dofs}

    # --- per-sample functions, applied to any rows ---------------------------------

    def weighted_log_prob(self, x: np.ndarray, params: Params) -> np.ndarray:
        """log(w_k) + log t(x | μ_k, Σ_k, ν_k) for each row of ``x``: (n, K)."""
        shift = mixture_kernels.mixture_mean(params)
        distances, constants = self._log_density_terms([params], shift, np.float64)
        n_features = x.shape[1]
        dofs = params["dofs"]
        constants = constants + kernels.dof_constants(dofs, n_features)[:, None]
        out = np.empty((self.n_components, len(x)))
        start = 0
        scratch = gaussian.Scratch()
        for xt in gaussian.transposed_blocks(x, shift, np.float64, mixture_kernels.BLOCK_ROWS):
            squared = distances(xt, gaussian.MOMENTS[self.covariance_type](xt, scratch), scratch)
            log_prob, _ = kernels.log_densities(squared, dofs, constants, n_features, scratch)
            out[:, start : start + xt.shape[1]] = log_prob
            start += xt.shape[1]
        return out.T
