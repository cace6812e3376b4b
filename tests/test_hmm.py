"""GaussianHMM and CategoricalHMM: parity with hmmlearn, EM invariants, ragged
sequences, chunking, checkpoints, a real cluster, and bad input."""

from __future__ import annotations

import logging
from itertools import pairwise

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
from hmmlearn import hmm as hmmlearn_hmm
from threadpoolctl import threadpool_limits

import dem
from dem import ConvergenceWarning, NotFittedError
from dem.models import hmm
from dem.models.hmm import kernels
from dem.models.hmm import model as hmm_model
from dem.models.hmm.model import GaussianHMMModel

logging.getLogger("hmmlearn").setLevel(logging.ERROR)


@pytest.fixture(autouse=True)
def one_blas_thread():
    """These fits are tiny: BLAS threads only wait for each other (hmmlearn's 2×2
    triangular solves take 20 ms each with two threads on a busy machine)."""
    with threadpool_limits(limits=1):
        yield


K = 3
D = 2
TRUE_MEANS = np.array([[0.0, 0.0], [3.0, 3.0], [-3.0, 2.0]])
TRUE_START = np.array([0.6, 0.3, 0.1])
TRUE_TRANS = np.array([[0.8, 0.15, 0.05], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])


def draw_states(start, trans, n_sequences, n_times, rng):
    """State paths of a Markov chain by inverse CDF, written apart from dem's sampler."""
    states = np.empty((n_sequences, n_times), dtype=np.int64)
    states[:, 0] = [rng.choice(len(start), p=start) for _ in range(n_sequences)]
    for t in range(1, n_times):
        for i in range(n_sequences):
            states[i, t] = rng.choice(len(start), p=trans[states[i, t - 1]])
    return states


def gaussian_data(seed=0, n_sequences=40, n_times=30, ragged=True):
    """Padded (NaN) Gaussian sequences, their lengths, and hmmlearn's concatenated layout."""
    rng = np.random.default_rng(seed)
    states = draw_states(TRUE_START, TRUE_TRANS, n_sequences, n_times, rng)
    x = TRUE_MEANS[states] + rng.normal(size=(n_sequences, n_times, D))
    lengths = (
        rng.integers(1, n_times + 1, size=n_sequences) if ragged else np.full(n_sequences, n_times)
    )
    lengths[0] = n_times
    valid = np.arange(n_times)[None, :] < lengths[:, None]
    x[~valid] = np.nan
    return x, lengths, x[valid]


def categorical_data(seed=0, n_sequences=40, n_times=30, n_symbols=5):
    rng = np.random.default_rng(seed)
    emission = rng.dirichlet(np.ones(n_symbols), size=K)
    states = draw_states(TRUE_START, TRUE_TRANS, n_sequences, n_times, rng)
    draws = rng.random(states.shape)[..., None]
    x = (draws >= np.cumsum(emission, axis=1)[states]).sum(axis=-1).astype(float)
    lengths = rng.integers(1, n_times + 1, size=n_sequences)
    valid = np.arange(n_times)[None, :] < lengths[:, None]
    x[~valid] = -1.0
    return x, lengths, x[valid].astype(np.int64)[:, None]


def initial(ctype, seed=1):
    rng = np.random.default_rng(seed)
    covars = {
        "full": np.array(
            [[[1.5, 0.3], [0.3, 1.0]], [[1.0, -0.2], [-0.2, 2.0]], [[2.0, 0.0], [0.0, 2.0]]]
        ),
        "diag": np.array([[1.5, 1.0], [1.0, 2.0], [2.0, 2.0]]),
        "spherical": np.array([1.5, 1.0, 2.0]),
        "tied": np.array([[1.5, 0.3], [0.3, 1.0]]),
    }[ctype]
    return {
        "startprob": np.array([0.5, 0.3, 0.2]),
        "transmat": rng.dirichlet(np.full(K, 2.0), size=K),
        "means": TRUE_MEANS + rng.normal(scale=0.7, size=(K, D)),
        "covars": covars,
    }


def fit_reference_gaussian(ctype, init, x_concat, lengths, n_iter, **options):
    prior = options.pop("covars_prior", 1e-2)
    if ctype in ("full", "tied"):
        prior = prior * np.eye(D)
    ref = hmmlearn_hmm.GaussianHMM(
        K,
        covariance_type=ctype,
        n_iter=n_iter,
        tol=-np.inf,
        init_params="",
        covars_prior=prior,
        **options,
    )
    ref.startprob_ = init["startprob"]
    ref.transmat_ = init["transmat"]
    ref.means_ = init["means"]
    ref.covars_ = init["covars"]
    return ref.fit(x_concat, lengths)


