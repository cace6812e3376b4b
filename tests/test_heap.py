"""Heap reuse on dask workers (dem/heap.py): glibc's thresholds raised inside map tasks,
put back after, counted across threads, and left alone where they adapt.

The thresholds cannot be read back from glibc, so the tests probe them: a ``malloc`` of
1 MiB is its own mapping (``mallinfo2``'s mapped bytes grow by it) exactly when the mmap
threshold in force is below 1 MiB. The in-process cases run in a fresh interpreter
started with or without ``MALLOC_TRIM_THRESHOLD_``, so this process's malloc is untouched.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dem import heap
from dem.graph import map_reduce

pytestmark = pytest.mark.skipif(
    heap.allocation_is_mapped(1) is None, reason="needs glibc 2.33 or later (mallinfo2)"
)

HEAP_PY = Path(heap.__file__)
MIB = 2**20


def _run(script: str, **environ: str) -> str:
    """``script`` in a fresh interpreter where ``heap`` is dem/heap.py (loaded alone, fast),
    with the environment's malloc settings replaced by ``environ``; its stdout."""
    prelude = textwrap.dedent(
        f"""
        import importlib.util, threading
        spec = importlib.util.spec_from_file_location("heap", {str(HEAP_PY)!r})
        heap = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(heap)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUN"))}
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)],
        env={**env, **environ},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_fixed_thresholds_read_as_glibc_reads_them() -> None:
    assert heap.fixed_thresholds({}) is None
    assert heap.fixed_thresholds({"PATH": "/bin"}) is None
    assert heap.fixed_thresholds({"MALLOC_TRIM_THRESHOLD_": "65536"}) == (65536, 128 * 1024)
    assert heap.fixed_thresholds({"MALLOC_MMAP_THRESHOLD_": "0x100000"}) == (128 * 1024, MIB)
    tunables = {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=4096:glibc.rtld.x=1"}
    assert heap.fixed_thresholds(tunables) == (4096, 128 * 1024)
    # any fixed setting turns the adaptation off, leaving both thresholds at their defaults
    assert heap.fixed_thresholds({"MALLOC_TOP_PAD_": "0"}) == (128 * 1024, 128 * 1024)
    assert heap.fixed_thresholds({"GLIBC_TUNABLES": "glibc.rtld.nns=2"}) is None


def test_raised_inside_and_put_back_with_a_worker_environment() -> None:
    out = _run(
        """
        probe = lambda: heap.allocation_is_mapped(1 << 20)
        before = probe()
        with heap.heap_reuse():
            inside = probe()
            with heap.heap_reuse():  # re-entrant
                nested = probe()
            still = probe()
        print(before, inside, nested, still, probe(), heap.reusing_heap(probe)(), probe())
        """,
        MALLOC_TRIM_THRESHOLD_="65536",
    )
    assert out.split() == ["True", "False", "False", "False", "True", "False", "True"]


def test_put_back_by_the_last_of_concurrent_threads() -> None:
    out = _run(
        """
        probe = lambda: heap.allocation_is_mapped(1 << 20)
        entered = [threading.Event() for _ in range(3)]
        leave = [threading.Event() for _ in range(3)]
        left = [threading.Event() for _ in range(3)]

        def task(i):
            with heap.heap_reuse():
                entered[i].set()
                leave[i].wait()
            left[i].set()

        threads = [threading.Thread(target=task, args=(i,)) for i in range(3)]
        seen = [probe()]
        for thread, event in zip(threads, entered):
            thread.start()
            event.wait()
        seen.append(probe())
        for i in (1, 0):  # two of the three leave, in another order than they came
            leave[i].set()
            left[i].wait()
            seen.append(probe())
        with heap.heap_reuse():  # a newcomer while one is still inside
            leave[2].set()
            left[2].wait()
            seen.append(probe())
        seen.append(probe())
        for thread in threads:
            thread.join()
        print(*seen)
        """,
        MALLOC_TRIM_THRESHOLD_="65536",
    )
    assert out.split() == ["True", "False", "False", "False", "False", "True"]


def test_adaptive_thresholds_left_alone_in_a_plain_process() -> None:
    # without a fixed setting, freeing a mapped block raises glibc's mmap threshold to its
    # size; a mallopt call (even one putting back the defaults) would stop that for good
    out = _run(
        """
        size = 24 << 20
        with heap.heap_reuse():
            pass
        first = heap.allocation_is_mapped(size)  # mapped, then freed: the threshold adapts
        print(heap.active(), first, heap.allocation_is_mapped(size))
        """
    )
    active, first, second = out.split()
    if first != "True":
        pytest.skip("this interpreter's mmap threshold had already adapted past 24 MiB")
    assert (active, second) == ("False", "False")


def _probe(block: dict[str, np.ndarray], params: object) -> dict[str, np.ndarray]:
    """Statistics of a map task: chunks seen, and how many saw 1 MiB mapped."""
    mapped = heap.allocation_is_mapped(MIB)
    return {"chunks": np.ones(1), "mapped": np.array([float(bool(mapped))])}


def _add(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: a[key] + b[key] for key in a}


def test_map_tasks_on_worker_processes_reuse_the_heap(process_client) -> None:
    import dask.array as da

    probe = heap.allocation_is_mapped
    environ = process_client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_")
    assert set(environ.values()) == {"65536"}  # distributed's nanny sets it
    assert set(process_client.run(probe, MIB).values()) == {True}
    x = da.zeros((80, 2), chunks=(10, 2))
    stats = map_reduce(_probe, _add, {"X": x}, {}, split_every=2)
    assert stats["chunks"][0] == 8
    assert stats["mapped"][0] == 0  # every chunk's kernel ran with the heap reused
    assert set(process_client.run(probe, MIB).values()) == {True}  # and put back after


def _mapped_per_row(block: np.ndarray) -> np.ndarray:
    """A per-sample function: 1 for each row where 1 MiB came from a fresh mapping."""
    return np.full(len(block), float(bool(heap.allocation_is_mapped(MIB))))


def test_per_sample_tasks_on_worker_processes_reuse_the_heap(process_client) -> None:
    import dask.array as da

    from dem.data import as_samples
    from dem.estimator import per_sample

    samples = as_samples(da.zeros((80, 2), chunks=(10, 2)))
    mapped = per_sample(samples, _mapped_per_row, columns=None).compute()
    assert mapped.shape == (80,)
    assert mapped.sum() == 0  # predict/transform tasks ran with the heap reused too
    assert set(process_client.run(heap.allocation_is_mapped, MIB).values()) == {True}
