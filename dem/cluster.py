"""Finding the Dask scheduler a fit runs on, with safe defaults.

Where a fit runs, in order of precedence:

1. an explicit address (``--scheduler tls://host:8786``);
2. a scheduler file written by ``dask scheduler --scheduler-file`` (``--scheduler-file``);
3. dask's configuration: ``scheduler-address``, which the environment variable
   ``DASK_SCHEDULER_ADDRESS`` sets (the Dask Kubernetes operator sets it in job pods);
4. otherwise a :class:`distributed.LocalCluster` of worker processes on this machine.

Security: a scheduler runs whatever code its clients send, so the connection must be
either encrypted and authenticated (``tls://`` with certificates, from the arguments
or from dask's ``distributed.comm.tls`` configuration) or on this machine's loopback
interface. A plain ``tcp://`` address elsewhere is refused unless ``insecure=True``,
and then a warning says what that exposes.

Several fits at once: the client a :class:`Connection` opens (and any client given to
:func:`use_client`) is the one dask and dem use *in the thread or asyncio task that opened
it*, and nowhere else. Neither changes dask's global configuration (its ``scheduler``
key) nor distributed's list of default clients, as ``Client(set_as_default=True)`` and
``Client.as_current()`` do, so two fits in two threads of one process, each with its own
client (on one scheduler or two), do not take each other's client and leave the
configuration as they found it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import socket
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import Token
from dataclasses import dataclass, field
from typing import Any

import dask

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
WEB_SCHEMES = frozenset({"http", "https"})
#: Seconds to wait for a scheduler to answer, unless told otherwise.
DEFAULT_TIMEOUT = 10.0
#: At most this many seconds to learn that nothing listens at the scheduler's port.
REFUSED_TIMEOUT = 5.0


class SchedulerError(RuntimeError):
    """The scheduler cannot be found, reached or trusted."""


class InsecureConnectionWarning(UserWarning):
    """A plain-text connection to a scheduler beyond this machine was allowed."""


@dataclass
class Connection:
    """A connected client, the cluster it started (if any) and how it was found.

    Attributes
    ----------
    client : distributed.Client
        The client; while the connection is open it is the client dask and dem use in
        the thread (or asyncio task) that opened it (see :func:`use_client`).
    cluster : distributed.LocalCluster or None
        The local cluster started for this connection (closed with it).
    source : str
        How the scheduler was found (``"--scheduler"``, ``"--scheduler-file"``,
        ``"DASK_SCHEDULER_ADDRESS"``, ``"dask config scheduler-address"`` or
        ``"local cluster"``).
    address : str
        The scheduler's address.
    """

    client: Any
    cluster: Any
    source: str
    address: str
    _activation: Token[Any] | None = field(default=None, repr=False)

    def activate(self) -> None:
        """Make the client the one used in this thread or task until :meth:`close`."""
        from distributed.client import _current_client

        if self._activation is None:
            self._activation = _current_client.set(self.client)

    def _deactivate(self) -> None:
        token, self._activation = self._activation, None
        if token is not None:
            with contextlib.suppress(ValueError):  # closed from another thread or task
                token.var.reset(token)

    @property
    def dashboard(self) -> str | None:
        """Link to the scheduler's dashboard, or None when it serves none.

        The link is given only when the scheduler reports a dashboard service and the
        link answers with a dashboard page (without bokeh, a scheduler serves only a page
        saying that it needs bokeh). A link this machine cannot reach (a cluster behind a
        proxy) is given when the scheduler reports one, since a browser elsewhere may.
        """
        services = self.client.scheduler_info(n_workers=0).get("services", {})
        if "dashboard" not in services:
            return None
        link = str(self.client.dashboard_link)
        return link if dashboard_answers(link) is not False else None

    @property
    def n_workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    def describe(self) -> str:
        """One line: where the fit runs and the dashboard link."""
        dashboard = self.dashboard or "none (install bokeh to serve one)"
        where = "local cluster" if self.cluster is not None else "scheduler"
        return (
            f"Running on {where} {self.address} (found by {self.source}), "
            f"{self.n_workers} worker(s); dashboard: {dashboard}"
        )

    def abort(self) -> None:
        """Stop at once, without the orderly shutdown (for a process about to exit on
        Ctrl-C): the local cluster's worker processes are killed; a remote scheduler
        releases this client's work when the process's connection drops."""
        self._deactivate()
        if self.cluster is not None:
            import multiprocessing

            for child in multiprocessing.active_children():
                child.kill()
        with contextlib.suppress(Exception):
            self.client.close(timeout=2)
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close(timeout=2)

    def close(self) -> None:
        self._deactivate()
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def use_client(client: Any) -> Iterator[Any]:
    """Run dask and dem computations on ``client`` within this block, in this thread only.

    A thread- and task-local alternative to ``client.as_current()``, which also sets
    dask's global ``scheduler`` configuration: with fits in several threads, each inside
    its own ``as_current()``, whichever block ends last decides what the configuration is
    left as. This sets only the context variable that ``distributed.default_client`` and
    ``dask.compute`` consult first. A ``scheduler`` set in dask's configuration (e.g.
    ``dask.config.set(scheduler="sync")``) still takes precedence.

    Parameters
    ----------
    client : distributed.Client
        The client to use; create it with ``set_as_default=False`` to leave the global
        state untouched.

    Yields
    ------
    distributed.Client
        ``client``.

    Examples
    --------
    >>> from distributed import Client                          # doctest: +SKIP
    >>> with Client(address, set_as_default=False) as client, use_client(client):  # doctest: +SKIP
    ...     dem.GaussianMixture(n_components=8).fit(store, checkpoint="fit.zarr")
    """
    from distributed.client import _current_client

    token = _current_client.set(client)
    try:
        yield client
    finally:
        _current_client.reset(token)


def dashboard_answers(link: str, timeout: float = 2.0) -> bool | None:
    """Whether ``link`` serves a Dask dashboard page: True, False (it answers with an
    error or with the page saying bokeh is missing), or None when it cannot be reached."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(link, timeout=timeout) as response:
            page = response.read(65536)
    except urllib.error.HTTPError:
        return False
    except (OSError, ValueError):
        return None
    return b"needs bokeh" not in page.lower()


