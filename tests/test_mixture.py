"""GaussianMixture against scikit-learn, and the mixture's own guarantees."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from sklearn.mixture import GaussianMixture as SklearnMixture

import dem
from tests.conftest import COVARIANCE_TYPES, initial_parameters, make_blobs

FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_")


def fit_both(x, data, covariance_type, max_iter, **options):
    init = initial_parameters(x, 3, covariance_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both warn about max_iter on purpose
        reference = SklearnMixture(
            3, covariance_type=covariance_type, max_iter=max_iter, tol=0, **init
        ).fit(x)
        ours = dem.GaussianMixture(
            3, covariance_type=covariance_type, max_iter=max_iter, tol=0, **init, **options
        ).fit(data)
    return reference, ours


def assert_relative(actual, expected, rtol):
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = np.maximum(np.abs(expected), np.abs(expected).max() * 1e-3)
    assert np.max(np.abs(actual - expected) / scale) < rtol


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("max_iter", [1, 30])
@pytest.mark.parametrize("container", ["numpy", "dask"])
def test_matches_sklearn_from_same_start(blobs, covariance_type, max_iter, container):
    data = blobs if container == "numpy" else da.from_array(blobs, chunks=700)
    reference, ours = fit_both(blobs, data, covariance_type, max_iter)
    for name in FITTED:
        assert_relative(getattr(ours, name), getattr(reference, name), 1e-8)
    assert ours.n_iter_ == reference.n_iter_ == max_iter
    assert ours.lower_bound_ == pytest.approx(reference.lower_bound_, rel=1e-10)
    np.testing.assert_allclose(ours.lower_bounds_, reference.lower_bounds_, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_data_far_from_origin_lose_no_accuracy(covariance_type):
    """Statistics about a shift: data offset by 1e6 fit like the centred data.

    scikit-learn's uncentred sums lose up to 1e-9 relative here (tied loses most), so
    the reference is scikit-learn on the centred data.
    """
    centred = make_blobs(n_per=400, seed=3)
    reference, _ = fit_both(centred, centred, covariance_type, 10)
    _, ours = fit_both(centred + 1e6, centred + 1e6, covariance_type, 10)
    np.testing.assert_allclose(ours.means_ - 1e6, reference.means_, atol=1e-8)
    assert_relative(ours.covariances_, reference.covariances_, 1e-7)
    assert ours.lower_bound_ == pytest.approx(reference.lower_bound_, rel=1e-9)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_converges_like_sklearn(blobs, covariance_type):
    init = initial_parameters(blobs, 3, covariance_type)
    reference = SklearnMixture(
        3, covariance_type=covariance_type, tol=1e-6, max_iter=500, **init
    ).fit(blobs)
    ours = dem.GaussianMixture(
        3, covariance_type=covariance_type, tol=1e-6, max_iter=500, **init
    ).fit(blobs)
    assert ours.converged_ and reference.converged_
    assert ours.n_iter_ == reference.n_iter_
    assert_relative(ours.means_, reference.means_, 1e-8)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_log_likelihood_never_decreases(seed, covariance_type):
    rng = np.random.default_rng(seed)
    x = make_blobs(n_per=int(rng.integers(50, 300)), seed=seed) * rng.uniform(0.1, 10)
    k = int(rng.integers(1, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        model = dem.GaussianMixture(
            k,
            covariance_type=covariance_type,
            init_params="random",
            tol=0,
            max_iter=40,
            random_state=seed,
        ).fit(da.from_array(x, chunks=97))
    trace = np.array(model.lower_bounds_)
    assert np.all(np.diff(trace) >= -1e-10 * np.abs(trace[1:]))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_chunk_invariance(blobs, covariance_type):
    init = initial_parameters(blobs, 3, covariance_type)
    fits = []
    for chunks in (len(blobs), 1000, 333):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dem.ConvergenceWarning)
            fits.append(
                dem.GaussianMixture(
                    3, covariance_type=covariance_type, max_iter=15, tol=0, **init
                ).fit(da.from_array(blobs, chunks=chunks))
            )
    for other in fits[1:]:
        for name in FITTED:
            np.testing.assert_allclose(
                getattr(other, name), getattr(fits[0], name), rtol=1e-11, atol=1e-14
            )


def test_same_bits_for_any_split_order(blobs):
    """The tree's shape fixes the sums: the same chunking gives the same bits every time."""
    data = da.from_array(blobs, chunks=250)
    init = initial_parameters(blobs, 3, "full")
    first = dem.GaussianMixture(3, max_iter=5, tol=0, **init)
    second = dem.GaussianMixture(3, max_iter=5, tol=0, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        first.fit(data)
        with __import__("dask").config.set(scheduler="sync"):
            second.fit(data)
    for name in FITTED:
        assert np.array_equal(getattr(first, name), getattr(second, name))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_per_sample_methods_match_sklearn(blobs, covariance_type):
    reference, ours = fit_both(blobs, blobs, covariance_type, 5)
    np.testing.assert_allclose(
        ours.score_samples(blobs), reference.score_samples(blobs), rtol=1e-10
    )
    np.testing.assert_allclose(
        ours.predict_proba(blobs), reference.predict_proba(blobs), atol=1e-10
    )
    np.testing.assert_array_equal(ours.predict(blobs), reference.predict(blobs))
    assert ours.score(blobs) == pytest.approx(reference.score(blobs), rel=1e-12)
    assert ours.bic(blobs) == pytest.approx(reference.bic(blobs), rel=1e-12)
    assert ours.aic(blobs) == pytest.approx(reference.aic(blobs), rel=1e-12)


def test_lazy_results_keep_the_input_chunks(blobs):
    data = da.from_array(blobs, chunks=800)
    model = dem.GaussianMixture(3, random_state=0).fit(data)
    proba = model.predict_proba(data)
    labels = model.predict(data)
    assert isinstance(proba, da.Array) and isinstance(labels, da.Array)
    assert proba.chunks == (data.chunks[0], (3,)) and labels.chunks == (data.chunks[0],)
    np.testing.assert_allclose(proba.compute(), model.predict_proba(blobs), rtol=1e-12)
    np.testing.assert_array_equal(labels.compute(), model.predict(blobs))
    assert model.score(data) == pytest.approx(model.score(blobs), rel=1e-12)


def test_xarray_input_and_output(blobs):
    array = xr.DataArray(
        blobs.T, dims=("var", "obs"), coords={"obs": np.arange(len(blobs)) * 10}
    ).chunk({"obs": 1000})
    model = dem.GaussianMixture(3, random_state=0, sample_dim="obs", feature_dim="var").fit(array)
    proba = model.predict_proba(array)
    assert isinstance(proba, xr.DataArray) and proba.dims == ("obs", "component")
    np.testing.assert_array_equal(proba["obs"].values, array["obs"].values)
    np.testing.assert_allclose(proba.values, model.predict_proba(blobs), rtol=1e-12)


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_every_initialisation_finds_the_clusters(blobs, init_params):
    model = dem.GaussianMixture(
        3, init_params=init_params, random_state=0, n_init=3, tol=1e-5, max_iter=300
    ).fit(blobs)
    reference = SklearnMixture(3, n_init=5, random_state=0).fit(blobs)
    assert model.converged_
    assert model.score(blobs) == pytest.approx(reference.score(blobs), abs=1e-4)


def test_n_init_keeps_the_best_start(blobs):
    single = [
        dem.GaussianMixture(3, init_params="random", random_state=s, max_iter=300)
        .fit(blobs)
        .lower_bound_
        for s in range(3)
    ]
    several = dem.GaussianMixture(
        3, init_params="random", n_init=4, random_state=7, max_iter=300
    ).fit(blobs)
    assert several.lower_bound_ >= min(single) - 1e-9


def test_initialisation_reads_a_bounded_sample(blobs):
    """With init_sample_size rows the start depends only on those rows, not on the rest."""
    data = da.from_array(blobs, chunks=1000)
    small = dem.GaussianMixture(3, init_sample_size=200, random_state=4, max_iter=1, tol=0)
    with pytest.warns(dem.ConvergenceWarning):
        small.fit(data)
    assert np.isfinite(small.lower_bound_)


def test_sample_recovers_the_parameters(blobs):
    model = dem.GaussianMixture(3, random_state=0).fit(blobs)
    x, labels = model.sample(60_000, random_state=1)
    assert x.shape == (60_000, 3) and labels.shape == (60_000,)
    np.testing.assert_allclose(np.bincount(labels) / 60_000, model.weights_, atol=0.01)
    for k in range(3):
        np.testing.assert_allclose(x[labels == k].mean(axis=0), model.means_[k], atol=0.05)


def test_convergence_warning_when_max_iter_is_reached(blobs):
    with pytest.warns(dem.ConvergenceWarning, match="did not converge"):
        model = dem.GaussianMixture(3, max_iter=2, tol=0, random_state=0).fit(blobs)
    assert not model.converged_ and model.n_iter_ == 2


def test_float32_input_is_kept_and_agrees(blobs):
    x32 = blobs.astype(np.float32)
    init = initial_parameters(blobs, 3, "full")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        single = dem.GaussianMixture(3, max_iter=10, tol=0, **init).fit(
            da.from_array(x32, chunks=1000)
        )
        double = dem.GaussianMixture(3, max_iter=10, tol=0, **init).fit(x32.astype(np.float64))
    assert single.means_.dtype == np.float64
    assert single.lower_bound_ == pytest.approx(double.lower_bound_, rel=1e-6)


def test_callback_sees_every_iteration(blobs):
    seen = []
    with pytest.warns(dem.ConvergenceWarning):
        dem.GaussianMixture(3, max_iter=4, tol=0, random_state=0, callback=seen.append).fit(blobs)
    assert [info.iteration for info in seen] == [1, 2, 3, 4]
    assert all(info.seconds > 0 and np.isfinite(info.loglik) for info in seen)
    assert np.isinf(seen[0].change) and all(np.isfinite(info.change) for info in seen[1:])
