"""Zarr-backed parameter checkpoints.

Layout of a checkpoint store::

    fit.zarr/                      root group; attrs["dem"] = model, config, fingerprint
      run-0/                       one group per restart (n_init)
        iter-000000/               the initial parameters
        iter-000001/               parameters after the M-step of iteration 1
          <param arrays>           with dimension names, so xarray reads them
          attrs: iteration, loglik, converged, checksum, complete

An iteration is written first and marked ``complete`` (with a SHA-256 checksum of its
arrays) last; the root's ``latest`` marker advances only after that. Readers trust
only complete iterations whose checksum matches, so an interrupted write leaves the
previous iteration as the latest. A checkpoint holds arrays and JSON only.

A checkpoint may be a local path or an fsspec URL (``s3://``, ``gs://``, ``az://``,
``memory://``, ``file://``) with its own ``storage_options``. On a local disk the lock is
the file ``<path>.lock`` (exclusive create, atomic replace, holder checked by process
id); on object storage it is a lease of :mod:`dem.lease` (conditional creates). Each
object a store writes is atomic there, so the order above (arrays, then the iteration's
attributes, then ``latest``) makes an iteration visible only once complete as on disk.
Options (credentials) are never written into a checkpoint nor named in a message.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import warnings
import weakref
import zlib
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
import zarr
from scipy import sparse

from dem import lease, storage
from dem.errors import (
    CheckpointError,
    CheckpointLockedError,
    CheckpointMismatchError,
    CheckpointWriteError,
)
from dem.lockfile import _acquire, _release
from dem.model import Params
from dem.paths import check_apart, resolved_source, source_location

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Restored:
    """The state of a run as read back from its latest complete iteration."""

    iteration: int
    params: Params
    lower_bounds: list[float]
    converged: bool
    steps: list[int]  # the iteration number of each entry of lower_bounds


def _checksum(params: Params) -> str:
    digest = hashlib.sha256()
    for name in sorted(params):
        value = np.ascontiguousarray(params[name])
        digest.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _normalised(value: Any) -> Any:
    """JSON round trip, so tuples and lists (and numpy scalars) compare equal."""
    return json.loads(
        json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    )


class Checkpoint:
    """A checkpoint store for one fit (all its restarts).

    Use :meth:`open` to create or resume one (it holds the checkpoint's lock until
    :meth:`close`); :func:`load_checkpoint` to read one.
    """

    def __init__(
        self,
        root: zarr.Group,
        path: str,
        lock: tuple[str, str] | lease.Lease | None = None,
        remote: tuple[Any, str] | None = None,
    ) -> None:
        self._root = root
        self.path = path
        self._remote = remote  # (filesystem, path on it) of a checkpoint on object storage
        self._lease = lock if isinstance(lock, lease.Lease) else None
        latest = dict(root.attrs).get("latest_by_run")
        self._latest: dict[str, int] = dict(latest) if isinstance(latest, dict) else {}
        self._previous: dict[int, int] = {}
        self._writer: ThreadPoolExecutor | None = None  # the background writes' one thread
        self._pending: Future[None] | None = None
        if isinstance(lock, lease.Lease):
            self._finalizer: weakref.finalize[Any, Any] | None = weakref.finalize(
                self, lock.release
            )
        else:
            self._finalizer = weakref.finalize(self, _release, *lock) if lock is not None else None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        model: str,
        config: dict[str, Any],
        fingerprint: dict[str, Any],
        resume: bool,
        storage_options: dict[str, Any] | None = None,
    ) -> Checkpoint:
        """Create a checkpoint at ``path``, or reopen it to resume; lock it either way.

        ``resume=True`` with no checkpoint at ``path`` yet starts a new one there (so one
        command both starts a fit and continues it after an interruption). ``path`` may
        be an fsspec URL, opened with ``storage_options``; its lock is then a lease
        (:mod:`dem.lease`), and messages name it without credentials.

        Raises
        ------
        FileExistsError
            ``path`` exists and ``resume`` is False.
        CheckpointError
            ``path`` is empty, its folder does not exist, its lock path is a folder, or
            it is (or lies inside, or holds) an input store named by ``fingerprint``'s
            sources: dem never writes inside its input.
        CheckpointMismatchError
            Resuming a checkpoint of another model, configuration, data or format.
        CheckpointLockedError
            Another running fit holds the checkpoint (its lock file ``<path>.lock``
            names a live process, or a process on another host; on object storage, a
            lease that has not expired). A lock left by a dead process on this host, or
            a lease past its expiry, is taken over with a warning.
        CheckpointWriteError
            The lock file or the new store cannot be written (disk full, permissions);
            nothing is left behind.
        """
        path = storage.local_path(path)
        fingerprint = _resolved_fingerprint(fingerprint)
        _check_location(path, fingerprint)
        if storage.is_remote(path):
            from dem.remote import open_remote

            header = header_of(model, config, fingerprint)
            return open_remote(cls, path, header, resume, storage_options)
        header = header_of(model, config, fingerprint)
        exists = os.path.exists(path)
        if exists and not resume:
            raise FileExistsError(
                f"Checkpoint {path!r} already exists. Pass resume=True to continue that "
                "fit, or choose another path (or delete it) to start afresh."
            )
        lock = _acquire(path)
        try:
            if exists:
                try:
                    root = zarr.open_group(path, mode="r+")
                except Exception as exc:  # zarr raises several types for unreadable stores
                    raise CheckpointMismatchError(
                        f"{path!r} is not a readable dem checkpoint (its root metadata are "
                        f"missing or damaged: {exc}). Start a new fit with another checkpoint."
                    ) from exc
                _validate_header(path, dict(root.attrs).get("dem"), header)
            else:
                root = _create_root(path, header)
        except BaseException:
            _release(*lock)
            raise
        return cls(root, path, lock)

    def close(self) -> None:
        """Wait for a write in progress (see :meth:`wait`), then release the lock
        (idempotent); the write's failure, if any, is raised after the release."""
        try:
            self.wait()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None
            if self._finalizer is not None:
                self._finalizer()

    def wait(self) -> None:
        """Wait until the iteration being written in the background (``write(...,
        background=True)``) is complete; raise its failure (a CheckpointWriteError), if any.

        Every other method waits first, so the store is never written by two threads.
        """
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(
        self,
        run: int,
        iteration: int,
        params: Params,
        loglik: float,
        converged: bool,
        dims: dict[str, tuple[str, ...]],
        *,
        background: bool = False,
    ) -> None:
        """Write one iteration completely, then mark it complete and advance ``latest``.

        With ``background=True`` the write runs in a thread of its own while the caller
        goes on (the next pass over the data), on a copy of ``params``; it starts only
        once the write before it is complete, and :meth:`wait` (or the next write, or
        :meth:`close`) waits for it and raises its failure.

        Raises
        ------
        CheckpointWriteError
            The store refused a write (for example the disk is full), this one or the
            one before it in the background. The iteration being written stays
            unmarked, so earlier ones are what a resume uses.
        """
        self.wait()
        if not background:
            self._write(run, iteration, params, loglik, converged, dims)
            return
        copied = {key: np.array(value, copy=True) for key, value in params.items()}
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="dem-checkpoint")
        self._pending = self._writer.submit(
            self._write, run, iteration, copied, loglik, converged, dict(dims)
        )

    def _write(
        self,
        run: int,
        iteration: int,
        params: Params,
        loglik: float,
        converged: bool,
        dims: dict[str, tuple[str, ...]],
    ) -> None:
        """:meth:`write`, in the caller's thread."""
        name = f"run-{run}/iter-{iteration:06d}"
        self._check_lease()
        try:
            group = self._root.create_group(name, overwrite=True)
            for key, value in params.items():
                value = np.asarray(value)
                array = group.create_array(
                    key,
                    shape=value.shape,
                    dtype=value.dtype,
                    chunks=value.shape if value.ndim else (),
                    dimension_names=dims.get(key),
                )
                array[...] = value
            group.attrs.update(
                {
                    "iteration": iteration,
                    "previous": self._previous.get(run),
                    "loglik": None if not np.isfinite(loglik) else float(loglik),
                    "converged": bool(converged),
                    "checksum": _checksum(params),
                    "complete": True,
                }
            )
            latest = {**self._latest, str(run): iteration}
            self._root.attrs.update(
                {"latest": {"run": run, "iteration": iteration}, "latest_by_run": latest}
            )
        except OSError as exc:
            kept = self._previous.get(run)
            raise CheckpointWriteError(
                f"Could not write iteration {iteration} of run {run} to checkpoint "
                f"{self.path!r}: {exc.strerror or exc}. "
                + (
                    f"Iteration {kept} is intact: free space (or fix the store) and resume."
                    if kept is not None
                    else "Nothing was checkpointed: free space (or fix the store) and start again."
                )
            ) from exc
        self._latest = latest
        self._previous[run] = iteration

    def write_final(self, run: int, values: Params, attrs: dict[str, Any]) -> None:
        """Write the results a fit computes after its last iteration (for example the
        standard errors of a censored regression) as group ``final``, replacing any
        earlier one; it is marked complete last, for ``run`` at its latest iteration.

        Raises
        ------
        CheckpointWriteError
            The store refused a write; the iterations stay intact.
        """
        self.wait()
        self._check_lease()
        try:
            group = self._root.create_group("final", overwrite=True)
            for key, value in values.items():
                value = np.asarray(value)
                array = group.create_array(
                    key, shape=value.shape, dtype=value.dtype, chunks=value.shape or ()
                )
                array[...] = value
            group.attrs.update(
                {
                    "attributes": _normalised(attrs),
                    "run": run,
                    "iteration": self._previous.get(run),
                    "checksum": _checksum(values),
                    "complete": True,
                }
            )
        except OSError as exc:
            raise CheckpointWriteError(
                f"Could not write the final results to checkpoint {self.path!r}: "
                f"{exc.strerror or exc}. The iterations are intact; free space (or fix the "
                "store) and resume to write them."
            ) from exc

    def _check_lease(self) -> None:
        """Refuse to write once this fit's lease on object storage was lost."""
        if self._lease is None:
            return
        try:
            self._lease.check()
        except lease.LeaseLost as exc:
            raise CheckpointLockedError(
                f"Checkpoint {self.path!r}: this fit no longer holds its lock ({exc}); it "
                "stops without writing. Another fit continues it."
            ) from exc

    def content(self) -> dict[str, list[int]] | None:
        """The per-chunk content digests of the data recorded by the first pass, if any.

        Maps each input's name to one digest per sample chunk (see
        :func:`chunk_digest`); None until a fit's first pass completed.
        """
        self.wait()
        content = dict(self._root.attrs).get("content")
        if not isinstance(content, dict) or content.get("algorithm") != DIGEST_ALGORITHM:
            return None
        chunks = content.get("chunks")
        return {str(k): [int(d) for d in v] for k, v in chunks.items()} if chunks else None

    def record_content(self, names: Sequence[str], digests: Sequence[Sequence[int]]) -> None:
        """Record the data's content digests (see :meth:`content`): per chunk, one
        digest per input, the inputs named ``names`` in order."""
        self.wait()
        chunks = {name: [int(chunk[i]) for chunk in digests] for i, name in enumerate(names)}
        try:
            self._root.attrs["content"] = {"algorithm": DIGEST_ALGORITHM, "chunks": chunks}
        except OSError as exc:
            raise CheckpointWriteError(
                f"Could not record the data's digests in checkpoint {self.path!r}: "
                f"{exc.strerror or exc}. Free space (or fix the store) and resume."
            ) from exc

    def restore(self, run: int) -> Restored | None:
        """Latest intact iteration of ``run`` (None when there is none).

        Iterations after it (damaged or cut off from the history) are removed, so
        the ones written from here on form one history.
        """
        self.wait()
        restored = _restore(self._root, run, self.path, self._latest.get(str(run)), self._remote)
        for iteration in _iterations(self._root, run, self.path, self._remote):
            if restored is None or iteration > restored.iteration:
                if self._remote is not None:
                    self._check_lease()
                    fs, where = self._remote
                    with contextlib.suppress(FileNotFoundError):
                        fs.rm(f"{where}/run-{run}/iter-{iteration:06d}", recursive=True)
                    continue
                shutil.rmtree(
                    os.path.join(self.path, f"run-{run}", f"iter-{iteration:06d}"),
                    ignore_errors=True,
                )
        if restored is not None:
            self._previous[run] = restored.iteration
        return restored


