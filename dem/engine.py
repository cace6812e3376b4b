"""The EM loop: one pass over the data, one M-step per iteration, for every run at once.

A pass is one graph (:mod:`dem.graph`): E-step tasks over consecutive chunks and a fixed
tree of ``combine`` tasks, so the fitted parameters are bit-identical whichever workers
ran which tasks; what is the same every pass (which chunks each task reads, and how) is
planned once per fit. The runs of a fit (restarts, or models with other settings) share every
pass; each run's step (plain EM, or an accelerated cycle) decides what to evaluate
next, and each completed step is checkpointed.

Where the data live
-------------------
With ``persist=None`` (the default) the input is persisted in cluster memory when
it takes at most half the memory the cluster has (the sum of the workers' memory
limits under ``distributed``, else half the machine's available memory), and is
otherwise re-read from its source (Zarr) every iteration, out of core. Pass
``persist=True`` or ``False`` to decide yourself.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np
import sklearn.exceptions
from dask.delayed import Delayed

from dem.accelerate import (
    DEFAULT_ALPHA,
    Evaluation,
    Step,
    StepGenerator,
    check_accelerate,
    step_factory,
)
from dem.checkpoint import Checkpoint, CheckpointMismatchError
from dem.data import raise_if_extreme
from dem.graph import (
    DEFAULT_SPLIT_EVERY,
    Digests,
    PassPlan,
    _compute,
    _is_cluster_failure,
    _raise_if_unreadable,
    chunk_blocks,
    chunks_per_task,
    current_client,
    map_reduce,
    map_reduce_graph,
    pass_plan,
    tree_reduce,
)
from dem.model import Block, EMModel, Params, Stats, remedy

__all__ = [  # the graph functions are re-exported: models and tools import them from here
    "DEFAULT_SPLIT_EVERY",
    "ConvergenceWarning",
    "EMResult",
    "IterationInfo",
    "chunk_blocks",
    "chunks_per_task",
    "current_client",
    "em_pass",
    "fit",
    "fit_runs",
    "map_reduce",
    "map_reduce_graph",
    "memory_budget",
    "pass_plan",
    "prepare",
    "tree_reduce",
]


class ConvergenceWarning(sklearn.exceptions.ConvergenceWarning):
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
        """The last of ``lower_bounds`` (``-inf`` before the first iteration)."""
        return self.lower_bounds[-1] if self.lower_bounds else -math.inf


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
    try:
        persisted = dask.persist(*arrays.values())
    except Exception as failure:  # the local scheduler reads the data now
        if not _is_cluster_failure(failure):
            _raise_if_unreadable(tuple(arrays), chunk_blocks(arrays), failure)
        raise
    return dict(zip(arrays, persisted, strict=True))


@dataclass(frozen=True)
class _Fused:
    """Several (model, params) pairs evaluated on the same block, one read for all."""

    models: tuple[EMModel, ...]

    def e_step(self, block: Block, params: list[Params]) -> list[Stats]:
        """Each run's statistics; runs of equal models go to ``e_step_many`` together."""
        stats: dict[int, Stats] = {}
        for index, model in enumerate(self.models):
            if index in stats:
                continue
            same = [i for i in range(index, len(self.models)) if self.models[i] == model]
            if len(same) > 1 and hasattr(model, "e_step_many"):
                together = model.e_step_many(block, [params[i] for i in same])
            else:
                together = [self.models[i].e_step(block, params[i]) for i in same]
            stats.update(zip(same, together, strict=True))
        return [stats[index] for index in range(len(self.models))]

    def combine(self, a: list[Stats], b: list[Stats]) -> list[Stats]:
        return [m.combine(x, y) for m, x, y in zip(self.models, a, b, strict=True)]


def em_pass(
    pairs: Sequence[tuple[EMModel, Params]],
    names: tuple[str, ...],
    blocks: list[tuple[int, list[Delayed]]],
    *,
    split_every: int,
    missing_ok: frozenset[str] | None,
    chunks_per_task: int = 1,
    content: Digests | bool = False,
    plan: PassPlan | None = None,
) -> tuple[list[Evaluation], Digests | None]:
    """One read of the data: for each (model, params), ``(F(params), loglik(params))``,
    and the chunks' digests when ``content`` asks for them (see :func:`map_reduce_graph`).

    One compute. ``F`` is the M-step after the E-step; when the M-step fails its
    exception is returned in place of the parameters, for the step to decide. A model
    with a ``lower_bound`` hook (see :mod:`dem.model`) reports that objective, of the
    statistics and the updated parameters, in place of the mean log-likelihood.
    ``plan``, the :class:`dem.graph.PassPlan` of ``blocks`` built once for the fit,
    saves building it again (its ``chunks_per_task`` then counts).
    """
    if all(hasattr(model, "own_pass") for model, _ in pairs):  # see dem.model's hooks
        return _own_passes(pairs, names, blocks, split_every, missing_ok, content)
    fused = _Fused(tuple(model for model, _ in pairs))
    graph = map_reduce_graph(
        fused.e_step,
        fused.combine,
        names,
        blocks if plan is None else plan,
        [params for _, params in pairs],
        split_every=split_every,
        missing_ok=missing_ok,
        chunks_per_task=chunks_per_task,
        content=content,
    )
    all_stats, digests = _compute(graph, names, blocks), None
    if content is not False:
        all_stats, digests = all_stats
    return _evaluations(pairs, all_stats), digests


