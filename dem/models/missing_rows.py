"""The E-step walk of the linear-Gaussian models over a chunk with missing values.

PPCA and factor analysis, and mixtures of factor analyzers, add the statistics of
complete rows with one kernel and those of rows with some values missing (NaN) with
another, which also sums the latents' second moments per feature into ``missing_zz``
(packed); a row with nothing observed adds nothing. That sum, the statistic
``"sum_zz_missing"``, exists only for data with missing values: :func:`combine`
counts its absence as zeros. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dem.model import Stats
from dem.models.scratch import Scratch

MISSING_ZZ = "sum_zz_missing"
OPTIONAL_STATS = frozenset({MISSING_ZZ})

AddComplete = Callable[[Stats, np.ndarray, Any, Scratch, np.ndarray | None], None]
"""``add(stats, shifted_rows, terms, scratch, weights)``: add complete rows (minus the
shift) to ``stats``."""

AddIncomplete = Callable[
    [Stats, np.ndarray, np.ndarray, np.ndarray, Any, Scratch, np.ndarray | None], None
]
"""``add(stats, missing_zz, rows, observed, terms, scratch, weights)``: add rows with
some values missing (``observed``: the mask of their observed values) to ``stats`` and
``missing_zz``."""


@dataclass(frozen=True)
class RowKernels:
    """A model's two kernels and the rows they take at a time (their work buffers
    scale with it)."""

    add_complete: AddComplete
    add_incomplete: AddIncomplete
    block_rows: int

    def add(
        self,
        stats: Stats,
        missing_zz: np.ndarray,
        x: np.ndarray,
        weights: np.ndarray | None,
        terms: Any,
        shift: np.ndarray,
        scratch: Scratch,
    ) -> bool:
        """Walk ``x`` in blocks of ``block_rows`` rows (as float64), adding each block's
        complete rows, minus ``shift``, and its rows with some but not all values NaN,
        each with their weights (None without weights).

        The rows handed to the kernels live in ``scratch`` (buffers "float64", "rows"
        and "shifted"). Returns whether any row with missing values was added.
        """
        any_missing = False
        size = self.block_rows
        for start in range(0, len(x), size):
            rows = scratch.float64("float64", x[start : start + size])
            w = None if weights is None else weights[start : start + size]
            missing = np.isnan(rows)
            incomplete = missing.any(axis=1)
            if not incomplete.any():
                shifted = np.subtract(rows, shift, out=scratch("shifted", rows.shape))
                self.add_complete(stats, shifted, terms, scratch, w)
                continue
            partial = np.flatnonzero(incomplete & ~missing.all(axis=1))  # nothing seen: left out
            if len(partial):
                any_missing = True
                self.add_incomplete(
                    stats,
                    missing_zz,
                    scratch.take("rows", rows, partial),
                    ~missing[partial],
                    terms,
                    scratch,
                    None if w is None else w[partial],
                )
            complete = np.flatnonzero(~incomplete)
            if len(complete):
                shifted = scratch.take("shifted", rows, complete)
                shifted -= shift
                w_complete = None if w is None else w[complete]
                self.add_complete(stats, shifted, terms, scratch, w_complete)
        return any_missing


def combine(a: Stats, b: Stats) -> Stats:
    """Sum of two statistics; an absent ``"sum_zz_missing"`` counts as zeros."""
    unmatched = (a.keys() ^ b.keys()) - OPTIONAL_STATS
    if unmatched:
        raise ValueError(f"cannot combine statistics with keys {sorted(a)} and {sorted(b)}")
    total = {key: a[key] + b[key] for key in a if key in b}
    for key in OPTIONAL_STATS & (a.keys() ^ b.keys()):
        total[key] = (a[key] if key in a else b[key]).copy()
    return total
