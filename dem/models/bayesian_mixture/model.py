"""The variational Gaussian mixture as an :class:`~dem.model.EMModel`: what the engine calls.

:class:`BayesianMixtureModel` holds the configuration (K, the covariance type,
``reg_covar``, the weight prior's type and the priors the user set; the priors the
data decide travel in the parameters). Its E-step is the Gaussian mixture's
(:class:`~dem.models.mixture.model.MixtureModel`, several restarts in one walk of a
chunk), evaluated with the parameters' ``log_weights`` in place of log(weights), plus
the chunk's Σ r log r from its statistics; the M-step is the variational one; the
``lower_bound`` hook gives the engine scikit-learn's lower bound to trace and to test
convergence on. There is no ``pack``/``unpack``: SQUAREM is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from dem.model import Block, Params, Stats, add_stats
from dem.models.bayesian_mixture import kernels
from dem.models.mixture.model import MixtureModel


@dataclass(frozen=True)
class BayesianMixtureModel:
    """The pure functions of a variational Gaussian mixture (see :mod:`dem.model`).

    ``weight_concentration_prior``, ``mean_precision_prior`` and
    ``degrees_of_freedom_prior`` are the user's (None: the default); ``mean_prior`` and
    ``covariance_prior`` are the user's as nested lists, or None for the data's. They
    identify the fit (a checkpoint's configuration); the values in use are parameters.
    """

    n_components: int
    covariance_type: str = "full"
    reg_covar: float = 1e-6
    weight_concentration_prior_type: str = "dirichlet_process"
    weight_concentration_prior: float | None = None
    mean_precision_prior: float | None = None
    degrees_of_freedom_prior: float | None = None
    mean_prior: Any = None
    covariance_prior: Any = None

    name: ClassVar[str] = "bayesian_gaussian_mixture"
    inputs: ClassVar[tuple[str, ...]] = ("X",)
    missing_ok: ClassVar[frozenset[str]] = frozenset()
    remedy: ClassVar[str] = (
        "Increase reg_covar or covariance_prior, or scale the input data to unit variance."
    )

    def __hash__(self) -> int:  # the list-valued priors are not hashable
        return hash(repr(self))

    @cached_property
    def mixture(self) -> MixtureModel:
        """The Gaussian mixture whose E-step this model runs."""
        return MixtureModel(self.n_components, self.covariance_type, self.reg_covar)

    def config(self) -> dict[str, Any]:
        return {
            "n_components": self.n_components,
            "covariance_type": self.covariance_type,
            "reg_covar": self.reg_covar,
            "weight_concentration_prior_type": self.weight_concentration_prior_type,
            "weight_concentration_prior": self.weight_concentration_prior,
            "mean_precision_prior": self.mean_precision_prior,
            "degrees_of_freedom_prior": self.degrees_of_freedom_prior,
            "mean_prior": self.mean_prior,
            "covariance_prior": self.covariance_prior,
        }

    def param_dims(self) -> dict[str, tuple[str, ...]]:
        dims = self.mixture.param_dims()
        cov_prior = {
            "full": ("feature", "feature_"),
            "tied": ("feature", "feature_"),
            "diag": ("feature",),
            "spherical": (),
        }[self.covariance_type]
        concentration = (
            ("beta_parameter", "component")
            if self.weight_concentration_prior_type == "dirichlet_process"
            else ("component",)
        )
        return {
            **dims,
            "weight_concentration": concentration,
            "mean_precision": ("component",),
            "degrees_of_freedom": () if self.covariance_type == "tied" else ("component",),
            "log_weights": ("component",),
            "weight_concentration_prior": (),
            "mean_precision_prior": (),
            "degrees_of_freedom_prior": (),
            "mean_prior": ("feature",),
            "covariance_prior": cov_prior,
        }

    def e_step(self, block: Block, params: Params) -> Stats:
        return self.e_step_many(block, [params])[0]

    def e_step_many(self, block: Block, runs: Sequence[Params]) -> list[Stats]:
        """The Gaussian mixture's statistics at each run's parameters (their
        ``log_weights`` in place of log(weights)), with each run's Σ r log r."""
        stats = self.mixture.e_step_many(block, runs)
        for run_stats, params in zip(stats, runs, strict=True):
            run_stats["resp_log_resp"] = np.float64(
                kernels.resp_log_resp(run_stats, params, self.covariance_type)
            )
        return stats

    def combine(self, a: Stats, b: Stats) -> Stats:
        return add_stats(a, b)

    def m_step(self, stats: Stats, params: Params) -> Params:
        return kernels.estimate_posterior(
            stats,
            params,
            self.covariance_type,
            self.weight_concentration_prior_type,
            self.reg_covar,
        )

    def lower_bound(self, stats: Stats, params: Params) -> float:
        """scikit-learn's ``lower_bound_`` (total, not per sample) after the M-step that
        made ``params`` from ``stats``."""
        return kernels.lower_bound(
            float(stats["resp_log_resp"]),
            params,
            self.covariance_type,
            self.weight_concentration_prior_type,
        )

    def weighted_log_prob(self, x: np.ndarray, params: Params) -> np.ndarray:
        """scikit-learn's ``_estimate_weighted_log_prob`` for each row of ``x``: (n, K)."""
        return self.mixture.weighted_log_prob(x, params)
