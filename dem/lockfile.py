"""The lock of a checkpoint on a local disk: the file ``<path>.lock`` beside the store.

It is created in one step with its content (exclusive create), names its holder (host,
process id, a unique token), and a stale one (its process is dead on this host) is taken
over atomically: of any number of processes racing for one stale lock exactly one wins
(a claim file created exclusively, then an atomic replace). On object storage the lock
is a lease of :mod:`dem.lease` instead.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import socket
import time
import uuid
import warnings
from typing import Any

from dem.errors import CheckpointError, CheckpointLockedError, CheckpointWriteError


def lock_path(path: str | os.PathLike[str]) -> str:
    """The lock file of the checkpoint at ``path``: ``<path>.lock``, beside the store."""
    return os.fspath(path).rstrip("/\\") + ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _lock_record() -> bytes:
    """What a lock (or a takeover claim) holds: who, where, since when, and a unique token."""
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.time(),
        "token": uuid.uuid4().hex,
    }
    return json.dumps(record).encode()


def _holder(content: bytes) -> dict[str, Any] | None:
    """The record in a lock or claim, or None when it cannot be read as one."""
    try:
        holder = json.loads(content)
        return {"pid": int(holder["pid"]), "host": str(holder["host"]), **holder}
    except (ValueError, KeyError, TypeError):
        return None


def _is_live(holder: dict[str, Any] | None) -> bool:
    """Whether ``holder`` may still be running: alive here, or on another host (unknowable)."""
    if holder is None:
        return False
    return holder["host"] != socket.gethostname() or _alive(holder["pid"])


def _read(path: str) -> bytes | None:
    """The bytes of ``path``, or None when it does not exist (any more)."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _write_new(path: str, content: bytes) -> None:
    """Write ``content`` to a file ``path`` that must not exist yet (removed if a write fails)."""
    descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(descriptor, view) :]
    except BaseException:
        os.close(descriptor)
        os.remove(path)
        raise
    os.close(descriptor)


def _create_exclusively(target: str, content: bytes) -> bool:
    """Create ``target`` holding ``content`` in one step; False when it exists already.

    The content goes to a uniquely named file first, which is then hard-linked to
    ``target``; the link fails if ``target`` exists, so no reader ever sees a partly
    written file and exactly one of several creators succeeds.
    """
    staged = f"{target}.{uuid.uuid4().hex}.tmp"
    _write_new(staged, content)
    try:
        os.link(staged, target)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        try:  # a file system without hard links: create and write (not atomic for readers)
            _write_new(target, content)
        except FileExistsError:
            return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(staged)
    return True


def _claim_name(lock: str, identity: bytes) -> str:
    return f"{lock}.takeover-{hashlib.sha256(identity).hexdigest()[:24]}"


def _take_over(lock: str, stale: bytes, mine: bytes) -> bool:
    """Replace the stale lock whose bytes are ``stale`` by ``mine``; False if another
    process is doing so (or did).

    The takeover is claimed first, by creating a claim file named after the stale
    lock's bytes (exclusively, as the lock itself): of several processes that found
    the same stale lock exactly one creates the claim. It then checks that the lock
    still holds ``stale`` and replaces it atomically (``os.replace``). A claim left by
    a taker that died is passed over by claiming the pair (stale lock, dead claim).
    """
    identity, claims = stale, []
    while True:
        claim = _claim_name(lock, identity)
        if _create_exclusively(claim, mine):
            claims.append(claim)
            break
        other = _read(claim)
        taker = None if other is None else _holder(other)
        if other is None or _is_live(taker):
            return False  # another process is taking over, or has done so
        claims.append(claim)  # its taker died mid-takeover
        identity += other
    try:
        if _read(lock) != stale:
            return False
        staged = f"{lock}.{uuid.uuid4().hex}.tmp"
        try:
            _write_new(staged, mine)
            os.replace(staged, lock)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(staged)
        return True
    finally:
        for claim in claims:
            with contextlib.suppress(FileNotFoundError):
                os.remove(claim)


def _acquire(path: str) -> tuple[str, str]:
    """Lock the checkpoint at ``path``: (lock file, this holder's token).

    The lock file ``<path>.lock`` is created in one step with its content (see
    :func:`_create_exclusively`). A lock whose holder is alive on this host, or that was
    written on another host (whose processes cannot be checked), is refused. A lock
    whose holder is dead (or that cannot be read) is taken over with a warning, by
    :func:`_take_over`: of any number of processes racing for one stale lock, one wins.

    The scheme asks of the storage only an exclusive create and an atomic replace, so
    it maps onto object storage: the exclusive create is a conditional put
    (``If-None-Match: *``), and the check-then-replace a compare-and-swap on the stale
    lock object (``If-Match`` on its ETag), which makes the claim unnecessary there.
    """
    lock = lock_path(path)
    if os.path.isdir(lock):
        raise CheckpointError(
            f"The lock path {lock!r} of checkpoint {path!r} is a folder, not a lock file; "
            "dem did not write it. Move or remove that folder, or choose another checkpoint."
        )
    mine = _lock_record()
    token = json.loads(mine)["token"]
    for _ in range(100):
        try:
            if _create_exclusively(lock, mine):
                return lock, token
            stale = _read(lock)
            if stale is None:
                continue  # released meanwhile
            holder = _holder(stale)
            if _is_live(holder):
                assert holder is not None
                raise CheckpointLockedError(
                    f"Checkpoint {path!r} is in use by process {holder['pid']} on "
                    f"{holder['host']} (lock file {lock!r}). Wait for that fit to finish or "
                    "stop it; if it is gone (for example its machine died), delete the lock "
                    "file and resume."
                )
            if _take_over(lock, stale, mine):
                warnings.warn(
                    f"Checkpoint {path!r}: taking over the stale lock {lock!r} "
                    + (
                        f"of process {holder['pid']}, which is no longer running."
                        if holder is not None
                        else "(unreadable)."
                    ),
                    UserWarning,
                    stacklevel=4,
                )
                return lock, token
        except OSError as exc:
            raise CheckpointWriteError(
                f"Could not create the lock file {lock!r} of checkpoint {path!r}: "
                f"{exc.strerror or exc}. Free space (or fix the folder's permissions) and "
                "start again."
            ) from exc
        time.sleep(0.01)  # another process is taking the stale lock over: look again
    raise CheckpointLockedError(
        f"Could not lock checkpoint {path!r}: another fit keeps taking {lock!r}."
    )


def _release(lock: str, token: str) -> None:
    """Remove ``lock`` if this holder (``token``) still holds it."""
    content = _read(lock) if not os.path.isdir(lock) else None
    holder = None if content is None else _holder(content)
    if holder is not None and holder.get("token") == token:
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock)
