"""The engine: graph shape, computes per iteration, distributed bits, out of core."""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import numpy as np
import pytest
import zarr

import dem
from dem import engine
from dem.models.mixture.model import MixtureModel
from tests.conftest import initial_parameters


def init_params_for(x, covariance_type="full"):
    from dem.models.mixture.init import initial_params

    init = initial_parameters(x, 3, covariance_type)
    model = MixtureModel(3, covariance_type)
    return model, initial_params(model, x[:0], np.random.default_rng(0), "kmeans", **init)


def dependencies(graph) -> dict:
    """task key -> its dependencies, for the materialised graph of a Delayed."""
    from dask.core import get_dependencies

    tasks = dict(graph.__dask_graph__())
    return {key: get_dependencies(tasks, key) for key in tasks}


@pytest.mark.parametrize(("n_chunks", "split_every"), [(1, 4), (7, 2), (30, 4), (64, 8), (65, 8)])
def test_tree_fan_in_is_bounded(blobs, n_chunks, split_every):
    model, params = init_params_for(blobs)
    data = da.from_array(blobs, chunks=-(-len(blobs) // n_chunks))
    arrays = {"X": data}
    graph = engine.map_reduce_graph(
        model.e_step,
        model.combine,
        ("X",),
        engine.chunk_blocks(arrays),
        params,
        split_every=split_every,
    )
    deps = dependencies(graph)
    combines = [k for k in deps if str(k).startswith("_combine_task")]
    maps = [k for k in deps if str(k).startswith("_map_task")]
    assert len(maps) == data.numblocks[0]
    assert all(len(deps[k]) <= split_every for k in combines)
    # a tree: each E-step result feeds exactly one combine, and there is one root
    fed = [d for k in combines for d in deps[k]]
    assert len(fed) == len(set(fed))
    expected_levels, nodes = 0, data.numblocks[0]
    while nodes > 1:
        nodes, expected_levels = -(-nodes // split_every), expected_levels + 1

    def depth(key):
        children = [d for d in deps[key] if d in combines]
        return 1 + max(map(depth, children), default=0)

    roots = [k for k in combines if k not in fed]
    assert len(roots) == (1 if combines else 0)
    assert (depth(roots[0]) if roots else 0) == expected_levels
    stats = dask.compute(graph)[0]
    whole = model.e_step({"X": blobs}, params)
    for key in whole:
        np.testing.assert_allclose(stats[key], whole[key], rtol=1e-11)


def test_params_enter_the_graph_once(blobs):
    model, params = init_params_for(blobs)
    arrays = {"X": da.from_array(blobs, chunks=500)}
    graph = engine.map_reduce_graph(
        model.e_step, model.combine, ("X",), engine.chunk_blocks(arrays), params
    )
    tasks = dict(graph.__dask_graph__())
    deps = dependencies(graph)
    maps = [k for k in deps if str(k).startswith("_map_task")]
    shared = set.intersection(*(set(deps[k]) for k in maps))
    assert len(shared) == 1  # every E-step depends on the same single parameters key
    assert (
        len(tasks)
        == len(maps)
        + 1
        + len([k for k in deps if str(k).startswith("_combine_task")])
        + arrays["X"].numblocks[0]
    )


class CountingScheduler:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, dsk, keys, **kwargs):
        self.calls += 1
        return dask.get(dsk, keys, **kwargs)


def test_one_compute_per_iteration(blobs):
    counter = CountingScheduler()
    init = initial_parameters(blobs, 3, "full")
    data = da.from_array(blobs, chunks=1000)
    with dask.config.set(scheduler=counter), pytest.warns(dem.ConvergenceWarning):
        model = dem.GaussianMixture(3, max_iter=7, tol=0, persist=False, **init).fit(data)
    assert model.n_iter_ == 7
    assert counter.calls == 7  # given initial parameters, no sample is drawn


def test_initialisation_takes_one_compute(blobs):
    counter = CountingScheduler()
    data = da.from_array(blobs, chunks=1000)
    with dask.config.set(scheduler=counter), pytest.warns(dem.ConvergenceWarning):
        dem.GaussianMixture(3, max_iter=3, tol=0, persist=False, random_state=0).fit(data)
    assert counter.calls == 3 + 1


def test_invalid_values_are_found_in_the_first_pass_naming_rows(blobs):
    bad = blobs.copy()
    bad[2345, 1] = np.nan
    counter = CountingScheduler()
    init = initial_parameters(blobs, 3, "full")
    with (
        dask.config.set(scheduler=counter),
        pytest.raises(
            ValueError, match=r"NaN or infinity .* rows 2345 and 2345 \(chunk rows 2000-2999\)"
        ),
    ):
        dem.GaussianMixture(3, persist=False, **init).fit(da.from_array(bad, chunks=1000))
    assert counter.calls == 1
    bad[2345, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        dem.GaussianMixture(3, **init).fit(bad)


def test_features_split_into_chunks_are_rechunked_with_a_warning(blobs):
    data = da.from_array(blobs, chunks=(1000, 2))
    with pytest.warns(UserWarning, match="feature axis"):
        model = dem.GaussianMixture(2, random_state=0).fit(data)
    assert model.means_.shape == (2, 3)


def test_inputs_must_share_sample_chunks():
    x = da.ones((100, 2), chunks=50)
    y = da.ones(100, chunks=30)
    with pytest.raises(ValueError, match="share their sample chunks"):
        engine.prepare({"X": x, "y": y}, persist=False)


def write_store(path, x, chunks=1000):
    group = zarr.open_group(str(path), mode="w")
    array = group.create_array(
        "X",
        shape=x.shape,
        dtype=x.dtype,
        chunks=(chunks, x.shape[1]),
        dimension_names=("sample", "feature"),
    )
    array[...] = x
    return str(path)


def test_out_of_core_fit_from_zarr_rereads_the_store(tmp_path, blobs):
    store = write_store(tmp_path / "data.zarr", blobs)
    init = initial_parameters(blobs, 3, "full")
    reads, per_iteration = [], []
    original = zarr.Array.__getitem__

    def counting_getitem(self, selection):
        reads.append(1)
        return original(self, selection)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        reference = dem.GaussianMixture(3, max_iter=4, tol=0, **init).fit(blobs)
        zarr.Array.__getitem__ = counting_getitem
        try:
            ours = dem.GaussianMixture(
                3,
                max_iter=4,
                tol=0,
                persist=False,
                callback=lambda info: per_iteration.append(len(reads)),
                **init,
            ).fit(store, variable="X")
        finally:
            zarr.Array.__getitem__ = original
    n_chunks = -(-len(blobs) // 1000)
    # every chunk is read once per iteration: nothing is kept between iterations
    assert np.diff(per_iteration).tolist() == [n_chunks] * 3
    np.testing.assert_allclose(ours.means_, reference.means_, rtol=1e-11)


def test_zarr_store_is_opened_read_only_and_left_unchanged(tmp_path, blobs):
    store = write_store(tmp_path / "data.zarr", blobs)
    before = {p: p.read_bytes() for p in (tmp_path / "data.zarr").rglob("*") if p.is_file()}
    dem.GaussianMixture(3, random_state=0).fit(store, variable="X")
    after = {p: p.read_bytes() for p in (tmp_path / "data.zarr").rglob("*") if p.is_file()}
    assert before == after


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda x, p: x[:, 0], ValueError, "must be 2-D.*reshape"),
        (lambda x, p: x[:2], ValueError, "n_samples >= n_components"),
        (lambda x, p: x[:0], ValueError, "empty"),
        (lambda x, p: x.astype(str), TypeError, "needs numbers"),
        (lambda x, p: p, ValueError, "without a variable name"),
        (lambda x, p: p + "-missing", FileNotFoundError, "does not exist"),
    ],
)
def test_bad_input_gets_a_clear_error(tmp_path, blobs, make, error, match):
    store = write_store(tmp_path / "data.zarr", blobs)
    with pytest.raises(error, match=match):
        dem.GaussianMixture(3).fit(make(blobs, store))


def test_missing_variable_names_the_ones_there(tmp_path, blobs):
    store = write_store(tmp_path / "data.zarr", blobs)
    with pytest.raises(KeyError, match=r"no variable 'Y'.*\['X'\]"):
        dem.GaussianMixture(3).fit(store, variable="Y")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("n_components", 0),
        ("covariance_type", "banana"),
        ("tol", -1.0),
        ("init_params", "magic"),
        ("split_every", 1),
        ("max_iter", 0),
    ],
)
def test_bad_hyperparameters(blobs, option, value):
    with pytest.raises(ValueError, match=option):
        dem.GaussianMixture(**{"n_components": 2, option: value}).fit(blobs)