def fit_ours_gaussian(ctype, init, x, lengths, max_iter, **options):
    model = dem.GaussianHMM(
        K,
        covariance_type=ctype,
        max_iter=max_iter,
        tol=0.0,
        startprob_init=init["startprob"],
        transmat_init=init["transmat"],
        means_init=init["means"],
        covars_init=init["covars"],
        **options,
    )
    with pytest.warns(ConvergenceWarning):
        return model.fit(x, lengths)


def path_log_prob(model, path, symbols):
    """log P(path, symbols) of a CategoricalHMM, term by term."""
    total = np.log(model.startprob_[path[0]] * model.emissionprob_[path[0], symbols[0]])
    for t in range(1, len(path)):
        total += np.log(
            model.transmat_[path[t - 1], path[t]] * model.emissionprob_[path[t], symbols[t]]
        )
    return total


def reference_covars(ref, ctype):
    return ref._covars_[:, 0] if ctype == "spherical" else ref._covars_


# --- parity with hmmlearn -------------------------------------------------------------------


@pytest.mark.parametrize("ctype", ["full", "diag", "spherical", "tied"])
@pytest.mark.parametrize("n_iter", [1, 20])
def test_gaussian_matches_hmmlearn(ctype, n_iter):
    x, lengths, x_concat = gaussian_data()
    init = initial(ctype)
    ref = fit_reference_gaussian(ctype, init, x_concat, lengths, n_iter)
    ours = fit_ours_gaussian(ctype, init, x, lengths, n_iter)
    np.testing.assert_allclose(ours.startprob_, ref.startprob_, rtol=1e-8)
    np.testing.assert_allclose(ours.transmat_, ref.transmat_, rtol=1e-8)
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=1e-8)
    np.testing.assert_allclose(ours.covars_, reference_covars(ref, ctype), rtol=1e-8)
    # the log-likelihood at the start of the last iteration, and at the fitted parameters
    n_obs = lengths.sum()
    assert ours.lower_bound_ * n_obs == pytest.approx(ref.monitor_.history[-1], rel=1e-10)
    assert ours.score(x, lengths) == pytest.approx(ref.score(x_concat, lengths), rel=1e-10)


