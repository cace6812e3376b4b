"""Gaussian mixtures with missing values (NaN), handled exactly by EM.

NaN entries are missing at random. A row's responsibilities come from the marginal
density of its observed coordinates o, ``w_k N(x_o | μ_k,o, Σ_k,oo)``; the M-step takes
the expected sufficient statistics: each missing block replaced by its conditional mean
``x̂_k,m = E[x_m | x_o, k] = μ_k,m + Σ_k,mo Σ_k,oo⁻¹ (x_o − μ_k,o)`` and each scatter
completed by the conditional covariance ``C_k,m = Σ_k,mm − Σ_k,mo Σ_k,oo⁻¹ Σ_k,om``
(Ghahramani & Jordan 1994). The statistics are those of :mod:`.kernels` (``resp_sum``,
``sum_x``, ``scatter`` about the shift), so the M-step is the mixture's own.

Full and tied covariances work with the precision ``P = Σ⁻¹`` and only the small
missing block: with ``y = x − μ`` set to 0 where missing and ``v = (P y)_m``,

- ``C_m = (P_mm)⁻¹`` and ``x̂_m − μ_m = −C_m v``;
- ``(x_o − μ_o)ᵀ Σ_oo⁻¹ (x_o − μ_o) = yᵀ P y − vᵀ C_m v`` (the Schur complement);
- ``log det Σ_oo = log det Σ + log det P_mm``.

So a block of rows costs one product ``Y P`` per component (n × d × d) for every row,
whatever its pattern, and the factorisations concern only the missing blocks
(``|m| × |m|``). Rows are grouped by missingness pattern (``np.unique`` on the rows
of the mask) and patterns by their number of missing values, so each group is a few
batched products over all its patterns and rows at once, not a loop over patterns.
Diagonal and spherical covariances need no grouping: the missing coordinates are
independent of the observed ones given the component (``x̂_m = μ_m``, ``C_m`` the
variances), and everything is a product of the mask with the data.

Rows must have at least one observed value here; the model
(:class:`MarginalMixtureModel`) leaves rows with none out of the statistics and counts
them (``n_unobserved``), and the estimator warns once per fit.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from dem.model import Block, Params, Stats, add_stats
from dem.models import gaussian
from dem.models.mixture import kernels
from dem.models.mixture.model import MixtureModel, log_weights
from dem.models.scratch import thread_scratch

LOG_2PI = float(np.log(2.0 * np.pi))
BLOCK_ROWS = 8192
"""Rows per block of the pattern kernels (a few (K, rows, d) float64 arrays)."""
GATHER_BUDGET = 1 << 22
"""Most elements of the per-row conditional covariances (K, rows, q, q) held at once."""
MISSING_OPTIONS = ("raise", "marginalize")


class UnobservedRowsWarning(UserWarning):
    """Rows with no observed value were left out of a fit with missing values."""


# --- the pattern groups of a block ---------------------------------------------------


@dataclass(frozen=True)
class PatternGroup:
    """The rows of a block whose patterns have ``q`` missing values (``q`` >= 1).

    Attributes
    ----------
    rows : ndarray of shape (n_g,)
        Row numbers in the block.
    columns : ndarray of shape (P, q)
        The missing columns of each pattern of the group (ascending).
    pattern : ndarray of shape (n_g,)
        Each row's pattern (an index into ``columns``).
    """

    rows: np.ndarray
    columns: np.ndarray
    pattern: np.ndarray


def pattern_groups(missing: np.ndarray) -> list[PatternGroup]:
    """Rows of a boolean mask (True = missing) grouped by pattern, patterns by their
    number of missing values; complete rows are in no group."""
    n_features = missing.shape[1]
    if n_features < 63:  # each pattern as one integer: a fast one-dimensional unique
        codes = missing @ (np.int64(1) << np.arange(n_features, dtype=np.int64))
        _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    else:
        packed = np.packbits(missing, axis=1)
        _, first, inverse = np.unique(packed, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    patterns = missing[first]
    sizes = patterns.sum(axis=1)
    groups = []
    local = np.empty(len(patterns), dtype=np.intp)
    row_sizes = sizes[inverse]
    for q in np.unique(sizes[sizes > 0]):
        members = np.flatnonzero(sizes == q)
        local[members] = np.arange(len(members))
        rows = np.flatnonzero(row_sizes == q)
        columns = np.nonzero(patterns[members])[1].reshape(len(members), int(q))
        groups.append(PatternGroup(rows, columns, local[inverse[rows]]))
    return groups


# --- full and tied covariances -------------------------------------------------------


@dataclass(frozen=True)
class FullTerms:
    """Per-component constants of full (or tied, repeated per component) covariances,
    about the shift c: ``P`` (K, d, d), ``μ̃ = μ − c``, ``P μ̃``, ``μ̃ᵀ P μ̃``, the
    coefficients of ``(x̃ − μ̃)ᵀ P (x̃ − μ̃)`` on the moments ``[x̃_a x̃_b (a <= b); x̃; 1]``
    of :data:`dem.models.gaussian.MOMENTS` (``x̃ = x − c``), and
    ``log w + log det U − (d/2) log 2π``."""

    shift: np.ndarray
    precision: np.ndarray
    means: np.ndarray
    precision_means: np.ndarray
    quadratic_means: np.ndarray
    coefficients: np.ndarray
    log_constant: np.ndarray

    @classmethod
    def of(cls, params: Params, covariance_type: str) -> FullTerms:
        n_components, n_features = params["means"].shape
        prec_chol = params["precisions_cholesky"]
        precision = gaussian.precisions_from_cholesky(prec_chol, covariance_type)
        precision = np.broadcast_to(precision, (n_components, n_features, n_features))
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
            quadratic_means,
            coefficients,
            log_weights(params) + log_det - 0.5 * n_features * LOG_2PI,
        )


@dataclass
class FullConditionals:
    """What the E-step needs of a block of rows under full (or tied) covariances.

    Attributes
    ----------
    log_prob : ndarray of shape (K, n)
        ``log w_k + log N(x_o | μ_k,o, Σ_k,oo)``.
    centred : ndarray of shape (n, d)
        ``x̃``: the rows minus the shift, 0 where missing.
    moments : ndarray of shape (d (d + 1) / 2 + d + 1, n)
        ``[x̃_a x̃_b (a <= b); x̃; 1]`` of each row (a scratch buffer).
    filled : ndarray of shape (K, n, d)
        ``x̂_k − c`` where missing (the conditional mean under component k), 0 where
        observed: the rows' expected values are ``x̃ + filled[k]``.
    groups : list of PatternGroup
    covariances : list of ndarray
        For each group, the conditional covariances ``C_k,m`` of its patterns (K, P, q, q).
    """

    log_prob: np.ndarray
    centred: np.ndarray
    moments: np.ndarray
    filled: np.ndarray
    groups: list[PatternGroup]
    covariances: list[np.ndarray]


def _row_pieces(n_rows: int, per_row: int) -> Iterator[slice]:
    step = max(1, GATHER_BUDGET // max(per_row, 1))
    for start in range(0, n_rows, step):
        yield slice(start, start + step)


def full_conditionals(
    x: np.ndarray, missing: np.ndarray, terms: FullTerms, scratch: gaussian.Scratch
) -> FullConditionals:
    """:class:`FullConditionals` of rows ``x`` (n, d; any values where ``missing``).

    With ``u = x̃ − μ̃`` and ``e = μ̃`` on the missing coordinates (0 elsewhere), the
    zero-filled ``y = u + e`` has ``yᵀPy = uᵀPu + 2 eᵀPu + eᵀPe``: ``uᵀPu`` is one
    product of the moments with the coefficients of every component (as for complete
    rows), and the rest needs ``P x̃`` only on the missing coordinates (a product per
    feature over the rows missing it).
    """
    xt = next(gaussian.transposed_blocks(x, terms.shift, np.float64, len(x), scratch))
    n_features = len(x[0])
    np.copyto(xt[:n_features], 0.0, where=missing.T)
    centred = xt[:n_features].T
    moments = gaussian.MOMENTS["full"](xt, scratch)
    log_prob = np.matmul(
        terms.coefficients, moments, out=scratch("log_prob", (len(terms.means), len(x)))
    )  # uᵀPu
    log_prob *= -0.5
    log_prob += terms.log_constant[:, None]
    filled = scratch("filled", (len(terms.means), *x.shape))
    filled.fill(0.0)
    groups = pattern_groups(missing)
    if not groups:
        return FullConditionals(log_prob, centred, moments, filled, groups, [])
    # (P x̃)_j on the rows missing j, feature by feature
    px = scratch("px", filled.shape)
    for j in np.flatnonzero(missing.any(axis=0)):
        rows = np.flatnonzero(missing[:, j])
        px[:, rows, j] = terms.precision[:, j, :] @ centred[rows].T
    covariances = []
    for group in groups:
        q = group.columns.shape[1]
        columns = group.columns
        block = terms.precision[:, columns[:, :, None], columns[:, None, :]]  # (K, P, q, q)
        factor = np.linalg.cholesky(block)
        log_det_mm = 2.0 * np.log(np.diagonal(factor, axis1=-2, axis2=-1)).sum(axis=-1)
        conditional = np.linalg.inv(block)
        covariances.append(conditional)
        means_m = terms.means[:, columns]  # μ̃_m (K, P, q)
        precision_means_m = terms.precision_means[:, columns]  # (P μ̃)_m
        block_means = np.matmul(block, means_m[..., None])[..., 0]  # P_mm μ̃_m = (P e)_m
        quadratic_e = np.einsum("kpq,kpq->kp", means_m, block_means)  # eᵀPe
        for piece in _row_pieces(len(group.rows), len(terms.means) * q * q):
            rows, pattern = group.rows[piece], group.pattern[piece]
            where = columns[pattern]  # (n, q)
            pu = px[:, rows[:, None], where] - precision_means_m[:, pattern]  # (P u)_m
            v = pu + block_means[:, pattern]  # (P y)_m
            if q == 1:
                delta = -conditional[:, pattern, 0] * v
            else:
                delta = -np.matmul(conditional[:, pattern], v[..., None])[..., 0]
            # yᵀPy − vᵀ C v, with vᵀ C v = −v·δ
            correction = (
                2.0 * np.einsum("knq,knq->kn", means_m[:, pattern], pu)
                + quadratic_e[:, pattern]
                + np.einsum("knq,knq->kn", v, delta)
            )
            log_prob[:, rows] -= 0.5 * correction + 0.5 * log_det_mm[:, pattern] - 0.5 * q * LOG_2PI
            filled[:, rows[:, None], where] = means_m[:, pattern] + delta
    return FullConditionals(log_prob, centred, moments, filled, groups, covariances)


def _full_statistics(
    conditionals: FullConditionals, missing: np.ndarray, resp: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Σ r E[x − c] (K, d) and Σ r E[(x − c)(x − c)ᵀ] (K, d, d) of a block.

    With ``E[x − c] = x̃ + f`` (``f`` = ``filled``, nonzero only where missing), the
    scatter is ``Σ r x̃x̃ᵀ`` (one product with the packed moments) ``+ B + Bᵀ + Σ r f fᵀ``
    with ``B = Σ r x̃ fᵀ`` (both a product per feature over the rows missing it) plus
    the conditional covariances of the missing blocks.
    """
    centred, filled = conditionals.centred, conditionals.filled
    n_components, n_features = len(resp), centred.shape[1]
    sums = resp @ conditionals.moments.T
    sum_x = sums[:, -1 - n_features : -1] + np.matmul(resp[:, None, :], filled)[:, 0]
    scatter = gaussian.unpack_scatter(sums[:, : -1 - n_features], "full", n_features)
    cross = np.zeros((n_components, n_features, n_features))
    for j in np.flatnonzero(missing.any(axis=0)):
        rows = np.flatnonzero(missing[:, j])
        weighted = resp[:, rows] * filled[:, rows, j]  # (K, n_j)
        cross[:, :, j] = weighted @ centred[rows]
        scatter[:, :, j] += np.matmul(weighted[:, None, :], filled[:, rows, :])[:, 0]
    scatter += cross + cross.transpose(0, 2, 1)
    scatter += _conditional_scatter(conditionals, resp, n_features)
    return sum_x, scatter