def test_bad_initial_parameters(blobs):
    with pytest.raises(ValueError, match="means_init must have shape"):
        dem.GaussianMixture(3, means_init=np.zeros((2, 3))).fit(blobs)
    with pytest.raises(ValueError, match="weights_init must be non-negative and sum to 1"):
        dem.GaussianMixture(2, weights_init=[0.2, 0.2]).fit(blobs)
    with pytest.raises(ValueError, match="positive definite"):
        dem.GaussianMixture(1, precisions_init=-np.eye(3)[None]).fit(blobs)


def test_unfitted_estimator_says_so(blobs):
    with pytest.raises(dem.NotFittedError, match="call fit first"):
        dem.GaussianMixture(2).predict(blobs)


def test_collapsed_component_raises_with_advice():
    x = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]), 10, axis=0)
    with pytest.raises(ValueError, match="increase reg_covar"):
        dem.GaussianMixture(3, reg_covar=0.0, init_params="random_from_data", random_state=0).fit(x)


def test_invalid_values_met_by_the_initialisation_sample_name_the_row(blobs):
    bad = blobs.copy()
    bad[777, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinity in 1 row\(s\) between rows 777 and 777"):
        dem.GaussianMixture(3, random_state=0).fit(bad)


# --- what the engine says when a fit goes wrong: in the model's own terms ---------------------


class MeanModel:
    """The mean of a unit-variance Gaussian; ``fault`` makes the M-step or the E-step's
    log-likelihood NaN."""

    name = "mean"
    inputs = ("X",)
    missing_ok: frozenset[str] = frozenset()

    def __init__(self, fault: str = "") -> None:
        self.fault = fault

    def config(self):
        return {}

    def param_dims(self):
        return {"mean": ("feature",)}

    def e_step(self, block, params):
        x = block["X"]
        loglik = -0.5 * np.sum((x - params["mean"]) ** 2)
        return {
            "n": np.float64(len(x)),
            "loglik": np.float64(np.nan if self.fault == "loglik" else loglik),
            "sum_x": x.sum(axis=0),
        }

    def combine(self, a, b):
        return {key: a[key] + b[key] for key in a}

    def m_step(self, stats, params):
        mean = stats["sum_x"] / stats["n"]
        return {"mean": mean * np.nan if self.fault == "m_step" else mean}


class AdvisedMeanModel(MeanModel):
    remedy = "Try fewer widgets."

    def converged(self, change, tol, previous, params):
        return False


def fit_mean(model, max_iter=3):
    x = da.from_array(np.random.default_rng(0).normal(size=(40, 2)), chunks=10)
    return engine.fit(model, {"X": x}, lambda: {"mean": np.zeros(2)}, max_iter=max_iter)


@pytest.mark.parametrize("fault", ["m_step", "loglik"])
def test_a_non_finite_fit_gets_the_models_own_advice(fault):
    with pytest.raises(FloatingPointError, match=r"Try fewer widgets\.$"):
        fit_mean(AdvisedMeanModel(fault))
    with pytest.raises(FloatingPointError) as default:
        fit_mean(MeanModel(fault))
    assert str(default.value).endswith(dem.model.DEFAULT_REMEDY)
    assert "reg_covar" not in str(default.value)


def test_the_convergence_warning_names_the_rule_that_was_not_met():
    with pytest.warns(dem.ConvergenceWarning, match=r"the model's stopping rule was not met"):
        fit_mean(AdvisedMeanModel())
    with pytest.warns(dem.ConvergenceWarning, match=r"change of the mean log-likelihood"):
        engine.fit(
            MeanModel(),
            {"X": da.ones((10, 2), chunks=5)},
            lambda: {"mean": np.full(2, 5.0)},
            max_iter=1,
            tol=0.0,
        )


def test_local_threads_run_each_task_with_one_blas_thread(blobs):
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> int:
        return max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")

    def e_step(block, params):
        return {"most_blas_threads": np.float64(blas_threads())}

    data = {"X": da.from_array(blobs, chunks=(len(blobs) // 4, blobs.shape[1]))}
    with threadpool_limits(limits=2, user_api="blas"), dask.config.set(scheduler="threads"):
        stats = engine.map_reduce(
            e_step, lambda a, b: {k: np.maximum(a[k], b[k]) for k in a}, data, {}
        )
        assert blas_threads() == 2  # lifted again after the pass
    assert stats["most_blas_threads"] == 1.0
