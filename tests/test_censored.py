"""Censored (Tobit) regression: agreement with a direct maximum-likelihood fit.

The reference below is written independently of dem: the Tobit log-likelihood from
scipy.stats, its gradient derived by hand, maximised with scipy.optimize (BFGS, then
Newton steps on a finite-difference Hessian of that gradient). Standard errors are
checked against that numerical Hessian.
"""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
from scipy import integrate, optimize, stats

import dem
from dem.engine import ConvergenceWarning
from dem.models.censored.kernels import (
    conditional_moments,
    interval_bounds,
    standard_moments,
    truncated_normal,
)
from dem.models.censored.model import CensoredModel

COEF = np.array([1.0, -0.5, 0.8])
INTERCEPT = 0.3
SCALE = 1.2


# --- the independent reference ---------------------------------------------------------


def latent(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(COEF)))
    return X, INTERCEPT + X @ COEF + SCALE * rng.normal(size=n)


def negloglik(theta: np.ndarray, A: np.ndarray, lower: np.ndarray, upper: np.ndarray):
    """Minus the Tobit log-likelihood in (coefficients, log sigma), and its gradient."""
    beta, log_s = theta[:-1], theta[-1]
    s = np.exp(log_s)
    mu = A @ beta
    exact = lower == upper
    z = (lower[exact] - mu[exact]) / s
    value = np.sum(stats.norm.logpdf(z)) - exact.sum() * log_s
    grad_mu = np.zeros(len(mu))
    grad_mu[exact] = z / s
    grad_log_s = np.sum(z**2) - exact.sum()
    c = ~exact
    a = (lower[c] - mu[c]) / s
    b = (upper[c] - mu[c]) / s
    with np.errstate(all="ignore"):  # the optimiser's trial points may be wild
        log_prob = np.where(
            np.isinf(a),
            stats.norm.logcdf(b),
            np.where(
                np.isinf(b), stats.norm.logsf(a), np.log(stats.norm.cdf(b) - stats.norm.cdf(a))
            ),
        )
        # density at each end over the probability: 0 at an infinite end
        ratio_a = np.where(np.isinf(a), 0.0, np.exp(stats.norm.logpdf(a) - log_prob))
        ratio_b = np.where(np.isinf(b), 0.0, np.exp(stats.norm.logpdf(b) - log_prob))
    value += np.sum(log_prob)
    # d log P / d mu = (pdf(a) - pdf(b)) / (s P); d log P / d log s = (a pdf(a) - b pdf(b)) / P
    grad_mu[c] = (ratio_a - ratio_b) / s
    a0, b0 = np.where(np.isinf(a), 0.0, a), np.where(np.isinf(b), 0.0, b)
    grad_log_s += np.sum(a0 * ratio_a - b0 * ratio_b)
    return -value, -np.concatenate([A.T @ grad_mu, [grad_log_s]])


def numerical_hessian(theta: np.ndarray, *args) -> np.ndarray:
    step = 1e-5 * np.maximum(1.0, np.abs(theta))
    hess = np.empty((len(theta), len(theta)))
    for j in range(len(theta)):
        up, down = theta.copy(), theta.copy()
        up[j] += step[j]
        down[j] -= step[j]
        hess[:, j] = (negloglik(up, *args)[1] - negloglik(down, *args)[1]) / (2 * step[j])
    return 0.5 * (hess + hess.T)


def direct_fit(X: np.ndarray, lower: np.ndarray, upper: np.ndarray, intercept: bool = True):
    """(theta = (intercept, coef..., log sigma), max log-likelihood, numerical Hessian)."""
    A = np.column_stack([np.ones(len(X)), X]) if intercept else X
    mid = np.where(
        np.isfinite(lower) & np.isfinite(upper),
        (lower + upper) / 2,
        np.where(np.isfinite(lower), lower, upper),
    )
    start = np.concatenate([np.linalg.lstsq(A, mid, rcond=None)[0], [0.0]])
    args = (A, lower, upper)
    theta = optimize.minimize(
        negloglik,
        start,
        args=args,
        jac=True,
        method="BFGS",
        options={"gtol": 1e-9, "maxiter": 2000},
    ).x
    for _ in range(3):  # polish with Newton steps
        theta = theta - np.linalg.solve(numerical_hessian(theta, *args), negloglik(theta, *args)[1])
    return theta, -negloglik(theta, *args)[0], numerical_hessian(theta, *args)


