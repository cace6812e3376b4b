"""The graph of one pass over the data: map tasks over the chunks, a fixed tree of combines.

Each pass builds a small graph (map tasks, each over ``split_every ** L`` consecutive
chunks, then a tree of ``combine`` tasks whose fan-in is ``split_every``) and computes
it once. A map task sums its chunks' statistics in the tree's own order (its first ``L``
levels, :class:`_Subtree`), and the tree's shape depends only on the number of chunks
and ``split_every``, so the sums, and therefore the fitted parameters, are
bit-identical whichever workers ran which tasks and whatever ``L`` is. The parameters
enter the graph as a single key, so each worker receives them once per pass.

What is the same every pass is planned once per fit (:class:`PassPlan`): a chunk read
from a store (a Zarr array, any ``from_array`` source) is read by its map task itself,
so the pass has no task or key per chunk, and the task reads its next chunks in a small
thread pool while it computes (:data:`PREFETCH`); chunks already in the workers' memory
(persisted) stay keys the map tasks depend on.

The first pass of a fit also checks each block for invalid values (:func:`check_block`)
and, with a checkpoint, digests each chunk's content (:class:`ContentCheck`). A pass that
fails to read a chunk names it (:func:`_raise_if_unreadable`). :mod:`dem.engine` runs
the EM loop on top of this module.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import pickle
import threading
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import cloudpickle
import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from dask.task_spec import DataNode, List, Task, TaskRef
from scipy import sparse
from threadpoolctl import threadpool_limits

from dem.checkpoint import CheckpointMismatchError, chunk_digest
from dem.heap import heap_reuse
from dem.model import Block, Params, Stats

DEFAULT_SPLIT_EVERY = 8


def current_client() -> Any | None:
    """The active ``distributed.Client``, or None (then dask's local scheduler runs)."""
    try:
        from distributed import default_client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    try:
        return default_client()
    except ValueError:
        return None


def chunk_blocks(arrays: Mapping[str, da.Array]) -> list[tuple[int, list[Delayed]]]:
    """(first row, one Delayed per input) for each sample chunk."""
    per_input = [a.to_delayed(optimize_graph=True).reshape(-1) for a in arrays.values()]
    offsets = np.concatenate([[0], np.cumsum(next(iter(arrays.values())).chunks[0])])
    return [
        (int(offsets[i]), [blocks[i] for blocks in per_input]) for i in range(len(per_input[0]))
    ]


LARGEST = 1e150
"""Largest magnitude of an input value: EM sums squares of the data, and squares of
values beyond it, summed over many rows, overflow float64 (about 1.8e308)."""


def check_block(
    names: Sequence[str],
    values: Sequence[np.ndarray],
    missing_ok: frozenset[str],
    first_row: int,
    before: str = "fitting",
) -> None:
    """Refuse a block of ``values`` holding NaN (unless its name is in ``missing_ok``),
    infinity or magnitudes above :data:`LARGEST`, naming the rows (numbered from
    ``first_row``); ``before`` is what the user must clean the rows before."""
    for name, value in zip(names, values, strict=True):
        if sparse.issparse(value):  # a sparse chunk: its stored values, by row
            _check_sparse(name, value, missing_ok, first_row, before)
            continue
        # False for NaN and infinity too; the squares of any float32 fit in float64
        within = np.isfinite(value) if value.dtype.itemsize < 8 else np.abs(value) <= LARGEST
        if within.all():
            continue
        where = f"(chunk rows {first_row}-{first_row + len(value) - 1})"
        invalid = np.isinf(value) if name in missing_ok else ~np.isfinite(value)
        if invalid.any():
            rows = np.flatnonzero(invalid.reshape(len(value), -1).any(axis=1))
            what = "infinity" if name in missing_ok else "NaN or infinity"
            raise ValueError(
                f"Input {name!r} contains {what} in {len(rows)} row(s) between rows "
                f"{first_row + rows[0]} and {first_row + rows[-1]} {where}. Remove or impute "
                f"those rows before {before}."
            )
        huge = np.isfinite(value) & ~within
        if huge.any():
            rows = np.flatnonzero(huge.reshape(len(value), -1).any(axis=1))
            largest = float(np.max(np.abs(value[huge])))
            raise ValueError(
                f"Input {name!r} holds values as large as {largest:.1e} in {len(rows)} row(s) "
                f"between rows {first_row + rows[0]} and {first_row + rows[-1]} {where}. EM "
                f"sums squares of the data, which overflow float64 beyond {LARGEST:.0e}: divide "
                "the data by a constant before fitting (and scale any absolute regularisation "
                "by its square)."
            )


def _check_sparse(
    name: str, value: Any, missing_ok: frozenset[str], first_row: int, before: str
) -> None:
    """:func:`check_block` for a scipy.sparse chunk: its stored values are checked, and
    a bad one is named by its row (the chunk is never densified)."""
    matrix = sparse.csr_matrix(value)
    data = matrix.data
    within = np.isfinite(data) if data.dtype.itemsize < 8 else np.abs(data) <= LARGEST
    if name in missing_ok:
        within |= np.isnan(data)
    if within.all():
        return
    bad = data[~within]
    unique = np.unique(np.searchsorted(matrix.indptr, np.flatnonzero(~within), "right") - 1)
    rows = f"between rows {first_row + unique[0]} and {first_row + unique[-1]}"
    where = f"(chunk rows {first_row}-{first_row + matrix.shape[0] - 1})"
    if not np.isfinite(bad).all():
        what = "infinity" if name in missing_ok else "NaN or infinity"
        raise ValueError(
            f"Input {name!r} contains {what} in {len(unique)} row(s) {rows} {where}. Remove "
            f"or impute those rows before {before}."
        )
    raise ValueError(
        f"Input {name!r} holds values as large as {float(np.max(np.abs(bad))):.1e} in "
        f"{len(unique)} row(s) {rows} {where}. EM sums squares of the data, which overflow "
        f"float64 beyond {LARGEST:.0e}: divide the data by a constant before fitting (and "
        "scale any absolute regularisation by its square)."
    )


TASK_BYTES = 32 * 2**20
"""Chunks are grouped so that one map task reads at most this many bytes (all inputs)..."""

GROUPED_TASKS = 16
"""...while at least this many map tasks remain to spread over the workers."""

PREFETCH = 4
"""Chunk reads a map task keeps in flight ahead of the chunk it computes (0: none)."""

PREFETCH_THREADS = 4
"""Threads per process that read chunks ahead for the map tasks (see :data:`PREFETCH`)."""


def chunks_per_task(arrays: Mapping[str, da.Array], split_every: int) -> int:
    """How many consecutive chunks one map task takes: a power of ``split_every``.

    A task costs the scheduler and the worker a few milliseconds whatever its size, as
    much as the E-step of a small chunk. A map task over ``split_every ** L`` chunks does
    the first ``L`` levels of the tree reduction itself, in the same order, so the
    statistics are the same bits whatever ``L`` is. ``L`` is the largest for which a task
    reads at most :data:`TASK_BYTES` and at least :data:`GROUPED_TASKS` map tasks remain.
    The choice depends on the data alone (not on the cluster), so a resumed fit makes
    the same one.
    """
    n_chunks = len(next(iter(arrays.values())).chunks[0])
    chunk_bytes = sum(a.nbytes for a in arrays.values()) / max(n_chunks, 1)
    per_task = 1
    while (
        per_task * split_every * chunk_bytes <= TASK_BYTES
        and n_chunks >= GROUPED_TASKS * per_task * split_every
    ):
        per_task *= split_every
    return per_task


def _is_power(per_task: int, split_every: int) -> bool:
    while per_task > 1 and per_task % split_every == 0:
        per_task //= split_every
    return per_task == 1


Digests = tuple[tuple[int, ...], ...]
"""Content digests of consecutive sample chunks: per chunk, one per input (in order)."""


@dataclass(frozen=True)
class ContentCheck:
    """What a map task does with the content of its chunks in the first pass of a fit:
    digest each (see :func:`dem.checkpoint.chunk_digest`) and compare with the digests
    recorded for them, when there are any (``expected``, one entry per chunk)."""

    first_chunk: int
    expected: Digests | None = None


def _check_digests(
    content: ContentCheck,
    names: tuple[str, ...],
    first_rows: Sequence[int],
    chunks: Sequence[tuple[np.ndarray, ...]],
    digests: Digests,
) -> None:
    """Refuse chunks whose content differs from the digests recorded in the checkpoint."""
    assert content.expected is not None
    for i, (found, expected) in enumerate(zip(digests, content.expected, strict=True)):
        for name, mine, theirs in zip(names, found, expected, strict=True):
            if mine != theirs:
                rows = f"{first_rows[i]}-{first_rows[i] + len(chunks[i][0]) - 1}"
                raise CheckpointMismatchError(
                    f"Input {name!r}: chunk {content.first_chunk + i} along the samples (rows "
                    f"{rows}) differs from the data the checkpoint was written for (its "
                    "content changed). Resume with the same data, or start a new checkpoint."
                )


def _combine_digested(
    combine: Callable[[Stats, Stats], Stats],
    a: tuple[Stats, Digests],
    b: tuple[Stats, Digests],
) -> tuple[Stats, Digests]:
    """``combine`` the statistics; the digests of consecutive chunks follow in order."""
    return combine(a[0], b[0]), a[1] + b[1]


@dataclass(frozen=True)
class _Read:
    """One chunk of one input, read by the map task itself: the chunk's own task (from
    the input's graph), which depends only on data nodes (the store object of a Zarr
    array, ...), run inside the map task instead of as a key of its own. Opaque to
    dask: the map task depends on the data nodes, passed to it as ``stores``."""

    task: Task

    def __call__(self, stores: Mapping[Any, Any]) -> np.ndarray:
        return self.task({key: stores[key] for key in self.task.dependencies})


class _Subtree:
    """The fixed-shape tree over consecutive leaves, summed as the leaves arrive.

    Leaves are grouped ``split_every`` at a time, level by level, exactly as
    :func:`_tree_layer` groups the map tasks, so a task over ``split_every ** L``
    chunks (aligned on a multiple of that) returns the bits of the tree's node above
    them; at most ``split_every - 1`` partial sums wait at each level.
    """

    def __init__(self, combine: Callable[[Any, Any], Any], split_every: int) -> None:
        self.combine, self.split_every = combine, split_every
        self.levels: list[list[Any]] = []

    def add(self, leaf: Any, level: int = 0) -> None:
        while len(self.levels) <= level:
            self.levels.append([])
        self.levels[level].append(leaf)
        if len(self.levels[level]) == self.split_every:
            group, self.levels[level] = self.levels[level], []
            self.add(functools.reduce(self.combine, group), level + 1)

    def result(self) -> Any:
        level = 0
        while True:
            waiting = self.levels[level]
            if len(waiting) == 1 and not any(self.levels[level + 1 :]):
                return waiting[0]
            if waiting:
                self.levels[level] = []
                self.add(functools.reduce(self.combine, waiting), level + 1)
            level += 1


_READERS: ThreadPoolExecutor | None = None
_READERS_LOCK = threading.Lock()


def _readers() -> ThreadPoolExecutor:
    """This process's pool of threads that read chunks ahead (made on first use)."""
    global _READERS
    with _READERS_LOCK:
        if _READERS is None:
            _READERS = ThreadPoolExecutor(PREFETCH_THREADS, thread_name_prefix="dem-read")
        return _READERS


def _read_chunk(chunk: Sequence[Any], stores: Mapping[Any, Any]) -> tuple[np.ndarray, ...]:
    return tuple(value(stores) if isinstance(value, _Read) else value for value in chunk)


def _chunks_in_order(
    chunks: Sequence[Sequence[Any]], stores: Mapping[Any, Any], prefetch: int
) -> Iterator[tuple[np.ndarray, ...]]:
    """The values of each chunk in order; with ``prefetch``, the reads of the next
    ``prefetch`` chunks run in threads while the caller computes on the current one."""
    if prefetch < 1 or not any(isinstance(v, _Read) for chunk in chunks for v in chunk):
        for chunk in chunks:
            yield _read_chunk(chunk, stores)
        return
    pool, upcoming = _readers(), iter(chunks)
    pending: collections.deque[Future[tuple[np.ndarray, ...]]] = collections.deque(
        pool.submit(_read_chunk, chunk, stores) for chunk in itertools.islice(upcoming, prefetch)
    )
    try:
        while pending:
            current = pending.popleft()
            following = next(upcoming, None)
            if following is not None:
                pending.append(pool.submit(_read_chunk, following, stores))
            yield current.result()
    finally:  # a failed chunk (or task) leaves no read running for nothing
        for future in pending:
            future.cancel()


def _map_task(
    content: ContentCheck | None,
    function: Callable[[Block, Params], Stats],
    combine: Callable[[Stats, Stats], Stats],
    names: tuple[str, ...],
    missing_ok: frozenset[str] | None,
    first_rows: tuple[int, ...],
    split_every: int,
    prefetch: int,
    params: Params,
    packed: bytes | None,
    store_keys: tuple[Any, ...],
    store_values: list[Any],
    *values: Any,
) -> Stats | tuple[Stats, Digests]:
    """``function`` on each of the chunks (``len(names)`` values each), summed in the
    tree's order (:class:`_Subtree`).

    A value is an array, or None for the next :class:`_Read` of ``packed``, which reads
    it from the stores (the data nodes the reads depend on: keys and values), ahead of
    the computation (``prefetch`` chunks). With ``content``, the chunks are digested
    (and, when the checkpoint recorded digests, all checked before any is computed) and
    the result is ``(statistics, digests)``.

    The task runs inside :func:`dem.heap.heap_reuse`: on a dask worker (whose
    environment fixes glibc's malloc thresholds) the kernels' temporaries reuse the
    heap instead of each being a fresh mapping, and the thresholds are put back after.
    """
    width = len(names)
    values = _unpack(packed, values)
    chunks = [values[i * width : (i + 1) * width] for i in range(len(first_rows))]
    stores = dict(zip(store_keys, store_values, strict=True))
    with heap_reuse():
        read: Iterable[tuple[np.ndarray, ...]] = _chunks_in_order(chunks, stores, prefetch)
        digests: list[tuple[int, ...]] = []
        if content is not None and content.expected is not None:
            read = list(read)  # a task reads at most TASK_BYTES (or one chunk)
            digests = [tuple(chunk_digest(value) for value in chunk) for chunk in read]
            _check_digests(content, names, first_rows, read, tuple(digests))
        tree = _Subtree(combine, split_every)
        for first_row, chunk in zip(first_rows, read, strict=True):
            if content is not None and content.expected is None:
                digests.append(tuple(chunk_digest(value) for value in chunk))
            tree.add(_block_task(function, names, missing_ok, first_row, params, chunk))
        stats = tree.result()
    return stats if content is None else (stats, tuple(digests))


def _block_task(
    function: Callable[[Block, Params], Stats],
    names: tuple[str, ...],
    missing_ok: frozenset[str] | None,
    first_row: int,
    params: Params,
    values: Sequence[np.ndarray],
) -> Stats:
    if missing_ok is not None:
        check_block(names, values, missing_ok, first_row)
    try:
        return function(dict(zip(names, values, strict=True)), params)
    except ValueError as invalid:
        if type(invalid) is not ValueError:  # subclasses (LinAlgError, ...) keep their type
            raise
        rows = f"{first_row}-{first_row + values[0].shape[0] - 1}"  # the model found bad values
        raise ValueError(f"{invalid} (In the chunk of samples {rows}.)") from invalid


def _combine_task(combine: Callable[[Stats, Stats], Stats], *children: Stats) -> Stats:
    return functools.reduce(combine, children)


def _tree_layer(
    keys: list[Any], combine: Callable[[Any, Any], Any], split_every: int, token: str
) -> tuple[dict[Any, Task], Any]:
    """Combine tasks over ``keys`` in groups of ``split_every``, level by level, and the root."""
    if split_every < 2:
        raise ValueError(f"split_every must be at least 2, got {split_every}.")
    layer: dict[Any, Task] = {}
    level = 0
    while len(keys) > 1:
        parents = []
        for group, start in enumerate(range(0, len(keys), split_every)):
            key = f"_combine_task-{token}-{level}-{group}"
            children = (TaskRef(k) for k in keys[start : start + split_every])
            layer[key] = Task(key, _combine_task, combine, *children)
            parents.append(key)
        keys, level = parents, level + 1
    return layer, keys[0]


def tree_reduce(
    nodes: list[Delayed], combine: Callable[[Any, Any], Any], split_every: int
) -> Delayed:
    """Fixed-shape tree: groups of ``split_every`` consecutive nodes, level by level."""
    token = uuid.uuid4().hex
    layer, root = _tree_layer([node.key for node in nodes], combine, split_every, token)
    if not layer:
        return nodes[0]
    name = f"_combine_task-{token}"
    return Delayed(root, _with_inputs(name, layer, nodes), layer=name)


Blocks = list[tuple[int, list[Delayed]]]
"""(first row, one Delayed per input) for each sample chunk: :func:`chunk_blocks`."""


@dataclass(frozen=True)
class _Group:
    """What one map task reads: its chunks' first rows; per chunk and input a ``TaskRef``
    to the chunk's key, or None for a chunk the task reads itself; those reads
    (:class:`_Read`, in order) packed into one compressed pickle, or None; the data nodes
    the reads need.

    The scheduler keeps recent messages to its workers (up to
    ``distributed.admin.low-level-log-length`` batches each, those under 1 MB): one
    small bytes object per task keeps that log a tenth of the size the reads' task
    objects would make it.
    """

    start: int
    first_rows: tuple[int, ...]
    values: tuple[Any, ...]
    packed: bytes | None
    stores: tuple[Any, ...]


def _pack(reads: list[_Read]) -> bytes | None:
    return zlib.compress(cloudpickle.dumps(tuple(reads)), 1) if reads else None


def _unpack(packed: bytes | None, values: tuple[Any, ...]) -> tuple[Any, ...]:
    """``values`` with each None replaced by the next read of ``packed``."""
    if packed is None:
        return values
    reads = iter(pickle.loads(zlib.decompress(packed)))  # written by _pack: the graph's own
    return tuple(next(reads) if value is None else value for value in values)


@dataclass(frozen=True)
class PassPlan:
    """The part of a pass's graph that is the same every iteration, built once per fit.

    A chunk whose task (in its input's optimised graph) depends on data nodes only (the
    store object of a Zarr array, a ``from_array`` source, or nothing) is read inside the
    map task (:class:`_Read`): the pass then has no key per chunk, and the map tasks
    read their chunks ahead of their computation. Any other chunk (persisted in the
    workers' memory, or computed by other tasks) stays a key the map task depends on.

    Attributes
    ----------
    blocks : list
        The chunks, as :func:`chunk_blocks` gives them.
    chunks_per_task : int
        Consecutive chunks per map task (a power of the tree's fan-in).
    groups : tuple of _Group
        One per map task.
    stores : dict
        The data nodes the reads depend on, by key.
    inputs : list of Delayed
        The chunks that stay keys, whose graphs the pass includes.
    """

    blocks: Blocks
    chunks_per_task: int
    groups: tuple[_Group, ...]
    stores: dict[Any, DataNode]
    inputs: list[Delayed]


def pass_plan(blocks: Blocks, chunks_per_task: int = 1) -> PassPlan:
    """The :class:`PassPlan` of ``blocks`` read ``chunks_per_task`` chunks to a task."""
    stores: dict[Any, DataNode] = {}
    inputs: list[Delayed] = []

    def entry(value: Delayed) -> tuple[Any, tuple[Any, ...]]:
        graph = value.__dask_graph__()
        node = _node(graph, value.key)
        needs = tuple(getattr(node, "dependencies", ()))
        nodes = [_node(graph, key) for key in needs]
        if isinstance(node, Task) and all(isinstance(n, DataNode) for n in nodes):
            stores.update(zip(needs, nodes, strict=True))
            return _Read(node), needs
        inputs.append(value)
        return TaskRef(value.key), ()

    groups = []
    for start in range(0, len(blocks), chunks_per_task):
        group = blocks[start : start + chunks_per_task]
        entries = [entry(value) for _, values in group for value in values]
        groups.append(
            _Group(
                start,
                tuple(first_row for first_row, _ in group),
                tuple(None if isinstance(read, _Read) else read for read, _ in entries),
                _pack([read for read, _ in entries if isinstance(read, _Read)]),
                tuple(dict.fromkeys(key for _, needs in entries for key in needs)),
            )
        )
    return PassPlan(blocks, chunks_per_task, tuple(groups), stores, inputs)


def _node(graph: Mapping[Any, Any], key: Any) -> Any:
    """The task of ``key`` in ``graph`` (None if absent), without materialising the whole
    graph (a chunk's ``Delayed`` carries its array's whole optimised graph)."""
    if isinstance(graph, HighLevelGraph):
        for layer in graph.layers.values():
            if key in layer:
                return layer[key]
        return None
    return graph.get(key)


def map_reduce_graph(
    function: Callable[[Block, Any], Any],
    combine: Callable[[Any, Any], Any],
    names: tuple[str, ...],
    blocks: Blocks | PassPlan,
    params: Any,
    *,
    split_every: int = DEFAULT_SPLIT_EVERY,
    missing_ok: frozenset[str] | None = None,
    chunks_per_task: int = 1,
    content: Digests | bool = False,
    prefetch: int | None = None,
) -> Delayed:
    """The graph of one pass: ``function`` per chunk, summed in a tree.

    ``missing_ok`` not None makes every task check its block for invalid values
    first (NaN or infinity, NaN allowed in the inputs ``missing_ok`` names).
    ``chunks_per_task`` consecutive chunks share a map task (see :func:`chunks_per_task`;
    a power of ``split_every``, so the sums are the same bits); ``blocks`` may be a
    :class:`PassPlan` built once for every pass of a fit (its ``chunks_per_task`` then
    counts). ``content`` True (or the digests recorded before, one entry per chunk) makes
    the pass also digest every chunk (checking it against the recorded digest): its
    result is then ``(statistics, digests)``, the digests in chunk order. ``prefetch``:
    chunk reads a map task keeps in flight while it computes (see :class:`PassPlan`;
    default :data:`PREFETCH`); the results are the same bits with any.

    The tasks are written directly as one graph layer (building a Delayed per task
    costs about a millisecond each, as much as running it); the parameters are one
    key that every E-step task references, so each worker receives them once.
    """
    plan = blocks if isinstance(blocks, PassPlan) else pass_plan(blocks, chunks_per_task)
    if not _is_power(plan.chunks_per_task, split_every):
        raise ValueError(
            f"chunks_per_task must be a power of split_every ({split_every}), got "
            f"{plan.chunks_per_task}: only then is a task's sum a node of the tree."
        )
    prefetch = PREFETCH if prefetch is None else prefetch
    token = uuid.uuid4().hex
    params_key = f"_params-{token}"
    layer: dict[Any, Any] = {params_key: DataNode(params_key, params), **plan.stores}
    mapped: list[str] = []
    for group in plan.groups:
        key = f"_map_task-{token}-{len(mapped)}"
        check = None
        if content is not False:
            end = group.start + len(group.first_rows)
            expected = None if content is True else content[group.start : end]
            check = ContentCheck(group.start, expected)
        stores = List(*(TaskRef(store) for store in group.stores))
        layer[key] = Task(
            key, _map_task, check, function, combine, names, missing_ok, group.first_rows,
            split_every, prefetch, TaskRef(params_key), group.packed, group.stores, stores,
            *group.values,
        )  # fmt: skip
        mapped.append(key)
    if content is not False:
        combine = functools.partial(_combine_digested, combine)
    tree, root = _tree_layer(mapped, combine, split_every, token)
    layer.update(tree)
    name = f"_map_reduce-{token}"
    return Delayed(root, _with_inputs(name, layer, plan.inputs), layer=name)


def _with_inputs(name: str, layer: dict[Any, Any], inputs: list[Delayed]) -> HighLevelGraph:
    """``layer`` on top of the graphs of ``inputs``.

    ``HighLevelGraph.from_collections`` does the same but inspects every input as a
    collection, which costs about as much per input as running a small task.
    """
    layers: dict[str, Any] = {name: layer}
    dependencies: dict[str, set[str]] = {name: set()}
    for value in inputs:
        graph, own = value.__dask_graph__(), value.__dask_layers__()
        if isinstance(graph, HighLevelGraph):
            layers.update(graph.layers)
            dependencies.update(graph.dependencies)
        else:
            layers[own[0]], dependencies[own[0]] = graph, set()
        dependencies[name].update(own)
    return HighLevelGraph(layers, dependencies)


def map_reduce(
    function: Callable[[Block, Params], Stats],
    combine: Callable[[Stats, Stats], Stats],
    arrays: Mapping[str, da.Array],
    params: Params,
    *,
    split_every: int = DEFAULT_SPLIT_EVERY,
    missing_ok: frozenset[str] | None = None,
) -> Stats:
    """Run one pass over ``arrays`` and return the reduced statistics (one compute)."""
    names, blocks = tuple(arrays), chunk_blocks(arrays)
    graph = map_reduce_graph(
        function,
        combine,
        names,
        blocks,
        params,
        split_every=split_every,
        missing_ok=missing_ok,
        chunks_per_task=chunks_per_task(arrays, split_every),
    )
    return _compute(graph, names, blocks)


def _one_blas_thread_per_task() -> contextlib.AbstractContextManager[Any]:
    """Limit the BLAS to one thread while dask's local threads run the tasks.

    Each of dask's threads would otherwise start the BLAS's own threads and
    oversubscribe the cores (on a busy 2-core machine a 20,000-row full-covariance fit
    ran 9× slower; on an idle one it makes no difference). Worker
    processes of a distributed cluster already get one BLAS thread from the nanny.
    """
    if current_client() is not None:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _compute(
    graph: Delayed, names: tuple[str, ...], blocks: list[tuple[int, list[Delayed]]]
) -> Any:
    """Compute one pass; a chunk that cannot be read is named (see _raise_if_unreadable)."""
    try:
        with _one_blas_thread_per_task():
            (result,) = dask.compute(graph)
    except ValueError:
        raise
    except Exception as failure:
        if not _is_cluster_failure(failure):
            _raise_if_unreadable(names, blocks, failure)
        raise
    return result


def _is_cluster_failure(failure: BaseException) -> bool:
    """A lost scheduler or worker connection (not the data's fault)."""
    import asyncio

    from distributed.comm.core import CommClosedError

    cancelled = "Cancelled" in type(failure).__name__
    return cancelled or isinstance(
        failure, OSError | TimeoutError | asyncio.CancelledError | CommClosedError
    )


def _raise_if_unreadable(
    names: tuple[str, ...], blocks: list[tuple[int, list[Delayed]]], failure: BaseException
) -> None:
    """After a pass failed: read the chunks one by one and name the first unreadable one.

    A damaged chunk of a Zarr store fails in its codec (for example a decompression
    error) with no word of where; this says which chunk and rows. Readable data leave
    ``failure`` to be raised as it is.
    """
    for index, (first_row, values) in enumerate(blocks):
        for name, value in zip(names, values, strict=True):
            try:
                dask.compute(value)
            except Exception as unreadable:
                if _is_cluster_failure(unreadable):
                    raise failure from None
                end = blocks[index + 1][0] if index + 1 < len(blocks) else None
                rows = f"rows {first_row}-{end - 1}" if end is not None else f"rows {first_row}-"
                raise ValueError(
                    f"Input {name!r}: chunk {index} along the samples ({rows}) cannot be read "
                    f"({type(unreadable).__name__}: {unreadable}). The store may be damaged: "
                    "rewrite or restore that chunk, or drop those rows."
                ) from failure
