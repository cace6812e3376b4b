"""Two fits at once on one cluster: what sharing the workers costs each of them.

A real cluster (``dask scheduler`` and ``--workers`` single-threaded ``dask worker``
processes on loopback, started by ``deploy/local/dask-local.sh``) fits two stores of
different data ("a" and "b"), each fit a process of its own (its own client and
checkpoint):

1. each alone on all the workers;
2. both at once on all the workers;
3. each alone on a cluster of half the workers: its share when two fits run at once.

Both clusters run throughout, and the three steps are repeated ``--rounds`` times in
turn, so that a change in the machine's load touches every case alike. Each fit reports
the wall-clock span of every iteration; the first (warm-up) iteration is left out, and in
step 2 so is every iteration not run entirely while the other fit was running too.

The ``summary`` line gives, for each fit, ``slowdown`` (its median seconds per iteration
at once, over alone on all the workers) and ``vs_share`` (at once, over alone on half
the workers). "Neither slows the other by more than their share of
the workers" is ``slowdown <= workers / (workers / 2) = 2`` for both, which is what
``within_share`` says; ``vs_share`` near 1 says the scheduler split the workers fairly.
It also says whether each concurrent fit ended with the bits of the same fit alone.

Run ``python benchmarks/concurrent_fits.py`` (4 workers, 10^6 rows × 16 features per store,
K=8 full) or ``python benchmarks/concurrent_fits.py --quick`` (2 workers, 2·10^5 rows).
"""

from __future__ import annotations

import os
import sys

# This file shares its name with the standard library's package ``concurrent``, and Python
# puts the script's folder first on sys.path: move it last, so that ``concurrent.futures``
# is the standard library's and ``_common`` is still found.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE] + [_HERE]

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from _common import emit, machine, median  # noqa: E402

BENCHMARK = "concurrent"
REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "local" / "dask-local.sh"


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@contextlib.contextmanager
def cluster(directory: Path, workers: int) -> Iterator[str]:
    """A scheduler and ``workers`` one-thread worker processes; yields the address."""
    run = [str(SCRIPT), "start", "--workers", str(workers), "--threads", "1"]
    subprocess.run([*run, "--dir", str(directory)], env=_environment(), check=True, timeout=300)
    try:
        yield json.loads((directory / "scheduler.json").read_text())["address"]
    finally:
        subprocess.run(
            [str(SCRIPT), "stop", "--dir", str(directory)], env=_environment(), check=True
        )


def fit_command(address: str, store: Path, checkpoint: Path, args: argparse.Namespace) -> list[str]:
    return [
        sys.executable,
        __file__,
        "--child",
        json.dumps(
            {
                "address": address,
                "store": str(store),
                "checkpoint": str(checkpoint),
                "k": args.k,
                "covariance": args.covariance,
                "iterations": args.iterations,
                "persist": args.persist,
            }
        ),
    ]


def child(spec: dict[str, Any]) -> None:
    """One fit, a client of its own; prints the (start, end) of every iteration as JSON."""
    import dem
    from dem.cluster import connect

    spans: list[tuple[float, float]] = []

    def record(info: Any) -> None:
        now = time.time()
        spans.append((now - info.seconds, now))

    model = dem.GaussianMixture(
        spec["k"],
        covariance_type=spec["covariance"],
        max_iter=spec["iterations"] + 1,
        tol=0.0,
        random_state=0,
        checkpoint=spec["checkpoint"],
        persist=spec["persist"],
        callback=record,
    )
    with connect(spec["address"]), warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        model.fit(spec["store"], variable="X")
    print(json.dumps({"spans": spans}))


