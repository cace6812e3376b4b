"""k-means‖ (Bahmani et al. 2012): the per-chunk work of its passes, and the reclustering.

Pure numpy; :mod:`dem.seeding` drives the passes. Everything is computed about a
``shift`` (the first centre, a row of the data), which keeps the squared distances
``|x|² - 2 x·c + |c|²`` accurate for data far from the origin.

The passes
----------
Sampling round: each chunk computes every row's squared distance ``d²`` to the nearest
centre chosen so far and keeps the ``ell`` rows whose keys ``-log(u) / d²`` are
smallest (``u`` uniform); the merge of two chunks keeps the ``ell`` smallest of both.
These are ``ell`` draws without replacement with probability proportional to ``d²``
(the exponential-clock method of Efraimidis & Spirakis 2006), made in the same pass that
sums the cost ``Σ d²``. Bahmani et al. draw each row independently with probability
``ell · d² / Σ d²``, which needs the sum before the draws, so a second pass per round
out of core; the fixed-size draw needs none. ``u`` is a hash of (seed, global row
number), so the draws are the same however the data are chunked.

Attraction pass: each chunk assigns every row to its nearest candidate and sums, per
candidate, the rows it attracts (``resp_sum``: its weight), their sum (``sum_x``) and
their scatter (per covariance type, as the mixture's statistics), about the shift.

Reclustering (client): each candidate stands for the mean of the rows it attracts,
weighted by their count; weighted k-means++ and Lloyd iterations on those points pick
the K clusters, and the statistics of a cluster are the sums over its candidates: the
hard-assignment statistics of the data, each row with the cluster of its candidate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dem.model import Block, Stats, add_stats
from dem.models.sample_weight import block_weights, count, positive, weighted_sum

BLOCK_ROWS = 2048
# a squared distance below this fraction of |x|² + |c|² is round-off: the row is a centre
ROUNDOFF = 1e-12
# weighted k-means++ and Lloyd on the candidates, best of this many (no pass over the data)
RECLUSTER_TRIES = 10

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)

Candidates = dict[str, Any]
"""A sampling round's summary: ``n``, ``cost`` (sums) and the kept ``keys``,
``rows`` (global row numbers) and ``points`` (rows about the shift)."""


def row_uniforms(seed: int, rows: np.ndarray) -> np.ndarray:
    """Uniforms in (0, 1), a function of ``seed`` and the row numbers only (SplitMix64)."""
    z = rows.astype(np.uint64) * _GAMMA + np.uint64(seed)
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z ^= z >> np.uint64(31)
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def nearest_centres(xc: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared distance of each row to its nearest centre, and that centre's index.

    Distances within round-off of zero are exactly zero.
    """
    d2 = np.empty(len(xc))
    labels = np.empty(len(xc), dtype=np.intp)
    centre_norms = np.einsum("ij,ij->i", centres, centres)
    for start in range(0, len(xc), BLOCK_ROWS):
        rows = xc[start : start + BLOCK_ROWS]
        row_norms = np.einsum("ij,ij->i", rows, rows)
        distances = centre_norms - 2.0 * (rows @ centres.T)
        nearest = np.argmin(distances, axis=1)
        best = distances[np.arange(len(rows)), nearest] + row_norms
        scale = row_norms + centre_norms[nearest]
        best[best <= ROUNDOFF * scale] = 0.0
        d2[start : start + len(rows)] = best
        labels[start : start + len(rows)] = nearest
    return d2, labels