def bounds_of(y, left, right):
    """The reference's own reading of the censoring rules (the docstring's)."""
    n = len(y)
    left, right = (
        np.broadcast_to(left, (n,)).astype(float),
        np.broadcast_to(right, (n,)).astype(float),
    )
    lower, upper = y.copy(), y.copy()
    for i in range(n):
        if np.isnan(y[i]):
            lower[i], upper[i] = left[i], right[i]
        elif y[i] <= left[i]:
            lower[i], upper[i] = -np.inf, left[i]
        elif y[i] >= right[i]:
            lower[i], upper[i] = right[i], np.inf
    return lower, upper


def dataset(kind: str, n: int = 3000, seed: int = 0):
    """(X, y, left, right) for one censoring pattern."""
    X, ystar = latent(n, seed)
    rng = np.random.default_rng(seed + 100)
    if kind == "left":
        left, right = 0.0, np.inf
    elif kind == "right":
        left, right = -np.inf, 1.0
    elif kind == "both":
        left, right = -0.5, 1.5
    elif kind == "per-observation":
        left = rng.normal(-0.5, 0.5, size=n)
        right = left + rng.uniform(1.0, 3.0, size=n)
        left[rng.uniform(size=n) < 0.2] = -np.inf
        right[rng.uniform(size=n) < 0.2] = np.inf
    elif kind == "interval":
        y = ystar.copy()
        left, right = np.full(n, -np.inf), np.full(n, np.inf)
        grouped = rng.uniform(size=n) < 0.5  # only known to lie in [k/2, (k+1)/2)
        left[grouped] = np.floor(2 * ystar[grouped]) / 2
        right[grouped] = left[grouped] + 0.5
        y[grouped] = np.nan
        below = ~grouped & (rng.uniform(size=n) < 0.15)  # NaN y, only an upper limit
        right[below] = np.ceil(ystar[below])
        y[below] = np.nan
        above = ~grouped & ~below & (ystar > 1.5)  # observed, right-censored at 1.5
        right[above] = 1.5
        return X, np.where(above, 1.5, y), left, right
    else:
        raise ValueError(kind)
    return X, np.clip(ystar, left, right), left, right


def theta_of(model: dem.CensoredRegression) -> np.ndarray:
    return np.concatenate([[model.intercept_], model.coef_, [np.log(model.scale_)]])


KINDS = ["left", "right", "both", "per-observation", "interval"]


@pytest.fixture(scope="module")
def fits():
    """One dem fit and one direct fit per censoring pattern (shared by several tests)."""
    out = {}
    for kind in KINDS:
        X, y, left, right = dataset(kind)
        model = dem.CensoredRegression(tol=1e-10).fit(X, y, left=left, right=right)
        out[kind] = (model, direct_fit(X, *bounds_of(y, left, right)), (X, y, left, right))
    return out


