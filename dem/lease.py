"""An exclusive lock on object storage: numbered lease objects created conditionally.

Object stores have neither ``O_EXCL`` nor an atomic rename, so the local lock file of
:mod:`dem.checkpoint` does not carry over. What they have (S3 since 2024, GCS, Azure) is a
conditional create: a ``PUT`` with ``If-None-Match: *`` (GCS ``ifGenerationMatch=0``)
succeeds for exactly one of several writers of one new key. The lock of the checkpoint
at ``URL`` is built on that alone::

    URL.lock/000000000000.json     generation 0: {"token", "host", "pid", "expires", ...}
    URL.lock/000000000001.json     generation 1, created by whoever took over generation 0

* **Acquire**: list the generations; with none, create generation 0. The newest one held
  by a client whose lease has not expired refuses the fit. A released or expired one is
  followed by creating the next generation; an expired one is taken over with a warning.
  The create is conditional, so of several clients racing for one generation exactly one
  succeeds; the others look again and find it held.
* **Lease**: the holder renews its ``expires`` (``now + lease``) every quarter of the
  lease from a background thread; a client killed (or cut off) stops renewing and its
  lock can be taken over once the lease has run out. Clients must agree on the time to
  within a fraction of the lease (NTP does).
* **Checks**: before each iteration is committed, the holder confirms that the newest
  generation is still its own and that it renewed within the lease; if another client
  took over, it stops with :class:`LeaseLost` instead of writing.
* **Release**: the holder deletes its generation (older ones are deleted by whoever
  creates a newer one).

Taking over never overwrites another client's object, so it needs no compare-and-swap;
only the conditional create must be atomic. The holder's renewal is conditional on its
object's ETag (``If-Match``) on S3, so a client that was taken over can never bring its
deleted object back.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

DEFAULT_LEASE_S = 60.0
"""How long a lock lasts without renewal, in seconds (``DEM_CHECKPOINT_LEASE_S`` overrides)."""

_GENERATION = re.compile(r"(\d{12})\.json")
_MEMORY_LOCK = threading.Lock()  # memory:// lives in this process: a mutex makes it atomic


class LeaseHeld(Exception):
    """Another live client holds the lock; ``holder`` is its record."""

    def __init__(self, holder: dict[str, Any]) -> None:
        super().__init__(f"held by process {holder.get('pid')} on {holder.get('host')}")
        self.holder = holder


class LeaseLost(Exception):
    """This client's lock was taken over, or not renewed within its lease."""


class ConditionalCreateUnsupported(Exception):
    """The filesystem offers no atomic create-if-absent that dem knows of."""


def lease_seconds() -> float:
    """The lease: ``DEM_CHECKPOINT_LEASE_S`` from the environment, else :data:`DEFAULT_LEASE_S`."""
    text = os.environ.get("DEM_CHECKPOINT_LEASE_S")
    if not text:
        return DEFAULT_LEASE_S
    value = float(text)
    if not value > 0:
        raise ValueError(
            f"DEM_CHECKPOINT_LEASE_S must be a positive number of seconds; got {text!r}"
        )
    return value


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return tuple(protocol) if isinstance(protocol, tuple | list) else (protocol,)


def supports_conditional_create(fs: Any) -> bool:
    """Whether ``fs`` creates a file atomically only if it is absent (``mode="create"``).

    True for s3fs (``If-None-Match: *``), for ``memory://`` (made atomic by a mutex) and for
    a filesystem whose own ``pipe_file`` takes ``mode`` (gcsfs and adlfs map it onto GCS
    and Azure preconditions). fsspec's generic fallback checks and then writes, which is
    not atomic: a filesystem that only inherits it is refused.
    """
    if "memory" in _protocols(fs) or "s3" in _protocols(fs):
        return True
    for name in ("_pipe_file", "pipe_file"):
        owner = next((k for k in type(fs).__mro__ if name in k.__dict__), None)
        if owner is None or owner.__module__.startswith("fsspec."):
            continue
        if "mode" in inspect.signature(getattr(fs, name)).parameters:
            return True
    return False


def create_exclusively(fs: Any, path: str, content: bytes) -> str | bool | None:
    """Create ``path`` holding ``content`` if it does not exist: its ETag where the store
    gives one (else None), or False when ``path`` exists."""
    try:
        if "memory" in _protocols(fs):
            with _MEMORY_LOCK:
                if fs.exists(path):
                    return False
                fs.pipe_file(path, content)
                return None
        return _etag(fs.pipe_file(path, content, mode="create"))
    except FileExistsError:
        return False


def _etag(response: Any) -> str | None:
    """The ETag of an s3fs put's response (None from other filesystems)."""
    return str(response["ETag"]) if isinstance(response, dict) and "ETag" in response else None


def overwrite_own(fs: Any, path: str, content: bytes, etag: str | None, token: str) -> str | None:
    """Replace ``path`` (this client's object, last written with ``etag``) by ``content``
    only if it is still that object: conditionally on the ETag on S3 (``If-Match``), under
    the mutex for ``memory://``; elsewhere unconditionally. Returns the new ETag.

    Raises LeaseLost when the object was removed or replaced by another client.
    """
    try:
        if "memory" in _protocols(fs):
            with _MEMORY_LOCK:
                holder = _parse(_read(fs, path))
                if holder is None or holder.get("token") != token:
                    raise LeaseLost("its lock object was removed or replaced")
                fs.pipe_file(path, content)
                return None
        if "s3" in _protocols(fs) and etag is not None:
            return _etag(fs.pipe_file(path, content, IfMatch=etag))
        return _etag(fs.pipe_file(path, content))
    except FileNotFoundError as exc:
        raise LeaseLost("its lock object was removed") from exc


