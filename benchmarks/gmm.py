"""Gaussian mixture: dem on a local cluster vs scikit-learn, from identical initial parameters.

For each covariance type and each repetition, in turn: the matrix-product rate of this
machine, scikit-learn's seconds per EM iteration on the in-memory array (all BLAS
threads of this process), and dem's on a LocalCluster of one-thread worker processes
holding the same data (float64 and float32). Interleaving the repetitions keeps the
ratios fair when the machine's load changes during the run. Each figure is the median
over repetitions.

scikit-learn's seconds per iteration are (T(max_iter=1+m) - T(max_iter=1)) / m, which
cancels its initialisation and final E-step; dem's are the engine's per-iteration times
after one warm-up iteration (median within a repetition). The floor (full covariance)
is 4·N·K·d² flops at the measured matrix-product rate.

Run ``python benchmarks/gmm.py`` (N=2e6, d=16, K=8, 2 workers: several minutes) or
``python benchmarks/gmm.py --quick``.
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any

import numpy as np
from _common import (
    emit,
    gemm_rate,
    initial_parameters,
    local_cluster,
    machine,
    median,
    mixture_rows,
    parse_sizes,
    scattered,
    timed,
)

BENCHMARK = "gmm"


def sklearn_iteration(
    x: np.ndarray,
    n_components: int,
    covariance_type: str,
    inits: dict[str, np.ndarray],
    iterations: int,
) -> tuple[float, list[float]]:
    """Seconds per iteration, and the lower bound after 1 and after ``1 + iterations``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    def fit(max_iter: int) -> Any:
        model = GaussianMixture(
            n_components,
            covariance_type=covariance_type,
            max_iter=max_iter,
            tol=0.0,
            init_params="random_from_data",
            random_state=0,
            **inits,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return model.fit(x)

    base, short = timed(lambda: fit(1))
    total, long = timed(lambda: fit(1 + iterations))
    return (total - base) / iterations, [float(short.lower_bound_), float(long.lower_bound_)]


def dem_iterations(
    array: Any,
    n_components: int,
    covariance_type: str,
    inits: dict[str, np.ndarray],
    iterations: int,
) -> tuple[list[float], list[float]]:
    """Seconds of iterations 2 .. iterations + 1 (the first warms up), and all lower bounds."""
    from dem.engine import ConvergenceWarning
    from dem.models.mixture import GaussianMixture

    seconds: list[float] = []
    model = GaussianMixture(
        n_components,
        covariance_type=covariance_type,
        max_iter=iterations + 1,
        tol=0.0,
        callback=lambda info: seconds.append(info.seconds),
        **inits,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(array)
    return seconds[1:], list(model.lower_bounds_)


def relative(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=float, default=2e6, help="rows (default 2e6)")
    parser.add_argument("--d", type=int, default=16, help="features (default 16)")
    parser.add_argument("--k", type=int, default=8, help="components (default 8)")
    parser.add_argument("--covariance", default="full,diag", help="covariance types")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="repetitions (>= 3)")
    parser.add_argument(
        "--iterations", type=int, default=3, help="timed dem iterations per repetition"
    )
    parser.add_argument("--sklearn-iterations", type=int, default=2, help="m in the difference")
    parser.add_argument("--no-sklearn", action="store_true", help="skip the scikit-learn peer")
    parser.add_argument("--quick", action="store_true", help="N=2e5 in 25k-row chunks")
    args = parser.parse_args()
    if args.quick:
        args.n, args.chunk_rows = 2e5, 25_000
    n, d, k = int(args.n), args.d, args.k
    dtypes = parse_sizes(args.dtypes)
    iterations = max(args.iterations, args.sklearn_iterations + 1)

    emit(BENCHMARK, "machine", **machine())
    x = mixture_rows(n, d, k, seed=1)
    sample = x[np.random.default_rng(2).choice(n, size=min(n, 20_000), replace=False)]
    config = {"n": n, "d": d, "k": k, "chunk_rows": args.chunk_rows, "workers": args.workers}

    with local_cluster(args.workers) as client:
        arrays = {dtype: scattered(client, x.astype(dtype), args.chunk_rows) for dtype in dtypes}
        for covariance_type in parse_sizes(args.covariance):
            inits = initial_parameters(sample, k, covariance_type, seed=3)
            times: dict[str, list[float]] = {}
            bounds: dict[str, list[float]] = {}
            for _ in range(args.repeats):
                for name in ("float64", "float32"):
                    times.setdefault(f"gemm_{name}", []).append(gemm_rate(np.dtype(name)))
                if not args.no_sklearn:
                    seconds, bounds["sklearn"] = sklearn_iteration(
                        x, k, covariance_type, inits, args.sklearn_iterations
                    )
                    times.setdefault("sklearn", []).append(seconds)
                for dtype in dtypes:
                    seconds_list, bounds[dtype] = dem_iterations(
                        arrays[dtype], k, covariance_type, inits, iterations
                    )
                    times.setdefault(dtype, []).append(median(seconds_list))
            report(covariance_type, times, bounds, args.sklearn_iterations, config)


def report(
    covariance_type: str,
    times: dict[str, list[float]],
    bounds: dict[str, list[float]],
    sklearn_iterations: int,
    config: dict[str, Any],
) -> None:
    """One line per implementation and a summary with the ratios the targets use."""
    n, d, k = config["n"], config["d"], config["k"]
    rates = {name: median(times[f"gemm_{name}"]) for name in ("float64", "float32")}
    emit(
        BENCHMARK,
        "gemm_rate",
        covariance=covariance_type,
        gflops=rates,
        repeats=times["gemm_float64"],
    )
    summary: dict[str, Any] = {"covariance": covariance_type, **config}
    for name in ("sklearn", "float64", "float32"):
        if name not in times:
            continue
        line: dict[str, Any] = {
            "covariance": covariance_type,
            "dtype": "float64" if name == "sklearn" else name,
            "seconds_per_iter": median(times[name]),
            "repeats": times[name],
        }
        if name == "float64" and "sklearn" in bounds:
            # after 1 and 1 + m iterations, dem's log-likelihoods against scikit-learn's
            ours = [bounds["float64"][0], bounds["float64"][sklearn_iterations]]
            line["lower_bound_rel_diff_vs_sklearn"] = max(
                relative(a, b) for a, b in zip(ours, bounds["sklearn"], strict=True)
            )
        emit(BENCHMARK, "sklearn" if name == "sklearn" else "dem", **line, **config)
    if "float64" in times and "sklearn" in times:
        summary["sklearn_over_dem"] = median(times["sklearn"]) / median(times["float64"])
    if "float64" in times and covariance_type == "full":
        floor = 4.0 * n * k * d * d / (rates["float64"] * 1e9)
        summary["floor_seconds"] = floor
        summary["dem_over_floor"] = median(times["float64"]) / floor
    if "float64" in times and "float32" in times:
        summary["float32_speedup"] = median(times["float64"]) / median(times["float32"])
        summary["float32_lower_bound_max_rel_diff"] = max(
            relative(a, b) for a, b in zip(bounds["float32"], bounds["float64"], strict=True)
        )
    emit(BENCHMARK, "summary", **summary)


if __name__ == "__main__":
    main()
