"""The contract every registered model keeps, run over the registry (``dem.registry``).

Each test runs for every row of :data:`tests.contract.models.MODELS` (one per registry
entry, in each variant): the model object the estimator builds satisfies ``EMModel``;
EM never decreases the log-likelihood; the order of the samples (rows, or sequences)
and their chunking change the fit by round-off only; a fit resumed after an
interruption ends with the bits of an uninterrupted one; restarts run in lockstep give
the bits of separate runs from the same starts; integer sample weights give the fit of
repeated samples (for every estimator whose ``fit`` takes ``sample_weight``); the
statistics an E-step returns never
share the buffers its thread keeps for the next chunk; the HTML summary shows the
estimator; scikit-learn's checks (``tests/test_sklearn.py``) cover every registered
estimator. The bad-input matrix is ``test_bad_input.py``.

The model object, its inputs, its starts and results are read where every estimator
hands them to the engine (:func:`dem.engine.fit_runs`), so the tests use no estimator's
internals.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import json
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dem
from dem import engine
from dem.model import EMModel
from dem.registry import REGISTRY
from tests.contract.models import (
    MODELS,
    Case,
    cases,
    estimator_classes,
    first_cases,
    fitted_arrays,
)
from tests.test_display import parse, rows, visible

EVERY = [pytest.param(case, id=str(case)) for case in cases()]
ONCE = [pytest.param(case, id=str(case)) for case in first_cases()]


@dataclass
class EngineCall:
    """What an estimator handed :func:`dem.engine.fit_runs`, and what it returned."""

    models: list[Any]
    arrays: dict[str, da.Array]
    options: dict[str, Any]
    starts: list[dict[str, np.ndarray]] = field(default_factory=list)
    results: list[engine.EMResult] = field(default_factory=list)

    def rerun(self, arrays: dict[str, da.Array], starts: list[dict[str, np.ndarray]]) -> Any:
        """The engine on ``arrays`` from ``starts``, with this call's options (no checkpoint)."""
        options = {**self.options, "checkpoint": None, "callback": None}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dem.ConvergenceWarning)
            return engine.fit_runs(
                [self.models[0]] * len(starts),
                arrays,
                [functools.partial(copy.deepcopy, start) for start in starts],
                **options,
            )


@contextlib.contextmanager
def engine_calls() -> Iterator[list[EngineCall]]:
    """Record every call of :func:`dem.engine.fit_runs` made inside the block."""
    calls: list[EngineCall] = []
    original = engine.fit_runs
    signature = inspect.signature(original)

    def spy(*args: Any, **kwargs: Any) -> Any:
        given = signature.bind(*args, **kwargs).arguments
        models, arrays, inits = given.pop("models"), given.pop("arrays"), given.pop("inits")
        call = EngineCall(list(models), dict(arrays), given)

        def kept(init: Callable[[], Any]) -> Callable[[], Any]:
            def start() -> Any:
                params = init()
                call.starts.append(copy.deepcopy(params))
                return params

            return start

        call.results = original(models, arrays, [kept(init) for init in inits], **given)
        calls.append(call)
        return call.results

    with mock.patch.object(engine, "fit_runs", spy):
        yield calls


@functools.cache
def reference(case: Case) -> tuple[Any, EngineCall]:
    """The case's fast fit (shared by the tests) and its engine call."""
    with engine_calls() as calls:
        estimator = case.fit()
    assert len(calls) == 1, f"{case}: expected one engine call per fit, got {len(calls)}"
    return estimator, calls[0]


def computed(arrays: dict[str, da.Array]) -> dict[str, np.ndarray]:
    return {name: np.asarray(array) for name, array in arrays.items()}


def assert_same_bits(found: dict[str, Any], expected: dict[str, Any], what: str = "") -> None:
    assert found.keys() == expected.keys(), what
    for name in expected:
        assert np.array_equal(found[name], expected[name], equal_nan=True), f"{what} {name}"