def _conditional_scatter(
    conditionals: FullConditionals, resp: np.ndarray, n_features: int
) -> np.ndarray:
    """Σ_p (Σ_{i in p} r_ik) C_k,m(p), placed in the missing block of each pattern: (K, d, d)."""
    n_components = len(resp)
    total = np.zeros(n_components * n_features * n_features)
    offsets = (np.arange(n_components) * n_features * n_features)[:, None, None, None]
    for group, conditional in zip(conditionals.groups, conditionals.covariances, strict=True):
        n_patterns = len(group.columns)
        index = (np.arange(n_components) * n_patterns)[:, None] + group.pattern[None]
        mass = np.bincount(
            index.ravel(), resp[:, group.rows].ravel(), minlength=n_components * n_patterns
        ).reshape(n_components, n_patterns)
        columns = group.columns
        flat = offsets + (columns[:, :, None] * n_features + columns[:, None, :])[None]
        weighted = mass[:, :, None, None] * conditional
        total += np.bincount(
            np.broadcast_to(flat, weighted.shape).ravel(), weighted.ravel(), minlength=total.size
        )
    return total.reshape(n_components, n_features, n_features)


# --- diagonal and spherical covariances ----------------------------------------------


def _variances(params: Params, covariance_type: str, n_features: int) -> np.ndarray:
    """Per-coordinate variances (K, d) of diagonal or spherical covariances."""
    covariances = params["covariances"]
    if covariance_type == "spherical":
        return np.repeat(covariances[:, None], n_features, axis=1)
    return np.asarray(covariances)


