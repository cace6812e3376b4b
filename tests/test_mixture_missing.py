"""``GaussianMixture(missing="marginalize")``: EM with NaN entries missing at random.

References are independent of dem's kernels: the observed-data log-likelihood written
directly (each row's observed block ``Σ_oo`` factorised on its own, with scipy), a
direct maximisation of it with scipy's optimisers, and the conditional normal mean
``μ_m + Σ_mo Σ_oo⁻¹ (x_o − μ_o)`` computed row by row.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from scipy import linalg, optimize
from scipy.special import logsumexp, softmax
from scipy.stats import multivariate_normal
from typer.testing import CliRunner

import dem
from dem import engine
from dem.cli import app
from dem.models import gaussian
from dem.models.mixture import missing as missing_module
from dem.models.mixture import missing_kernels
from dem.models.mixture.missing import MarginalMixtureModel, UnobservedRowsWarning
from dem.restore import from_checkpoint

LOG_2PI = np.log(2 * np.pi)
# most fits here run a fixed number of iterations (tol=0); the optimum tests check
# ``converged_`` themselves
pytestmark = pytest.mark.filterwarnings("ignore::dem.ConvergenceWarning")


# --- data and the independent references ----------------------------------------------


def mixture_data(
    n: int, d: int, k: int, fraction: float, seed: int = 0, spread: float = 4.0
) -> np.ndarray:
    """Rows of a K-component mixture (random orientations, variances 0.5 to 1.5), each
    entry NaN with probability ``fraction``; every row keeps at least one observed value."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, spread, size=(k, d))
    factors = []
    for _ in range(k):
        rotation, _ = np.linalg.qr(rng.standard_normal((d, d)))
        factors.append(rotation * np.sqrt(rng.uniform(0.5, 1.5, size=d)))
    labels = rng.integers(k, size=n)
    noise = rng.standard_normal((n, d))
    x = means[labels] + np.einsum("nij,nj->ni", np.stack(factors)[labels], noise)
    missing = rng.random((n, d)) < fraction
    missing[missing.all(axis=1), 0] = False
    x[missing] = np.nan
    return x


def dense_covariances(covariances: np.ndarray, ctype: str, k: int, d: int) -> np.ndarray:
    if ctype == "full":
        return covariances
    if ctype == "tied":
        return np.broadcast_to(covariances, (k, d, d))
    if ctype == "diag":
        return np.stack([np.diag(c) for c in covariances])
    return covariances[:, None, None] * np.eye(d)


def component_log_densities(x: np.ndarray, means: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """log N(x_o | μ_k,o, Σ_k,oo) of each row (n, K), one factorisation per pattern."""
    out = np.empty((len(x), len(means)))
    for rows, o, values in by_pattern(x):
        for k, (mean, cov) in enumerate(zip(means, covs, strict=True)):
            chol = np.linalg.cholesky(cov[np.ix_(o, o)])
            z = linalg.solve_triangular(chol, (values - mean[o]).T, lower=True, check_finite=False)
            out[rows, k] = (
                -0.5 * (z * z).sum(axis=0) - np.log(np.diag(chol)).sum() - 0.5 * o.sum() * LOG_2PI
            )
    return out


_PATTERNS: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}


