"""Scheduler overhead of the EM engine per chunk per iteration, with dask's own as the peer.

The same persisted data are fitted once in a few large chunks and once in many small
ones; the model's arithmetic is the same, so the difference in seconds per iteration,
divided by the difference in the number of chunks, is the engine's cost per chunk
(graph building, scheduling, moving statistics, tree reduction). The peer is the same
measure for a plain ``dask.array`` column sum (``x.sum(axis=0).compute()``) over the
same chunks: the cost of one task per chunk in a dask reduction on this cluster.

Run ``python benchmarks/overhead.py`` or ``python benchmarks/overhead.py --quick``.
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any

from _common import emit, local_cluster, machine, median, mixture_rows, scattered, timed

BENCHMARK = "overhead"


def dem_seconds(
    array: Any, covariance_type: str, n_components: int, iterations: int
) -> list[float]:
    """Per-iteration seconds of ``iterations`` EM iterations after one warm-up iteration."""
    from dem.engine import ConvergenceWarning
    from dem.models.mixture import GaussianMixture

    x0 = array[: 10 * n_components].compute()
    seconds: list[float] = []
    model = GaussianMixture(
        n_components,
        covariance_type=covariance_type,
        max_iter=iterations + 1,
        tol=0.0,
        means_init=x0[::10][:n_components],
        callback=lambda info: seconds.append(info.seconds),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(array)
    return seconds[1:]


def dask_sum_seconds(array: Any, repeats: int) -> list[float]:
    array.sum(axis=0).compute()
    return [timed(lambda: array.sum(axis=0).compute())[0] for _ in range(repeats)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=float, default=4e5, help="rows (default 4e5)")
    parser.add_argument("--d", type=int, default=4)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--covariance", default="diag")
    parser.add_argument("--many", type=int, default=2000, help="chunks in the many-chunk run")
    parser.add_argument("--few", type=int, default=2, help="chunks in the few-chunk run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed iterations (>= 3)")
    parser.add_argument("--quick", action="store_true", help="N=1e5 in 500 chunks")
    args = parser.parse_args()
    if args.quick:
        args.n, args.many, args.repeats = 1e5, 500, 3
    n = int(args.n)

    emit(BENCHMARK, "machine", **machine())
    x = mixture_rows(n, args.d, args.k, seed=1)
    config = {
        "n": n,
        "d": args.d,
        "k": args.k,
        "covariance": args.covariance,
        "workers": args.workers,
    }
    seconds: dict[tuple[str, int], float] = {}
    with local_cluster(args.workers) as client:
        for chunks in (args.few, args.many):
            array = scattered(client, x, -(-n // chunks))
            for what, values in (
                ("dem", dem_seconds(array, args.covariance, args.k, args.repeats)),
                ("dask_sum", dask_sum_seconds(array, args.repeats)),
            ):
                seconds[(what, chunks)] = median(values)
                emit(
                    BENCHMARK,
                    what,
                    chunks=chunks,
                    seconds_per_iter=median(values),
                    repeats=values,
                    **config,
                )
            del array
    for what in ("dem", "dask_sum"):
        per_chunk = (seconds[(what, args.many)] - seconds[(what, args.few)]) / (
            args.many - args.few
        )
        emit(BENCHMARK, "summary", impl=what, ms_per_chunk_per_iter=1e3 * per_chunk, **config)


if __name__ == "__main__":
    main()
