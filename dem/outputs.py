"""Stores that dem writes as output, and the rule that keeps everything else safe.

Every store written as output (``dem synth``, ``dem predict --out``) carries a root
attribute ``"dem_output": {"writer": ..., "complete": false}``, written before any
array, and ``complete`` becomes true as the store's last write. So a store is known
to be dem's own (and only then may ``--overwrite`` replace it), and an interrupted
write is known to be incomplete.

An output never contains, and never lies inside, the data it is computed from or a
checkpoint: paths are compared resolved (absolute, symbolic links followed).

An output may be an fsspec URL (``s3://...``), written with ``storage_options``: the
same rules hold there (an existing store is replaced only with ``overwrite`` and only
when it carries the attribute), named in messages without credentials.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from dem import storage
from dem.paths import overlaps

ATTRIBUTE = "dem_output"


class UnsafeOutputError(ValueError):
    """An output path dem refuses to write or replace (it holds what dem did not write)."""


class OutputExistsError(UnsafeOutputError):
    """The output path exists and ``overwrite`` was not given (a usage error, exit 2)."""


def marker(writer: str, *, complete: bool) -> dict[str, Any]:
    """The ``dem_output`` attribute value written by ``writer`` (e.g. ``"dem synth"``)."""
    return {"writer": writer, "complete": complete}


def _group(path: str | os.PathLike[str], mode: Any, storage_options: Any = None) -> Any:
    """The Zarr group at ``path`` (a local path or a URL opened with ``storage_options``)."""
    import zarr

    if storage.is_remote(path):
        return zarr.open_group(storage.writable(os.fspath(path), storage_options)[2], mode=mode)
    return zarr.open_group(os.fspath(path), mode=mode)


def mark_complete(path: str | os.PathLike[str], storage_options: Any = None) -> None:
    """Set ``complete`` in the ``dem_output`` attribute, then consolidate the store's
    metadata: the last writes of an output store.

    Consolidated metadata (every array's metadata in the root ``zarr.json``) lets
    ``xarray.open_zarr`` open the store in one read, without its warning about
    unconsolidated stores.
    """
    group = _group(path, "r+", storage_options)
    found = group.attrs.get(ATTRIBUTE)
    writer = found.get("writer", "dem") if isinstance(found, dict) else "dem"
    group.attrs[ATTRIBUTE] = marker(str(writer), complete=True)
    consolidate(path, storage_options)


def consolidate(path: str | os.PathLike[str], storage_options: Any = None) -> None:
    """Write the consolidated metadata of the Zarr store at ``path``.

    Zarr format 3 has no consolidated metadata in its specification yet; zarr-python
    and xarray read and write it all the same, so its warning saying so is not shown.
    """
    import warnings

    import zarr
    from zarr.errors import ZarrUserWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Consolidated metadata", ZarrUserWarning)
        if storage.is_remote(path):
            zarr.consolidate_metadata(storage.writable(os.fspath(path), storage_options)[2])
        else:
            zarr.consolidate_metadata(os.fspath(path))


def output_marker(
    path: str | os.PathLike[str], storage_options: Any = None
) -> dict[str, Any] | None:
    """The ``dem_output`` attribute of the Zarr group at ``path``; None when there is none."""
    try:
        found = _group(path, "r", storage_options).attrs.get(ATTRIBUTE)
    except Exception:  # not a Zarr group, unreadable: not dem's
        return None
    return found if isinstance(found, dict) else None


def _resolved(path: str | os.PathLike[str]) -> Path:
    return Path(os.fspath(path)).expanduser().resolve()


def is_remote(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a URL (``s3://...``), which these local checks do not cover."""
    return storage.is_url(path)


def check_output(
    out: str | os.PathLike[str],
    *,
    protected: dict[str, str | os.PathLike[str]],
    overwrite: bool,
    option: str = "--out",
    storage_options: Any = None,
) -> None:
    """Refuse an output path that could touch what dem did not write.

    Parameters
    ----------
    out : str or path-like
        Where the output store goes.
    protected : dict
        Description (``"the input store"``, ``"the checkpoint"``) → path that the
        output may neither contain nor lie inside.
    overwrite : bool
        Whether an existing output may be replaced; it may only when it is a store
        dem wrote as output (it has the ``dem_output`` attribute).
    option : str
        The command-line option that named ``out``, for the messages.
    storage_options : dict, optional
        Options of ``out``'s filesystem when it is a URL.

    Raises
    ------
    UnsafeOutputError
        The output overlaps a protected path, lies inside another Zarr store, or
        exists and may not be replaced; the message says why and what to do.
    OutputExistsError
        ``out`` exists and ``overwrite`` is false (the message names ``--overwrite``
        and another path as the ways out).
    """
    if is_remote(out):
        _check_remote_output(out, protected, overwrite, option, storage_options)
        return
    for what, path in protected.items():
        if not is_remote(path) and overlaps(out, path):
            raise UnsafeOutputError(
                f"{option} {os.fspath(out)!r} is, contains or lies inside {what} "
                f"{os.fspath(path)!r}; dem never writes there. Choose an {option} outside it."
            )
    _refuse_inside_a_store(out, option)
    if not os.path.lexists(out):
        return
    if not overwrite:
        raise OutputExistsError(
            f"{os.fspath(out)!r} exists; pass --overwrite to replace it (only a store dem wrote "
            f"is replaced), or choose another {option}."
        )
    if not os.path.isdir(out) or os.path.islink(out):
        raise UnsafeOutputError(
            f"{option} {os.fspath(out)!r} exists and is not a folder dem wrote (a file or a link); "
            f"--overwrite replaces only stores written by dem. Choose another {option}, or delete "
            "it yourself if it is not needed."
        )
    if output_marker(out) is None:
        raise UnsafeOutputError(
            f"{option} {os.fspath(out)!r} exists and was not written by dem (no {ATTRIBUTE!r} "
            f"attribute), so --overwrite will not delete it. Choose another {option}, or delete it "
            "yourself if it is not needed."
        )


def _refuse_inside_a_store(out: str | os.PathLike[str], option: str) -> None:
    """Refuse ``out`` inside an existing Zarr store (a folder holding Zarr metadata)."""
    for parent in _resolved(out).parents:
        if any((parent / name).is_file() for name in ("zarr.json", ".zgroup", ".zarray")):
            raise UnsafeOutputError(
                f"{option} {os.fspath(out)!r} lies inside the Zarr store {os.fspath(parent)!r}; "
                f"dem does not write into existing stores. Choose an {option} outside it."
            )


def remove_output(out: str | os.PathLike[str], storage_options: Any = None) -> None:
    """Delete an output store that :func:`check_output` allowed to be replaced."""
    if output_marker(out, storage_options) is None:
        raise UnsafeOutputError(f"{_shown(out)!r} is not a dem output store; not deleting it.")
    if is_remote(out):
        fs, where, _ = storage.writable(os.fspath(out), storage_options)
        fs.rm(where, recursive=True)
        return
    shutil.rmtree(out)


def output_exists(out: str | os.PathLike[str], storage_options: Any = None) -> bool:
    """Whether anything is at ``out`` (a path, or any object under a URL's prefix)."""
    if not is_remote(out):
        return os.path.lexists(out)
    fs, where, _ = storage.writable(os.fspath(out), storage_options)
    fs.invalidate_cache()
    return bool(fs.exists(where) or fs.find(where, maxdepth=1))


def _shown(path: str | os.PathLike[str]) -> str:
    return storage.location(path) if is_remote(path) else os.fspath(path)


def _check_remote_output(
    out: str | os.PathLike[str],
    protected: dict[str, str | os.PathLike[str]],
    overwrite: bool,
    option: str,
    storage_options: Any,
) -> None:
    """:func:`check_output` for an output at a URL."""
    shown = _shown(out)
    for what, path in protected.items():
        if is_remote(path) and overlaps(out, path):
            raise UnsafeOutputError(
                f"{option} {shown!r} is, contains or lies inside {what} {_shown(path)!r}; dem "
                f"never writes there. Choose an {option} outside it."
            )
    if not output_exists(out, storage_options):
        return
    if not overwrite:
        raise OutputExistsError(
            f"{shown!r} exists; pass --overwrite to replace it (only a store dem wrote is "
            f"replaced), or choose another {option}."
        )
    if output_marker(out, storage_options) is None:
        raise UnsafeOutputError(
            f"{option} {shown!r} exists and was not written by dem (no {ATTRIBUTE!r} "
            f"attribute), so --overwrite will not delete it. Choose another {option}, or delete "
            "it yourself if it is not needed."
        )
