"""PPCA and factor analysis: checked against closed forms, scikit-learn and scipy.optimize."""

from __future__ import annotations

import itertools

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scipy import optimize, stats
from sklearn.decomposition import PCA
from sklearn.decomposition import FactorAnalysis as SkFactorAnalysis

import dem
from dem.checkpoint import CheckpointMismatchError
from dem.models.ppca import init as ppca_init
from dem.models.ppca.init import available_case_covariance, initial_params
from dem.models.ppca.kernels import Packing, packing
from dem.models.ppca.model import BLOCK_ROWS, LinearGaussianModel

ESTIMATORS = {"isotropic": dem.PPCA, "diagonal": dem.FactorAnalysis}


def low_rank_data(
    n: int, d: int, q: int, *, seed: int, noise: float | np.ndarray = 0.5, scale: float = 3.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows from x = W z + mu + eps; returns (X, W, mu)."""
    rng = np.random.default_rng(seed)
    loadings = rng.standard_normal((d, q)) * scale * np.linspace(1.0, 0.5, q)
    mean = rng.normal(0.0, 4.0, d)
    X = rng.standard_normal((n, q)) @ loadings.T + mean
    X += rng.standard_normal((n, d)) * np.sqrt(noise)
    return X, loadings, mean


def factor_data(n: int, d: int, q: int, *, seed: int) -> np.ndarray:
    """Factor-analysis rows with uniquenesses of 15-40% of each variance, where EM
    converges in about a hundred iterations (small uniquenesses make it crawl)."""
    rng = np.random.default_rng(seed)
    loadings = rng.uniform(0.5, 1.2, (d, q)) * rng.choice([-1.0, 1.0], (d, q))
    noise = rng.uniform(0.5, 1.5, d)
    X = rng.standard_normal((n, q)) @ loadings.T + rng.normal(0.0, 4.0, d)
    return X + rng.standard_normal((n, d)) * np.sqrt(noise)


def with_missing(X: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Missing completely at random."""
    out = X.copy()
    out[np.random.default_rng(seed).random(X.shape) < fraction] = np.nan
    return out


# --- an independent reference: the observed-data likelihood, maximised by L-BFGS ---------


def missingness_groups(X: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    observed = ~np.isnan(X)
    keys, inverse = np.unique(observed, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    return [(key, X[inverse == i][:, key]) for i, key in enumerate(keys) if key.any()]


def negative_loglik(
    theta: np.ndarray,
    groups: list,
    d: int,
    q: int,
    noise: str,
    fixed_mean: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """−log p(observed entries) and its gradient in (W, mu, log noise); Gaussian per pattern.

    With ``fixed_mean`` the mean is not a variable.
    """
    if fixed_mean is not None:
        theta = np.concatenate([theta[: d * q], fixed_mean, theta[d * q :]])
    W = theta[: d * q].reshape(d, q)
    mu = theta[d * q : d * q + d]
    psi = np.exp(theta[d * q + d :]) * np.ones(d)
    loglik, grad_w, grad_mu, grad_psi = 0.0, np.zeros_like(W), np.zeros(d), np.zeros(d)
    for o, xo in groups:
        cov = W[o] @ W[o].T + np.diag(psi[o])
        inv = np.linalg.inv(cov)
        resid = xo - mu[o]
        a = inv @ resid.T
        loglik -= 0.5 * (
            len(xo) * (o.sum() * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1])
            + np.sum(resid * a.T)
        )
        g = 0.5 * (a @ a.T - len(xo) * inv)  # d loglik / d cov
        grad_mu[o] += a.sum(axis=1)
        grad_w[o] += 2.0 * g @ W[o]
        grad_psi[o] += np.diag(g)
    grad_log = grad_psi * psi
    if noise == "isotropic":
        grad_log = np.array([grad_log.sum()])
    parts = [grad_w.ravel(), *([] if fixed_mean is not None else [grad_mu]), grad_log]
    return -loglik, -np.concatenate(parts)


def direct_maximum(X: np.ndarray, q: int, noise: str, fixed_mean: np.ndarray | None = None):
    d = X.shape[1]
    groups = missingness_groups(X)
    rng = np.random.default_rng(123)
    start = np.concatenate(
        [
            0.1 * rng.standard_normal(d * q),
            *([] if fixed_mean is not None else [np.zeros(d)]),
            np.zeros(1 if noise == "isotropic" else d),
        ]
    )
    args = (groups, d, q, noise, fixed_mean)
    err = optimize.check_grad(
        lambda t: negative_loglik(t, *args)[0], lambda t: negative_loglik(t, *args)[1], start + 0.3
    )
    assert err < 1e-5 * np.linalg.norm(negative_loglik(start + 0.3, *args)[1])
    result = optimize.minimize(
        negative_loglik,
        start,
        args=args,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 50_000, "maxfun": 100_000, "ftol": 1e-16, "gtol": 1e-10},
    )
    assert result.success, result.message
    return result


# --- complete data: the closed-form maximum and scikit-learn ------------------------------


def test_ppca_reaches_the_closed_form_maximum_from_a_random_start():
    X, _, _ = low_rank_data(1500, 8, 3, seed=0)
    n, d = X.shape
    model = dem.PPCA(3, init_params="random", tol=1e-11, max_iter=3000, random_state=1).fit(X)
    # closed form (Tipping & Bishop): eigen-decomposition of the 1/N sample covariance
    centred = X - X.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred / n)
    values, vectors = values[::-1], vectors[:, ::-1]
    sigma2 = values[3:].mean()
    loglik = -0.5 * (
        d * np.log(2 * np.pi) + np.log(values[:3]).sum() + (d - 3) * np.log(sigma2) + d
    )
    assert model.converged_
    assert model.lower_bound_ == pytest.approx(loglik, abs=1e-9)
    assert model.score(X) == pytest.approx(loglik, abs=1e-9)
    assert model.noise_variance_ == pytest.approx(sigma2, rel=1e-5)
    np.testing.assert_allclose(model.mean_, X.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(model.explained_variance_, values[:3], rtol=1e-4)
    # the same subspace: |cosines| between the axes form the identity
    np.testing.assert_allclose(np.abs(model.components_ @ vectors[:, :3]), np.eye(3), atol=1e-3)
    np.testing.assert_allclose(model.components_ @ model.components_.T, np.eye(3), atol=1e-12)


def test_ppca_matches_sklearn_pca_after_the_n_minus_1_correction():
    X, _, _ = low_rank_data(2000, 10, 4, seed=2)
    n = len(X)
    model = dem.PPCA(4, tol=1e-12, max_iter=500).fit(X)
    reference = PCA(4).fit(X)
    # scikit-learn's covariance divides by N - 1; the maximum likelihood one by N
    reference.explained_variance_ *= (n - 1) / n
    reference.noise_variance_ *= (n - 1) / n
    assert model.score(X) == pytest.approx(reference.score(X), abs=1e-10)
    np.testing.assert_allclose(model.score_samples(X), reference.score_samples(X), atol=1e-8)
    np.testing.assert_allclose(model.explained_variance_, reference.explained_variance_, rtol=1e-7)
    assert model.noise_variance_ == pytest.approx(reference.noise_variance_, rel=1e-8)
    # same axes, same sign convention (largest entry positive; svd_flip on components)
    np.testing.assert_allclose(model.components_, reference.components_, atol=1e-6)
    np.testing.assert_allclose(model.get_covariance(), reference.get_covariance(), atol=1e-7)
    np.testing.assert_allclose(model.get_precision(), reference.get_precision(), atol=1e-7)
    # the posterior mean is the PCA projection shrunk by sqrt(lambda - sigma2) / lambda
    shrink = np.sqrt(model.explained_variance_ - model.noise_variance_) / model.explained_variance_
    np.testing.assert_allclose(model.transform(X), reference.transform(X) * shrink, atol=1e-6)


def test_factor_analysis_matches_sklearn_loglik_at_convergence():
    X = factor_data(2000, 10, 3, seed=3)
    model = dem.FactorAnalysis(3, tol=1e-12, max_iter=1000).fit(X)
    reference = SkFactorAnalysis(3, tol=1e-9, max_iter=10_000, svd_method="lapack").fit(X)
    assert model.converged_
    assert model.score(X) == pytest.approx(reference.score(X), abs=1e-9)
    assert model.lower_bound_ == pytest.approx(reference.score(X), abs=1e-9)
    np.testing.assert_allclose(model.score_samples(X), reference.score_samples(X), atol=1e-5)
    np.testing.assert_allclose(model.noise_variance_, reference.noise_variance_, rtol=1e-4)
    np.testing.assert_allclose(model.get_covariance(), reference.get_covariance(), atol=1e-5)
    np.testing.assert_allclose(
        model.transform(X) @ model.loadings_,
        reference.transform(X) @ reference.components_,
        atol=1e-4,
    )


# --- missing values: the observed-data likelihood, maximised directly ----------------------


@pytest.mark.parametrize(
    ("noise", "fraction"),
    [("isotropic", 0.1), ("isotropic", 0.3), ("diagonal", 0.1), ("diagonal", 0.3)],
)
def test_missing_values_reach_the_direct_maximum_of_the_observed_likelihood(noise, fraction):
    X = with_missing(factor_data(300, 6, 2, seed=3), fraction, seed=5)
    d = X.shape[1]
    n_seen = int((~np.isnan(X)).any(axis=1).sum())  # score averages over rows seen
    model = ESTIMATORS[noise](2, tol=1e-11, max_iter=1000, random_state=0).fit(X)
    reference = direct_maximum(X, 2, noise)
    W = reference.x[: d * 2].reshape(d, 2)
    mean = reference.x[d * 2 : d * 3]
    psi = np.exp(reference.x[d * 3 :]) * np.ones(d)
    assert model.converged_
    assert model.score(X) * n_seen == pytest.approx(-reference.fun, abs=1e-5)
    theta = np.concatenate(
        [model.loadings_.T.ravel(), model.mean_, np.log(np.atleast_1d(model.noise_variance_))]
    )
    at_ours = -negative_loglik(theta, missingness_groups(X), d, 2, noise)[0]
    assert model.score(X) * n_seen == pytest.approx(at_ours, rel=1e-12)
    np.testing.assert_allclose(model.mean_, mean, atol=2e-4)
    np.testing.assert_allclose(model.get_covariance(), W @ W.T + np.diag(psi), atol=2e-4)
    # the mean is estimated jointly: fixing it at the observed column means is worse
    column_means = np.nanmean(X, axis=0)
    assert np.abs(model.mean_ - column_means).max() > 0.01
    assert -direct_maximum(X, 2, noise, fixed_mean=column_means).fun < -reference.fun - 0.01


def test_per_row_results_match_the_gaussian_conditionals():
    X = with_missing(factor_data(500, 7, 2, seed=6), 0.3, seed=7)
    X[3] = np.nan
    model = dem.FactorAnalysis(2, random_state=0).fit(X)
    cov, mean = model.get_covariance(), model.mean_
    loglik, imputed, latents = model.score_samples(X), model.impute(X), model.transform(X)
    W = model.loadings_.T
    for row in range(40):
        o = ~np.isnan(X[row])
        if not o.any():
            assert loglik[row] == 0.0
            np.testing.assert_array_equal(imputed[row], mean)
            np.testing.assert_array_equal(latents[row], 0.0)
            continue
        m = ~o
        expected = stats.multivariate_normal(mean[o], cov[np.ix_(o, o)]).logpdf(X[row, o])
        assert loglik[row] == pytest.approx(expected, abs=1e-10)
        np.testing.assert_array_equal(imputed[row, o], X[row, o])
        gain = np.linalg.solve(cov[np.ix_(o, o)], X[row, o] - mean[o])
        np.testing.assert_allclose(imputed[row, m], mean[m] + cov[np.ix_(m, o)] @ gain, atol=1e-10)
        # E[z | x_o] = W_o^T C_oo^-1 (x_o - mu_o)
        np.testing.assert_allclose(latents[row], W[o].T @ gain, atol=1e-10)


def test_impute_recovers_held_out_entries_to_the_noise_level():
    noise = 0.01
    X, _, _ = low_rank_data(3000, 20, 3, seed=8, noise=noise)
    X_missing = with_missing(X, 0.2, seed=9)
    held_out = np.isnan(X_missing)
    imputed = dem.PPCA(3, random_state=0).fit(X_missing).impute(X_missing)
    rmse = np.sqrt(np.mean((imputed[held_out] - X[held_out]) ** 2))
    column_means = np.broadcast_to(np.nanmean(X_missing, axis=0), X.shape)
    baseline = np.sqrt(np.mean((column_means[held_out] - X[held_out]) ** 2))
    assert rmse < 1.2 * np.sqrt(noise)
    assert rmse < 0.05 * baseline
    np.testing.assert_array_equal(imputed[~held_out], X[~held_out])


# --- EM properties ---------------------------------------------------------------------------


@pytest.mark.parametrize("noise", ["isotropic", "diagonal"])
def test_loglik_never_decreases(noise):
    X = with_missing(low_rank_data(800, 9, 3, seed=10)[0], 0.25, seed=11)
    with pytest.warns(dem.ConvergenceWarning):
        model = ESTIMATORS[noise](
            3, init_params="random", tol=0.0, max_iter=150, random_state=2
        ).fit(X)
    bounds = np.array(model.lower_bounds_)
    assert len(bounds) == 150
    assert np.all(np.diff(bounds) >= -1e-12 * np.abs(bounds[1:]))
    assert bounds[-1] - bounds[0] > 1.0  # it did climb from the random start


def test_statistics_are_chunk_invariant():
    X = low_rank_data(3 * BLOCK_ROWS, 6, 2, seed=12)[0]
    X[: 2 * BLOCK_ROWS] = with_missing(X[: 2 * BLOCK_ROWS], 0.2, seed=13)
    X[[5, 17, BLOCK_ROWS + 3]] = np.nan  # rows with nothing observed are left out
    model = LinearGaussianModel(2, "diagonal")
    rng = np.random.default_rng(0)
    params = {
        "loadings": rng.standard_normal((6, 2)),
        "mean": rng.standard_normal(6),
        "noise_variance": rng.uniform(0.5, 1.5, 6),
    }
    whole = model.e_step({"X": X}, params)
    cuts = [0, 1000, 2 * BLOCK_ROWS + 1, 2 * BLOCK_ROWS + 700, len(X)]
    parts = [model.e_step({"X": X[a:b]}, params) for a, b in itertools.pairwise(cuts)]
    assert "sum_zz_missing" not in parts[-1]  # a chunk without missing values
    total = parts[0]
    for part in parts[1:]:
        total = model.combine(total, part)
    assert whole.keys() == total.keys()
    for key in whole:
        np.testing.assert_allclose(total[key], whole[key], rtol=1e-11, atol=1e-9, err_msg=key)
    assert whole["n"] == len(X) - 3
    assert whole["count"].tolist() == (~np.isnan(X)).sum(axis=0).tolist()


def test_packing_round_trip():
    pack = packing(4)
    assert isinstance(pack, Packing)
    sym = np.arange(16.0).reshape(4, 4)
    sym = sym + sym.T
    np.testing.assert_array_equal(pack.unpack(sym[pack.rows, pack.cols]), sym)
    np.testing.assert_array_equal(pack.rows[pack.diagonal], np.arange(4))


@pytest.mark.parametrize("noise", ["isotropic", "diagonal"])
def test_numpy_dask_and_xarray_agree(noise):
    X = with_missing(low_rank_data(1000, 8, 2, seed=14)[0], 0.15, seed=15)
    kwargs = {"tol": 0.0, "max_iter": 25, "random_state": 3}
    with pytest.warns(dem.ConvergenceWarning):
        reference = ESTIMATORS[noise](2, **kwargs).fit(X)
    lazy = da.from_array(X, chunks=(137, -1))
    with pytest.warns(dem.ConvergenceWarning):
        model = ESTIMATORS[noise](2, **kwargs).fit(lazy)
    for name in ("components_", "explained_variance_", "noise_variance_", "mean_", "lower_bounds_"):
        np.testing.assert_allclose(
            getattr(model, name), getattr(reference, name), rtol=1e-9, atol=1e-12
        )
    for method in ("transform", "score_samples", "impute"):
        out = getattr(model, method)(lazy)
        assert isinstance(out, da.Array), method
        assert out.chunks[0] == lazy.chunks[0]
        np.testing.assert_allclose(out.compute(), getattr(model, method)(X), rtol=1e-12, atol=1e-12)
    assert model.score(lazy) == pytest.approx(model.score(X), rel=1e-12)
    labelled = xr.DataArray(
        lazy, dims=("sample", "feature"), coords={"sample": np.arange(1000) * 10}
    )
    latents = model.transform(labelled)
    assert isinstance(latents, xr.DataArray) and isinstance(latents.data, da.Array)
    assert latents.dims == ("sample", "component")
    np.testing.assert_array_equal(latents["sample"], np.arange(1000) * 10)
    back = model.inverse_transform(latents)
    assert isinstance(back, xr.DataArray) and back.dims == ("sample", "feature")
    np.testing.assert_allclose(
        back.values, latents.values @ model.loadings_ + model.mean_, rtol=1e-12
    )


def test_float32_input():
    X = low_rank_data(1000, 6, 2, seed=16)[0]
    single = dem.PPCA(2, random_state=0).fit(X.astype(np.float32))
    double = dem.PPCA(2, random_state=0).fit(X.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(single.components_, double.components_, atol=1e-10)
    assert single.impute(X.astype(np.float32)).dtype == np.float32


def test_sample_follows_the_fitted_covariance():
    X = factor_data(2000, 5, 2, seed=17)
    model = dem.FactorAnalysis(2, random_state=0).fit(X)
    draws = model.sample(40_000, random_state=1)
    assert draws.shape == (40_000, 5)
    cov = model.get_covariance()
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.05 * np.abs(cov).max())
    np.testing.assert_allclose(
        draws.mean(axis=0), model.mean_, atol=0.05 * np.sqrt(cov.diagonal().max())
    )
    np.testing.assert_allclose(model.get_precision() @ cov, np.eye(5), atol=1e-10)


# --- SQUAREM: the same maximum in fewer passes -----------------------------------------------


def close_eigenvalues(n: int, d: int, *, seed: int) -> np.ndarray:
    """Three signal directions of variance 1.6, 1.4, 1.2 over unit noise: every eigengap is
    small next to the noise, so EM's subspace crawls."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((d, 3)))[0]
    latents = rng.standard_normal((n, 3)) * np.sqrt([0.6, 0.4, 0.2])
    return latents @ basis.T + rng.standard_normal((n, d)) + rng.normal(0.0, 3.0, d)


def principal_sine(components: np.ndarray, basis: np.ndarray) -> float:
    """Sine of the largest principal angle between two q-dimensional row spaces."""
    complement = np.eye(basis.shape[1]) - basis.T @ np.linalg.pinv(basis.T)
    return float(np.linalg.norm(components @ complement, ord=2))


def fit_both(estimator, X, **kwargs):
    fits = {m: estimator(accelerate=m, **kwargs).fit(X) for m in ("none", "squarem")}
    for fit in fits.values():
        assert fit.converged_
        trace = np.array(fit.lower_bounds_)
        assert np.all(np.diff(trace) >= -1e-12 * np.abs(trace[1:]))
    return fits["none"], fits["squarem"]


def test_squarem_ppca_reaches_the_closed_form_maximum_in_half_the_passes():
    X = close_eigenvalues(2000, 12, seed=0)
    n, d = X.shape
    centred = X - X.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred / n)
    values, vectors = values[::-1], vectors[:, ::-1]
    assert values[2] - values[3] < 0.15  # a small eigengap
    loglik = -0.5 * (
        d * np.log(2 * np.pi) + np.log(values[:3]).sum() + (d - 3) * np.log(values[3:].mean()) + d
    )
    plain, fast = fit_both(
        lambda **k: dem.PPCA(3, **k),
        X,
        init_params="random",
        tol=1e-10,
        max_iter=5000,
        random_state=1,
    )
    for fit in (plain, fast):
        assert fit.score(X) == pytest.approx(loglik, abs=1e-8)
        assert principal_sine(fit.components_, vectors[:, :3].T) < 1e-3
    assert fast.score(X) == pytest.approx(plain.score(X), rel=1e-6)
    assert principal_sine(fast.components_, plain.components_) < 1e-3
    assert fast.noise_variance_ == pytest.approx(values[3:].mean(), rel=1e-6)
    assert 2 * fast.n_iter_ <= plain.n_iter_


def test_squarem_factor_analysis_matches_sklearn():
    X = factor_data(2000, 10, 3, seed=3)
    reference = SkFactorAnalysis(3, tol=1e-9, max_iter=10_000, svd_method="lapack").fit(X)
    plain, fast = fit_both(lambda **k: dem.FactorAnalysis(3, **k), X, tol=1e-12, max_iter=1000)
    assert fast.score(X) == pytest.approx(reference.score(X), abs=1e-9)
    assert fast.score(X) == pytest.approx(plain.score(X), rel=1e-6)
    np.testing.assert_allclose(fast.noise_variance_, reference.noise_variance_, rtol=1e-4)
    np.testing.assert_allclose(fast.get_covariance(), reference.get_covariance(), atol=1e-5)
    assert principal_sine(fast.components_, reference.components_) < 1e-4
    assert 2 * fast.n_iter_ <= plain.n_iter_


def test_squarem_with_missing_values_reaches_the_plain_em_maximum():
    X = with_missing(close_eigenvalues(1500, 10, seed=4), 0.2, seed=5)
    plain, fast = fit_both(
        lambda **k: dem.PPCA(3, **k), X, tol=1e-11, max_iter=3000, random_state=2
    )
    assert fast.score(X) == pytest.approx(plain.score(X), rel=1e-6)
    assert principal_sine(fast.components_, plain.components_) < 1e-3
    np.testing.assert_allclose(fast.mean_, plain.mean_, atol=1e-4)
    np.testing.assert_allclose(fast.get_covariance(), plain.get_covariance(), atol=1e-3)
    assert fast.n_iter_ < plain.n_iter_


@pytest.mark.parametrize("noise", ["isotropic", "diagonal"])
def test_pack_and_unpack_keep_parameters_valid(noise):
    model = LinearGaussianModel(2, noise)
    rng = np.random.default_rng(0)
    params = {
        "loadings": rng.standard_normal((5, 2)),
        "mean": rng.standard_normal(5),
        "noise_variance": np.asarray(0.7) if noise == "isotropic" else rng.uniform(0.5, 1.5, 5),
    }
    vector = model.pack(params)
    assert vector.shape == (5 * 2 + 5 + params["noise_variance"].size,)
    back = model.unpack(vector, params)
    for key, value in params.items():
        np.testing.assert_allclose(back[key], value, rtol=1e-15)
        assert back[key].shape == value.shape
    # an extrapolation far past zero noise stays a positive variance
    vector[15:] = -1e6
    floored = model.unpack(vector, params)["noise_variance"]
    assert floored.shape == params["noise_variance"].shape and np.all(floored > 0)
    vector[0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        model.unpack(vector, params)
    with pytest.raises(ValueError, match="accelerate"):
        dem.PPCA(2, accelerate="warp").fit(rng.standard_normal((20, 5)))


# --- checkpoints and a real cluster -------------------------------------------------------


def test_checkpoint_resume_gives_the_uninterrupted_fit(tmp_path):
    X = with_missing(low_rank_data(600, 7, 2, seed=18)[0], 0.2, seed=19)
    kwargs = {"tol": 0.0, "random_state": 4}
    with pytest.warns(dem.ConvergenceWarning):
        straight = dem.FactorAnalysis(2, max_iter=12, **kwargs).fit(X)
    path = tmp_path / "fa.zarr"
    with pytest.warns(dem.ConvergenceWarning):
        dem.FactorAnalysis(2, max_iter=5, checkpoint=path, **kwargs).fit(X)
    with pytest.warns(dem.ConvergenceWarning):
        resumed = dem.FactorAnalysis(2, max_iter=12, checkpoint=path, resume=True, **kwargs).fit(X)
    for name in ("components_", "loadings_", "noise_variance_", "mean_"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(straight, name))
    assert resumed.lower_bounds_ == straight.lower_bounds_
    stored = dem.load_checkpoint(path)
    assert stored.attrs["model"] == "factor_analysis"
    assert stored["loadings"].dims == ("feature", "component")
    assert stored["noise_variance"].dims == ("feature",)
    with pytest.raises(CheckpointMismatchError):
        dem.PPCA(2, max_iter=12, checkpoint=path, resume=True, **kwargs).fit(X)


@pytest.fixture
def cluster_client():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.mark.slow
def test_fit_on_a_local_cluster_matches_the_local_fit(cluster_client):
    X = with_missing(low_rank_data(2000, 10, 3, seed=20)[0], 0.2, seed=21)
    lazy = da.from_array(X, chunks=(500, -1))
    with dask.config.set(scheduler="sync"):
        local = dem.PPCA(3, tol=1e-8, random_state=5, persist=False).fit(lazy)
    model = dem.PPCA(3, tol=1e-8, random_state=5).fit(lazy)  # on the cluster's workers
    assert model.converged_ and model.n_iter_ == local.n_iter_
    np.testing.assert_allclose(model.components_, local.components_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.lower_bounds_, local.lower_bounds_, rtol=1e-12)
    imputed = model.impute(lazy)
    assert isinstance(imputed, da.Array)
    np.testing.assert_allclose(imputed.compute(), local.impute(X), rtol=1e-10)


# --- bad input --------------------------------------------------------------------------------


def test_rows_with_nothing_observed_are_left_out():
    X = with_missing(low_rank_data(400, 6, 2, seed=22)[0], 0.1, seed=23)
    padded = np.vstack([X[:100], np.full((3, 6), np.nan), X[100:]])
    # the random start depends only on the observed entries, so both fits start alike
    kwargs = {"init_params": "random", "tol": 0.0, "max_iter": 10, "random_state": 6}
    with pytest.warns(dem.ConvergenceWarning):
        plain = dem.PPCA(2, **kwargs).fit(X)
    with pytest.warns(dem.ConvergenceWarning):
        padded_fit = dem.PPCA(2, **kwargs).fit(padded)
    for name in ("components_", "noise_variance_", "mean_", "lower_bounds_"):
        np.testing.assert_allclose(getattr(padded_fit, name), getattr(plain, name), rtol=1e-10)
    assert padded_fit.score(padded) == pytest.approx(padded_fit.score(X), rel=1e-12)
    np.testing.assert_array_equal(padded_fit.transform(padded)[100:103], 0.0)
    np.testing.assert_array_equal(padded_fit.score_samples(padded)[100:103], 0.0)
    np.testing.assert_array_equal(
        padded_fit.impute(padded)[100:103], np.tile(padded_fit.mean_, (3, 1))
    )


def test_bad_input_gets_clear_errors():
    X = low_rank_data(200, 5, 2, seed=24)[0]
    column = X.copy()
    column[:, 2] = np.nan
    with pytest.raises(ValueError, match=r"Feature\(s\) \[2\] have no observed value"):
        dem.PPCA(2).fit(column)
    with pytest.raises(ValueError, match="every entry is NaN"):
        dem.FactorAnalysis(2).fit(np.full((50, 4), np.nan))
    with pytest.raises(ValueError, match="n_components=5 must be smaller than n_features=5"):
        dem.PPCA(5).fit(X)
    with pytest.raises(ValueError, match="n_samples > n_components"):
        dem.PPCA(3).fit(X[:3])
    infinite = X.copy()
    infinite[150, 1] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        dem.PPCA(2, init_sample_size=100, random_state=0).fit(infinite)  # found by the engine
    with pytest.raises(ValueError, match="infinity"):
        dem.PPCA(2).fit(infinite)  # found in the initialisation sample
    model = dem.PPCA(2).fit(X)
    with pytest.raises(ValueError, match="infinity"):
        model.transform(infinite)
    with pytest.raises(ValueError, match="features"):
        model.transform(X[:, :4])
    with pytest.raises(ValueError, match="init_params"):
        dem.PPCA(2, init_params="svd").fit(X)
    with pytest.raises(ValueError, match="no variance"):
        dem.PPCA(2).fit(np.ones((20, 4)))
    with pytest.raises(ValueError, match="nothing to score"):
        model.score(np.full((3, 5), np.nan))
    with pytest.raises(dem.NotFittedError):
        dem.FactorAnalysis(2).transform(X)


def test_data_of_rank_q_gives_a_finite_floored_noise():
    rng = np.random.default_rng(25)
    X = rng.standard_normal((300, 2)) @ rng.standard_normal((2, 6)) + 1.0
    model = dem.PPCA(2, random_state=0).fit(X)
    assert 0.0 < model.noise_variance_ < 1e-8
    assert np.isfinite(model.score(X))
    np.testing.assert_allclose(model.inverse_transform(model.transform(X)), X, atol=1e-6)


# --- the start with missing values: the available-case covariance -----------------------


def pairwise_complete_covariance(X: np.ndarray) -> np.ndarray:
    """Each entry from the rows where both features are observed, about the means of
    all observed entries (1/n), one pair at a time."""
    mean = np.nanmean(X, axis=0)
    d = X.shape[1]
    cov = np.zeros((d, d))
    for j, k in itertools.product(range(d), repeat=2):
        both = ~np.isnan(X[:, j]) & ~np.isnan(X[:, k])
        cov[j, k] = np.mean((X[both, j] - mean[j]) * (X[both, k] - mean[k]))
    return cov


def ppca_closed_form(cov: np.ndarray, q: int) -> tuple[np.ndarray, float]:
    """W Wᵀ and σ² at the PPCA maximum for the covariance ``cov`` (eigenvalues clipped
    at 0)."""
    values, vectors = np.linalg.eigh(cov)
    values, vectors = np.clip(values[::-1], 0.0, None), vectors[:, ::-1]
    sigma2 = values[q:].mean()
    return (vectors[:, :q] * (values[:q] - sigma2)) @ vectors[:, :q].T, sigma2


@pytest.mark.parametrize("noise", ["isotropic", "diagonal"])
def test_missing_data_start_is_the_ppca_maximum_of_the_available_case_covariance(noise):
    X = with_missing(low_rank_data(3000, 12, 3, seed=26)[0], 0.2, seed=27)
    reference_cov = pairwise_complete_covariance(X)
    observed = ~np.isnan(X)
    centred = np.where(observed, X - np.nanmean(X, axis=0), 0.0)
    np.testing.assert_allclose(
        available_case_covariance(centred, observed), reference_cov, rtol=1e-12, atol=1e-12
    )
    model = LinearGaussianModel(3, noise)
    start = initial_params(model, X, np.random.default_rng(0), "pca")
    gram, sigma2 = ppca_closed_form(reference_cov, 3)
    np.testing.assert_allclose(start["mean"], np.nanmean(X, axis=0), rtol=1e-13)
    np.testing.assert_allclose(start["noise_variance"], np.full(12, sigma2), rtol=1e-10)
    np.testing.assert_allclose(start["loadings"] @ start["loadings"].T, gram, atol=1e-9)
    # the covariance of the mean-filled rows, shrunk by the fill, is not where it starts
    filled = np.where(observed, X, np.nanmean(X, axis=0))
    assert np.abs(np.cov(filled.T, bias=True) - reference_cov).max() > 0.5


def test_an_indefinite_available_case_covariance_has_its_eigenvalues_clipped():
    # each pair of three features observed together on its own rows: x1 = x2, x2 = x3,
    # but x1 = -x3, so the pairwise covariance has eigenvalues (2, 2, -1) times var(t)
    t = np.random.default_rng(28).standard_normal(600)
    X = np.full((600, 3), np.nan)
    X[:200, 0], X[:200, 1] = t[:200], t[:200]
    X[200:400, 1], X[200:400, 2] = t[200:400], t[200:400]
    X[400:, 0], X[400:, 2] = t[400:], -t[400:]
    reference_cov = pairwise_complete_covariance(X)
    assert np.linalg.eigvalsh(reference_cov).min() < -0.5
    start = initial_params(LinearGaussianModel(1), X, np.random.default_rng(0), "pca")
    gram, sigma2 = ppca_closed_form(reference_cov, 1)
    assert float(start["noise_variance"]) == pytest.approx(sigma2, rel=1e-10)
    np.testing.assert_allclose(start["loadings"] @ start["loadings"].T, gram, atol=1e-9)
    model = dem.PPCA(1, random_state=0).fit(X)
    assert np.isfinite(model.lower_bound_) and model.noise_variance_ > 0.0


@pytest.mark.parametrize("noise", ["isotropic", "diagonal"])
def test_the_available_case_start_saves_passes_over_the_data(noise, monkeypatch):
    rng = np.random.default_rng(29)
    # the benchmark's data: a decaying spectrum, noise variance 1, 20% missing at random
    loadings = rng.standard_normal((40, 6)) * np.linspace(3.0, 1.0, 6)
    X = rng.standard_normal((20_000, 6)) @ loadings.T + rng.normal(0.0, 5.0, 40)
    X = with_missing(X + rng.standard_normal(X.shape), 0.2, seed=30)
    kwargs = {"tol": 1e-6, "max_iter": 200, "random_state": 0, "init_sample_size": 5000}
    new = ESTIMATORS[noise](6, **kwargs).fit(X)
    # the start before: the closed form of the mean-filled sample (the path wider data take)
    monkeypatch.setattr(ppca_init, "MAX_COVARIANCE_FEATURES", 0)
    old = ESTIMATORS[noise](6, **kwargs).fit(X)
    assert new.converged_ and old.converged_
    assert new.lower_bounds_[0] > old.lower_bounds_[0] + 10.0
    assert new.n_iter_ <= old.n_iter_ - 2
    assert new.score(X) == pytest.approx(old.score(X), abs=1e-5)
    np.testing.assert_allclose(new.get_covariance(), old.get_covariance(), atol=1e-3)
