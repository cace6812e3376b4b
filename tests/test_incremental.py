"""Incremental EM (Neal & Hinton 1998): the batch optimum from the same start, a
non-decreasing trace, grouping that changes only the path, and resumes of the same bits."""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import numpy as np
import pytest
from hmmlearn.hmm import CategoricalHMM, GaussianHMM
from scipy import optimize
from scipy.stats import multivariate_normal, norm
from sklearn.mixture import GaussianMixture as SklearnMixture

import dem
from dem import engine
from dem.checkpoint import Checkpoint
from dem.models.censored.model import CensoredModel
from dem.models.factor_mixture.model import FactorMixtureModel
from dem.models.hmm.gmm import GMMHMMModel
from dem.models.hmm.long import LongHMMModel
from dem.models.hmm.model import CategoricalHMMModel, GaussianHMMModel
from dem.models.mixture.model import MixtureModel
from dem.models.ppca.model import LinearGaussianModel
from tests.conftest import initial_parameters, make_blobs

TIGHT = {"tol": 1e-15, "max_iter": 3000}


@pytest.fixture(scope="module")
def mixture():
    """Overlapping blobs (EM crawls there), 8 chunks, and a shared start."""
    x = make_blobs(n_per=300, seed=3, offset=-1.2)
    return x, initial_parameters(x, 3, "full")


def _fit(x, init, chunks=225, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a capped fit's ConvergenceWarning
        return dem.GaussianMixture(3, **{**TIGHT, **options}, **init).fit(
            da.from_array(x, chunks=(chunks, -1))
        )


def _assert_same_optimum(ours, reference, x):
    assert ours.score(x) == pytest.approx(reference.score(x), rel=1e-8)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(reference, name), atol=1e-6)


