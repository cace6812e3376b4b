"""Property tests (Hypothesis) across the models: EM never decreases the log-likelihood,
and a fit does not depend on the order of the rows (sequences, for HMMs) nor on how
they are chunked, up to round-off.

Each example draws data, fits once on one in-memory chunk (the reference) and once on
the same rows shuffled and split into chunks of a drawn size, from the same start.
Starts are either given explicitly (HMMs) or computed from all the rows or from the
random generator alone, so that they do not depend on the row order either. The
Gaussian mixture's own properties (with SQUAREM) are in ``test_degenerate.py``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dem

PROPERTY = settings(max_examples=10, deadline=None)
ITERATIONS = 8


@dataclass(frozen=True)
class Data:
    """Rows (or sequences) and what goes with them, with a per-row second input."""

    X: np.ndarray
    second: np.ndarray | None = None  # y for Tobit, lengths for HMMs

    def __len__(self) -> int:
        return len(self.X)

    def permuted(self, order: np.ndarray, chunks: int) -> Data:
        x = da.from_array(self.X[order], chunks=(chunks, *self.X.shape[1:]))
        second = None if self.second is None else da.from_array(self.second[order], chunks=chunks)
        return Data(x, second)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Model:
    data: Callable[[int, str], Data]  # (seed, variant) -> data
    fit: Callable[[Data, int, str], Any]  # (data, seed, variant) -> fitted estimator
    fitted: tuple[str, ...]
    variants: tuple[str, ...]


def quietly(fit: Callable[[], Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)  # tol=0: max_iter is the plan
        return fit()


# --- PPCA and factor analysis ---------------------------------------------------------------


def linear_gaussian_data(seed: int, variant: str) -> Data:
    rng = np.random.default_rng(seed)
    n, d, q = 160, 5, 2
    x = rng.standard_normal((n, q)) @ rng.standard_normal((q, d)) + rng.normal(size=d)
    x += rng.normal(scale=rng.uniform(0.2, 1.0, d), size=(n, d))
    if variant.endswith("missing"):
        x[rng.uniform(size=x.shape) < 0.15] = np.nan
    return Data(x)


def fit_linear_gaussian(data: Data, seed: int, variant: str) -> Any:
    cls = dem.PPCA if variant.startswith("ppca") else dem.FactorAnalysis
    estimator = cls(2, init_params="random", random_state=seed, max_iter=ITERATIONS, tol=0.0)
    return quietly(lambda: estimator.fit(data.X))


# --- censored regression ---------------------------------------------------------------------


def tobit_data(seed: int, variant: str) -> Data:
    rng = np.random.default_rng(seed)
    n = 240
    x = rng.standard_normal((n, 2))
    ystar = 0.3 + x @ rng.normal(size=2) + rng.uniform(0.5, 2.0) * rng.standard_normal(n)
    return Data(x, np.clip(ystar, 0.0, 1.5 if variant == "both" else np.inf))


def fit_tobit(data: Data, seed: int, variant: str) -> Any:
    right = 1.5 if variant == "both" else np.inf
    estimator = dem.CensoredRegression(0.0, right, max_iter=ITERATIONS, tol=0.0)
    return quietly(lambda: estimator.fit(data.X, data.second))


# --- hidden Markov models -----------------------------------------------------------------------

N_STATES, N_SEQUENCES, N_TIMES = 3, 24, 12


def sequences(rng: np.random.Generator, emit: Callable[[np.ndarray], np.ndarray]) -> Data:
    """Ragged sequences of a random Markov chain, NaN after each length."""
    start = rng.dirichlet(np.ones(N_STATES))
    trans = rng.dirichlet(np.full(N_STATES, 2.0), size=N_STATES) + 2.0 * np.eye(N_STATES)
    trans /= trans.sum(axis=1, keepdims=True)
    states = np.empty((N_SEQUENCES, N_TIMES), dtype=np.int64)
    states[:, 0] = rng.choice(N_STATES, N_SEQUENCES, p=start)
    for t in range(1, N_TIMES):
        cumulative = np.cumsum(trans[states[:, t - 1]], axis=1)
        states[:, t] = (rng.uniform(size=(N_SEQUENCES, 1)) > cumulative).sum(axis=1)
    x = emit(states)
    lengths = rng.integers(2, N_TIMES + 1, N_SEQUENCES)
    x[np.arange(N_TIMES)[None, :] >= lengths[:, None]] = np.nan
    return Data(x, lengths)


def transitions(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    return {
        "startprob_init": rng.dirichlet(np.full(N_STATES, 3.0)),
        "transmat_init": rng.dirichlet(np.full(N_STATES, 3.0), size=N_STATES),
    }


MEANS = np.array([[0.0, 0.0], [2.5, 2.5], [-2.5, 1.5]])


def gaussian_hmm_data(seed: int, variant: str) -> Data:
    rng = np.random.default_rng(seed)
    return sequences(rng, lambda s: MEANS[s] + rng.standard_normal((*s.shape, 2)))


def fit_gaussian_hmm(data: Data, seed: int, variant: str) -> Any:
    rng = np.random.default_rng(seed + 2)
    covars = {
        "full": np.tile(np.eye(2), (N_STATES, 1, 1)),
        "tied": np.eye(2),
        "diag": np.ones((N_STATES, 2)),
        "spherical": np.ones(N_STATES),
    }[variant]
    estimator = dem.GaussianHMM(
        N_STATES,
        covariance_type=variant,
        means_init=MEANS + rng.normal(scale=0.8, size=MEANS.shape),
        covars_init=covars * rng.uniform(0.5, 2.0),
        max_iter=ITERATIONS,
        tol=0.0,
        **transitions(seed),
    )
    return quietly(lambda: estimator.fit(data.X, data.second))


def categorical_hmm_data(seed: int, variant: str) -> Data:
    rng = np.random.default_rng(seed)
    emission = rng.dirichlet(np.full(4, 0.7), size=N_STATES)
    draws = lambda s: (  # noqa: E731
        (rng.uniform(size=(*s.shape, 1)) > np.cumsum(emission, axis=1)[s]).sum(axis=-1)
    ).astype(float)
    return sequences(rng, draws)


def fit_categorical_hmm(data: Data, seed: int, variant: str) -> Any:
    rng = np.random.default_rng(seed + 2)
    estimator = dem.CategoricalHMM(
        N_STATES,
        n_features=4,
        emissionprob_init=rng.dirichlet(np.full(4, 2.0), size=N_STATES),
        max_iter=ITERATIONS,
        tol=0.0,
        **transitions(seed),
    )
    return quietly(lambda: estimator.fit(data.X, data.second))


MODELS = {
    "ppca/fa": Model(
        linear_gaussian_data,
        fit_linear_gaussian,
        ("components_", "noise_variance_", "mean_"),
        ("ppca", "ppca-missing", "fa", "fa-missing"),
    ),
    "censored": Model(tobit_data, fit_tobit, ("coef_", "intercept_", "scale_"), ("left", "both")),
    "gaussian_hmm": Model(
        gaussian_hmm_data,
        fit_gaussian_hmm,
        ("startprob_", "transmat_", "means_", "covars_"),
        ("full", "tied", "diag", "spherical"),
    ),
    "categorical_hmm": Model(
        categorical_hmm_data,
        fit_categorical_hmm,
        ("startprob_", "transmat_", "emissionprob_"),
        ("categorical",),
    ),
}


@pytest.mark.parametrize("name", MODELS)
@PROPERTY
@given(seed=st.integers(0, 10_000), fraction=st.floats(0.05, 1.0), pick=st.integers(0, 3))
def test_loglik_never_decreases_and_order_and_chunks_do_not_matter(name, seed, fraction, pick):
    model = MODELS[name]
    variant = model.variants[pick % len(model.variants)]
    data = model.data(seed, variant)
    reference = model.fit(data, seed, variant)
    bounds = np.asarray(reference.lower_bounds_)
    assert len(bounds) == ITERATIONS
    assert np.all(np.diff(bounds) >= -1e-12 * np.abs(bounds[1:]))

    order = np.random.default_rng(seed).permutation(len(data))
    chunks = max(1, int(fraction * len(data)))
    shuffled = model.fit(data.permuted(order, chunks), seed, variant)
    for attribute in model.fitted:
        expected, actual = getattr(reference, attribute), getattr(shuffled, attribute)
        assert np.all(np.isfinite(actual)), attribute
        np.testing.assert_allclose(actual, expected, rtol=1e-7, atol=1e-10, err_msg=attribute)
    np.testing.assert_allclose(shuffled.lower_bounds_, bounds, rtol=1e-10)
