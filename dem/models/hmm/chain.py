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

import math

import numpy as np

#: Elements of the widest temporary of the max-product operators, per block of segments.
MAX_ELEMENTS = 2**20
#: :func:`forward_operators` multiplies the rows' normalisers while all stay above this,
#: and adds their logarithms otherwise (so no product underflows: each factor and the
#: product so far are at least this, their product at least its square, a normal float).
SCALE_FLOOR = 1e-100
#: The fast loop of the recursions keeps every row sum and takes their logarithms at the
#: end while all stay above this (normal floats, divided by and logged exactly).
FAST_FLOOR = 1e-300


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

    Each segment's operator is its K forward recursions started from the rows of the
    identity, renormalised at every step. Once the normalised rows of a segment agree
    to ``COALESCED`` relative in every entry (the chain has forgotten its first state,
    usually within tens of steps), the rest of the segment maps every row alike, so the
    segment goes on as one vector (the cost of one forward pass instead of K) and only
    the rows' scales differ; the rows then stay within that relative distance of each
    other (a product of non-negative matrices keeps it), which is far below the
    precision anything downstream reads. Rows that a segment makes impossible (scale
    -inf) take no part in the comparison and stay zero.

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
    return operators_from_factors(*emission_factors(log_b), transmat)


def operators_from_factors(
    factors: np.ndarray, shift: np.ndarray, transmat: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`forward_operators` from the emission factors and shifts of
    :func:`emission_factors` (shapes (n_times, n_states, n_segments) and (n_times,
    n_segments))."""
    operators, scale, _ = operators_and_states(factors, shift, transmat, None)
    return operators, scale


def operators_and_states(
    factors: np.ndarray, shift: np.ndarray, transmat: np.ndarray, states: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`operators_from_factors`, and the forward pass of the segments' coalesced
    steps.

    Once a segment's rows have coalesced (from its step ``first``), its one vector is
    the normalised forward message P(z_t | its observations before t) of any message
    entering the segment: the predicted state distributions that forward–backward
    needs. They are written in ``states`` (n_times, n_states, n_segments) at steps
    ``first`` on; ``first`` (n_segments,) is returned, n_times for a segment whose rows
    never coalesced (see :func:`fill_states` for the steps before).
    """
    n_times, n_states, n_segments = factors.shape
    operators = np.empty((n_segments, n_states, n_states))
    scale = np.empty((n_segments, n_states))
    first = np.full(n_segments, n_times)
    full = _Rows(np.arange(n_segments), n_states, n_states)  # K recursions per segment
    single = _Rows(np.arange(0), 1, n_states)  # one, after coalescing
    row_scale = np.zeros((n_segments, n_states))  # the rows' log scales when they coalesced
    check = COALESCE_FIRST_CHECK
    t = 0
    while t < n_times:
        stop = n_times if len(full.segments) == 0 else min(n_times, check)
        full.run(factors, t, stop, transmat)
        if states is not None and len(single.segments) and stop > t:
            if single.every(n_segments):
                single.run(factors, t, stop, transmat, states[t:stop])
            else:
                found = np.empty((stop - t, n_states, len(single.segments)))
                single.run(factors, t, stop, transmat, found)
                states[t:stop, :, single.segments] = found
        else:
            single.run(factors, t, stop, transmat)
        t = stop
        check *= 2
        if t < n_times and len(full.segments):
            joined, logs = full.coalesce()
            if len(joined):
                row_scale[full.segments[joined]] = logs
                first[full.segments[joined]] = t
                single.extend(full, joined)
                full.drop(joined)
    operators[full.segments], scale[full.segments] = full.result()
    vector, common = single.result()
    with np.errstate(invalid="ignore"):
        rows_scale = row_scale[single.segments] + common
    operators[single.segments] = np.where(
        np.isfinite(rows_scale)[:, :, None], vector[:, 0, None, :], 0.0
    )
    scale[single.segments] = rows_scale
    scale += shift.sum(axis=0)[:, None]
    return operators, scale, first


def fill_states(
    states: np.ndarray, factors: np.ndarray, transmat: np.ndarray, first: np.ndarray
) -> None:
    """The predicted state distributions (n_times, K, n_segments) of each segment's
    steps before ``first`` (see :func:`operators_and_states`), from ``states[0]`` (the
    distribution at its first step), in place: ``states[t + 1] ∝ Aᵀ (states[t] ·
    factors[t])``, normalised.

    Every segment is walked up to the latest ``first`` (at most ``FILL_TOGETHER``
    steps), side by side: a segment whose rows coalesced earlier gets its coalesced
    states there replaced by this recursion's, which they equal to ``COALESCED``. The
    few segments that coalesce later (or never) are walked on alone."""
    transposed = np.ascontiguousarray(transmat.T)
    _, n_states, n_segments = states.shape
    together = min(int(first.max()), FILL_TOGETHER)
    weighted = np.empty((n_states, n_segments))
    sums = np.empty(n_segments)
    ones = np.ones(n_states)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for t in range(together - 1):
            np.multiply(states[t], factors[t], out=weighted)
            following = states[t + 1]
            np.matmul(transposed, weighted, out=following)
            np.matmul(ones, following, out=sums)
            following /= sums
        later = np.flatnonzero(first > together)
        if len(later) == 0:
            return
        current = states[together - 1][:, later]
        for t in range(together - 1, int(first.max()) - 1):
            current = transposed @ (current * factors[t][:, later])
            current /= current.sum(axis=0)
            states[t + 1][:, later] = current


#: :func:`fill_states` walks every segment side by side for at most this many steps.
FILL_TOGETHER = 64


#: Segments are checked for coalesced rows after this many steps, then after twice as
#: many, four times, ... (each check moves the coalesced ones to the one-vector group).
COALESCE_FIRST_CHECK = 8
#: Normalised rows that agree to this relative in every entry count as coalesced.
COALESCED = 1e-14


class _Rows:
    """A group of segments whose forward recursions run side by side: ``width`` rows of
    K states per segment, renormalised at every step, with the rows' log scales.

    The rows are held as (width, K, n): the segments along the last, contiguous axis,
    as the emission factors (n_times, K, n_segments) are, so a group holding every
    segment in order reads each step's factors as they lie. The segments stay sorted.
    """

    def __init__(self, segments: np.ndarray, width: int, n_states: int) -> None:
        self.segments = segments
        self.current = np.zeros((width, n_states, len(segments)))
        if width == n_states:
            self.current[np.arange(width), np.arange(width)] = 1.0
        # the rows' scales: the product of the step's row sums since the last logarithm,
        # taken (exactly, as a sum of logarithms) whenever it could fall below SCALE_FLOOR²
        self.product = np.ones((width, len(segments)))
        self.scale = np.zeros((width, len(segments)))

    def every(self, n_segments: int) -> bool:
        """Whether the group holds every one of ``n_segments`` segments."""
        return len(self.segments) == n_segments

    def run(
        self,
        factors: np.ndarray,
        start: int,
        stop: int,
        transmat: np.ndarray,
        states: np.ndarray | None = None,
    ) -> None:
        """Steps ``start`` to ``stop`` of the recursions; ``states`` (steps, K, n), when
        given, receives the first row before each step."""
        width, n_states, n = self.current.shape
        if n == 0 or start >= stop:
            return
        block = factors[start:stop]  # (steps, K, n_segments)
        if not self.every(factors.shape[2]):
            block = block[:, :, self.segments]
        transposed = np.ascontiguousarray(transmat.T)
        if self._run_fast(block, transposed, states):
            return
        current = self.current
        following = np.empty_like(current)
        sums = np.empty((width, n))
        ones = np.ones(n_states)
        product, scale = self.product, self.scale
        for i, step in enumerate(block):
            if states is not None:
                states[i] = current[0]
            current *= step
            np.matmul(transposed, current, out=following)  # every row of every segment
            current, following = following, current
            np.matmul(ones, current, out=sums)  # (faster than a sum over the short axis)
            if sums.min() < SCALE_FLOOR or product.min() < SCALE_FLOOR:
                with np.errstate(divide="ignore"):
                    scale += np.log(product)
                    scale += np.log(sums)  # a row of zeros: -inf, and it stays zero
                product[:] = 1.0
                sums[sums <= 0.0] = 1.0
            else:
                product *= sums
            current /= sums[:, None, :]
        self.current = current

    def _run_fast(
        self, block: np.ndarray, transposed: np.ndarray, states: np.ndarray | None
    ) -> bool:
        """:meth:`run` keeping every step's row sums and adding their logarithms at the
        end (half the calls per step); False, with nothing changed, if a sum fell below
        ``FAST_FLOOR`` (or is NaN), where :meth:`run`'s careful loop takes over."""
        width, n_states, n = self.current.shape
        current = self.current.copy()
        following = np.empty_like(current)
        sums = np.empty((len(block), width, n))
        ones = np.ones(n_states)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            for i, step in enumerate(block):
                if states is not None:
                    states[i] = current[0]
                current *= step
                np.matmul(transposed, current, out=following)
                current, following = following, current
                np.matmul(ones, current, out=sums[i])
                current /= sums[i][:, None, :]
            if not sums.min() >= FAST_FLOOR:
                return False
            self.scale += np.log(sums).sum(axis=0)
        self.current = current
        return True

    def logs(self) -> np.ndarray:
        """The rows' log scales so far, shape (n, width)."""
        with np.errstate(divide="ignore"):
            return (self.scale + np.log(self.product)).T

    def coalesce(self) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the segments whose live rows agree, and those rows' log scales."""
        logs = self.logs()  # (n, width)
        live = np.isfinite(logs).T  # (width, n)
        reference = np.take_along_axis(
            self.current, np.argmax(logs, axis=1)[None, None, :], axis=0
        )  # (1, K, n): the row of a live state
        close = np.abs(self.current - reference) <= COALESCED * reference
        agree = (close.all(axis=1) | ~live).all(axis=0) & live.any(axis=0)
        joined = np.flatnonzero(agree)
        return joined, logs[joined]

    def extend(self, other: _Rows, positions: np.ndarray) -> None:
        """Take over ``other``'s segments at ``positions`` as one vector each."""
        first = np.argmax(other.logs()[positions], axis=1)
        rows = other.current[first, :, positions].T[None]  # (1, K, m)
        segments = np.concatenate([self.segments, other.segments[positions]])
        order = np.argsort(segments, kind="stable")
        self.segments = segments[order]
        self.current = np.concatenate([self.current, rows], axis=2)[:, :, order]
        self.product = np.concatenate([self.product, np.ones((1, len(positions)))], axis=1)[
            :, order
        ]
        self.scale = np.concatenate([self.scale, np.zeros((1, len(positions)))], axis=1)[:, order]

    def drop(self, positions: np.ndarray) -> None:
        keep = np.ones(len(self.segments), dtype=bool)
        keep[positions] = False
        self.segments = self.segments[keep]
        self.current = self.current[:, :, keep]
        self.product = self.product[:, keep]
        self.scale = self.scale[:, keep]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """The normalised rows (n, width, K) and their log scales (n, width)."""
        return self.current.transpose(2, 0, 1), self.logs()


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

    The stretches are taken in groups of about √n: each group's operator is composed
    (all groups side by side), the groups' messages are scanned one group at a time,
    then every group passes its messages through its own stretches (all groups side by
    side), so the loops run about 4√n steps rather than 2n.

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
    width = max(1, math.isqrt(n - 1) + 1) if n > SCAN_GROUPS_FROM else n
    if width == n:
        predicted, backward, loglik = _scan_groups(
            operators[None], scale[None], entering[None], leaving[None]
        )
        return predicted[0], backward[0], _impossible_onwards(loglik[0])
    groups = -(-n // width)
    padded = groups * width
    ops = np.empty((padded, n_states, n_states))
    ops[:n] = operators
    ops[n:] = np.eye(n_states)  # stretches of nothing: identity, scale zero
    sc = np.zeros((padded, n_states))
    sc[:n] = scale
    ops, sc = ops.reshape(groups, width, n_states, n_states), sc.reshape(groups, width, n_states)
    joined = chain(ops.swapaxes(0, 1), sc.swapaxes(0, 1))  # every group's, side by side
    entering_groups, leaving_groups, _ = _scan_groups(
        joined[0][None], joined[1][None], entering[None], leaving[None]
    )
    predicted, backward, loglik = _scan_groups(ops, sc, entering_groups[0], leaving_groups[0])
    return (
        predicted.reshape(padded, n_states)[:n],
        backward.reshape(padded, n_states)[:n],
        _impossible_onwards(loglik.reshape(padded)[:n]),
    )


def _impossible_onwards(loglik: np.ndarray) -> np.ndarray:
    """-inf from the first impossible stretch on."""
    return np.where(np.isneginf(np.minimum.accumulate(loglik)), -np.inf, loglik)


#: :func:`scan` walks more stretches than this in groups.
SCAN_GROUPS_FROM = 16


def _scan_groups(
    operators: np.ndarray, scale: np.ndarray, entering: np.ndarray, leaving: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`scan` of many groups of stretches side by side: ``operators`` (groups,
    n, K, K), ``scale`` (groups, n, K), ``entering`` and ``leaving`` (groups, K).

    The rows' scales are taken relative to each stretch's largest once, before the
    loops; where a message then falls below ``SCAN_FLOOR`` (its mass on rows far below
    the largest, or the data impossible), the groups are walked again in logarithms.
    """
    with np.errstate(invalid="ignore", under="ignore"):
        top = np.max(scale, axis=2, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        relative = np.exp(scale - top)  # (groups, n, K), largest one (or all zero)
    groups, n, n_states = scale.shape
    predicted = np.empty((groups, n, n_states))
    backward = np.empty((groups, n, n_states))
    totals = np.empty((groups, n))
    message = entering / entering.sum(axis=1, keepdims=True)
    for s in range(n):
        predicted[:, s] = message
        following = np.matmul((message * relative[:, s])[:, None, :], operators[:, s])[:, 0]
        total = following.sum(axis=1, out=totals[:, s])
        message = following / np.maximum(total, SCAN_FLOOR)[:, None]
    message = leaving / np.max(leaving, axis=1, keepdims=True)
    smallest = np.inf
    for s in range(n - 1, -1, -1):
        backward[:, s] = message
        earlier = relative[:, s] * np.matmul(operators[:, s], message[:, :, None])[:, :, 0]
        largest = np.max(earlier, axis=1, keepdims=True)
        smallest = min(smallest, float(largest.min()))
        message = earlier / np.maximum(largest, SCAN_FLOOR)
    if totals.min() < SCAN_FLOOR or smallest < SCAN_FLOOR:
        return _scan_groups_log(operators, scale, entering, leaving)
    with np.errstate(divide="ignore"):
        loglik = top[:, :, 0] + np.log(totals)
    return predicted, backward, loglik


#: :func:`_scan_groups` redoes its groups in logarithms where a message falls below this.
SCAN_FLOOR = 1e-250


def _scan_groups_log(
    operators: np.ndarray, scale: np.ndarray, entering: np.ndarray, leaving: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_scan_groups` with the scales in logarithms at every step."""
    groups, n, n_states = scale.shape
    predicted = np.empty((groups, n, n_states))
    backward = np.empty((groups, n, n_states))
    loglik = np.empty((groups, n))
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        message = entering / entering.sum(axis=1, keepdims=True)
        for s in range(n):
            predicted[:, s] = message
            weights = np.log(message) + scale[:, s]
            top = np.max(weights, axis=1, keepdims=True)
            possible = np.isfinite(top)
            following = np.matmul(
                np.exp(weights - np.where(possible, top, 0.0))[:, None, :], operators[:, s]
            )[:, 0]
            total = following.sum(axis=1, keepdims=True)
            loglik[:, s] = np.where(possible, top + np.log(total), -np.inf)[:, 0]
            # an impossible stretch: -inf from there on, the message kept
            message = np.where(possible, following / np.where(possible, total, 1.0), message)
        message = leaving / np.max(leaving, axis=1, keepdims=True)
        for s in range(n - 1, -1, -1):
            backward[:, s] = message
            top = np.max(scale[:, s], axis=1, keepdims=True)
            weights = np.exp(scale[:, s] - np.where(np.isfinite(top), top, 0.0))
            earlier = weights * np.matmul(operators[:, s], message[:, :, None])[:, :, 0]
            largest = np.max(earlier, axis=1, keepdims=True)
            message = np.where(largest > 0.0, earlier / np.where(largest > 0.0, largest, 1.0), 1.0)
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


def refresh_ends(log_b: np.ndarray, factors: np.ndarray, shift: np.ndarray) -> None:
    """Recompute the emission factors and shifts (see :func:`emission_factors`) of the
    first and last steps from ``log_b``, in place (after :func:`fold_messages`)."""
    for t in {0, len(log_b) - 1}:
        with np.errstate(invalid="ignore", over="ignore"):
            top = np.max(log_b[t], axis=0)
            top[~np.isfinite(top)] = 0.0
            shift[t] = top
            np.exp(log_b[t] - top, out=factors[t])


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
