"""Degenerate numerics: documented rules, never a NaN.

Rules for every model (the reference is the closed-form scale equivariance of maximum
likelihood):

* input values above 1e150 in magnitude are refused in the first pass with a
  ValueError naming the rows and saying to rescale (EM sums their squares, which would
  overflow float64);
* PPCA, factor analysis and Tobit regression are scale equivariant: data scaled by
  1e-8, 1e8, or to float32 near its overflow (1e37) fit like the original, with each
  parameter scaled by its power of the factor (PPCA's noise floor is relative to the
  data's variance); so is a Gaussian HMM whose ``covars_prior`` (absolute, like
  ``reg_covar``) is scaled with the square of the factor.

Rules of the Gaussian mixture (the references are scikit-learn from the same start, and
scale equivariance):

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
* float32 data near overflow (1e37) fit, for every covariance type: where float32
  products could overflow (data spread beyond 1e14 about the shift), they run in float64.

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
from dem.models import gaussian
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


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_near_overflow(x, covariance_type):
    big = (x * 1e37).astype(np.float32)
    assert np.isfinite(big).all() and np.abs(big).max() > 1e37
    init = initial_parameters(x, 3, covariance_type)
    ours = fit(
        big,
        covariance_type,
        max_iter=10,
        reg_covar=1e-6 * 1e74,
        weights_init=init["weights_init"],
        means_init=init["means_init"] * 1e37,
        precisions_init=init["precisions_init"] / 1e74,
    )
    assert_finite(ours)
    original = fit(big.astype(np.float64) / 1e37, covariance_type, max_iter=10, **init)
    np.testing.assert_allclose(ours.weights_, original.weights_, rtol=1e-6)
    np.testing.assert_allclose(ours.means_ / 1e37, original.means_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        ours.covariances_ / 1e74, original.covariances_, rtol=1e-6, atol=1e-9
    )


def test_float32_products_only_where_their_squares_fit():
    float32 = np.dtype(np.float32)
    assert gaussian.product_dtype(float32, "full", 5.0) is np.float32  # the fast path
    assert gaussian.product_dtype(float32, "full", 1e19) is np.float64  # 1e38: overflow
    assert gaussian.product_dtype(float32, "full", 1e-20) is np.float64  # 1e-40: subnormal
    assert gaussian.product_dtype(np.dtype(np.float64), "full", 5.0) is np.float64


def test_a_value_whose_square_overflows_is_named(x):
    data = x.copy()
    data[123, 1] = -3e160
    with pytest.raises(
        ValueError, match=r"'X' holds values as large as 3.0e\+160 in 1 row\(s\) between rows 123 "
    ):
        fit(data, random_state=0)


# --- properties ----------------------------------------------------------------------------

PROPERTY = settings(max_examples=12, deadline=None)


def small_blobs(seed: int, n_per: int) -> np.ndarray:
    return make_blobs(n_per=n_per, seed=seed)


@PROPERTY
@given(
    seed=st.integers(0, 10_000),
    covariance_type=st.sampled_from(COVARIANCE_TYPES),
    accelerate=st.sampled_from(["none", "squarem", "alpha"]),
)
def test_loglik_never_decreases(seed, covariance_type, accelerate):
    data = small_blobs(seed, 60)
    model = fit(
        data,
        covariance_type,
        max_iter=100 if accelerate == "alpha" else 25,  # α-EM cycles take up to 30 passes
        random_state=seed,
        accelerate=accelerate,
        init_params="random",
    )
    bounds = np.asarray(model.lower_bounds_)
    assert np.all(np.diff(bounds) >= -1e-12 * np.abs(bounds).max())
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


# --- every model: values whose squares overflow, and scale ----------------------------------

N_TIMES = 10  # steps per sequence for the Gaussian HMM


def tobit_target(x: np.ndarray) -> np.ndarray:
    noise = np.random.default_rng(3).standard_normal(len(x))
    return np.clip(0.3 + x @ np.array([1.0, -0.5, 0.4]) + noise, 0.0, 2.5)


def sequences(x: np.ndarray) -> np.ndarray:
    return x[: len(x) // N_TIMES * N_TIMES].reshape(-1, N_TIMES, x.shape[1])


HMM_MEANS = np.array([[0.0, 0.0, 0.0], [3.0, 3.0, 0.0], [-3.0, 1.5, 2.5]])


def gaussian_hmm(x: np.ndarray, c: float) -> dem.GaussianHMM:
    """A Gaussian HMM whose absolute settings (starts, covars_prior) scale with ``c``."""
    estimator = dem.GaussianHMM(
        3,
        means_init=HMM_MEANS * c,
        covars_init=np.full((3, 3), 2.0) * c**2,
        covars_prior=1e-2 * c**2,
        max_iter=10,
        tol=0.0,
    )
    return estimator.fit(sequences(x))


def tobit(x: np.ndarray, c: float) -> dem.CensoredRegression:
    base = x / c if c != 1.0 else x
    y = tobit_target(base.astype(np.float64)) * c
    return dem.CensoredRegression(0.0, 2.5 * c, max_iter=20, tol=0.0).fit(x, y)


# model -> (fit(data, scale), {fitted attribute: the power of the scale it carries})
SCALE_EQUIVARIANT = {
    "ppca": (
        lambda x, c: dem.PPCA(1, max_iter=20, tol=0.0).fit(x),
        {"components_": 0, "mean_": 1, "noise_variance_": 2, "explained_variance_": 2},
    ),
    "factor_analysis": (
        lambda x, c: dem.FactorAnalysis(1, max_iter=20, tol=0.0).fit(x),
        {"components_": 0, "mean_": 1, "noise_variance_": 2, "loadings_": 1},
    ),
    "censored_regression": (tobit, {"coef_": 0, "intercept_": 1, "scale_": 1}),
    "gaussian_hmm": (
        gaussian_hmm,
        {"startprob_": 0, "transmat_": 0, "means_": 1, "covars_": 2},
    ),
}


@pytest.mark.parametrize(
    ("scale", "dtype"), [(1e-8, np.float64), (1e8, np.float64), (1e37, np.float32)]
)
@pytest.mark.parametrize("model", SCALE_EQUIVARIANT)
def test_every_model_fits_scaled_data_like_the_original(x, model, scale, dtype):
    fit_at, powers = SCALE_EQUIVARIANT[model]
    scaled = (x * scale).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        ours = fit_at(scaled, scale)
        # the reference: the very same values brought back to unit scale, in float64
        reference = fit_at(scaled.astype(np.float64) / scale, 1.0)
    for name, power in powers.items():
        value = np.asarray(getattr(ours, name))
        assert np.all(np.isfinite(value)), name
        np.testing.assert_allclose(
            value / scale**power, getattr(reference, name), rtol=1e-6, atol=1e-9, err_msg=name
        )


OVERFLOWING = {
    "gaussian_mixture": lambda x: dem.GaussianMixture(3, random_state=0).fit(x),
    "gaussian_mixture, every start given": lambda x: dem.GaussianMixture(
        3,
        weights_init=np.full(3, 1 / 3),
        means_init=x[:3],
        precisions_init=np.ones((3, 3)) * 1e-300,
        covariance_type="diag",
    ).fit(x),
    "ppca": lambda x: dem.PPCA(1).fit(x),
    "factor_analysis": lambda x: dem.FactorAnalysis(1).fit(x),
    "censored_regression": lambda x: dem.CensoredRegression(0.0).fit(x, tobit_target(x / 1e200)),
    "gaussian_hmm": lambda x: dem.GaussianHMM(3, random_state=0).fit(sequences(x)),
}


@pytest.mark.parametrize("model", OVERFLOWING)
def test_every_model_refuses_values_whose_squares_overflow(x, model):
    with pytest.raises(
        ValueError,
        match=r"'X' holds values as large as \d\.\de\+200 in \d+ row\(s\) between rows 0 and "
        r"\d+ \(chunk rows 0-\d+\)\. EM sums squares of the data, which overflow float64 "
        r"beyond 1e\+150: divide the data by a constant",
    ):
        OVERFLOWING[model](x * 1e200)
