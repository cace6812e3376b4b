"""A throttling fsspec filesystem: a store read as if over a network link.

``ThrottledFileSystem`` wraps another fsspec filesystem (the local one by default) and
makes every read request wait ``latency`` seconds (requests in flight at once wait
together, as over a network) and then move its bytes through one link per process of
``bandwidth`` bytes per second (transfers share the link one after the other). On a
dask worker, that is a store ``latency`` away behind a per-worker network of
``bandwidth``: 20 ms and 100 MB/s are the defaults.

``throttled_store(path)`` opens a local Zarr store through it, read-only, as a
``zarr.storage.FsspecStore``; the filesystem pickles by its options, so worker processes
that can import this module (``benchmarks`` on their path) throttle their own reads.
"""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import fsspec
from fsspec.spec import AbstractFileSystem

LATENCY = 0.02
"""Seconds each request waits before its bytes move."""

BANDWIDTH = 100e6
"""Bytes per second of one process's link."""

_LINK = threading.Lock()
"""One link per process: transfers share it one after the other."""

REQUESTS = {"count": 0, "bytes": 0}
"""Requests and bytes this process has read through a throttled filesystem."""


class ThrottledFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """``target`` (an fsspec filesystem, by protocol) behind a latency and a bandwidth.

    Parameters
    ----------
    latency : float
        Seconds every read request waits (concurrent requests wait at the same time).
    bandwidth : float
        Bytes per second through this process's one link (transfers queue for it).
    target_protocol : str
        The filesystem read (default ``"file"``).
    target_options : dict, optional
        Options of that filesystem.
    """

    protocol = "throttled"

    def __init__(
        self,
        latency: float = LATENCY,
        bandwidth: float = BANDWIDTH,
        target_protocol: str = "file",
        target_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.latency, self.bandwidth = float(latency), float(bandwidth)
        self.target = fsspec.filesystem(target_protocol, **(target_options or {}))

    def _throttle(self, nbytes: int) -> None:
        time.sleep(self.latency)
        with _LINK:
            time.sleep(nbytes / self.bandwidth)
            REQUESTS["count"] += 1
            REQUESTS["bytes"] += nbytes

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        data = self.target.cat_file(self._strip_protocol(path), start=start, end=end)
        self._throttle(len(data))
        return data  # type: ignore[no-any-return]

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> io.BytesIO:
        if mode != "rb":
            raise PermissionError(f"{self.protocol}:// is read-only (asked for mode {mode!r}).")
        return io.BytesIO(self.cat_file(path))

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        self._throttle(0)
        return self.target.info(self._strip_protocol(path))  # type: ignore[no-any-return]

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        self._throttle(0)
        return self.target.ls(self._strip_protocol(path), detail=detail)  # type: ignore[no-any-return]


fsspec.register_implementation("throttled", ThrottledFileSystem, clobber=True)


def throttled_store(path: str, latency: float = LATENCY, bandwidth: float = BANDWIDTH) -> Any:
    """The local Zarr store at ``path``, read-only, read through a throttled filesystem."""
    import zarr
    from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

    throttled = ThrottledFileSystem(latency=latency, bandwidth=bandwidth)
    return zarr.storage.FsspecStore(
        AsyncFileSystemWrapper(throttled, asynchronous=True), path=path, read_only=True
    )
