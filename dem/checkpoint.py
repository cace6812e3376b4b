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
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import time
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
import zarr

from dem.model import Params

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be used as asked; the message says what to do."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint was written by another model, configuration or data."""


class CheckpointLockedError(CheckpointError):
    """Another live fit holds the checkpoint."""


class CheckpointWriteError(CheckpointError):
    """An iteration could not be written (disk full, permissions); earlier ones are intact."""


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


def _acquire(path: str) -> str:
    """Create ``path``'s lock file, or take over a stale one; refuse a live holder's."""
    lock = lock_path(path)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    for _ in range(3):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                with open(lock) as handle:
                    holder = json.load(handle)
                pid, host = int(holder["pid"]), str(holder["host"])
            except FileNotFoundError:
                continue  # released meanwhile
            except (OSError, ValueError, KeyError, TypeError):
                holder, pid, host = None, -1, ""
            if holder is not None and (host != record["host"] or _alive(pid)):
                raise CheckpointLockedError(
                    f"Checkpoint {path!r} is in use by process {pid} on {host} (lock file "
                    f"{lock!r}). Wait for that fit to finish or stop it; if it is gone (for "
                    "example its machine died), delete the lock file and resume."
                ) from None
            warnings.warn(
                f"Checkpoint {path!r}: taking over the stale lock {lock!r} "
                + (f"of process {pid}, which is no longer running." if holder else "(unreadable)."),
                UserWarning,
                stacklevel=4,
            )
            with contextlib.suppress(FileNotFoundError):
                os.remove(lock)
            continue
        with os.fdopen(descriptor, "w") as handle:
            json.dump(record, handle)
        return lock
    raise CheckpointLockedError(
        f"Could not lock checkpoint {path!r}: another fit keeps taking {lock!r}."
    )


def _release(lock: str, pid: int) -> None:
    """Remove ``lock`` if this process (``pid``) still holds it."""
    try:
        with open(lock) as handle:
            holder = json.load(handle)
    except (OSError, ValueError):
        return
    if holder.get("pid") == pid and holder.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock)


class Checkpoint:
    """A checkpoint store for one fit (all its restarts).

    Use :meth:`open` to create or resume one (it holds the checkpoint's lock until
    :meth:`close`); :func:`load_checkpoint` to read one.
    """

    def __init__(self, root: zarr.Group, path: str, lock: str | None = None) -> None:
        self._root = root
        self.path = path
        latest = dict(root.attrs).get("latest_by_run")
        self._latest: dict[str, int] = dict(latest) if isinstance(latest, dict) else {}
        self._previous: dict[int, int] = {}
        self._lock = lock
        self._finalizer = (
            weakref.finalize(self, _release, lock, os.getpid()) if lock is not None else None
        )

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        model: str,
        config: dict[str, Any],
        fingerprint: dict[str, Any],
        resume: bool,
    ) -> Checkpoint:
        """Create a checkpoint at ``path``, or reopen it to resume; lock it either way.

        Raises
        ------
        FileExistsError
            ``path`` exists and ``resume`` is False.
        CheckpointMismatchError
            Resuming a checkpoint of another model, configuration or data.
        CheckpointLockedError
            Another running fit holds the checkpoint (its lock file ``<path>.lock``
            names a live process). A lock left by a dead process on this host is
            taken over with a warning.
        """
        path = os.fspath(path)
        header = {
            "format": FORMAT_VERSION,
            "model": model,
            "config": _normalised(config),
            "fingerprint": _normalised(fingerprint),
        }
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
                root = zarr.open_group(path, mode="w-")
                root.attrs["dem"] = header
        except BaseException:
            _release(lock, os.getpid())
            raise
        return cls(root, path, lock)

    def close(self) -> None:
        """Release the lock (idempotent)."""
        if self._finalizer is not None:
            self._finalizer()

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
    ) -> None:
        """Write one iteration completely, then mark it complete and advance ``latest``.

        Raises
        ------
        CheckpointWriteError
            The store refused a write (for example the disk is full). The iteration
            being written stays unmarked, so earlier ones are what a resume uses.
        """
        name = f"run-{run}/iter-{iteration:06d}"
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

    def restore(self, run: int) -> Restored | None:
        """Latest intact iteration of ``run`` (None when there is none).

        Iterations after it (damaged or cut off from the history) are removed, so
        the ones written from here on form one history.
        """
        restored = _restore(self._root, run, self.path, self._latest.get(str(run)))
        for iteration in _iterations(self._root, run, self.path):
            if restored is None or iteration > restored.iteration:
                shutil.rmtree(
                    os.path.join(self.path, f"run-{run}", f"iter-{iteration:06d}"),
                    ignore_errors=True,
                )
        if restored is not None:
            self._previous[run] = restored.iteration
        return restored


def _validate_header(path: str, found: Any, expected: dict[str, Any]) -> None:
    if not isinstance(found, dict) or "model" not in found:
        raise CheckpointMismatchError(f"{path!r} is not a dem checkpoint.")
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


def _iterations(root: zarr.Group, run: int, path: str) -> list[int]:
    """Iteration numbers of ``run``: its groups, and folders that lost their metadata."""
    names: set[str] = set()
    with contextlib.suppress(KeyError), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr warns of folders without metadata
        names.update(name for name, _ in _group(root, f"run-{run}").groups())
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
            params = {name: np.asarray(array[...]) for name, array in group.arrays()}
    except Exception:  # unreadable metadata or chunks: treat as damaged
        return "unreadable"
    if _checksum(params) != attrs.get("checksum"):
        return "checksum mismatch"
    for name, value in params.items():
        if value.dtype.kind in "fc" and np.isnan(value).any():
            return f"invalid (NaN in {name!r})"
    return params, attrs


def _restore(root: zarr.Group, run: int, path: str, marker: int | None) -> Restored | None:
    """The latest iteration whose whole history back to iteration 0 is intact."""
    iterations = _iterations(root, run, path)
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


def load_checkpoint(path: str | os.PathLike[str], run: int | None = None) -> xr.Dataset:
    """Read a checkpoint as an :class:`xarray.Dataset`.

    Parameters
    ----------
    path : str or path-like
        The checkpoint store.
    run : int, optional
        Which restart to read; by default the one the ``latest`` marker names.

    Returns
    -------
    xarray.Dataset
        The parameters of the latest complete iteration (named dims), plus
        ``loglik`` along dim ``iteration`` (the trace; iteration 0 is the
        initialisation and has no log-likelihood). Attributes hold the model name,
        its configuration, the data fingerprint, ``run``, ``iteration`` and
        ``converged``.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Checkpoint {path!r} does not exist.")
    root = zarr.open_group(path, mode="r")
    header = dict(root.attrs).get("dem")
    if not isinstance(header, dict):
        raise CheckpointMismatchError(f"{path!r} is not a dem checkpoint.")
    attrs = dict(root.attrs)
    if run is None:
        latest = attrs.get("latest")
        run = int(latest.get("run", 0)) if isinstance(latest, dict) else 0
    by_run = attrs.get("latest_by_run")
    marker = by_run.get(str(run)) if isinstance(by_run, dict) else None
    restored = _restore(root, run, path, marker)
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
