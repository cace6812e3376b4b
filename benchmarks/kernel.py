"""The E-step kernel alone: one chunk, one thread, dem vs scikit-learn vs the GEMM floor.

Without a cluster, scheduler or data movement: dem's ``MixtureModel.e_step`` plus
``m_step`` on one in-memory chunk, scikit-learn's seconds per EM iteration on the
same chunk ((T(max_iter=1+m) - T(max_iter=1)) / m from the fastest of each), and the
floor 4·n·K·d² flops at the single-thread matrix-product rate, all with one BLAS
thread and interleaved. Figures are the minimum over repetitions (the least disturbed
by other processes), so this benchmark stays readable on a busy machine where the
end-to-end ones (gmm.py) move with the load.

With ``--missing 0.1``, each repetition also times ``missing="marginalize"``
(:class:`~dem.models.mixture.missing.MarginalMixtureModel`, its E-step and M-step) on
the same chunk with 10% of the entries NaN (missing completely at random), reported as
``ms_missing`` and ``missing_over_complete`` (median and minimum of the per-repetition
ratios to ``dem_float64`` of the same repetition). ``--worker-malloc`` first sets
glibc's trim and mmap thresholds as dask workers have them (distributed sets
``MALLOC_TRIM_THRESHOLD_``), where every large temporary array is a fresh mapping.
``--heap-reuse`` then also times each dem kernel inside :func:`dem.heap.heap_reuse`, as
the engine's map tasks run it on a worker (``ms_*_reuse``; ``missing_over_complete_reuse``
the ratio of the two inside it, ``reuse_speedup_*`` without over with, per repetition;
``page_faults_*`` the minor page faults of one call, the mechanism, which the load does
not move).

Run ``python benchmarks/kernel.py`` or ``python benchmarks/kernel.py --quick``; the
missing-values kernel alone: ``python benchmarks/kernel.py --covariance full,diag
--missing 0.1 --no-sklearn --worker-malloc --heap-reuse``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import os
import resource
import statistics
import warnings
from typing import Any

import numpy as np
from _common import emit, initial_parameters, machine, mixture_rows, parse_sizes, timed
from threadpoolctl import threadpool_limits

BENCHMARK = "kernel"
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def worker_malloc() -> bool:
    """glibc's malloc set as on a dask worker: trim at 64 KiB, mmap from 128 KiB."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    done = bool(libc.mallopt(M_TRIM_THRESHOLD, 65536) and libc.mallopt(M_MMAP_THRESHOLD, 131072))
    if done:  # as distributed's nanny sets it (what dem.heap reads to put the values back)
        os.environ["MALLOC_TRIM_THRESHOLD_"] = "65536"
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the chunk")
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--covariance", default="full,diag,tied,spherical")
    parser.add_argument("--repeats", type=int, default=7, help="repetitions (>= 3)")
    parser.add_argument("--sklearn-iterations", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="20,000 rows, 3 repetitions")
    parser.add_argument(
        "--missing", type=float, default=0.0, help="also time missing='marginalize' (NaN fraction)"
    )
    parser.add_argument("--no-sklearn", action="store_true", help="skip scikit-learn")
    parser.add_argument(
        "--worker-malloc", action="store_true", help="glibc malloc as on a dask worker"
    )
    parser.add_argument(
        "--heap-reuse",
        action="store_true",
        help="also time dem's kernels inside dem.heap.heap_reuse() (as the engine runs them)",
    )
    args = parser.parse_args()
    malloc_set = worker_malloc() if args.worker_malloc else False
    if args.quick:
        args.rows, args.repeats = 20_000, 3
    n, d, k = args.rows, args.d, args.k

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    from dem.heap import heap_reuse
    from dem.models.mixture.init import initial_params
    from dem.models.mixture.missing import MarginalMixtureModel
    from dem.models.mixture.model import MixtureModel

    emit(BENCHMARK, "machine", **machine(), worker_malloc=malloc_set, heap_reuse=args.heap_reuse)
    x = mixture_rows(n, d, k, seed=1)
    holed = x.copy()
    holed[np.random.default_rng(4).random(x.shape) < args.missing] = np.nan
    x32 = x.astype(np.float32)
    square = np.random.default_rng(0).standard_normal((1000, 1000))
    for covariance_type in parse_sizes(args.covariance):
        inits = initial_parameters(x[:20_000], k, covariance_type, seed=3)
        model = MixtureModel(k, covariance_type)
        params = initial_params(model, x[:0], np.random.default_rng(0), "kmeans", **inits)

        def dem_iteration(
            data: np.ndarray, model: MixtureModel = model, params: Any = params, reuse: bool = False
        ) -> None:
            with heap_reuse() if reuse else contextlib.nullcontext():
                model.m_step(model.e_step({"X": data}, params), params)

        marginal = MarginalMixtureModel(k, covariance_type)

        def sklearn_fit(
            max_iter: int, covariance_type: str = covariance_type, inits: Any = inits
        ) -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                GaussianMixture(
                    k,
                    covariance_type=covariance_type,
                    max_iter=max_iter,
                    tol=0.0,
                    init_params="random_from_data",
                    random_state=0,
                    **inits,
                ).fit(x)

        best: dict[str, float] = {}
        runs = {
            "gemm": lambda: square @ square,
            "dem_float64": lambda: dem_iteration(x),
            "dem_float32": lambda: dem_iteration(x32),
        }
        if not args.no_sklearn:
            runs["sklearn_short"] = lambda: sklearn_fit(1)
            runs["sklearn_long"] = lambda: sklearn_fit(1 + args.sklearn_iterations)
        if args.missing > 0:
            runs["missing"] = lambda marginal=marginal: dem_iteration(holed, marginal)
        if args.heap_reuse:
            runs["dem_float64_reuse"] = lambda: dem_iteration(x, reuse=True)
            if args.missing > 0:
                runs["missing_reuse"] = lambda marginal=marginal: dem_iteration(
                    holed, marginal, reuse=True
                )
        ratios: list[float] = []
        reuse_ratios: dict[str, list[float]] = {}
        faults_of: dict[str, list[int]] = {}
        with threadpool_limits(1):
            for _ in range(args.repeats):
                seconds_of = {}
                for name, run in runs.items():
                    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                    seconds_of[name], _ = timed(run)
                    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
                    faults_of.setdefault(name, []).append(faults)
                    best[name] = min(best.get(name, np.inf), seconds_of[name])
                if "missing" in runs:
                    ratios.append(seconds_of["missing"] / seconds_of["dem_float64"])
                for name in ("dem_float64", "missing"):
                    if f"{name}_reuse" in runs:
                        speedup = seconds_of[name] / seconds_of[f"{name}_reuse"]
                        reuse_ratios.setdefault(f"reuse_speedup_{name}", []).append(speedup)
                if "missing_reuse" in runs:
                    ratio = seconds_of["missing_reuse"] / seconds_of["dem_float64_reuse"]
                    reuse_ratios.setdefault("missing_over_complete_reuse", []).append(ratio)
        rate = 2e9 / best["gemm"]
        floor = 4.0 * n * k * d * d / rate
        extra: dict[str, Any] = {}
        if not args.no_sklearn:
            sklearn = (best["sklearn_long"] - best["sklearn_short"]) / args.sklearn_iterations
            extra = {"ms_sklearn": 1e3 * sklearn, "sklearn_over_dem": sklearn / best["dem_float64"]}
        if ratios:
            extra.update(
                missing_fraction=args.missing,
                ms_missing=1e3 * best["missing"],
                missing_over_complete=statistics.median(ratios),
                missing_over_complete_min=min(ratios),
                missing_over_complete_repeats=ratios,
            )
        for name in ("dem_float64_reuse", "missing_reuse"):
            if name in best:
                extra[f"ms_{name}"] = 1e3 * best[name]
        if args.heap_reuse:  # the mechanism: minor page faults per call (median)
            for name in runs:
                if name.startswith(("dem_float64", "missing")):
                    extra[f"page_faults_{name}"] = statistics.median(faults_of[name])
        for name, values in reuse_ratios.items():
            extra[name] = statistics.median(values)
            extra[f"{name}_min"] = min(values)
        emit(
            BENCHMARK,
            "summary",
            covariance=covariance_type,
            rows=n,
            d=d,
            k=k,
            ms_dem_float64=1e3 * best["dem_float64"],
            ms_dem_float32=1e3 * best["dem_float32"],
            ms_floor=1e3 * floor,
            gemm_gflops_one_thread=rate / 1e9,
            **extra,
            dem_over_floor=best["dem_float64"] / floor,
            float32_speedup=best["dem_float64"] / best["dem_float32"],
        )


if __name__ == "__main__":
    main()
