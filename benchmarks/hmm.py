"""Gaussian HMM: dem's seconds per Baum–Welch iteration on sequences read from Zarr, with
hmmlearn in the same run on a subset, from identical initial parameters.

What runs, in order (one JSON line each):

- ``machine``: cores, load average, BLAS.
- ``data``: the Zarr store of ``--sequences`` sequences × ``--times`` steps ×
  ``--features`` (float32, chunks of ``--chunk`` sequences), drawn from a known HMM,
  and the seconds it took to write.
- ``zarr_read``: seconds to read the store once on the cluster (the I/O floor).
- ``dem_zarr``: dem on a LocalCluster of 2 one-thread worker processes, the data re-read
  from Zarr every iteration (``persist=False``): median seconds per iteration (the first,
  warm-up iteration, which also checks the input, is left out), and the extrapolation
  to 1e6 sequences × 100 steps (linear in the number of observations; "measured" when
  the run was that size).
- ``dem_zarr_threads``: the same without a cluster (dask's threads in this process):
  the E-step's own cost plus reading Zarr, without the distributed machinery.
- ``dem_subset`` / ``hmmlearn_subset``: both on ``--subset`` more sequences from the
  same HMM, in memory, one process (dem on dask's threads; hmmlearn's ``log`` and ``scaling``
  implementations), seconds per iteration as (T(1 + m) - T(1)) / m for hmmlearn and
  the engine's per-iteration times for dem; hmmlearn extrapolated linearly to the
  full data and to 1e6 × 100; and the largest relative difference of the fitted
  means (the two did the same arithmetic).

With ``--long`` (issue 21), one sequence instead: ``--long-times`` steps × ``--features``
(float32, chunks of ``--long-chunk`` steps along time) written to Zarr, drawn as
consecutive stretches of ``--times`` steps of the HMM (the chain restarts at each
stretch; the fit sees one sequence), then:

- ``long_data``: its size and the seconds to write it.
- ``dem_long``: dem fitting it as one sequence across chunks (one pass per iteration
  where the chain forgets its state, :mod:`dem.models.hmm.long`), from Zarr on dask's
  threads: seconds and CPU-ns per observation per iteration.
- ``dem_many``: in the same run, the same values read from the same store as
  sequences of ``--times`` steps (many-sequence E-step), and the ratio of the two per
  observation (issue 21's goal: at most 2).
- ``hmmlearn_long_prefix``: hmmlearn (scaling) on the first ``--long-prefix`` steps in
  memory, per observation, extrapolated linearly to the whole sequence.

``--long --gmm N_MIX`` runs the same with a GMMHMM of N_MIX diagonal components per state
(dem's and hmmlearn's), started around the same means.

Seconds are wall-clock; CPU seconds add this process's and every worker's user and
system time, which moves less than wall-clock time when other processes share the
machine. Medians of ``--repeats`` repetitions. Run ``python benchmarks/hmm.py`` (1e6 × 100
× 4: 1.6 GB of disk, and tens of minutes on a busy 2-core machine; ``--repeats 1`` for
one repetition) or ``python benchmarks/hmm.py --quick``; ``--long`` (1e8 × 4: 1.6 GB) or
``--long --quick`` (2e6 steps).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

BENCHMARK = "hmm"
TARGET_OBSERVATIONS = 1_000_000 * 100


def emit(what: str, **fields: Any) -> None:
    def rounded(value: Any) -> Any:
        if isinstance(value, float | np.floating):
            return float(f"{float(value):.4g}")
        if isinstance(value, list | tuple):
            return [rounded(v) for v in value]
        return value

    line = {"benchmark": BENCHMARK, "what": what, **{k: rounded(v) for k, v in fields.items()}}
    print(json.dumps(line), flush=True)


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def machine() -> dict[str, Any]:
    from threadpoolctl import threadpool_info

    blas = [
        {
            "library": i.get("internal_api"),
            "kernel": i.get("architecture"),
            "threads": i.get("num_threads"),
        }
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    return {
        "cpus": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "blas": blas,
    }


def true_model(n_states: int, n_features: int) -> dict[str, np.ndarray]:
    """A sticky HMM with well-separated diagonal-Gaussian states."""
    rng = np.random.default_rng(0)
    transmat = np.full((n_states, n_states), 0.1 / max(n_states - 1, 1))
    np.fill_diagonal(transmat, 0.9 if n_states > 1 else 1.0)
    return {
        "startprob": np.full(n_states, 1.0 / n_states),
        "transmat": transmat,
        "means": rng.normal(0.0, 3.0, (n_states, n_features)),
        "covars": rng.uniform(0.5, 1.5, (n_states, n_features)),
    }


def draw(model: dict[str, np.ndarray], n_sequences: int, n_times: int, seed: int) -> np.ndarray:
    """Sequences from ``model`` as float32, shape (n_sequences, n_times, n_features)."""
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(model["transmat"], axis=1)
    last = len(cdf) - 1
    states = np.empty((n_sequences, n_times), dtype=np.int64)
    states[:, 0] = np.minimum(
        np.searchsorted(np.cumsum(model["startprob"]), rng.random(n_sequences)), last
    )
    for t in range(1, n_times):
        states[:, t] = np.minimum(
            (rng.random((n_sequences, 1)) >= cdf[states[:, t - 1]]).sum(1), last
        )
    noise = rng.standard_normal((n_sequences, n_times, model["means"].shape[1]), dtype=np.float32)
    return (model["means"][states] + noise * np.sqrt(model["covars"][states])).astype(np.float32)


def write_store(path: str, model: dict[str, np.ndarray], args: argparse.Namespace) -> float:
    import zarr

    started = time.perf_counter()
    group = zarr.open_group(path, mode="w")
    shape = (args.sequences, args.times, args.features)
    array = group.create_array(
        "X", shape=shape, dtype="float32", chunks=(args.chunk, args.times, args.features)
    )
    for start in range(0, args.sequences, args.chunk):
        stop = min(start + args.chunk, args.sequences)
        array[start:stop] = draw(model, stop - start, args.times, seed=start)
    return time.perf_counter() - started


def initial(model: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rough starting parameters, the same for dem and hmmlearn."""
    rng = np.random.default_rng(1)
    n_states = len(model["startprob"])
    return {
        "startprob": np.full(n_states, 1.0 / n_states),
        "transmat": np.full((n_states, n_states), 1.0 / n_states),
        "means": model["means"] + rng.normal(0.0, 0.5, model["means"].shape),
        "covars": model["covars"] * rng.uniform(0.7, 1.5, model["covars"].shape),
    }


