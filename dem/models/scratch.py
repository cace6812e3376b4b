"""Reusable work buffers for E-step kernels that walk a chunk in row blocks."""

from __future__ import annotations

import math
import threading

import numpy as np


class Scratch:
    """Arrays reused from block to block of one E-step, one named buffer per purpose.

    A fresh array of 128 KiB or more per block costs a page fault per 4 KiB on dask
    workers: distributed sets glibc's ``MALLOC_TRIM_THRESHOLD_`` for its worker
    processes, which turns off malloc's adaptive mmap threshold, so every large
    allocation is a new mapping of zeroed pages. That made a full-covariance E-step
    1.6× slower on a worker than in a plain process; reusing the buffers removes it.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, np.dtype], np.ndarray] = {}

    def __call__(
        self, name: str, shape: tuple[int, ...], dtype: type[np.generic] = np.float64
    ) -> np.ndarray:
        """A C-contiguous array of ``shape`` (uninitialised) in the buffer ``name``."""
        size, key = math.prod(shape), (name, np.dtype(dtype))
        buffer = self._buffers.get(key)
        if buffer is None or buffer.size < size:
            buffer = self._buffers[key] = np.empty(size, dtype)
        return buffer[:size].reshape(shape)

    def float64(self, name: str, values: np.ndarray) -> np.ndarray:
        """``values`` themselves when float64, else a float64 copy in the buffer ``name``."""
        if values.dtype == np.float64:
            return values
        out = self(name, values.shape)
        np.copyto(out, values)
        return out

    def take(self, name: str, values: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """The rows ``indices`` of ``values`` (along the first axis), in the buffer ``name``.

        (``mode="clip"``, for indices known to be in range: with the default, ``np.take``
        fills a fresh array and then copies it into ``out``.)
        """
        out = self(name, (len(indices), *values.shape[1:]), values.dtype.type)
        return np.take(values, indices, axis=0, out=out, mode="clip")


_THREAD = threading.local()


def thread_scratch(owner: str) -> Scratch:
    """The calling thread's Scratch for ``owner``, kept from call to call.

    For a kernel whose chunks are only a few row blocks long, so that a fresh Scratch
    per chunk would still touch new pages for most of its blocks. The buffers stay
    allocated while the thread lives (their size is the kernel's largest block's);
    the caller must not hold a buffer's contents across calls, nor call itself.
    """
    scratches: dict[str, Scratch] = _THREAD.__dict__.setdefault("scratches", {})
    scratch = scratches.get(owner)
    if scratch is None:
        scratch = scratches[owner] = Scratch()
    return scratch
