"""One HMM sequence longer than a chunk (dem.models.hmm.long): parity with hmmlearn on
the whole sequence in memory, chunk invariance, Viterbi, lazy outputs, checkpoints and
a real cluster."""

from __future__ import annotations

import logging

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
from hmmlearn import hmm as hmmlearn_hmm
from threadpoolctl import threadpool_limits

import dem
from dem.models.hmm import chain, long, one_pass

logging.getLogger("hmmlearn").setLevel(logging.ERROR)

K = 3
D = 2
START = np.array([0.6, 0.3, 0.1])
TRANS = np.array([[0.9, 0.07, 0.03], [0.05, 0.9, 0.05], [0.1, 0.1, 0.8]])
MEANS = np.array([[0.0, 0.0], [2.0, 2.0], [-2.0, 1.5]])
N_TIMES = 200_000


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(limits=1):
        yield


def states(n_times, seed, start=START, trans=TRANS):
    """A Markov chain by inverse CDF (written apart from dem's and hmmlearn's samplers)."""
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(trans, axis=1).tolist()
    draws = rng.random(n_times).tolist()
    out = np.empty(n_times, dtype=np.int64)
    state = int(np.searchsorted(np.cumsum(start), draws[0], side="right"))
    for t, u in enumerate(draws):
        if t:
            row, state = cdf[state], 0
            while state < K - 1 and u >= row[state]:
                state += 1
        out[t] = state
    return out


@pytest.fixture(scope="module")
def gaussian_sequence():
    z = states(N_TIMES, 0)
    rng = np.random.default_rng(1)
    return MEANS[z] + rng.normal(size=(N_TIMES, D)) * np.array([1.0, 0.8])


@pytest.fixture(scope="module")
def symbol_sequence():
    z = states(N_TIMES, 2)
    rng = np.random.default_rng(3)
    emission = np.array([[0.7, 0.2, 0.1, 0.0], [0.1, 0.1, 0.4, 0.4], [0.25, 0.25, 0.25, 0.25]])
    cdf = np.cumsum(emission, axis=1)[z]
    return (rng.random(N_TIMES)[:, None] >= cdf).sum(axis=1).clip(0, 3)


def initial(ctype):
    rng = np.random.default_rng(5)
    covars = {
        "diag": np.array([[1.5, 1.0], [1.0, 2.0], [2.0, 2.0]]),
        "full": np.array(
            [[[1.5, 0.3], [0.3, 1.0]], [[1.0, -0.2], [-0.2, 2.0]], [[2.0, 0.0], [0.0, 2.0]]]
        ),
        "tied": np.array([[1.5, 0.3], [0.3, 1.0]]),
    }[ctype]
    return {
        "startprob": np.array([0.5, 0.3, 0.2]),
        "transmat": rng.dirichlet(np.full(K, 4.0), size=K),
        "means": MEANS + rng.normal(scale=0.5, size=(K, D)),
        "covars": covars,
    }


def reference_gaussian(ctype, init, x, n_iter):
    prior = 1e-2 * np.eye(D) if ctype in ("full", "tied") else 1e-2
    # hmmlearn's scaling implementation: its log-space one differs from it by 1.2e-8 after
    # 10 iterations of full covariances on 200,000 steps (its own round-off; dem agrees
    # with the scaling one to 1e-13)
    ref = hmmlearn_hmm.GaussianHMM(
        K,
        covariance_type=ctype,
        n_iter=n_iter,
        tol=-np.inf,
        init_params="",
        covars_prior=prior,
        implementation="scaling",
    )
    ref.startprob_, ref.transmat_ = init["startprob"], init["transmat"]
    ref.means_, ref.covars_ = init["means"], init["covars"]
    return ref.fit(x) if n_iter else ref


def ours_gaussian(ctype, init, x, max_iter, **options):
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
    with pytest.warns(dem.ConvergenceWarning):
        return model.fit(x)


def path_log_prob(model, path, symbols):
    """log P(path, symbols) of a CategoricalHMM, summed term by term."""
    with np.errstate(divide="ignore"):
        return float(
            np.log(model.startprob_[path[0]])
            + np.log(model.transmat_[path[:-1], path[1:]]).sum()
            + np.log(model.emissionprob_[path, symbols]).sum()
        )


