"""Distributed k-means‖ seeding (Bahmani et al. 2012), driven from the client.

The per-chunk work is in :mod:`dem.models.kmeans`; this module runs its passes with
:func:`dem.engine.map_reduce` (one compute each) and reclusters on the client.
Several seedings (restarts, or a grid of K) share every pass.

Passes over the data, for any number of seedings:

1. one read of a single row per seeding, its first centre (``sample_rows``);
2. ``rounds`` sampling passes: each adds ``ell = ceil(oversampling · K)`` rows drawn
   with probability proportional to their squared distance to the nearest centre so far;
3. one attraction pass: every row goes to its nearest candidate, whose weight is the
   number of rows it attracts (the weights sum to N); the same pass sums, per
   candidate, the rows and their scatter, so the K clusters' hard-assignment
   statistics need no further pass after the reclustering on the client.

That is ``rounds + 1`` passes (6 with the defaults). Where the per-candidate scatter
would exceed ``SCATTER_LIMIT`` floats (full covariances with many candidates and many
features), the attraction pass sums no scatter and one more pass computes the
statistics of the rows nearest each of the K means.

The draws depend only on the generator and the rows' numbers, so for a given seed the
candidates do not depend on the chunking; the sums that follow can differ by
round-off.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import dask.array as da
import numpy as np

from dem.engine import DEFAULT_SPLIT_EVERY, map_reduce
from dem.model import Stats
from dem.models import kmeans
from dem.weights import SAMPLE_WEIGHT, init_sample

ROUNDS = 5
OVERSAMPLING = 2.0
SCATTER_LIMIT = 2**22  # floats of per-candidate scatter a pass may carry (32 MiB)


@dataclass(frozen=True)
class Seeding:
    """The outcome of one k-means‖ seeding.

    Attributes
    ----------
    shift : ndarray of shape (n_features,)
        The first centre; ``stats`` are taken about it.
    centres : ndarray of shape (n_clusters, n_features)
        Means of the K clusters.
    candidates : ndarray of shape (n_candidates, n_features)
    weights : ndarray of shape (n_candidates,)
        Rows each candidate attracts; they sum to the number of rows.
    labels : ndarray of shape (n_candidates,)
        Cluster of each candidate.
    stats : dict
        Hard-assignment statistics of the K clusters about ``shift``: ``n``,
        ``resp_sum`` (rows per cluster), ``sum_x``, and ``scatter`` when asked for.
    costs : tuple of float
        k-means cost (Σ squared distance to the nearest centre) of the centres before
        each sampling round, then of all the candidates.
    passes : int
        Full passes over the data (not counting the single-row read).
    """

    shift: np.ndarray
    centres: np.ndarray
    candidates: np.ndarray
    weights: np.ndarray
    labels: np.ndarray
    stats: Stats
    costs: tuple[float, ...]
    passes: int


def row_numbers(array: da.Array) -> da.Array:
    """The global number of each row, chunked like ``array``'s samples."""
    return da.arange(array.shape[0], chunks=(array.chunks[0],), dtype=np.int64)


def _scatter_size(scatter: str | None, n_candidates: int, n_features: int) -> int:
    return {
        None: 0,
        "full": n_candidates * n_features * n_features,
        "tied": n_features * n_features,
        "diag": n_candidates * n_features,
        "spherical": n_candidates * n_features,
    }[scatter]