# --- agreement with the direct fit -------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_matches_direct_maximum_likelihood(fits, kind):
    model, (theta, loglik, _), _ = fits[kind]
    assert model.converged_
    np.testing.assert_allclose(theta_of(model), theta, rtol=1e-6)
    np.testing.assert_allclose(model.scale_, np.exp(theta[-1]), rtol=1e-6)
    np.testing.assert_allclose(model.loglik_, loglik, rtol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_standard_errors_match_numerical_hessian(fits, kind):
    model, (_, _, hessian), _ = fits[kind]
    reference = np.sqrt(np.diag(np.linalg.inv(hessian)))
    np.testing.assert_allclose(model.bse_, reference, rtol=1e-5)
    np.testing.assert_allclose(model.cov_, np.linalg.inv(hessian), rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("kind", KINDS)
def test_loglik_never_decreases(fits, kind):
    model = fits[kind][0]
    trace = np.array(model.lower_bounds_)
    assert len(trace) > 5
    assert np.all(np.diff(trace) >= -1e-13 * np.abs(trace[1:]))


def test_counts_and_classification(fits):
    model, _, (_, y, left, right) = fits["interval"]
    lower, upper = bounds_of(y, left, right)
    counts = model.counts_
    assert counts["total"] == len(y)
    assert counts["exact"] == np.sum(lower == upper)
    assert counts["left"] == np.sum(~np.isnan(y) & (y <= left))
    assert counts["right"] == np.sum(~np.isnan(y) & (y >= right))
    assert counts["interval"] == np.sum(np.isnan(y))
    got_lower, got_upper = interval_bounds(y, left, right)
    np.testing.assert_array_equal(got_lower, lower)
    np.testing.assert_array_equal(got_upper, upper)


def test_interval_censored_rows_only():
    """y=None: every row is known only to lie in [left, right] (equal limits: exact)."""
    X, ystar = latent(1500, seed=17)
    left = np.floor(ystar)
    right = left + 1.0
    left[:300], right[:300] = ystar[:300], ystar[:300]
    model = dem.CensoredRegression(tol=1e-10).fit(X, left=left, right=right)
    theta, loglik, _ = direct_fit(X, left, right)
    np.testing.assert_allclose(theta_of(model), theta, rtol=1e-6)
    np.testing.assert_allclose(model.loglik_, loglik, rtol=1e-10)
    assert model.counts_ == {"left": 0, "right": 0, "exact": 300, "interval": 1200, "total": 1500}
    with pytest.raises(ValueError, match="per-observation left limits; pass left="):
        model.predict_expected(X)


def test_heavy_censoring_reaches_the_optimum_with_defaults():
    """About 75% of rows censored (both sides): plain EM is slow but must get there."""
    X, ystar = latent(4000, seed=7)
    left, right = np.quantile(ystar, [0.45, 0.70])
    y = np.clip(ystar, left, right)
    assert 0.73 < np.mean((y <= left) | (y >= right)) < 0.77
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = dem.CensoredRegression(left, right).fit(X, y)
    theta, loglik, _ = direct_fit(X, *bounds_of(y, left, right))
    assert model.converged_ and 100 < model.n_iter_ < model.max_iter
    np.testing.assert_allclose(theta_of(model), theta, rtol=1e-6)
    np.testing.assert_allclose(model.loglik_, loglik, rtol=1e-12)


# --- the E-step's pieces -----------------------------------------------------------------


def test_truncated_normal_moments_at_extreme_limits():
    negative = [-1e300, -1e150, -1e8, -1e3, -40.0, -5.0, -1.0, -1e-300]
    edges = [*negative, 0.0, *(-v for v in reversed(negative))]
    a = [u for i, u in enumerate(edges) for _ in edges[i + 1 :]] + edges + [-np.inf] * len(edges)
    b = [v for i, _ in enumerate(edges) for v in edges[i + 1 :]] + [np.inf] * len(edges) + edges
    a, b = np.array(a), np.array(b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0/0, no overflow
        log_prob, pa, pb = truncated_normal(a, b)
        mean, second = standard_moments(a, b, pa, pb)
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(second))
    assert not np.any(np.isnan(log_prob)) and np.all(log_prob <= 0)
    inside = (np.abs(a) < 1e150) & (np.abs(b) < 1e150)
    assert np.all((mean[inside] >= a[inside]) & (mean[inside] <= b[inside]))
    assert np.all(second >= mean**2)
    # far tails against the asymptotic series of the inverse Mills ratio (x = -b >= 1e3)
    tail = np.isinf(a) & (b <= -1e3) & (b > -1e150)
    x = -b[tail]
    mills = x / (1 - 1 / x**2 + 3 / x**4 - 15 / x**6)
    np.testing.assert_allclose(mean[tail], -mills, rtol=1e-14)
    np.testing.assert_allclose(log_prob[tail], stats.norm.logcdf(b[tail]), rtol=1e-14)
    # moderate limits against scipy.stats.truncnorm
    moderate = (np.where(np.isinf(a), 0, np.abs(a)) <= 5) & (
        np.where(np.isinf(b), 0, np.abs(b)) <= 5
    )
    moderate &= (b - a) > 1e-3
    np.testing.assert_allclose(
        mean[moderate], stats.truncnorm.mean(a[moderate], b[moderate]), rtol=1e-10, atol=1e-14
    )
    np.testing.assert_allclose(
        second[moderate] - mean[moderate] ** 2,
        stats.truncnorm.var(a[moderate], b[moderate]),
        rtol=1e-9,
    )


def test_narrow_intervals_are_continuous():
    mu = np.zeros(3)
    for mid in (-3.0, 0.2, 4.0):
        for width in (1e-3, 1e-6, 1e-9):
            lower, upper = np.full(3, mid - width / 2), np.full(3, mid + width / 2)
            resid, resid_sq, loglik = conditional_moments(lower, upper, mu, 1.0)
            np.testing.assert_allclose(resid, mid, rtol=1e-6)
            np.testing.assert_allclose(resid_sq, mid**2 + width**2 / 12, rtol=1e-6)
            expected = 3 * np.log(
                stats.norm.cdf(mid + width / 2) - stats.norm.cdf(mid - width / 2)
                if width > 1e-6
                else stats.norm.pdf(mid) * width
            )
            np.testing.assert_allclose(loglik, expected, rtol=1e-6)


def test_chunk_statistics_add_up():
    """Statistics of X[:k] and X[k:] sum to those of X, in the first pass and later ones."""
    X, y, left, right = dataset("per-observation", n=1000)
    model = CensoredModel(True, None, None, True)
    block = {
        "X": X,
        "y": y,
        "left": np.where(np.isinf(left), np.nan, left),
        "right": np.where(np.isinf(right), np.nan, right),
    }
    params = {"coef": np.array([0.1, 0.9, -0.4, 0.7]), "scale": np.float64(1.3)}
    for p in (params, {**params, "mean_xxT": np.eye(4)}):
        whole = model.e_step(block, p)
        parts = [
            model.e_step({k: v[s] for k, v in block.items()}, p)
            for s in (slice(0, 377), slice(377, None))
        ]
        assert whole.keys() == parts[0].keys()
        assert ("sum_xxT" in whole) == ("mean_xxT" not in p)
        for key in whole:
            np.testing.assert_allclose(parts[0][key] + parts[1][key], whole[key], rtol=1e-12)


def test_chunk_invariance_and_numpy_vs_dask():
    X, y, left, right = dataset("right", n=3000, seed=3)
    base = dem.CensoredRegression(left, right, tol=1e-10).fit(X, y)
    other = dem.CensoredRegression(left, right, tol=1e-10).fit(
        da.from_array(X, chunks=(700, 3)), da.from_array(y, chunks=700)
    )
    np.testing.assert_allclose(theta_of(other), theta_of(base), rtol=1e-9)
    np.testing.assert_allclose(other.bse_, base.bse_, rtol=1e-7)
    # an in-memory y is chunked as X is
    mixed = dem.CensoredRegression(left, right, tol=1e-10).fit(da.from_array(X, chunks=(700, 3)), y)
    np.testing.assert_array_equal(theta_of(mixed), theta_of(other))
    same_chunks = dem.CensoredRegression(left, right, tol=1e-10).fit(
        da.from_array(X, chunks=(100_000, 3)), da.from_array(y, chunks=100_000)
    )
    np.testing.assert_array_equal(theta_of(same_chunks), theta_of(base))


def test_xtx_is_computed_once():
    X, y, _, _ = dataset("left", n=500)
    model = CensoredModel(True, 0.0, np.inf, True)
    seen = []

    class Spy(CensoredModel):
        def e_step(self, block, params):
            stats = super().e_step(block, params)
            seen.append("sum_xxT" in stats)
            return stats

    spy = Spy(True, 0.0, np.inf, True)
    result = dem.fit(
        spy,
        {"X": da.from_array(X, chunks=(200, 3)), "y": da.from_array(y, chunks=200)},
        lambda: {"coef": np.zeros(4), "scale": np.float64(1.0)},
        tol=1e-3,
        max_iter=100,
    )
    assert seen[:3] == [True] * 3 and not any(seen[3:])  # three chunks, first pass only
    np.testing.assert_allclose(
        result.params["mean_xxT"] * 500,
        np.column_stack([np.ones(500), X]).T @ np.column_stack([np.ones(500), X]),
        rtol=1e-12,
    )
    assert model.config() == spy.config()


# --- inputs: float32, xarray, Zarr, checkpoints, a real cluster ---------------------------


def test_float32_features():
    X, y, left, right = dataset("right", n=3000, seed=5)
    double = dem.CensoredRegression(left, right, tol=1e-10).fit(X, y)
    single = dem.CensoredRegression(left, right, tol=1e-10).fit(X.astype(np.float32), y)
    np.testing.assert_allclose(theta_of(single), theta_of(double), rtol=1e-5)


def test_zarr_store_xarray_and_checkpoint_resume(tmp_path):
    X, y, left, right = dataset("interval", n=2000, seed=11)
    store = tmp_path / "data.zarr"
    group = zarr.open_group(str(store), mode="w")
    for name, value, chunks in (
        ("X", X, (500, 3)),
        ("y", y, (500,)),
        ("lo", left, (500,)),
        ("hi", right, (500,)),
    ):
        group.create_array(name, shape=value.shape, dtype="f8", chunks=chunks)[...] = value
    reference = dem.CensoredRegression(tol=1e-10).fit(
        da.from_array(X, chunks=(500, 3)),
        da.from_array(y, chunks=500),
        left=da.from_array(left, chunks=500),
        right=da.from_array(right, chunks=500),
    )
    from_store = dem.CensoredRegression(tol=1e-10).fit(
        str(store), "y", left="lo", right="hi", variable="X"
    )
    np.testing.assert_array_equal(theta_of(from_store), theta_of(reference))

    ds = xr.Dataset(
        {
            "X": (("sample", "feature"), X),
            "y": ("sample", y),
            "lo": ("sample", left),
            "hi": ("sample", right),
        },
        coords={"feature": ["age", "income", "hours"]},
    )
    from_xarray = dem.CensoredRegression(tol=1e-10).fit(
        ds, "y", left="lo", right="hi", variable="X"
    )
    np.testing.assert_allclose(theta_of(from_xarray), theta_of(reference), rtol=1e-9)
    assert list(from_xarray.feature_names_in_) == ["age", "income", "hours"]
    assert "income" in str(from_xarray.summary())

    path = tmp_path / "fit.zarr"
    with pytest.warns(ConvergenceWarning):
        dem.CensoredRegression(tol=1e-10, max_iter=4, checkpoint=path).fit(
            str(store), "y", left="lo", right="hi", variable="X"
        )
    resumed = dem.CensoredRegression(tol=1e-10, checkpoint=path, resume=True).fit(
        str(store), "y", left="lo", right="hi", variable="X"
    )
    np.testing.assert_array_equal(theta_of(resumed), theta_of(reference))
    assert resumed.n_iter_ == reference.n_iter_
    saved = dem.load_checkpoint(path)
    np.testing.assert_array_equal(
        saved["coef"].values, np.concatenate([[resumed.intercept_], resumed.coef_])
    )
    with pytest.raises(dem.CheckpointMismatchError):  # another model
        dem.CensoredRegression(fit_intercept=False, checkpoint=path, resume=True).fit(
            str(store), "y", left="lo", right="hi", variable="X"
        )


@pytest.fixture
def cluster_client():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.mark.slow
def test_distributed_cluster_gives_the_same_fit(cluster_client):
    X, y, left, right = dataset("interval", n=2000, seed=13)
    chunks = 1000
    args = (da.from_array(X, chunks=(chunks, 3)), da.from_array(y, chunks=chunks))
    limits = {
        "left": da.from_array(left, chunks=chunks),
        "right": da.from_array(right, chunks=chunks),
    }
    on_cluster = dem.CensoredRegression(tol=1e-6).fit(*args, **limits)
    with dask.config.set(scheduler="threads"):
        local = dem.CensoredRegression(tol=1e-6).fit(*args, **limits)
    # same tree of sums; only BLAS's threading may round differently
    np.testing.assert_allclose(theta_of(on_cluster), theta_of(local), rtol=1e-12)
    np.testing.assert_allclose(on_cluster.bse_, local.bse_, rtol=1e-10)
    assert on_cluster.n_iter_ == local.n_iter_


# --- results ------------------------------------------------------------------------------


def test_predictions_and_marginal_effects(fits):
    model, _, (X, _, _, _) = fits["left"]
    mu = model.intercept_ + X @ model.coef_
    np.testing.assert_allclose(model.predict(X), mu, rtol=1e-12)
    # E[max(y*, 0)] = Φ(μ/σ) μ + σ φ(μ/σ) (the textbook Tobit formula)
    s = model.scale_
    textbook = stats.norm.cdf(mu / s) * mu + s * stats.norm.pdf(mu / s)
    np.testing.assert_allclose(model.predict_expected(X), textbook, rtol=1e-10)
    # two limits, against numerical integration
    lo, hi = -0.5, 1.0
    got = model.predict_expected(X[:5], left=lo, right=hi)
    for m, value in zip(mu[:5], got, strict=True):
        inside = integrate.quad(lambda t, m=m: t * stats.norm.pdf(t, m, s), lo, hi, epsabs=1e-13)[0]
        expected = lo * stats.norm.cdf(lo, m, s) + hi * stats.norm.sf(hi, m, s) + inside
        np.testing.assert_allclose(value, expected, rtol=1e-9)
    # marginal effects: finite differences of the expected value
    effects = model.marginal_effects(X, left=lo, right=hi)
    step = 1e-6
    for j in range(X.shape[1]):
        shifted = X.copy()
        shifted[:, j] += step
        up = model.predict_expected(shifted, left=lo, right=hi)
        shifted[:, j] -= 2 * step
        down = model.predict_expected(shifted, left=lo, right=hi)
        np.testing.assert_allclose(effects.average[j], np.mean(up - down) / (2 * step), rtol=1e-6)
        at_mean = X.mean(axis=0, keepdims=True)
        up, down = at_mean.copy(), at_mean.copy()
        up[0, j] += step
        down[0, j] -= step
        derivative = (
            model.predict_expected(up, left=lo, right=hi)
            - model.predict_expected(down, left=lo, right=hi)
        ) / (2 * step)
        np.testing.assert_allclose(effects.at_means[j], derivative[0], rtol=1e-6)
    lazy = model.predict(da.from_array(X, chunks=(1000, 3)))
    assert isinstance(lazy, da.Array)
    np.testing.assert_allclose(lazy.compute(), mu, rtol=1e-12)


def test_expected_value_with_per_row_limits(fits, tmp_path):
    """Per-row limits, as arrays or a store's variables, against the closed form."""
    model, _, (X, _, _, _) = fits["left"]
    mu, s = model.intercept_ + X @ model.coef_, model.scale_
    lower = np.random.default_rng(4).uniform(-1.0, 1.0, len(X))
    lower[::7] = -np.inf  # no limit on these rows
    # E[max(y*, c)] = c Φ(α) + μ (1 - Φ(α)) + σ φ(α) with α = (c - μ) / σ; E[y*] = μ for c = -inf
    alpha = (lower - mu) / s
    finite = np.isfinite(lower)
    closed = np.where(
        finite,
        np.where(finite, lower, 0.0) * stats.norm.cdf(alpha)
        + mu * stats.norm.sf(alpha)
        + s * stats.norm.pdf(alpha),
        mu,
    )
    np.testing.assert_allclose(model.predict_expected(X, left=lower), closed, rtol=1e-10)
    store = tmp_path / "limits.zarr"
    group = zarr.open_group(store, mode="w")
    group.create_array("X", data=X, chunks=(700, X.shape[1]))
    group.create_array("low", data=lower, chunks=(700,))
    lazy = model.predict_expected(store, left="low", variable="X")
    assert isinstance(lazy, da.Array) and lazy.chunks[0][0] == 700
    np.testing.assert_allclose(lazy.compute(), closed, rtol=1e-10)
    constant = model.predict_expected(X, left=np.zeros(len(X)), right=np.full(len(X), 2.0))
    np.testing.assert_array_equal(constant, model.predict_expected(X, left=0.0, right=2.0))


def test_score_is_the_mean_log_likelihood(fits):
    model, _, (X, y, left, right) = fits["per-observation"]
    A = np.column_stack([np.ones(len(X)), X])
    expected = -negloglik(theta_of(model), A, *bounds_of(y, left, right))[0] / len(y)
    np.testing.assert_allclose(model.score(X, y, left=left, right=right), expected, rtol=1e-12)


def test_summary_table(fits):
    model = fits["left"][0]
    summary = model.summary()
    text = str(summary)
    assert text.splitlines()[0] == "Observations:"
    for label in (
        "Total",
        "Left-censored",
        "Uncensored",
        "Right-censored",
        "(Intercept)",
        "x0",
        "x2",
        "Log(scale)",
        "Estimate",
        "Std. Error",
        "z value",
        "Pr(>|z|)",
        "Log-likelihood",
        "Wald-statistic",
    ):
        assert label in text
    assert "Interval-censored" not in text
    np.testing.assert_allclose(summary.z_value, summary.estimate / model.bse_)
    np.testing.assert_allclose(summary.p_value, 2 * stats.norm.sf(np.abs(summary.z_value)))
    slopes = model.coef_
    cov = model.cov_[1:-1, 1:-1]
    np.testing.assert_allclose(summary.wald, slopes @ np.linalg.solve(cov, slopes), rtol=1e-10)
    row = next(line for line in text.splitlines() if line.startswith("x0"))
    assert f"{model.coef_[0]:.4f}" in row
    assert "Interval-censored" in str(fits["interval"][0].summary())


def test_no_intercept():
    X, ystar = latent(3000, seed=21)
    y = np.maximum(ystar - INTERCEPT, 0.0)
    model = dem.CensoredRegression(0.0, fit_intercept=False, tol=1e-10).fit(X, y)
    theta, _, hessian = direct_fit(X, *bounds_of(y, 0.0, np.inf), intercept=False)
    assert model.intercept_ == 0.0
    np.testing.assert_allclose(
        np.concatenate([model.coef_, [np.log(model.scale_)]]), theta, rtol=1e-6
    )
    np.testing.assert_allclose(model.bse_, np.sqrt(np.diag(np.linalg.inv(hessian))), rtol=1e-5)
    assert "(Intercept)" not in str(model.summary())


# --- bad input ------------------------------------------------------------------------------


def test_bad_input_gets_clear_errors():
    X, y, left, right = dataset("both", n=600)
    fit = dem.CensoredRegression(left, right).fit
    with pytest.raises(ValueError, match="y has 599 samples but X has 600"):
        fit(X, y[:-1])
    with pytest.raises(ValueError, match="same sample chunks"):
        fit(da.from_array(X, chunks=(200, 3)), da.from_array(y, chunks=300))
    bad = X.copy()
    bad[123, 1] = np.nan
    with pytest.raises(ValueError, match=r"'X' contains NaN or infinity .*rows? 123"):
        fit(bad, y)
    with pytest.raises(
        ValueError, match=r"y is NaN in 1 row\(s\), the first at row 17. Remove those rows, or"
    ):
        fit(X, np.where(np.arange(600) == 17, np.nan, y))
    with pytest.raises(ValueError, match=r"'y' contains infinity"):
        fit(X, np.where(np.arange(600) == 5, np.inf, y))
    with pytest.raises(ValueError, match="left must be below right"):
        dem.CensoredRegression(1.0, 1.0).fit(X, y)
    lo = np.full(600, -1.0)
    lo[[40, 41]] = 5.0
    with pytest.raises(ValueError, match=r"left >= right in 2 row\(s\), the first at row 40"):
        fit(X, y, left=lo, right=np.full(600, 2.0))
    nan_y = np.where(np.arange(600) < 3, np.nan, y)
    lo, hi = np.full(600, -np.inf), np.full(600, np.inf)
    with pytest.raises(
        ValueError, match=r"neither limit is finite in 3 row\(s\), the first at row 0"
    ):
        fit(X, nan_y, left=lo, right=hi)
    lo[:3], hi[:3] = 1.0, 0.0
    with pytest.raises(ValueError, match=r"left > right for a row with NaN y .* in 3 row\(s\)"):
        fit(X, nan_y, left=lo, right=hi)
    with pytest.raises(ValueError, match="Every row is censored"):
        fit(X, np.where(y > 0, 10.0, -10.0), left=-1.0, right=1.0)
    with pytest.raises(ValueError, match="collinear: column 0, column 3 are linearly dependent"):
        fit(np.column_stack([X, 2 * X[:, 0]]), y)
    with pytest.raises(
        ValueError,
        match=r"the intercept, column 3 are linearly dependent .* duplicates the intercept",
    ):
        fit(np.column_stack([X, np.full(600, 3.0)]), y)
    with pytest.raises(ValueError, match="column 1 is all zeros"):
        fit(np.column_stack([X[:, 0], np.zeros(600)]), y)
    with pytest.raises(ValueError, match="y is required"):
        fit(X)
    with pytest.raises(TypeError, match="names a variable"):
        fit(X, "y")
    with pytest.raises(
        ValueError,
        match=r"'tol' parameter of CensoredRegression must be a float in the range \[0.0, inf\)",
    ):
        dem.CensoredRegression(tol=-1.0).fit(X, y)
    with pytest.raises(ValueError, match="'left' parameter of CensoredRegression must be a float"):
        dem.CensoredRegression(left=np.nan).fit(X, y)
    with pytest.raises(dem.NotFittedError):
        dem.CensoredRegression().predict(X)
    model = dem.CensoredRegression(left, right, max_iter=3)
    with pytest.warns(ConvergenceWarning):
        model.fit(X, y)
    with pytest.raises(
        ValueError,
        match="X has 2 features, but CensoredRegression is expecting 3 features as input",
    ):
        model.predict(X[:, :2])


# --- SQUAREM ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_squarem_reaches_the_direct_optimum(fits, kind):
    plain, (theta, loglik, _), (X, y, left, right) = fits[kind]
    fast = dem.CensoredRegression(tol=1e-10, accelerate="squarem").fit(X, y, left=left, right=right)
    assert fast.converged_
    np.testing.assert_allclose(theta_of(fast), theta, rtol=1e-6)
    np.testing.assert_allclose(fast.loglik_, loglik, rtol=1e-10)
    np.testing.assert_allclose(fast.loglik_, plain.loglik_, rtol=1e-12)
    np.testing.assert_allclose(fast.bse_, plain.bse_, rtol=1e-6)
    trace = np.array(fast.lower_bounds_)
    assert np.all(np.diff(trace) >= -1e-13 * np.abs(trace[1:]))
    assert fast.n_iter_ <= plain.n_iter_


def test_squarem_halves_the_passes_under_heavy_censoring():
    """About 75% censored on both sides, where plain EM crawls (issue 7, target (a))."""
    X, ystar = latent(4000, seed=7)
    left, right = np.quantile(ystar, [0.45, 0.70])
    y = np.clip(ystar, left, right)
    data = (da.from_array(X, chunks=(1000, 3)), da.from_array(y, chunks=1000))
    plain = dem.CensoredRegression(left, right).fit(*data)
    fast = dem.CensoredRegression(left, right, accelerate="squarem").fit(*data)
    theta, loglik, _ = direct_fit(X, *bounds_of(y, left, right))
    assert plain.converged_ and fast.converged_
    np.testing.assert_allclose(theta_of(fast), theta, rtol=1e-6)
    np.testing.assert_allclose(fast.loglik_, loglik, rtol=1e-12)
    assert 2 * fast.n_iter_ <= plain.n_iter_


def test_squarem_vector_is_coef_and_log_scale():
    model = CensoredModel()
    params = {"coef": np.array([0.5, -1.0]), "scale": np.float64(2.0), "mean_xxT": np.eye(2)}
    vector = model.pack(params)
    np.testing.assert_array_equal(vector, [0.5, -1.0, np.log(2.0)])
    moved = model.unpack(vector + np.array([1.0, 0.0, -np.log(4.0)]), params)
    np.testing.assert_allclose(moved["coef"], [1.5, -1.0])
    assert moved["scale"] == pytest.approx(0.5)
    assert moved["mean_xxT"] is params["mean_xxT"]  # not a parameter: carried through
    assert "mean_xxT" not in model.unpack(vector, {"coef": params["coef"], "scale": 2.0})
    for bad in ([0.0, 0.0, 800.0], [0.0, 0.0, -800.0], [np.nan, 0.0, 0.0]):
        with pytest.raises(ValueError, match="No valid parameters"):
            model.unpack(np.array(bad), params)
    with pytest.raises(ValueError, match=r"'accelerate' parameter of \w+ must be a str among"):
        dem.CensoredRegression(accelerate="warp").fit(*dataset("both", n=200)[:2])


def test_restored_fit_has_the_standard_errors_and_term_names_of_the_fit(tmp_path):
    """The checkpoint's ``final`` group holds the last pass's standard errors and the
    term names: the restored estimator's summary is the fit's, and both are the
    numerical Hessian's of the reference likelihood."""
    pd = pytest.importorskip("pandas")
    X, y, left, right = dataset("both")
    frame = pd.DataFrame(X, columns=["age", "income", "kids"][: X.shape[1]])
    path = tmp_path / "tobit.zarr"
    fitted = dem.CensoredRegression(left=left, right=right, tol=1e-10, checkpoint=path)
    fitted.fit(frame, y)
    restored = dem.from_checkpoint(path)
    np.testing.assert_array_equal(theta_of(restored), theta_of(fitted))
    np.testing.assert_array_equal(restored.bse_, fitted.bse_)
    np.testing.assert_array_equal(restored.cov_, fitted.cov_)
    assert restored.loglik_ == fitted.loglik_
    assert restored.counts_ == fitted.counts_
    assert restored.fit_limits_ == fitted.fit_limits_
    assert list(restored.feature_names_in_) == list(frame.columns)
    assert str(restored.summary()) == str(fitted.summary())
    assert "income" in str(restored.summary())
    A = np.column_stack([np.ones(len(X)), X])
    hessian = numerical_hessian(theta_of(restored), A, *bounds_of(y, left, right))
    np.testing.assert_allclose(restored.bse_, np.sqrt(np.diag(np.linalg.inv(hessian))), rtol=1e-5)
    # a final group whose arrays were altered after it was written is ignored
    zarr.open_group(path / "final", mode="r+")["bse"][0] = 1.0
    assert not hasattr(dem.from_checkpoint(path), "bse_")


def test_results_of_another_iteration_or_damaged_ones_are_not_restored(tmp_path):
    """A resumed fit interrupted after more iterations leaves the ``final`` group of an
    earlier iteration: the restored estimator has parameters only, summary() says what
    to do, and standard_errors() on the training data gives the fit's own figures. A
    final group altered after it was written is ignored too (see above)."""
    X, y, left, right = dataset("both")
    path = tmp_path / "tobit.zarr"
    with pytest.warns(ConvergenceWarning):
        dem.CensoredRegression(left=left, right=right, tol=1e-12, max_iter=3, checkpoint=path).fit(
            X, y
        )

    def interrupt(info):
        if info.iteration == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        dem.CensoredRegression(
            left=left, right=right, tol=1e-12, checkpoint=path, resume=True, callback=interrupt
        ).fit(X, y)
    with pytest.warns(UserWarning, match="without converging"):
        restored = dem.from_checkpoint(path)
    assert restored.n_iter_ == 5
    with pytest.raises(dem.NotFittedError, match=r"standard_errors\(X, y"):
        restored.summary()
    with pytest.warns(ConvergenceWarning):
        fitted = dem.CensoredRegression(left=left, right=right, tol=1e-12, max_iter=5).fit(X, y)
    assert restored.standard_errors(X, y) is restored
    np.testing.assert_allclose(restored.bse_, fitted.bse_, rtol=1e-10)
    assert str(restored.summary()) == str(fitted.summary())
    with pytest.raises(ValueError, match="features"):
        restored.standard_errors(X[:, :2], y)