def _record(token: str, generation: int, lease: float) -> dict[str, Any]:
    return {
        "token": token,
        "generation": generation,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": time.time(),
        "expires": time.time() + lease,
        "lease": lease,
    }


def _parse(content: bytes | None) -> dict[str, Any] | None:
    if content is None:
        return None
    try:
        record = json.loads(content)
        float(record["expires"])
        str(record["token"])
    except (ValueError, KeyError, TypeError):
        return None
    return dict(record)


@dataclass
class Lease:
    """A held lock on object storage (see the module's docstring). Use :meth:`acquire`."""

    fs: Any
    folder: str
    token: str
    generation: int
    lease: float
    renewed: float = field(default_factory=time.monotonic)
    lost: str | None = None
    etag: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def path(self) -> str:
        """The object of this client's generation."""
        return _object(self.folder, self.generation)

    @classmethod
    def acquire(
        cls, fs: Any, folder: str, lease: float | None = None
    ) -> tuple[Lease, dict[str, Any] | None]:
        """Lock ``folder`` (a path on ``fs``): (the lease, the record of a stale holder
        taken over, or None).

        Raises
        ------
        LeaseHeld
            A client whose lease has not expired holds it.
        ConditionalCreateUnsupported
            ``fs`` has no atomic create-if-absent.
        """
        if not supports_conditional_create(fs):
            raise ConditionalCreateUnsupported(type(fs).__name__)
        lease = lease_seconds() if lease is None else lease
        token = uuid.uuid4().hex
        for _ in range(100):
            generations = _generations(fs, folder)
            stale = None
            if generations:
                newest = generations[-1]
                content = _read(fs, _object(folder, newest))
                if content is None:
                    continue  # released (deleted) meanwhile: look again
                holder = _parse(content)
                if holder is not None and float(holder["expires"]) > time.time():
                    raise LeaseHeld(holder)
                stale = holder if holder is not None else {"pid": "?", "host": "?"}
            generation = generations[-1] + 1 if generations else 0
            content = json.dumps(_record(token, generation, lease)).encode()
            created = create_exclusively(fs, _object(folder, generation), content)
            if created is not False:
                etag = created if isinstance(created, str) else None
                taken = cls(fs, folder, token, generation, lease, etag=etag)
                for older in generations:
                    with contextlib.suppress(FileNotFoundError, OSError):
                        fs.rm_file(_object(folder, older))
                taken._start()
                return taken, stale
            time.sleep(0.01)  # another client created it first: look at what it holds
        raise LeaseHeld({"pid": "?", "host": "?"})

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._renew_until_stopped, daemon=True)
        self._thread.start()

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.lease / 4):
            try:
                self.renew()
            except LeaseLost as exc:
                self.lost = str(exc)
                return
            except Exception:  # a network hiccup: try again; check() sees the lease age
                continue

    def renew(self) -> None:
        """Extend the lease by ``lease`` seconds from now (LeaseLost when taken over)."""
        self._confirm()
        started = time.monotonic()
        record = json.dumps(_record(self.token, self.generation, self.lease)).encode()
        self.etag = overwrite_own(self.fs, self.path, record, self.etag, self.token)
        self.renewed = started

    def _confirm(self) -> None:
        newest = _generations(self.fs, self.folder)
        holder = _parse(_read(self.fs, _object(self.folder, newest[-1]))) if newest else None
        if holder is None or holder.get("token") != self.token:
            who = (
                f"process {holder.get('pid')} on {holder.get('host')}"
                if holder is not None
                else "another client (or it was removed)"
            )
            raise LeaseLost(f"the lock was taken over by {who}")

    def check(self) -> None:
        """Raise LeaseLost unless this client still holds the lock with a live lease."""
        if self.lost is not None:
            raise LeaseLost(self.lost)
        age = time.monotonic() - self.renewed
        if age > self.lease / 2:  # renewed every quarter lease: half a lease is a margin
            raise LeaseLost(f"it was last renewed {age:.0f} s ago, past its {self.lease:g} s lease")
        self._confirm()

    def release(self) -> None:
        """Stop renewing and delete this generation if it is still this client's."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.lease)
        holder = _parse(_read(self.fs, self.path))
        if holder is not None and holder.get("token") == self.token:
            with contextlib.suppress(FileNotFoundError, OSError):
                self.fs.rm_file(self.path)


def _object(folder: str, generation: int) -> str:
    return f"{folder}/{generation:012d}.json"


def _generations(fs: Any, folder: str) -> list[int]:
    """The generations present under ``folder``, oldest first."""
    with contextlib.suppress(Exception):
        fs.invalidate_cache(folder)
    try:
        names = fs.ls(folder, detail=False)
    except FileNotFoundError:
        return []
    found = (_GENERATION.fullmatch(str(name).rstrip("/").rsplit("/", 1)[-1]) for name in names)
    return sorted(int(m.group(1)) for m in found if m is not None)


def _read(fs: Any, path: str) -> bytes | None:
    try:
        return bytes(fs.cat_file(path))
    except FileNotFoundError:
        return None
