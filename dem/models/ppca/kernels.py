"""Pure numpy maths of PPCA and factor analysis on row blocks.

Packed symmetric matrices (:class:`Packing`), what the parameters imply for every block
(:class:`Terms`), the posteriors of complete rows and of rows with missing values, the
E-step statistics they add (:func:`add_complete`, :func:`add_incomplete`) and the noise
updates of the M-step. See :mod:`dem.models.ppca` for the algorithm.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from dem.model import Params, Stats
from dem.models.scratch import Scratch

NOISE_FLOOR = 1e-10
LOG_2PI = float(np.log(2.0 * np.pi))


# --- packed symmetric matrices --------------------------------------------------------


@dataclass(frozen=True)
class Packing:
    """Index maps between symmetric ``(m, m)`` matrices and their packed upper triangles.

    ``rows[t], cols[t]`` is the entry stored at packed position ``t`` (row-major upper
    triangle, as :func:`numpy.triu_indices`); ``position[a, b]`` is where entry
    ``(a, b)`` (or ``(b, a)``) is stored; ``diagonal`` are the positions of ``(a, a)``.
    """

    rows: np.ndarray
    cols: np.ndarray
    position: np.ndarray
    diagonal: np.ndarray

    @property
    def size(self) -> int:
        return len(self.rows)

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        """``(..., size)`` packed triangles to ``(..., m, m)`` symmetric matrices."""
        return packed[..., self.position]


@functools.lru_cache(maxsize=32)
def packing(m: int) -> Packing:
    rows, cols = np.triu_indices(m)
    position = np.empty((m, m), dtype=np.intp)
    position[rows, cols] = np.arange(len(rows))
    position[cols, rows] = np.arange(len(rows))
    return Packing(rows, cols, position, position[np.arange(m), np.arange(m)])


# --- what the parameters imply, computed once per chunk --------------------------------


@dataclass(frozen=True)
class Terms:
    """Quantities derived from the parameters that every row block reuses.

    ``shared_precision_inv`` and ``shared_logdet`` belong to the ``M`` of a row with
    every feature observed; ``outer`` holds, per feature, the packed upper triangle of
    ``w_j w_jᵀ / ψ_j``.
    """

    loadings: np.ndarray
    mean: np.ndarray
    inv_noise: np.ndarray
    weighted: np.ndarray
    log_norm: np.ndarray
    shared_precision_inv: np.ndarray
    shared_logdet: float
    outer: np.ndarray
    # incremental EM's anchor (params["anchor_mean"]) and mean - anchor; None without one
    anchor: np.ndarray | None = None
    anchor_offset: np.ndarray | None = None

    @property
    def n_components(self) -> int:
        return int(self.loadings.shape[1])

    @classmethod
    def of(cls, params: Params) -> Terms:
        loadings = np.asarray(params["loadings"], dtype=np.float64)
        n_features, n_components = loadings.shape
        noise = np.broadcast_to(
            np.asarray(params["noise_variance"], dtype=np.float64), (n_features,)
        )
        inv_noise = 1.0 / noise
        weighted = loadings * inv_noise[:, None]
        precision = np.eye(n_components) + loadings.T @ weighted
        factor = linalg.cho_factor(precision, lower=True)
        pack = packing(n_components)
        return cls(
            loadings=loadings,
            mean=np.asarray(params["mean"], dtype=np.float64),
            inv_noise=inv_noise,
            weighted=weighted,
            log_norm=np.log(noise) + LOG_2PI,
            shared_precision_inv=linalg.cho_solve(factor, np.eye(n_components)),
            shared_logdet=2.0 * float(np.log(np.diag(factor[0])).sum()),
            outer=loadings[:, pack.rows] * weighted[:, pack.cols],
            **_anchor_terms(params),
        )


def _anchor_terms(params: Params) -> dict[str, np.ndarray]:
    """The anchor of ``params`` (see :meth:`LinearGaussianModel.anchor
    <dem.models.ppca.model.LinearGaussianModel.anchor>`) and the mean's offset from it."""
    if "anchor_mean" not in params:
        return {}
    anchor = np.asarray(params["anchor_mean"], dtype=np.float64)
    return {"anchor": anchor, "anchor_offset": np.asarray(params["mean"], np.float64) - anchor}


# --- posteriors of row blocks ---------------------------------------------------------


