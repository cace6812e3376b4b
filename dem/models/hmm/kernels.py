"""Hidden Markov models fitted by Baum–Welch (EM) over Dask chunks of many sequences.

Data
----
Many independent sequences, stored as one array of shape ``(n_sequences, n_times,
n_features)`` (``(n_sequences, n_times)`` of integer symbols for
:class:`CategoricalHMM`), chunked along sequences only, with an optional ``lengths``
vector for ragged sequences: sequence ``i`` is ``X[i, :lengths[i]]`` and whatever
follows it (NaN, say) is padding that is never read.

E-step
------
Each chunk is walked in blocks of sequences. For a block, the emission log-densities
of every time step and state are computed at once (reusing the Gaussian kernels of
:mod:`dem.models.gaussian`) and laid out time-major as ``(n_times, n_states,
n_sequences)``, so that each step of the forward and backward recursions is one small
matrix product over all the block's sequences; only time steps are looped over. Every
block-sized array lives in buffers that each thread keeps from chunk to chunk
(:func:`dem.models.scratch.thread_scratch`, a few arrays of about ``BLOCK_ELEMENTS``
floats, tens of MiB, for as long as the thread lives), so that a worker maps no fresh
pages for them.

The recursions are the scaled forward–backward algorithm: the emission probabilities
of each step are divided by their largest value (a log-space shift), the forward
variables are renormalised at every step, and the log-likelihood is the sum of the
logs of the normalisers and shifts. The backward pass forms the state posteriors as
it goes, keeping only two steps of backward variables. Scaling only fails where a
normaliser underflows (an observation all the states reachable at that step make
impossible to within e^-460, which can happen with zeros in ``transmat`` or
``startprob``) or a backward variable overflows; every sequence where that happens is
recomputed exactly in log space (log-sum-exp recursions), so the results are those of
log-space forward–backward everywhere.

The statistics of a chunk are additive: ``start`` (Σ γ₀, expected initial states),
``trans`` (Σ ξ, expected transitions), and the emission statistics: ``post`` (Σ γ),
``sum_x`` (Σ γ (x - c)) and ``scatter`` (Σ γ (x - c)(x - c)ᵀ or its diagonal) about a
shift ``c`` (the mean of the state means) for Gaussian emissions, or ``symbol_counts``
(Σ γ [x = m]) for categorical ones. ``n`` counts observations (valid time steps) and
``loglik`` sums the sequences' log-likelihoods.

M-step
------
Closed form, with the same (MAP) formulas and priors as hmmlearn's ``GaussianHMM``
and ``CategoricalHMM``, so that from identical initial parameters both give the same
iterates. Documented rules for degenerate cases, where hmmlearn would produce invalid
parameters: entries of ``startprob`` and ``transmat`` that are exactly zero stay zero;
a row of ``transmat`` (or ``emissionprob``) with no expected counts, and the emission
parameters of a state with no expected occupancy, keep their previous values.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from numbers import Real
from typing import Any, ClassVar

import numpy as np
import xarray as xr
from scipy.special import logsumexp
from sklearn.base import _fit_context
from sklearn.utils._param_validation import StrOptions

from dem.data import Samples, as_samples, sample_rows
from dem.display import HTMLRepr
from dem.engine import map_reduce
from dem.estimator import (
    EMEstimator,
    NonNegativeArray,
    NotFittedError,
    RandomState,
    as_generator,
    counts,
    in_memory_array,
    per_sample_aligned,
    reals,
)
from dem.model import Block, Params, Stats, add_stats
from dem.models import gaussian
from dem.models.mixture import BLOCK_ROWS, kmeans_labels
from dem.models.scratch import Scratch, thread_scratch

#: Elements (time steps × max(states, features) × sequences) of one block of sequences
#: in the E-step: each of the block's few large buffers holds about this many floats.
BLOCK_ELEMENTS = 2**20
#: Elements of the widest temporary of the emission kernels, per row block.
ROW_BLOCK_ELEMENTS = 2**18
#: Values (time steps × features) per chunk when numpy input is chunked.
CHUNK_ELEMENTS = 2**20
#: A scaling normaliser below this sends its sequence to the exact log-space path.
TINY = 1e-200
#: Smallest denominator of a covariance update (hmmlearn's guard for diagonal ones).
MIN_COVARS_DENOMINATOR = 1e-5

COVARIANCE_TYPES = gaussian.COVARIANCE_TYPES

LAYOUT_HINT = (
    "Arrange the sequences as an array of shape (n_sequences, n_times{features}), padding "
    "shorter ones and passing their lengths; dem.models.hmm.pad_sequences turns hmmlearn-style "
    "concatenated sequences and lengths into that layout."
)


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
    """
    scratch = Scratch() if scratch is None else scratch
    n_times, _, n_sequences = log_b.shape
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        # emission probabilities relative to each step's largest (0 where that is not finite)
        finite_peak = np.max(log_b, axis=1, out=scratch("shift", (n_times, n_sequences)))
        infinite = np.isfinite(finite_peak, out=scratch("infinite", finite_peak.shape, np.bool_))
        np.copyto(finite_peak, 0.0, where=np.logical_not(infinite, out=infinite))
        factors = np.subtract(log_b, finite_peak[:, None, :], out=scratch("factors", log_b.shape))
        np.exp(factors, out=factors)
        if valid is not None:
            np.copyto(finite_peak, 0.0, where=_padding(valid, scratch))
        result = _scaled(
            factors, finite_peak, startprob, transmat, valid, posteriors, scratch=scratch
        )
        scaled, failed = result
        if not failed.any():
            return scaled
        exact = _log_space(
            log_b[:, :, failed],
            startprob,
            transmat,
            None if valid is None else valid[:, failed],
            posteriors,
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


def _padding(valid: np.ndarray, scratch: Scratch) -> np.ndarray:
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
) -> tuple[Posteriors, np.ndarray]:
    """Scaled forward–backward; returns the results and which sequences failed."""
    scratch = Scratch() if scratch is None else scratch
    padding = None if valid is None else _padding(valid, scratch)
    alpha, norm = _forward(factors, startprob, transmat, padding, scratch)
    enough = np.greater_equal(norm, TINY, out=scratch("enough", norm.shape, np.bool_))
    failed = ~enough.all(axis=0)
    log_norm = np.log(norm, out=scratch("log_norm", norm.shape))
    loglik = log_norm.sum(axis=0) + shift.sum(axis=0)
    if not posteriors:
        return Posteriors(loglik, None, None), failed

    # sequences that failed must not bring their NaN or infinity into the sums over sequences
    skip = padding if not failed.any() else _skipped(alpha, padding, failed, scratch)
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
) -> Posteriors:
    """Forward–backward by log-sum-exp recursions (exact where scaling under/overflows)."""
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
        trans += np.exp(log_xi).sum(axis=2)
    gamma = np.exp(log_alpha + log_beta - loglik)
    if padding is not None:
        np.copyto(gamma, 0.0, where=padding[:, None, :])
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


def _dirichlet_map(counts: np.ndarray, previous: np.ndarray, prior: Any) -> np.ndarray:
    """max(prior - 1 + counts, 0), renormalised along the last axis (hmmlearn's update).

    Entries that were exactly zero stay zero; a row with nothing to renormalise keeps
    its previous values.
    """
    new = np.maximum(np.asarray(prior, dtype=np.float64) - 1.0 + counts, 0.0)
    new = np.where(previous == 0.0, 0.0, new)
    total = new.sum(axis=-1, keepdims=True)
    empty = total <= 0.0
    return np.where(empty, previous, new / np.where(empty, 1.0, total))


def _jsonable(value: Any) -> Any:
    array = np.asarray(value, dtype=np.float64)
    return float(array) if array.ndim == 0 else array.tolist()


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


