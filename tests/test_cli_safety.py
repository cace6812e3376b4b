"""What the command line writes, deletes and waits for, run as a user would (subprocesses).

``--overwrite`` replaces only a store dem wrote as output (its ``dem_output`` attribute),
never one that holds, or lies inside, the input or the checkpoint; every other path is
refused with exit 2 and left byte for byte as it was. ``dem synth`` marks its store
complete only as its last write. A scheduler address that does not speak Dask, or is
not an address at all, exits 5 within the timeout instead of hanging.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr

import dem
from dem.cli import ExitCode
from dem.outputs import ATTRIBUTE
from dem.paths import overlaps as paths_overlap
from dem.restore import from_checkpoint
from dem.synth import write_store

REPO = Path(__file__).resolve().parents[1]


def run_dem(
    *args: str | os.PathLike[str], cwd: Path | None = None, timeout: float = 120
) -> tuple[int, str, float]:
    """``python -m dem.cli ARGS`` in a subprocess: exit status, output and seconds taken."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "dem.cli", *map(os.fspath, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done.returncode, done.stdout + done.stderr, time.perf_counter() - started


def tree_digest(path: Path) -> str:
    """A digest of every file name and content under ``path`` (or of the file itself)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(os.fspath(file.relative_to(path.parent)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A folder holding a small store (written by the user, not by dem) and a checkpoint."""
    root = tmp_path_factory.mktemp("work")
    store = root / "data" / "user.zarr"
    x = np.random.default_rng(0).standard_normal((400, 2))
    x[:200] += 4.0
    zarr.open_group(store, mode="w").create_array("X", data=x, chunks=(100, 2))
    checkpoint = root / "fit.zarr"
    dem.GaussianMixture(2, max_iter=3, random_state=0, checkpoint=os.fspath(checkpoint)).fit(
        os.fspath(store), variable="X"
    )
    return store, checkpoint


def predict_into(store: Path, checkpoint: Path, out: Path | str, *extra: str, cwd=None):
    return run_dem(
        "predict", checkpoint, store, "--var", "X", "--out", out, "--overwrite", *extra, cwd=cwd
    )


# --- item 1: --overwrite removes only what dem wrote -------------------------------------------


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("store_folder", "contains or lies inside the input store"),
        ("store", "contains or lies inside the input store"),
        ("checkpoint", "contains or lies inside the checkpoint"),
        ("inside_checkpoint", "contains or lies inside the checkpoint"),
        ("unrelated", "was not written by dem"),
        ("plain_file", "not a folder dem wrote"),
        ("cwd", "was not written by dem"),
        ("cwd_of_input", "contains or lies inside the input store"),
    ],
)
def test_predict_overwrite_refuses_what_dem_did_not_write(
    fitted: tuple[Path, Path], tmp_path: Path, target: str, reason: str
) -> None:
    store, checkpoint = fitted
    unrelated = tmp_path / "photos"
    unrelated.mkdir()
    (unrelated / "holiday.jpg").write_bytes(b"\xff\xd8 not really")
    plain_file = tmp_path / "notes.txt"
    plain_file.write_text("mine")
    out, cwd = {
        "store_folder": (store.parent, None),
        "store": (store, None),
        "checkpoint": (checkpoint, None),
        "inside_checkpoint": (checkpoint / "run_0", None),
        "unrelated": (unrelated, None),
        "plain_file": (plain_file, None),
        "cwd": (Path("."), unrelated),
        "cwd_of_input": (Path("."), store.parent),
    }[target]
    guarded = [store.parent, checkpoint, unrelated, plain_file]
    before = [tree_digest(p) for p in guarded]
    code, output, _ = predict_into(store, checkpoint, out, cwd=cwd)
    assert code == ExitCode.USAGE, output
    assert reason in " ".join(output.split()), output
    assert "Traceback" not in output
    assert [tree_digest(p) for p in guarded] == before


def test_predict_overwrite_replaces_its_own_output(
    fitted: tuple[Path, Path], tmp_path: Path, process_client
) -> None:
    store, checkpoint = fitted
    out = tmp_path / "labels.zarr"
    scheduler = ("--scheduler", process_client.scheduler.address)
    for _ in range(2):  # the second run replaces the first run's store
        code, output, _ = predict_into(store, checkpoint, out, "--output", "labels", *scheduler)
        assert code == 0, output
    group = zarr.open_group(out, mode="r")
    assert group.attrs[ATTRIBUTE] == {"writer": "dem predict", "complete": True}
    reference = from_checkpoint(checkpoint)
    x = zarr.open_group(store, mode="r")["X"][:]
    np.testing.assert_array_equal(group["labels"][:], reference.predict(x))


def test_synth_overwrite_replaces_only_dem_stores(tmp_path: Path) -> None:
    users = tmp_path / "users.zarr"
    zarr.open_group(users, mode="w").create_array("X", data=np.arange(6.0).reshape(3, 2))
    before = tree_digest(users)
    small = ("--samples", "50", "--features", "2", "--components", "2")
    code, output, _ = run_dem("synth", "gmm", users, *small, "--overwrite")
    assert code == ExitCode.USAGE and "was not written by dem" in " ".join(output.split())
    assert tree_digest(users) == before
    code, output, _ = run_dem("synth", "gmm", users / "inside.zarr", *small)
    assert code == ExitCode.USAGE and "lies inside the Zarr store" in " ".join(output.split())
    assert tree_digest(users) == before

    ours = tmp_path / "ours.zarr"
    assert run_dem("synth", "gmm", ours, *small, "--seed", "1")[0] == 0
    code, output, _ = run_dem("synth", "gmm", ours, *small, "--seed", "2", "--overwrite")
    assert code == 0, output
    group = zarr.open_group(ours, mode="r")
    assert group.attrs["dem_synth"]["seed"] == 2
    assert group.attrs[ATTRIBUTE] == {"writer": "dem synth", "complete": True}


