"""Out of core: a Gaussian-mixture fit on a Zarr store larger than the cluster's memory.

Writes (chunk by chunk, from the client) a Zarr store of at least ``--store-gib``
GiB, then on a LocalCluster of one-thread worker processes with a memory limit each:

- dem: ``GaussianMixture(...).fit(store, variable="X")``, which the engine does not
  persist (the store exceeds half the cluster's memory), so every iteration
  re-reads the store;
- the peer, after each of dem's iterations (so both see the same load): a plain read
  of the same store, ``da.from_zarr(store).sum(axis=0)``;

and reports the medians of each (seconds per pass over the store), their ratio, the
peak resident memory of each worker during each (sampled every 50 ms) and whether any
worker process was restarted (its process id changed) or lost.

Run ``python benchmarks/outofcore.py`` (6 GiB store, 2 workers × 1 GiB: several
minutes plus the time to write the store) or ``python benchmarks/outofcore.py --quick``
(a small store, which does not exceed the cluster's memory).

With ``--latency-ms`` (and ``--bandwidth-mb``), both the fit and the plain read go through
a throttling filesystem (``throttled.py``: every request waits the latency, each worker's
transfers share one link of the bandwidth), as a store in object storage would be read,
and the fit is not persisted whatever the store's size: ``python benchmarks/outofcore.py
--latency-ms 20 --bandwidth-mb 100 --store-gib 0.25 --chunk-rows 8192 --covariance diag
--k 2`` (1 MiB chunks). dem's map tasks read their chunks ahead while they compute, so the
fit's iteration approaches the larger of the read and the arithmetic, not their sum.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import warnings
from typing import Any

import numpy as np
import zarr
from _common import (
    emit,
    initial_parameters,
    local_cluster,
    machine,
    median,
    mixture_rows,
    timed,
)

BENCHMARK = "outofcore"
GIB = 2**30


def write_store(
    path: str, n_rows: int, n_features: int, n_components: int, chunk_rows: int
) -> None:
    """A Zarr v3 group with one float64 array ``X`` (default codec), written chunk by chunk."""
    group = zarr.open_group(path, mode="w")
    array = group.create_array(
        "X", shape=(n_rows, n_features), chunks=(chunk_rows, n_features), dtype="f8"
    )
    for index, start in enumerate(range(0, n_rows, chunk_rows)):
        rows = min(chunk_rows, n_rows - start)
        array[start : start + rows] = mixture_rows(
            rows, n_features, n_components, seed=1000 + index
        )


def _start_sampler(dask_worker: Any) -> int:
    """Start (once) a thread on the worker recording its peak resident memory."""
    import psutil

    if getattr(dask_worker, "_bench_sampler", None) is None:
        process = psutil.Process()
        state = {"peak": process.memory_info().rss, "stop": threading.Event()}

        def sample() -> None:
            while not state["stop"].wait(0.05):
                state["peak"] = max(state["peak"], process.memory_info().rss)

        threading.Thread(target=sample, daemon=True).start()
        dask_worker._bench_sampler = state
    return os.getpid()


def _take_peak(dask_worker: Any) -> int:
    """The peak since the last call, then reset it to the current memory."""
    import psutil

    state = dask_worker._bench_sampler
    peak = max(state["peak"], psutil.Process().memory_info().rss)
    state["peak"] = psutil.Process().memory_info().rss
    return int(peak)


def workers(client: Any) -> dict[str, int]:
    """Worker address -> process id (a restarted worker has a new one)."""
    return client.run(_start_sampler)


def peak_gib(client: Any) -> dict[str, float]:
    return {address: peak / GIB for address, peak in client.run(_take_peak).items()}


def plain_read(source: Any) -> None:
    """A pass over the store: one dask task per chunk, summed (``source``: a path or a
    Zarr group)."""
    import dask.array as da

    array = source["X"] if isinstance(source, zarr.Group) else zarr.open_group(source)["X"]
    da.from_zarr(array).sum(axis=0).compute()


def interleaved(
    client: Any,
    path: str,
    source: Any,
    n_components: int,
    covariance_type: str,
    inits: dict[str, np.ndarray],
    iterations: int,
) -> dict[str, Any]:
    """A dem fit of ``iterations + 1`` iterations with a plain read of the store after each.

    The first iteration (which also checks the data for NaN) is not timed; each read
    follows an iteration, so both see the same load. Peaks are per worker, in GiB, for
    the fit's iterations and for the reads separately.
    """
    from dem import engine
    from dem.engine import ConvergenceWarning
    from dem.models.mixture import GaussianMixture

    record: dict[str, Any] = {"fit": [], "read": [], "fit_peak": {}, "read_peak": {}}

    def keep_peaks(into: dict[str, float]) -> None:
        for address, peak in peak_gib(client).items():
            into[address] = max(into.get(address, 0.0), peak)

    def after_iteration(info: Any) -> None:
        if info.iteration > 1:
            record["fit"].append(info.seconds)
        keep_peaks(record["fit_peak"])
        record["read"].append(timed(lambda: plain_read(source))[0])
        keep_peaks(record["read_peak"])

    model = GaussianMixture(
        n_components,
        covariance_type=covariance_type,
        max_iter=iterations + 1,
        tol=0.0,
        callback=after_iteration,
        persist=None if isinstance(source, str) else False,
        **inits,
    )
    peak_gib(client)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(source, variable="X")
    record["not_persisted"] = not isinstance(source, str) or bool(
        8 * np.prod(_shape(path)) > engine.memory_budget()
    )
    return record


def _shape(path: str) -> tuple[int, int]:
    rows, features = zarr.open_group(path, mode="r")["X"].shape
    return int(rows), int(features)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store-gib", type=float, default=6.0, help="store size (default 6 GiB)")
    parser.add_argument(
        "--memory-limit-gib", type=float, default=1.0, help="per worker (default 1)"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--covariance", default="full")
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes of each (>= 3)")
    parser.add_argument(
        "--path", default=None, help="where to write the store (default: a temp dir)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the store (and reuse one at --path)"
    )
    parser.add_argument("--quick", action="store_true", help="0.25 GiB store, for a smoke run")
    parser.add_argument(
        "--latency-ms", type=float, default=None, help="read through a throttle: ms/request"
    )
    parser.add_argument(
        "--bandwidth-mb", type=float, default=100.0, help="the throttle's MB/s per worker"
    )
    args = parser.parse_args()
    if args.quick:
        args.store_gib, args.chunk_rows = 0.25, 50_000
    d, k = args.d, args.k
    n_rows = int(args.store_gib * GIB) // (8 * d)

    emit(BENCHMARK, "machine", **machine())
    if args.path is not None and os.path.exists(args.path) and not args.keep:
        parser.error(
            f"{args.path} exists: pass --keep to reuse it (it is only read) or another --path"
        )
    created = None if args.path is not None else tempfile.mkdtemp(prefix="dem-outofcore-")
    path = args.path if created is None else os.path.join(created, "store.zarr")
    reused = os.path.exists(path)
    try:
        if reused:
            n_rows, d = _shape(path)
        else:
            seconds, _ = timed(lambda: write_store(path, n_rows, d, k, args.chunk_rows))
            emit(BENCHMARK, "write_store", seconds=seconds, rows=n_rows)
        store_gib = n_rows * d * 8 / GIB
        cluster_gib = args.workers * args.memory_limit_gib
        config = {
            "store_gib": store_gib,
            "cluster_memory_gib": cluster_gib,
            "store_over_cluster_memory": store_gib / cluster_gib,
            "rows": n_rows,
            "d": d,
            "k": k,
            "covariance": args.covariance,
            "chunk_rows": args.chunk_rows,
            "workers": args.workers,
            "latency_ms": args.latency_ms,
            "bandwidth_mb_per_s": None if args.latency_ms is None else args.bandwidth_mb,
        }
        source: Any = path
        if args.latency_ms is not None:
            from throttled import throttled_store

            store = throttled_store(path, args.latency_ms / 1e3, args.bandwidth_mb * 1e6)
            source = zarr.open_group(store, mode="r")
        sample = zarr.open_group(path, mode="r")["X"][:20_000]
        inits = initial_parameters(sample, k, args.covariance, seed=3)
        with local_cluster(args.workers, memory_limit=int(args.memory_limit_gib * GIB)) as client:
            before = workers(client)
            record = interleaved(client, path, source, k, args.covariance, inits, args.repeats)
            after = workers(client)
            read, fit = record["read"], record["fit"]
            emit(
                BENCHMARK,
                "plain_read",
                seconds=median(read),
                repeats=read,
                gb_per_s=store_gib * GIB / 1e9 / median(read),
                peak_worker_gib=record["read_peak"],
                **config,
            )
            emit(
                BENCHMARK,
                "dem_fit",
                seconds_per_iter=median(fit),
                repeats=fit,
                not_persisted=record["not_persisted"],
                peak_worker_gib=record["fit_peak"],
                **config,
            )
            emit(
                BENCHMARK,
                "summary",
                dem_over_read=median(fit) / median(read),
                peak_worker_gib=max(*record["read_peak"].values(), *record["fit_peak"].values()),
                memory_limit_gib=args.memory_limit_gib,
                workers_restarted_or_lost=before != after,
                **config,
            )
    finally:
        if not (args.keep or reused):  # remove only what this run wrote
            shutil.rmtree(path if created is None else created, ignore_errors=True)


if __name__ == "__main__":
    main()
