"""Kernels of one long sequence cut into segments: transfer operators, scans, folds.

Pure numpy; imports neither dask nor :mod:`dem.engine`. :mod:`dem.models.hmm.long`
uses them twice over: a chunk of a long sequence is cut into segments that are walked
side by side (as the sequences of a block are), and the chunks of the sequence are
linked by the same operators and scans on the client.

Conventions (x_t the observations, b_t(j) = p(x_t | z_t = j), A the transitions):

* The **forward operator** of a stretch of time steps t0..t1 is
  ``G = diag(b_t0) A diag(b_t0+1) A ... diag(b_t1) A``: ``G[i, j]`` is the probability
  of the stretch's observations and of state j at the step after it, given state i at
  its first step. It is kept as a matrix whose rows sum to one and the logarithms of
  the rows' scales (``G = diag(exp(scale)) G_normalised``), so it stays finite over
  any number of steps.
* The **predicted message** ``p`` entering a stretch is P(z_t0 | x before t0),
  normalised (``startprob`` for the first); the next one is ``p G``, normalised, and
  the normaliser is the log-likelihood of the stretch given the past, so these sum to
  the sequence's log-likelihood.
* The **backward message** ``r`` leaving a stretch is P(x from t1+1 on | z_t1+1), up
  to a constant (ones after the last step); the one entering it is ``G r``.

Because A's rows sum to one, a row of ``G`` sums to P(stretch | z_t0 = i). Given its
two messages, a stretch's posteriors are those of an ordinary forward–backward pass
in which ``log p`` is added to the first step's emission log-densities and
``log(A r)`` to the last step's (:func:`fold_messages`); the expected transition
across the boundary after it is ``γ_last(i) A_ij r_j / (A r)_i``
(:func:`boundary_transitions`).

The max-product (Viterbi) analogues work with logarithms: the **max operator** of a
stretch ``W[i, k]`` is the best log-probability of its observations and a path from
state i at its first step to state k at its last (no transition after it), shifted
by a constant (which changes no decision).
"""

from __future__ import annotations

import numpy as np

#: Elements of the widest temporary of the max-product operators, per block of segments.
MAX_ELEMENTS = 2**20
#: :func:`forward_operators` multiplies the rows' normalisers while all stay above this,
#: and adds their logarithms otherwise (so no product underflows: each factor and the
#: product so far are at least this, their product at least its square, a normal float).
SCALE_FLOOR = 1e-100


