"""Map tasks that read their chunks themselves: the tree inside a task, reads ahead, a
throttled store; the same bits whichever way a pass is cut into tasks."""

from __future__ import annotations

import threading
import time
import warnings
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from distributed import Client, LocalCluster

import dem
from dem import graph
from dem.model import add_stats
from tests.conftest import initial_parameters, make_blobs


def _leaf(block: dict[str, np.ndarray], params: Any) -> str:
    return str(int(block["X"][0, 0]))


def _joined(a: str, b: str) -> str:
    return f"({a} {b})"


def _chunk_stats(block: dict[str, np.ndarray], params: dict[str, np.ndarray]) -> dict[str, Any]:
    x = block["X"]
    return {"n": np.float64(len(x)), "sum_x": (x * params["scale"]).sum(axis=0)}


def _zarr(data: np.ndarray, path: Any, rows: int) -> da.Array:
    group = zarr.open_group(str(path), mode="w")
    group.create_array("X", shape=data.shape, chunks=(rows, data.shape[1]), dtype="f8")[:] = data
    return da.from_zarr(str(path), component="X")


@pytest.mark.parametrize("split_every", [2, 3, 8])
@pytest.mark.parametrize("n_chunks", [1, 7, 64, 100])
def test_a_task_of_split_every_power_chunks_is_a_node_of_the_tree(
    tmp_path: Any, split_every: int, n_chunks: int
) -> None:
    """The tree's exact shape, written out (a combine that is neither associative nor
    commutative: the nesting of the string is the order of the sums), is the same for
    one chunk per task and for every power of split_every chunks per task."""
    rows = np.repeat(np.arange(n_chunks, dtype=np.float64), 2)[:, None]
    array = _zarr(rows, tmp_path / "x.zarr", 2)
    blocks = graph.chunk_blocks({"X": array})
    shapes = []
    for per_task in (1, split_every, split_every**2, split_every**3):
        one_pass = graph.map_reduce_graph(
            _leaf, _joined, ("X",), blocks, None,
            split_every=split_every, chunks_per_task=per_task,
        )  # fmt: skip
        shapes.append(dask.compute(one_pass, scheduler="sync")[0])
    assert shapes[0].count("(") == n_chunks - 1  # one combine of two per chunk but one
    assert all(shape == shapes[0] for shape in shapes[1:]), shapes
    leaves = shapes[0].replace("(", " ").replace(")", " ").split()
    assert leaves == [str(i) for i in range(n_chunks)]


def test_chunks_per_task_must_be_a_power_of_split_every(tmp_path: Any) -> None:
    blocks = graph.chunk_blocks({"X": da.zeros((100, 2), chunks=10)})
    with pytest.raises(ValueError, match="power of split_every"):
        graph.map_reduce_graph(
            _leaf, _joined, ("X",), blocks, None, split_every=4, chunks_per_task=8
        )


def test_chunks_per_task_grows_with_the_chunk_count_and_shrinks_with_their_size() -> None:
    tiny = da.zeros((50_000 * 100, 4), chunks=(100, 4))  # 50,000 chunks of 3.2 KB
    assert graph.chunks_per_task({"X": tiny}, 8) == 512  # 8**4 would leave < 16 tasks
    assert graph.chunks_per_task({"X": tiny[: 1000 * 100]}, 8) == 8
    assert graph.chunks_per_task({"X": tiny}, 2) == 2048
    mib = da.zeros((10_000 * 32_768, 4), chunks=(32_768, 4))  # 1 MiB chunks
    assert graph.chunks_per_task({"X": mib}, 8) == 8  # 64 MiB would exceed TASK_BYTES
    assert graph.chunks_per_task({"X": mib}, 2) == 32


