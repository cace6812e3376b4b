"""A new user's first hour with ``dem``, run as a user would (subprocesses, real signals).

The exit-code table (usage 2, input data 3, checkpoint 4, scheduler 5, interrupted 130)
is checked case by case, usage errors before any cluster starts; ``--var`` is found when
the store has one array of the data's dimensions; the stores dem writes open in xarray
without its consolidated-metadata warning (pytest turns warnings into errors); Ctrl-C
during start-up stops at once and a second Ctrl-C during the iterations exits 130 with
no traceback, each printing a resume command with absolute paths that works.
"""

from __future__ import annotations

import http.server
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import dem
from dem.cli import ExitCode
from dem.cli.console import Reporter, make_console
from dem.cluster import dashboard_answers
from dem.models.mixture import GaussianMixture
from dem.synth import write_store

REPO = Path(__file__).resolve().parents[1]
#: Seconds a command that fails on its options may take: the interpreter's start-up and
#: imports (about 2 s on an idle machine, far more on a loaded one); that no cluster
#: started is checked by its absent "Running on" line.
USAGE_SECONDS = 30.0


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_dem(*args: str | os.PathLike[str], cwd: Path | None = None) -> tuple[int, str, str, float]:
    """``python -m dem.cli ARGS``: exit status, stdout, stderr and seconds taken."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "dem.cli", *map(os.fspath, args)],
        env=environment(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return done.returncode, done.stdout, done.stderr, time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small synthetic store, a checkpoint fitted to it, an existing output, a store
    with two candidate data arrays, and a store that is not a checkpoint."""
    root = tmp_path_factory.mktemp("first-hour")
    store = root / "data.zarr"
    write_store(store, "gmm", n_samples=3000, n_features=3, seed=0, chunk_rows=1000)
    checkpoint = root / "fit.zarr"
    GaussianMixture(3, max_iter=100, checkpoint=os.fspath(checkpoint)).fit(
        os.fspath(store), variable="X"
    )
    two = root / "two.zarr"
    group = zarr.open_group(two, mode="w")
    for name in ("A", "B"):
        group.create_array(name, data=np.zeros((10, 2)), chunks=(5, 2))
    existing = root / "existing.zarr"
    zarr.open_group(existing, mode="w")
    return {
        "root": root,
        "store": store,
        "checkpoint": checkpoint,
        "two": two,
        "existing": existing,
    }


