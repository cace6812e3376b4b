"""One HMM sequence longer than a chunk: exact Baum–Welch and Viterbi across chunks.

A 2-D input (time × features; 1-D symbols for a categorical HMM) chunked along time
is one sequence. Each chunk is cut into segments of :data:`SEGMENT` steps, walked side
by side as the sequences of a block are (:mod:`dem.models.hmm.chain` has the maths).

One EM iteration is **one pass over the data** (one compute, :func:`one_pass`) wherever
the chain forgets its state within a few segments, which is the usual case:

1. **Operators, interiors, edges.** Each chunk's task computes, for each of its blocks of
   segments, the forward operators of the segments
   (:func:`dem.models.hmm.chain.operators_and_states`: K recursions per segment until
   they coalesce, then one) and composes them (pairwise, in a fixed tree) into the
   block's K × K forward operator (rows normalised, log scales beside). From the same
   densities and operators it finishes forward–backward on the block's **interior**:
   every segment after the first few whose product has coalesced and before the last
   few (see :mod:`dem.models.hmm.one_pass`), whose messages are then the same whatever
   enters and leaves the block. It keeps the raw rows of those few segments (the
   **edges**) and the messages linking them to the interior.
2. **Scan.** One task scans all the blocks' operators in order (so its result depends on
   nothing but the data) into the message entering each block and the one leaving it:
   K² + K numbers per block travel to it, 2K per block back.
3. **Edges.** Each chunk's edges are finished beside its interior, as a block of short
   sequences with the messages folded into their ends, and the chunk's statistics (those
   of the many-sequence model) are summed in the fixed-shape tree. The M-step is that
   model's.

A chunk with a block that does not coalesce within
:data:`dem.models.hmm.one_pass.MAX_EDGE_STEPS` steps from either end (a chain that
forgets very slowly, or never: periodic, or with closed classes) contributes only its
operators to that compute, and gets a second pass (:func:`stats_pass`): each block gets
its two messages (2K numbers), computes its emission densities and its segments'
operators again, scans them to get every segment's messages, and runs forward–backward
on its segments with the messages folded into their ends, reusing the operators'
coalesced vectors as its forward pass. Two passes are the fewest for such a chain: a
chunk's posteriors depend on every other chunk's data through the messages, which must
be computed at the parameters of this iteration before any statistics can be formed.
What reaches the client: the statistics, and K² + K numbers per block (the operators,
for that second pass). Viterbi is the same scheme with max-product operators: a scan
over the chunks' max operators decides the state at each chunk's first and last step,
and each chunk's backtrack stays local (two passes).

The scaling is that of the scaled forward–backward algorithm (each operator's rows
renormalised at every step), so the posteriors equal log-space forward–backward's
wherever no state's relative probability falls below about 1e-300 at a chunk or
segment boundary; segments whose local normalisers underflow are redone in log
space by :func:`dem.models.hmm.kernels.forward_backward`.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed
from dask.task_spec import DataNode, Task, TaskRef

from dem.checkpoint import CheckpointMismatchError, chunk_digest
from dem.graph import _compute, _tree_layer, _with_inputs, check_block
from dem.model import Block, Params, Stats
from dem.models.hmm.chain import (
    MAX_ELEMENTS,
    boundary_transitions,
    chain,
    fill_states,
    fold_messages,
    max_backtrack,
    max_chain,
    max_operators,
    max_scan,
    operators_and_states,
    operators_from_factors,
    pin,
    refresh_ends,
    scan,
)
from dem.models.hmm.kernels import (
    TINY,
    emission_factors,
    forward_backward_factors,
    scaled_backward,
    viterbi,
)
from dem.models.hmm.model import HMMModel
from dem.models.hmm.one_pass import ChunkPass, chunk_pass, edges_stats, empty_stats
from dem.models.scratch import thread_scratch

#: Most time steps of a segment. The forward loops run as many steps as a segment has,
#: per block of segments, over all the block's segments at once; the scans over
#: segments run in groups (see :func:`dem.models.hmm.chain.scan`), so short segments
#: keep the loops short without a long scan.
SEGMENT = 128
#: Fewest time steps of a segment (but a chunk shorter than that is one segment).
MIN_SEGMENT = 16

Digests = tuple[tuple[int, ...], ...]


# --- one chunk --------------------------------------------------------------------------


def _segments(
    model: HMMModel, x: np.ndarray, params: Params
) -> Iterator[tuple[slice, slice, np.ndarray, np.ndarray]]:
    """The chunk's blocks of segments: (rows of the chunk, segments, prepared data,
    emission log-densities (n_times, K, n_segments)), in buffers the next block reuses.

    The chunk is cut into segments of equal length (see ``SEGMENT``) and one shorter
    segment for the remainder."""
    n_rows = len(x)
    length = min(n_rows, max(MIN_SEGMENT, min(SEGMENT, math.isqrt(n_rows))))
    full = n_rows // length
    groups = [(0, full, length)]
    if full * length < n_rows:
        groups.append((full * length, 1, n_rows - full * length))
    scratch = thread_scratch("hmm")
    first_segment = 0
    for row, count, steps in groups:
        sequences = x[row : row + count * steps].reshape(count, steps, *x.shape[1:])
        for rows, data, _ in model.blocks({"X": sequences}, params, scratch):
            log_b = model.emission_log_prob(data, params, scratch)
            yield (
                slice(row + rows.start * steps, row + rows.stop * steps),
                slice(first_segment + rows.start, first_segment + rows.stop),
                data,
                log_b,
            )
        first_segment += count


def _block_operator(
    factors: np.ndarray, shift: np.ndarray, transmat: np.ndarray
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The forward operators of a block's segments, and the block's own."""
    operators, scale = operators_from_factors(factors, shift, transmat)
    return operators, scale, chain(operators, scale)