def quietly(fit: Callable[[], Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        return fit()


# --- the table ---------------------------------------------------------------------------


def test_every_registered_model_has_a_row():
    """A model that registers must say how the suite fits it (tests/contract/models.py)."""
    assert set(REGISTRY) == set(MODELS), "add a row to tests/contract/models.py:MODELS"
    for name, entry in REGISTRY.items():
        assert entry.synth is not None, f"{name}: the suite draws data with the registry's synth"


def test_the_scikit_learn_checks_cover_every_registered_estimator():
    """``tests/test_sklearn.py`` runs scikit-learn's checks over ``ESTIMATORS``."""
    from tests.test_sklearn import ESTIMATORS

    assert sorted(type(e).__name__ for e in ESTIMATORS) == sorted(
        cls.__name__ for cls in estimator_classes()
    )


# --- the model ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", EVERY)
def test_model_satisfies_the_protocol(case):
    _, call = reference(case)
    model, params = call.models[0], call.results[0].params
    assert isinstance(model, EMModel)
    assert model.name == case.entry.checkpoint_model
    assert set(model.inputs) == set(call.arrays)
    assert model.missing_ok <= set(model.inputs)
    json.dumps(model.config())
    dims = model.param_dims()
    assert set(dims) == set(params)
    for name, value in params.items():
        assert np.ndim(value) == len(dims[name]), name
    block = computed(call.arrays)
    stats = model.e_step(block, params)
    assert {"n", "loglik"} <= set(stats)
    assert np.asarray(stats["loglik"]).dtype == np.float64 and np.isfinite(stats["loglik"])
    halves = [
        {k: v[: len(v) // 2] for k, v in block.items()},
        {k: v[len(v) // 2 :] for k, v in block.items()},
    ]
    combined = model.combine(*(model.e_step(half, params) for half in halves))
    assert combined.keys() == stats.keys()
    for name in stats:
        np.testing.assert_allclose(combined[name], stats[name], rtol=1e-9, atol=1e-9, err_msg=name)
    assert set(model.m_step(stats, params)) == set(params)


# --- EM -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", EVERY)
def test_loglik_never_decreases(case):
    estimator, _ = reference(case)
    bounds = np.asarray(estimator.lower_bounds_)
    assert len(bounds) == estimator.n_iter_ > 1
    assert np.all(np.isfinite(bounds))
    assert np.all(np.diff(bounds) >= -1e-12 * np.abs(bounds[1:])), bounds


@pytest.mark.parametrize("case", EVERY)
@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 10_000), fraction=st.floats(0.05, 1.0))
def test_sample_order_and_chunking_change_results_by_round_off_only(case, seed, fraction):
    """The samples shuffled and cut into chunks of a drawn size, from the same start."""
    _, call = reference(case)
    block = computed(call.arrays)
    n = len(next(iter(block.values())))
    order = np.random.default_rng(seed).permutation(n)
    size = max(1, int(fraction * n))
    shuffled = {
        name: da.from_array(value[order], chunks=(size, *value.shape[1:]))
        for name, value in block.items()
    }
    (result,) = call.rerun(shuffled, call.starts[:1])
    expected = call.results[0]
    for name, value in expected.params.items():
        assert np.all(np.isfinite(result.params[name])), name
        np.testing.assert_allclose(result.params[name], value, rtol=1e-7, atol=1e-10, err_msg=name)
    np.testing.assert_allclose(result.lower_bounds, expected.lower_bounds, rtol=1e-10)


def takes_weights(case: Case) -> bool:
    return "sample_weight" in inspect.signature(case.entry.estimator_class().fit).parameters


@pytest.mark.parametrize("case", EVERY)
def test_integer_weights_equal_repeated_samples(case):
    """Integer sample weights (0 included) give the fit of the samples repeated that many
    times, from the same start; the estimator hands its weights to the engine as the
    input ``sample_weight`` (issue 18)."""
    if not takes_weights(case):
        pytest.skip(f"{case.entry.estimator}.fit takes no sample_weight")
    _, call = reference(case)
    block = computed(call.arrays)
    n = len(next(iter(block.values())))
    weights = np.random.default_rng(1).integers(0, 4, size=n)
    chunk = max(1, n // 3)
    weighted = {
        **{
            name: da.from_array(value, chunks=(chunk, *value.shape[1:]))
            for name, value in block.items()
        },
        "sample_weight": da.from_array(weights.astype(np.float64), chunks=chunk),
    }
    repeated = {
        name: da.from_array(np.repeat(value, weights, axis=0), chunks=(2 * chunk, *value.shape[1:]))
        for name, value in block.items()
    }
    try:
        (expected,) = call.rerun(repeated, call.starts[:1])
    except ValueError as refused:  # e.g. a state collapsed: the weighted fit must say the same
        with pytest.raises(type(refused), match=re.escape(str(refused))):
            call.rerun(weighted, call.starts[:1])
        return
    (found,) = call.rerun(weighted, call.starts[:1])
    for name, value in expected.params.items():
        scale = float(np.max(np.abs(value))) if np.size(value) else 0.0
        np.testing.assert_allclose(
            found.params[name], value, rtol=1e-8, atol=1e-8 * scale, err_msg=name
        )
    np.testing.assert_allclose(found.lower_bounds, expected.lower_bounds, rtol=1e-8)
    x, arguments = case.data()
    with engine_calls() as calls:
        quietly(lambda: case.estimator().fit(x, **arguments, sample_weight=weights))
    assert "sample_weight" in calls[0].arrays


def restarts(case: Case) -> dict[str, Any]:
    """``n_init=2`` where the estimator has restarts."""
    has = "n_init" in inspect.signature(case.entry.estimator_class()).parameters
    return {"n_init": 2} if has else {}


class Interrupt(Exception):
    pass


def stop_at(iteration: int) -> Callable[[engine.IterationInfo], None]:
    def callback(info: engine.IterationInfo) -> None:
        if info.iteration == iteration:
            raise Interrupt

    return callback


@pytest.mark.parametrize("case", ONCE)
def test_resume_after_an_interruption_gives_the_same_bits(case, tmp_path):
    options = {"max_iter": 4, **restarts(case)}  # a checkpoint write per iteration and run
    whole = case.fit(checkpoint=tmp_path / "whole.zarr", **options)
    with pytest.raises(Interrupt):
        case.fit(checkpoint=tmp_path / "cut.zarr", callback=stop_at(2), **options)
    seen: list[engine.IterationInfo] = []
    resumed = case.fit(
        checkpoint=tmp_path / "cut.zarr", resume=True, callback=seen.append, **options
    )
    assert seen[0].iteration == 3 and seen[0].run == 0  # resumed, not restarted
    assert_same_bits(fitted_arrays(resumed), fitted_arrays(whole))
    assert resumed.lower_bounds_ == whole.lower_bounds_ and len(whole.lower_bounds_) == 4


@pytest.mark.parametrize("case", ONCE)
def test_fused_restarts_equal_separate_runs(case):
    if not restarts(case):
        pytest.skip(f"{case.entry.estimator} has no restarts (n_init)")
    with engine_calls() as calls:
        case.fit(n_init=3)
    (fused,) = calls
    assert len(fused.starts) == len(fused.results) == 3
    for index, start in enumerate(fused.starts):
        (alone,) = fused.rerun(fused.arrays, [start])
        together = fused.results[index]
        assert alone.n_iter == together.n_iter and alone.lower_bounds == together.lower_bounds
        assert_same_bits(alone.params, together.params, f"run {index}")


# --- kept work buffers -------------------------------------------------------------------------


def on_a_fresh_thread(function: Callable[[], Any]) -> Any:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(function()))
    thread.start()
    thread.join()
    return result[0]


@pytest.mark.parametrize("case", EVERY)
def test_statistics_never_share_the_buffers_kept_for_the_next_chunk(case):
    """An E-step's statistics are untouched by the next chunk's E-step on the same thread
    (a statistic that views a kept buffer would be overwritten), and equal to a fresh
    thread's."""
    _, call = reference(case)
    model, params = call.models[0], call.results[0].params
    block = computed(call.arrays)
    half = len(next(iter(block.values()))) // 2
    first = {name: value[:half] for name, value in block.items()}
    second = {name: value[half : 2 * half] for name, value in block.items()}
    stats = model.e_step(first, params)
    kept = copy.deepcopy(stats)
    model.e_step(second, params)
    assert_same_bits(stats, kept, "after the next chunk:")
    assert_same_bits(stats, on_a_fresh_thread(lambda: model.e_step(first, params)), "fresh:")


# --- the HTML summary ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", ONCE)
def test_html_summary_of_the_unfitted_and_fitted_estimator(case):
    name = case.entry.estimator_class().__name__
    unfitted = case.estimator()
    fragment = unfitted._repr_html_()
    text = visible(parse(fragment))
    assert name in text and "not fitted" in text and "Fitted attributes" not in text
    table = rows(fragment)
    assert table["max_iter"] == [repr(unfitted.max_iter)]
    assert table["checkpoint"] == ["None"] and "checkpoint: none" in text

    fitted, _ = reference(case)
    fragment = fitted._repr_html_()
    text = visible(parse(fragment))
    assert name in text and "not fitted" not in text
    objective = getattr(fitted, "_objective", "mean log-likelihood")  # an ELBO, for VB
    assert f"final {objective} {fitted.lower_bounds_[-1]:.6g}" in text
    table = rows(fragment)
    public = {n for n in vars(fitted) if n.endswith("_") and not n.startswith("_")}
    assert public <= set(table)
    assert not any(n.startswith("_") for n in table)
