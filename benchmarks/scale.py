"""Scale: EM iterations over 1,000, 10,000 and 50,000 small chunks on a distributed cluster.

The input is a store that generates its chunks when they are read (``GeneratedRows``: a
random mixture chunk seeded by its first row, read through ``dask.array.from_array`` as
``da.from_zarr`` reads a Zarr array: one getter per chunk on a store object), so any
number of chunks costs no disk. For each chunk count the same rows are also fitted in
``--few`` large chunks; the difference in seconds per iteration, divided by the
difference in chunks, is the cost of a chunk per iteration beyond its arithmetic
(scheduling, graph building and submission, reading, task and tree overhead). The
scheduler runs in its own process (``distributed.deploy.subprocess.SubprocessCluster``)
so that its CPU time and memory are measured apart from the client's.

Reported per chunk count: seconds per iteration (median), milliseconds per chunk per
iteration (wall, against the few-chunk run), the same for one pass computed in the
client by one thread with no scheduler (the chunk's own work: its read, its E-step
call), what the cluster adds beyond that work shared by the workers
(``beyond_in_process``), the scheduler's and the client's CPU
milliseconds per chunk per iteration, the graph of one pass (tasks, pickled bytes, the
seconds to build it), and the peak resident memory of the client and the scheduler.

Run ``python benchmarks/scale.py`` (1k, 10k, 50k chunks of 100 rows; a few minutes on 2
cores) or ``python benchmarks/scale.py --chunks 1000,10000 --iterations 2`` for less.
"""

from __future__ import annotations

import argparse
import os
import pickle
import time
import warnings
from typing import Any

import numpy as np
from _common import emit, machine, median, mixture, parse_sizes

BENCHMARK = "scale"
MIB = 2**20


class GeneratedRows:
    """A read-only array-like of ``n_rows`` × ``n_features`` rows of a mixture of
    axis-aligned Gaussians, made on read.

    ``rows[a:b]`` draws rows ``a`` to ``b`` from a random generator seeded by ``a``: what a
    Zarr array is to ``da.from_zarr`` (an object whose chunks are read by slicing it),
    with no storage. Rows depend on how the array is sliced, which is fixed by its chunks.
    """

    def __init__(self, n_rows: int, n_features: int, n_components: int = 2) -> None:
        self.shape = (n_rows, n_features)
        self.dtype = np.dtype(np.float64)
        self.ndim = 2
        weights, self.means, roots = mixture(n_features, n_components, seed=0)
        self.cumulative = np.cumsum(weights)
        self.scales = np.sqrt((roots**2).sum(axis=1))  # each component's axis-aligned sd

    def __getitem__(self, index: Any) -> np.ndarray:
        rows, _ = index
        start, stop = rows.indices(self.shape[0])[:2]
        rng = np.random.default_rng(start)
        labels = np.minimum(
            np.searchsorted(self.cumulative, rng.random(stop - start)), len(self.means) - 1
        )
        values = rng.standard_normal((stop - start, self.shape[1]))
        return values * self.scales[labels] + self.means[labels]


def generated(n_rows: int, n_features: int, chunk_rows: int) -> Any:
    """A dask array over :class:`GeneratedRows`, one getter task per chunk."""
    import dask.array as da

    rows = GeneratedRows(n_rows, n_features)
    name = f"generated-{n_rows}-{n_features}-{chunk_rows}"
    return da.from_array(rows, chunks=(chunk_rows, n_features), name=name, asarray=True)


def cluster(n_workers: int) -> Any:
    """A scheduler process and ``n_workers`` one-thread worker processes."""
    from distributed.deploy.subprocess import SubprocessCluster

    here = os.path.dirname(os.path.abspath(__file__))  # the workers import _common
    paths = [here, os.path.dirname(here), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return SubprocessCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        dashboard_address=None,
        scheduler_kwargs={"dashboard": False},
        worker_kwargs={"dashboard": False},
    )


def _usage() -> tuple[float, int]:
    import psutil

    process = psutil.Process()
    times = process.cpu_times()
    return times.user + times.system, process.memory_info().rss


def scheduler_usage(client: Any) -> tuple[float, int]:
    """The scheduler process's CPU seconds and resident bytes."""
    return client.run_on_scheduler(_usage)  # type: ignore[no-any-return]


def graph_size(array: Any, n_components: int, split_every: int = 8) -> dict[str, Any]:
    """Tasks and pickled bytes of the graph the engine builds for one pass over ``array``."""
    from dem import graph
    from dem.models.mixture.model import MixtureModel

    model = MixtureModel(n_components, "diag")
    arrays = {"X": array}
    params = {
        "weights": np.full(n_components, 1.0 / n_components),
        "means": np.zeros((n_components, array.shape[1])),
    }
    started = time.perf_counter()
    blocks = graph.chunk_blocks(arrays)
    per_task = graph.chunks_per_task(arrays, split_every)
    plan_seconds = time.perf_counter() - started
    started = time.perf_counter()
    one_pass = graph.map_reduce_graph(
        model.e_step, model.combine, ("X",), blocks, params,
        split_every=split_every, chunks_per_task=per_task,
    )  # fmt: skip
    tasks = dict(one_pass.__dask_graph__())
    build_seconds = time.perf_counter() - started
    return {
        "tasks": len(tasks),
        "chunks_per_task": per_task,
        "pickled_mib": len(pickle.dumps(tasks, protocol=5)) / MIB,
        "plan_seconds": plan_seconds,
        "build_seconds": build_seconds,
    }


