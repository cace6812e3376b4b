"""scikit-learn's estimator checks over every dem estimator, and the scikit-learn
protocol in use: clone, Pipeline, GridSearchCV, pickling, feature names, parameter
validation, and per-sample methods that refuse NaN."""

from __future__ import annotations

import io
import pickle
import warnings

import dask.array as da
import joblib
import numpy as np
import pandas as pd
import pytest
import sklearn.exceptions
import xarray as xr
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import dem
from dem.models import hmm

# the fits here are small and short: whether they converge is not what is tested
pytestmark = pytest.mark.filterwarnings("ignore::dem.engine.ConvergenceWarning")

ESTIMATORS = [
    dem.GaussianMixture(2, max_iter=20, random_state=0),
    dem.PPCA(1, max_iter=20, random_state=0),
    dem.FactorAnalysis(1, max_iter=20, random_state=0),
    dem.CensoredRegression(max_iter=50, random_state=0),
    dem.GaussianHMM(2, max_iter=10, random_state=0),
    dem.CategoricalHMM(2, max_iter=10, random_state=0),
    dem.BayesianGaussianMixture(n_components=2, max_iter=20, random_state=0),
    dem.MixtureOfFactorAnalyzers(2, 1, max_iter=20, random_state=0),
    dem.StudentMixture(2, max_iter=20, random_state=0),
    dem.LatentDirichletAllocation(2, max_iter=5, random_state=0),
]
ESTIMATORS.append(dem.GMMHMM(2, 2, max_iter=10, random_state=0))

# The checks that fit and use the HMMs on scikit-learn's 2-D samples × features X (those
# that only expect a refusal, of sparse, complex or empty X, pass).
_FITS_2D_X = [
    "check_dict_unchanged",
    "check_dont_overwrite_parameters",
    "check_dtype_object",
    "check_estimators_dtypes",
    "check_estimators_fit_returns_self",
    "check_estimators_nan_inf",
    "check_estimators_overwrite_params",
    "check_estimators_pickle",
    "check_f_contiguous_array_estimator",
    "check_fit2d_1feature",
    "check_fit2d_1sample",
    "check_fit2d_predict1d",
    "check_fit_check_is_fitted",
    "check_fit_idempotent",
    "check_fit_score_takes_y",
    "check_methods_sample_order_invariance",
    "check_methods_subset_invariance",
    "check_n_features_in",
    "check_n_features_in_after_fitting",
    "check_pipeline_consistency",
    "check_positive_only_tag_during_fit",
    "check_readonly_memmap_input",
]

# scikit-learn's sample-weight checks fit 2-D X too (a sequence's weight is tested in
# tests/test_hmm_weights.py); those listed for CategoricalHMM fail, the others pass because
# its 2-D integer X is a set of sequences
_WEIGHTS_2D_X = [
    "check_sample_weights_pandas_series",
    "check_sample_weights_not_an_array",
    "check_sample_weights_list",
    "check_all_zero_sample_weights_error",
    "check_sample_weights_shape",
    "check_sample_weights_not_overwritten",
    "check_sample_weight_equivalence_on_dense_data",
]
_CATEGORICAL_WEIGHTS_2D_X = [
    "check_sample_weights_list",
    "check_all_zero_sample_weights_error",
    "check_sample_weight_equivalence_on_dense_data",
]

# scikit-learn's check fits the weighted rows shuffled: the initialisation (k-means on the
# sample) then differs from the repeated rows', and so may the local optimum; from the same
# start the fits are equal (tests/test_weights.py)
_SHUFFLED_START = (
    "the check shuffles the weighted rows, so the k-means start differs from the repeated "
    "rows' (equal from the same start: tests/test_weights.py)"
)

EXPECTED_FAILED: dict[str, dict[str, str]] = {
    "CensoredRegression": {
        "check_regressors_train": "score is the mean Tobit log-likelihood per row, not R²",
        "check_regressors_no_decision_function": (
            "y = X[:, 0] exactly: the latent scale is 0 and the likelihood has no maximum"
        ),
        "check_sample_weights_shape": (
            "y is an exact function of X: the latent scale is 0 and the likelihood has no maximum"
        ),
        "check_sample_weights_not_overwritten": (
            "y is an exact function of X: the latent scale is 0 and the likelihood has no maximum"
        ),
        "check_sample_weight_equivalence_on_dense_data": (
            "30 features for 15 rows: more coefficients than rows, so no scale can be estimated"
        ),
    },
    **{
        name: {"check_sample_weight_equivalence_on_dense_data": _SHUFFLED_START}
        for name in (
            "GaussianMixture",
            "BayesianGaussianMixture",
            "MixtureOfFactorAnalyzers",
            "StudentMixture",
        )
    },
    "GaussianHMM": {
        check: "X is 3-D (sequences × time × features); a 2-D X is not a set of sequences"
        for check in _FITS_2D_X + _WEIGHTS_2D_X
    },
    "GMMHMM": {
        check: "X is 3-D (sequences × time × features); a 2-D X is not a set of sequences"
        for check in _FITS_2D_X + _WEIGHTS_2D_X
    },
    "CategoricalHMM": {
        check: "X holds integer symbols (sequences × time) and fit's second argument is "
        "lengths (hmmlearn), not real-valued samples × features and a target"
        for check in _FITS_2D_X + _CATEGORICAL_WEIGHTS_2D_X
    },
}