def test_gaussian_priors_match_hmmlearn():
    x, lengths, x_concat = gaussian_data(seed=3)
    init = initial("full")
    options = {
        "startprob_prior": np.array([2.0, 1.5, 3.0]),
        "transmat_prior": 2.0,
        "means_prior": np.array([[0.5, 0.0], [2.0, 2.0], [-2.0, 1.0]]),
        "means_weight": 0.7,  # hmmlearn's full update cannot broadcast a per-state weight
        "covars_prior": 0.3,
        "covars_weight": 4.0,
    }
    ref = fit_reference_gaussian("full", init, x_concat, lengths, 5, **dict(options))
    ours = fit_ours_gaussian("full", init, x, lengths, 5, **options)
    for name in ("startprob_", "transmat_", "means_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-8)
    np.testing.assert_allclose(ours.covars_, ref._covars_, rtol=1e-8)


@pytest.mark.parametrize("n_iter", [1, 20])
def test_categorical_matches_hmmlearn(n_iter):
    x, lengths, x_concat = categorical_data()
    rng = np.random.default_rng(5)
    start, trans = np.array([0.5, 0.3, 0.2]), rng.dirichlet(np.ones(K), size=K)
    emission = rng.dirichlet(np.ones(5), size=K)
    ref = hmmlearn_hmm.CategoricalHMM(K, n_iter=n_iter, tol=-np.inf, init_params="", n_features=5)
    ref.startprob_, ref.transmat_, ref.emissionprob_ = start, trans, emission
    ref.fit(x_concat, lengths)
    ours = dem.CategoricalHMM(
        K,
        max_iter=n_iter,
        tol=0.0,
        startprob_init=start,
        transmat_init=trans,
        emissionprob_init=emission,
    )
    with pytest.warns(ConvergenceWarning):
        ours.fit(x, lengths)
    assert ours.n_features_in_ == 5  # found from emissionprob_init
    np.testing.assert_allclose(ours.startprob_, ref.startprob_, rtol=1e-8)
    np.testing.assert_allclose(ours.transmat_, ref.transmat_, rtol=1e-8)
    np.testing.assert_allclose(ours.emissionprob_, ref.emissionprob_, rtol=1e-8)
    assert ours.lower_bound_ * lengths.sum() == pytest.approx(ref.monitor_.history[-1], rel=1e-10)
    assert ours.score(x, lengths) == pytest.approx(ref.score(x_concat, lengths), rel=1e-10)
    # symbols tie paths exactly now and then: compare the paths' probabilities
    ours_paths, ref_paths = ours.predict(x, lengths)[x >= 0], ref.predict(x_concat, lengths)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    for a, b in pairwise(bounds):
        symbols = x_concat[a:b, 0]
        assert path_log_prob(ours, ours_paths[a:b], symbols) == pytest.approx(
            path_log_prob(ours, ref_paths[a:b], symbols), rel=1e-12
        )


def test_per_sequence_outputs_match_hmmlearn():
    x, lengths, x_concat = gaussian_data(seed=2)
    init = initial("full")
    ref = fit_reference_gaussian("full", init, x_concat, lengths, 3)
    ours = fit_ours_gaussian("full", init, x, lengths, 3)
    valid = np.arange(x.shape[1])[None, :] < lengths[:, None]
    np.testing.assert_array_equal(ours.predict(x, lengths)[valid], ref.predict(x_concat, lengths))
    assert np.all(ours.predict(x, lengths)[~valid] == -1)
    proba = ours.predict_proba(x, lengths)
    np.testing.assert_allclose(
        proba[valid], ref.predict_proba(x_concat, lengths), rtol=1e-8, atol=1e-12
    )
    assert np.all(np.isnan(proba[~valid]))
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    per_sequence = [ref.score(x_concat[a:b]) for a, b in pairwise(bounds)]
    np.testing.assert_allclose(ours.score_sequences(x, lengths), per_sequence, rtol=1e-10)
    assert ours.bic(x, lengths) == pytest.approx(ref.bic(x_concat, lengths), rel=1e-10)
    assert ours.aic(x, lengths) == pytest.approx(ref.aic(x_concat, lengths), rel=1e-10)


def test_log_space_fallback_matches_hmmlearn():
    """A left-to-right model and an observation only an unreachable state explains: the
    scaled recursions underflow there, and the log-space path must give hmmlearn's result."""
    start = np.array([1.0, 0.0])
    trans = np.array([[0.9, 0.1], [0.0, 1.0]])
    means, covars = np.array([[0.0], [60.0]]), np.array([[1.0], [1.0]])
    x = np.array([[[60.0], [0.1], [60.2], [59.0]], [[0.3], [-0.2], [59.5], [60.1]]])
    model = GaussianHMMModel(2, covariance_type="diag", covars_prior=0.0)
    params = {
        "startprob": start,
        "transmat": trans,
        "means": means,
        "covars": covars,
        "precisions_cholesky": kernels.precision_cholesky(covars, "diag"),
    }
    log_b = model.emission_log_prob(model.prepare(x, None, params), params)
    with np.errstate(all="ignore"):
        peak = log_b.max(axis=1)
        _, failed = kernels._scaled(
            np.exp(log_b - peak[:, None, :]), peak, start, trans, None, True
        )
    np.testing.assert_array_equal(failed, [True, False])  # the fallback is exercised
    found = kernels.forward_backward(log_b, start, trans, None)
    ref = hmmlearn_hmm.GaussianHMM(2, covariance_type="diag", init_params="", implementation="log")
    ref.startprob_, ref.transmat_, ref.means_, ref.covars_ = start, trans, means, covars
    for i in range(2):
        logprob, posteriors = ref.score_samples(x[i])
        assert found.loglik[i] == pytest.approx(logprob, rel=1e-12)
        np.testing.assert_allclose(found.gamma[:, :, i], posteriors, rtol=1e-10, atol=1e-300)


# --- EM invariants ------------------------------------------------------------------------


@pytest.mark.parametrize("ctype", ["full", "diag"])
def test_log_likelihood_never_decreases(ctype):
    x, lengths, _ = gaussian_data(seed=4, n_sequences=60)
    model = dem.GaussianHMM(K, covariance_type=ctype, max_iter=40, tol=0.0, random_state=0)
    with pytest.warns(ConvergenceWarning):
        model.fit(x, lengths)
    steps = np.diff(model.lower_bounds_)
    assert np.all(steps >= -1e-12 * np.abs(model.lower_bounds_[1:]))


def test_categorical_log_likelihood_never_decreases():
    x, lengths, _ = categorical_data(seed=6)
    model = dem.CategoricalHMM(K, max_iter=40, tol=0.0, random_state=0)
    with pytest.warns(ConvergenceWarning):
        model.fit(x, lengths)
    assert model.n_features_in_ == 5  # found in a pass over the data
    assert np.all(np.diff(model.lower_bounds_) >= -1e-12 * np.abs(model.lower_bounds_[1:]))


def test_statistics_are_additive_over_chunks_and_blocks(monkeypatch):
    """The statistics of a chunk equal those of its parts (pomegranate's test), and the
    E-step's own blocks of sequences do not change them."""
    x, lengths, _ = gaussian_data(seed=7)
    init = initial("full")
    model = GaussianHMMModel(K, covariance_type="full")
    params = {**init, "precisions_cholesky": kernels.precision_cholesky(init["covars"], "full")}
    whole = model.e_step({"X": x, "lengths": lengths}, params)
    parts = model.combine(
        model.e_step({"X": x[:13], "lengths": lengths[:13]}, params),
        model.e_step({"X": x[13:], "lengths": lengths[13:]}, params),
    )
    monkeypatch.setattr(hmm_model, "BLOCK_ELEMENTS", 7 * x.shape[1] * K)  # blocks of 7 sequences
    blocked = model.e_step({"X": x, "lengths": lengths}, params)
    for key in whole:
        np.testing.assert_allclose(parts[key], whole[key], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(blocked[key], whole[key], rtol=1e-12, atol=1e-12)
    assert whole["n"] == lengths.sum()


def test_fit_is_chunk_invariant():
    x, lengths, _ = gaussian_data(seed=8)
    init = initial("diag")
    one = fit_ours_gaussian("diag", init, da.from_array(x, chunks=(40, -1, -1)), lengths, 10)
    many = fit_ours_gaussian("diag", init, da.from_array(x, chunks=(7, -1, -1)), lengths, 10)
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        np.testing.assert_allclose(getattr(many, name), getattr(one, name), rtol=1e-10)
    np.testing.assert_allclose(many.lower_bounds_, one.lower_bounds_, rtol=1e-12)


def test_padding_values_are_never_read():
    x, lengths, _ = gaussian_data(seed=9)
    garbage = np.where(np.isnan(x), 1e6, x)
    init = initial("full")
    a = fit_ours_gaussian("full", init, x, lengths, 5)
    b = fit_ours_gaussian("full", init, garbage, lengths, 5)
    np.testing.assert_array_equal(a.means_, b.means_)
    np.testing.assert_array_equal(a.covars_, b.covars_)


def test_unvisited_state_keeps_its_parameters():
    """hmmlearn would leave a zero transition row and NaN means here; dem keeps them."""
    x, lengths, _ = gaussian_data(seed=10, ragged=False)
    init = initial("diag")
    init["startprob"] = np.array([0.5, 0.5, 0.0])
    init["transmat"] = np.array([[0.7, 0.3, 0.0], [0.4, 0.6, 0.0], [0.2, 0.2, 0.6]])
    model = fit_ours_gaussian("diag", init, x, lengths, 3)
    np.testing.assert_array_equal(model.transmat_[2], init["transmat"][2])
    np.testing.assert_array_equal(model.means_[2], init["means"][2])
    np.testing.assert_array_equal(model.covars_[2], init["covars"][2])
    assert model.startprob_[2] == 0.0 and np.all(model.transmat_[:2, 2] == 0.0)
    assert np.all(np.isfinite(model.means_))


def test_recovers_the_generating_model():
    rng = np.random.default_rng(11)
    states = draw_states(TRUE_START, TRUE_TRANS, 200, 40, rng)
    x = TRUE_MEANS[states] + 0.5 * rng.normal(size=(*states.shape, D))
    model = dem.GaussianHMM(K, covariance_type="diag", random_state=0, tol=1e-6, max_iter=200)
    model.fit(x)
    order = [int(np.argmin(np.linalg.norm(model.means_ - m, axis=1))) for m in TRUE_MEANS]
    assert sorted(order) == [0, 1, 2]
    np.testing.assert_allclose(model.means_[order], TRUE_MEANS, atol=0.05)
    np.testing.assert_allclose(model.transmat_[np.ix_(order, order)], TRUE_TRANS, atol=0.03)
    np.testing.assert_allclose(model.covars_[order], 0.25, atol=0.02)
    assert np.mean(model.predict(x) == np.array(order)[states]) > 0.99


def test_sample_follows_the_parameters():
    x, lengths, _ = gaussian_data(seed=12)
    model = fit_ours_gaussian("full", initial("full"), x, lengths, 2)
    sample, states = model.sample(4000, 20, random_state=0)
    assert sample.shape == (4000, 20, D) and states.shape == (4000, 20)
    first = np.bincount(states[:, 0], minlength=K) / 4000
    np.testing.assert_allclose(first, model.startprob_, atol=0.03)
    pairs = np.zeros((K, K))
    np.add.at(pairs, (states[:, :-1].ravel(), states[:, 1:].ravel()), 1.0)
    np.testing.assert_allclose(pairs / pairs.sum(axis=1, keepdims=True), model.transmat_, atol=0.02)
    for k in range(K):
        np.testing.assert_allclose(sample[states == k].mean(axis=0), model.means_[k], atol=0.05)
        np.testing.assert_allclose(np.cov(sample[states == k].T), model.covars_[k], atol=0.1)
    symbols, _ = (
        dem.CategoricalHMM(K, random_state=0)
        .fit(categorical_data()[0], categorical_data()[1])
        .sample(3, 7)
    )
    assert symbols.shape == (3, 7) and symbols.min() >= 0 and symbols.max() < 5


# --- storage, checkpoints, lazy outputs, a real cluster -------------------------------------


@pytest.fixture
def zarr_store(tmp_path):
    x, lengths, _ = gaussian_data(seed=13)
    path = tmp_path / "sequences.zarr"
    group = zarr.open_group(str(path), mode="w")
    group.create_array("X", data=x.astype(np.float32), chunks=(10, x.shape[1], D))
    group.create_array("lengths", data=lengths.astype(np.int32), chunks=(10,))
    return path, x.astype(np.float32), lengths


def test_zarr_input_checkpoint_and_resume(zarr_store, tmp_path):
    path, x, lengths = zarr_store
    init = initial("full")
    options = {
        "covariance_type": "full",
        "tol": 0.0,
        "startprob_init": init["startprob"],
        "transmat_init": init["transmat"],
        "means_init": init["means"],
        "covars_init": init["covars"],
    }
    straight = dem.GaussianHMM(K, max_iter=8, **options)
    with pytest.warns(ConvergenceWarning):
        straight.fit(str(path), "lengths", variable="X")
    in_memory = fit_ours_gaussian("full", init, x, lengths, 8)
    np.testing.assert_allclose(straight.means_, in_memory.means_, rtol=1e-10)

    checkpoint = tmp_path / "fit.zarr"
    with pytest.warns(ConvergenceWarning):
        dem.GaussianHMM(K, max_iter=3, checkpoint=checkpoint, **options).fit(
            str(path), "lengths", variable="X"
        )
    resumed = dem.GaussianHMM(K, max_iter=8, checkpoint=checkpoint, resume=True, **options)
    with pytest.warns(ConvergenceWarning):
        resumed.fit(str(path), "lengths", variable="X")
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(straight, name))
    assert resumed.lower_bounds_ == straight.lower_bounds_
    saved = dem.load_checkpoint(checkpoint)
    assert saved.attrs["model"] == "gaussian_hmm"
    np.testing.assert_array_equal(saved["means"].values, straight.means_)
    assert saved["transmat"].dims == ("state", "state_")
    other = dem.GaussianHMM(K, max_iter=8, checkpoint=checkpoint, resume=True, **options)
    with pytest.raises(dem.CheckpointMismatchError):
        other.fit(str(path), variable="X")  # the same store without its lengths


def test_lazy_outputs_for_lazy_input(zarr_store):
    path, x, lengths = zarr_store
    model = dem.GaussianHMM(K, random_state=0, max_iter=5, tol=0.0)
    with pytest.warns(ConvergenceWarning):
        model.fit(x, lengths)
    lazy = model.predict_proba(str(path), "lengths", variable="X")
    assert isinstance(lazy, da.Array) and lazy.chunks[0] == (10, 10, 10, 10)
    np.testing.assert_allclose(lazy.compute(), model.predict_proba(x, lengths), rtol=1e-12)
    dataset = xr.Dataset(
        {"X": (("sequence", "time", "feature"), x), "lengths": ("sequence", lengths)},
        coords={"sequence": np.arange(len(x)) * 10},
    ).chunk({"sequence": 15})
    paths = model.predict(dataset, "lengths", variable="X")
    assert isinstance(paths, xr.DataArray) and paths.dims == ("sequence", "time")
    np.testing.assert_array_equal(paths.values, model.predict(x, lengths))
    np.testing.assert_array_equal(paths["sequence"].values, dataset["sequence"].values)
    scores = model.score_sequences(da.from_array(x, chunks=(15, -1, -1)), lengths)
    np.testing.assert_allclose(scores.compute(), model.score_sequences(x, lengths), rtol=1e-12)
    assert model.score(str(path), "lengths", variable="X") == pytest.approx(
        model.score_sequences(x, lengths).sum(), rel=1e-12
    )


@pytest.fixture
def cluster():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as local,
        Client(local) as client,
    ):
        yield client