def mixture_initial(model: dict[str, np.ndarray], n_mix: int) -> dict[str, np.ndarray]:
    """Starting parameters of a GMMHMM with ``n_mix`` diagonal components per state
    around :func:`initial`'s means (the same for dem and hmmlearn)."""
    base = initial(model)
    rng = np.random.default_rng(2)
    n_states, n_features = base["means"].shape
    spread = rng.normal(0.0, 0.5, (n_states, n_mix, n_features))
    return {
        "startprob": base["startprob"],
        "transmat": base["transmat"],
        "weights": np.full((n_states, n_mix), 1.0 / n_mix),
        "means": base["means"][:, None, :] + spread,
        "covars": np.repeat(base["covars"][:, None, :], n_mix, axis=1),
    }


def cpu_seconds(client: Any) -> float:
    """CPU seconds used so far by this process (client, scheduler) and every worker."""
    import psutil

    def used() -> float:
        times = psutil.Process().cpu_times()
        return float(times.user + times.system)

    workers = client.run(used) if client is not None else {}
    return float(sum(workers.values())) + used()


def dem_seconds(
    data: Any, init: dict[str, np.ndarray], iterations: int, client: Any = None, **options: Any
) -> tuple[list[float], list[float], Any]:
    """Wall and CPU seconds of each iteration after one warm-up iteration, and the model
    (a GMMHMM when ``init`` has mixture ``weights``)."""
    import dem

    wall: list[float] = []
    cpu: list[float] = []

    def record(info: Any) -> None:
        wall.append(info.seconds)
        cpu.append(cpu_seconds(client))

    common = {
        "covariance_type": "diag",
        "max_iter": 1 + iterations,
        "tol": 0.0,
        "startprob_init": init["startprob"],
        "transmat_init": init["transmat"],
        "means_init": init["means"],
        "covars_init": init["covars"],
        "callback": record,
        **options,
    }
    n_states = len(init["startprob"])
    if "weights" in init:
        model: Any = dem.GMMHMM(
            n_states, init["weights"].shape[1], weights_init=init["weights"], **common
        )
    else:
        model = dem.GaussianHMM(n_states, **common)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        model.fit(data, **({"variable": "X"} if isinstance(data, str) else {}))
    return wall[1:], list(np.diff(cpu)), model


