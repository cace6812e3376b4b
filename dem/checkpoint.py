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

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
import zarr

from dem.model import Params

FORMAT_VERSION = 1


class CheckpointMismatchError(ValueError):
    """The checkpoint was written by another model, configuration or data."""


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

    Use :meth:`open` to create or resume one; :func:`load_checkpoint` to read one.
    """

    def __init__(self, root: zarr.Group, path: str) -> None:
        self._root = root
        self.path = path

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
        """Create a checkpoint at ``path``, or reopen it to resume.

        Raises
        ------
        FileExistsError
            ``path`` exists and ``resume`` is False.
        CheckpointMismatchError
            Resuming a checkpoint of another model, configuration or data.
        """
        path = os.fspath(path)
        header = {
            "format": FORMAT_VERSION,
            "model": model,
            "config": _normalised(config),
            "fingerprint": _normalised(fingerprint),
        }
        if os.path.exists(path):
            if not resume:
                raise FileExistsError(
                    f"Checkpoint {path!r} already exists. Pass resume=True to continue that "
                    "fit, or choose another path (or delete it) to start afresh."
                )
            root = zarr.open_group(path, mode="r+")
            _validate_header(path, dict(root.attrs).get("dem"), header)
            return cls(root, path)
        root = zarr.open_group(path, mode="w-")
        root.attrs["dem"] = header
        return cls(root, path)

    def write(
        self,
        run: int,
        iteration: int,
        params: Params,
        loglik: float,
        converged: bool,
        dims: dict[str, tuple[str, ...]],
    ) -> None:
        """Write one iteration completely, then mark it complete and advance ``latest``."""
        name = f"run-{run}/iter-{iteration:06d}"
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
                "loglik": None if not np.isfinite(loglik) else float(loglik),
                "converged": bool(converged),
                "checksum": _checksum(params),
                "complete": True,
            }
        )
        self._root.attrs["latest"] = {"run": run, "iteration": iteration}

    def restore(self, run: int) -> Restored | None:
        """Latest complete, intact iteration of ``run`` (None when there is none)."""
        return _restore(self._root, run, self.path)


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


def _iterations(root: zarr.Group, run: int) -> list[int]:
    try:
        group = _group(root, f"run-{run}")
    except KeyError:
        return []
    return sorted(int(name.split("-")[1]) for name, _ in group.groups() if name.startswith("iter-"))


def _read_iteration(
    root: zarr.Group, run: int, iteration: int
) -> tuple[Params, dict[str, Any]] | None:
    """Parameters and attributes of a complete, intact iteration, else None."""
    try:
        group = _group(root, f"run-{run}/iter-{iteration:06d}")
        attrs = dict(group.attrs)
        if not attrs.get("complete"):
            return None
        params = {name: np.asarray(array[...]) for name, array in group.arrays()}
    except Exception:  # unreadable metadata or chunks: treat as damaged
        return None
    if _checksum(params) != attrs.get("checksum"):
        return None
    return params, attrs


def _restore(root: zarr.Group, run: int, path: str) -> Restored | None:
    iterations = _iterations(root, run)
    for iteration in reversed(iterations):
        found = _read_iteration(root, run, iteration)
        if found is None:
            warnings.warn(
                f"Checkpoint {path!r}: iteration {iteration} of run {run} is incomplete or "
                "damaged; falling back to the one before it.",
                UserWarning,
                stacklevel=3,
            )
            continue
        params, attrs = found
        lower_bounds = []
        for earlier in (i for i in iterations if 0 < i < iteration):  # steps may skip numbers
            previous = _read_iteration(root, run, earlier)
            if previous is None:
                raise CheckpointMismatchError(
                    f"Checkpoint {path!r}: iteration {earlier} of run {run} is damaged, so the "
                    "log-likelihood trace cannot be restored. Start a new fit."
                )
            loglik = previous[1]["loglik"]
            lower_bounds.append(np.nan if loglik is None else float(loglik))
        if iteration > 0:
            lower_bounds.append(np.nan if attrs["loglik"] is None else float(attrs["loglik"]))
        steps = [i for i in iterations if 0 < i <= iteration]
        return Restored(iteration, params, lower_bounds, bool(attrs["converged"]), steps)
    return None


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
    if run is None:
        latest = dict(root.attrs).get("latest")
        run = int(latest.get("run", 0)) if isinstance(latest, dict) else 0
    restored = _restore(root, run, path)
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
