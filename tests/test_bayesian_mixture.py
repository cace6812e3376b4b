"""The variational Gaussian mixture against scikit-learn's ``BayesianGaussianMixture``.

From the same initial responsibilities (scikit-learn's ``init_params="random"`` draws
them from its ``random_state``; dem is given the same array as ``resp_init``) every
fitted attribute, the lower bound of every iteration and the per-sample methods must
equal scikit-learn's to 1e-8 relative after 1 and 30 iterations, for the four covariance
types and both weight priors, on numpy input and on many-chunk dask input, and on a
cluster of worker processes. The lower bound's monotonicity, chunk invariance and
bit-identical resumption run in the contract suite (``tests/contract``, rows ``bgmm-*``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import BayesianGaussianMixture as SklearnBGMM

import dem
from dem.models.bayesian_mixture import init
from dem.models.bayesian_mixture.model import BayesianMixtureModel
from tests.conftest import COVARIANCE_TYPES, make_blobs

PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")
K = 5
SEED = 3
RTOL = 1e-8

ATTRIBUTES = (
    "weights_",
    "means_",
    "covariances_",
    "precisions_",
    "precisions_cholesky_",
    "mean_precision_",
    "degrees_of_freedom_",
    "mean_prior_",
    "covariance_prior_",
    "weight_concentration_prior_",
    "mean_precision_prior_",
    "degrees_of_freedom_prior_",
    "lower_bound_",
    "n_iter_",
)


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return make_blobs(n_per=100, seed=4)  # 600 rows, three clusters, d=3


def sklearn_fit(x: np.ndarray, max_iter: int, **options) -> SklearnBGMM:
    model = SklearnBGMM(
        n_components=K, init_params="random", random_state=SEED, max_iter=max_iter, tol=0, **options
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(x)


def sklearn_resp(n_samples: int) -> np.ndarray:
    """The responsibilities scikit-learn's ``init_params="random"`` draws."""
    resp = np.random.RandomState(SEED).uniform(size=(n_samples, K))
    return resp / resp.sum(axis=1)[:, np.newaxis]


