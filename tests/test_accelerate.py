"""SQUAREM and fused restarts: the same optimum as plain EM, in fewer passes."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import dask.array as da
import numpy as np
import pytest

import dem
from dem import accelerate, engine
from dem.models.mixture.init import initial_params
from dem.models.mixture.model import MixtureModel
from tests.conftest import COVARIANCE_TYPES, initial_parameters


@dataclass(frozen=True)
class Contraction:
    """A toy 'model' whose EM map is F(theta) = rate * theta, loglik = -theta^2."""

    rate: float

    def pack(self, params):
        return params["theta"]

    def unpack(self, vector, like):
        return {"theta": np.asarray(vector, dtype=float)}


def drive(step, evaluate):
    """Run a step generator against an evaluation function; count passes."""
    request, passes = next(step), 0
    while True:
        passes += 1
        try:
            request = step.send(evaluate(request))
        except StopIteration as done:
            return done.value, passes


def test_squarem_solves_a_linear_contraction_in_one_cycle():
    # For a scalar linear map SQUAREM's extrapolation lands exactly on the fixed point.
    model = Contraction(0.9)

    def evaluate(params):
        theta = params["theta"]
        return {"theta": model.rate * theta}, float(-(theta**2).sum())

    step, passes = drive(
        accelerate.squarem(model, {"theta": np.array([5.0])}, -np.inf, 1e-12), evaluate
    )
    assert passes == 3
    # the candidate was the fixed point 0 up to round-off; the stabilising step keeps it there
    assert abs(step.params["theta"][0]) < 1e-12 and step.loglik == pytest.approx(0.0, abs=1e-20)


def test_squarem_falls_back_to_plain_em_when_extrapolation_hurts():
    model = Contraction(0.9)

    def evaluate(params):
        theta = params["theta"]
        penalty = 1e6 if abs(theta[0]) < 1.0 else 0.0  # the extrapolated point looks bad
        return {"theta": model.rate * theta}, float(-(theta**2).sum() - penalty)

    step, passes = drive(
        accelerate.squarem(model, {"theta": np.array([5.0])}, -np.inf, 1e-12), evaluate
    )
    assert passes == 3
    np.testing.assert_allclose(step.params["theta"], [5.0 * 0.81])  # two plain EM steps
    assert step.loglik == pytest.approx(-(4.5**2))


def overlapping(n=600, seed=1):
    rng = np.random.default_rng(seed)
    x = np.vstack([rng.normal(0, 1, (n, 2)), rng.normal(0, 1, (n, 2)) * [1.2, 0.8] + [2.5, 0.5]])
    return x[rng.permutation(len(x))]


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_squarem_reaches_the_plain_em_optimum_in_fewer_passes(covariance_type):
    x = overlapping()
    init = initial_parameters(x, 2, covariance_type, seed=3)
    fits = {}
    for method in ("none", "squarem"):
        fits[method] = dem.GaussianMixture(
            2, covariance_type=covariance_type, tol=1e-8, max_iter=5000, accelerate=method, **init
        ).fit(x)
        assert fits[method].converged_
        trace = np.array(fits[method].lower_bounds_)
        assert np.all(np.diff(trace) >= -1e-12 * np.abs(trace[1:]))
    plain, fast = fits["none"], fits["squarem"]
    assert fast.score(x) == pytest.approx(plain.score(x), rel=1e-6)
    # the likelihood is flat along the ridge plain EM creeps up, so means agree loosely
    np.testing.assert_allclose(
        np.sort(fast.means_, axis=0), np.sort(plain.means_, axis=0), atol=0.02
    )
    assert fast.n_iter_ * 2 <= plain.n_iter_


def test_fused_restarts_give_the_bits_of_separate_fits(blobs):
    model = MixtureModel(3, "diag")
    data = {"X": da.from_array(blobs, chunks=700)}
    starts = [
        initial_params(
            model,
            blobs[:0],
            np.random.default_rng(0),
            "kmeans",
            **initial_parameters(blobs, 3, "diag", seed=s),
        )
        for s in range(3)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        together = engine.fit_runs(
            [model] * 3, data, [lambda p=p: p for p in starts], max_iter=12, tol=1e-4
        )
        apart = [engine.fit(model, data, lambda p=p: p, max_iter=12, tol=1e-4) for p in starts]
    for fused, alone in zip(together, apart, strict=True):
        assert fused.n_iter == alone.n_iter
        assert fused.lower_bounds == alone.lower_bounds
        for key in alone.params:
            assert np.array_equal(fused.params[key], alone.params[key])


def test_squarem_resumes_to_the_same_bits(tmp_path):
    x = overlapping(500)
    init = initial_parameters(x, 2, "full", seed=3)

    class Stop(Exception):
        pass

    def stop(info):
        if info.iteration >= 7:
            raise Stop

    options = {"tol": 1e-8, "max_iter": 500, "accelerate": "squarem", **init}
    reference = dem.GaussianMixture(2, checkpoint=tmp_path / "a.zarr", **options).fit(x)
    with pytest.raises(Stop):
        dem.GaussianMixture(2, checkpoint=tmp_path / "b.zarr", callback=stop, **options).fit(x)
    resumed = dem.GaussianMixture(2, checkpoint=tmp_path / "b.zarr", resume=True, **options).fit(x)
    assert resumed.n_iter_ == reference.n_iter_ and resumed.lower_bounds_ == reference.lower_bounds_
    assert np.array_equal(resumed.means_, reference.means_)
    trace = dem.load_checkpoint(tmp_path / "b.zarr")
    np.testing.assert_array_equal(trace["loglik"].values[1:], reference.lower_bounds_)
    assert int(trace["iteration"][-1]) == reference.n_iter_


def test_unknown_acceleration_is_refused(blobs):
    with pytest.raises(ValueError, match=r"'accelerate' parameter of \w+ must be a str among"):
        dem.GaussianMixture(2, accelerate="warp").fit(blobs)
