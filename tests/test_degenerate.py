"""Degenerate numerics of the Gaussian mixture: documented rules, never a NaN.

Rules (checked here; the references are scikit-learn from the same start, and the
closed-form scale equivariance of maximum likelihood):

* a component collapsing onto duplicated points keeps covariance eigenvalues of at
  least ``reg_covar``; with ``reg_covar=0`` the fit stops with a ValueError naming the
  component and saying to increase ``reg_covar``;
* a component that (almost) no sample belongs to keeps a weight near 0 and finite
  parameters (as scikit-learn: its count is floored at ``10 * eps``);
* a tiny ``reg_covar`` (1e-300) changes nothing on well-posed data;
* ``reg_covar`` is absolute: data scaled by ``c`` fit like the original with
  ``reg_covar * c**2`` (means times ``c``, covariances times ``c**2``); with the default
  ``reg_covar`` data of variance far below it (scale 1e-8) are fitted with covariances
  equal to about ``reg_covar``, finitely;
* float32 data are computed in float64, so float32 values near overflow (1e37) fit.

Property tests: the log-likelihood never decreases, and results do not depend on
the order of the rows or on the chunking (up to round-off).
"""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.mixture import GaussianMixture as SklearnMixture

import dem
from tests.conftest import COVARIANCE_TYPES, initial_parameters, make_blobs

FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_")


def fit(x, covariance_type="full", max_iter=20, sklearn=False, **options):
    defaults = {"covariance_type": covariance_type, "max_iter": max_iter, "tol": 0.0}
    cls = SklearnMixture if sklearn else dem.GaussianMixture
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter is reached on purpose
        return cls(3, **defaults, **options).fit(x)


def assert_finite(model):
    for name in FITTED:
        assert np.isfinite(getattr(model, name)).all(), name


def min_variance(model):
    c = model.covariances_
    if model.covariance_type in ("full", "tied"):
        return float(np.linalg.eigvalsh(c.reshape(-1, *c.shape[-2:])).min())
    return float(np.min(c))


def assert_like_sklearn(ours, reference, rtol=1e-7):
    for name in FITTED:
        expected, actual = getattr(reference, name), getattr(ours, name)
        scale = np.maximum(np.abs(expected), np.abs(expected).max() * 1e-3)
        assert np.max(np.abs(actual - expected) / scale) < rtol, name


@pytest.fixture(scope="module")
def x():
    return make_blobs(n_per=150, seed=7)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_component_collapsing_onto_duplicated_points(x, covariance_type):
    duplicated = np.vstack([x, np.repeat([[9.0, 9.0, 9.0]], 40, axis=0)])
    init = initial_parameters(duplicated, 3, covariance_type, seed=2)
    init["means_init"][2] = [9.0, 9.0, 9.0]
    ours = fit(duplicated, covariance_type, **init)
    assert_finite(ours)
    assert min_variance(ours) >= 1e-6 * (1 - 1e-6)  # reg_covar, up to round-off
    # the collapsed precision factor is 1/sqrt(reg_covar) = 1e3: round-off in a scatter of
    # identical points (1e-14 of the data scale) is amplified by that much
    reference = fit(duplicated, covariance_type, sklearn=True, **init)
    assert_like_sklearn(ours, reference, rtol=1e-4)
    if covariance_type != "tied":  # a tied covariance is shared, so it cannot collapse
        with pytest.raises(ValueError, match=r"component\(s\) \[2\].*increase reg_covar"):
            fit(duplicated, covariance_type, reg_covar=0.0, **init)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_empty_component_keeps_finite_parameters(x, covariance_type):
    init = initial_parameters(x, 3, covariance_type, seed=2)
    init["means_init"][2] = [1e3, 1e3, 1e3]
    ours = fit(x, covariance_type, **init)
    assert_finite(ours)
    assert ours.weights_[2] < 1e-5
    np.testing.assert_allclose(
        ours.weights_, fit(x, covariance_type, sklearn=True, **init).weights_, atol=1e-10
    )


