"""Where a Zarr store is, and how dem opens one to read: local paths, fsspec URLs, stores.

dem reads its inputs from a local directory, a ``.zip`` file, or any fsspec URL
(``s3://``, ``gs://``, ``az://``, ``abfs://``, ``file://``, ``memory://``, ...), with
``storage_options`` handed to the filesystem (credentials, an endpoint). Without options
the filesystem finds credentials where it always does (environment variables, config
files, instance metadata). Every store is opened read-only.

:func:`location` spells a location one way and without credentials: it is what dem
records as an input's source (in a checkpoint's data fingerprint) and names in messages.
"""

from __future__ import annotations

import os
import posixpath
import zipfile
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import fsspec
import zarr
from zarr.abc.store import Store

AZURE_SCHEMES = frozenset({"az", "abfs", "abfss", "adl"})
"""Schemes whose ``container@account`` names a place, not a user."""

FILESYSTEM_PACKAGES = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
    "adl": "adlfs",
}
"""The package that provides each cloud scheme's fsspec filesystem (all in ``dem[cloud]``)."""


def is_url(path_or_url: str | os.PathLike[str]) -> bool:
    """Whether ``path_or_url`` is a URL (``scheme://...``) rather than a local path."""
    return "://" in os.fspath(path_or_url)


def location(path_or_url: str | os.PathLike[str]) -> str:
    """``path_or_url`` as one canonical string that holds no credentials.

    A local path (or a ``file://`` URL) becomes an absolute path with symbolic links
    resolved. Another URL becomes ``scheme://host/path``: the scheme in lower case, the
    path normalised (``a/./b/../c`` is ``a/c``, no trailing ``/``), and the user name,
    password, query string (tokens, signatures) and fragment dropped. Azure's
    ``container@account`` is kept (it names the place). Chained URLs
    (``simplecache::s3://...``) have each link spelled so.

    Parameters
    ----------
    path_or_url : str or os.PathLike
        A local path or an fsspec URL.

    Returns
    -------
    str
        Two spellings of one location give the same string.
    """
    text = os.fspath(path_or_url)
    if "::" in text:  # fsspec's chain: protocols (or URLs) first, the target last
        *links, target = text.split("::")
        return "::".join([*(link if not is_url(link) else location(link) for link in links),
                          location(target)])  # fmt: skip
    if not is_url(text):
        return os.path.realpath(os.path.abspath(os.path.expanduser(text)))
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in ("file", "local"):
        host = "" if parts.hostname in (None, "localhost") else parts.netloc
        return os.path.realpath(unquote(host + parts.path) or "/")
    path = posixpath.normpath(parts.path) if parts.path else ""
    return f"{scheme}://{_host(scheme, parts.netloc)}{'' if path in ('', '/', '.') else path}"


def _host(scheme: str, netloc: str) -> str:
    """``netloc`` without ``user:password@`` (Azure's ``container@account`` kept)."""
    user, at, host = netloc.rpartition("@")
    if not at or (scheme in AZURE_SCHEMES and ":" not in user):
        return netloc
    return host


def store_location(store: Store, path: str = "") -> str | None:
    """Where the node at ``path`` inside ``store`` lies (see :func:`location`), or None
    when the store cannot say (``zarr.storage.MemoryStore``, an fsspec Zip archive: pass
    the URL to have the location recorded)."""
    root = _store_root(store)
    if root is None:
        return None
    return location(posixpath.join(root, path) if path else root)


def _store_root(store: Store) -> str | None:
    if isinstance(store, zarr.storage.LocalStore):
        return os.fspath(store.root)
    if isinstance(store, zarr.storage.ZipStore):
        return os.fspath(store.path)
    if isinstance(store, zarr.storage.FsspecStore) and not _is_archive(store.fs):
        return str(store.fs.unstrip_protocol(store.path))
    return None


def _is_archive(fs: Any) -> bool:
    """Whether ``fs`` (or the filesystem it wraps) reads inside an archive: its paths
    do not say where the archive is."""
    inner = getattr(fs, "sync_fs", fs)
    return "zip" in (inner.protocol if isinstance(inner.protocol, tuple) else (inner.protocol,))


def check_filesystem(url: str) -> None:
    """Raise ImportError naming the package to install when ``url``'s fsspec filesystem
    is missing, or ValueError when no fsspec filesystem knows its scheme."""
    scheme = urlsplit(url.split("::")[0]).scheme.lower()
    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError as exc:
        package = FILESYSTEM_PACKAGES.get(scheme)
        install = (
            f"pip install 'dem[cloud]' (or pip install {package})"
            if package
            else "install the fsspec filesystem package for it"
        )
        raise ImportError(
            f"Reading {location(url)!r} needs the fsspec filesystem for {scheme}://, which "
            f"is not installed: {install}."
        ) from exc
    except ValueError as exc:
        raise ValueError(
            f"{location(url)!r}: fsspec knows no filesystem for the scheme {scheme!r}. Use "
            "a local path or a URL fsspec reads (s3://, gs://, az://, abfs://, file://, "
            "memory://, ...); see fsspec.available_protocols()."
        ) from exc


