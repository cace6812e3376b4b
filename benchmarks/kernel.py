"""The E-step kernel alone: one chunk, one thread, dem vs scikit-learn vs the GEMM floor.

Without a cluster, scheduler or data movement: dem's ``MixtureModel.e_step`` plus
``m_step`` on one in-memory chunk, scikit-learn's seconds per EM iteration on the
same chunk ((T(max_iter=1+m) - T(max_iter=1)) / m from the fastest of each), and the
floor 4·n·K·d² flops at the single-thread matrix-product rate, all with one BLAS
thread and interleaved. Figures are the minimum over repetitions (the least disturbed
by other processes), so this benchmark stays readable on a busy machine where the
end-to-end ones (gmm.py) move with the load.

Run ``python benchmarks/kernel.py`` or ``python benchmarks/kernel.py --quick``.
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any

import numpy as np
from _common import emit, initial_parameters, machine, mixture_rows, parse_sizes, timed
from threadpoolctl import threadpool_limits

BENCHMARK = "kernel"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the chunk")
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--covariance", default="full,diag,tied,spherical")
    parser.add_argument("--repeats", type=int, default=7, help="repetitions (>= 3)")
    parser.add_argument("--sklearn-iterations", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="20,000 rows, 3 repetitions")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeats = 20_000, 3
    n, d, k = args.rows, args.d, args.k

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    from dem.models.mixture.init import initial_params
    from dem.models.mixture.model import MixtureModel

    emit(BENCHMARK, "machine", **machine())
    x = mixture_rows(n, d, k, seed=1)
    x32 = x.astype(np.float32)
    square = np.random.default_rng(0).standard_normal((1000, 1000))
    for covariance_type in parse_sizes(args.covariance):
        inits = initial_parameters(x[:20_000], k, covariance_type, seed=3)
        model = MixtureModel(k, covariance_type)
        params = initial_params(model, x[:0], np.random.default_rng(0), "kmeans", **inits)

        def dem_iteration(
            data: np.ndarray, model: MixtureModel = model, params: Any = params
        ) -> None:
            model.m_step(model.e_step({"X": data}, params), params)

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
            "sklearn_short": lambda: sklearn_fit(1),
            "sklearn_long": lambda: sklearn_fit(1 + args.sklearn_iterations),
        }
        with threadpool_limits(1):
            for _ in range(args.repeats):
                for name, run in runs.items():
                    seconds, _ = timed(run)
                    best[name] = min(best.get(name, np.inf), seconds)
        rate = 2e9 / best["gemm"]
        floor = 4.0 * n * k * d * d / rate
        sklearn = (best["sklearn_long"] - best["sklearn_short"]) / args.sklearn_iterations
        emit(
            BENCHMARK,
            "summary",
            covariance=covariance_type,
            rows=n,
            d=d,
            k=k,
            ms_dem_float64=1e3 * best["dem_float64"],
            ms_dem_float32=1e3 * best["dem_float32"],
            ms_sklearn=1e3 * sklearn,
            ms_floor=1e3 * floor,
            gemm_gflops_one_thread=rate / 1e9,
            sklearn_over_dem=sklearn / best["dem_float64"],
            dem_over_floor=best["dem_float64"] / floor,
            float32_speedup=best["dem_float64"] / best["dem_float32"],
        )


if __name__ == "__main__":
    main()