def relative(ours, theirs):
    """Largest relative difference (probabilities below 1e-14 count as zero: their last
    digits are round-off of the normalisers in either implementation)."""
    return float(np.max(np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1e-14)))


# tied: its scatter counts only the time steps a chunk's pass keeps (the one-pass edges
# were counted twice before)
@pytest.mark.parametrize("ctype", ["diag", "full", "tied"])
def test_gaussian_matches_hmmlearn_on_the_whole_sequence(gaussian_sequence, ctype):
    x = da.from_array(gaussian_sequence, chunks=(N_TIMES // 20, D))
    init = initial(ctype)
    for n_iter in (1, 10):
        ref = reference_gaussian(ctype, init, gaussian_sequence, n_iter)
        ours = ours_gaussian(ctype, init, x, n_iter)
        assert ours.n_iter_ == n_iter
        assert relative(ours.startprob_, ref.startprob_) < 1e-8
        assert relative(ours.transmat_, ref.transmat_) < 1e-8
        # relative to the means' scale: a mean near zero is the difference of large sums
        assert np.max(np.abs(ours.means_ - ref.means_)) < 1e-8 * np.max(np.abs(ref.means_))
        scale = np.max(np.abs(ref._covars_))
        assert np.max(np.abs(ours.covars_ - ref._covars_)) < 1e-8 * scale
    assert ours.score(x) == pytest.approx(ref.score(gaussian_sequence), rel=1e-10)


def test_categorical_matches_hmmlearn_on_the_whole_sequence(symbol_sequence):
    rng = np.random.default_rng(7)
    init = {
        "startprob": np.array([0.2, 0.5, 0.3]),
        "transmat": rng.dirichlet(np.full(K, 4.0), size=K),
        "emissionprob": rng.dirichlet(np.full(4, 2.0), size=K),
    }
    x = da.from_array(symbol_sequence, chunks=N_TIMES // 20)
    for n_iter in (1, 10):
        ref = hmmlearn_hmm.CategoricalHMM(K, n_iter=n_iter, tol=-np.inf, init_params="")
        ref.startprob_, ref.transmat_ = init["startprob"], init["transmat"]
        ref.emissionprob_ = init["emissionprob"]
        ref.fit(symbol_sequence[:, None])
        ours = dem.CategoricalHMM(
            K,
            n_features=4,
            max_iter=n_iter,
            tol=0.0,
            startprob_init=init["startprob"],
            transmat_init=init["transmat"],
            emissionprob_init=init["emissionprob"],
        )
        with pytest.warns(dem.ConvergenceWarning):
            ours.fit(x)
        assert relative(ours.startprob_, ref.startprob_) < 1e-8
        assert relative(ours.transmat_, ref.transmat_) < 1e-8
        assert relative(ours.emissionprob_, ref.emissionprob_) < 1e-8
    # symbols tie paths exactly now and then (the same factors in another order), and
    # round-off picks among them: compare the path's probability with hmmlearn's best
    path = ours.predict(x).compute()
    ref.startprob_, ref.transmat_, ref.emissionprob_ = (
        ours.startprob_,
        ours.transmat_,
        ours.emissionprob_,
    )
    best, theirs = ref.decode(symbol_sequence[:, None])
    # (the same sum for both paths; hmmlearn's own accumulates its round-off, ~1e-13)
    mine = path_log_prob(ours, path, symbol_sequence)
    assert mine == pytest.approx(path_log_prob(ours, theirs, symbol_sequence), rel=1e-15)
    assert mine == pytest.approx(best, rel=1e-12)
    assert ours.score(x) == pytest.approx(ref.score(symbol_sequence[:, None]), rel=1e-10)


def test_viterbi_and_posteriors_match_hmmlearn(gaussian_sequence):
    x = gaussian_sequence[:50_000]
    ref = reference_gaussian("diag", initial("diag"), x, 3)
    ours = ours_gaussian("diag", initial("diag"), da.from_array(x, chunks=(3_001, D)), 3)
    ours.startprob_, ours.transmat_, ours.means_ = ref.startprob_, ref.transmat_, ref.means_
    ours.covars_ = ref._covars_
    ours.precisions_cholesky_ = 1.0 / np.sqrt(ref._covars_)
    lazy = da.from_array(x, chunks=(3_001, D))
    path = ours.predict(lazy)
    assert isinstance(path, da.Array) and path.chunks == (lazy.chunks[0],)
    assert np.array_equal(path.compute(), ref.predict(x))
    posteriors = ours.predict_proba(lazy)
    assert isinstance(posteriors, da.Array)
    np.testing.assert_allclose(posteriors.compute(), ref.predict_proba(x), atol=1e-10)
    assert ours.score_sequences(lazy)[0] == pytest.approx(ref.score(x), rel=1e-11)
    assert np.array_equal(ours.predict(x), ref.predict(x))  # numpy in, numpy out


def test_chunking_changes_only_round_off(gaussian_sequence):
    x = gaussian_sequence[:60_000]
    fits = [
        ours_gaussian("diag", initial("diag"), da.from_array(x, chunks=(-(-len(x) // n), D)), 5)
        for n in (1, 7, 50)
    ]
    for other in fits[1:]:
        assert relative(other.transmat_, fits[0].transmat_) < 1e-11
        assert relative(other.means_, fits[0].means_) < 1e-11
        assert relative(other.covars_, fits[0].covars_) < 1e-11
        np.testing.assert_allclose(other.lower_bounds_, fits[0].lower_bounds_, rtol=1e-12)


def test_operators_survive_impossible_steps():
    """Zeros in the transitions and emissions: the scaled operators against hmmlearn's
    log-space forward–backward."""
    rng = np.random.default_rng(11)
    transmat = np.array([[0.0, 1.0, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]])
    emission = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.2, 0.0, 0.8]])
    z = states(20_000, 13, start=np.array([1.0, 0.0, 0.0]), trans=transmat)
    cdf = np.cumsum(emission, axis=1)[z]
    x = (rng.random(len(z))[:, None] >= cdf).sum(axis=1).clip(0, 2)
    ref = hmmlearn_hmm.CategoricalHMM(K, n_iter=3, tol=-np.inf, init_params="")
    ref.startprob_, ref.transmat_, ref.emissionprob_ = np.array([1.0, 0, 0]), transmat, emission
    ref.fit(x[:, None])
    ours = dem.CategoricalHMM(
        K,
        n_features=3,
        max_iter=3,
        tol=0.0,
        startprob_init=[1.0, 0, 0],
        transmat_init=transmat,
        emissionprob_init=emission,
    )
    with pytest.warns(dem.ConvergenceWarning):
        ours.fit(da.from_array(x, chunks=997))
    np.testing.assert_allclose(ours.transmat_, ref.transmat_, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(ours.emissionprob_, ref.emissionprob_, rtol=1e-9, atol=1e-14)
    path = ours.predict(da.from_array(x, chunks=997)).compute()
    ref.startprob_, ref.transmat_, ref.emissionprob_ = (
        ours.startprob_,
        ours.transmat_,
        ours.emissionprob_,
    )
    best, theirs = ref.decode(x[:, None])
    assert path_log_prob(ours, path, x) == pytest.approx(path_log_prob(ours, theirs, x), rel=1e-15)
    assert path_log_prob(ours, path, x) == pytest.approx(best, rel=1e-12)


def test_scan_messages_against_brute_force():
    """The chunk-level scan and composition against dense products of the per-step
    matrices on a short sequence (every path's probability summed)."""
    rng = np.random.default_rng(17)
    n, k = 12, 3
    log_b = rng.normal(size=(n, k))
    transmat = rng.dirichlet(np.ones(k), size=k)
    start = rng.dirichlet(np.ones(k))
    steps = [np.diag(np.exp(log_b[t])) @ transmat for t in range(n)]
    pieces = [slice(0, 5), slice(5, 6), slice(6, 12)]
    found = [chain.forward_operators(log_b[p, :, None], transmat) for p in pieces]
    operators = np.stack([f[0][0] for f in found])
    scale = np.stack([f[1][0] for f in found])
    predicted, backward, loglik = chain.scan(operators, scale, start, np.ones(k))
    total = start @ np.linalg.multi_dot(steps) @ np.ones(k)
    assert loglik.sum() == pytest.approx(np.log(total), rel=1e-13)
    dense = [
        np.linalg.multi_dot(steps[p]) if p.stop - p.start > 1 else steps[p.start] for p in pieces
    ]
    for s in range(1, 3):
        expected = start @ np.linalg.multi_dot([np.eye(k), *dense[:s]])
        np.testing.assert_allclose(predicted[s], expected / expected.sum(), rtol=1e-12)
    for s in range(2):
        expected = np.linalg.multi_dot([*dense[s + 1 :], np.eye(k)]) @ np.ones(k)
        np.testing.assert_allclose(backward[s], expected / expected.max(), rtol=1e-12)
    joined = chain.chain(operators, scale)
    np.testing.assert_allclose(
        np.exp(joined[1])[:, None] * joined[0], np.linalg.multi_dot(dense), rtol=1e-12
    )


@pytest.fixture
def long_store(tmp_path, gaussian_sequence):
    path = str(tmp_path / "long.zarr")
    group = zarr.open_group(path, mode="w")
    group.create_array(
        "X", data=gaussian_sequence[:30_000], chunks=(4_000, D), dimension_names=("time", "feature")
    )
    return path


def test_zarr_checkpoint_resume_is_bit_identical(long_store, tmp_path):
    def fit(max_iter, checkpoint, resume=False):
        model = dem.GaussianHMM(
            K, max_iter=max_iter, tol=0.0, random_state=0, checkpoint=checkpoint, resume=resume
        )
        with pytest.warns(dem.ConvergenceWarning):
            return model.fit(long_store, variable="X")

    whole = fit(4, str(tmp_path / "whole.zarr"))
    fit(2, str(tmp_path / "cut.zarr"))
    resumed = fit(4, str(tmp_path / "cut.zarr"), resume=True)
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        assert np.array_equal(getattr(resumed, name), getattr(whole, name))
    assert resumed.lower_bounds_ == whole.lower_bounds_
    with pytest.warns(UserWarning, match="without converging"):
        restored = dem.from_checkpoint(str(tmp_path / "whole.zarr"))
    assert np.array_equal(restored.means_, whole.means_)
    states_ = whole.predict(long_store, variable="X")
    assert isinstance(states_, da.Array) and states_.chunks == ((4_000,) * 7 + (2_000,),)
    in_memory = zarr.open_array(long_store + "/X", mode="r")[:]
    assert np.array_equal(states_.compute(), whole.predict(in_memory))
    labelled = whole.predict(xr.open_zarr(long_store, consolidated=False)["X"])
    assert isinstance(labelled, xr.DataArray) and labelled.dims == ("time",)
    assert zarr.open_group(long_store, mode="r")["X"].shape == (30_000, D)  # untouched


def test_log_likelihood_never_decreases_with_squarem(gaussian_sequence):
    x = da.from_array(gaussian_sequence[:20_000], chunks=(3_000, D))
    plain = dem.GaussianHMM(K, max_iter=40, tol=1e-7, random_state=0).fit(x)
    assert np.all(np.diff(plain.lower_bounds_) > -1e-12)
    fast = dem.GaussianHMM(K, max_iter=40, tol=1e-7, random_state=0, accelerate="squarem").fit(x)
    assert fast.lower_bound_ >= plain.lower_bound_ - 1e-6


def test_bad_input_is_named(gaussian_sequence):
    x = gaussian_sequence[:5_000].copy()
    x[3_210, 1] = np.nan
    with pytest.raises(ValueError, match=r"rows? 3210"):
        dem.GaussianHMM(K, max_iter=2, random_state=0).fit(da.from_array(x, chunks=(1_000, D)))
    with pytest.raises(ValueError, match="one sequence"):
        dem.GaussianHMM(K).fit(gaussian_sequence[:100], lengths=[100])
    with pytest.raises(ValueError, match="must be"):
        dem.GaussianHMM(K).fit(np.zeros(10))
    symbols = np.zeros(3_000)
    symbols[2_500] = 7
    with pytest.raises(ValueError, match="2000-2999"):
        dem.CategoricalHMM(2, n_features=3, max_iter=2).fit(da.from_array(symbols, chunks=1_000))


def test_on_a_process_cluster_as_in_one_process(long_store):
    from distributed import Client, LocalCluster

    local = dem.GaussianHMM(K, max_iter=3, tol=0.0, random_state=0)
    with pytest.warns(dem.ConvergenceWarning):
        local.fit(long_store, variable="X")
    path = local.predict(long_store, variable="X").compute()
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster),
    ):
        remote = dem.GaussianHMM(K, max_iter=3, tol=0.0, random_state=0)
        with pytest.warns(dem.ConvergenceWarning):
            remote.fit(long_store, variable="X")
        remote_path = remote.predict(long_store, variable="X").compute()
    assert np.array_equal(remote.means_, local.means_)
    assert np.array_equal(remote.transmat_, local.transmat_)
    assert remote.lower_bounds_ == local.lower_bounds_
    assert np.array_equal(remote_path, path)


def test_segment_messages_are_tiny():
    """What travels between the passes is K² + K numbers per chunk."""
    x = np.random.default_rng(0).normal(size=(5_000, D))
    model = dem.GaussianHMM(K, max_iter=1, random_state=0)
    with pytest.warns(dem.ConvergenceWarning):
        model.fit(x)
    hmm_model = model._model(D)
    operator, scale = long.chunk_operator(hmm_model, model._params(), x)
    assert operator.shape == (K, K) and scale.shape == (K,)


@pytest.mark.parametrize(
    "transmat",
    [
        np.array([[0.8, 0.15, 0.05], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]),  # forgets: coalesces
        np.array([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.0, 0.0, 1.0]]),  # never forgets state 2
    ],
)
def test_coalescing_operators_against_log_space_products(transmat):
    """Segments of 300 steps (rows coalesce after 8–16 steps where the chain forgets):
    every operator entry against the product of the per-step matrices in log space."""
    from scipy.special import logsumexp

    rng = np.random.default_rng(23)
    n_times, k, n_segments = 300, 3, 4
    log_b = rng.normal(size=(n_times, k, n_segments)) * 2.0
    operators, scale = chain.forward_operators(log_b, transmat)
    with np.errstate(divide="ignore"):
        log_a = np.log(transmat)
    for s in range(n_segments):
        log_g = np.where(np.eye(k) > 0, 0.0, -np.inf)
        for t in range(n_times):  # G ← G diag(b_t) A, in logarithms
            log_g = logsumexp((log_g + log_b[t, :, s])[:, :, None] + log_a[None], axis=1)
        with np.errstate(divide="ignore"):
            ours = scale[s][:, None] + np.log(operators[s])
        finite = np.isfinite(log_g)
        np.testing.assert_array_equal(np.isfinite(ours), finite)
        np.testing.assert_allclose(ours[finite], log_g[finite], rtol=1e-12)


def test_chains_that_never_forget_match_hmmlearn(gaussian_sequence, monkeypatch):
    """A chain of period two (state 0 at every other step): the segments' products
    never coalesce (they remember the parity), so no chunk has an interior. Small
    chunks go to the client whole as edges, large ones take the two-pass path; both
    against hmmlearn on the whole sequence."""
    taken = []
    chunk_pass = long.chunk_pass

    def recorded(model, params, x):
        found = chunk_pass(model, params, x)
        taken.append("two passes" if found.interior is None else "edges")
        return found

    monkeypatch.setattr(long, "chunk_pass", recorded)
    x = gaussian_sequence[:40_000]
    init = initial("diag")
    init["transmat"] = np.array([[0.0, 0.6, 0.4], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    ref = reference_gaussian("diag", init, x, 3)
    chunks = ((3_000, 10_000, 3_000, 10_000, 14_000), (D,))
    ours = ours_gaussian("diag", init, da.from_array(x, chunks=chunks), 3)
    assert {"two passes", "edges"} <= set(taken)
    assert relative(ours.transmat_, ref.transmat_) < 1e-8
    assert relative(ours.startprob_, ref.startprob_) < 1e-8
    assert np.max(np.abs(ours.means_ - ref.means_)) < 1e-8 * np.max(np.abs(ref.means_))
    assert np.max(np.abs(ours.covars_ - ref._covars_)) < 1e-8 * np.max(np.abs(ref._covars_))


def test_one_pass_against_forward_backward_in_log_space(gaussian_sequence):
    """A chunk's interior statistics plus its edges' (the one-pass path) against
    posteriors from a log-space forward–backward of the whole chunk (scipy's
    logsumexp), for a chunk in the middle of a sequence with given messages."""
    from scipy.special import logsumexp

    x = gaussian_sequence[:6_000]
    init = initial("diag")
    model = dem.GaussianHMM(K, covariance_type="diag")._model(D)
    params = {
        "startprob": init["startprob"],
        "transmat": init["transmat"],
        "means": init["means"],
        "covars": init["covars"],
        "precisions_cholesky": 1.0 / np.sqrt(init["covars"]),
    }
    found = long.chunk_pass(model, params, x)
    assert found.interior is not None and found.interior["n"] > 0.9 * len(x)
    entering, leaving = np.array([0.2, 0.5, 0.3]), np.array([1.0, 0.1, 0.4])
    predicted, backward, _ = chain.scan(*found.operators, entering, leaving)
    edges = found.edges
    stats = one_pass.edges_stats(
        model,
        params,
        edges,
        np.stack([predicted[e.block] if e.entering is None else e.entering for e in edges]),
        np.stack([backward[e.block] if e.leaving is None else e.leaving for e in edges]),
        np.zeros(len(edges), dtype=bool),
        None,
    )
    total = {key: found.interior[key] + stats[key] for key in ("n", "trans", "post", "sum_x")}
    # reference: log-space forward–backward with the messages at the chunk's ends
    var = init["covars"]
    log_b = -0.5 * (
        ((x[:, None, :] - init["means"][None]) ** 2 / var).sum(axis=2)
        + np.log(2 * np.pi * var).sum(axis=1)
    )
    log_a = np.log(init["transmat"])
    n = len(x)
    log_alpha = np.empty((n, K))
    log_alpha[0] = np.log(entering) + log_b[0]
    for t in range(1, n):
        log_alpha[t] = logsumexp(log_alpha[t - 1][:, None] + log_a, axis=0) + log_b[t]
    log_beta = np.empty((n, K))
    log_beta[-1] = logsumexp(log_a + np.log(leaving)[None], axis=1)
    for t in range(n - 2, -1, -1):
        log_beta[t] = logsumexp(log_a + (log_b[t + 1] + log_beta[t + 1])[None], axis=1)
    # each step normalised by its own total (the sequence's, up to the round-off that
    # log-space sums accumulate over thousands of steps)
    log_gamma = log_alpha + log_beta
    gamma = np.exp(log_gamma - logsumexp(log_gamma, axis=1, keepdims=True))
    log_xi = log_alpha[:-1, :, None] + log_a[None] + (log_b[1:] + log_beta[1:])[:, None, :]
    xi = np.exp(log_xi - logsumexp(log_xi, axis=(1, 2), keepdims=True)).sum(axis=0)
    # the transition out of the chunk: γ_last(i) A_ij r_j / (A r)_i
    last = (
        gamma[-1][:, None]
        * init["transmat"]
        * leaving[None]
        / (init["transmat"] @ leaving)[:, None]
    )
    assert total["n"] == n
    np.testing.assert_allclose(total["trans"], xi + last, rtol=1e-10)
    np.testing.assert_allclose(total["post"], gamma.sum(axis=0), rtol=1e-10)
    np.testing.assert_allclose(
        total["sum_x"], gamma.T @ (x - init["means"].mean(axis=0)), rtol=1e-10
    )
