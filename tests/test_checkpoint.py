"""Checkpoints: every iteration written atomically, exact resume, clear refusals.

That a resumed fit (with restarts) ends with the bits of an uninterrupted one is a
contract test of every registered model (``tests/contract/test_contract.py``).
"""

from __future__ import annotations

import itertools
import json
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr

import dem
from tests.conftest import initial_parameters

FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_")


class Interrupt(Exception):
    pass


def stop_after(iteration: int):
    def callback(info):
        if info.iteration == iteration:
            raise Interrupt

    return callback


def mixture(checkpoint, **options):
    defaults = {
        "n_components": 3,
        "max_iter": 12,
        "tol": 0.0,
        "random_state": 5,
        "checkpoint": checkpoint,
    }
    return dem.GaussianMixture(**{**defaults, **options})


def quiet_fit(estimator, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        return estimator.fit(data)


def assert_same_bits(a, b):
    for name in FITTED:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.lower_bounds_ == b.lower_bounds_ and a.n_iter_ == b.n_iter_


def test_checkpoint_loads_as_a_dataset(tmp_path, blobs):
    model = quiet_fit(mixture(tmp_path / "fit.zarr", max_iter=6), blobs)
    dataset = dem.load_checkpoint(tmp_path / "fit.zarr")
    assert dataset.attrs["model"] == "gaussian_mixture" and dataset.attrs["last_iteration"] == 6
    assert dataset["means"].dims == ("component", "feature")
    assert dataset["covariances"].dims == ("component", "feature", "feature_")
    np.testing.assert_array_equal(dataset["means"].values, model.means_)
    np.testing.assert_array_equal(dataset["loglik"].values[1:], model.lower_bounds_)
    assert np.isnan(dataset["loglik"].values[0])
    assert json.loads(dataset.attrs["config"])["n_components"] == 3


def test_checkpoint_holds_only_numeric_arrays_and_json(tmp_path, blobs):
    quiet_fit(mixture(tmp_path / "fit.zarr", max_iter=3), blobs)
    root = zarr.open_group(str(tmp_path / "fit.zarr"), mode="r")
    for _, array in root.members(max_depth=None):
        if isinstance(array, zarr.Array):
            assert array.dtype.kind in "fiub"
    for meta in (tmp_path / "fit.zarr").rglob("zarr.json"):
        json.loads(meta.read_text())  # metadata are plain JSON
        assert "pickle" not in meta.read_text().lower()


def test_existing_checkpoint_is_not_overwritten(tmp_path, blobs):
    quiet_fit(mixture(tmp_path / "fit.zarr", max_iter=2), blobs)
    with pytest.raises(FileExistsError, match="resume=True"):
        mixture(tmp_path / "fit.zarr").fit(blobs)


@pytest.mark.parametrize(
    ("options", "data_change", "match"),
    [
        ({"n_components": 2}, None, "config"),
        ({"covariance_type": "diag"}, None, "config"),
        ({}, lambda x: x[:-10], "fingerprint"),
        ({}, lambda x: x[:, :2], "fingerprint"),
    ],
)
def test_resume_refuses_another_model_or_data(tmp_path, blobs, options, data_change, match):
    quiet_fit(mixture(tmp_path / "fit.zarr", max_iter=2), blobs)
    data = blobs if data_change is None else data_change(blobs)
    with pytest.raises(dem.CheckpointMismatchError, match=match):
        mixture(tmp_path / "fit.zarr", resume=True, **options).fit(data)


def test_a_checkpoint_of_another_kind_is_refused(tmp_path, blobs):
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["something"] = 1
    with pytest.raises(dem.CheckpointMismatchError, match="not a dem checkpoint"):
        mixture(tmp_path / "other.zarr", resume=True).fit(blobs)


def test_damaged_latest_iteration_falls_back_to_the_one_before(tmp_path, blobs):
    reference = quiet_fit(mixture(tmp_path / "a.zarr", max_iter=8), blobs)
    with pytest.raises(Interrupt):
        quiet_fit(mixture(tmp_path / "b.zarr", max_iter=8, callback=stop_after(5)), blobs)
    chunk = next(
        p
        for p in (Path(tmp_path / "b.zarr") / "run-0" / "iter-000005" / "means").rglob("*")
        if p.is_file() and p.name != "zarr.json"
    )
    chunk.write_bytes(b"garbage" + chunk.read_bytes()[7:])
    seen = []
    with pytest.warns(UserWarning, match="iteration 5 of run 0 is incomplete or damaged"):
        resumed = quiet_fit(
            mixture(tmp_path / "b.zarr", max_iter=8, resume=True, callback=seen.append), blobs
        )
    assert seen[0].iteration == 5
    assert_same_bits(resumed, reference)


def test_half_written_iteration_is_invisible(tmp_path, blobs):
    """An iteration without its completion mark (a crash mid-write) is never used."""
    with pytest.raises(Interrupt):
        quiet_fit(mixture(tmp_path / "b.zarr", max_iter=8, callback=stop_after(4)), blobs)
    group = zarr.open_group(str(tmp_path / "b.zarr" / "run-0" / "iter-000004"), mode="r+")
    attrs = dict(group.attrs)
    del attrs["complete"]
    group.attrs.put(attrs)
    with pytest.warns(UserWarning, match="iteration 4"):
        dataset = dem.load_checkpoint(tmp_path / "b.zarr")
    assert dataset.attrs["last_iteration"] == 3


def test_resuming_a_finished_fit_reads_no_data(tmp_path, blobs):
    first = mixture(tmp_path / "fit.zarr", max_iter=200, tol=1e-3).fit(blobs)
    assert first.converged_
    again = mixture(tmp_path / "fit.zarr", max_iter=200, tol=1e-3, resume=True)
    again.fit(da.from_array(blobs, chunks=len(blobs)).map_blocks(_fail, dtype=float))
    assert_same_bits(again, first)


def _fail(block):
    raise AssertionError("the data were read")


def test_checkpoint_with_given_start(tmp_path, blobs):
    init = initial_parameters(blobs, 3, "tied")
    model = quiet_fit(
        mixture(tmp_path / "fit.zarr", covariance_type="tied", max_iter=3, **init), blobs
    )
    start = dem.load_checkpoint(tmp_path / "fit.zarr")
    assert start["covariances"].dims == ("feature", "feature_")
    assert model.n_iter_ == 3


def test_each_write_overlaps_the_next_pass_and_the_fit_returns_with_all_written(
    tmp_path, blobs, monkeypatch
):
    """Without a callback an iteration is written while the next pass runs: one write at a
    time, in order, and the fit returns once the last is complete."""
    import threading
    import time

    import dem.engine
    from dem.checkpoint import Checkpoint

    next_pass = threading.Event()
    writes: list[tuple[int, float, float, bool]] = []
    real_write, real_private, real_pass = Checkpoint.write, Checkpoint._write, dem.engine.em_pass

    def write(self, *args, **kwargs):
        next_pass.clear()
        return real_write(self, *args, **kwargs)

    def slow_write(self, run, iteration, *args):
        started = time.perf_counter()
        # a write in the caller's thread would hold the next pass back: this waits for it
        # (the initial parameters' write completes before the first pass, which reads the
        # data's digests from the checkpoint)
        overlapped = 0 < iteration < 4 and next_pass.wait(timeout=10)
        real_private(self, run, iteration, *args)
        writes.append((iteration, started, time.perf_counter(), overlapped))

    def timed_pass(*args, **kwargs):
        next_pass.set()
        return real_pass(*args, **kwargs)

    monkeypatch.setattr(Checkpoint, "write", write)
    monkeypatch.setattr(Checkpoint, "_write", slow_write)
    monkeypatch.setattr(dem.engine, "em_pass", timed_pass)
    model = quiet_fit(mixture(tmp_path / "fit.zarr", max_iter=4), blobs)
    returned = time.perf_counter()
    assert [w[0] for w in writes] == [0, 1, 2, 3, 4]
    assert [w[3] for w in writes] == [False, True, True, True, False]
    assert all(a[2] <= b[1] for a, b in itertools.pairwise(writes))  # one at a time, in order
    assert writes[-1][2] <= returned
    saved = dem.load_checkpoint(tmp_path / "fit.zarr")
    assert saved.attrs["last_iteration"] == 4
    np.testing.assert_array_equal(saved["means"].values, model.means_)
    np.testing.assert_array_equal(saved["loglik"].values[1:], model.lower_bounds_)
