"""The maths of censored regression on blocks of rows: pure numpy and scipy.

Truncated-normal moments of a standard normal on an interval, in log space
(:func:`truncated_normal`, :func:`standard_moments`), the interval each row's latent
value lies in (:func:`interval_bounds`), the E-step's conditional moments
(:func:`conditional_moments`) and the per-row derivatives of the log-likelihood that
the standard errors sum (:func:`hessian_weights`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erfcx, log_ndtr

from dem.models.scratch import Scratch

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


def finite(x: np.ndarray) -> np.ndarray:
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


def as_lower(limit: np.ndarray | float) -> np.ndarray | float:
    """A left limit with NaN (no limit, as given to the engine) read as -inf."""
    if isinstance(limit, np.ndarray):
        return np.where(np.isnan(limit), -np.inf, limit)
    return limit


def as_upper(limit: np.ndarray | float) -> np.ndarray | float:
    if isinstance(limit, np.ndarray):
        return np.where(np.isnan(limit), np.inf, limit)
    return limit


def limit_rows(values: np.ndarray, none: float, name: str, scratch: Scratch) -> np.ndarray:
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
    :meth:`~.model.CensoredModel.check`). In the buffers "lower" and "upper" of ``scratch``
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
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """E[y* - μ], E[(y* - μ)²] given ``lower <= y* <= upper``, and the summed log-likelihood.

    Exact rows (``lower == upper``) contribute their normal log density; censored rows
    log P(lower < y* < upper); with ``weights``, each row's times its weight. The
    moments are in the buffers "resid" and "resid_sq" of ``scratch`` when it is given.
    """
    s = Scratch() if scratch is None else scratch
    n = len(mu)
    exact = np.equal(lower, upper, out=s("exact", (n,), np.bool_))
    n_exact = int(np.count_nonzero(exact))
    resid = np.subtract(lower, mu, out=s("resid", (n,)))
    if n_exact < n:
        np.copyto(resid, 0.0, where=np.logical_not(exact, out=s("censored", (n,), np.bool_)))
    resid_sq = np.multiply(resid, resid, out=s("resid_sq", (n,)))
    if weights is None:
        n_exact_weighted, sum_sq = float(n_exact), float(resid_sq.sum())
    else:
        n_exact_weighted, sum_sq = float(weights[exact].sum()), float(weights @ resid_sq)
    loglik = -n_exact_weighted * (LOG_SQRT_2PI + math.log(scale)) - 0.5 * sum_sq / scale**2
    if n_exact == n:
        return resid, resid_sq, loglik
    censored = np.flatnonzero(s("censored", (n,), np.bool_))
    a, b = _standardised(lower, upper, mu, scale, censored, s)
    log_prob, pa, pb = truncated_normal(a, b, scratch=s)
    mean, second = standard_moments(a, b, pa, pb, scratch=s)
    loglik += float(log_prob.sum() if weights is None else weights[censored] @ log_prob)
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