def emission_factors(log_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Emission probabilities relative to each step's largest, and the log shifts.

    ``log_b`` has shape (n_times, n_states, n_segments); the shifts (n_times,
    n_segments) are zero where a step's largest is not finite.
    """
    with np.errstate(invalid="ignore"):
        shift = np.max(log_b, axis=1)
    shift[~np.isfinite(shift)] = 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        factors = np.exp(log_b - shift[:, None, :])
    return factors, shift


def _normalise_rows(matrices: np.ndarray, scale: np.ndarray) -> None:
    """Divide each row of a stack of matrices by its sum, adding the log sums to
    ``scale``; a row of zeros stays zero, with scale -inf."""
    sums = matrices.sum(axis=-1)
    zero = sums <= 0.0
    matrices /= np.where(zero, 1.0, sums)[..., None]
    with np.errstate(divide="ignore"):
        scale += np.log(sums)


def forward_operators(log_b: np.ndarray, transmat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The forward operator of each segment of a block.

    Parameters
    ----------
    log_b : ndarray of shape (n_times, n_states, n_segments)
        Emission log-densities, time-major (all segments of equal length).
    transmat : ndarray of shape (n_states, n_states)

    Returns
    -------
    operators : ndarray of shape (n_segments, n_states, n_states)
        Rows summing to one (or zero, where the segment is impossible from that state).
    scale : ndarray of shape (n_segments, n_states)
        Logarithms of the rows' scales.
    """
    n_times, n_states, n_segments = log_b.shape
    factors, shift = emission_factors(log_b)
    factors = np.ascontiguousarray(factors.transpose(0, 2, 1))  # (n_times, n_segments, K)
    current = np.empty((n_segments, n_states, n_states))
    current[...] = np.eye(n_states)
    following = np.empty_like(current)
    flat, flat_following = current.reshape(-1, n_states), following.reshape(-1, n_states)
    ones = np.ones(n_states)
    sums = np.empty(n_segments * n_states)
    # the rows' scales: the product of the step's row sums since the last logarithm,
    # taken (exactly, as a sum of logarithms) whenever it could fall below SCALE_FLOOR²
    product = np.ones(n_segments * n_states)
    scale = np.zeros(n_segments * n_states)
    for t in range(n_times):
        current *= factors[t][:, None, :]
        np.matmul(flat, transmat, out=flat_following)  # one product for every segment
        current, following = following, current
        flat, flat_following = flat_following, flat
        np.matmul(flat, ones, out=sums)  # row sums (a sum over a short last axis is slow)
        if sums.min() < SCALE_FLOOR or product.min() < SCALE_FLOOR:
            with np.errstate(divide="ignore"):
                scale += np.log(product)
                scale += np.log(sums)  # a row of zeros: -inf, and it stays zero
            product[:] = 1.0
            sums[sums <= 0.0] = 1.0
        else:
            product *= sums
        flat /= sums[:, None]
    with np.errstate(divide="ignore"):
        scale += np.log(product)
    scale = scale.reshape(n_segments, n_states) + shift.sum(axis=0)[:, None]
    return current, scale


def compose(
    first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The forward operator of two consecutive stretches (stacks of them, elementwise)."""
    operator_1, scale_1 = first
    operator_2, scale_2 = second
    with np.errstate(invalid="ignore"):
        top = np.max(scale_2, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(under="ignore"):
        middle = np.exp(scale_2 - top)
    product = (operator_1 * middle[..., None, :]) @ operator_2
    scale = scale_1 + top
    _normalise_rows(product, scale)
    return product, scale


def chain(operators: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The forward operator of consecutive stretches, composed pairwise in a fixed tree."""
    pair = (operators, scale)
    while len(pair[0]) > 1:
        ops, sc = pair
        even = len(ops) // 2 * 2
        joined = compose((ops[0:even:2], sc[0:even:2]), (ops[1:even:2], sc[1:even:2]))
        if even < len(ops):
            joined = (
                np.concatenate([joined[0], ops[even:]]),
                np.concatenate([joined[1], sc[even:]]),
            )
        pair = joined
    return pair[0][0], pair[1][0]


def scan(
    operators: np.ndarray, scale: np.ndarray, entering: np.ndarray, leaving: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The messages of consecutive stretches, from those entering the first and leaving
    the last.

    Parameters
    ----------
    operators, scale : ndarrays of shape (n, n_states, n_states) and (n, n_states)
        Forward operators of the stretches, in order.
    entering : ndarray of shape (n_states,)
        Predicted message entering the first stretch.
    leaving : ndarray of shape (n_states,)
        Backward message leaving the last stretch.

    Returns
    -------
    predicted : ndarray of shape (n, n_states)
        The normalised predicted message entering each stretch.
    backward : ndarray of shape (n, n_states)
        The backward message leaving each stretch, scaled to a largest entry of one.
    loglik : ndarray of shape (n,)
        Log-likelihood of each stretch given the observations before it (-inf where the
        data are impossible).
    """
    n, n_states = scale.shape
    predicted = np.empty((n, n_states))
    backward = np.empty((n, n_states))
    loglik = np.empty(n)
    message = entering / entering.sum()
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        for s in range(n):
            predicted[s] = message
            weights = np.log(message) + scale[s]
            top = np.max(weights)
            if not np.isfinite(top):
                loglik[s:] = -np.inf
                predicted[s:] = message
                break
            following = np.exp(weights - top) @ operators[s]
            total = following.sum()
            loglik[s] = top + np.log(total)
            message = following / total
        message = leaving / np.max(leaving)
        for s in range(n - 1, -1, -1):
            backward[s] = message
            top = np.max(scale[s])
            weights = np.exp(scale[s] - (top if np.isfinite(top) else 0.0))
            earlier = weights * (operators[s] @ message)
            largest = np.max(earlier)
            message = earlier / largest if largest > 0.0 else np.ones(n_states)
    return predicted, backward, loglik


def fold_messages(
    log_b: np.ndarray,
    predicted: np.ndarray,
    backward: np.ndarray,
    transmat: np.ndarray,
    last: np.ndarray,
) -> np.ndarray:
    """Emission log-densities of segments with their messages folded into their ends.

    ``log_b`` (n_times, n_states, n_segments) is changed in place and returned:
    ``log p`` is added at the first step and ``log(A r)`` at the last; ``last`` (bool,
    n_segments) marks a segment that ends the sequence (nothing follows it).
    """
    with np.errstate(divide="ignore"):
        log_b[0] += np.log(predicted.T)
        ahead = np.log(backward @ transmat.T).T  # (n_states, n_segments)
    ahead[:, last] = 0.0
    log_b[-1] += ahead
    return log_b


def boundary_transitions(
    gamma_last: np.ndarray, backward: np.ndarray, transmat: np.ndarray, last: np.ndarray
) -> np.ndarray:
    """Expected transitions across the boundaries after segments, summed.

    ``gamma_last`` (n_states, n_segments) are the state posteriors at the segments'
    last steps, ``backward`` (n_segments, n_states) their leaving messages; segments
    marked ``last`` end the sequence and add nothing.
    """
    keep = ~last
    gamma = gamma_last[:, keep]  # (n_states, m)
    message = backward[keep]  # (m, n_states)
    ahead = message @ transmat.T  # (m, n_states): (A r)_i
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = np.where(ahead > 0.0, gamma.T / ahead, 0.0)  # (m, n_states)
    return transmat * (weights.T @ message)


# --- max-product (Viterbi) ---------------------------------------------------------------


def max_operators(log_b: np.ndarray, log_transmat: np.ndarray) -> np.ndarray:
    """The max operator of each segment of a block, shape (n_segments, n_states, n_states).

    ``log_b`` (n_times, n_states, n_segments) as for :func:`forward_operators`. Each
    segment's operator is shifted to a largest entry of zero at every step.
    """
    n_times, n_states, n_segments = log_b.shape
    current = np.full((n_segments, n_states, n_states), -np.inf)
    diagonal = np.arange(n_states)
    current[:, diagonal, diagonal] = log_b[0].T
    for t in range(1, n_times):
        # best over the state m before: current[s, i, m] + log A[m, k]
        scores = current[:, :, :, None] + log_transmat[None, None, :, :]
        current = scores.max(axis=2) + log_b[t].T[:, None, :]
        _shift_max(current)
    if n_times == 1:
        _shift_max(current)
    return current


def _shift_max(matrices: np.ndarray) -> None:
    with np.errstate(invalid="ignore"):
        top = matrices.max(axis=(-2, -1), keepdims=True)
    matrices -= np.where(np.isfinite(top), top, 0.0)


def max_compose(first: np.ndarray, second: np.ndarray, log_transmat: np.ndarray) -> np.ndarray:
    """The max operator of two consecutive stretches (stacks of them, elementwise)."""
    # first[i, m] + log A[m, l] + second[l, k], best over m and l
    via = (first[..., :, :, None] + log_transmat).max(axis=-2)  # (..., i, l)
    joined = (via[..., :, :, None] + second[..., None, :, :]).max(axis=-2)
    _shift_max(joined)
    return joined


def max_chain(operators: np.ndarray, log_transmat: np.ndarray) -> np.ndarray:
    """The max operator of consecutive stretches, composed pairwise in a fixed tree."""
    while len(operators) > 1:
        even = len(operators) // 2 * 2
        joined = max_compose(operators[0:even:2], operators[1:even:2], log_transmat)
        operators = np.concatenate([joined, operators[even:]]) if even < len(operators) else joined
    return operators[0]


def max_scan(
    operators: np.ndarray, entering: np.ndarray, log_transmat: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Forward max messages of consecutive stretches.

    Returns ``entering`` of each stretch (best log-score of the path before it and each
    state at its first step, shifted) and ``ending`` (best log-score of the path up to
    and including each state at its last step, shifted), each of shape (n, n_states).
    """
    n, n_states = operators.shape[:2]
    entering_all = np.empty((n, n_states))
    ending_all = np.empty((n, n_states))
    message = entering - np.max(entering)
    for s in range(n):
        entering_all[s] = message
        ending = np.max(message[:, None] + operators[s], axis=0)
        ending -= np.max(ending)
        ending_all[s] = ending
        message = np.max(ending[:, None] + log_transmat, axis=0)
        message -= np.max(message)
    return entering_all, ending_all


def max_backtrack(
    operators: np.ndarray,
    entering: np.ndarray,
    ending: np.ndarray,
    log_transmat: np.ndarray,
    last_state: int | None,
    first_state: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The states at the first and last step of each stretch on the best path.

    ``last_state`` is the state at the very last step (None: the best one);
    ``first_state`` forces the state at the very first step (None: the best one).
    """
    n = len(operators)
    firsts = np.empty(n, dtype=np.int64)
    lasts = np.empty(n, dtype=np.int64)
    state = int(np.argmax(ending[-1])) if last_state is None else int(last_state)
    for s in range(n - 1, -1, -1):
        lasts[s] = state
        if s == 0 and first_state is not None:
            firsts[s] = first_state
        else:
            firsts[s] = int(np.argmax(entering[s] + operators[s][:, state]))
        if s:
            state = int(np.argmax(ending[s - 1] + log_transmat[:, firsts[s]]))
    return firsts, lasts


def pin(log_b: np.ndarray, firsts: np.ndarray, lasts: np.ndarray) -> np.ndarray:
    """``log_b`` (n_times, n_states, n_segments) with every state but ``firsts`` made
    impossible at the first step and every state but ``lasts`` at the last (in place)."""
    n_segments = log_b.shape[2]
    columns = np.arange(n_segments)
    keep_first = log_b[0, firsts, columns].copy()
    keep_last = log_b[-1, lasts, columns].copy()
    log_b[0] = -np.inf
    log_b[-1] = -np.inf if len(log_b) > 1 else log_b[-1]
    log_b[0, firsts, columns] = keep_first
    if len(log_b) > 1:
        log_b[-1, lasts, columns] = keep_last
    return log_b
