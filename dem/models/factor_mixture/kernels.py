"""Pure numpy maths of the mixture of factor analyzers on row blocks.

What the parameters imply for every block (:class:`MixtureTerms`), the weighted log
densities and factor posteriors of complete rows (all components in a few matrix
products) and of rows with missing values (component by component, with the PPCA
kernels of :mod:`dem.models.ppca.kernels`), the statistics they add, and the M-step of
one component. See :mod:`dem.models.factor_mixture` for the algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg

from dem.model import Params, Stats
from dem.models.mixture.kernels import responsibilities
from dem.models.ppca.kernels import (
    Terms,
    augmented_moments,
    centred_observed,
    incomplete_posterior,
    observed_mask,
    packing,
)
from dem.models.sample_weight import count, weighted_sum
from dem.models.scratch import Scratch

BLOCK_ROWS = 2048
LOG_2PI = float(np.log(2.0 * np.pi))
#: A component whose total responsibility is below this fraction of the rows keeps its
#: parameters (its statistics cannot determine them); its weight still follows the data.
EMPTY_COMPONENT = 1e-10


@dataclass(frozen=True)
class MixtureTerms:
    """Quantities derived from the parameters that every row block reuses.

    For complete rows, every component's ``u_k = W_kᵀ Ψ_k⁻¹ (x − μ_k)`` and cross term
    ``Σ_j (x − c)_j (μ_k − c)_j / ψ_kj`` come from one product of the rows about the
    shift ``c`` with ``projection`` ((K·q + K) × d): ``u_k`` is its block ``k`` minus
    ``offsets[k] = W_kᵀ Ψ_k⁻¹ (μ_k − c)``. ``constants`` holds
    ``log w_k − ½ (Σ_j log 2πψ_kj + log det M_k + Σ_j (μ_k − c)_j² / ψ_kj)``.
    ``components`` are the PPCA terms of each component (for rows with missing values).
    """

    shift: np.ndarray
    log_weights: np.ndarray
    inv_noise: np.ndarray
    projection: np.ndarray
    offsets: np.ndarray
    precision_inv: np.ndarray
    constants: np.ndarray
    components: tuple[Terms, ...]

    @property
    def n_components(self) -> int:
        return len(self.components)

    @property
    def n_factors(self) -> int:
        return int(self.offsets.shape[1])

    @classmethod
    def of(cls, params: Params) -> MixtureTerms:
        shift = np.asarray(params["shift"], dtype=np.float64)
        loadings = np.asarray(params["loadings"], dtype=np.float64)
        n_components, n_features, n_factors = loadings.shape
        noise = np.asarray(params["noise_variance"], dtype=np.float64)
        noise = np.broadcast_to(noise.reshape(n_components, -1), (n_components, n_features))
        means = np.asarray(params["means"], dtype=np.float64)
        components = tuple(
            Terms.of({"loadings": loadings[k], "mean": means[k], "noise_variance": noise[k]})
            for k in range(n_components)
        )
        dm = means - shift
        inv_noise = 1.0 / noise
        weighted = np.stack([t.weighted for t in components])  # (K, d, q)
        projection = np.concatenate(
            [
                weighted.transpose(0, 2, 1).reshape(n_components * n_factors, n_features),
                dm * inv_noise,
            ]
        )
        offsets = np.einsum("kjq,kj->kq", weighted, dm)
        weights = np.asarray(params["weights"], dtype=np.float64)
        log_weights = np.log(np.maximum(weights, np.finfo(np.float64).tiny))
        constants = log_weights - 0.5 * np.array(
            [
                t.log_norm.sum() + t.shared_logdet + float(d @ (d * t.inv_noise))
                for t, d in zip(components, dm, strict=True)
            ]
        )
        return cls(
            shift=shift,
            log_weights=log_weights,
            inv_noise=inv_noise,
            projection=projection,
            offsets=offsets,
            precision_inv=np.stack([t.shared_precision_inv for t in components]),
            constants=constants,
            components=components,
        )


# --- complete rows: every component at once ---------------------------------------------


def complete_posterior(
    xs: np.ndarray, terms: MixtureTerms, scratch: Scratch
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted log densities and factor posterior means of complete rows, O(K·d·q) each.

    Parameters
    ----------
    xs : ndarray of shape (n, d)
        The rows minus the shift.
    terms : MixtureTerms
    scratch : Scratch
        Buffers reused from block to block; the results are returned in three of them.

    Returns
    -------
    log_prob : ndarray of shape (K, n)
        ``log w_k + log N(x | μ_k, W_k W_kᵀ + Ψ_k)`` (Woodbury form).
    ez : ndarray of shape (K, q, n)
        Posterior means ``M_k⁻¹ u_k`` of the factors under each component.
    squares : ndarray of shape (n, d)
        ``xs²`` (for the statistics).
    """
    n = len(xs)
    k, q = terms.n_components, terms.n_factors
    squares = np.multiply(xs, xs, out=scratch("squares", xs.shape))
    projected = np.matmul(terms.projection, xs.T, out=scratch("projected", (k * q + k, n)))
    u = projected[: k * q].reshape(k, q, n)
    u -= terms.offsets[:, :, None]
    ez = np.matmul(terms.precision_inv, u, out=scratch("ez", (k, q, n)))
    # Σ (x − μ)²/ψ = Σ xs²/ψ − 2 Σ xs (μ − c)/ψ + Σ (μ − c)²/ψ (the last in constants)
    log_prob = np.matmul(terms.inv_noise, squares.T, out=scratch("log_prob", (k, n)))
    log_prob -= 2.0 * projected[k * q :]
    log_prob -= np.einsum("kqn,kqn->kn", u, ez)
    log_prob *= -0.5
    log_prob += terms.constants[:, None]
    return log_prob, ez, squares


