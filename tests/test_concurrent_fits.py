"""Two fits at once on one cluster: two clients, two checkpoints, same and different data.

The cluster is real: a ``dask scheduler`` and two single-threaded ``dask worker``
processes on loopback, started by ``deploy/local/dask-local.sh``. Each fit is a client
of its own: a thread of this process (one connected by :func:`dem.cluster.connect`, the
other by a ``Client`` handed to :func:`dem.cluster.use_client`), or a ``dem fit``
process. A fit run while another one shares the workers must give the bits it gives
alone: the parameters and the log-likelihood of every iteration, compared exactly.
How much one fit slows the other is measured by ``benchmarks/concurrent_fits.py``, not here.
"""

from __future__ import annotations

import contextlib
import copy
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import distributed  # imported first: its defaults join dask's configuration before snapshots
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

import dem
from dem.cluster import connect, use_client
from dem.graph import current_client
from dem.restore import from_checkpoint
from dem.synth import Truth, write_store

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "local" / "dask-local.sh"
K, ROWS, CHUNK, ITERATIONS = 3, 16_000, 2_000, 6


def _environment() -> dict[str, str]:
    """This interpreter's bin first on PATH, this checkout first on PYTHONPATH, no DASK_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(autouse=True)
def dask_config_restored() -> Iterator[dict[str, Any]]:
    """Dask's configuration as it was before the test, put back after it whatever happens.

    The tests also assert that the fits left it unchanged (two clients made the default
    in two threads would leave its ``scheduler`` key behind).
    """
    before = copy.deepcopy(dask.config.config)
    yield before
    _restore(before)


def _restore(config: dict[str, Any]) -> None:
    if dask.config.config != config:
        dask.config.config.clear()
        dask.config.config.update(copy.deepcopy(config))


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a real scheduler with two single-threaded worker processes."""
    directory = tmp_path_factory.mktemp("cluster")
    command = [str(SCRIPT), "start", "--workers", "2", "--no-nanny", "--dir", str(directory)]
    subprocess.run(command, env=_environment(), check=True, timeout=180, capture_output=True)
    try:
        address = (directory / "scheduler.json").read_text()
        import json

        yield json.loads(address)["address"]
    finally:
        subprocess.run(
            [str(SCRIPT), "stop", "--dir", str(directory)],
            env=_environment(),
            check=True,
            timeout=60,
            capture_output=True,
        )


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Truth]]:
    """Two stores of different data ("a", "b"), 8 chunks each."""
    directory = tmp_path_factory.mktemp("data")
    made = {}
    for name, seed in (("a", 11), ("b", 12)):
        path = directory / f"{name}.zarr"
        truth = write_store(
            path,
            "gmm",
            n_samples=ROWS,
            n_features=3,
            seed=seed,
            chunk_rows=CHUNK,
            options={"n_components": K, "separation": 3.0},
        )
        made[name] = (path, truth)
    return made


def _estimator(checkpoint: Path) -> dem.GaussianMixture:
    # tol=0: every fit runs all its iterations, so two started together overlap in time.
    return dem.GaussianMixture(
        K,
        covariance_type="full",
        max_iter=ITERATIONS,
        tol=0.0,
        random_state=0,
        checkpoint=checkpoint,
        persist=False,
    )


def _fit(address: str, store: Path, checkpoint: Path, *, own: bool = False) -> tuple[float, float]:
    """Fit ``store`` on the scheduler with a client of its own; (start, end) in seconds.

    The client is the one :func:`dem.cluster.connect` opens (as ``dem fit`` does), or
    with ``own`` one made by the caller and handed to :func:`dem.cluster.use_client`.
    """
    with contextlib.ExitStack() as stack:
        if own:
            client = stack.enter_context(distributed.Client(address, set_as_default=False))
            stack.enter_context(use_client(client))
        else:
            client = stack.enter_context(connect(address)).client
        assert current_client() is client
        started = time.monotonic()
        _estimator(checkpoint).fit(store, variable="X")
        return started, time.monotonic()