def _own_passes(
    pairs: Sequence[tuple[EMModel, Params]],
    names: tuple[str, ...],
    blocks: list[tuple[int, list[Delayed]]],
    split_every: int,
    missing_ok: frozenset[str] | None,
    content: Digests | bool,
) -> tuple[list[Evaluation], Digests | None]:
    """:func:`em_pass` for models that run their own passes (the ``own_pass`` hook)."""
    all_stats, digests = [], None
    for model, params in pairs:
        stats, found = model.own_pass(  # type: ignore[attr-defined]
            params,
            names,
            blocks,
            split_every=split_every,
            missing_ok=missing_ok,
            content=content,
        )
        all_stats.append(stats)
        digests = found if digests is None else digests
    return _evaluations(pairs, all_stats), digests


def _evaluations(
    pairs: Sequence[tuple[EMModel, Params]], all_stats: Sequence[Stats]
) -> list[Evaluation]:
    """Each run's ``(F(params), loglik(params))`` from its statistics (see :func:`em_pass`)."""
    evaluations: list[Evaluation] = []
    for (model, params), stats in zip(pairs, all_stats, strict=True):
        loglik = float(stats["loglik"] / stats["n"])
        try:
            updated = _finite(model, model.m_step(stats, params))
            if hasattr(model, "lower_bound"):  # the model's objective (an ELBO) instead
                loglik = float(model.lower_bound(stats, updated))
            evaluations.append((updated, loglik))
        except (ValueError, np.linalg.LinAlgError, FloatingPointError) as failure:
            evaluations.append((failure, loglik))
    return evaluations


def _finite(model: EMModel, params: Params) -> Params:
    """``params`` unchanged, or FloatingPointError when the M-step produced a NaN."""
    for name, value in params.items():
        value = np.asarray(value)
        if value.dtype.kind in "fc" and np.isnan(value).any():
            raise FloatingPointError(
                f"The M-step produced NaN in parameter {name!r}. {remedy(model)}"
            )
    return params


@dataclass
class _Run:
    index: int
    model: EMModel
    result: EMResult
    step: StepGenerator | None = None
    request: Params | None = None
    started: float = 0.0

    def done(self, max_iter: int) -> bool:
        return self.step is None and (self.result.converged or self.result.n_iter >= max_iter)


def fit_runs(
    models: Sequence[EMModel],
    arrays: Mapping[str, da.Array],
    inits: Sequence[Callable[[], Params]],
    *,
    tol: float = 1e-3,
    max_iter: int = 100,
    split_every: int = DEFAULT_SPLIT_EVERY,
    accelerate: str = "none",
    checkpoint: Checkpoint | None = None,
    callback: Callable[[IterationInfo], Any] | None = None,
    persist: bool | None = None,
    method: str = "batch",
    incremental_chunks: int = 1,
    alpha: float = DEFAULT_ALPHA,
) -> list[EMResult]:
    """Fit several runs (restarts, or models with different settings) in lockstep.

    Parameters
    ----------
    models : sequence of EMModel
        One model per run (the same one for restarts).
    arrays : mapping of str to dask.array.Array
        Aligned inputs (same sample chunks), keyed by the names in ``model.inputs``.
    inits : sequence of callables
        Each returns a run's initial parameters; called only when there is nothing
        to resume.
    tol : float
        Convergence threshold on the change of the mean per-sample log-likelihood
        between two EM iterations.
    max_iter : int
        Maximum number of passes over the data per run (counting restored ones). A
        SQUAREM cycle in progress finishes, so a run may exceed it by 2 (an α-EM cycle
        stops at ``max_iter``).
    split_every : int
        Fan-in of the tree reduction.
    accelerate : {"none", "squarem", "alpha"}
        ``"squarem"`` extrapolates between EM steps; ``"alpha"`` is α-EM, a momentum
        step from the last two EM steps (see :mod:`dem.accelerate`).
    checkpoint : Checkpoint, optional
        Where each step is written, run by run; resumed from when it holds steps.
    callback : callable, optional
        Called after each step of each run with an :class:`IterationInfo`.
    persist : bool, optional
        Keep the inputs in cluster memory; see the module docstring for the default.
    method : {"batch", "incremental"}
        ``"incremental"``: Neal & Hinton's incremental EM, an M-step after every
        ``incremental_chunks`` chunks (see :mod:`dem.incremental`; ``max_iter`` counts
        passes; ``accelerate`` must be ``"none"``).
    incremental_chunks : int
        Chunks per group of incremental EM.
    alpha : float
        α of ``accelerate="alpha"``, in ``[-1, 1)`` (-1: plain EM; see
        :func:`dem.accelerate.alpha_momentum`); ignored otherwise.

    Returns
    -------
    list of EMResult
        One per run. Each read of a chunk serves every run still going.
    """
    if method != "batch":
        return _other_method(method, accelerate, incremental_chunks, models, arrays, inits,
                             tol=tol, max_iter=max_iter, split_every=split_every,
                             checkpoint=checkpoint, callback=callback, persist=persist)  # fmt: skip
    try:
        results = _fit_batch(models, arrays, inits, tol, max_iter, split_every, accelerate,
                             alpha, checkpoint, callback, persist)  # fmt: skip
    except BaseException as failure:
        _complete_writes(checkpoint, failure)
        raise
    _complete_writes(checkpoint, None)
    return results