def is_loopback(host: str) -> bool:
    """True for addresses of this machine's loopback interface (no name lookup)."""
    host = host.strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_security(
    tls_ca_file: str | None = None, tls_cert: str | None = None, tls_key: str | None = None
) -> Any:
    """A :class:`distributed.security.Security` from the arguments, else dask config.

    With none of the arguments, the ``distributed.comm.tls.*`` configuration applies
    (for instance ``DASK_DISTRIBUTED__COMM__TLS__CA_FILE``).
    """
    from distributed.security import Security

    given = {"tls_ca_file": tls_ca_file, "tls_client_cert": tls_cert, "tls_client_key": tls_key}
    if not any(given.values()):
        return Security()
    if tls_ca_file is None or tls_cert is None:
        raise SchedulerError(
            "TLS needs the certificate authority and this client's certificate: pass "
            "--tls-ca-file and --tls-cert (and --tls-key unless the certificate holds the key)."
        )
    for option, path in (
        ("--tls-ca-file", tls_ca_file),
        ("--tls-cert", tls_cert),
        ("--tls-key", tls_key),
    ):
        if path is not None and not os.path.isfile(path):
            raise SchedulerError(f"{option} {path!r} is not a file.")
    return Security(require_encryption=True, **{k: v for k, v in given.items() if v is not None})