def chunk_operators(
    model: HMMModel, params: Params, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The forward operators (n_blocks, K, K) of the chunk's blocks of segments, in time
    order, and their rows' log scales (n_blocks, K).

    The messages travel per block (each a few hundred thousand steps), so that the
    second pass meets each block's data once: its emission densities and its segments'
    operators are computed once there, and serve both the scan over its segments and
    its forward–backward.
    """
    transmat = params["transmat"]
    scratch = thread_scratch("hmm")
    found = []
    for _, _, _, log_b in _segments(model, x, params):
        factors, shift = emission_factors(log_b, None, scratch)
        found.append(_block_operator(factors, shift, transmat)[2])
    return np.stack([f[0] for f in found]), np.stack([f[1] for f in found])


def chunk_operator(model: HMMModel, params: Params, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The chunk's forward operator (K × K, rows normalised) and its rows' log scales."""
    return chain(*chunk_operators(model, params, x))


def _messages_walk(
    model: HMMModel,
    params: Params,
    x: np.ndarray,
    entering: np.ndarray,
    leaving: np.ndarray,
    ends: bool,
) -> Iterator[tuple[slice, slice, np.ndarray, np.ndarray, np.ndarray, float]]:
    """Forward–backward on each block of the chunk's segments, given the messages
    entering and leaving each block (shape (n_blocks, K) each).

    Yields (rows, segments, data, gamma, within-segment transitions + boundary
    transitions, the block's log-likelihood given the past) per block; ``ends`` says
    the chunk ends the sequence.
    """
    transmat = params["transmat"]
    scratch = thread_scratch("hmm")
    blocks = _segments(model, x, params)
    for b, (rows, segments, data, log_b) in enumerate(blocks):
        factors, shift = emission_factors(log_b, None, scratch)
        n_times, n_states, n_segments = factors.shape
        states = scratch("states", (n_times, n_states, n_segments))
        operators, scale, first = operators_and_states(factors, shift, transmat, states)
        predicted, backward, loglik = scan(operators, scale, entering[b], leaving[b])
        last = np.zeros(len(operators), dtype=bool)
        last[-1] = ends and b == len(entering) - 1
        fold_messages(log_b, predicted, backward, transmat, last)
        refresh_ends(log_b, factors, shift)
        found = _forward_backward(log_b, factors, shift, states, first, transmat, scratch)
        trans = found.trans + boundary_transitions(found.gamma[-1], backward, transmat, last)
        yield rows, segments, data, found.gamma, trans, float(loglik.sum())


@dataclass(frozen=True)
class _Found:
    gamma: np.ndarray
    trans: np.ndarray


def _forward_backward(
    log_b: np.ndarray,
    factors: np.ndarray,
    shift: np.ndarray,
    states: np.ndarray,
    first: np.ndarray,
    transmat: np.ndarray,
    scratch: Any,
    keep: np.ndarray | None = None,
) -> _Found:
    """Forward–backward on a block of segments whose messages are folded into their
    ends (``log_b``, ``factors`` and ``shift`` refreshed), reusing the predicted state
    distributions that the operators' pass left in ``states`` from each segment's step
    ``first`` on: only the steps before are walked forward again, the rest of the
    forward pass is a few whole-block products. Blocks where the scaled pass would fail
    go to :func:`dem.models.hmm.kernels.forward_backward_factors` (its log-space path).
    Segments where ``keep`` (bool, n_segments) is false add nothing to the posteriors
    and transitions (as sequences of weight zero)."""
    n_times, n_states, n_segments = factors.shape
    ones = np.ones(n_states)
    states[0] = 1.0  # the entering message is folded into the first step's factors
    fill_states(states, factors, transmat, first)
    alpha = scratch("alpha", factors.shape)
    np.multiply(states, factors, out=alpha)
    norm = np.sum(alpha, axis=1, out=scratch("norm", (n_times, n_segments)))
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha /= norm[:, None, :]
    if np.all(norm >= TINY):  # (False where NaN)
        if keep is not None:
            alpha[:, :, ~keep] = 0.0
        gamma, trans, overflowed = scaled_backward(alpha, factors, norm, transmat, scratch)
        if not overflowed.any():
            return _Found(gamma, transmat * trans)
    weights = None if keep is None else keep.astype(np.float64)
    found = forward_backward_factors(
        log_b, factors, shift, ones, transmat, None, scratch=scratch, weights=weights
    )
    assert found.gamma is not None and found.trans is not None
    return _Found(found.gamma, found.trans)


def chunk_stats(
    model: HMMModel,
    params: Params,
    x: np.ndarray,
    entering: np.ndarray,
    leaving: np.ndarray,
    starts: bool,
    ends: bool,
) -> Stats:
    """The chunk's additive statistics (those of ``model``'s E-step) given the messages
    entering and leaving its blocks (see :func:`chunk_operators`).

    ``starts``/``ends`` say whether the chunk begins/ends the sequence.
    """
    k = model.n_components
    stats: Stats = {
        "n": np.float64(len(x)),
        "loglik": np.float64(0.0),
        "start": np.zeros(k),
        "trans": np.zeros((k, k)),
        **model.empty_emission_stats(x.reshape(len(x), 1, *x.shape[1:]), params),
    }
    for _, segments, data, gamma, trans, loglik in _messages_walk(
        model, params, x, entering, leaving, ends
    ):
        stats["loglik"] += loglik
        stats["trans"] += trans
        if starts and segments.start == 0:
            stats["start"] += gamma[0, :, 0]
        for key, value in model.emission_stats(data, gamma, params, thread_scratch("hmm")).items():
            stats[key] += value
    return stats


def chunk_posteriors(
    model: HMMModel,
    params: Params,
    x: np.ndarray,
    entering: np.ndarray,
    leaving: np.ndarray,
    ends: bool,
) -> np.ndarray:
    """State posteriors of the chunk's steps, shape (n_rows, K)."""
    out = np.empty((len(x), model.n_components))
    for rows, segments, _, gamma, _, _ in _messages_walk(model, params, x, entering, leaving, ends):
        n_segments = segments.stop - segments.start
        out[rows] = gamma[:, :, :n_segments].transpose(2, 0, 1).reshape(-1, model.n_components)
    return out


def _log_transmat(params: Params) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(params["transmat"])


def _max_operators(model: HMMModel, x: np.ndarray, params: Params) -> np.ndarray:
    """The max operators of the chunk's segments, in order (a few segments at a time)."""
    log_transmat = _log_transmat(params)
    found = []
    width = max(1, MAX_ELEMENTS // model.n_components**3)
    for _, _, _, log_b in _segments(model, x, params):
        for start in range(0, log_b.shape[2], width):
            found.append(max_operators(log_b[:, :, start : start + width], log_transmat))
    return np.concatenate(found)


def chunk_max_operator(model: HMMModel, params: Params, x: np.ndarray) -> np.ndarray:
    """The chunk's max operator (K × K): best log-score from each first to each last state."""
    return max_chain(_max_operators(model, x, params), _log_transmat(params))


def chunk_path(
    model: HMMModel, params: Params, x: np.ndarray, first_state: int, last_state: int
) -> np.ndarray:
    """The best state path through the chunk from ``first_state`` to ``last_state``."""
    log_transmat = _log_transmat(params)
    operators = _max_operators(model, x, params)
    entering = np.full(model.n_components, -np.inf)
    entering[first_state] = 0.0
    entering_all, ending_all = max_scan(operators, entering, log_transmat)
    firsts, lasts = max_backtrack(
        operators, entering_all, ending_all, log_transmat, last_state, first_state
    )
    out = np.empty(len(x), dtype=np.int64)
    ones = np.ones(model.n_components)
    for rows, segments, _, log_b in _segments(model, x, params):
        pin(log_b, firsts[segments], lasts[segments])
        out[rows] = viterbi(log_b, ones, params["transmat"], None).ravel()
    return out


# --- the whole sequence: client-side scans ----------------------------------------------


def sequence_messages(
    params: Params, operators: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Messages entering and leaving each block of each chunk (one array of shape
    (n_blocks, K) per chunk each), and each block's log-likelihood given the ones
    before, in order (see :func:`dem.models.hmm.chain.scan`); ``operators`` holds each
    chunk's :func:`chunk_operators`."""
    stacked = np.concatenate([o[0] for o in operators]), np.concatenate([o[1] for o in operators])
    k = len(params["startprob"])
    predicted, backward, loglik = scan(*stacked, params["startprob"], np.ones(k))
    cuts = np.cumsum([len(o[0]) for o in operators])[:-1]
    return np.split(predicted, cuts), np.split(backward, cuts), loglik


def sequence_bounds(params: Params, operators: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The states at each chunk's first and last step on the best path."""
    log_transmat = _log_transmat(params)
    with np.errstate(divide="ignore"):
        start = np.log(params["startprob"])
    stacked = np.stack(operators)
    entering, ending = max_scan(stacked, start, log_transmat)
    return max_backtrack(stacked, entering, ending, log_transmat, None)


# --- the graphs -------------------------------------------------------------------------


def _checked(
    names: tuple[str, ...], missing_ok: frozenset[str] | None, first_row: int, x: np.ndarray
) -> None:
    if missing_ok is not None:
        check_block(names, (x,), missing_ok, first_row)


def _located(function: Any, first_row: int, x: np.ndarray, *args: Any) -> Any:
    """``function(*args)``, naming the chunk's rows in a ValueError the model raised."""
    try:
        return function(*args)
    except ValueError as invalid:
        if type(invalid) is not ValueError:
            raise
        rows = f"{first_row}-{first_row + len(x) - 1}"
        raise ValueError(f"{invalid} (In the chunk of time steps {rows}.)") from invalid


def _operator_task(
    model: HMMModel,
    names: tuple[str, ...],
    missing_ok: frozenset[str] | None,
    digest: bool,
    first_row: int,
    params: Params,
    x: np.ndarray,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[int, ...]]:
    _checked(names, missing_ok, first_row, x)
    found = _located(chunk_operators, first_row, x, model, params, x)
    return found, ((chunk_digest(x),) if digest else ())


def _stats_task(
    model: HMMModel,
    first_row: int,
    entering: np.ndarray,
    leaving: np.ndarray,
    starts: bool,
    ends: bool,
    params: Params,
    x: np.ndarray,
) -> Stats:
    return _located(chunk_stats, first_row, x, model, params, x, entering, leaving, starts, ends)


def _gather(*values: Any) -> list[Any]:
    return list(values)


def _graph(
    tasks: list[tuple[Any, ...]], blocks: list[tuple[int, list[Delayed]]], params: Params
) -> tuple[dict[Any, Any], list[str], str]:
    """A layer of one task per chunk, ``(function, *arguments)`` each followed by the
    parameters and the chunk; returns the layer, the tasks' keys and a token."""
    token = uuid.uuid4().hex
    params_key = f"_long_params-{token}"
    layer: dict[Any, Any] = {params_key: DataNode(params_key, params)}
    keys = []
    for index, ((function, *arguments), (_, values)) in enumerate(zip(tasks, blocks, strict=True)):
        key = f"_long_chunk-{token}-{index}"
        layer[key] = Task(key, function, *arguments, TaskRef(params_key), TaskRef(values[0].key))
        keys.append(key)
    return layer, keys, token


def _run(
    layer: dict[Any, Any], root: str, token: str, names: tuple[str, ...], blocks: list[Any]
) -> Any:
    name = f"_long-{token}"
    inputs = [value for _, values in blocks for value in values]
    return _compute(Delayed(root, _with_inputs(name, layer, inputs), layer=name), names, blocks)


def operators_pass(
    model: HMMModel,
    params: Params,
    names: tuple[str, ...],
    blocks: list[tuple[int, list[Delayed]]],
    *,
    missing_ok: frozenset[str] | None = None,
    digest: bool = False,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], Digests]:
    """First pass: the forward operators of every chunk's blocks (and content digests)."""
    tasks = [
        (_operator_task, model, names, missing_ok, digest, first_row) for first_row, _ in blocks
    ]
    layer, keys, token = _graph(tasks, blocks, params)
    root = f"_long_gather-{token}"
    layer[root] = Task(root, _gather, *(TaskRef(key) for key in keys))
    found = _run(layer, root, token, names, blocks)
    return [operator for operator, _ in found], tuple(d for _, d in found)


def stats_pass(
    model: HMMModel,
    params: Params,
    names: tuple[str, ...],
    blocks: list[tuple[int, list[Delayed]]],
    operators: list[tuple[np.ndarray, np.ndarray]],
    *,
    split_every: int,
    chunks: list[int] | None = None,
) -> Stats:
    """Second pass: every chunk's statistics from its messages, summed in a fixed tree
    (only those of ``chunks`` when given)."""
    predicted, backward, _ = sequence_messages(params, operators)
    last = len(blocks) - 1
    which = range(len(blocks)) if chunks is None else chunks
    tasks = [
        (_stats_task, model, blocks[c][0], predicted[c], backward[c], c == 0, c == last)
        for c in which
    ]
    layer, keys, token = _graph(tasks, [blocks[c] for c in which], params)
    tree, root = _tree_layer(keys, model.combine, split_every, token)
    layer.update(tree)
    return _run(layer, root, token, names, [blocks[c] for c in which])


def _one_pass_task(
    model: HMMModel,
    names: tuple[str, ...],
    missing_ok: frozenset[str] | None,
    first_row: int,
    params: Params,
    x: np.ndarray,
) -> ChunkPass:
    _checked(names, missing_ok, first_row, x)
    found: ChunkPass = _located(chunk_pass, first_row, x, model, params, x)
    return found


def _summary_task(
    digest: bool, found: ChunkPass, x: np.ndarray
) -> tuple[tuple[np.ndarray, np.ndarray], bool, tuple[int, ...]]:
    """What the scan and the client need of a chunk's pass: its operators, whether it
    needs the statistics pass, its content digest."""
    return found.operators, found.interior is None, ((chunk_digest(x),) if digest else ())


def _scan_task(params: Params, *summaries: Any) -> tuple[Any, ...]:
    return sequence_messages(params, [operators for operators, _, _ in summaries])


def _finish_task(
    model: HMMModel, chunk: int, n_chunks: int, messages: Any, params: Params, found: ChunkPass
) -> Stats:
    """A chunk's interior statistics plus its edges' (zero for a chunk that needs the
    statistics pass, or if the data are impossible: the client redoes those)."""
    predicted, backward, loglik = messages
    if found.interior is None or not np.isfinite(loglik.sum()):
        return empty_stats(model, found.like, params)
    edges = found.edges
    last_block = len(found.operators[0]) - 1
    ends = [chunk == n_chunks - 1 and e.block == last_block and e.leaving is None for e in edges]
    starts = [i for i, e in enumerate(edges) if chunk == 0 and e.start == 0]
    finished = edges_stats(
        model,
        params,
        edges,
        np.stack([predicted[chunk][e.block] if e.entering is None else e.entering for e in edges]),
        np.stack([backward[chunk][e.block] if e.leaving is None else e.leaving for e in edges]),
        np.array(ends),
        starts[0] if starts else None,
    )
    return model.combine(found.interior, finished)


def _root_task(stats: Stats, messages: Any, *summaries: Any) -> tuple[Any, ...]:
    return stats, float(messages[2].sum()), summaries


def one_pass(
    model: HMMModel,
    params: Params,
    names: tuple[str, ...],
    blocks: list[tuple[int, list[Delayed]]],
    *,
    split_every: int,
    missing_ok: frozenset[str] | None = None,
    content: Digests | bool = False,
) -> tuple[Stats, Digests]:
    """One EM evaluation in one pass over the data where the chunks' blocks coalesce
    (see :mod:`dem.models.hmm.one_pass`), one graph: each chunk's operators, interior
    statistics and edges; a task that scans all the operators; each chunk's edges
    finished beside its interior (so the edges stay where they were computed), summed
    in the fixed-shape tree. Then the statistics pass for the chunks that did not
    coalesce, if any. Returns the statistics and the chunks' content digests (empty
    unless ``content``)."""
    tasks = [(_one_pass_task, model, names, missing_ok, first_row) for first_row, _ in blocks]
    layer, keys, token = _graph(tasks, blocks, params)
    params_key = f"_long_params-{token}"
    summaries, finished = [], []
    for c, (key, (_, values)) in enumerate(zip(keys, blocks, strict=True)):
        summary = f"_long_summary-{token}-{c}"
        layer[summary] = Task(
            summary, _summary_task, content is not False, TaskRef(key), TaskRef(values[0].key)
        )
        summaries.append(summary)
    scan_key = f"_long_scan-{token}"
    layer[scan_key] = Task(
        scan_key, _scan_task, TaskRef(params_key), *(TaskRef(k) for k in summaries)
    )
    for c, key in enumerate(keys):
        finish = f"_long_finish-{token}-{c}"
        layer[finish] = Task(
            finish,
            _finish_task,
            model,
            c,
            len(blocks),
            TaskRef(scan_key),
            TaskRef(params_key),
            TaskRef(key),
        )
        finished.append(finish)
    tree, tree_root = _tree_layer(finished, model.combine, split_every, token)
    layer.update(tree)
    root = f"_long_root-{token}"
    layer[root] = Task(
        root, _root_task, TaskRef(tree_root), TaskRef(scan_key), *(TaskRef(k) for k in summaries)
    )
    stats, loglik, found = _run(layer, root, token, names, blocks)
    digests = tuple(d for _, _, d in found)
    if content is not False and content is not True:
        _check_content(digests, content)
    operators = [o for o, _, _ in found]
    redo = [c for c, (_, again, _) in enumerate(found) if again]
    if not np.isfinite(loglik):  # impossible data: the two-pass path, as before
        stats, redo = None, list(range(len(blocks)))
    if redo:
        again = stats_pass(
            model, params, names, blocks, operators, split_every=split_every, chunks=redo
        )
        stats = again if stats is None else model.combine(stats, again)
    assert stats is not None
    stats["loglik"] = np.float64(loglik)
    return stats, digests


def _check_content(found: Digests, expected: Digests) -> None:
    for index, (mine, theirs) in enumerate(zip(found, expected, strict=True)):
        if tuple(mine) != tuple(theirs):
            raise CheckpointMismatchError(
                f"Chunk {index} along time differs from the data the checkpoint was written "
                "for (its content changed). Resume with the same data, or start a new "
                "checkpoint."
            )


# --- the model the engine runs ------------------------------------------------------------


@dataclass(frozen=True)
class LongHMMModel:
    """An HMM fitted on one sequence that spans the chunks of a time × features array.

    Wraps a many-sequence model (:class:`~dem.models.hmm.model.GaussianHMMModel`,
    :class:`~dem.models.hmm.model.CategoricalHMMModel`): the same name, configuration,
    parameters, statistics and M-step, so its checkpoints read back into the same
    estimators; only the pass over the data differs (the ``own_pass`` hook of
    :mod:`dem.model`).
    """

    hmm: HMMModel

    inputs: ClassVar[tuple[str, ...]] = ("X",)
    missing_ok: ClassVar[frozenset[str]] = frozenset()

    @property
    def name(self) -> str:
        return self.hmm.name

    @property
    def remedy(self) -> str:
        return self.hmm.remedy

    @property
    def n_components(self) -> int:
        return self.hmm.n_components

    def config(self) -> dict[str, Any]:
        return self.hmm.config()

    def param_dims(self) -> dict[str, tuple[str, ...]]:
        return self.hmm.param_dims()

    def e_step(self, block: Block, params: Params) -> Stats:
        """Statistics of a block holding the whole sequence."""
        _refuse_weights(block)
        x = block["X"]
        predicted, backward, _ = sequence_messages(params, [chunk_operators(self.hmm, params, x)])
        return chunk_stats(self.hmm, params, x, predicted[0], backward[0], True, True)

    def combine(self, a: Stats, b: Stats) -> Stats:
        return self.hmm.combine(a, b)

    def m_step(self, stats: Stats, params: Params) -> Params:
        return self.hmm.m_step(stats, params)

    def pack(self, params: Params) -> np.ndarray:
        return self.hmm.pack(params)

    def unpack(self, vector: np.ndarray, like: Params) -> Params:
        return self.hmm.unpack(vector, like)

    def own_pass(
        self,
        params: Params,
        names: tuple[str, ...],
        blocks: list[tuple[int, list[Delayed]]],
        *,
        split_every: int,
        missing_ok: frozenset[str] | None,
        content: Digests | bool,
    ) -> tuple[Stats, Digests | None]:
        """One EM evaluation (see :func:`one_pass`)."""
        _refuse_weights(names)
        stats, digests = one_pass(
            self.hmm,
            params,
            names,
            blocks,
            split_every=split_every,
            missing_ok=missing_ok,
            content=content,
        )
        return stats, (digests if content is not False else None)


def _refuse_weights(names: Any) -> None:
    if "sample_weight" in names:
        raise ValueError(
            "sample_weight weighs whole sequences, and this HMM's input is one long "
            "sequence: a single weight changes nothing. Fit without weights, or pass many "
            "sequences (sequences × time × features) to weigh them."
        )


# --- lazy per-step results ------------------------------------------------------------------


def _lazy_chunks(array: da.Array) -> tuple[list[Delayed], list[Delayed], list[int]]:
    """The chunks of ``array`` twice, under different keys (so a lazy two-pass result
    re-reads each chunk rather than holding all of them between its passes)."""
    from dask.graph_manipulation import clone

    first = list(array.to_delayed(optimize_graph=True).reshape(-1))
    second = list(clone(array).to_delayed(optimize_graph=True).reshape(-1))
    return first, second, [int(n) for n in array.chunks[0]]


def lazy_path(model: HMMModel, params: Params, array: da.Array) -> da.Array:
    """The Viterbi path of the sequence ``array`` (time first), lazily, chunked as it."""
    first, second, sizes = _lazy_chunks(array)
    delayed = dask.delayed
    operators = [delayed(chunk_max_operator)(model, params, chunk) for chunk in first]
    bounds = delayed(sequence_bounds, nout=2)(params, operators)
    parts = [
        da.from_delayed(
            delayed(chunk_path)(model, params, chunk, bounds[0][c], bounds[1][c]),
            shape=(sizes[c],),
            dtype=np.int64,
        )
        for c, chunk in enumerate(second)
    ]
    return da.concatenate(parts)


def lazy_posteriors(model: HMMModel, params: Params, array: da.Array) -> da.Array:
    """The state posteriors of the sequence ``array``, lazily, shape (n_times, K)."""
    first, second, sizes = _lazy_chunks(array)
    delayed = dask.delayed
    operators = [delayed(chunk_operators)(model, params, chunk) for chunk in first]
    messages = delayed(sequence_messages, nout=3)(params, operators)
    last = len(sizes) - 1
    parts = [
        da.from_delayed(
            delayed(chunk_posteriors)(
                model, params, chunk, messages[0][c], messages[1][c], c == last
            ),
            shape=(sizes[c], model.n_components),
            dtype=np.float64,
        )
        for c, chunk in enumerate(second)
    ]
    return da.concatenate(parts)


def loglik(model: HMMModel, params: Params, array: da.Array) -> float:
    """Log-likelihood of the sequence ``array`` (one pass)."""
    from dem.graph import chunk_blocks

    names, blocks = ("X",), chunk_blocks({"X": array})
    operators, _ = operators_pass(model, params, names, blocks, missing_ok=frozenset())
    return float(sequence_messages(params, operators)[2].sum())


__all__ = [
    "SEGMENT",
    "LongHMMModel",
    "chunk_operator",
    "chunk_operators",
    "chunk_path",
    "chunk_posteriors",
    "chunk_stats",
    "lazy_path",
    "lazy_posteriors",
    "loglik",
]
