"""Probabilistic PCA and factor analysis by EM, exact with missing values.

The model
---------
A row is ``x = W z + μ + ε`` with latent ``z ~ N(0, I_q)`` and noise ``ε ~ N(0, Ψ)``:
``Ψ = σ² I`` is probabilistic PCA (Tipping & Bishop 1999), ``Ψ = diag(ψ)`` is factor
analysis. NaN entries are missing at random, so the observed part of a row is
Gaussian, ``x_O ~ N(μ_O, W_O W_Oᵀ + Ψ_O)``, and that is the likelihood EM maximises.

The EM (Roweis 1998; Liu, Rubin & Wu 1998), with missing values
----------------------------------------------------------------
For a row with observed features ``O`` the posterior of ``z`` is ``N(M⁻¹ u, M⁻¹)`` with
``M = I + W_Oᵀ Ψ_O⁻¹ W_O`` and ``u = W_Oᵀ Ψ_O⁻¹ (x_O − μ_O)``. The mean is estimated
jointly with the loadings: it is one more column of an augmented loading matrix
``[W, δ]`` acting on ``z̃ = [z, 1]``, where ``δ`` is this iteration's change of the mean.
All sums are taken about the current mean, which keeps them accurate for data far
from the origin. The E-step of a chunk adds, for each feature ``j``:

- ``count[j]``: Σ 1 over the rows where ``j`` is observed;
- ``sum_x2[j]``: Σ (x_j − μ_j)² over those rows;
- ``sum_xz[j]``: Σ (x_j − μ_j) E[z̃] over those rows, shape (d, q+1);
- ``sum_zz``: Σ E[z̃ z̃ᵀ] over all rows, shape (q+1, q+1);
- ``sum_zz_missing[j]``: Σ E[z̃ z̃ᵀ] over the rows where ``j`` is missing, shape
  (d, q+1, q+1); left out of the statistics of chunks without missing values (a
  missing key counts as zeros), so complete data move only O(d·q) numbers.

The M-step solves one (q+1)-square system per feature,
``[W, δ]_j = (sum_zz − sum_zz_missing[j])⁻¹ sum_xz[j]`` (a single system shared by all
features for complete data), and sets the noise to the mean expected squared residual:
over all observed entries for PPCA (:func:`isotropic_noise`), per feature for factor
analysis (:func:`diagonal_noise`).

It is the M-step of the parameter-expanded model (PX-EM, Liu, Rubin & Wu 1998) in which
the latents have a free mean ``α`` and covariance ``Γ = L Lᵀ``: from ``sum_zz``, ``α`` and
``Γ`` are the mean and covariance of the posterior latents over all rows, and folding
them back (``W ← W L``, ``μ ← μ + δ + W α``) returns to ``z ~ N(0, I)`` with the same
likelihood. It is still an EM (the log-likelihood never decreases), but plain EM
shrinks the error in the scale of a component of variance ``λ`` only by a factor
``1 − 2σ²/λ`` per iteration, and so crawls on data with little noise; PX-EM removes that
slow mode (and the matching one of the mean when values are missing). From a random
start on the closed-form test's data (λ₁/σ² ≈ 200), PPCA comes within 1e-8 of the
maximum mean log-likelihood in 16 iterations; plain EM has not after 300. Factor
analysis still converges slowly where a uniqueness ψ_j is small next to its feature's
variance (near a Heywood case), as scikit-learn's iteration does.

Cost
----
Rows without missing values share one ``M``, so their posterior is one product with a
d × q matrix and an iteration over complete data costs O(N·d·q). A row with missing
values has its own ``M``; such rows are handled a block at a time: the packed
``W_Oᵀ Ψ_O⁻¹ W_O`` of every row is one matrix product of the block's observation mask
with the per-feature outer products ``w_j w_jᵀ / ψ_j``, and the q × q Cholesky
factorisations and inverses run vectorised across the block (a Python loop over the q
latent dimensions, never over rows), O(d·q² + q³) per row.

Acceleration
------------
For ``accelerate="squarem"`` (:mod:`dem.accelerate`) the parameters travel as one vector:
the loadings in EM's own rotation, the mean, and the logarithm of the noise variance(s),
so every extrapolated vector is a valid model. EM crawls where eigenvalues are close (the
principal subspace then moves by a small fraction of its error per iteration); there
SQUAREM needs two to four times fewer passes (``benchmarks/accelerate.py``).

The start
---------
``init_params="pca"`` starts from the closed-form PPCA maximum (Tipping & Bishop 1999)
for the covariance of a random sample of rows, read before the first pass: the leading
``q`` eigenpairs give ``W``, the mean of the other eigenvalues ``σ²`` (factor analysis
takes that ``σ²`` for every ψ_j). With missing values the covariance is the
available-case one, each entry averaged over the rows where both features are observed,
about the observed column means; its eigenvalues are clipped at 0, since under heavy
missingness it need not be positive semidefinite. Filling missing entries with the
column mean instead shrinks each variance by its feature's observed fraction and each
covariance by the product of two, and starts far from the maximum: on the data of
``benchmarks/ppca.py`` (10⁶ × 100, q = 10, 20% missing) EM took 7 passes to converge
from there and takes 4 from the available-case start. The covariance is d × d and
costs O(n·d² + d³), so data with more than ``MAX_COVARIANCE_FEATURES`` features keep
the mean-filled start (subspace iteration, O(n·d·q)).

Rules
-----
- A row with no observed value carries no information. It is left out of the fit (it
  does not count in ``n``); ``transform`` gives it the prior mean 0, ``impute`` the
  fitted mean, ``score_samples`` 0 (the log-probability of observing nothing).
- A feature with no observed value cannot be estimated: a ``ValueError`` after the
  first pass over the data.
- Noise variances are floored at ``NOISE_FLOOR`` times the mean observed feature
  variance (the exact M-step under that constraint, so EM stays monotone). Data of rank
  at most ``q`` then give a finite likelihood instead of a noise variance tending to 0.
- The loadings are identified only up to a rotation; EM keeps its own rotation in the
  parameters (and checkpoints), and the estimators report the canonical one: columns
  orthogonal, sorted by explained variance, each with its largest entry positive.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy import linalg
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin, _fit_context
from sklearn.utils import Tags
from sklearn.utils._param_validation import StrOptions

from dem.data import Samples, as_samples, sample_rows
from dem.display import HTMLRepr
from dem.engine import map_reduce
from dem.estimator import (
    EMEstimator,
    NotFittedError,
    RandomState,
    as_generator,
    counts,
    per_sample,
)
from dem.model import Block, Params, Stats, add_stats
from dem.models.scratch import Scratch, thread_scratch

BLOCK_ROWS = 2048
NOISE_FLOOR = 1e-10
POWER_ITERATIONS = 4
MAX_COVARIANCE_FEATURES = 1024
LOG_2PI = float(np.log(2.0 * np.pi))
NOISE_TYPES = ("isotropic", "diagonal")
INIT_METHODS = ("pca", "random")
MODEL_NAMES = {"isotropic": "ppca", "diagonal": "factor_analysis"}
OPTIONAL_STATS = frozenset({"sum_zz_missing"})


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
        )


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


def add_complete(stats: Stats, xc: np.ndarray, terms: Terms, scratch: Scratch) -> None:
    """Add the statistics of complete rows (already minus the mean) to ``stats``."""
    q = terms.n_components
    n = len(xc)
    u, ez = complete_posterior(xc, terms, scratch)
    z1 = scratch("latents", (n, q + 1))
    z1[:, :q] = ez
    z1[:, q] = 1.0
    sum_squares = np.einsum("ij,ij->j", xc, xc)
    constant = terms.log_norm.sum() + terms.shared_logdet
    stats["loglik"] += -0.5 * (n * constant + sum_squares @ terms.inv_noise - np.vdot(u, ez))
    stats["n"] += n
    stats["count"] += n
    stats["sum_x2"] += sum_squares
    stats["sum_xz"] += xc.T @ z1
    stats["sum_zz"] += z1.T @ z1
    stats["sum_zz"][:q, :q] += n * terms.shared_precision_inv


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
) -> None:
    """Add the statistics of rows with missing values to ``stats``.

    ``missing_zz`` (d, packing(q + 1).size) accumulates, per feature, the packed
    Σ E[z̃ z̃ᵀ] over the rows where that feature is missing.
    """
    q, n = terms.n_components, len(x)
    xc = centred_observed(x, observed, terms.mean, scratch)
    mask = observed_mask(observed, scratch)
    ez, loglik, covariances = incomplete_posterior(xc, mask, terms, scratch, covariance=True)
    assert covariances is not None
    augmented = packing(q + 1)
    z1 = scratch("latents", (q + 1, n))
    z1[:q] = ez.T
    z1[q] = 1.0
    # E[z̃ z̃ᵀ], packed, batch last: E[z̃] E[z̃]ᵀ plus, in the latent-latent entries (all
    # but the last of each row of the augmented triangle), the posterior covariances
    second = scratch("second", (augmented.size, n))
    start = start_cov = 0
    for a in range(q + 1):
        run = np.multiply(z1[a], z1[a:], out=second[start : start + q + 1 - a])
        run[: q - a] += covariances[start_cov : start_cov + q - a]
        start += q + 1 - a
        start_cov += q - a
    unobserved = np.subtract(1.0, mask, out=scratch("unobserved", mask.shape))
    stats["loglik"] += loglik.sum()
    stats["n"] += n
    stats["count"] += mask.sum(axis=0)
    stats["sum_x2"] += np.einsum("ij,ij->j", xc, xc)
    stats["sum_xz"] += xc.T @ z1.T
    stats["sum_zz"] += augmented.unpack(second.sum(axis=1))
    missing_zz += (second @ unobserved).T


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


# --- the model's pure functions -------------------------------------------------------


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
        x = block["X"]
        terms = Terms.of(params)
        n_features = x.shape[1]
        stats = empty_stats(n_features, self.n_components)
        augmented = packing(self.n_components + 1)
        missing_zz = np.zeros((n_features, augmented.size))
        any_missing = False
        scratch = thread_scratch("ppca")  # the statistics are fresh arrays
        for start in range(0, len(x), BLOCK_ROWS):
            rows = scratch.float64("float64", x[start : start + BLOCK_ROWS])
            missing = np.isnan(rows)
            incomplete = missing.any(axis=1)
            if not incomplete.any():
                xc = np.subtract(rows, terms.mean, out=scratch("centred", rows.shape))
                add_complete(stats, xc, terms, scratch)
                continue
            # rows with nothing observed are left out
            partial = np.flatnonzero(incomplete & ~missing.all(axis=1))
            if len(partial):
                any_missing = True
                x_partial = scratch.take("rows", rows, partial)
                add_incomplete(stats, missing_zz, x_partial, ~missing[partial], terms, scratch)
            complete = np.flatnonzero(~incomplete)
            if len(complete):
                xc = scratch.take("centred", rows, complete)
                xc -= terms.mean
                add_complete(stats, xc, terms, scratch)
        if any_missing:
            stats["sum_zz_missing"] = augmented.unpack(missing_zz)
        return stats

    def combine(self, a: Stats, b: Stats) -> Stats:
        """Sum of two statistics; an absent ``sum_zz_missing`` counts as zeros."""
        unmatched = (a.keys() ^ b.keys()) - OPTIONAL_STATS
        if unmatched:
            raise ValueError(f"cannot combine statistics with keys {sorted(a)} and {sorted(b)}")
        total = {key: a[key] + b[key] for key in a if key in b}
        for key in OPTIONAL_STATS & (a.keys() ^ b.keys()):
            total[key] = (a[key] if key in a else b[key]).copy()
        return total

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
        return {
            "loadings": coef[:, :q] @ latent_factor,
            "mean": np.asarray(params["mean"], dtype=np.float64)
            + coef[:, q]
            + coef[:, :q] @ latent_mean,
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


# --- initialisation on a bounded sample of rows ---------------------------------------


def top_eigenpairs(
    xc: np.ndarray, n_components: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Leading eigenvalues (q,) and eigenvectors (d, q) of ``xcᵀ xc / n``.

    Subspace iteration with ten extra directions and a final Rayleigh-Ritz step
    (Halko, Martinsson & Tropp 2011): O(n·d·q) work in tall matrix products, never a
    d × d matrix; only d × (q + 10) matrices are orthonormalised.
    """
    n, d = xc.shape
    width = min(n_components + 10, d, n)
    basis = rng.standard_normal((d, width))
    for _ in range(POWER_ITERATIONS + 1):
        basis, _ = np.linalg.qr(xc.T @ (xc @ basis))
    projected = xc @ basis
    values, vectors = np.linalg.eigh(projected.T @ projected / n)
    order = np.argsort(values)[::-1][:n_components]
    return values[order], basis @ vectors[:, order]