def complete_posterior(
    xc: np.ndarray, terms: Terms, scratch: Scratch
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior of rows with every feature observed, O(d·q) per row.

    Parameters
    ----------
    xc : ndarray of shape (n, d)
        The rows minus the mean.
    terms : Terms
    scratch : Scratch
        Buffers reused from block to block; the results are returned in two of them.

    Returns
    -------
    u, ez : ndarray of shape (n, q)
        ``Wᵀ Ψ⁻¹ xc`` and the posterior means ``M⁻¹ u``.
    """
    shape = (len(xc), terms.n_components)
    u = np.matmul(xc, terms.weighted, out=scratch("u", shape))
    return u, np.matmul(u, terms.shared_precision_inv, out=scratch("ez", shape))


def complete_loglik(xc: np.ndarray, u: np.ndarray, ez: np.ndarray, terms: Terms) -> np.ndarray:
    """Per-row log-likelihood of complete rows (Woodbury form of the Gaussian density)."""
    constant = terms.log_norm.sum() + terms.shared_logdet
    quadratic = np.square(xc) @ terms.inv_noise - np.einsum("ij,ij->i", u, ez)
    return -0.5 * (constant + quadratic)


def cholesky_stack(matrices: np.ndarray, scratch: Scratch) -> np.ndarray:
    """Lower Cholesky factors of symmetric positive definite matrices, batch last.

    ``matrices`` has shape (q, q, n); the loop runs over the q columns, each step
    vectorised across the n matrices. The factors are in the scratch buffer "factor".
    """
    q = matrices.shape[0]
    factor = scratch("factor", matrices.shape)
    factor.fill(0.0)
    for j in range(q):
        done = factor[j, :j]
        pivot = np.einsum("kn,kn->n", done, done, out=factor[j, j])
        np.subtract(matrices[j, j], pivot, out=pivot)
        np.sqrt(pivot, out=pivot)
        if j + 1 < q:
            below = np.einsum("ikn,kn->in", factor[j + 1 :, :j], done, out=factor[j + 1 :, j])
            np.subtract(matrices[j + 1 :, j], below, out=below)
            below /= pivot
    return factor


def invert_lower_stack(factor: np.ndarray, scratch: Scratch) -> np.ndarray:
    """Inverses of lower-triangular matrices, batch last (forward substitution by rows),
    in the scratch buffer "inverse"."""
    q = factor.shape[0]
    inverse = scratch("inverse", factor.shape)
    inverse.fill(0.0)
    for i in range(q):
        inv_pivot = np.divide(1.0, factor[i, i], out=inverse[i, i])
        if i:
            row = np.einsum("kn,kjn->jn", factor[i, :i], inverse[:i, :i], out=inverse[i, :i])
            row *= -inv_pivot
    return inverse


def incomplete_posterior(
    xc: np.ndarray, observed: np.ndarray, terms: Terms, scratch: Scratch, *, covariance: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Posterior of rows with missing values, each using only its observed features.

    Parameters
    ----------
    xc : ndarray of shape (n, d)
        The rows minus the mean, with 0 where a value is missing.
    observed : ndarray of shape (n, d)
        1.0 where observed, 0.0 where missing (float, for matrix products).
    terms : Terms
    scratch : Scratch
        Buffers reused from block to block; the covariances are returned in one.
    covariance : bool
        Also return the posterior covariances ``M⁻¹``.

    Returns
    -------
    ez : ndarray of shape (n, q)
        Posterior means.
    loglik : ndarray of shape (n,)
        Log-density of each row's observed values.
    covariances : ndarray of shape (packing(q).size, n) or None
        Packed upper triangles of the posterior covariances, batch last.
    """
    pack = packing(terms.n_components)
    q, n = terms.n_components, len(xc)
    u = np.matmul(xc, terms.weighted, out=scratch("projected", (n, q))).T
    # (packed, n): W_Oᵀ Ψ_O⁻¹ W_O per row
    precision = np.matmul(terms.outer.T, observed.T, out=scratch("precision", (pack.size, n)))
    precision[pack.diagonal] += 1.0
    matrices = np.take(
        precision, pack.position, axis=0, out=scratch("matrices", (q, q, n)), mode="clip"
    )
    factor = cholesky_stack(matrices, scratch)
    inverse = invert_lower_stack(factor, scratch)  # L⁻¹, so M⁻¹ = L⁻ᵀ L⁻¹
    whitened = np.einsum("kan,an->kn", inverse, u, out=scratch("whitened", (q, n)))  # L⁻¹ u
    ez = np.einsum("kan,kn->na", inverse, whitened, out=scratch("means", (n, q)))  # L⁻ᵀ L⁻¹ u
    logdet = 2.0 * np.log(np.diagonal(factor, axis1=0, axis2=1)).sum(axis=1)
    loglik = -0.5 * (
        observed @ terms.log_norm
        + logdet
        + np.square(xc, out=scratch("squares", xc.shape)) @ terms.inv_noise
        - np.einsum("kn,kn->n", whitened, whitened)
    )
    if not covariance:
        return ez, loglik, None
    return ez, loglik, packed_gram(inverse, out=scratch("covariances", (pack.size, n)))


def packed_gram(lower: np.ndarray, *, out: np.ndarray) -> np.ndarray:
    """Packed upper triangles of ``Lᵀ L`` for lower-triangular ``L``, batch last, in ``out``
    (shape (q(q+1)/2, n)).

    Entry ``(a, b)``, ``a ≤ b``, is Σ_{k ≥ b} L[k, a] L[k, b]; the loop runs over the rows
    ``a`` of the result, each a contiguous run of the packing.
    """
    q = lower.shape[0]
    start = 0
    for a in range(q):
        np.einsum("kn,kbn->bn", lower[a:, a], lower[a:, a:], out=out[start : start + q - a])
        start += q - a
    return out


# --- statistics -----------------------------------------------------------------------


def empty_stats(n_features: int, n_components: int) -> Stats:
    return {
        "n": np.zeros(()),
        "loglik": np.zeros(()),
        "count": np.zeros(n_features),
        "sum_x2": np.zeros(n_features),
        "sum_xz": np.zeros((n_features, n_components + 1)),
        "sum_zz": np.zeros((n_components + 1, n_components + 1)),
    }


def add_complete(
    stats: Stats,
    xc: np.ndarray,
    terms: Terms,
    scratch: Scratch,
    weights: np.ndarray | None = None,
) -> None:
    """Add the statistics of complete rows (already minus the mean) to ``stats``,
    each row counted ``weights`` times (once without weights).

    With an anchor in ``terms`` (see :meth:`dem.models.ppca.model.LinearGaussianModel.anchor`)
    ``sum_x2`` and ``sum_xz`` are taken about the anchor (the rows plus ``mean - anchor``),
    the posterior and log-likelihood still about the mean.
    """
    q = terms.n_components
    n = len(xc)
    u, ez = complete_posterior(xc, terms, scratch)
    z1 = scratch("latents", (n, q + 1))
    z1[:, :q] = ez
    z1[:, q] = 1.0
    constant = terms.log_norm.sum() + terms.shared_logdet
    if weights is None:
        total, sum_squares, zw = float(n), np.einsum("ij,ij->j", xc, xc), z1
        u_ez = np.vdot(u, ez)
    else:
        total, sum_squares = float(weights.sum()), weights @ np.square(xc)
        zw = np.multiply(z1, weights[:, None], out=scratch("weighted_latents", z1.shape))
        u_ez = weights @ np.einsum("ij,ij->i", u, ez)
    stats["loglik"] += -0.5 * (total * constant + sum_squares @ terms.inv_noise - u_ez)
    if terms.anchor_offset is not None:
        xc = np.add(xc, terms.anchor_offset, out=scratch("anchored", xc.shape))
        sum_squares = np.einsum("ij,ij->j", xc, xc) if weights is None else weights @ np.square(xc)
    stats["n"] += total
    stats["count"] += total
    stats["sum_x2"] += sum_squares
    stats["sum_xz"] += xc.T @ zw
    stats["sum_zz"] += z1.T @ zw
    stats["sum_zz"][:q, :q] += total * terms.shared_precision_inv


def centred_observed(
    x: np.ndarray, observed: np.ndarray, mean: np.ndarray, scratch: Scratch
) -> np.ndarray:
    """``x − mean`` where observed, 0 where missing, in the scratch buffer "centred"."""
    out = scratch("centred", x.shape)
    out.fill(0.0)
    return np.subtract(x, mean, out=out, where=observed)


def observed_mask(observed: np.ndarray, scratch: Scratch) -> np.ndarray:
    """``observed`` as 1.0 and 0.0 (for matrix products), in the scratch buffer "mask"."""
    mask = scratch("mask", observed.shape)
    np.copyto(mask, observed)
    return mask


def add_incomplete(
    stats: Stats,
    missing_zz: np.ndarray,
    x: np.ndarray,
    observed: np.ndarray,
    terms: Terms,
    scratch: Scratch,
    weights: np.ndarray | None = None,
) -> None:
    """Add the statistics of rows with missing values to ``stats``, each row counted
    ``weights`` times (once without weights).

    ``missing_zz`` (d, packing(q + 1).size) accumulates, per feature, the packed
    Σ E[z̃ z̃ᵀ] over the rows where that feature is missing. With an anchor in
    ``terms``, ``sum_x2`` and ``sum_xz`` are taken about it instead of the mean (as in
    :func:`add_complete`).
    """
    q, n = terms.n_components, len(x)
    xc = centred_observed(x, observed, terms.mean, scratch)
    mask = observed_mask(observed, scratch)
    ez, loglik, covariances = incomplete_posterior(xc, mask, terms, scratch, covariance=True)
    assert covariances is not None
    if terms.anchor is not None:  # the posterior is done with the rows about the mean
        xc = centred_observed(x, observed, terms.anchor, scratch)
    augmented = packing(q + 1)
    z1, second = augmented_moments(ez, covariances, scratch)
    unobserved = np.subtract(1.0, mask, out=scratch("unobserved", mask.shape))
    if weights is None:
        stats["loglik"] += loglik.sum()
        stats["n"] += n
        stats["count"] += mask.sum(axis=0)
        stats["sum_x2"] += np.einsum("ij,ij->j", xc, xc)
        stats["sum_xz"] += xc.T @ z1.T
        stats["sum_zz"] += augmented.unpack(second.sum(axis=1))
        missing_zz += (second @ unobserved).T
        return
    stats["loglik"] += loglik @ weights
    stats["n"] += weights.sum()
    stats["count"] += weights @ mask
    stats["sum_x2"] += weights @ np.square(xc)
    stats["sum_xz"] += xc.T @ (z1 * weights).T
    stats["sum_zz"] += augmented.unpack(second @ weights)
    missing_zz += (second @ (unobserved * weights[:, None])).T


def augmented_moments(
    ez: np.ndarray, covariances: np.ndarray, scratch: Scratch
) -> tuple[np.ndarray, np.ndarray]:
    """The augmented latents ``z̃ = [z, 1]`` of rows and their packed second moments.

    Parameters
    ----------
    ez : ndarray of shape (n, q)
        Posterior means.
    covariances : ndarray of shape (packing(q).size, n)
        Packed posterior covariances, batch last.
    scratch : Scratch
        The results are returned in its buffers "latents" and "second".

    Returns
    -------
    z1 : ndarray of shape (q + 1, n)
        ``E[z̃]``, batch last.
    second : ndarray of shape (packing(q + 1).size, n)
        ``E[z̃ z̃ᵀ]`` packed, batch last: ``E[z̃] E[z̃]ᵀ`` plus, in the latent-latent
        entries (all but the last of each row of the augmented triangle), the posterior
        covariances. Shared with the mixture of factor analyzers
        (:mod:`dem.models.factor_mixture`).
    """
    n, q = ez.shape
    z1 = scratch("latents", (q + 1, n))
    z1[:q] = ez.T
    z1[q] = 1.0
    second = scratch("second", (packing(q + 1).size, n))
    start = start_cov = 0
    for a in range(q + 1):
        run = np.multiply(z1[a], z1[a:], out=second[start : start + q + 1 - a])
        run[: q - a] += covariances[start_cov : start_cov + q - a]
        start += q + 1 - a
        start_cov += q - a
    return z1, second


def isotropic_noise(residual: np.ndarray, count: np.ndarray) -> np.ndarray:
    """PPCA: one variance, the mean expected squared residual over observed entries."""
    return np.asarray(residual.sum() / count.sum())


def diagonal_noise(residual: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Factor analysis: one variance per feature."""
    return residual / count


NOISE_UPDATE: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "isotropic": isotropic_noise,
    "diagonal": diagonal_noise,
}
NOISE_DIMS: dict[str, tuple[str, ...]] = {"isotropic": (), "diagonal": ("feature",)}