def test_distributed_fit_matches_local(zarr_store, cluster):
    path, x, lengths = zarr_store
    init = initial("diag")
    local = fit_ours_gaussian("diag", init, x, lengths, 4)
    distributed = dem.GaussianHMM(
        K,
        covariance_type="diag",
        max_iter=4,
        tol=0.0,
        startprob_init=init["startprob"],
        transmat_init=init["transmat"],
        means_init=init["means"],
        covars_init=init["covars"],
    )
    with pytest.warns(ConvergenceWarning):
        distributed.fit(str(path), "lengths", variable="X")
    np.testing.assert_allclose(distributed.means_, local.means_, rtol=1e-10)
    np.testing.assert_allclose(distributed.transmat_, local.transmat_, rtol=1e-10)
    assert distributed.predict(str(path), "lengths", variable="X").compute().shape == x.shape[:2]


# --- bad input --------------------------------------------------------------------------------


def test_bad_layout_and_lengths():
    x, lengths, x_concat = gaussian_data()
    model = dem.GaussianHMM(K)
    with pytest.raises(ValueError, match="pad_sequences"):
        model.fit(x_concat, lengths)
    with pytest.raises(ValueError, match="one length per sequence"):
        model.fit(x, lengths[:-1])
    for bad in (
        np.where(np.arange(len(lengths)) == 3, 0, lengths),
        np.where(np.arange(len(lengths)) == 3, x.shape[1] + 1, lengths),
        lengths + 0.5,
    ):
        with pytest.raises(ValueError, match="lengths must be whole numbers between 1 and"):
            model.fit(x, bad)
    with pytest.raises(TypeError, match="names a variable"):
        model.fit(x, "lengths")
    inside = x.copy()
    inside[2, 0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity inside 1 sequence"):
        dem.GaussianHMM(K, means_init=TRUE_MEANS, covars_init=np.ones((K, D))).fit(inside, lengths)
    with pytest.raises(ValueError, match="contains NaN or infinity"):
        model.fit(x)  # NaN padding without lengths


def test_bad_lazy_lengths_are_caught_in_the_first_pass():
    x, lengths, _ = gaussian_data()
    bad = da.from_array(np.where(np.arange(len(lengths)) == 30, 0, lengths), chunks=10)
    model = dem.GaussianHMM(K, means_init=TRUE_MEANS, covars_init=np.ones((K, D)))
    with pytest.raises(ValueError, match="lengths must be whole numbers"):
        model.fit(da.from_array(x, chunks=(10, -1, -1)), bad)


def test_bad_symbols():
    x, lengths, _ = categorical_data()
    for value, message in ((-2.0, "non-negative integers"), (1.5, "non-negative integers")):
        bad = x.copy()
        bad[0, 0] = value
        with pytest.raises(ValueError, match=message):
            dem.CategoricalHMM(K).fit(bad, lengths)
    with pytest.raises(ValueError, match=r"integers in \[0, 3\)"):
        dem.CategoricalHMM(K, n_features=3).fit(x, lengths)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"n_components": 0},
            r"'n_components' parameter of GaussianHMM must be an int in the range \[1, inf\)",
        ),
        (
            {"covariance_type": "bogus"},
            "'covariance_type' parameter of GaussianHMM must be a str among",
        ),
        (
            {"max_iter": 0},
            r"'max_iter' parameter of GaussianHMM must be an int in the range \[1, inf\)",
        ),
        (
            {"transmat_prior": -1.0},
            "'transmat_prior' parameter of GaussianHMM must be a number or array of finite",
        ),
        ({"startprob_init": [0.5, 0.6, 0.1]}, "startprob_init must hold probabilities"),
        ({"transmat_init": np.eye(2)}, r"transmat_init must have shape \(3, 3\)"),
        ({"means_init": np.zeros((2, D))}, r"means_init must have shape \(3, 2\)"),
        ({"covars_init": np.ones(K)}, r"covars_init must have shape \(3, 2\)"),
        ({"covars_init": -np.ones((K, D))}, "covars_init must be positive"),
    ],
)
def test_bad_hyperparameters(options, message):
    x, lengths, _ = gaussian_data()
    with pytest.raises(ValueError, match=message):
        dem.GaussianHMM(**{"n_components": K, **options}).fit(x, lengths)


