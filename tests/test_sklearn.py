"""scikit-learn's estimator checks over every dem estimator, and the scikit-learn
protocol in use: clone, Pipeline, GridSearchCV, pickling, feature names."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

import dem

ESTIMATORS = [
    dem.GaussianMixture(2, max_iter=20, random_state=0),
    dem.PPCA(1, max_iter=20, random_state=0),
    dem.FactorAnalysis(1, max_iter=20, random_state=0),
    dem.CensoredRegression(max_iter=50, random_state=0),
    dem.GaussianHMM(2, max_iter=10, random_state=0),
    dem.CategoricalHMM(2, max_iter=10, random_state=0),
]

EXPECTED_FAILED: dict[str, dict[str, str]] = {}


def expected_failed_checks(estimator: object) -> dict[str, str]:
    return EXPECTED_FAILED.get(type(estimator).__name__, {})


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        check(estimator)
