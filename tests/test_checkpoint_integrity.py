"""Checkpoint integrity: damage is detected and resume falls back, a full disk keeps the
previous iteration, and a checkpoint in use by another live fit is refused."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

import dem
from dem.checkpoint import _checksum
from dem.lockfile import lock_path
from tests.conftest import make_blobs

FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_")
MAX_ITER = 8
STOP = 5  # the interrupted fit has checkpointed iterations 0..STOP


class Interrupt(Exception):
    pass


def stop_after(iteration: int):
    def callback(info):
        if info.iteration == iteration:
            raise Interrupt

    return callback


def mixture(checkpoint, **options):
    defaults = {"n_components": 3, "max_iter": MAX_ITER, "tol": 0.0, "random_state": 3}
    return dem.GaussianMixture(**{**defaults, "checkpoint": checkpoint, **options})


def quiet_fit(estimator, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        return estimator.fit(data)


class warns_of:
    """Expect one or more UserWarnings, at least one of them matching ``pattern``."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def __enter__(self):
        self._context = warnings.catch_warnings(record=True)
        self.caught = self._context.__enter__()
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        return self.caught

    def __exit__(self, *exc):
        self._context.__exit__(*exc)
        if exc[0] is None:
            messages = [str(w.message) for w in self.caught if w.category is UserWarning]
            assert any(re.search(self.pattern, m) for m in messages), messages


def assert_same_bits(a, b):
    for name in FITTED:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.lower_bounds_ == b.lower_bounds_ and a.n_iter_ == b.n_iter_


@pytest.fixture(scope="module")
def data():
    return da.from_array(make_blobs(n_per=200, seed=4), chunks=400)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    return quiet_fit(mixture(tmp_path_factory.mktemp("ref") / "fit.zarr"), data)


@pytest.fixture
def interrupted(data, tmp_path):
    """A checkpoint whose fit was stopped after iteration STOP was written."""
    path = tmp_path / "fit.zarr"
    with pytest.raises(Interrupt):
        quiet_fit(mixture(path, callback=stop_after(STOP)), data)
    return path


def iteration_dir(path: Path, iteration: int) -> Path:
    return path / "run-0" / f"iter-{iteration:06d}"


def garble_chunk(path: Path, iteration: int) -> None:
    chunk = next(
        p
        for p in (iteration_dir(path, iteration) / "means").rglob("*")
        if p.is_file() and p.name != "zarr.json"
    )
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))


def rewrite_means(path: Path, iteration: int, value, keep_checksum_valid: bool) -> None:
    group = zarr.open_group(str(iteration_dir(path, iteration)), mode="r+")
    params = {name: np.asarray(array[...]) for name, array in group.arrays()}
    params["means"] = value(params["means"])
    group.create_array("means", data=params["means"], overwrite=True)
    if keep_checksum_valid:
        group.attrs["checksum"] = _checksum(params)


