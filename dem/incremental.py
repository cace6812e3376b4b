"""Incremental EM (Neal & Hinton 1998): an M-step after every group of chunks.

The engine keeps the latest statistics of every group of ``incremental_chunks``
consecutive chunks (each is parameters-sized). A pass visits the groups in their fixed
order; visiting a group computes its statistics at the current parameters, replaces the
group's old statistics in the cache, sums the cache and runs the M-step on the sum, so
one pass moves the parameters as many times as there are groups. The first pass fills
the cache: every group at the initial parameters, one M-step, exactly batch EM's first
iteration. Neal & Hinton show that each such step never decreases the free energy
``F(q, θ)`` (whose maximum is the likelihood's), so the fit converges to a stationary
point of the likelihood, as batch EM does, usually in far fewer passes.

What is reported
----------------
For models that give ``expected_loglik`` (the expected complete-data log-likelihood of
statistics, linear in them) and ``free_energy = True`` (the Gaussian mixture, the
categorical HMM), the value of a pass (``lower_bounds``, the callback's ``loglik``) is
Neal & Hinton's free energy after the pass's last M-step, divided by the number of
samples: ``F = Σ_g H(q_g) + E_q[log p(X, Z | θ)]``, where ``q_g`` is group ``g``'s
posterior at the parameters it was last visited with and ``H(q_g)`` = its log-likelihood
minus its expected complete-data log-likelihood there (cached per group). Every visit
and every M-step never decreases ``F`` (to rounding: 1e-14 relative), so the trace never
decreases; ``F`` is at most the log-likelihood at the same parameters and reaches it at
convergence. The first pass's value lies between the initial log-likelihood and the
log-likelihood after one batch EM step. (With ``reg_covar`` > 0 the mixture's M-step is
not quite the maximiser of ``F``; no decrease beyond rounding was measured.)

For other models (the Student mixture, whose statistics hold the latent scales) the
value is the sum over the groups of each group's log-likelihood at the parameters it was
visited with: not the log-likelihood of one parameter set and NOT monotone (near
convergence it can fall by about 1e-6); it becomes that of the fitted parameters as the
fit converges. The fit has converged when one pass changes the value by less than
``tol`` (or by the model's own ``converged`` rule, applied to the parameters before and
after the pass). ``n_iter`` counts passes.

Same bits everywhere
--------------------
Each group's statistics are summed in the engine's fixed tree over its chunks, and the
cache is summed in a fixed tree over the groups (fan-in ``split_every``; only the path
from the replaced group to the root is summed again), never by subtracting old from new:
the parameters are the same bits whichever workers ran which task. A checkpoint holds the
cache with each pass (arrays ``incremental_cache_<statistic>``, one row per group, and
``incremental_entropy``), so a
resumed fit continues with the same bits as one never interrupted; rebuilding the cache
by one pass on resume would take every group's statistics at the resumed parameters
instead of at those each group was last visited with, and so follow another path. The
checkpoint therefore grows by the cache's size at every pass.

Models
------
Statistics of one group taken at older parameters are added to those of other groups, so
a model's statistics must mean the same thing whatever the parameters they were taken at
(as for online EM: the Gaussian mixture takes its sums about a shift fixed for the whole
fit; counts are counts). A model declares this with the class attribute
``comparable_stats = True`` (see :mod:`dem.model`). A model whose statistics are taken
about its current parameters (PPCA's and factor analysis's rows minus the mean, Tobit's
residuals about ``X β``, the Gaussian HMMs' shift) gives instead the hook
``anchor(params) -> Params``: entries (named ``anchor_*``) that, added to the
parameters, make its E-step take the statistics about them and its M-step read them as
the statistics' centre. The anchor is taken once per fit from the initial parameters
(so the first pass is still batch EM's first iteration, bit for bit), added to every
parameter set the fit visits, checkpointed with them (a resume keeps it: the same
bits), and left out of the fitted parameters. Batch EM never sees it, so its results
do not change. Models that run their own passes (``own_pass``: the long HMMs, whose
forward-backward runs across chunks, so a group's statistics depend on the messages
from the chunks before it at the parameters of that pass) are refused.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np

from dem.accelerate import has_converged
from dem.checkpoint import Checkpoint
from dem.data import raise_if_extreme
from dem.engine import (
    ConvergenceWarning,
    EMResult,
    IterationInfo,
    _finite,
    _Fused,
    _recorded_digests,
    _start,
    _warn_if_not_converged,
    prepare,
)
from dem.graph import (
    DEFAULT_SPLIT_EVERY,
    Blocks,
    Digests,
    PassPlan,
    _compute,
    chunk_blocks,
    chunks_per_task,
    map_reduce_graph,
    pass_plan,
)
from dem.model import EMModel, Params, Stats, remedy

__all__ = ["CACHE_PREFIX", "ConvergenceWarning", "check_incremental", "fit_runs"]

CACHE_PREFIX = "incremental_cache_"
"""Name prefix of the cached statistics among a checkpoint's arrays."""
ENTROPY = "incremental_entropy"
"""The checkpoint's array of each group's posterior entropy (the free energy's terms)."""


