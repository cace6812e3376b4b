"""Probabilistic PCA: dem's EM against scikit-learn's PCA and dask's svd_compressed.

All three fit the same simulated low-rank data (``x = W z + mu + noise``, float64, noise
variance 1). The peers work on complete data only:

- ``sklearn.decomposition.PCA`` on the array in this process's memory with all BLAS
  threads (for tall data its solver is an eigendecomposition of the d × d covariance);
- ``dask.array.linalg.svd_compressed`` (randomised SVD of the centred array, two power
  iterations) on the same cluster and chunks as dem.

dem's PPCA runs on a ``LocalCluster`` of one-thread worker processes (one per core), on
the complete data and then with a fraction ``--missing`` of the entries missing at
random, which neither peer can fit. The data are persisted on the workers, or with
``--zarr`` written to a Zarr store (chunk by chunk, on the cluster) that every iteration
re-reads; ``--keep`` reuses a store written before, ``--memory-limit-gib`` caps each
worker's memory (so a store larger than the cluster's memory is fitted out of core), and
``--fit-rows`` fits the first rows of the data only (for example to count the iterations
to convergence on a subset of a store too large to converge on in the time at hand).
``--accelerate none,squarem`` fits dem both plainly and with SQUAREM.

Each line is one JSON object ``{"benchmark": "ppca", "what": ...}``: first the machine
(load average, BLAS), then one line per implementation with the median seconds of
``--repeats`` fits (and every run). A line per data kind gives the CPU seconds of one
E-step over one ``--chunk-rows`` chunk with one BLAS thread, which moves least with the
load of a shared machine. dem's fit lines add the EM iterations, the median
seconds per iteration (from the per-iteration callback, so without the initialisation),
(per SQUAREM cycle with ``accelerate="squarem"``), the seconds per pass over the data, and
the mean log-likelihood. Accuracy: ``subspace_sin`` is the sine of the largest
principal angle between the fitted subspace and scikit-learn's, ``loglik_gap`` dem's mean
log-likelihood below the closed-form maximum (Tipping & Bishop, from scikit-learn's
eigenvalues rescaled to the 1/N covariance).

Examples
--------
python benchmarks/ppca.py                        # 1e6 x 100, q = 10, 20% missing
python benchmarks/ppca.py --rows 200000 --repeats 3
python benchmarks/ppca.py --rows 10000000 --data missing --zarr /tmp/ppca.zarr --keep \
    --memory-limit-gib 2 --skip-peers --repeats 1 --max-iter 3   # out of core, s/iteration
python benchmarks/ppca.py --rows 10000000 --data missing --zarr /tmp/ppca.zarr --keep \
    --fit-rows 1000000 --skip-peers --repeats 1 --accelerate none,squarem  # to convergence
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import numpy as np
from distributed import Client, LocalCluster
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_info

import dem


def simulate(rows: int, features: int, components: int, chunk_rows: int, seed: int = 0) -> da.Array:
    """Lazy low-rank data with a decaying spectrum and noise variance 1."""
    rng = np.random.default_rng(seed)
    loadings = rng.standard_normal((features, components)) * np.linspace(3.0, 1.0, components)
    mean = rng.normal(0.0, 5.0, features)
    lazy_rng = da.random.default_rng(seed)
    latents = lazy_rng.standard_normal((rows, components), chunks=(chunk_rows, components))
    noise = lazy_rng.standard_normal((rows, features), chunks=(chunk_rows, features))
    return latents @ loadings.T + mean + noise


def with_missing(X: da.Array, fraction: float, seed: int = 1) -> da.Array:
    """Each entry missing with probability ``fraction``, independently (MCAR)."""
    mask = da.random.default_rng(seed).random(X.shape, chunks=X.chunks) < fraction
    return da.where(mask, np.nan, X)


def subspace_sin(components: np.ndarray, reference: np.ndarray) -> float:
    """Sine of the largest principal angle between two row spaces."""
    basis_a = np.linalg.qr(components.T)[0]
    basis_b = np.linalg.qr(reference.T)[0]
    cosines = np.linalg.svd(basis_a.T @ basis_b, compute_uv=False)
    return float(np.sqrt(max(0.0, 1.0 - cosines.min() ** 2)))


def closed_form_loglik(reference: PCA, rows: int) -> float:
    """Mean log-likelihood at the PPCA maximum, from scikit-learn's (N - 1) eigenvalues."""
    scale = (rows - 1) / rows
    values = reference.explained_variance_ * scale
    noise = reference.noise_variance_ * scale
    d, q = reference.n_features_in_, len(values)
    return float(
        -0.5 * (d * np.log(2 * np.pi) + np.log(values).sum() + (d - q) * np.log(noise) + d)
    )