DAMAGE = {
    # name: (damage, first iteration the resumed fit computes, warning it gives)
    "garbled chunk": (lambda p: garble_chunk(p, STOP), STOP, "checksum mismatch"),
    "deleted group metadata": (
        lambda p: (iteration_dir(p, STOP) / "zarr.json").unlink(),
        STOP,
        "unreadable",
    ),
    "deleted array metadata": (
        lambda p: (iteration_dir(p, STOP) / "means" / "zarr.json").unlink(),
        STOP,
        "checksum mismatch|unreadable",
    ),
    "latest marker names a missing iteration": (
        lambda p: shutil.rmtree(iteration_dir(p, STOP)),
        STOP,
        "latest marker names iteration 5",
    ),
    "changed shapes": (
        lambda p: rewrite_means(p, STOP, lambda m: m[:2], keep_checksum_valid=False),
        STOP,
        "checksum mismatch",
    ),
    "changed shapes with a valid checksum": (
        lambda p: rewrite_means(p, STOP, lambda m: m[:, :2], keep_checksum_valid=True),
        STOP,
        "parameters",
    ),
    "NaN parameters with a valid checksum": (
        lambda p: rewrite_means(p, STOP, lambda m: m * np.nan, keep_checksum_valid=True),
        STOP,
        "NaN in 'means'",
    ),
    "an earlier iteration garbled": (lambda p: garble_chunk(p, 2), 2, "predecessor 2"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damage_is_detected_and_resume_falls_back(data, reference, interrupted, damage):
    apply, first, message = DAMAGE[damage]
    apply(interrupted)
    seen = []
    with warns_of(message):
        resumed = quiet_fit(mixture(interrupted, resume=True, callback=seen.append), data)
    assert seen[0].iteration == first
    assert_same_bits(resumed, reference)
    # the history is whole again: a plain read finds the last iteration without warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dem.load_checkpoint(interrupted).attrs["last_iteration"] == MAX_ITER


def test_deleted_root_metadata_is_a_clear_error(data, interrupted):
    (interrupted / "zarr.json").unlink()
    with pytest.raises(dem.CheckpointMismatchError, match="root metadata"):
        quiet_fit(mixture(interrupted, resume=True), data)
    assert not os.path.exists(lock_path(interrupted))


def test_nothing_intact_is_reported_when_reading(interrupted):
    for iteration in range(STOP + 1):
        garble_chunk(interrupted, iteration)
    with (
        pytest.warns(UserWarning, match="damaged"),
        pytest.raises(ValueError, match="no complete iteration"),
    ):
        dem.load_checkpoint(interrupted)


# --- disk full ---------------------------------------------------------------------------


def test_disk_full_keeps_the_previous_iteration_and_raises_clearly(
    data, reference, tmp_path, monkeypatch
):
    path = tmp_path / "fit.zarr"
    real_set = LocalStore.set

    async def full_disk(self, key, value):
        if "iter-000004/means" in key and str(path) in str(self.root):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), key)
        return await real_set(self, key, value)

    monkeypatch.setattr(LocalStore, "set", full_disk)
    with pytest.raises(dem.CheckpointWriteError, match=r"No space left.*Iteration 3 is intact"):
        quiet_fit(mixture(path), data)
    monkeypatch.setattr(LocalStore, "set", real_set)
    assert not os.path.exists(lock_path(path))
    with pytest.warns(UserWarning, match="iteration 4 of run 0 is incomplete"):
        saved = dem.load_checkpoint(path)
    assert saved.attrs["last_iteration"] == 3
    np.testing.assert_array_equal(
        saved["loglik"].values[1:], np.asarray(reference.lower_bounds_[:3])
    )
    seen = []
    with pytest.warns(UserWarning, match="iteration 4 of run 0 is incomplete"):
        resumed = quiet_fit(mixture(path, resume=True, callback=seen.append), data)
    assert seen[0].iteration == 4
    assert_same_bits(resumed, reference)


# --- two fits on one checkpoint -------------------------------------------------------------

HOLDER = """
import sys, time
import dask.array as da
import dem
from tests.conftest import make_blobs

def hold(info):
    print("locked", flush=True)
    time.sleep(120)

data = da.from_array(make_blobs(n_per=200, seed=4), chunks=400)
dem.GaussianMixture(n_components=3, max_iter=8, tol=0.0, random_state=3, checkpoint=sys.argv[1],
                    resume=True, callback=hold).fit(data)
"""


def test_a_second_fit_is_refused_while_the_first_runs_then_a_stale_lock_is_taken(
    data, reference, interrupted
):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(interrupted)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(dem.CheckpointLockedError, match=f"process {holder.pid} on"):
            quiet_fit(mixture(interrupted, resume=True), data)
    finally:
        holder.kill()
        holder.wait()
    record = json.loads(Path(lock_path(interrupted)).read_text())
    assert record["pid"] == holder.pid and record["host"] == socket.gethostname()
    with pytest.warns(UserWarning, match=rf"stale lock .* process {holder.pid}"):
        resumed = quiet_fit(mixture(interrupted, resume=True), data)
    assert_same_bits(resumed, reference)
    assert not os.path.exists(lock_path(interrupted))


def test_a_lock_held_on_another_host_is_refused(data, interrupted):
    Path(lock_path(interrupted)).write_text(
        json.dumps({"pid": 1, "host": "elsewhere.invalid", "since": time.time()})
    )
    with pytest.raises(dem.CheckpointLockedError, match=r"elsewhere\.invalid.*delete the lock"):
        quiet_fit(mixture(interrupted, resume=True), data)
    assert os.path.exists(lock_path(interrupted))  # not ours to remove