def test_mixture_reaches_the_batch_optimum_and_scikit_learns(mixture):
    x, init = mixture
    batch = _fit(x, init)
    ours = _fit(x, init, method="incremental", incremental_chunks=1)
    assert ours.converged_ and batch.converged_
    _assert_same_optimum(ours, batch, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0: scikit-learn runs to its fixed point
        reference = SklearnMixture(3, tol=0.0, max_iter=400, **init).fit(x)
    _assert_same_optimum(ours, reference, x)
    assert ours.n_iter_ < batch.n_iter_


@pytest.mark.parametrize("reg_covar", [1e-6, 0.0])
def test_the_reported_free_energy_never_decreases(mixture, reg_covar):
    """What is reported is Neal & Hinton's free energy after each pass: at least the
    initial log-likelihood (batch EM's first value), at most the log-likelihood after
    one batch EM step (F <= the log-likelihood at the same parameters, and one pass of
    incremental EM starts as one batch step), never falling (to rounding: measured
    2.4e-14 once), and the log-likelihood of the fit at the end."""
    x, init = mixture
    batch = _fit(x, init, max_iter=2, reg_covar=reg_covar)
    for group in (1, 2, 3):
        ours = _fit(x, init, method="incremental", incremental_chunks=group, reg_covar=reg_covar)
        trace = np.array(ours.lower_bounds_)
        assert batch.lower_bounds_[0] < trace[0] < batch.lower_bounds_[1]
        assert np.diff(trace).min() > -1e-13
        assert trace[-1] - trace[0] > 0.1
        assert trace[-1] == pytest.approx(ours.score(x), rel=1e-13)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_expected_complete_loglik_is_scipys(covariance_type):
    """The free energy's term from statistics about a shift, against Σ r log(w N(x))
    with scipy's densities and scikit-learn's responsibilities."""
    x = make_blobs(n_per=60, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = SklearnMixture(3, covariance_type=covariance_type, max_iter=2, random_state=0)
        fitted.fit(x)
    params = {
        "weights": fitted.weights_,
        "means": fitted.means_,
        "covariances": fitted.covariances_,
        "precisions_cholesky": fitted.precisions_cholesky_,
        "shift": x.mean(axis=0) + 0.3,
    }
    model = MixtureModel(3, covariance_type)
    stats = model.e_step({"X": x}, params)
    resp = fitted.predict_proba(x)
    covariances = {
        "full": lambda k: fitted.covariances_[k],
        "tied": lambda k: fitted.covariances_,
        "diag": lambda k: np.diag(fitted.covariances_[k]),
        "spherical": lambda k: fitted.covariances_[k] * np.eye(3),
    }[covariance_type]
    expected = sum(
        resp[:, k]
        @ (
            np.log(fitted.weights_[k])
            + multivariate_normal(fitted.means_[k], covariances(k)).logpdf(x)
        )
        for k in range(3)
    )
    assert model.expected_loglik(stats, params) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("group", [3, 8])
def test_grouping_changes_only_the_path(mixture, group):
    x, init = mixture
    one = _fit(x, init, method="incremental", incremental_chunks=1)
    other = _fit(x, init, method="incremental", incremental_chunks=group)
    _assert_same_optimum(other, one, x)


def test_groups_of_every_chunk_are_batch_em(mixture):
    """One group of all the chunks is batch EM, iteration for iteration; the free energy
    after pass t, F(q(θ_t), θ_(t+1)), lies between the log-likelihoods at θ_t and
    θ_(t+1) that batch EM reports."""
    x, init = mixture
    batch = _fit(x, init, max_iter=5)
    ours = _fit(x, init, max_iter=5, method="incremental", incremental_chunks=8)
    np.testing.assert_allclose(ours.means_, batch.means_, rtol=1e-12)
    after = _fit(x, init, max_iter=6).lower_bounds_
    assert np.all(np.array(batch.lower_bounds_) < ours.lower_bounds_)
    assert np.all(np.array(ours.lower_bounds_) < after[1:])


def test_a_resumed_fit_is_the_same_bits(mixture, tmp_path):
    x, init = mixture
    whole = _fit(x, init, method="incremental", incremental_chunks=2, max_iter=6)
    path = tmp_path / "fit.zarr"
    _fit(x, init, method="incremental", incremental_chunks=2, max_iter=2, checkpoint=path)
    resumed = _fit(
        x, init, method="incremental", incremental_chunks=2, max_iter=6, checkpoint=path,
        resume=True,
    )  # fmt: skip
    assert resumed.n_iter_ == whole.n_iter_ == 6
    assert resumed.lower_bounds_ == whole.lower_bounds_
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(whole, name))
    # the same bits on a cluster of processes, whichever worker ran which task
    restored = dem.load_checkpoint(path)
    assert restored["incremental_cache_n"].shape == (4,)  # 8 chunks in groups of 2


def test_the_same_bits_on_a_cluster(mixture, process_client):
    x, init = mixture
    here = _fit(x, init, method="incremental", incremental_chunks=3, max_iter=4)
    with process_client.as_current():
        there = _fit(x, init, method="incremental", incremental_chunks=3, max_iter=4)
    np.testing.assert_array_equal(here.means_, there.means_)
    assert here.lower_bounds_ == there.lower_bounds_


def test_resuming_with_other_groups_is_refused(mixture, tmp_path):
    x, init = mixture
    path = tmp_path / "fit.zarr"
    _fit(x, init, method="incremental", incremental_chunks=2, max_iter=2, checkpoint=path)
    with pytest.raises(dem.CheckpointMismatchError):
        _fit(x, init, method="incremental", incremental_chunks=3, checkpoint=path, resume=True)


def _categorical_hmm():
    """100 sequences of 40 steps of 3 persistent states, each emitting mostly its own
    symbol (well conditioned: EM gets within 1e-9 of the optimum in about 30 steps), in
    4 chunks, and a start."""
    rng = np.random.default_rng(7)
    emission = np.full((3, 3), 0.015) + np.eye(3) * 0.955
    trans = np.full((3, 3), 0.025) + np.eye(3) * 0.925
    states = np.empty((100, 40), dtype=np.int64)
    states[:, 0] = rng.integers(0, 3, size=100)
    for t in range(1, 40):
        cumulative = np.cumsum(trans[states[:, t - 1]], axis=1)
        states[:, t] = (rng.random((100, 1)) >= cumulative).sum(axis=1)
    draws = rng.random(states.shape)[..., None]
    x = (draws >= np.cumsum(emission, axis=1)[states]).sum(axis=-1)
    params = {
        "startprob": np.array([0.4, 0.3, 0.3]),
        "transmat": np.array([[0.6, 0.2, 0.2], [0.3, 0.4, 0.3], [0.3, 0.3, 0.4]]),
        "emissionprob": np.array([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6]]),
    }
    return x, params


