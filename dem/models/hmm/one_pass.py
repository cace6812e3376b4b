"""One pass over the data per EM iteration of a long HMM sequence (see :mod:`dem.models.hmm.long`).

A chunk's posteriors depend on the rest of the sequence only through the messages at
its blocks' ends, and only near those ends: once the product of a block's first few
segment operators has coalesced (its rows agree to ``COALESCED`` relative, as
:func:`dem.models.hmm.chain.operators_and_states` checks inside segments), the
predicted message entering every later segment is the same whatever message enters
the block; once the product of its last few has coalesced, so is the backward
message leaving every earlier one. So the chunk's task, in the one pass that computes
its blocks' operators, also finishes forward–backward on every segment between those
two points (its **interior**: the messages from any entering and leaving message, here
uniform ones) and returns, with the operators and the interior's statistics, the raw
rows of the few segments before and after (its **edges**, usually a segment or two,
``MAX_EDGE_STEPS`` at most) and the messages that link them to the interior. The
client scans the operators (as before) and finishes the edges, all chunks' at once, as
a block of short sequences with the messages folded into their ends.

A chunk whose block never coalesces within ``MAX_EDGE_STEPS`` (a chain that forgets
its state very slowly) returns only its operators, and gets the two-pass treatment
(:func:`dem.models.hmm.long.stats_pass`) after the scan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dem.model import Params, Stats
from dem.models.hmm.chain import (
    COALESCED,
    boundary_transitions,
    chain,
    compose,
    fold_messages,
    operators_and_states,
    refresh_ends,
    scan,
)
from dem.models.hmm.kernels import emission_factors, forward_backward
from dem.models.hmm.model import HMMModel
from dem.models.scratch import thread_scratch

#: Most time steps of one edge of a block (before or after its interior).
MAX_EDGE_STEPS = 4096


@dataclass(frozen=True)
class Edge:
    """Steps ``start:stop`` of a chunk (``data`` their raw rows) in its block ``block``,
    finished on the client. ``entering``/``leaving``: the messages that link the edge
    to its block's interior; None where the edge begins/ends the block (the block's own
    message from the scan over chunks goes there)."""

    start: int
    stop: int
    block: int
    data: np.ndarray
    entering: np.ndarray | None
    leaving: np.ndarray | None


@dataclass(frozen=True)
class ChunkPass:
    """What a chunk's task returns: its blocks' operators and scales (as
    :func:`dem.models.hmm.long.chunk_operators`), its edges and its interior's
    statistics (None when the chunk needs the statistics pass); ``like`` has no rows
    and the chunk's other dimensions."""

    operators: tuple[np.ndarray, np.ndarray]
    edges: list[Edge]
    interior: Stats | None
    like: np.ndarray


def rank_one(operator: np.ndarray, scale: np.ndarray) -> bool:
    """Whether the live rows (finite scale) of a row-normalised operator agree to
    ``COALESCED`` relative in every entry (then it maps every message alike)."""
    live = np.isfinite(scale)
    if not live.any():
        return False
    reference = operator[int(np.argmax(scale))]
    close = np.abs(operator - reference) <= COALESCED * reference
    return bool((close.all(axis=1) | ~live).all())


def coalescing_prefix(operators: np.ndarray, scale: np.ndarray, most: int) -> int | None:
    """The fewest leading segments (at least one, at most ``most``) whose product has
    coalesced; None if none up to ``most`` has."""
    product = (operators[0], scale[0])
    for count in range(1, min(most, len(operators)) + 1):
        if count > 1:
            product = compose(product, (operators[count - 1], scale[count - 1]))
        if rank_one(*product):
            return count
    return None


def coalescing_suffix(operators: np.ndarray, scale: np.ndarray, most: int) -> int | None:
    """:func:`coalescing_prefix` of the trailing segments."""
    n = len(operators)
    product = (operators[-1], scale[-1])
    for count in range(1, min(most, n) + 1):
        if count > 1:
            product = compose((operators[n - count], scale[n - count]), product)
        if rank_one(*product):
            return count
    return None


def empty_stats(model: HMMModel, x: np.ndarray, params: Params) -> Stats:
    """Zero statistics of ``model`` for rows like ``x`` (time first)."""
    k = model.n_components
    return {
        "n": np.float64(0.0),
        "loglik": np.float64(0.0),
        "start": np.zeros(k),
        "trans": np.zeros((k, k)),
        **model.empty_emission_stats(x[:0].reshape(0, 1, *x.shape[1:]), params),
    }