def diag_log_prob(
    x: np.ndarray, missing: np.ndarray, params: Params, covariance_type: str
) -> np.ndarray:
    """``log w_k + log N(x_o | μ_k,o, Σ_k,oo)`` (K, n) for diagonal or spherical Σ_k."""
    means, shift = params["means"] - params["shift"], params["shift"]
    n_features = means.shape[1]
    precision = 1.0 / _variances(params, covariance_type, n_features)
    observed = (~missing).astype(np.float64)
    xc = np.where(missing, 0.0, x - shift)
    quad = (
        (xc * xc) @ precision.T
        - 2.0 * xc @ (means * precision).T
        + observed @ (means * means * precision).T
    )
    log_det = observed @ (0.5 * np.log(precision)).T
    return (
        log_weights(params)[:, None]
        + (log_det - 0.5 * quad - 0.5 * observed.sum(axis=1)[:, None] * LOG_2PI).T
    )


# --- statistics, densities and conditional means of rows with some value observed ------


def statistics(
    x: np.ndarray,
    params: Params,
    covariance_type: str,
    sample_weight: np.ndarray | None = None,
) -> Stats:
    """The mixture's sufficient statistics (:mod:`.kernels`) of rows with NaN entries.

    Every row must have at least one observed value. ``sample_weight`` (n,) multiplies
    each row's contribution (absent: ones): ``n`` is their sum and ``loglik`` the
    weighted sum of the rows' observed-data log-likelihoods.
    """
    n_components, n_features = params["means"].shape
    resp_sum = np.zeros(n_components)
    sum_x = np.zeros((n_components, n_features))
    scatter = np.zeros(
        {
            "full": (n_components, n_features, n_features),
            "tied": (n_features, n_features),
        }.get(covariance_type, (n_components, n_features))
    )
    loglik = 0.0
    total = 0.0
    terms = FullTerms.of(params, covariance_type) if covariance_type in ("full", "tied") else None
    scratch = thread_scratch("mixture_missing")  # the statistics are fresh arrays
    for start in range(0, len(x), BLOCK_ROWS):
        rows = np.asarray(x[start : start + BLOCK_ROWS], dtype=np.float64)
        missing = np.isnan(rows)
        weight = (
            np.ones(len(rows))
            if sample_weight is None
            else np.asarray(sample_weight[start : start + BLOCK_ROWS], dtype=np.float64)
        )
        if terms is not None:
            conditionals = full_conditionals(rows, missing, terms, scratch)
            log_prob = conditionals.log_prob
        else:
            log_prob = diag_log_prob(rows, missing, params, covariance_type)
        resp, log_norm = kernels.responsibilities(log_prob)
        resp *= weight
        loglik += float(weight @ log_norm)
        total += float(weight.sum())
        resp_sum += resp.sum(axis=1)
        if terms is not None:
            block_x, block = _full_statistics(conditionals, missing, resp)
            sum_x += block_x
            scatter += block.sum(axis=0) if covariance_type == "tied" else block
        else:
            means = params["means"] - params["shift"]
            variances = _variances(params, covariance_type, n_features)
            xc = np.where(missing, 0.0, rows - params["shift"])
            unseen = resp @ missing.astype(np.float64)  # Σ r over the rows missing j
            sum_x += resp @ xc + unseen * means
            scatter += resp @ (xc * xc) + unseen * (means * means + variances)
    return {
        "n": np.float64(total),
        "loglik": np.float64(loglik),
        "resp_sum": resp_sum,
        "sum_x": sum_x,
        "scatter": scatter,
    }