def check_incremental(model: Any) -> None:
    """Refuse, with the reason and what to use instead, a model incremental EM cannot fit."""
    name = type(model).__name__
    if hasattr(model, "own_pass"):
        raise ValueError(
            f"{name} runs its own passes over the data (sequences spanning chunks), so its "
            "statistics cannot be taken group by group; use method='batch' (or "
            "accelerate='squarem') for it."
        )
    if not (getattr(model, "comparable_stats", False) or hasattr(model, "anchor")):
        raise ValueError(
            f"{name}'s statistics are taken about its current parameters, so those of "
            "chunks visited at different parameters do not add up, and incremental EM "
            "would not be Neal & Hinton's. Use method='batch' (or accelerate='squarem'); "
            "incremental EM takes models that declare comparable_stats = True or give an "
            "anchor hook (see dem.incremental)."
        )


class _Totals:
    """The cached statistics of every group and their sums in a fixed tree.

    ``levels[0]`` holds the groups' statistics; node ``j`` of level ``l + 1`` sums nodes
    ``j * s`` to ``j * s + s - 1`` of level ``l`` (``s`` the fan-in), as the engine's
    tree groups its map tasks, so replacing one group re-sums only its path to the root.
    """

    def __init__(
        self, leaves: list[Stats], combine: Callable[[Stats, Stats], Stats], fan_in: int
    ) -> None:
        self.combine, self.fan_in = combine, fan_in
        self.levels: list[list[Stats]] = [list(leaves)]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append(
                [self._sum(below[i : i + fan_in]) for i in range(0, len(below), fan_in)]
            )

    def _sum(self, nodes: list[Stats]) -> Stats:
        return functools.reduce(self.combine, nodes)

    def replace(self, index: int, stats: Stats) -> None:
        self.levels[0][index] = stats
        for level in range(1, len(self.levels)):
            index //= self.fan_in
            below = self.levels[level - 1]
            start = index * self.fan_in
            self.levels[level][index] = self._sum(below[start : start + self.fan_in])

    @property
    def total(self) -> Stats:
        return self.levels[-1][0]

    @property
    def leaves(self) -> list[Stats]:
        return self.levels[0]


@dataclass
class _Run:
    index: int
    model: EMModel
    result: EMResult
    totals: _Totals | None = None
    # each group's H(q_g) = loglik - expected complete-data loglik at its visit
    # (models with free_energy; None for the others)
    entropies: list[float] | None = None
    started: float = field(default_factory=time.perf_counter)
    start_params: Params | None = None
    # the model's anchor (see the module docstring), in every parameter set of the fit
    anchor: Params = field(default_factory=dict)

    def done(self, max_iter: int) -> bool:
        return self.result.converged or self.result.n_iter >= max_iter


def _group_plan(group: Blocks, fit_grouping: int, split_every: int) -> PassPlan:
    """A group's plan: as many chunks per map task as the fit's, while that leaves several
    tasks (the sums are the same bits with any; see :func:`dem.graph.chunks_per_task`)."""
    per_task = fit_grouping
    while per_task > 1 and len(group) < 4 * per_task:
        per_task //= split_every
    return pass_plan(group, max(per_task, 1))


