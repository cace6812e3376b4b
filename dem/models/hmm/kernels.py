"""HMM kernels: pure numpy maths on the sequences of one block.

The layout helpers (lengths, valid steps, :func:`pad_sequences`), the scaled and
log-space forward–backward passes (:func:`forward_backward`, :class:`Posteriors`) and
:func:`viterbi`, the M-step formulas (Dirichlet MAP of the probabilities, the covariance
updates of each covariance type), the packing of probabilities and covariances into
SQUAREM's flat vector, and the checks of the values (finite observations, symbols).
Imports neither dask nor :mod:`dem.engine`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp

from dem.models import gaussian
from dem.models.scratch import Scratch

#: A scaling normaliser below this sends its sequence to the exact log-space path.
TINY = 1e-200
#: Smallest denominator of a covariance update (hmmlearn's guard for diagonal ones).
MIN_COVARS_DENOMINATOR = 1e-5

COVARIANCE_TYPES = gaussian.COVARIANCE_TYPES


# --- sequences of a chunk -------------------------------------------------------------


def checked_lengths(
    lengths: np.ndarray | None, n_sequences: int, n_times: int, where: str = ""
) -> np.ndarray:
    """Sequence lengths as integers in [1, n_times] (all ``n_times`` when None).

    ``where`` says what the positions in an error count from (" of this chunk").
    """
    if lengths is None:
        return np.full(n_sequences, n_times, dtype=np.int64)
    values = np.asarray(lengths)
    if values.shape != (n_sequences,):
        raise ValueError(
            f"lengths must have shape ({n_sequences},), one length per sequence; got "
            f"shape {values.shape}."
        )
    bad = ~valid_lengths(values, n_times)
    if bad.any():
        raise ValueError(
            f"lengths must be whole numbers between 1 and n_times={n_times}; got "
            f"{values[bad][:5].tolist()} (for {int(bad.sum())} sequence(s), the first at "
            f"position {int(np.argmax(bad))}{where}). Each length counts the valid leading "
            "time steps of its sequence."
        )
    return values.astype(np.int64)


def valid_lengths(lengths: np.ndarray, n_times: int) -> np.ndarray:
    """Which ``lengths`` are whole numbers in [1, n_times]."""
    with np.errstate(invalid="ignore"):
        as_int = lengths.astype(np.int64)
    return (as_int == lengths) & (as_int >= 1) & (as_int <= n_times)


def valid_steps(
    lengths: np.ndarray, n_times: int, out: np.ndarray | None = None
) -> np.ndarray | None:
    """(n_times, n_sequences) mask of valid time steps (in ``out`` if given), None when
    none is padding."""
    if np.all(lengths == n_times):
        return None
    return np.less(np.arange(n_times)[:, None], lengths[None, :], out=out)


def pad_sequences(
    X: Any, lengths: Any, *, fill_value: float = np.nan
) -> tuple[np.ndarray, np.ndarray]:
    """Turn concatenated sequences (hmmlearn's layout) into dem's padded layout.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or (n_samples,)
        The sequences one after another.
    lengths : array-like of int of shape (n_sequences,)
        The length of each sequence; they sum to ``n_samples``.
    fill_value : float, default=nan
        Written after the end of each shorter sequence.

    Returns
    -------
    padded : ndarray of shape (n_sequences, max(lengths), n_features) or (n_sequences, max(lengths))
    lengths : ndarray of int64 of shape (n_sequences,)
    """
    values = np.asarray(X)
    counts = np.asarray(lengths, dtype=np.int64)
    if counts.ndim != 1 or len(counts) == 0 or np.any(counts < 1):
        raise ValueError("lengths must be a non-empty 1-D array of positive integers.")
    if counts.sum() != len(values):
        raise ValueError(
            f"lengths sum to {int(counts.sum())}, but X has {len(values)} rows; they must agree."
        )
    padded = np.full(
        (len(counts), int(counts.max()), *values.shape[1:]),
        fill_value,
        dtype=np.result_type(values.dtype, np.asarray(fill_value).dtype),
    )
    rows = np.arange(int(counts.max()))[None, :] < counts[:, None]
    padded[rows] = values
    return padded, counts


# --- forward–backward, vectorised across the sequences of a block -----------------------


@dataclass(frozen=True)
class Posteriors:
    """What forward–backward gives for a block of sequences.

    Attributes
    ----------
    loglik : ndarray of shape (n_sequences,)
    gamma : ndarray of shape (n_times, n_states, n_sequences) or None
        State posteriors (zero at padding).
    trans : ndarray of shape (n_states, n_states) or None
        Expected transition counts summed over the block.
    """

    loglik: np.ndarray
    gamma: np.ndarray | None
    trans: np.ndarray | None


def forward_backward(
    log_b: np.ndarray,
    startprob: np.ndarray,
    transmat: np.ndarray,
    valid: np.ndarray | None,
    *,
    posteriors: bool = True,
    scratch: Scratch | None = None,
    weights: np.ndarray | None = None,
) -> Posteriors:
    """Log-likelihoods, state posteriors and expected transitions of a block.

    Parameters
    ----------
    log_b : ndarray of shape (n_times, n_states, n_sequences)
        Emission log-densities.
    startprob : ndarray of shape (n_states,)
    transmat : ndarray of shape (n_states, n_states)
    valid : ndarray of bool of shape (n_times, n_sequences), optional
        Valid (non-padding) steps; None when every step is valid.
    posteriors : bool, default=True
        Run the backward pass too (else only ``loglik`` is returned).
    scratch : Scratch, optional
        Buffers for the block's arrays (fresh ones when None). The returned ``gamma`` is
        then one of them: read it before the next call with the same buffers.
    weights : ndarray of shape (n_sequences,), optional
        Non-negative weights of the sequences: ``gamma`` and ``trans`` are then each
        sequence's times its weight (``loglik`` stays per sequence, unweighted); a
        sequence of weight 0 adds nothing, whatever its values.
    """
    scratch = Scratch() if scratch is None else scratch
    factors, shift = emission_factors(log_b, valid, scratch)
    return forward_backward_factors(
        log_b,
        factors,
        shift,
        startprob,
        transmat,
        valid,
        posteriors=posteriors,
        scratch=scratch,
        weights=weights,
    )


def emission_factors(
    log_b: np.ndarray, valid: np.ndarray | None, scratch: Scratch
) -> tuple[np.ndarray, np.ndarray]:
    """Emission probabilities relative to each step's largest, and the log shifts.

    ``log_b`` has shape (n_times, n_states, n_sequences); the factors (same shape) and
    the shifts (n_times, n_sequences) are in ``scratch`` ("factors", "shift"). A shift
    is zero where the step's largest is not finite, and at padding.
    """
    n_times, _, n_sequences = log_b.shape
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        finite_peak = np.max(log_b, axis=1, out=scratch("shift", (n_times, n_sequences)))
        infinite = np.isfinite(finite_peak, out=scratch("infinite", finite_peak.shape, np.bool_))
        np.copyto(finite_peak, 0.0, where=np.logical_not(infinite, out=infinite))
        factors = np.subtract(log_b, finite_peak[:, None, :], out=scratch("factors", log_b.shape))
        np.exp(factors, out=factors)
    if valid is not None:
        np.copyto(finite_peak, 0.0, where=padding_mask(valid, scratch))
    return factors, finite_peak


def forward_backward_factors(
    log_b: np.ndarray,
    factors: np.ndarray,
    shift: np.ndarray,
    startprob: np.ndarray,
    transmat: np.ndarray,
    valid: np.ndarray | None,
    *,
    posteriors: bool = True,
    scratch: Scratch | None = None,
    weights: np.ndarray | None = None,
) -> Posteriors:
    """:func:`forward_backward` given the block's :func:`emission_factors` (which it may
    overwrite); ``log_b`` serves the sequences whose scaled pass fails."""
    scratch = Scratch() if scratch is None else scratch
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        scaled, failed = _scaled(
            factors, shift, startprob, transmat, valid, posteriors, scratch=scratch, weights=weights
        )
        if not failed.any():
            return scaled
        exact = _log_space(
            log_b[:, :, failed],
            startprob,
            transmat,
            None if valid is None else valid[:, failed],
            posteriors,
            None if weights is None else weights[failed],
        )
    loglik = scaled.loglik.copy()
    loglik[failed] = exact.loglik
    if not posteriors:
        return Posteriors(loglik, None, None)
    assert scaled.gamma is not None and exact.gamma is not None
    assert scaled.trans is not None and exact.trans is not None
    gamma = scaled.gamma
    gamma[:, :, failed] = exact.gamma
    return Posteriors(loglik, gamma, scaled.trans + exact.trans)


def padding_mask(valid: np.ndarray, scratch: Scratch) -> np.ndarray:
    """``~valid``, in the scratch buffer "padding"."""
    return np.logical_not(valid, out=scratch("padding", valid.shape, np.bool_))


def _scaled(
    factors: np.ndarray,
    shift: np.ndarray,
    startprob: np.ndarray,
    transmat: np.ndarray,
    valid: np.ndarray | None,
    posteriors: bool,
    *,
    scratch: Scratch | None = None,
    weights: np.ndarray | None = None,
) -> tuple[Posteriors, np.ndarray]:
    """Scaled forward–backward; returns the results and which sequences failed
    (``gamma`` and ``trans`` weighted by ``weights`` when given)."""
    scratch = Scratch() if scratch is None else scratch
    padding = None if valid is None else padding_mask(valid, scratch)
    alpha, norm = _forward(factors, startprob, transmat, padding, scratch)
    enough = np.greater_equal(norm, TINY, out=scratch("enough", norm.shape, np.bool_))
    failed = ~enough.all(axis=0)
    log_norm = np.log(norm, out=scratch("log_norm", norm.shape))
    loglik = log_norm.sum(axis=0) + shift.sum(axis=0)
    if not posteriors:
        return Posteriors(loglik, None, None), failed

    # sequences that failed must not bring their NaN or infinity into the sums over sequences
    skip = padding if not failed.any() else _skipped(alpha, padding, failed, scratch)
    if weights is not None:  # γ = α β and the transitions' sums are linear in α
        np.copyto(alpha, 0.0, where=(weights == 0.0)[None, None, :])
        alpha *= weights
    gamma, trans, overflowed = _backward(alpha, factors, norm, transmat, padding, skip, scratch)
    if overflowed.any():  # a backward variable overflowed: sum again without those sequences
        failed |= overflowed
        skip = _skipped(alpha, padding, failed, scratch)
        gamma, trans, _ = _backward(alpha, factors, norm, transmat, padding, skip, scratch)
    return Posteriors(loglik, gamma, transmat * trans), failed


def _forward(
    factors: np.ndarray,
    startprob: np.ndarray,
    transmat: np.ndarray,
    padding: np.ndarray | None,
    scratch: Scratch,
) -> tuple[np.ndarray, np.ndarray]:
    """The forward variables, renormalised at every step, and the normalisers."""
    n_times, _, n_sequences = factors.shape
    alpha = scratch("alpha", factors.shape)
    norm = scratch("norm", (n_times, n_sequences))
    transposed = np.ascontiguousarray(transmat.T)
    np.multiply(startprob[:, None], factors[0], out=alpha[0])
    for t in range(n_times):
        v, c = alpha[t], norm[t]
        if t:
            np.matmul(transposed, alpha[t - 1], out=v)
            v *= factors[t]
        np.sum(v, axis=0, out=c)
        if padding is not None and t:
            np.copyto(v, alpha[t - 1], where=padding[t])
            np.copyto(c, 1.0, where=padding[t])
        v /= c
    return alpha, norm


def _backward(
    alpha: np.ndarray,
    factors: np.ndarray,
    norm: np.ndarray,
    transmat: np.ndarray,
    padding: np.ndarray | None,
    skip: np.ndarray | None,
    scratch: Scratch,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The backward recursion, forming the posteriors step by step as it goes.

    Returns the state posteriors (zero at padding), Σ_t alpha_t ahead_{t+1}ᵀ (the
    expected transitions once multiplied by ``transmat``) and which sequences' backward
    variables overflowed. Steps where ``skip`` is true (padding, failed sequences) pass
    nothing back. Only two steps of backward variables are kept.
    """
    n_times, n_states, n_sequences = alpha.shape
    gamma = scratch("gamma", alpha.shape)
    beta = scratch("beta", (n_states, n_sequences))
    earlier = scratch("beta_earlier", (n_states, n_sequences))
    ahead = scratch("ahead", (n_states, n_sequences))  # factor_{t+1} beta_{t+1} / c_{t+1}
    passed = scratch("passed", (n_sequences,))
    reach = np.zeros(n_sequences)  # sums of ``ahead``: non-finite where scaling overflowed
    trans = np.zeros((n_states, n_states))
    beta[...] = 1.0
    np.copyto(gamma[-1], alpha[-1])
    for t in range(n_times - 2, -1, -1):
        _ahead(factors[t + 1], beta, norm[t + 1], skip, t + 1, out=ahead)
        reach += np.sum(ahead, axis=0, out=passed)
        trans += alpha[t] @ ahead.T
        beta, earlier = earlier, beta
        np.matmul(transmat, ahead, out=beta)
        if padding is not None:
            np.copyto(beta, 1.0, where=padding[t + 1])
        np.multiply(alpha[t], beta, out=gamma[t])
    if padding is not None:
        np.copyto(gamma, 0.0, where=padding[:, None, :])
    overflowed = ~np.isfinite(reach) | ~np.isfinite(np.sum(beta, axis=0, out=passed))
    return gamma, trans, overflowed


