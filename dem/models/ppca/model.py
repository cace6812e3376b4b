"""The EM model of PPCA and factor analysis: the pure functions the engine calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy import linalg

from dem.model import Block, Params, Stats
from dem.models.missing_rows import MISSING_ZZ, RowKernels, combine
from dem.models.ppca.kernels import (
    NOISE_DIMS,
    NOISE_FLOOR,
    NOISE_UPDATE,
    Terms,
    add_complete,
    add_incomplete,
    centred_observed,
    complete_loglik,
    complete_posterior,
    empty_stats,
    incomplete_posterior,
    observed_mask,
    packing,
)
from dem.models.sample_weight import block_weights, positive
from dem.models.scratch import Scratch, thread_scratch

BLOCK_ROWS = 2048
NOISE_TYPES = ("isotropic", "diagonal")
MODEL_NAMES = {"isotropic": "ppca", "diagonal": "factor_analysis"}
ROW_KERNELS = RowKernels(add_complete, add_incomplete, BLOCK_ROWS)


@dataclass(frozen=True)
class LinearGaussianModel:
    """The pure functions of PPCA (``noise="isotropic"``) and factor analysis
    (``noise="diagonal"``); see :mod:`dem.model`."""

    n_components: int
    noise: str = "isotropic"

    inputs: ClassVar[tuple[str, ...]] = ("X",)
    missing_ok: ClassVar[frozenset[str]] = frozenset({"X"})
    remedy: ClassVar[str] = (
        "Decrease n_components, drop constant or duplicated features, or scale the input "
        "data to unit variance."
    )

    @property
    def name(self) -> str:
        return MODEL_NAMES[self.noise]

    def config(self) -> dict[str, Any]:
        return {"n_components": self.n_components, "noise": self.noise}

    def param_dims(self) -> dict[str, tuple[str, ...]]:
        return {
            "loadings": ("feature", "component"),
            "mean": ("feature",),
            "noise_variance": NOISE_DIMS[self.noise],
        }

    def e_step(self, block: Block, params: Params) -> Stats:
        weights, (x,) = positive(block_weights(block), block["X"])
        terms = Terms.of(params)
        n_features = x.shape[1]
        stats = empty_stats(n_features, self.n_components)
        augmented = packing(self.n_components + 1)
        missing_zz = np.zeros((n_features, augmented.size))
        scratch = thread_scratch("ppca")  # the statistics are fresh arrays
        if ROW_KERNELS.add(stats, missing_zz, x, weights, terms, terms.mean, scratch):
            stats[MISSING_ZZ] = augmented.unpack(missing_zz)
        return stats

    def anchor(self, params: Params) -> Params:
        """The mean of ``params``, as ``anchor_mean``: with it among the parameters, the
        E-step takes ``sum_x2`` and ``sum_xz`` about it instead of the mean (so statistics
        taken at different parameters add up, for incremental EM; see
        :mod:`dem.incremental`) and the M-step reads them so."""
        return {"anchor_mean": np.array(params["mean"], dtype=np.float64)}

    def combine(self, a: Stats, b: Stats) -> Stats:
        """Sum of two statistics; an absent ``sum_zz_missing`` counts as zeros."""
        return combine(a, b)

    def m_step(self, stats: Stats, params: Params) -> Params:
        q = self.n_components
        count = stats["count"]
        unobserved = np.flatnonzero(count == 0)
        if unobserved.size:
            raise ValueError(
                f"Feature(s) {unobserved[:10].tolist()} have no observed value (all NaN), so "
                "nothing can be estimated for them. Drop those columns before fitting."
            )
        sum_xz = stats["sum_xz"]
        if "sum_zz_missing" in stats:
            gram = stats["sum_zz"] - stats["sum_zz_missing"]
            coef = np.linalg.solve(gram, sum_xz[:, :, None])[:, :, 0]
        else:
            coef = linalg.solve(stats["sum_zz"], sum_xz.T, assume_a="pos").T
        residual = stats["sum_x2"] - np.einsum("jk,jk->j", coef, sum_xz)
        centred_mean = sum_xz[:, q] / count
        variance = stats["sum_x2"] / count - centred_mean**2
        floor = max(NOISE_FLOOR * float(variance.mean()), np.finfo(np.float64).tiny)
        noise = np.maximum(NOISE_UPDATE[self.noise](residual, count), floor)
        # parameter expansion: the latents' fitted mean and covariance, folded back in
        n_rows = stats["sum_zz"][q, q]
        latent_mean = stats["sum_zz"][:q, q] / n_rows
        latent_cov = stats["sum_zz"][:q, :q] / n_rows - np.outer(latent_mean, latent_mean)
        latent_factor = linalg.cholesky(latent_cov, lower=True)
        centre = params.get("anchor_mean", params["mean"])  # what the rows were taken about
        return {
            "loadings": coef[:, :q] @ latent_factor,
            "mean": np.asarray(centre, dtype=np.float64) + coef[:, q] + coef[:, :q] @ latent_mean,
            "noise_variance": np.asarray(noise),
        }

    # --- parameters as a flat vector, for SQUAREM ----------------------------------------

    def pack(self, params: Params) -> np.ndarray:
        """Loadings, mean and log noise variance(s) as one vector.

        The noise enters as its logarithm, so every vector maps to positive variances.
        """
        return np.concatenate(
            [
                np.asarray(params["loadings"], dtype=np.float64).ravel(),
                np.asarray(params["mean"], dtype=np.float64).ravel(),
                np.log(np.asarray(params["noise_variance"], dtype=np.float64)).ravel(),
            ]
        )

    def unpack(self, vector: np.ndarray, like: Params) -> Params:
        """Parameters from a vector shaped as ``like``, projected onto valid ones.

        Any loadings and mean are valid; the noise variances are ``exp`` of their
        entries, floored at ``NOISE_FLOOR`` times the smallest variance in ``like``
        (an extrapolation may shrink a variance, never to zero). A vector with
        non-finite entries raises ``ValueError``.
        """
        vector = np.asarray(vector, dtype=np.float64)
        if not np.isfinite(vector).all():
            raise ValueError("cannot unpack a parameter vector with non-finite entries")
        loadings = np.asarray(like["loadings"])
        noise = np.asarray(like["noise_variance"], dtype=np.float64)
        n_loadings, n_features = loadings.size, loadings.shape[0]
        floor = max(NOISE_FLOOR * float(noise.min()), np.finfo(np.float64).tiny)
        log_noise = vector[n_loadings + n_features :].reshape(noise.shape)
        return {
            "loadings": vector[:n_loadings].reshape(loadings.shape).copy(),
            "mean": vector[n_loadings : n_loadings + n_features].copy(),
            "noise_variance": np.asarray(np.maximum(np.exp(np.minimum(log_noise, 700.0)), floor)),
        }

    # --- per-sample functions, applied to any rows ----------------------------------

    def posterior(self, x: np.ndarray, params: Params) -> tuple[np.ndarray, np.ndarray]:
        """Posterior means of the latents (n, q) and log-likelihoods (n,) of rows.

        Missing values (NaN) are marginalised; a row with nothing observed gets the
        prior mean 0 and log-likelihood 0.
        """
        if np.isinf(x).any():
            rows = np.flatnonzero(np.isinf(x).any(axis=1))
            raise ValueError(
                f"X contains infinity in {len(rows)} row(s) (first at block row {rows[0]}). "
                "Replace infinite values (for example by NaN, meaning missing)."
            )
        terms = Terms.of(params)
        ez = np.zeros((len(x), self.n_components))
        loglik = np.zeros(len(x))
        scratch = Scratch()
        for start in range(0, len(x), BLOCK_ROWS):
            rows = scratch.float64("float64", x[start : start + BLOCK_ROWS])
            missing = np.isnan(rows)
            complete = ~missing.any(axis=1)
            seen = ~missing.all(axis=1)
            partial = seen & ~complete
            where = np.arange(start, start + len(rows))
            if complete.any():
                xc = rows[complete] - terms.mean
                u, ez_c = complete_posterior(xc, terms, scratch)
                ez[where[complete]] = ez_c
                loglik[where[complete]] = complete_loglik(xc, u, ez_c, terms)
            if partial.any():
                observed = ~missing[partial]
                xc = centred_observed(rows[partial], observed, terms.mean, scratch)
                mask = observed_mask(observed, scratch)
                ez_p, loglik_p, _ = incomplete_posterior(xc, mask, terms, scratch, covariance=False)
                ez[where[partial]] = ez_p
                loglik[where[partial]] = loglik_p
        return ez, loglik
