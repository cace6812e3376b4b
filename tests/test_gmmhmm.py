"""dem.GMMHMM (Gaussian-mixture emissions): parity with hmmlearn's GMMHMM from identical
initial parameters, for many (ragged) sequences and for one sequence across chunks;
Viterbi and posteriors; chunk invariance; priors; checkpoints and resume; the command
line (synth, fit, show, predict); SQUAREM; sampling."""

from __future__ import annotations

import logging
import os

import dask.array as da
import numpy as np
import pytest
import zarr
from hmmlearn import hmm as hmmlearn_hmm
from threadpoolctl import threadpool_limits
from typer.testing import CliRunner

import dem
from dem.cli import app
from dem.models.hmm import gmm, pad_sequences
from dem.restore import from_checkpoint
from dem.synth import read_truth

logging.getLogger("hmmlearn").setLevel(logging.ERROR)

K, M, D = 3, 2, 2
START = np.array([0.6, 0.3, 0.1])
TRANS = np.array([[0.9, 0.07, 0.03], [0.05, 0.9, 0.05], [0.1, 0.1, 0.8]])
CENTRES = np.array([[0.0, 0.0], [4.0, 4.0], [-4.0, 3.0]])
OFFSETS = np.array([[-1.0, 0.5], [1.0, -0.5]])  # of each state's two components


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(limits=1):
        yield


def states(n_times, rng):
    """A Markov chain by inverse CDF (written apart from dem's and hmmlearn's samplers)."""
    z = np.empty(n_times, dtype=np.int64)
    z[0] = np.searchsorted(np.cumsum(START), rng.random(), side="right")
    cdf = np.cumsum(TRANS, axis=1)
    for t, u in enumerate(rng.random(n_times - 1), start=1):
        z[t] = min(int(np.searchsorted(cdf[z[t - 1]], u, side="right")), K - 1)
    return z


def sequence(n_times, seed):
    """One sequence: a state's emission is one of its two components, chosen evenly."""
    rng = np.random.default_rng(seed)
    z = states(n_times, rng)
    mix = rng.integers(0, M, n_times)
    return CENTRES[z] + OFFSETS[mix] + rng.normal(size=(n_times, D)) * 0.7


def initial(ctype, seed=5):
    rng = np.random.default_rng(seed)
    covariance = np.array([[1.2, 0.3], [0.3, 0.9]])
    return {
        "startprob": np.array([0.5, 0.3, 0.2]),
        "transmat": rng.dirichlet(np.full(K, 4.0), size=K),
        "weights": rng.dirichlet(np.full(M, 3.0), size=K),
        "means": CENTRES[:, None, :] + OFFSETS[None] + rng.normal(scale=0.5, size=(K, M, D)),
        "covars": {
            "full": np.tile(covariance, (K, M, 1, 1)),
            "tied": np.tile(covariance, (K, 1, 1)),
            "diag": rng.uniform(0.5, 2.0, (K, M, D)),
            "spherical": rng.uniform(0.5, 2.0, (K, M)),
        }[ctype],
    }


def reference(ctype, init, x, lengths=None, n_iter=1, **priors):
    """hmmlearn's GMMHMM from ``init`` after ``n_iter`` iterations."""
    ref = hmmlearn_hmm.GMMHMM(
        K, M, covariance_type=ctype, n_iter=n_iter, tol=-np.inf, init_params="", **priors
    )
    ref.startprob_, ref.transmat_ = init["startprob"], init["transmat"]
    ref.weights_, ref.means_, ref.covars_ = init["weights"], init["means"], init["covars"]
    return ref.fit(x, lengths) if n_iter else ref


def continued(ref, x, lengths, n_iter):
    """``ref`` fitted ``n_iter`` more iterations from where it stands."""
    ref.n_iter = ref.monitor_.n_iter = n_iter  # (its monitor keeps its own copy)
    return ref.fit(x, lengths)


