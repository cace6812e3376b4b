"""The fast Gaussian-mixture E-step against independent references.

scipy's multivariate normal density, explicit per-row sums, scipy's log-sum-exp and
scikit-learn's EM: the blocked, transposed kernels must agree with each, for every
covariance type, for float64 and float32 input, and whatever the chunking.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from scipy import stats as scipy_stats
from scipy.special import logsumexp, softmax

from dem.models import gaussian
from dem.models.mixture import GaussianMixture
from dem.models.mixture.kernels import BLOCK_ROWS, responsibilities
from dem.models.mixture.model import MixtureModel

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
# not a multiple of the block size, so every test crosses a partial block
N_ROWS = 2 * BLOCK_ROWS + 357


def _data(n: int = N_ROWS, d: int = 5, seed: int = 0, offset: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, (3, d))
    parts = [
        rng.standard_normal((n // 3 + 1, d)) @ (np.eye(d) + 0.3 * rng.standard_normal((d, d))) + c
        for c in centres
    ]
    x = np.vstack(parts)[:n] + offset
    return x[rng.permutation(n)]


def _params(
    x: np.ndarray, n_components: int, covariance_type: str, seed: int = 1
) -> dict[str, np.ndarray]:
    """Valid, deliberately rough parameters (not fitted, so responsibilities are mixed)."""
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    if covariance_type == "full":
        roots = np.eye(d) + 0.4 * rng.standard_normal((n_components, d, d))
        covariances = np.einsum("kij,klj->kil", roots, roots) + 0.1 * np.eye(d)
    elif covariance_type == "tied":
        root = np.eye(d) + 0.4 * rng.standard_normal((d, d))
        covariances = root @ root.T + 0.1 * np.eye(d)
    elif covariance_type == "diag":
        covariances = rng.uniform(0.5, 3.0, (n_components, d))
    else:
        covariances = rng.uniform(0.5, 3.0, n_components)
    weights = rng.dirichlet(np.full(n_components, 3.0))
    means = x[rng.choice(len(x), n_components, replace=False)]
    return {
        "weights": weights,
        "means": means,
        "covariances": covariances,
        "precisions_cholesky": gaussian.precision_cholesky(covariances, covariance_type),
        "shift": weights @ means,  # the reference point the statistics are taken about
    }


def _component_covariance(
    params: dict[str, np.ndarray], k: int, covariance_type: str, d: int
) -> np.ndarray:
    cov = params["covariances"]
    return {
        "full": lambda: cov[k],
        "tied": lambda: cov,
        "diag": lambda: np.diag(cov[k]),
        "spherical": lambda: cov[k] * np.eye(d),
    }[covariance_type]()


def _reference_stats(
    x: np.ndarray, params: dict[str, np.ndarray], covariance_type: str
) -> dict[str, np.ndarray]:
    """The E-step statistics written out row by row with scipy densities (slow, independent)."""
    n, d = x.shape
    k_total = len(params["weights"])
    log_prob = np.column_stack(
        [
            np.log(params["weights"][k])
            + scipy_stats.multivariate_normal(
                params["means"][k], _component_covariance(params, k, covariance_type, d)
            ).logpdf(x)
            for k in range(k_total)
        ]
    )
    resp = softmax(log_prob, axis=1)
    xc = x - params["shift"]
    outer = np.einsum("nk,ni,nj->kij", resp, xc, xc)
    scatter = {
        "full": outer,
        "tied": outer.sum(axis=0),
        "diag": np.einsum("kii->ki", outer),
        "spherical": np.einsum("kii->ki", outer),
    }[covariance_type]
    return {
        "n": np.float64(n),
        "loglik": logsumexp(log_prob, axis=1).sum(),
        "resp_sum": resp.sum(axis=0),
        "sum_x": resp.T @ xc,
        "scatter": scatter,
    }


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a) - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_e_step_matches_rowwise_scipy_reference(covariance_type: str) -> None:
    x = _data()
    params = _params(x, 4, covariance_type)
    got = MixtureModel(4, covariance_type).e_step({"X": x}, params)
    want = _reference_stats(x, params, covariance_type)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].dtype == np.float64, key
        assert got[key].shape == np.shape(want[key]), key
        assert _relative(got[key], want[key]) < 1e-11, key


@pytest.mark.parametrize(
    ("covariance_type", "dtype"),
    [(c, np.float64) for c in COVARIANCE_TYPES] + [("full", np.float32), ("diag", np.float32)],
)
def test_restarts_evaluated_together_match_the_scipy_reference(
    covariance_type: str, dtype: type
) -> None:
    """e_step_many stacks the runs' components; each run must still get its own statistics,
    including a run whose shift differs (evaluated apart) and one far from the others."""
    x = _data(seed=3)
    runs = [_params(x, 4, covariance_type, seed=seed) for seed in (11, 12, 13, 14)]
    runs[2]["shift"] = runs[2]["shift"] + 0.5
    runs[3]["means"] = runs[3]["means"] * 3.0
    got = MixtureModel(4, covariance_type).e_step_many({"X": x.astype(dtype)}, runs)
    tolerance = {np.float64: 1e-11, np.float32: 1e-5}[dtype]
    assert len(got) == len(runs)
    for run_stats, params in zip(got, runs, strict=True):
        want = _reference_stats(x, params, covariance_type)
        assert run_stats.keys() == want.keys()
        for key in want:
            assert run_stats[key].shape == np.shape(want[key]), key
            assert _relative(run_stats[key], want[key]) < tolerance, key


@pytest.mark.parametrize("separation", [3.0, 1e3])
def test_full_e_step_is_accurate_for_far_apart_components(separation: float) -> None:
    """Near components take the expanded distances, far ones the whitened: both ~1e-12."""
    rng = np.random.default_rng(14)
    centres = separation * np.array([[0.0] * 5, [1.0] * 5, [-0.7] * 5])
    x = np.vstack([rng.standard_normal((900, 5)) + c for c in centres])
    params = _params(x, 3, "full", seed=15)
    params["means"] = centres + 0.3 * rng.standard_normal(centres.shape)
    got = MixtureModel(3, "full").e_step({"X": x}, params)
    want = _reference_stats(x, params, "full")
    for key in want:
        assert _relative(got[key], want[key]) < 1e-12, key


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_weighted_log_prob_matches_scipy_density(covariance_type: str) -> None:
    x = _data(n=700, seed=3)
    params = _params(x, 3, covariance_type, seed=4)
    got = MixtureModel(3, covariance_type).weighted_log_prob(x, params)
    want = np.column_stack(
        [
            np.log(params["weights"][k])
            + scipy_stats.multivariate_normal(
                params["means"][k], _component_covariance(params, k, covariance_type, 5)
            ).logpdf(x)
            for k in range(3)
        ]
    )
    assert got.shape == (700, 3)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_statistics_are_chunk_invariant_across_block_boundaries(covariance_type: str) -> None:
    x = _data(seed=5)
    params = _params(x, 3, covariance_type, seed=6)
    model = MixtureModel(3, covariance_type)
    whole = model.e_step({"X": x}, params)
    cuts = [0, 1, BLOCK_ROWS - 1, BLOCK_ROWS + 17, 2 * BLOCK_ROWS + 5, len(x)]
    parts = [model.e_step({"X": x[a:b]}, params) for a, b in itertools.pairwise(cuts)]
    total = parts[0]
    for part in parts[1:]:
        total = model.combine(total, part)
    for key in whole:
        assert _relative(total[key], whole[key]) < 1e-12, key


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_input_accumulates_float64_and_stays_close(covariance_type: str) -> None:
    x = _data(seed=7, offset=50.0)
    params = _params(x, 4, covariance_type, seed=8)
    model = MixtureModel(4, covariance_type)
    x32 = x.astype(np.float32)
    got = model.e_step({"X": x32}, params)
    want = model.e_step({"X": x32.astype(np.float64)}, params)
    for key in want:
        assert got[key].dtype == np.float64, key
    assert _relative(got["loglik"], want["loglik"]) < 1e-6
    for key in ("resp_sum", "sum_x", "scatter"):
        assert _relative(got[key], want[key]) < 1e-5, key


@pytest.mark.parametrize(("spread", "expected"), [(2.0, True), (12.0, True), (50.0, False)])
def test_float32_expanded_distances_match_the_scipy_reference(
    spread: float, expected: bool
) -> None:
    """Float32 full covariances take the expanded distances when the means lie within
    EXPANSION_LIMIT_FLOAT32 of the shift, else the whitened ones: both stay accurate."""
    x = _data(seed=21) * (spread / 3.0)
    params = _params(x, 4, "full", seed=22)
    dm = params["means"] - params["shift"]
    expanded = gaussian.expandable(dm, params["precisions_cholesky"], "full", np.float32)
    assert expanded == expected  # the means' squared distances: 15, 546, 9484
    got = MixtureModel(4, "full").e_step({"X": x.astype(np.float32)}, params)
    want = _reference_stats(x.astype(np.float32).astype(np.float64), params, "full")
    assert _relative(got["loglik"], want["loglik"]) < 1e-6
    for key in ("resp_sum", "sum_x", "scatter"):
        assert _relative(got[key], want[key]) < 1e-5, key


def test_float32_fit_log_likelihood_within_1e6_of_float64() -> None:
    x = _data(n=6000, d=6, seed=9, offset=20.0)
    rng = np.random.default_rng(10)
    inits = {
        "weights_init": np.full(3, 1 / 3),
        "means_init": x[rng.choice(len(x), 3, replace=False)],
        "precisions_init": np.stack([np.linalg.inv(np.cov(x.T))] * 3),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: a fixed number of iterations
        fit64 = GaussianMixture(3, max_iter=25, tol=0.0, **inits).fit(x)
        fit32 = GaussianMixture(3, max_iter=25, tol=0.0, **inits).fit(x.astype(np.float32))
    for a, b in zip(fit32.lower_bounds_, fit64.lower_bounds_, strict=True):
        assert abs(a - b) <= 1e-6 * abs(b)
    np.testing.assert_allclose(fit32.means_, fit64.means_, rtol=1e-4, atol=1e-4)


def test_responsibilities_matches_scipy_and_survives_far_points() -> None:
    rng = np.random.default_rng(11)
    log_prob = rng.normal(-5.0, 30.0, (6, 1000))
    log_prob[:, :10] -= 5000.0  # rows far from every component: no exp underflow to 0/0
    want_norm = logsumexp(log_prob, axis=0)
    want_resp = softmax(log_prob, axis=0)
    got, norm = responsibilities(log_prob.copy())
    np.testing.assert_allclose(norm, want_norm, rtol=1e-14)
    np.testing.assert_allclose(got, want_resp, rtol=1e-12, atol=1e-300)
    assert np.all(np.isfinite(got))
    got32, norm32 = responsibilities(log_prob.copy(), np.float32)
    assert got32.dtype == np.float32 and norm32.dtype == np.float64
    np.testing.assert_allclose(norm32, want_norm, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got32, want_resp, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_thirty_iterations_match_scikit_learn(covariance_type: str) -> None:
    from sklearn.mixture import GaussianMixture as SklearnMixture

    x = _data(n=3000, d=4, seed=12)
    params = _params(x, 3, covariance_type, seed=13)
    inits = {
        "weights_init": params["weights"],
        "means_init": params["means"],
        "precisions_init": gaussian.precisions_from_cholesky(
            params["precisions_cholesky"], covariance_type
        ),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: a fixed number of iterations
        ours = GaussianMixture(
            3, covariance_type=covariance_type, max_iter=30, tol=0.0, **inits
        ).fit(x)
        theirs = SklearnMixture(
            3, covariance_type=covariance_type, max_iter=30, tol=0.0, **inits
        ).fit(x)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert _relative(getattr(ours, name), getattr(theirs, name)) < 1e-10, name
    assert abs(ours.lower_bound_ - theirs.lower_bound_) < 1e-12 * abs(theirs.lower_bound_)
