"""Fewer passes over the data: plain EM vs SQUAREM, fused restarts, k-means‖ vs sample k-means.

Prints one JSON line per measurement, all in one run (so the figures compare):

- ``squarem``: passes and seconds to convergence, plain EM vs ``accelerate="squarem"``,
  for (a) Tobit regression censored on both sides (~75% of the rows; several seeds, the
  median passes and ratio), (b) an overlapping two-component Gaussian mixture (several
  seeds; the median ratio of passes), (c) PPCA with a small eigengap (several seeds,
  against the closed-form maximum). A case that cannot run prints a ``skipped`` line
  saying why.
- ``restarts``: seconds per pass of ``n_init=8`` against ``n_init=1`` (data in memory,
  and re-read from a Zarr store every pass), wall clock and this process's CPU time, for
  a costly E-step (full, K=8) and a cheap one (diag, K=2).
- ``init``: k-means‖ over all the data against k-means on a bounded sample: passes for
  the initialisation and for EM, seconds, and the final mean log-likelihood.
- ``alpha`` (only with ``--only alpha``): α-EM (``accelerate="alpha"``, several α) against
  plain EM and SQUAREM on the mixture (full, diag), Tobit and PPCA cases above: passes,
  seconds, and passes until within 1e-8 of the best (PPCA: the closed-form) maximum.
- ``incremental`` (only with ``--only incremental``): incremental EM (Neal & Hinton)
  against batch EM and SQUAREM on the mixture, the categorical HMM, PPCA with missing
  values, Tobit and the Gaussian HMM: passes and seconds to tol 1e-8, and the medians
  over the seeds of the ratios to batch EM.
- ``online``: a Zarr store of ``--online-rows`` rows (1e7; a 4-component mixture in 5
  dimensions, written chunk by chunk under /tmp and deleted after) re-read every pass:
  batch EM from k-means‖ and from k-means on a sample, one pass of online EM from the
  same k-means start followed by batch EM, and one online pass alone (its mean
  log-likelihood against batch EM's optimum: the target is within 1%).

Passes are counted as dask computes (each reads the data once; the k-means‖ seeding also
reads one row, counted apart). Seconds are medians of ``--repeats`` runs.

Examples
--------
python benchmarks/accelerate.py
python benchmarks/accelerate.py --quick
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import math
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import dask.threaded
import numpy as np
import zarr
from threadpoolctl import threadpool_info, threadpool_limits

import dem
from dem import seeding


class CountingScheduler:
    """The threaded scheduler, counting its computes."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return dask.threaded.get(dsk, keys, **kwargs)


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def measured(fit: Callable[[], Any], repeats: int) -> tuple[Any, float, int]:
    """(fitted model, median seconds, computes of one fit)."""
    seconds, model, calls = [], None, 0
    for _ in range(repeats):
        counter = CountingScheduler()
        started = time.perf_counter()
        with dask.config.set(scheduler=counter), warnings.catch_warnings():
            warnings.simplefilter("ignore", dem.ConvergenceWarning)
            model = fit()
        seconds.append(time.perf_counter() - started)
        calls = counter.calls
    return model, statistics.median(seconds), calls


def takes_accelerate(name: str) -> str | None:
    """Why the estimator ``dem.<name>`` cannot be benchmarked here, or None."""
    estimator = getattr(dem, name, None)
    if estimator is None:
        return f"dem.{name} is not in this tree"
    if "accelerate" not in inspect.signature(estimator).parameters:
        return f"dem.{name} has no accelerate option in this tree"
    return None


def compare(
    case: str,
    fits: dict[str, Callable[[], Any]],
    score: Callable[[Any], float],
    repeats: int,
    extra: dict[str, Any],
) -> float:
    """Plain vs SQUAREM on one problem; prints one line; returns the ratio of passes."""
    record: dict[str, Any] = {"benchmark": "squarem", "case": case, **extra}
    for method, fit in fits.items():
        model, seconds, calls = measured(fit, repeats)
        record[method] = {
            "passes": int(model.n_iter_),
            "computes": calls,
            "seconds": round(seconds, 3),
            "converged": bool(model.converged_),
            "loglik": score(model),
        }
    plain, fast = record["none"], record["squarem"]
    record["pass_ratio"] = round(plain["passes"] / fast["passes"], 2)
    record["seconds_ratio"] = round(plain["seconds"] / max(fast["seconds"], 1e-9), 2)
    record["loglik_rel_diff"] = abs(plain["loglik"] - fast["loglik"]) / abs(plain["loglik"])
    emit(record)
    return float(record["pass_ratio"])


# --- (a) Tobit -------------------------------------------------------------------------