def ours(ctype, init, x, max_iter, lengths=None, **options):
    model = dem.GMMHMM(
        K,
        M,
        covariance_type=ctype,
        max_iter=max_iter,
        tol=options.pop("tol", 0.0),
        startprob_init=init["startprob"],
        transmat_init=init["transmat"],
        weights_init=init["weights"],
        means_init=init["means"],
        covars_init=init["covars"],
        **options,
    )
    with pytest.warns(dem.ConvergenceWarning):
        return model.fit(x, lengths)


def relative(ours, theirs):
    return float(np.max(np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1e-14)))


def assert_same(model, ref, tol=1e-8):
    assert relative(model.startprob_, ref.startprob_) < tol
    assert relative(model.transmat_, ref.transmat_) < tol
    assert relative(model.weights_, ref.weights_) < tol
    # relative to the scale: a mean near zero is the difference of large sums
    assert np.max(np.abs(model.means_ - ref.means_)) < tol * np.max(np.abs(ref.means_))
    assert np.max(np.abs(model.covars_ - ref.covars_)) < tol * np.max(np.abs(ref.covars_))


@pytest.fixture(scope="module")
def ragged():
    """Six sequences of 60 to 150 steps: hmmlearn's concatenation and dem's padding."""
    lengths = np.array([150, 60, 120, 90, 150, 75])
    parts = [sequence(n, seed) for seed, n in enumerate(lengths)]
    concatenated = np.concatenate(parts)
    padded, _ = pad_sequences(concatenated, lengths)
    return concatenated, padded, lengths


# --- many sequences -------------------------------------------------------------------------


@pytest.mark.parametrize("ctype", ["diag", "full", "tied", "spherical"])
def test_many_sequences_match_hmmlearn_after_1_and_10_iterations(ragged, ctype):
    concatenated, padded, lengths = ragged
    init = initial(ctype)
    ref = reference(ctype, init, concatenated, lengths, n_iter=1)
    assert_same(ours(ctype, init, padded, 1, lengths), ref)
    ref = continued(ref, concatenated, lengths, 9)
    model = ours(ctype, init, da.from_array(padded, chunks=(2, -1, -1)), 10, lengths)
    assert model.n_iter_ == 10
    assert_same(model, ref)
    assert model.score(padded, lengths) == pytest.approx(ref.score(concatenated, lengths), 1e-10)


def test_viterbi_and_posteriors_match_hmmlearn(ragged):
    concatenated, padded, lengths = ragged
    init = initial("full")
    ref = reference("full", init, concatenated, lengths, n_iter=0)
    model = ours("full", init, padded, 1, lengths)  # then set to hmmlearn's parameters
    model.startprob_, model.transmat_ = init["startprob"], init["transmat"]
    model.weights_, model.means_, model.covars_ = init["weights"], init["means"], init["covars"]
    model.precisions_cholesky_ = gmm.precision_cholesky(init["covars"], "full")
    valid = np.arange(padded.shape[1])[None, :] < lengths[:, None]
    path = model.predict(padded, lengths)
    np.testing.assert_array_equal(path[valid], ref.predict(concatenated, lengths))
    assert np.all(path[~valid] == -1)
    proba = model.predict_proba(padded, lengths)
    np.testing.assert_allclose(
        proba[valid], ref.predict_proba(concatenated, lengths), rtol=1e-9, atol=1e-12
    )
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    expected = [ref.score(concatenated[s : s + n]) for s, n in zip(starts, lengths, strict=True)]
    np.testing.assert_allclose(model.score_sequences(padded, lengths), expected, rtol=1e-11)


