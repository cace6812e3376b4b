"""Sparse document × term matrices as dask arrays of CSR chunks, and their Zarr layout.

A corpus reaches the engine as a dask array whose chunks are ``scipy.sparse`` CSR
matrices (documents × vocabulary), chunked along the documents only; no chunk is
ever densified. It comes from an in-memory ``scipy.sparse`` matrix
(:func:`from_scipy`), a dask array of sparse chunks, or a Zarr group in the CSR layout:

==================  =========================================================
``<name>/indptr``   int64, ``n_documents + 1`` row pointers (``indptr[0] = 0``)
``<name>/indices``  int32 or int64, the term of each stored count
``<name>/data``     float32 or float64, the counts
attributes          ``{"format": "csr", "shape": [n_documents, n_terms],``
                    ``"chunk_rows": documents per chunk}``
==================  =========================================================

(scipy's CSR arrays under one group). Beside it, the store may hold the vocabulary:

==================  =========================================================
``vocabulary``      strings, ``n_terms``: the word of each column (term)
==================  =========================================================

a 1-D array at the store's root; ``dem show`` prints each topic's most probable words
with it (``dem synth lda`` writes synthetic words ``w00000``, ``w00001``, ...).

Each chunk of ``chunk_rows`` documents is read by its own task: its slice of
``indptr``, then the stretch of ``indices`` and ``data`` between its first and last
pointer. :func:`write_csr` appends chunks in order.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from typing import Any

import dask.array as da
import numpy as np
import zarr
from dask.highlevelgraph import HighLevelGraph
from dask.task_spec import Task
from scipy import sparse

from dem import storage
from dem.data import DEFAULT_CHUNK_ROWS, Samples, _open_group, _refuse_incomplete_output

FORMAT = "csr"
VOCABULARY = "vocabulary"
"""The name of the store's vocabulary array (one string per term)."""
ENTRIES_PER_CHUNK = 1_000_000
"""Stored entries per Zarr chunk of ``indices`` and ``data``."""


def is_sparse(data: Any) -> bool:
    """A scipy.sparse matrix or array."""
    return sparse.issparse(data)


def is_sparse_dask(data: Any) -> bool:
    """A dask array whose chunks are scipy.sparse matrices."""
    return isinstance(data, da.Array) and sparse.issparse(getattr(data, "_meta", None))


def from_scipy(matrix: Any, chunk_rows: int | None = None) -> da.Array:
    """An in-memory sparse matrix as a dask array of CSR chunks of ``chunk_rows`` rows."""
    matrix = sparse.csr_matrix(matrix)
    if matrix.dtype.kind in "biu":
        matrix = matrix.astype(np.float64)
    rows = int(chunk_rows or DEFAULT_CHUNK_ROWS)
    return da.from_array(matrix, chunks=(rows, matrix.shape[1]), asarray=False, name=False)


def synthetic_vocabulary(n_terms: int) -> np.ndarray:
    """Words ``w0``... ``w{n_terms - 1}``, zero-padded to one width (``w00017``)."""
    width = len(str(max(n_terms - 1, 0)))
    return np.array([f"w{term:0{width}d}" for term in range(n_terms)], dtype=object)


def read_vocabulary(
    path: Any, n_terms: int, storage_options: Mapping[str, Any] | None = None
) -> np.ndarray | None:
    """The vocabulary array of the store at ``path`` (see the layout above) when it has
    ``n_terms`` words, else None (no store, no such array, or one of another length)."""
    try:
        group, _, _ = _open_group(path, storage_options)
    except (FileNotFoundError, ValueError, OSError):
        return None
    found = group.get(VOCABULARY)
    if not isinstance(found, zarr.Array) or found.shape != (n_terms,):
        return None
    return np.array([str(word) for word in np.asarray(found[:]).tolist()], dtype=object)


def top_words(
    components: np.ndarray, vocabulary: np.ndarray | None, count: int = 10
) -> list[list[str]]:
    """The ``count`` most probable terms of each topic (rows of ``components``), most
    probable first: words of ``vocabulary``, or term indices when it is None."""
    order = np.argsort(-np.asarray(components), axis=1, kind="stable")[:, :count]
    if vocabulary is None:
        return [[str(term) for term in row] for row in order]
    return [[str(vocabulary[term]) for term in row] for row in order]


def csr_bytes(matrix: Any) -> int:
    """Bytes of a CSR matrix's three arrays (``data``, ``indices``, ``indptr``)."""
    return int(matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes)


def scipy_bytes(matrix: Any) -> int:
    """Bytes of any scipy.sparse matrix once float64 CSR (:func:`from_scipy`): its
    counts, and scipy's int32 indices and row pointers (int64 past 2**31)."""
    nnz, rows = int(matrix.nnz), int(matrix.shape[0])
    index = 4 if max(nnz, *matrix.shape) < 2**31 else 8
    return nnz * 8 + (nnz + rows + 1) * index


def group_bytes(group: zarr.Group) -> int:
    """Bytes of a CSR group's three arrays once read (uncompressed)."""
    return sum(int(_array(group, part).nbytes) for part in ("data", "indices", "indptr"))


def estimated_bytes(array: da.Array) -> int:
    """Bytes of a dask array of sparse chunks held in memory, estimated from its first
    chunk (its CSR arrays' bytes per document times the documents); its dense size
    when the array is empty."""
    if not array.shape[0] or not array.chunks[0][0]:
        return int(array.nbytes)
    first = sparse.csr_matrix(array.blocks[0].compute())
    return int(csr_bytes(first) * array.shape[0] / array.chunks[0][0])