def chunk_pass(model: HMMModel, params: Params, x: np.ndarray) -> ChunkPass:
    """The chunk's operators, edges and interior statistics (see the module's account)."""
    from dem.models.hmm.long import _forward_backward, _segments

    transmat = params["transmat"]
    k = model.n_components
    scratch = thread_scratch("hmm")
    interior: Stats | None = empty_stats(model, x, params)
    edges: list[Edge] = []
    found = []
    for b, (rows, _, data, log_b) in enumerate(_segments(model, x, params)):
        factors, shift = emission_factors(log_b, None, scratch)
        n_times, _, n_segments = factors.shape
        states = scratch("states", factors.shape)
        operators, scale, first = operators_and_states(factors, shift, transmat, states)
        found.append(chain(operators, scale))
        if interior is None:
            continue
        most = max(1, MAX_EDGE_STEPS // n_times)
        head = coalescing_prefix(operators, scale, most)
        tail = coalescing_suffix(operators, scale, most)
        if head is None or tail is None or head + tail > n_segments:
            if rows.stop - rows.start > 2 * MAX_EDGE_STEPS:
                interior = None  # the statistics pass will do this chunk
            else:
                edges.append(Edge(rows.start, rows.stop, b, x[rows].copy(), None, None))
            continue
        predicted, backward, _ = scan(operators, scale, np.full(k, 1.0 / k), np.ones(k))
        cut_head = rows.start + head * n_times
        cut_tail = rows.stop - tail * n_times
        edges.append(
            Edge(
                rows.start,
                cut_head,
                b,
                x[rows.start : cut_head].copy(),
                None,
                backward[head - 1].copy(),
            )
        )
        edges.append(
            Edge(
                cut_tail,
                rows.stop,
                b,
                x[cut_tail : rows.stop].copy(),
                predicted[n_segments - tail].copy(),
                None,
            )
        )
        if head + tail == n_segments:
            continue
        keep = np.zeros(n_segments, dtype=bool)
        keep[head : n_segments - tail] = True
        fold_messages(log_b, predicted, backward, transmat, np.zeros(n_segments, dtype=bool))
        refresh_ends(log_b, factors, shift)
        posteriors = _forward_backward(
            log_b, factors, shift, states, first, transmat, scratch, keep
        )
        interior["n"] += np.float64(cut_tail - cut_head)
        interior["trans"] += posteriors.trans + boundary_transitions(
            posteriors.gamma[-1], backward, transmat, ~keep
        )
        for key, value in model.emission_stats(data, posteriors.gamma, params, scratch).items():
            interior[key] += value
    operators_found = np.stack([f[0] for f in found]), np.stack([f[1] for f in found])
    return ChunkPass(operators_found, edges if interior is not None else [], interior, x[:0].copy())


def edges_stats(
    model: HMMModel,
    params: Params,
    edges: list[Edge],
    entering: np.ndarray,
    leaving: np.ndarray,
    ends: np.ndarray,
    first: int | None,
) -> Stats:
    """Statistics of edges (short stretches of the sequence) given the messages entering
    and leaving each ((n_edges, K) each), walked side by side as padded sequences.

    ``ends`` (bool, n_edges) marks the edge that ends the sequence; ``first`` is the
    position of the edge that begins it (None if none does). The log-likelihood is left
    at zero (the scan over chunks has it).
    """
    transmat = params["transmat"]
    lengths = np.array([len(e.data) for e in edges])
    longest = int(lengths.max())
    padded = np.stack(
        [
            np.concatenate([e.data, np.repeat(e.data[:1], longest - len(e.data), axis=0)])
            for e in edges
        ]
    )
    stats = empty_stats(model, edges[0].data, params)
    stats["n"] = np.float64(lengths.sum())
    scratch = thread_scratch("hmm_edges")
    ones = np.ones(model.n_components)
    for rows, data, valid in model.blocks({"X": padded, "lengths": lengths}, params, scratch):
        log_b = model.emission_log_prob(data, params, scratch)
        columns = np.arange(rows.stop - rows.start)
        last_step = lengths[rows] - 1
        out, back, done = leaving[rows], entering[rows], ends[rows]
        with np.errstate(divide="ignore"):
            log_b[0] += np.log(back.T)
            ahead = np.log(out @ transmat.T)  # (m, K)
        ahead[done] = 0.0
        log_b[last_step, :, columns] += ahead
        found = forward_backward(log_b, ones, transmat, valid, scratch=scratch)
        assert found.gamma is not None and found.trans is not None
        gamma_last = found.gamma[last_step, :, columns].T  # (K, m)
        stats["trans"] += found.trans + boundary_transitions(gamma_last, out, transmat, done)
        if first is not None and rows.start <= first < rows.stop:
            stats["start"] += found.gamma[0, :, first - rows.start]
        for key, value in model.emission_stats(data, found.gamma, params, scratch).items():
            stats[key] += value
    return stats


__all__ = ["MAX_EDGE_STEPS", "ChunkPass", "Edge", "chunk_pass", "edges_stats", "rank_one"]
