"""Parquet input: columns of Parquet files as a lazy samples × features array.

A Parquet dataset (a file, a directory of files or a glob; a local path or an fsspec
URL) is read with :mod:`pyarrow.parquet`, one chunk per row group: the row counts come
from the files' footers, so opening reads metadata only, and each chunk is read by its
own task. Column names become feature names. Numeric and boolean columns are read as
floats (float32 when every selected column is float32, else float64); nulls become NaN
(missing values where the model takes them, else the usual NaN error). Other columns
are refused by name.

In the estimators a Parquet path is a store whose "variables" are columns:
``fit("data.parquet")`` reads every numeric column, ``fit("data.parquet",
variable=["a", "b"])`` (or ``variable="a,b"``) those columns; a 1-D input (a Tobit
target ``y="income"``) is one column. :func:`read_parquet` gives the same array as an
``xarray.DataArray`` for notebooks.
"""

from __future__ import annotations

import glob as globbing
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from dem import storage

SUFFIXES = (".parquet", ".pq", ".parq")
"""File names read as Parquet (also the files of a directory)."""

TEXT_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".csv.bz2", ".csv.zst", ".json", ".jsonl")

Columns = str | Sequence[str] | None
"""Columns to read: a name, names (a sequence or one comma-separated string), or None
for every numeric column."""


@dataclass(frozen=True)
class ParquetTable:
    """The row groups and columns of a Parquet dataset, from its footers.

    Attributes
    ----------
    location : str
        The dataset's location without credentials (what checkpoints record).
    files : tuple of str
        The files, in the order their rows are read (sorted by name).
    row_groups : tuple of (int, int, int)
        ``(file index, row group index, rows)`` of every non-empty row group, in order.
    columns : tuple of str
        The columns read, in order (the features).
    dtype : numpy.dtype
        float32 if every column is float32, else float64.
    """

    location: str
    files: tuple[str, ...]
    row_groups: tuple[tuple[int, int, int], ...]
    columns: tuple[str, ...]
    dtype: np.dtype
    filesystem: Any

    @property
    def n_rows(self) -> int:
        return sum(rows for _, _, rows in self.row_groups)

    def array(self, ndim: int = 2) -> da.Array:
        """The columns as a dask array, a chunk per row group: ``(rows, columns)``, or
        ``(rows,)`` for ``ndim=1`` (one column)."""
        name = "parquet-" + _token(self, ndim)
        graph = {
            (name, i) + ((0,) if ndim == 2 else ()): (
                _read_row_group,
                self.filesystem,
                self.files[file],
                group,
                self.columns,
                self.dtype,
                ndim,
            )
            for i, (file, group, _) in enumerate(self.row_groups)
        }
        rows = tuple(rows for _, _, rows in self.row_groups)
        chunks = (rows, (len(self.columns),)) if ndim == 2 else (rows,)
        return da.Array(graph, name, chunks=chunks, dtype=self.dtype)


