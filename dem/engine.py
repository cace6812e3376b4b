"""The EM loop: one map over chunks, one tree reduction, one M-step per iteration.

Each iteration builds a small graph (one E-step task per chunk, then a tree of
``combine`` tasks whose fan-in is ``split_every``) on top of the input arrays and
computes it once. The parameters enter that graph as a single key, so each worker
receives them once per iteration. The tree's shape depends only on the number of
chunks and ``split_every``, so the sums, and therefore the fitted parameters, are
bit-identical whichever workers ran which tasks.

Where the data live
-------------------
With ``persist=None`` (the default) the input is persisted in cluster memory when
it takes at most half the memory the cluster has (the sum of the workers' memory
limits under ``distributed``, else half the machine's available memory), and is
otherwise re-read from its source (Zarr) every iteration, out of core. Pass
``persist=True`` or ``False`` to decide yourself.
"""

from __future__ import annotations

import functools
import math
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from dask.task_spec import DataNode, Task, TaskRef

from dem.checkpoint import Checkpoint
from dem.model import Block, EMModel, Params, Stats

DEFAULT_SPLIT_EVERY = 8


class ConvergenceWarning(UserWarning):
    """EM stopped at ``max_iter`` before the log-likelihood settled within ``tol``."""


@dataclass(frozen=True)
class IterationInfo:
    """What the per-iteration callback receives.

    ``loglik`` is the mean per-sample log-likelihood at the parameters the
    iteration started from; ``change`` its difference from the previous iteration.
    """

    run: int
    iteration: int
    loglik: float
    change: float
    seconds: float
    checkpointed: bool


@dataclass
class EMResult:
    """Outcome of one EM run."""

    params: Params
    lower_bounds: list[float] = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False

    @property
    def lower_bound(self) -> float:
        return self.lower_bounds[-1] if self.lower_bounds else -math.inf


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