def available_case_covariance(xc: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Available-case (pairwise-complete) covariance of rows with missing values.

    Entry ``(j, k)`` is the mean of ``xc_j xc_k`` over the rows where features ``j``
    and ``k`` are both observed (0 where no row has both); the diagonal is each
    feature's variance over its observed entries (1/n). It is consistent when values
    are missing completely at random, but need not be positive semidefinite.

    Parameters
    ----------
    xc : ndarray of shape (n, d)
        The rows minus each feature's observed mean, with 0 where a value is missing.
    observed : ndarray of shape (n, d)
        True where a value is observed.

    Returns
    -------
    ndarray of shape (d, d)
    """
    mask = observed.astype(np.float64)
    pairs = mask.T @ mask
    return (xc.T @ xc) / np.maximum(pairs, 1.0)


def closed_form_ppca(values: np.ndarray, vectors: np.ndarray, rest: float, total: float) -> Params:
    """The PPCA maximum (Tipping & Bishop 1999) of a covariance from its spectrum.

    ``values`` (q,) and ``vectors`` (d, q) are the leading eigenpairs, ``rest`` the
    sum of the other ``d − q`` eigenvalues and ``total`` the trace: σ² is the mean of
    the rest (floored at ``NOISE_FLOOR`` times the mean variance) and
    ``W = U (Λ − σ² I)^½`` (each ``λ − σ²`` at least ``1e-3 σ²``).
    """
    n_features, n_components = vectors.shape
    sigma2 = max(rest / (n_features - n_components), NOISE_FLOOR * total / n_features)
    loadings = vectors * np.sqrt(np.maximum(values - sigma2, 1e-3 * sigma2))
    return {"loadings": loadings, "noise_variance": np.asarray(sigma2)}


def _init_pca(
    model: LinearGaussianModel,
    xc: np.ndarray,
    observed: np.ndarray,
    total: float,
    rng: np.random.Generator,
) -> Params:
    """The closed-form PPCA solution of the sample's covariance.

    For complete rows, the leading eigenpairs of ``xcᵀ xc / n`` by subspace iteration
    (:func:`top_eigenpairs`). With missing values, those of the
    :func:`available_case_covariance` (while ``d ≤ MAX_COVARIANCE_FEATURES``), its
    eigenvalues clipped at 0: it starts much nearer the maximum than the covariance
    of the mean-filled rows, which shrinks every covariance towards 0, and so saves
    passes over the data. Wider data fall back to the mean-filled rows.
    """
    n_features = xc.shape[1]
    q = model.n_components
    if observed.all() or n_features > MAX_COVARIANCE_FEATURES:
        values, vectors = top_eigenpairs(xc, q, rng)
        return closed_form_ppca(values, vectors, total - float(values.sum()), total)
    spectrum, basis = np.linalg.eigh(available_case_covariance(xc, observed))
    spectrum = np.maximum(spectrum, 0.0)  # ascending
    return closed_form_ppca(
        spectrum[: -q - 1 : -1], basis[:, : -q - 1 : -1], float(spectrum[:-q].sum()), total
    )


def _init_random(
    model: LinearGaussianModel,
    xc: np.ndarray,
    observed: np.ndarray,
    total: float,
    rng: np.random.Generator,
) -> Params:
    """Gaussian random loadings carrying about half the sample's variance."""
    n_features = xc.shape[1]
    scale = np.sqrt(total / (2.0 * n_features * model.n_components))
    loadings = scale * rng.standard_normal((n_features, model.n_components))
    return {"loadings": loadings, "noise_variance": np.asarray(total / (2.0 * n_features))}


INIT: dict[
    str,
    Callable[[LinearGaussianModel, np.ndarray, np.ndarray, float, np.random.Generator], Params],
] = {
    "pca": _init_pca,
    "random": _init_random,
}


def initial_params(
    model: LinearGaussianModel, sample: np.ndarray, rng: np.random.Generator, method: str
) -> Params:
    """Starting parameters from a sample of rows (NaN = missing).

    The mean is the sample's observed column mean; ``method`` (a key of :data:`INIT`)
    sets the loadings and an isotropic noise from the rows minus that mean (factor
    analysis starts with that variance on every feature).
    """
    x = np.asarray(sample, dtype=np.float64)
    if np.isinf(x).any():
        raise ValueError(
            "X contains infinity. Replace infinite values (for example by NaN, meaning missing)."
        )
    observed = ~np.isnan(x)
    if not observed.any():
        raise ValueError("X has no observed value (every entry is NaN); there is nothing to fit.")
    counts = observed.sum(axis=0)
    mean = np.where(observed, x, 0.0).sum(axis=0) / np.maximum(counts, 1)
    xc = np.where(observed, x - mean, 0.0)
    total = float((np.square(xc).sum(axis=0) / np.maximum(counts, 1)).sum())
    if not total > 0.0:
        raise ValueError(
            "X has no variance in the sampled rows (every feature is constant), so it has "
            "no principal subspace. Check the data."
        )
    params = INIT[method](model, xc, observed, total, rng)
    n_features = x.shape[1]
    if model.noise == "diagonal":
        params["noise_variance"] = np.full(n_features, float(params["noise_variance"]))
    params["mean"] = mean
    return params


# --- the estimators ---------------------------------------------------------------------


class _LinearGaussian(HTMLRepr, ClassNamePrefixFeaturesOutMixin, TransformerMixin, EMEstimator):
    """What PPCA and FactorAnalysis share; they differ only in ``_noise``."""

    _noise: ClassVar[str]

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **EMEstimator._parameter_constraints,
        "n_components": counts(1),
        "init_params": [StrOptions(set(INIT_METHODS))],
        "init_sample_size": counts(2),
    }

    def __init__(
        self,
        n_components: int = 2,
        *,
        tol: float = 1e-4,
        max_iter: int = 200,
        n_init: int = 1,
        init_params: str = "pca",
        random_state: RandomState = None,
        checkpoint: Any = None,
        resume: bool = False,
        split_every: int = 8,
        persist: bool | None = None,
        init_sample_size: int = 20_000,
        accelerate: str = "none",
        callback: Callable[[Any], Any] | None = None,
        sample_dim: str = "sample",
        feature_dim: str = "feature",
    ) -> None:
        self.n_components = n_components
        self.tol = tol
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state
        self.checkpoint = checkpoint
        self.resume = resume
        self.split_every = split_every
        self.persist = persist
        self.init_sample_size = init_sample_size
        self.accelerate = accelerate
        self.callback = callback
        self.sample_dim = sample_dim
        self.feature_dim = feature_dim

    # --- fitting ----------------------------------------------------------------------

    def _model(self) -> LinearGaussianModel:
        return LinearGaussianModel(int(self.n_components), self._noise)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None, *, variable: str | None = None) -> Any:
        """Fit the model by EM; NaN entries of ``X`` are treated as missing.

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
        if model.n_components >= n_features:
            raise ValueError(
                f"n_components={model.n_components} must be smaller than n_features="
                f"{n_features}: with as many components as features there is no noise "
                "left to model. Use fewer components."
            )
        if n_samples <= model.n_components:
            raise ValueError(
                f"Expected n_samples > n_components, got n_samples={n_samples} and "
                f"n_components={model.n_components}. Use fewer components or more data."
            )

        def make_init(rng: np.random.Generator) -> Params:
            sample = sample_rows(samples.array, int(self.init_sample_size), rng)
            return initial_params(model, sample, rng, self.init_params)

        self._set_features(X, variable, n_features)
        self._fit_restarts(model, {"X": samples}, make_init)
        return self

    def _set_params(self, params: Params) -> None:
        """Fitted attributes in the canonical rotation of the loadings."""
        left, singular, _ = np.linalg.svd(params["loadings"], full_matrices=False)
        largest = np.argmax(np.abs(left), axis=0)
        signs = np.where(left[largest, np.arange(left.shape[1])] < 0, -1.0, 1.0)
        left = left * signs
        noise = np.asarray(params["noise_variance"], dtype=np.float64)
        per_feature = np.broadcast_to(noise, (self.n_features_in_,))
        explained = singular**2 + np.square(left).T @ per_feature
        order = np.argsort(-explained, kind="stable")  # already sorted for PPCA
        self.components_ = np.ascontiguousarray(left[:, order].T)
        self.loadings_ = self.components_ * singular[order, None]
        self.mean_ = np.asarray(params["mean"], dtype=np.float64)
        self.noise_variance_: float | np.ndarray = float(noise) if noise.ndim == 0 else noise.copy()
        self.explained_variance_ = explained[order]
        self.explained_variance_ratio_ = self.explained_variance_ / (
            singular @ singular + per_feature.sum()
        )

    def _params(self) -> Params:
        if not hasattr(self, "components_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit first.")
        return {
            "loadings": self.loadings_.T,
            "mean": self.mean_,
            "noise_variance": np.asarray(self.noise_variance_, dtype=np.float64),
        }

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # NaN entries are missing values
        return tags

    @property
    def _n_features_out(self) -> int:
        """Columns of :meth:`transform` (``get_feature_names_out`` names them)."""
        return int(self.components_.shape[0])

    # --- per-sample results (lazy for lazy input) ----------------------------------------

    def _checked_samples(self, X: Any, variable: str | None) -> Samples:
        samples = self._samples(X, variable)
        self._check_features(X, variable, int(samples.array.shape[1]))
        return samples

    def transform(self, X: Any, *, variable: str | None = None) -> Any:
        """Posterior mean of the latent variables, ``E[z | observed x]``.

        Missing values (NaN) are marginalised; a row with nothing observed gets 0.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), dask array, xarray.DataArray, or path
        variable : str, optional

        Returns
        -------
        ndarray, dask array or xarray.DataArray of shape (n_samples, n_components)
            Lazy for dask, Zarr and xarray input (dims ``sample_dim`` and ``"component"``).
        """
        params = self._params()
        samples = self._checked_samples(X, variable)
        model = self._model()
        return per_sample(
            samples,
            lambda x: model.posterior(x, params)[0],
            columns=self.n_components,
            missing_ok=True,
        )

    def fit_transform(self, X: Any, y: Any = None, *, variable: str | None = None) -> Any:
        """Fit, then return the posterior means of the latents of the same data."""
        return self.fit(X, variable=variable).transform(X, variable=variable)

    def inverse_transform(self, Z: Any) -> Any:
        """Map latent values back to feature space: ``Z @ loadings_ + mean_``.

        Parameters
        ----------
        Z : array-like of shape (n_samples, n_components), dask array or xarray.DataArray
            Latent values (for example from :meth:`transform`); an xarray input has dims
            ``sample_dim`` and ``"component"``.

        Returns
        -------
        ndarray, dask array or xarray.DataArray of shape (n_samples, n_features)
        """
        params = self._params()
        latents = as_samples(Z, sample_dim=self.sample_dim, feature_dim="component", name="Z")
        if latents.array.shape[1] != self.n_components:
            raise ValueError(
                f"Z has {latents.array.shape[1]} columns; expected n_components="
                f"{self.n_components}."
            )
        loadings, mean = params["loadings"], params["mean"]
        return per_sample(
            latents,
            lambda z: z.astype(np.float64) @ loadings.T + mean,
            columns=self.n_features_in_,
            column_dim=self.feature_dim,
        )

    def score_samples(self, X: Any, *, variable: str | None = None) -> Any:
        """Log-likelihood of each sample's observed values (missing ones marginalised).

        Returns
        -------
        ndarray, dask array or xarray.DataArray of shape (n_samples,)
            0 for a row with nothing observed.
        """
        params = self._params()
        samples = self._checked_samples(X, variable)
        model = self._model()
        return per_sample(
            samples, lambda x: model.posterior(x, params)[1], columns=None, missing_ok=True
        )

    def score(self, X: Any, y: Any = None, *, variable: str | None = None) -> float:
        """Mean log-likelihood over the rows with at least one observed value (one pass)."""
        params = self._params()
        samples = self._checked_samples(X, variable)
        model = self._model()

        def loglik(block: Block, p: Params) -> Stats:
            x = block["X"]
            return {
                "n": np.asarray(float((~np.isnan(x)).any(axis=1).sum())),
                "loglik": np.asarray(model.posterior(x, p)[1].sum()),
            }

        stats = map_reduce(
            loglik, add_stats, {"X": samples.array}, params, split_every=int(self.split_every)
        )
        if stats["n"] == 0:
            raise ValueError(
                "X has no observed value (every entry is NaN); there is nothing to score."
            )
        return float(stats["loglik"] / stats["n"])

    def impute(self, X: Any, *, variable: str | None = None) -> Any:
        """Fill each missing entry with its conditional expectation given the row's
        observed entries, ``E[x_missing | x_observed] = μ_m + W_m E[z | x_observed]``.

        Returns
        -------
        ndarray, dask array or xarray.DataArray of shape (n_samples, n_features)
            Observed entries unchanged; the input's float dtype.
        """
        params = self._params()
        samples = self._checked_samples(X, variable)
        model = self._model()
        loadings, mean = params["loadings"], params["mean"]

        def fill(x: np.ndarray) -> np.ndarray:
            filled = np.array(x, copy=True)
            missing = np.isnan(filled)
            rows = np.flatnonzero(missing.any(axis=1))
            if rows.size:
                ez, _ = model.posterior(filled[rows], params)
                expected = ez @ loadings.T + mean
                filled[rows] = np.where(missing[rows], expected, filled[rows])
            return filled

        return per_sample(
            samples,
            fill,
            columns=self.n_features_in_,
            dtype=samples.array.dtype,
            column_dim=self.feature_dim,
            missing_ok=True,
        )

    def sample(self, n_samples: int = 1, *, random_state: RandomState = None) -> np.ndarray:
        """Draw ``n_samples`` rows from the fitted model, shape (n_samples, n_features)."""
        params = self._params()
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}.")
        rng = as_generator(self.random_state if random_state is None else random_state)
        latents = rng.standard_normal((n_samples, self.n_components))
        noise = rng.standard_normal((n_samples, self.n_features_in_)) * np.sqrt(
            params["noise_variance"]
        )
        return latents @ params["loadings"].T + params["mean"] + noise

    def get_covariance(self) -> np.ndarray:
        """The model covariance ``W Wᵀ + Ψ``, shape (n_features, n_features)."""
        params = self._params()
        noise = np.broadcast_to(params["noise_variance"], (self.n_features_in_,))
        return params["loadings"] @ params["loadings"].T + np.diag(noise)

    def get_precision(self) -> np.ndarray:
        """Inverse of :meth:`get_covariance`, by the Woodbury identity (no d × d solve)."""
        terms = Terms.of(self._params())
        return (
            np.diag(terms.inv_noise)
            - terms.weighted @ terms.shared_precision_inv @ terms.weighted.T
        )


class PPCA(_LinearGaussian):
    """Probabilistic PCA (Tipping & Bishop 1999) fitted by EM over Dask chunks.

    The model is ``x = W z + μ + ε`` with ``z ~ N(0, I)`` and isotropic noise
    ``ε ~ N(0, σ² I)``; at the maximum of the likelihood the columns of ``W`` span the
    leading principal subspace. NaN entries are missing values: the fit maximises the
    likelihood of the observed entries exactly (mean, loadings and noise jointly).
    An iteration over complete data costs O(n_samples · n_features · n_components).

    Parameters
    ----------
    n_components : int, default=2
        Number of latent dimensions, smaller than the number of features.
    tol : float, default=1e-4
        Convergence threshold on the change of the mean per-sample log-likelihood.
    max_iter : int, default=200
        Maximum number of EM iterations per initialisation.
    n_init : int, default=1
        Number of initialisations; the best (highest log-likelihood) is kept.
    init_params : {"pca", "random"}, default="pca"
        ``"pca"`` starts from the closed-form solution for the covariance of a random
        sample of at most ``init_sample_size`` rows (with missing values, the
        available-case covariance: each entry from the rows where both features are
        observed);
        ``"random"`` from random loadings.
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
        Keep the data in cluster memory between iterations. By default, data taking
        at most half the cluster's memory are persisted; larger data are re-read from
        their store every iteration.
    init_sample_size : int, default=20_000
        Rows drawn for the initialisation.
    accelerate : {"none", "squarem"}, default="none"
        ``"squarem"`` extrapolates between EM steps (Varadhan & Roland 2008; loadings,
        mean and log noise variances as one vector), reaching the same maximum in fewer
        passes where EM crawls (close eigenvalues); ``max_iter`` then counts passes and
        ``lower_bounds_`` has one entry per cycle.
    callback : callable, optional
        Called after every iteration with a :class:`dem.engine.IterationInfo`.
    sample_dim, feature_dim : str
        Dimension names of xarray input.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Orthonormal principal axes, sorted by decreasing explained variance; the sign
        of each makes its largest entry positive.
    explained_variance_ : ndarray of shape (n_components,)
        Variance of the fitted model along each component (``s_k² + σ²``, the
        eigenvalues of the 1/N sample covariance at the maximum likelihood).
    explained_variance_ratio_ : ndarray of shape (n_components,)
        ``explained_variance_`` over the model's total variance.
    loadings_ : ndarray of shape (n_components, n_features)
        The loading matrix ``Wᵀ`` in canonical rotation: ``components_`` scaled by
        the singular values of ``W``.
    noise_variance_ : float
        σ².
    mean_ : ndarray of shape (n_features,)
    n_iter_ : int
    converged_ : bool
    lower_bound_ : float
        Mean per-sample log-likelihood at the start of the last iteration.
    lower_bounds_ : list of float
        ``lower_bound_`` of every iteration of the best initialisation.
    n_features_in_ : int

    See Also
    --------
    FactorAnalysis : the same model with one noise variance per feature.

    Notes
    -----
    Rows with no observed value are left out of the fit; ``transform`` maps them to 0,
    ``impute`` to ``mean_`` and ``score_samples`` to 0. A feature with no observed
    value is an error. See :mod:`dem.models.ppca` for the algorithm.
    """

    _noise: ClassVar[str] = "isotropic"


class FactorAnalysis(_LinearGaussian):
    """Factor analysis fitted by EM over Dask chunks, with missing values.

    The model is ``x = W z + μ + ε`` with ``z ~ N(0, I)`` and diagonal noise
    ``ε ~ N(0, diag(ψ))`` (one variance per feature). NaN entries are missing values:
    the fit maximises the likelihood of the observed entries exactly (mean, loadings
    and noise jointly). An iteration over complete data costs
    O(n_samples · n_features · n_components).

    Parameters
    ----------
    n_components : int, default=2
        Number of factors, smaller than the number of features.
    tol : float, default=1e-4
        Convergence threshold on the change of the mean per-sample log-likelihood.
    max_iter : int, default=200
        Maximum number of EM iterations per initialisation.
    n_init : int, default=1
        Number of initialisations; the best (highest log-likelihood) is kept.
    init_params : {"pca", "random"}, default="pca"
        ``"pca"`` starts from the probabilistic PCA closed-form solution for the
        covariance of a random sample of at most ``init_sample_size`` rows (its σ² on
        every feature; with missing values, the available-case covariance, as for
        :class:`PPCA`);
        ``"random"`` from random loadings.
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
        Keep the data in cluster memory between iterations (see :class:`PPCA`).
    init_sample_size : int, default=20_000
        Rows drawn for the initialisation.
    accelerate : {"none", "squarem"}, default="none"
        ``"squarem"`` extrapolates between EM steps (Varadhan & Roland 2008; loadings,
        mean and log noise variances as one vector), reaching the same maximum in fewer
        passes where EM crawls (close eigenvalues); ``max_iter`` then counts passes and
        ``lower_bounds_`` has one entry per cycle.
    callback : callable, optional
        Called after every iteration with a :class:`dem.engine.IterationInfo`.
    sample_dim, feature_dim : str
        Dimension names of xarray input.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Orthonormal basis of the span of the loadings, sorted by the variance of the
        fitted model along each direction; the largest entry of each is positive.
    explained_variance_ : ndarray of shape (n_components,)
        Variance of the fitted model along each component, ``s_k² + u_kᵀ Ψ u_k``.
    explained_variance_ratio_ : ndarray of shape (n_components,)
        ``explained_variance_`` over the model's total variance.
    loadings_ : ndarray of shape (n_components, n_features)
        The loading matrix ``Wᵀ`` (scikit-learn's ``FactorAnalysis.components_``) in
        canonical rotation: rows orthogonal, ``components_`` scaled by the singular
        values of ``W``.
    noise_variance_ : ndarray of shape (n_features,)
        ψ, one variance per feature.
    mean_ : ndarray of shape (n_features,)
    n_iter_ : int
    converged_ : bool
    lower_bound_ : float
        Mean per-sample log-likelihood at the start of the last iteration.
    lower_bounds_ : list of float
    n_features_in_ : int

    See Also
    --------
    PPCA : the same model with one noise variance shared by all features.

    Notes
    -----
    Missing values follow the rules of :class:`PPCA`. EM converges slowly where a
    uniqueness ψ_j is small next to its feature's variance (near a Heywood case); raise
    ``max_iter`` there.
    """

    _noise: ClassVar[str] = "diagonal"