def _complete_writes(checkpoint: Checkpoint | None, failure: BaseException | None) -> None:
    """Wait for the checkpoint's write in the background (the last iteration), so that a
    fit returns, or stops, with every iteration it recorded complete in the store. Its
    failure is raised, or noted on the fit's own ``failure`` when the fit failed."""
    if checkpoint is None:
        return
    try:
        checkpoint.wait()
    except Exception as problem:
        if failure is None:
            raise
        failure.add_note(f"The checkpoint's last write failed too: {problem}")


def _fit_batch(
    models: Sequence[EMModel],
    arrays: Mapping[str, da.Array],
    inits: Sequence[Callable[[], Params]],
    tol: float,
    max_iter: int,
    split_every: int,
    accelerate: str,
    alpha: float,
    checkpoint: Checkpoint | None,
    callback: Callable[[IterationInfo], Any] | None,
    persist: bool | None,
) -> list[EMResult]:
    """:func:`fit_runs` by batch EM; the checkpoint's last write may still be under way."""
    runs = [
        _start(index, model, init, checkpoint, arrays)
        for index, (model, init) in enumerate(zip(models, inits, strict=True))
    ]
    active = [run for run in runs if not run.done(max_iter)]
    # the first pass checks the data: for invalid values, and (with a checkpoint)
    # against the content digests the checkpoint recorded, else records them
    check: frozenset[str] | None = models[0].missing_ok if models else None
    content: Digests | bool = False
    make_step = step_factory(accelerate, alpha)  # refuses an unknown method or a bad alpha
    if active:
        check_accelerate(active[0].model, accelerate)
        arrays = prepare(arrays, persist)
        names, blocks = tuple(arrays), chunk_blocks(arrays)
        grouped = chunks_per_task(arrays, split_every)
        plan = pass_plan(blocks, grouped)  # the same every pass: built once
        if checkpoint is not None:
            content = _recorded_digests(checkpoint, names, len(blocks))
    while active:
        for run in active:
            if run.step is None:
                run.step = make_step(
                    run.model,
                    run.result.params,
                    run.result.lower_bound,
                    tol,
                    max_iter - run.result.n_iter,
                )
                run.request, run.started = next(run.step), time.perf_counter()
        pairs = [(run.model, run.request) for run in active]
        evaluations, digests = em_pass(
            pairs,  # type: ignore[arg-type]
            names,
            blocks,
            split_every=split_every,
            missing_ok=check,
            chunks_per_task=grouped,
            content=content,
            plan=plan,
        )
        if content is True and checkpoint is not None and digests is not None:
            checkpoint.record_content(names, digests)
        check, content = None, False  # the data are checked in the first pass only
        for run, evaluation in zip(active, evaluations, strict=True):
            try:
                run.request = run.step.send(evaluation)  # type: ignore[union-attr]
            except StopIteration as finished:
                _record(run, finished.value, checkpoint, callback)
            except (ValueError, np.linalg.LinAlgError, FloatingPointError) as failure:
                raise_if_extreme(arrays, failure)  # names rows of extreme values, if any
                raise
        active = [run for run in active if not run.done(max_iter)]
    for run in runs:
        _warn_if_not_converged(run.model, run.result, max_iter)
    return [run.result for run in runs]


