"""The variational Gaussian mixture's maths on statistics: pure numpy, scikit-learn's formulas.

Everything here works on the Gaussian mixture's additive statistics (``resp_sum``,
``sum_x``, ``scatter`` about a shift, see :mod:`dem.models.mixture`) and on small
parameter arrays: the variational M-step (:func:`estimate_posterior`, scikit-learn's
``_estimate_weights``, ``_estimate_means`` and ``_estimate_wishart_*``), the terms the
E-step adds to the Gaussian log densities (:func:`log_weights`: expected log weights
and the Wishart expected log-determinant and precision terms), the responsibilities'
Σ r log r of a chunk from its statistics (:func:`resp_log_resp`), the lower bound
(:func:`lower_bound`, scikit-learn's, which leaves out constant terms) and the data
priors' defaults from the data's moments (:func:`data_moments`, :func:`default_priors`).

Parameters are a dict: ``weight_concentration`` ((2, K) for the Dirichlet process: the
two Beta parameters of each stick, (K,) for the Dirichlet distribution),
``mean_precision`` (K,), ``means`` (K, d), ``degrees_of_freedom`` (K,) or () for tied,
``covariances`` and ``precisions_cholesky`` (shaped as the Gaussian mixture's),
``weights`` (the expected weights, scikit-learn's ``weights_``), ``log_weights`` (K,),
``shift`` (d,), and the priors, carried unchanged from iteration to iteration:
``weight_concentration_prior``, ``mean_precision_prior``, ``degrees_of_freedom_prior``
(scalars), ``mean_prior`` (d,) and ``covariance_prior`` (shaped as one component's
covariance: (d, d), (d,) or ()).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import betaln, digamma, gammaln

from dem.model import Params, Stats
from dem.models import gaussian
from dem.models.mixture.kernels import EPS, estimate_params

PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")

PRIOR_KEYS = (
    "weight_concentration_prior",
    "mean_precision_prior",
    "degrees_of_freedom_prior",
    "mean_prior",
    "covariance_prior",
)
"""Parameters that hold the priors: the M-step carries them unchanged."""


# --- weights ---------------------------------------------------------------------------


def expected_log_weights(concentration: np.ndarray, prior_type: str) -> np.ndarray:
    """E[log π_k] under the variational posterior of the weights (K,)."""
    if prior_type == "dirichlet_process":
        digamma_sum = digamma(concentration[0] + concentration[1])
        digamma_a = digamma(concentration[0])
        digamma_b = digamma(concentration[1])
        return np.asarray(
            digamma_a - digamma_sum + np.hstack((0, np.cumsum(digamma_b - digamma_sum)[:-1]))
        )
    return np.asarray(digamma(concentration) - digamma(np.sum(concentration)))


def expected_weights(concentration: np.ndarray, prior_type: str) -> np.ndarray:
    """E[π] (scikit-learn's ``weights_``): the stick-breaking means, or the Dirichlet's."""
    if prior_type == "dirichlet_process":
        total = concentration[0] + concentration[1]
        tmp = concentration[1] / total
        weights = concentration[0] / total * np.hstack((1, np.cumprod(tmp[:-1])))
        return np.asarray(weights / np.sum(weights))
    return np.asarray(concentration / np.sum(concentration))


def log_weights(params: Params, prior_type: str, n_features: int) -> np.ndarray:
    """What the E-step adds to log N(x | means, precisions_cholesky) for each component:
    E[log π_k] - (d/2) log ν_k + (E[log |Λ_k|] terms - d / β_k) / 2 (scikit-learn's
    ``_estimate_log_weights`` and the non-Gaussian terms of its ``_estimate_log_prob``)."""
    dof = params["degrees_of_freedom"]
    log_lambda = n_features * np.log(2.0) + np.sum(
        digamma(0.5 * (dof - np.arange(0, n_features)[:, np.newaxis])), 0
    )
    return np.asarray(
        expected_log_weights(params["weight_concentration"], prior_type)
        - 0.5 * n_features * np.log(dof)
        + 0.5 * (log_lambda - n_features / params["mean_precision"])
    )


# --- the variational M-step ------------------------------------------------------------


def _wishart(
    ctype: str,
    nk: np.ndarray,
    xk: np.ndarray,
    sk: np.ndarray,
    mean_precision: np.ndarray,
    priors: Params,
) -> tuple[np.ndarray, np.ndarray]:
    """Degrees of freedom and normalised covariances (scikit-learn's ``_estimate_wishart_*``)."""
    beta0, nu0 = priors["mean_precision_prior"], priors["degrees_of_freedom_prior"]
    cov0 = priors["covariance_prior"]
    diff = xk - priors["mean_prior"]
    n_components = len(nk)
    if ctype == "full":
        dof = nu0 + nk
        covariances = np.empty_like(sk)
        for k in range(n_components):
            covariances[k] = (
                cov0
                + nk[k] * sk[k]
                + nk[k] * beta0 / mean_precision[k] * np.outer(diff[k], diff[k])
            )
        return dof, covariances / dof[:, np.newaxis, np.newaxis]
    if ctype == "tied":
        dof = nu0 + nk.sum() / n_components
        covariances = (
            cov0
            + sk * nk.sum() / n_components
            + beta0 / n_components * np.dot((nk / mean_precision) * diff.T, diff)
        )
        return np.asarray(dof), covariances / dof
    dof = nu0 + nk
    if ctype == "diag":
        covariances = cov0 + nk[:, np.newaxis] * (
            sk + (beta0 / mean_precision)[:, np.newaxis] * np.square(diff)
        )
        return dof, covariances / dof[:, np.newaxis]
    covariances = cov0 + nk * (sk + beta0 / mean_precision * np.mean(np.square(diff), 1))
    return dof, covariances / dof


def estimate_posterior(
    stats: Stats, params: Params, ctype: str, prior_type: str, reg_covar: float
) -> Params:
    """The variational posterior of the weights, means and precisions from the statistics
    (about ``params["shift"]``), with the priors ``params`` carries: scikit-learn's M-step
    (and its ``_initialize``, from the statistics of the initial responsibilities)."""
    shift = params["shift"]
    ml = estimate_params(stats, shift, ctype, reg_covar)  # xk, sk as scikit-learn's
    nk = np.asarray(stats["resp_sum"]) + EPS
    xk, sk = ml["means"], ml["covariances"]
    priors = {key: params[key] for key in PRIOR_KEYS}
    alpha0 = priors["weight_concentration_prior"]
    if prior_type == "dirichlet_process":
        concentration = np.stack([1.0 + nk, alpha0 + np.hstack((np.cumsum(nk[::-1])[-2::-1], 0))])
    else:
        concentration = alpha0 + nk
    beta0 = priors["mean_precision_prior"]
    mean_precision = beta0 + nk
    means = (beta0 * priors["mean_prior"] + nk[:, np.newaxis] * xk) / mean_precision[:, np.newaxis]
    dof, covariances = _wishart(ctype, nk, xk, sk, mean_precision, priors)
    posterior: Params = {
        "weight_concentration": concentration,
        "mean_precision": mean_precision,
        "means": means,
        "degrees_of_freedom": dof,
        "covariances": covariances,
        "precisions_cholesky": gaussian.precision_cholesky(covariances, ctype),
        "weights": expected_weights(concentration, prior_type),
        "shift": shift,
        **priors,
    }
    posterior["log_weights"] = log_weights(posterior, prior_type, means.shape[1])
    return posterior


# --- the lower bound ---------------------------------------------------------------------


def _weighted_distances(stats: Stats, params: Params, ctype: str) -> float:
    """Σ_n Σ_k r_nk (x_n - m_k)ᵀ Λ_k (x_n - m_k) from the statistics about the shift."""
    prec_chol = params["precisions_cholesky"]
    precisions = gaussian.precisions_from_cholesky(prec_chol, ctype)
    dm = params["means"] - params["shift"]
    resp_sum, sum_x, scatter = stats["resp_sum"], stats["sum_x"], stats["scatter"]
    if ctype == "full":
        weighted = np.einsum("kij,kj->ki", precisions, dm)  # Λ_k dm_k
        return float(
            np.sum(precisions * scatter)
            - 2.0 * np.sum(weighted * sum_x)
            + np.sum(resp_sum * np.sum(weighted * dm, axis=1))
        )
    if ctype == "tied":  # scatter: Σ_n y yᵀ over all rows (Σ_k r_nk = 1)
        weighted = dm @ precisions
        return float(
            np.sum(precisions * scatter)
            - 2.0 * np.sum(weighted * sum_x)
            + np.sum(resp_sum * np.sum(weighted * dm, axis=1))
        )
    if ctype == "spherical":
        precisions = np.repeat(precisions[:, None], dm.shape[1], axis=1)
    return float(np.sum(precisions * (scatter - 2.0 * dm * sum_x + resp_sum[:, None] * dm**2)))


def resp_log_resp(stats: Stats, params: Params, ctype: str) -> float:
    """Σ_n Σ_k r_nk log r_nk of a chunk, from its statistics at the parameters its
    E-step used: Σ r (log density terms) - Σ log Σ_k exp(...), with log r = (weighted log
    density) - (its log-sum-exp), so no pass over the rows is needed."""
    n_features = params["means"].shape[1]
    constants = gaussian.log_prob_constants(
        params["log_weights"], params["precisions_cholesky"], ctype, n_features
    )[:, 0]
    weighted = float(np.dot(stats["resp_sum"], constants)) - 0.5 * _weighted_distances(
        stats, params, ctype
    )
    return weighted - float(stats["loglik"])


def lower_bound(resp_entropy: float, params: Params, ctype: str, prior_type: str) -> float:
    """scikit-learn's ``_compute_lower_bound``: the ELBO without its constant terms.

    ``resp_entropy`` is Σ r log r of the E-step; ``params`` the M-step's result.
    """
    n_features = params["means"].shape[1]
    dof = params["degrees_of_freedom"]
    log_det_chol = gaussian.log_det_cholesky(
        params["precisions_cholesky"], ctype, n_features
    ) - 0.5 * n_features * np.log(dof)
    norm = -(
        dof * log_det_chol
        + dof * n_features * 0.5 * math.log(2.0)
        + np.sum(gammaln(0.5 * (dof - np.arange(n_features)[:, np.newaxis])), 0)
    )
    n_components = len(params["mean_precision"])
    # tied: one Wishart (a scalar ν; the sum over features leaves a 1-vector), K times
    log_wishart = n_components * float(np.sum(norm)) if ctype == "tied" else np.sum(norm)
    concentration = params["weight_concentration"]
    if prior_type == "dirichlet_process":
        log_norm_weight = -np.sum(betaln(concentration[0], concentration[1]))
    else:
        log_norm_weight = gammaln(np.sum(concentration)) - np.sum(gammaln(concentration))
    return float(
        -resp_entropy
        - log_wishart
        - log_norm_weight
        - 0.5 * n_features * np.sum(np.log(params["mean_precision"]))
    )


# --- the data priors' defaults ---------------------------------------------------------------


def data_moments(x: np.ndarray, diagonal: bool, weights: np.ndarray | None = None) -> Stats:
    """Count, mean and centred second moments (M2: the scatter about the chunk's own mean,
    or its diagonal) of the rows ``x``, combined across chunks by :func:`combine_moments`;
    with ``weights`` (no zeros), those of the rows repeated as often as their weights say."""
    x = np.asarray(x, dtype=np.float64)
    n = float(len(x) if weights is None else weights.sum())
    if weights is None:
        mean = x.mean(axis=0) if n else np.zeros(x.shape[1])
    else:
        mean = weights @ x / n if n else np.zeros(x.shape[1])
    centred = x - mean
    scaled = centred if weights is None else centred * weights[:, None]
    m2 = np.einsum("ij,ij->j", scaled, centred) if diagonal else scaled.T @ centred
    return {"n": np.float64(n), "mean": mean, "m2": m2}


def combine_moments(a: Stats, b: Stats) -> Stats:
    """The moments of two sets of rows together (Chan, Golub & LeVeque's update)."""
    if a["n"] == 0:
        return b
    if b["n"] == 0:
        return a
    n = a["n"] + b["n"]
    delta = b["mean"] - a["mean"]
    mean = a["mean"] + delta * (b["n"] / n)
    weight = a["n"] * b["n"] / n
    outer = delta**2 if a["m2"].ndim == 1 else np.outer(delta, delta)
    return {"n": n, "mean": mean, "m2": a["m2"] + b["m2"] + weight * outer}


def default_priors(moments: Stats, ctype: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's defaults of ``mean_prior`` (the data mean) and ``covariance_prior``
    (``np.cov(X.T)`` for full and tied, ``np.var(X, axis=0, ddof=1)`` for diag, its mean for
    spherical) from the data's moments."""
    covariance = moments["m2"] / (moments["n"] - 1.0)
    if ctype == "spherical":
        covariance = np.asarray(np.mean(covariance))
    return np.asarray(moments["mean"]), np.asarray(covariance)