@pytest.mark.parametrize("ctype", ["diag", "full", "tied", "spherical"])
def test_priors_match_hmmlearn(ragged, ctype):
    concatenated, padded, lengths = ragged
    init = initial(ctype)
    rng = np.random.default_rng(7)
    priors = {
        "weights_prior": 2.0,
        "means_prior": rng.normal(size=(K, M, D)),
        "means_weight": rng.uniform(0.5, 3.0, size=(K, M)),
        "covars_prior": {
            "full": np.tile(0.2 * np.eye(D), (K, M, 1, 1)),
            "tied": np.tile(0.2 * np.eye(D), (K, 1, 1)),
            "diag": 1.5,
            "spherical": 1.0,
        }[ctype],
        "covars_weight": {"full": 1.0, "tied": 2.0, "diag": 0.3, "spherical": 0.4}[ctype],
    }
    ref = reference(ctype, init, concatenated, lengths, n_iter=3, **priors)
    assert_same(ours(ctype, init, padded, 3, lengths, **priors), ref)


def test_log_likelihood_never_decreases_and_squarem_reaches_it(ragged):
    _, padded, lengths = ragged
    init = initial("diag")
    starts = {f"{name}_init": value for name, value in init.items()}
    plain = dem.GMMHMM(K, M, tol=1e-9, max_iter=500, **starts).fit(padded, lengths)
    assert plain.converged_
    assert np.all(np.diff(plain.lower_bounds_) > -1e-12)
    fast = dem.GMMHMM(K, M, tol=1e-9, max_iter=500, accelerate="squarem", **starts)
    fast.fit(padded, lengths)
    assert fast.converged_
    assert fast.score(padded, lengths) >= plain.score(padded, lengths) - 1e-5


def test_empty_component_keeps_its_parameters(ragged):
    """A component of zero weight has no responsibility: hmmlearn divides 0 by 0 there;
    dem keeps its mean and covariance, and every other parameter is hmmlearn's."""
    concatenated, padded, lengths = ragged
    init = initial("diag")
    init["weights"] = init["weights"].copy()
    init["weights"][1] = [1.0, 0.0]
    model = ours("diag", init, padded, 1, lengths)
    assert model.weights_[1, 1] == 0.0
    np.testing.assert_array_equal(model.means_[1, 1], init["means"][1, 1])
    np.testing.assert_array_equal(model.covars_[1, 1], init["covars"][1, 1])
    with np.errstate(all="ignore"):
        ref = reference("diag", init, concatenated, lengths, n_iter=1)
    assert np.isnan(ref.covars_[1, 1]).all()  # 0 / 0: every later iteration is NaN
    assert relative(model.transmat_, ref.transmat_) < 1e-8
    assert relative(model.weights_, ref.weights_) < 1e-8
    np.testing.assert_allclose(model.means_[[0, 2]], ref.means_[[0, 2]], rtol=1e-8)
    np.testing.assert_allclose(model.covars_[[0, 2]], ref.covars_[[0, 2]], rtol=1e-8)
    np.testing.assert_allclose(model.means_[1, 0], ref.means_[1, 0], rtol=1e-8)


def test_default_init_recovers_the_generating_model():
    x = np.stack([sequence(400, seed) for seed in range(10, 20)])
    model = dem.GMMHMM(K, M, random_state=0, max_iter=200).fit(x)
    assert model.converged_
    order = np.argsort(model.means_.mean(axis=1)[:, 0])
    np.testing.assert_allclose(
        np.sort(model.means_.mean(axis=1)[order], axis=0),
        np.sort(CENTRES[np.argsort(CENTRES[:, 0])], axis=0),
        atol=0.3,
    )
    np.testing.assert_allclose(
        np.sort(np.diag(model.transmat_)), np.sort(np.diag(TRANS)), atol=0.05
    )


def test_sample_follows_the_parameters():
    init = initial("full")
    model = ours("full", init, np.stack([sequence(50, 3)]), 1)
    x, z = model.sample(400, 50, random_state=0)
    assert x.shape == (400, 50, D) and z.shape == (400, 50)
    for k in range(K):
        # the mean of a state's emissions is its weights' average of its means
        expected = model.weights_[k] @ model.means_[k]
        np.testing.assert_allclose(x[z == k].mean(axis=0), expected, atol=0.1)


# --- one long sequence across chunks --------------------------------------------------------

