"""Sample weights inside a model's E-step (pure numpy; see :mod:`dem.weights`).

A block may carry ``block["sample_weight"]``: one non-negative finite weight per sample.
Every additive statistic is then the weighted sum, ``"n"`` the sum of the weights and
``"loglik"`` the weighted sum of the per-sample log-likelihoods. Samples of weight 0
are removed before anything is computed from them, so that no value of theirs (NaN,
extreme values) reaches a sum.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

SAMPLE_WEIGHT = "sample_weight"


def block_weights(block: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """The block's weights as float64, or None when it has none (every weight 1)."""
    weights = block.get(SAMPLE_WEIGHT)
    return None if weights is None else np.asarray(weights, dtype=np.float64)


def positive(
    weights: np.ndarray | None, *arrays: np.ndarray
) -> tuple[np.ndarray | None, tuple[np.ndarray, ...]]:
    """``weights`` and ``arrays`` (aligned along their first axis) without the samples of
    weight 0; unchanged (no copy) when there are none, or no weights."""
    if weights is None:
        return None, arrays
    keep = weights > 0
    if keep.all():
        return weights, arrays
    return weights[keep], tuple(a[keep] for a in arrays)


def weighted_sum(values: np.ndarray, weights: np.ndarray | None) -> np.float64:
    """Σ_i w_i values_i over the first axis (the plain sum without weights)."""
    if weights is None:
        return np.float64(np.sum(values))
    return np.float64(weights @ values)


def count(n_rows: int, weights: np.ndarray | None) -> np.float64:
    """The weighted number of samples: Σ w, or ``n_rows`` without weights."""
    return np.float64(n_rows if weights is None else weights.sum())


def positive_block(
    block: Mapping[str, np.ndarray],
) -> tuple[np.ndarray | None, Mapping[str, np.ndarray]]:
    """The block's weights and the block itself (every array aligned with its samples)
    without the samples of weight 0; unchanged when there are none, or no weights."""
    weights = block_weights(block)
    if weights is None or (weights > 0).all():
        return weights, block
    keep = weights > 0
    return weights[keep], {name: np.asarray(value)[keep] for name, value in block.items()}