CASES = {
    # name: (arguments, expected exit status, text the message must hold)
    "bad option value (-k 0)": (
        ["fit", "gmm", "{store}", "-k", "0"],
        ExitCode.USAGE,
        "--n-components",
    ),
    "bad tol": (["fit", "gmm", "{store}", "--tol", "-1"], ExitCode.USAGE, "tol"),
    "--var ambiguous": (["fit", "gmm", "{two}"], ExitCode.USAGE, "A, B"),
    "missing input store": (["fit", "gmm", "{root}/nothing.zarr"], ExitCode.DATA, "does not exist"),
    "missing variable": (["fit", "gmm", "{store}", "--var", "Y"], ExitCode.DATA, "no variable"),
    "checkpoint exists without --resume": (
        ["fit", "gmm", "{store}", "--checkpoint", "{checkpoint}"],
        ExitCode.CHECKPOINT,
        "--resume",
    ),
    "show a missing checkpoint": (["show", "{root}/none.zarr"], ExitCode.USAGE, "does not exist"),
    "show a data store": (["show", "{store}"], ExitCode.CHECKPOINT, "not a dem checkpoint"),
    "predict from a missing checkpoint": (
        ["predict", "{root}/none.zarr", "{store}", "--out", "{root}/out.zarr"],
        ExitCode.USAGE,
        "does not exist",
    ),
    "predict to an existing --out": (
        ["predict", "{checkpoint}", "{store}", "--out", "{existing}"],
        ExitCode.USAGE,
        "--overwrite",
    ),
    "synth over an existing store": (
        ["synth", "gmm", "{existing}", "-n", "10", "-d", "2"],
        ExitCode.USAGE,
        "--overwrite",
    ),
    "scheduler refuses the connection": (
        ["fit", "gmm", "{store}", "--checkpoint", "{root}/never.zarr", "--scheduler", "{refused}"],
        ExitCode.SCHEDULER,
        "refused",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_exit_code_table(files: dict[str, Path], case: str) -> None:
    arguments, expected, text = CASES[case]
    values = {k: os.fspath(v) for k, v in files.items()}
    values["refused"] = f"tcp://127.0.0.1:{free_port()}"
    code, out, err, seconds = run_dem(*(a.format(**values) for a in arguments))
    output = " ".join((out + err).split())
    assert code == expected, output
    assert text in output, output
    assert "Traceback" not in output
    assert "Running on" not in output  # every one of these fails before any cluster starts
    assert seconds < USAGE_SECONDS + (5 if expected == ExitCode.SCHEDULER else 0), seconds


def test_version() -> None:
    code, out, _, _ = run_dem("--version")
    assert code == 0 and out.strip() == f"dem {dem.__version__}"


def test_reporter_tracks_convergence() -> None:
    reporter = Reporter(make_console(), max_iter=100, n_init=1, interrupts=None, tol=1e-3)
    assert reporter.convergence(float("nan")) == 0.0
    assert reporter.convergence(1e-1) == 0.0  # the first change sets the scale
    assert reporter.convergence(1e-2) == pytest.approx(0.5)  # halfway on a log scale
    assert reporter.convergence(5e-4) == 1.0


@pytest.fixture
def page_server() -> Iterator[tuple[int, dict[str, bytes]]]:
    """An HTTP server on loopback answering ``/status`` with ``pages['status']``."""
    pages: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path.strip("/"))
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], pages
    server.shutdown()
    server.server_close()


def test_dashboard_link_only_when_it_serves(page_server: tuple[int, dict[str, bytes]]) -> None:
    port, pages = page_server
    link = f"http://127.0.0.1:{port}/status"
    pages["status"] = b"<html>Dask needs bokeh>=3.1.0 for the dashboard.</html>"
    assert dashboard_answers(link) is False
    pages["status"] = b"<html><title>Dask: Status</title></html>"
    assert dashboard_answers(link) is True
    assert dashboard_answers(f"http://127.0.0.1:{port}/missing") is False
    assert dashboard_answers(f"http://127.0.0.1:{free_port()}/status") is None


