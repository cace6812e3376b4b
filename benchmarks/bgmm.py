"""Variational Gaussian mixture: dem vs scikit-learn's BayesianGaussianMixture, per iteration.

Both start from the same responsibilities (scikit-learn's ``init_params="random"``
draws them from its ``random_state``; dem receives the same array as ``resp_init``),
so their lower bounds after 1 and 1 + m iterations are compared too. In the same run,
dem's GaussianMixture and scikit-learn's from the same initial parameters give the
speed-up dem has over scikit-learn for maximum-likelihood EM: the issue's goal is a
variational speed-up at least as large.

scikit-learn's seconds per iteration are (T(max_iter=1+m) - T(max_iter=1)) / m (which
cancels its initialisation and final E-step); dem's are the engine's per-iteration times
after one warm-up iteration, on a LocalCluster of one-thread worker processes holding
the data in 100,000-row chunks.

Run ``python benchmarks/bgmm.py`` (N=2e6, d=16, K=8, full) or ``--quick`` (N=2e5).
"""

from __future__ import annotations

import argparse
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


def sklearn_seconds(make: Any, x: np.ndarray, iterations: int) -> tuple[float, list[float]]:
    """Seconds per iteration by the difference, and the lower bounds after 1 and 1 + m."""
    from sklearn.exceptions import ConvergenceWarning

    def fit(max_iter: int) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return make(max_iter).fit(x)

    base, short = timed(lambda: fit(1))
    total, long = timed(lambda: fit(1 + iterations))
    bounds = [float(np.ravel(short.lower_bound_)[0]), float(np.ravel(long.lower_bound_)[0])]
    return (total - base) / iterations, bounds


def dem_seconds(make: Any, array: Any, iterations: int) -> tuple[float, list[float]]:
    """Median seconds of iterations 2 .. 1 + iterations, and every lower bound."""
    from dem.engine import ConvergenceWarning

    seconds: list[float] = []
    model = make(iterations + 1, lambda info: seconds.append(info.seconds))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(array)
    return median(seconds[1:]), list(model.lower_bounds_)


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
    config = {"n": n, "d": d, "k": k, "covariance": ctype, "chunk_rows": args.chunk_rows}

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

        for _ in range(args.repeats):
            for name, run in (
                ("sklearn_bgmm", lambda: sklearn_seconds(sk_bgmm, x, m)),
                ("dem_bgmm", lambda: dem_seconds(dem_bgmm, array, iterations)),
                ("sklearn_gmm", lambda: sklearn_seconds(sk_gmm, x, m)),
                ("dem_gmm", lambda: dem_seconds(dem_gmm, array, iterations)),
            ):
                seconds, bounds[name] = run()
                times.setdefault(name, []).append(seconds)
    for name, repeats in times.items():
        emit(BENCHMARK, name, seconds_per_iter=median(repeats), repeats=repeats, **config)
    ours = [bounds["dem_bgmm"][0], bounds["dem_bgmm"][m]]
    emit(
        BENCHMARK,
        "summary",
        bgmm_speedup_vs_sklearn=median(times["sklearn_bgmm"]) / median(times["dem_bgmm"]),
        gmm_speedup_vs_sklearn=median(times["sklearn_gmm"]) / median(times["dem_gmm"]),
        lower_bound_rel_diff_vs_sklearn=max(
            abs(a - b) / abs(b) for a, b in zip(ours, bounds["sklearn_bgmm"], strict=True)
        ),
        **config,
    )


if __name__ == "__main__":
    main()
