"""Probabilistic PCA: dem's EM against scikit-learn's PCA and dask's svd_compressed.

All three fit the same simulated low-rank data (``x = W z + mu + noise``, float64). The
peers: ``sklearn.decomposition.PCA`` (numpy in memory; its default solver for tall data
is an eigendecomposition of the d × d covariance) and ``dask.array.linalg.svd_compressed``
(randomised SVD of the centred dask array, two power iterations), both on complete data.
dem's PPCA runs on the same dask array (or Zarr store), complete and then with a
fraction ``--missing`` of the entries missing at random, which neither peer can fit.

Prints one JSON line per implementation (medians of ``--repeats`` runs) with the seconds,
EM iterations and seconds per iteration, and accuracy: ``subspace_sin`` is the sine of
the largest principal angle between the fitted subspace and scikit-learn's, and
``loglik_gap`` dem's mean log-likelihood below the closed-form maximum (Tipping & Bishop,
from scikit-learn's eigenvalues with the 1/N covariance).

Examples
--------
python benchmarks/ppca.py --rows 1000000 --features 100 --components 10
python benchmarks/ppca.py --rows 10000000 --zarr /tmp/ppca.zarr --repeats 1 --skip-peers
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from typing import Any

import dask
import dask.array as da
import numpy as np
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
    """Sine of the largest principal angle between two row spaces (orthonormal rows)."""
    q_a = np.linalg.qr(components.T)[0]
    q_b = np.linalg.qr(reference.T)[0]
    cosines = np.linalg.svd(q_a.T @ q_b, compute_uv=False)
    return float(np.sqrt(max(0.0, 1.0 - cosines.min() ** 2)))


def closed_form_loglik(values: np.ndarray, noise: float, features: int) -> float:
    """Mean log-likelihood of the PPCA maximum, from the leading eigenvalues and sigma²."""
    q = len(values)
    return -0.5 * (
        features * np.log(2 * np.pi)
        + np.log(values).sum()
        + (features - q) * np.log(noise)
        + features
    )


def timed(function: Any, repeats: int) -> tuple[list[float], Any]:
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - started)
    return seconds, result


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


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
    parser.add_argument(
        "--zarr", help="write the data to this Zarr store and fit from it (out of core)"
    )
    parser.add_argument("--skip-peers", action="store_true", help="time dem only")
    args = parser.parse_args()
    n, d, q = args.rows, args.features, args.components
    common = {
        "benchmark": "ppca",
        "rows": n,
        "features": d,
        "components": q,
        "chunk_rows": args.chunk_rows,
    }
    blas = [
        {k: i.get(k) for k in ("internal_api", "num_threads", "architecture")}
        for i in threadpool_info()
    ]
    emit(
        {**common, "environment": {"cpus": os.cpu_count(), "blas": blas, "dask": dask.__version__}}
    )

    X = simulate(n, d, q, args.chunk_rows)
    X_missing = with_missing(X, args.missing)
    if args.zarr:
        da.to_zarr(X, args.zarr, component="complete", overwrite=True)
        da.to_zarr(X_missing, args.zarr, component="missing", overwrite=True)
        complete: Any = args.zarr
        missing: Any = args.zarr
        fit_kwargs: dict[str, Any] = {"persist": False}
        source = "zarr"
    else:
        complete = X.persist()
        missing = X_missing.persist()
        fit_kwargs = {}
        source = "memory"

    reference = None
    if not args.skip_peers:
        values = np.asarray(
            da.from_zarr(args.zarr, component="complete") if args.zarr else complete
        )
        seconds, reference = timed(lambda: PCA(q).fit(values), args.repeats)
        scale = (n - 1) / n  # scikit-learn's covariance divides by N - 1
        best = closed_form_loglik(
            reference.explained_variance_ * scale, reference.noise_variance_ * scale, d
        )
        emit(
            {
                **common,
                "impl": "sklearn.PCA",
                "data": "complete",
                "source": "memory",
                "seconds": statistics.median(seconds),
                "runs": seconds,
                "loglik": best,
                "subspace_sin": 0.0,
            }
        )
        del values

        lazy = da.from_zarr(args.zarr, component="complete") if args.zarr else complete

        def compressed() -> tuple[np.ndarray, np.ndarray]:
            centred = lazy - lazy.mean(axis=0)
            _, s, v = da.linalg.svd_compressed(centred, k=q, n_power_iter=2, seed=0)
            return dask.compute(s, v)

        seconds, (_, right) = timed(compressed, args.repeats)
        emit(
            {
                **common,
                "impl": "dask.svd_compressed",
                "data": "complete",
                "source": source,
                "seconds": statistics.median(seconds),
                "runs": seconds,
                "subspace_sin": subspace_sin(right, reference.components_),
            }
        )

    for label, data, variable in (
        ("complete", complete, "complete"),
        ("missing", missing, "missing"),
    ):

        def fit(data: Any = data, variable: str = variable) -> dem.PPCA:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", dem.ConvergenceWarning)
                return dem.PPCA(q, tol=args.tol, random_state=0, **fit_kwargs).fit(
                    data, variable=variable if args.zarr else None
                )

        seconds, model = timed(fit, args.repeats)
        record = {
            **common,
            "impl": "dem.PPCA",
            "data": label,
            "source": source,
            "missing": args.missing if label == "missing" else 0.0,
            "seconds": statistics.median(seconds),
            "runs": seconds,
            "n_iter": model.n_iter_,
            "converged": model.converged_,
            "seconds_per_iter": statistics.median(seconds) / max(model.n_iter_, 1),
            "loglik": model.lower_bound_,
        }
        if reference is not None:
            record["subspace_sin"] = subspace_sin(model.components_, reference.components_)
            if label == "complete":
                scale = (n - 1) / n
                best = closed_form_loglik(
                    reference.explained_variance_ * scale, reference.noise_variance_ * scale, d
                )
                record["loglik_gap"] = best - model.lower_bound_
        emit(record)


if __name__ == "__main__":
    main()