def _other_method(
    method: str,
    accelerate: str,
    incremental_chunks: int,
    *args: Any,
    **options: Any,
) -> list[EMResult]:
    """:func:`fit_runs` by a method other than batch EM (:mod:`dem.incremental`)."""
    if method != "incremental":
        raise ValueError(f"method must be 'batch' or 'incremental'; got {method!r}.")
    if accelerate != "none":
        raise ValueError(
            f"accelerate={accelerate!r} extrapolates batch EM steps; incremental EM takes "
            "accelerate='none'."
        )
    from dem.incremental import fit_runs as incremental  # it builds on this module

    return incremental(*args, incremental_chunks=incremental_chunks, **options)


def _recorded_digests(
    checkpoint: Checkpoint, names: tuple[str, ...], n_chunks: int
) -> Digests | bool:
    """The content digests ``checkpoint`` recorded for the chunks, else True (record them)."""
    recorded = checkpoint.content()
    if recorded is None:
        return True
    if set(recorded) != set(names) or any(len(recorded[name]) != n_chunks for name in names):
        raise CheckpointMismatchError(
            f"Checkpoint {checkpoint.path!r} recorded the content of inputs "
            f"{sorted(recorded)} in {len(next(iter(recorded.values()), []))} chunks, but this "
            f"fit has inputs {sorted(names)} in {n_chunks}. Resume with the same data, or "
            "start a new checkpoint."
        )
    return tuple(zip(*(recorded[name] for name in names), strict=True))


def fit(
    model: EMModel,
    arrays: Mapping[str, da.Array],
    init: Callable[[], Params],
    **options: Any,
) -> EMResult:
    """Fit one run; see :func:`~dem.engine.fit_runs` for the options."""
    return fit_runs([model], arrays, [init], **options)[0]


def _start(
    index: int,
    model: EMModel,
    init: Callable[[], Params],
    checkpoint: Checkpoint | None,
    arrays: Mapping[str, da.Array],
) -> _Run:
    restored = checkpoint.restore(index) if checkpoint is not None else None
    if restored is not None:
        result = EMResult(
            restored.params, restored.lower_bounds, restored.iteration, restored.converged
        )
        return _Run(index, model, result)
    try:
        params = init()
    except (Exception, RuntimeWarning) as failure:
        _raise_if_invalid(arrays, model.missing_ok, failure)
        raise
    run = _Run(index, model, EMResult(params=params))
    if checkpoint is not None:
        checkpoint.write(
            index, 0, run.result.params, math.nan, False, model.param_dims(), background=True
        )
    return run


def _nothing(block: Block, params: Params) -> Stats:
    return {}


def _first(a: Stats, b: Stats) -> Stats:
    return a


def _raise_if_invalid(
    arrays: Mapping[str, da.Array], missing_ok: frozenset[str] | None, failure: BaseException
) -> None:
    """After an initialisation failed: one pass that names invalid input rows, if any.

    An initialisation computes on a sample of the data before the first pass checks
    it, so NaN or infinity there surface as some numerical error; this says which
    rows hold them instead. Clean data leave ``failure`` to be raised as it is.
    """
    try:
        map_reduce(_nothing, _first, arrays, {}, missing_ok=missing_ok or frozenset())
    except ValueError as invalid:
        raise invalid from failure
    except Exception:
        _raise_if_unreadable(tuple(arrays), chunk_blocks(arrays), failure)
    raise_if_extreme(arrays, failure)


def _record(
    run: _Run,
    step: Step,
    checkpoint: Checkpoint | None,
    callback: Callable[[IterationInfo], Any] | None,
) -> None:
    result = run.result
    change = step.loglik - result.lower_bound
    result.params, result.converged = step.params, step.converged
    result.lower_bounds.append(step.loglik)
    result.n_iter += step.passes
    run.step = run.request = None
    if checkpoint is not None:
        checkpoint.write(
            run.index,
            result.n_iter,
            result.params,
            step.loglik,
            result.converged,
            run.model.param_dims(),
            # written during the next pass (fit_runs waits for the last one), unless a
            # callback is to see it written: it may stop the fit, or the process may end
            background=callback is None,
        )
    if callback is not None:
        seconds = time.perf_counter() - run.started
        callback(
            IterationInfo(
                run.index, result.n_iter, step.loglik, change, seconds, checkpoint is not None
            )
        )


def _warn_if_not_converged(model: EMModel, result: EMResult, max_iter: int) -> None:
    if not result.converged and max_iter > 0:
        rule = (
            "the model's stopping rule was not met"
            if hasattr(model, "converged")
            else "the last change of the mean log-likelihood was above tol"
        )
        warnings.warn(
            f"EM did not converge in {max_iter} iterations ({rule}). Increase max_iter or "
            "tol, or check the initialisation.",
            ConvergenceWarning,
            stacklevel=3,
        )