def check_address(address: str, security: Any, *, insecure: bool = False) -> str:
    """Refuse connections that would let others run code, before any traffic is sent.

    Returns the address with its scheme made explicit.

    Raises
    ------
    SchedulerError
        ``tls://`` without client certificates, or plain ``tcp://`` to a host that
        is not loopback without ``insecure``.
    """
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.comm.registry import backends

    malformed = (
        f"{address!r} is not a scheduler address ({{}}); give one like tls://host:8786 or "
        "tcp://127.0.0.1:8786."
    )
    try:
        scheme, location = parse_address(address)
    except ValueError as exc:
        raise SchedulerError(malformed.format(exc)) from exc
    if scheme not in backends:
        web = " (that is a web address, e.g. the dashboard's)" if scheme in WEB_SCHEMES else ""
        raise SchedulerError(
            f"{address!r} is not a Dask scheduler address: scheme {scheme!r}{web} is not one of "
            f"{sorted(backends)}. The scheduler listens at tls://host:8786 or tcp://host:8786."
        )
    address = f"{scheme}://{location}"
    if scheme == "inproc":
        return address
    try:
        host, _ = parse_host_port(location)
    except ValueError as exc:
        raise SchedulerError(malformed.format(exc)) from exc
    if scheme == "tls":
        if not (security.tls_ca_file and security.tls_client_cert):
            raise SchedulerError(
                f"{address} uses TLS, but no client certificate is configured. Pass --tls-ca-file, "
                "--tls-cert and --tls-key, or set distributed.comm.tls.ca-file and "
                "distributed.comm.tls.client.cert/key in dask config."
            )
        return address
    if is_loopback(host):
        return address
    if not insecure:
        raise SchedulerError(
            f"Refusing an unencrypted connection to {address}: anyone who can reach that scheduler "
            "can run code on it and on this machine. Use a tls:// address with certificates "
            "(--tls-ca-file/--tls-cert/--tls-key), or pass --insecure if the network is private "
            "and trusted."
        )
    warnings.warn(
        f"Connecting to {address} without encryption or authentication (--insecure): anyone who "
        "can reach the scheduler can run arbitrary code on the cluster and read the data.",
        InsecureConnectionWarning,
        stacklevel=2,
    )
    return address


def find_scheduler(scheduler: str | None, scheduler_file: str | None) -> tuple[str | None, str]:
    """The scheduler address to use and where it came from (None: start a local cluster)."""
    if scheduler and scheduler_file:
        raise SchedulerError("Pass either --scheduler or --scheduler-file, not both.")
    if scheduler:
        return scheduler, "--scheduler"
    if scheduler_file:
        return _address_in_file(scheduler_file), "--scheduler-file"
    configured = dask.config.get("scheduler-address", None)
    if configured:
        source = (
            "DASK_SCHEDULER_ADDRESS"
            if os.environ.get("DASK_SCHEDULER_ADDRESS")
            else "dask config scheduler-address"
        )
        return str(configured), source
    return None, "local cluster"


def _address_in_file(scheduler_file: str) -> str:
    """The ``address`` entry of a scheduler file, or a :class:`SchedulerError` saying why not."""
    problem = None
    try:
        with open(scheduler_file) as handle:
            content = json.load(handle)
    except (OSError, ValueError) as exc:
        problem = str(exc)
    else:
        address = content.get("address") if isinstance(content, dict) else None
        if isinstance(address, str) and address:
            return address
        problem = "it holds no 'address' string"
    raise SchedulerError(
        f"Cannot read a scheduler address from {scheduler_file!r} ({problem}). Pass the file "
        "that `dask scheduler --scheduler-file` wrote."
    )


