"""Faults on real processes: a `dask scheduler` and nanny-supervised `dask worker`s started
by deploy/local/dask-local.sh on loopback, and `dem fit` as a subprocess where the client
itself is the victim.

* SIGKILL a worker at six moments of the iterations of one fit: it completes
  bit-identical to an undisturbed fit (the reduction tree has a fixed shape);
* SIGKILL the `dem fit` client after k checkpoints: `dem fit --resume` starts at k+1,
  ends bit-identical, and the scheduler drops everything the dead client held;
* kill the scheduler: the client fails within a bounded time and prints the command
  that resumes; that command, pointed at another scheduler, ends bit-identical;
* 100 iterations: the scheduler's task count returns to its baseline after every
  iteration, and worker memory after 100 iterations is within 10% of after 5.

One cluster serves the module (its start and each worker restart cost seconds); only
the scheduler-kill test starts a second, one-worker cluster, to kill its scheduler.
The resumed fits run `dem fit` in this process (typer's CliRunner): the same code as
the command, without another interpreter's start-up.
"""

from __future__ import annotations

import gc
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import dem
from dem.cli import app
from dem.synth import write_store

distributed = pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "local" / "dask-local.sh"
K, MAX_ITER = 3, 10
FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_")
KILLS = {1: 0.0, 2: 0.05, 3: 0.15, 4: 0.3, 5: 0.4, 6: 0.1}  # iteration -> delay (s)
LONG_RUN = 100  # iterations of the memory test


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


def synthetic(path: Path, n_samples: int, chunk_rows: int) -> Path:
    options = {"n_components": K, "separation": 2.0}
    write_store(
        path, "gmm", n_samples=n_samples, n_features=3, seed=5, chunk_rows=chunk_rows,
        options=options,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return synthetic(tmp_path_factory.mktemp("data") / "blobs.zarr", 12_000, 1_000)


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


def restored(checkpoint: Path) -> dem.GaussianMixture:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return dem.from_checkpoint(checkpoint)


# --- 1. a worker killed mid-iteration -------------------------------------------------------


def alive_workers(client, seconds: float = 120.0) -> list[int]:
    """Process ids of the workers that answer (waiting for one, if none does)."""
    deadline = time.monotonic() + seconds
    while True:
        answers = client.run(os.getpid, on_error="return").values()
        pids = sorted(pid for pid in answers if isinstance(pid, int))
        if pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.1)


def test_worker_killed_mid_iteration_changes_no_bit(client, store, undisturbed):
    """Six kills, alternating between the workers, each at its own delay after an
    iteration ended. The fit does not wait for the nanny to restart a victim: a kill may
    leave no worker at all until one is back."""
    client.wait_for_workers(2, timeout=120)
    kills: list[tuple[int, float, int]] = []
    killer: list[threading.Thread] = []

    def kill_later(info):
        if info.iteration not in KILLS:
            return
        for previous in killer:  # at most one kill in flight
            previous.join()
        pids = alive_workers(client)
        victim = pids[info.iteration % len(pids)]

        def kill():
            time.sleep(KILLS[info.iteration])
            os.kill(victim, signal.SIGKILL)
            kills.append((info.iteration, KILLS[info.iteration], len(pids)))

        killer.append(threading.Thread(target=kill, daemon=True))
        killer[-1].start()

    started = time.monotonic()
    disturbed = quiet_fit(mixture(persist=False, callback=kill_later), store)
    for thread in killer:
        thread.join()
    seconds = time.monotonic() - started
    print(json.dumps({"worker_kills": kills, "disturbed_fit_s": round(seconds, 1)}))
    assert [k[0] for k in kills] == list(KILLS)
    assert_same_bits(disturbed, undisturbed)


# --- 2. the client killed after k checkpoints ----------------------------------------------


def fit_arguments(store: Path, checkpoint: Path, scheduler_file: Path, *extra: str) -> list[str]:
    return [
        "fit", "gmm", str(store), "--var", "X", "-k", str(K), "--tol", "0",
        "--max-iter", str(MAX_ITER), "--init-params", "random_from_data", "--persist", "no",
        "--checkpoint", str(checkpoint), "--scheduler-file", str(scheduler_file), *extra,
    ]  # fmt: skip


def run_until(arguments: list[str], run: int, iteration: int) -> tuple[subprocess.Popen, str]:
    """Start `dem` with ``arguments`` as a subprocess; return once it printed the line
    of (run, iteration)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "dem.cli", *arguments],
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if line.split()[:2] == [str(run), str(iteration)]:
            return process, "".join(lines)
    process.wait()
    raise AssertionError("".join(lines))


def dem_here(arguments: list[str]) -> str:
    """Run `dem` in this process; its output (it must succeed)."""
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def reported_iterations(output: str) -> list[int]:
    return [
        int(words[1])
        for words in map(str.split, output.splitlines())
        if len(words) > 2 and words[0] == "0" and words[1].isdigit()
    ]


def scheduler_state(client) -> dict[str, int]:
    def count(dask_scheduler):
        return {"tasks": len(dask_scheduler.tasks), "clients": len(dask_scheduler.clients)}

    return client.run_on_scheduler(count)


def settled_tasks(client, target: int, seconds: float = 10.0) -> int:
    """The scheduler's task count once it falls to ``target`` (or after ``seconds``)."""
    deadline = time.monotonic() + seconds
    count = scheduler_state(client)["tasks"]
    while count > target and time.monotonic() < deadline:
        time.sleep(0.02)
        count = scheduler_state(client)["tasks"]
    return count