def test_fit_show_predict_without_var(files: dict[str, Path], tmp_path: Path) -> None:
    checkpoint = tmp_path / "fit.zarr"
    code, out, err, _ = run_dem(
        "fit", "gmm", files["store"], "-k", "3", "--checkpoint", "fit.zarr", "--local-workers", "1",
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, out + err
    assert "Data: X, the only 2-D array" in out
    assert re.search(r"dashboard: http://\S+", out), out  # bokeh serves it
    assert "start-up step 1:" in out
    assert f"Inspect it with: dem show {checkpoint}" in out  # absolute

    code, out, err, _ = run_dem("show", checkpoint)
    assert code == 0, out + err
    assert "Internal arrays not shown (--all shows them): shift." in out
    assert "│ shift" not in out and "│ means" in out
    code, out, _, _ = run_dem("show", checkpoint, "--all")
    assert code == 0 and "│ shift" in out

    predicted = tmp_path / "predicted.zarr"
    code, out, err, _ = run_dem(
        "predict", checkpoint, files["store"], "--out", predicted, "--output", "labels",
        "--local-workers", "1",
    )  # fmt: skip
    assert code == 0, out + err
    restored = dem.from_checkpoint(checkpoint)
    x = np.asarray(zarr.open_group(files["store"], mode="r")["X"][:])
    with xr.open_zarr(predicted) as opened:  # warnings are errors: consolidated metadata
        np.testing.assert_array_equal(opened["labels"].values, restored.predict(x))


def test_stores_dem_writes_open_without_warnings(tmp_path: Path) -> None:
    out = tmp_path / "synth.zarr"
    code, output, err, _ = run_dem("synth", "tobit", out, "-n", "500", "-d", "2")
    assert code == 0, output + err
    with xr.open_zarr(out) as opened:
        assert opened["X"].shape == (500, 2)


def _start_fit(files: dict[str, Path], checkpoint: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dem.cli", "fit", "gmm", os.fspath(files["big"]), "-k", "4",
         "--checkpoint", os.fspath(checkpoint), "--local-workers", "1", *extra],
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def big(files: dict[str, Path]) -> dict[str, Path]:
    """A store whose start-up (sample read, k-means passes) takes a while."""
    store = files["root"] / "big.zarr"
    write_store(store, "gmm", n_samples=300_000, n_features=8, seed=1, chunk_rows=20_000)
    return {**files, "big": store}


def _wait_for(process: subprocess.Popen[str], predicate: str, lines: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if re.search(predicate, line):
            return
    process.wait()
    assert process.stderr is not None
    raise AssertionError("".join(lines) + process.stderr.read())


def _stop(process: subprocess.Popen[str], lines: list[str]) -> tuple[str, str, float]:
    """The rest of the output, stderr, and seconds from now until the process ended."""
    started = time.perf_counter()
    try:
        rest, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return "".join(lines) + rest, err, time.perf_counter() - started


def _resume_command(output: str) -> list[str]:
    words = shlex.split(output.split("Resume with:")[1].strip().splitlines()[0])
    assert words[:2] == ["dem", "fit"]
    return words


def test_ctrl_c_during_start_up_stops_at_once(big: dict[str, Path], tmp_path: Path) -> None:
    checkpoint = tmp_path / "fit.zarr"
    process = _start_fit(big, checkpoint, "--init-params", "k-means||", "--tol", "1e-4")
    lines: list[str] = []
    _wait_for(process, r"^Running on", lines)
    process.send_signal(signal.SIGINT)
    output, err, seconds = _stop(process, lines)
    assert process.returncode == ExitCode.INTERRUPTED, output + err
    assert "No iteration had ended yet." in output
    assert seconds < 4, seconds  # at once, not after the start-up's passes
    assert "Traceback" not in err and "exception" not in err.lower(), err
    words = _resume_command(output)
    assert os.fspath(checkpoint) in words and os.fspath(big["big"]) in words

    done = subprocess.run(
        [sys.executable, "-m", "dem.cli", *words[1:], "--max-iter", "2"],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert dem.load_checkpoint(checkpoint).attrs["last_iteration"] >= 1


def test_second_ctrl_c_exits_130_without_traceback(big: dict[str, Path], tmp_path: Path) -> None:
    checkpoint = tmp_path / "fit.zarr"
    process = _start_fit(big, checkpoint, "--tol", "0", "--max-iter", "1000")
    lines: list[str] = []
    _wait_for(process, r"^\s+0\s+2\s", lines)  # iteration 2 is checkpointed
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    output, err, seconds = _stop(process, lines)
    assert process.returncode == ExitCode.INTERRUPTED, output + err
    assert seconds < 4, seconds
    assert err.strip() == "", err  # no "Task exception was never retrieved ... AllExit"
    assert "The last complete iteration is in" in output
    assert os.fspath(checkpoint) in _resume_command(output)
    assert 2 <= dem.load_checkpoint(checkpoint).attrs["last_iteration"] < 1000


def test_printed_commands_hold_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dem.cli.options import cluster_parameters, command_line

    monkeypatch.chdir(tmp_path)
    parameters = cluster_parameters()
    values = {p.name: p.default.default for p in parameters}
    values.update(scheduler_file=Path("scheduler.json"), tls_ca_file=Path("ca.pem"))
    words = shlex.split(command_line(["fit", "gmm"], parameters, values))
    assert words[words.index("--scheduler-file") + 1] == os.fspath(tmp_path / "scheduler.json")
    assert words[words.index("--tls-ca-file") + 1] == os.fspath(tmp_path / "ca.pem")
