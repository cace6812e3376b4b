"""dem.plot: what each plot draws, checked against quantities computed here independently
(eigenvalues of the covariances, the Gaussian conditional expectation, the Tobit
expectation from scipy.stats), on the Agg backend."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from scipy import stats

import dem
from tests.conftest import COVARIANCE_TYPES, make_blobs

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402

from dem import plot  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def blobs_small() -> np.ndarray:
    return make_blobs(n_per=300, seed=3)


def full_covariance(mixture: dem.GaussianMixture, k: int) -> np.ndarray:
    """Component k's d × d covariance, whatever the covariance type."""
    cov, d = mixture.covariances_, mixture.means_.shape[1]
    return {
        "full": lambda: cov[k],
        "tied": lambda: cov,
        "diag": lambda: np.diag(cov[k]),
        "spherical": lambda: cov[k] * np.eye(d),
    }[mixture.covariance_type]()


def scatters(ax) -> list[PathCollection]:
    return [c for c in ax.collections if isinstance(c, PathCollection)]


# --- the trace ------------------------------------------------------------------------------


def test_trace_of_an_estimator_draws_lower_bounds(blobs_small):
    mixture = dem.GaussianMixture(3, random_state=0).fit(blobs_small)
    ax = plot.loglik_trace(mixture)
    (line,) = ax.get_lines()
    np.testing.assert_array_equal(line.get_xdata(), np.arange(1, mixture.n_iter_ + 1))
    np.testing.assert_array_equal(line.get_ydata(), mixture.lower_bounds_)
    assert np.all(np.diff(line.get_ydata()) >= -1e-12)  # EM never goes down


def test_trace_of_a_checkpoint_draws_every_restart(blobs_small, tmp_path):
    checkpoint = tmp_path / "fit.zarr"
    mixture = dem.GaussianMixture(
        3, n_init=2, init_params="random", random_state=1, checkpoint=checkpoint
    ).fit(blobs_small)
    _, ax = plt.subplots()
    assert plot.loglik_trace(checkpoint, ax=ax) is ax
    lines = ax.get_lines()
    assert len(lines) == 2
    for run, line in enumerate(lines):
        stored = dem.load_checkpoint(checkpoint, run=run)["loglik"].values[1:]
        np.testing.assert_array_equal(line.get_ydata(), stored)
    (best,) = [line for line in lines if line.get_linewidth() == 2.0]
    assert "(best)" in best.get_label()
    np.testing.assert_array_equal(best.get_ydata(), mixture.lower_bounds_)


def test_trace_needs_a_fitted_estimator():
    with pytest.raises(ValueError, match="call fit first"):
        plot.loglik_trace(dem.PPCA())


# --- mixture ellipses --------------------------------------------------------------------------


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_ellipses_are_the_marginal_covariances(blobs_small, covariance_type):
    mixture = dem.GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(
        blobs_small
    )
    features, n_std = (2, 0), 1.5
    ax = plot.mixture_ellipses(mixture, blobs_small, features=features, n_std=n_std)
    ellipses = [p for p in ax.patches if isinstance(p, Ellipse)]
    assert len(ellipses) == mixture.n_components
    f = list(features)
    for k, ellipse in enumerate(ellipses):
        marginal = full_covariance(mixture, k)[np.ix_(f, f)]
        axes = 2 * n_std * np.sqrt(np.linalg.eigvalsh(marginal))
        np.testing.assert_allclose(
            sorted([ellipse.width, ellipse.height]), axes, rtol=1e-12, atol=1e-12
        )
        np.testing.assert_allclose(ellipse.center, mixture.means_[k, f], rtol=1e-12)
        # every point of the outline lies at Mahalanobis distance n_std from the mean
        circle = np.column_stack([np.cos(np.linspace(0, 6, 25)), np.sin(np.linspace(0, 6, 25))])
        outline = ellipse.get_patch_transform().transform(circle)  # the unit circle's image
        offset = outline - mixture.means_[k, f]
        distance = np.einsum("ni,ij,nj->n", offset, np.linalg.inv(marginal), offset)
        np.testing.assert_allclose(distance, n_std**2, rtol=1e-9)
    points, means = scatters(ax)
    np.testing.assert_array_equal(points.get_offsets(), blobs_small[:, f])
    labels = mixture.predict(blobs_small)
    colours = matplotlib.colors.to_rgba_array([f"C{k}" for k in labels])
    np.testing.assert_allclose(points.get_facecolors()[:, :3], colours[:, :3])
    np.testing.assert_allclose(means.get_offsets(), mixture.means_[:, f])
    assert ax.get_xlabel() == "feature 2" and ax.get_ylabel() == "feature 0"


