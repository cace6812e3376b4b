"""Censored (Tobit) regression: dem's EM against a direct maximum-likelihood fit with scipy.

Both fit the same simulated data (censored on both sides, a fraction ``--censored`` of the
rows in total, split evenly); the peer is BFGS on the Tobit log-likelihood with its
analytic gradient (scipy.optimize, numpy in memory). Prints one JSON line per
implementation and censoring level (medians of ``--repeats`` runs), then one line with the
agreement of the two fits.

Examples
--------
python benchmarks/tobit.py --rows 1000000 --features 20 --censored 0.25,0.5,0.75
python benchmarks/tobit.py --rows 10000000 --features 20 --zarr /tmp/tobit.zarr --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import dask.array as da
import numpy as np
import zarr
from scipy import optimize
from scipy.special import log_ndtr
from threadpoolctl import threadpool_info

import dem


def simulate(rows: int, features: int, censored: float, seed: int = 0):
    """X, y and the limits (left, right) that censor ``censored`` of the rows, half each side."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    coef = rng.normal(size=features) / np.sqrt(features)
    ystar = 0.5 + X @ coef + rng.normal(size=rows)
    left, right = np.quantile(ystar[:100_000], [censored / 2, 1 - censored / 2])
    return X, np.clip(ystar, left, right), float(left), float(right)


def direct_fit(
    X: np.ndarray, y: np.ndarray, left: float, right: float
) -> tuple[np.ndarray, float, int]:
    """BFGS on minus the Tobit log-likelihood in (intercept, coef, log sigma)."""
    below, above = y <= left, y >= right
    exact = ~below & ~above

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        s = np.exp(theta[-1])
        mu = theta[0] + X @ theta[1:-1]
        z = (y - mu) / s
        zl, zr = z[below], -z[above]  # log Φ(zl) for left-censored, log Φ(zr) for right
        log_l, log_r = log_ndtr(zl), log_ndtr(zr)
        value = -0.5 * np.sum(z[exact] ** 2) - exact.sum() * (theta[-1] + 0.5 * np.log(2 * np.pi))
        value += log_l.sum() + log_r.sum()
        mills_l = np.exp(-0.5 * zl**2 - 0.5 * np.log(2 * np.pi) - log_l)
        mills_r = np.exp(-0.5 * zr**2 - 0.5 * np.log(2 * np.pi) - log_r)
        d_mu = np.zeros_like(y)
        d_mu[exact] = z[exact] / s
        d_mu[below] = -mills_l / s
        d_mu[above] = mills_r / s
        d_log_s = np.sum(z[exact] ** 2) - exact.sum() - np.sum(zl * mills_l) - np.sum(zr * mills_r)
        grad = np.concatenate([[d_mu.sum()], X.T @ d_mu, [d_log_s]])
        return -value, -grad

    start = np.zeros(X.shape[1] + 2)
    result = optimize.minimize(objective, start, jac=True, method="BFGS", options={"gtol": 1e-6})
    return result.x, -float(result.fun), int(result.nfev)


def timed(function: Any, repeats: int) -> tuple[list[float], Any]:
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - started)
    return seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--censored", default="0.25,0.5,0.75", help="comma-separated fractions")
    parser.add_argument("--chunk-rows", type=int, default=250_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--zarr", help="write the data to this Zarr store and fit dem from it")
    parser.add_argument("--no-persist", action="store_true", help="re-read the input every pass")
    parser.add_argument("--cluster", action="store_true", help="2-worker distributed.LocalCluster")
    parser.add_argument("--skip-scipy", action="store_true")
    args = parser.parse_args()

    client = None
    if args.cluster:
        from distributed import Client, LocalCluster

        client = Client(LocalCluster(n_workers=2, threads_per_worker=1, processes=True))
    try:
        for censored in (float(c) for c in args.censored.split(",")):
            run(args, censored)
    finally:
        if client is not None:
            client.close()


def run(args: argparse.Namespace, censored: float) -> None:
    X, y, left, right = simulate(args.rows, args.features, censored)
    persist = False if args.no_persist else None
    common = {
        "benchmark": "tobit",
        "rows": args.rows,
        "features": args.features,
        "censored": round(float(np.mean((y <= left) | (y >= right))), 4),
        "repeats": args.repeats,
        "blas": [
            f"{i['internal_api']}:{i['num_threads']}:{i.get('architecture')}"
            for i in threadpool_info()
        ],
    }
    if args.zarr:
        group = zarr.open_group(args.zarr, mode="w")
        group.create_array("X", shape=X.shape, dtype="f8", chunks=(args.chunk_rows, args.features))[
            ...
        ] = X
        group.create_array("y", shape=y.shape, dtype="f8", chunks=(args.chunk_rows,))[...] = y
        size = sum(
            os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(args.zarr) for f in fs
        )
        common["zarr_bytes"] = size

        def fit_dem() -> dem.CensoredRegression:
            return dem.CensoredRegression(left, right, persist=persist).fit(
                args.zarr, "y", variable="X"
            )
    else:
        Xd = da.from_array(X, chunks=(args.chunk_rows, args.features))
        yd = da.from_array(y, chunks=args.chunk_rows)

        def fit_dem() -> dem.CensoredRegression:
            return dem.CensoredRegression(left, right, persist=persist).fit(Xd, yd)

    seconds, model = timed(fit_dem, args.repeats)
    median = statistics.median(seconds)
    print(
        json.dumps(
            {
                **common,
                "impl": "dem-em",
                "source": "zarr" if args.zarr else "memory",
                "scheduler": "distributed-2x1" if args.cluster else "threads",
                "seconds_median": round(median, 3),
                "seconds": [round(s, 3) for s in seconds],
                "n_iter": model.n_iter_,
                "passes": model.n_iter_ + 2,  # + the row check and the standard-error pass
                "seconds_per_pass": round(median / (model.n_iter_ + 2), 4),
                "converged": bool(model.converged_),
            }
        ),
        flush=True,
    )
    if args.skip_scipy:
        return
    seconds, (theta, loglik, nfev) = timed(lambda: direct_fit(X, y, left, right), args.repeats)
    print(
        json.dumps(
            {
                **common,
                "impl": "scipy-bfgs",
                "seconds_median": round(statistics.median(seconds), 3),
                "seconds": [round(s, 3) for s in seconds],
                "function_evaluations": nfev,
            }
        ),
        flush=True,
    )
    ours = np.concatenate([[model.intercept_], model.coef_, [np.log(model.scale_)]])
    print(
        json.dumps(
            {
                **common,
                "agreement": "dem vs scipy",
                "max_abs_diff_theta": float(np.max(np.abs(ours - theta))),
                "max_rel_diff_theta": float(np.max(np.abs(ours - theta)) / np.max(np.abs(theta))),
                "loglik_dem": model.loglik_,
                "loglik_scipy": loglik,
                "max_std_error": float(model.bse_.max()),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
