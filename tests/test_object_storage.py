"""Inputs in object storage: s3:// against moto's S3 server on loopback, memory://, stores.

A fit from a store on S3 has the bits of the same fit from the same store on a local
disk; the checks of the input boundary (unwritten chunks, the dem_output marker, stale
consolidated metadata) hold on S3 as on disk; a credential passed in
``storage_options`` appears in no recorded source, fingerprint or message.
"""

from __future__ import annotations

import importlib
import json
import os
import warnings

import fsspec
import numpy as np
import pytest
import zarr
from conftest import initial_parameters, make_blobs

from dem import GaussianMixture
from dem.data import as_samples
from dem.storage import location, open_store, secrets

ROWS_PER_CHUNK = 250


@pytest.fixture(scope="module")
def blobs_small() -> np.ndarray:
    return make_blobs(n_per=250, seed=3)


def _write_local(path: os.PathLike[str] | str, x: np.ndarray, **attrs: object) -> None:
    group = zarr.open_group(path, mode="w")
    group.attrs.update(attrs)
    group.create_array("X", data=x, chunks=(ROWS_PER_CHUNK, x.shape[1]))


def _upload(server, local: os.PathLike[str], key: str) -> str:
    """Copy the local store ``local`` to ``s3://bucket/key``; returns the URL."""
    url = server.url(key)
    server.filesystem().put(f"{local}/", url, recursive=True)
    return url


@pytest.fixture(scope="module")
def s3_store(s3_server, blobs_small, tmp_path_factory):
    """The same store on disk and on S3: (local path, URL)."""
    local = tmp_path_factory.mktemp("s3") / "blobs.zarr"
    _write_local(local, blobs_small)
    return local, _upload(s3_server, local, "blobs.zarr")


def _fit(data, x: np.ndarray, variable: str | None = None, **options) -> GaussianMixture:
    model = GaussianMixture(
        n_components=3, covariance_type="full", max_iter=5, tol=0.0, random_state=0,
        **initial_parameters(x, 3, "full"), **options,
    )  # fmt: skip
    with pytest.warns(UserWarning, match="did not converge"):
        return model.fit(data, variable=variable)


def _same_bits(a: GaussianMixture, b: GaussianMixture) -> None:
    for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
        assert np.array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name))), name