def memory_budget() -> int:
    """Bytes of input the engine may persist: half the cluster's (or machine's) memory."""
    client = current_client()
    if client is not None:
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        limits = [w.get("memory_limit") or 0 for w in workers]
        if limits and all(limits):
            return int(sum(limits) // 2)
    import psutil

    return int(psutil.virtual_memory().available // 2)


def prepare(arrays: Mapping[str, da.Array], persist: bool | None) -> dict[str, da.Array]:
    """Persist the inputs in cluster memory when asked to, or when they fit (``None``)."""
    chunks = {a.chunks[0] for a in arrays.values()}
    if len(chunks) != 1:
        sizes = {name: a.chunks[0][:3] for name, a in arrays.items()}
        raise ValueError(
            f"Inputs must share their sample chunks; got {sizes}... Rechunk them alike, "
            "for example y = y.rechunk({0: X.chunks[0]})."
        )
    if persist is None:
        persist = sum(a.nbytes for a in arrays.values()) <= memory_budget()
    if not persist:
        return dict(arrays)
    persisted = dask.persist(*arrays.values())
    return dict(zip(arrays, persisted, strict=True))


def chunk_blocks(arrays: Mapping[str, da.Array]) -> list[tuple[int, list[Delayed]]]:
    """(first row, one Delayed per input) for each sample chunk."""
    per_input = [a.to_delayed(optimize_graph=True).reshape(-1) for a in arrays.values()]
    offsets = np.concatenate([[0], np.cumsum(next(iter(arrays.values())).chunks[0])])
    return [
        (int(offsets[i]), [blocks[i] for blocks in per_input]) for i in range(len(per_input[0]))
    ]


def _check_block(names: Sequence[str], values: Sequence[np.ndarray], missing_ok: frozenset[str], first_row: int) -> None:
    for name, value in zip(names, values, strict=True):
        bad = np.isinf(value) if name in missing_ok else ~np.isfinite(value)
        if bad.any():
            rows = np.flatnonzero(bad.reshape(len(value), -1).any(axis=1))
            what = "infinity" if name in missing_ok else "NaN or infinity"
            raise ValueError(
                f"Input {name!r} contains {what} in {len(rows)} row(s) between rows "
                f"{first_row + rows[0]} and {first_row + rows[-1]} (chunk rows {first_row}"
                f"-{first_row + len(value) - 1}). Remove or impute those rows before fitting."
            )


def _map_task(
    function: Callable[[Block, Params], Stats],
    names: tuple[str, ...],
    missing_ok: frozenset[str] | None,
    first_row: int,
    params: Params,
    *values: np.ndarray,
) -> Stats:
    if missing_ok is not None:
        _check_block(names, values, missing_ok, first_row)
    return function(dict(zip(names, values, strict=True)), params)


def _combine_task(combine: Callable[[Stats, Stats], Stats], *children: Stats) -> Stats:
    return functools.reduce(combine, children)


def _tree_layer(
    keys: list[Any], combine: Callable[[Stats, Stats], Stats], split_every: int, token: str
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


def tree_reduce(nodes: list[Delayed], combine: Callable[[Stats, Stats], Stats], split_every: int) -> Delayed:
    """Fixed-shape tree: groups of ``split_every`` consecutive nodes, level by level."""
    token = uuid.uuid4().hex
    layer, root = _tree_layer([node.key for node in nodes], combine, split_every, token)
    if not layer:
        return nodes[0]
    name = f"_combine_task-{token}"
    return Delayed(root, _with_inputs(name, layer, nodes), layer=name)


def map_reduce_graph(
    function: Callable[[Block, Params], Stats],
    combine: Callable[[Stats, Stats], Stats],
    names: tuple[str, ...],
    blocks: list[tuple[int, list[Delayed]]],
    params: Params,
    *,
    split_every: int = DEFAULT_SPLIT_EVERY,
    missing_ok: frozenset[str] | None = None,
) -> Delayed:
    """The graph of one pass: ``function`` per chunk, summed in a tree.

    ``missing_ok`` not None makes every task check its block for invalid values
    first (NaN or infinity, NaN allowed in the inputs ``missing_ok`` names).

    The tasks are written directly as one graph layer (building a Delayed per task
    costs about a millisecond each, as much as running it); the parameters are one
    key that every E-step task references, so each worker receives them once.
    """
    token = uuid.uuid4().hex
    params_key = f"_params-{token}"
    layer: dict[Any, Any] = {params_key: DataNode(params_key, params)}
    mapped: list[str] = []
    for first_row, values in blocks:
        key = f"_map_task-{token}-{len(mapped)}"
        refs = (TaskRef(value.key) for value in values)
        layer[key] = Task(
            key, _map_task, function, names, missing_ok, first_row, TaskRef(params_key), *refs
        )
        mapped.append(key)
    tree, root = _tree_layer(mapped, combine, split_every, token)
    layer.update(tree)
    name = f"_map_reduce-{token}"
    inputs = [value for _, values in blocks for value in values]
    return Delayed(root, _with_inputs(name, layer, inputs), layer=name)


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
    graph = map_reduce_graph(
        function, combine, tuple(arrays), chunk_blocks(arrays), params,
        split_every=split_every, missing_ok=missing_ok,
    )
    (stats,) = dask.compute(graph)
    return stats


def fit(
    model: EMModel,
    arrays: Mapping[str, da.Array],
    init: Callable[[], Params],
    *,
    tol: float = 1e-3,
    max_iter: int = 100,
    split_every: int = DEFAULT_SPLIT_EVERY,
    checkpoint: Checkpoint | None = None,
    run: int = 0,
    callback: Callable[[IterationInfo], Any] | None = None,
    persist: bool | None = None,
) -> EMResult:
    """Fit ``model`` to ``arrays`` by EM.

    Parameters
    ----------
    model : EMModel
        The model's pure functions.
    arrays : mapping of str to dask.array.Array
        Aligned inputs (same sample chunks), keyed by the names in ``model.inputs``.
    init : callable
        Returns the initial parameters; called only when there is nothing to resume.
    tol : float
        Convergence threshold on the change of the mean per-sample log-likelihood.
    max_iter : int
        Maximum number of EM iterations (counting those restored from a checkpoint).
    split_every : int
        Fan-in of the tree reduction.
    checkpoint : Checkpoint, optional
        Where each iteration is written; resumed from when it holds iterations.
    run : int
        Which restart this is (a checkpoint keeps each run apart).
    callback : callable, optional
        Called after each iteration with an :class:`IterationInfo`.
    persist : bool, optional
        Keep the inputs in cluster memory; see the module docstring for the default.

    Returns
    -------
    EMResult
    """
    restored = checkpoint.restore(run) if checkpoint is not None else None
    if restored is None:
        result = EMResult(params=init())
        if checkpoint is not None:
            checkpoint.write(run, 0, result.params, math.nan, False, model.param_dims())
    else:
        result = EMResult(restored.params, restored.lower_bounds, restored.iteration, restored.converged)
    if result.converged or result.n_iter >= max_iter:
        _warn_if_not_converged(result, max_iter)
        return result

    arrays = prepare(arrays, persist)
    names = tuple(arrays)
    blocks = chunk_blocks(arrays)
    check: frozenset[str] | None = model.missing_ok
    for iteration in range(result.n_iter + 1, max_iter + 1):
        started = time.perf_counter()
        graph = map_reduce_graph(
            model.e_step, model.combine, names, blocks, result.params,
            split_every=split_every, missing_ok=check,
        )
        (stats,) = dask.compute(graph)
        check = None  # invalid values are looked for in the first pass only
        loglik = float(stats["loglik"] / stats["n"])
        if not np.isfinite(loglik):
            raise FloatingPointError(
                f"The log-likelihood became {loglik} at iteration {iteration}. Increase the "
                "regularisation (reg_covar) or scale the input data."
            )
        change = loglik - result.lower_bound
        result.params = model.m_step(stats, result.params)
        result.lower_bounds.append(loglik)
        result.n_iter = iteration
        result.converged = abs(change) < tol
        if checkpoint is not None:
            checkpoint.write(run, iteration, result.params, loglik, result.converged, model.param_dims())
        if callback is not None:
            callback(IterationInfo(run, iteration, loglik, change, time.perf_counter() - started, checkpoint is not None))
        if result.converged:
            break
    _warn_if_not_converged(result, max_iter)
    return result


def _warn_if_not_converged(result: EMResult, max_iter: int) -> None:
    if not result.converged:
        warnings.warn(
            f"EM did not converge in {max_iter} iterations (last change of the mean "
            "log-likelihood above tol). Increase max_iter or tol, or check the initialisation.",
            ConvergenceWarning,
            stacklevel=3,
        )
