"""Input normalisation: the one boundary where user data becomes a dask array.

Everything the engine and the estimators receive has passed through
:func:`as_samples`: a 2-D (samples × features), 1-D (samples) or 3-D (sequences ×
time × features) dask array, chunked along its first axis only, of dtype float32 or
float64. User stores are opened read-only.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
import zarr
from zarr.abc.store import Store
from zarr.core.group import ConsolidatedMetadata
from zarr.core.sync import sync

from dem import storage, tabular

DEFAULT_CHUNK_ROWS = 100_000


@dataclass(frozen=True)
class Samples:
    """A validated input array and where it came from.

    Attributes
    ----------
    array : dask.array.Array
        Shape ``(n_samples, n_features)`` (or ``(n_samples,)`` for 1-D inputs),
        chunked along samples only.
    name : str
        Name used in error messages (the Zarr variable name, or ``"X"``).
    source : str or None
        ``"path::variable"`` for Zarr inputs, else None.
    kind : str
        ``"numpy"``, ``"dask"``, ``"xarray"`` or ``"zarr"``: what the user passed,
        which decides what per-sample methods return.
    coords : dict
        For xarray input, the sample coordinate (to label lazy results).
    """

    array: da.Array
    name: str
    source: str | None
    kind: str
    sample_dim: str = "sample"
    coords: dict[str, Any] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return int(self.array.shape[0])

    def fingerprint(self) -> dict[str, Any]:
        """Shape, dtype, sample chunking and location: what a checkpoint must match."""
        return {
            "name": self.name,
            "shape": [int(s) for s in self.array.shape],
            "dtype": str(self.array.dtype),
            "sample_chunks": [int(c) for c in self.array.chunks[0]],
            "source": self.source,
        }


ZarrInput = str | os.PathLike[str] | Store | zarr.Group
"""Where a Zarr variable is read from: a local path, an fsspec URL, a store, or a group."""


def open_zarr_variable(
    path: ZarrInput, variable: str, *, storage_options: Mapping[str, Any] | None = None
) -> zarr.Array:
    """Open ``variable`` of the Zarr store at ``path`` read-only, with clear errors.

    A directory store, a ``.zip`` file (read through :class:`zarr.storage.ZipStore`), an
    fsspec URL (``s3://``, ``gs://``, ``az://``, ``file://``, ``memory://``; read with
    ``storage_options``), a Zarr store or a Zarr group. A store that ``dem synth`` or
    ``dem predict`` left incomplete is refused. Consolidated metadata are not trusted:
    the array's own metadata are read, with a warning when the consolidated copy is stale.
    """
    return _open_variable(path, variable, storage_options)[0]


def _open_variable(
    path: ZarrInput, variable: str, storage_options: Mapping[str, Any] | None = None
) -> tuple[zarr.Array, bool, str]:
    """:func:`open_zarr_variable`, whether dem wrote the store to its end, and the
    store's name for messages (its credential-free location)."""
    group, consolidated, where = _open_group(path, storage_options)
    _refuse_incomplete_output(group, where)
    if variable not in group:
        names = sorted(k for k, _ in group.arrays())
        raise KeyError(f"Zarr store {where!r} has no variable {variable!r}; it has {names}.")
    array = group[variable]
    if not isinstance(array, zarr.Array):
        raise ValueError(f"{variable!r} in {where!r} is a group, not an array.")
    if consolidated is not None:
        _warn_if_stale(consolidated.metadata.get(variable), array, where, variable)
    return array, _finished_by_dem(group), where


def _open_group(
    path: ZarrInput, storage_options: Mapping[str, Any] | None
) -> tuple[zarr.Group, ConsolidatedMetadata | None, str]:
    """The group at ``path`` opened read-only from its own metadata, its consolidated
    metadata (only to warn when stale), and the store's name for messages."""
    if isinstance(path, zarr.Group):
        store, inside = storage.read_only(path.store_path.store), path.store_path.path
    else:
        store, inside = storage.open_store(path, storage_options), ""
    where = _name_of(path, store, inside)
    hidden = storage.secrets(storage_options, path)
    try:
        group = zarr.open_group(store, path=inside, mode="r")
        consolidated = group.metadata.consolidated_metadata
        if consolidated is not None:
            group = zarr.open_group(store, path=inside, mode="r", use_consolidated=False)
    except FileNotFoundError as exc:  # zarr's GroupNotFoundError is one
        message = f"Zarr store {where!r} does not exist (no Zarr group there)."
        raise FileNotFoundError(_masked(message, hidden)) from _shown(exc, hidden)
    except Exception as exc:  # zarr and the filesystems raise several types
        message = f"{where!r} is not a readable Zarr group: {exc}"
        raise ValueError(_masked(message, hidden)) from _shown(exc, hidden)
    return group, consolidated, where