def fit_runs(
    models: Sequence[EMModel],
    arrays: Mapping[str, da.Array],
    inits: Sequence[Callable[[], Params]],
    *,
    tol: float = 1e-3,
    max_iter: int = 100,
    split_every: int = DEFAULT_SPLIT_EVERY,
    incremental_chunks: int = 1,
    checkpoint: Checkpoint | None = None,
    callback: Callable[[IterationInfo], Any] | None = None,
    persist: bool | None = None,
) -> list[EMResult]:
    """Fit several runs by incremental EM in lockstep (each group's read serves them all).

    Parameters are those of :func:`dem.engine.fit_runs`, but ``accelerate``, and:

    incremental_chunks : int
        Consecutive chunks per group: an M-step follows every group. Each group is one
        compute (its chunks in parallel), so a group of at least as many chunks as the
        cluster has threads keeps it busy; smaller groups take more M-steps per pass.

    Returns
    -------
    list of EMResult
        ``n_iter`` counts passes; ``lower_bounds`` holds each pass's log-likelihood as
        the module docstring defines it.
    """
    if incremental_chunks < 1:
        raise ValueError(f"incremental_chunks must be at least 1; got {incremental_chunks}.")
    for model in models:
        check_incremental(model)
    runs = []
    for index, (model, init) in enumerate(zip(models, inits, strict=True)):
        started = _start(index, model, init, checkpoint, arrays)
        params, cache, entropies = _split(started.result.params)
        run = _Run(index, model, started.result, entropies=entropies)
        if hasattr(model, "anchor"):
            # taken at the start, or restored with the parameters it was added to
            fresh = model.anchor(params)
            run.anchor = {key: params.get(key, value) for key, value in fresh.items()}
        started.result.params = {**params, **run.anchor}
        if cache is not None:
            run.totals = _Totals(cache, model.combine, split_every)
        runs.append(run)
    active = [run for run in runs if not run.done(max_iter)]
    if not active:
        return [_unanchored(run) for run in runs]
    arrays = prepare(arrays, persist)
    names, blocks = tuple(arrays), chunk_blocks(arrays)
    grouping = chunks_per_task(arrays, split_every)
    bounds = [
        (s, min(s + incremental_chunks, len(blocks)))
        for s in range(0, len(blocks), incremental_chunks)
    ]
    plans = [_group_plan(blocks[s:e], grouping, split_every) for s, e in bounds]
    for run in active:
        if run.totals is not None and len(run.totals.leaves) != len(plans):
            raise ValueError(
                f"The checkpoint's incremental cache has {len(run.totals.leaves)} groups, "
                f"but the data make {len(plans)}; resume with the same data and "
                "incremental_chunks."
            )
    # the first pass of this session checks the data (and their recorded digests)
    check: frozenset[str] | None = active[0].model.missing_ok
    content: Digests | bool = False
    if checkpoint is not None:
        content = _recorded_digests(checkpoint, names, len(blocks))
    found: list[tuple[int, ...]] = []

    def evaluate(members: list[_Run], wanted: Sequence[int]) -> list[list[Stats]]:
        """Statistics of the ``wanted`` groups at each member's parameters (one compute)."""
        fused = _Fused(tuple(run.model for run in members))
        params = [run.result.params for run in members]
        graphs = []
        for g in wanted:
            start, end = bounds[g]
            graphs.append(
                map_reduce_graph(
                    fused.e_step,
                    fused.combine,
                    names,
                    plans[g],
                    params,
                    split_every=split_every,
                    missing_ok=check,
                    content=content if isinstance(content, bool) else content[start:end],
                )
            )
        results = _compute(graphs, names, blocks)  # type: ignore[arg-type]  # a list computes too
        if content is not False:
            found.extend(d for _, digests in results for d in digests)
            results = [stats for stats, _ in results]
        return results

    while active:
        filling = [run for run in active if run.totals is None]
        if filling:  # the first pass: every group at the initial parameters
            try:
                by_group = evaluate(filling, range(len(plans)))
            except (ValueError, np.linalg.LinAlgError, FloatingPointError) as failure:
                raise_if_extreme(arrays, failure)
                raise
            for position, run in enumerate(filling):
                leaves = [stats[position] for stats in by_group]
                run.totals = _Totals(leaves, run.model.combine, split_every)
                if _has_free_energy(run.model):
                    run.entropies = [_entropy(run, leaf) for leaf in leaves]
                run.start_params = run.result.params
                _m_step(run, arrays)
        going = [run for run in active if run not in filling]
        for run in going:
            run.start_params = run.result.params
        for group in range(len(plans) if going else 0):
            try:
                (stats,) = evaluate(going, [group])
            except (ValueError, np.linalg.LinAlgError, FloatingPointError) as failure:
                raise_if_extreme(arrays, failure)
                raise
            for position, run in enumerate(going):
                assert run.totals is not None
                run.totals.replace(group, stats[position])
                if run.entropies is not None:
                    run.entropies[group] = _entropy(run, stats[position])
                _m_step(run, arrays)
        if content is True and checkpoint is not None and found:
            checkpoint.record_content(names, found)
        check, content = None, False
        for run in active:
            _record(run, tol, checkpoint, callback)
        active = [run for run in active if not run.done(max_iter)]
    for run in runs:
        _warn_if_not_converged(run.model, run.result, max_iter)
    return [_unanchored(run) for run in runs]


def _unanchored(run: _Run) -> EMResult:
    """The run's result, its parameters without the anchor."""
    run.result.params = {k: v for k, v in run.result.params.items() if k not in run.anchor}
    return run.result