def test_tiny_reg_covar_changes_nothing_on_well_posed_data(x):
    init = initial_parameters(x, 3, "full")
    ours = fit(x, reg_covar=1e-300, **init)
    assert_finite(ours)
    assert_like_sklearn(ours, fit(x, sklearn=True, reg_covar=1e-300, **init))


@pytest.mark.parametrize("scale", [1e-8, 1e8])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_scaled_data_fit_like_the_original(x, scale, covariance_type):
    init = initial_parameters(x, 3, covariance_type)
    original = fit(x, covariance_type, max_iter=10, **init)
    scaled_init = {
        "weights_init": init["weights_init"],
        "means_init": init["means_init"] * scale,
        "precisions_init": init["precisions_init"] / scale**2,
    }
    scaled = fit(x * scale, covariance_type, max_iter=10, reg_covar=1e-6 * scale**2, **scaled_init)
    assert_finite(scaled)
    np.testing.assert_allclose(scaled.weights_, original.weights_, rtol=1e-6)
    np.testing.assert_allclose(scaled.means_ / scale, original.means_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        scaled.covariances_ / scale**2, original.covariances_, rtol=1e-6, atol=1e-9
    )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_data_far_below_the_default_reg_covar_fit_finitely(x, covariance_type):
    ours = fit(x * 1e-8, covariance_type, random_state=0)
    assert_finite(ours)
    assert min_variance(ours) == pytest.approx(1e-6, rel=1e-6)


def test_float32_near_overflow(x):
    big = (x * 1e37).astype(np.float32)
    assert np.isfinite(big).all() and np.abs(big).max() > 1e37
    init = initial_parameters(x, 3, "diag")
    ours = fit(
        big,
        "diag",
        max_iter=10,
        reg_covar=1e-6 * 1e74,
        weights_init=init["weights_init"],
        means_init=init["means_init"] * 1e37,
        precisions_init=init["precisions_init"] / 1e74,
    )
    assert_finite(ours)
    original = fit(big.astype(np.float64) / 1e37, "diag", max_iter=10, **init)
    np.testing.assert_allclose(ours.means_ / 1e37, original.means_, rtol=1e-6, atol=1e-9)


# --- properties ----------------------------------------------------------------------------

PROPERTY = settings(max_examples=12, deadline=None)


def small_blobs(seed: int, n_per: int) -> np.ndarray:
    return make_blobs(n_per=n_per, seed=seed)


@PROPERTY
@given(
    seed=st.integers(0, 10_000),
    covariance_type=st.sampled_from(COVARIANCE_TYPES),
    accelerate=st.sampled_from(["none", "squarem"]),
)
def test_loglik_never_decreases(seed, covariance_type, accelerate):
    data = small_blobs(seed, 60)
    model = fit(
        data,
        covariance_type,
        max_iter=25,
        random_state=seed,
        accelerate=accelerate,
        init_params="random",
    )
    bounds = np.asarray(model.lower_bounds_)
    assert np.all(np.diff(bounds) >= -1e-12 * np.abs(bounds[1:]).max())
    assert_finite(model)


@PROPERTY
@given(
    seed=st.integers(0, 10_000),
    covariance_type=st.sampled_from(COVARIANCE_TYPES),
    chunks=st.integers(17, 400),
)
def test_row_order_and_chunking_do_not_matter(seed, covariance_type, chunks):
    data = small_blobs(seed, 60)
    init = initial_parameters(data, 3, covariance_type, seed=seed)
    reference = fit(data, covariance_type, max_iter=8, **init)
    order = np.random.default_rng(seed).permutation(len(data))
    shuffled = fit(da.from_array(data[order], chunks=chunks), covariance_type, max_iter=8, **init)
    for name in FITTED:
        np.testing.assert_allclose(
            getattr(shuffled, name), getattr(reference, name), rtol=1e-7, atol=1e-10
        )
    np.testing.assert_allclose(shuffled.lower_bounds_, reference.lower_bounds_, rtol=1e-10)