def _name_of(path: ZarrInput, store: Store, inside: str) -> str:
    """What messages call the store: its location, or the store itself when in memory."""
    if isinstance(path, str | os.PathLike):
        return storage.location(path)
    return storage.store_location(store, inside) or str(store)


def _masked(message: str, hidden: list[str]) -> str:
    """``message`` with every string of ``hidden`` (see :func:`dem.storage.secrets`)
    replaced by ``***``."""
    for secret in hidden:
        message = message.replace(secret, "***")
    return message


def _shown(cause: BaseException, hidden: list[str]) -> BaseException | None:
    """``cause``, or None (no chained cause) when its message shows a string of ``hidden``."""
    text = str(cause)
    return None if any(secret in text for secret in hidden) else cause


def _refuse_incomplete_output(group: zarr.Group, where: str) -> None:
    """Refuse a store whose ``dem_output`` marker says its writer never finished."""
    marker = group.attrs.get("dem_output")
    if isinstance(marker, dict) and marker.get("complete") is False:
        writer = marker.get("writer", "dem")
        raise ValueError(
            f"Zarr store {where!r} is incomplete: `{writer}` started writing it "
            f"and did not finish (its dem_output marker says complete=false). Rerun the "
            f"`{writer}` command that wrote it before reading it."
        )


def _finished_by_dem(group: zarr.Group) -> bool:
    """Whether dem wrote this store to its end: its ``dem_output`` marker says complete
    (or, in stores older than the marker, ``dem synth``'s truth attribute, written last).
    Chunks such a store lacks are ones Zarr skipped as equal to the fill value."""
    marker = group.attrs.get("dem_output")
    if isinstance(marker, dict):
        return marker.get("complete") is True
    return "dem_synth" in group.attrs


def _warn_if_stale(recorded: Any, array: zarr.Array, where: str, variable: str) -> None:
    """Warn when the consolidated copy of ``array``'s metadata is not what it is."""
    if recorded == array.metadata:
        return
    said = "nothing" if recorded is None else f"shape {recorded.shape}"
    warnings.warn(
        f"The consolidated metadata of {where!r} are stale for {variable!r} "
        f"(they say {said}; the array has shape {array.shape}, chunks {array.chunks}); dem "
        f"reads the array's own metadata. Run zarr.consolidate_metadata({where!r}) "
        "to refresh them for other readers.",
        UserWarning,
        stacklevel=4,
    )


def unwritten_chunks(array: zarr.Array) -> list[tuple[int, ...]]:
    """Grid indices of the stored objects (chunks, or shards) of ``array`` never written.

    One listing of the array's keys; nothing is read. Zarr skips writing a chunk
    equal to the fill value (``write_empty_chunks=False``, its default), and a writer
    killed halfway leaves chunks out: the listing cannot tell the two apart.
    """
    prefix = f"{array.path}/" if array.path else ""
    listed = {key[len(prefix) :] for key in sync(_listing(array.store_path.store, prefix))}
    encode = array.metadata.encode_chunk_key
    return [
        tuple(int(c) for c in index)
        for index in np.ndindex(*_object_grid(array))
        if encode(tuple(int(c) for c in index)) not in listed
    ]


async def _listing(store: Any, prefix: str) -> list[str]:
    return [key async for key in store.list_prefix(prefix)]


def _object_rows(array: zarr.Array) -> tuple[int, ...]:
    """The shape of one stored object: a shard if the array is sharded, else a chunk."""
    return tuple(array.shards or array.chunks)


