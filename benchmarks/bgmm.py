"""Variational Gaussian mixture: dem vs scikit-learn's BayesianGaussianMixture, per iteration.

Both start from the same responsibilities (scikit-learn's ``init_params="random"``
draws them from its ``random_state``; dem receives the same array as ``resp_init``),
so their lower bounds after 1 and 1 + m iterations are compared too. In the same run,
dem's GaussianMixture and scikit-learn's from the same initial parameters give the
speed-up dem has over scikit-learn for maximum-likelihood EM: the issue's goal is a
variational speed-up at least as large.

scikit-learn's seconds per iteration are (T(max_iter=1+m) - T(max_iter=1)) / m (which
cancels its initialisation and final E-step), its BLAS limited to ``--sklearn-threads``
threads (default 1, threadpoolctl) so that a loaded machine does not inflate them; dem's
are the engine's per-iteration times after one warm-up iteration, on a LocalCluster of
``--workers`` one-thread worker processes holding the data in 100,000-row chunks. Next
to wall time each side's CPU seconds per iteration: scikit-learn's process clock by the
same difference; dem's the worker processes' clocks plus this process's (client,
scheduler and M-step), read after every iteration. The CPU ratio is the per-core
comparison; the wall ratio compares ``--workers`` cores with ``--sklearn-threads``.

Run ``python benchmarks/bgmm.py`` (N=2e6, d=16, K=8, full) or ``--quick`` (N=2e5).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from typing import Any

import numpy as np
from _common import (
    emit,
    initial_parameters,
    local_cluster,
    machine,
    median,
    mixture_rows,
    scattered,
    timed,
)

BENCHMARK = "bgmm"


def sklearn_seconds(
    make: Any, x: np.ndarray, iterations: int, threads: int
) -> tuple[float, float, list[float]]:
    """Wall and CPU seconds per iteration by the difference, on ``threads`` BLAS threads,
    and the lower bounds after 1 and 1 + m."""
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    def fit(max_iter: int) -> tuple[float, Any]:
        with warnings.catch_warnings(), threadpool_limits(threads):
            warnings.simplefilter("ignore", ConvergenceWarning)
            started = time.process_time()
            fitted = make(max_iter).fit(x)
            return time.process_time() - started, fitted

    base, (base_cpu, short) = timed(lambda: fit(1))
    total, (total_cpu, long) = timed(lambda: fit(1 + iterations))
    bounds = [float(np.ravel(short.lower_bound_)[0]), float(np.ravel(long.lower_bound_)[0])]
    return (total - base) / iterations, (total_cpu - base_cpu) / iterations, bounds


def cpu_seconds(client: Any) -> float:
    """CPU seconds used so far by the worker processes and by this process (all threads:
    the client, the scheduler of the LocalCluster and the M-step)."""
    return float(sum(client.run(time.process_time).values())) + time.process_time()


def dem_seconds(
    client: Any, make: Any, array: Any, iterations: int
) -> tuple[float, float, list[float]]:
    """Median wall and CPU seconds of iterations 2 .. 1 + iterations, and every lower bound.

    The CPU clocks are read when each iteration ends (in the callback, outside the
    iteration's own timing); iteration i's CPU seconds are the difference of two readings.
    """
    from dem.engine import ConvergenceWarning

    seconds: list[float] = []
    clocks: list[float] = []

    def record(info: Any) -> None:
        seconds.append(info.seconds)
        clocks.append(cpu_seconds(client))

    model = make(iterations + 1, record)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(array)
    return median(seconds[1:]), median(list(np.diff(clocks))), list(model.lower_bounds_)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=float, default=2e6, help="rows (default 2e6)")
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--covariance", default="full")
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=3, help="timed dem iterations")
    parser.add_argument("--sklearn-iterations", type=int, default=2, help="m in the difference")
    parser.add_argument(
        "--sklearn-threads",
        type=int,
        default=1,
        help="BLAS threads for scikit-learn's fits (default 1: a per-core comparison)",
    )
    parser.add_argument("--quick", action="store_true", help="N=2e5 in 25k-row chunks")
    args = parser.parse_args()
    if args.quick:
        args.n, args.chunk_rows = 2e5, 25_000
    n, d, k, ctype = int(args.n), args.d, args.k, args.covariance
    m = args.sklearn_iterations
    iterations = max(args.iterations, m + 1)

    from sklearn.mixture import BayesianGaussianMixture as SklearnBGMM
    from sklearn.mixture import GaussianMixture as SklearnGMM

    import dem

    emit(BENCHMARK, "machine", **machine())
    x = mixture_rows(n, d, k, seed=1)
    sample = x[np.random.default_rng(2).choice(n, size=min(n, 20_000), replace=False)]
    inits = initial_parameters(sample, k, ctype, seed=3)
    resp = np.random.RandomState(0).uniform(size=(n, k))  # scikit-learn's "random" start
    resp /= resp.sum(axis=1)[:, np.newaxis]
    config = {
        "n": n, "d": d, "k": k, "covariance": ctype, "chunk_rows": args.chunk_rows,
        "workers": args.workers, "sklearn_threads": args.sklearn_threads,
    }  # fmt: skip

    def sk_bgmm(max_iter: int) -> Any:
        return SklearnBGMM(
            n_components=k, covariance_type=ctype, init_params="random", random_state=0,
            max_iter=max_iter, tol=0.0,
        )  # fmt: skip

    def sk_gmm(max_iter: int) -> Any:
        return SklearnGMM(
            k, covariance_type=ctype, max_iter=max_iter, tol=0.0, random_state=0, **inits
        )

    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    bounds: dict[str, list[float]] = {}
    with local_cluster(args.workers) as client:
        array = scattered(client, x, args.chunk_rows)
        resp_init = scattered(client, resp, args.chunk_rows)

        def dem_bgmm(max_iter: int, callback: Any) -> Any:
            return dem.BayesianGaussianMixture(
                k, covariance_type=ctype, resp_init=resp_init, max_iter=max_iter, tol=0.0,
                callback=callback,
            )  # fmt: skip

        def dem_gmm(max_iter: int, callback: Any) -> Any:
            return dem.GaussianMixture(
                k, covariance_type=ctype, max_iter=max_iter, tol=0.0, callback=callback, **inits
            )

        threads = args.sklearn_threads
        for _ in range(args.repeats):
            for name, run in (
                ("sklearn_bgmm", lambda: sklearn_seconds(sk_bgmm, x, m, threads)),
                ("dem_bgmm", lambda: dem_seconds(client, dem_bgmm, array, iterations)),
                ("sklearn_gmm", lambda: sklearn_seconds(sk_gmm, x, m, threads)),
                ("dem_gmm", lambda: dem_seconds(client, dem_gmm, array, iterations)),
            ):
                seconds, cpu_per_iter, bounds[name] = run()
                times.setdefault(name, []).append(seconds)
                cpu.setdefault(name, []).append(cpu_per_iter)
    for name, repeats in times.items():
        emit(
            BENCHMARK,
            name,
            seconds_per_iter=median(repeats),
            cpu_seconds_per_iter=median(cpu[name]),
            repeats=repeats,
            cpu_repeats=cpu[name],
            **config,
        )
    ours = [bounds["dem_bgmm"][0], bounds["dem_bgmm"][m]]

    def ratio(table: dict[str, list[float]], peer: str, mine: str) -> float:
        return median(table[peer]) / median(table[mine])

    emit(
        BENCHMARK,
        "summary",
        bgmm_speedup_vs_sklearn=ratio(times, "sklearn_bgmm", "dem_bgmm"),
        gmm_speedup_vs_sklearn=ratio(times, "sklearn_gmm", "dem_gmm"),
        bgmm_cpu_speedup_vs_sklearn=ratio(cpu, "sklearn_bgmm", "dem_bgmm"),
        gmm_cpu_speedup_vs_sklearn=ratio(cpu, "sklearn_gmm", "dem_gmm"),
        load_average=[round(v, 2) for v in os.getloadavg()],
        lower_bound_rel_diff_vs_sklearn=max(
            abs(a - b) / abs(b) for a, b in zip(ours, bounds["sklearn_bgmm"], strict=True)
        ),
        **config,
    )


if __name__ == "__main__":
    main()
