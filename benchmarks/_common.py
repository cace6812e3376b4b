"""Helpers the benchmark scripts share: JSON lines, medians, the machine, a cluster, data.

Each benchmark prints one JSON object per line: ``{"benchmark": ..., "what": ...}``
followed by the figures. Timings are medians of several repetitions measured in the
same run as the peer they are compared with.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))


def emit(benchmark: str, what: str, **fields: Any) -> dict[str, Any]:
    """Print one JSON line (floats rounded to 4 significant digits) and return it."""
    line = {"benchmark": benchmark, "what": what, **{k: _rounded(v) for k, v in fields.items()}}
    print(json.dumps(line), flush=True)
    return line


def _rounded(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(f"{float(value):.4g}")
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    """Wall-clock seconds of one call, and its result."""
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def machine() -> dict[str, Any]:
    """Load, cores and BLAS as this run saw them (timings move with the load)."""
    from threadpoolctl import threadpool_info

    blas = [
        {
            "library": i.get("internal_api"),
            "kernel": i.get("architecture"),
            "threads": i.get("num_threads"),
        }
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    return {
        "cpus": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "blas": blas,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
    }


def gemm_rate(dtype: Any, size: int = 2000, repeats: int = 5) -> float:
    """Median GFLOP/s of a square matrix product with every BLAS thread of this process."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    a @ a  # warm up
    seconds = [timed(lambda: a @ a)[0] for _ in range(repeats)]
    return 2.0 * size**3 / median(seconds) / 1e9


@contextlib.contextmanager
def local_cluster(n_workers: int = 2, memory_limit: str | int | None = None) -> Iterator[Any]:
    """A LocalCluster of one-thread worker processes and its client (the default client)."""
    from distributed import Client, LocalCluster

    kwargs: dict[str, Any] = {} if memory_limit is None else {"memory_limit": memory_limit}
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            worker_dashboard_address=None,
            **kwargs,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def scattered(client: Any, x: np.ndarray, chunk_rows: int) -> Any:
    """``x`` as a dask array whose chunks already sit in the workers' memory."""
    import dask
    import dask.array as da

    pieces = [x[start : start + chunk_rows] for start in range(0, len(x), chunk_rows)]
    futures = client.scatter(pieces)
    blocks = [
        da.from_delayed(dask.delayed(future), shape=piece.shape, dtype=piece.dtype)
        for future, piece in zip(futures, pieces, strict=True)
    ]
    return da.concatenate(blocks)


def mixture(
    n_features: int, n_components: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights, means and covariance square roots of a random, overlapping Gaussian mixture.

    Each component is a random rotation of independent axes whose standard deviations
    are log-uniform in [0.3, 3] (covariance condition numbers up to 100).
    """
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(n_components, 4.0))
    means = rng.normal(0.0, 3.0, (n_components, n_features))
    rotations = np.linalg.qr(rng.standard_normal((n_components, n_features, n_features)))[0]
    scales = np.exp(rng.uniform(np.log(0.3), np.log(3.0), (n_components, 1, n_features)))
    return weights, means, rotations * scales


def mixture_rows(
    n_rows: int,
    n_features: int,
    n_components: int,
    seed: int,
    dtype: Any = np.float64,
    mixture_seed: int = 0,
) -> np.ndarray:
    """``n_rows`` draws from the mixture ``mixture(..., mixture_seed)``, rows seeded by ``seed``."""
    weights, means, roots = mixture(n_features, n_components, mixture_seed)
    rng = np.random.default_rng(seed)
    labels = rng.choice(n_components, size=n_rows, p=weights)
    x = rng.standard_normal((n_rows, n_features))
    out = np.empty((n_rows, n_features), dtype=dtype)
    for k in range(n_components):
        rows = labels == k
        out[rows] = x[rows] @ roots[k] + means[k]
    return out


def initial_parameters(
    sample: np.ndarray, n_components: int, covariance_type: str, seed: int
) -> dict[str, np.ndarray]:
    """weights_init, means_init and precisions_init from k-means on ``sample``."""
    from dem.models import gaussian
    from dem.models.mixture.init import initial_params
    from dem.models.mixture.model import MixtureModel

    model = MixtureModel(n_components, covariance_type)
    params = initial_params(model, sample.astype(np.float64), np.random.default_rng(seed), "kmeans")
    precisions = gaussian.precisions_from_cholesky(params["precisions_cholesky"], covariance_type)
    return {
        "weights_init": params["weights"],
        "means_init": params["means"],
        "precisions_init": precisions,
    }


def parse_sizes(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]