def by_pattern(x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(rows, observed columns, observed values) of each missingness pattern of ``x``
    (kept for the array, which the optimisers evaluate many times)."""
    key = id(x)
    if key not in _PATTERNS:
        missing = np.isnan(x)
        groups = []
        for pattern in np.unique(missing, axis=0):
            rows = np.flatnonzero((missing == pattern).all(axis=1))
            groups.append((rows, ~pattern, x[np.ix_(rows, ~pattern)]))
        _PATTERNS.clear()
        _PATTERNS[key] = groups
    return _PATTERNS[key]


def observed_loglik(x: np.ndarray, weights: np.ndarray, means: np.ndarray, covs: np.ndarray):
    """Each row's observed-data log-likelihood under the mixture (n,)."""
    return logsumexp(component_log_densities(x, means, covs) + np.log(weights), axis=1)


def conditional_mean(row: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """The row with its NaN replaced by μ_m + Σ_mo Σ_oo⁻¹ (x_o − μ_o)."""
    o = ~np.isnan(row)
    out = row.copy()
    out[~o] = mean[~o] + cov[np.ix_(~o, o)] @ np.linalg.solve(cov[np.ix_(o, o)], row[o] - mean[o])
    return out


def lower_vector(chol: np.ndarray) -> np.ndarray:
    """A lower Cholesky factor as a vector, the log of its diagonal first."""
    d = len(chol)
    rows, cols = np.tril_indices(d, -1)
    return np.concatenate([np.log(np.diag(chol)), chol[rows, cols]])


def lower_from(vector: np.ndarray, d: int) -> np.ndarray:
    chol = np.diag(np.exp(vector[:d]))
    rows, cols = np.tril_indices(d, -1)
    chol[rows, cols] = vector[d:]
    return chol


class Mixture:
    """Mixture parameters ↔ an unconstrained vector (logits, means, Cholesky factors
    with log diagonal, or log variances)."""

    def __init__(self, k: int, d: int, ctype: str) -> None:
        self.k, self.d, self.ctype = k, d, ctype
        self.cov_size = d * (d + 1) // 2 if ctype == "full" else d

    def to_vector(self, weights, means, covs) -> np.ndarray:
        parts = [np.log(weights), means.ravel()]
        for cov in covs:
            parts.append(
                lower_vector(np.linalg.cholesky(cov))
                if self.ctype == "full"
                else np.log(np.diag(cov))
            )
        return np.concatenate(parts)

    def from_vector(self, theta: np.ndarray):
        k, d = self.k, self.d
        weights = softmax(theta[:k])
        means = theta[k : k + k * d].reshape(k, d)
        blocks = theta[k + k * d :].reshape(k, self.cov_size)
        if self.ctype == "full":
            covs = np.stack([(c := lower_from(b, d)) @ c.T for b in blocks])
        else:
            covs = np.stack([np.diag(np.exp(b)) for b in blocks])
        return weights, means, covs

    def mean_loglik(self, theta: np.ndarray, x: np.ndarray) -> float:
        return float(observed_loglik(x, *self.from_vector(theta)).mean())


def converged(k: int, ctype: str, **options) -> dem.GaussianMixture:
    settings = {
        "covariance_type": ctype,
        "missing": "marginalize",
        "reg_covar": 0.0,
        "tol": 1e-13,
        "max_iter": 3000,
        "random_state": 0,
        **options,
    }
    return dem.GaussianMixture(k, **settings)


# --- the optimum of the observed-data likelihood -------------------------------------


@pytest.mark.parametrize("ctype", ["full", "diag"])
@pytest.mark.parametrize("accelerate", ["none", "squarem"])
def test_one_component_is_the_direct_maximum_of_the_observed_likelihood(ctype, accelerate):
    x = mixture_data(160, 3, 1, 0.3, seed=1, spread=1.0)
    fitted = converged(1, ctype, accelerate=accelerate).fit(x)
    assert fitted.converged_

    shape = Mixture(1, 3, ctype)
    start = shape.to_vector(
        np.ones(1), np.nanmean(x, axis=0)[None], np.diag(np.nanvar(x, axis=0))[None]
    )
    found = optimize.minimize(
        lambda t: -shape.mean_loglik(t, x),
        start,
        method="BFGS",
        jac="3-point",
        options={"gtol": 1e-11, "maxiter": 2000},
    )
    _, means, covs = shape.from_vector(found.x)
    ours = dense_covariances(fitted.covariances_, ctype, 1, 3)
    np.testing.assert_allclose(fitted.means_, means, atol=1e-5)
    np.testing.assert_allclose(ours, covs, atol=1e-5)
    best = -found.fun * len(x)
    assert abs(fitted.score(x) * len(x) - best) <= 1e-8 * abs(best)
    assert abs(fitted.lower_bound_ - fitted.score(x)) <= 1e-10 * abs(best)


@pytest.mark.parametrize("ctype", ["full", "diag"])
def test_several_components_end_at_a_local_optimum_of_the_observed_likelihood(ctype):
    x = mixture_data(300, 3, 3, 0.25, seed=2)
    fitted = converged(3, ctype).fit(x)
    assert fitted.converged_
    shape = Mixture(3, 3, ctype)
    ours = dense_covariances(fitted.covariances_, ctype, 3, 3)
    start = shape.to_vector(fitted.weights_, fitted.means_, ours)
    at_ours = shape.mean_loglik(start, x)
    np.testing.assert_allclose(at_ours, fitted.score(x), rtol=1e-12)
    found = optimize.minimize(
        lambda t: -shape.mean_loglik(t, x),
        start,
        method="L-BFGS-B",
        jac="3-point",
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 500},
    )
    assert -found.fun - at_ours < 1e-6  # gain per row
    step = 1e-5  # central differences: the gradient of the mean log-likelihood vanishes
    gradient = [
        (shape.mean_loglik(start + step * e, x) - shape.mean_loglik(start - step * e, x))
        / (2 * step)
        for e in np.eye(len(start))
    ]
    assert np.abs(gradient).max() < 1e-6


@pytest.mark.parametrize("ctype", ["full", "tied", "diag", "spherical"])
def test_loglik_never_decreases(ctype):
    x = mixture_data(240, 4, 3, 0.3, seed=3)
    trace: list[float] = []
    fitted = dem.GaussianMixture(
        3,
        covariance_type=ctype,
        missing="marginalize",
        tol=0.0,
        max_iter=25,
        random_state=0,
        callback=lambda info: trace.append(info.loglik),
    ).fit(x)
    assert len(trace) == 25 and np.allclose(trace, fitted.lower_bounds_)
    assert np.diff(trace).min() >= -1e-12 * abs(trace[-1])


# --- agreement with the complete-data fit and across chunkings --------------------------


@pytest.mark.parametrize("ctype", ["full", "tied", "diag", "spherical"])
def test_one_or_three_chunks_agree_to_round_off(ctype):
    x = mixture_data(300, 4, 2, 0.25, seed=4)
    fits = [
        dem.GaussianMixture(
            2,
            covariance_type=ctype,
            missing="marginalize",
            tol=0.0,
            max_iter=8,
            random_state=0,
            init_params="k-means++",
        ).fit(da.from_array(x, chunks=(rows, 4)))
        for rows in (300, 100)
    ]
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(fits[0], name), getattr(fits[1], name), rtol=1e-10)
    np.testing.assert_allclose(fits[0].lower_bounds_, fits[1].lower_bounds_, rtol=1e-12)