def _with_shift(params: Params) -> Params:
    """``params`` with a shift (the fitted parameters carry none: the mixture mean)."""
    return params if "shift" in params else {**params, "shift": kernels.mixture_mean(params)}


def log_prob(x: np.ndarray, params: Params, covariance_type: str) -> np.ndarray:
    """``log w_k + log N(x_o | μ_k,o, Σ_k,oo)`` of each row (n, K); a row with no
    observed value gets ``log w_k`` (the density of nothing is 1)."""
    params = _with_shift(params)
    terms = FullTerms.of(params, covariance_type) if covariance_type in ("full", "tied") else None
    scratch = gaussian.Scratch()
    out = np.empty((len(x), len(params["means"])))
    for start in range(0, len(x), BLOCK_ROWS):
        rows = np.asarray(x[start : start + BLOCK_ROWS], dtype=np.float64)
        missing = np.isnan(rows)
        if terms is not None:
            block = full_conditionals(rows, missing, terms, scratch).log_prob
        else:
            block = diag_log_prob(rows, missing, params, covariance_type)
        out[start : start + len(rows)] = block.T
    return out


def conditional_means(x: np.ndarray, params: Params, covariance_type: str) -> np.ndarray:
    """``x`` with each missing entry replaced by ``E[x_m | x_o] = Σ_k r_k x̂_k,m``.

    ``r_k`` are the row's responsibilities given its observed values and ``x̂_k,m`` the
    conditional mean under component k (for diagonal and spherical covariances,
    ``μ_k,m``). A row with no observed value gets the mixture mean ``Σ_k w_k μ_k``.
    Returns a float64 copy.
    """
    params = _with_shift(params)
    terms = FullTerms.of(params, covariance_type) if covariance_type in ("full", "tied") else None
    scratch = gaussian.Scratch()
    out = np.array(x, dtype=np.float64, copy=True)
    for start in range(0, len(x), BLOCK_ROWS):
        rows = out[start : start + BLOCK_ROWS]
        missing = np.isnan(rows)
        if not missing.any():
            continue
        if terms is not None:
            conditionals = full_conditionals(rows, missing, terms, scratch)
            resp, _ = kernels.responsibilities(conditionals.log_prob)
            expected = np.einsum("kn,knd->nd", resp, conditionals.filled) + params["shift"]
        else:
            log_prob = diag_log_prob(rows, missing, params, covariance_type)
            resp, _ = kernels.responsibilities(log_prob)
            expected = resp.T @ params["means"]
        rows[missing] = expected[missing]
    return out