def kmeans_parallel(
    array: da.Array,
    n_clusters: Sequence[int],
    rngs: Sequence[np.random.Generator],
    *,
    scatter: str | None = None,
    rounds: int | None = None,
    oversampling: float | None = None,
    split_every: int = DEFAULT_SPLIT_EVERY,
    weights: da.Array | None = None,
) -> list[Seeding]:
    """k-means‖ seedings of ``array``, one per (K, generator), sharing every pass.

    Parameters
    ----------
    array : dask.array.Array of shape (n_samples, n_features)
    n_clusters : sequence of int
        K of each seeding.
    rngs : sequence of numpy.random.Generator
        One generator per seeding.
    scatter : {"full", "tied", "diag", "spherical"}, optional
        The scatter statistics to return (as a mixture of that covariance type needs).
    rounds : int, optional
        Sampling rounds (passes); default ``ROUNDS`` (5).
    oversampling : float, optional
        Rows drawn per round, as a multiple of K; default ``OVERSAMPLING`` (2).
    split_every : int, default=8
        Fan-in of the tree reductions.
    weights : dask.array.Array of shape (n_samples,), optional
        Sample weights, chunked like ``array``: the seeding of the data with each row
        repeated in proportion to its weight (the first centre and every draw in
        proportion to them; each candidate weighs the weights of the rows it attracts).

    Returns
    -------
    list of Seeding
    """
    rounds = ROUNDS if rounds is None else rounds
    oversampling = OVERSAMPLING if oversampling is None else oversampling
    if len(n_clusters) != len(rngs):
        raise ValueError(f"Got {len(n_clusters)} cluster counts but {len(rngs)} generators.")
    if rounds < 1 or not oversampling > 0:
        raise ValueError(f"rounds must be >= 1 and oversampling > 0; got {rounds}, {oversampling}.")
    n_features = int(array.shape[1])
    arrays = {"X": array, "row": row_numbers(array)}
    if weights is not None:
        arrays[SAMPLE_WEIGHT] = weights
    shifts = [init_sample(array, weights, 1, rng)[0].astype(np.float64) for rng in rngs]
    seeds = [rng.integers(0, 2**64, size=rounds, dtype=np.uint64) for rng in rngs]
    ells = [max(1, math.ceil(oversampling * k)) for k in n_clusters]
    candidates = [np.zeros((1, n_features)) for _ in rngs]
    costs: list[list[float]] = [[] for _ in rngs]
    check: frozenset[str] | None = frozenset()  # look for NaN in the first pass
    for r in range(rounds):
        states = [
            {"shift": shift, "centres": centres, "seed": int(seed[r]), "ell": ell}
            for shift, centres, seed, ell in zip(shifts, candidates, seeds, ells, strict=True)
        ]
        summaries = _pass(kmeans.sample_pass, kmeans.merge_pass, arrays, states, split_every, check)
        check = None
        for i, summary in enumerate(summaries):
            costs[i].append(float(summary["cost"]))
            candidates[i] = np.vstack([candidates[i], summary["points"]])
    passes = rounds + 1
    folded = sum(_scatter_size(scatter, len(c), n_features) for c in candidates) <= SCATTER_LIMIT
    states = [
        {"shift": shift, "centres": centres, "scatter": scatter if folded else None}
        for shift, centres in zip(shifts, candidates, strict=True)
    ]
    attracted = _pass(kmeans.attraction_pass, kmeans.add_pass, arrays, states, split_every, None)
    grouped, means, labels = [], [], []
    for stats, k, rng in zip(attracted, n_clusters, rngs, strict=True):
        cluster_of, centres = kmeans.recluster(stats, k, rng)
        grouped.append(kmeans.group_stats(stats, cluster_of, k, scatter if folded else None))
        means.append(centres)
        labels.append(cluster_of)
    if not folded:
        passes += 1
        states = [
            {"shift": shift, "centres": centres, "scatter": scatter}
            for shift, centres in zip(shifts, means, strict=True)
        ]
        grouped = _pass(kmeans.attraction_pass, kmeans.add_pass, arrays, states, split_every, None)
    return [
        Seeding(
            shift=shift,
            centres=shift + _cluster_means(stats, centres),
            candidates=shift + cands,
            weights=np.asarray(attraction["resp_sum"]),
            labels=cluster_of,
            stats=stats,
            costs=(*cost, float(attraction["cost"])),
            passes=passes,
        )
        for shift, centres, cands, attraction, stats, cost, cluster_of in zip(
            shifts, means, candidates, attracted, grouped, costs, labels, strict=True
        )
    ]


def _cluster_means(stats: Stats, fallback: np.ndarray) -> np.ndarray:
    """Mean of each cluster's rows about the shift; ``fallback`` for empty clusters."""
    counts = np.asarray(stats["resp_sum"])
    means = fallback.copy()
    filled = counts > 0
    means[filled] = np.asarray(stats["sum_x"])[filled] / counts[filled, None]
    return means


def _pass(
    function: Any,
    combine: Any,
    arrays: dict[str, da.Array],
    states: list[dict[str, Any]],
    split_every: int,
    check: frozenset[str] | None,
) -> list[Any]:
    """One pass over the data for every seeding (one compute)."""
    stats = map_reduce(
        function, combine, arrays, cast(Any, states), split_every=split_every, missing_ok=check
    )
    return cast(list[Any], stats)