def hmmlearn_seconds(
    x: np.ndarray, init: dict[str, np.ndarray], iterations: int, implementation: str
) -> tuple[float, float, Any]:
    """Wall and CPU seconds per iteration as (T(1 + m) - T(1)) / m, and the fitted model
    (T(1): the fastest of three fits)."""
    from hmmlearn import hmm

    concatenated = x.reshape(-1, x.shape[2]).astype(np.float64)
    lengths = np.full(len(x), x.shape[1])

    def fit(n_iter: int) -> Any:
        options = {"n_iter": n_iter, "tol": -np.inf, "init_params": ""}
        n_states = len(init["startprob"])
        if "weights" in init:
            model = hmm.GMMHMM(n_states, init["weights"].shape[1], "diag", **options)
            model.weights_ = init["weights"]
        else:
            model = hmm.GaussianHMM(n_states, "diag", implementation=implementation, **options)
        model.startprob_, model.transmat_ = init["startprob"], init["transmat"]
        model.means_, model.covars_ = init["means"], init["covars"]
        return model.fit(concatenated, lengths)

    def one(n_iter: int) -> tuple[float, float, Any]:
        cpu = time.process_time()
        wall, fitted = timed(lambda: fit(n_iter))
        return wall, time.process_time() - cpu, fitted

    # the one-iteration fit is cheap: its fastest of three, so that a burst of load on a
    # shared machine does not make it longer than the 1 + m fit (a negative difference)
    bases = [one(1) for _ in range(3)]
    base, cpu_base = min(b[0] for b in bases), min(b[1] for b in bases)
    total, cpu_total, fitted = one(1 + iterations)
    if total <= base:
        raise RuntimeError(
            f"hmmlearn: {1 + iterations} iterations took {total:.3f} s, no longer than one "
            f"({base:.3f} s): the machine's load changed during the run; run again with "
            "more --iterations"
        )
    return (total - base) / iterations, max(cpu_total - cpu_base, 0.0) / iterations, fitted