def csr_group(
    path: Any, variable: str, storage_options: Mapping[str, Any] | None = None
) -> zarr.Group | None:
    """The group ``variable`` of the store at ``path`` when it holds the CSR layout, else
    None (a path that is no Zarr store, or a variable that is an array, is not ours)."""
    if not isinstance(path, str | os.PathLike | zarr.Group):
        return None
    local = not isinstance(path, zarr.Group) and not storage.is_url(path)
    if local and not os.path.isdir(os.fspath(path)):  # type: ignore[arg-type]
        return None
    try:
        group, _, where = _open_group(path, storage_options)
    except (FileNotFoundError, ValueError):
        return None
    found = group.get(variable)
    if not isinstance(found, zarr.Group) or found.attrs.get("format") != FORMAT:
        return None
    _refuse_incomplete_output(group, where)
    return found


def _read_rows(
    indptr: zarr.Array, indices: zarr.Array, data: zarr.Array, start: int, stop: int, width: int
) -> sparse.csr_matrix:
    pointers = np.asarray(indptr[start : stop + 1], dtype=np.int64)
    low, high = int(pointers[0]), int(pointers[-1])
    return sparse.csr_matrix(
        (np.asarray(data[low:high]), np.asarray(indices[low:high]), pointers - low),
        shape=(stop - start, width),
    )


def _array(group: zarr.Group, name: str) -> zarr.Array:
    found = group[name]
    assert isinstance(found, zarr.Array)
    return found


def read_csr(group: zarr.Group, name: str, source: str | None) -> Samples:
    """The CSR ``group`` as :class:`~dem.data.Samples` (a dask array of CSR chunks)."""
    for part in ("indptr", "indices", "data"):
        if not isinstance(group.get(part), zarr.Array):
            raise ValueError(
                f"{name!r} is a CSR group without the array {part!r}; it needs indptr, "
                "indices and data (see dem.models.lda.corpus)."
            )
    attrs: dict[str, Any] = dict(group.attrs)
    n_rows, width = (int(s) for s in attrs["shape"])
    rows = int(attrs.get("chunk_rows", DEFAULT_CHUNK_ROWS))
    indptr, indices, data = (_array(group, part) for part in ("indptr", "indices", "data"))
    if indptr.shape != (n_rows + 1,):
        raise ValueError(
            f"{name!r}: indptr has shape {indptr.shape}, expected ({n_rows + 1},) for "
            f"{n_rows} documents."
        )
    token = f"csr-{name}-{uuid.uuid4().hex}"
    layer: dict[Any, Any] = {}
    sizes = []
    for index, start in enumerate(range(0, n_rows, rows)):
        stop = min(start + rows, n_rows)
        key = (token, index, 0)
        layer[key] = Task(key, _read_rows, indptr, indices, data, start, stop, width)
        sizes.append(stop - start)
    graph = HighLevelGraph.from_collections(token, layer, dependencies=[])
    meta = sparse.csr_matrix((0, 0), dtype=data.dtype)
    array = da.Array(graph, token, chunks=(tuple(sizes), (width,)), meta=meta)
    return Samples(array, name, source, "zarr")


def write_csr(
    group: zarr.Group, name: str, n_rows: int, width: int, chunk_rows: int, dtype: Any
) -> CSRWriter:
    """An empty CSR layout ``name`` in ``group``, to fill with :meth:`CSRWriter.append`."""
    return CSRWriter(group, name, n_rows, width, chunk_rows, np.dtype(dtype))


class CSRWriter:
    """Appends CSR chunks, in document order, to a Zarr CSR layout."""

    def __init__(
        self, group: zarr.Group, name: str, n_rows: int, width: int, chunk_rows: int, dtype: Any
    ) -> None:
        self.node = group.create_group(name)
        self.node.attrs.update(
            {"format": FORMAT, "shape": [n_rows, width], "chunk_rows": int(chunk_rows)}
        )
        self.indptr = self.node.create_array(
            "indptr", shape=(n_rows + 1,), chunks=(max(chunk_rows, 1),), dtype=np.int64
        )
        index_type = np.int32 if width < 2**31 else np.int64
        self.indices = self.node.create_array(
            "indices", shape=(0,), chunks=(ENTRIES_PER_CHUNK,), dtype=index_type
        )
        self.data = self.node.create_array(
            "data", shape=(0,), chunks=(ENTRIES_PER_CHUNK,), dtype=dtype
        )
        self.indptr[0:1] = np.zeros(1, dtype=np.int64)
        self.rows = 0
        self.entries = 0

    def append(self, matrix: sparse.csr_matrix) -> None:
        """Write the next ``matrix.shape[0]`` documents."""
        matrix = sparse.csr_matrix(matrix)
        matrix.sum_duplicates()
        low, high = self.entries, self.entries + matrix.nnz
        if matrix.nnz:
            self.indices.resize((high,))
            self.data.resize((high,))
            self.indices[low:high] = matrix.indices.astype(self.indices.dtype)
            self.data[low:high] = matrix.data.astype(self.data.dtype)
        stop = self.rows + matrix.shape[0]
        self.indptr[self.rows + 1 : stop + 1] = low + matrix.indptr[1:].astype(np.int64)
        self.rows, self.entries = stop, high
