"""The engine's hand-written graph layer: same sums, same tree, inputs of any origin."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from dask.core import get_dependencies
from dask.delayed import delayed

from dem import engine
from dem.model import add_stats


def _chunk_stats(
    block: dict[str, np.ndarray], params: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    x = block["X"]
    return {"n": np.float64(len(x)), "sum_x": (x * params["scale"]).sum(axis=0)}


@pytest.fixture
def data() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1000, 3))


def _sources(data: np.ndarray, tmp_path) -> dict[str, da.Array]:
    group = zarr.open_group(str(tmp_path / "x.zarr"), mode="w")
    group.create_array("X", shape=data.shape, chunks=(70, 3), dtype="f8")[:] = data
    return {
        "numpy": da.from_array(data, chunks=70),
        "persisted": da.from_array(data, chunks=70).persist(scheduler="sync"),
        "zarr": da.from_zarr(str(tmp_path / "x.zarr"), component="X"),
    }


@pytest.mark.parametrize("source", ["numpy", "persisted", "zarr"])
@pytest.mark.parametrize("split_every", [2, 8])
def test_map_reduce_sums_every_chunk_once(
    data: np.ndarray, tmp_path, source: str, split_every: int
) -> None:
    array = _sources(data, tmp_path)[source]
    params = {"scale": np.array([1.0, 2.0, 3.0])}
    graph = engine.map_reduce_graph(
        _chunk_stats,
        add_stats,
        ("X",),
        engine.chunk_blocks({"X": array}),
        params,
        split_every=split_every,
    )
    (stats,) = dask.compute(graph, scheduler="sync")
    assert stats["n"] == len(data)
    np.testing.assert_allclose(stats["sum_x"], (data * params["scale"]).sum(axis=0), rtol=1e-12)
    tasks = dict(graph.__dask_graph__())
    combines = [k for k in tasks if str(k).startswith("_combine_task")]
    assert all(len(get_dependencies(tasks, k)) <= split_every for k in combines)


@pytest.mark.parametrize("source", ["numpy", "persisted", "zarr"])
@pytest.mark.parametrize("split_every", [2, 3, 8])
def test_small_chunks_grouped_per_task_give_the_same_bits(
    data: np.ndarray, tmp_path, source: str, split_every: int
) -> None:
    """A map task over split_every chunks is the tree's first level: the same sums in the
    same order, so the same bits, from ceil(chunks / split_every) map tasks."""
    array = _sources(data, tmp_path)[source]
    blocks = engine.chunk_blocks({"X": array})
    params = {"scale": np.array([0.1, 1.0 / 3.0, 7.0])}
    results, graphs = [], []
    for per_task in (1, split_every):
        graph = engine.map_reduce_graph(
            _chunk_stats, add_stats, ("X",), blocks, params,
            split_every=split_every, chunks_per_task=per_task,
        )  # fmt: skip
        results.append(dask.compute(graph, scheduler="sync")[0])
        graphs.append(dict(graph.__dask_graph__()))
    ungrouped, grouped = results
    assert grouped["n"] == len(data)
    np.testing.assert_allclose(grouped["sum_x"], (data * params["scale"]).sum(axis=0), rtol=1e-12)
    assert np.array_equal(grouped["sum_x"], ungrouped["sum_x"])
    map_tasks = [k for k in graphs[1] if str(k).startswith("_map_task")]
    assert len(map_tasks) == -(-len(blocks) // split_every)
    assert len(graphs[1]) < len(graphs[0])


def test_only_small_chunks_are_grouped() -> None:
    small = da.zeros((10**6, 4), chunks=(1000, 4))  # 32 KB chunks, 1000 of them
    large = da.zeros((10**7, 16), chunks=(10**6, 16))  # 128 MB chunks
    assert engine.chunks_per_task({"X": small}, 8) == 8
    assert engine.chunks_per_task({"X": large}, 8) == 1
    # all inputs of a chunk count: X and y together (58 chunks of 320 + 13.6 KB)
    x, y = da.zeros((10**5, 40), chunks=(1700, 40)), da.zeros(10**5, chunks=1700)
    assert engine.chunks_per_task({"X": x, "y": y}, 2) == 2
    assert engine.chunks_per_task({"X": x[:, :16], "y": y}, 2) == 2
    # too few chunks to group and still keep the workers busy: 100 chunks, 8 per task
    assert engine.chunks_per_task({"X": small[: 100 * 1000]}, 8) == 1


def test_graph_keys_are_new_every_iteration(data: np.ndarray) -> None:
    """Parameters change every iteration, so no key may be reused from the last one."""
    blocks = engine.chunk_blocks({"X": da.from_array(data, chunks=100)})
    params = {"scale": np.ones(3)}
    first = engine.map_reduce_graph(_chunk_stats, add_stats, ("X",), blocks, params)
    second = engine.map_reduce_graph(_chunk_stats, add_stats, ("X",), blocks, params)
    ours = {
        k
        for k in dict(first.__dask_graph__())
        if str(k).startswith(("_map", "_combine", "_params"))
    }
    theirs = {
        k
        for k in dict(second.__dask_graph__())
        if str(k).startswith(("_map", "_combine", "_params"))
    }
    assert ours and not ours & theirs


def test_tree_reduce_of_delayed_values() -> None:
    nodes = [delayed(np.float64)(i) for i in range(37)]
    total = engine.tree_reduce(nodes, lambda a, b: a + b, split_every=4)
    assert dask.compute(total, scheduler="sync")[0] == sum(range(37))
    assert engine.tree_reduce(nodes[:1], lambda a, b: a + b, split_every=4) is nodes[0]
    with pytest.raises(ValueError, match="split_every must be at least 2"):
        engine.tree_reduce(nodes, lambda a, b: a + b, split_every=1)
