"""Online (stepwise) EM: the running average, and where one pass gets to."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SklearnMixture

import dem
from dem.online import blend, step_rate
from tests.conftest import initial_parameters, make_blobs


def test_running_average_follows_the_robbins_monro_recursion():
    batches = [
        {"n": np.float64(n), "loglik": np.float64(v), "sum_x": np.array([v, 2 * v])}
        for n, v in [(10, 5.0), (20, 8.0), (5, -1.0)]
    ]
    running = None
    expected = None
    for step, batch in enumerate(batches):
        rate = (step + 1) ** -0.7
        assert step_rate(step, 0.7) == pytest.approx(rate)
        running = blend(running, batch, step_rate(step, 0.7))
        per_sample = batch["sum_x"] / batch["n"]
        expected = per_sample if expected is None else (1 - rate) * expected + rate * per_sample
        np.testing.assert_allclose(running["sum_x"], expected)
        assert running["n"] == pytest.approx(1.0)


def test_statistics_must_keep_their_keys():
    with pytest.raises(ValueError, match="same statistics"):
        blend(
            {"n": np.float64(1.0), "a": np.float64(1.0)},
            {"n": np.float64(1.0), "b": np.float64(1.0)},
            0.5,
        )


def test_one_batch_of_everything_is_one_em_iteration(blobs):
    """With every chunk in one batch the first update is exactly a batch EM step."""
    init = initial_parameters(blobs, 3, "full")
    reference = SklearnMixture(3, max_iter=1, tol=0, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference.fit(blobs)
    ours = dem.GaussianMixture(3, method="online", max_iter=0, batch_chunks=100, **init)
    ours.fit(da.from_array(blobs, chunks=1000))
    np.testing.assert_allclose(ours.means_, reference.means_, rtol=1e-10)
    np.testing.assert_allclose(ours.covariances_, reference.covariances_, rtol=1e-10)


@pytest.fixture(scope="module")
def many_rows():
    x = make_blobs(n_per=8000, seed=5)
    reference = SklearnMixture(3, tol=1e-8, max_iter=500, random_state=0, n_init=2).fit(x)
    return x, reference.score(x)


def test_one_online_pass_gets_within_one_percent(many_rows):
    x, optimum = many_rows
    model = dem.GaussianMixture(
        3, method="online", max_iter=0, init_sample_size=300, random_state=0
    )
    model.fit(da.from_array(x, chunks=1000))
    assert model.n_online_updates_ == 48 and model.n_iter_ == 0  # one update per chunk
    assert abs(model.score(x) - optimum) < 0.01 * abs(optimum)


def test_online_start_then_batch_em_reaches_the_optimum(many_rows):
    x, optimum = many_rows
    model = dem.GaussianMixture(
        3, method="online", tol=1e-8, max_iter=500, init_sample_size=300, random_state=0
    ).fit(da.from_array(x, chunks=2000))
    assert model.converged_
    assert model.score(x) == pytest.approx(optimum, rel=1e-6)


def test_partial_fit_streams_batches(many_rows):
    x, optimum = many_rows
    model = dem.GaussianMixture(3, random_state=0, init_sample_size=300)
    for start in range(0, len(x), 1500):
        model.partial_fit(x[start : start + 1500])
    assert model.n_iter_ == -(-len(x) // 1500) and len(model.lower_bounds_) == model.n_iter_
    assert abs(model.score(x) - optimum) < 0.01 * abs(optimum)
    with pytest.raises(ValueError, match="NaN or infinity"):
        model.partial_fit(np.full((10, 3), np.nan))


def test_online_options_are_checked(blobs):
    with pytest.raises(ValueError, match="step_exponent"):
        dem.GaussianMixture(2, method="online", step_exponent=0.4).fit(blobs)
    with pytest.raises(ValueError, match="max_iter must be >= 1 for method='batch'"):
        dem.GaussianMixture(2, max_iter=0).fit(blobs)


def test_warm_start_continues_from_the_fitted_parameters(blobs):
    model = dem.GaussianMixture(3, random_state=0, warm_start=True, tol=1e-8, max_iter=500).fit(
        blobs
    )
    means = model.means_.copy()
    model.fit(blobs)
    assert model.n_iter_ <= 2
    np.testing.assert_allclose(model.means_, means, atol=1e-3)