HMM_PARAMS = [
    ("startprob", "startprob_"), ("transmat", "transmat_"), ("emissionprob", "emissionprob_")
]  # fmt: skip


def _hmmlearn(x, params, n_iter):
    """hmmlearn's CategoricalHMM after ``n_iter`` EM iterations from ``params``."""
    reference = CategoricalHMM(
        3, n_iter=n_iter, tol=0.0, init_params="", params="ste", implementation="log"
    )
    for name, attribute in HMM_PARAMS:
        setattr(reference, attribute, params[name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return reference.fit(x.reshape(-1, 1), lengths=[x.shape[1]] * len(x))


def test_categorical_hmm_reaches_the_batch_optimum():
    """Incremental EM, in groups of one and of two chunks, ends at hmmlearn's batch EM
    optimum from the same start (hmmlearn stops when its log-likelihood stops rising,
    its last step moving the parameters by 8e-11), and one hmmlearn EM step from the fit
    barely moves it. (With 4 chunks, incremental EM takes about as many passes as batch
    EM here: 19 and 21 against 16 at tol=1e-12, but ends 1000 times closer.)"""
    x, params = _categorical_hmm()
    model = CategoricalHMMModel(3, n_features=3)
    inputs = {"X": da.from_array(x.astype(float), chunks=(25, -1))}
    reference = _hmmlearn(x, params, 200)
    hmmlearn_start = _hmmlearn(x, params, 1).monitor_.history[0] / x.size
    loglik = reference.score(x.reshape(-1, 1), lengths=[x.shape[1]] * len(x)) / x.size
    for group in (1, 2):
        ours = engine.fit(
            model, inputs, lambda: params, method="incremental", incremental_chunks=group,
            tol=1e-12, max_iter=1000,
        )  # fmt: skip
        assert ours.converged
        assert ours.lower_bound == pytest.approx(loglik, rel=1e-8)
        step = _hmmlearn(x, ours.params, 1)
        for name, attribute in HMM_PARAMS:
            np.testing.assert_allclose(ours.params[name], getattr(reference, attribute), atol=1e-6)
            np.testing.assert_allclose(ours.params[name], getattr(step, attribute), atol=1e-7)
        assert np.diff(ours.lower_bounds).min() > -1e-13  # the free energy
        assert ours.lower_bounds[0] > hmmlearn_start  # above the initial log-likelihood


def test_models_whose_statistics_move_with_the_parameters_are_refused():
    """A model with neither comparable statistics nor an anchor (here the mixture of
    factor analyzers), and one that runs its own passes (a long HMM), are refused."""
    inputs = {"X": da.zeros((40, 3), chunks=10)}
    with pytest.raises(ValueError, match="comparable_stats"):
        engine.fit(FactorMixtureModel(2, 1), inputs, dict, method="incremental")
    long = LongHMMModel(CategoricalHMMModel(2, n_features=2))
    with pytest.raises(ValueError, match="own passes"):
        engine.fit(long, {"X": da.zeros((1, 40), chunks=(1, 10))}, dict, method="incremental")


# --- models whose statistics are taken about an anchor --------------------------------


def _fit_engine(model, inputs, params, **options):
    """``engine.fit`` on the local threads (not on this module's process cluster, the
    default client once a test above started it: a compute per group costs more there)."""
    with warnings.catch_warnings(), dask.config.set(scheduler="threads"):
        warnings.simplefilter("ignore")  # a capped fit's ConvergenceWarning
        return engine.fit(
            model, inputs, lambda: params, **{"tol": 1e-13, "max_iter": 3000, **options}
        )


def _low_rank(n_components=2, missing=0.0, seed=0):
    """800 rows of 6 features around 5 (strong factors, unequal noise), in 8 chunks,
    optionally with entries missing at random, and a start away from the optimum."""
    rng = np.random.default_rng(seed)
    loadings = rng.normal(size=(6, n_components)) * 1.5
    noise = rng.normal(size=(800, 6)) * np.linspace(0.7, 1.0, 6)
    x = rng.normal(size=(800, n_components)) @ loadings.T + noise + 5.0
    x[rng.random(x.shape) < missing] = np.nan
    start = {
        "loadings": rng.normal(size=(6, n_components)),
        "mean": np.nanmean(x, axis=0) + 0.5,
        "noise_variance": np.ones(6),
    }
    return x, start


def _assert_same_linear_gaussian(ours, reference, x, model):
    """The same log-likelihood (1e-8 relative), covariance W Wᵀ + Ψ, mean and noise (1e-6)."""
    loglik = model.posterior(x, ours)[1].mean()
    assert loglik == pytest.approx(model.posterior(x, reference)[1].mean(), rel=1e-8)
    for params in (ours, reference):
        params["cov"] = params["loadings"] @ params["loadings"].T
    for name in ("cov", "mean", "noise_variance"):
        np.testing.assert_allclose(ours[name], reference[name], atol=1e-6)


def test_ppca_reaches_the_batch_optimum_and_the_closed_form():
    """PPCA by incremental EM (groups of one chunk) ends where batch EM does and at the
    closed form (Tipping & Bishop: the same covariance, mean and log-likelihood as
    scipy's normal density there)."""
    x, start = _low_rank()
    model = LinearGaussianModel(2)
    inputs = {"X": da.from_array(x, chunks=(100, -1))}
    start = {**start, "noise_variance": np.array(1.0)}
    batch = _fit_engine(model, inputs, start).params
    ours = _fit_engine(model, inputs, start, method="incremental")
    assert ours.converged and set(ours.params) == {"loadings", "mean", "noise_variance"}
    _assert_same_linear_gaussian(ours.params, batch, x, model)
    # Tipping & Bishop's closed form: the top eigenvectors of the covariance (1/n)
    eigenvalues, vectors = np.linalg.eigh(np.cov(x.T, bias=True))
    noise = eigenvalues[:4].mean()
    top = vectors[:, 4:] * np.sqrt(eigenvalues[4:] - noise)
    closed = top @ top.T + noise * np.eye(6)
    covariance = ours.params["cov"] + ours.params["noise_variance"] * np.eye(6)
    np.testing.assert_allclose(covariance, closed, atol=1e-6)
    np.testing.assert_allclose(ours.params["mean"], x.mean(axis=0), atol=1e-6)
    reference = multivariate_normal(x.mean(axis=0), closed).logpdf(x).mean()
    assert model.posterior(x, ours.params)[1].mean() == pytest.approx(reference, rel=1e-8)


def test_factor_analysis_with_missing_values_reaches_the_batch_optimum():
    """Factor analysis with 10% of the entries missing: incremental EM in groups of one
    chunk ends at batch EM's optimum (whose own tests compare it with independent
    references). (Not in fewer passes: 65, as batch EM; see the guide.)"""
    group = 1
    x, start = _low_rank(1, missing=0.1, seed=1)
    model = LinearGaussianModel(1, "diagonal")
    inputs = {"X": da.from_array(x, chunks=(100, -1))}
    batch = _fit_engine(model, inputs, start, tol=1e-14)
    ours = _fit_engine(
        model, inputs, start, tol=1e-14, method="incremental", incremental_chunks=group
    )
    assert ours.converged and batch.converged
    _assert_same_linear_gaussian(ours.params, batch.params, x, model)


def _tobit(seed=2):
    """600 rows, a third of them censored from below at 0.5, in 6 chunks."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(600, 3))
    y = np.maximum(1.0 + x @ np.array([1.0, -0.5, 0.3]) + rng.normal(size=600) * 1.2, 0.5)
    inputs = {"X": da.from_array(x, chunks=(100, -1)), "y": da.from_array(y, chunks=100)}
    return x, y, inputs, {"coef": np.zeros(4), "scale": np.array(1.0)}


def test_tobit_reaches_the_direct_maximum():
    """Tobit by incremental EM ends at the maximum found by scipy's BFGS on the
    log-likelihood written out with scipy's normal distribution, and at batch EM's."""
    x, y, inputs, start = _tobit()

    def minus_loglik(theta):
        mu, scale = theta[0] + x @ theta[1:4], np.exp(theta[4])
        low = y <= 0.5
        return -(
            norm.logcdf((0.5 - mu[low]) / scale).sum() + norm.logpdf(y[~low], mu[~low], scale).sum()
        )

    direct = optimize.minimize(minus_loglik, np.zeros(5), method="BFGS", options={"gtol": 1e-10})
    batch = _fit_engine(CensoredModel(left=0.5), inputs, start, tol=1e-12)
    for group in (1, 2):
        ours = _fit_engine(
            CensoredModel(left=0.5), inputs, start, tol=1e-12, method="incremental",
            incremental_chunks=group,
        )  # fmt: skip
        assert ours.converged and set(ours.params) == {"coef", "scale", "mean_xxT"}
        assert -minus_loglik([*ours.params["coef"], np.log(ours.params["scale"])]) == (
            pytest.approx(-direct.fun, rel=1e-10)
        )
        np.testing.assert_allclose(ours.params["coef"], direct.x[:4], atol=1e-6)
        np.testing.assert_allclose(ours.params["scale"], np.exp(direct.x[4]), atol=1e-6)
        np.testing.assert_allclose(ours.params["coef"], batch.params["coef"], atol=1e-8)
        assert ours.n_iter < batch.n_iter


def _checkpoint(path, model, inputs, resume):
    return Checkpoint.open(
        path, model=model.name, config={**model.config(), "incremental_chunks": 2},
        fingerprint={name: list(array.shape) for name, array in inputs.items()}, resume=resume,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["factor_analysis", "tobit"])
def test_an_anchored_resume_is_the_same_bits(kind, tmp_path):
    """A fit stopped after 2 passes and resumed from its checkpoint (which holds the
    anchor) is the uninterrupted fit, bit for bit. (On the local threads: on this
    module's process cluster, the default client once started, repeated Tobit fits
    differ in the last bit, batch EM's as well: 5.6e-17 in the coefficients.)"""
    if kind == "tobit":
        model, (*_, inputs, start) = CensoredModel(left=0.5), _tobit()
    else:
        model = LinearGaussianModel(1, "diagonal")
        x, start = _low_rank(1, missing=0.1, seed=1)
        inputs = {"X": da.from_array(x, chunks=(100, -1))}
    options = {"method": "incremental", "incremental_chunks": 2, "tol": 0.0}
    whole = _fit_engine(model, inputs, start, max_iter=5, **options)
    path = tmp_path / "fit.zarr"
    store = _checkpoint(path, model, inputs, resume=False)
    _fit_engine(model, inputs, start, max_iter=2, checkpoint=store, **options)
    store.close()
    stored = dem.load_checkpoint(path)
    anchor = "anchor_coef" if kind == "tobit" else "anchor_mean"
    np.testing.assert_array_equal(stored[anchor], start["coef" if kind == "tobit" else "mean"])
    store = _checkpoint(path, model, inputs, resume=True)
    resumed = _fit_engine(model, inputs, start, max_iter=5, checkpoint=store, **options)
    store.close()
    assert resumed.n_iter == whole.n_iter == 5
    assert resumed.lower_bounds == whole.lower_bounds
    assert resumed.params.keys() == whole.params.keys()
    for name, value in whole.params.items():
        np.testing.assert_array_equal(resumed.params[name], value)


def test_batch_em_never_sees_the_anchor():
    """The anchor is incremental EM's: batch EM's E-step at the same parameters gives
    the same bits as before (no anchor among them), and one pass in a single group
    moves the parameters exactly as one batch EM step."""
    x, start = _low_rank(1, missing=0.1, seed=1)
    model = LinearGaussianModel(1, "diagonal")
    inputs = {"X": da.from_array(x, chunks=(100, -1))}
    batch = _fit_engine(model, inputs, start, max_iter=1).params
    ours = _fit_engine(model, inputs, start, max_iter=1, method="incremental", incremental_chunks=8)
    for name, value in batch.items():
        np.testing.assert_array_equal(ours.params[name], value)


def test_incremental_takes_no_extrapolation(mixture):
    x, init = mixture
    with pytest.raises(ValueError, match="accelerate='none'"):
        _fit(x, init, method="incremental", accelerate="squarem")


def _gaussian_hmm():
    """100 sequences of 40 steps of 3 persistent states with 2-D Gaussian emissions
    around 4 (so the shift matters), in 4 chunks, and a start away from the optimum."""
    rng = np.random.default_rng(7)
    trans = np.full((3, 3), 0.05) + np.eye(3) * 0.85
    means = np.array([[0.0, 0.0], [2.5, 0.5], [0.5, 3.0]]) + 4.0
    states = np.empty((100, 40), dtype=np.int64)
    states[:, 0] = rng.integers(0, 3, size=100)
    for t in range(1, 40):
        cumulative = np.cumsum(trans[states[:, t - 1]], axis=1)
        states[:, t] = (rng.random((100, 1)) >= cumulative).sum(axis=1)
    x = means[states] + rng.normal(size=(100, 40, 2))
    covars = np.array([[1.5, 1.0], [1.0, 2.0], [2.0, 2.0]])
    params = {
        "startprob": np.array([0.4, 0.3, 0.3]),
        "transmat": np.array([[0.6, 0.2, 0.2], [0.3, 0.4, 0.3], [0.3, 0.3, 0.4]]),
        "means": means + rng.normal(scale=0.7, size=(3, 2)),
        "covars": covars,
        "precisions_cholesky": 1.0 / np.sqrt(covars),
    }
    return x, params


def test_gaussian_hmm_reaches_hmmlearns_optimum():
    """The Gaussian HMM (diagonal covariances, hmmlearn's default priors) by incremental
    EM, in groups of one and two chunks, ends at hmmlearn's batch EM optimum from the
    same start, without its anchor among the fitted parameters."""
    x, params = _gaussian_hmm()
    reference = GaussianHMM(
        3, covariance_type="diag", n_iter=300, tol=0.0, init_params="", params="stmc",
        covars_prior=1e-2, implementation="log",
    )  # fmt: skip
    for name in ("startprob", "transmat", "means"):
        setattr(reference, name + "_", params[name])
    reference.covars_ = params["covars"]
    lengths = [40] * 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference.fit(x.reshape(-1, 2), lengths=lengths)
    loglik = reference.score(x.reshape(-1, 2), lengths=lengths) / x[..., 0].size
    inputs = {"X": da.from_array(x, chunks=(25, -1, -1))}
    for group in (1, 2):
        ours = _fit_engine(
            GaussianHMMModel(3, covariance_type="diag"), inputs, params, tol=1e-12,
            method="incremental", incremental_chunks=group,
        )  # fmt: skip
        assert ours.converged and "anchor_shift" not in ours.params
        assert ours.lower_bound == pytest.approx(loglik, rel=1e-8)
        for name, attribute in [*HMM_PARAMS[:2], ("means", "means_"), ("covars", "_covars_")]:
            np.testing.assert_allclose(ours.params[name], getattr(reference, attribute), atol=1e-6)


def test_gmm_hmm_reaches_the_batch_optimum():
    """The HMM with two-component Gaussian-mixture emissions (whose batch EM
    tests/test_gmmhmm.py compares with hmmlearn's) by incremental EM ends at batch EM's
    optimum from the same start."""
    rng = np.random.default_rng(7)
    states = np.empty((100, 40), dtype=np.int64)
    states[:, 0] = rng.integers(0, 2, size=100)
    for t in range(1, 40):
        states[:, t] = np.where(rng.random(100) < 0.9, states[:, t - 1], 1 - states[:, t - 1])
    centres = np.array([[[0.0, 0.0], [2.0, 2.0]], [[4.0, 0.0], [4.0, 3.0]]]) + 3.0
    x = centres[states, rng.integers(0, 2, size=(100, 40))] + rng.normal(size=(100, 40, 2)) * 0.7
    params = {
        "startprob": np.array([0.5, 0.5]),
        "transmat": np.array([[0.7, 0.3], [0.3, 0.7]]),
        "weights": np.full((2, 2), 0.5),
        "means": centres + rng.normal(scale=0.5, size=(2, 2, 2)),
        "covars": np.ones((2, 2, 2)),
        "precisions_cholesky": np.ones((2, 2, 2)),
    }
    model = GMMHMMModel(2, n_mix=2, covariance_type="diag")
    inputs = {"X": da.from_array(x, chunks=(25, -1, -1))}
    batch = _fit_engine(model, inputs, params, tol=1e-15)
    ours = _fit_engine(model, inputs, params, tol=1e-15, method="incremental")
    assert ours.converged and batch.converged and "anchor_shift" not in ours.params
    assert ours.lower_bound == pytest.approx(batch.lower_bound, rel=1e-8)
    for name in ("startprob", "transmat", "weights", "means", "covars"):
        np.testing.assert_allclose(ours.params[name], batch.params[name], atol=1e-6)


def test_the_estimators_take_method_incremental():
    """PPCA (FactorAnalysis shares its code), CensoredRegression and GaussianHMM take
    method="incremental" and end at their batch fits (each compared with independent
    references in its own tests); one long sequence is refused."""
    x, _ = _low_rank(1, missing=0.1, seed=1)
    data = da.from_array(x, chunks=(100, -1))
    batch = dem.PPCA(1, tol=1e-12, max_iter=3000, random_state=0).fit(data)
    ours = dem.PPCA(1, tol=1e-12, max_iter=3000, random_state=0, method="incremental")
    ours.fit(data)
    assert ours.converged_ and ours.score(x) == pytest.approx(batch.score(x), rel=1e-8)
    np.testing.assert_allclose(ours.get_covariance(), batch.get_covariance(), atol=1e-5)
    *_, inputs, _ = _tobit()
    batch = dem.CensoredRegression(0.5, tol=1e-10).fit(inputs["X"], inputs["y"])
    ours = dem.CensoredRegression(0.5, tol=1e-10, method="incremental", incremental_chunks=2)
    ours.fit(inputs["X"], inputs["y"])
    assert ours.converged_ and ours.n_iter_ < batch.n_iter_
    np.testing.assert_allclose(ours.coef_, batch.coef_, atol=1e-7)
    np.testing.assert_allclose(ours.bse_, batch.bse_, rtol=1e-6)
    with pytest.raises(ValueError, match="method"):
        dem.PPCA(1, method="online").fit(data)
    x, params = _gaussian_hmm()
    sequences = da.from_array(x, chunks=(25, -1, -1))
    init = {f"{name}_init": params[name] for name in ("startprob", "transmat", "means", "covars")}
    options = {"covariance_type": "diag", "tol": 1e-10, "max_iter": 500, **init}
    batch = dem.GaussianHMM(3, **options).fit(sequences)
    ours = dem.GaussianHMM(3, method="incremental", **options).fit(sequences)
    assert ours.converged_ and ours.score(x) == pytest.approx(batch.score(x), rel=1e-9)
    np.testing.assert_allclose(ours.means_, batch.means_, atol=1e-5)
    with pytest.raises(ValueError, match="own passes"):  # one long sequence
        dem.GaussianHMM(3, method="incremental").fit(x[0])
