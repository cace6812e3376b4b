"""Gaussian-mixture emissions: :class:`GMMHMMModel`, what the engine calls for :class:`GMMHMM`.

Each of the K states emits from a mixture of M Gaussians (``weights`` (K, M), ``means``
(K, M, d), covariances per ``covariance_type``: (K, M, d, d) full, (K, d, d) tied, one
matrix per state shared by its M components, (K, M, d) diag, (K, M) spherical; hmmlearn's
shapes and meaning).

E-step
------
The K·M components are laid side by side as one mixture of K·M components, so the
Gaussian kernels of :mod:`dem.models.gaussian` compute their log-densities (tied
covariances as full ones, each state's matrix repeated for its components) on a block of
time steps at once; a state's emission log-density is the log-sum-exp over its
components of ``log w + log N``. The statistics of a chunk, given the state posteriors γ
from forward–backward, use the responsibilities r of the components within each state:
``post`` (Σ γ), ``post_mix`` (Σ γ r), ``sum_x`` (Σ γ r (x - c)) and ``scatter`` (Σ γ r
(x - c)(x - c)ᵀ, or its diagonal), about a shift ``c`` (the mean of all the component
means), which keeps the sums accurate for data far from the origin.

M-step
------
hmmlearn's ``GMMHMM._do_mstep``, formula for formula: the Dirichlet MAP of the weights,
the normal-prior MAP of the means, and covariances from the scatter about the *previous*
means (as hmmlearn accumulates it in its E-step) plus the prior terms, with hmmlearn's
defaults of ``covars_prior`` and ``covars_weight`` for each covariance type (which make
the update maximum likelihood but for that). Degenerate cases, where hmmlearn divides by
zero: a state with no expected occupancy keeps its weights, and a component (a state
for tied covariances) whose denominators are not positive keeps its mean and covariance.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from dem.model import Params, Stats
from dem.models import gaussian
from dem.models.hmm.kernels import (
    check_finite,
    dirichlet_map,
    from_log_cholesky,
    log_cholesky,
    padding_mask,
    probabilities,
)
from dem.models.hmm.model import ROW_BLOCK_ELEMENTS, HMMModel, _jsonable
from dem.models.scratch import Scratch

COLLAPSED = (
    "The covariance of at least one mixture component is not positive definite (the "
    "component has collapsed onto too few distinct points, or a feature is constant: "
    "hmmlearn's default priors add nothing to the covariances). Decrease n_mix or "
    "n_components, give the covariances a prior (covars_weight > 0 for diag and spherical, "
    "covars_prior a positive definite matrix for full and tied), or scale the input data."
)


def covars_shape(
    covariance_type: str, n_components: int, n_mix: int, n_features: int
) -> tuple[int, ...]:
    """Shape of a GMMHMM's ``covars`` (hmmlearn's)."""
    return {
        "full": (n_components, n_mix, n_features, n_features),
        "tied": (n_components, n_features, n_features),
        "diag": (n_components, n_mix, n_features),
        "spherical": (n_components, n_mix),
    }[covariance_type]


COVARS_DIMS = {
    "full": ("state", "mix", "feature", "feature_"),
    "tied": ("state", "feature", "feature_"),
    "diag": ("state", "mix", "feature"),
    "spherical": ("state", "mix"),
}


def precision_cholesky(covars: np.ndarray, covariance_type: str) -> np.ndarray:
    """Upper-triangular precision factors of every component (every state for tied),
    shaped as ``covars``; a ValueError for a covariance that is not positive definite."""
    shape = covars.shape
    if covariance_type in ("full", "tied"):
        flat = covars.reshape(-1, shape[-1], shape[-1])
        kind = "full"
    else:
        flat = covars.reshape(-1, *shape[2:])
        kind = covariance_type
    try:
        return gaussian.precision_cholesky(flat, kind).reshape(shape)
    except ValueError as exc:
        raise ValueError(COLLAPSED) from exc


def default_covars_priors(
    covariance_type: str, n_mix: int, n_features: int, prior: Any, weight: Any
) -> tuple[Any, Any]:
    """``covars_prior`` and ``covars_weight``, None replaced by hmmlearn's defaults."""
    defaults = {
        "full": (0.0, -(1.0 + n_features + 1.0)),
        "tied": (0.0, -(n_mix + n_features + 1.0)),
        "diag": (-1.5, 0.0),
        "spherical": (-(n_mix + 2.0) / 2.0, 0.0),
    }[covariance_type]
    return (defaults[0] if prior is None else prior, defaults[1] if weight is None else weight)


