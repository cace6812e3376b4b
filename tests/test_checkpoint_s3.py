"""Checkpoints on object storage, against moto's S3 server on loopback (tests/s3server.py).

A fit from S3 checkpoints to S3 and resumes with the bits of an uninterrupted fit, also
after its client was killed (SIGKILL) mid-fit; of clients racing for one checkpoint
exactly one wins; a lease past its expiry is taken over with a warning, and its old
holder stops instead of writing; a damaged iteration is skipped on resume; the access
key and secret appear in no object of the checkpoint, no output and no message.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import fsspec
import numpy as np
import pytest
import zarr
from conftest import make_blobs

import dem
import dem.storage
from dem.checkpoint import Checkpoint, CheckpointLockedError
from dem.lease import Lease

ROWS_PER_CHUNK = 200
FITTED = ("weights_", "means_", "covariances_")
OPTIONS = {"n_components": 3, "tol": 0.0, "random_state": 5}


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return make_blobs(n_per=100, seed=7)


@pytest.fixture(scope="module")
def s3_data(s3_server, data, tmp_path_factory) -> str:
    """The data as a Zarr store on S3."""
    local = tmp_path_factory.mktemp("s3ckpt") / "data.zarr"
    zarr.open_group(local, mode="w").create_array("X", data=data, chunks=(ROWS_PER_CHUNK, 3))
    url = s3_server.url("ckpt-tests/data.zarr")
    s3_server.filesystem().put(f"{local}/", url, recursive=True)
    return url


@pytest.fixture(scope="module")
def reference(s3_server, s3_data) -> dem.GaussianMixture:
    """The uninterrupted fit of the data on S3, without a checkpoint: 4 iterations."""
    return s3_fit(s3_server, s3_data, None)


def quiet(call, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        return call(*args, **kwargs)


def same_bits(a, b) -> None:
    for name in FITTED:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.lower_bounds_ == b.lower_bounds_ and a.n_iter_ == b.n_iter_


class Interrupt(Exception):
    pass


def stop_after(iteration: int):
    def callback(info):
        if info.iteration == iteration:
            raise Interrupt

    return callback


def s3_fit(server, s3_data, checkpoint, **options) -> dem.GaussianMixture:
    model = dem.GaussianMixture(
        max_iter=4,
        checkpoint=checkpoint,
        storage_options=server.options,
        **{**OPTIONS, **options},
    )
    return quiet(model.fit, s3_data, variable="X")


def lock_objects(server, key: str) -> list[str]:
    fs = server.filesystem()
    fs.invalidate_cache()
    return fs.find(f"{server.bucket}/{key}.lock")


def everything_under(server, key: str) -> bytes:
    """The bytes of every object of the checkpoint (and its lock), concatenated."""
    fs = server.filesystem()
    fs.invalidate_cache()
    found = fs.find(f"{server.bucket}/{key}") + fs.find(f"{server.bucket}/{key}.lock")
    return b"".join(fs.cat_file(path) for path in found) + " ".join(found).encode()


def test_a_fit_from_s3_checkpointed_on_s3_resumes_with_the_bits_of_an_uninterrupted_fit(
    s3_server, s3_data, reference, capfd
):
    key = "ckpt-tests/resumed.zarr"
    url = s3_server.url(key)
    with pytest.raises(Interrupt):
        s3_fit(s3_server, s3_data, url, callback=stop_after(3))
    assert lock_objects(s3_server, key) == []  # released when the fit stopped
    assert dem.load_checkpoint(url, storage_options=s3_server.options).attrs["last_iteration"] == 3
    # a lost chunk damages iteration 3: the resume falls back to iteration 2
    s3_server.filesystem().rm(f"{s3_server.bucket}/{key}/run-0/iter-000003/means/c/0/0")
    with pytest.warns(UserWarning, match=r"iteration 3 of run 0 is incomplete or damaged"):
        resumed = s3_fit(s3_server, s3_data, url, resume=True)
    same_bits(resumed, reference)
    with pytest.warns(UserWarning, match=r"s3://dem-test/ckpt-tests/resumed.zarr'.*without"):
        restored = dem.from_checkpoint(url, storage_options=s3_server.options)
    same_bits(restored, reference)
    dataset = dem.load_checkpoint(url, storage_options=s3_server.options)
    fingerprint = json.loads(dataset.attrs["fingerprint"])
    assert fingerprint["X"]["source"] == f"{s3_data}::X"  # the URL, without credentials
    with pytest.raises(FileExistsError, match=rf"Checkpoint '{url}' already exists"):
        s3_fit(s3_server, s3_data, url)
    stored = everything_under(s3_server, key)
    out, err = capfd.readouterr()
    for secret in (s3_server.secret, s3_server.key):
        assert secret.encode() not in stored
        assert secret not in out + err
        assert secret not in repr(dataset.attrs)


KILLED_CLIENT = """
import json, os, sys, time, warnings
import dem
import dem.storage
options = json.loads(os.environ["DEM_TEST_S3_OPTIONS"])
def slowly(info):
    time.sleep(0.4)