def test_not_fitted_and_wrong_features():
    x, lengths, _ = gaussian_data()
    with pytest.raises(NotFittedError):
        dem.GaussianHMM(K).predict(x, lengths)
    model = dem.GaussianHMM(K, random_state=0, max_iter=2, tol=0.0)
    with pytest.warns(ConvergenceWarning):
        model.fit(x, lengths)
    with pytest.raises(ValueError, match="fitted with 2"):
        model.score(np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match="n_sequences and n_times must be"):
        model.sample(0)


def test_pad_sequences():
    padded, counts = hmm.pad_sequences(np.arange(6.0)[:, None], [2, 4])
    np.testing.assert_array_equal(counts, [2, 4])
    np.testing.assert_array_equal(padded[1, :, 0], [2.0, 3.0, 4.0, 5.0])
    np.testing.assert_array_equal(padded[0, :2, 0], [0.0, 1.0])
    assert np.all(np.isnan(padded[0, 2:]))
    with pytest.raises(ValueError, match="they must agree"):
        hmm.pad_sequences(np.arange(6.0), [2, 3])


# --- SQUAREM ------------------------------------------------------------------------------


def overlapping_gaussian(seed=0, n_sequences=60, n_times=40):
    """States whose emissions overlap, where plain EM creeps."""
    rng = np.random.default_rng(seed)
    states = draw_states(TRUE_START, TRUE_TRANS, n_sequences, n_times, rng)
    means = np.array([[0.0, 0.0], [1.2, 1.0], [-1.0, 1.0]])
    return means[states] + rng.normal(size=(*states.shape, D))