def expected_failed_checks(estimator: object) -> dict[str, str]:
    found = EXPECTED_FAILED.get(type(estimator).__name__, {})
    # the readonly_memmap variants of a check share its reason
    return {**found, **{f"{c}(readonly_memmap=True)": r for c, r in found.items()}}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        check(estimator)


# --- the protocol in use --------------------------------------------------------------


def blobs(n: int = 120, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [6.0, 6.0, 0.0], [0.0, 6.0, 6.0]])
    return centres[rng.integers(0, 3, n)] + rng.normal(size=(n, 3))


def fitted(estimator):
    """``estimator`` fitted on small data of its kind, and that data."""
    rng = np.random.default_rng(1)
    if isinstance(estimator, dem.CensoredRegression):
        X = rng.normal(size=(200, 2))
        y = np.maximum(X @ [1.0, -1.0] + rng.normal(size=200), 0.0)
        return estimator.fit(X, y, left=0.0), (X, y)
    if isinstance(estimator, dem.GaussianHMM | dem.GMMHMM):
        X = rng.normal(size=(6, 30, 2))
        return estimator.fit(X), (X,)
    if isinstance(estimator, dem.CategoricalHMM):
        X = rng.integers(0, 3, size=(6, 30)).astype(float)
        return estimator.fit(X), (X,)
    X = blobs()
    if isinstance(estimator, dem.LatentDirichletAllocation):  # word counts
        X = np.round(np.abs(X) * 2)
    return estimator.fit(X), (X,)


def per_sample_methods(estimator) -> list[str]:
    names = ["predict", "predict_proba", "score_samples", "transform", "score_sequences"]
    return [name for name in names if hasattr(estimator, name)]


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_pickle_and_joblib_round_trip_predicts_the_same(estimator):
    model, data = fitted(clone(estimator))
    X = data[0]
    for restored in (
        pickle.loads(pickle.dumps(model)),
        joblib.load(_joblib_bytes(model)),
    ):
        assert type(restored) is type(model)
        for name in per_sample_methods(model):
            np.testing.assert_array_equal(getattr(restored, name)(X), getattr(model, name)(X))
        assert restored.score(*data) == model.score(*data)


def _joblib_bytes(model) -> io.BytesIO:
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    buffer.seek(0)
    return buffer


def test_clone_repr_and_params_are_scikit_learns():
    gm = dem.GaussianMixture(3, covariance_type="diag", random_state=0)
    copy = clone(gm)
    assert copy is not gm and copy.get_params() == gm.get_params()
    assert repr(gm) == "GaussianMixture(covariance_type='diag', n_components=3, random_state=0)"
    assert gm.set_params(n_components=2).n_components == 2


def test_pipeline_and_grid_search():
    X = blobs(150)
    pipe = make_pipeline(StandardScaler(), dem.GaussianMixture(3, random_state=0))
    labels = pipe.fit(X).predict(X)
    assert labels.shape == (150,) and set(np.unique(labels)) == {0, 1, 2}
    search = GridSearchCV(dem.GaussianMixture(random_state=0), {"n_components": [1, 3]}, cv=3).fit(
        X
    )
    # three separated blobs: three components score better on held-out folds than one
    assert search.best_params_ == {"n_components": 3}
    reducer = make_pipeline(StandardScaler(), dem.PPCA(2, random_state=0)).fit(X)
    assert reducer.transform(X).shape == (150, 2)
    assert list(reducer.get_feature_names_out()) == ["ppca0", "ppca1"]


def test_feature_names_from_dataframe_and_xarray():
    X = blobs()
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    gm = dem.GaussianMixture(2, random_state=0).fit(frame)
    assert gm.n_features_in_ == 3 and list(gm.feature_names_in_) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="feature names should match"):
        gm.predict(frame.rename(columns={"a": "z"}))
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        gm.predict(X)
    array = xr.DataArray(X, dims=("sample", "feature"), coords={"feature": ["u", "v", "w"]})
    ppca = dem.PPCA(1, random_state=0).fit(array)
    assert list(ppca.feature_names_in_) == ["u", "v", "w"]
    assert not hasattr(dem.PPCA(1, random_state=0).fit(X), "feature_names_in_")