@pytest.mark.parametrize("prefetch", [0, 1, 4])
def test_a_pass_over_a_store_has_no_key_per_chunk_and_the_same_bits(
    tmp_path: Any, prefetch: int
) -> None:
    data = np.random.default_rng(0).standard_normal((6400, 3))
    params = {"scale": np.array([0.1, 1.0 / 3.0, 7.0])}
    stored = _zarr(data, tmp_path / "x.zarr", 25)  # 256 chunks
    in_memory = da.from_array(data, chunks=25)
    results = {}
    for name, array in (("zarr", stored), ("memory", in_memory)):
        blocks = graph.chunk_blocks({"X": array})
        for per_task in (1, 8):
            one_pass = graph.map_reduce_graph(
                _chunk_stats, add_stats, ("X",), blocks, params,
                chunks_per_task=per_task, prefetch=prefetch,
            )  # fmt: skip
            results[name, per_task] = dask.compute(one_pass, scheduler="threads")[0]
            tasks = dict(one_pass.__dask_graph__())
            maps = [k for k in tasks if str(k).startswith("_map_task")]
            assert len(maps) == 256 // per_task
            chunk_keys = [k for k in tasks if isinstance(k, tuple)]
            assert len(chunk_keys) == (0 if name == "zarr" else 256)
    first = results["memory", 1]
    np.testing.assert_allclose(first["sum_x"], (data * params["scale"]).sum(axis=0), rtol=1e-12)
    for stats in results.values():
        assert stats["n"] == len(data)
        assert np.array_equal(stats["sum_x"], first["sum_x"])


class SlowRows:
    """An array-like whose reads take ``seconds`` each and count how many run at once."""

    def __init__(self, data: np.ndarray, seconds: float) -> None:
        self.data, self.seconds = data, seconds
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim
        self.lock = threading.Lock()
        self.running = self.most = 0

    def __getitem__(self, index: Any) -> np.ndarray:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        return self.data[index]


@pytest.mark.parametrize("prefetch", [0, 4])
def test_reads_ahead_overlap_and_change_no_bit(prefetch: int) -> None:
    data = np.random.default_rng(1).standard_normal((320, 2))
    rows = SlowRows(data, 0.02)
    array = da.from_array(rows, chunks=(10, 2), asarray=True, name="slow-rows")
    params = {"scale": np.array([1.0, 3.0])}
    one_pass = graph.map_reduce_graph(
        _chunk_stats, add_stats, ("X",), graph.chunk_blocks({"X": array}), params,
        split_every=8, chunks_per_task=8, prefetch=prefetch,
    )  # fmt: skip
    stats = dask.compute(one_pass, scheduler="sync")[0]  # one task at a time
    assert rows.most == (1 if prefetch == 0 else prefetch)
    reference = graph.map_reduce_graph(
        _chunk_stats, add_stats, ("X",), graph.chunk_blocks({"X": da.from_array(data, 10)}),
        params, split_every=8,
    )  # fmt: skip
    assert np.array_equal(stats["sum_x"], dask.compute(reference, scheduler="sync")[0]["sum_x"])


class FailingRows(SlowRows):
    """Reads of rows from ``bad`` on fail."""

    def __init__(self, data: np.ndarray, bad: int) -> None:
        super().__init__(data, 0.0)
        self.bad = bad

    def __getitem__(self, index: Any) -> np.ndarray:
        if index[0].start >= self.bad:
            raise RuntimeError("corrupt chunk")
        return super().__getitem__(index)


def test_a_failed_read_ahead_names_its_chunk() -> None:
    data = np.ones((160, 2))
    array = da.from_array(FailingRows(data, 120), chunks=(10, 2), asarray=True, name="failing")
    blocks = graph.chunk_blocks({"X": array})
    one_pass = graph.map_reduce_graph(
        _chunk_stats, add_stats, ("X",), blocks, {"scale": np.ones(2)}, chunks_per_task=8
    )
    with pytest.raises(ValueError, match=r"chunk 12 along the samples \(rows 120-129\)"):
        graph._compute(one_pass, ("X",), blocks)