DIGEST_ALGORITHM = "crc32"


def chunk_digest(value: np.ndarray) -> int:
    """A fast digest of one chunk's content: CRC-32 of its dtype, shape and bytes.

    About 2 ms for a 12.8 MB chunk (6 GB/s); it detects changed data, not tampering.
    """
    if sparse.issparse(value):  # a CSR chunk: its row pointers, columns and values
        matrix = sparse.csr_matrix(value)
        digest = zlib.crc32(f"csr|{value.dtype.str}|{value.shape}|".encode())
        for part in (matrix.indptr, matrix.indices, matrix.data):
            digest = zlib.crc32(np.ascontiguousarray(part).data.cast("B"), digest)
        return digest
    header = f"{value.dtype.str}|{value.shape}|".encode()
    return zlib.crc32(np.ascontiguousarray(value).data.cast("B"), zlib.crc32(header))


def _resolved_fingerprint(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """``fingerprint`` with each input's source path resolved, so that two spellings of
    one store (relative and absolute, through a symbolic link) compare equal."""
    return {
        name: {**entry, "source": resolved_source(entry.get("source"))}
        if isinstance(entry, dict) and entry.get("source")
        else entry
        for name, entry in fingerprint.items()
    }


def _check_location(path: str, fingerprint: dict[str, Any]) -> None:
    """Refuse a checkpoint path that is empty, in a missing folder, or overlaps an input."""
    if not path.strip():
        raise CheckpointError(
            "checkpoint must be the path of a Zarr store to create or resume; got ''. "
            "Pass checkpoint=None to fit without one."
        )
    if "://" not in path:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise CheckpointError(
                f"The folder {folder!r} that would hold checkpoint {path!r} does not exist. "
                "Create it first, or choose a checkpoint in an existing folder."
            )
    inputs = {
        name: store
        for name, entry in fingerprint.items()
        if isinstance(entry, dict) and (store := source_location(entry.get("source")))
    }
    check_apart(path, "checkpoint", inputs, error=CheckpointError)


def _create_root(path: str, header: dict[str, Any]) -> zarr.Group:
    """A new checkpoint store at ``path`` holding ``header``; nothing is left if it fails."""
    try:
        root = zarr.open_group(path, mode="w-")
        root.attrs["dem"] = header
    except OSError as exc:
        shutil.rmtree(path, ignore_errors=True)  # what this call created, nothing else
        raise CheckpointWriteError(
            f"Could not create checkpoint {path!r}: {exc.strerror or exc}. Free space (or "
            "fix the folder's permissions) and start again."
        ) from exc
    return root


def check_format(path: str, header: dict[str, Any]) -> None:
    """Refuse a checkpoint written in a format version this dem does not read."""
    found = header.get("format")
    if found != FORMAT_VERSION:
        raise CheckpointMismatchError(
            f"Checkpoint {path!r} has format version {found!r}; this version of dem reads "
            f"format {FORMAT_VERSION}. Read it with the dem that wrote it, or start a new "
            "checkpoint."
        )


def _validate_header(path: str, found: Any, expected: dict[str, Any]) -> None:
    if not isinstance(found, dict) or "model" not in found:
        raise CheckpointMismatchError(f"{path!r} is not a dem checkpoint.")
    check_format(path, found)
    if isinstance(found.get("fingerprint"), dict):
        found = {**found, "fingerprint": _normalised(_resolved_fingerprint(found["fingerprint"]))}
    for field in ("model", "config", "fingerprint"):
        if found.get(field) != expected[field]:
            raise CheckpointMismatchError(
                f"Checkpoint {path!r} was written for {field} {found.get(field)!r}, but this fit "
                f"has {expected[field]!r}. Resume with the same model, options and data, or "
                "start a new checkpoint."
            )


def _group(root: zarr.Group, path: str) -> zarr.Group:
    member = root[path]
    if not isinstance(member, zarr.Group):
        raise KeyError(f"{path} is not a group")
    return member


_ITERATION = re.compile(r"iter-(\d{6})")


def _iterations(
    root: zarr.Group, run: int, path: str, remote: tuple[Any, str] | None = None
) -> list[int]:
    """Iteration numbers of ``run``: its groups, and folders that lost their metadata."""
    names: set[str] = set()
    # zarr parses every member's metadata to list them; a damaged one is found by
    # _read_iteration, so a listing that fails falls back on the folder's
    with contextlib.suppress(Exception), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr warns of folders without metadata
        names.update(name for name, _ in _group(root, f"run-{run}").groups())
    if remote is not None:
        fs, where = remote
        with contextlib.suppress(FileNotFoundError):
            fs.invalidate_cache(f"{where}/run-{run}")
            listed = fs.ls(f"{where}/run-{run}", detail=False)
            names.update(str(name).rstrip("/").rsplit("/", 1)[-1] for name in listed)
        return sorted(int(m.group(1)) for m in map(_ITERATION.fullmatch, names) if m is not None)
    folder = os.path.join(path, f"run-{run}")
    if os.path.isdir(folder):
        names.update(os.listdir(folder))
    return sorted(int(m.group(1)) for m in map(_ITERATION.fullmatch, names) if m is not None)


def _read_iteration(
    root: zarr.Group, run: int, iteration: int
) -> tuple[Params, dict[str, Any]] | str:
    """Parameters and attributes of a complete, intact iteration, else what is wrong."""
    try:
        group = _group(root, f"run-{run}/iter-{iteration:06d}")
        attrs = dict(group.attrs)
        if not attrs.get("complete"):
            return "not marked complete"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zarr warns of arrays without metadata
            arrays = dict(group.arrays())
            params = {name: np.asarray(array[...]) for name, array in arrays.items()}
    except Exception:  # unreadable metadata or chunks: treat as damaged
        return "unreadable"
    if _checksum(params) != attrs.get("checksum"):
        return "checksum mismatch"
    if attrs.get("iteration") != iteration:
        return f"its metadata say iteration {attrs.get('iteration')!r}"
    return _invalid_values(params) or _inconsistent_dims(arrays) or (params, attrs)


def _invalid_values(params: Params) -> str | None:
    """What is not finite among the parameters (None when all are)."""
    for name, value in params.items():
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            what = "NaN" if np.isnan(value).any() else "infinity"
            return f"invalid ({what} in {name!r})"
    return None


def _inconsistent_dims(arrays: dict[str, Any]) -> str | None:
    """A dimension that has two sizes among the parameters' arrays (None when none has)."""
    sizes: dict[str, tuple[int, str]] = {}
    for name, array in arrays.items():
        dims = getattr(array.metadata, "dimension_names", None) or ()
        for dim, size in zip(dims, array.shape, strict=False):
            if dim is None:
                continue
            first = sizes.setdefault(dim, (size, name))
            if first[0] != size:
                return (
                    f"dimension {dim!r} has size {size} in {name!r} but {first[0]} in {first[1]!r}"
                )
    return None


def _restore(
    root: zarr.Group,
    run: int,
    path: str,
    marker: int | None,
    remote: tuple[Any, str] | None = None,
) -> Restored | None:
    """The latest iteration whose whole history back to iteration 0 is intact."""
    iterations = _iterations(root, run, path, remote)
    if marker is not None and marker not in iterations:
        warnings.warn(
            f"Checkpoint {path!r}: the latest marker names iteration {marker} of run {run}, "
            "which is missing; using the latest intact iteration instead.",
            UserWarning,
            stacklevel=3,
        )
    cache: dict[int, tuple[Params, dict[str, Any]] | str] = {}

    def read(iteration: int) -> tuple[Params, dict[str, Any]] | str:
        if iteration not in cache:
            cache[iteration] = _read_iteration(root, run, iteration)
        return cache[iteration]

    for iteration in reversed(iterations):
        problem, links = _history(read, iterations, iteration)
        if problem is not None:
            warnings.warn(
                f"Checkpoint {path!r}: iteration {iteration} of run {run} is incomplete or "
                f"damaged ({problem}); falling back to the one before it.",
                UserWarning,
                stacklevel=3,
            )
            continue
        params, attrs = links[-1][1]
        later = links[1:]
        lower_bounds = [
            np.nan if found[1]["loglik"] is None else float(found[1]["loglik"])
            for _, found in later
        ]
        steps = [number for number, _ in later]
        return Restored(iteration, params, lower_bounds, bool(attrs["converged"]), steps)
    return None


def _history(
    read: Any, iterations: list[int], iteration: int
) -> tuple[str | None, list[tuple[int, tuple[Params, dict[str, Any]]]]]:
    """Follow ``previous`` links from ``iteration`` to 0: (problem or None, links from 0)."""
    links: list[tuple[int, tuple[Params, dict[str, Any]]]] = []
    current: int | None = iteration
    while current is not None:
        found = read(current)
        if isinstance(found, str):
            where = "" if current == iteration else f"its predecessor {current} is "
            return f"{where}{found}", []
        links.append((current, found))
        if current == 0:
            break
        previous = found[1].get("previous")
        if previous is None:  # written before "previous" was recorded: the one listed before
            previous = max((i for i in iterations if i < current), default=None)
        if previous is None or previous >= current:
            return f"its history has no iteration before {current}", []
        listed = max((i for i in iterations if i < current), default=None)
        if previous != listed:  # a history is the run's iterations in order, none skipped
            return f"iteration {current} follows {previous}, but {listed} lies between", []
        current = previous
    links.reverse()
    if links[0][0] != 0:
        return "its history does not reach iteration 0", []
    # every parameter keeps its shape and dtype from the iteration that first had it (a
    # model may add parameters after its first pass, as Tobit caches its data moments)
    known: dict[str, tuple[Any, str]] = {}
    for number, (params, _) in links:
        for name, value in params.items():
            found = (value.shape, value.dtype.str)
            if known.setdefault(name, found) != found:
                return (
                    f"the parameters of iteration {number} changed: {name} has shape/dtype "
                    f"{found}, earlier {known[name]}"
                ), []
    return None, links


def load_checkpoint(
    path: str | os.PathLike[str],
    run: int | None = None,
    *,
    storage_options: dict[str, Any] | None = None,
) -> xr.Dataset:
    """Read a checkpoint as an :class:`xarray.Dataset`.

    Parameters
    ----------
    path : str or path-like
        The checkpoint store: a local path or an fsspec URL (``s3://...``).
    run : int, optional
        Which restart to read; by default the one the ``latest`` marker names.
    storage_options : dict, optional
        Options of the URL's filesystem (credentials, endpoint); never recorded.

    Returns
    -------
    xarray.Dataset
        The parameters of the latest complete iteration (named dims), plus
        ``loglik`` along dim ``iteration`` (the trace; iteration 0 is the
        initialisation and has no log-likelihood). Attributes hold the model name,
        its configuration, the data fingerprint, ``run``, ``iteration`` and
        ``converged``.
    """
    from dem.remote import open_for_reading

    root, path, remote = open_for_reading(path, storage_options)
    header = dict(root.attrs).get("dem")
    if not isinstance(header, dict):
        raise CheckpointMismatchError(f"{path!r} is not a dem checkpoint.")
    check_format(path, header)
    attrs = dict(root.attrs)
    if run is None:
        latest = attrs.get("latest")
        run = int(latest.get("run", 0)) if isinstance(latest, dict) else 0
    by_run = attrs.get("latest_by_run")
    marker = by_run.get(str(run)) if isinstance(by_run, dict) else None
    restored = _restore(root, run, path, marker, remote)
    if restored is None:
        raise ValueError(f"Checkpoint {path!r} holds no complete iteration for run {run}.")
    group = _group(root, f"run-{run}/iter-{restored.iteration:06d}")
    variables = {}
    for name, array in group.arrays():
        dims = getattr(array.metadata, "dimension_names", None) or tuple(
            f"{name}_dim_{i}" for i in range(array.ndim)
        )
        variables[name] = (tuple(dims), restored.params[name])
    dataset = xr.Dataset(variables)
    dataset["loglik"] = ("iteration", np.array([np.nan, *restored.lower_bounds]))
    dataset = dataset.assign_coords(iteration=np.array([0, *restored.steps]))
    dataset.attrs.update(
        model=header["model"],
        config=json.dumps(header["config"]),
        fingerprint=json.dumps(header["fingerprint"]),
        run=run,
        last_iteration=restored.iteration,
        converged=int(restored.converged),
    )
    return dataset


def header_of(model: str, config: dict[str, Any], fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The root attribute ``dem`` of a checkpoint of ``model``."""
    return {
        "format": FORMAT_VERSION,
        "model": model,
        "config": _normalised(config),
        "fingerprint": _normalised(fingerprint),
    }