def test_ellipses_sample_rows_of_a_lazy_input(blobs_small):
    mixture = dem.GaussianMixture(3, random_state=0).fit(blobs_small)
    lazy = da.from_array(blobs_small, chunks=(250, 3))
    ax = plot.mixture_ellipses(mixture, lazy, max_rows=100)
    drawn = scatters(ax)[0].get_offsets()
    assert len(drawn) == 100
    rows = {tuple(r) for r in blobs_small[:, :2]}
    assert all(tuple(p) in rows for p in np.asarray(drawn))  # real rows, not made up
    assert len(plot.mixture_ellipses(mixture).patches) == 3  # no data: ellipses only


def test_ellipses_reject_bad_features(blobs_small):
    mixture = dem.GaussianMixture(2, random_state=0).fit(blobs_small)
    with pytest.raises(ValueError, match="two different"):
        plot.mixture_ellipses(mixture, features=(1, 1))
    with pytest.raises(ValueError, match="out of range"):
        plot.mixture_ellipses(mixture, features=(0, 3))
    with pytest.raises(ValueError, match="call fit first"):
        plot.mixture_ellipses(dem.GaussianMixture(2))


# --- information criteria ----------------------------------------------------------------


def test_information_criteria_draws_the_table(blobs_small):
    selection = dem.select_n_components(blobs_small, [4, 1, 2, 3], random_state=0)
    ax = plot.information_criteria(selection)
    bic, aic, bic_best, aic_best = ax.get_lines()
    table = selection.table.sortby("n_components")
    for line, name in ((bic, "bic"), (aic, "aic")):
        np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3, 4])
        np.testing.assert_array_equal(line.get_ydata(), table[name].values)
    # BIC from its definition with the data's log-likelihood under each fitted K
    for k, value in zip([1, 2, 3, 4], bic.get_ydata(), strict=True):
        fitted = selection.models[k]
        n = len(blobs_small)
        p = k - 1 + k * 3 + k * 6  # weights, means, full covariances of 3 features
        loglik = stats_mixture_loglik(fitted, blobs_small)
        np.testing.assert_allclose(value, -2 * loglik + p * np.log(n), rtol=1e-10)
    assert list(bic_best.get_xdata()) == [3]  # three clusters in the data
    assert bic_best.get_ydata()[0] == min(bic.get_ydata())
    assert aic_best.get_ydata()[0] == min(aic.get_ydata())
    only = plot.information_criteria(selection.table, criteria=["aic"])
    assert len(only.get_lines()) == 2
    with pytest.raises(ValueError, match="criteria"):
        plot.information_criteria(selection, criteria=["hqic"])


def stats_mixture_loglik(mixture: dem.GaussianMixture, x: np.ndarray) -> float:
    """Total log-likelihood of x under a full-covariance mixture, from scipy.stats."""
    density = sum(
        w * stats.multivariate_normal(m, c).pdf(x)
        for w, m, c in zip(mixture.weights_, mixture.means_, mixture.covariances_, strict=True)
    )
    return float(np.log(density).sum())


# --- PPCA ----------------------------------------------------------------------------------


def ppca_data(n: int = 3000, d: int = 6, q: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    loadings = rng.normal(size=(d, q)) * np.array([3.0, 1.5])
    return rng.normal(size=(n, q)) @ loadings.T + 2.0 + 0.5 * rng.normal(size=(n, d))


def test_scree_bars_are_the_sample_eigenvalues():
    x = ppca_data()
    model = dem.PPCA(2, tol=1e-12, max_iter=500, random_state=0).fit(x)
    ax = plot.scree(model)
    eigenvalues = np.linalg.eigvalsh(np.cov(x.T, bias=True))[::-1]
    heights = [bar.get_height() for bar in ax.patches]
    # at the maximum likelihood: the top eigenvalues, and sigma² the mean of the others
    np.testing.assert_allclose(heights, eigenvalues[:2], rtol=1e-6)
    (noise,) = ax.get_lines()
    np.testing.assert_allclose(noise.get_ydata(), eigenvalues[2:].mean(), rtol=1e-6)
    labels = [t.get_text() for t in ax.texts]
    assert labels == [f"{r:.1%}" for r in eigenvalues[:2] / eigenvalues.sum()]


def test_scree_of_factor_analysis_shows_the_mean_noise():
    model = dem.FactorAnalysis(2, random_state=0, max_iter=50, tol=1e-3).fit(ppca_data(500))
    ax = plot.scree(model)
    assert len(ax.patches) == 2
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), model.noise_variance_.mean())
    assert "ψ" in ax.get_lines()[0].get_label()


