"""α-EM (``accelerate="alpha"``): the update, its fallbacks, and the plain EM optimum."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import dask.array as da
import numpy as np
import pytest
import sklearn.mixture

import dem
from dem import accelerate, engine
from dem.models.mixture.model import MixtureModel
from tests.conftest import COVARIANCE_TYPES, initial_parameters, make_blobs


@dataclass(frozen=True)
class Linear:
    """A toy 'model' whose EM map is F(theta) = rate * theta; ``floor`` is the smallest
    valid theta (``unpack`` projects onto it)."""

    rate: float
    floor: float = -np.inf

    def pack(self, params):
        return params["theta"]

    def unpack(self, vector, like):
        return {"theta": np.maximum(np.asarray(vector, dtype=float), self.floor)}


def drive(step, evaluate):
    """Run a step generator against an evaluation function; the points it asked for."""
    request, asked = next(step), []
    while True:
        asked.append(request["theta"].copy())
        try:
            request = step.send(evaluate(request))
        except StopIteration as done:
            return done.value, asked


def linear_evaluation(model, penalty=lambda theta: 0.0):
    def evaluate(params):
        theta = params["theta"]
        return {"theta": model.rate * theta}, float(-(theta**2).sum() - penalty(theta))

    return evaluate


def test_alpha_em_points_follow_the_momentum_recurrence():
    # θ1 = F(θ0) + β(F(θ0) − θ0), then θ_{k+1} = F(θk) + β(F(θk) − F(θ_{k−1})), written out
    rate, alpha = 0.95, 0.5
    beta = (1 + alpha) / 2
    model = Linear(rate)
    step, asked = drive(
        accelerate.alpha_em(model, {"theta": np.array([4.0])}, -np.inf, 0.0, alpha=alpha, cycle=6),
        linear_evaluation(model),
    )
    expected = [4.0, rate * 4.0 + beta * (rate * 4.0 - 4.0)]
    for _ in range(4):
        expected.append(rate * expected[-1] + beta * (rate * expected[-1] - rate * expected[-2]))
    np.testing.assert_allclose(np.concatenate(asked), expected, rtol=1e-14)
    assert step.passes == 6 and not step.converged
    np.testing.assert_allclose(step.params["theta"], [rate * expected[-1]], rtol=1e-14)
    assert step.loglik == pytest.approx(-(expected[-1] ** 2), rel=1e-14)


def test_alpha_em_keeps_the_plain_step_when_the_momentum_point_is_worse():
    model = Linear(0.9)

    def penalty(theta):  # the second momentum point (|θ| < 2.6) looks bad
        return 1e6 if abs(theta[0]) < 2.6 else 0.0

    step, asked = drive(
        accelerate.alpha_em(model, {"theta": np.array([5.0])}, -np.inf, 0.0, alpha=0.0, cycle=10),
        linear_evaluation(model, penalty),
    )
    # θ0 = 5, θ1 = 4.5 − 0.25 = 4.25 (accepted), ... until a point falls below 2.6
    accepted = [a[0] for a in asked[:-1]]
    assert all(abs(a) >= 2.6 for a in accepted) and abs(asked[-1][0]) < 2.6
    # the cycle ends with the plain EM step from the last accepted point, at its loglik
    np.testing.assert_allclose(step.params["theta"], [0.9 * accepted[-1]], rtol=1e-14)
    assert step.loglik == pytest.approx(-(accepted[-1] ** 2), rel=1e-14)
    assert step.passes == len(asked)


def test_alpha_em_takes_the_plain_step_instead_of_projecting():
    # θ0 = 1, F = 0.5: the momentum point 0.5 + 0.95 (0.5 − 1) = 0.025 is below the floor
    model = Linear(0.5, floor=0.4)
    step, asked = drive(
        accelerate.alpha_em(model, {"theta": np.array([1.0])}, -np.inf, 0.0, alpha=0.9, cycle=10),
        linear_evaluation(model),
    )
    assert len(asked) == 1 and step.passes == 1
    np.testing.assert_array_equal(step.params["theta"], [0.5])


def mixture_data():
    return make_blobs(n_per=300, seed=4, d=2)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_alpha_em_reaches_the_optimum_of_sklearn_from_the_same_start(covariance_type):
    x = mixture_data()
    init = initial_parameters(x, 3, covariance_type, seed=2)
    reference = sklearn.mixture.GaussianMixture(
        3, covariance_type=covariance_type, tol=1e-14, max_iter=100_000, **init
    ).fit(x)
    assert reference.converged_
    fast = dem.GaussianMixture(
        3,
        covariance_type=covariance_type,
        tol=1e-14,
        max_iter=100_000,
        accelerate="alpha",
        alpha=0.9,
        **init,
    ).fit(x)
    assert fast.converged_
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(fast, name), getattr(reference, name), atol=1e-6)
    assert fast.score(x) == pytest.approx(reference.score(x), rel=1e-10)
    # a worse momentum point is never accepted; a plain EM step may lose round-off
    trace = np.array(fast.lower_bounds_)
    assert np.all(np.diff(trace) >= -1e-12 * np.abs(trace[1:]))


def overlapping(n=600, seed=1):
    rng = np.random.default_rng(seed)
    x = np.vstack([rng.normal(0, 1, (n, 2)), rng.normal(0, 1, (n, 2)) * [1.2, 0.8] + [2.5, 0.5]])
    return x[rng.permutation(len(x))]


@pytest.mark.parametrize("covariance_type", ["diag"])
def test_alpha_em_needs_fewer_passes_where_em_crawls(covariance_type):
    # heavily overlapping components: plain EM's slowest rate is close to 1
    x = overlapping()
    init = initial_parameters(x, 2, covariance_type, seed=3)
    options = {"covariance_type": covariance_type, "tol": 1e-8, "max_iter": 5000, **init}
    plain = dem.GaussianMixture(2, **options).fit(x)
    fast = dem.GaussianMixture(2, accelerate="alpha", alpha=0.9, **options).fit(x)
    assert plain.converged_ and fast.converged_
    assert fast.score(x) >= plain.score(x) - 1e-6 * abs(plain.score(x))
    assert fast.n_iter_ * 2 <= plain.n_iter_


def test_alpha_minus_one_is_plain_em_to_the_bit():
    x = mixture_data()
    init = initial_parameters(x, 3, "full", seed=2)
    options = {"tol": 1e-10, "max_iter": 400, **init}
    plain = dem.GaussianMixture(3, **options).fit(x)
    alpha = dem.GaussianMixture(3, accelerate="alpha", alpha=-1, **options).fit(x)
    assert alpha.n_iter_ == plain.n_iter_ and alpha.lower_bounds_ == plain.lower_bounds_
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert np.array_equal(getattr(alpha, name), getattr(plain, name))


@pytest.mark.parametrize("alpha", [1, 1.5, -1.01, float("nan"), float("inf"), True, "0.5"])
def test_bad_alpha_is_refused(alpha):
    x = mixture_data()
    with pytest.raises(ValueError, match=r"'alpha' parameter of GaussianMixture must be"):
        dem.GaussianMixture(2, accelerate="alpha", alpha=alpha).fit(x)


@pytest.mark.parametrize("alpha", [1.0, -2.0, float("nan"), "x"])
def test_bad_alpha_is_refused_by_the_engine(alpha):
    model = MixtureModel(2, "diag")
    data = {"X": da.from_array(mixture_data(), chunks=300)}
    with pytest.raises(ValueError, match=r"alpha must be"):
        engine.fit(model, data, lambda: {}, accelerate="alpha", alpha=alpha)


def test_alpha_em_resumes_to_the_same_bits(tmp_path):
    x = mixture_data()
    init = initial_parameters(x, 3, "full", seed=2)

    class Stop(Exception):
        pass

    def stop(info):
        if info.iteration >= 20:
            raise Stop

    options = {"tol": 1e-10, "max_iter": 2000, "accelerate": "alpha", "alpha": 0.8, **init}
    reference = dem.GaussianMixture(3, checkpoint=tmp_path / "a.zarr", **options).fit(x)
    assert len(reference.lower_bounds_) > 3  # the stop below falls inside the fit
    with pytest.raises(Stop):
        dem.GaussianMixture(3, checkpoint=tmp_path / "b.zarr", callback=stop, **options).fit(x)
    resumed = dem.GaussianMixture(3, checkpoint=tmp_path / "b.zarr", resume=True, **options).fit(x)
    assert resumed.n_iter_ == reference.n_iter_ and resumed.lower_bounds_ == reference.lower_bounds_
    assert np.array_equal(resumed.means_, reference.means_)
    assert np.array_equal(resumed.covariances_, reference.covariances_)
    trace = dem.load_checkpoint(tmp_path / "b.zarr")
    np.testing.assert_array_equal(trace["loglik"].values[1:], reference.lower_bounds_)


def test_alpha_em_stops_at_max_iter():
    x = mixture_data()
    init = initial_parameters(x, 3, "full", seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        fit = dem.GaussianMixture(
            3, tol=0.0, max_iter=37, accelerate="alpha", alpha=0.5, **init
        ).fit(x)
    assert fit.n_iter_ == 37 and not fit.converged_


def test_a_model_without_pack_is_refused():
    @dataclass(frozen=True)
    class Bare:
        inputs: tuple[str, ...] = ("X",)

    with pytest.raises(ValueError, match="no pack/unpack, so α-EM cannot"):
        accelerate.check_accelerate(Bare(), "alpha")