def empty_stats(n_components: int, n_features: int, n_factors: int) -> Stats:
    """Zero statistics of a chunk (all taken about the shift ``c``).

    ``count`` (K, d): Σ r over rows where the feature is observed; ``sum_x2`` (K, d):
    Σ r (x − c)²; ``sum_xz`` (K, d, q+1): Σ r (x − c) E[z̃]ᵀ; ``sum_zz`` (K, q+1, q+1):
    Σ r E[z̃ z̃ᵀ] over all rows. With missing values, ``sum_zz_missing`` (K, d, q+1, q+1)
    too: Σ r E[z̃ z̃ᵀ] over the rows where each feature is missing.
    """
    k, d, q = n_components, n_features, n_factors
    return {
        "n": np.zeros(()),
        "loglik": np.zeros(()),
        "count": np.zeros((k, d)),
        "sum_x2": np.zeros((k, d)),
        "sum_xz": np.zeros((k, d, q + 1)),
        "sum_zz": np.zeros((k, q + 1, q + 1)),
    }


def add_complete(
    stats: Stats,
    xs: np.ndarray,
    terms: MixtureTerms,
    scratch: Scratch,
    weights: np.ndarray | None = None,
) -> None:
    """Add the statistics of complete rows (already minus the shift) to ``stats``, each
    row counted ``weights`` times (once without weights: the responsibilities scaled)."""
    k, q = terms.n_components, terms.n_factors
    log_prob, ez, squares = complete_posterior(xs, terms, scratch)
    resp, log_norm = responsibilities(log_prob)  # resp overwrites log_prob
    if weights is not None:
        resp *= weights
    resp_sum = resp.sum(axis=1)
    stats["n"] += count(len(xs), weights)
    stats["loglik"] += weighted_sum(log_norm, weights)
    stats["count"] += resp_sum[:, None]
    stats["sum_x2"] += resp @ squares
    weighted = np.multiply(ez, resp[:, None, :], out=scratch("weighted", ez.shape))
    stats["sum_xz"][:, :, :q] += (
        (weighted.reshape(k * q, -1) @ xs).reshape(k, q, -1).transpose(0, 2, 1)
    )
    stats["sum_xz"][:, :, q] += resp @ xs
    stats["sum_zz"][:, :q, :q] += np.matmul(weighted, ez.transpose(0, 2, 1))
    stats["sum_zz"][:, :q, :q] += resp_sum[:, None, None] * terms.precision_inv
    latent_sum = weighted.sum(axis=2)
    stats["sum_zz"][:, :q, q] += latent_sum
    stats["sum_zz"][:, q, :q] += latent_sum
    stats["sum_zz"][:, q, q] += resp_sum


# --- rows with missing values: component by component ---------------------------------