def _object_grid(array: zarr.Array) -> tuple[int, ...]:
    shape, step = array.shape, _object_rows(array)
    return tuple(-(-size // max(rows, 1)) for size, rows in zip(shape, step, strict=True))


def _refuse_unwritten(array: zarr.Array, source: str, name: str) -> None:
    """Refuse chunks never written, unless they read as NaN (missing, or the NaN error)."""
    fill = array.fill_value
    if fill is not None and np.asarray(fill).dtype.kind == "f" and np.isnan(fill):
        return
    missing = unwritten_chunks(array)
    if not missing:
        return
    total = int(np.prod(_object_grid(array)))
    value = np.asarray(fill).item()
    raise ValueError(
        f"{name!r} in {source!r}: {len(missing)} of {total} chunks were never written"
        f"{_located(array, missing)}. They would read as the fill value {value!r}, not as "
        "data. If the writer was interrupted, rerun it; if those chunks really hold only "
        "the fill value (Zarr skips writing such chunks by default), write the variable "
        "again inside zarr.config.set({'array.write_empty_chunks': True}), or with "
        "fill_value=NaN for values that are missing."
    )


def _located(array: zarr.Array, missing: list[tuple[int, ...]]) -> str:
    """'; chunk(s) 3, 4 along the samples, the first holding samples 600-799' (or '')."""
    if array.ndim == 0:
        return ""
    along = sorted({index[0] for index in missing})
    step = _object_rows(array)[0]
    first = ", ".join(str(i) for i in along[:5])
    more = f" and {len(along) - 5} more" if len(along) > 5 else ""
    last_row = min((along[0] + 1) * step, array.shape[0]) - 1
    return (
        f"; chunk(s) {first}{more} along the samples, the first holding samples "
        f"{along[0] * step}-{last_row}"
    )


def as_samples(
    data: Any,
    *,
    variable: tabular.Columns = None,
    sample_dim: str = "sample",
    feature_dim: str | None = "feature",
    time_dim: str = "time",
    name: str = "X",
    ndim: int = 2,
    chunk_rows: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Samples:
    """Turn user input into a validated :class:`Samples`.

    Parameters
    ----------
    data : array-like, DataFrame, dask array, xarray, zarr array, path, URL, zarr store or group
        A numpy array, a pandas or dask DataFrame, a dask array, an ``xarray.DataArray`` with dims
        ``(sample_dim, feature_dim)`` in any order, an ``xarray.Dataset`` plus
        ``variable``, a ``zarr.Array``, or a Zarr store plus ``variable``: a local path
        (a directory or a ``.zip`` file), an fsspec URL (``s3://``, ``gs://``, ``az://``,
        ``abfs://``, ``file://``, ``memory://``, ...), a ``zarr.abc.store.Store`` or a
        ``zarr.Group``. Stores are opened read-only.
    variable : str, optional
        The variable to read from a Zarr store or a Dataset; for Parquet data (a path or
        URL of a ``.parquet`` file, a directory of them or a glob: :mod:`dem.tabular`),
        the column(s): a list or a comma-separated string (default: every numeric
        column; one column for ``ndim=1``).
    sample_dim, feature_dim, time_dim : str
        Dimension names for xarray inputs (``time_dim`` only for ``ndim=3``).
    name : str
        What to call this input in error messages.
    ndim : {1, 2, 3}
        The number of dimensions expected (2 for samples × features, 1 for a
        per-sample vector such as a regression target, 3 for sequences × time ×
        features). Every axis but the first ends up in one chunk.
    chunk_rows : int, optional
        Rows per chunk for numpy input (default 100,000). Ignored for inputs that
        are already chunked.
    storage_options : mapping, optional
        Options for the fsspec filesystem of a URL (credentials, ``endpoint_url``, ...);
        without them it finds credentials in its usual places (environment variables,
        config files). They are never recorded: ``Samples.source`` is the location
        without credentials (:func:`dem.storage.location`). Ignored for other inputs.

    Returns
    -------
    Samples

    Raises
    ------
    ValueError
        Wrong number of dimensions, empty input, unknown dims.
    TypeError
        Non-numeric dtype.
    FileNotFoundError, KeyError
        A store path or variable that does not exist.
    ImportError
        A URL whose fsspec filesystem is not installed (the message names the package).
    """
    source = None
    coords: dict[str, Any] = {}
    if isinstance(data, zarr.Array):
        array, source, name = _stored_array(data, data, name)
        kind = "zarr"
    elif isinstance(data, str | os.PathLike) and tabular.is_parquet(data, storage_options):
        table = tabular.open_parquet(data, variable, storage_options=storage_options, ndim=ndim)
        array = table.array(ndim)
        source = f"{table.location}::{','.join(table.columns)}"
        kind = "parquet"
    elif isinstance(data, str | os.PathLike | Store | zarr.Group):
        tabular.refuse_text_table(data)
        if isinstance(data, str | os.PathLike) and not storage.is_url(data):
            _refuse_missing_path(data)
        if not isinstance(variable, str):
            raise ValueError(
                f"A Zarr store was given ({_described(data)!r}) without a variable name; "
                "pass variable='X' (the name of the array in the store)."
            )
        stored, finished, where = _open_variable(data, variable, storage_options)
        array, source, name = _stored_array(stored, data, variable, where, finished)
        kind = "zarr"
    elif isinstance(data, xr.Dataset):
        if not isinstance(variable, str) or variable not in data:
            raise KeyError(
                f"Pass variable=... naming one of the Dataset's variables {list(data.data_vars)}."
            )
        return as_samples(
            data[variable],
            sample_dim=sample_dim,
            feature_dim=feature_dim,
            time_dim=time_dim,
            name=variable,
            ndim=ndim,
            chunk_rows=chunk_rows,
        )
    elif isinstance(data, xr.DataArray):
        dims = {1: (sample_dim,), 2: (sample_dim, feature_dim)}.get(
            ndim, (sample_dim, time_dim, feature_dim)
        )
        if set(data.dims) != set(dims):
            raise ValueError(
                f"{name} has dims {data.dims}; expected {dims}. Pass sample_dim= and "
                "feature_dim= to name yours."
            )
        data = data.transpose(*dims)
        if sample_dim in data.coords:
            coords[sample_dim] = data.coords[sample_dim]
        array = (
            _unmasked_dask(data.data)
            if isinstance(data.data, da.Array)
            else _from_numpy(_dense(data.data, name), chunk_rows)
        )
        kind = "xarray"
    elif isinstance(data, da.Array):
        array = _unmasked_dask(data)
        kind = "dask"
    elif _is_dask_frame(data):
        array = data.to_dask_array(lengths=True)  # a pass over the partitions' lengths
        kind = "dask"
    else:
        array = _from_numpy(_dense(data, name), chunk_rows)
        kind = "numpy"
    features = feature_dim or "feature"
    axes = {1: features} if ndim == 2 else {1: time_dim, 2: features}
    array = _validated(array, name, ndim, axes)
    return Samples(array, name, source, kind, sample_dim, coords)


def _refuse_missing_path(path: str | os.PathLike[str]) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"Zarr store {storage.location(path)!r} does not exist.")


def _stored_array(
    stored: zarr.Array,
    given: Any,
    name: str,
    where: str | None = None,
    finished: bool = False,
) -> tuple[da.Array, str | None, str]:
    """A Zarr array as dask, its source (``"location::variable"``, None for a store in
    memory) and its name, after refusing chunks never written (unless dem wrote it)."""
    location = storage.store_location(stored.store_path.store)
    source = None if location is None else f"{location}::{stored.path or name}"
    if isinstance(given, str | os.PathLike):
        source = f"{storage.location(given)}::{name}"
    if not finished:
        _refuse_unwritten(stored, where or _described(given), name)
    return da.from_zarr(stored), source, name


def _described(data: Any) -> str:
    """A store, path or URL as messages name it (never with credentials)."""
    if isinstance(data, str | os.PathLike):
        return storage.location(data)
    if isinstance(data, zarr.Group | zarr.Array):
        return storage.store_location(data.store_path.store, data.path) or str(data.store)
    return storage.store_location(data) or str(data)


def _dense(data: Any, name: str) -> np.ndarray:
    """``data`` as a numpy array: masked entries and pandas' NA become NaN.

    A scipy.sparse matrix is refused (dem reads dense chunks).
    """
    if _is_sparse(data):
        raise TypeError(
            f"{name} is a sparse matrix ({type(data).__name__}); dem needs dense values. "
            f"Pass {name}.toarray() if it fits in memory, or store it densely in a Zarr "
            "store (chunked along the samples) and pass the path."
        )
    if _is_pandas(data):
        return _pandas_values(data)
    if isinstance(data, np.ma.MaskedArray):
        return masked_as_nan(data)
    return np.asarray(data)


def _is_sparse(data: Any) -> bool:
    module = type(data).__module__
    return module.split(".")[0] == "sparse" or module.startswith("scipy.sparse")


def _is_dask_frame(data: Any) -> bool:
    return type(data).__module__.startswith("dask") and hasattr(data, "to_dask_array")


def _is_pandas(data: Any) -> bool:
    return type(data).__module__.startswith("pandas") and hasattr(data, "to_numpy")


def _pandas_values(data: Any) -> np.ndarray:
    """A DataFrame or Series as numpy; nullable numeric columns give float64 with NaN for NA.

    Plain numpy-backed columns keep their dtype (a float32 frame stays float32).
    """
    dtypes = list(data.dtypes) if hasattr(data, "columns") else [data.dtype]
    nullable = [d for d in dtypes if not isinstance(d, np.dtype)]
    if nullable and all(getattr(d, "kind", "O") in "biuf" for d in nullable):
        return np.asarray(data.to_numpy(dtype=np.float64, na_value=np.nan))
    return np.asarray(data)


def masked_as_nan(values: np.ndarray) -> np.ndarray:
    """Masked entries of a masked array as NaN (NaN is what dem reads as missing)."""
    if not isinstance(values, np.ma.MaskedArray):
        return values
    dtype = values.dtype
    if dtype.kind in "biu" or (dtype.kind == "f" and dtype.itemsize < 4):
        dtype = np.dtype(np.float64)
    if dtype.kind != "f":  # not numeric: the dtype check refuses it by name
        return np.asarray(values.data)
    return np.ma.filled(values.astype(dtype), np.nan)


def _unmasked_dask(array: da.Array) -> da.Array:
    """A dask array of masked chunks (dask.array.ma) with NaN where values are masked."""
    if not isinstance(getattr(array, "_meta", None), np.ma.MaskedArray):
        return array
    dtype = array.dtype if array.dtype.kind == "f" and array.dtype.itemsize >= 4 else np.float64
    meta = np.empty((0,) * array.ndim, dtype)
    return da.map_blocks(masked_as_nan, array, dtype=dtype, meta=meta)


def _from_numpy(values: np.ndarray, chunk_rows: int | None) -> da.Array:
    rows = chunk_rows or DEFAULT_CHUNK_ROWS
    chunks = (rows, *values.shape[1:]) if values.ndim >= 1 else ()
    return da.from_array(values, chunks=chunks, name=False)


def _validated(array: da.Array, name: str, ndim: int, axis_names: dict[int, str]) -> da.Array:
    if any(math.isnan(size) for sizes in array.chunks for size in sizes):
        raise ValueError(
            f"{name} is a dask array whose chunk sizes are unknown (shape {array.shape}), "
            "as after boolean indexing. Call X.compute_chunk_sizes() on it first (or "
            "X.rechunk(...) with known sizes), then pass it."
        )
    if array.ndim != ndim:
        if ndim == 2 and array.ndim == 1:
            hint = (
                " Reshape it with X.reshape(-1, 1) for one feature, "
                "or X.reshape(1, -1) for one sample."
            )
        else:
            hint = ""
        raise ValueError(
            f"{name} must be {ndim}-D; got {array.ndim}-D of shape {array.shape}.{hint}"
        )
    if 0 in array.shape:
        raise ValueError(
            f"{name} is empty (shape {array.shape}); it needs at least one sample and feature."
        )
    dtype = array.dtype
    if dtype.kind in "biu":
        array = array.astype(np.float64)
    elif dtype.kind != "f":
        raise TypeError(
            f"{name} has dtype {dtype}; dem needs numbers. Convert it to float32 or float64 "
            "(for example X.astype('float64')) after encoding any categorical columns."
        )
    elif dtype.itemsize < 4 or dtype.itemsize > 8:
        array = array.astype(np.float64)
    split = [axis for axis in range(1, ndim) if len(array.chunks[axis]) > 1]
    if split:
        warnings.warn(
            f"{name} is split into {len(array.chunks[split[0]])} chunks along the "
            f"{axis_names[split[0]]} axis; rechunking it to one chunk (store it with whole "
            "rows per chunk to avoid this).",
            UserWarning,
            stacklevel=4,
        )
        array = array.rechunk({axis: -1 for axis in split})
    return array


def sample_rows(array: da.Array, size: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``size`` distinct random rows of ``array`` as numpy (one compute).

    Only the chosen rows travel to the client; the rows keep their order in the data.
    The rows are not checked: invalid values are found by the first pass (and, when an
    initialisation fails on them first, by the check the engine then runs).
    """
    n_samples = int(array.shape[0])
    if n_samples <= size:
        return np.asarray(array.compute())
    rows = np.sort(rng.choice(n_samples, size=size, replace=False))
    return np.asarray(array[rows].compute())


EXTREME_RATIO = 1e8
"""A finite value is extreme when its magnitude exceeds this many times the median
magnitude of the nonzero values of its feature (estimated on a sample of rows).
Beyond about 1e8 (the square root of 1/machine epsilon) a value's square swamps
everything else in a sum of squares, and covariances lose all precision."""

EXTREME_SAMPLE_ROWS = 10_000


def raise_if_extreme(arrays: Mapping[str, da.Array], failure: BaseException) -> None:
    """After a numerical failure of the fit: name the rows holding extreme values, if any.

    Runs only once a fit has failed (one small sample and one pass), so data that fit
    are never refused by it: heavy tails or large offsets only meet it when the fit
    itself broke down. Raises ValueError from ``failure``; returns when no value of
    any floating input exceeds :data:`EXTREME_RATIO` times its feature's typical
    magnitude.
    """
    for name, array in arrays.items():
        if array.dtype.kind != "f" or array.ndim == 0:
            continue
        bounds = _extreme_bounds(array)
        if not np.isfinite(bounds).any():
            continue
        count, rows = _rows_beyond(array, bounds)
        if count:
            noun = "sequence" if array.ndim == 3 else "row"
            shown = ", ".join(str(r) for r in rows)
            more = f" and {count - len(rows)} more" if count > len(rows) else ""
            raise ValueError(
                f"{name} contains extreme values: {count} {noun}(s) hold a value more than "
                f"{EXTREME_RATIO:.0e} times the typical magnitude of its feature, at {noun}(s) "
                f"{shown}{more}. Values that far apart exceed float64's precision in the "
                f"fit, which failed with: {failure} Remove or correct those {noun}s, or "
                "rescale (for example log-transform) the feature."
            ) from failure


def _features(values: np.ndarray) -> np.ndarray:
    """Values as (entries, features): the last axis is the feature axis (or one feature)."""
    return values.reshape(-1, 1) if values.ndim == 1 else values.reshape(-1, values.shape[-1])


def _extreme_bounds(array: da.Array) -> np.ndarray:
    """Per feature, EXTREME_RATIO × the median nonzero magnitude on a sample (inf if none)."""
    sample = _features(sample_rows(array, EXTREME_SAMPLE_ROWS, np.random.default_rng(0)))
    magnitude = np.abs(sample.astype(np.float64))
    usable = np.isfinite(magnitude) & (magnitude > 0)
    bounds = np.full(magnitude.shape[1], np.inf)
    for feature in range(magnitude.shape[1]):
        values = magnitude[usable[:, feature], feature]
        if values.size:
            bounds[feature] = EXTREME_RATIO * float(np.median(values))
    return bounds


def _rows_beyond(array: da.Array, bounds: np.ndarray, shown: int = 5) -> tuple[int, list[int]]:
    """How many rows hold a finite value beyond its feature's bound; the first ``shown``."""
    offsets = np.concatenate([[0], np.cumsum(array.chunks[0])[:-1]]).astype(int)
    blocks = array.to_delayed().reshape(len(array.chunks[0]), -1)[:, 0]
    found = dask.compute(
        *[
            dask.delayed(_beyond)(block, bounds, int(offset), shown)
            for block, offset in zip(blocks, offsets, strict=True)
        ]
    )
    rows = [row for _, first in found for row in first][:shown]
    return sum(count for count, _ in found), rows


def _beyond(
    block: np.ndarray, bounds: np.ndarray, offset: int, shown: int
) -> tuple[int, list[int]]:
    values = np.asarray(block, dtype=np.float64)
    magnitude = np.abs(values.reshape(len(values), -1, bounds.size))
    with np.errstate(invalid="ignore"):
        extreme = (np.isfinite(magnitude) & (magnitude > bounds)).any(axis=(1, 2))
    hits = np.flatnonzero(extreme)
    return int(hits.size), [int(offset + r) for r in hits[:shown]]