def run_fits(
    address: str, jobs: dict[str, tuple[Path, Path]], args: argparse.Namespace
) -> dict[str, list[tuple[float, float]]]:
    """Run the fits of ``jobs`` (name: store, checkpoint) at once; their iteration spans."""
    processes = {
        name: subprocess.Popen(
            fit_command(address, store, checkpoint, args),
            env=_environment(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for name, (store, checkpoint) in jobs.items()
    }
    spans = {}
    for name, process in processes.items():
        out, _ = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"fit {name} failed (exit {process.returncode})")
        spans[name] = [tuple(s) for s in json.loads(out.splitlines()[-1])["spans"]]
    return spans


def seconds(
    spans: list[tuple[float, float]], within: tuple[float, float] | None = None
) -> list[float]:
    """Per-iteration seconds after the warm-up, only those entirely ``within`` a span."""
    kept = spans[1:]
    if within is not None:
        kept = [(s, e) for s, e in kept if s >= within[0] and e <= within[1]]
    return [e - s for s, e in kept]


def same_bits(checkpoint: Path, reference: Path) -> bool:
    import numpy as np

    from dem.restore import from_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both stopped at max_iter, which they say
        a, b = from_checkpoint(checkpoint), from_checkpoint(reference)
    return a.lower_bounds_ == b.lower_bounds_ and all(
        np.array_equal(getattr(a, n), getattr(b, n)) for n in ("weights_", "means_", "covariances_")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="2 workers, 2e5 rows per store")
    parser.add_argument("--workers", type=int, help="worker processes (default 4; quick: 2)")
    parser.add_argument("--n", type=float, help="rows per store (default 1e6; quick: 2e5)")
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--covariance", default="full")
    parser.add_argument("--chunks", type=int, default=16, help="chunks per store")
    parser.add_argument("--iterations", type=int, help="timed iterations (default 10; quick 6)")
    parser.add_argument("--rounds", type=int, help="repetitions of every case (default 3; quick 2)")
    parser.add_argument(
        "--persist", action=argparse.BooleanOptionalAction, default=True,
        help="keep the data in the workers' memory (default) or read the store each iteration",
    )  # fmt: skip
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    workers = args.workers or (2 if args.quick else 4)
    n = int(args.n or (2e5 if args.quick else 1e6))
    args.iterations = args.iterations or (6 if args.quick else 10)
    args.rounds = args.rounds or (2 if args.quick else 3)
    if workers < 2 or workers % 2:
        parser.error("--workers must be even: each fit's share is half of them")

    from dem.synth import write_store

    emit(BENCHMARK, "machine", **machine())
    with tempfile.TemporaryDirectory(prefix="dem-concurrent-") as tmp:
        root = Path(tmp)
        stores = {}
        for seed, name in enumerate(("a", "b")):
            stores[name] = root / f"{name}.zarr"
            write_store(
                stores[name], "gmm", n_samples=n, n_features=args.features, seed=seed,
                chunk_rows=-(-n // args.chunks), options={"n_components": args.k},
            )  # fmt: skip
        setup = {"workers": workers, "rows_per_store": n, "features": args.features,
                 "k": args.k, "covariance": args.covariance, "chunks": args.chunks,
                 "iterations": args.iterations, "rounds": args.rounds,
                 "persist": args.persist}  # fmt: skip
        emit(BENCHMARK, "setup", **setup)

        def ckpt(label: str) -> Path:
            return root / f"{label}.zarr"

        cases = ("alone", "together", "share")
        results = {name: {case: [] for case in cases} for name in stores}
        bits = {name: True for name in stores}
        # Both clusters run throughout, and each round measures every case once, so that
        # a change in the machine's load over the run touches all the cases alike.
        with cluster(root / "full", workers) as full, cluster(root / "half", workers // 2) as half:
            for r in range(args.rounds):
                for name in stores:
                    alone = ckpt(f"alone-{name}-{r}")
                    spans = run_fits(full, {name: (stores[name], alone)}, args)
                    results[name]["alone"] += seconds(spans[name])
                jobs = {name: (stores[name], ckpt(f"together-{name}-{r}")) for name in stores}
                together = run_fits(full, jobs, args)
                overlap = (
                    max(spans[0][0] for spans in together.values()),
                    min(spans[-1][1] for spans in together.values()),
                )
                for name in stores:
                    results[name]["together"] += seconds(together[name], overlap)
                    bits[name] &= same_bits(jobs[name][1], ckpt(f"alone-{name}-{r}"))
                    spans = run_fits(half, {name: (stores[name], ckpt(f"share-{name}-{r}"))}, args)
                    results[name]["share"] += seconds(spans[name])
        summary: dict[str, Any] = {}
        for name in stores:
            for case, values in results[name].items():
                emit(BENCHMARK, f"fit {name} {case}", median_s=median(values) if values else None,
                     seconds=values)  # fmt: skip
            at_once = results[name]["together"]  # empty if the fits did not overlap
            summary[name] = {
                "slowdown": median(at_once) / median(results[name]["alone"]) if at_once else None,
                "vs_share": median(at_once) / median(results[name]["share"]) if at_once else None,
                "iterations_overlapped": len(at_once),
                "same_bits_as_alone": bits[name],
            }
        bound = workers / (workers // 2)
        emit(
            BENCHMARK,
            "summary",
            **summary,
            share_bound=bound,
            within_share=None
            if any(s["slowdown"] is None for s in summary.values())
            else all(s["slowdown"] <= bound for s in summary.values()),
        )


if __name__ == "__main__":
    main()
