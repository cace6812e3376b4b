"""Censored (Tobit) regression by EM: the E-step, M-step, standard errors, and the estimator.

The model is the linear regression ``y* = x β + σ ε`` with standard normal ``ε``, where
the latent ``y*`` of each row is either observed exactly or only known to lie in an
interval ``[lower, upper]`` (one end may be infinite: left or right censoring).

Every row is reduced to such an interval (see :func:`interval_bounds`; an exact value
is the interval ``[y, y]``). The E-step replaces ``y*`` by its conditional moments
given the interval, which are truncated-normal moments computed from ``log Φ`` and the
inverse Mills ratio (:func:`truncated_normal`), stable for any standardised limits. The
statistics of one chunk, taken about the current linear predictor ``μ = x β``, are

- ``sum_x_resid`` = Σ x E[y* − μ]  (a matrix-vector product per chunk),
- ``sum_resid_sq`` = Σ E[(y* − μ)²],
- ``n`` and ``loglik``,
- ``sum_xxT`` = Σ x xᵀ, only in the first pass: the M-step stores it in the parameters
  (as ``mean_xxT``), and later E-steps, which see it there, skip it.

With an intercept, ``x`` is ``(1, x_1, ..., x_p)`` throughout. The M-step is closed
form: ``β ← β + (XᵀX)⁻¹ Σ x E[y* − μ]`` and ``σ² ← (Σ E[(y* − μ)²] − Δβᵀ Σ x E[y* − μ]) / n``,
which is the usual ``(XᵀX)⁻¹ Xᵀ E[y*]`` update written about ``μ`` so nothing cancels.

Standard errors of ``(β, log σ)`` come from the analytic Hessian of the observed
log-likelihood at the optimum, summed over chunks in one more pass
(:meth:`CensoredModel.information`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any, ClassVar, NamedTuple

import numpy as np
import xarray as xr
from scipy import linalg, stats
from scipy.special import erfcx, log_ndtr, ndtr
from sklearn.base import RegressorMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import column_or_1d

from dem.data import Samples, as_samples, sample_rows
from dem.display import HTMLRepr
from dem.engine import map_reduce, prepare
from dem.estimator import (
    EMEstimator,
    NotFittedError,
    RandomState,
    per_sample,
    per_sample_aligned,
)
from dem.model import Block, Params, Stats, add_stats
from dem.models.scratch import Scratch, thread_scratch

# Rows per block of the kernels: their buffers (in this thread's scratch "censored",
# kept from chunk to chunk) are 128 KiB each; smaller blocks cost more in per-call
# overhead than they gain in cache.
BLOCK_ROWS = 16_384
SCRATCH = "censored"
LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
SQRT_HALF = math.sqrt(0.5)
# Intervals narrower than this (in units of σ) are treated as a point at their midpoint:
# the truncated moments then differ from the point's by O(width²), below round-off.
NARROW = 1e-6
# Standardised limits are clipped to ±HUGE: Φ and φ are exactly 0 or 1 there already, and
# squares of the limits (the second moments) stay finite. The Hessian clips at ±HUGE_HESSIAN
# so that products of four such factors do too.
HUGE = 1e150
HUGE_HESSIAN = 1e50
# X'X is called singular when its correlation form has condition number above this.
MAX_CONDITION = 1e12


# --- the standard normal on an interval, in log space -------------------------------
#
# The kernels write into the named buffers of a Scratch (numpy's ``out=`` arguments):
# the thread's own, kept from row block to row block and from chunk to chunk, so a
# pass allocates no large temporaries (see dem/models/scratch.py, which says why that
# matters on dask workers: 1.3x on this E-step). A result in a scratch buffer lives
# until the next call that uses that buffer; without a scratch, results are new arrays.
# scipy.special's functions get ``out=`` but never ``where=``: scipy 1.17 fills the
# wrong elements under a mask.


def inverse_mills(
    x: np.ndarray, *, out: np.ndarray | None = None, scratch: Scratch | None = None
) -> np.ndarray:
    """φ(x) / Φ(x) for finite x, accurate at any magnitude, into ``out`` when given.

    It is ``sqrt(2/π) / erfcx(-x/√2)``: no underflow of φ or Φ, ≈ -x in the far left
    tail, and 0 once erfcx overflows (x > 37.6, where the ratio is below 1e-300).
    """
    t = np.multiply(x, -SQRT_HALF, out=None if scratch is None else scratch("mills", x.shape))
    with np.errstate(over="ignore"):
        erfcx(t, out=t)
    return np.divide(SQRT_2_OVER_PI, t, out=t if out is None else out)


def truncated_normal(
    a: np.ndarray, b: np.ndarray, *, scratch: Scratch | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log P(a < Z < b) and the boundary densities φ(a)/P, φ(b)/P of a standard normal Z.

    ``a < b`` elementwise (1-D arrays of one length); either may be infinite (then its
    density term is 0). The interval is reflected into the lower half line when it lies
    mostly above 0, so ``log Φ`` (:func:`scipy.special.log_ndtr`) is always taken where
    it has full precision, and ``P = Φ(hi) (1 - Φ(lo)/Φ(hi))`` is formed in log space.
    An interval narrower than ``NARROW`` has ``P = φ(midpoint) (b - a)`` to
    O((b - a)²). The moments follow: E[Z] = pa - pb and E[Z²] = 1 + a·pa - b·pb (see
    :func:`standard_moments`).

    Limits beyond ±``HUGE``, infinite ones included, are clipped to within ±2·``HUGE``
    (keeping a < b), where Φ is already 0 or 1 and φ is 0.

    Returns
    -------
    log_prob, pa, pb : ndarray
        In the buffers "log_prob", "pa" and "pb" of ``scratch`` when it is given.
    """
    s = Scratch() if scratch is None else scratch
    shape = a.shape
    a, b = _clip_limits(a, b, s)
    # reflected where a + b > 0: then (lo, hi) = (-b, -a), else (a, b), so both are minima
    flip = np.greater(np.add(a, b, out=s("sum", shape)), 0.0, out=s("flip", shape, np.bool_))
    lo = np.minimum(a, np.negative(b, out=s("lo", shape)), out=s("lo", shape))
    hi = np.minimum(b, np.negative(a, out=s("hi", shape)), out=s("hi", shape))
    width = np.subtract(b, a, out=s("width", shape))
    narrow = np.less(width, NARROW, out=s("narrow", shape, np.bool_))
    log_prob = log_ndtr(hi, out=s("log_prob", shape))
    p_hi = inverse_mills(hi, out=s("p_hi", shape), scratch=s)
    p_lo = s("p_lo", shape)
    p_lo.fill(0.0)
    two = np.greater(lo, -HUGE, out=s("two", shape, np.bool_))  # both ends within ±HUGE
    two &= np.logical_not(narrow, out=s("wide", shape, np.bool_))
    if two.any():
        # computed for every row (finite there, as lo ≤ hi) and kept where ``two``:
        # ratio = Φ(lo) / Φ(hi) in [0, 1], keep = 1 - ratio (accurate when ratio ≈ 1)
        log_ratio = log_ndtr(lo, out=s("log_ratio", shape))
        log_ratio -= log_prob
        keep = np.expm1(log_ratio, out=s("keep", shape))
        np.negative(keep, out=keep)
        log_keep = np.log(keep, out=s("log_keep", shape), where=two)  # keep is 0 if narrow
        np.add(log_prob, log_keep, out=log_prob, where=two)
        ratio = np.exp(log_ratio, out=log_ratio)
        mills_lo = inverse_mills(lo, out=s("mills_lo", shape), scratch=s)
        np.multiply(mills_lo, ratio, out=p_lo, where=two)
        np.divide(p_lo, keep, out=p_lo, where=two)
        np.divide(p_hi, keep, out=p_hi, where=two)
    if narrow.any():  # rare: intervals narrower than NARROW
        lo_n, hi_n = lo[narrow], hi[narrow]
        mid = 0.5 * (lo_n + hi_n)
        log_prob[narrow] = -LOG_SQRT_2PI - 0.5 * mid * mid + np.log(hi_n - lo_n)
        p_lo[narrow] = np.exp(-LOG_SQRT_2PI - 0.5 * lo_n * lo_n - log_prob[narrow])
        p_hi[narrow] = np.exp(-LOG_SQRT_2PI - 0.5 * hi_n * hi_n - log_prob[narrow])
    # reflecting swaps which end is which
    pa, pb = s("pa", shape), s("pb", shape)
    np.copyto(pa, p_lo)
    np.copyto(pa, p_hi, where=flip)
    np.copyto(pb, p_hi)
    np.copyto(pb, p_lo, where=flip)
    return log_prob, pa, pb