def _probabilities(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``values`` (shaped as ``like``) on the simplex along the last axis, zero where
    ``like`` is zero and at least about ``PROBABILITY_FLOOR`` elsewhere."""
    values = np.where(like == 0.0, 0.0, np.maximum(values.reshape(like.shape), PROBABILITY_FLOOR))
    return values / values.sum(axis=-1, keepdims=True)


def _log_cholesky(covariances: np.ndarray) -> np.ndarray:
    """The lower triangles of the Cholesky factors of a stack, log on the diagonal."""
    factors = np.linalg.cholesky(covariances)
    n = covariances.shape[-1]
    rows, cols = np.tril_indices(n)
    factors[..., np.arange(n), np.arange(n)] = np.log(factors[..., np.arange(n), np.arange(n)])
    return factors[..., rows, cols].ravel()


def _from_log_cholesky(vector: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    n = shape[-1]
    rows, cols = np.tril_indices(n)
    factors = np.zeros(shape)
    factors[..., rows, cols] = vector.reshape(*shape[:-2], len(rows))
    factors[..., np.arange(n), np.arange(n)] = np.exp(factors[..., np.arange(n), np.arange(n)])
    return factors @ np.swapaxes(factors, -1, -2)


@dataclass(frozen=True)
class HMMModel(ABC):
    """What every HMM's pure functions share: transitions and the E-step's walk.

    Subclasses give the emission model: :meth:`prepare`, :meth:`emission_log_prob`
    (time-major log-densities), :meth:`emission_stats` and :meth:`emission_m_step`.

    The inputs are ``X`` and, for ragged sequences, ``lengths``; without ``lengths``
    every sequence has all ``n_times`` steps. ``X`` may hold NaN in the padding after a
    sequence's length, so the engine leaves it to :meth:`prepare` to reject NaN and
    infinity inside the sequences themselves.
    """

    n_components: int
    startprob_prior: Any = 1.0
    transmat_prior: Any = 1.0

    name: ClassVar[str] = "hmm"
    inputs: ClassVar[tuple[str, ...]] = ("X", "lengths")
    missing_ok: ClassVar[frozenset[str]] = frozenset({"X"})
    remedy: ClassVar[str] = (
        "Decrease n_components, raise the priors (transmat_prior, startprob_prior), or check "
        "the sequences for extreme values."
    )

    def config(self) -> dict[str, Any]:
        return {
            "n_components": self.n_components,
            "startprob_prior": _jsonable(self.startprob_prior),
            "transmat_prior": _jsonable(self.transmat_prior),
        }

    def param_dims(self) -> dict[str, tuple[str, ...]]:
        return {"startprob": ("state",), "transmat": ("state", "state_")}

    # --- emission model (subclasses) ----------------------------------------------------

    # Each takes the buffers to work in (``scratch``; fresh ones when None) and may return
    # one of them, valid until the next call with the same buffers.

    @abstractmethod
    def prepare(
        self,
        x: np.ndarray,
        valid: np.ndarray | None,
        params: Params,
        first: int = 0,
        scratch: Scratch | None = None,
    ) -> np.ndarray:
        """A block of sequences, time-major, checked, with its padding neutralised.

        ``first`` is the position of the block's first sequence in its chunk (for errors).
        """

    @abstractmethod
    def emission_log_prob(
        self, data: np.ndarray, params: Params, scratch: Scratch | None = None
    ) -> np.ndarray:
        """Emission log-densities of a prepared block, shape (n_times, n_states, n_seq)."""

    @abstractmethod
    def empty_emission_stats(self, x: np.ndarray, params: Params) -> Stats:
        """Zero emission statistics for a chunk ``x`` (sequence-major)."""

    @abstractmethod
    def emission_stats(
        self, data: np.ndarray, gamma: np.ndarray, params: Params, scratch: Scratch | None = None
    ) -> Stats:
        """Emission statistics of a prepared block given its state posteriors (zero at padding)."""

    @abstractmethod
    def emission_m_step(self, stats: Stats, params: Params) -> Params:
        """New emission parameters from the statistics of all the data."""

    @abstractmethod
    def pack_emissions(self, params: Params) -> np.ndarray:
        """The emission parameters as a flat vector (for SQUAREM)."""

    @abstractmethod
    def unpack_emissions(self, vector: np.ndarray, like: Params) -> Params:
        """Valid emission parameters from a vector made like ``pack_emissions(like)``."""

    # --- the protocol -------------------------------------------------------------------

    def blocks(
        self, block: Block, params: Params, scratch: Scratch
    ) -> Iterator[tuple[slice, np.ndarray, np.ndarray | None]]:
        """The chunk's blocks of sequences, one at a time: (rows, prepared data, valid steps),
        the last two in ``scratch`` (overwritten by the next block)."""
        x = block["X"]
        n_sequences, n_times = x.shape[:2]
        lengths = checked_lengths(block.get("lengths"), n_sequences, n_times, " of this chunk")
        width = max(self.n_components, math.prod(x.shape[2:]))  # states, or features if more
        step = max(1, BLOCK_ELEMENTS // (n_times * width))
        for start in range(0, n_sequences, step):
            rows = slice(start, min(start + step, n_sequences))
            shape = (n_times, rows.stop - start)
            valid = valid_steps(lengths[rows], n_times, scratch("valid", shape, np.bool_))
            yield rows, self.prepare(x[rows], valid, params, start, scratch), valid

    def e_step(self, block: Block, params: Params) -> Stats:
        x = block["X"]
        stats: Stats = {
            "n": np.float64(0.0),
            "loglik": np.float64(0.0),
            "start": np.zeros(self.n_components),
            "trans": np.zeros((self.n_components, self.n_components)),
            **self.empty_emission_stats(x, params),
        }
        scratch = thread_scratch("hmm")
        for _, data, valid in self.blocks(block, params, scratch):
            log_b = self.emission_log_prob(data, params, scratch)
            found = forward_backward(
                log_b, params["startprob"], params["transmat"], valid, scratch=scratch
            )
            assert found.gamma is not None and found.trans is not None
            stats["n"] += log_b.shape[0] * log_b.shape[2] if valid is None else valid.sum()
            stats["loglik"] += found.loglik.sum()
            stats["start"] += found.gamma[0].sum(axis=1)
            stats["trans"] += found.trans
            for key, value in self.emission_stats(data, found.gamma, params, scratch).items():
                stats[key] += value
        return stats

    def combine(self, a: Stats, b: Stats) -> Stats:
        return add_stats(a, b)

    def m_step(self, stats: Stats, params: Params) -> Params:
        return {
            "startprob": _dirichlet_map(
                np.asarray(stats["start"]), params["startprob"], self.startprob_prior
            ),
            "transmat": _dirichlet_map(
                np.asarray(stats["trans"]), params["transmat"], self.transmat_prior
            ),
            **self.emission_m_step(stats, params),
        }

    # --- parameters as a flat vector, for SQUAREM ----------------------------------------

    def pack(self, params: Params) -> np.ndarray:
        """``startprob``, ``transmat`` and the emission parameters as one vector."""
        return np.concatenate(
            [
                params["startprob"],
                params["transmat"].ravel(),
                self.pack_emissions(params),
            ]
        )

    def unpack(self, vector: np.ndarray, like: Params) -> Params:
        """Valid parameters from a vector (probability rows clipped and renormalised).

        Entries of ``startprob`` and ``transmat`` that are zero in ``like`` stay zero.
        A vector that is not finite, or that leaves a covariance not positive definite,
        is refused with a ValueError (SQUAREM then keeps the plain EM step).
        """
        if not np.all(np.isfinite(vector)):
            raise ValueError("No valid parameters: the vector is not finite.")
        k = self.n_components
        with np.errstate(all="ignore"):  # what overflows is refused below
            params = {
                "startprob": _probabilities(vector[:k], like["startprob"]),
                "transmat": _probabilities(vector[k : k + k * k], like["transmat"]),
                **self.unpack_emissions(vector[k + k * k :], like),
            }
        for name, value in params.items():
            if not np.all(np.isfinite(value)):
                raise ValueError(f"No valid parameters: {name} is not finite.")
        return params

    # --- per-sequence functions, applied to any block ----------------------------------

    def sequence_loglik(
        self, x: np.ndarray, lengths: np.ndarray | None, params: Params
    ) -> np.ndarray:
        """Log-likelihood of each sequence, shape (n_sequences,)."""
        out = np.empty(len(x))
        scratch = thread_scratch("hmm")
        for rows, data, valid in self.blocks(_block(x, lengths), params, scratch):
            log_b = self.emission_log_prob(data, params, scratch)
            out[rows] = forward_backward(
                log_b,
                params["startprob"],
                params["transmat"],
                valid,
                posteriors=False,
                scratch=scratch,
            ).loglik
        return out

    def state_posteriors(
        self, x: np.ndarray, lengths: np.ndarray | None, params: Params
    ) -> np.ndarray:
        """P(state | sequence) per step, shape (n_sequences, n_times, n_states); NaN at padding."""
        n_sequences, n_times = x.shape[:2]
        out = np.empty((n_sequences, n_times, self.n_components))
        scratch = thread_scratch("hmm")
        for rows, data, valid in self.blocks(_block(x, lengths), params, scratch):
            log_b = self.emission_log_prob(data, params, scratch)
            gamma = forward_backward(
                log_b, params["startprob"], params["transmat"], valid, scratch=scratch
            ).gamma
            assert gamma is not None
            out[rows] = gamma.transpose(2, 0, 1)
            if valid is not None:
                out[rows][~valid.T] = np.nan
        return out

    def decode(self, x: np.ndarray, lengths: np.ndarray | None, params: Params) -> np.ndarray:
        """Viterbi paths, shape (n_sequences, n_times); -1 at padding."""
        n_sequences, n_times = x.shape[:2]
        out = np.empty((n_sequences, n_times), dtype=np.int64)
        scratch = thread_scratch("hmm")
        for rows, data, valid in self.blocks(_block(x, lengths), params, scratch):
            log_b = self.emission_log_prob(data, params, scratch)
            out[rows] = viterbi(log_b, params["startprob"], params["transmat"], valid)
        return out


def _block(x: np.ndarray, lengths: np.ndarray | None) -> dict[str, np.ndarray]:
    return {"X": x} if lengths is None else {"X": x, "lengths": lengths}


def _check_finite(data: np.ndarray, valid: np.ndarray | None, name: str, first: int = 0) -> None:
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


@dataclass(frozen=True)
class GaussianHMMModel(HMMModel):
    """The pure functions of an HMM with Gaussian emissions (see :mod:`dem.model`)."""

    covariance_type: str = "diag"
    means_prior: Any = 0.0
    means_weight: Any = 0.0
    covars_prior: Any = 1e-2
    covars_weight: float = 1.0

    name: ClassVar[str] = "gaussian_hmm"
    remedy: ClassVar[str] = (
        "Decrease n_components, increase covars_prior, or scale the input data to unit variance."
    )

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "covariance_type": self.covariance_type,
            "means_prior": _jsonable(self.means_prior),
            "means_weight": _jsonable(self.means_weight),
            "covars_prior": _jsonable(self.covars_prior),
            "covars_weight": float(self.covars_weight),
        }

    def param_dims(self) -> dict[str, tuple[str, ...]]:
        dims = COVARS_DIMS[self.covariance_type]
        return {
            **super().param_dims(),
            "means": ("state", "feature"),
            "covars": dims,
            "precisions_cholesky": dims,
        }

    def prepare(
        self,
        x: np.ndarray,
        valid: np.ndarray | None,
        params: Params,
        first: int = 0,
        scratch: Scratch | None = None,
    ) -> np.ndarray:
        """Time-major rows centred on the mean of the state means; zero at padding."""
        scratch = Scratch() if scratch is None else scratch
        centred = scratch("data", (x.shape[1], x.shape[0], x.shape[2]))
        np.subtract(np.swapaxes(x, 0, 1), params["means"].mean(axis=0), out=centred)
        if valid is not None:
            np.copyto(centred, 0.0, where=_padding(valid, scratch)[:, :, None])
        _check_finite(centred, None, "X", first)
        return centred

    def row_block(self, n_features: int) -> int:
        """Rows per block of the emission kernels: temporaries stay in cache."""
        return max(BLOCK_ROWS, ROW_BLOCK_ELEMENTS // (self.n_components * n_features))

    def time_blocks(self, data: np.ndarray, scratch: Scratch) -> Iterator[tuple[slice, np.ndarray]]:
        """Walk prepared ``data`` (n_times, n_sequences, n_features) a few whole time steps
        at a time, about :meth:`row_block` rows: ``(steps, xt)`` with ``xt`` the rows
        transposed with a row of ones below (d + 1, m), as
        :func:`dem.models.gaussian.transposed_blocks` gives them (in ``scratch``).
        """
        n_times, n_sequences, n_features = data.shape
        n_steps = max(1, self.row_block(n_features) // n_sequences)
        blocks = gaussian.transposed_blocks(
            data.reshape(-1, n_features),
            np.zeros(n_features),
            np.float64,
            n_steps * n_sequences,
            scratch,
        )
        for start, xt in zip(range(0, n_times, n_steps), blocks, strict=True):
            yield slice(start, start + n_steps), xt

    def emission_log_prob(
        self, data: np.ndarray, params: Params, scratch: Scratch | None = None
    ) -> np.ndarray:
        scratch = Scratch() if scratch is None else scratch
        n_times, n_sequences, n_features = data.shape
        ctype = self.covariance_type
        prec_chol = params["precisions_cholesky"]
        distances = gaussian.DISTANCES[ctype](
            params["means"] - params["means"].mean(axis=0), prec_chol, np.float64
        )
        no_weights = np.zeros(self.n_components)
        constants = gaussian.log_prob_constants(no_weights, prec_chol, ctype, n_features)
        out = scratch("log_b", (n_times, self.n_components, n_sequences))
        for steps, xt in self.time_blocks(data, scratch):
            squared = distances(xt, gaussian.MOMENTS[ctype](xt, scratch), scratch)
            log_prob = out[steps].transpose(1, 0, 2)  # (K, steps, n_sequences)
            np.multiply(squared.reshape(log_prob.shape), -0.5, out=log_prob)
            log_prob += constants[:, :, None]
        return out

    def empty_emission_stats(self, x: np.ndarray, params: Params) -> Stats:
        n_features = x.shape[2]
        return {
            "post": np.zeros(self.n_components),
            "sum_x": np.zeros((self.n_components, n_features)),
            "scatter": gaussian.scatter_statistic(
                np.zeros((0, n_features)), np.zeros((0, self.n_components)), self.covariance_type
            ),
        }

    def emission_stats(
        self, data: np.ndarray, gamma: np.ndarray, params: Params, scratch: Scratch | None = None
    ) -> Stats:
        scratch = Scratch() if scratch is None else scratch
        n_features = data.shape[2]
        ctype = self.covariance_type
        post = np.zeros(self.n_components)
        sum_x = np.zeros((self.n_components, n_features))
        scatter = gaussian.scatter_zeros(ctype, self.n_components, n_features)
        for steps, xt in self.time_blocks(data, scratch):
            block = gamma[steps].transpose(1, 0, 2)  # (K, steps, n_sequences)
            resp = scratch("resp", block.shape)
            np.copyto(resp, block)
            moments = gaussian.MOMENTS[ctype](xt, scratch)
            sums = gaussian.SUMS[ctype](xt, moments, resp.reshape(self.n_components, -1))
            post += sums[0]
            sum_x += sums[1]
            scatter += sums[2]
        return {
            "post": post,
            "sum_x": sum_x,
            "scatter": gaussian.unpack_scatter(scatter, ctype, n_features),
        }

    def emission_m_step(self, stats: Stats, params: Params) -> Params:
        ctype = self.covariance_type
        n_features = params["means"].shape[1]
        shift = params["means"].mean(axis=0)
        post, sum_x = np.asarray(stats["post"]), np.asarray(stats["sum_x"])
        weight = np.broadcast_to(np.asarray(self.means_weight, dtype=np.float64), post.shape)
        prior_means = np.broadcast_to(
            np.asarray(self.means_prior, dtype=np.float64), params["means"].shape
        )
        denominator = weight + post
        empty = denominator <= 0.0
        safe = np.where(empty, 1.0, denominator)
        # means = (w m0 + Σ γ x) / (w + Σ γ), written about the shift so nothing cancels
        dm = (weight[:, None] * (prior_means - shift) + sum_x) / safe[:, None]
        means = shift + dm
        centred = CENTRED_SCATTER[ctype](np.asarray(stats["scatter"]), post, sum_x, dm)
        meandiff = means - prior_means
        if ctype == "full":
            centred = centred + weight[:, None, None] * np.einsum("ki,kj->kij", meandiff, meandiff)
        elif ctype == "tied":
            centred = centred + np.einsum("k,ki,kj->ij", weight, meandiff, meandiff)
        else:
            centred = centred + weight[:, None] * meandiff**2
        covars = COVARS_UPDATE[ctype](
            centred, self.prior_term(n_features), post, float(self.covars_weight), n_features
        )
        if empty.any() and ctype != "tied":  # a state nothing informs keeps its emissions
            means = np.where(empty[:, None], params["means"], means)
            covars = np.where(
                empty.reshape(-1, *([1] * (covars.ndim - 1))), params["covars"], covars
            )
        return {
            "means": means,
            "covars": covars,
            "precisions_cholesky": precision_cholesky(covars, ctype),
        }

    def pack_emissions(self, params: Params) -> np.ndarray:
        """Means, and covariances as log-Cholesky factors (log variances for diag/spherical)."""
        covars = params["covars"]
        if self.covariance_type in ("full", "tied"):
            packed = _log_cholesky(covars)
        else:
            packed = np.log(covars).ravel()
        return np.concatenate([params["means"].ravel(), packed])

    def unpack_emissions(self, vector: np.ndarray, like: Params) -> Params:
        n_means = like["means"].size
        means = vector[:n_means].reshape(like["means"].shape)
        shape = like["covars"].shape
        if self.covariance_type in ("full", "tied"):
            covars = _from_log_cholesky(vector[n_means:], shape)
        else:
            covars = np.exp(vector[n_means:]).reshape(shape)
        if not np.all(np.isfinite(covars)):
            raise ValueError("No valid parameters: a covariance is not finite.")
        return {
            "means": means.copy(),
            "covars": covars,
            "precisions_cholesky": precision_cholesky(covars, self.covariance_type),
        }

    def prior_term(self, n_features: int) -> np.ndarray:
        """``covars_prior`` as added to the scatter: a scalar is that multiple of the
        identity for full and tied covariances."""
        prior = np.asarray(self.covars_prior, dtype=np.float64)
        if prior.ndim == 0 and self.covariance_type in ("full", "tied"):
            return prior * np.eye(n_features)
        return prior


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


@dataclass(frozen=True)
class CategoricalHMMModel(HMMModel):
    """The pure functions of an HMM with categorical emissions (see :mod:`dem.model`)."""

    n_features: int = 2
    emissionprob_prior: Any = 1.0

    name: ClassVar[str] = "categorical_hmm"

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "n_features": self.n_features,
            "emissionprob_prior": _jsonable(self.emissionprob_prior),
        }

    def param_dims(self) -> dict[str, tuple[str, ...]]:
        return {**super().param_dims(), "emissionprob": ("state", "symbol")}

    def prepare(
        self,
        x: np.ndarray,
        valid: np.ndarray | None,
        params: Params,
        first: int = 0,
        scratch: Scratch | None = None,
    ) -> np.ndarray:
        """Time-major symbols as integers; zero at padding."""
        scratch = Scratch() if scratch is None else scratch
        values = scratch("values", (x.shape[1], x.shape[0]))
        np.copyto(values, np.swapaxes(x, 0, 1))
        if valid is not None:
            np.copyto(values, 0.0, where=_padding(valid, scratch))
        _check_finite(values, None, "X", first)
        return checked_symbols(values, self.n_features, scratch, first)

    def emission_log_prob(
        self, data: np.ndarray, params: Params, scratch: Scratch | None = None
    ) -> np.ndarray:
        scratch = Scratch() if scratch is None else scratch
        with np.errstate(divide="ignore"):
            log_emission = np.log(params["emissionprob"])
        # log_b[t, k, i] = log_emission[k, data[t, i]], at k * n_symbols + data[t, i] in the table
        offsets = np.arange(self.n_components) * log_emission.shape[1]
        index = scratch("index", (len(data), self.n_components, data.shape[1]), np.int64)
        np.add(data[:, None, :], offsets[None, :, None], out=index)
        return np.take(log_emission.ravel(), index, out=scratch("log_b", index.shape), mode="clip")

    def empty_emission_stats(self, x: np.ndarray, params: Params) -> Stats:
        return {"symbol_counts": np.zeros((self.n_components, self.n_features))}

    def emission_stats(
        self, data: np.ndarray, gamma: np.ndarray, params: Params, scratch: Scratch | None = None
    ) -> Stats:
        scratch = Scratch() if scratch is None else scratch
        n_states = self.n_components
        # the bin of (symbol, state) is symbol * n_states + state
        index = scratch("index", gamma.shape, np.int64)
        np.multiply(data[:, None, :], n_states, out=index)
        index += np.arange(n_states)[None, :, None]
        counts = np.bincount(
            index.ravel(), weights=gamma.ravel(), minlength=self.n_features * n_states
        )
        return {"symbol_counts": counts.reshape(self.n_features, n_states).T}

    def emission_m_step(self, stats: Stats, params: Params) -> Params:
        new = np.maximum(
            np.asarray(self.emissionprob_prior, dtype=np.float64) - 1.0 + stats["symbol_counts"],
            0.0,
        )
        total = new.sum(axis=1, keepdims=True)
        empty = total <= 0.0
        return {
            "emissionprob": np.where(
                empty, params["emissionprob"], new / np.where(empty, 1.0, total)
            )
        }

    def pack_emissions(self, params: Params) -> np.ndarray:
        """``emissionprob``, row by row."""
        return params["emissionprob"].ravel()

    def unpack_emissions(self, vector: np.ndarray, like: Params) -> Params:
        return {"emissionprob": _probabilities(vector, like["emissionprob"])}


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


# --- initialisation -------------------------------------------------------------------------


def _uniform(n_components: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(n_components, 1.0 / n_components), np.full(
        (n_components, n_components), 1.0 / n_components
    )


def initial_gaussian_means(
    observations: np.ndarray, n_components: int, rng: np.random.Generator
) -> np.ndarray:
    """k-means centres of a sample of observations (a random row for an empty cluster)."""
    labels = kmeans_labels(observations, n_components, rng)
    means = np.empty((n_components, observations.shape[1]))
    for k in range(n_components):
        members = observations[labels == k]
        means[k] = (
            members.mean(axis=0) if len(members) else observations[rng.integers(len(observations))]
        )
    return means


def initial_gaussian_covars(
    observations: np.ndarray, n_components: int, covariance_type: str, min_covar: float
) -> np.ndarray:
    """The sample covariance plus ``min_covar`` on its diagonal, shaped for the type."""
    n_features = observations.shape[1]
    covariance = (
        np.atleast_2d(np.cov(observations.T))
        if len(observations) > 1
        else np.zeros((n_features, n_features))
    )
    covariance = covariance + min_covar * np.eye(n_features)
    return {
        "full": lambda: np.tile(covariance, (n_components, 1, 1)),
        "tied": lambda: covariance,
        "diag": lambda: np.tile(np.diag(covariance), (n_components, 1)),
        "spherical": lambda: np.full(n_components, np.diag(covariance).mean()),
    }[covariance_type]()


def _sample_states(
    startprob: np.ndarray,
    transmat: np.ndarray,
    n_sequences: int,
    n_times: int,
    rng: np.random.Generator,
) -> np.ndarray:
    last = len(startprob) - 1
    states = np.empty((n_sequences, n_times), dtype=np.int64)
    states[:, 0] = np.minimum(
        np.searchsorted(np.cumsum(startprob), rng.random(n_sequences), side="right"), last
    )
    cdf = np.cumsum(transmat, axis=1)
    for t in range(1, n_times):
        draws = rng.random(n_sequences)[:, None]
        states[:, t] = np.minimum((draws >= cdf[states[:, t - 1]]).sum(axis=1), last)
    return states


# --- the estimators -------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


class _BaseHMM(HTMLRepr, EMEstimator, ABC):
    """What :class:`GaussianHMM` and :class:`CategoricalHMM` share: fitting by EM over
    Dask chunks of sequences, checkpoints, and the per-sequence outputs."""

    _ndim: ClassVar[int]
    _emission_codes: ClassVar[str]
    #: The emission parameter whose last axis is the number of features (or symbols).
    _features_param: ClassVar[str]

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **EMEstimator._parameter_constraints,
        "n_components": counts(1),
        "startprob_prior": [NonNegativeArray()],
        "transmat_prior": [NonNegativeArray()],
        "startprob_init": ["array-like", None],
        "transmat_init": ["array-like", None],
        "sequence_dim": [str],
        "time_dim": [str],
    }

    # set by subclasses' __init__
    n_components: int
    startprob_prior: Any
    transmat_prior: Any
    tol: float
    max_iter: int
    n_init: int
    accelerate: str
    startprob_init: Any
    transmat_init: Any
    random_state: RandomState
    checkpoint: Any
    resume: bool
    split_every: int
    persist: bool | None
    init_sample_size: int
    callback: Callable[[Any], Any] | None
    sequence_dim: str
    time_dim: str

    # --- hooks ---------------------------------------------------------------------------

    @abstractmethod
    def _model(self, n_features: int) -> HMMModel:
        """The model's pure functions for this configuration."""

    @abstractmethod
    def _n_features(self, inputs: dict[str, Samples]) -> int:
        """Number of features (or of symbols) of the data."""

    @abstractmethod
    def _initial_emissions(
        self, model: HMMModel, n_features: int, inputs: dict[str, Samples], rng: np.random.Generator
    ) -> Params:
        """Initial emission parameters (from ``*_init`` or a sample of the data)."""

    @abstractmethod
    def _emission_params(self) -> Params:
        """The fitted emission parameters, keyed as the model's."""

    @abstractmethod
    def _set_emission_params(self, params: Params) -> None:
        """Store fitted emission parameters as attributes."""

    @abstractmethod
    def _emission_scalars(self) -> int:
        """Number of free scalars of the emission parameters."""

    @abstractmethod
    def _sample_emissions(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw one observation per state of ``states``."""

    # --- inputs ----------------------------------------------------------------------------

    def _inputs(self, X: Any, lengths: Any, variable: str | None) -> dict[str, Samples]:
        X = in_memory_array(X, self, samples_by_features=False)  # the layout is checked below
        chunk_rows = None
        if not isinstance(X, str | os.PathLike | xr.Dataset):
            shape = np.shape(X)
            if len(shape) >= 2:
                chunk_rows = max(1, CHUNK_ELEMENTS // max(1, int(np.prod(shape[1:]))))
        dims: dict[str, Any] = {"sample_dim": self.sequence_dim, "time_dim": self.time_dim}
        dims["feature_dim"] = (
            getattr(self, "feature_dim", "feature") if self._ndim == 3 else self.time_dim
        )
        try:
            samples = as_samples(
                X, variable=variable, ndim=self._ndim, chunk_rows=chunk_rows, **dims
            )
        except ValueError as exc:
            if "must be" not in str(exc):
                raise
            features = ", n_features" if self._ndim == 3 else ""
            raise ValueError(f"{exc} {LAYOUT_HINT.format(features=features)}") from exc
        if lengths is None:
            return {"X": samples}
        n_sequences, n_times = samples.array.shape[:2]
        if isinstance(lengths, str):
            if not isinstance(X, str | os.PathLike | xr.Dataset):
                raise TypeError(
                    f"lengths={lengths!r} names a variable, which needs X to be a Zarr store "
                    "path or an xarray Dataset; otherwise pass the lengths themselves."
                )
            found = as_samples(
                X, variable=lengths, ndim=1, name="lengths", sample_dim=self.sequence_dim
            )
        else:
            found = as_samples(
                lengths,
                ndim=1,
                name="lengths",
                sample_dim=self.sequence_dim,
                chunk_rows=samples.array.chunks[0][0],
            )
        if found.n_samples != n_sequences:
            raise ValueError(
                f"lengths has {found.n_samples} entries but X has {n_sequences} sequences; "
                "pass one length per sequence."
            )
        if found.array.chunks[0] != samples.array.chunks[0]:
            found = replace(found, array=found.array.rechunk({0: samples.array.chunks[0]}))
        if found.kind == "numpy":  # cheap to check now rather than in the first pass
            checked_lengths(found.array.compute(scheduler="sync"), n_sequences, n_times)
        return {"X": samples, "lengths": found}

    def _sampled_observations(
        self, inputs: dict[str, Samples], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """At most ``init_sample_size`` random sequences: (sequences, valid steps)."""
        seed = int(rng.integers(2**63))
        x = sample_rows(inputs["X"].array, int(self.init_sample_size), np.random.default_rng(seed))
        n_times = x.shape[1]
        if "lengths" in inputs:
            found = sample_rows(
                inputs["lengths"].array, int(self.init_sample_size), np.random.default_rng(seed)
            )
            # sequences of invalid lengths are left out, for the first pass to name
            lengths = np.where(valid_lengths(found, n_times), found, 0).astype(np.int64)
        else:
            lengths = np.full(len(x), n_times)
        return x, np.arange(n_times)[None, :] < lengths[:, None]

    # --- fitting ---------------------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, lengths: Any = None, *, variable: str | None = None) -> _BaseHMM:
        """Fit the HMM by Baum–Welch (EM) over the sequences' chunks.

        Parameters
        ----------
        X : array-like, dask array, xarray.DataArray or Dataset, or path
            The sequences, shape (n_sequences, n_times, n_features) for
            :class:`GaussianHMM` and (n_sequences, n_times) for :class:`CategoricalHMM`,
            chunked along sequences only; a Zarr store path (or Dataset) needs
            ``variable``.
        lengths : array-like of int of shape (n_sequences,), or str, optional
            Valid steps of each sequence (ragged sequences); what follows is padding.
            A string names a variable of the same Zarr store or Dataset as ``X``.
        variable : str, optional
            Name of ``X`` in a Zarr store or Dataset.

        Returns
        -------
        self
        """
        inputs = self._inputs(X, lengths, variable)
        n_features = self._n_features(inputs)
        model = self._model(n_features)
        transitions = self._checked_transition_inits()

        def make_init(rng: np.random.Generator) -> Params:
            startprob, transmat = _uniform(model.n_components)
            params = {
                "startprob": startprob if transitions[0] is None else transitions[0],
                "transmat": transmat if transitions[1] is None else transitions[1],
            }
            return {**params, **self._initial_emissions(model, n_features, inputs, rng)}

        self._fit_restarts(model, inputs, make_init)
        self.n_features_in_ = int(n_features)
        return self

    def _checked_transition_inits(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        k = int(self.n_components)
        checked = []
        for name, shape in (("startprob_init", (k,)), ("transmat_init", (k, k))):
            value = getattr(self, name)
            if value is not None:
                value = np.array(value, dtype=np.float64)
                if value.shape != shape:
                    raise ValueError(f"{name} must have shape {shape}, got {value.shape}.")
                if (
                    not np.all(np.isfinite(value))
                    or np.any(value < 0)
                    or not np.allclose(value.sum(axis=-1), 1.0)
                ):
                    raise ValueError(
                        f"{name} must hold probabilities: non-negative, each row summing to 1."
                    )
            checked.append(value)
        return checked[0], checked[1]

    def _set_params(self, params: Params) -> None:
        """Fitted attributes from parameters as the model writes them (and checkpoints hold)."""
        self.startprob_ = params["startprob"]
        self.transmat_ = params["transmat"]
        self._set_emission_params(params)
        self.n_features_in_ = int(np.shape(params[self._features_param])[-1])

    def _params(self) -> Params:
        if not hasattr(self, "startprob_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit first.")
        return {"startprob": self.startprob_, "transmat": self.transmat_, **self._emission_params()}

    # --- per-sequence results (lazy for lazy input) -----------------------------------------

    def _fitted_inputs(
        self, X: Any, lengths: Any, variable: str | None
    ) -> tuple[HMMModel, Params, dict[str, Samples]]:
        params = self._params()
        inputs = self._inputs(X, lengths, variable)
        if self._ndim == 3 and inputs["X"].array.shape[2] != self.n_features_in_:
            raise ValueError(
                f"X has {inputs['X'].array.shape[2]} features, but the HMM was fitted with "
                f"{self.n_features_in_}."
            )
        return self._model(self.n_features_in_), params, inputs

    def _per_sequence(
        self,
        X: Any,
        lengths: Any,
        variable: str | None,
        method: str,
        trailing: Callable[[int], tuple[int, ...]],
        dims: tuple[str, ...],
        dtype: Any = np.float64,
    ) -> Any:
        model, params, inputs = self._fitted_inputs(X, lengths, variable)

        def function(x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
            result: np.ndarray = getattr(model, method)(x, lengths, params)
            return result

        n_times = int(inputs["X"].array.shape[1])
        return per_sample_aligned(  # the model refuses NaN inside sequences (padding may hold it)
            list(inputs.values()),
            function,
            trailing=trailing(n_times),
            dims=dims,
            dtype=dtype,
            missing_ok=None,
        )

    def score_sequences(self, X: Any, lengths: Any = None, *, variable: str | None = None) -> Any:
        """Log-likelihood of each sequence, shape (n_sequences,)."""
        return self._per_sequence(X, lengths, variable, "sequence_loglik", lambda t: (), ())

    def predict_proba(self, X: Any, lengths: Any = None, *, variable: str | None = None) -> Any:
        """State posteriors, shape (n_sequences, n_times, n_components); NaN at padding."""
        return self._per_sequence(
            X,
            lengths,
            variable,
            "state_posteriors",
            lambda t: (t, self.n_components),
            (self.time_dim, "state"),
        )

    def predict(self, X: Any, lengths: Any = None, *, variable: str | None = None) -> Any:
        """Most probable state sequences (Viterbi), shape (n_sequences, n_times); -1 at padding."""
        return self._per_sequence(
            X, lengths, variable, "decode", lambda t: (t,), (self.time_dim,), np.int64
        )

    def _score_stats(self, X: Any, lengths: Any, variable: str | None) -> Stats:
        model, params, inputs = self._fitted_inputs(X, lengths, variable)

        def loglik(block: Block, p: Params) -> Stats:
            x = block["X"]
            values = model.sequence_loglik(x, block.get("lengths"), p)
            found = block.get("lengths")
            n = x.shape[0] * x.shape[1] if found is None else np.sum(found)
            return {"n": np.float64(n), "loglik": np.float64(values.sum())}

        arrays = {name: s.array for name, s in inputs.items()}
        return map_reduce(loglik, add_stats, arrays, params, split_every=int(self.split_every))

    def score(self, X: Any, lengths: Any = None, *, variable: str | None = None) -> float:
        """Total log-likelihood of the sequences (as hmmlearn's ``score``; one pass)."""
        return float(self._score_stats(X, lengths, variable)["loglik"])

    def _n_parameters(self) -> int:
        k = self.n_components
        return int((k - 1) + k * (k - 1) + self._emission_scalars())

    def bic(self, X: Any, lengths: Any = None, *, variable: str | None = None) -> float:
        """Bayesian information criterion (lower is better); n is the number of observations."""
        stats = self._score_stats(X, lengths, variable)
        return float(-2.0 * stats["loglik"] + self._n_parameters() * np.log(stats["n"]))

    def aic(self, X: Any, lengths: Any = None, *, variable: str | None = None) -> float:
        """Akaike information criterion (lower is better)."""
        stats = self._score_stats(X, lengths, variable)
        return float(-2.0 * stats["loglik"] + 2.0 * self._n_parameters())

    def sample(
        self,
        n_sequences: int = 1,
        n_times: int = 100,
        *,
        random_state: RandomState = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw sequences from the fitted HMM.

        Returns
        -------
        X : ndarray of shape (n_sequences, n_times, n_features) or (n_sequences, n_times)
        states : ndarray of int64 of shape (n_sequences, n_times)
        """
        params = self._params()
        if not (_is_int(n_sequences) and n_sequences >= 1 and _is_int(n_times) and n_times >= 1):
            raise ValueError(
                "n_sequences and n_times must be integers >= 1, got "
                f"{n_sequences!r} and {n_times!r}."
            )
        rng = as_generator(self.random_state if random_state is None else random_state)
        states = _sample_states(params["startprob"], params["transmat"], n_sequences, n_times, rng)
        return self._sample_emissions(states, rng), states


class GaussianHMM(_BaseHMM):
    """Hidden Markov model with Gaussian emissions, fitted by Baum–Welch over Dask chunks.

    Parameters follow :class:`hmmlearn.hmm.GaussianHMM` in name and meaning (its
    ``n_iter`` is ``max_iter`` here); from the same initial parameters every iteration
    matches hmmlearn's. The data are many sequences in one array of shape
    (n_sequences, n_times, n_features), with optional ``lengths`` for ragged ones.

    Parameters
    ----------
    n_components : int, default=1
        Number of hidden states.
    covariance_type : {"full", "diag", "tied", "spherical"}, default="diag"
        Form of the state covariances.
    min_covar : float, default=1e-3
        Added to the diagonal of the initial covariance (as in hmmlearn, only there).
    startprob_prior, transmat_prior : float or array-like, default=1.0
        Dirichlet prior parameters of ``startprob_`` and of each row of ``transmat_``.
    means_prior, means_weight : float or array-like, default=0
        Mean and precision weight of the normal prior on ``means_``.
    covars_prior : float or array-like, default=1e-2
        Scale of the (inverse-gamma or inverse-Wishart) prior on the covariances, added
        to the scatter of every state. For "full" and "tied" a scalar means that
        multiple of the identity (hmmlearn adds a scalar to every entry; pass it
        ``covars_prior * np.eye(n_features)`` to compare).
    covars_weight : float, default=1
        Weight of that prior.
    tol : float, default=1e-3
        Convergence threshold on the change of the mean per-observation log-likelihood.
    max_iter : int, default=100
        Maximum number of EM iterations per initialisation.
    n_init : int, default=1
        Number of initialisations; the best (highest lower bound) is kept.
    accelerate : {"none", "squarem"}, default="none"
        ``"squarem"`` extrapolates between EM steps (Varadhan & Roland 2008; see
        :mod:`dem.accelerate`) in the probabilities and the emission parameters
        (covariances as log-Cholesky factors); ``max_iter`` then counts passes and
        ``lower_bounds_`` has one entry per cycle.
    startprob_init : array-like of shape (n_components,), optional
    transmat_init : array-like of shape (n_components, n_components), optional
    means_init : array-like of shape (n_components, n_features), optional
    covars_init : array-like, optional
        Initial parameters, shaped as the fitted attributes. By default ``startprob``
        and ``transmat`` start uniform, the means at k-means centres and every
        covariance at the data covariance (plus ``min_covar``), both from a random
        sample of at most ``init_sample_size`` sequences.
    random_state : int, numpy.random.RandomState or numpy.random.Generator, optional
        Seeds the initialisation (and :meth:`sample`); a ``RandomState`` gives four
        32-bit words of seed: the same state, the same fit.
    checkpoint : str or path-like, optional
        Zarr store where every iteration's parameters are written.
    resume : bool, default=False
        Continue from the checkpoint's latest complete iteration.
    split_every : int, default=8
        Fan-in of the tree that sums the per-chunk statistics.
    persist : bool, optional
        Keep the data in cluster memory between iterations (default: when they take at
        most half of it).
    init_sample_size : int, default=1000
        Sequences drawn for the initialisation.
    callback : callable, optional
        Called after every iteration with a :class:`dem.engine.IterationInfo`.
    sequence_dim, time_dim, feature_dim : str
        Dimension names of xarray input.

    Attributes
    ----------
    startprob_ : ndarray of shape (n_components,)
    transmat_ : ndarray of shape (n_components, n_components)
    means_ : ndarray of shape (n_components, n_features)
    covars_ : ndarray
        (n_components, n_features, n_features) for "full", (n_features, n_features)
        for "tied", (n_components, n_features) for "diag", (n_components,) for
        "spherical".
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean per-observation log-likelihood at the start of the last iteration.
    lower_bounds_ : list of float
        ``lower_bound_`` of every iteration of the best initialisation.
    n_features_in_ : int

    See Also
    --------
    CategoricalHMM : the same with categorical emissions.
    dem.GaussianMixture : the model without time dependence.
    """

    _ndim = 3
    _features_param = "means"

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **_BaseHMM._parameter_constraints,
        "covariance_type": [StrOptions(set(COVARIANCE_TYPES))],
        "min_covar": reals(0),
        "means_prior": ["array-like", Real],
        "means_weight": [NonNegativeArray()],
        "covars_prior": [NonNegativeArray(diagonal=True)],
        "covars_weight": reals(None),
        "means_init": ["array-like", None],
        "covars_init": ["array-like", None],
    }

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "diag",
        min_covar: float = 1e-3,
        startprob_prior: Any = 1.0,
        transmat_prior: Any = 1.0,
        means_prior: Any = 0.0,
        means_weight: Any = 0.0,
        covars_prior: Any = 1e-2,
        covars_weight: float = 1.0,
        tol: float = 1e-3,
        max_iter: int = 100,
        n_init: int = 1,
        accelerate: str = "none",
        startprob_init: Any = None,
        transmat_init: Any = None,
        means_init: Any = None,
        covars_init: Any = None,
        random_state: RandomState = None,
        checkpoint: Any = None,
        resume: bool = False,
        split_every: int = 8,
        persist: bool | None = None,
        init_sample_size: int = 1000,
        callback: Callable[[Any], Any] | None = None,
        sequence_dim: str = "sequence",
        time_dim: str = "time",
        feature_dim: str = "feature",
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.min_covar = min_covar
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.means_prior = means_prior
        self.means_weight = means_weight
        self.covars_prior = covars_prior
        self.covars_weight = covars_weight
        self.tol = tol
        self.max_iter = max_iter
        self.n_init = n_init
        self.accelerate = accelerate
        self.startprob_init = startprob_init
        self.transmat_init = transmat_init
        self.means_init = means_init
        self.covars_init = covars_init
        self.random_state = random_state
        self.checkpoint = checkpoint
        self.resume = resume
        self.split_every = split_every
        self.persist = persist
        self.init_sample_size = init_sample_size
        self.callback = callback
        self.sequence_dim = sequence_dim
        self.time_dim = time_dim
        self.feature_dim = feature_dim

    def _model(self, n_features: int) -> GaussianHMMModel:
        return GaussianHMMModel(
            int(self.n_components),
            startprob_prior=self.startprob_prior,
            transmat_prior=self.transmat_prior,
            covariance_type=self.covariance_type,
            means_prior=self.means_prior,
            means_weight=self.means_weight,
            covars_prior=self.covars_prior,
            covars_weight=float(self.covars_weight),
        )

    def _n_features(self, inputs: dict[str, Samples]) -> int:
        return int(inputs["X"].array.shape[2])

    def _checked_emission_inits(
        self, n_features: int
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        k, ctype = int(self.n_components), self.covariance_type
        means = covars = None
        if self.means_init is not None:
            means = np.array(self.means_init, dtype=np.float64)
            if means.shape != (k, n_features):
                raise ValueError(
                    f"means_init must have shape {(k, n_features)}, got {means.shape}."
                )
            if not np.all(np.isfinite(means)):
                raise ValueError("means_init contains NaN or infinity.")
        if self.covars_init is not None:
            covars = np.array(self.covars_init, dtype=np.float64)
            shape = covars_shape(ctype, k, n_features)
            if covars.shape != shape:
                raise ValueError(
                    f"covars_init must have shape {shape} for covariance_type={ctype!r}, got "
                    f"{covars.shape}."
                )
            try:
                precision_cholesky(covars, ctype)
            except ValueError as exc:
                raise ValueError(
                    "covars_init must be positive (diag, spherical) or symmetric positive "
                    "definite (full, tied)."
                ) from exc
            if ctype in ("full", "tied") and not np.allclose(covars, np.swapaxes(covars, -1, -2)):
                raise ValueError("covars_init must be symmetric.")
        return means, covars

    def _initial_emissions(
        self, model: HMMModel, n_features: int, inputs: dict[str, Samples], rng: np.random.Generator
    ) -> Params:
        means, covars = self._checked_emission_inits(n_features)
        if means is None or covars is None:
            sequences, valid = self._sampled_observations(inputs, rng)
            observations = sequences[valid].astype(np.float64)
            # NaN or infinity inside a sequence are left to the first pass, which says where
            observations = observations[np.isfinite(observations).all(axis=1)]
            if len(observations) < self.n_components:
                raise ValueError(
                    f"The initialisation sample holds {len(observations)} finite observations, "
                    f"fewer than n_components={self.n_components}. Use fewer states, more data, "
                    "or a larger init_sample_size."
                )
            if means is None:
                means = initial_gaussian_means(observations, int(self.n_components), rng)
            if covars is None:
                covars = initial_gaussian_covars(
                    observations,
                    int(self.n_components),
                    self.covariance_type,
                    float(self.min_covar),
                )
        return {
            "means": means,
            "covars": covars,
            "precisions_cholesky": precision_cholesky(covars, self.covariance_type),
        }

    def _emission_params(self) -> Params:
        return {
            "means": self.means_,
            "covars": self.covars_,
            "precisions_cholesky": self.precisions_cholesky_,
        }

    def _set_emission_params(self, params: Params) -> None:
        self.means_ = params["means"]
        self.covars_ = params["covars"]
        self.precisions_cholesky_ = params["precisions_cholesky"]

    def _emission_scalars(self) -> int:
        k, d = self.means_.shape
        return int(k * d + gaussian.n_covariance_parameters(self.covariance_type, k, d))

    def _sample_emissions(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        d = self.means_.shape[1]
        noise = rng.standard_normal((*states.shape, d))
        means = self.means_[states]
        ctype = self.covariance_type
        if ctype == "full":
            factors = np.linalg.cholesky(self.covars_)
            return means + np.einsum("...ij,...j->...i", factors[states], noise)
        if ctype == "tied":
            return means + noise @ np.linalg.cholesky(self.covars_).T
        if ctype == "diag":
            return means + noise * np.sqrt(self.covars_[states])
        return means + noise * np.sqrt(self.covars_[states])[..., None]


class CategoricalHMM(_BaseHMM):
    """Hidden Markov model with categorical emissions, fitted by Baum–Welch over Dask chunks.

    Parameters follow :class:`hmmlearn.hmm.CategoricalHMM` in name and meaning (its
    ``n_iter`` is ``max_iter`` here); from the same initial parameters every iteration
    matches hmmlearn's. The data are integer symbols 0, 1, ..., n_features - 1 in one
    array of shape (n_sequences, n_times), with optional ``lengths`` for ragged
    sequences.

    Parameters
    ----------
    n_components : int, default=1
        Number of hidden states.
    n_features : int, optional
        Number of distinct symbols (hmmlearn's name); a symbol >= n_features is an error
        naming it and its sequence. By default one more than the largest symbol in the
        data (found in one extra pass), at most ``dem.models.hmm.MAX_SYMBOLS``
        (1,000,000; a larger symbol is an error naming it), the bound of ``n_features``
        too. Symbols must be non-negative whole numbers.
    startprob_prior, transmat_prior, emissionprob_prior : float or array-like, default=1.0
        Dirichlet prior parameters of ``startprob_``, and of each row of ``transmat_``
        and ``emissionprob_``.
    tol : float, default=1e-3
        Convergence threshold on the change of the mean per-observation log-likelihood.
    max_iter : int, default=100
        Maximum number of EM iterations per initialisation.
    n_init : int, default=1
        Number of initialisations; the best (highest lower bound) is kept.
    accelerate : {"none", "squarem"}, default="none"
        ``"squarem"`` extrapolates between EM steps (Varadhan & Roland 2008; see
        :mod:`dem.accelerate`) in the probabilities and the emission parameters
        (covariances as log-Cholesky factors); ``max_iter`` then counts passes and
        ``lower_bounds_`` has one entry per cycle.
    startprob_init : array-like of shape (n_components,), optional
    transmat_init : array-like of shape (n_components, n_components), optional
    emissionprob_init : array-like of shape (n_components, n_features), optional
        Initial parameters. By default ``startprob`` and ``transmat`` start uniform and
        each row of ``emissionprob`` at normalised uniform random numbers.
    random_state, checkpoint, resume, split_every, persist, init_sample_size, callback
        As for :class:`GaussianHMM`.
    sequence_dim, time_dim : str
        Dimension names of xarray input.

    Attributes
    ----------
    startprob_ : ndarray of shape (n_components,)
    transmat_ : ndarray of shape (n_components, n_components)
    emissionprob_ : ndarray of shape (n_components, n_features)
    converged_, n_iter_, lower_bound_, lower_bounds_, n_features_in_
        As for :class:`GaussianHMM` (``n_features_in_`` is the number of symbols).
    """

    _ndim = 2
    _features_param = "emissionprob"

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **_BaseHMM._parameter_constraints,
        "n_features": [*counts(1, MAX_SYMBOLS), None],
        "emissionprob_prior": [NonNegativeArray()],
        "emissionprob_init": ["array-like", None],
    }

    def __init__(
        self,
        n_components: int = 1,
        *,
        n_features: int | None = None,
        startprob_prior: Any = 1.0,
        transmat_prior: Any = 1.0,
        emissionprob_prior: Any = 1.0,
        tol: float = 1e-3,
        max_iter: int = 100,
        n_init: int = 1,
        accelerate: str = "none",
        startprob_init: Any = None,
        transmat_init: Any = None,
        emissionprob_init: Any = None,
        random_state: RandomState = None,
        checkpoint: Any = None,
        resume: bool = False,
        split_every: int = 8,
        persist: bool | None = None,
        init_sample_size: int = 1000,
        callback: Callable[[Any], Any] | None = None,
        sequence_dim: str = "sequence",
        time_dim: str = "time",
    ) -> None:
        self.n_components = n_components
        self.n_features = n_features
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.emissionprob_prior = emissionprob_prior
        self.tol = tol
        self.max_iter = max_iter
        self.n_init = n_init
        self.accelerate = accelerate
        self.startprob_init = startprob_init
        self.transmat_init = transmat_init
        self.emissionprob_init = emissionprob_init
        self.random_state = random_state
        self.checkpoint = checkpoint
        self.resume = resume
        self.split_every = split_every
        self.persist = persist
        self.init_sample_size = init_sample_size
        self.callback = callback
        self.sequence_dim = sequence_dim
        self.time_dim = time_dim

    def _model(self, n_features: int) -> CategoricalHMMModel:
        return CategoricalHMMModel(
            int(self.n_components),
            startprob_prior=self.startprob_prior,
            transmat_prior=self.transmat_prior,
            n_features=int(n_features),
            emissionprob_prior=self.emissionprob_prior,
        )

    def _n_features(self, inputs: dict[str, Samples]) -> int:
        if self.n_features is not None:
            return int(self.n_features)
        if self.emissionprob_init is not None:
            return int(np.shape(self.emissionprob_init)[-1])

        def largest(block: Block, params: Params) -> Stats:
            x = block["X"]
            lengths = checked_lengths(
                block.get("lengths"), x.shape[0], x.shape[1], " of this chunk"
            )
            valid = np.arange(x.shape[1])[None, :] < lengths[:, None]
            _check_finite(x.T, valid.T, "X")
            return {"largest": np.float64(checked_symbols(np.where(valid, x, 0).T, None).max())}

        def larger(a: Stats, b: Stats) -> Stats:
            return {"largest": np.maximum(a["largest"], b["largest"])}

        arrays = {name: s.array for name, s in inputs.items()}
        return (
            int(
                map_reduce(largest, larger, arrays, {}, split_every=int(self.split_every))[
                    "largest"
                ]
            )
            + 1
        )

    def _initial_emissions(
        self, model: HMMModel, n_features: int, inputs: dict[str, Samples], rng: np.random.Generator
    ) -> Params:
        k = int(self.n_components)
        if self.emissionprob_init is None:
            draws = rng.random((k, n_features))
            return {"emissionprob": draws / draws.sum(axis=1, keepdims=True)}
        emissionprob = np.array(self.emissionprob_init, dtype=np.float64)
        if emissionprob.shape != (k, n_features):
            raise ValueError(
                f"emissionprob_init must have shape {(k, n_features)}, got {emissionprob.shape}."
            )
        if (
            not np.all(np.isfinite(emissionprob))
            or np.any(emissionprob < 0)
            or not np.allclose(emissionprob.sum(axis=1), 1.0)
        ):
            raise ValueError(
                "emissionprob_init must hold probabilities: non-negative rows summing to 1."
            )
        return {"emissionprob": emissionprob}

    def _emission_params(self) -> Params:
        return {"emissionprob": self.emissionprob_}

    def _set_emission_params(self, params: Params) -> None:
        self.emissionprob_ = params["emissionprob"]

    def _emission_scalars(self) -> int:
        k, m = self.emissionprob_.shape
        return int(k * (m - 1))

    def _sample_emissions(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cdf = np.cumsum(self.emissionprob_, axis=1)[states]
        draws = rng.random(states.shape)[..., None]
        return np.minimum((draws >= cdf).sum(axis=-1), cdf.shape[-1] - 1)
