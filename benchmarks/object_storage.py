"""Reading a Zarr store from S3 (moto's server on loopback) against from the local disk.

The same store (``--chunks`` chunks of ``--rows-per-chunk`` rows × ``--features``
float64) is written to a local directory and to a bucket of a moto S3 server run as a
separate process on 127.0.0.1. Measured, for each: opening it with ``dem.data.as_samples``
(metadata and the one listing that finds unwritten chunks), and one full read of its
chunks (``samples.array.sum().compute()`` on dask's threaded scheduler). Medians of
``--repeats``; the summary gives the S3/local ratios: the baseline for overlapping reads
with E-steps (issue 17, item 6). moto is no network-bound object store: this is the cost
of the S3 protocol path (HTTP, signing, s3fs, one request per chunk), not of bandwidth.

    python benchmarks/object_storage.py
    python benchmarks/object_storage.py --chunks 1000 --rows-per-chunk 1000
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
from _common import emit, machine, median, timed

BENCHMARK = "object_storage"
OPTIONS = {"key": "bench", "secret": "bench-secret"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def moto_process() -> Iterator[str]:
    """moto's S3 server in its own process on 127.0.0.1; yields its endpoint URL."""
    port = free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            time.sleep(0.05)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


def write_store(target: str, x: np.ndarray, rows: int, options: dict[str, Any] | None) -> None:
    import zarr

    group = zarr.open_group(target, mode="w", storage_options=options)
    group.create_array("X", data=x, chunks=(rows, x.shape[1]))


def measure(target: str, options: dict[str, Any] | None, repeats: int) -> dict[str, Any]:
    """Seconds to open the store with as_samples, and to read every chunk once."""
    import dask

    from dem.data import as_samples

    opened, read = [], []
    for _ in range(repeats):
        seconds, samples = timed(lambda: as_samples(target, variable="X", storage_options=options))
        opened.append(seconds)
        with dask.config.set(scheduler="threads"):
            seconds, _ = timed(lambda s=samples: float(s.array.sum().compute()))
        read.append(seconds)
    return {"open_s": median(opened), "read_s": median(read), "open_all": opened, "read_all": read}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--rows-per-chunk", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    emit(BENCHMARK, "machine", **machine())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.chunks * args.rows_per_chunk, args.features))
    size = {"chunks": args.chunks, "rows_per_chunk": args.rows_per_chunk, "mib": x.nbytes / 2**20}
    with tempfile.TemporaryDirectory() as scratch, moto_process() as endpoint:
        import s3fs

        options = {**OPTIONS, "endpoint_url": endpoint}
        s3fs.S3FileSystem(**options).mkdir("bench")
        local, url = f"{scratch}/x.zarr", "s3://bench/x.zarr"
        write_store(local, x, args.rows_per_chunk, None)
        seconds, _ = timed(lambda: write_store(url, x, args.rows_per_chunk, options))
        emit(BENCHMARK, "write s3", seconds=seconds, **size)
        on_disk = measure(local, None, args.repeats)
        emit(BENCHMARK, "local", **on_disk, **size)
        on_s3 = measure(url, options, args.repeats)
        emit(BENCHMARK, "s3 (moto)", **on_s3, **size)
    emit(
        BENCHMARK,
        "summary",
        open_ratio_s3_vs_local=on_s3["open_s"] / on_disk["open_s"],
        read_ratio_s3_vs_local=on_s3["read_s"] / on_disk["read_s"],
        s3_read_mib_per_s=size["mib"] / on_s3["read_s"],
        s3_ms_per_chunk=1000 * on_s3["read_s"] / args.chunks,
        **size,
    )


if __name__ == "__main__":
    main()