def repeat(function: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - started)
    return seconds, result


def kernel_seconds(
    rows: int, features: int, components: int, missing: float, repeats: int
) -> float:
    """CPU seconds of one E-step on one chunk in this process with one BLAS thread
    (the least disturbed by other processes: minimum over ``repeats``)."""
    from threadpoolctl import threadpool_limits

    from dem.models.ppca.model import LinearGaussianModel

    chunk = np.asarray(with_missing(simulate(rows, features, components, rows), missing))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        model = dem.PPCA(components, max_iter=1).fit(chunk[: min(rows, 20_000)])
    params = {
        "loadings": model.loadings_.T,
        "mean": model.mean_,
        "noise_variance": np.asarray(model.noise_variance_),
    }
    e_step = LinearGaussianModel(components).e_step
    seconds = []
    with threadpool_limits(1):
        for _ in range(repeats):
            started = time.process_time()
            e_step({"X": chunk}, params)
            seconds.append(time.process_time() - started)
    return min(seconds)


def stored(path: str, label: str, array: da.Array) -> bool:
    """Whether the store at ``path`` already holds ``label`` with ``array``'s shape."""
    try:
        return da.from_zarr(path, component=label).shape == array.shape
    except (FileNotFoundError, KeyError, ValueError):
        return False


def emit(what: str, **fields: Any) -> None:
    print(json.dumps({"benchmark": "ppca", "what": what, **fields}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--components", type=int, default=10)
    parser.add_argument("--missing", type=float, default=0.2)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--data", choices=("complete", "missing", "both"), default="both")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--zarr", help="write the data to this Zarr store and fit from it")
    parser.add_argument(
        "--keep", action="store_true", help="reuse the data already in --zarr (only read)"
    )
    parser.add_argument("--memory-limit-gib", type=float, help="memory limit per worker")
    parser.add_argument("--fit-rows", type=int, help="fit the first FIT_ROWS rows only")
    parser.add_argument(
        "--accelerate", default="none", help="comma-separated: none, squarem (dem fits)"
    )
    parser.add_argument("--skip-peers", action="store_true", help="time dem only")
    args = parser.parse_args()
    n, d, q = args.fit_rows or args.rows, args.features, args.components
    size = {"rows": n, "features": d, "components": q, "chunk_rows": args.chunk_rows}
    if args.fit_rows:
        size["data_rows"] = args.rows
    blas = [
        {k: i.get(k) for k in ("internal_api", "num_threads", "architecture")}
        for i in threadpool_info()
    ]
    emit(
        "machine",
        load_average=os.getloadavg(),
        cpus=os.cpu_count(),
        blas=blas,
        workers=args.workers,
        memory_limit_gib=args.memory_limit_gib,
        dask=dask.__version__,
        **size,
    )

    for fraction in (0.0, args.missing):
        emit(
            "dem.PPCA e_step, one chunk, one thread",
            missing=fraction,
            cpu_seconds=kernel_seconds(args.chunk_rows, d, q, fraction, args.repeats),
            **{**size, "rows": args.chunk_rows},
        )

    limit = {} if args.memory_limit_gib is None else {"memory_limit": f"{args.memory_limit_gib}GiB"}
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            **limit,
        ) as cluster,
        Client(cluster),
    ):
        X = simulate(args.rows, d, q, args.chunk_rows)
        arrays = {"complete": X, "missing": with_missing(X, args.missing)}
        wanted = ("complete", "missing") if args.data == "both" else (args.data,)
        peers = not args.skip_peers and "complete" in wanted
        if args.zarr:
            for label in wanted:
                if not (args.keep and stored(args.zarr, label, arrays[label])):
                    started = time.perf_counter()
                    da.to_zarr(arrays[label], args.zarr, component=label, overwrite=True)
                    emit(
                        "write zarr",
                        data=label,
                        seconds=time.perf_counter() - started,
                        gib=arrays[label].nbytes / 2**30,
                    )
            inputs: dict[str, Any] = {
                label: da.from_zarr(args.zarr, component=label)[: args.fit_rows]
                if args.fit_rows
                else args.zarr
                for label in wanted
            }
            source, persist = "zarr", False
        else:
            inputs = {label: arrays[label][:n].persist() for label in wanted}
            source, persist = "memory", None

        reference = None
        if peers:
            lazy = (
                da.from_zarr(args.zarr, component="complete")[:n]
                if args.zarr
                else inputs["complete"]
            )
            values = lazy.compute()
            seconds, reference = repeat(lambda: PCA(q).fit(values), args.repeats)
            del values
            emit(
                "sklearn.PCA",
                data="complete",
                source="client memory",
                seconds=statistics.median(seconds),
                runs=seconds,
                loglik=closed_form_loglik(reference, n),
                subspace_sin=0.0,
                **size,
            )

            def compressed() -> np.ndarray:
                centred = lazy - lazy.mean(axis=0)
                _, _, right = da.linalg.svd_compressed(centred, k=q, n_power_iter=2, seed=0)
                return right.compute()

            seconds, right = repeat(compressed, args.repeats)
            emit(
                "dask.svd_compressed",
                data="complete",
                source=source,
                seconds=statistics.median(seconds),
                runs=seconds,
                subspace_sin=subspace_sin(right, reference.components_),
                **size,
            )

        methods = [m.strip() for m in args.accelerate.split(",") if m.strip()]
        for (label, data), method in itertools.product(inputs.items(), methods):
            per_iteration: list[float] = []

            def fit(
                data: Any = data,
                label: str = label,
                method: str = method,
                per_iteration: list[float] = per_iteration,
            ) -> dem.PPCA:
                per_iteration.clear()
                model = dem.PPCA(
                    q,
                    tol=args.tol,
                    max_iter=args.max_iter,
                    random_state=0,
                    persist=persist,
                    accelerate=method,
                    callback=lambda info: per_iteration.append(info.seconds),
                )
                path = isinstance(data, str)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", dem.ConvergenceWarning)
                    return model.fit(data, variable=label if path else None)

            seconds, model = repeat(fit, args.repeats)
            record: dict[str, Any] = {
                "data": label,
                "source": source,
                "missing": args.missing if label == "missing" else 0.0,
                "accelerate": method,
                "seconds": statistics.median(seconds),
                "runs": seconds,
                "n_iter": model.n_iter_,
                "converged": model.converged_,
                "seconds_per_iteration": statistics.median(per_iteration),
                "seconds_per_pass": sum(per_iteration) / model.n_iter_,
                "loglik": model.lower_bound_,
                "lower_bounds": model.lower_bounds_,
            }
            if reference is not None:
                record["subspace_sin"] = subspace_sin(model.components_, reference.components_)
                if label == "complete":
                    record["loglik_gap"] = closed_form_loglik(reference, n) - model.lower_bound_
            emit("dem.PPCA", **record, **size)


if __name__ == "__main__":
    main()