def _clip_limits(a: np.ndarray, b: np.ndarray, scratch: Scratch) -> tuple[np.ndarray, np.ndarray]:
    """Standardised limits within ±2·HUGE, an interval beyond ±HUGE kept non-empty."""
    return (
        np.clip(a, -2.0 * HUGE, HUGE, out=scratch("clip_a", a.shape)),
        np.clip(b, -HUGE, 2.0 * HUGE, out=scratch("clip_b", b.shape)),
    )


def _finite(x: np.ndarray) -> np.ndarray:
    """x with infinities set to 0 (they only ever multiply a density that is 0 there)."""
    return np.where(np.isfinite(x), x, 0.0)


def standard_moments(
    a: np.ndarray,
    b: np.ndarray,
    pa: np.ndarray,
    pb: np.ndarray,
    *,
    scratch: Scratch | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """E[Z] and E[Z²] of a standard normal truncated to (a, b), from :func:`truncated_normal`.

    Clipped to what a distribution on (a, b) can have (E[Z] in [a, b], E[Z²] ≥ E[Z]²),
    which only ever moves them by round-off. On an interval narrower than ``NARROW``
    they are those of the uniform distribution there (exact to O((b - a)²)), as
    ``pa - pb`` would cancel. In the buffers "mean" and "second" of ``scratch`` when
    it is given.
    """
    s = Scratch() if scratch is None else scratch
    shape = a.shape
    a, b = _clip_limits(a, b, s)
    mean = np.clip(np.subtract(pa, pb, out=s("mean", shape)), a, b, out=s("mean", shape))
    second = np.multiply(a, pa, out=s("second", shape))
    second += 1.0
    second -= np.multiply(b, pb, out=s("b_pb", shape))
    np.maximum(second, np.multiply(mean, mean, out=s("mean_sq", shape)), out=second)
    narrow = np.less(
        np.subtract(b, a, out=s("width", shape)), NARROW, out=s("narrow", shape, np.bool_)
    )
    if narrow.any():  # rare: intervals narrower than NARROW
        an, bn = a[narrow], b[narrow]
        mean[narrow] = 0.5 * (an + bn)
        second[narrow] = mean[narrow] ** 2 + (bn - an) ** 2 / 12.0
    return mean, second


# --- which interval each row's latent value lies in -----------------------------------


def _as_lower(limit: np.ndarray | float) -> np.ndarray | float:
    """A left limit with NaN (no limit, as given to the engine) read as -inf."""
    if isinstance(limit, np.ndarray):
        return np.where(np.isnan(limit), -np.inf, limit)
    return limit


def _as_upper(limit: np.ndarray | float) -> np.ndarray | float:
    if isinstance(limit, np.ndarray):
        return np.where(np.isnan(limit), np.inf, limit)
    return limit


def _limit_rows(values: np.ndarray, none: float, name: str, scratch: Scratch) -> np.ndarray:
    """Per-row limits in float64 with NaN (no limit) read as ``none``, in the buffer ``name``."""
    out = scratch(name, values.shape)
    np.copyto(out, values)
    np.copyto(out, none, where=np.isnan(out))
    return out


def interval_bounds(
    y: np.ndarray,
    left: np.ndarray | float,
    right: np.ndarray | float,
    *,
    scratch: Scratch | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The interval ``[lower, upper]`` holding each row's latent value.

    ``left`` and ``right`` are the limits (scalars or per-row, ±inf for none). A row
    with observed ``y`` is left-censored when ``y <= left`` (interval ``(-inf, left]``),
    else right-censored when ``y >= right`` (``[right, inf)``), else exact
    (``[y, y]``). A row with ``y`` NaN lies in ``[left, right]``: interval-censored,
    or exact when ``left == right``. Rows are assumed valid (see
    :meth:`CensoredModel.check`). In the buffers "lower" and "upper" of ``scratch``
    when it is given.
    """
    s = Scratch() if scratch is None else scratch
    shape = y.shape
    rows = s("which_rows", shape, np.bool_)
    lower = np.minimum(y, right, out=s("lower", shape))  # right-censored: right; exact: y
    np.copyto(lower, -np.inf, where=np.less_equal(y, left, out=rows))  # False where y is NaN
    upper = np.maximum(y, left, out=s("upper", shape))
    np.copyto(upper, np.inf, where=np.greater_equal(y, right, out=rows))
    missing = np.isnan(y, out=rows)
    if missing.any():
        np.copyto(lower, left, where=missing)
        np.copyto(upper, right, where=missing)
    return lower, upper


def conditional_moments(
    lower: np.ndarray,
    upper: np.ndarray,
    mu: np.ndarray,
    scale: float,
    *,
    scratch: Scratch | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """E[y* - μ], E[(y* - μ)²] given ``lower <= y* <= upper``, and the summed log-likelihood.

    Exact rows (``lower == upper``) contribute their normal log density; censored rows
    log P(lower < y* < upper). The moments are in the buffers "resid" and
    "resid_sq" of ``scratch`` when it is given.
    """
    s = Scratch() if scratch is None else scratch
    n = len(mu)
    exact = np.equal(lower, upper, out=s("exact", (n,), np.bool_))
    n_exact = int(np.count_nonzero(exact))
    resid = np.subtract(lower, mu, out=s("resid", (n,)))
    if n_exact < n:
        np.copyto(resid, 0.0, where=np.logical_not(exact, out=s("censored", (n,), np.bool_)))
    loglik = -n_exact * (LOG_SQRT_2PI + math.log(scale)) - 0.5 * float(resid @ resid) / scale**2
    resid_sq = np.multiply(resid, resid, out=s("resid_sq", (n,)))
    if n_exact == n:
        return resid, resid_sq, loglik
    censored = np.flatnonzero(s("censored", (n,), np.bool_))
    a, b = _standardised(lower, upper, mu, scale, censored, s)
    log_prob, pa, pb = truncated_normal(a, b, scratch=s)
    mean, second = standard_moments(a, b, pa, pb, scratch=s)
    loglik += float(log_prob.sum())
    resid[censored] = np.multiply(mean, scale, out=mean)
    resid_sq[censored] = np.multiply(second, scale * scale, out=second)
    return resid, resid_sq, loglik


def _standardised(
    lower: np.ndarray,
    upper: np.ndarray,
    mu: np.ndarray,
    scale: float,
    rows: np.ndarray,
    scratch: Scratch,
) -> tuple[np.ndarray, np.ndarray]:
    """``(lower - μ) / σ`` and ``(upper - μ) / σ`` of the ``rows``, in buffers "a" and "b"."""
    mu_rows = scratch.take("mu_rows", mu, rows)
    a = scratch.take("a", lower, rows)
    a -= mu_rows
    a /= scale
    b = scratch.take("b", upper, rows)
    b -= mu_rows
    b /= scale
    return a, b


def hessian_weights(
    lower: np.ndarray,
    upper: np.ndarray,
    mu: np.ndarray,
    scale: float,
    *,
    scratch: Scratch | None = None,
) -> tuple[np.ndarray, ...]:
    """Per-row derivatives of the log-likelihood in (μ, τ = log σ), scaled for sums.

    Returns ``g_mu, g_tau, h_mumu, h_mutau, h_tautau``, the row's first derivatives
    ``σ ∂ℓ/∂μ`` and ``∂ℓ/∂τ`` and second derivatives ``σ² ∂²ℓ/∂μ²``, ``σ ∂²ℓ/∂μ∂τ``
    and ``∂²ℓ/∂τ²``. Then with ``μ = x β``: ∂ℓ/∂β = x g_mu / σ, ∂²ℓ/∂β∂βᵀ =
    x xᵀ h_mumu / σ², ∂²ℓ/∂β∂τ = x h_mutau / σ. In buffers of ``scratch`` when given.
    """
    s = Scratch() if scratch is None else scratch
    shape = mu.shape
    # a point (exact, or narrower than NARROW·σ): ℓ = -log σ - z²/2 (+ a constant) with
    # z = (y - μ)/σ, y the midpoint; computed for every row, then replaced on intervals
    with np.errstate(invalid="ignore"):  # inf - inf: (-inf, inf) rows are never points
        width = np.subtract(upper, lower, out=s("width_rows", shape))
        point = np.less(width, NARROW * scale, out=s("point", shape, np.bool_))
        z = np.add(lower, upper, out=s("g_mu", shape))
    z *= 0.5
    z -= mu
    z /= scale
    g_mu = z
    g_tau = np.multiply(z, z, out=s("g_tau", shape))
    g_tau -= 1.0
    h_mumu = s("h_mumu", shape)
    h_mumu.fill(-1.0)
    h_mutau = np.multiply(z, -2.0, out=s("h_mutau", shape))
    h_tautau = np.multiply(h_mutau, z, out=s("h_tautau", shape))
    rows = np.flatnonzero(np.logical_not(point, out=s("interval", shape, np.bool_)))
    if not len(rows):
        return g_mu, g_tau, h_mumu, h_mutau, h_tautau
    # an interval: ℓ = log(Φ(b) - Φ(a)) with a = (lower - μ)/σ, b = (upper - μ)/σ
    n = rows.shape
    a, b = _standardised(lower, upper, mu, scale, rows, s)
    np.clip(a, -2.0 * HUGE_HESSIAN, HUGE_HESSIAN, out=a)
    np.clip(b, -HUGE_HESSIAN, 2.0 * HUGE_HESSIAN, out=b)
    _, pa, pb = truncated_normal(a, b, scratch=s)
    # derivatives of ℓ in (a, b): l_a = -pa, l_b = pb, l_aa = a pa - pa², l_ab = pa pb,
    # l_bb = -b pb - pb²; and ∂a/∂μ = ∂b/∂μ = -1/σ, ∂a/∂τ = -a, ∂b/∂τ = -b
    l_a, l_b = np.negative(pa, out=s("l_a", n)), pb
    t, u = s("t", n), s("u", n)
    l_aa = np.multiply(a, pa, out=s("l_aa", n))
    l_aa -= np.multiply(pa, pa, out=t)
    l_bb = np.negative(b, out=s("l_bb", n))
    l_bb *= pb
    l_bb -= np.multiply(pb, pb, out=t)
    l_ab = np.multiply(pa, pb, out=s("l_ab", n))
    # g_mu = -(l_a + l_b)
    g_mu[rows] = np.negative(np.add(l_a, l_b, out=t), out=t)
    # g_tau = -(a l_a + b l_b)
    np.multiply(a, l_a, out=t)
    t += np.multiply(b, l_b, out=u)
    g_tau[rows] = np.negative(t, out=t)
    # h_mumu = l_aa + 2 l_ab + l_bb
    np.add(l_aa, np.multiply(l_ab, 2.0, out=t), out=t)
    t += l_bb
    h_mumu[rows] = t
    # h_mutau = a (l_aa + l_ab) + b (l_ab + l_bb) + l_a + l_b
    np.add(l_aa, l_ab, out=t)
    t *= a
    np.add(l_ab, l_bb, out=u)
    u *= b
    t += u
    t += l_a
    t += l_b
    h_mutau[rows] = t
    # h_tautau = a² l_aa + 2 a b l_ab + b² l_bb + a l_a + b l_b
    np.multiply(a, a, out=t)
    t *= l_aa
    np.multiply(a, 2.0, out=u)
    u *= b
    u *= l_ab
    t += u
    np.multiply(b, b, out=u)
    u *= l_bb
    t += u
    t += np.multiply(a, l_a, out=u)
    t += np.multiply(b, l_b, out=u)
    h_tautau[rows] = t
    return g_mu, g_tau, h_mumu, h_mutau, h_tautau


# --- checking the rows (one pass, global row numbers) ---------------------------------

CHECKS = {  # name: (what is wrong, what to do)
    "bad_limits": ("left >= right", "Give each row left < right."),
    "nan_y": (
        "y is NaN",
        "Remove those rows, or, for interval censoring, pass per-observation left and right "
        "arrays holding each row's interval.",
    ),
    "bad_interval": (
        "left > right for a row with NaN y (an interval-censored row)",
        "Give each interval left <= right (equal limits mean an exact value).",
    ),
    "no_limits": (
        "y is NaN and neither limit is finite",
        "Remove those rows (they carry no information), or give their interval.",
    ),
}


def combine_checks(a: Stats, b: Stats) -> Stats:
    """Sum the counts; keep the first offending row (rows of ``b`` follow those of ``a``)."""
    out = {key: a[key] + b[key] for key in a if not key.startswith("first_")}
    for key in a:
        if key.startswith("first_"):
            out[key] = np.minimum(a[key], a["n"] + b[key])
    return out


# --- the model ------------------------------------------------------------------------


@dataclass(frozen=True)
class CensoredModel:
    """The pure functions of censored regression (see :mod:`dem.model`).

    ``left`` and ``right`` are scalar limits (±inf for none), or None when the block
    holds a per-row array of that name (NaN meaning no limit). ``has_y`` False means
    every row is interval-censored by its limits.
    """

    fit_intercept: bool = True
    left: float | None = -math.inf
    right: float | None = math.inf
    has_y: bool = True

    name: ClassVar[str] = "censored_regression"
    missing_ok: ClassVar[frozenset[str]] = frozenset({"y", "left", "right"})
    remedy: ClassVar[str] = (
        "Drop collinear or constant columns of X, scale X and y to unit variance, or check "
        "the censoring limits."
    )

    @property
    def inputs(self) -> tuple[str, ...]:
        names = ["X"] + ["y"] * self.has_y
        names += ["left"] * (self.left is None) + ["right"] * (self.right is None)
        return tuple(names)

    def config(self) -> dict[str, Any]:
        def limit(value: float | None) -> float | str | None:
            if value is None:
                return "per-observation"
            return None if math.isinf(value) else float(value)

        return {
            "fit_intercept": self.fit_intercept,
            "left": limit(self.left),
            "right": limit(self.right),
            "has_y": self.has_y,
        }

    def param_dims(self) -> dict[str, tuple[str, ...]]:
        return {"coef": ("term",), "scale": (), "mean_xxT": ("term", "term_")}

    # --- pieces shared by every pass --------------------------------------------------

    def targets(self, block: Block) -> tuple[np.ndarray, np.ndarray | float, np.ndarray | float]:
        """y (NaN where absent) and the limits, with ±inf for no limit."""
        n = len(block["X"])
        y = block["y"] if self.has_y else np.full(n, np.nan)
        left = _as_lower(block["left"]) if self.left is None else self.left
        right = _as_upper(block["right"]) if self.right is None else self.right
        return np.asarray(y, dtype=np.float64), left, right

    def linear(self, x: np.ndarray, coef: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The linear predictor x β (intercept first in ``coef``), into ``out`` when given."""
        if not self.fit_intercept:
            return np.matmul(x, coef, out=out)
        mu = np.matmul(x, coef[1:], out=out)
        mu += coef[0]
        return mu

    def cross(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Σ x_i v_i over the rows, with the intercept's 1 first."""
        if self.fit_intercept:
            return np.concatenate([[v.sum()], x.T @ v])
        return x.T @ v

    def gram(
        self, x: np.ndarray, w: np.ndarray | None = None, scratch: Scratch | None = None
    ) -> np.ndarray:
        """Σ w_i x_i x_iᵀ (w = 1 when None), with the intercept's 1 first.

        ``x * w`` is formed in the buffer "weighted_x" of ``scratch`` when given.
        """
        out = None if w is None or scratch is None else scratch("weighted_x", x.shape)
        wx = x if w is None else np.multiply(x, w[:, None], out=out)
        inner = x.T @ wx
        if not self.fit_intercept:
            return inner
        col = wx.sum(axis=0)
        out = np.empty((len(inner) + 1, len(inner) + 1))
        out[0, 0] = len(x) if w is None else w.sum()
        out[0, 1:] = out[1:, 0] = col
        out[1:, 1:] = inner
        return out

    def _rows(self, block: Block, scratch: Scratch) -> Iterator[tuple[np.ndarray, ...]]:
        """(x, lower, upper) for each row block, in float64.

        Each block's arrays are in the buffers of ``scratch`` (or views of the chunk),
        valid until the next block.
        """
        x_all = block["X"]
        for start in range(0, len(x_all), BLOCK_ROWS):
            rows = slice(start, start + BLOCK_ROWS)
            x = scratch.float64("x", x_all[rows])
            if self.has_y:
                y = scratch.float64("y", block["y"][rows])
            else:
                y = scratch("y", (len(x),))
                y.fill(np.nan)
            left: np.ndarray | float = (
                _limit_rows(block["left"][rows], -np.inf, "left", scratch)
                if self.left is None
                else self.left
            )
            right: np.ndarray | float = (
                _limit_rows(block["right"][rows], np.inf, "right", scratch)
                if self.right is None
                else self.right
            )
            lower, upper = interval_bounds(y, left, right, scratch=scratch)
            yield x, lower, upper

    # --- the EM protocol ---------------------------------------------------------------

    def e_step(self, block: Block, params: Params) -> Stats:
        coef, scale = params["coef"], float(params["scale"])
        first_pass = "mean_xxT" not in params
        stats: Stats = {
            "n": np.float64(len(block["X"])),
            "loglik": np.float64(0.0),
            "sum_x_resid": np.zeros(len(coef)),
            "sum_resid_sq": np.float64(0.0),
        }
        if first_pass:
            stats["sum_xxT"] = np.zeros((len(coef), len(coef)))
        scratch = thread_scratch(SCRATCH)
        for x, lower, upper in self._rows(block, scratch):
            mu = self.linear(x, coef, out=scratch("mu", (len(x),)))
            resid, resid_sq, loglik = conditional_moments(lower, upper, mu, scale, scratch=scratch)
            stats["loglik"] += loglik
            stats["sum_x_resid"] += self.cross(x, resid)
            stats["sum_resid_sq"] += resid_sq.sum()
            if first_pass:
                stats["sum_xxT"] += self.gram(x)
        return stats

    def combine(self, a: Stats, b: Stats) -> Stats:
        return add_stats(a, b)

    def m_step(self, stats: Stats, params: Params) -> Params:
        n = stats["n"]
        if "sum_xxT" in stats:
            mean_xxT = stats["sum_xxT"] / n
            check_design(mean_xxT, self.fit_intercept)
        else:
            mean_xxT = params["mean_xxT"]
        mean_x_resid = stats["sum_x_resid"] / n
        delta = linalg.cho_solve(linalg.cho_factor(mean_xxT), mean_x_resid)
        variance = stats["sum_resid_sq"] / n - delta @ mean_x_resid
        if not (np.isfinite(variance) and variance > 0.0):
            raise FloatingPointError(
                f"The scale of the latent variable collapsed (σ² = {variance}): the uncensored "
                "rows are fitted exactly. Use more uncensored rows or fewer features."
            )
        return {"coef": params["coef"] + delta, "scale": np.sqrt(variance), "mean_xxT": mean_xxT}

    def converged(self, change: float, tol: float, previous: Params, params: Params) -> bool:
        """Stop when one iteration moves the fit by less than ``tol`` (see the estimator).

        The step is the larger of the RMS change of the linear predictor over the data
        in units of σ, ``sqrt(Δβᵀ (XᵀX/n) Δβ) / σ``, and the change of ``log σ``.
        """
        delta = params["coef"] - previous["coef"]
        step = math.sqrt(max(float(delta @ params["mean_xxT"] @ delta), 0.0)) / float(
            params["scale"]
        )
        step = max(step, abs(math.log(float(params["scale"]) / float(previous["scale"]))))
        return step < tol

    # --- parameters as a flat vector, for SQUAREM ----------------------------------------

    def pack(self, params: Params) -> np.ndarray:
        """The coefficients and ``log σ`` as one vector (log σ: every real is valid)."""
        return np.concatenate([params["coef"], [math.log(float(params["scale"]))]])

    def unpack(self, vector: np.ndarray, like: Params) -> Params:
        """Parameters from a vector: ``σ = exp(last entry)``; ``mean_xxT`` from ``like``.

        ``XᵀX / n`` is not a parameter and is carried through unchanged (when ``like``
        has it). A vector that is not finite, or whose σ overflows or underflows, is
        refused with a ValueError (SQUAREM then keeps the plain EM step).
        """
        coef = np.array(vector[:-1], dtype=np.float64)
        with np.errstate(over="ignore", under="ignore"):
            scale = np.exp(np.float64(vector[-1]))
        if not (np.all(np.isfinite(coef)) and np.isfinite(scale) and scale > 0.0):
            raise ValueError(f"No valid parameters: coef {coef}, scale {scale}.")
        params: Params = {"coef": coef, "scale": scale}
        if "mean_xxT" in like:
            params["mean_xxT"] = like["mean_xxT"]
        return params

    # --- the other passes --------------------------------------------------------------

    def information(self, block: Block, params: Params) -> Stats:
        """Gradient and Hessian of the log-likelihood in (β, log σ), summed over the chunk."""
        coef, scale = params["coef"], float(params["scale"])
        k = len(coef)
        stats: Stats = {
            "n": np.float64(len(block["X"])),
            "loglik": np.float64(0.0),
            "grad": np.zeros(k + 1),
            "hessian": np.zeros((k + 1, k + 1)),
        }
        scratch = thread_scratch(SCRATCH)
        for x, lower, upper in self._rows(block, scratch):
            mu = self.linear(x, coef, out=scratch("mu", (len(x),)))
            stats["loglik"] += conditional_moments(lower, upper, mu, scale, scratch=scratch)[2]
            g_mu, g_tau, h_mumu, h_mutau, h_tautau = hessian_weights(
                lower, upper, mu, scale, scratch=scratch
            )
            stats["grad"][:k] += self.cross(x, g_mu) / scale
            stats["grad"][k] += g_tau.sum()
            stats["hessian"][:k, :k] += self.gram(x, h_mumu, scratch) / scale**2
            cross = self.cross(x, h_mutau) / scale
            stats["hessian"][:k, k] += cross
            stats["hessian"][k, :k] += cross
            stats["hessian"][k, k] += h_tautau.sum()
        return stats

    def loglik(self, block: Block, params: Params) -> Stats:
        """The chunk's log-likelihood and size."""
        coef, scale = params["coef"], float(params["scale"])
        total = 0.0
        scratch = thread_scratch(SCRATCH)
        for x, lower, upper in self._rows(block, scratch):
            mu = self.linear(x, coef, out=scratch("mu", (len(x),)))
            total += conditional_moments(lower, upper, mu, scale, scratch=scratch)[2]
        return {"n": np.float64(len(block["X"])), "loglik": np.float64(total)}

    def check(self, block: Block, params: Params) -> Stats:
        """Counts of each kind of row, and the first invalid row of each kind (``inf`` if none).

        Only ``y`` and the limits are read; combine with :func:`combine_checks`.
        """
        first = next(iter(block.values()))
        n = len(first)
        y = block["y"] if self.has_y else np.full(n, np.nan)
        left = _as_lower(block["left"]) if self.left is None else self.left
        right = _as_upper(block["right"]) if self.right is None else self.right
        observed = ~np.isnan(y)
        bad = {
            "bad_limits": observed & (left >= right),
            "bad_interval": ~observed & (left > right),
            "no_limits": ~observed & np.isinf(left) & np.isinf(right),
            "nan_y": ~observed & (self.left is not None or self.right is not None),
        }
        stats: Stats = {"n": np.float64(n)}
        for key, mask in bad.items():
            mask = np.broadcast_to(mask, (n,))
            stats[f"n_{key}"] = np.float64(mask.sum())
            stats[f"first_{key}"] = np.float64(np.argmax(mask) if mask.any() else np.inf)
        valid = ~np.any([np.broadcast_to(m, (n,)) for m in bad.values()], axis=0)
        below = observed & (y <= left)
        above = observed & ~below & (y >= right)
        stats["n_left"] = np.float64(np.sum(below & valid))
        stats["n_right"] = np.float64(np.sum(above & valid))
        stats["n_exact"] = np.float64(
            np.sum(valid & ((observed & ~below & ~above) | (~observed & (left == right))))
        )
        stats["n_interval"] = np.float64(np.sum(valid & ~observed & (left < right)))
        return stats


def check_design(mean_xxT: np.ndarray, fit_intercept: bool) -> None:
    """Raise a ValueError naming the columns of X that make XᵀX singular."""
    names = (["the intercept"] if fit_intercept else []) + [
        f"column {j}" for j in range(len(mean_xxT) - fit_intercept)
    ]
    norms = np.sqrt(np.diag(mean_xxT))
    zero = np.flatnonzero(norms == 0.0)
    if zero.size:
        raise ValueError(
            f"X's {', '.join(names[j] for j in zero)} is all zeros, so XᵀX is singular. "
            "Drop that column."
        )
    correlation = mean_xxT / np.outer(norms, norms)
    eigenvalues, eigenvectors = np.linalg.eigh(correlation)
    if eigenvalues[0] > eigenvalues[-1] / MAX_CONDITION:
        return
    weights = np.abs(eigenvectors[:, 0])
    involved = [names[j] for j in np.flatnonzero(weights > 0.1 * weights.max())]
    hint = (
        " A constant column duplicates the intercept (fit_intercept=True)."
        if fit_intercept and "the intercept" in involved
        else ""
    )
    raise ValueError(
        f"Columns of X are collinear: {', '.join(involved)} are linearly dependent (XᵀX is "
        f"singular, condition number {eigenvalues[-1] / max(eigenvalues[0], 1e-300):.1e}). "
        f"Drop one of them, or centre and scale X.{hint}"
    )


# --- initialisation on a sample of rows -----------------------------------------------


def initial_params(model: CensoredModel, block: Block) -> Params:
    """Least squares on a sample, each censored value replaced by its limit.

    Interval-censored values are replaced by the interval's midpoint. Attenuated by
    censoring, but a start EM corrects.
    """
    y, left, right = model.targets(block)
    lower, upper = interval_bounds(y, left, right)
    both = np.isfinite(lower) & np.isfinite(upper)
    filled = np.where(
        both, 0.5 * (_finite(lower) + _finite(upper)), np.where(np.isfinite(lower), lower, upper)
    )
    x = np.asarray(block["X"], dtype=np.float64)
    design = np.column_stack([np.ones(len(x)), x]) if model.fit_intercept else x
    # rows with NaN or infinity are left to the first E-step's check, which names them
    usable = np.all(np.isfinite(design), axis=1) & np.isfinite(filled)
    design, filled = design[usable], filled[usable]
    if len(filled) == 0:
        return {"coef": np.zeros(design.shape[1]), "scale": np.asarray(1.0)}
    # columns brought to a common norm first: lstsq drops a column far smaller than the
    # others (the intercept's, for X of scale 1e37), so the start would depend on the scale
    norms = np.linalg.norm(design, axis=0)
    norms = np.where(norms > 0.0, norms, 1.0)
    coef = np.linalg.lstsq(design / norms, filled, rcond=None)[0] / norms
    rms = math.sqrt(float(np.mean((filled - design @ coef) ** 2)))
    spread = float(np.std(filled))
    scale = rms if rms > 1e-8 * max(spread, 1e-300) else (spread if spread > 0 else 1.0)
    return {"coef": coef, "scale": np.float64(scale)}


# --- the estimator --------------------------------------------------------------------


class MarginalEffects(NamedTuple):
    """Marginal effects ∂E[y | x]/∂x_j of the observed (censored) outcome.

    Attributes
    ----------
    at_means : ndarray of shape (n_features,)
        At the mean of X.
    average : ndarray of shape (n_features,)
        Averaged over the rows of X.
    """

    at_means: np.ndarray
    average: np.ndarray


@dataclass(frozen=True)
class CensoredSummary:
    """What :meth:`CensoredRegression.summary` returns; ``str()`` prints it as R does."""

    names: list[str]
    estimate: np.ndarray
    std_error: np.ndarray
    z_value: np.ndarray
    p_value: np.ndarray
    counts: dict[str, int]
    scale: float
    loglik: float
    n_iter: int
    converged: bool
    wald: float
    wald_df: int
    wald_p_value: float

    def __str__(self) -> str:
        labels = {
            "total": "Total",
            "left": "Left-censored",
            "exact": "Uncensored",
            "right": "Right-censored",
            "interval": "Interval-censored",
        }
        shown = [k for k in labels if k != "interval" or self.counts.get("interval", 0)]
        width = max(max(len(labels[k]), len(str(self.counts[k]))) for k in shown)
        estimate, std_error = _column(self.estimate), _column(self.std_error)
        z_value = [f"{z:.3f}" for z in self.z_value]
        p_value = [_format_p(p) for p in self.p_value]
        cells = list(zip(estimate, std_error, z_value, p_value, strict=True))
        header = ("Estimate", "Std. Error", "z value", "Pr(>|z|)")
        widths = [max(len(header[j]), *(len(row[j]) for row in cells)) for j in range(4)]
        name_width = max(len(name) for name in self.names)
        lines = [
            "Observations:",
            " ".join(f"{labels[k]:>{width}}" for k in shown),
            " ".join(f"{self.counts[k]:>{width}}" for k in shown),
            "",
            "Coefficients:",
            " " * name_width
            + " "
            + " ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)),
        ]
        for name, row, p in zip(self.names, cells, self.p_value, strict=True):
            values = " ".join(f"{c:>{w}}" for c, w in zip(row, widths, strict=True))
            lines.append(f"{name:<{name_width}} {values} {_stars(p)}".rstrip())
        lines += [
            "---",
            "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1",
            "",
            f"Scale: {_significant(self.scale, 4)}",
            "",
            "Gaussian distribution",
            f"Number of EM iterations: {self.n_iter}"
            + ("" if self.converged else " (not converged)"),
            f"Log-likelihood: {_significant(self.loglik, 4)} on {len(self.names)} Df",
        ]
        if self.wald_df:
            lines.append(
                f"Wald-statistic: {_significant(self.wald, 4)} on {self.wald_df} Df, "
                f"p-value: {_format_p(self.wald_p_value, 5)}"
            )
        return "\n".join(lines)

    __repr__ = __str__


def _decimals(value: float, digits: int) -> int:
    """Decimals that show ``value`` with at least ``digits`` significant digits (at most 15)."""
    if value == 0 or not math.isfinite(value):
        return 0
    return int(min(max(digits - 1 - math.floor(math.log10(abs(value))), 0), 15))


def _significant(value: float, digits: int) -> str:
    """Fixed notation with ``digits`` significant digits, as R's ``format(x, digits=)``."""
    return f"{value:.{_decimals(value, digits)}f}"


def _column(values: np.ndarray, digits: int = 4) -> list[str]:
    """One number of decimals for a whole column, enough for ``digits`` significant digits
    in every entry (R's ``printCoefmat``)."""
    decimals = max(_decimals(float(v), digits) for v in values)
    return [f"{v:.{decimals}f}" for v in values]


def _format_p(p: float, digits: int = 3) -> str:
    """A p-value as R's ``format.pval``: ``< 2e-16`` below machine precision."""
    if p < 2.2e-16:
        return "< 2e-16"
    return f"{p:.{digits}g}" if p >= 1e-4 else f"{p:.{digits - 1}e}"


def _stars(p: float) -> str:
    for cut, mark in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")):
        if p < cut:
            return mark
    return ""


def _real_limit(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not np.isnan(v)


def target_vector(y: Any) -> Any:
    """In-memory ``y`` as scikit-learn's regressors take it: an object array of numbers
    as floats (anything else refused with its "Unknown label type"), a column vector of
    shape (n, 1) as (n,) with its ``DataConversionWarning``. Lazy input as is."""
    if isinstance(y, str | os.PathLike | xr.DataArray | xr.Dataset) or hasattr(y, "dask"):
        return y
    y = np.asarray(y)
    if y.dtype == object:  # numbers stored as objects; anything else is not a target
        type_of_target(y, input_name="y", raise_unknown=True)
        y = y.astype(np.float64)
    if y.ndim == 2 and y.shape[1] == 1:
        return column_or_1d(y, warn=True)
    return y


def _infinite_as_nan(block: np.ndarray) -> np.ndarray:
    """Limits as the engine takes them: NaN, not ±inf, for no limit."""
    return np.where(np.isinf(block), np.nan, block).astype(np.float64, copy=False)


class CensoredRegression(HTMLRepr, RegressorMixin, EMEstimator):
    """Censored (Tobit) regression fitted by EM over Dask chunks.

    The latent ``y* = intercept + X coef + scale · ε`` (ε standard normal) is seen
    through censoring. Each row is classified from ``y`` and its limits:

    - ``y`` observed and ``y <= left``: left-censored, ``y* <= left``;
    - else ``y`` observed and ``y >= right``: right-censored, ``y* >= right``;
    - else ``y`` observed: uncensored, ``y* = y``;
    - ``y`` NaN (only with per-observation ``left`` and ``right`` arrays):
      interval-censored, ``left <= y* <= right`` (R's ``Surv(type="interval2")``): an
      infinite (or NaN) limit leaves that side open, and ``left == right`` is an exact
      value.

    Parameters
    ----------
    left, right : float, default=-inf, inf
        Censoring limits used when :meth:`fit` is given none (±inf: no limit).
    fit_intercept : bool, default=True
        Add an intercept.
    tol : float, default=1e-8
        EM stops when one iteration moves the fit by less than ``tol``: the RMS change
        of the linear predictor over the data, in units of ``scale``, and the change of
        ``log(scale)``. (A rule on the change of the log-likelihood would stop EM far
        from the optimum under heavy censoring, where EM is slow.)
    max_iter : int, default=1000
        Maximum number of EM iterations; heavy censoring needs hundreds.
    accelerate : {"none", "squarem"}, default="none"
        ``"squarem"`` extrapolates between EM steps in (coef, log scale) (Varadhan &
        Roland 2008; see :mod:`dem.accelerate`), reaching the same optimum in far fewer
        passes over the data when censoring is heavy; ``max_iter`` then counts passes
        and ``lower_bounds_`` has one entry per cycle.
    random_state : int, numpy.random.RandomState or numpy.random.Generator, optional
        Seeds the sample of rows the initial least-squares fit uses (a ``RandomState``
        gives four 32-bit words of seed: the same state, the same fit).
    checkpoint : str or path-like, optional
        Zarr store where every iteration's parameters are written.
    resume : bool, default=False
        Continue from the checkpoint's latest complete iteration.
    split_every : int, default=8
        Fan-in of the tree that sums the per-chunk statistics.
    persist : bool, optional
        Keep the data in cluster memory between passes. By default, data taking at
        most half the cluster's memory are persisted.
    init_sample_size : int, default=100_000
        Rows drawn for the initial least-squares fit.
    callback : callable, optional
        Called after every iteration with a :class:`dem.engine.IterationInfo`.
    sample_dim, feature_dim : str
        Dimension names of xarray input.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
    intercept_ : float
        0.0 when ``fit_intercept`` is False.
    scale_ : float
        σ, the standard deviation of the latent errors.
    loglik_ : float
        Log-likelihood (summed over rows) at the fitted parameters.
    bse_ : ndarray of shape (n_features + 2,) or (n_features + 1,)
        Standard errors of (intercept, coef_..., log(scale_)), the order in which R's
        ``AER::tobit`` reports them, from the observed information at the optimum.
    cov_ : ndarray
        Their covariance matrix, the inverse of the negative Hessian.
    n_iter_ : int
    converged_ : bool
    lower_bounds_ : list of float
        Mean per-row log-likelihood at the start of every iteration (or SQUAREM cycle),
        never decreasing.
    gradient_ : ndarray
        Gradient of the log-likelihood in (intercept, coef_..., log(scale_)) at the
        fitted parameters: near 0 at the optimum, a check on convergence.
    counts_ : dict of str to int
        Rows that are ``total``, ``left``-, ``right``- and ``interval``-censored and
        ``exact`` (uncensored).
    fit_limits_ : tuple of (float or None)
        The scalar (left, right) limits of the fit, None where they were per-observation;
        the default limits of :meth:`predict_expected` and :meth:`marginal_effects`.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X names its features (DataFrame columns, or the xarray feature
        coordinate), as in scikit-learn; :meth:`summary` then uses them.
    """

    def __init__(
        self,
        left: float = -math.inf,
        right: float = math.inf,
        *,
        fit_intercept: bool = True,
        tol: float = 1e-8,
        max_iter: int = 1000,
        accelerate: str = "none",
        random_state: RandomState = None,
        checkpoint: str | os.PathLike[str] | None = None,
        resume: bool = False,
        split_every: int = 8,
        persist: bool | None = None,
        init_sample_size: int = 100_000,
        callback: Callable[[Any], Any] | None = None,
        sample_dim: str = "sample",
        feature_dim: str = "feature",
    ) -> None:
        self.left = left
        self.right = right
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.accelerate = accelerate
        self.random_state = random_state
        self.checkpoint = checkpoint
        self.resume = resume
        self.split_every = split_every
        self.persist = persist
        self.init_sample_size = init_sample_size
        self.callback = callback
        self.sample_dim = sample_dim
        self.feature_dim = feature_dim

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **EMEstimator._parameter_constraints,
        "left": [Interval(Real, None, None, closed="both")],  # ±inf: no limit
        "right": [Interval(Real, None, None, closed="both")],
        "fit_intercept": ["boolean"],
    }

    # --- inputs -----------------------------------------------------------------------

    def _vector(self, value: Any, name: str, X: Any, x: Samples) -> Samples:
        """A per-row input aligned with X: a variable of X's store or Dataset, or an array."""
        if isinstance(value, str):
            if not isinstance(X, str | os.PathLike | xr.Dataset):
                raise TypeError(
                    f"{name}={value!r} names a variable, but X is not a Zarr store path or an "
                    f"xarray Dataset. Pass {name} as an array."
                )
            samples = as_samples(X, variable=value, sample_dim=self.sample_dim, name=value, ndim=1)
        else:
            samples = as_samples(value, sample_dim=self.sample_dim, name=name, ndim=1)
        if samples.n_samples != x.n_samples:
            raise ValueError(
                f"{name} has {samples.n_samples} samples but X has {x.n_samples}; they must "
                "describe the same rows."
            )
        if samples.array.chunks[0] != x.array.chunks[0]:
            if samples.kind == "numpy":  # in memory: chunk it as X is, at no cost
                samples = dataclasses.replace(
                    samples, array=samples.array.rechunk({0: x.array.chunks[0]})
                )
            else:
                raise ValueError(
                    f"{name} and X must have the same sample chunks; {name} has "
                    f"{samples.array.chunks[0][:3]}... and X {x.array.chunks[0][:3]}.... Rechunk "
                    f"one, e.g. {name} = {name}.rechunk({{0: X.chunks[0]}}), or store them alike."
                )
        return samples

    def _limit(
        self, value: Any, default: float, name: str, X: Any, x: Samples
    ) -> tuple[float | None, Samples | None]:
        """A scalar limit (and None), or None and the per-row limits (NaN for none)."""
        if value is None:
            value = default
        if not isinstance(value, str) and np.ndim(value) == 0:
            value = value.item() if isinstance(value, np.ndarray) else value
            if not _real_limit(value):
                raise ValueError(
                    f"{name} must be a number or an array (±inf for no limit); got {value!r}."
                )
            return float(value), None
        samples = self._vector(value, name, X, x)
        return None, dataclasses.replace(
            samples,
            array=samples.array.map_blocks(_infinite_as_nan, dtype=np.float64),  # type: ignore[call-arg, arg-type]
        )

    def _inputs(
        self, X: Any, y: Any, left: Any, right: Any, variable: str | None
    ) -> tuple[CensoredModel, Samples, dict[str, Samples]]:
        x = self._samples(X, variable)
        lo, lo_samples = self._limit(left, self.left, "left", X, x)
        hi, hi_samples = self._limit(right, self.right, "right", X, x)
        if lo is not None and hi is not None and lo >= hi:
            raise ValueError(f"left must be below right; got left={lo}, right={hi}.")
        if y is None and (lo is not None or hi is not None):
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None: y "
                "is required unless left and right are both per-observation arrays (interval "
                "censoring)."
            )
        model = CensoredModel(bool(self.fit_intercept), lo, hi, y is not None)
        inputs = {"X": x}
        if y is not None:
            inputs["y"] = self._vector(target_vector(y), "y", X, x)
        if lo_samples is not None:
            inputs["left"] = lo_samples
        if hi_samples is not None:
            inputs["right"] = hi_samples
        return model, x, inputs

    def _check_rows(self, model: CensoredModel, arrays: Mapping[str, Any]) -> dict[str, int]:
        """One pass over y and the limits: the counts of each kind of row, or a clear error."""
        targets = {name: a for name, a in arrays.items() if name != "X"}
        found = map_reduce(
            model.check,
            combine_checks,
            targets,
            {},
            split_every=int(self.split_every),
            missing_ok=model.missing_ok,
        )
        for key, (what, fix) in CHECKS.items():
            count = int(found[f"n_{key}"])
            if count:
                raise ValueError(
                    f"Invalid rows: {what} in {count} row(s), the first at row "
                    f"{int(found[f'first_{key}'])}. {fix}"
                )
        counts = {k: int(found[f"n_{k}"]) for k in ("left", "right", "exact", "interval")}
        counts["total"] = int(found["n"])
        return counts

    # --- fitting ----------------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        left: Any = None,
        right: Any = None,
        variable: str | None = None,
    ) -> CensoredRegression:
        """Fit by EM, then compute standard errors in one more pass.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), dask array, xarray, or path
            The features; a Zarr store path or an xarray Dataset needs ``variable``.
        y : array-like of shape (n_samples,), or str, optional
            The observed outcome (NaN for interval-censored rows); a string names a
            variable of X's store or Dataset. None means every row is
            interval-censored by ``left`` and ``right``.
        left, right : float, array-like of shape (n_samples,), or str, optional
            Censoring limits, one for all rows or one per row (±inf or NaN: no limit);
            default the estimator's ``left`` and ``right``. Per-row limits must have
            the same sample chunks as X (in-memory arrays are chunked to match).
        variable : str, optional
            Name of X in a Zarr store or xarray Dataset.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            Mismatched lengths or chunks, NaN or infinity in X or y, ``left >= right``,
            every row left- or right-censored, collinear columns of X.
        """
        model, x, inputs = self._inputs(X, y, left, right, variable)
        n_samples, n_features = (int(n) for n in x.array.shape)
        n_coef = n_features + int(model.fit_intercept)
        if n_samples <= n_coef:
            raise ValueError(
                f"Expected more samples than coefficients, got n_samples={n_samples} and "
                f"{n_coef} coefficients (n_features={n_features}"
                f"{' plus the intercept' if model.fit_intercept else ''}): the scale cannot be "
                "estimated. Use more data or fewer features."
            )
        arrays = prepare({name: s.array for name, s in inputs.items()}, self.persist)
        inputs = {name: dataclasses.replace(s, array=arrays[name]) for name, s in inputs.items()}
        counts = self._check_rows(model, arrays)
        if counts["exact"] == 0 and counts["interval"] == 0:
            raise ValueError(
                f"Every row is censored ({counts['left']} left, {counts['right']} right): the "
                "scale of the latent variable cannot be estimated and the likelihood has no "
                "maximum. Check the limits, or fit a probit model to the censoring indicator."
            )

        def make_init(rng: np.random.Generator) -> Params:
            seed = int(rng.integers(2**63))
            block = {
                name: sample_rows(array, int(self.init_sample_size), np.random.default_rng(seed))
                for name, array in arrays.items()
            }
            return initial_params(model, block)

        # persist=False: the inputs are already where prepare() put them
        best, _ = self._fit_restarts(model, inputs, make_init, n_init=1, persist=False)
        self._at_optimum(model, arrays, best.params, counts)
        self._set_features(X, variable, n_features)
        return self

    def standard_errors(
        self,
        X: Any,
        y: Any = None,
        *,
        left: Any = None,
        right: Any = None,
        variable: str | None = None,
    ) -> CensoredRegression:
        """Standard errors and the other results of the fit's last pass, from its data.

        :meth:`fit` computes them; an estimator restored from a checkpoint
        (:func:`dem.from_checkpoint`, ``dem show``) has the parameters only. This pass
        over the training data sets ``bse_``, ``cov_``, ``loglik_``, ``gradient_``,
        ``counts_``, ``fit_limits_`` and ``feature_names_in_`` at the current
        parameters, as :meth:`fit` would have, so that :meth:`summary` works.

        Parameters
        ----------
        X, y, left, right, variable
            The data and limits of the fit, as :meth:`fit` takes them.

        Returns
        -------
        self
        """
        params = self._params()
        model, x, inputs = self._inputs(X, y, left, right, variable)
        n_features = int(x.array.shape[1])
        if n_features != self.n_features_in_:
            raise ValueError(
                f"X has {n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
        arrays = prepare({name: s.array for name, s in inputs.items()}, self.persist)
        self._at_optimum(model, arrays, params, self._check_rows(model, arrays))
        self._set_features(X, variable, n_features)
        return self

    def _at_optimum(
        self,
        model: CensoredModel,
        arrays: Mapping[str, Any],
        params: Params,
        counts: dict[str, int],
    ) -> None:
        """The observed information pass at ``params``: standard errors and the rest."""
        info = map_reduce(
            model.information, add_stats, arrays, params, split_every=int(self.split_every)
        )
        self.loglik_ = float(info["loglik"])
        self.cov_ = _covariance(info["hessian"])
        self.bse_ = np.sqrt(np.diag(self.cov_))
        self.gradient_ = info["grad"]
        self.counts_ = counts
        self.fit_limits_ = (model.left, model.right)

    def _set_params(self, params: Params) -> None:
        coef = np.asarray(params["coef"], dtype=np.float64)
        self._coef = coef
        self.intercept_ = float(coef[0]) if self.fit_intercept else 0.0
        self.coef_ = coef[1:].copy() if self.fit_intercept else coef.copy()
        self.scale_ = float(params["scale"])

    def _params(self) -> Params:
        if not hasattr(self, "_coef"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit first.")
        return {"coef": self._coef, "scale": np.asarray(self.scale_)}

    def _model(self) -> CensoredModel:
        return CensoredModel(bool(self.fit_intercept))

    def _new_x(self, X: Any, variable: str | None) -> Samples:
        self._params()
        x = self._samples(X, variable)
        self._check_features(X, variable, int(x.array.shape[1]))
        return x

    def _scalar_limits(self, left: float | None, right: float | None) -> tuple[float, float]:
        """The limits given, else the scalar limits the model was fitted with."""
        limits = []
        for name, given, fitted in zip(
            ("left", "right"), (left, right), self.fit_limits_, strict=True
        ):
            value = fitted if given is None else given
            if value is None:
                raise ValueError(
                    f"The model was fitted with per-observation {name} limits; pass {name}= "
                    "(a number) for these predictions."
                )
            if not _real_limit(value):
                raise ValueError(f"{name} must be a number (±inf for no limit); got {value!r}.")
            limits.append(float(value))
        lo, hi = limits
        if lo >= hi:
            raise ValueError(f"left must be below right; got left={lo}, right={hi}.")
        return lo, hi

    # --- results ----------------------------------------------------------------------

    def predict(self, X: Any, *, variable: str | None = None) -> Any:
        """The latent mean ``intercept_ + X coef_``, shape (n_samples,)."""
        x = self._new_x(X, variable)
        model, coef = self._model(), self._coef
        return per_sample(
            x, lambda block: model.linear(block.astype(np.float64), coef), columns=None
        )

    def predict_expected(
        self,
        X: Any,
        *,
        left: Any = None,
        right: Any = None,
        variable: str | None = None,
    ) -> Any:
        """E[y | x] of the observed outcome ``clip(y*, left, right)``, shape (n_samples,).

        ``left`` and ``right`` are numbers, or per-row limits as in :meth:`fit` (an
        array, or the name of a variable of X's store or Dataset; ±inf or NaN: no
        limit); by default those of the fit (``fit_limits_``).
        """
        x = self._new_x(X, variable)
        limits = []
        for name, given, fitted in zip(
            ("left", "right"), (left, right), self.fit_limits_, strict=True
        ):
            value = fitted if given is None else given
            if value is None:
                raise ValueError(
                    f"The model was fitted with per-observation {name} limits; pass {name}= "
                    "(a number, per-row limits or the name of their variable) for these "
                    "predictions."
                )
            limits.append(self._limit(value, math.nan, name, X, x))
        (lo, lo_rows), (hi, hi_rows) = limits
        if lo is not None and hi is not None and lo >= hi:
            raise ValueError(f"left must be below right; got left={lo}, right={hi}.")
        model, coef, scale = self._model(), self._coef, self.scale_

        def expected(block: np.ndarray, *per_row: np.ndarray) -> np.ndarray:
            rows = iter(per_row)
            low = _as_lower(next(rows)) if lo is None else lo
            high = _as_upper(next(rows)) if hi is None else hi
            mu = model.linear(block.astype(np.float64), coef)
            a, b = (low - mu) / scale, (high - mu) / scale
            log_prob, pa, pb = truncated_normal(a, b)
            inside = np.exp(log_prob) * (mu + scale * standard_moments(a, b, pa, pb)[0])
            below = np.where(np.isfinite(low), low, 0.0) * ndtr(a)
            above = np.where(np.isfinite(high), high, 0.0) * ndtr(-b)
            return inside + below + above

        per_row = [s for s in (lo_rows, hi_rows) if s is not None]
        if not per_row:
            return per_sample(x, expected, columns=None)
        return per_sample_aligned([x, *per_row], expected, trailing=(), dims=())

    def marginal_effects(
        self,
        X: Any,
        *,
        left: float | None = None,
        right: float | None = None,
        variable: str | None = None,
    ) -> MarginalEffects:
        """Marginal effects of the features on E[y | x], at the means of X and averaged.

        For limits ``left < right`` (scalars, by default those of the fit),
        ∂E[y | x]/∂x_j = coef_j · P(left < y* < right | x) (McDonald & Moffitt 1980).
        One pass over X.
        """
        x = self._new_x(X, variable)
        lo, hi = self._scalar_limits(left, right)
        model = self._model()
        params = self._params()

        def uncensored(block: Block, p: Params) -> Stats:
            xb = block["X"].astype(np.float64)
            mu = model.linear(xb, p["coef"])
            scale = float(p["scale"])
            log_prob = truncated_normal((lo - mu) / scale, (hi - mu) / scale)[0]
            return {
                "n": np.float64(len(xb)),
                "sum_x": xb.sum(axis=0),
                "sum_prob": np.exp(log_prob).sum(),
            }

        sums = map_reduce(
            uncensored, add_stats, {"X": x.array}, params, split_every=int(self.split_every)
        )
        mean_x = sums["sum_x"] / sums["n"]
        mu = float(model.linear(mean_x[None, :], self._coef)[0])
        prob_at_means = float(
            np.exp(
                truncated_normal(
                    np.array([(lo - mu) / self.scale_]), np.array([(hi - mu) / self.scale_])
                )[0][0]
            )
        )
        return MarginalEffects(
            self.coef_ * prob_at_means, self.coef_ * float(sums["sum_prob"] / sums["n"])
        )

    def score(
        self,
        X: Any,
        y: Any = None,
        *,
        left: Any = None,
        right: Any = None,
        variable: str | None = None,
    ) -> float:
        """Mean log-likelihood per row of (X, y) with the given limits (as in :meth:`fit`)."""
        params = self._params()
        model, _, inputs = self._inputs(X, y, left, right, variable)
        self._check_features(X, variable, int(inputs["X"].array.shape[1]))
        arrays = {name: s.array for name, s in inputs.items()}
        self._check_rows(model, arrays)
        found = map_reduce(
            model.loglik,
            add_stats,
            arrays,
            params,
            split_every=int(self.split_every),
            missing_ok=model.missing_ok,
        )
        return float(found["loglik"] / found["n"])

    def _feature_labels(self) -> list[str]:
        """``feature_names_in_`` where the data named their features, else x0, x1, ..."""
        names = getattr(self, "feature_names_in_", None)
        if names is None:
            return [f"x{j}" for j in range(self.n_features_in_)]
        return [str(n) for n in names]

    def summary(self) -> CensoredSummary:
        """Coefficient table with standard errors, z values and p-values, as R's
        ``summary(tobit(...))`` prints it (``print(model.summary())``)."""
        self._params()
        if not hasattr(self, "bse_"):
            raise NotFittedError(
                "This estimator has parameters but no standard errors: it was restored from "
                "a checkpoint, which stores the parameters only. Call "
                "standard_errors(X, y, left=..., right=...) with the training data first."
            )
        estimate = np.concatenate([self._coef, [math.log(self.scale_)]])
        z = estimate / self.bse_
        p = 2.0 * stats.norm.sf(np.abs(z))
        names = (
            (["(Intercept)"] if self.fit_intercept else [])
            + self._feature_labels()
            + ["Log(scale)"]
        )
        slopes = slice(int(self.fit_intercept), len(self._coef))
        wald_df = self.n_features_in_
        cov = self.cov_[slopes, slopes]
        try:
            wald = float(estimate[slopes] @ np.linalg.solve(cov, estimate[slopes]))
        except np.linalg.LinAlgError:
            wald = math.nan
        return CensoredSummary(
            names=names,
            estimate=estimate,
            std_error=self.bse_,
            z_value=z,
            p_value=p,
            counts=dict(self.counts_),
            scale=self.scale_,
            loglik=self.loglik_,
            n_iter=self.n_iter_,
            converged=self.converged_,
            wald=wald,
            wald_df=wald_df,
            wald_p_value=float(stats.chi2.sf(wald, wald_df)) if wald_df else math.nan,
        )


def _covariance(hessian: np.ndarray) -> np.ndarray:
    """Inverse of the observed information -H (NaN, with a warning, unless positive definite)."""
    information = -hessian
    try:
        factor = linalg.cho_factor(information)
    except linalg.LinAlgError:
        warnings.warn(
            "The observed information is not positive definite at the fitted parameters (EM "
            "may not have converged, or the model is not identified): standard errors are NaN. "
            "Increase max_iter or lower tol.",
            UserWarning,
            stacklevel=3,
        )
        return np.full_like(information, np.nan)
    return linalg.cho_solve(factor, np.eye(len(information)))