def hmmlearn_mean_gradient(model, x, ctype, step=1e-5):
    """d/d means of hmmlearn's log-likelihood at the parameters of ``model``, by central
    differences (the means have no prior, so it is zero at the optimum)."""
    ref = hmmlearn_hmm.GaussianHMM(K, covariance_type=ctype, init_params="")
    ref.startprob_, ref.transmat_, ref.covars_ = model.startprob_, model.transmat_, model.covars_
    concat, lengths = x.reshape(-1, D), np.full(len(x), x.shape[1])
    gradient = np.empty((K, D))
    for k in range(K):
        for j in range(D):
            scores = []
            for sign in (1, -1):
                ref.means_ = model.means_.copy()
                ref.means_[k, j] += sign * step
                scores.append(ref.score(concat, lengths))
            gradient[k, j] = (scores[0] - scores[1]) / (2 * step)
    return gradient


@pytest.mark.parametrize("ctype", ["full", "diag", "spherical", "tied"])
def test_squarem_reaches_the_plain_em_optimum_in_fewer_passes(ctype):
    x = overlapping_gaussian()
    init = initial(ctype)
    fits = {}
    for method in ("none", "squarem"):
        fits[method] = dem.GaussianHMM(
            K,
            covariance_type=ctype,
            tol=1e-10,
            max_iter=2000,
            accelerate=method,
            startprob_init=init["startprob"],
            transmat_init=init["transmat"],
            means_init=init["means"],
            covars_init=init["covars"],
        ).fit(x)
        assert fits[method].converged_
        trace = np.array(fits[method].lower_bounds_)
        assert np.all(np.diff(trace) >= -1e-12 * np.abs(trace[1:]))
    plain, fast = fits["none"], fits["squarem"]
    assert fast.score(x) == pytest.approx(plain.score(x), rel=1e-9)
    np.testing.assert_allclose(fast.means_, plain.means_, atol=1e-4)
    np.testing.assert_allclose(fast.transmat_, plain.transmat_, atol=1e-4)
    assert 2 * fast.n_iter_ <= plain.n_iter_
    # independent of dem: hmmlearn's log-likelihood is flat in the means there (moving
    # every mean by 1e-3 gives gradients of 0.2 to 0.6 on these data)
    assert np.abs(hmmlearn_mean_gradient(fast, x, ctype)).max() < 0.01


