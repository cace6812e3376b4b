"""Heap reuse while E-step kernels run on dask workers (glibc's malloc thresholds).

Distributed's nanny starts every worker process with ``MALLOC_TRIM_THRESHOLD_=65536``
(its default ``distributed.nanny.pre-spawn-environ``), so that freed memory goes back
to the operating system at once. Setting any of glibc's malloc thresholds turns off
its adaptive ``mmap`` threshold, which then stays at 128 KiB: every temporary array of
128 KiB or more that a kernel allocates is a fresh ``mmap`` whose zeroed pages fault in
one by one, and is unmapped when freed. E-step kernels allocate such temporaries on
every row block, so on a worker the same kernel took much longer than in a plain
process: 4.4× for latent Dirichlet allocation, 1.4× for the complete-data Gaussian
mixture and 2–3.6× for the missing-value mixture (see ``docs/performance.md``).

:func:`heap_reuse` raises both thresholds to :data:`HEAP_REUSE_BYTES` (glibc's own
largest adaptive value) while a kernel runs, so temporaries are carved from the heap
and reused from block to block, and puts back the environment's values when it ends,
then hands the freed heap back to the system (``malloc_trim``): between tasks the
worker returns memory as promptly as distributed intended. The engine runs every map
task inside it (:func:`dem.graph._map_task`), so every model's E-step gets it.

It changes nothing where it is not needed or cannot be undone exactly:

- on a C library other than glibc (macOS, musl, Windows) it does nothing;
- in a process whose environment fixes no malloc setting (a plain Python process, the
  threaded scheduler in the client's process), glibc's adaptive threshold already
  reuses the heap, and calling ``mallopt`` would turn the adaptation off for good, so
  it does nothing either.

glibc has no call that reads the thresholds back, so the values put back are those the
environment fixed at startup (``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_`` or
the ``GLIBC_TUNABLES`` ``glibc.malloc.trim_threshold`` / ``mmap_threshold``, glibc's
128 KiB default for one not given): the previous values unless the process called
``mallopt`` itself. The thresholds are process-wide and several threads of a worker
run map tasks at once, so the entries are counted under a lock: the first to enter
raises them and the last to leave restores them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

HEAP_REUSE_BYTES = 32 * 2**20
"""The trim and mmap thresholds inside :func:`heap_reuse` (glibc's largest adaptive
``M_MMAP_THRESHOLD`` on 64-bit systems)."""

GLIBC_DEFAULT_BYTES = 128 * 2**10
"""glibc's default trim and mmap thresholds."""

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
_FIXING = {  # settings that turn glibc's adaptive thresholds off: tunable, variable
    "trim_threshold": "MALLOC_TRIM_THRESHOLD_",
    "mmap_threshold": "MALLOC_MMAP_THRESHOLD_",
    "top_pad": "MALLOC_TOP_PAD_",
    "mmap_max": "MALLOC_MMAP_MAX_",
}


_MALLINFO2: tuple[str, ...] = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks")
_MALLINFO2 += ("fsmblks", "uordblks", "fordblks", "keepcost")  # glibc's struct mallinfo2


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2]


def _glibc() -> Any:
    """The C library if it is glibc (``gnu_get_libc_version``, ``mallopt``,
    ``malloc_trim``), else None."""
    try:
        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    needed = ("gnu_get_libc_version", "mallopt", "malloc_trim")
    if libc is None or not all(hasattr(libc, symbol) for symbol in needed):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


_LIBC = _glibc()
_LOCK = threading.Lock()
_users = 0


def _tunables(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``glibc.malloc.*`` entries of ``GLIBC_TUNABLES`` (``name=value:name=value``)."""
    found = {}
    for item in environ.get("GLIBC_TUNABLES", "").split(":"):
        name, _, value = item.partition("=")
        if name.startswith("glibc.malloc."):
            found[name.removeprefix("glibc.malloc.")] = value
    return found


def fixed_thresholds(environ: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """glibc's trim and mmap thresholds (bytes) as ``environ`` fixed them at startup, or
    None when it fixes none of glibc's malloc settings (the thresholds adapt).

    Parameters
    ----------
    environ : mapping, optional
        The process environment (``os.environ``, the default).
    """
    environ = dict(os.environ if environ is None else environ)
    tunables = _tunables(environ)
    if not any(tunable in tunables or name in environ for tunable, name in _FIXING.items()):
        return None

    def value(tunable: str) -> int:
        text = environ.get(_FIXING[tunable], tunables.get(tunable, ""))
        try:
            number = int(text, 0)
        except ValueError:
            return GLIBC_DEFAULT_BYTES
        return number if 0 <= number < 2**31 else GLIBC_DEFAULT_BYTES  # mallopt takes an int

    return value("trim_threshold"), value("mmap_threshold")


def active() -> bool:
    """Whether :func:`heap_reuse` changes anything in this process: glibc, and an
    environment that fixes its malloc thresholds (as on a dask worker)."""
    return _LIBC is not None and fixed_thresholds() is not None


@contextlib.contextmanager
def heap_reuse() -> Iterator[None]:
    """Let the temporaries of the kernels run inside reuse the heap.

    Raises glibc's trim and mmap thresholds to :data:`HEAP_REUSE_BYTES` on entering
    (the first of concurrent users, in any thread) and, on leaving (the last), puts back
    the values the environment fixed and trims the heap. Does nothing off glibc or when
    the environment fixes no malloc threshold (see the module's notes). Re-entrant.
    """
    global _users
    previous = fixed_thresholds() if _LIBC is not None else None
    if previous is None:
        yield
        return
    with _LOCK:
        if _users == 0:
            _LIBC.mallopt(_M_MMAP_THRESHOLD, HEAP_REUSE_BYTES)
            _LIBC.mallopt(_M_TRIM_THRESHOLD, HEAP_REUSE_BYTES)
        _users += 1
    try:
        yield
    finally:
        with _LOCK:
            _users -= 1
            if _users == 0:
                trim, mmap = previous
                _LIBC.mallopt(_M_MMAP_THRESHOLD, mmap)
                _LIBC.mallopt(_M_TRIM_THRESHOLD, trim)
                _LIBC.malloc_trim(0)


_F = TypeVar("_F", bound=Callable[..., Any])


def reusing_heap(function: _F) -> _F:
    """``function`` run inside :func:`heap_reuse` (for per-chunk functions that a dask
    graph calls on workers)."""

    @functools.wraps(function)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with heap_reuse():
            return function(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def allocation_is_mapped(nbytes: int) -> bool | None:
    """Whether glibc serves a ``malloc`` of ``nbytes`` now with its own ``mmap`` (the
    thresholds in force are below it), or None off glibc (or before glibc 2.33).

    A probe of the thresholds, which glibc cannot report: it allocates and frees one
    block and compares ``mallinfo2``'s bytes in mapped blocks before and with it.
    """
    if _LIBC is None or not hasattr(_LIBC, "mallinfo2"):
        return None
    _LIBC.mallinfo2.restype = _MallInfo2
    _LIBC.malloc.restype, _LIBC.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    _LIBC.free.argtypes = [ctypes.c_void_p]
    before = _LIBC.mallinfo2().hblkhd
    pointer = _LIBC.malloc(nbytes)
    if not pointer:
        raise MemoryError(f"malloc({nbytes}) failed")
    try:
        return bool(_LIBC.mallinfo2().hblkhd >= before + nbytes)
    finally:
        _LIBC.free(pointer)