def probe_scheduler(address: str, security: Any, timeout: float) -> None:
    """Check that a Dask scheduler answers at ``address`` within ``timeout`` seconds.

    A port where nothing listens fails at once (at most :data:`REFUSED_TIMEOUT`
    seconds); a port that accepts the connection but does not speak Dask's protocol
    (a web server, the dashboard) fails after ``timeout`` seconds instead of waiting
    forever, as ``distributed.Client`` does.

    Raises
    ------
    SchedulerError
        Nothing listens, the address cannot be resolved, or no Dask handshake came.
    """
    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme not in ("tcp", "tls"):
        return
    host, port = parse_host_port(location)
    try:
        with socket.create_connection((host.strip("[]"), port), min(timeout, REFUSED_TIMEOUT)):
            pass
    except OSError as exc:
        raise SchedulerError(
            f"Cannot connect to the scheduler at {address}: {exc}. Check that it is running and "
            "reachable at that host and port."
        ) from exc
    with ThreadPoolExecutor(1) as pool:  # its own event loop, whatever the caller runs
        answered = pool.submit(asyncio.run, _handshake(address, security, timeout)).result()
    if not answered:
        raise SchedulerError(
            f"{address} accepted the connection but did not answer as a Dask scheduler within "
            f"{timeout:g} s. Check the port (the scheduler's, usually 8786, not the dashboard's "
            "8787 or another service), its TLS settings, or raise --timeout on a slow network."
        )


async def _handshake(address: str, security: Any, timeout: float) -> bool:
    """Whether a Dask handshake and an ``identity`` reply come back within ``timeout``."""
    from distributed.comm import connect as comm_connect

    async def exchange() -> None:
        comm = await comm_connect(
            address, timeout=timeout, **security.get_connection_args("client")
        )
        try:
            await comm.write({"op": "identity"})
            await comm.read()
        finally:
            comm.abort()

    try:
        await asyncio.wait_for(exchange(), timeout)
    except (TimeoutError, OSError):
        return False
    return True


def connect(
    scheduler: str | None = None,
    scheduler_file: str | None = None,
    *,
    local_workers: int | None = None,
    security: Any = None,
    insecure: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> Connection:
    """Connect to the scheduler found by the rules in the module docstring.

    Parameters
    ----------
    scheduler : str, optional
        Scheduler address.
    scheduler_file : str, optional
        JSON file with the scheduler's address.
    local_workers : int, optional
        Worker processes of the local cluster started when no scheduler is found
        (default: one per core).
    security : distributed.security.Security, optional
        TLS settings (default: from dask config).
    insecure : bool
        Allow plain ``tcp://`` to a host that is not loopback.
    timeout : float
        Seconds to wait for the scheduler to answer (see :func:`probe_scheduler`).

    Returns
    -------
    Connection
        Its client is the one used in this thread (or asyncio task) until it is closed;
        dask's global configuration is left as it was (see the module docstring).
    """
    from distributed import Client, LocalCluster

    security = make_security() if security is None else security
    address, source = find_scheduler(scheduler, scheduler_file)
    if address is None:
        workers = local_workers or os.cpu_count() or 1
        if workers < 1:
            raise SchedulerError(f"--local-workers must be at least 1, got {workers}.")
        # Worker processes (and the cluster's threads) inherit a blocked SIGINT, so Ctrl-C
        # in a terminal (sent to the whole process group) reaches only this process, which
        # stops the fit cleanly. Blocked, not ignored: a Ctrl-C while the cluster starts
        # is delivered here once it has started, instead of being lost.
        blocked = _main_thread()
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if blocked else None
        connection = None
        try:
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
                silence_logs=logging.ERROR,
            )
            client = Client(cluster, set_as_default=False)
            connection = Connection(client, cluster, source, cluster.scheduler_address)
            connection.activate()
        finally:
            if previous is not None:
                _unblock(previous, connection)
        return connection
    address = check_address(address, security, insecure=insecure)
    probe_scheduler(address, security, timeout)
    try:
        client = Client(address, security=security, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise SchedulerError(
            f"Cannot connect to the scheduler at {address} (found by {source}): {exc}. Check that "
            "it is running and reachable, and its TLS settings."
        ) from exc
    connection = Connection(client, None, source, address)
    connection.activate()
    return connection


def _unblock(previous: set[Any], connection: Connection | None) -> None:
    """Restore the signal mask; a Ctrl-C that waited is delivered now, and then the
    cluster just started is closed before the interruption goes on."""
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    except BaseException:
        if connection is not None:
            connection.close()
        raise


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