def write_long_store(path: str, model: dict[str, np.ndarray], args: argparse.Namespace) -> float:
    """One sequence of ``args.long_times`` steps, chunked along time, as stretches of
    ``args.times`` steps drawn from ``model``."""
    import zarr

    started = time.perf_counter()
    group = zarr.open_group(path, mode="w")
    array = group.create_array(
        "X",
        shape=(args.long_times, args.features),
        dtype="float32",
        chunks=(args.long_chunk, args.features),
    )
    for start in range(0, args.long_times, args.long_chunk):
        stop = min(start + args.long_chunk, args.long_times)
        stretches = -(-(stop - start) // args.times)
        values = draw(model, stretches, args.times, seed=start).reshape(-1, args.features)
        array[start:stop] = values[: stop - start]
    return time.perf_counter() - started


def run_long(args: argparse.Namespace, truth: dict[str, np.ndarray], workdir: str) -> None:
    """One long sequence from Zarr against the many-sequence E-step on the same values."""
    import dask.array as da

    if args.long_times % args.times or args.long_chunk % args.times:
        raise SystemExit("--long-times and --long-chunk must be multiples of --times")
    init = initial(truth) if not args.gmm else mixture_initial(truth, args.gmm)
    store = args.store or os.path.join(workdir, "long.zarr")
    seconds = write_long_store(store, truth, args)
    observations = args.long_times
    emit(
        "long_data",
        model=f"GMMHMM (n_mix={args.gmm}, diag)" if args.gmm else "GaussianHMM (diag)",
        times=args.long_times,
        features=args.features,
        states=args.states,
        chunk_steps=args.long_chunk,
        chunks=-(-args.long_times // args.long_chunk),
        dtype="float32",
        gigabytes=observations * args.features * 4 / 1e9,
        write_seconds=seconds,
    )

    def as_sequences() -> Any:
        array = da.from_zarr(store, component="X")
        return array.reshape(args.long_times // args.times, args.times, args.features)

    found: dict[str, tuple[float, float]] = {}
    for what, data in (("dem_long", lambda: store), ("dem_many", as_sequences)):
        walls, cpus = [], []
        for _ in range(args.repeats):
            wall, cpu, _ = dem_seconds(data(), init, args.iterations, persist=False)
            walls.append(statistics.median(wall))
            cpus.append(statistics.median(cpu))
        found[what] = statistics.median(walls), statistics.median(cpus)
        extra = (
            {"layout": "one sequence across chunks (one pass per iteration)"}
            if what == "dem_long"
            else {
                "layout": f"{args.long_times // args.times} sequences of {args.times} steps",
                "long_over_many_wall": found["dem_long"][0] / found[what][0],
                "long_over_many_cpu": found["dem_long"][1] / found[what][1],
            }
        )
        emit(
            what,
            scheduler="dask threads, from Zarr",
            persist=False,
            seconds_per_iteration=found[what][0],
            repeats=walls,
            cpu_seconds_per_iteration=found[what][1],
            cpu_ns_per_observation=found[what][1] / observations * 1e9,
            **extra,
        )

    prefix = min(args.long_prefix, args.long_times)
    x = da.from_zarr(store, component="X")[:prefix].compute()[None]
    peers = [hmmlearn_seconds(x, init, args.iterations, "scaling") for _ in range(args.repeats)]
    peer_wall = statistics.median(w for w, _, _ in peers)
    peer_cpu = statistics.median(c for _, c, _ in peers)
    emit(
        "hmmlearn_long_prefix",
        model="GMMHMM" if args.gmm else "GaussianHMM",
        implementation="scaling",
        steps=prefix,
        seconds_per_iteration=peer_wall,
        cpu_seconds_per_iteration=peer_cpu,
        cpu_ns_per_observation=peer_cpu / prefix * 1e9,
        cpu_seconds_per_iteration_whole_sequence=peer_cpu * observations / prefix,
        basis="extrapolated linearly from the prefix (one process, all in memory)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=1_000_000)
    parser.add_argument("--times", type=int, default=100)
    parser.add_argument("--features", type=int, default=4)
    parser.add_argument("--states", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=10_000, help="sequences per Zarr chunk")
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per fit")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--subset", type=int, default=2_000, help="sequences for the peer comparison"
    )
    parser.add_argument(
        "--store", help="where to write the Zarr store (default: a temporary directory)"
    )
    parser.add_argument("--quick", action="store_true", help="20,000 sequences, 2 repeats")
    parser.add_argument(
        "--long", action="store_true", help="one sequence across chunks (see the docstring)"
    )
    parser.add_argument("--long-times", type=int, default=100_000_000, help="steps of --long")
    parser.add_argument("--long-chunk", type=int, default=1_000_000, help="steps per chunk")
    parser.add_argument(
        "--long-prefix", type=int, default=1_000_000, help="steps hmmlearn fits in memory"
    )
    parser.add_argument(
        "--gmm",
        type=int,
        default=0,
        metavar="N_MIX",
        help="with --long: a GMMHMM with N_MIX diagonal components per state (default: "
        "a GaussianHMM)",
    )
    args = parser.parse_args()
    if args.quick:
        args.sequences, args.repeats, args.subset = 20_000, 2, 500
        args.long_times, args.long_chunk, args.long_prefix = 2_000_000, 200_000, 200_000
    logging.getLogger("hmmlearn").setLevel(logging.ERROR)

    emit("machine", **machine())
    truth = true_model(args.states, args.features)
    init = initial(truth)
    workdir = tempfile.mkdtemp(prefix="dem-hmm-bench-")
    if args.gmm and not args.long:
        raise SystemExit("--gmm goes with --long")
    if args.long:
        try:
            run_long(args, truth, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return
    store = args.store or os.path.join(workdir, "sequences.zarr")
    try:
        seconds = write_store(store, truth, args)
        observations = args.sequences * args.times
        emit(
            "data",
            sequences=args.sequences,
            times=args.times,
            features=args.features,
            states=args.states,
            chunk_sequences=args.chunk,
            dtype="float32",
            gigabytes=observations * args.features * 4 / 1e9,
            write_seconds=seconds,
        )
        scale = TARGET_OBSERVATIONS / observations
        basis = "measured" if scale == 1 else "extrapolated linearly from this run"

        import dask.array as da
        from distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                worker_dashboard_address=":0",
            ) as cluster,
            Client(cluster) as client,
        ):
            reads = [
                timed(lambda: da.from_zarr(store, component="X").sum().compute())[0]
                for _ in range(args.repeats)
            ]
            emit("zarr_read", seconds=statistics.median(reads), repeats=reads)
            walls, cpus = [], []
            for _ in range(args.repeats):
                wall, cpu, _ = dem_seconds(store, init, args.iterations, client, persist=False)
                walls.append(statistics.median(wall))
                cpus.append(statistics.median(cpu))
            wall, cpu = statistics.median(walls), statistics.median(cpus)
            emit(
                "dem_zarr",
                workers=2,
                persist=False,
                seconds_per_iteration=wall,
                repeats=walls,
                cpu_seconds_per_iteration=cpu,
                cpu_ns_per_observation=cpu / observations * 1e9,
                seconds_per_iteration_1e6x100=wall * scale,
                cpu_seconds_per_iteration_1e6x100=cpu * scale,
                basis_1e6x100=basis,
            )

        walls, cpus = [], []
        for _ in range(args.repeats):
            wall, cpu, _ = dem_seconds(store, init, args.iterations, persist=False)
            walls.append(statistics.median(wall))
            cpus.append(statistics.median(cpu))
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        emit(
            "dem_zarr_threads",
            scheduler="dask threads (2), no cluster",
            persist=False,
            seconds_per_iteration=wall,
            repeats=walls,
            cpu_seconds_per_iteration=cpu,
            cpu_ns_per_observation=cpu / observations * 1e9,
            seconds_per_iteration_1e6x100=wall * scale,
            cpu_seconds_per_iteration_1e6x100=cpu * scale,
            basis_1e6x100=basis,
        )

        x = draw(truth, args.subset, args.times, seed=0)
        subset_observations = args.subset * args.times
        runs = [dem_seconds(x, init, args.iterations) for _ in range(args.repeats)]
        wall = statistics.median(statistics.median(w) for w, _, _ in runs)
        cpu = statistics.median(statistics.median(c) for _, c, _ in runs)
        emit(
            "dem_subset",
            sequences=args.subset,
            scheduler="dask threads (2)",
            seconds_per_iteration=wall,
            cpu_seconds_per_iteration=cpu,
            cpu_ns_per_observation=cpu / subset_observations * 1e9,
        )
        ours = runs[-1][2]
        for implementation in ("log", "scaling"):
            peers = [
                hmmlearn_seconds(x, init, args.iterations, implementation)
                for _ in range(args.repeats)
            ]
            peer_wall = statistics.median(w for w, _, _ in peers)
            peer_cpu = statistics.median(c for _, c, _ in peers)
            fitted = peers[-1][2]
            difference = float(np.max(np.abs(ours.means_ - fitted.means_) / np.abs(fitted.means_)))
            emit(
                "hmmlearn_subset",
                implementation=implementation,
                sequences=args.subset,
                seconds_per_iteration=peer_wall,
                cpu_seconds_per_iteration=peer_cpu,
                cpu_ns_per_observation=peer_cpu / subset_observations * 1e9,
                dem_speedup_wall=peer_wall / wall,
                dem_speedup_cpu=peer_cpu / cpu,
                cpu_seconds_per_iteration_full_data=peer_cpu * observations / subset_observations,
                cpu_seconds_per_iteration_1e6x100=peer_cpu
                * TARGET_OBSERVATIONS
                / subset_observations,
                basis="extrapolated linearly (hmmlearn loops over the sequences on one core)",
                max_relative_difference_of_means=difference,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
