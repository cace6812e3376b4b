"""Faults on real processes: a `dask scheduler` and nanny-supervised `dask worker`s started
by deploy/local/dask-local.sh on loopback, and `dem fit` as a subprocess.

* SIGKILL a worker at several moments of an iteration: the fit completes bit-identical
  to an undisturbed one (the reduction tree has a fixed shape);
* SIGKILL the `dem fit` client after k checkpoints: `--resume` starts at k+1, ends
  bit-identical, and the scheduler drops everything the dead client held;
* kill the scheduler: the client fails within a bounded time and says how to resume;
* many iterations: the scheduler's task count returns to its baseline after every
  iteration, and worker memory stays flat.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import dem
from dem.synth import write_store

distributed = pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "local" / "dask-local.sh"
K, MAX_ITER = 3, 10
FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_")


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def dask_local(*args: str) -> None:
    subprocess.run(
        [str(SCRIPT), *args], env=environment(), check=True, timeout=180, capture_output=True
    )


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cluster")
    dask_local("start", "--workers", "2", "--dir", str(directory))
    yield directory
    dask_local("stop", "--dir", str(directory))


@pytest.fixture(scope="module")
def client(cluster_dir):
    with distributed.Client(scheduler_file=str(cluster_dir / "scheduler.json")) as connected:
        yield connected


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "blobs.zarr"
    write_store(
        path,
        "gmm",
        n_samples=12_000,
        n_features=3,
        seed=5,
        chunk_rows=1_000,
        options={"n_components": K, "separation": 2.0},
    )
    return path


def mixture(**options) -> dem.GaussianMixture:
    defaults = {"max_iter": MAX_ITER, "tol": 0.0, "random_state": 0}
    defaults["init_params"] = "random_from_data"
    return dem.GaussianMixture(K, **{**defaults, **options})


def quiet_fit(estimator, store):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        return estimator.fit(store, variable="X")


def assert_same_bits(a, b):
    for name in FITTED:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.lower_bounds_ == b.lower_bounds_


@pytest.fixture(scope="module")
def undisturbed(client, store):
    return quiet_fit(mixture(persist=False), store)


# --- 1. a worker killed mid-iteration -------------------------------------------------------


@pytest.mark.parametrize("delays", [(0.0, 0.15, 0.4), (0.05, 0.3, 0.1)])
def test_worker_killed_mid_iteration_changes_no_bit(client, store, undisturbed, delays):
    client.wait_for_workers(2, timeout=120)
    kills: list[tuple[int, float]] = []
    schedule = dict(zip((2, 5, 8), delays, strict=True))

    def kill_later(info):
        if info.iteration not in schedule:
            return
        client.wait_for_workers(2, timeout=120)  # the nanny has restarted the last victim
        victim = sorted(client.run(os.getpid).values())[info.iteration % 2]

        def kill():
            time.sleep(schedule[info.iteration])
            os.kill(victim, signal.SIGKILL)
            kills.append((info.iteration, schedule[info.iteration]))

        threading.Thread(target=kill, daemon=True).start()

    disturbed = quiet_fit(mixture(persist=False, callback=kill_later), store)
    assert len(kills) == 3  # each within the iteration after the one reported
    assert_same_bits(disturbed, undisturbed)


# --- 2. the client killed after k checkpoints ----------------------------------------------


def fit_command(store: Path, checkpoint: Path, scheduler_file: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dem.cli",
        "fit",
        "gmm",
        str(store),
        "--var",
        "X",
        "-k",
        str(K),
        "--tol",
        "0",
        "--max-iter",
        str(MAX_ITER),
        "--init-params",
        "random_from_data",
        "--persist",
        "no",
        "--checkpoint",
        str(checkpoint),
        "--scheduler-file",
        str(scheduler_file),
        *extra,
    ]


def run_until(command: list[str], run: int, iteration: int) -> tuple[subprocess.Popen, str]:
    """Start ``command``; return once it printed the line of (run, iteration)."""
    process = subprocess.Popen(
        command, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if line.split()[:2] == [str(run), str(iteration)]:
            return process, "".join(lines)
    process.wait()
    raise AssertionError("".join(lines))


def scheduler_state(client) -> dict[str, int]:
    def count(dask_scheduler):
        return {"tasks": len(dask_scheduler.tasks), "clients": len(dask_scheduler.clients)}

    return client.run_on_scheduler(count)


def test_client_killed_after_k_checkpoints_resumes_at_k_plus_1(
    client, cluster_dir, store, undisturbed, tmp_path
):
    baseline = scheduler_state(client)
    checkpoint = tmp_path / "fit.zarr"
    command = fit_command(store, checkpoint, cluster_dir / "scheduler.json")
    k = 4
    process, _ = run_until(command, 0, k)
    process.kill()
    process.wait()
    # the scheduler forgets the dead client and its tasks
    deadline = time.monotonic() + 60
    while scheduler_state(client) != baseline and time.monotonic() < deadline:
        time.sleep(0.5)
    assert scheduler_state(client) == baseline
    assert dem.load_checkpoint(checkpoint).attrs["last_iteration"] >= k
    written = dem.load_checkpoint(checkpoint).attrs["last_iteration"]

    resumed = subprocess.run(
        [*command, "--resume"], env=environment(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"iteration {written}." in resumed.stdout
    assert "stale lock" in resumed.stdout  # the dead client's lock, taken over
    iterations = [
        int(words[1])
        for words in map(str.split, resumed.stdout.splitlines())
        if len(words) > 2 and words[0] == "0" and words[1].isdigit()
    ]
    assert iterations[0] == written + 1 and iterations[-1] == MAX_ITER
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        restored = dem.from_checkpoint(checkpoint)
    assert_same_bits(restored, undisturbed)


# --- 3. the scheduler killed ------------------------------------------------------------------


def test_scheduler_killed_fails_fast_with_resume_advice(store, tmp_path):
    directory = tmp_path / "doomed"
    dask_local("start", "--workers", "1", "--no-nanny", "--dir", str(directory))
    try:
        checkpoint = tmp_path / "fit.zarr"
        command = fit_command(store, checkpoint, directory / "scheduler.json")
        process, head = run_until(command, 0, 2)
        os.kill(int((directory / "pids" / "scheduler.pid").read_text()), signal.SIGKILL)
        killed = time.monotonic()
        rest, _ = process.communicate(timeout=180)
        waited = time.monotonic() - killed
    finally:
        dask_local("stop", "--dir", str(directory))
    output = head + rest
    print(json.dumps({"scheduler_killed_client_exit_s": round(waited, 1)}))
    assert process.returncode != 0
    assert waited < 120, output
    assert "--resume" in output, output
    assert dem.load_checkpoint(checkpoint).attrs["last_iteration"] >= 2


# --- 8. stability over many iterations ----------------------------------------------------------


def settled_tasks(client, target: int, seconds: float = 10.0) -> int:
    """The scheduler's task count once it falls to ``target`` (or after ``seconds``)."""
    deadline = time.monotonic() + seconds
    count = scheduler_state(client)["tasks"]
    while count > target and time.monotonic() < deadline:
        time.sleep(0.05)
        count = scheduler_state(client)["tasks"]
    return count


def test_task_count_and_memory_stay_flat(client, store):
    client.wait_for_workers(2, timeout=120)
    baseline = scheduler_state(client)["tasks"]
    # the 12 persisted input chunks plus the input array's one source key: the only keys
    # meant to outlive an iteration
    kept = 12 + 1
    counts, memory = [], {}

    def rss():
        import psutil

        return psutil.Process().memory_info().rss

    def watch(info):
        counts.append(settled_tasks(client, baseline + kept))
        if info.iteration in (5, 30):
            memory[info.iteration] = sum(client.run(rss).values())

    quiet_fit(mixture(max_iter=30, persist=True, callback=watch), store)
    after = settled_tasks(client, baseline)
    print(json.dumps({"tasks": [baseline, *counts, after], "worker_rss": memory}))
    assert counts == [baseline + kept] * 30 and after == baseline
    assert memory[30] <= 1.10 * memory[5]