def test_not_fitted_error_is_scikit_learns():
    with pytest.raises(sklearn.exceptions.NotFittedError):
        dem.GaussianMixture(2).predict(blobs())
    assert issubclass(dem.NotFittedError, sklearn.exceptions.NotFittedError)


# --- parameters: refused with scikit-learn's InvalidParameterError (a ValueError) ------


@pytest.mark.parametrize(
    ("estimator", "name", "value"),
    [
        (dem.GaussianMixture, "persist", "yes"),
        (dem.GaussianMixture, "n_components", True),
        (dem.PPCA, "n_components", True),
        (dem.GaussianMixture, "reg_covar", np.inf),
        (dem.GaussianMixture, "tol", np.nan),
        (dem.GaussianMixture, "random_state", -1),
        (dem.GaussianMixture, "random_state", "abc"),
        (dem.CensoredRegression, "max_iter", 2.5),
        (dem.GaussianHMM, "accelerate", "fast"),
        (dem.CategoricalHMM, "transmat_prior", -1.0),
        (dem.CategoricalHMM, "n_features", hmm.MAX_SYMBOLS + 1),
        (dem.LatentDirichletAllocation, "doc_topic_prior", -1.0),
        (dem.LatentDirichletAllocation, "evaluate_every", 1.5),
        (dem.LatentDirichletAllocation, "learning_decay", 0.4),
    ],
)
def test_invalid_parameters_are_refused_at_fit(estimator, name, value):
    model = estimator(**{name: value})  # __init__ only stores (scikit-learn's rule)
    assert getattr(model, name) is value
    with pytest.raises(ValueError, match=f"'{name}' parameter of {estimator.__name__}"):
        fitted(model)


def test_random_state_accepts_randomstate_reproducibly():
    X = blobs()

    def means(random_state):
        gm = dem.GaussianMixture(3, init_params="random", max_iter=1, random_state=random_state)
        return gm.fit(X).means_

    # the same state, the same fit; another state, another start
    np.testing.assert_array_equal(means(np.random.RandomState(5)), means(np.random.RandomState(5)))
    assert not np.array_equal(means(np.random.RandomState(5)), means(np.random.RandomState(6)))
    np.testing.assert_array_equal(means(np.random.default_rng(5)), means(np.random.default_rng(5)))


# --- per-sample methods refuse NaN and infinity --------------------------------------


@pytest.mark.parametrize("estimator", ESTIMATORS[:4], ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_per_sample_methods_refuse_bad_rows(estimator, bad):
    model, data = fitted(clone(estimator))
    X = data[0].copy()
    X[7, 1] = bad
    takes_nan = isinstance(model, dem.PPCA | dem.FactorAnalysis) and np.isnan(bad)
    for name in [*per_sample_methods(model), "score"]:
        args = (X, *data[1:]) if name == "score" else (X,)
        if takes_nan:
            result = np.asarray(getattr(model, name)(*args))
            assert np.all(np.isfinite(result)), name  # NaN is missing, marginalised
            continue
        with pytest.raises(ValueError, match="row"):
            getattr(model, name)(*args)
    if takes_nan:
        return
    lazy = getattr(model, per_sample_methods(model)[0])(da.from_array(X, chunks=50))
    assert isinstance(lazy, da.Array)  # the error comes when computed, naming the row
    with pytest.raises(ValueError, match="rows 7 and 7"):
        lazy.compute()


# --- CategoricalHMM's alphabet ------------------------------------------------------


def test_categorical_hmm_refuses_a_huge_symbol_without_allocating():
    X = np.zeros((3, 5))
    X[1, 2] = 1e9  # an alphabet of 1e9 + 1 symbols would need gigabytes
    with pytest.raises(
        ValueError, match=r"1000000000.0\].*sequence 1 of this chunk, at time step 2.*MAX_SYMBOLS"
    ):
        dem.CategoricalHMM(2).fit(X)
    X[1, 2] = 4
    with pytest.raises(ValueError, match=r"\[0, 3\).*\[4\.0\].*sequence 1"):
        dem.CategoricalHMM(2, n_features=3).fit(X)
    for bad in (-1.0, 0.5):
        X[1, 2] = bad
        with pytest.raises(ValueError, match="symbols must be non-negative integers"):
            dem.CategoricalHMM(2).fit(X)
    X[1, 2] = 4
    assert dem.CategoricalHMM(2, max_iter=2).fit(X).emissionprob_.shape == (2, 5)
