"""Sample weights of the HMMs (one weight per sequence): integer weights fit exactly as the
sequences repeated that many times (np.repeat along the sequences), weight 0 as the
sequence dropped, from identical initial parameters; one long sequence refuses them."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
from hmmlearn import hmm as hmmlearn_hmm

import dem
from dem.models.hmm import pad_sequences

K, D = 3, 2
TRANS = np.array([[0.85, 0.1, 0.05], [0.1, 0.8, 0.1], [0.05, 0.15, 0.8]])
MEANS = np.array([[0.0, 0.0], [3.0, 3.0], [-3.0, 2.0]])
EMISSION = np.array([[0.7, 0.2, 0.1, 0.0], [0.1, 0.6, 0.2, 0.1], [0.1, 0.1, 0.2, 0.6]])
LENGTHS = np.array([40, 25, 40, 31, 18, 40])
WEIGHTS = np.array([2, 0, 1, 3, 1, 2])


def states(n_times, rng):
    z = np.empty(n_times, dtype=np.int64)
    z[0] = rng.integers(K)
    cdf = np.cumsum(TRANS, axis=1)
    for t in range(1, n_times):
        z[t] = min(int(np.searchsorted(cdf[z[t - 1]], rng.random(), side="right")), K - 1)
    return z


def gaussian_sequences():
    rng = np.random.default_rng(3)
    parts = [MEANS[states(n, rng)] + rng.normal(size=(n, D)) for n in LENGTHS]
    padded, _ = pad_sequences(np.concatenate(parts), LENGTHS)
    return padded


def symbol_sequences():
    rng = np.random.default_rng(4)
    cdf = np.cumsum(EMISSION, axis=1)
    parts = []
    for n in LENGTHS:
        z = states(n, rng)
        parts.append((rng.random(n)[:, None] >= cdf[z]).sum(axis=1).clip(0, 3).astype(float))
    padded, _ = pad_sequences(np.concatenate(parts), LENGTHS)
    return padded


def relative(ours, theirs):
    return float(np.max(np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1e-12)))


def transitions_init():
    rng = np.random.default_rng(9)
    return {
        "startprob_init": np.array([0.5, 0.3, 0.2]),
        "transmat_init": rng.dirichlet(np.full(K, 3.0), size=K),
    }


def fit(make, x, lengths, sample_weight=None):
    model = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        return model.fit(x, lengths, sample_weight=sample_weight)


def repeated(x, lengths):
    return np.repeat(x, WEIGHTS, axis=0), np.repeat(lengths, WEIGHTS)


def assert_same_fit(weighted, plain, names):
    for name in names:
        assert relative(getattr(weighted, name), getattr(plain, name)) < 1e-8, name
    np.testing.assert_allclose(weighted.lower_bounds_, plain.lower_bounds_, rtol=1e-10)


def gaussian_init(ctype):
    """Initial emissions near the truth (the states' order fixed), shared by every fit."""
    rng = np.random.default_rng(5)
    covars = {
        "diag": rng.uniform(0.6, 1.5, (K, D)),
        "full": np.tile(np.eye(D), (K, 1, 1)),
        "tied": np.array([[1.2, 0.2], [0.2, 0.9]]),
        "spherical": rng.uniform(0.6, 1.5, K),
    }[ctype]
    return {
        "means": MEANS + np.array([[0.3, -0.2], [-0.2, 0.3], [0.1, 0.1]]),
        "covars": covars,
    }


def gaussian_model(ctype, max_iter=6):
    init = gaussian_init(ctype)
    return dem.GaussianHMM(
        K,
        covariance_type=ctype,
        max_iter=max_iter,
        tol=0.0,
        means_init=init["means"],
        covars_init=init["covars"],
        **transitions_init(),
    )


# tied: its scatter Σ_t (Σ_k γ_tk) x xᵀ weighs each time step by its sequence's weight
# (it was the unweighted Σ x xᵀ, and the weighted fit collapsed a state)
@pytest.mark.parametrize("ctype", ["diag", "full", "tied", "spherical"])
def test_gaussian_integer_weights_repeat_sequences(ctype):
    x = gaussian_sequences()
    x[1, :5] = 1e150  # weight 0: extreme values that must not reach any sum

    def make():
        return gaussian_model(ctype)

    chunked = da.from_array(x, chunks=(2, -1, -1))  # weights aligned with 3 chunks
    weighted = fit(make, chunked, LENGTHS, WEIGHTS.astype(float))
    plain = fit(make, *repeated(x, LENGTHS))
    assert_same_fit(weighted, plain, ("startprob_", "transmat_", "means_", "covars_"))
    xs, ls = repeated(x, LENGTHS)
    assert weighted.score(xs, ls) == pytest.approx(plain.score(xs, ls), rel=1e-10)


@pytest.mark.parametrize("ctype", ["tied", "full"])
def test_gaussian_weights_match_hmmlearn_on_repeated_sequences(ctype):
    """hmmlearn takes no weights: its fit of the sequences repeated, from the same start,
    is an independent reference for the weighted fit."""
    x = gaussian_sequences()
    xs, ls = repeated(x, LENGTHS)
    init = gaussian_init(ctype)
    start = transitions_init()
    ref = hmmlearn_hmm.GaussianHMM(
        K,
        covariance_type=ctype,
        n_iter=6,
        tol=-np.inf,
        init_params="",
        covars_prior=1e-2 * np.eye(D),  # dem's scalar prior: that multiple of the identity
        implementation="scaling",
    )
    ref.startprob_, ref.transmat_ = start["startprob_init"], start["transmat_init"]
    ref.means_, ref.covars_ = init["means"], init["covars"]
    ref.fit(np.concatenate([seq[:n] for seq, n in zip(xs, ls, strict=True)]), ls)
    ours = fit(lambda: gaussian_model(ctype), x, LENGTHS, WEIGHTS.astype(float))
    assert relative(ours.startprob_, ref.startprob_) < 1e-8
    assert relative(ours.transmat_, ref.transmat_) < 1e-8
    assert np.max(np.abs(ours.means_ - ref.means_)) < 1e-8 * np.max(np.abs(ref.means_))
    assert relative(ours.covars_, ref._covars_) < 1e-8


def test_weighted_score_bic_aic_are_those_of_repeated_sequences():
    """score (the total log-likelihood), bic and aic with integer weights: those of the
    sequences repeated (np.repeat), and hmmlearn's score of them; weight 0 leaves a
    sequence out unevaluated, even alone in its chunk."""
    x = gaussian_sequences()
    model = fit(lambda: gaussian_model("tied", max_iter=3), x, LENGTHS, WEIGHTS.astype(float))
    xs, ls = repeated(x, LENGTHS)
    x[1, :5] = 1e150  # weight 0, and alone in its chunk below
    chunked = da.from_array(x, chunks=((1, 1, 4), (40,), (D,)))
    weights = da.from_array(WEIGHTS.astype(float), chunks=((1, 1, 4),))
    ref = hmmlearn_hmm.GaussianHMM(K, covariance_type="tied", implementation="scaling")
    ref.startprob_, ref.transmat_ = model.startprob_, model.transmat_
    ref.means_, ref.covars_ = model.means_, model.covars_
    concatenated = np.concatenate([seq[:n] for seq, n in zip(xs, ls, strict=True)])
    for data in (x, chunked):
        for sample_weight in (WEIGHTS.astype(float), weights):
            found = model.score(data, LENGTHS, sample_weight=sample_weight)
            assert found == pytest.approx(model.score(xs, ls), rel=1e-12)
            assert found == pytest.approx(ref.score(concatenated, ls), rel=1e-10)
            for criterion in ("bic", "aic"):
                weighted = getattr(model, criterion)(data, LENGTHS, sample_weight=sample_weight)
                assert weighted == pytest.approx(getattr(model, criterion)(xs, ls), rel=1e-12)
    # the criteria's n: the weighted number of time steps, as hmmlearn counts them
    assert model.bic(x, LENGTHS, sample_weight=WEIGHTS) == pytest.approx(
        -2 * ref.score(concatenated, ls) + model._n_parameters() * np.log(len(concatenated)),
        rel=1e-10,
    )
    with pytest.raises(ValueError, match="negative"):
        model.score(x, LENGTHS, sample_weight=-np.ones(6))


def test_categorical_integer_weights_repeat_sequences():
    x = symbol_sequences()

    def make():
        return dem.CategoricalHMM(
            K,
            n_features=4,
            max_iter=6,
            tol=0.0,
            emissionprob_init=(np.full((K, 4), 0.25) + np.eye(K, 4) * 0.2) / 1.2,
            **transitions_init(),
        )

    weighted = fit(make, x, LENGTHS, WEIGHTS.astype(float))
    plain = fit(make, *repeated(x, LENGTHS))
    assert_same_fit(weighted, plain, ("startprob_", "transmat_", "emissionprob_"))
    assert weighted.score(x, LENGTHS, sample_weight=WEIGHTS) == pytest.approx(
        weighted.score(*repeated(x, LENGTHS)), rel=1e-12
    )


def test_gmmhmm_integer_weights_repeat_sequences():
    x = gaussian_sequences()

    def make():
        return dem.GMMHMM(
            K,
            2,
            covariance_type="diag",
            max_iter=5,
            tol=0.0,
            weights_init=np.full((K, 2), 0.5),
            means_init=MEANS[:, None, :] + np.array([[-0.5, 0.2], [0.5, -0.2]])[None],
            covars_init=np.full((K, 2, D), 1.0),
            **transitions_init(),
        )

    weighted = fit(make, da.from_array(x, chunks=(4, -1, -1)), LENGTHS, WEIGHTS.astype(float))
    plain = fit(make, *repeated(x, LENGTHS))
    assert_same_fit(weighted, plain, ("startprob_", "transmat_", "weights_", "means_", "covars_"))
    assert weighted.bic(x, LENGTHS, sample_weight=WEIGHTS) == pytest.approx(
        weighted.bic(*repeated(x, LENGTHS)), rel=1e-12
    )


def test_one_long_sequence_refuses_weights():
    x = np.random.default_rng(0).normal(size=(500, D))
    with pytest.raises(ValueError, match="one long sequence"):
        dem.GaussianHMM(K, max_iter=2).fit(x, sample_weight=np.ones(500))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        model = dem.GaussianHMM(K, max_iter=2, random_state=0).fit(x)
    for method in (model.score, model.bic, model.aic):
        with pytest.raises(ValueError, match="one long sequence"):
            method(x, sample_weight=np.ones(500))


def test_bad_weights_are_named():
    x = gaussian_sequences()
    with pytest.raises(ValueError, match="sample_weight has 5 values"):
        dem.GaussianHMM(K, max_iter=2).fit(x, LENGTHS, sample_weight=np.ones(5))
    with pytest.raises(ValueError, match="negative"):
        dem.GaussianHMM(K, max_iter=2).fit(x, LENGTHS, sample_weight=-np.ones(6))
