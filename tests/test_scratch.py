"""Kept work buffers never leak into results.

Every model's E-step writes its block temporaries into buffers that its thread keeps
from chunk to chunk (``dem.models.scratch.thread_scratch``). A statistic that was a view
of such a buffer would be silently overwritten by the next chunk's E-step on that
thread; these tests run two E-steps on different chunks and check that the first one's
statistics are untouched and equal to those computed on a fresh thread.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import dem
from dem.models.mixture.kernels import mixture_mean
from dem.models.scratch import Scratch, thread_scratch


def _rows(seed: int, n: int = 3000, d: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0] * d, [4.0] * d, [-4.0, 4.0] + [0.0] * (d - 2)])
    return centres[rng.integers(0, 3, n)] + rng.standard_normal((n, d))


def _mixture(covariance_type: str) -> Callable[[], tuple[Any, Any, list[dict[str, Any]]]]:
    def build() -> tuple[Any, Any, list[dict[str, Any]]]:
        x = _rows(0)
        fitted = dem.GaussianMixture(
            3, covariance_type=covariance_type, max_iter=3, tol=0.0, random_state=0
        )
        with pytest.warns(dem.ConvergenceWarning):
            fitted.fit(x)
        params = fitted._params()
        params["shift"] = mixture_mean(params)  # the E-step's reference point
        return fitted._model(), params, [{"X": _rows(1)}, {"X": _rows(2)}]

    return build


def _ppca(missing: float, estimator: type) -> Callable[[], tuple[Any, Any, list[dict[str, Any]]]]:
    def build() -> tuple[Any, Any, list[dict[str, Any]]]:
        rng = np.random.default_rng(3)
        blocks = []
        for seed in (4, 5):
            x = _rows(seed, d=6)
            x[np.random.default_rng(seed).random(x.shape) < missing] = np.nan
            blocks.append({"X": x})
        fitted = estimator(2, max_iter=3, tol=0.0, random_state=0)
        with pytest.warns(dem.ConvergenceWarning):
            fitted.fit(np.where(rng.random((3000, 6)) < missing, np.nan, _rows(6, d=6)))
        return fitted._model(), fitted._params(), blocks

    return build


def _tobit() -> tuple[Any, Any, list[dict[str, Any]]]:
    rng = np.random.default_rng(7)
    beta = np.array([1.0, -0.5, 0.25])

    def block() -> dict[str, Any]:
        x = rng.standard_normal((40_000, 3))
        return {"X": x, "y": np.clip(x @ beta + rng.standard_normal(len(x)), -0.5, 0.5)}

    fitted = dem.CensoredRegression(left=-0.5, right=0.5, max_iter=5, tol=0.0)
    with pytest.warns(dem.ConvergenceWarning):
        first = block()
        fitted.fit(first["X"], first["y"])
    return fitted._model(), fitted._params(), [block(), block()]


def _gaussian_hmm() -> tuple[Any, Any, list[dict[str, Any]]]:
    rng = np.random.default_rng(8)
    blocks = [
        {"X": rng.standard_normal((200, 30, 2)), "lengths": np.full(200, 30)} for _ in range(2)
    ]
    fitted = dem.GaussianHMM(3, max_iter=3, tol=0.0, random_state=0)
    with pytest.warns(dem.ConvergenceWarning):
        fitted.fit(rng.standard_normal((200, 30, 2)))
    return fitted._model(2), fitted._params(), blocks


def _categorical_hmm() -> tuple[Any, Any, list[dict[str, Any]]]:
    rng = np.random.default_rng(9)
    blocks = [{"X": rng.integers(0, 4, (200, 30)), "lengths": np.full(200, 30)} for _ in range(2)]
    fitted = dem.CategoricalHMM(3, max_iter=3, tol=0.0, random_state=0)
    with pytest.warns(dem.ConvergenceWarning):
        fitted.fit(rng.integers(0, 4, (200, 30)))
    return fitted._model(fitted.n_features_in_), fitted._params(), blocks


CASES = {
    "mixture full": _mixture("full"),
    "mixture tied": _mixture("tied"),
    "mixture diag": _mixture("diag"),
    "mixture spherical": _mixture("spherical"),
    "ppca": _ppca(0.0, dem.PPCA),
    "ppca missing": _ppca(0.2, dem.PPCA),
    "factor analysis missing": _ppca(0.2, dem.FactorAnalysis),
    "tobit": _tobit,
    "gaussian hmm": _gaussian_hmm,
    "categorical hmm": _categorical_hmm,
}


def _on_fresh_thread(function: Callable[[], Any]) -> Any:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(function()))
    thread.start()
    thread.join()
    return result[0]


def _assert_same(found: dict[str, Any], expected: dict[str, Any]) -> None:
    assert found.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(found[key], expected[key], err_msg=key)


@pytest.mark.parametrize("case", sorted(CASES))
def test_statistics_survive_the_next_chunk(case: str) -> None:
    model, params, (first, second) = CASES[case]()
    stats = model.e_step(first, params)
    kept = copy.deepcopy(stats)
    model.e_step(second, params)  # same thread, same kept buffers, other values
    _assert_same(stats, kept)
    # and the same bits as on a thread whose buffers are new
    _assert_same(stats, _on_fresh_thread(lambda: model.e_step(first, params)))


def test_each_thread_has_its_own_buffers() -> None:
    mine = thread_scratch("test")
    assert thread_scratch("test") is mine
    assert thread_scratch("other") is not mine
    assert _on_fresh_thread(lambda: thread_scratch("test")) is not mine
    assert isinstance(mine, Scratch)
