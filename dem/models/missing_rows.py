"""One E-step walk over a chunk with missing values: complete rows apart from the others.

The linear-Gaussian E-steps (PPCA and factor analysis, mixtures of factor analyzers)
add the statistics of complete rows with one set of kernels and those of rows with some
values missing (NaN) with another; a row with nothing observed adds nothing. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dem.models.scratch import Scratch

AddComplete = Callable[[np.ndarray, np.ndarray | None], None]
"""``add(shifted_rows, weights)``: add complete rows (minus the shift) to the statistics."""

AddIncomplete = Callable[[np.ndarray, np.ndarray, np.ndarray | None], None]
"""``add(rows, observed, weights)``: add rows with some values missing (``observed``:
the boolean mask of their observed values) to the statistics."""


def add_rows(
    x: np.ndarray,
    weights: np.ndarray | None,
    shift: np.ndarray,
    scratch: Scratch,
    add_complete: AddComplete,
    add_incomplete: AddIncomplete,
    block_rows: int,
) -> bool:
    """Walk ``x`` in blocks of ``block_rows`` rows (as float64), handing each block's
    complete rows, minus ``shift``, to ``add_complete`` and its rows with some but not all
    values NaN to ``add_incomplete``, each with their weights (None without weights).

    The rows handed over live in ``scratch`` (buffers "float64", "rows" and "shifted"),
    valid only during the call. Returns whether any row with missing values was added.
    """
    any_missing = False
    for start in range(0, len(x), block_rows):
        rows = scratch.float64("float64", x[start : start + block_rows])
        w = None if weights is None else weights[start : start + block_rows]
        missing = np.isnan(rows)
        incomplete = missing.any(axis=1)
        if not incomplete.any():
            add_complete(np.subtract(rows, shift, out=scratch("shifted", rows.shape)), w)
            continue
        partial = np.flatnonzero(incomplete & ~missing.all(axis=1))  # nothing seen: left out
        if len(partial):
            any_missing = True
            add_incomplete(
                scratch.take("rows", rows, partial),
                ~missing[partial],
                None if w is None else w[partial],
            )
        complete = np.flatnonzero(~incomplete)
        if len(complete):
            shifted = scratch.take("shifted", rows, complete)
            shifted -= shift
            add_complete(shifted, None if w is None else w[complete])
    return any_missing
