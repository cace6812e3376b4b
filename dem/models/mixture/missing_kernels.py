"""Block kernels of the Gaussian mixture with missing values (NaN): pure numpy.

:mod:`.missing` explains the model and the algebra; this module holds the work on one
block of rows (transposed and centred by :func:`dem.models.gaussian.transposed_blocks`,
NaN where missing), written so that a block costs a few large products and a few
passes over its missing entries, with no work per row or per pattern in Python:

- **Full and tied covariances** (:func:`full_conditionals`, :func:`full_statistics`).
  Rows are not grouped by pattern (with 10% of 16 features missing, most incomplete
  rows have a pattern of their own) but by their number ``q`` of missing values. The
  missing entries of a block are listed once (:class:`Layout`); ``(P x̃)_m`` is one
  product per feature over the entries of that feature; within a group the blocks
  ``P_mm`` of every row and component are gathered as ``q (q + 1) / 2`` arrays (K, n_q)
  and factorised by an unrolled Cholesky written with whole-array operations (no call
  per matrix; :data:`UNROLLED_MAX`), beyond which batched LAPACK takes over. The
  conditional second moments of the missing blocks reach the scatter through one
  ``np.bincount`` over their flat indices ``k d² + a d + b``.
- **Diagonal and spherical covariances** (:func:`diag_log_prob`, :func:`diag_statistics`):
  the missing coordinates are independent of the observed ones given the component, so
  a block's log densities are one product of per-component coefficients with the
  features ``[x̃²; x̃; m]`` (``m`` the missing mask) and its statistics one product of
  the responsibilities with the same features, like complete rows.

The large arrays of a block live in the caller's :class:`~dem.models.scratch.Scratch`
buffers (a fresh large array per block is costly on dask workers, see that class);
the blocks are sized (:func:`block_rows`) so that the per-group temporaries stay small.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dem.model import Params
from dem.models import gaussian
from dem.models.mixture.model import log_weights

LOG_2PI = float(np.log(2.0 * np.pi))
UNROLLED_MAX = 8
"""Most missing values per row for which the blocks ``P_mm`` may be factorised by the
unrolled whole-array Cholesky (O(q³) array operations, a cost per group, not per row);
larger ones, and groups of few rows beyond q = 4, by batched LAPACK (a cost per matrix)."""
LAPACK_ROWS = 50
"""Beyond q = 4, groups of fewer than ``LAPACK_ROWS * q`` rows × components go to LAPACK."""


def block_rows(n_components: int) -> int:
    """Rows per block: about 65536 / K (the (K, rows) arrays are scratch buffers)."""
    return int(np.clip(65536 // max(n_components, 1), 1024, 16384))


PIECE_ELEMENTS = 12288
"""Most elements of the (K, rows) temporaries of a group's small factorisations: a
group of many rows (one or two missing values) is taken in pieces of 12288 / K rows,
so that no temporary is large enough to be a fresh memory mapping (96 KiB)."""


# --- where a block's missing entries are ------------------------------------------------


@dataclass(frozen=True)
class Group:
    """The rows ``start:stop`` of a (sorted) block, each with ``q`` missing values,
    whose entries are ``entries`` (a slice of the block's list): the first missing
    column of every row, then the second, and so on, (q, n_q) when reshaped."""

    q: int
    start: int
    stop: int
    entries: slice


@dataclass(frozen=True)
class Layout:
    """The missing entries of a block whose rows are sorted by their number of missing
    values, listed group by group (:class:`Group`).

    Attributes
    ----------
    rows, columns : ndarray of shape (M,)
        Row and column of each entry.
    by_column : ndarray of shape (M,)
        The entries sorted by column (then row), as positions in the list.
    from_column : ndarray of shape (M,)
        The inverse permutation: each entry's position in ``by_column``.
    bounds : ndarray of shape (d + 1,)
        Feature j's entries are ``by_column[bounds[j]:bounds[j + 1]]``.
    groups : list of Group
        The incomplete rows by number of missing values.
    """

    rows: np.ndarray
    columns: np.ndarray
    by_column: np.ndarray
    from_column: np.ndarray
    bounds: np.ndarray
    groups: list[Group]

    @classmethod
    def of(cls, missing: np.ndarray, counts: np.ndarray) -> Layout:
        """The layout of a boolean mask (n, d), True where missing, whose rows'
        ``counts`` of missing values are ascending."""
        n_features = missing.shape[1]
        rows, columns = np.nonzero(missing)  # by row, then column
        sizes = np.bincount(counts, minlength=1)
        groups, order = [], []
        start, entry = int(sizes[0]), 0
        for q in np.flatnonzero(sizes[1:]) + 1:
            stop = start + int(sizes[q])
            size = int(q) * (stop - start)
            groups.append(Group(int(q), start, stop, slice(entry, entry + size)))
            order.append(np.arange(entry, entry + size).reshape(-1, q).T.ravel())
            start, entry = stop, entry + size
        if order:
            slot_major = np.concatenate(order)
            rows, columns = rows[slot_major], columns[slot_major]
        small = columns.astype(np.int16) if n_features < 2**15 else columns
        by_column = np.argsort(small, kind="stable")  # a radix sort for int16
        from_column = np.empty_like(by_column)
        from_column[by_column] = np.arange(len(by_column))
        bounds = np.zeros(n_features + 1, dtype=np.intp)
        np.cumsum(np.bincount(columns, minlength=n_features), out=bounds[1:])
        return cls(rows, columns, by_column, from_column, bounds, groups)


# --- full and tied covariances -------------------------------------------------------


@dataclass(frozen=True)
class FullTerms:
    """Per-component constants of full (or tied, repeated per component) covariances,
    about the shift c: ``P`` (K, d, d), ``μ̃ = μ − c``, ``P μ̃``, the coefficients of
    ``(x̃ − μ̃)ᵀ P (x̃ − μ̃)`` on the moments ``[x̃_a x̃_b (a <= b); x̃; 1]`` of
    :data:`dem.models.gaussian.MOMENTS` (``x̃ = x − c``), and
    ``log w + log det U − (d/2) log 2π``."""

    shift: np.ndarray
    precision: np.ndarray
    means: np.ndarray
    precision_means: np.ndarray
    coefficients: np.ndarray
    log_constant: np.ndarray

    @classmethod
    def of(cls, params: Params, covariance_type: str) -> FullTerms:
        n_components, n_features = params["means"].shape
        prec_chol = params["precisions_cholesky"]
        precision = gaussian.precisions_from_cholesky(prec_chol, covariance_type)
        precision = np.ascontiguousarray(
            np.broadcast_to(precision, (n_components, n_features, n_features))
        )
        means = params["means"] - params["shift"]
        precision_means = np.einsum("kij,kj->ki", precision, means)
        rows, cols = np.triu_indices(n_features)
        quadratic_means = np.einsum("ki,ki->k", means, precision_means)
        coefficients = np.concatenate(
            [
                precision[:, rows, cols] * np.where(rows == cols, 1.0, 2.0),
                -2.0 * precision_means,
                quadratic_means[:, None],
            ],
            axis=1,
        )
        log_det = gaussian.log_det_cholesky(prec_chol, covariance_type, n_features)
        return cls(
            params["shift"],
            precision,
            means,
            precision_means,
            coefficients,
            log_weights(params) + log_det - 0.5 * n_features * LOG_2PI,
        )


@dataclass
class FullConditionals:
    """What the E-step needs of a block of rows under full (or tied) covariances.

    The block's rows are taken in the order ``order`` (ascending number of missing
    values); every array below is in that order.

    Attributes
    ----------
    order : ndarray of shape (n,)
        The rows of the block, sorted.
    log_prob : ndarray of shape (K, n)
        ``log w_k + log N(x_o | μ_k,o, Σ_k,oo)`` (a scratch buffer).
    xt : ndarray of shape (d + 1, n)
        ``x̃``, the rows minus the shift with 0 where missing, transposed, over a row of ones.
    moments : ndarray of shape (d (d + 1) / 2 + d + 1, n)
        ``[x̃_a x̃_b (a <= b); x̃; 1]`` of each row.
    layout : Layout
    filled : ndarray of shape (K, M)
        ``x̂_k − c`` at each missing entry (the conditional mean under component k).
    gathered : ndarray of shape (d, M)
        ``x̃`` of the row of each entry, entries sorted by column.
    pieces : list of (int, int, int)
        The rows ``start:stop`` with ``q`` missing values each, in the order of ``second``.
    second, second_index : ndarray of shape (L,)
        For each group, component, row and pair (a, b) of its missing columns,
        ``f_a f_b + C_ab`` (``f`` = ``filled``, ``C`` the conditional covariance) and its
        flat index ``k d² + a d + b`` in the scatter (absent unless asked for).
    """

    order: np.ndarray
    log_prob: np.ndarray
    xt: np.ndarray
    moments: np.ndarray
    layout: Layout
    filled: np.ndarray
    gathered: np.ndarray
    pieces: list[tuple[int, int, int]]
    second: np.ndarray | None = None
    second_index: np.ndarray | None = None


def _unrolled_factor(
    block: np.ndarray, v: np.ndarray, with_covariance: bool, scratch: gaussian.Scratch
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """``log det B``, ``vᵀ B⁻¹ v``, ``B⁻¹ v`` and ``B⁻¹`` for a stack of small symmetric
    positive definite ``B`` (K, q, q, n) and vectors ``v`` (K, q, n), by a Cholesky
    factorisation written with whole-array operations (O(q³) of them, none per matrix).
    ``B⁻¹ v`` and ``B⁻¹`` are in the buffers "solved" and "covariance" of ``scratch``."""
    q = v.shape[1]
    solved = scratch("solved", v.shape)
    covariance = scratch("covariance", block.shape)
    if q == 1:
        pivot = block[:, 0, 0]
        np.divide(1.0, pivot, out=covariance[:, 0, 0])
        np.multiply(v, covariance[:, 0], out=solved)
        return np.log(pivot), v[:, 0] * solved[:, 0], solved, covariance
    if q == 2:  # the inverse in closed form
        p00, p10, p11 = block[:, 0, 0], block[:, 1, 0], block[:, 1, 1]
        det = p00 * p11
        det -= p10 * p10
        inverse = 1.0 / det
        np.multiply(p11, inverse, out=covariance[:, 0, 0])
        np.multiply(p00, inverse, out=covariance[:, 1, 1])
        np.multiply(p10, -inverse, out=covariance[:, 0, 1])
        covariance[:, 1, 0] = covariance[:, 0, 1]
        np.multiply(covariance[:, :, 0], v[:, 0:1], out=solved)
        solved += covariance[:, :, 1] * v[:, 1:2]
        quadratic = np.einsum("kqn,kqn->kn", v, solved)
        return np.log(det), quadratic, solved, covariance
    lower: list[list[np.ndarray]] = [[] for _ in range(q)]
    inverse_diagonal = []
    log_det = np.zeros(v[:, 0].shape)
    for j in range(q):
        pivot = block[:, j, j]
        for t in range(j):
            pivot = pivot - lower[j][t] * lower[j][t]
        log_det += np.log(pivot)
        inverse = 1.0 / np.sqrt(pivot)
        inverse_diagonal.append(inverse)
        lower[j].append(1.0 / inverse)
        for i in range(j + 1, q):
            value = block[:, i, j]
            for t in range(j):
                value = value - lower[i][t] * lower[j][t]
            lower[i].append(value * inverse)
    forward: list[np.ndarray] = []  # L⁻¹ v
    for i in range(q):
        value = v[:, i]
        for t in range(i):
            value = value - lower[i][t] * forward[t]
        forward.append(value * inverse_diagonal[i])
    quadratic = forward[0] * forward[0]
    for i in range(1, q):
        quadratic += forward[i] * forward[i]
    # L⁻ᵀ L⁻¹ v
    for i in reversed(range(q)):
        value = forward[i]
        for t in range(i + 1, q):
            value = value - lower[t][i] * solved[:, t]
        np.multiply(value, inverse_diagonal[i], out=solved[:, i])
    if not with_covariance:
        return log_det, quadratic, solved, None
    inv_lower: list[dict[int, np.ndarray]] = [{} for _ in range(q)]  # L⁻¹, [row][col]
    for j in range(q):
        inv_lower[j][j] = inverse_diagonal[j]
        for i in range(j + 1, q):
            value = lower[i][j] * inv_lower[j][j]
            for t in range(j + 1, i):
                value = value + lower[i][t] * inv_lower[t][j]
            inv_lower[i][j] = -value * inverse_diagonal[i]
    for a in range(q):
        for b in range(a, q):
            value = inv_lower[b][a] * inv_lower[b][b]
            for t in range(b + 1, q):
                value = value + inv_lower[t][a] * inv_lower[t][b]
            covariance[:, a, b] = value
            covariance[:, b, a] = value
    return log_det, quadratic, solved, covariance


def _lapack_factor(
    block: np.ndarray, v: np.ndarray, with_covariance: bool, scratch: gaussian.Scratch
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`_unrolled_factor` by batched LAPACK (large ``q``, few rows)."""
    stack = np.moveaxis(block, -1, 1)  # (K, n, q, q)
    factor = np.linalg.cholesky(stack)
    log_det = 2.0 * np.log(np.diagonal(factor, axis1=-2, axis2=-1)).sum(axis=-1)
    inverse = np.linalg.inv(stack)
    vectors = np.moveaxis(v, -1, 1)  # (K, n, q)
    solved = np.matmul(inverse, vectors[..., None])[..., 0]
    quadratic = np.einsum("...q,...q->...", solved, vectors)
    covariance = np.moveaxis(inverse, 1, -1) if with_covariance else None
    return log_det, quadratic, np.moveaxis(solved, 1, -1), covariance