# --- item 3: dem synth marks its store complete last -------------------------------------------


def test_interrupted_synth_store_is_marked_incomplete(tmp_path: Path) -> None:
    class Killed(Exception):
        pass

    def kill_after_first(done: int, total: int) -> None:
        raise Killed

    path = tmp_path / "half.zarr"
    with pytest.raises(Killed):
        write_store(
            path, "gmm", n_samples=400, n_features=2, chunk_rows=100, threads=1,
            on_chunk=kill_after_first,
        )  # fmt: skip
    assert zarr.open_group(path, mode="r").attrs[ATTRIBUTE] == {
        "writer": "dem synth",
        "complete": False,
    }
    whole = tmp_path / "whole.zarr"
    write_store(whole, "gmm", n_samples=400, n_features=2, chunk_rows=100)
    assert zarr.open_group(whole, mode="r").attrs[ATTRIBUTE]["complete"] is True


# --- item 9: scheduler addresses that are not Dask ---------------------------------------------


@pytest.fixture
def http_port() -> Iterator[int]:
    """A web server on loopback: it accepts connections but does not speak Dask."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def fit_on(fitted: tuple[Path, Path], tmp_path: Path, *cluster: str) -> tuple[int, str, float]:
    store, _ = fitted
    checkpoint = tmp_path / "never.zarr"
    result = run_dem("fit", "gmm", store, "--var", "X", "--checkpoint", checkpoint, *cluster)
    assert not checkpoint.exists()
    return result


def test_a_port_that_speaks_http_times_out(
    fitted: tuple[Path, Path], tmp_path: Path, http_port: int
) -> None:
    address = f"tcp://127.0.0.1:{http_port}"
    code, output, seconds = fit_on(fitted, tmp_path, "--scheduler", address, "--timeout", "2")
    assert code == ExitCode.SCHEDULER, output
    assert "did not answer as a Dask scheduler within 2 s" in " ".join(output.split())
    assert seconds < 30


def test_a_refused_connection_fails_within_five_seconds(
    fitted: tuple[Path, Path], tmp_path: Path
) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.perf_counter()
    code, output, _ = fit_on(fitted, tmp_path, "--scheduler", f"tcp://127.0.0.1:{port}")
    assert code == ExitCode.SCHEDULER and "refused" in output.lower(), output
    # the interpreter's start-up and imports come on top of the connection attempt
    assert time.perf_counter() - started < 5 + 15


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("http://127.0.0.1:8787", "is not a Dask scheduler address"),
        ("garbage", "is not a scheduler address"),
        ("tcp://127.0.0.1:notaport", "is not a scheduler address"),
    ],
)
def test_malformed_addresses_are_scheduler_problems(
    fitted: tuple[Path, Path], tmp_path: Path, address: str, reason: str
) -> None:
    code, output, _ = fit_on(fitted, tmp_path, "--scheduler", address)
    assert code == ExitCode.SCHEDULER and reason in " ".join(output.split()), output


@pytest.mark.parametrize(
    "content", ['["tcp://127.0.0.1:8786"]', '{"address": 5}', '{"addr', '{"id": "x"}']
)
def test_malformed_scheduler_files_are_scheduler_problems(
    fitted: tuple[Path, Path], tmp_path: Path, content: str
) -> None:
    file = tmp_path / "scheduler.json"
    file.write_text(content)
    code, output, _ = fit_on(fitted, tmp_path, "--scheduler-file", file)
    assert code == ExitCode.SCHEDULER and "Cannot read a scheduler address" in output, output


# --- item 11: dem show --plot ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("missing/trace.png", "does not exist"),
        ("folder", "is a folder"),
        ("checkpoint", "lies inside the checkpoint"),
    ],
)
def test_show_plot_refuses_paths_it_cannot_or_must_not_write(
    fitted: tuple[Path, Path], tmp_path: Path, target: str, reason: str
) -> None:
    _, checkpoint = fitted
    (tmp_path / "folder").mkdir()
    path = checkpoint / "trace.png" if target == "checkpoint" else tmp_path / target
    before = tree_digest(checkpoint)
    code, output, _ = run_dem("show", checkpoint, "--plot", path)
    assert code == ExitCode.USAGE and reason in " ".join(output.split()), output
    assert "Traceback" not in output
    assert tree_digest(checkpoint) == before


def test_predict_out_existing_file_says_what_to_do(
    fitted: tuple[Path, Path], tmp_path: Path
) -> None:
    store, checkpoint = fitted
    existing = tmp_path / "result.zarr"
    existing.write_text("a file, not a store")
    code, output, _ = predict_into(store, checkpoint, existing)
    assert code == ExitCode.USAGE and "Errno" not in output, output
    assert "Choose another --out" in " ".join(output.split())
    assert existing.read_text() == "a file, not a store"


def test_paths_overlap_follows_links(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "inner").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real)
    assert paths_overlap(link, real) and paths_overlap(link / "inner", real)
    assert paths_overlap(real, link / "inner") and not paths_overlap(real / "inner", tmp_path / "x")


@pytest.mark.parametrize("where", ["inside", "holding"])
def test_fit_checkpoint_never_overlaps_the_input(
    fitted: tuple[Path, Path], tmp_path: Path, where: str
) -> None:
    store, _ = fitted
    checkpoint = store / "ck.zarr" if where == "inside" else store.parent
    before = tree_digest(store.parent)
    code, output, _ = run_dem("fit", "gmm", store, "--var", "X", "--checkpoint", checkpoint)
    assert code == ExitCode.USAGE, output
    assert "lies inside the input store" in " ".join(output.split())
    assert tree_digest(store.parent) == before
