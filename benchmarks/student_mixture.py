"""Student-t mixture: dem's seconds per ECM iteration against its GaussianMixture's EM.

Both fit the same in-memory data (a t mixture drawn by ``dem synth tmix``'s generator,
scattered to a LocalCluster of one-thread worker processes) from the same k-means start,
the Student mixture estimating one ν per component. Each repetition times, in turn, the
Gaussian mixture and the Student mixture (``--iterations`` timed iterations after one
warm-up, median within the repetition); the figures are medians over repetitions, so the
ratio is measured under the same load; the workers' CPU seconds per iteration (all
iterations, from the worker processes' own clocks) are the steadier figure where other
processes share the cores. The kernel rows time one chunk's E-step in this
process on one BLAS thread (minimum of ``--kernel-repeats``, the least disturbed).

Run ``python benchmarks/student_mixture.py`` (N=2e6, d=16, K=8, full: about two minutes on
two cores) or ``--quick`` (N=2e5).
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

import numpy as np
from _common import emit, initial_parameters, local_cluster, machine, median, scattered

BENCHMARK = "student_mixture"


def workers_cpu_seconds(client: Any) -> float:
    """CPU seconds the worker processes have used so far (all their threads)."""
    return float(sum(client.run(time.process_time).values()))


def iterations(
    client: Any, estimator: Any, array: Any, count: int
) -> tuple[list[float], float, Any]:
    """Seconds of iterations 2 .. count + 1 (the first warms up), the workers' CPU seconds
    per iteration over all count + 1 (steadier than wall time on a loaded machine), and
    the fitted estimator."""
    from dem.engine import ConvergenceWarning

    seconds: list[float] = []
    estimator.set_params(
        max_iter=count + 1, tol=0.0, callback=lambda info: seconds.append(info.seconds)
    )
    cpu = workers_cpu_seconds(client)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(array)
    cpu = (workers_cpu_seconds(client) - cpu) / (count + 1)
    return seconds[1:], cpu, estimator


def kernel_seconds(
    model: Any, params: dict[str, np.ndarray], block: np.ndarray, repeats: int
) -> float:
    """Least seconds of one E-step of ``block`` over ``repeats`` calls, on one BLAS thread."""
    from threadpoolctl import threadpool_limits

    best = np.inf
    with threadpool_limits(1):
        model.e_step({"X": block}, params)  # warm the scratch buffers
        for _ in range(repeats):
            started = time.perf_counter()
            model.e_step({"X": block}, params)
            best = min(best, time.perf_counter() - started)
    return float(best)


def main() -> None:
    import dem
    from dem.synth import GENERATORS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=float, default=2e6, help="rows (default 2e6)")
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--covariance", default="full")
    parser.add_argument("--dof", type=float, default=5.0, help="true degrees of freedom")
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per fit")
    parser.add_argument("--kernel-repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="N=2e5 in 25k-row chunks")
    args = parser.parse_args()
    if args.quick:
        args.n, args.chunk_rows = 2e5, 25_000
    n, d, k, ctype = int(args.n), args.d, args.k, args.covariance

    emit(BENCHMARK, "machine", **machine())
    generator = GENERATORS["tmix"]
    rng = np.random.default_rng(1)
    truth = generator.truth(d, rng, n_components=k, separation=1.5, dof=args.dof)
    x = generator.draw(truth, rng, n)["X"]
    sample = x[np.random.default_rng(2).choice(n, size=min(n, 20_000), replace=False)]
    inits = initial_parameters(sample, k, ctype, seed=3)
    config = {"n": n, "d": d, "k": k, "covariance": ctype, "chunk_rows": args.chunk_rows}

    times: dict[str, list[float]] = {"gmm": [], "tmix": []}
    cpu: dict[str, list[float]] = {"gmm": [], "tmix": []}
    fitted: dict[str, Any] = {}
    with local_cluster(args.workers) as client:
        array = scattered(client, x, args.chunk_rows)
        for warm_up in (dem.GaussianMixture, dem.StudentMixture):  # imports on the workers
            iterations(client, warm_up(k, covariance_type=ctype, **inits), array, 0)
        for _ in range(args.repeats):
            for name, estimator in (
                ("gmm", dem.GaussianMixture(k, covariance_type=ctype, **inits)),
                ("tmix", dem.StudentMixture(k, covariance_type=ctype, **inits)),
            ):
                seconds, cpu_seconds, fitted[name] = iterations(
                    client, estimator, array, args.iterations
                )
                times[name].append(median(seconds))
                cpu[name].append(cpu_seconds)
    gmm, tmix = median(times["gmm"]), median(times["tmix"])
    emit(
        BENCHMARK,
        "seconds per iteration, in memory, LocalCluster",
        **config,
        workers=args.workers,
        gaussian_mixture=gmm,
        student_mixture=tmix,
        ratio=tmix / gmm,
        gaussian_repeats=times["gmm"],
        student_repeats=times["tmix"],
        gaussian_worker_cpu_seconds=median(cpu["gmm"]),
        student_worker_cpu_seconds=median(cpu["tmix"]),
        cpu_ratio=median(cpu["tmix"]) / median(cpu["gmm"]),
        gaussian_loglik=fitted["gmm"].lower_bound_,
        student_loglik=fitted["tmix"].lower_bound_,
        student_dofs=np.round(fitted["tmix"].dofs_, 3).tolist(),
    )

    block = x[: args.chunk_rows]
    gaussian_model = fitted["gmm"]._model()
    student_model = fitted["tmix"]._model()
    gaussian_params = {**fitted["gmm"]._params(), "shift": sample.mean(axis=0)}
    student_params = {**fitted["tmix"]._params(), "shift": sample.mean(axis=0)}
    gaussian_kernel = kernel_seconds(gaussian_model, gaussian_params, block, args.kernel_repeats)
    student_kernel = kernel_seconds(student_model, student_params, block, args.kernel_repeats)
    emit(
        BENCHMARK,
        "E-step of one chunk, one thread, ms",
        **config,
        gaussian_mixture=1e3 * gaussian_kernel,
        student_mixture=1e3 * student_kernel,
        ratio=student_kernel / gaussian_kernel,
    )


if __name__ == "__main__":
    main()