def test_the_throttled_filesystem_throttles(tmp_path: Any) -> None:
    from benchmarks.throttled import ThrottledFileSystem

    path = tmp_path / "blob"
    path.write_bytes(bytes(1_000_000))
    slow = ThrottledFileSystem(latency=0.05, bandwidth=20e6, skip_instance_cache=True)
    started = time.perf_counter()
    assert slow.cat_file(f"throttled://{path}") == bytes(1_000_000)
    assert time.perf_counter() - started >= 0.05 + 0.05  # latency + 1 MB at 20 MB/s
    started = time.perf_counter()
    threads = [threading.Thread(target=slow.cat_file, args=(str(path),)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # the latencies overlap; the transfers share one link, one after the other
    assert time.perf_counter() - started >= 0.05 + 4 * 0.05
    assert slow.cat_file(str(path), start=10, end=20) == bytes(10)


def test_a_fit_through_a_throttled_store_on_worker_processes_has_the_bits_of_threads(
    tmp_path: Any,
) -> None:
    from benchmarks.throttled import throttled_store

    blobs = make_blobs()
    zarr.open_group(str(tmp_path / "x.zarr"), mode="w").create_array(
        "X", shape=blobs.shape, chunks=(25, 3), dtype="f8"
    )[:] = blobs  # 180 chunks: 8 to a map task
    init = initial_parameters(blobs, 3, "full")
    fits = []
    for workers in (None, 2):
        group = zarr.open_group(throttled_store(str(tmp_path / "x.zarr"), 0.001, 1e9), mode="r")
        model = dem.GaussianMixture(3, max_iter=4, tol=0, persist=False, **init)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dem.ConvergenceWarning)
            if workers is None:
                fits.append(model.fit(str(tmp_path / "x.zarr"), variable="X"))
                continue
            with (
                LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True,
                    dashboard_address=None,
                ) as cluster,
                Client(cluster) as client,
            ):  # fmt: skip
                fits.append(model.fit(group, variable="X"))
                reads = client.run(_requests)
        assert all(count > 0 for count in reads.values())  # both workers read, throttled
    for name in ("weights_", "means_", "covariances_"):
        assert np.array_equal(getattr(fits[0], name), getattr(fits[1], name)), name
    assert fits[0].lower_bounds_ == fits[1].lower_bounds_


def _requests() -> int:
    from benchmarks.throttled import REQUESTS

    return REQUESTS["count"]


def test_a_fit_resumed_with_other_tasks_per_chunk_has_the_bits_of_one_run(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two iterations one chunk to a task, resumed for two more 4 to a task without
    reading ahead, end with the bits of four iterations in one run 32 to a task."""
    blobs = make_blobs()
    zarr.open_group(str(tmp_path / "x.zarr"), mode="w").create_array(
        "X", shape=blobs.shape, chunks=(16, 3), dtype="f8"
    )[:] = blobs  # 563 chunks
    init = initial_parameters(blobs, 3, "diag")

    def fit(max_iter: int, **options: Any) -> dem.GaussianMixture:
        model = dem.GaussianMixture(
            3, covariance_type="diag", max_iter=max_iter, tol=0, persist=False, split_every=2,
            **init, **options,
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dem.ConvergenceWarning)
            return model.fit(str(tmp_path / "x.zarr"), variable="X")

    store = {"X": da.from_zarr(str(tmp_path / "x.zarr"), component="X")}
    assert graph.chunks_per_task(store, 2) == 32
    whole = fit(4)
    monkeypatch.setattr(graph, "GROUPED_TASKS", 10**9)  # one chunk per task
    assert graph.chunks_per_task(store, 2) == 1
    fit(2, checkpoint=str(tmp_path / "fit.zarr"))
    monkeypatch.setattr(graph, "GROUPED_TASKS", 100)
    monkeypatch.setattr(graph, "PREFETCH", 0)
    assert graph.chunks_per_task(store, 2) == 4
    resumed = fit(4, checkpoint=str(tmp_path / "fit.zarr"), resume=True)
    assert resumed.n_iter_ == 4
    for name in ("weights_", "means_", "covariances_"):
        assert np.array_equal(getattr(resumed, name), getattr(whole, name)), name
    assert resumed.lower_bounds_ == whole.lower_bounds_