# --- the model the engine calls -------------------------------------------------------


@dataclass(frozen=True)
class MarginalMixtureModel(MixtureModel):
    """The Gaussian mixture with NaN entries missing at random (``missing="marginalize"``).

    Complete rows of unweighted chunks take :class:`MixtureModel`'s fast path; rows with
    NaN (and every row of a weighted chunk) take :func:`statistics`. Rows with no
    observed value (or weight 0) are left out; the statistics count the former in
    ``n_unobserved``, and the M-step warns once per model
    (:class:`UnobservedRowsWarning`).
    """

    free_energy: ClassVar[bool] = False  # the Gaussian expected_loglik misses terms
    missing_ok: ClassVar[frozenset[str]] = frozenset({"X"})
    _warned: set[int] = field(default_factory=set, compare=False, repr=False)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "missing": "marginalize"}

    def e_step_many(self, block: Block, runs: Sequence[Params]) -> list[Stats]:
        x = block["X"]
        weight = block.get("sample_weight")
        missing = np.isnan(x)
        unseen = missing.all(axis=1)
        keep = ~unseen if weight is None else ~unseen & (np.asarray(weight) > 0)
        n_unobserved = np.float64(
            np.count_nonzero(unseen if weight is None else unseen & (np.asarray(weight) > 0))
        )
        if weight is None and not missing.any():
            fast = super().e_step_many(block, runs)
            return [{**s, "n_unobserved": n_unobserved} for s in fast]
        complete = ~missing.any(axis=1) & keep if weight is None else np.zeros(len(x), bool)
        partial = keep & ~complete
        rows = x[partial]
        rows_weight = None if weight is None else np.asarray(weight, dtype=np.float64)[partial]
        fast_stats = super().e_step_many({"X": x[complete]}, runs) if complete.any() else None
        results = []
        for index, params in enumerate(runs):
            stats = statistics(rows, params, self.covariance_type, rows_weight)
            if fast_stats is not None:
                stats = add_stats(stats, fast_stats[index])
            stats["n_unobserved"] = n_unobserved
            results.append(stats)
        return results

    def m_step(self, stats: Stats, params: Params) -> Params:
        unobserved = round(float(stats.get("n_unobserved", 0.0)))
        if unobserved and unobserved not in self._warned:
            self._warned.add(unobserved)
            warnings.warn(
                f"{unobserved} row(s) of X have no observed value (every entry NaN); they "
                "contribute nothing to the fit. Drop them to silence this warning.",
                UnobservedRowsWarning,
                stacklevel=2,
            )
        return super().m_step(stats, params)

    def weighted_log_prob(self, x: np.ndarray, params: Params) -> np.ndarray:
        """log(w_k) + log N(x_o | mu_k,o, Sigma_k,oo) of each row's observed values (n, K)."""
        missing = np.isnan(x).any(axis=1)
        if not missing.any():
            return super().weighted_log_prob(x, params)
        out = np.empty((len(x), self.n_components))
        out[missing] = log_prob(x[missing], params, self.covariance_type)
        if not missing.all():
            out[~missing] = super().weighted_log_prob(x[~missing], params)
        return out