def _centred(block: Block, state: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """The block's rows about the shift and their weights (None: all 1), rows of weight 0
    left out."""
    weights, (x,) = positive(block_weights(block), np.asarray(block["X"]))
    return np.asarray(x, dtype=np.float64) - state["shift"], weights


def _row_numbers(block: Block) -> np.ndarray:
    """The block's global row numbers, those of weight 0 left out."""
    _, (rows,) = positive(block_weights(block), np.asarray(block["row"]))
    return rows


# --- sampling rounds ---------------------------------------------------------------


def _smallest(keys: np.ndarray, rows: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` smallest keys, ties broken by row number (a total order)."""
    if len(keys) > count:
        return np.lexsort((rows, keys))[:count]
    return np.arange(len(keys))


def sample_candidates(block: Block, state: dict[str, Any]) -> Candidates:
    """One chunk's part of a sampling round: its cost and its ``ell`` smallest keys."""
    xc, weights = _centred(block, state)
    rows = _row_numbers(block)
    d2, _ = nearest_centres(xc, state["centres"])
    if weights is not None:
        d2 *= weights  # drawn in proportion to w d²: as if each row were repeated w times
    eligible = np.flatnonzero(d2 > 0.0)
    keys = -np.log(row_uniforms(state["seed"], rows[eligible])) / d2[eligible]
    if len(keys) > state["ell"]:  # a partial sort first: only a few rows survive
        part = np.argpartition(keys, state["ell"] - 1)[: state["ell"]]
        keys, eligible = keys[part], eligible[part]
    kept = _smallest(keys, rows[eligible], state["ell"])
    return {
        "n": count(len(xc), weights),
        "cost": np.float64(d2.sum()),
        "keys": keys[kept],
        "rows": rows[eligible[kept]],
        "points": xc[eligible[kept]],
        "ell": state["ell"],
    }


def merge_candidates(a: Candidates, b: Candidates) -> Candidates:
    """The summary of two chunks: sums added, the ``ell`` smallest keys of both kept."""
    keys = np.concatenate([a["keys"], b["keys"]])
    rows = np.concatenate([a["rows"], b["rows"]])
    kept = _smallest(keys, rows, a["ell"])
    return {
        "n": a["n"] + b["n"],
        "cost": a["cost"] + b["cost"],
        "keys": keys[kept],
        "rows": rows[kept],
        "points": np.concatenate([a["points"], b["points"]])[kept],
        "ell": a["ell"],
    }


# --- attraction: the rows each centre attracts ---------------------------------------


def _segment_sums(
    values: np.ndarray, starts: np.ndarray, nonempty: np.ndarray, size: int
) -> np.ndarray:
    out = np.zeros((size, *values.shape[1:]))
    if len(values):
        out[nonempty] = np.add.reduceat(values, starts[nonempty], axis=0)
    return out


def attraction(block: Block, state: dict[str, Any]) -> Stats:
    """Statistics of the rows each centre attracts: counts, sums and scatter.

    ``state["scatter"]`` picks the scatter, as the mixture's covariance types need it:
    ``"full"`` (per centre, d × d), ``"diag"`` or ``"spherical"`` (per centre, d),
    ``"tied"`` (all rows, d × d), or None (none).
    """
    xc, weights = _centred(block, state)
    centres = state["centres"]
    size, n_features = centres.shape
    d2, labels = nearest_centres(xc, centres)
    counts = np.bincount(labels, minlength=size)
    order = np.argsort(labels, kind="stable")
    ordered = xc[order]
    w = np.ones(len(xc)) if weights is None else weights[order]
    weighted = ordered if weights is None else ordered * w[:, None]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    nonempty = counts > 0
    stats: Stats = {
        "n": count(len(xc), weights),
        "cost": weighted_sum(d2, weights),
        "resp_sum": _segment_sums(w, starts, nonempty, size),
        "sum_x": _segment_sums(weighted, starts, nonempty, size),
    }
    kind = state["scatter"]
    if kind == "full":
        scatter = np.zeros((size, n_features, n_features))
        for k in np.flatnonzero(nonempty):
            members = slice(starts[k], starts[k] + counts[k])
            scatter[k] = weighted[members].T @ ordered[members]
        stats["scatter"] = scatter
    elif kind in ("diag", "spherical"):
        stats["scatter"] = _segment_sums(weighted * ordered, starts, nonempty, size)
    elif kind == "tied":
        stats["scatter"] = weighted.T @ ordered
    return stats


# --- several seedings in one pass ------------------------------------------------------


def sample_pass(block: Block, states: list[dict[str, Any]]) -> list[Candidates]:
    return [sample_candidates(block, state) for state in states]


def merge_pass(a: list[Candidates], b: list[Candidates]) -> list[Candidates]:
    return [merge_candidates(x, y) for x, y in zip(a, b, strict=True)]


def attraction_pass(block: Block, states: list[dict[str, Any]]) -> list[Stats]:
    return [attraction(block, state) for state in states]


def add_pass(a: list[Stats], b: list[Stats]) -> list[Stats]:
    return [add_stats(x, y) for x, y in zip(a, b, strict=True)]


# --- reclustering the weighted candidates on the client ---------------------------------


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = np.einsum("ij,ij->i", a, a)[:, None] - 2.0 * a @ b.T + np.einsum("ij,ij->i", b, b)[None, :]
    return np.maximum(d2, 0.0)


def weighted_kmeans_plusplus(
    points: np.ndarray, weights: np.ndarray, n_clusters: int, rng: np.random.Generator
) -> np.ndarray:
    """Indices of ``n_clusters`` points by greedy k-means++ with point weights.

    A point is drawn with probability proportional to its weight times its squared
    distance to the nearest point chosen so far (the first by weight alone); each draw
    tries ``2 + log K`` candidates and keeps the one that lowers the weighted cost most.
    Once every point of positive weight is chosen, unused points (then repeats) fill up.
    """
    n_trials = 2 + int(np.log(n_clusters))
    chosen = [int(rng.choice(len(points), p=weights / weights.sum()))]
    closest = _sq_distances(points[chosen], points)[0]
    for _ in range(1, n_clusters):
        mass = weights * closest
        total = mass.sum()
        if total <= 0.0:
            unused = np.setdiff1d(np.arange(len(points)), chosen)
            chosen.append(int(unused[0]) if len(unused) else chosen[0])
            continue
        trials = np.searchsorted(np.cumsum(mass), rng.uniform(size=n_trials) * total)
        trials = np.minimum(trials, len(points) - 1)
        trial = np.minimum(closest[None, :], _sq_distances(points[trials], points))
        best = int(np.argmin(trial @ weights))
        chosen.append(int(trials[best]))
        closest = trial[best]
    return np.array(chosen)


def weighted_lloyd(
    points: np.ndarray, weights: np.ndarray, centres: np.ndarray, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's iterations on weighted points; returns (labels, centres).

    A cluster left without weight keeps its centre.
    """
    centres = centres.copy()
    labels = np.full(len(points), -1)
    for _ in range(max_iter):
        new_labels = np.argmin(_sq_distances(points, centres), axis=1)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        mass = np.bincount(labels, weights=weights, minlength=len(centres))
        sums = np.zeros_like(centres)
        np.add.at(sums, labels, weights[:, None] * points)
        filled = mass > 0
        centres[filled] = sums[filled] / mass[filled, None]
    return labels, centres


def recluster(
    stats: Stats, n_clusters: int, rng: np.random.Generator, tries: int = RECLUSTER_TRIES
) -> tuple[np.ndarray, np.ndarray]:
    """The cluster of each candidate, and the clusters' centres, from attraction statistics.

    A candidate is represented by the mean of the rows it attracts, weighted by their
    count (candidates that attract no row take no part, and go to cluster 0), so the
    weighted k-means cost of the candidates is that of the rows, grouped by candidate,
    up to a constant. Weighted k-means++ and Lloyd run ``tries`` times (they cost no
    pass over the data); the lowest cost wins.
    """
    counts = np.asarray(stats["resp_sum"])
    used = np.flatnonzero(counts > 0)
    points = np.asarray(stats["sum_x"])[used] / counts[used, None]
    weights = counts[used]
    best_cost, best_labels, best_centres = np.inf, np.zeros(0, dtype=np.intp), points[:0]
    for _ in range(max(tries, 1)):
        seeds = weighted_kmeans_plusplus(points, weights, n_clusters, rng)
        found, centres = weighted_lloyd(points, weights, points[seeds])
        cost = float(weights @ np.sum((points - centres[found]) ** 2, axis=1))
        if cost < best_cost or len(best_labels) == 0:
            best_cost, best_labels, best_centres = cost, found, centres
    labels = np.zeros(len(counts), dtype=np.intp)
    labels[used] = best_labels
    return labels, best_centres


def group_stats(stats: Stats, labels: np.ndarray, n_clusters: int, scatter: str | None) -> Stats:
    """Attraction statistics summed over the candidates of each cluster.

    ``scatter`` is the kind :func:`attraction` summed. ``cost`` stays that of the
    candidates (it is not a sum over clusters).
    """
    one_hot = np.zeros((len(labels), n_clusters))
    one_hot[np.arange(len(labels)), labels] = 1.0
    grouped: Stats = {
        "n": stats["n"],
        "cost": stats["cost"],
        "resp_sum": one_hot.T @ stats["resp_sum"],
        "sum_x": one_hot.T @ stats["sum_x"],
    }
    if scatter == "full":
        grouped["scatter"] = np.einsum("jk,jab->kab", one_hot, stats["scatter"])
    elif scatter in ("diag", "spherical"):
        grouped["scatter"] = one_hot.T @ stats["scatter"]
    elif scatter == "tied":
        grouped["scatter"] = stats["scatter"]
    return grouped
