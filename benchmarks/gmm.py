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

Where pyspark and Java are installed (neither is a dependency of dem), Spark MLlib's
GaussianMixture (full covariances only) runs on ``local[workers]`` from the same start,
timed by the same difference as scikit-learn, on an RDD of the rows cached beforehand.
Its E-step works with densities, not their logarithms, and adds machine epsilon to each,
so where densities are small (d=16) its path departs from scikit-learn's and dem's
(``means_max_abs_diff_vs_sklearn``): it is a peer for time, not for the result.

With ``--weights``, each repetition also times dem (float64) with random sample weights
(uniform in [0, 3), held on the workers like the data), reported as ``weighted`` and as
``weighted_over_unweighted`` in the summary (issue 18's target: at most 1.1).
``--missing 0.1`` also times ``missing="marginalize"`` on the same rows with 10% of the
entries NaN (missing completely at random), float64, in the same repetitions
(``missing_over_complete`` in the summary).

Each dem line also gives the workers' CPU seconds and minor page faults per iteration
(summed over the workers, the warm-up iteration included: ``worker_cpu_per_iter``,
``worker_page_faults_per_iter``, from ``getrusage`` in each worker process), which a
busy machine moves far less than the wall clock (``missing_over_complete_cpu``).

Run ``python benchmarks/gmm.py`` (N=2e6, d=16, K=8, 2 workers: several minutes) or
``python benchmarks/gmm.py --quick``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import resource
import shutil
import warnings
from collections.abc import Iterator
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
) -> tuple[float, list[float], np.ndarray]:
    """Seconds per iteration, the lower bound after 1 and after ``1 + iterations``, and
    the means after ``1 + iterations``."""
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
    bounds = [float(short.lower_bound_), float(long.lower_bound_)]
    return (total - base) / iterations, bounds, long.means_


SPARK_MEMORY = "8g"


@contextlib.contextmanager
def spark_context(cores: int) -> Iterator[Any]:
    """A local Spark context on ``cores`` cores, or None when pyspark or Java is missing."""
    if importlib.util.find_spec("pyspark") is None or shutil.which("java") is None:
        yield None
        return
    from pyspark import SparkConf, SparkContext

    conf = (
        SparkConf()
        .setMaster(f"local[{cores}]")
        .setAppName("dem-benchmark")
        .set("spark.driver.memory", SPARK_MEMORY)
        .set("spark.ui.enabled", "false")
        .set("spark.ui.showConsoleProgress", "false")
    )
    context = SparkContext(conf=conf)
    context.setLogLevel("ERROR")
    try:
        yield context
    finally:
        context.stop()


def spark_rows(context: Any, x: np.ndarray, chunk_rows: int) -> Any:
    """``x`` as an RDD of MLlib vectors cached in the JVM, one partition per chunk.

    pyspark's ``GaussianMixture.train`` would convert a Python RDD to Java objects again
    at every call (seconds for 2e6 rows, noisier than an iteration); the trainer is
    called on this cached Java RDD instead (pyspark's own conversion helpers).
    """
    from pyspark.mllib.common import _to_java_object_rdd
    from pyspark.mllib.linalg import _convert_to_vector

    pieces = [x[start : start + chunk_rows] for start in range(0, len(x), chunk_rows)]
    vectors = context.parallelize(pieces, len(pieces)).flatMap(list).map(_convert_to_vector)
    rows = _to_java_object_rdd(vectors).cache()
    rows.count()
    return rows