def censored_data(
    rows: int, features: int, seed: int
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Tobit data censored on both sides, 37.5% of the rows on each: (X, y, left, right)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    ystar = 0.5 + X @ (rng.normal(size=features) / np.sqrt(features)) + rng.normal(size=rows)
    left, right = np.quantile(ystar, [0.375, 0.625])
    return X, np.clip(ystar, left, right), float(left), float(right)


def tobit(args: argparse.Namespace) -> None:
    why = takes_accelerate("CensoredRegression")
    if why is not None:
        emit({"benchmark": "squarem", "case": "tobit", "skipped": why})
        return
    features, ratios = 5, []
    passes: dict[str, list[int]] = {"none": [], "squarem": []}
    logliks: dict[str, list[float]] = {"none": [], "squarem": []}

    def fit(method: str, X: da.Array, y: da.Array, left: float, right: float) -> Any:
        model = dem.CensoredRegression(  # type: ignore[attr-defined]
            left, right, max_iter=20_000, accelerate=method
        ).fit(X, y)
        passes[method].append(int(model.n_iter_))
        logliks[method].append(float(model.loglik_))
        return model

    for seed in range(args.seeds):
        X, y, left, right = censored_data(args.rows, features, seed)
        Xd = da.from_array(X, chunks=(args.chunk_rows, features))
        yd = da.from_array(y, chunks=args.chunk_rows)
        fits = {
            method: (lambda m=method, Xd=Xd, yd=yd, lo=left, hi=right: fit(m, Xd, yd, lo, hi))
            for method in ("none", "squarem")
        }
        censored = float(np.mean((y <= left) | (y >= right)))
        ratios.append(
            compare(
                "tobit",
                fits,
                lambda m: float(m.loglik_),
                args.repeats,
                {
                    "rows": args.rows,
                    "features": features,
                    "seed": seed,
                    "censored": round(censored, 4),
                    "tol": 1e-8,
                },
            )
        )
    rel_diffs = [
        abs(a - b) / abs(a) for a, b in zip(logliks["none"], logliks["squarem"], strict=True)
    ]
    emit(
        {
            "benchmark": "squarem",
            "case": "tobit",
            "seeds": args.seeds,
            "median_passes_none": statistics.median(passes["none"]),
            "median_passes_squarem": statistics.median(passes["squarem"]),
            "median_pass_ratio": statistics.median(ratios),
            "pass_ratios": ratios,
            "max_loglik_rel_diff": max(rel_diffs),
        }
    )


# --- (b) an overlapping two-component mixture --------------------------------------------


def overlapping(rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    half = rows // 2
    x = np.vstack(
        [
            rng.normal(0.0, 1.0, (half, 2)),
            rng.normal(0.0, 1.0, (rows - half, 2)) * [1.2, 0.8] + [1.8, 0.4],
        ]
    )
    return x[rng.permutation(rows)]


def rough_start(x: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "weights_init": np.array([0.5, 0.5]),
        "means_init": x[rng.choice(len(x), 2, replace=False)],
        "precisions_init": np.stack([np.diag(1.0 / np.var(x, axis=0))] * 2),
    }


def mixture(args: argparse.Namespace) -> None:
    ratios = []
    for seed in range(args.seeds):
        x = overlapping(args.rows, seed)
        data = da.from_array(x, chunks=(args.chunk_rows, 2))
        start = rough_start(x, seed)
        fits = {
            method: (
                lambda m=method, data=data, start=start: dem.GaussianMixture(
                    2, tol=1e-8, max_iter=20_000, accelerate=m, **start
                ).fit(data)
            )
            for method in ("none", "squarem")
        }
        ratios.append(
            compare(
                "mixture",
                fits,
                lambda m, x=x: float(m.score(x)),
                args.repeats,
                {"rows": args.rows, "seed": seed, "tol": 1e-8},
            )
        )
    emit(
        {
            "benchmark": "squarem",
            "case": "mixture",
            "seeds": args.seeds,
            "median_pass_ratio": statistics.median(ratios),
            "pass_ratios": ratios,
        }
    )


# --- (c) PPCA with a small eigengap ----------------------------------------------------


def close_eigenvalues(rows: int, features: int, seed: int) -> np.ndarray:
    """Signal variances 0.3, 0.2, 0.1 in random directions over unit noise: every gap is small."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(features, 3)))[0]
    latents = rng.normal(size=(rows, 3)) * np.sqrt([0.3, 0.2, 0.1])
    return latents @ basis.T + rng.normal(size=(rows, features)) + rng.normal(0.0, 3.0, features)


def ppca_maximum(x: np.ndarray, components: int) -> float:
    """The closed-form maximum of the mean PPCA log-likelihood (Tipping & Bishop 1999)."""
    rows, features = x.shape
    centred = x - x.mean(axis=0)
    values = np.linalg.eigvalsh(centred.T @ centred / rows)[::-1]
    noise = values[components:].mean()
    return float(
        -0.5
        * (
            features * np.log(2 * np.pi)
            + np.log(values[:components]).sum()
            + (features - components) * np.log(noise)
            + features
        )
    )


def ppca(args: argparse.Namespace) -> None:
    why = takes_accelerate("PPCA")
    if why is not None:
        emit({"benchmark": "squarem", "case": "ppca", "skipped": why})
        return
    features, latent, within = 20, 3, 1e-6
    ratios, gaps, ratios_within = [], [], []
    passes: dict[str, list[int]] = {"none": [], "squarem": []}
    for seed in range(args.seeds):
        x = close_eigenvalues(args.rows, features, seed)
        data = da.from_array(x, chunks=(args.chunk_rows, features))
        maximum = ppca_maximum(x, latent)
        # (passes so far, mean log-likelihood) after each step of the last fit of a method
        traces: dict[str, list[tuple[int, float]]] = {"none": [], "squarem": []}

        def fit(
            method: str,
            data: da.Array = data,
            seed: int = seed,
            trace: dict[str, list[tuple[int, float]]] = traces,
        ) -> Any:
            trace[method].clear()
            return dem.PPCA(
                latent,
                tol=1e-8,
                max_iter=20_000,
                init_params="random",
                random_state=seed,
                accelerate=method,
                callback=lambda info: trace[method].append((info.iteration, info.loglik)),
            ).fit(data)

        scores: dict[str, float] = {}

        def score(model: Any, x: np.ndarray = x, scores: dict[str, float] = scores) -> float:
            scores[model.accelerate] = float(model.score(x))
            passes[model.accelerate].append(int(model.n_iter_))
            return scores[model.accelerate]

        ratios.append(
            compare(
                "ppca",
                {m: (lambda m=m, fit=fit: fit(m)) for m in traces},
                score,
                args.repeats,
                {
                    "rows": args.rows,
                    "features": features,
                    "seed": seed,
                    "tol": 1e-8,
                    "signal_variances": [0.3, 0.2, 0.1],
                    "noise_variance": 1.0,
                    "closed_form_loglik": maximum,
                },
            )
        )
        # passes until a point within 1e-6 (relative) of the closed-form maximum was reached
        target = maximum - within * abs(maximum)
        within_passes = {
            method: next((done for done, loglik in trace if loglik >= target), None)
            for method, trace in traces.items()
        }
        emit(
            {
                "benchmark": "squarem",
                "case": "ppca",
                "seed": seed,
                "passes_to_within_1e-6_of_maximum": within_passes,
            }
        )
        if None not in within_passes.values():
            ratios_within.append(within_passes["none"] / within_passes["squarem"])
        gaps.append(max(abs(maximum - v) / abs(maximum) for v in scores.values()))
    emit(
        {
            "benchmark": "squarem",
            "case": "ppca",
            "seeds": args.seeds,
            "median_passes_none": statistics.median(passes["none"]),
            "median_passes_squarem": statistics.median(passes["squarem"]),
            "median_pass_ratio": statistics.median(ratios),
            "pass_ratios": ratios,
            "median_pass_ratio_to_within_1e-6": statistics.median(ratios_within or [math.nan]),
            "max_rel_gap_to_closed_form": max(gaps),
        }
    )


# --- fused restarts -------------------------------------------------------------------


def blobs(
    rows: int, features: int, clusters: int, seed: int, spread: float = 4.0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters of unequal sizes (the smallest ~1% of the rows); (x, centres)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, spread, (clusters, features))
    sizes = rng.dirichlet(np.full(clusters, 2.0)) * 0.9 + 0.1 / clusters
    labels = rng.choice(clusters, size=rows, p=sizes / sizes.sum())
    mixing = np.eye(features) + 0.2 * rng.normal(size=(clusters, features, features))
    x = centres[labels] + np.einsum("nd,nde->ne", rng.normal(size=(rows, features)), mixing[labels])
    return x, centres


def restarts(args: argparse.Namespace) -> None:
    """Seconds per pass of ``n_init=8`` against ``n_init=1``: wall clock, and the CPU time of
    this process (the threaded scheduler runs every task here), which a busy machine moves
    far less. The two settings alternate within each repetition, so both see the same load.
    Two E-step costs: full covariances with K=8 (compute-bound) and diagonal ones with K=2
    (the read of the chunk and the per-pass overhead weigh more).

    BLAS runs one thread per task, as on one-thread workers: the threaded scheduler already
    runs one task per core, and a second BLAS thread per task made passes several times
    slower on a busy 2-core machine (its threads wait for each other).
    """
    with threadpool_limits(1):
        _restarts(args)


def _restarts(args: argparse.Namespace) -> None:
    features, passes = 16, 6
    for covariance_type, clusters in (("full", 8), ("diag", 2)):
        x, _ = blobs(args.restart_rows, features, clusters, seed=0)
        with tempfile.TemporaryDirectory() as folder:
            store = f"{folder}/blobs.zarr"
            group = zarr.open_group(store, mode="w")
            group.create_array("X", shape=x.shape, dtype="f8", chunks=(args.chunk_rows, features))[
                ...
            ] = x
            sources = {
                "memory": (da.from_array(x, chunks=(args.chunk_rows, features)), None),
                "zarr": (store, False),
            }
            for source, (data, persist) in sources.items():
                wall: dict[int, list[float]] = {1: [], 8: []}
                cpu: dict[int, list[float]] = {1: [], 8: []}
                for _ in range(args.repeats):
                    for n_init in (1, 8):
                        stamps: list[tuple[float, float]] = []

                        def record(
                            info: dem.IterationInfo, stamps: list[tuple[float, float]] = stamps
                        ) -> None:
                            if info.run == 0:
                                stamps.append((time.perf_counter(), time.process_time()))

                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore", dem.ConvergenceWarning)
                            dem.GaussianMixture(
                                clusters,
                                covariance_type=covariance_type,
                                n_init=n_init,
                                max_iter=passes + 1,
                                tol=0.0,
                                init_params="random_from_data",
                                random_state=0,
                                persist=persist,
                                callback=record,
                            ).fit(data, variable="X" if source == "zarr" else None)
                        steps = np.diff(np.array(stamps), axis=0)
                        wall[n_init].append(float(np.median(steps[:, 0])))
                        cpu[n_init].append(float(np.median(steps[:, 1])))
                medians = {
                    kind: {n: statistics.median(values[n]) for n in (1, 8)}
                    for kind, values in (("wall", wall), ("cpu", cpu))
                }
                emit(
                    {
                        "benchmark": "restarts",
                        "source": source,
                        "rows": args.restart_rows,
                        "features": features,
                        "components": clusters,
                        "covariance_type": covariance_type,
                        "seconds_per_pass_n_init_1": round(medians["wall"][1], 4),
                        "seconds_per_pass_n_init_8": round(medians["wall"][8], 4),
                        "ratio": round(medians["wall"][8] / medians["wall"][1], 2),
                        "cpu_seconds_per_pass_n_init_1": round(medians["cpu"][1], 4),
                        "cpu_seconds_per_pass_n_init_8": round(medians["cpu"][8], 4),
                        "cpu_ratio": round(medians["cpu"][8] / medians["cpu"][1], 2),
                        "blas_threads": 1,
                    }
                )


# --- k-means‖ vs k-means on a sample ---------------------------------------------------------


def initialisation(args: argparse.Namespace) -> None:
    features, clusters = 6, 10
    sample = max(args.init_rows // 50, 1000)
    # (init_params, k-means‖ sampling rounds)
    variants = {
        "kmeans": ("kmeans", None),
        "k-means||": ("k-means||", seeding.ROUNDS),
        "k-means|| rounds=2": ("k-means||", 2),
    }
    records: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    default_rounds = seeding.ROUNDS
    for seed in range(args.seeds):
        x, _ = blobs(args.init_rows, features, clusters, seed=seed, spread=3.0)
        data = da.from_array(x, chunks=(args.chunk_rows, features))
        for name, (method, rounds) in variants.items():
            seeding.ROUNDS = rounds or default_rounds
            try:
                model, seconds, calls = measured(
                    lambda m=method, data=data, seed=seed: dem.GaussianMixture(
                        clusters,
                        init_params=m,
                        init_sample_size=sample,
                        random_state=seed,
                        max_iter=1000,
                        tol=1e-5,
                        persist=False,
                    ).fit(data),
                    args.repeats,
                )
            finally:
                seeding.ROUNDS = default_rounds
            init_computes = calls - model.n_iter_  # persist=False: every compute is a pass
            records[name].append(
                {
                    "seed": seed,
                    # k-means‖ also reads one row (its first centre), counted apart
                    "init_passes": init_computes if method == "kmeans" else init_computes - 1,
                    "em_passes": int(model.n_iter_),
                    "seconds": round(seconds, 3),
                    "loglik": float(model.score(x)),
                }
            )
    for name, runs in records.items():
        emit(
            {
                "benchmark": "init",
                "init_params": name,
                "rows": args.init_rows,
                "features": features,
                "components": clusters,
                "init_sample_size": sample,
                "median_init_passes": statistics.median(r["init_passes"] for r in runs),
                "median_em_passes": statistics.median(r["em_passes"] for r in runs),
                "median_total_passes": statistics.median(
                    r["init_passes"] + r["em_passes"] for r in runs
                ),
                "median_seconds": statistics.median(r["seconds"] for r in runs),
                "median_loglik": statistics.median(r["loglik"] for r in runs),
                "runs": runs,
            }
        )


# --- online EM on a large store ------------------------------------------------------------


def write_mixture_store(
    path: str,
    rows: int,
    features: int,
    clusters: int,
    chunk_rows: int,
    seed: int,
    spread: float = 1.5,
) -> None:
    """A Zarr store ``X`` of ``rows`` draws from a Gaussian mixture, written chunk by chunk.

    Overlapping components (centres ~N(0, spread²), random full covariances, weights
    from a Dirichlet), so batch EM needs tens of iterations.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, spread, (clusters, features))
    mixing = np.eye(features) + 0.3 * rng.normal(size=(clusters, features, features))
    weights = rng.dirichlet(np.full(clusters, 3.0))
    array = zarr.open_group(path, mode="w").create_array(
        "X", shape=(rows, features), dtype="f8", chunks=(chunk_rows, features)
    )
    for index, start in enumerate(range(0, rows, chunk_rows)):
        block = np.random.default_rng([seed, index])
        n = min(chunk_rows, rows - start)
        labels = block.choice(clusters, size=n, p=weights)
        noise = block.normal(size=(n, features))
        out = np.empty((n, features))
        for k in range(clusters):
            members = labels == k
            out[members] = centres[k] + noise[members] @ mixing[k]
        array[start : start + n] = out


def online(args: argparse.Namespace) -> None:
    """One pass of online EM over a large store: how close to batch EM's optimum, and how
    many batch iterations it saves as a start (issue 7's online target)."""
    features, clusters = 5, 4
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        store = f"{folder}/mixture.zarr"
        started = time.perf_counter()
        write_mixture_store(
            store, args.online_rows, features, clusters, args.online_chunk_rows, seed=0
        )
        emit(
            {
                "benchmark": "online",
                "stage": "store written",
                "rows": args.online_rows,
                "features": features,
                "chunk_rows": args.online_chunk_rows,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        variants = {
            "batch, k-means|| start": {"init_params": "k-means||"},
            "batch, k-means start": {"init_params": "kmeans"},
            "online pass, then batch": {"init_params": "kmeans", "method": "online"},
            "online pass only": {"init_params": "kmeans", "method": "online", "max_iter": 0},
        }
        summaries = []
        for seed in range(args.online_seeds):
            common = {
                "tol": args.online_tol,
                "max_iter": 5000,
                "persist": False,
                "random_state": seed,
                "init_sample_size": 100_000,
                "step_exponent": args.step_exponent,
            }
            records = {}
            for name, options in variants.items():
                model, seconds, computes = measured(
                    lambda o=options, c=common: dem.GaussianMixture(clusters, **{**c, **o}).fit(
                        store, variable="X"
                    ),
                    1,
                )
                record = {
                    "benchmark": "online",
                    "variant": name,
                    "seed": seed,
                    "rows": args.online_rows,
                    "chunks": -(-args.online_rows // args.online_chunk_rows),
                    "online_updates": int(model.n_online_updates_),
                    "batch_iterations": int(model.n_iter_),
                    "computes": computes,
                    "seconds": round(seconds, 1),
                    "converged": bool(model.converged_),
                }
                if name == "online pass only":
                    record["loglik"] = float(model.score(store, variable="X"))
                    record["loglik_measured_during_pass"] = model.online_lower_bounds_[-1]
                else:
                    record["loglik"] = float(model.lower_bound_)
                records[name] = record
                emit(record)
            optimum = max(r["loglik"] for n, r in records.items() if n != "online pass only")
            alone = records["online pass only"]["loglik"]
            summaries.append(
                {
                    "online_rel_gap": (optimum - alone) / abs(optimum),
                    **{n: r["batch_iterations"] for n, r in records.items()},
                    **{f"{n} computes": r["computes"] for n, r in records.items()},
                }
            )
        emit(
            {
                "benchmark": "online",
                "what": "summary",
                "rows": args.online_rows,
                "seeds": args.online_seeds,
                "step_exponent": args.step_exponent,
                "tol": args.online_tol,
                "max_online_rel_gap": max(s["online_rel_gap"] for s in summaries),
                "median_batch_iterations": {
                    n: statistics.median(s[n] for s in summaries) for n in variants
                },
                "median_computes": {
                    n: statistics.median(s[f"{n} computes"] for s in summaries) for n in variants
                },
            }
        )


# --- α-EM against plain EM and SQUAREM (--only alpha) ------------------------------------

ALPHAS = (0.0, 0.5, 0.8, 0.9)
"""The α values of ``--only alpha`` (β = (1 + α) / 2 = 0.5, 0.75, 0.9, 0.95)."""


def alpha_methods() -> dict[str, dict[str, Any]]:
    """Estimator options of each method ``--only alpha`` compares."""
    methods: dict[str, dict[str, Any]] = {
        "none": {"accelerate": "none"},
        "squarem": {"accelerate": "squarem"},
    }
    for value in ALPHAS:
        methods[f"alpha={value}"] = {"accelerate": "alpha", "alpha": value}
    return methods


def alpha_case(
    case: str,
    fit: Callable[[dict[str, Any], Callable[[Any], None]], Any],
    score: Callable[[Any], float],
    repeats: int,
    extra: dict[str, Any],
    target: float | None = None,
) -> dict[str, Any]:
    """Every method of :func:`alpha_methods` on one problem; prints and returns one record.

    Per method: passes (``n_iter_``) and median seconds to convergence, the final score,
    and the passes until the reported log-likelihood first came within 1e-6 and 1e-8
    (relative) of ``target`` (default: the best final score of all methods).
    """
    record: dict[str, Any] = {"benchmark": "alpha", "case": case, **extra}
    traces: dict[str, list[tuple[int, float]]] = {}
    for name, options in alpha_methods().items():
        trace: list[tuple[int, float]] = []

        def one(options: dict[str, Any] = options, trace: list[tuple[int, float]] = trace) -> Any:
            trace.clear()
            return fit(options, lambda info: trace.append((info.iteration, info.loglik)))

        model, seconds, calls = measured(one, repeats)
        traces[name] = trace
        record[name] = {
            "passes": int(model.n_iter_),
            "computes": calls,
            "seconds": round(seconds, 3),
            "converged": bool(model.converged_),
            "score": score(model),
        }
    best = max(v["score"] for k, v in record.items() if isinstance(v, dict) and "score" in v)
    goal = best if target is None else target
    record["target"] = goal
    for level in ("1e-6", "1e-8"):
        reach = goal - float(level) * abs(goal)
        for name, trace in traces.items():
            record[name][f"passes_to_within_{level}"] = next(
                (done for done, loglik in trace if loglik >= reach), None
            )
    plain = record["none"]
    for name in traces:
        if name != "none":
            record[name]["pass_ratio"] = round(plain["passes"] / record[name]["passes"], 2)
            record[name]["seconds_ratio"] = round(
                plain["seconds"] / max(record[name]["seconds"], 1e-9), 2
            )
    emit(record)
    return record


def alpha_summary(case: str, records: list[dict[str, Any]]) -> None:
    """Medians over the seeds: passes, seconds, passes to 1e-8, and ratios to plain EM."""
    summary: dict[str, Any] = {"benchmark": "alpha", "case": case, "seeds": len(records)}
    for name in alpha_methods():
        runs = [r[name] for r in records]
        summary[name] = {
            "median_passes": statistics.median(r["passes"] for r in runs),
            "median_seconds": statistics.median(r["seconds"] for r in runs),
            "all_converged": all(r["converged"] for r in runs),
        }
        for level in ("1e-6", "1e-8"):
            within = [r[f"passes_to_within_{level}"] for r in runs]
            summary[name][f"median_passes_to_within_{level}"] = (
                statistics.median(within) if None not in within else None
            )
            summary[name][f"reached_{level}"] = sum(w is not None for w in within)
        if name != "none":
            summary[name]["median_pass_ratio"] = statistics.median(r["pass_ratio"] for r in runs)
            summary[name]["median_seconds_ratio"] = statistics.median(
                r["seconds_ratio"] for r in runs
            )
    emit(summary)


def score_on(x: np.ndarray, model: Any) -> float:
    """The mean log-likelihood of ``model`` on ``x``."""
    return float(model.score(x))


def alpha_em(args: argparse.Namespace) -> None:
    """``--only alpha``: α-EM (``accelerate="alpha"``, the α values of :data:`ALPHAS`)
    against plain EM and SQUAREM, tol 1e-8, on the SQUAREM cases: the overlapping
    mixture (full and diagonal covariances), Tobit censored on both sides, and PPCA with
    close eigenvalues (its target: the closed-form maximum)."""
    for covariance_type in ("full", "diag"):
        records = []
        for seed in range(args.seeds):
            x = overlapping(args.rows, seed)
            data = da.from_array(x, chunks=(args.chunk_rows, 2))
            start = rough_start(x, seed)
            if covariance_type == "diag":
                start["precisions_init"] = np.stack(
                    [np.diagonal(p) for p in start["precisions_init"]]
                )

            def fit_mixture(
                options: dict[str, Any],
                callback: Callable[[Any], None],
                data: da.Array = data,
                start: dict[str, Any] = start,
                covariance_type: str = covariance_type,
            ) -> Any:
                return dem.GaussianMixture(
                    2,
                    covariance_type=covariance_type,
                    tol=1e-8,
                    max_iter=20_000,
                    callback=callback,
                    **start,
                    **options,
                ).fit(data)

            records.append(
                alpha_case(
                    f"mixture-{covariance_type}",
                    fit_mixture,
                    functools.partial(score_on, x),
                    args.repeats,
                    {"rows": args.rows, "seed": seed, "tol": 1e-8},
                )
            )
        alpha_summary(f"mixture-{covariance_type}", records)
    why = takes_accelerate("CensoredRegression")
    if why is not None:
        emit({"benchmark": "alpha", "case": "tobit", "skipped": why})
    else:
        records = []
        for seed in range(args.seeds):
            X, y, left, right = censored_data(args.rows, 5, seed)
            Xd = da.from_array(X, chunks=(args.chunk_rows, 5))
            yd = da.from_array(y, chunks=args.chunk_rows)

            def fit_tobit(
                options: dict[str, Any],
                callback: Callable[[Any], None],
                Xd: da.Array = Xd,
                yd: da.Array = yd,
                left: float = left,
                right: float = right,
            ) -> Any:
                return dem.CensoredRegression(
                    left, right, max_iter=20_000, callback=callback, **options
                ).fit(Xd, yd)

            records.append(
                alpha_case(
                    "tobit",
                    fit_tobit,
                    lambda m: float(m.loglik_) / args.rows,  # the trace's mean per row
                    args.repeats,
                    {"rows": args.rows, "features": 5, "seed": seed},
                )
            )
        alpha_summary("tobit", records)
    records = []
    for seed in range(args.seeds):
        x = close_eigenvalues(args.rows, 20, seed)
        data = da.from_array(x, chunks=(args.chunk_rows, 20))

        def fit_ppca(
            options: dict[str, Any],
            callback: Callable[[Any], None],
            data: da.Array = data,
            seed: int = seed,
        ) -> Any:
            return dem.PPCA(
                3,
                tol=1e-8,
                max_iter=20_000,
                init_params="random",
                random_state=seed,
                callback=callback,
                **options,
            ).fit(data)

        records.append(
            alpha_case(
                "ppca",
                fit_ppca,
                functools.partial(score_on, x),
                args.repeats,
                {"rows": args.rows, "features": 20, "seed": seed, "tol": 1e-8},
                target=ppca_maximum(x, 3),
            )
        )
    alpha_summary("ppca", records)


# --- incremental EM (#24) ---------------------------------------------------------------


def _incremental_hmm_data(sequences: int, seed: int) -> np.ndarray:
    """Sequences of 40 symbols of 3 persistent states (as tests/test_incremental.py)."""
    rng = np.random.default_rng(seed)
    emission = np.full((3, 3), 0.015) + np.eye(3) * 0.955
    trans = np.full((3, 3), 0.025) + np.eye(3) * 0.925
    states = np.empty((sequences, 40), dtype=np.int64)
    states[:, 0] = rng.integers(0, 3, size=sequences)
    for t in range(1, 40):
        cumulative = np.cumsum(trans[states[:, t - 1]], axis=1)
        states[:, t] = (rng.random((sequences, 1)) >= cumulative).sum(axis=1)
    draws = rng.random(states.shape)[..., None]
    return (draws >= np.cumsum(emission, axis=1)[states]).sum(axis=-1).astype(float)


def _mixture_fit(data: da.Array, options: dict[str, Any]) -> Any:
    return dem.GaussianMixture(2, tol=1e-8, max_iter=20_000, **options).fit(data)


def _engine_case(
    case: str,
    model: Any,
    inputs: dict[str, da.Array],
    params: dict[str, np.ndarray],
    groups: tuple[int, ...],
    repeats: int,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Batch EM, SQUAREM and incremental EM (groups of ``groups`` chunks) on one model
    through the engine from the same start, to tol 1e-8: one line; returns the record."""
    from dem import engine

    options: dict[str, dict[str, Any]] = {
        "batch": {},
        "squarem": {"accelerate": "squarem"},
        **{f"incremental_{g}": {"method": "incremental", "incremental_chunks": g} for g in groups},
    }
    record: dict[str, Any] = {"benchmark": "incremental", "case": case, **extra, "tol": 1e-8}
    for method, option in options.items():
        result, seconds, _ = measured(
            lambda o=option: engine.fit(
                model, inputs, lambda: params, tol=1e-8, max_iter=5000, **o
            ),
            repeats,
        )
        record[method] = {
            "passes": int(result.n_iter), "seconds": round(seconds, 3),
            "converged": bool(result.converged), "reported": float(result.lower_bound),
        }  # fmt: skip
    for g in groups:
        ours = record[f"incremental_{g}"]
        ours["pass_ratio_to_batch"] = round(ours["passes"] / record["batch"]["passes"], 3)
        ours["seconds_ratio_to_batch"] = round(
            ours["seconds"] / max(record["batch"]["seconds"], 1e-9), 3
        )
    emit(record)
    return record


def _incremental_anchored(args: argparse.Namespace, groups: tuple[int, ...]) -> None:
    """PPCA with 10% missing values, Tobit censored on both sides and the diagonal
    Gaussian HMM (models whose statistics incremental EM takes about an anchor), several
    seeds each, then the median ratios of passes and seconds to batch EM."""
    from dem.models.censored.model import CensoredModel
    from dem.models.hmm.model import GaussianHMMModel
    from dem.models.ppca.model import LinearGaussianModel

    n_chunks = args.incremental_chunks
    ratios: dict[str, dict[str, list[float]]] = {}

    def note(case: str, record: dict[str, Any]) -> None:
        for g in groups:
            for kind in ("pass", "seconds"):
                key = f"{kind}_ratio_to_batch"
                entry = ratios.setdefault(case, {}).setdefault(f"incremental_{g}_{kind}", [])
                entry.append(record[f"incremental_{g}"][key])

    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        x = close_eigenvalues(args.rows, 10, seed) + 3.0
        x[rng.random(x.shape) < 0.1] = np.nan
        start = {
            "loadings": rng.normal(size=(10, 3)),
            "mean": np.nanmean(x, axis=0) + 0.3,
            "noise_variance": np.array(1.0),
        }
        inputs = {"X": da.from_array(x, chunks=(-(-len(x) // n_chunks), -1))}
        extra = {"rows": len(x), "features": 10, "components": 3, "missing": 0.1}
        record = _engine_case(
            "ppca_missing", LinearGaussianModel(3), inputs, start, groups, args.repeats,
            {**extra, "chunks": n_chunks, "seed": seed},
        )  # fmt: skip
        note("ppca_missing", record)

        X, y, left, right = censored_data(args.rows, 5, seed)
        rows = -(-len(X) // n_chunks)
        inputs = {"X": da.from_array(X, chunks=(rows, -1)), "y": da.from_array(y, chunks=rows)}
        start = {"coef": np.zeros(6), "scale": np.array(1.0)}
        record = _engine_case(
            "tobit", CensoredModel(left=left, right=right), inputs, start, groups, args.repeats,
            {"rows": len(X), "censored": 0.75, "chunks": n_chunks, "seed": seed},
        )  # fmt: skip
        note("tobit", record)

        sequences, start = _incremental_gaussian_hmm_data(args.hmm_sequences, seed)
        inputs = {"X": da.from_array(sequences, chunks=(-(-len(sequences) // n_chunks), -1, -1))}
        extra = {"sequences": len(sequences), "steps": 40, "chunks": n_chunks, "seed": seed}
        record = _engine_case(
            "gaussian_hmm", GaussianHMMModel(3, covariance_type="diag"), inputs, start, groups,
            args.repeats, extra,
        )  # fmt: skip
        note("gaussian_hmm", record)
    for case, values in ratios.items():
        emit(
            {
                "benchmark": "incremental", "case": case, "seeds": args.seeds,
                "medians": {key: statistics.median(v) for key, v in values.items()},
            }
        )  # fmt: skip


def _incremental_gaussian_hmm_data(
    sequences: int, seed: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Sequences of 40 steps of 3 persistent states, 2-D Gaussian emissions around 4 (as
    tests/test_incremental.py), and a start away from the optimum."""
    rng = np.random.default_rng(seed)
    trans = np.full((3, 3), 0.05) + np.eye(3) * 0.85
    means = np.array([[0.0, 0.0], [2.5, 0.5], [0.5, 3.0]]) + 4.0
    states = np.empty((sequences, 40), dtype=np.int64)
    states[:, 0] = rng.integers(0, 3, size=sequences)
    for t in range(1, 40):
        cumulative = np.cumsum(trans[states[:, t - 1]], axis=1)
        states[:, t] = (rng.random((sequences, 1)) >= cumulative).sum(axis=1)
    x = means[states] + rng.normal(size=(sequences, 40, 2))
    covars = np.array([[1.5, 1.0], [1.0, 2.0], [2.0, 2.0]])
    start = {
        "startprob": np.array([0.4, 0.3, 0.3]),
        "transmat": np.array([[0.6, 0.2, 0.2], [0.3, 0.4, 0.3], [0.3, 0.3, 0.4]]),
        "means": means + rng.normal(scale=0.7, size=(3, 2)),
        "covars": covars,
        "precisions_cholesky": 1.0 / np.sqrt(covars),
    }
    return x, start


def incremental(args: argparse.Namespace) -> None:
    """Incremental EM against batch EM and SQUAREM, passes and seconds to tol=1e-8.

    The data are cut into ``--incremental-chunks`` chunks (incremental EM takes an
    M-step after every group of ``incremental_chunks`` of them): the mixture (several
    seeds), the categorical HMM, then PPCA with missing values, Tobit and the Gaussian
    HMM (several seeds; see :func:`_incremental_anchored`).
    """
    from dem import engine
    from dem.models.hmm.model import CategoricalHMMModel

    n_chunks = args.incremental_chunks
    groups = (1, 4)
    ratios: dict[str, list[float]] = {f"incremental_{g}": [] for g in groups}
    for seed in range(args.seeds):
        x = overlapping(args.rows, seed)
        data = da.from_array(x, chunks=(-(-args.rows // n_chunks), 2))
        start = rough_start(x, seed)
        options: dict[str, dict[str, Any]] = {
            "batch": {},
            "squarem": {"accelerate": "squarem"},
            **{
                f"incremental_{g}": {"method": "incremental", "incremental_chunks": g}
                for g in groups
            },
        }
        fits = {
            method: functools.partial(_mixture_fit, data, {**start, **option})
            for method, option in options.items()
        }
        record: dict[str, Any] = {
            "benchmark": "incremental", "case": "mixture", "rows": args.rows,
            "chunks": n_chunks, "seed": seed, "tol": 1e-8,
        }  # fmt: skip
        for method, fit in fits.items():
            model, seconds, _ = measured(fit, args.repeats)
            record[method] = {
                "passes": int(model.n_iter_), "seconds": round(seconds, 3),
                "converged": bool(model.converged_), "loglik": float(model.score(x)),
            }  # fmt: skip
        batch = record["batch"]
        for g in groups:
            ours = record[f"incremental_{g}"]
            ours["pass_ratio_to_batch"] = round(ours["passes"] / batch["passes"], 3)
            ours["loglik_rel_diff"] = abs(ours["loglik"] - batch["loglik"]) / abs(batch["loglik"])
            ratios[f"incremental_{g}"].append(ours["pass_ratio_to_batch"])
        emit(record)
    emit(
        {
            "benchmark": "incremental", "case": "mixture", "seeds": args.seeds,
            "median_pass_ratio_to_batch": {k: statistics.median(v) for k, v in ratios.items()},
        }
    )  # fmt: skip
    x = _incremental_hmm_data(args.hmm_sequences, 0)
    inputs = {"X": da.from_array(x, chunks=(-(-len(x) // n_chunks), -1))}
    model = CategoricalHMMModel(3, n_features=3)
    params = {
        "startprob": np.array([0.4, 0.3, 0.3]),
        "transmat": np.array([[0.6, 0.2, 0.2], [0.3, 0.4, 0.3], [0.3, 0.3, 0.4]]),
        "emissionprob": np.array([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6]]),
    }
    record = {
        "benchmark": "incremental", "case": "categorical_hmm", "sequences": len(x),
        "steps": 40, "chunks": n_chunks, "tol": 1e-8,
    }  # fmt: skip
    options = {
        "batch": {},
        "squarem": {"accelerate": "squarem"},
        **{f"incremental_{g}": {"method": "incremental", "incremental_chunks": g} for g in groups},
    }
    for method, option in options.items():
        result, seconds, _ = measured(
            lambda o=option: engine.fit(
                model, inputs, lambda: params, tol=1e-8, max_iter=5000, **o
            ),
            args.repeats,
        )
        record[method] = {
            "passes": int(result.n_iter), "seconds": round(seconds, 3),
            "converged": bool(result.converged), "reported": float(result.lower_bound),
        }  # fmt: skip
    for g in groups:
        ours = record[f"incremental_{g}"]
        ours["pass_ratio_to_batch"] = round(ours["passes"] / record["batch"]["passes"], 3)
    emit(record)
    _incremental_anchored(args, groups)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000, help="rows for the SQUAREM cases")
    parser.add_argument("--restart-rows", type=int, default=200_000)
    parser.add_argument("--init-rows", type=int, default=300_000)
    parser.add_argument("--chunk-rows", type=int, default=25_000)
    parser.add_argument("--online-rows", type=int, default=10_000_000)
    parser.add_argument("--online-chunk-rows", type=int, default=100_000)
    parser.add_argument("--online-tol", type=float, default=1e-6)
    parser.add_argument("--online-seeds", type=int, default=3)
    parser.add_argument("--step-exponent", type=float, default=0.6)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--incremental-chunks", type=int, default=64, help="chunks of the incremental cases"
    )
    parser.add_argument("--hmm-sequences", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument(
        "--only",
        default="tobit,mixture,ppca,restarts,init,online",
        help="comma-separated parts",
    )
    args = parser.parse_args()
    if args.quick:
        args.rows, args.restart_rows, args.init_rows = 10_000, 40_000, 40_000
        args.chunk_rows, args.seeds, args.repeats = 10_000, 3, 1
        args.online_rows, args.online_chunk_rows = 1_000_000, 20_000
        args.hmm_sequences = 2_000
    emit(
        {
            "benchmark": "setup",
            "blas": [
                f"{i['internal_api']}:{i['num_threads']}:{i.get('architecture')}"
                for i in threadpool_info()
            ],
            "repeats": args.repeats,
        }
    )
    parts = {
        "tobit": tobit,
        "mixture": mixture,
        "ppca": ppca,
        "restarts": restarts,
        "init": initialisation,
        "online": online,
        "alpha": alpha_em,
        "incremental": incremental,
    }
    for name in args.only.split(","):
        parts[name](args)


if __name__ == "__main__":
    main()