def dem_fit(x, max_iter: int, **options) -> dem.BayesianGaussianMixture:
    model = dem.BayesianGaussianMixture(
        K, resp_init=sklearn_resp(len(x)), max_iter=max_iter, tol=0, **options
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        return model.fit(x)


def assert_equal_fits(ours, theirs, x: np.ndarray) -> None:
    for name in ATTRIBUTES:
        np.testing.assert_allclose(
            np.asarray(getattr(ours, name), dtype=float),
            np.asarray(getattr(theirs, name), dtype=float),
            rtol=RTOL,
            atol=0,
            err_msg=name,
        )
    np.testing.assert_allclose(
        np.asarray(ours.weight_concentration_), np.asarray(theirs.weight_concentration_), rtol=RTOL
    )
    assert isinstance(ours.weight_concentration_, tuple) == isinstance(
        theirs.weight_concentration_, tuple
    )
    # scikit-learn's tied lower bounds are 1-vectors
    bounds = np.array([float(np.ravel(b)[0]) for b in theirs.lower_bounds_])
    np.testing.assert_allclose(ours.lower_bounds_, bounds, rtol=1e-10)
    np.testing.assert_allclose(
        np.asarray(ours.predict_proba(x)), theirs.predict_proba(x), rtol=0, atol=1e-10
    )
    np.testing.assert_allclose(
        np.asarray(ours.score_samples(x)), theirs.score_samples(x), rtol=1e-10
    )
    np.testing.assert_array_equal(np.asarray(ours.predict(x)), theirs.predict(x))
    assert ours.score(x) == pytest.approx(theirs.score(x), rel=1e-10)


@pytest.mark.parametrize("chunked", [False, True], ids=["numpy", "17-chunks"])
@pytest.mark.parametrize("n_iter", [1, 30])
@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_iterations_equal_scikit_learn(x, covariance_type, prior_type, n_iter, chunked):
    """After 1 and 30 iterations, on numpy input and on 17 dask chunks (the last short)
    summed by a tree of fan-in 3."""
    options = {"covariance_type": covariance_type, "weight_concentration_prior_type": prior_type}
    data = da.from_array(x, chunks=(37, 3)) if chunked else x
    ours = dem_fit(data, n_iter, split_every=3, **options)
    assert_equal_fits(ours, sklearn_fit(x, n_iter, **options), x)
    assert np.all(np.diff(ours.lower_bounds_) >= -1e-12 * np.abs(ours.lower_bounds_[1:]))


def test_given_priors_equal_scikit_learn(x):
    """Every prior set by the user (no pass for the data's defaults is then needed)."""
    options = {
        "covariance_type": "full",
        "weight_concentration_prior": 0.05,
        "mean_precision_prior": 0.3,
        "mean_prior": np.array([0.5, -0.2, 1.0]),
        "degrees_of_freedom_prior": 4.5,
        "covariance_prior": np.diag([2.0, 1.0, 0.5]) + 0.1,
    }
    assert_equal_fits(dem_fit(x, 12, **options), sklearn_fit(x, 12, **options), x)
    for ctype, prior in (("diag", np.array([1.0, 2.0, 0.5])), ("spherical", 1.7)):
        options = {"covariance_type": ctype, "covariance_prior": prior, "mean_precision_prior": 2}
        assert_equal_fits(dem_fit(x, 5, **options), sklearn_fit(x, 5, **options), x)


def test_convergence_stops_where_scikit_learn_stops(x):
    """tol on scikit-learn's total lower bound: the same iteration count and converged_."""
    theirs = SklearnBGMM(n_components=K, init_params="random", random_state=SEED, tol=1e-3)
    theirs.fit(x)
    ours = dem.BayesianGaussianMixture(K, resp_init=sklearn_resp(len(x)), tol=1e-3).fit(x)
    assert theirs.converged_ and ours.converged_ and ours.n_iter_ == theirs.n_iter_
    np.testing.assert_allclose(ours.means_, theirs.means_, rtol=RTOL)


# --- behaviour on its own -------------------------------------------------------------------


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
def test_a_generous_n_components_shrinks_to_the_clusters(prior_type):
    rng = np.random.default_rng(7)
    truth = rng.choice(3, size=1800, p=[0.2, 0.3, 0.5])
    centres = np.array([[0.0, 0.0, 0.0], [4.0, 4.0, 0.0], [-4.0, 2.0, 3.0]])
    x = centres[truth] + rng.standard_normal((1800, 3)) @ np.diag([1.0, 0.6, 0.8])
    fitted = dem.BayesianGaussianMixture(
        10,
        weight_concentration_prior_type=prior_type,
        weight_concentration_prior=1e-3,
        max_iter=500,
        random_state=0,
        init_params="kmeans",
    ).fit(x)
    assert fitted.converged_
    assert int(np.sum(fitted.weights_ > 0.02)) == 3, fitted.weights_
    assert adjusted_rand_score(truth, fitted.predict(x)) > 0.9


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample_draws_the_mixture_of_the_fitted_weights_means_and_covariances(x, covariance_type):
    """As scikit-learn's ``sample``: component counts multinomial in ``weights_``, each
    component's rows Gaussian with ``means_[k]`` and ``covariances_[k]``."""
    fitted = dem_fit(x, 30, covariance_type=covariance_type)
    drawn, labels = fitted.sample(60_000, random_state=0)
    assert drawn.shape == (60_000, 3) and labels.shape == (60_000,)
    full = {
        "full": lambda c: fitted.covariances_[c],
        "tied": lambda c: fitted.covariances_,
        "diag": lambda c: np.diag(fitted.covariances_[c]),
        "spherical": lambda c: np.eye(3) * fitted.covariances_[c],
    }[covariance_type]
    counts = np.bincount(labels, minlength=K)
    expected = 60_000 * fitted.weights_
    assert np.all(np.abs(counts - expected) <= 5 * np.sqrt(expected) + 1), (counts, expected)
    for c in np.flatnonzero(counts > 2_000):
        rows = drawn[labels == c]
        spread = np.sqrt(np.diag(full(c)))
        np.testing.assert_allclose(
            rows.mean(axis=0), fitted.means_[c], atol=5 * spread.max() / np.sqrt(len(rows))
        )
        np.testing.assert_allclose(
            np.cov(rows.T), full(c), atol=6 * spread.max() ** 2 / np.sqrt(len(rows))
        )
    again, _ = fitted.sample(100, random_state=0)
    np.testing.assert_array_equal(again, fitted.sample(100, random_state=0)[0])
    with pytest.raises(ValueError, match="n_samples"):
        fitted.sample(0)


def test_sample_initialisation_counts_every_row():
    """Statistics from a row sample are scaled to the number of rows of the data."""
    x = make_blobs(n_per=200, seed=1)
    model = BayesianMixtureModel(3, "diag")
    rng = np.random.default_rng(0)
    stats, _ = init.sample_statistics(model, x[:300], len(x), rng, "kmeans")
    assert stats["resp_sum"].sum() == pytest.approx(len(x))
    fitted = dem.BayesianGaussianMixture(
        3, covariance_type="diag", init_sample_size=300, max_iter=50, random_state=0
    ).fit(x)
    assert fitted.weight_concentration_[0].sum() == pytest.approx(len(x) + 3, rel=1e-9)


def test_kmeans_parallel_start_and_restarts():
    x = make_blobs(n_per=300, seed=2)
    one = dem.BayesianGaussianMixture(
        6, init_params="k-means||", random_state=0, max_iter=200, n_init=2
    )
    one.fit(da.from_array(x, chunks=(300, 3)))
    assert one.converged_ and int(np.sum(one.weights_ > 0.02)) == 3
    assert one.lower_bound_ == max(one.lower_bounds_[-1:])


def test_checkpoint_round_trip_and_from_checkpoint(x, tmp_path: Path):
    for ctype in ("tied", "spherical"):  # a scalar degrees of freedom, a scalar prior
        path = tmp_path / f"{ctype}.zarr"
        fitted = dem.BayesianGaussianMixture(
            4, covariance_type=ctype, random_state=0, max_iter=20, checkpoint=path
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # not converged: the fit and its restoration say so
            fitted.fit(x)
            restored = dem.from_checkpoint(path)
        assert type(restored) is dem.BayesianGaussianMixture
        assert restored.lower_bounds_ == fitted.lower_bounds_
        for name in ATTRIBUTES:
            np.testing.assert_array_equal(getattr(restored, name), getattr(fitted, name), name)
        np.testing.assert_array_equal(restored.predict_proba(x), fitted.predict_proba(x))
        assert dem.load_checkpoint(path)["loglik"].values[-1] == fitted.lower_bound_


class Interrupt(Exception):
    pass


@pytest.mark.parametrize(
    "options",
    [
        {"covariance_type": "tied", "weight_concentration_prior_type": "dirichlet_distribution"},
        {"covariance_type": "spherical", "n_init": 2},
        {"covariance_type": "diag", "init_params": "k-means||", "n_init": 2},
    ],
    ids=["tied-dirichlet", "spherical-restarts", "diag-kmeans-parallel-restarts"],
)
def test_resume_after_an_interruption_gives_the_same_bits(x, tmp_path: Path, options):
    """The contract suite resumes the default variant; these are the variants whose
    parameters have other shapes (a scalar ν for tied, the Dirichlet's concentrations),
    restarts, and a start that takes passes of its own (k-means‖)."""
    from tests.contract.models import fitted_arrays

    def fit(path: Path, **more) -> dem.BayesianGaussianMixture:
        model = dem.BayesianGaussianMixture(
            4, max_iter=6, tol=0, random_state=0, checkpoint=path, **options, **more
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dem.ConvergenceWarning)
            return model.fit(da.from_array(x, chunks=(150, 3)))

    def stop(info) -> None:
        if info.iteration == 3:
            raise Interrupt

    whole = fit(tmp_path / "whole.zarr")
    with pytest.raises(Interrupt):
        fit(tmp_path / "cut.zarr", callback=stop)
    seen: list = []
    resumed = fit(tmp_path / "cut.zarr", resume=True, callback=seen.append)
    # resumed after iteration 3 (SQUAREM: after its last complete cycle), not restarted
    assert seen[0].run == 0 and seen[0].iteration >= 4
    expected = fitted_arrays(whole)
    assert expected.keys() == fitted_arrays(resumed).keys() and "means_" in expected
    for name, value in expected.items():
        np.testing.assert_array_equal(getattr(resumed, name), value, err_msg=name)
    for ours, theirs in zip(
        np.atleast_2d(resumed.weight_concentration_),
        np.atleast_2d(whole.weight_concentration_),
        strict=True,
    ):
        np.testing.assert_array_equal(ours, theirs)
    cycles = 2 if options.get("accelerate") == "squarem" else 6  # SQUAREM: 3 passes a cycle
    assert resumed.lower_bounds_ == whole.lower_bounds_ and len(whole.lower_bounds_) == cycles


def test_invalid_settings_are_refused(x):
    with pytest.raises(ValueError, match="degrees_of_freedom_prior"):
        dem.BayesianGaussianMixture(2, degrees_of_freedom_prior=1.5).fit(x)
    with pytest.raises(ValueError, match="covariance_prior must have shape"):
        dem.BayesianGaussianMixture(2, covariance_type="diag", covariance_prior=np.eye(3)).fit(x)
    with pytest.raises(ValueError, match="positive-definite"):
        dem.BayesianGaussianMixture(2, covariance_prior=-np.eye(3) + 2 * np.ones((3, 3))).fit(x)
    with pytest.raises(ValueError, match="mean_prior"):
        dem.BayesianGaussianMixture(2, mean_prior=[0.0, 1.0]).fit(x)
    with pytest.raises(ValueError, match="resp_init must have shape"):
        dem.BayesianGaussianMixture(2, resp_init=np.ones((10, 2))).fit(x)
    with pytest.raises(ValueError, match="non-negative"):
        dem.BayesianGaussianMixture(2, resp_init=-np.ones((len(x), 2))).fit(x)
    with pytest.raises(ValueError, match="n_samples"):
        dem.BayesianGaussianMixture(2).fit(x[:1])
    assert "accelerate" not in dem.BayesianGaussianMixture().get_params()


# --- on worker processes (last: the cluster stays the default client) ----------------------


def test_equal_to_scikit_learn_on_worker_processes(x, process_client):
    options = {"covariance_type": "full", "weight_concentration_prior_type": "dirichlet_process"}
    ours = dem_fit(da.from_array(x, chunks=(200, 3)), 10, **options)
    assert_equal_fits(ours, sklearn_fit(x, 10, **options), x)


def test_cli_fit_bgmm(process_client, tmp_path: Path):
    """``dem synth bgmm``, ``dem fit bgmm``, ``dem show`` and ``dem predict`` on worker
    processes, equal to the library."""
    import zarr
    from typer.testing import CliRunner

    from dem.cli import app

    def invoke(*args) -> tuple[int, str]:
        result = CliRunner().invoke(app, [os.fspath(a) for a in args])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.output

    data, checkpoint = tmp_path / "data.zarr", tmp_path / "fit.zarr"
    code, output = invoke(
        "synth", "bgmm", data, "-n", "2000", "-d", "3", "-k", "3", "--separation", "3",
        "--chunk-rows", "500", "--seed", "1",
    )  # fmt: skip
    assert code == 0, output
    scheduler = ("--scheduler", process_client.scheduler.address)
    code, output = invoke(
        "fit", "bgmm", data, "--var", "X", "-k", "6", "--covariance-type", "diag",
        "--weight-concentration-prior", "0.01", "--max-iter", "15", "--checkpoint", checkpoint,
        *scheduler,
    )  # fmt: skip
    assert code == 0, output
    reference = dem.BayesianGaussianMixture(
        6, covariance_type="diag", weight_concentration_prior=0.01, max_iter=15, random_state=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 15 iterations: not converged, and restored so
        reference.fit(data, variable="X")
        restored = dem.from_checkpoint(checkpoint)
    assert restored.n_iter_ == reference.n_iter_
    np.testing.assert_allclose(restored.means_, reference.means_, rtol=1e-10)
    code, output = invoke("show", checkpoint)
    assert code == 0 and "bayesian_gaussian_mixture" in output, output

    out = tmp_path / "out.zarr"
    code, output = invoke("predict", checkpoint, data, "--var", "X", "--out", out, *scheduler)
    assert code == 0, output
    group = zarr.open_group(out, mode="r")
    x = zarr.open_group(data, mode="r")["X"][:]
    assert group["labels"].chunks == (500,)
    np.testing.assert_array_equal(group["labels"][:], reference.predict(x))
    np.testing.assert_allclose(group["probabilities"][:], reference.predict_proba(x), atol=1e-9)
    np.testing.assert_allclose(group["score"][:], reference.score_samples(x), rtol=1e-9)