def scaled_backward(
    alpha: np.ndarray, factors: np.ndarray, norm: np.ndarray, transmat: np.ndarray, scratch: Scratch
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The backward pass of scaled forward–backward on sequences without padding, given
    the normalised forward variables ``alpha`` and their normalisers ``norm``: the state
    posteriors, Σ_t alpha_t ahead_{t+1}ᵀ (times ``transmat``: the expected transitions)
    and which sequences' backward variables overflowed."""
    return _backward(alpha, factors, norm, transmat, None, None, scratch)


def _skipped(
    alpha: np.ndarray, padding: np.ndarray | None, failed: np.ndarray, scratch: Scratch
) -> np.ndarray:
    """The steps the backward pass skips: padding and every step of a failed sequence
    (whose forward variables are zeroed, so that none of their NaN reaches a sum)."""
    alpha[:, :, failed] = 0.0
    if padding is None:
        return np.broadcast_to(failed, (len(alpha), len(failed)))
    return np.logical_or(padding, failed, out=scratch("skip", padding.shape, np.bool_))


def _ahead(
    factor: np.ndarray,
    beta: np.ndarray,
    norm: np.ndarray,
    padding: np.ndarray | None,
    t: int,
    *,
    out: np.ndarray,
) -> None:
    """factor_t beta_t / c_t, zero at padding: what step t passes back to step t - 1."""
    np.multiply(factor, beta, out=out)
    out /= norm
    if padding is not None:
        np.copyto(out, 0.0, where=padding[t])


def _log_space(
    log_b: np.ndarray,
    startprob: np.ndarray,
    transmat: np.ndarray,
    valid: np.ndarray | None,
    posteriors: bool,
    weights: np.ndarray | None = None,
) -> Posteriors:
    """Forward–backward by log-sum-exp recursions (exact where scaling under/overflows);
    ``gamma`` and ``trans`` weighted by ``weights`` when given."""
    n_times, n_states = log_b.shape[:2]
    padding = None if valid is None else ~valid
    log_transmat = np.log(transmat)
    transposed = np.ascontiguousarray(transmat.T)
    log_alpha = np.empty_like(log_b)
    a = np.log(startprob)[:, None] + log_b[0]
    log_alpha[0] = a
    for t in range(1, n_times):
        top = a.max(axis=0)
        step = np.log(transposed @ np.exp(a - top)) + top + log_b[t]
        if padding is not None:
            np.copyto(step, a, where=padding[t])
        log_alpha[t] = a = step
    loglik = logsumexp(a, axis=0)
    if not posteriors:
        return Posteriors(loglik, None, None)

    log_beta = np.empty_like(log_b)
    log_beta[-1] = 0.0
    trans = np.zeros((n_states, n_states))
    for t in range(n_times - 2, -1, -1):
        w = log_b[t + 1] + log_beta[t + 1]
        top = w.max(axis=0)
        step = np.log(transmat @ np.exp(w - top)) + top
        log_xi = log_alpha[t][:, None, :] + log_transmat[:, :, None] + (w - loglik)[None, :, :]
        if padding is not None:
            np.copyto(step, 0.0, where=padding[t + 1])
            np.copyto(log_xi, -np.inf, where=padding[t + 1])
        log_beta[t] = step
        xi = np.exp(log_xi)
        if weights is not None:
            xi = np.where(weights > 0.0, xi * weights, 0.0)
        trans += xi.sum(axis=2)
    gamma = np.exp(log_alpha + log_beta - loglik)
    if padding is not None:
        np.copyto(gamma, 0.0, where=padding[:, None, :])
    if weights is not None:
        gamma = np.where(weights > 0.0, gamma * weights, 0.0)
    return Posteriors(loglik, gamma, trans)


def viterbi(
    log_b: np.ndarray, startprob: np.ndarray, transmat: np.ndarray, valid: np.ndarray | None
) -> np.ndarray:
    """Most probable state paths, shape (n_sequences, n_times); -1 at padding."""
    n_times, n_states, n_sequences = log_b.shape
    with np.errstate(divide="ignore"):
        log_transmat = np.log(transmat)[:, :, None]
        delta = np.log(startprob)[:, None] + log_b[0]
    pointers = np.empty((n_times, n_states, n_sequences), dtype=np.intp)
    stay = np.broadcast_to(np.arange(n_states)[:, None], (n_states, n_sequences))
    for t in range(1, n_times):
        scores = delta[:, None, :] + log_transmat
        best = scores.argmax(axis=0)
        step = np.take_along_axis(scores, best[None], axis=0)[0] + log_b[t]
        if valid is not None:
            step = np.where(valid[t], step, delta)
            best = np.where(valid[t], best, stay)
        pointers[t] = best
        delta = step
    paths = np.empty((n_sequences, n_times), dtype=np.int64)
    state = delta.argmax(axis=0)
    columns = np.arange(n_sequences)
    paths[:, -1] = state
    for t in range(n_times - 1, 0, -1):
        state = pointers[t][state, columns]
        paths[:, t - 1] = state
    if valid is not None:
        paths[~valid.T] = -1
    return paths


# --- the parts every HMM shares ----------------------------------------------------------


def dirichlet_map(counts: np.ndarray, previous: np.ndarray, prior: Any) -> np.ndarray:
    """max(prior - 1 + counts, 0), renormalised along the last axis (hmmlearn's update).

    Entries that were exactly zero stay zero; a row with nothing to renormalise keeps
    its previous values.
    """
    new = np.maximum(np.asarray(prior, dtype=np.float64) - 1.0 + counts, 0.0)
    new = np.where(previous == 0.0, 0.0, new)
    total = new.sum(axis=-1, keepdims=True)
    empty = total <= 0.0
    return np.where(empty, previous, new / np.where(empty, 1.0, total))


# --- parameters as a flat vector, for SQUAREM ----------------------------------------------
#
# Probabilities travel as they are and come back clipped at PROBABILITY_FLOOR and
# renormalised along each row; an entry that is exactly zero in the parameters the
# extrapolation starts from stays zero (as EM keeps it), and no other entry becomes
# zero (EM could never revive it). Logarithms would be worse: a probability that EM
# drives towards a zero optimum falls by a constant in log space at every step, which
# sets SQUAREM's step length for every parameter at once. Covariances travel as their
# Cholesky factors with the logarithm on the diagonal (variances as logarithms), so any
# vector maps onto a positive definite matrix.

#: The smallest probability an extrapolation may give an entry that is not zero.
PROBABILITY_FLOOR = 1e-12


def probabilities(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``values`` (shaped as ``like``) on the simplex along the last axis, zero where
    ``like`` is zero and at least about ``PROBABILITY_FLOOR`` elsewhere."""
    values = np.where(like == 0.0, 0.0, np.maximum(values.reshape(like.shape), PROBABILITY_FLOOR))
    return values / values.sum(axis=-1, keepdims=True)


def log_cholesky(covariances: np.ndarray) -> np.ndarray:
    """The lower triangles of the Cholesky factors of a stack, log on the diagonal."""
    factors = np.linalg.cholesky(covariances)
    n = covariances.shape[-1]
    rows, cols = np.tril_indices(n)
    factors[..., np.arange(n), np.arange(n)] = np.log(factors[..., np.arange(n), np.arange(n)])
    return factors[..., rows, cols].ravel()


def from_log_cholesky(vector: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    n = shape[-1]
    rows, cols = np.tril_indices(n)
    factors = np.zeros(shape)
    factors[..., rows, cols] = vector.reshape(*shape[:-2], len(rows))
    factors[..., np.arange(n), np.arange(n)] = np.exp(factors[..., np.arange(n), np.arange(n)])
    return factors @ np.swapaxes(factors, -1, -2)


# --- checks ---------------------------------------------------------------------------------


def check_finite(data: np.ndarray, valid: np.ndarray | None, name: str, first: int = 0) -> None:
    """Raise if ``data`` (time-major) is NaN or infinite at a valid step.

    ``first`` is the position in its chunk of the first sequence of ``data``.
    """
    if valid is None and np.isfinite(np.sum(data)):  # (if the sum overflowed, look closer)
        return
    bad = ~np.isfinite(data)
    if data.ndim == 3:
        bad = bad.any(axis=2)
    if valid is not None:
        bad &= valid
    if bad.any():
        steps, sequences = np.nonzero(bad)
        sequence = int(sequences.min())
        step = int(steps[sequences == sequence].min())
        raise ValueError(
            f"{name} contains NaN or infinity inside {len(np.unique(sequences))} sequence(s) "
            f"(the first is sequence {first + sequence} of this chunk, at time step {step}). "
            "Only the padding after a sequence's length may hold NaN: fix those values or "
            "shorten the lengths."
        )


# --- Gaussian emissions -------------------------------------------------------------------


def _centred_full(
    scatter: np.ndarray, post: np.ndarray, sum_x: np.ndarray, dm: np.ndarray
) -> np.ndarray:
    outer = np.einsum("ki,kj->kij", sum_x, dm)
    return (
        scatter
        - outer
        - outer.transpose(0, 2, 1)
        + post[:, None, None] * np.einsum("ki,kj->kij", dm, dm)
    )


def _centred_tied(
    scatter: np.ndarray, post: np.ndarray, sum_x: np.ndarray, dm: np.ndarray
) -> np.ndarray:
    outer = np.einsum("ki,kj->ij", sum_x, dm)
    return scatter - outer - outer.T + np.einsum("k,ki,kj->ij", post, dm, dm)


def _centred_diag(
    scatter: np.ndarray, post: np.ndarray, sum_x: np.ndarray, dm: np.ndarray
) -> np.ndarray:
    return scatter - 2.0 * dm * sum_x + post[:, None] * dm**2


#: Σ γ (x - μ)(x - μ)ᵀ (or its diagonal, or its sum over states for tied) from statistics
#: about the shift c, with dm = μ - c.
CENTRED_SCATTER: dict[
    str, Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
] = {
    "full": _centred_full,
    "tied": _centred_tied,
    "diag": _centred_diag,
    "spherical": _centred_diag,
}


def _covars_full(
    centred: np.ndarray, prior_term: np.ndarray, post: np.ndarray, weight: float, n_features: int
) -> np.ndarray:
    denominator = np.maximum(max(weight - n_features, 0.0) + post, MIN_COVARS_DENOMINATOR)
    return (prior_term + centred) / denominator[:, None, None]


def _covars_tied(
    centred: np.ndarray, prior_term: np.ndarray, post: np.ndarray, weight: float, n_features: int
) -> np.ndarray:
    denominator = max(max(weight - n_features, 0.0) + float(post.sum()), MIN_COVARS_DENOMINATOR)
    return (prior_term + centred) / denominator


def _covars_diag(
    centred: np.ndarray, prior_term: np.ndarray, post: np.ndarray, weight: float, n_features: int
) -> np.ndarray:
    denominator = np.maximum(max(weight - 1.0, 0.0) + post, MIN_COVARS_DENOMINATOR)
    return (prior_term + centred) / denominator[:, None]


def _covars_spherical(
    centred: np.ndarray, prior_term: np.ndarray, post: np.ndarray, weight: float, n_features: int
) -> np.ndarray:
    return _covars_diag(centred, prior_term, post, weight, n_features).mean(axis=1)


#: The MAP covariance update of each covariance type (hmmlearn's formulas).
COVARS_UPDATE: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray, float, int], np.ndarray]] = {
    "full": _covars_full,
    "tied": _covars_tied,
    "diag": _covars_diag,
    "spherical": _covars_spherical,
}

COVARS_DIMS = {
    "full": ("state", "feature", "feature_"),
    "tied": ("feature", "feature_"),
    "diag": ("state", "feature"),
    "spherical": ("state",),
}


def covars_shape(covariance_type: str, n_components: int, n_features: int) -> tuple[int, ...]:
    """Shape of ``covars`` for a covariance type."""
    return {
        "full": (n_components, n_features, n_features),
        "tied": (n_features, n_features),
        "diag": (n_components, n_features),
        "spherical": (n_components,),
    }[covariance_type]


def precision_cholesky(covars: np.ndarray, covariance_type: str) -> np.ndarray:
    """:func:`dem.models.gaussian.precision_cholesky` with advice for HMMs."""
    try:
        return gaussian.precision_cholesky(covars, covariance_type)
    except ValueError as exc:
        raise ValueError(
            "The covariance of at least one state is not positive definite (the state has "
            "collapsed onto too few distinct points). Decrease n_components, increase "
            "covars_prior, or scale the input data."
        ) from exc


# --- categorical emissions ----------------------------------------------------------------


MAX_SYMBOLS = 1_000_000
"""Largest alphabet of a :class:`CategoricalHMM` (``n_features``, or the largest symbol
+ 1 when it is not given): the emission matrix has ``n_components × n_features``
entries, so one stray huge symbol would otherwise allocate gigabytes."""


def checked_symbols(
    values: np.ndarray, n_features: int | None, scratch: Scratch | None = None, first: int = 0
) -> np.ndarray:
    """Symbols as int64 after checking they are whole numbers in [0, n_features)
    (``MAX_SYMBOLS`` when None), in the buffer "symbols" of ``scratch`` when given.
    ``values`` is 1-D, or time-major (times × sequences, the first being sequence
    ``first`` of its chunk), then the error names the first bad symbol's sequence."""
    scratch = Scratch() if scratch is None else scratch
    symbols = scratch("symbols", values.shape, np.int64)
    np.copyto(symbols, values, casting="unsafe")
    upper = MAX_SYMBOLS if n_features is None else n_features
    fractional = np.not_equal(symbols, values, out=scratch("fractional", values.shape, np.bool_))
    if values.size and (fractional.any() or symbols.min() < 0 or symbols.max() >= upper):
        bad = fractional | (symbols < 0) | (symbols >= upper)
        which = values[bad][:5].tolist()
        where = ""
        if values.ndim == 2:
            step, sequence = np.argwhere(bad)[0]
            where = (
                f" The first is in sequence {first + sequence} of this chunk, at time step {step}."
            )
        if n_features is None:
            allowed = "non-negative integers"
            fix = (
                "Encode the categories as 0, 1, 2, ..., at most dem.models.hmm.MAX_SYMBOLS "
                f"= {MAX_SYMBOLS} of them."
            )
        else:
            allowed = f"integers in [0, {n_features}) (n_features={n_features})"
            fix = "Encode the categories as 0, 1, 2, ... (or raise n_features)."
        raise ValueError(
            f"CategoricalHMM symbols must be {allowed}; got {which} ({int(bad.sum())} "
            f"value(s)).{where} {fix}"
        )
    return symbols