def spark_iteration(
    rows: Any, n_components: int, inits: dict[str, np.ndarray], iterations: int
) -> tuple[float, np.ndarray]:
    """Spark MLlib's seconds per iteration from the same start (full covariances), by the
    same difference as scikit-learn's, and its means after ``1 + iterations`` iterations."""
    from pyspark.mllib.clustering import GaussianMixtureModel
    from pyspark.mllib.common import callMLlibFunc
    from pyspark.mllib.linalg import DenseMatrix, DenseVector

    d = inits["means_init"].shape[1]
    weights = [float(w) for w in inits["weights_init"]]
    means = [DenseVector(mean) for mean in inits["means_init"]]
    covariances = [DenseMatrix(d, d, np.linalg.inv(p).ravel()) for p in inits["precisions_init"]]

    def fit(max_iter: int) -> Any:
        # what pyspark.mllib.clustering.GaussianMixture.train calls, on the cached rows
        java_model = callMLlibFunc(
            "trainGaussianMixtureModel",
            rows,
            n_components,
            0.0,
            max_iter,
            None,
            weights,
            means,
            covariances,
        )
        return GaussianMixtureModel(java_model)

    fit(1)  # the JVM compiles its code paths on the first call
    base, _ = timed(lambda: fit(1))
    total, model = timed(lambda: fit(1 + iterations))
    fitted_means = np.array([g.mu.toArray() for g in model.gaussians])
    return (total - base) / iterations, fitted_means