def open_store(
    path_or_url: str | os.PathLike[str] | Store,
    storage_options: Mapping[str, Any] | None = None,
) -> Store:
    """A read-only Zarr store for a local path, an fsspec URL, or a store.

    Parameters
    ----------
    path_or_url : str, os.PathLike or zarr.abc.store.Store
        A directory, a ``.zip`` file, an fsspec URL (one whose path ends in ``.zip`` is
        read as a Zip archive), or a store (returned read-only).
    storage_options : mapping, optional
        Passed to the URL's fsspec filesystem (``key``, ``secret``, ``endpoint_url``,
        ``token``, ``anon``, ...). Without them the filesystem finds credentials in its
        usual places. Ignored for local paths and stores.

    Returns
    -------
    zarr.abc.store.Store

    Raises
    ------
    FileNotFoundError
        A local path that does not exist.
    ImportError
        A URL whose filesystem package is not installed (the message names it).
    ValueError
        A URL of a scheme fsspec does not know.
    """
    if isinstance(path_or_url, Store):
        return read_only(path_or_url)
    text = os.fspath(path_or_url)
    if is_url(text) and urlsplit(text).scheme.lower() not in ("file", "local"):
        check_filesystem(text)
        if urlsplit(text).path.lower().endswith(".zip"):
            return _zip_at(text, storage_options)
        return zarr.storage.FsspecStore.from_url(
            text, storage_options=dict(storage_options or {}), read_only=True
        )
    local = location(text)
    if not os.path.exists(local):
        raise FileNotFoundError(f"Zarr store {local!r} does not exist.")
    if zipfile.is_zipfile(local):
        return zarr.storage.ZipStore(local, mode="r")
    return zarr.storage.LocalStore(local, read_only=True)


def _zip_at(url: str, storage_options: Mapping[str, Any] | None) -> Store:
    """A read-only store on the Zip archive at ``url`` (read through fsspec's zip
    filesystem: its directory once, then each member by byte range)."""
    from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper
    from fsspec.implementations.zip import ZipFileSystem

    archive = ZipFileSystem(fo=url, target_options=dict(storage_options or {}))
    return zarr.storage.FsspecStore(
        AsyncFileSystemWrapper(archive, asynchronous=True), path="", read_only=True
    )


def read_only(store: Store) -> Store:
    """``store`` as a read-only store (itself when it already is, or cannot say)."""
    if store.read_only:
        return store
    try:
        return store.with_read_only(True)
    except NotImplementedError:
        return store


NOT_SECRET = frozenset({"endpoint_url", "region_name", "region", "profile", "project"})
"""``storage_options`` keys whose values may be shown in messages."""


def secrets(storage_options: Mapping[str, Any] | None, url: object = None) -> list[str]:
    """Every string in ``storage_options`` (nested mappings included) that may be a
    credential (four characters or more), and the user name and password written into
    ``url``, longest first: what must never appear in a message or a record."""
    found: list[str] = []
    for key, value in (storage_options or {}).items():
        if isinstance(value, Mapping):
            found.extend(secrets(value))
        elif isinstance(value, str) and len(value) >= 4 and key not in NOT_SECRET:
            found.append(value)
    if isinstance(url, str | os.PathLike):
        found.extend(_userinfo(os.fspath(url)))
    return sorted(set(found), key=len, reverse=True)


def _userinfo(text: str) -> list[str]:
    """The user name and password of each link of a URL (Azure's container excepted)."""
    found: list[str] = []
    for link in text.split("::"):
        if is_url(link):
            parts = urlsplit(link)
            if _host(parts.scheme.lower(), parts.netloc) != parts.netloc:
                found.extend(part for part in (parts.username, parts.password) if part)
    return found


def is_remote(path_or_url: str | os.PathLike[str]) -> bool:
    """Whether ``path_or_url`` is a URL of a filesystem other than the local one
    (``file://`` and ``local://`` URLs are local paths)."""
    text = os.fspath(path_or_url)
    return is_url(text) and urlsplit(text.split("::")[-1]).scheme.lower() not in ("file", "local")


def local_path(path_or_url: str | os.PathLike[str]) -> str:
    """A local path, or ``file://`` URL, as a path (unchanged when it is a path)."""
    text = os.fspath(path_or_url)
    return location(text) if is_url(text) else text


def writable(url: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str, Store]:
    """For a remote ``url`` that dem writes (a checkpoint, an output): its synchronous
    fsspec filesystem, the path on it, and a writable Zarr store on it.

    Raises ImportError naming the package to install when the filesystem is missing.
    """
    check_filesystem(url)
    options = dict(storage_options or {})
    fs, root = fsspec.core.url_to_fs(url, **options)
    store = zarr.storage.FsspecStore.from_url(url, storage_options=options, read_only=False)
    return fs, str(root).rstrip("/"), store


def redact(text: str, storage_options: Mapping[str, Any] | None, url: object = None) -> str:
    """``text`` with every secret of ``storage_options`` and ``url`` (see :func:`secrets`)
    replaced by ``***``."""
    for secret in secrets(storage_options, url):
        text = text.replace(secret, "***")
    return text


def masked(storage_options: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``storage_options`` with every value that may be a credential (see :func:`secrets`)
    shown as ``***``: what a repr or a notebook displays."""
    if storage_options is None:
        return None
    hidden = set(secrets(storage_options))
    return {
        key: masked(value)
        if isinstance(value, Mapping)
        else "***"
        if isinstance(value, str) and value in hidden
        else value
        for key, value in storage_options.items()
    }