def test_imputation_points_are_gaussian_conditional_means():
    truth = ppca_data(n=2000)
    rng = np.random.default_rng(1)
    x = np.where(rng.uniform(size=truth.shape) < 0.15, np.nan, truth)
    model = dem.PPCA(2, random_state=0).fit(x)
    ax = plot.imputation(model, da.from_array(x, chunks=(500, 6)), truth, max_rows=300)
    (points,) = scatters(ax)
    true_values, imputed = np.asarray(points.get_offsets()).T
    cov, mean = model.get_covariance(), model.mean_
    missing = np.isnan(x)
    position = {v: divmod(i, x.shape[1]) for i, v in enumerate(truth.ravel())}
    rows = set()
    for value, drawn in zip(true_values, imputed, strict=True):
        row, col = position[value]
        assert missing[row, col]
        rows.add(row)
        o, m = ~missing[row], np.flatnonzero(missing[row])
        conditional = mean[m] + cov[np.ix_(m, o)] @ np.linalg.solve(
            cov[np.ix_(o, o)], x[row, o] - mean[o]
        )
        np.testing.assert_allclose(drawn, conditional[list(m).index(col)], rtol=1e-8, atol=1e-10)
    assert len(rows) <= 300
    assert len(true_values) == missing[sorted(rows)].sum()  # every missing entry of the rows
    rmse = np.sqrt(np.mean((imputed - true_values) ** 2))
    assert f"RMSE {rmse:.3g}" in points.get_label()
    with pytest.raises(ValueError, match="no missing"):
        plot.imputation(model, truth, truth)
    with pytest.raises(ValueError, match="shape"):
        plot.imputation(model, x, truth[:, :3])


# --- censored regression ----------------------------------------------------------------


def tobit_data(n: int = 1500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    latent = 0.2 + x @ np.array([1.0, -0.7]) + 0.8 * rng.normal(size=n)
    return x, np.maximum(latent, 0.0)


def test_censored_fit_marks_censored_rows_and_draws_the_tobit_mean():
    x, y = tobit_data()
    model = dem.CensoredRegression(left=0.0).fit(x, y)
    ax = plot.censored_fit(model, x, y)
    exact, left = scatters(ax)
    assert len(exact.get_offsets()) == (y > 0).sum()
    assert len(left.get_offsets()) == (y <= 0).sum()
    assert "left-censored" in left.get_label()
    np.testing.assert_array_equal(np.asarray(left.get_offsets())[:, 1], 0.0)
    mu = model.intercept_ + x @ model.coef_
    expected_line, latent_line = ax.get_lines()
    order = np.argsort(mu)
    np.testing.assert_allclose(expected_line.get_xdata(), mu[order], rtol=1e-12)
    # E[max(y*, 0)] = Φ(μ/σ) μ + σ φ(μ/σ)
    s = model.scale_
    tobit_mean = stats.norm.cdf(mu / s) * mu + s * stats.norm.pdf(mu / s)
    np.testing.assert_allclose(expected_line.get_ydata(), tobit_mean[order], rtol=1e-9)
    np.testing.assert_allclose(latent_line.get_ydata(), mu[order], rtol=1e-12)


def test_censored_fit_keeps_x_and_y_rows_together():
    x, y = tobit_data()
    y = np.minimum(y, 1.5)  # also right-censored
    model = dem.CensoredRegression(left=0.0, right=1.5).fit(x, y)
    chunks = (400,)
    ax = plot.censored_fit(
        model, da.from_array(x, chunks=(400, 2)), da.from_array(y, chunks=chunks), max_rows=200
    )
    exact, left, right = scatters(ax)
    assert len(exact.get_offsets()) + len(left.get_offsets()) + len(right.get_offsets()) == 200
    np.testing.assert_array_equal(np.asarray(right.get_offsets())[:, 1], 1.5)
    row_of = {v: i for i, v in enumerate(y)}
    for latent, observed in np.asarray(exact.get_offsets()):
        row = row_of[observed]  # uncensored values are distinct
        np.testing.assert_allclose(latent, model.intercept_ + x[row] @ model.coef_, rtol=1e-12)


def test_censored_fit_needs_scalar_limits():
    x, y = tobit_data(300)
    left = np.zeros(len(y))
    model = dem.CensoredRegression().fit(x, y, left=left)
    with pytest.raises(ValueError, match="per-observation left"):
        plot.censored_fit(model, x, y)
    ax = plot.censored_fit(model, x, y, left=0.0)
    assert len(scatters(ax)) == 2
