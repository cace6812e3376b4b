"""The Gaussian mixture's block maths: responsibilities and the M-step.

Pure numpy on blocks of rows, shared by the model's E-step (:mod:`.model`), the
initialisation (:mod:`.init`) and the Gaussian HMM: the weighted log densities of a
block, the responsibilities they imply, and the parameters from the statistics
``resp_sum``, ``sum_x`` and ``scatter`` (taken about a shift, see the package notes),
by scikit-learn's formulas, including its ``10 * eps`` added to the component counts.
"""

from __future__ import annotations

import numpy as np

from dem.model import Params, Stats
from dem.models import gaussian

BLOCK_ROWS = gaussian.BLOCK_ROWS
EPS = 10 * np.finfo(np.float64).eps


def log_prob(constants: np.ndarray, distances: np.ndarray, scratch: gaussian.Scratch) -> np.ndarray:
    """constants - distances / 2 in float64 (K, n), in the scratch buffer "log_prob"."""
    log_prob = np.multiply(distances, -0.5, out=scratch("log_prob", distances.shape))
    log_prob += constants
    return log_prob


def responsibilities(
    log_prob: np.ndarray,
    dtype: type[np.floating] = np.float64,
    scratch: gaussian.Scratch | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Responsibilities (..., K, n) in ``dtype`` and log Σ_k exp (..., n) in float64.

    ``log_prob`` (..., K, n, float64, weighted log densities; leading axes for stacked
    runs) is overwritten: for float64 it becomes the responsibilities. The reductions
    run over the components axis -2, as fast elementwise passes over rows of n; only
    the exponentials of log_prob - max run in ``dtype`` (float32 ones in ``scratch``).
    """
    top = log_prob.max(axis=-2, keepdims=True)
    log_prob -= top
    if dtype == np.float64:
        resp = log_prob
    else:
        resp = (scratch or gaussian.Scratch())("resp", log_prob.shape, dtype)
        resp[...] = log_prob
    np.exp(resp, out=resp)
    total = resp.sum(axis=-2, keepdims=True)
    resp /= total
    return resp, (np.log(total, dtype=np.float64) + top).squeeze(-2)


def mixture_mean(params: Params) -> np.ndarray:
    """Σ w_k μ_k: a good reference point for the rows of this mixture."""
    return params["weights"] @ params["means"]


def estimate_params(
    stats: Stats, shift: np.ndarray, covariance_type: str, reg_covar: float
) -> Params:
    """Weights, means, covariances and precision factors from statistics about ``shift``."""
    resp_sum = np.asarray(stats["resp_sum"])
    counts = resp_sum + EPS
    # means = Σ r x / counts, written about the shift so nothing cancels
    dm = stats["sum_x"] / counts[:, None] - shift * (EPS / counts)[:, None]
    covariances = gaussian.COVARIANCE[covariance_type](
        stats["scatter"], resp_sum, stats["sum_x"], dm, counts, reg_covar
    )
    return {
        "weights": counts / counts.sum(),
        "means": shift + dm,
        "shift": shift,
        "covariances": covariances,
        "precisions_cholesky": gaussian.precision_cholesky(covariances, covariance_type),
    }


def expected_complete_loglik(stats: Stats, params: Params, covariance_type: str) -> float:
    """``Σ_i Σ_k r_ik [log w_k + log N(x_i | μ_k, Σ_k)]`` from statistics about the shift.

    The expected complete-data log-likelihood of the rows whose statistics (taken with
    responsibilities ``r`` at any parameters) are ``stats``, at ``params``: linear in the
    statistics, so that of several chunks is that of their sum (incremental EM's free
    energy, :mod:`dem.incremental`). Scatter about each mean is that about the shift
    corrected as the M-step corrects it, with ``reg_covar`` 0 and counts 1.
    """
    resp_sum = np.asarray(stats["resp_sum"])
    n_components, n_features = params["means"].shape
    dm = params["means"] - params["shift"]
    ones = np.ones(n_components)
    prec_chol = params["precisions_cholesky"]
    if covariance_type == "tied":  # one scatter Σ_k S_k: _covariance_tied divides by Σ nk
        centred = gaussian.COVARIANCE["tied"](
            stats["scatter"], resp_sum, stats["sum_x"], dm, ones / n_components, 0.0
        )
        precision = prec_chol @ prec_chol.T
        trace = float(np.sum(precision * centred))
    else:
        centred = gaussian.COVARIANCE["full" if covariance_type == "full" else "diag"](
            stats["scatter"], resp_sum, stats["sum_x"], dm, ones, 0.0
        )
        if covariance_type == "full":
            precision = np.einsum("kij,klj->kil", prec_chol, prec_chol)
            trace = float(np.sum(precision * centred))
        elif covariance_type == "diag":
            trace = float(np.sum(prec_chol**2 * centred))
        else:
            trace = float(np.sum(prec_chol[:, None] ** 2 * centred))
    log_det = gaussian.log_det_cholesky(prec_chol, covariance_type, n_features)
    per_row = np.log(params["weights"]) + log_det - 0.5 * n_features * gaussian.LOG_2PI
    return float(resp_sum @ per_row) - 0.5 * trace
