"""The mixture of factor analyzers as an :class:`~dem.model.EMModel`: what the engine calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from dem.model import Block, Params, Stats
from dem.models.factor_mixture.kernels import (
    BLOCK_ROWS,
    EMPTY_COMPONENT,
    MixtureTerms,
    add_complete,
    add_incomplete,
    complete_posterior,
    component_step,
    data_variance,
    empty_stats,
    incomplete_posterior_all,
)
from dem.models.missing_rows import MISSING_ZZ, RowKernels, combine
from dem.models.ppca.kernels import packing
from dem.models.sample_weight import block_weights, positive
from dem.models.scratch import Scratch, thread_scratch

NOISE_TYPES = ("per_feature", "isotropic")
MODEL_NAME = "mixture_of_factor_analyzers"
ROW_KERNELS = RowKernels(add_complete, add_incomplete, BLOCK_ROWS)


@dataclass(frozen=True)
class FactorMixtureModel:
    """The pure functions of a mixture of factor analyzers (``noise="per_feature"``) or of
    probabilistic PCA (``noise="isotropic"``); see :mod:`dem.model`.

    ``reg_noise`` floors every noise variance at that fraction of the mean variance of
    the features (measured in each E-step over all the data: it does not change from
    iteration to iteration, so the floored M-step is exact and EM stays monotone).
    """

    n_components: int
    n_factors: int
    noise: str = "per_feature"
    reg_noise: float = 1e-6

    name: ClassVar[str] = MODEL_NAME
    inputs: ClassVar[tuple[str, ...]] = ("X",)
    missing_ok: ClassVar[frozenset[str]] = frozenset({"X"})
    remedy: ClassVar[str] = (
        "Decrease n_components or n_factors, increase reg_noise, drop constant or "
        "duplicated features, or scale the input data to unit variance."
    )

    def config(self) -> dict[str, Any]:
        return {
            "n_components": self.n_components,
            "n_factors": self.n_factors,
            "noise": self.noise,
            "reg_noise": self.reg_noise,
        }

    def param_dims(self) -> dict[str, tuple[str, ...]]:
        return {
            "weights": ("component",),
            "means": ("component", "feature"),
            "loadings": ("component", "feature", "factor"),
            "noise_variance": ("component",)
            if self.noise == "isotropic"
            else ("component", "feature"),
            "shift": ("feature",),
        }

    # --- EM ------------------------------------------------------------------------------

    def e_step(self, block: Block, params: Params) -> Stats:
        weights, (x,) = positive(block_weights(block), block["X"])
        terms = MixtureTerms.of(params)
        n_features = x.shape[1]
        k, q = self.n_components, self.n_factors
        stats = empty_stats(k, n_features, q)
        missing_zz = np.zeros((k, n_features, packing(q + 1).size))
        scratch = thread_scratch("factor_mixture")  # the statistics are fresh arrays
        if ROW_KERNELS.add(stats, missing_zz, x, weights, terms, terms.shift, scratch):
            stats[MISSING_ZZ] = packing(q + 1).unpack(missing_zz)
        return stats

    def combine(self, a: Stats, b: Stats) -> Stats:
        """Sum of two statistics; an absent ``sum_zz_missing`` counts as zeros."""
        return combine(a, b)

    def m_step(self, stats: Stats, params: Params) -> Params:
        """Weights, then each component's loadings, mean and noise (see
        :func:`~dem.models.factor_mixture.kernels.component_step`).

        A component with less than ``EMPTY_COMPONENT`` of the rows' responsibility keeps
        its loadings, mean and noise (a generalised EM step: its share of the expected
        log-likelihood is zero whatever they are).
        """
        count = stats["count"].sum(axis=0)
        unobserved = np.flatnonzero(count == 0)
        if unobserved.size:
            raise ValueError(
                f"Feature(s) {unobserved[:10].tolist()} have no observed value (all NaN), so "
                "nothing can be estimated for them. Drop those columns before fitting."
            )
        shift = np.asarray(params["shift"], dtype=np.float64)
        floor = max(self.reg_noise * float(data_variance(stats).mean()), np.finfo(np.float64).tiny)
        resp_sum = stats["sum_zz"][:, -1, -1]
        loadings = np.array(params["loadings"], dtype=np.float64)
        means = np.array(params["means"], dtype=np.float64)
        noise = np.array(params["noise_variance"], dtype=np.float64)
        isotropic = self.noise == "isotropic"
        for k in range(self.n_components):
            if resp_sum[k] < EMPTY_COMPONENT * float(stats["n"]):
                continue
            try:
                loadings[k], means[k], noise[k] = component_step(stats, k, shift, isotropic, floor)
            except np.linalg.LinAlgError:
                continue  # kept, as an empty component
        return {
            "weights": resp_sum / resp_sum.sum(),
            "means": means,
            "loadings": loadings,
            "noise_variance": noise,
            "shift": shift,
        }

    # --- parameters as a flat vector, for SQUAREM ----------------------------------------

    def pack(self, params: Params) -> np.ndarray:
        """Weights, means, loadings and log noise variances as one vector."""
        return np.concatenate(
            [
                np.asarray(params["weights"], dtype=np.float64).ravel(),
                np.asarray(params["means"], dtype=np.float64).ravel(),
                np.asarray(params["loadings"], dtype=np.float64).ravel(),
                np.log(np.asarray(params["noise_variance"], dtype=np.float64)).ravel(),
            ]
        )

    def unpack(self, vector: np.ndarray, like: Params) -> Params:
        """Parameters from a vector shaped as ``like``, projected onto valid ones.

        Weights are clipped at 1e-12 and renormalised; any means and loadings are valid;
        noise variances are ``exp`` of their entries, floored at 1e-10 times the
        smallest in ``like``. A vector with non-finite entries raises ``ValueError``.
        """
        vector = np.asarray(vector, dtype=np.float64)
        if not np.all(np.isfinite(vector)):
            raise ValueError("cannot unpack a parameter vector with non-finite entries")
        parts, offset = {}, 0
        for key in ("weights", "means", "loadings", "noise_variance"):
            shape = np.shape(like[key])
            size = int(np.prod(shape))
            parts[key] = vector[offset : offset + size].reshape(shape).copy()
            offset += size
        weights = np.maximum(parts["weights"], 1e-12)
        noise = np.asarray(like["noise_variance"], dtype=np.float64)
        floor = max(1e-10 * float(noise.min()), np.finfo(np.float64).tiny)
        return {
            "weights": weights / weights.sum(),
            "means": parts["means"],
            "loadings": parts["loadings"],
            "noise_variance": np.maximum(np.exp(np.minimum(parts["noise_variance"], 700.0)), floor),
            "shift": like["shift"],
        }

    # --- per-sample functions, applied to any rows ----------------------------------

    def posterior(self, x: np.ndarray, params: Params) -> tuple[np.ndarray, np.ndarray]:
        """Weighted log densities (n, K) and factor posterior means under each component
        (n, K, q) of rows.

        Missing values (NaN) are marginalised; a row with nothing observed gets
        ``log w_k`` (observing nothing has probability 1) and the prior mean 0.
        """
        if np.isinf(x).any():
            rows = np.flatnonzero(np.isinf(x).any(axis=1))
            raise ValueError(
                f"X contains infinity in {len(rows)} row(s) (first at block row {rows[0]}). "
                "Replace infinite values (for example by NaN, meaning missing)."
            )
        terms = MixtureTerms.of(params)
        k, q = self.n_components, self.n_factors
        log_prob = np.empty((len(x), k))
        ez = np.zeros((len(x), k, q))
        scratch = Scratch()
        for start in range(0, len(x), BLOCK_ROWS):
            rows = scratch.float64("float64", x[start : start + BLOCK_ROWS])
            missing = np.isnan(rows)
            complete = ~missing.any(axis=1)
            partial = ~complete & ~missing.all(axis=1)
            where = np.arange(start, start + len(rows))
            log_prob[where[missing.all(axis=1)]] = terms.log_weights
            if complete.any():
                lp, ez_c, _ = complete_posterior(rows[complete] - terms.shift, terms, scratch)
                log_prob[where[complete]] = lp.T
                ez[where[complete]] = ez_c.transpose(2, 0, 1)
            if partial.any():
                lp, ez_p, _ = incomplete_posterior_all(
                    rows[partial], ~missing[partial], terms, scratch, covariance=False
                )
                log_prob[where[partial]] = lp.T
                ez[where[partial]] = ez_p.transpose(1, 0, 2)
        return log_prob, ez