def in_process_seconds(array: Any, n_components: int, repeats: int = 2) -> float:
    """Median seconds of one pass over ``array`` computed in this process by one thread
    (dask's synchronous scheduler): each chunk's own work (its read and its E-step call),
    with no scheduler, no worker and no transfer."""
    import dask

    from dem import graph
    from dem.models.mixture.model import MixtureModel

    model = MixtureModel(n_components, "diag")
    arrays = {"X": array}
    sample = GeneratedRows(1000, array.shape[1])[0:1000, :]
    params = model.e_step({"X": sample}, _start(model, sample))
    params = model.m_step(params, _start(model, sample))
    blocks, per_task = graph.chunk_blocks(arrays), graph.chunks_per_task(arrays, 8)
    seconds = []
    for _ in range(repeats):
        one_pass = graph.map_reduce_graph(
            model.e_step, model.combine, ("X",), blocks, params, chunks_per_task=per_task
        )
        started = time.perf_counter()
        dask.compute(one_pass, scheduler="sync")
        seconds.append(time.perf_counter() - started)
    return median(seconds)


def _start(model: Any, sample: np.ndarray) -> dict[str, np.ndarray]:
    from dem.models.mixture.init import initial_params

    return initial_params(model, sample, np.random.default_rng(0), "kmeans")  # type: ignore[no-any-return]


def fit_seconds(
    client: Any, array: Any, n_components: int, iterations: int
) -> tuple[list[float], float, float, tuple[int, int]]:
    """Per-iteration seconds of ``iterations`` iterations after one untimed one; the
    scheduler's and the client's CPU seconds over the timed ones; the scheduler's
    resident bytes before the fit and the most after any iteration."""
    from dem.engine import ConvergenceWarning
    from dem.models.mixture import GaussianMixture

    means = GeneratedRows(10 * n_components, array.shape[1])[0 : 10 * n_components, :]
    seconds: list[float] = []
    marks: dict[str, Any] = {"peak": 0, "before": scheduler_usage(client)[1]}

    def after(info: Any) -> None:
        cpu, rss = scheduler_usage(client)
        marks["peak"] = max(marks["peak"], rss)
        if info.iteration == 1:  # the first pass also checks the data
            marks["start"] = (cpu, _usage()[0])
            marks["start_time"] = time.perf_counter()
        else:
            seconds.append(info.seconds)
            marks["end"] = (cpu, _usage()[0])

    model = GaussianMixture(
        n_components,
        covariance_type="diag",
        max_iter=iterations + 1,
        tol=0.0,
        means_init=means[::10][:n_components],
        persist=False,
        callback=after,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(array)
    scheduler_cpu = marks["end"][0] - marks["start"][0]
    client_cpu = marks["end"][1] - marks["start"][1]
    return seconds, scheduler_cpu, client_cpu, (int(marks["before"]), int(marks["peak"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", default="1000,10000,50000", help="chunk counts")
    parser.add_argument("--chunk-rows", type=int, default=100)
    parser.add_argument("--few", type=int, default=16, help="chunks of the baseline run")
    parser.add_argument("--d", type=int, default=4)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations")
    args = parser.parse_args()

    emit(BENCHMARK, "machine", **machine())
    from distributed import Client

    config = {"chunk_rows": args.chunk_rows, "d": args.d, "k": args.k, "workers": args.workers}
    with cluster(args.workers) as spec, Client(spec) as client:
        for count in (int(c) for c in parse_sizes(args.chunks)):
            n_rows = count * args.chunk_rows
            many = generated(n_rows, args.d, args.chunk_rows)
            few = generated(n_rows, args.d, -(-n_rows // args.few))
            size = graph_size(many, args.k)
            timed, sched_cpu, client_cpu, sched_peak = fit_seconds(
                client, many, args.k, args.iterations
            )
            base, _, _, _ = fit_seconds(client, few, args.k, args.iterations)
            per_chunk = (median(timed) - median(base)) / (count - args.few)
            own = (in_process_seconds(many, args.k) - in_process_seconds(few, args.k)) / (
                count - args.few
            )
            emit(
                BENCHMARK,
                "chunks",
                chunks=count,
                rows=n_rows,
                seconds_per_iter=median(timed),
                repeats=timed,
                few_chunks_seconds_per_iter=median(base),
                ms_per_chunk_per_iter=1e3 * per_chunk,
                in_process_ms_per_chunk=1e3 * own,
                beyond_in_process_ms_per_chunk=1e3 * (per_chunk - own / args.workers),
                scheduler_cpu_ms_per_chunk_per_iter=1e3 * sched_cpu / len(timed) / count,
                client_cpu_ms_per_chunk_per_iter=1e3 * client_cpu / len(timed) / count,
                graph=size,
                client_peak_mib=_peak_rss() / MIB,
                scheduler_before_fit_mib=sched_peak[0] / MIB,
                scheduler_peak_mib=sched_peak[1] / MIB,
                **config,
            )


def _peak_rss() -> int:
    """This process's peak resident bytes so far (Linux: ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
