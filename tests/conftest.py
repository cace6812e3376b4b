"""Shared fixtures: generated data, a real process-based cluster, a compute counter."""

from __future__ import annotations

import numpy as np
import pytest

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def make_blobs(n_per: int = 1500, seed: int = 0, d: int = 3, offset: float = 0.0) -> np.ndarray:
    """Three overlapping-but-distinct anisotropic Gaussian clusters."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [3.0, 3.0, 0.0], [-3.0, 1.5, 2.5]])[:, :d]
    parts = []
    for k, centre in enumerate(centres):
        mixing = np.eye(d) + 0.3 * rng.standard_normal((d, d))
        parts.append(rng.standard_normal((n_per * (k + 1), d)) @ mixing + centre)
    x = np.vstack(parts) + offset
    return x[rng.permutation(len(x))]


def initial_parameters(
    x: np.ndarray, n_components: int, covariance_type: str, seed: int = 1
) -> dict[str, np.ndarray]:
    """Valid, deliberately rough starting parameters for any covariance type."""
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    weights = rng.dirichlet(np.full(n_components, 5.0))
    means = x[rng.choice(len(x), n_components, replace=False)]
    scale = np.var(x, axis=0)
    if covariance_type == "full":
        precisions = np.stack(
            [np.diag(1.0 / (scale * rng.uniform(0.5, 2.0, d))) for _ in range(n_components)]
        )
    elif covariance_type == "tied":
        precisions = np.diag(1.0 / scale)
    elif covariance_type == "diag":
        precisions = 1.0 / (scale * rng.uniform(0.5, 2.0, (n_components, d)))
    else:
        precisions = 1.0 / (scale.mean() * rng.uniform(0.5, 2.0, n_components))
    return {"weights_init": weights, "means_init": means, "precisions_init": precisions}


@pytest.fixture(scope="session")
def blobs() -> np.ndarray:
    return make_blobs()


@pytest.fixture(scope="module")
def process_client():
    """A real LocalCluster with two worker processes (one thread each)."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 with one bucket (see tests/s3server.py)."""
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    from s3server import moto_s3_server

    with moto_s3_server() as server:
        yield server
