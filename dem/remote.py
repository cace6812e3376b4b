"""Checkpoints on object storage: opening one to write (locked by a lease of
:mod:`dem.lease`) or to read, through fsspec with the checkpoint's ``storage_options``.

Messages name the checkpoint by :func:`dem.storage.location` (no credentials) and pass
the filesystem's errors through :func:`dem.storage.redact`.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from typing import Any

import zarr

from dem import lease, storage
from dem.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointLockedError,
    CheckpointMismatchError,
    CheckpointWriteError,
    _validate_header,
)


def open_for_reading(
    path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
) -> tuple[zarr.Group, str, tuple[Any, str] | None]:
    """The root group of the checkpoint at ``path`` (a path or URL), read-only; the
    location to name in messages (without credentials); and, on object storage, its
    filesystem and the path on it.

    Raises FileNotFoundError when there is no checkpoint there.
    """
    path = storage.local_path(path)
    if not storage.is_remote(path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"Checkpoint {path!r} does not exist.")
        return zarr.open_group(path, mode="r"), path, None
    shown = storage.location(path)
    fs, where, store = storage.writable(path, storage_options)
    if not fs.exists(f"{where}/zarr.json"):
        raise FileNotFoundError(f"Checkpoint {shown!r} does not exist.")
    return zarr.open_group(storage.read_only(store), mode="r"), shown, (fs, where)


def open_remote(
    cls: type[Checkpoint],
    url: str,
    header: dict[str, Any],
    resume: bool,
    storage_options: dict[str, Any] | None,
) -> Checkpoint:
    """:meth:`Checkpoint.open` for a checkpoint on object storage (locked by a lease)."""
    shown = storage.location(url)
    fs, where, store = storage.writable(url, storage_options)
    exists = fs.exists(f"{where}/zarr.json")
    if exists and not resume:
        raise FileExistsError(
            f"Checkpoint {shown!r} already exists. Pass resume=True to continue that "
            "fit, or choose another path (or delete it) to start afresh."
        )
    held = _lease(fs, where, shown)
    try:
        if exists:
            try:
                root = zarr.open_group(store, mode="r+")
            except Exception as exc:  # zarr raises several types for unreadable stores
                raise CheckpointMismatchError(
                    f"{shown!r} is not a readable dem checkpoint (its root metadata are "
                    "missing or damaged). Start a new fit with another checkpoint."
                ) from exc
            _validate_header(shown, dict(root.attrs).get("dem"), header)
        else:
            try:
                root = zarr.open_group(store, mode="w-")
                root.attrs["dem"] = header
            except OSError as exc:
                with contextlib.suppress(OSError):
                    fs.rm(where, recursive=True)
                raise CheckpointWriteError(
                    f"Could not create checkpoint {shown!r}: "
                    f"{storage.redact(str(exc), storage_options, url)}. Fix the bucket's "
                    "permissions (or the storage options) and start again."
                ) from exc
    except BaseException:
        held.release()
        raise
    return cls(root, shown, held, (fs, where))


def _lease(fs: Any, where: str, shown: str) -> lease.Lease:
    """The lock of the checkpoint ``shown`` at ``where`` on ``fs`` (see :mod:`dem.lease`)."""
    folder = f"{where}.lock"
    try:
        held, stale = lease.Lease.acquire(fs, folder)
    except lease.ConditionalCreateUnsupported as exc:
        raise CheckpointError(
            f"Checkpoint {shown!r}: its filesystem ({exc}) offers no atomic create-if-absent, "
            "so two fits could not be kept apart. Use s3:// (or gs://, az:// with gcsfs, "
            "adlfs), a local path, or checkpoint=None."
        ) from exc
    except lease.LeaseHeld as exc:
        holder = exc.holder
        raise CheckpointLockedError(
            f"Checkpoint {shown!r} is in use by process {holder.get('pid')} on "
            f"{holder.get('host')} (its lease object under {shown + '.lock'!r} expires in "
            f"{max(0.0, float(holder.get('expires', 0)) - time.time()):.0f} s). Wait for that "
            "fit to finish or stop it; a fit that died is taken over once its lease expires."
        ) from exc
    if stale is not None:
        warnings.warn(
            f"Checkpoint {shown!r}: taking over the lock of process {stale.get('pid')} on "
            f"{stale.get('host')}, whose lease expired (it stopped renewing it).",
            UserWarning,
            stacklevel=5,
        )
    return held