N_TIMES = 12_000


@pytest.fixture(scope="module")
def long_sequence():
    return sequence(N_TIMES, 99)


@pytest.mark.parametrize("ctype", ["diag", "full"])
def test_long_sequence_matches_hmmlearn_on_the_whole_sequence(long_sequence, ctype):
    x = da.from_array(long_sequence, chunks=(N_TIMES // 12, D))
    init = initial(ctype)
    ref = reference(ctype, init, long_sequence, n_iter=1)
    assert_same(ours(ctype, init, x, 1), ref)
    ref = continued(ref, long_sequence, None, 9)
    model = ours(ctype, init, x, 10)
    assert_same(model, ref)
    assert model.score(x) == pytest.approx(ref.score(long_sequence), rel=1e-10)
    path = model.predict(x)
    assert isinstance(path, da.Array)
    np.testing.assert_array_equal(path.compute(), ref.predict(long_sequence))


def test_long_sequence_is_chunk_invariant(long_sequence):
    init = initial("full")
    fits = [
        ours("full", init, da.from_array(long_sequence, chunks=(-(-N_TIMES // n), D)), 3)
        for n in (1, 7, 50)
    ]
    for other in fits[1:]:
        assert_same(other, fits[0], tol=1e-11)


def test_long_sequence_checkpoint_and_resume(long_sequence, tmp_path):
    path = tmp_path / "long.zarr"
    group = zarr.open_group(str(path), mode="w")
    group.create_array("X", data=long_sequence, chunks=(N_TIMES // 6, D))
    init = initial("diag")
    options = {
        "tol": 0.0,
        "startprob_init": init["startprob"],
        "transmat_init": init["transmat"],
        "weights_init": init["weights"],
        "means_init": init["means"],
        "covars_init": init["covars"],
    }
    straight = dem.GMMHMM(K, M, max_iter=5, **options)
    with pytest.warns(dem.ConvergenceWarning):
        straight.fit(str(path), variable="X")
    checkpoint = tmp_path / "fit.zarr"
    with pytest.warns(dem.ConvergenceWarning):
        dem.GMMHMM(K, M, max_iter=2, checkpoint=checkpoint, **options).fit(str(path), variable="X")
    resumed = dem.GMMHMM(K, M, max_iter=5, checkpoint=checkpoint, resume=True, **options)
    with pytest.warns(dem.ConvergenceWarning):
        resumed.fit(str(path), variable="X")
    for name in ("startprob_", "transmat_", "weights_", "means_", "covars_"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(straight, name))
    assert resumed.lower_bounds_ == straight.lower_bounds_
    saved = dem.load_checkpoint(checkpoint)
    assert saved.attrs["model"] == "gmm_hmm"
    assert saved["means"].dims == ("state", "mix", "feature")
    with pytest.warns(UserWarning, match="without converging"):
        restored = from_checkpoint(checkpoint)
    assert isinstance(restored, dem.GMMHMM) and restored.n_mix == M
    np.testing.assert_array_equal(restored.weights_, straight.weights_)


# --- the command line -----------------------------------------------------------------------


def invoke(*args):
    result = CliRunner().invoke(app, [os.fspath(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_cli_synth_fit_show_predict(process_client, tmp_path):
    scheduler = ("--scheduler", process_client.scheduler.address)
    data = tmp_path / "data.zarr"
    code, output = invoke(
        "synth", "gmmhmm", data, "--seed", "1", "-n", "40", "-d", "2", "--times", "40",
        "-k", "2", "--n-mix", "2", "--ragged", "--chunk-rows", "20",
    )  # fmt: skip
    assert code == 0, output
    assert f"dem fit gmmhmm {data}" in output
    truth = read_truth(data)
    assert truth["means"].shape == (2, 2, 2) and truth["weights"].shape == (2, 2)
    checkpoint = tmp_path / "fit.zarr"
    code, output = invoke(
        "fit", "gmmhmm", data, "--var", "X", "--lengths", "lengths", "-k", "2", "--n-mix", "2",
        "--max-iter", "5", "--checkpoint", checkpoint, *scheduler,
    )  # fmt: skip
    assert code == 0, output
    reference_fit = dem.GMMHMM(2, 2, max_iter=5, random_state=0)
    with pytest.warns(dem.ConvergenceWarning):
        reference_fit.fit(data, "lengths", variable="X")
    with pytest.warns(UserWarning, match="without converging"):
        restored = from_checkpoint(checkpoint)
    for name in ("startprob_", "transmat_", "weights_", "means_", "covars_"):
        np.testing.assert_allclose(
            getattr(restored, name), getattr(reference_fit, name), rtol=1e-10, atol=1e-12
        )
    code, output = invoke("show", checkpoint)
    assert code == 0 and "gmm_hmm" in output, output
    out = tmp_path / "predicted.zarr"
    code, output = invoke(
        "predict", checkpoint, data, "--var", "X", "--lengths", "lengths", "--out", out,
        *scheduler,
    )  # fmt: skip
    assert code == 0, output
    states = zarr.open_group(str(out), mode="r")["states"][:]
    x = zarr.open_group(str(data), mode="r")["X"][:]
    lengths = zarr.open_group(str(data), mode="r")["lengths"][:]
    np.testing.assert_array_equal(states, reference_fit.predict(x, lengths))


def test_cli_fit_predict_one_long_sequence(process_client, long_sequence, tmp_path):
    """`dem fit gmmhmm` on one 2-D sequence in a Zarr store spanning several chunks, and
    `dem predict` writing its Viterbi path, as the Python API gives them."""
    scheduler = ("--scheduler", process_client.scheduler.address)
    data = tmp_path / "long.zarr"
    group = zarr.open_group(str(data), mode="w")
    group.create_array("X", data=long_sequence[:6_000], chunks=(1_000, D))
    checkpoint = tmp_path / "fit.zarr"
    code, output = invoke(
        "fit", "gmmhmm", data, "--var", "X", "-k", "3", "--n-mix", "2", "--max-iter", "3",
        "--checkpoint", checkpoint, *scheduler,
    )  # fmt: skip
    assert code == 0, output
    reference_fit = dem.GMMHMM(3, 2, max_iter=3, random_state=0)
    with pytest.warns(dem.ConvergenceWarning):
        reference_fit.fit(str(data), variable="X")
    with pytest.warns(UserWarning, match="without converging"):
        restored = from_checkpoint(checkpoint)
    for name in ("startprob_", "transmat_", "weights_", "means_", "covars_"):
        np.testing.assert_allclose(
            getattr(restored, name), getattr(reference_fit, name), rtol=1e-10, atol=1e-12
        )
    out = tmp_path / "predicted.zarr"
    code, output = invoke("predict", checkpoint, data, "--var", "X", "--out", out, *scheduler)
    assert code == 0, output
    states = zarr.open_group(str(out), mode="r")["states"]
    assert states.shape == (6_000,)
    expected = reference_fit.predict(da.from_array(long_sequence[:6_000], chunks=(1_000, D)))
    np.testing.assert_array_equal(states[:], expected.compute())


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"weights_init": np.ones((K, M))}, "weights_init must hold probabilities"),
        ({"means_init": np.zeros((K, D))}, r"means_init must have shape \(3, 2, 2\)"),
        ({"covars_init": np.ones((K, D))}, r"covars_init must have shape \(3, 2, 2\)"),
        ({"covars_init": -np.ones((K, M, D))}, "covars_init must be positive"),
        ({"n_mix": 0}, "'n_mix' parameter of GMMHMM"),
    ],
)
def test_bad_initial_parameters(ragged, options, message):
    _, padded, lengths = ragged
    with pytest.raises(ValueError, match=message):
        dem.GMMHMM(K, **{"n_mix": M, **options}).fit(padded, lengths)