def test_categorical_squarem_keeps_zeros_and_reaches_the_plain_em_optimum():
    rng = np.random.default_rng(3)
    emission = np.array(
        [[0.7, 0.1, 0.1, 0.05, 0.05], [0.05, 0.1, 0.7, 0.1, 0.05], [0.1, 0.05, 0.05, 0.1, 0.7]]
    )
    trans = np.array([[0.8, 0.2, 0.0], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    states = draw_states(TRUE_START, trans, 60, 40, rng)
    draws = rng.random(states.shape)[..., None]
    x = (draws >= np.cumsum(emission, axis=1)[states]).sum(axis=-1).astype(float)
    init = {
        "startprob_init": [0.4, 0.3, 0.3],
        "transmat_init": np.array([[0.6, 0.4, 0.0], [0.3, 0.4, 0.3], [0.3, 0.3, 0.4]]),
        "emissionprob_init": rng.dirichlet(np.full(5, 5.0), size=K),
    }
    plain, fast = (
        dem.CategoricalHMM(K, tol=1e-9, max_iter=3000, accelerate=method, **init).fit(x)
        for method in ("none", "squarem")
    )
    assert plain.converged_ and fast.converged_
    assert fast.transmat_[0, 2] == 0.0  # a zero EM keeps stays zero under extrapolation
    # plain EM creeps: at tol=1e-9 it stops ~2e-8 (relative) short of the optimum
    assert fast.score(x) == pytest.approx(plain.score(x), rel=1e-7)
    assert fast.score(x) >= plain.score(x)
    np.testing.assert_allclose(fast.emissionprob_, plain.emissionprob_, atol=1e-4)
    np.testing.assert_allclose(fast.transmat_, plain.transmat_, atol=1e-4)
    assert 3 * fast.n_iter_ <= plain.n_iter_
    # independent of dem: moving probability between two symbols of a state does not
    # change hmmlearn's log-likelihood to first order (stationary on the simplex)
    ref = hmmlearn_hmm.CategoricalHMM(K, init_params="", n_features=5)
    ref.startprob_, ref.transmat_ = fast.startprob_, fast.transmat_
    concat, lengths = x.reshape(-1, 1).astype(np.int64), np.full(len(x), x.shape[1])
    step = 1e-6
    for k in range(K):
        for m in range(4):
            scores = []
            for sign in (1, -1):
                ref.emissionprob_ = fast.emissionprob_.copy()
                ref.emissionprob_[k, m] += sign * step
                ref.emissionprob_[k, m + 1] -= sign * step
                scores.append(ref.score(concat, lengths))
            assert abs(scores[0] - scores[1]) / (2 * step) < 0.05


def test_squarem_vectors_map_onto_valid_parameters():
    model = GaussianHMMModel(K, covariance_type="full")
    like = initial("full")
    like["startprob"] = np.array([0.5, 0.5, 0.0])
    like["precisions_cholesky"] = kernels.precision_cholesky(like["covars"], "full")
    vector = model.pack(like)
    back = model.unpack(vector, like)
    for name, value in like.items():
        np.testing.assert_allclose(back[name], value, rtol=1e-12, atol=1e-15)
    wild = model.unpack(vector + np.random.default_rng(0).normal(scale=3.0, size=vector.size), like)
    assert wild["startprob"][2] == 0.0 and wild["startprob"].sum() == pytest.approx(1.0)
    assert np.all(wild["transmat"] > 0.0) and np.allclose(wild["transmat"].sum(axis=1), 1.0)
    assert np.all(np.linalg.eigvalsh(wild["covars"]) > 0.0)
    np.testing.assert_allclose(
        np.linalg.inv(wild["covars"]),
        np.einsum("kij,klj->kil", wild["precisions_cholesky"], wild["precisions_cholesky"]),
        rtol=1e-8,
    )
    with pytest.raises(ValueError, match="No valid parameters"):
        model.unpack(np.full(vector.size, np.nan), like)
    with pytest.raises(ValueError, match="No valid parameters"):
        model.unpack(np.full(vector.size, 800.0), like)  # exp overflows in the covariances
    with pytest.raises(ValueError, match=r"'accelerate' parameter of \w+ must be a str among"):
        dem.CategoricalHMM(K, accelerate="warp").fit(categorical_data()[0])