@pytest.mark.parametrize("ctype", ["full", "tied", "diag", "spherical"])
def test_complete_data_fit_as_without_the_option(ctype):
    x = mixture_data(240, 3, 2, 0.0, seed=5)
    fits = [
        dem.GaussianMixture(
            2, covariance_type=ctype, missing=missing, tol=0.0, max_iter=6, random_state=0
        ).fit(x)
        for missing in ("raise", "marginalize")
    ]
    for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
        np.testing.assert_allclose(getattr(fits[0], name), getattr(fits[1], name), rtol=1e-13)


def test_nan_is_refused_by_default():
    x = mixture_data(100, 3, 1, 0.2)
    with pytest.raises(ValueError, match="NaN"):
        dem.GaussianMixture(1).fit(x)


# --- per-sample functions -------------------------------------------------------------


def test_impute_of_one_component_is_the_conditional_normal_mean():
    x = mixture_data(200, 4, 1, 0.3, seed=6, spread=1.0)
    fitted = dem.GaussianMixture(1, missing="marginalize", random_state=0).fit(x)
    expected = np.stack(
        [conditional_mean(row, fitted.means_[0], fitted.covariances_[0]) for row in x]
    )
    imputed = fitted.impute(x)
    np.testing.assert_allclose(imputed, expected, rtol=1e-10, atol=1e-12)
    observed = ~np.isnan(x)
    assert np.array_equal(imputed[observed], x[observed])
    lazy = fitted.impute(da.from_array(x, chunks=(70, 4)))
    assert isinstance(lazy, da.Array)
    np.testing.assert_allclose(lazy.compute(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("ctype", ["full", "tied", "diag", "spherical"])
def test_per_sample_functions_use_the_observed_marginals(ctype):
    x = mixture_data(200, 4, 3, 0.3, seed=7)
    x[5] = np.nan  # nothing observed: the prior
    with pytest.warns(UnobservedRowsWarning, match="^1 row"):
        fitted = dem.GaussianMixture(
            3, covariance_type=ctype, missing="marginalize", random_state=0, max_iter=20
        ).fit(x)
    covs = dense_covariances(fitted.covariances_, ctype, 3, 4)
    log_dens = component_log_densities(x, fitted.means_, covs) + np.log(fitted.weights_)
    log_dens[5] = np.log(fitted.weights_)
    resp = softmax(log_dens, axis=1)
    np.testing.assert_allclose(fitted.predict_proba(x), resp, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        fitted.score_samples(x), logsumexp(log_dens, axis=1), rtol=1e-10, atol=1e-12
    )
    assert np.array_equal(fitted.predict(x), resp.argmax(axis=1))
    seen = np.ones(len(x), bool)
    seen[5] = False
    np.testing.assert_allclose(
        fitted.score(x), logsumexp(log_dens[seen], axis=1).mean(), rtol=1e-10
    )
    # E[x_m | x_o] = Σ_k r_k (μ_k,m + Σ_k,mo Σ_k,oo⁻¹ (x_o − μ_k,o))
    expected = np.stack(
        [
            sum(resp[i, k] * conditional_mean(row, fitted.means_[k], covs[k]) for k in range(3))
            if i != 5
            else fitted.weights_ @ fitted.means_
            for i, row in enumerate(x)
        ]
    )
    np.testing.assert_allclose(fitted.impute(x), expected, rtol=1e-9, atol=1e-12)


# --- rows with nothing observed, weights -------------------------------------------------


def test_rows_with_nothing_observed_count_in_one_warning_and_change_nothing():
    x = mixture_data(200, 3, 2, 0.2, seed=8)
    padded = np.vstack([x, np.full((4, 3), np.nan)])
    options = {"missing": "marginalize", "tol": 0.0, "max_iter": 5, "random_state": 0}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitted = dem.GaussianMixture(2, n_init=2, **options).fit(padded)
    messages = [str(w.message) for w in caught if issubclass(w.category, UnobservedRowsWarning)]
    assert len(messages) == 1 and messages[0].startswith("4 row(s)")
    reference = dem.GaussianMixture(2, n_init=2, **options).fit(x)
    for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
        np.testing.assert_allclose(getattr(fitted, name), getattr(reference, name), rtol=1e-11)


def test_integer_weights_repeat_rows_and_zero_weights_drop_them():
    x = mixture_data(120, 3, 2, 0.3, seed=9)
    counts = np.random.default_rng(0).integers(0, 4, size=len(x))
    start = dem.GaussianMixture(2, missing="marginalize", max_iter=2, random_state=0).fit(x)
    for ctype in ("full", "diag"):
        model = MarginalMixtureModel(2, ctype, 1e-6)
        fitted = dem.GaussianMixture(
            2, covariance_type=ctype, missing="marginalize", max_iter=2, random_state=0
        ).fit(x)
        params = {
            "weights": fitted.weights_,
            "means": fitted.means_,
            "covariances": fitted.covariances_,
            "precisions_cholesky": fitted.precisions_cholesky_,
            "shift": start.means_.mean(axis=0),
        }
        options = {"tol": 0.0, "max_iter": 4}
        weighted = engine.fit(
            model,
            {
                "X": da.from_array(x, chunks=(40, 3)),
                "sample_weight": da.from_array(counts.astype(float), chunks=40),
            },
            lambda p=params: dict(p),
            **options,
        )
        repeated = engine.fit(
            model,
            {"X": da.from_array(np.repeat(x, counts, axis=0), chunks=(50, 3))},
            lambda p=params: dict(p),
            **options,
        )
        for name in ("weights", "means", "covariances"):
            np.testing.assert_allclose(
                weighted.params[name], repeated.params[name], rtol=1e-8, atol=1e-12
            )
        np.testing.assert_allclose(weighted.lower_bounds, repeated.lower_bounds, rtol=1e-10)


# --- checkpoints, restarts, the command line ---------------------------------------------


@pytest.mark.filterwarnings("ignore:Checkpoint .* without converging:UserWarning")
def test_checkpoint_resume_and_restore(tmp_path: Path):
    x = mixture_data(240, 3, 2, 0.25, seed=10)
    options = {"missing": "marginalize", "tol": 0.0, "random_state": 0, "n_init": 2}
    whole = dem.GaussianMixture(2, max_iter=8, **options).fit(x)
    path = tmp_path / "fit.zarr"
    dem.GaussianMixture(2, max_iter=3, checkpoint=path, **options).fit(x)
    resumed = dem.GaussianMixture(2, max_iter=8, checkpoint=path, resume=True, **options).fit(x)
    for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(whole, name))
    restored = from_checkpoint(path)
    assert restored.missing == "marginalize"
    np.testing.assert_array_equal(restored.predict_proba(x), whole.predict_proba(x))
    with pytest.raises(ValueError):  # another configuration: not this checkpoint's fit
        dem.GaussianMixture(
            2, max_iter=8, checkpoint=path, resume=True, **{**options, "missing": "raise"}
        ).fit(np.nan_to_num(x))


@pytest.mark.filterwarnings("ignore::dem.models.mixture.missing.UnobservedRowsWarning")
def test_command_line(process_client, tmp_path: Path):
    data, checkpoint = tmp_path / "data.zarr", tmp_path / "fit.zarr"
    runner = CliRunner()

    def invoke(*args) -> str:
        result = runner.invoke(app, [os.fspath(a) for a in args])
        assert result.exit_code == 0, result.output
        return result.output

    invoke("synth", "gmm", data, "-n", "600", "-d", "3", "-k", "2", "--missing", "0.2")
    scheduler = ("--scheduler", process_client.scheduler.address)
    invoke(
        "fit",
        "gmm",
        data,
        "--var",
        "X",
        "-k",
        "2",
        "--missing",
        "marginalize",
        "--checkpoint",
        checkpoint,
        *scheduler,
    )
    restored = from_checkpoint(checkpoint)
    reference = dem.GaussianMixture(2, missing="marginalize", random_state=0).fit(
        os.fspath(data), variable="X"
    )
    np.testing.assert_allclose(restored.means_, reference.means_, rtol=1e-10)
    out = tmp_path / "labels.zarr"
    invoke("predict", checkpoint, data, "--var", "X", "--out", out, *scheduler)
    x = zarr.open_group(data, mode="r")["X"][:]
    assert np.isnan(x).any()
    labels = zarr.open_group(out, mode="r")["labels"][:]
    assert np.array_equal(labels, reference.predict(x))


def test_precision_of_float32_input():
    x = mixture_data(200, 3, 2, 0.25, seed=11)
    fits = [
        dem.GaussianMixture(2, missing="marginalize", tol=0.0, max_iter=5, random_state=0).fit(
            x.astype(dtype)
        )
        for dtype in (np.float64, np.float32)
    ]
    np.testing.assert_allclose(fits[0].means_, fits[1].means_, rtol=1e-4, atol=1e-5)


# --- the E-step kernels against a naive per-row reference ------------------------------


def kernel_case(ctype: str, seed: int = 5):
    """Rows of d=10 with 0 to 10 missing values each (every count about equally often,
    so that large missing blocks, and rows with nothing observed, are many), random
    weights, and parameters of the given covariance type about a shift."""
    rng = np.random.default_rng(seed)
    n, d, k = 660, 10, 3
    x = rng.normal(size=(n, d)) * 2.0 + rng.normal(size=d)
    counts = rng.integers(0, d + 1, size=n)
    for row, count in enumerate(counts):
        x[row, rng.choice(d, size=count, replace=False)] = np.nan
    covariances = {
        "full": np.stack([(a := rng.normal(size=(d, d))) @ a.T / d + np.eye(d) for _ in range(k)]),
        "tied": (a := rng.normal(size=(d, d))) @ a.T / d + np.eye(d),
        "diag": rng.uniform(0.5, 2.0, size=(k, d)),
        "spherical": rng.uniform(0.5, 2.0, size=k),
    }[ctype]
    params = {
        "weights": rng.dirichlet(np.ones(k)),
        "means": rng.normal(size=(k, d)),
        "covariances": covariances,
        "precisions_cholesky": gaussian.precision_cholesky(covariances, ctype),
        "shift": rng.normal(size=d),
    }
    return x, rng.uniform(0.0, 3.0, size=n), params


def naive_statistics(x, weight, params, ctype):
    """The expected sufficient statistics about the shift, row by row: scipy's normal
    density of the observed coordinates, the conditional mean and covariance of the
    missing ones by solving with Σ_oo; rows with nothing observed left out."""
    k, d = params["means"].shape
    covs = dense_covariances(params["covariances"], ctype, k, d)
    shift = params["shift"]
    stats = {
        "n": 0.0,
        "loglik": 0.0,
        "resp_sum": np.zeros(k),
        "sum_x": np.zeros((k, d)),
        "scatter": np.zeros((k, d, d)),
        "n_unobserved": 0.0,
    }
    for row, w in zip(x, weight, strict=True):
        o = ~np.isnan(row)
        if not o.any():
            stats["n_unobserved"] += 1.0
            continue
        m = ~o
        log_dens = np.log(params["weights"]) + [
            multivariate_normal(mean[o], cov[np.ix_(o, o)]).logpdf(row[o])
            for mean, cov in zip(params["means"], covs, strict=True)
        ]
        resp = softmax(log_dens)
        stats["n"] += w
        stats["loglik"] += w * logsumexp(log_dens)
        stats["resp_sum"] += w * resp
        for j, (mean, cov) in enumerate(zip(params["means"], covs, strict=True)):
            expected = row.copy()
            conditional = np.zeros((d, d))
            if m.any():
                gain = np.linalg.solve(cov[np.ix_(o, o)], cov[np.ix_(o, m)]).T
                expected[m] = mean[m] + gain @ (row[o] - mean[o])
                conditional[np.ix_(m, m)] = cov[np.ix_(m, m)] - gain @ cov[np.ix_(o, m)]
            centred = expected - shift
            stats["sum_x"][j] += w * resp[j] * centred
            stats["scatter"][j] += w * resp[j] * (np.outer(centred, centred) + conditional)
    if ctype == "tied":
        stats["scatter"] = stats["scatter"].sum(axis=0)
    elif ctype in ("diag", "spherical"):
        stats["scatter"] = np.diagonal(stats["scatter"], axis1=1, axis2=2)
    return stats


@pytest.mark.parametrize("route", ["default", "small pieces"])
@pytest.mark.parametrize("ctype", ["full", "tied", "diag", "spherical"])
def test_e_step_matches_a_naive_per_row_reference(ctype, route, monkeypatch):
    """Every statistic of a chunk (weighted and not) against the row-by-row reference:
    with rows of 0 to 10 missing values of 10, so that the closed forms (1 and 2 missing
    values), the unrolled factorisations, LAPACK and unobserved rows all take part;
    "small pieces" also walks the chunk in several blocks and groups in several pieces
    and sends every group beyond 4 missing values of fewer than 200 rows to LAPACK."""
    if route == "small pieces":
        monkeypatch.setattr(missing_kernels, "PIECE_ELEMENTS", 40)
        monkeypatch.setattr(missing_kernels, "LAPACK_ROWS", 200)
        monkeypatch.setattr(missing_module, "block_rows", lambda n_components: 100)
    else:
        monkeypatch.setattr(missing_kernels, "LAPACK_ROWS", 0)  # unrolled up to 8
    x, weight, params = kernel_case(ctype)
    model = MarginalMixtureModel(3, ctype)
    for block, w in (({"X": x}, np.ones(len(x))), ({"X": x, "sample_weight": weight}, weight)):
        ours = model.e_step(block, params)
        expected = naive_statistics(x, w, params, ctype)
        assert ours.keys() == expected.keys()
        for key, value in expected.items():
            np.testing.assert_allclose(ours[key], value, rtol=1e-10, atol=1e-10, err_msg=key)