def test_a_fit_from_s3_has_the_bits_of_the_fit_from_the_same_local_store(
    s3_server, s3_store, blobs_small
):
    local, url = s3_store
    from_disk = _fit(str(local), blobs_small, variable="X")
    store = open_store(url, s3_server.options)
    assert store.read_only
    _same_bits(_fit(store, blobs_small, variable="X"), from_disk)
    samples = as_samples(url, variable="X", storage_options=s3_server.options)
    assert samples.kind == "zarr" and samples.source == f"{url}::X"
    assert samples.array.chunks[0] == (ROWS_PER_CHUNK,) * (len(blobs_small) // ROWS_PER_CHUNK)
    _same_bits(_fit(samples.array, blobs_small), from_disk)


def test_a_zip_archive_on_s3_is_read_through_byte_ranges(s3_server, tmp_path, blobs_small):
    archive = tmp_path / "blobs.zip"
    with zarr.storage.ZipStore(archive, mode="w") as store:
        group = zarr.open_group(store, mode="w")
        group.create_array("X", data=blobs_small, chunks=(ROWS_PER_CHUNK, 3))
    url = s3_server.url(f"{tmp_path.name}.zip")
    s3_server.filesystem().put(str(archive), url)
    samples = as_samples(url, variable="X", storage_options=s3_server.options)
    assert samples.source == f"{url}::X"
    np.testing.assert_array_equal(samples.array.compute(), blobs_small)


def test_credentials_from_the_environment_and_the_endpoint_from_aws_endpoint_url_s3(
    s3_server, s3_store, blobs_small, monkeypatch, tmp_path
):
    import s3fs

    _, url = s3_store
    for name, value in {
        "AWS_ACCESS_KEY_ID": s3_server.key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret,
        "AWS_ENDPOINT_URL_S3": s3_server.endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    samples = as_samples(url, variable="X")
    np.testing.assert_array_equal(samples.array.compute(), blobs_small)


def _unwritten_on_s3(server, tmp_path, x: np.ndarray) -> str:
    """A store on S3 whose chunk 2 (rows 500-749) was never written."""
    local = tmp_path / "holes.zarr"
    group = zarr.open_group(local, mode="w")
    array = group.create_array("X", shape=x.shape, dtype=x.dtype, chunks=(ROWS_PER_CHUNK, 3))
    array[: 2 * ROWS_PER_CHUNK] = x[: 2 * ROWS_PER_CHUNK]
    array[3 * ROWS_PER_CHUNK :] = x[3 * ROWS_PER_CHUNK :]
    return _upload(server, local, f"holes-{tmp_path.name}.zarr")


def test_a_store_on_s3_with_an_unwritten_chunk_is_refused(s3_server, tmp_path, blobs_small):
    url = _unwritten_on_s3(s3_server, tmp_path, blobs_small)
    total = -(-len(blobs_small) // ROWS_PER_CHUNK)
    with pytest.raises(
        ValueError, match=rf"1 of {total} chunks were never written; chunk\(s\) 2 along.*500-749"
    ):
        as_samples(url, variable="X", storage_options=s3_server.options)


def test_an_incomplete_dem_output_on_s3_is_refused(s3_server, tmp_path, blobs_small):
    local = tmp_path / "half.zarr"
    _write_local(local, blobs_small, dem_output={"writer": "dem predict", "complete": False})
    url = _upload(s3_server, local, f"half-{tmp_path.name}.zarr")
    with pytest.raises(ValueError, match=r"incomplete: `dem predict` started writing it"):
        as_samples(url, variable="X", storage_options=s3_server.options)


def test_stale_consolidated_metadata_on_s3_warn_and_the_array_is_read_as_it_is(
    s3_server, tmp_path, blobs_small
):
    local = tmp_path / "stale.zarr"
    _write_local(local, blobs_small[:500])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zarr: consolidated is not in the spec
        zarr.consolidate_metadata(local)
    group = zarr.open_group(local, mode="a", use_consolidated=False)
    group["X"].resize(blobs_small.shape)
    group["X"][500:] = blobs_small[500:]
    url = _upload(s3_server, local, f"stale-{tmp_path.name}.zarr")
    with pytest.warns(UserWarning, match=r"stale for 'X'.*shape \(500, 3\).*shape \(1500, 3\)"):
        samples = as_samples(url, variable="X", storage_options=s3_server.options)
    np.testing.assert_array_equal(samples.array.compute(), blobs_small)


def test_a_credential_never_appears_in_the_source_the_fingerprint_or_a_message(
    s3_server, s3_store, tmp_path, blobs_small
):
    _, url = s3_store
    options = s3_server.options
    secret = options["secret"]
    samples = as_samples(url, variable="X", storage_options=options)
    recorded = json.dumps(samples.fingerprint())
    assert secret not in recorded and s3_server.key not in recorded
    messages = []
    for data, variable in [
        (url, "missing"),
        (s3_server.url("no-such-store.zarr"), "X"),
        (f"s3://no-such-bucket-{tmp_path.name}/x.zarr", "X"),
        (f"s3://{s3_server.key}:{secret}@{s3_server.bucket}/blobs.zarr", "X"),
        (f"s3://{s3_server.key}:{secret}-in-url@{s3_server.bucket}/blobs.zarr", "X"),
        (_unwritten_on_s3(s3_server, tmp_path, blobs_small), "X"),
    ]:
        with pytest.raises((KeyError, FileNotFoundError, ValueError)) as caught:
            as_samples(data, variable=variable, storage_options=options)
        messages.append(str(caught.value))
    assert "has no variable 'missing'" in messages[0]
    assert "does not exist" in messages[1]
    assert f"s3://{s3_server.bucket}/blobs.zarr" in messages[3]
    assert all(secret not in message for message in messages), messages
    assert "-in-url" not in messages[4] and s3_server.key not in messages[4]


def test_a_url_whose_filesystem_is_not_installed_names_the_package(monkeypatch):
    registry = importlib.import_module("fsspec.registry")  # fsspec.registry is a mapping
    monkeypatch.delitem(registry._registry, "gs", raising=False)
    monkeypatch.setitem(
        registry.known_implementations,
        "gs",
        {"class": "dem_absent_gcsfs.GCSFileSystem", "err": "Please install gcsfs"},
    )
    with pytest.raises(
        ImportError, match=r"gs://.*pip install 'dem\[cloud\]' \(or pip install gcsfs\)"
    ):
        as_samples("gs://bucket/data.zarr", variable="X")


def test_a_url_of_an_unknown_scheme_is_refused_by_name():
    with pytest.raises(ValueError, match=r"no filesystem for the scheme 'nosuchfs'"):
        as_samples("nosuchfs://bucket/data.zarr", variable="X")


def test_a_memory_url_is_read_like_a_local_store(blobs_small):
    url = "memory://dem-test-object-storage/blobs.zarr"
    group = zarr.open_group(url, mode="w")
    group.create_array("X", data=blobs_small, chunks=(ROWS_PER_CHUNK, 3))
    try:
        samples = as_samples(url, variable="X")
        assert samples.source == f"{url}::X" and samples.kind == "zarr"
        np.testing.assert_array_equal(samples.array.compute(), blobs_small)
    finally:
        fsspec.filesystem("memory").rm("/dem-test-object-storage", recursive=True)


def test_a_zarr_group_or_array_is_read_read_only_with_its_location(tmp_path, blobs_small):
    path = tmp_path / "blobs.zarr"
    _write_local(path, blobs_small)
    group = zarr.open_group(path, mode="a")
    by_group = as_samples(group, variable="X")
    by_array = as_samples(group["X"])
    for samples in (by_group, by_array):
        assert samples.source == f"{os.path.realpath(path)}::X" and samples.kind == "zarr"
        np.testing.assert_array_equal(samples.array.compute(), blobs_small)
    in_memory = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    in_memory.create_array("X", data=blobs_small, chunks=(ROWS_PER_CHUNK, 3))
    assert as_samples(in_memory, variable="X").source is None


def test_storage_options_are_ignored_for_a_local_path(tmp_path, blobs_small):
    path = tmp_path / "blobs.zarr"
    _write_local(path, blobs_small)
    samples = as_samples(str(path), variable="X", storage_options={"secret": "unused-secret"})
    assert samples.source == f"{os.path.realpath(path)}::X"
    np.testing.assert_array_equal(samples.array.compute(), blobs_small)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("s3://AKIAX:s3cr3t@bucket/a/./b/../data.zarr/", "s3://bucket/a/data.zarr"),
        ("S3://bucket/data.zarr?X-Amz-Signature=abc&token=t0k#frag", "s3://bucket/data.zarr"),
        ("gs://bucket/data.zarr?access_token=ya29", "gs://bucket/data.zarr"),
        ("abfs://box@account.dfs.core.windows.net/d.zarr", "abfs://box@account.dfs.core.windows.net/d.zarr"),
        ("abfs://user:pw@box/d.zarr", "abfs://box/d.zarr"),
        ("simplecache::s3://k:s@bucket/d.zarr", "simplecache::s3://bucket/d.zarr"),
        ("memory://x/d.zarr", "memory://x/d.zarr"),
        ("s3://bucket", "s3://bucket"),
    ],
)  # fmt: skip
def test_location_spells_a_url_one_way_without_credentials(given, expected):
    assert location(given) == expected


def test_location_of_local_paths_is_absolute_with_links_resolved(tmp_path, monkeypatch):
    real = tmp_path / "real.zarr"
    real.mkdir()
    (tmp_path / "link.zarr").symlink_to(real)
    monkeypatch.chdir(tmp_path)
    expected = os.path.realpath(real)
    for spelling in ("real.zarr", "./link.zarr", f"file://{tmp_path}/link.zarr", real):
        assert location(spelling) == expected


def test_secrets_are_every_credential_string_of_the_options():
    options = {
        "key": "AKIAX",
        "secret": "s3cr3t-value",
        "endpoint_url": "http://127.0.0.1:9",
        "client_kwargs": {"aws_session_token": "tok-123"},
        "anon": False,
    }
    assert secrets(options) == ["s3cr3t-value", "tok-123", "AKIAX"]
    assert sorted(secrets(None, "s3://user1:pass1@bucket/x")) == ["pass1", "user1"]
    assert secrets(None, "abfs://box@account/x") == []


# Last: the cluster becomes the default scheduler of the tests after it (module scope).
def test_a_fit_from_s3_on_a_cluster_of_processes_has_the_bits_of_the_local_fit(
    s3_server, s3_store, blobs_small, process_client
):
    """The store travels to worker processes (pickled with its options) and reads there."""
    local, url = s3_store
    from_disk = _fit(str(local), blobs_small, variable="X", persist=False)
    on_s3 = open_store(url, s3_server.options)
    _same_bits(_fit(on_s3, blobs_small, variable="X", persist=False), from_disk)
