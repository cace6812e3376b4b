"""Mixtures of factor analyzers and of PPCA against independent references: scipy's
Gaussian densities, scikit-learn's FactorAnalysis, the closed-form PPCA maximum, a plain
numpy EM of Ghahramani & Hinton written here with dense covariances, and a direct scipy
maximisation of the observed-data likelihood with missing values."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
from scipy import optimize
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.decomposition import FactorAnalysis
from sklearn.metrics import adjusted_rand_score

import dem
from dem.models.factor_mixture.model import FactorMixtureModel
from dem.synth import mfa_draw, mfa_truth

pytestmark = pytest.mark.filterwarnings("ignore::dem.engine.ConvergenceWarning")


def random_params(rng, k=3, d=7, q=2, isotropic=False):
    noise = rng.uniform(0.3, 1.5, k if isotropic else (k, d))
    means = rng.normal(size=(k, d)) * 3
    return {
        "weights": rng.dirichlet(np.full(k, 3.0)),
        "means": means,
        "loadings": rng.normal(size=(k, d, q)),
        "noise_variance": noise,
        "shift": means.mean(axis=0),
    }


def dense_log_prob(x, params):
    """log w_k + log N(x_O | μ_kO, (W Wᵀ + Ψ)_OO) with scipy, row by row."""
    k, d, _ = params["loadings"].shape
    noise = np.broadcast_to(np.asarray(params["noise_variance"]).reshape(k, -1), (k, d))
    out = np.zeros((len(x), k))
    for c in range(k):
        cov = params["loadings"][c] @ params["loadings"][c].T + np.diag(noise[c])
        for i, row in enumerate(x):
            seen = ~np.isnan(row)
            density = (
                multivariate_normal(params["means"][c][seen], cov[np.ix_(seen, seen)]).logpdf(
                    row[seen]
                )
                if seen.any()
                else 0.0
            )
            out[i, c] = np.log(params["weights"][c]) + density
    return out


@pytest.mark.parametrize("isotropic", [False, True])
@pytest.mark.parametrize("missing", [0.0, 0.25])
def test_log_densities_equal_scipys_with_covariance_wwt_plus_psi(isotropic, missing):
    rng = np.random.default_rng(1)
    params = random_params(rng, isotropic=isotropic)
    x = rng.normal(size=(300, 7)) * 2 + 1
    x[rng.random(x.shape) < missing] = np.nan
    x[5] = np.nan  # nothing observed: log w_k
    model = FactorMixtureModel(3, 2, "isotropic" if isotropic else "per_feature")
    log_prob, _ = model.posterior(x, params)
    expected = dense_log_prob(x, params)
    np.testing.assert_allclose(log_prob, expected, rtol=1e-11, atol=1e-10)
    stats = model.e_step({"X": x}, params)
    seen = ~np.isnan(x).all(axis=1)
    np.testing.assert_allclose(stats["loglik"], logsumexp(expected[seen], axis=1).sum(), rtol=1e-12)
    assert stats["n"] == seen.sum()


def test_factor_posteriors_equal_the_dense_gaussian_conditional():
    rng = np.random.default_rng(2)
    params = random_params(rng)
    x = rng.normal(size=(20, 7))
    x[3, [0, 4]] = np.nan
    _, ez = FactorMixtureModel(3, 2).posterior(x, params)
    for c in range(3):
        w, mu = params["loadings"][c], params["means"][c]
        cov = w @ w.T + np.diag(params["noise_variance"][c])
        for i, row in enumerate(x):
            seen = ~np.isnan(row)
            gain = w[seen].T @ np.linalg.inv(cov[np.ix_(seen, seen)])
            np.testing.assert_allclose(ez[i, c], gain @ (row[seen] - mu[seen]), atol=1e-12)


def fa_data(n=2000, d=8, q=2, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d, q))
    noise = np.sqrt(rng.uniform(0.5, 1.5, d))
    return rng.normal(size=(n, q)) @ w.T + rng.normal(size=(n, d)) * noise + 5.0


def test_one_component_equals_scikit_learns_factor_analysis():
    x = fa_data(n=1000)
    fa = FactorAnalysis(2, tol=1e-12, max_iter=100_000).fit(x)
    mfa = dem.MixtureOfFactorAnalyzers(
        1, 2, tol=1e-12, max_iter=2000, accelerate="squarem", random_state=0
    ).fit(x)
    expected = fa.score(x)
    assert abs(mfa.score(x) - expected) <= 1e-8 * abs(expected)
    np.testing.assert_allclose(mfa.covariances_[0], fa.get_covariance(), atol=1e-4)
    np.testing.assert_allclose(mfa.noise_variance_[0], fa.noise_variance_, atol=1e-4)
    np.testing.assert_allclose(mfa.means_[0], x.mean(axis=0), atol=1e-10)
    assert mfa.weights_ == pytest.approx([1.0])


def test_one_isotropic_component_is_the_closed_form_ppca_maximum():
    x = fa_data(d=10, q=3, seed=3)
    n, d = x.shape
    xc = x - x.mean(axis=0)
    values, vectors = np.linalg.eigh(xc.T @ xc / n)
    values, vectors = values[::-1], vectors[:, ::-1]
    sigma2 = values[3:].mean()
    w = vectors[:, :3] * np.sqrt(values[:3] - sigma2)
    covariance = w @ w.T + sigma2 * np.eye(d)
    loglik = multivariate_normal(x.mean(axis=0), covariance).logpdf(x).mean()
    mppca = dem.MixtureOfFactorAnalyzers(
        1, 3, noise="isotropic", tol=1e-13, max_iter=500, random_state=0
    ).fit(x)
    assert mppca.noise_variance_.shape == (1,)
    assert mppca.noise_variance_[0] == pytest.approx(sigma2, rel=1e-8)
    np.testing.assert_allclose(mppca.covariances_[0], covariance, atol=1e-8)
    assert mppca.score(x) == pytest.approx(loglik, rel=1e-12)


# --- a plain numpy EM of Ghahramani & Hinton (1996), with dense covariances -----------------


def reference_em(x, params, n_iter):
    """Plain EM for a mixture of factor analyzers: E-step with the d × d covariances,
    M-step with the augmented loadings [W, μ] (Ghahramani & Hinton 1996, eq. 11-15)."""
    n = len(x)
    k, _, q = params["loadings"].shape
    weights, means = params["weights"].copy(), params["means"].copy()
    loadings, noise = params["loadings"].copy(), params["noise_variance"].copy()
    logliks = []
    for _ in range(n_iter):
        log_prob = np.stack(
            [
                np.log(weights[c])
                + multivariate_normal(
                    means[c], loadings[c] @ loadings[c].T + np.diag(noise[c])
                ).logpdf(x)
                for c in range(k)
            ],
            axis=1,
        )
        norm = logsumexp(log_prob, axis=1)
        logliks.append(norm.sum())
        resp = np.exp(log_prob - norm[:, None])
        for c in range(k):
            r = resp[:, c]
            cov = loadings[c] @ loadings[c].T + np.diag(noise[c])
            beta = loadings[c].T @ np.linalg.inv(cov)  # q × d
            ez = (x - means[c]) @ beta.T  # n × q
            ezz = np.eye(q) - beta @ loadings[c]  # the posterior covariance
            z1 = np.hstack([ez, np.ones((n, 1))])
            second = np.einsum("n,na,nb->ab", r, z1, z1)
            second[:q, :q] += r.sum() * ezz
            augmented = np.linalg.solve(second, (r[:, None] * z1).T @ x).T  # d × (q+1)
            loadings[c], means[c] = augmented[:, :q], augmented[:, q]
            noise[c] = np.einsum("n,nj->j", r, x * (x - z1 @ augmented.T)) / r.sum()
        weights = resp.mean(axis=0)
    return {
        "weights": weights,
        "means": means,
        "loadings": loadings,
        "noise_variance": noise,
    }, logliks


def two_subspaces(n=600, seed=4):
    rng = np.random.default_rng(seed)
    truth = mfa_truth(5, rng, n_components=2, n_factors=1, separation=2.0, noise_variance=0.2)
    return mfa_draw(truth, rng, n)["X"]


def test_em_reaches_the_maximum_of_an_independent_reference_em():
    x = two_subspaces()
    mfa = dem.MixtureOfFactorAnalyzers(
        2, 1, tol=1e-12, max_iter=3000, accelerate="squarem", random_state=0
    ).fit(x)
    start = {
        "weights": mfa.weights_,
        "means": mfa.means_ + 0.05,
        "loadings": mfa.components_.transpose(0, 2, 1) * 1.1,
        "noise_variance": mfa.noise_variance_ * 1.2,
    }
    reference, logliks = reference_em(x, start, 1500)
    assert np.all(np.diff(logliks) >= -1e-9 * np.abs(logliks[1:]))
    assert mfa.score(x) * len(x) == pytest.approx(logliks[-1], rel=1e-9)
    np.testing.assert_allclose(mfa.weights_, reference["weights"], atol=1e-5)
    np.testing.assert_allclose(mfa.means_, reference["means"], atol=1e-4)
    np.testing.assert_allclose(mfa.noise_variance_, reference["noise_variance"], atol=1e-4)
    for c in range(2):
        w = reference["loadings"][c]
        np.testing.assert_allclose(
            mfa.covariances_[c] - np.diag(mfa.noise_variance_[c]), w @ w.T, atol=1e-4
        )


def test_missing_values_reach_a_direct_scipy_maximisation_of_the_observed_likelihood():
    x = two_subspaces(n=300, seed=5)
    x[np.random.default_rng(6).random(x.shape) < 0.15] = np.nan
    mfa = dem.MixtureOfFactorAnalyzers(
        2, 1, tol=1e-13, max_iter=3000, accelerate="squarem", random_state=0
    ).fit(x)
    k, d, q = 2, 5, 1

    def unpacked(theta):
        logits = np.concatenate([[0.0], theta[:1]])
        rest = theta[1:]
        means, rest = rest[: k * d].reshape(k, d), rest[k * d :]
        loadings, rest = rest[: k * d * q].reshape(k, d, q), rest[k * d * q :]
        return {
            "weights": np.exp(logits - logsumexp(logits)),
            "means": means,
            "loadings": loadings,
            "noise_variance": np.exp(rest.reshape(k, d)),
        }

    patterns, which = np.unique(~np.isnan(x), axis=0, return_inverse=True)

    def negative_loglik(theta):
        p = unpacked(theta)
        log_prob = np.log(p["weights"]) + np.zeros((len(x), k))
        for c in range(k):
            cov = p["loadings"][c] @ p["loadings"][c].T + np.diag(p["noise_variance"][c])
            for index, seen in enumerate(patterns):
                rows = which == index
                if seen.any():
                    gaussian = multivariate_normal(p["means"][c][seen], cov[np.ix_(seen, seen)])
                    log_prob[rows, c] += gaussian.logpdf(x[rows][:, seen]).reshape(-1)
        return -logsumexp(log_prob, axis=1).sum()

    ours = np.concatenate(
        [
            [np.log(mfa.weights_[1] / mfa.weights_[0])],
            mfa.means_.ravel(),
            mfa.components_.transpose(0, 2, 1).ravel(),
            np.log(mfa.noise_variance_).ravel(),
        ]
    )
    found = optimize.minimize(negative_loglik, ours, method="BFGS", options={"gtol": 1e-6})
    assert -found.fun <= -negative_loglik(ours) + 1e-7 * abs(found.fun)
    assert mfa.score(x) * len(x) == pytest.approx(-found.fun, rel=1e-9)


# --- K > 1 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("noise", ["per_feature", "isotropic"])
@pytest.mark.parametrize("missing", [0.0, 0.1])
def test_loglik_never_decreases(noise, missing):
    rng = np.random.default_rng(7)
    truth = mfa_truth(12, rng, n_components=3, n_factors=2, missing=missing)
    x = mfa_draw(truth, rng, 1500)["X"]
    mfa = dem.MixtureOfFactorAnalyzers(
        3, 2, noise=noise, tol=0.0, max_iter=40, init_params="random_from_data", random_state=1
    ).fit(x)
    bounds = np.asarray(mfa.lower_bounds_)
    assert len(bounds) == 40 and np.all(np.isfinite(bounds))
    assert np.all(np.diff(bounds) >= -1e-12 * np.abs(bounds[1:]))


def test_chunking_changes_the_fit_by_round_off_only():
    rng = np.random.default_rng(8)
    truth = mfa_truth(10, rng, n_components=3, n_factors=2, missing=0.05)
    x = mfa_draw(truth, rng, 1200)["X"]
    options = {"tol": 0.0, "max_iter": 15, "init_params": "kmeans", "random_state": 3}
    whole = dem.MixtureOfFactorAnalyzers(3, 2, **options).fit(x)
    chunked = dem.MixtureOfFactorAnalyzers(3, 2, **options).fit(da.from_array(x, chunks=(97, 10)))
    np.testing.assert_allclose(chunked.lower_bounds_, whole.lower_bounds_, rtol=1e-11)
    for name in ("weights_", "means_", "components_", "noise_variance_"):
        np.testing.assert_allclose(
            getattr(chunked, name), getattr(whole, name), rtol=1e-8, atol=1e-10
        )


def principal_angle(a, b):
    """Largest principal angle (degrees) between the column spans of a and b."""
    qa, _ = np.linalg.qr(a)
    qb, _ = np.linalg.qr(b)
    cosines = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return float(np.degrees(np.arccos(np.clip(cosines.min(), -1.0, 1.0))))


def test_clusters_on_separate_subspaces_in_50_dimensions_are_recovered():
    rng = np.random.default_rng(9)
    truth = mfa_truth(50, rng, n_components=4, n_factors=3, separation=0.5, noise_variance=0.05)
    drawn = mfa_draw(truth, rng, 4000)
    mfa = dem.MixtureOfFactorAnalyzers(4, 3, n_init=2, random_state=0).fit(drawn["X"])
    labels = mfa.predict(drawn["X"])
    assert adjusted_rand_score(drawn["labels"], labels) > 0.99
    for c in range(4):
        found = np.bincount(labels[drawn["labels"] == c], minlength=4).argmax()
        assert principal_angle(truth["loadings"][c], mfa.components_[found].T) < 3.0
        own = drawn["X"][drawn["labels"] == c]  # separated clusters: the ML mean is theirs
        np.testing.assert_allclose(mfa.means_[found], own.mean(axis=0), atol=1e-3)
        np.testing.assert_allclose(mfa.means_[found], truth["means"][c], atol=0.5)
    # a full-covariance mixture needs 4·50·51/2 covariance parameters; this one far fewer
    gmm = dem.GaussianMixture(4, random_state=0).fit(drawn["X"])
    assert mfa.bic(drawn["X"]) < gmm.bic(drawn["X"])


def test_wide_data_never_form_a_d_by_d_matrix_per_row():
    rng = np.random.default_rng(10)
    truth = mfa_truth(3000, rng, n_components=2, n_factors=2, separation=1.0)
    x = mfa_draw(truth, rng, 400)["X"]
    mfa = dem.MixtureOfFactorAnalyzers(2, 2, max_iter=5, random_state=0).fit(x)
    assert np.isfinite(mfa.score(x)) and mfa.components_.shape == (2, 2, 3000)


# --- the estimator -------------------------------------------------------------------------


def test_per_sample_methods_sample_and_information_criteria():
    rng = np.random.default_rng(11)
    truth = mfa_truth(6, rng, n_components=2, n_factors=2, separation=3.0, missing=0.1)
    x = mfa_draw(truth, rng, 800)["X"]
    mfa = dem.MixtureOfFactorAnalyzers(2, 2, random_state=0).fit(x)
    params = {**mfa._params()}
    expected = dense_log_prob(x[:50], params)
    np.testing.assert_allclose(mfa.score_samples(x[:50]), logsumexp(expected, axis=1), rtol=1e-10)
    proba = mfa.predict_proba(x[:50])
    np.testing.assert_allclose(proba, np.exp(expected - logsumexp(expected, axis=1)[:, None]))
    np.testing.assert_array_equal(mfa.predict(x[:50]), expected.argmax(axis=1))
    z = mfa.transform(x[:50])
    everything = mfa.transform_all(x[:50]).reshape(50, 2, 2)
    np.testing.assert_array_equal(z, everything[np.arange(50), expected.argmax(axis=1)])
    assert list(mfa.get_feature_names_out()) == [
        "mixtureoffactoranalyzers0",
        "mixtureoffactoranalyzers1",
    ]
    n_parameters = 1 + 2 * 6 + 2 * (6 * 2 - 1) + 2 * 6
    assert mfa.bic(x) == pytest.approx(-2 * mfa.score(x) * 800 + n_parameters * np.log(800))
    drawn, labels = mfa.sample(20_000, random_state=0)
    assert drawn.shape == (20_000, 6) and np.bincount(labels).tolist() == pytest.approx(
        (mfa.weights_ * 20_000).tolist(), rel=0.05
    )
    for c in range(2):
        np.testing.assert_allclose(
            np.cov(drawn[labels == c].T), mfa.covariances_[c], atol=0.15 * mfa.covariances_[c].max()
        )


def test_checkpoint_round_trip_and_squarem_on_real_worker_processes(tmp_path):
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(12)
    truth = mfa_truth(8, rng, n_components=3, n_factors=2)
    x = da.from_array(mfa_draw(truth, rng, 2000)["X"], chunks=(500, 8))
    options = {"tol": 1e-6, "max_iter": 200, "init_params": "k-means||", "random_state": 0}
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        plain = dem.MixtureOfFactorAnalyzers(3, 2, checkpoint=tmp_path / "fit.zarr", **options).fit(
            x
        )
        fast = dem.MixtureOfFactorAnalyzers(3, 2, accelerate="squarem", **options).fit(x)
    local = dem.MixtureOfFactorAnalyzers(3, 2, **options).fit(x.compute())
    assert plain.converged_ and fast.converged_ and fast.n_iter_ < plain.n_iter_
    assert fast.lower_bound_ >= plain.lower_bound_ - 1e-6  # plain EM stops as it crawls
    np.testing.assert_allclose(local.lower_bounds_, plain.lower_bounds_, rtol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        restored = dem.from_checkpoint(tmp_path / "fit.zarr")
    assert type(restored) is dem.MixtureOfFactorAnalyzers
    np.testing.assert_allclose(restored.score_samples(x[:100]), plain.score_samples(x[:100]))


class Interrupt(Exception):
    pass


@pytest.mark.parametrize(
    "options",
    [
        {"noise": "isotropic", "n_init": 2, "init_params": "random_from_data"},
        {"accelerate": "squarem", "init_params": "k-means||"},
    ],
    ids=["isotropic-missing-restarts", "squarem-kmeans-parallel"],
)
def test_resume_after_an_interruption_gives_the_same_bits(tmp_path, options):
    """The contract suite resumes the default variant; these are isotropic noise with
    missing values and restarts, and SQUAREM from k-means‖ (passes of its own)."""
    from tests.contract.models import fitted_arrays

    rng = np.random.default_rng(15)
    missing = 0.1 if "n_init" in options else 0.0  # k-means‖ takes complete data only
    truth = mfa_truth(6, rng, n_components=3, n_factors=2, missing=missing)
    x = da.from_array(mfa_draw(truth, rng, 900)["X"], chunks=(200, 6))

    def fit(path, **more) -> dem.MixtureOfFactorAnalyzers:
        return dem.MixtureOfFactorAnalyzers(
            3, 2, max_iter=6, tol=0, random_state=0, checkpoint=path, **options, **more
        ).fit(x)

    def stop(info) -> None:
        if info.iteration == 3:
            raise Interrupt

    whole = fit(tmp_path / "whole.zarr")
    with pytest.raises(Interrupt):
        fit(tmp_path / "cut.zarr", callback=stop)
    seen: list = []
    resumed = fit(tmp_path / "cut.zarr", resume=True, callback=seen.append)
    # resumed after iteration 3 (SQUAREM: after its last complete cycle), not restarted
    assert seen[0].run == 0 and seen[0].iteration >= 4
    expected = fitted_arrays(whole)
    assert expected.keys() == fitted_arrays(resumed).keys() and "components_" in expected
    for name, value in expected.items():
        np.testing.assert_array_equal(getattr(resumed, name), value, err_msg=name)
    cycles = 2 if options.get("accelerate") == "squarem" else 6  # SQUAREM: 3 passes a cycle
    assert resumed.lower_bounds_ == whole.lower_bounds_ and len(whole.lower_bounds_) == cycles


# --- the k-means‖ start ----------------------------------------------------------------


def ppca_maximum_covariance(rows: np.ndarray, q: int) -> np.ndarray:
    """``W Wᵀ + σ² I`` of the closed-form PPCA maximum of ``rows`` (Tipping & Bishop 1999):
    the leading q eigenpairs of the (biased) covariance, σ² the mean of the others."""
    centred = rows - rows.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred / len(rows))
    values, vectors = values[::-1], vectors[:, ::-1]
    sigma2 = values[q:].mean()
    w = vectors[:, :q] * np.sqrt(values[:q] - sigma2)
    return w @ w.T + sigma2 * np.eye(len(values))


@pytest.mark.parametrize("noise", ["per_feature", "isotropic"])
def test_kmeans_parallel_start_is_each_clusters_ppca_maximum(noise):
    """Over all the (chunked) rows of well-separated clusters, k-means‖ finds the true
    clusters, and each component starts at its rows' share, mean and PPCA maximum."""
    from dem.models.factor_mixture.init import kmeans_parallel_params

    rng = np.random.default_rng(13)
    truth = mfa_truth(8, rng, n_components=3, n_factors=2, separation=30.0)
    drawn = mfa_draw(truth, rng, 3000)
    x, labels = drawn["X"], drawn["labels"]
    model = FactorMixtureModel(3, 2, noise, 1e-6)
    start = kmeans_parallel_params(
        model, da.from_array(x, chunks=(400, 8)), np.random.default_rng(0), split_every=3
    )
    k, d, q = start["loadings"].shape
    noise_variance = np.broadcast_to(np.reshape(start["noise_variance"], (k, -1)), (k, d))
    for c in range(3):
        rows = x[labels == c]
        found = int(np.argmin(np.linalg.norm(start["means"] - rows.mean(axis=0), axis=1)))
        assert start["weights"][found] == pytest.approx(len(rows) / len(x), rel=1e-12)
        np.testing.assert_allclose(start["means"][found], rows.mean(axis=0), rtol=1e-10)
        covariance = start["loadings"][found] @ start["loadings"][found].T
        covariance += np.diag(noise_variance[found])
        np.testing.assert_allclose(
            covariance, ppca_maximum_covariance(rows, q), rtol=1e-8, atol=1e-10
        )