warnings.simplefilter("ignore")
dem.GaussianMixture(
    max_iter=4, checkpoint=sys.argv[2], storage_options=options, callback=slowly,
    n_components=3, tol=0.0, random_state=5,
).fit(sys.argv[1], variable="X")
"""


def test_a_client_killed_mid_fit_is_taken_over_after_its_lease_and_resumed_to_the_same_bits(
    s3_server, s3_data, reference, tmp_path
):
    key = "ckpt-tests/killed.zarr"
    url = s3_server.url(key)
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(KILLED_CLIENT))
    environment = {
        **os.environ,
        "DEM_TEST_S3_OPTIONS": json.dumps(s3_server.options),
        "DEM_CHECKPOINT_LEASE_S": "2",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    client = subprocess.Popen(
        [sys.executable, str(script), s3_data, url],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and client.poll() is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # an iteration being written is skipped
                    latest = dem.load_checkpoint(url, storage_options=s3_server.options)
                if latest.attrs["last_iteration"] >= 1:
                    break
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.1)
        assert client.poll() is None, client.communicate()[0].decode()
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # killed while writing an iteration: it is skipped
        killed_at = dem.load_checkpoint(url, storage_options=s3_server.options)
    assert 1 <= killed_at.attrs["last_iteration"] < 4
    # its lease (2 s, renewed every 0.5 s) has not run out yet: refused
    with pytest.raises(CheckpointLockedError, match=r"is in use by process \d+ on .*expires in"):
        s3_fit(s3_server, s3_data, url, resume=True)
    time.sleep(2.2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = s3_fit(s3_server, s3_data, url, resume=True)
    messages = [str(w.message) for w in caught if w.category is UserWarning]
    assert re.search(r"taking over the lock of process \d+ .*lease expired", messages[0])
    # the only other warning: the iteration the kill cut short is skipped
    assert all("is incomplete or damaged" in m for m in messages[1:]), messages
    same_bits(resumed, reference)
    assert lock_objects(s3_server, key) == []


def test_of_clients_racing_for_one_checkpoint_exactly_one_wins(s3_server):
    url = s3_server.url("ckpt-tests/race.zarr")
    barrier = threading.Barrier(6)
    outcomes: list[object] = [None] * 6

    def client(index: int) -> None:
        barrier.wait()
        try:
            outcomes[index] = Checkpoint.open(
                url,
                model="gaussian_mixture",
                config={},
                fingerprint={},
                resume=True,
                storage_options=s3_server.options,
            )
        except Exception as exc:  # the outcome is checked below
            outcomes[index] = exc

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if isinstance(o, Checkpoint)]
    losers = [o for o in outcomes if not isinstance(o, Checkpoint)]
    assert len(winners) == 1, outcomes
    assert all(isinstance(o, CheckpointLockedError) for o in losers), losers
    assert all("is in use by process" in str(o) and "Wait for that fit" in str(o) for o in losers)
    winners[0].close()
    again = Checkpoint.open(
        url,
        model="gaussian_mixture",
        config={},
        fingerprint={},
        resume=True,
        storage_options=s3_server.options,
    )
    again.close()


def _lease_object(server, key: str, *, expires: float, host: str) -> None:
    record = {"token": "dead", "generation": 0, "host": host, "pid": 4242, "expires": expires}
    server.filesystem().pipe_file(
        f"{server.bucket}/{key}.lock/000000000000.json", json.dumps(record).encode()
    )


def test_a_live_lease_refuses_and_an_expired_one_is_taken_over_with_a_warning(
    s3_server, s3_data, reference
):
    key = "ckpt-tests/stale.zarr"
    url = s3_server.url(key)
    _lease_object(s3_server, key, expires=time.time() + 600, host="elsewhere")
    with pytest.raises(CheckpointLockedError, match=r"in use by process 4242 on elsewhere"):
        s3_fit(s3_server, s3_data, url, resume=True)
    _lease_object(s3_server, key, expires=time.time() - 1, host="elsewhere")
    with pytest.warns(UserWarning, match=r"taking over the lock of process 4242 on elsewhere"):
        fitted = s3_fit(s3_server, s3_data, url, resume=True)
    same_bits(fitted, reference)
    assert lock_objects(s3_server, key) == []


def test_a_holder_whose_lease_was_taken_over_stops_without_writing(s3_server, monkeypatch):
    monkeypatch.setenv("DEM_CHECKPOINT_LEASE_S", "1")
    key = "ckpt-tests/frozen.zarr"
    url = s3_server.url(key)
    arguments = {"model": "m", "config": {}, "fingerprint": {}, "resume": True}
    frozen = Checkpoint.open(url, storage_options=s3_server.options, **arguments)
    frozen._lease._stop.set()  # it stops renewing, as a client that froze
    time.sleep(1.2)
    with pytest.warns(UserWarning, match=r"taking over the lock of process"):
        taker = Checkpoint.open(url, storage_options=s3_server.options, **arguments)
    params = {"w": np.ones(2)}
    with pytest.raises(CheckpointLockedError, match=r"no longer holds its lock"):
        frozen.write(0, 0, params, float("nan"), False, {"w": ("component",)})
    frozen.close()  # does not remove the taker's lock
    assert [p.rsplit("/", 1)[-1] for p in lock_objects(s3_server, key)] == ["000000000001.json"]
    taker.write(0, 0, params, float("nan"), False, {"w": ("component",)})
    taker.close()
    assert lock_objects(s3_server, key) == []


def test_a_checkpoint_in_memory_storage_is_locked_and_resumed(data):
    url = "memory://dem-test-checkpoint/fit.zarr"
    try:
        model = dem.GaussianMixture(max_iter=4, checkpoint=url, callback=stop_after(2), **OPTIONS)
        with pytest.raises(Interrupt):
            quiet(model.fit, data)
        held, _ = Lease.acquire(fsspec.filesystem("memory"), "/dem-test-checkpoint/fit.zarr.lock")
        with pytest.raises(CheckpointLockedError):
            quiet(dem.GaussianMixture(max_iter=4, checkpoint=url, resume=True, **OPTIONS).fit, data)
        held.release()
        resumed = dem.GaussianMixture(max_iter=4, checkpoint=url, resume=True, **OPTIONS)
        same_bits(
            quiet(resumed.fit, data), quiet(dem.GaussianMixture(max_iter=4, **OPTIONS).fit, data)
        )
    finally:
        fsspec.filesystem("memory").rm("/dem-test-checkpoint", recursive=True)


def test_storage_options_are_parameters_that_clone_keeps_and_repr_hides(s3_server):
    from sklearn.base import clone

    model = dem.GaussianMixture(
        storage_options=s3_server.options, checkpoint_storage_options={"anon": True}
    )
    copied = clone(model)
    assert copied.get_params()["storage_options"] == s3_server.options
    assert copied.get_params()["checkpoint_storage_options"] == {"anon": True}
    assert model._checkpoint_options() == {"anon": True}
    assert copied.set_params(checkpoint_storage_options=None)._checkpoint_options() == (
        s3_server.options
    )  # by default, the checkpoint's options are the data's
    shown = repr(model) + model._repr_html_()
    assert s3_server.secret not in shown and s3_server.key not in shown
    assert "'secret': '***'" in repr(model) and s3_server.endpoint in repr(model)


def _cli(*args: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from dem.cli import app

    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


# Last: the cluster becomes the default scheduler of the tests after it (module scope).
def test_the_cli_fits_shows_and_predicts_on_s3_and_never_prints_a_credential(
    s3_server, s3_data, reference, caplog, process_client
):
    from dem.cli.options import storage_options

    secret = s3_server.secret
    given = [
        f"endpoint_url={s3_server.endpoint}",
        f"key={s3_server.key}",
        f"secret={secret}",
    ]
    assert storage_options([*given, "anon=false", "n=1", "x=a=b"], "--storage-option") == {
        **s3_server.options,
        "anon": False,
        "n": 1,
        "x": "a=b",
    }  # JSON where it parses, else text
    options = [word for item in given for word in ("--storage-option", item)]
    cluster = ("--scheduler", process_client.scheduler.address)
    checkpoint = s3_server.url("ckpt-tests/cli.zarr")
    fit = ["fit", "gmm", s3_data, "--var", "X", "-k", "3", "--max-iter", "4", "--tol", "0"]
    code, fitted = _cli(*fit, "--checkpoint", checkpoint, *options, *cluster)
    assert code == 0, fitted
    assert "Stopped without converging after 4 iteration(s)" in fitted
    assert f"Checkpoint: {checkpoint}" in fitted
    # the command that continues it names the options, the credentials masked
    assert "--storage-option 'secret=***'" in " ".join(fitted.split())
    code, refused = _cli(*fit, "--checkpoint", checkpoint, *options, *cluster)
    assert code != 0 and "already exists" in refused

    code, shown = _cli("show", checkpoint, *options)
    assert code == 0, shown
    assert f"{checkpoint}: model gaussian_mixture" in shown and "means" in shown

    out = s3_server.url("ckpt-tests/labels.zarr")
    predict = ["predict", checkpoint, s3_data, "--var", "X", "--out", out, *options]
    code, predicted = _cli(*predict, "--output", "labels", *cluster)
    assert code == 0, predicted
    group = zarr.open_group(dem.storage.open_store(out, s3_server.options), mode="r")
    assert group.attrs["dem_output"] == {"writer": "dem predict", "complete": True}
    with pytest.warns(UserWarning, match="without converging"):
        restored = dem.from_checkpoint(checkpoint, storage_options=s3_server.options)
    restored.set_params(storage_options=s3_server.options)
    expected = restored.predict(s3_data, variable="X")
    np.testing.assert_array_equal(group["labels"][...], np.asarray(expected))
    code, exists = _cli(*predict, *cluster)
    assert code != 0 and "pass --overwrite" in exists
    code, again = _cli(*predict, "--overwrite", "--output", "labels", *cluster)
    assert code == 0, again

    foreign = s3_server.url("ckpt-tests/not-dem.zarr")
    s3_server.filesystem().pipe_file(foreign.removeprefix("s3://") + "/zarr.json", b"{}")
    code, unsafe = _cli(*predict[:6], foreign, *options, "--overwrite", *cluster)
    assert code != 0 and "was not written by dem" in unsafe

    synthetic = s3_server.url("ckpt-tests/synth.zarr")
    code, synthesised = _cli(
        "synth", "gmm", synthetic, "-n", "600", "-d", "2", "--chunk-rows", "200", *options
    )
    assert code == 0, synthesised
    assert f"Wrote {synthetic}" in synthesised
    written = zarr.open_group(dem.storage.open_store(synthetic, s3_server.options), mode="r")
    assert written["X"].shape == (600, 2) and written.attrs["dem_output"]["complete"] is True
    code, again_synth = _cli("synth", "gmm", synthetic, "-n", "600", *options)
    assert code != 0 and "pass --overwrite" in again_synth

    stored = everything_under(s3_server, "ckpt-tests/cli.zarr") + everything_under(
        s3_server, "ckpt-tests/labels.zarr"
    )
    logged = caplog.text
    outputs = (fitted, refused, shown, predicted, exists, again, unsafe, synthesised, logged)
    for output in outputs:
        assert secret not in output and s3_server.key not in output
    assert secret.encode() not in stored and s3_server.key.encode() not in stored