def incomplete_posterior_all(
    x: np.ndarray, observed: np.ndarray, terms: MixtureTerms, scratch: Scratch, *, covariance: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Weighted log densities and factor posteriors of rows with missing values.

    Each component's posterior uses only the row's observed features
    (:func:`dem.models.ppca.kernels.incomplete_posterior`), O(K·(d·q² + q³)) per row.

    Parameters
    ----------
    x : ndarray of shape (n, d)
        The rows (NaN where missing; every row has an observed value).
    observed : ndarray of bool, shape (n, d)
    terms : MixtureTerms
    scratch : Scratch
    covariance : bool
        Also return the packed posterior covariances.

    Returns
    -------
    log_prob : ndarray of shape (K, n)
    ez : ndarray of shape (K, n, q)
    covariances : ndarray of shape (K, packing(q).size, n) or None
    """
    n, k, q = len(x), terms.n_components, terms.n_factors
    log_prob = scratch("log_prob_missing", (k, n))
    ez = scratch("ez_missing", (k, n, q))
    covariances = scratch("cov_missing", (k, packing(q).size, n)) if covariance else None
    for c, component in enumerate(terms.components):
        xc = centred_observed(x, observed, component.mean, scratch)
        mask = observed_mask(observed, scratch)
        ez_c, loglik, cov = incomplete_posterior(
            xc, mask, component, scratch, covariance=covariance
        )
        ez[c] = ez_c
        np.add(loglik, terms.log_weights[c], out=log_prob[c])
        if covariances is not None and cov is not None:
            covariances[c] = cov
    return log_prob, ez, covariances


def add_incomplete(
    stats: Stats,
    missing_zz: np.ndarray,
    x: np.ndarray,
    observed: np.ndarray,
    terms: MixtureTerms,
    scratch: Scratch,
    weights: np.ndarray | None = None,
) -> None:
    """Add the statistics of rows with missing values to ``stats``, each row counted
    ``weights`` times (once without weights).

    ``missing_zz`` (K, d, packing(q + 1).size) accumulates, per component and feature,
    the packed Σ r E[z̃ z̃ᵀ] over the rows where that feature is missing.
    """
    q = terms.n_factors
    log_prob, ez, covariances = incomplete_posterior_all(
        x, observed, terms, scratch, covariance=True
    )
    assert covariances is not None
    resp, log_norm = responsibilities(log_prob)
    if weights is not None:
        resp *= weights
    xs = centred_observed(x, observed, terms.shift, scratch)
    mask = observed_mask(observed, scratch)
    unobserved = np.subtract(1.0, mask, out=scratch("unobserved", mask.shape))
    squares = np.multiply(xs, xs, out=scratch("squares", xs.shape))
    augmented = packing(q + 1)
    stats["n"] += count(len(x), weights)
    stats["loglik"] += weighted_sum(log_norm, weights)
    stats["count"] += resp @ mask
    stats["sum_x2"] += resp @ squares
    for c in range(terms.n_components):
        z1, second = augmented_moments(ez[c], covariances[c], scratch)
        z1 *= resp[c]
        stats["sum_xz"][c] += xs.T @ z1.T
        stats["sum_zz"][c] += augmented.unpack(second @ resp[c])
        second *= resp[c]
        missing_zz[c] += (second @ unobserved).T


# --- the M-step of one component ------------------------------------------------------


def data_variance(stats: Stats) -> np.ndarray:
    """Each feature's variance over its observed entries, from the statistics of all
    components together (Σ_k r = 1 per row, so it does not depend on the parameters)."""
    count = stats["count"].sum(axis=0)
    mean = stats["sum_xz"][:, :, -1].sum(axis=0) / count
    return np.maximum(stats["sum_x2"].sum(axis=0) / count - mean**2, 0.0)


def component_step(
    stats: Stats, k: int, shift: np.ndarray, isotropic: bool, floor: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Loadings (d, q), mean (d,) and noise variance(s) of component ``k``.

    The regression of ``x − c`` on ``z̃ = [z, 1]`` over the rows where each feature is
    observed, weighted by the responsibilities: ``[W, b]_j = G_j⁻¹ (sum_xz)_j`` with
    ``G_j = sum_zz − sum_zz_missing_j``; ``b`` is the new mean minus the shift. The
    noise is the mean expected squared residual (over all observed entries for
    isotropic noise), at least ``floor``. Then the parameter expansion of PPCA: the
    posterior latents' weighted mean ``α`` and covariance ``L Lᵀ`` folded back
    (``W ← W L``, ``μ ← c + b + W α``).

    Raises
    ------
    numpy.linalg.LinAlgError
        When the statistics determine no loadings (a component with no weight).
    """
    q = stats["sum_zz"].shape[-1] - 1
    sum_xz, sum_zz, count = stats["sum_xz"][k], stats["sum_zz"][k], stats["count"][k]
    if "sum_zz_missing" in stats:
        gram = sum_zz - stats["sum_zz_missing"][k]
        coef = np.linalg.solve(gram, sum_xz[:, :, None])[:, :, 0]
    else:
        coef = linalg.solve(sum_zz, sum_xz.T, assume_a="pos").T
    residual = stats["sum_x2"][k] - np.einsum("jk,jk->j", coef, sum_xz)
    if isotropic:
        noise = np.asarray(max(float(residual.sum() / count.sum()), floor))
    else:
        noise = np.maximum(residual / np.maximum(count, np.finfo(np.float64).tiny), floor)
    n_rows = sum_zz[q, q]
    latent_mean = sum_zz[:q, q] / n_rows
    latent_cov = sum_zz[:q, :q] / n_rows - np.outer(latent_mean, latent_mean)
    latent_factor = linalg.cholesky(latent_cov, lower=True)
    loadings = coef[:, :q] @ latent_factor
    mean = shift + coef[:, q] + coef[:, :q] @ latent_mean
    if not (np.all(np.isfinite(loadings)) and np.all(np.isfinite(mean))):
        raise np.linalg.LinAlgError(f"component {k}: the statistics determine no loadings")
    return loadings, mean, noise
