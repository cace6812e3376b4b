"""Online (stepwise) EM: parameters updated after every batch of chunks.

Cappé & Moulines (2009): keep a running average of per-sample sufficient statistics,
``s <- (1 - rate) s + rate * stats(batch) / n(batch)`` with the Robbins–Monro rate
``(t + 1) ** -step_exponent`` for the t-th batch (t = 0, 1, ...), and run the M-step on
that average after every batch. One pass over the data then moves the parameters as
many times as there are batches, which makes a good start for batch EM on large data.

With ``forgetting=ρ`` in (0, 1] the rate is instead Sato & Ishii's (2000) discounted
average: the running statistics weigh the batch ``j`` updates back by ``(1 - ρ) ** j``,
normalised, so the rate of the ``t``-th batch is ``ρ / (1 - (1 - ρ) ** (t + 1))`` (1 for
the first, then falling to the constant ``ρ``). The statistics then average about the
last ``1 / ρ`` batches: the fit tracks a stream whose distribution drifts, where the
decaying rate's average over all the past lags ever further behind. The price on a
stationary stream is noise that never averages away: the parameters wander about the
optimum like an estimate from ``(2 - ρ) / ρ`` batches' worth of rows (the effective
number of batches of an exponential average), so choose ``ρ`` about 2 / (batches the
drift takes to matter).

Models take part unchanged: it is the same ``e_step`` and ``m_step``. Their statistics
must keep the same keys from batch to batch and mean the same thing whatever the
parameters (the mixture takes its sums about a shift that is fixed for the whole fit).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import dask
import dask.array as da
import numpy as np

from dem.engine import EMResult, IterationInfo, prepare
from dem.graph import DEFAULT_SPLIT_EVERY, chunk_blocks, map_reduce_graph
from dem.model import EMModel, Params, Stats
from dem.weights import SAMPLE_WEIGHT


def blend(running: Stats | None, batch: Stats, rate: float) -> Stats:
    """The running per-sample average after one batch (the batch's own average first)."""
    per_sample: Stats = {key: np.asarray(value) / batch["n"] for key, value in batch.items()}
    if running is None:
        return per_sample
    if running.keys() != per_sample.keys():
        raise ValueError(
            f"Online EM needs the same statistics from every batch; got {sorted(per_sample)} "
            f"after {sorted(running)}."
        )
    return {key: (1.0 - rate) * running[key] + rate * per_sample[key] for key in running}


def step_rate(step: int, step_exponent: float, forgetting: float | None = None) -> float:
    """Rate of the ``step``-th batch (counting from 0); 1 for the first.

    Robbins–Monro's ``(step + 1) ** -step_exponent``, or with ``forgetting=ρ`` Sato &
    Ishii's normalised discount ``ρ / (1 - (1 - ρ) ** (step + 1))`` (see the module notes).
    """
    if forgetting is None:
        return float((step + 1) ** -step_exponent)
    check_forgetting(forgetting)
    if forgetting == 1.0:
        return 1.0
    return float(forgetting / -np.expm1((step + 1) * np.log1p(-forgetting)))


def check_forgetting(forgetting: float | None) -> None:
    """Refuse a forgetting factor outside (0, 1], saying what it means."""
    if forgetting is None:
        return
    if isinstance(forgetting, bool) or not 0.0 < forgetting <= 1.0:
        raise ValueError(
            f"forgetting must be in (0, 1] (the weight of the newest batch in the running "
            f"statistics: 0.05 averages about the last 20 batches) or None for the decaying "
            f"rate (t + 1) ** -step_exponent; got {forgetting!r}."
        )


def fit_online(
    model: EMModel,
    arrays: Mapping[str, da.Array],
    init: Callable[[], Params],
    *,
    n_passes: int = 1,
    batch_chunks: int = 1,
    step_exponent: float = 0.6,
    forgetting: float | None = None,
    random_state: int | np.random.Generator | None = None,
    split_every: int = DEFAULT_SPLIT_EVERY,
    callback: Callable[[IterationInfo], Any] | None = None,
    persist: bool | None = None,
) -> EMResult:
    """Fit by online EM: ``n_passes`` passes, an M-step after every ``batch_chunks`` chunks.

    Parameters
    ----------
    model, arrays, init
        As for :func:`dem.engine.fit`.
    n_passes : int
        Passes over the data; each visits the chunks in a new random order.
    batch_chunks : int
        Chunks per update (one compute per update, the batch's chunks in parallel).
    step_exponent : float
        In (0.5, 1]: the rate of the t-th update is ``(t + 1) ** -step_exponent``.
    forgetting : float in (0, 1], optional
        Sato & Ishii's discount instead: the rate tends to the constant ``forgetting``
        (see the module notes); ``step_exponent`` is then unused.
    random_state : int or Generator, optional
        Seeds the order in which chunks are visited.

    Returns
    -------
    EMResult
        ``lower_bounds`` holds the mean log-likelihood of each pass, measured batch by
        batch at the parameters of the moment; ``n_iter`` counts updates.
    """
    if not 0.5 < step_exponent <= 1.0:
        raise ValueError(f"step_exponent must be in (0.5, 1]; got {step_exponent}.")
    check_forgetting(forgetting)
    if n_passes < 1 or batch_chunks < 1:
        raise ValueError("n_passes and batch_chunks must be at least 1.")
    params = init()
    arrays = prepare(arrays, persist)
    names, blocks = tuple(arrays), chunk_blocks(arrays)
    weights = arrays.get(SAMPLE_WEIGHT)  # a weighted fit: the total weight stands for N
    n_total = float(next(iter(arrays.values())).shape[0] if weights is None else weights.sum())
    rng = np.random.default_rng(random_state)
    result = EMResult(params=params)
    running: Stats | None = None
    check: frozenset[str] | None = model.missing_ok
    for _ in range(n_passes):
        order = rng.permutation(len(blocks))
        pass_loglik, pass_n = 0.0, 0.0
        for start in range(0, len(order), batch_chunks):
            started = time.perf_counter()
            batch = [blocks[i] for i in order[start : start + batch_chunks]]
            graph = map_reduce_graph(
                model.e_step,
                model.combine,
                names,
                batch,
                result.params,
                split_every=split_every,
                missing_ok=check,
            )
            (stats,) = dask.compute(graph)
            check = None if start + batch_chunks >= len(order) else check
            if not stats["n"] > 0:  # a batch of weight 0 carries nothing to learn from
                continue
            running = blend(running, stats, step_rate(result.n_iter, step_exponent, forgetting))
            result.params = model.m_step(
                {k: v * n_total for k, v in running.items()}, result.params
            )
            result.n_iter += 1
            pass_loglik += float(stats["loglik"])
            pass_n += float(stats["n"])
            if callback is not None:
                loglik = float(stats["loglik"] / stats["n"])
                seconds = time.perf_counter() - started
                callback(IterationInfo(0, result.n_iter, loglik, np.nan, seconds, False))
        result.lower_bounds.append(pass_loglik / pass_n)
    return result