def _fit_together(address: str, jobs: list[tuple[Path, Path]]) -> list[tuple[float, float]]:
    """Run the fits of ``jobs`` (store, checkpoint) in threads started together."""
    barrier = threading.Barrier(len(jobs))
    spans: list[tuple[float, float] | None] = [None] * len(jobs)
    failures: list[BaseException] = []

    def run(i: int, store: Path, checkpoint: Path) -> None:
        try:
            barrier.wait(timeout=60)
            spans[i] = _fit(address, store, checkpoint, own=i == 1)
        except BaseException as exc:  # re-raised in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i, *job)) for i, job in enumerate(jobs)]
    # Each fit stops at max_iter (tol=0) with a ConvergenceWarning. Python's warning
    # filters are process-wide (before 3.14), so they are set here, around both threads;
    # and a `catch_warnings` block in one thread (dem's checkpoint reader has some) may
    # swallow the other's warning, so only "nothing but ConvergenceWarning" is asserted.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    if failures:
        raise failures[0]
    assert {w.category for w in caught} <= {dem.ConvergenceWarning}, [str(w) for w in caught]
    assert all(span is not None for span in spans)
    return [span for span in spans if span is not None]


def _assert_overlap(spans: list[tuple[float, float]]) -> None:
    (start_1, end_1), (start_2, end_2) = spans
    assert max(start_1, start_2) < min(end_1, end_2), "the two fits did not run at the same time"


def _restored(checkpoint: Path) -> Any:
    """The estimator in ``checkpoint`` (a fit stopped at max_iter, which it says)."""
    with pytest.warns(UserWarning, match="without converging"):
        return from_checkpoint(checkpoint)


def _assert_same_bits(checkpoint: Path, reference: Path) -> None:
    fitted, alone = _restored(checkpoint), _restored(reference)
    assert fitted.n_iter_ == alone.n_iter_ == ITERATIONS
    assert fitted.lower_bounds_ == alone.lower_bounds_
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(fitted, name), getattr(alone, name), err_msg=name)


@pytest.fixture(scope="module")
def alone(
    scheduler: str, stores: dict[str, tuple[Path, Truth]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Each store fitted on its own, one after the other: the checkpoints to compare with."""
    directory = tmp_path_factory.mktemp("alone")
    before = copy.deepcopy(dask.config.config)
    made = {}
    for name, (store, truth) in stores.items():
        made[name] = directory / f"{name}.zarr"
        with pytest.warns(dem.ConvergenceWarning):
            _fit(scheduler, store, made[name])
        # Independently of the comparisons: the fit found the generating means.
        means = _restored(made[name]).means_
        distance = np.linalg.norm(truth["means"][:, None] - means[None], axis=2)
        rows, cols = linear_sum_assignment(distance)
        assert distance[rows, cols].max() < 0.2
    _restore(before)
    return made


@pytest.mark.parametrize("data", ["same", "different"])
def test_two_clients_in_two_threads_give_the_bits_of_each_alone(
    scheduler: str,
    stores: dict[str, tuple[Path, Truth]],
    alone: dict[str, Path],
    data: str,
    tmp_path: Path,
    dask_config_restored: dict[str, Any],
) -> None:
    names = ("a", "a") if data == "same" else ("a", "b")
    checkpoints = [tmp_path / f"{i}-{name}.zarr" for i, name in enumerate(names)]
    spans = _fit_together(
        scheduler, [(stores[name][0], ckpt) for name, ckpt in zip(names, checkpoints, strict=True)]
    )
    _assert_overlap(spans)
    for name, checkpoint in zip(names, checkpoints, strict=True):
        _assert_same_bits(checkpoint, alone[name])
    # Neither client was left behind as the default, nor in dask's configuration.
    assert dask.config.config == dask_config_restored
    assert current_client() is None


def test_two_dem_fit_processes_give_the_bits_of_each_alone(
    scheduler: str, stores: dict[str, tuple[Path, Truth]], alone: dict[str, Path], tmp_path: Path
) -> None:
    """The deployment's case: two ``dem fit`` commands sent to one long-lived cluster."""
    commands, checkpoints = [], []
    for name in ("a", "b"):
        checkpoints.append(tmp_path / f"cli-{name}.zarr")
        commands.append(
            [
                sys.executable,
                "-m",
                "dem.cli",
                "fit",
                "gmm",
                str(stores[name][0]),
                "--var",
                "X",
                "-k",
                str(K),
                "--covariance-type",
                "full",
                "--max-iter",
                str(ITERATIONS),
                "--tol",
                "0",
                "--seed",
                "0",
                "--persist",
                "no",
                "--checkpoint",
                str(checkpoints[-1]),
                "--scheduler",
                scheduler,
            ]
        )
    processes = [
        subprocess.Popen(
            command,
            env=_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for command in commands
    ]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output
    for name, checkpoint in zip(("a", "b"), checkpoints, strict=True):
        _assert_same_bits(checkpoint, alone[name])