def settled_state(client) -> dict[str, int]:
    """The scheduler's state once the keys of earlier tests' fits are released: a baseline
    taken before that would count keys about to go."""
    settled_tasks(client, 0, seconds=60.0)
    return scheduler_state(client)


def test_client_killed_after_k_checkpoints_resumes_at_k_plus_1(
    client, cluster_dir, store, undisturbed, tmp_path
):
    baseline = settled_state(client)
    checkpoint = tmp_path / "fit.zarr"
    arguments = fit_arguments(store, checkpoint, cluster_dir / "scheduler.json")
    k = 4
    process, _ = run_until(arguments, 0, k)
    process.kill()
    process.wait()
    # the scheduler forgets the dead client and its tasks
    deadline = time.monotonic() + 60
    while scheduler_state(client) != baseline and time.monotonic() < deadline:
        time.sleep(0.5)
    assert scheduler_state(client) == baseline
    written = dem.load_checkpoint(checkpoint).attrs["last_iteration"]
    assert written >= k

    output = dem_here([*arguments, "--resume"])
    assert f"iteration {written}." in output
    assert "stale lock" in output  # the dead client's lock, taken over
    iterations = reported_iterations(output)
    assert iterations[0] == written + 1 and iterations[-1] == MAX_ITER
    assert_same_bits(restored(checkpoint), undisturbed)


# --- 3. the scheduler killed ------------------------------------------------------------------


def test_scheduler_killed_fails_fast_and_resumes_on_another_scheduler(
    cluster_dir, store, undisturbed, tmp_path
):
    directory = tmp_path / "doomed"
    dask_local("start", "--workers", "1", "--no-nanny", "--dir", str(directory))
    try:
        checkpoint = tmp_path / "fit.zarr"
        arguments = fit_arguments(store, checkpoint, directory / "scheduler.json")
        process, head = run_until(arguments, 0, 2)
        os.kill(int((directory / "pids" / "scheduler.pid").read_text()), signal.SIGKILL)
        killed = time.monotonic()
        rest, _ = process.communicate(timeout=180)
        waited = time.monotonic() - killed
    finally:
        dask_local("stop", "--dir", str(directory))
    output = head + rest
    print(json.dumps({"scheduler_killed_client_exit_s": round(waited, 1)}))
    assert process.returncode == 5, output  # ExitCode.SCHEDULER
    assert waited < 120, output
    written = dem.load_checkpoint(checkpoint).attrs["last_iteration"]
    assert written >= 2

    # the printed command, pointed at the module's (running) scheduler instead
    command = next(line for line in output.splitlines() if line.startswith("dem fit"))
    words = shlex.split(command)[1:]
    assert "--resume" in words
    words[words.index("--scheduler-file") + 1] = str(cluster_dir / "scheduler.json")
    resumed = dem_here(words)
    assert reported_iterations(resumed)[0] == written + 1
    assert_same_bits(restored(checkpoint), undisturbed)


# --- 8. stability over many iterations ----------------------------------------------------------


def test_task_count_and_memory_stay_flat(client, tmp_path):
    """Tiny data (4 chunks), 100 iterations: what grows per iteration would show."""
    store = synthetic(tmp_path / "tiny.zarr", 2_000, 500)
    client.wait_for_workers(2, timeout=120)
    baseline = settled_state(client)["tasks"]
    # the 4 persisted input chunks plus the input array's one source key: the only keys
    # meant to outlive an iteration
    kept = 4 + 1
    counts, memory = [], {}

    def worker_rss() -> int:  # defined here, so that it travels by value
        import psutil

        gc.collect()
        return psutil.Process().memory_info().rss

    def watch(info):
        counts.append(settled_tasks(client, baseline + kept))
        if info.iteration in (5, LONG_RUN):
            memory[info.iteration] = sum(client.run(worker_rss).values())

    quiet_fit(mixture(max_iter=LONG_RUN, persist=True, callback=watch), store)
    after = settled_tasks(client, baseline)
    print(json.dumps({"tasks": sorted(set(counts)), "baseline": baseline, "worker_rss": memory}))
    assert counts == [baseline + kept] * LONG_RUN and after == baseline
    assert abs(memory[LONG_RUN] - memory[5]) <= 0.10 * memory[5]