def test_auto_start_is_kmeans_parallel_and_falls_back_to_kmeans_with_missing_values():
    rng = np.random.default_rng(14)
    truth = mfa_truth(6, rng, n_components=2, n_factors=2, separation=5.0)
    x = mfa_draw(truth, rng, 1200)["X"]
    chunked = da.from_array(x, chunks=(300, 6))
    options = {"max_iter": 4, "tol": 0.0, "init_sample_size": 500, "random_state": 2}
    auto = dem.MixtureOfFactorAnalyzers(2, 2, **options).fit(chunked)
    explicit = dem.MixtureOfFactorAnalyzers(2, 2, init_params="k-means||", **options).fit(chunked)
    sampled = dem.MixtureOfFactorAnalyzers(2, 2, init_params="kmeans", **options).fit(chunked)
    assert auto.lower_bounds_ == explicit.lower_bounds_ != sampled.lower_bounds_
    holes = x.copy()
    holes[np.random.default_rng(0).random(holes.shape) < 0.05] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        dem.MixtureOfFactorAnalyzers(2, 2, init_params="k-means||", **options).fit(holes)
    fitted = dem.MixtureOfFactorAnalyzers(2, 2, **options).fit(holes)
    assert len(fitted.lower_bounds_) == 4 and np.all(np.isfinite(fitted.lower_bounds_))