def is_parquet(path: Any, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Whether ``path`` names Parquet data: a file or glob with a Parquet suffix, or a
    directory holding Parquet files and no Zarr metadata."""
    if not isinstance(path, str | os.PathLike):
        return False
    text = os.fspath(path).rstrip("/")
    if text.lower().endswith(SUFFIXES):
        return True
    if text.lower().endswith((".zarr", ".zip")) or "::" in text:
        return False
    if storage.is_url(text):
        try:  # one listing; whatever fails here, the Zarr path reports it properly
            filesystem, inside = _filesystem(text, storage_options)
            return bool(filesystem.isdir(inside)) and _directory_is_parquet(filesystem, inside)
        except Exception:
            return False
    return os.path.isdir(text) and _directory_is_parquet(None, text)


def refuse_text_table(path: Any) -> None:
    """Refuse a CSV (or other text table) path with the two ways to convert it.

    Raises
    ------
    ValueError
        ``path`` ends with a text-table suffix such as ``.csv``.
    """
    if not isinstance(path, str | os.PathLike):
        return
    text = os.fspath(path)
    if text.lower().endswith(TEXT_SUFFIXES):
        raise ValueError(
            f"{storage.location(text)!r} is a text table; dem reads Zarr and Parquet, which "
            "keep types and can be read in chunks. Convert it once, e.g. with pandas: "
            f"pandas.read_csv({os.path.basename(text)!r}).to_parquet('data.parquet') "
            "(dask.dataframe.read_csv(...).to_parquet('data/') for files larger than memory), "
            "then fit data.parquet, or run 'dem convert data.parquet data.zarr'."
        )


def open_parquet(
    path: str | os.PathLike[str],
    columns: Columns = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
    ndim: int = 2,
) -> ParquetTable:
    """The row groups and the selected columns of a Parquet dataset (footers only).

    Parameters
    ----------
    path : str or path-like
        A Parquet file, a directory of Parquet files (read recursively, files whose names
        start with ``_`` or ``.`` skipped), or a glob; local or an fsspec URL.
    columns : str, sequence of str or None
        The columns; None: every numeric or boolean column (``ndim=2`` only).
    storage_options : mapping, optional
        Options of the URL's fsspec filesystem (never recorded).
    ndim : {1, 2}
        2 for samples × features, 1 for one column (e.g. a regression target).

    Raises
    ------
    ImportError
        pyarrow is not installed (the message says how to install it).
    FileNotFoundError
        No Parquet file at ``path``.
    KeyError
        A column not in the files (the message lists theirs).
    TypeError
        A selected column that is not numeric or boolean.
    ValueError
        Files with different columns, several columns for ``ndim=1``, or no rows.
    """
    pq = _pyarrow_parquet()
    text = os.fspath(path)
    location = storage.location(text)
    filesystem, inside = _filesystem(text, storage_options)
    files = _files(filesystem, inside, location)
    schema = _schema(pq, filesystem, files[0])
    selected = _selected(schema, columns, location, ndim)
    row_groups: list[tuple[int, int, int]] = []
    for index, file in enumerate(files):
        with filesystem.open(file, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            missing = [c for c in selected if c not in parquet.schema_arrow.names]
            if missing:
                raise ValueError(
                    f"{storage.location(file)!r} lacks column(s) {missing} of {files[0]!r}: "
                    "the files of a Parquet dataset must share their columns."
                )
            metadata = parquet.metadata
            row_groups += [
                (index, group, metadata.row_group(group).num_rows)
                for group in range(metadata.num_row_groups)
                if metadata.row_group(group).num_rows > 0
            ]
    if not row_groups:
        raise ValueError(f"Parquet data {location!r} hold no rows.")
    types = [schema.field(c).type for c in selected]
    import pyarrow as pa

    dtype = np.dtype(np.float32 if all(t == pa.float32() for t in types) else np.float64)
    return ParquetTable(location, tuple(files), tuple(row_groups), selected, dtype, filesystem)


def read_parquet(
    path: str | os.PathLike[str],
    columns: Columns = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
    sample_dim: str = "sample",
    feature_dim: str = "feature",
) -> xr.DataArray:
    """Columns of Parquet files as a lazy ``xarray.DataArray`` (a chunk per row group).

    The result has dims ``(sample_dim, feature_dim)`` and the column names as the
    feature coordinate, so estimators fitted on it record ``feature_names_in_``.
    Only the footers are read here. See :func:`~dem.tabular.open_parquet` for the
    arguments and errors.

    Examples
    --------
    >>> import tempfile
    >>> import pandas as pd
    >>> import dem
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = f"{folder.name}/people.parquet"
    >>> people = pd.DataFrame({"age": [31, 45, 52], "income": [2.1, 3.4, 2.8], "name": list("abc")})
    >>> people.to_parquet(path, row_group_size=2)
    >>> X = dem.read_parquet(path)  # every numeric column, a chunk per row group
    >>> dict(X.sizes), X.chunks, X.dtype
    ({'sample': 3, 'feature': 2}, ((2, 1), (2,)), dtype('float64'))
    >>> X.feature.values.tolist()
    ['age', 'income']
    >>> X.sel(feature="age").values.tolist()
    [31.0, 45.0, 52.0]
    >>> folder.cleanup()

    Object storage and a choice of columns (``pip install 'dem[cloud]'`` for ``s3://``):

    >>> X = dem.read_parquet("s3://bucket/table/", columns=["age", "income"])  # doctest: +SKIP
    >>> dem.GaussianMixture(3).fit(X)  # doctest: +SKIP
    """
    table = open_parquet(path, columns, storage_options=storage_options)
    return xr.DataArray(
        table.array(),
        dims=(sample_dim, feature_dim),
        coords={feature_dim: list(table.columns)},
        name=",".join(table.columns),
    )


def column_list(columns: Columns) -> tuple[str, ...] | None:
    """``columns`` as a tuple of names (a comma-separated string split), or None."""
    if columns is None:
        return None
    if isinstance(columns, str):
        return tuple(c.strip() for c in columns.split(",") if c.strip())
    return tuple(str(c) for c in columns)


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(
            "Reading Parquet needs pyarrow: pip install 'dem[parquet]' (or pip install pyarrow)."
        ) from exc
    return pq


def _filesystem(text: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    import fsspec

    if not storage.is_url(text):
        return fsspec.filesystem("file"), os.path.abspath(text)
    storage.check_filesystem(text)
    return fsspec.core.url_to_fs(text, **dict(storage_options or {}))


def _directory_is_parquet(filesystem: Any, directory: str) -> bool:
    if filesystem is None:
        names = os.listdir(directory)
    else:
        names = [os.path.basename(p.rstrip("/")) for p in filesystem.ls(directory, detail=False)]
    if any(name in ("zarr.json", ".zgroup", ".zarray") for name in names):
        return False
    return any(name.lower().endswith(SUFFIXES) for name in names) or any(
        "=" in name
        for name in names  # hive partitions: key=value folders
    )


def _files(filesystem: Any, inside: str, location: str) -> list[str]:
    if globbing.has_magic(inside):
        found = [
            p for p in filesystem.glob(inside) if not os.path.basename(p).startswith(("_", "."))
        ]
    elif filesystem.isdir(inside):
        found = [
            p
            for p in filesystem.find(inside)
            if p.lower().endswith(SUFFIXES)
            and not any(part.startswith(("_", ".")) for part in p[len(inside) :].split("/"))
        ]
    elif filesystem.exists(inside):
        found = [inside]
    else:
        raise FileNotFoundError(f"Parquet data {location!r} do not exist.")
    files = sorted(p for p in found if filesystem.isfile(p))
    if not files:
        raise FileNotFoundError(f"No Parquet files at {location!r}.")
    return files


def _schema(pq: Any, filesystem: Any, file: str) -> Any:
    with filesystem.open(file, "rb") as handle:
        return pq.ParquetFile(handle).schema_arrow


def _selected(schema: Any, columns: Columns, location: str, ndim: int) -> tuple[str, ...]:
    import pyarrow.types as types

    def numeric(name: str) -> bool:
        kind = schema.field(name).type
        return bool(
            types.is_integer(kind)
            or types.is_floating(kind)
            or types.is_boolean(kind)
            or types.is_decimal(kind)
        )

    wanted = column_list(columns)
    if wanted is None:
        if ndim == 1:
            raise ValueError(f"Name the column of Parquet data {location!r} to read.")
        wanted = tuple(name for name in schema.names if numeric(name))
        if not wanted:
            raise TypeError(
                f"Parquet data {location!r} have no numeric columns (theirs: {schema.names})."
            )
    if not wanted:
        raise ValueError("No column named: pass column names, e.g. ['a', 'b'] or 'a,b'.")
    unknown = [name for name in wanted if name not in schema.names]
    if unknown:
        raise KeyError(
            f"Column(s) {unknown} not in Parquet data {location!r}; its columns are {schema.names}."
        )
    other = [f"{name} ({schema.field(name).type})" for name in wanted if not numeric(name)]
    if other:
        raise TypeError(
            f"Column(s) {', '.join(other)} of {location!r} are not numeric; dem fits numbers. "
            "Choose numeric columns (or encode these first)."
        )
    if ndim == 1 and len(wanted) != 1:
        raise ValueError(f"One column is needed here; got {list(wanted)}.")
    return wanted


def _read_row_group(
    filesystem: Any,
    file: str,
    group: int,
    columns: tuple[str, ...],
    dtype: np.dtype,
    ndim: int,
) -> np.ndarray:
    """One row group's columns as a float array (nulls as NaN)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with filesystem.open(file, "rb") as handle:
        table = pq.ParquetFile(handle).read_row_group(group, columns=list(columns))
    target = pa.float32() if dtype == np.float32 else pa.float64()
    values = np.empty((table.num_rows, len(columns)), dtype=dtype)
    for j, name in enumerate(columns):
        column = table.column(name).cast(target)
        values[:, j] = column.to_numpy(zero_copy_only=False)
    return values[:, 0].copy() if ndim == 1 else values


def _token(table: ParquetTable, ndim: int) -> str:
    from dask.base import tokenize

    return str(tokenize(table.location, table.files, table.row_groups, table.columns, ndim))
