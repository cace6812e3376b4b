"""Checkpoints against a hostile user (issue 15): a checkpoint never lands inside its
input, a resume refuses other data chunk by chunk, one process wins a stale lock,
damaged or edited checkpoints are never used, and misuse gets a clear error."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr

import dem
from dem.checkpoint import Checkpoint, _checksum
from dem.lockfile import lock_path
from dem.paths import overlaps, resolved_location
from tests.conftest import make_blobs

FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_")
ROOT = Path(__file__).resolve().parents[1]


class Interrupt(Exception):
    pass


def stop_after(iteration: int):
    def callback(info):
        if info.iteration == iteration:
            raise Interrupt

    return callback


def mixture(checkpoint, **options):
    defaults = {"n_components": 3, "max_iter": 6, "tol": 0.0, "random_state": 3}
    return dem.GaussianMixture(**{**defaults, "checkpoint": checkpoint, **options})


def quiet_fit(estimator, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        return estimator.fit(*args, **kwargs)


def assert_same_bits(a, b):
    for name in FITTED:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.lower_bounds_ == b.lower_bounds_ and a.n_iter_ == b.n_iter_


def write_store(path: Path, x: np.ndarray, chunks: int = 400) -> Path:
    group = zarr.open_group(str(path), mode="w")
    group.create_array("X", data=x, chunks=(chunks, x.shape[1]))
    return path


def listing(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def blobs():
    return make_blobs(n_per=200, seed=4)


def run_dem(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dem.cli", *arguments],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        timeout=300,
    )


# --- item 2: a checkpoint is never inside its input, nor the input inside it ----------------


def test_resolved_locations_and_overlaps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert resolved_location("real/a.zarr/") == str(tmp_path / "real" / "a.zarr")
    assert resolved_location("link/a.zarr") == str(tmp_path / "real" / "a.zarr")
    assert resolved_location(f"file://{tmp_path}/real/a.zarr") == str(tmp_path / "real/a.zarr")
    assert resolved_location("S3://bucket/x//y/") == "s3://bucket/x/y"
    assert overlaps("link/a.zarr/ck", tmp_path / "real" / "a.zarr")
    assert overlaps(tmp_path / "real", "link/a.zarr")
    assert not overlaps("real/a.zarr", "real/a.zarr2")
    assert overlaps("s3://b/data.zarr/ck", "s3://b/data.zarr")
    assert not overlaps("s3://b/data.zarr", "gs://b/data.zarr")


@pytest.mark.parametrize("where", ["inside", "inside via a symlink", "holding the input"])
def test_a_checkpoint_overlapping_its_input_store_is_refused(tmp_path, blobs, where):
    store = write_store(tmp_path / "data.zarr", blobs)
    (tmp_path / "alias").symlink_to(store)
    checkpoint = {
        "inside": store / "ck.zarr",
        "inside via a symlink": tmp_path / "alias" / "ck.zarr",
        "holding the input": tmp_path,
    }[where]
    before = listing(store)
    with pytest.raises(ValueError, match=r"checkpoint .* input store of 'X' .* outside") as error:
        mixture(checkpoint, resume=True).fit(str(store), variable="X")
    assert isinstance(error.value, dem.CheckpointError)
    assert str(store) in str(error.value)
    assert listing(store) == before
    assert not os.path.exists(lock_path(checkpoint))


def test_the_cli_refuses_a_checkpoint_inside_the_input_store(tmp_path, blobs):
    store = write_store(tmp_path / "data.zarr", blobs)
    before = listing(store)
    done = run_dem(
        "fit", "gmm", "data.zarr", "--var", "X", "-k", "2", "--max-iter", "2",
        "--checkpoint", "data.zarr/ck.zarr", "--local-workers", "1", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr  # usage error, before any cluster
    assert "lies inside the input store" in " ".join((done.stdout + done.stderr).split())
    assert listing(store) == before


# --- item 5: a resume verifies the data's content, chunk by chunk ---------------------------


def interrupted_fit(checkpoint: Path, data, variable=None, **options) -> None:
    with pytest.raises(Interrupt):
        estimator = mixture(checkpoint, callback=stop_after(3), **options)
        quiet_fit(estimator, data, variable=variable)


def test_resume_on_a_store_with_changed_values_is_refused_naming_the_chunk(tmp_path, blobs):
    store = write_store(tmp_path / "data.zarr", blobs)
    interrupted_fit(tmp_path / "fit.zarr", str(store), "X", n_init=2)
    changed = blobs.copy()
    changed[1000, 1] += 1e-9  # row 1000 lies in chunk 2 (rows 800-1199)
    write_store(store, changed)
    with pytest.raises(dem.CheckpointMismatchError, match=r"Input 'X': chunk 2 .*rows 800-1199"):
        quiet_fit(mixture(tmp_path / "fit.zarr", resume=True, n_init=2), str(store), variable="X")


def test_resume_on_numpy_input_with_other_values_is_refused(tmp_path, blobs):
    interrupted_fit(tmp_path / "fit.zarr", blobs)
    other = blobs[::-1].copy()  # same shape, dtype and chunking
    with pytest.raises(dem.CheckpointMismatchError, match=r"chunk 0 .*content changed"):
        quiet_fit(mixture(tmp_path / "fit.zarr", resume=True), other)


def test_resume_with_other_censoring_limits_is_refused_naming_them(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1200, 2))
    y = np.maximum(x @ [1.0, -0.5] + rng.standard_normal(1200), 0.0)
    left = np.zeros(1200)
    X, Y = da.from_array(x, chunks=400), da.from_array(y, chunks=400)

    def tobit(**options):
        return dem.CensoredRegression(
            max_iter=6, tol=0.0, checkpoint=tmp_path / "fit.zarr", **options
        )

    with pytest.raises(Interrupt):
        quiet_fit(tobit(callback=stop_after(3)), X, Y, left=da.from_array(left, chunks=400))
    left[900] = -1.0
    with pytest.raises(dem.CheckpointMismatchError, match=r"Input 'left': chunk 2 "):
        quiet_fit(tobit(resume=True), X, Y, left=da.from_array(left, chunks=400))


def test_the_same_store_by_a_relative_path_resumes_to_the_same_bits(tmp_path, blobs, monkeypatch):
    store = write_store(tmp_path / "data.zarr", blobs)
    reference = quiet_fit(mixture(tmp_path / "ref.zarr"), str(store), variable="X")
    interrupted_fit(tmp_path / "fit.zarr", str(store), "X")
    monkeypatch.chdir(tmp_path)
    resumed = quiet_fit(mixture("fit.zarr", resume=True), "data.zarr", variable="X")
    assert_same_bits(resumed, reference)


def test_a_relative_path_from_another_folder_naming_other_data_is_refused(
    tmp_path, blobs, monkeypatch
):
    for folder, data in (("a", blobs), ("b", blobs[::-1].copy())):
        (tmp_path / folder).mkdir()
        write_store(tmp_path / folder / "data.zarr", data)
    monkeypatch.chdir(tmp_path / "a")
    interrupted_fit(tmp_path / "fit.zarr", "data.zarr", "X")
    monkeypatch.chdir(tmp_path / "b")
    with pytest.raises(dem.CheckpointMismatchError, match=r"fingerprint .*b/data\.zarr"):
        quiet_fit(mixture(tmp_path / "fit.zarr", resume=True), "data.zarr", variable="X")


def test_digests_are_recorded_once_and_a_resume_on_the_same_data_keeps_the_bits(tmp_path, blobs):
    data = da.from_array(blobs, chunks=400)
    reference = quiet_fit(mixture(tmp_path / "ref.zarr", n_init=2), data)
    interrupted_fit(tmp_path / "fit.zarr", data, n_init=2)
    content = zarr.open_group(str(tmp_path / "fit.zarr"), mode="r").attrs["content"]
    assert content["algorithm"] == "crc32" and len(content["chunks"]["X"]) == 3
    resumed = quiet_fit(mixture(tmp_path / "fit.zarr", n_init=2, resume=True), data)
    assert_same_bits(resumed, reference)


# --- item 6: one process wins a stale lock ----------------------------------------------------

RACERS, RACES = 8, 100


def _race(path_template: str, start, holding, results) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for race in range(RACES):
            path = path_template.format(race)
            start.wait()
            held, outcome = None, "refused"
            try:
                held = Checkpoint.open(path, model="m", config={}, fingerprint={}, resume=True)
                outcome = "won"
            except dem.CheckpointLockedError:
                pass
            except Exception as failure:  # reported, so that the race fails fast
                outcome = repr(failure)
            results.put((race, outcome))
            holding.wait()  # the winner holds the lock until every racer has tried
            if held is not None:
                held.close()


def _dead_pid() -> int:
    process = multiprocessing.get_context("fork").Process(target=int)
    process.start()
    process.join()
    return int(process.pid)


def test_one_process_wins_a_stale_lock_raced_by_eight(tmp_path):
    context = multiprocessing.get_context("fork")
    start, holding = context.Barrier(RACERS + 1), context.Barrier(RACERS + 1)
    results = context.Queue()
    template = str(tmp_path / "fit-{}.zarr")
    dead = _dead_pid()
    racers = [
        context.Process(target=_race, args=(template, start, holding, results))
        for _ in range(RACERS)
    ]
    for racer in racers:
        racer.start()
    winners = []
    try:
        for race in range(RACES):
            stale = {"pid": dead, "host": os.uname().nodename, "since": race, "token": str(race)}
            Path(lock_path(template.format(race))).write_text(json.dumps(stale))
            start.wait(timeout=60)
            outcomes = [results.get(timeout=60) for _ in range(RACERS)]
            errors = [outcome for _, outcome in outcomes if outcome not in ("won", "refused")]
            assert not errors, errors
            winners.append(sum(outcome == "won" for _, outcome in outcomes))
            holding.wait(timeout=60)
    finally:
        for racer in racers:
            racer.join(timeout=60)
            if racer.is_alive():
                racer.kill()
    bad = [(race, n) for race, n in enumerate(winners) if n != 1]
    assert not bad, f"{len(bad)} of {RACES} races had other than one winner: {bad[:5]}"
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".zarr"))
    assert left == [], left  # every lock released; no claim or staged file left behind


# --- item 7: damaged or edited checkpoints are never used -------------------------------------


@pytest.fixture
def interrupted(tmp_path, blobs):
    path = tmp_path / "fit.zarr"
    interrupted_fit(path, da.from_array(blobs, chunks=400))
    return path


@pytest.fixture(scope="module")
def reference(blobs, tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "fit.zarr"
    return quiet_fit(mixture(path), da.from_array(blobs, chunks=400))


def iteration_dir(path: Path, iteration: int) -> Path:
    return path / "run-0" / f"iter-{iteration:06d}"


def truncate_metadata(path: Path) -> None:
    metadata = iteration_dir(path, 3) / "zarr.json"
    metadata.write_bytes(metadata.read_bytes()[:50])


def copy_to_999(path: Path, renumber: bool) -> None:
    shutil.copytree(iteration_dir(path, 3), iteration_dir(path, 999))
    if renumber:
        group = zarr.open_group(str(iteration_dir(path, 999)), mode="r+")
        group.attrs["iteration"] = 999
    root = zarr.open_group(str(path), mode="r+")
    root.attrs.update({"latest": {"run": 0, "iteration": 999}, "latest_by_run": {"0": 999}})


def infinite_means(path: Path) -> None:
    group = zarr.open_group(str(iteration_dir(path, 3)), mode="r+")
    params = {name: np.asarray(array[...]) for name, array in group.arrays()}
    params["means"][0, 0] = np.inf
    group.create_array("means", data=params["means"], overwrite=True)
    group.attrs["checksum"] = _checksum(params)


EDITS = {
    # name: (edit, first iteration the resumed fit computes, warning it gives)
    "truncated iteration metadata": (truncate_metadata, 3, "iteration 3 .*unreadable"),
    "an iteration copied to 999": (
        lambda p: copy_to_999(p, renumber=False),
        4,
        "iteration 999 .*metadata say iteration 3",
    ),
    "an iteration copied to 999 and renumbered": (
        lambda p: copy_to_999(p, renumber=True),
        4,
        "iteration 999 .*follows 2, but 3 lies between",
    ),
    "inf in parameters with a valid checksum": (infinite_means, 3, "infinity in 'means'"),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_damaged_or_edited_iterations_fall_back(blobs, reference, interrupted, edit):
    apply, first, message = EDITS[edit]
    apply(interrupted)
    with pytest.warns(UserWarning, match=message):
        assert dem.load_checkpoint(interrupted).attrs["last_iteration"] == first - 1
    seen = []
    with pytest.warns(UserWarning, match=message):
        resumed = quiet_fit(
            mixture(interrupted, resume=True, callback=seen.append),
            da.from_array(blobs, chunks=400),
        )
    assert seen[0].iteration == first
    assert_same_bits(resumed, reference)


def test_dem_show_lists_the_intact_iterations_of_a_truncated_checkpoint(interrupted):
    truncate_metadata(interrupted)
    done = run_dem("show", str(interrupted), cwd=interrupted.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    output = " ".join(done.stdout.split())
    assert "no complete iteration" not in output
    assert "Traceback" not in done.stderr and "JSONDecodeError" not in done.stderr


def test_an_unknown_format_version_is_refused_naming_both(blobs, interrupted):
    root = zarr.open_group(str(interrupted), mode="r+")
    root.attrs["dem"] = {**root.attrs["dem"], "format": 99}
    message = r"format version 99; this version of dem reads format 1"
    with pytest.raises(dem.CheckpointMismatchError, match=message):
        quiet_fit(mixture(interrupted, resume=True), da.from_array(blobs, chunks=400))
    with pytest.raises(dem.CheckpointMismatchError, match=message):
        dem.load_checkpoint(interrupted)
    with pytest.raises(dem.CheckpointMismatchError, match=message):
        dem.from_checkpoint(interrupted)


# --- items 11 and 12: misuse gets a clear error ---------------------------------------------


def test_an_empty_checkpoint_path_is_a_clear_error(blobs):
    with pytest.raises(ValueError, match=r"checkpoint must be the path .* got ''"):
        mixture("").fit(blobs)


def test_a_checkpoint_in_a_missing_folder_names_the_folder(tmp_path, blobs):
    with pytest.raises(dem.CheckpointError, match=r"folder .*missing.* does not exist") as error:
        mixture(tmp_path / "missing" / "fit.zarr").fit(blobs)
    assert ".lock" not in str(error.value)


def test_a_lock_path_that_is_a_folder_is_a_clear_error(tmp_path, blobs):
    (tmp_path / "fit.zarr.lock").mkdir()
    with pytest.raises(dem.CheckpointError, match="is a folder, not a lock file"):
        mixture(tmp_path / "fit.zarr").fit(blobs)
    assert (tmp_path / "fit.zarr.lock").is_dir()  # not ours to remove


def test_a_full_disk_at_start_raises_checkpoint_write_error_and_leaves_no_lock(
    tmp_path, blobs, monkeypatch
):
    real_open = os.open

    def open_on_a_full_disk(path, flags, *args, **kwargs):
        descriptor = real_open(path, flags, *args, **kwargs)
        if flags & os.O_CREAT and str(tmp_path) in os.fspath(path):  # created, then full
            full = real_open("/dev/full", os.O_WRONLY)
            os.dup2(full, descriptor)
            os.close(full)
        return descriptor

    monkeypatch.setattr(os, "open", open_on_a_full_disk)
    with pytest.raises(dem.CheckpointWriteError, match="No space left"):
        mixture(tmp_path / "fit.zarr").fit(blobs)
    monkeypatch.setattr(os, "open", real_open)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_resume_without_a_checkpoint_is_a_clear_error(blobs):
    with pytest.raises(ValueError, match="resume=True needs the checkpoint"):
        dem.GaussianMixture(n_components=3, resume=True).fit(blobs)


def test_resume_with_a_checkpoint_that_does_not_exist_starts_afresh(tmp_path, blobs, reference):
    data = da.from_array(blobs, chunks=400)
    resumed = quiet_fit(mixture(tmp_path / "new.zarr", resume=True), data)
    assert_same_bits(resumed, reference)
    assert dem.load_checkpoint(tmp_path / "new.zarr").attrs["last_iteration"] == 6


def test_online_em_then_batch_resume_refuses_changed_data(tmp_path, blobs):
    data = da.from_array(blobs, chunks=200)
    reference = quiet_fit(mixture(tmp_path / "ref.zarr", method="online", n_init=2), data)
    interrupted_fit(tmp_path / "fit.zarr", data, method="online", n_init=2)
    resumed = quiet_fit(
        mixture(tmp_path / "fit.zarr", method="online", n_init=2, resume=True), data
    )
    assert_same_bits(resumed, reference)
    changed = blobs.copy()
    changed[-1, 0] = 7.0  # the last chunk (rows 1000-1199) of six
    with pytest.raises(dem.CheckpointMismatchError, match=r"Input 'X': chunk 5 .*rows 1000-1199"):
        quiet_fit(
            mixture(tmp_path / "ref.zarr", method="online", n_init=2, resume=True, max_iter=9),
            da.from_array(changed, chunks=200),
        )


def _digest_sum(block, params):
    return {"n": np.float64(len(block["X"]))}


def _add(a, b):
    return {"n": a["n"] + b["n"]}


def test_digests_of_grouped_map_tasks_come_back_in_chunk_order_and_are_checked():
    from dem import graph
    from dem.checkpoint import chunk_digest

    x = np.random.default_rng(1).standard_normal((130 * 7, 2))
    arrays = {"X": da.from_array(x, chunks=7)}
    blocks = graph.chunk_blocks(arrays)
    expected = tuple((chunk_digest(x[i * 7 : (i + 1) * 7]),) for i in range(130))

    def run(content):
        one_pass = graph.map_reduce_graph(
            _digest_sum, _add, ("X",), blocks, {}, chunks_per_task=8, content=content
        )
        return graph._compute(one_pass, ("X",), blocks)

    stats, digests = run(True)
    assert stats["n"] == len(x) and digests == expected
    assert run(expected)[1] == expected
    altered = (*expected[:77], (expected[77][0] ^ 1,), *expected[78:])
    with pytest.raises(dem.CheckpointMismatchError, match=r"'X': chunk 77 .*rows 539-545"):
        run(altered)
