"""An S3 API on loopback for the tests: moto's standalone server on a free port.

Nothing leaves 127.0.0.1. The credentials are dummies that only this server sees; the
code under test gets them through ``storage_options`` (:attr:`S3Server.options`), never
through the process environment.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

BUCKET = "dem-test"
ACCESS_KEY = "AKIADEMTESTKEY0001"
SECRET_KEY = "dem-test-secret-Zq8vX3rT9wLp"


@dataclass(frozen=True)
class S3Server:
    """Where the server listens, and the options s3fs needs to reach it."""

    endpoint: str
    bucket: str = BUCKET
    key: str = ACCESS_KEY
    secret: str = SECRET_KEY

    @property
    def options(self) -> dict[str, Any]:
        """``storage_options`` for s3fs: the endpoint and the dummy credentials."""
        return {"endpoint_url": self.endpoint, "key": self.key, "secret": self.secret}

    def url(self, key: str) -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.bucket}/{key}"

    def filesystem(self) -> Any:
        """An s3fs filesystem on this server (for writing test data)."""
        import s3fs

        return s3fs.S3FileSystem(**self.options)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def moto_s3_server() -> Iterator[S3Server]:
    """Start moto's threaded server on 127.0.0.1, create the bucket, stop it at the end."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        found = S3Server(endpoint=f"http://127.0.0.1:{port}")
        found.filesystem().mkdir(found.bucket)
        yield found
    finally:
        server.stop()