@dataclass(frozen=True)
class GMMHMMModel(HMMModel):
    """The pure functions of an HMM with Gaussian-mixture emissions (see :mod:`dem.model`)."""

    n_mix: int = 1
    covariance_type: str = "diag"
    weights_prior: Any = 1.0
    means_prior: Any = 0.0
    means_weight: Any = 0.0
    covars_prior: Any = None
    covars_weight: Any = None

    name: ClassVar[str] = "gmm_hmm"
    remedy: ClassVar[str] = (
        "Decrease n_components or n_mix, raise covars_prior, or scale the input data to unit "
        "variance."
    )

    def config(self) -> dict[str, Any]:
        def value(v: Any) -> Any:
            return None if v is None else _jsonable(v)

        return {
            **super().config(),
            "n_mix": self.n_mix,
            "covariance_type": self.covariance_type,
            "weights_prior": value(self.weights_prior),
            "means_prior": value(self.means_prior),
            "means_weight": value(self.means_weight),
            "covars_prior": value(self.covars_prior),
            "covars_weight": value(self.covars_weight),
        }

    def param_dims(self) -> dict[str, tuple[str, ...]]:
        dims = COVARS_DIMS[self.covariance_type]
        return {
            **super().param_dims(),
            "weights": ("state", "mix"),
            "means": ("state", "mix", "feature"),
            "covars": dims,
            "precisions_cholesky": dims,
        }

    # --- the components side by side --------------------------------------------------

    def _kernel_type(self) -> str:
        return "full" if self.covariance_type == "tied" else self.covariance_type

    @staticmethod
    def shift(params: Params) -> np.ndarray:
        """The mean of every component mean, or the anchor: the data are centred on it."""
        if "anchor_shift" in params:
            return np.asarray(params["anchor_shift"])
        means = params["means"]
        result: np.ndarray = means.reshape(-1, means.shape[-1]).mean(axis=0)
        return result

    def anchor(self, params: Params) -> Params:
        """The shift of ``params``, as ``anchor_shift`` (see
        :meth:`dem.models.hmm.model.GaussianHMMModel.anchor`)."""
        return {"anchor_shift": np.array(self.shift(params), dtype=np.float64)}

    def _flat_precisions(self, params: Params) -> np.ndarray:
        """The K·M components' precision factors, as the kernels of their type read them."""
        prec = params["precisions_cholesky"]
        if self.covariance_type == "tied":
            return np.repeat(prec, self.n_mix, axis=0)
        return prec.reshape(-1, *prec.shape[2:])

    def _component_kernel(self, params: Params) -> tuple[Any, np.ndarray]:
        """The squared-distance function of the K·M components and their log constants
        (log w + log det P - d/2 log 2π), shape (K·M, 1)."""
        means = params["means"]
        n_features = means.shape[-1]
        kind = self._kernel_type()
        prec = self._flat_precisions(params)
        dm = means.reshape(-1, n_features) - self.shift(params)
        distances = gaussian.DISTANCES[kind](dm, prec, np.float64)
        with np.errstate(divide="ignore"):
            log_weights = np.log(params["weights"]).ravel()
        constants = gaussian.log_prob_constants(log_weights, prec, kind, n_features)
        return distances, constants

    def time_blocks(self, data: np.ndarray, scratch: Scratch) -> Iterator[tuple[slice, np.ndarray]]:
        """Walk prepared ``data`` (n_times, n_sequences, d) a few whole time steps at a time:
        ``(steps, xt)``, ``xt`` the rows transposed with a row of ones below (d + 1, m)."""
        n_times, n_sequences, n_features = data.shape
        rows = max(
            gaussian.BLOCK_ROWS,
            ROW_BLOCK_ELEMENTS // (self.n_components * self.n_mix * max(n_features, 1)),
        )
        n_steps = max(1, rows // n_sequences)
        blocks = gaussian.transposed_blocks(
            data.reshape(-1, n_features),
            np.zeros(n_features),
            np.float64,
            n_steps * n_sequences,
            scratch,
        )
        for start, xt in zip(range(0, n_times, n_steps), blocks, strict=True):
            yield slice(start, start + n_steps), xt

    def _log_densities(
        self,
        xt: np.ndarray,
        moments: np.ndarray,
        kernel: tuple[Any, np.ndarray],
        scratch: Scratch,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each component's log w + log N (K, M, m) and each state's log-sum-exp (K, m)."""
        distances, constants = kernel
        squared = distances(xt, moments, scratch)
        components = scratch("components", squared.shape)
        np.multiply(squared, -0.5, out=components)
        components += constants
        components = components.reshape(self.n_components, self.n_mix, -1)
        peak = np.max(components, axis=1, out=scratch("peak", (self.n_components, xt.shape[1])))
        np.copyto(peak, 0.0, where=~np.isfinite(peak))
        relative = np.subtract(
            components, peak[:, None, :], out=scratch("relative", components.shape)
        )
        np.exp(relative, out=relative)
        total = np.sum(relative, axis=1, out=scratch("total", peak.shape))
        with np.errstate(divide="ignore"):
            np.log(total, out=total)
        total += peak
        return components, total

    # --- the emission model ---------------------------------------------------------

    def prepare(
        self,
        x: np.ndarray,
        valid: np.ndarray | None,
        params: Params,
        first: int = 0,
        scratch: Scratch | None = None,
    ) -> np.ndarray:
        """Time-major rows centred on the mean of the component means; zero at padding."""
        scratch = Scratch() if scratch is None else scratch
        centred = scratch("data", (x.shape[1], x.shape[0], x.shape[2]))
        np.subtract(np.swapaxes(x, 0, 1), self.shift(params), out=centred)
        if valid is not None:
            np.copyto(centred, 0.0, where=padding_mask(valid, scratch)[:, :, None])
        check_finite(centred, None, "X", first)
        return centred

    def emission_log_prob(
        self, data: np.ndarray, params: Params, scratch: Scratch | None = None
    ) -> np.ndarray:
        scratch = Scratch() if scratch is None else scratch
        n_times, n_sequences, _ = data.shape
        kernel = self._component_kernel(params)
        moments_of = gaussian.MOMENTS[self._kernel_type()]
        out = scratch("log_b", (n_times, self.n_components, n_sequences))
        for steps, xt in self.time_blocks(data, scratch):
            _, total = self._log_densities(xt, moments_of(xt, scratch), kernel, scratch)
            block = out[steps].transpose(1, 0, 2)  # (K, steps, n_sequences)
            np.copyto(block, total.reshape(block.shape))
        return out

    def empty_emission_stats(self, x: np.ndarray, params: Params) -> Stats:
        k, m, d = self.n_components, self.n_mix, x.shape[2]
        scatter = (k, m, d, d) if self.covariance_type in ("full", "tied") else (k, m, d)
        return {
            "post": np.zeros(k),
            "post_mix": np.zeros((k, m)),
            "sum_x": np.zeros((k, m, d)),
            "scatter": np.zeros(scatter),
        }

    def emission_stats(
        self, data: np.ndarray, gamma: np.ndarray, params: Params, scratch: Scratch | None = None
    ) -> Stats:
        scratch = Scratch() if scratch is None else scratch
        k, m, d = self.n_components, self.n_mix, data.shape[2]
        kind = self._kernel_type()
        kernel = self._component_kernel(params)
        post_mix = np.zeros(k * m)
        sum_x = np.zeros((k * m, d))
        scatter = gaussian.scatter_zeros(kind, k * m, d)
        for steps, xt in self.time_blocks(data, scratch):
            moments = gaussian.MOMENTS[kind](xt, scratch)
            components, total = self._log_densities(xt, moments, kernel, scratch)
            resp = scratch("resp", components.shape)
            with np.errstate(invalid="ignore"):  # a state impossible here: γ is 0 too
                np.subtract(components, total[:, None, :], out=resp)
                np.exp(resp, out=resp)
                resp *= gamma[steps].transpose(1, 0, 2).reshape(k, 1, -1)
            np.copyto(resp, 0.0, where=~np.isfinite(resp))
            sums = gaussian.SUMS[kind](xt, moments, resp.reshape(k * m, -1))
            post_mix += sums[0]
            sum_x += sums[1]
            scatter += sums[2]
        unpacked = gaussian.unpack_scatter(scatter, kind, d)
        return {
            "post": gamma.sum(axis=(0, 2)),
            "post_mix": post_mix.reshape(k, m),
            "sum_x": sum_x.reshape(k, m, d),
            "scatter": unpacked.reshape(k, m, *unpacked.shape[1:]),
        }

    def _priors(self, n_features: int) -> dict[str, np.ndarray]:
        """The priors broadcast to hmmlearn's shapes (its ``_fix_priors_shape``)."""
        k, m, d = self.n_components, self.n_mix, n_features
        ctype = self.covariance_type
        prior, weight = default_covars_priors(ctype, m, d, self.covars_prior, self.covars_weight)
        covars_shapes = {
            "full": ((k, m, d, d), (k, m)),
            "tied": ((k, d, d), (k,)),
            "diag": ((k, m, d), (k, m, d)),
            "spherical": ((k, m), (k, m)),
        }[ctype]

        def broadcast(value: Any, shape: tuple[int, ...]) -> np.ndarray:
            return np.broadcast_to(np.asarray(value, dtype=np.float64), shape)

        return {
            "weights_prior": broadcast(self.weights_prior, (k, m)),
            "means_prior": broadcast(self.means_prior, (k, m, d)),
            "means_weight": broadcast(self.means_weight, (k, m)),
            "covars_prior": broadcast(prior, covars_shapes[0]),
            "covars_weight": broadcast(weight, covars_shapes[1]),
        }

    def emission_m_step(self, stats: Stats, params: Params) -> Params:
        ctype = self.covariance_type
        old_means = params["means"]
        n_features = old_means.shape[-1]
        priors = self._priors(n_features)
        shift = self.shift(params)
        post = np.asarray(stats["post"])
        post_mix = np.asarray(stats["post_mix"])
        sum_x = np.asarray(stats["sum_x"])
        scatter = np.asarray(stats["scatter"])

        weights = dirichlet_map(post_mix, params["weights"], priors["weights_prior"])

        lam, mu0 = priors["means_weight"], priors["means_prior"]
        m_d = post_mix + lam
        keep = m_d <= 0.0  # a component nothing informs keeps its emissions
        safe = np.where(keep, 1.0, m_d)
        means = shift + (lam[..., None] * (mu0 - shift) + sum_x) / safe[..., None]
        means = np.where(keep[..., None], old_means, means)

        # the scatter about the previous means, as hmmlearn accumulates it
        dm = old_means - shift
        if ctype in ("full", "tied"):
            outer = np.einsum("kmi,kmj->kmij", sum_x, dm)
            about_old = (
                scatter
                - outer
                - np.swapaxes(outer, -1, -2)
                + post_mix[..., None, None] * np.einsum("kmi,kmj->kmij", dm, dm)
            )
        else:
            about_old = scatter - 2.0 * dm * sum_x + post_mix[..., None] * dm**2

        centred = means - mu0
        psi, nu = priors["covars_prior"], priors["covars_weight"]
        if ctype == "full":
            c_n = (
                np.swapaxes(psi, -1, -2)
                + lam[..., None, None] * np.einsum("kmi,kmj->kmij", centred, centred)
                + about_old
            )
            c_d = (post_mix + 1.0 + nu + n_features + 1.0)[..., None, None]
            keep_covars = np.broadcast_to(keep[..., None, None] | (c_d <= 0.0), c_n.shape)
        elif ctype == "tied":
            c_n = (
                np.einsum("km,kmi,kmj->kij", lam, centred, centred)
                + np.swapaxes(psi, -1, -2)
                + about_old.sum(axis=1)
            )
            c_d = (post + self.n_mix + nu + n_features + 1.0)[:, None, None]
            keep_covars = np.broadcast_to(c_d <= 0.0, c_n.shape)
        elif ctype == "diag":
            c_n = lam[..., None] * centred**2 + 2.0 * nu + about_old
            c_d = post_mix[..., None] + 1.0 + 2.0 * (psi + 1.0)
            keep_covars = keep[..., None] | (c_d <= 0.0)
        else:
            c_n = lam * np.einsum("kmi,kmi->km", centred, centred) + 2.0 * nu + about_old.sum(-1)
            c_d = n_features * (post_mix + 1.0) + 2.0 * (psi + 1.0)
            keep_covars = keep | (c_d <= 0.0)
        covars = np.where(keep_covars, params["covars"], c_n / np.where(keep_covars, 1.0, c_d))
        if ctype in ("full", "tied"):
            covars = 0.5 * (covars + np.swapaxes(covars, -1, -2))
        return {
            "weights": weights,
            "means": means,
            "covars": covars,
            "precisions_cholesky": precision_cholesky(covars, ctype),
        }

    # --- parameters as a flat vector, for SQUAREM ----------------------------------------

    def pack_emissions(self, params: Params) -> np.ndarray:
        """Weights, means, and covariances as log-Cholesky factors (log variances)."""
        covars = params["covars"]
        if self.covariance_type in ("full", "tied"):
            packed = log_cholesky(covars)
        else:
            packed = np.log(covars).ravel()
        return np.concatenate([params["weights"].ravel(), params["means"].ravel(), packed])

    def unpack_emissions(self, vector: np.ndarray, like: Params) -> Params:
        n_weights, n_means = like["weights"].size, like["means"].size
        weights = probabilities(vector[:n_weights], like["weights"])
        means = vector[n_weights : n_weights + n_means].reshape(like["means"].shape)
        rest = vector[n_weights + n_means :]
        shape = like["covars"].shape
        if self.covariance_type in ("full", "tied"):
            covars = from_log_cholesky(rest, shape)
        else:
            covars = np.exp(rest).reshape(shape)
        if not np.all(np.isfinite(covars)):
            raise ValueError("No valid parameters: a covariance is not finite.")
        return {
            "weights": weights,
            "means": means.copy(),
            "covars": covars,
            "precisions_cholesky": precision_cholesky(covars, self.covariance_type),
        }