def dem_iterations(
    array: Any,
    n_components: int,
    covariance_type: str,
    inits: dict[str, np.ndarray],
    iterations: int,
    sample_weight: Any = None,
    missing: str = "raise",
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
        missing=missing,
        **inits,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(array, sample_weight=sample_weight)
    return seconds[1:], list(model.lower_bounds_)


def _own_usage() -> tuple[float, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_minflt


def worker_usage(client: Any) -> np.ndarray:
    """CPU seconds and minor page faults of the worker processes so far, summed."""
    return np.sum([list(u) for u in client.run(_own_usage).values()], axis=0)


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
    parser.add_argument(
        "--no-spark", action="store_true", help="skip Spark MLlib (run when pyspark and Java are)"
    )
    parser.add_argument("--quick", action="store_true", help="N=2e5 in 25k-row chunks")
    parser.add_argument(
        "--weights",
        action="store_true",
        help="also time dem with random sample weights",
    )
    parser.add_argument(
        "--missing",
        type=float,
        default=0.0,
        help="also time missing='marginalize' on the data with this fraction of entries NaN "
        "(MCAR), float64, next to complete data",
    )
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
    covariance_types = parse_sizes(args.covariance)
    with_spark = not args.no_spark and "full" in covariance_types

    with (
        local_cluster(args.workers) as client,
        spark_context(args.workers) if with_spark else contextlib.nullcontext() as spark,
    ):
        arrays = {dtype: scattered(client, x.astype(dtype), args.chunk_rows) for dtype in dtypes}
        weights = None
        if args.weights:
            w = np.random.default_rng(4).uniform(0.0, 3.0, size=n)
            weights = scattered(client, w, args.chunk_rows)
        if args.missing > 0:
            holed = x.copy()
            holed[np.random.default_rng(4).random(x.shape) < args.missing] = np.nan
            arrays["missing"] = scattered(client, holed, args.chunk_rows)
        spark_data = None if spark is None else spark_rows(spark, x, args.chunk_rows)
        for covariance_type in covariance_types:
            inits = initial_parameters(sample, k, covariance_type, seed=3)
            times: dict[str, list[float]] = {}
            bounds: dict[str, list[float]] = {}
            means: dict[str, np.ndarray] = {}
            for _ in range(args.repeats):
                for name in ("float64", "float32"):
                    times.setdefault(f"gemm_{name}", []).append(gemm_rate(np.dtype(name)))
                if not args.no_sklearn:
                    seconds, bounds["sklearn"], means["sklearn"] = sklearn_iteration(
                        x, k, covariance_type, inits, args.sklearn_iterations
                    )
                    times.setdefault("sklearn", []).append(seconds)
                if spark_data is not None and covariance_type == "full":
                    seconds, means["spark"] = spark_iteration(
                        spark_data, k, inits, args.sklearn_iterations
                    )
                    times.setdefault("spark", []).append(seconds)
                for dtype in dtypes:
                    before = worker_usage(client)
                    seconds_list, bounds[dtype] = dem_iterations(
                        arrays[dtype], k, covariance_type, inits, iterations
                    )
                    record(times, dtype, seconds_list, worker_usage(client) - before)
                if weights is not None and "float64" in arrays:
                    seconds_list, _ = dem_iterations(
                        arrays["float64"], k, covariance_type, inits, iterations, weights
                    )
                    times.setdefault("weighted", []).append(median(seconds_list))
                if "missing" in arrays:
                    before = worker_usage(client)
                    seconds_list, bounds["missing"] = dem_iterations(
                        arrays["missing"],
                        k,
                        covariance_type,
                        inits,
                        iterations,
                        missing="marginalize",
                    )
                    record(times, "missing", seconds_list, worker_usage(client) - before)
            report(covariance_type, times, bounds, means, args.sklearn_iterations, config)


def record(
    times: dict[str, list[float]], name: str, seconds: list[float], usage: np.ndarray
) -> None:
    """A repetition of ``name``: its median seconds, the workers' CPU seconds and page
    faults per iteration (``usage`` over the fit's ``len(seconds) + 1`` iterations)."""
    times.setdefault(name, []).append(median(seconds))
    times.setdefault(f"{name}_cpu", []).append(float(usage[0]) / (len(seconds) + 1))
    times.setdefault(f"{name}_faults", []).append(float(usage[1]) / (len(seconds) + 1))


def report(
    covariance_type: str,
    times: dict[str, list[float]],
    bounds: dict[str, list[float]],
    means: dict[str, np.ndarray],
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
    for name in ("sklearn", "spark", "float64", "float32", "weighted", "missing"):
        if name not in times:
            continue
        line: dict[str, Any] = {
            "covariance": covariance_type,
            "dtype": name if name in ("float64", "float32") else "float64",
            "seconds_per_iter": median(times[name]),
            "repeats": times[name],
        }
        if name == "float64" and "sklearn" in bounds:
            # after 1 and 1 + m iterations, dem's log-likelihoods against scikit-learn's
            ours = [bounds["float64"][0], bounds["float64"][sklearn_iterations]]
            line["lower_bound_rel_diff_vs_sklearn"] = max(
                relative(a, b) for a, b in zip(ours, bounds["sklearn"], strict=True)
            )
        if name == "spark" and "sklearn" in means:
            # Spark adds no reg_covar: its means differ from scikit-learn's by about that
            line["means_max_abs_diff_vs_sklearn"] = float(
                np.max(np.abs(means["spark"] - means["sklearn"]))
            )
        if f"{name}_cpu" in times:
            line["worker_cpu_per_iter"] = median(times[f"{name}_cpu"])
            line["worker_page_faults_per_iter"] = median(times[f"{name}_faults"])
        what = {"missing": "dem_missing"}.get(name, "dem" if name.startswith("float") else name)
        emit(BENCHMARK, what, **line, **config)
    for peer in ("sklearn", "spark"):
        if "float64" in times and peer in times:
            summary[f"{peer}_over_dem"] = median(times[peer]) / median(times["float64"])
    if "float64" in times and "missing" in times:
        summary["missing_over_complete"] = median(times["missing"]) / median(times["float64"])
        cpu = median(times["missing_cpu"]) / median(times["float64_cpu"])
        summary["missing_over_complete_cpu"] = cpu
    if "float64" in times and covariance_type == "full":
        floor = 4.0 * n * k * d * d / (rates["float64"] * 1e9)
        summary["floor_seconds"] = floor
        summary["dem_over_floor"] = median(times["float64"]) / floor
    if "float64" in times and "weighted" in times:
        summary["weighted_over_unweighted"] = median(times["weighted"]) / median(times["float64"])
    if "float64" in times and "float32" in times:
        summary["float32_speedup"] = median(times["float64"]) / median(times["float32"])
        summary["float32_lower_bound_max_rel_diff"] = max(
            relative(a, b) for a, b in zip(bounds["float32"], bounds["float64"], strict=True)
        )
    emit(BENCHMARK, "summary", **summary)


if __name__ == "__main__":
    main()