def _m_step(run: _Run, arrays: Mapping[str, da.Array]) -> None:
    """The M-step on the run's cached total."""
    assert run.totals is not None
    try:
        updated = run.model.m_step(run.totals.total, run.result.params)
        run.result.params = _finite(run.model, {**updated, **run.anchor})
    except (ValueError, np.linalg.LinAlgError, FloatingPointError) as failure:
        raise_if_extreme(arrays, failure)
        raise


def _has_free_energy(model: EMModel) -> bool:
    return bool(getattr(model, "free_energy", False)) and hasattr(model, "expected_loglik")


def _entropy(run: _Run, stats: Stats) -> float:
    """H(q_g) of a group's posterior, from its statistics at the current parameters."""
    expected = run.model.expected_loglik(stats, run.result.params)  # type: ignore[attr-defined]
    return float(stats["loglik"]) - float(expected)


def _reported(run: _Run) -> float:
    """The pass's free energy or log-likelihood (see the module docstring), or the
    model's objective."""
    assert run.totals is not None
    total = run.totals.total
    if hasattr(run.model, "lower_bound"):
        value = float(run.model.lower_bound(total, run.result.params))
    elif run.entropies is not None:
        expected = run.model.expected_loglik(total, run.result.params)  # type: ignore[attr-defined]
        value = (math.fsum(run.entropies) + float(expected)) / float(total["n"])
    else:
        value = float(total["loglik"] / total["n"])
    if not math.isfinite(value):
        raise FloatingPointError(f"The log-likelihood became {value}. {remedy(run.model)}")
    return value


def _record(
    run: _Run,
    tol: float,
    checkpoint: Checkpoint | None,
    callback: Callable[[IterationInfo], Any] | None,
) -> None:
    result = run.result
    loglik = _reported(run)
    change = loglik - result.lower_bound
    assert run.start_params is not None
    result.converged = has_converged(run.model, change, tol, run.start_params, result.params)
    result.lower_bounds.append(loglik)
    result.n_iter += 1
    if checkpoint is not None:
        assert run.totals is not None
        cache, dims = _cache_arrays(run.totals.leaves)
        if run.entropies is not None:
            cache[ENTROPY] = np.array(run.entropies)
            dims[ENTROPY] = ("incremental_group",)
        for key, value in run.anchor.items():
            dims[key] = tuple(f"{key}_{i}" for i in range(np.ndim(value)))
        checkpoint.write(
            run.index,
            result.n_iter,
            {**result.params, **cache},
            loglik,
            result.converged,
            {**run.model.param_dims(), **dims},
        )
    if callback is not None:
        seconds = time.perf_counter() - run.started
        callback(
            IterationInfo(run.index, result.n_iter, loglik, change, seconds, checkpoint is not None)
        )
    run.started = time.perf_counter()


def _cache_arrays(leaves: list[Stats]) -> tuple[Params, dict[str, tuple[str, ...]]]:
    """The groups' statistics as arrays with one row per group, and their dimensions."""
    keys = leaves[0].keys()
    arrays: Params = {}
    dims: dict[str, tuple[str, ...]] = {}
    for key in keys:
        values = [np.asarray(leaf.get(key)) for leaf in leaves]
        shapes = {(v.shape, v.dtype.str) for v in values}
        if any(leaf.keys() != keys for leaf in leaves) or len(shapes) != 1:
            raise ValueError(
                "Incremental EM checkpoints the statistics of every group, which needs the "
                f"same statistics in every group; got keys {sorted(keys)} with shapes "
                f"{sorted(shapes)}. Fit without a checkpoint, or with method='batch'."
            )
        name = CACHE_PREFIX + key
        arrays[name] = np.stack(values)
        dims[name] = ("incremental_group", *(f"{name}_{i}" for i in range(values[0].ndim)))
    return arrays, dims


def _split(restored: Params) -> tuple[Params, list[Stats] | None, list[float] | None]:
    """Parameters, the cached groups' statistics and entropies, from a checkpoint."""
    entropy = restored.get(ENTROPY)
    entropies = None if entropy is None else [float(h) for h in np.asarray(entropy)]
    params = {k: v for k, v in restored.items() if not k.startswith(CACHE_PREFIX) and k != ENTROPY}
    stacked = {k[len(CACHE_PREFIX) :]: v for k, v in restored.items() if k.startswith(CACHE_PREFIX)}
    if not stacked:
        return params, None, None
    n_groups = len(next(iter(stacked.values())))
    leaves = [{key: value[g] for key, value in stacked.items()} for g in range(n_groups)]
    return params, leaves, entropies