# --- the command line, on worker processes (last: the cluster stays the default client) ---


def test_cli_synth_fit_predict_show(process_client, tmp_path):
    """``dem synth mfa``, ``dem fit mfa``, ``dem predict`` and ``dem show`` on worker
    processes: the checkpoint is the library's fit of the same store, the outputs its
    methods', and the truth ``dem synth`` kept is recovered."""
    import os

    import zarr
    from typer.testing import CliRunner

    from dem.cli import app
    from dem.synth import read_truth

    def invoke(*args) -> tuple[int, str]:
        result = CliRunner().invoke(app, [os.fspath(a) for a in args])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.output

    data, checkpoint, out = tmp_path / "data.zarr", tmp_path / "fit.zarr", tmp_path / "out.zarr"
    scheduler = ("--scheduler", process_client.scheduler.address)
    code, output = invoke(
        "synth", "mfa", data, "-n", "3000", "-d", "8", "-k", "3", "-q", "2", "--separation",
        "6", "--missing", "0.05", "--chunk-rows", "600", "--seed", "1",
    )  # fmt: skip
    assert code == 0, output
    code, output = invoke(
        "fit", "mfa", data, "--var", "X", "-k", "3", "-q", "2", "--noise", "isotropic",
        "--tol", "1e-6", "--checkpoint", checkpoint, *scheduler,
    )  # fmt: skip
    assert code == 0, output
    reference = dem.MixtureOfFactorAnalyzers(3, 2, noise="isotropic", tol=1e-6, random_state=0)
    reference.fit(data, variable="X")
    restored = dem.from_checkpoint(checkpoint)
    assert type(restored) is dem.MixtureOfFactorAnalyzers and restored.noise == "isotropic"
    assert restored.n_iter_ == reference.n_iter_ and restored.converged_
    for name in ("weights_", "means_", "components_", "noise_variance_"):
        np.testing.assert_allclose(
            getattr(restored, name), getattr(reference, name), rtol=1e-9, atol=1e-12
        )
    truth = read_truth(data)
    for c, mean in enumerate(truth["means"]):  # each true mean has a component, within
        # 4 standard errors of a mean of the cluster's rows
        spread = np.sum(truth["loadings"][c] ** 2) + np.sum(truth["noise_variance"][c])
        error = np.min(np.linalg.norm(restored.means_ - mean, axis=1))
        assert error < 4 * np.sqrt(spread / (3000 * truth["weights"][c])), error

    code, output = invoke("predict", checkpoint, data, "--var", "X", "--out", out, *scheduler)
    assert code == 0, output
    group = zarr.open_group(out, mode="r")
    x = zarr.open_group(data, mode="r")["X"][:]
    assert np.isnan(x).any() and group["latent"].chunks == (600, 2)
    np.testing.assert_array_equal(group["labels"][:], reference.predict(x))
    np.testing.assert_allclose(group["probabilities"][:], reference.predict_proba(x), atol=1e-9)
    np.testing.assert_allclose(group["latent"][:], reference.transform(x), rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(group["loglik"][:], reference.score_samples(x), rtol=1e-10)
    code, output = invoke("show", checkpoint)
    assert code == 0 and "mixture_of_factor_analyzers" in output, output
