"""The engine on real distributed clusters with worker processes."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster

import dem
from tests.conftest import initial_parameters
from tests.test_engine import write_store

FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_")


def fit_on(data, n_workers=None, variable=None, **options):
    from tests.conftest import make_blobs

    init = initial_parameters(make_blobs(), 3, "full")
    estimator = dem.GaussianMixture(3, max_iter=8, tol=0, **init, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        if n_workers is None:
            return estimator.fit(data, variable=variable)
        with (
            LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster),
        ):
            return estimator.fit(data)


def test_same_bits_on_one_worker_three_workers_and_threads(blobs):
    data = da.from_array(blobs, chunks=400)
    fits = [fit_on(data), fit_on(data, n_workers=1), fit_on(data, n_workers=3)]
    for other in fits[1:]:
        for name in FITTED:
            assert np.array_equal(getattr(other, name), getattr(fits[0], name)), name
        assert other.lower_bounds_ == fits[0].lower_bounds_


def scheduler_tasks(client) -> int:
    return client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))


def settled_task_count(client, timeout=10.0) -> int:
    """The scheduler's task count once released results have gone (they go asynchronously)."""
    import gc
    import time

    gc.collect()
    deadline = time.monotonic() + timeout
    count = scheduler_tasks(client)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        latest = scheduler_tasks(client)
        if latest == count:
            return count
        count = latest
    return count


def test_fit_uses_the_current_client_and_persists_small_data(process_client, blobs):
    n_chunks = -(-len(blobs) // 1000)
    counts = []
    fit_on(
        da.from_array(blobs, chunks=1000),
        callback=lambda info: counts.append(settled_task_count(process_client)),
    )
    assert counts == [n_chunks] * len(counts)  # only the data chunks stay between iterations
    assert settled_task_count(process_client) == 0  # and they are released after the fit


def test_out_of_core_holds_nothing_between_iterations(process_client, tmp_path, blobs):
    store = write_store(tmp_path / "data.zarr", blobs)
    counts = []
    from_store = fit_on(
        store,
        variable="X",
        persist=False,
        callback=lambda info: counts.append(settled_task_count(process_client)),
    )
    assert counts == [0] * len(counts)
    in_memory = fit_on(da.from_array(blobs, chunks=1000))
    for name in FITTED:
        assert np.array_equal(getattr(from_store, name), getattr(in_memory, name))


def test_invalid_values_are_reported_from_the_workers(process_client, blobs):
    bad = blobs.copy()
    bad[4321] = np.inf
    with pytest.raises(ValueError, match="rows 4321 and 4321"):
        fit_on(da.from_array(bad, chunks=1000))