def full_conditionals(
    xt: np.ndarray, terms: FullTerms, scratch: gaussian.Scratch, second: bool = True
) -> FullConditionals:
    """:class:`FullConditionals` of a block ``xt`` (d + 1, n) from
    :func:`~dem.models.gaussian.transposed_blocks` (NaN where missing).

    With ``u = x̃ − μ̃`` and ``e = μ̃`` on the missing coordinates (0 elsewhere), the
    zero-filled ``y = u + e`` has ``yᵀPy = uᵀPu + 2 eᵀPu + eᵀPe``: ``uᵀPu`` is one
    product of the moments with the coefficients of every component (as for complete
    rows), ``(P x̃)_m`` one product per feature over its missing entries, and the rest
    concerns the missing blocks only (``v = (P y)_m``, ``C = P_mm⁻¹``):
    ``(x_o − μ_o)ᵀ Σ_oo⁻¹ (x_o − μ_o) = yᵀPy − vᵀCv``, ``log det Σ_oo = log det Σ +
    log det P_mm`` and ``x̂_m − μ_m = −C v``. ``second`` also gathers the conditional
    second moments of the missing blocks (the statistics need them; densities do not).
    """
    n_features, n_rows = xt.shape[0] - 1, xt.shape[1]
    n_components = len(terms.means)
    counts = np.count_nonzero(np.isnan(xt[:n_features]), axis=0)
    order = np.argsort(counts.astype(np.int16), kind="stable")
    xt = np.take(xt, order, axis=1, out=scratch("sorted", xt.shape), mode="clip")
    counts = counts[order]
    centred = xt[:n_features]
    missing_rows = np.isnan(centred.T)  # (n, d), C-ordered
    np.copyto(centred, 0.0, where=missing_rows.T)
    moments = gaussian.MOMENTS["full"](xt, scratch)
    log_prob = np.matmul(
        terms.coefficients, moments, out=scratch("log_prob", (n_components, n_rows))
    )  # uᵀPu
    log_prob *= -0.5
    log_prob += terms.log_constant[:, None]
    layout = Layout.of(missing_rows, counts)
    n_entries = len(layout.rows)
    shape = (n_components, n_entries)
    gathered = np.take(
        centred,
        layout.rows[layout.by_column],
        axis=1,
        out=scratch("gathered", (n_features, n_entries)),
        mode="clip",
    )
    filled = scratch("filled", shape)
    if not n_entries:
        return FullConditionals(order, log_prob, xt, moments, layout, filled, gathered, [])
    # (P u)_m = (P x̃)_m − (P μ̃)_m at every missing entry, feature by feature
    by_column = scratch("px", shape)
    for j in range(n_features):
        piece = slice(layout.bounds[j], layout.bounds[j + 1])
        if piece.start < piece.stop:
            np.matmul(terms.precision[:, j, :], gathered[:, piece], out=by_column[:, piece])
    pu = np.take(by_column, layout.from_column, axis=1, out=scratch("pu", shape), mode="clip")
    pu -= np.take(
        terms.precision_means, layout.columns, axis=1, out=scratch("pmu", shape), mode="clip"
    )
    flat_precision = terms.precision.reshape(n_components, -1)
    offsets = (np.arange(n_components) * n_features * n_features)[:, None, None, None]
    second_values = second_index = None
    if second:
        size = n_components * sum(g.q * g.q * (g.stop - g.start) for g in layout.groups)
        second_values = scratch("second", (size,))
        second_index = scratch("second_index", (size,), np.intp)
    start = 0
    pieces = []
    for group in layout.groups:
        q, n_group = group.q, group.stop - group.start
        all_columns = layout.columns[group.entries].reshape(q, n_group)
        all_pu = pu[:, group.entries].reshape(n_components, q, n_group)
        all_filled = filled[:, group.entries].reshape(n_components, q, n_group)
        step = max(1, PIECE_ELEMENTS // n_components) if q <= 2 else n_group
        for first in range(0, n_group, step):
            last = min(first + step, n_group)
            rows = slice(group.start + first, group.start + last)
            pieces.append((rows.start, rows.stop, q))
            columns = all_columns[:, first:last]
            flat = columns[:, None, :] * n_features + columns[None, :, :]  # (q, q, n)
            small = (n_components, q, last - first)
            means = np.take(  # μ̃_m (K, q, n)
                terms.means, columns, axis=1, out=scratch("group_means", small), mode="clip"
            )
            pu_m = all_pu[:, :, first:last]
            block = np.take(  # P_mm (K, q, q, n)
                flat_precision,
                flat,
                axis=1,
                out=scratch("block", (*small[:2], *small[1:])),
                mode="clip",
            )
            pe = np.multiply(block[:, :, 0], means[:, None, 0], out=scratch("pe", small))
            for b in range(1, q):  # (P e)_m = P_mm μ̃_m
                pe += np.multiply(block[:, :, b], means[:, None, b], out=scratch("term", small))
            v = np.add(pu_m, pe, out=scratch("v", small))  # (P y)_m
            unrolled = q <= 4 or (
                q <= UNROLLED_MAX and n_components * (last - first) >= LAPACK_ROWS * q
            )
            factor = _unrolled_factor if unrolled else _lapack_factor
            log_det, quadratic, solved, covariance = factor(block, v, second, scratch)
            # 2 eᵀPu + eᵀPe − vᵀCv + log det P_mm
            pe += pu_m
            pe += pu_m
            correction = np.einsum("kqn,kqn->kn", means, pe)
            correction += log_det - quadratic
            correction *= -0.5
            correction += 0.5 * q * LOG_2PI
            log_prob[:, rows] += correction
            f = all_filled[:, :, first:last]
            np.subtract(means, solved, out=f)  # x̂_m − c (a view of filled)
            if second_values is None or second_index is None or covariance is None:
                continue
            size = n_components * q * q * (last - first)
            out = second_values[start : start + size].reshape(block.shape)
            np.multiply(f[:, :, None], f[:, None, :], out=out)
            out += covariance
            np.add(offsets, flat, out=second_index[start : start + size].reshape(out.shape))
            start += size
    return FullConditionals(
        order, log_prob, xt, moments, layout, filled, gathered, pieces, second_values, second_index
    )


def full_statistics(
    conditionals: FullConditionals, resp: np.ndarray, scratch: gaussian.Scratch
) -> tuple[np.ndarray, np.ndarray]:
    """Σ r E[x − c] (K, d) and Σ r E[(x − c)(x − c)ᵀ] (K, d, d) of a block
    (``resp`` (K, n) in the order of ``conditionals``).

    With ``E[x − c] = x̃ + f`` (``f`` = ``filled``, nonzero only where missing), the
    scatter is ``Σ r x̃x̃ᵀ`` (one product with the packed moments) ``+ B + Bᵀ`` with
    ``B = Σ r x̃ fᵀ`` (a product per feature over its missing entries) plus, on each
    row's missing block, ``Σ r (f fᵀ + C)`` (one bincount).
    """
    layout = conditionals.layout
    n_components, n_features = len(resp), conditionals.xt.shape[0] - 1
    sums = resp @ conditionals.moments.T
    sum_x = sums[:, -1 - n_features : -1].copy()
    scatter = gaussian.unpack_scatter(sums[:, : -1 - n_features], "full", n_features)
    n_entries = len(layout.rows)
    if not n_entries:
        return sum_x, scatter
    shape = (n_components, n_entries)
    weighted = np.take(resp, layout.rows, axis=1, out=scratch("resp_entries", shape), mode="clip")
    weighted *= conditionals.filled  # r f, entries by row
    by_column = np.take(weighted, layout.by_column, axis=1, out=scratch("rf", shape), mode="clip")
    cross = np.zeros((n_components, n_features, n_features))
    for j in range(n_features):
        piece = slice(layout.bounds[j], layout.bounds[j + 1])
        if piece.start < piece.stop:
            sum_x[:, j] += by_column[:, piece].sum(axis=1)
            cross[:, :, j] = by_column[:, piece] @ conditionals.gathered[:, piece].T
    scatter += cross
    scatter += cross.transpose(0, 2, 1)
    assert conditionals.second is not None and conditionals.second_index is not None
    values = scratch("second_weighted", conditionals.second.shape)
    start = 0
    for first, last, q in conditionals.pieces:
        size = n_components * q * q * (last - first)
        np.multiply(
            conditionals.second[start : start + size].reshape(n_components, -1, last - first),
            resp[:, None, first:last],
            out=values[start : start + size].reshape(n_components, -1, last - first),
        )
        start += size
    scatter += np.bincount(
        conditionals.second_index, values, minlength=n_components * n_features * n_features
    ).reshape(n_components, n_features, n_features)
    return sum_x, scatter


# --- diagonal and spherical covariances ----------------------------------------------


def variances(params: Params, covariance_type: str, n_features: int) -> np.ndarray:
    """Per-coordinate variances (K, d) of diagonal or spherical covariances."""
    covariances = params["covariances"]
    if covariance_type == "spherical":
        return np.repeat(covariances[:, None], n_features, axis=1)
    return np.asarray(covariances)


@dataclass(frozen=True)
class DiagTerms:
    """The coefficients (K, 3d) of a diagonal (or spherical) mixture's log densities on
    the features ``[x̃²; x̃; m]`` of a row (``m`` its missing mask), and the constant
    ``log w + Σ_j (log λ_j − λ_j μ̃_j² − log 2π) / 2`` (λ the precisions) of a complete
    row; ``means`` ``μ̃ = μ − c`` and the variances."""

    shift: np.ndarray
    means: np.ndarray
    variances: np.ndarray
    coefficients: np.ndarray
    constant: np.ndarray

    @classmethod
    def of(cls, params: Params, covariance_type: str) -> DiagTerms:
        means = params["means"] - params["shift"]
        var = variances(params, covariance_type, means.shape[1])
        precision = 1.0 / var
        per_feature = 0.5 * (np.log(precision) - precision * means * means - LOG_2PI)
        coefficients = np.concatenate([-0.5 * precision, precision * means, -per_feature], axis=1)
        return cls(
            params["shift"],
            means,
            var,
            coefficients,
            log_weights(params) + per_feature.sum(axis=1),
        )


def diag_features(xt: np.ndarray, scratch: gaussian.Scratch) -> np.ndarray:
    """``[x̃²; x̃; m]`` (3d, n) of a block ``xt`` (d + 1, n) with NaN where missing."""
    n_features = xt.shape[0] - 1
    features = scratch("diag_features", (3 * n_features, xt.shape[1]))
    centred = xt[:n_features]
    missing = np.isnan(centred)
    np.copyto(features[2 * n_features :], missing)
    np.copyto(centred, 0.0, where=missing)
    np.copyto(features[n_features : 2 * n_features], centred)
    np.multiply(centred, centred, out=features[:n_features])
    return features


def diag_log_prob(features: np.ndarray, terms: DiagTerms, scratch: gaussian.Scratch) -> np.ndarray:
    """``log w_k + log N(x_o | μ_k,o, Σ_k,oo)`` (K, n) from :func:`diag_features`."""
    log_prob = np.matmul(
        terms.coefficients, features, out=scratch("log_prob", (len(terms.means), features.shape[1]))
    )
    log_prob += terms.constant[:, None]
    return log_prob


def diag_statistics(
    features: np.ndarray, resp: np.ndarray, terms: DiagTerms
) -> tuple[np.ndarray, np.ndarray]:
    """Σ r E[x − c] and Σ r E[(x − c)²] (K, d) of a block: the missing coordinates
    have conditional mean μ̃ and variance σ² under each component."""
    n_features = len(terms.shift)
    sums = resp @ features.T
    unseen = sums[:, 2 * n_features :]  # Σ r over the rows missing j
    sum_x = sums[:, n_features : 2 * n_features] + unseen * terms.means
    scatter = sums[:, :n_features] + unseen * (terms.means * terms.means + terms.variances)
    return sum_x, scatter
