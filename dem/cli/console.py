"""Exit codes, console output, errors users can fix, Ctrl-C and the progress report."""

from __future__ import annotations

import concurrent.futures
import contextlib
import enum
import math
import signal
import warnings
from collections.abc import Iterator
from typing import Any

import typer
import typer.models
from rich.console import Console
from rich.markup import escape

from dem.checkpoint import CheckpointError
from dem.cluster import SchedulerError
from dem.outputs import (
    UnsafeOutputError,
)


class ExitCode(enum.IntEnum):
    """Exit statuses of every ``dem`` command (see the module docstring)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    DATA = 3
    CHECKPOINT = 4
    SCHEDULER = 5
    INTERRUPTED = 130


class FitStopped(Exception):
    """Raised from the progress callback when the user asked the fit to stop."""


def make_console() -> Console:
    """The console every command prints to (no syntax highlighting, long lines kept whole)."""
    return Console(highlight=False, soft_wrap=True)


def fail(console: Console, code: ExitCode, message: str) -> typer.Exit:
    """Print ``message`` as an error and return the exit to raise with ``code``."""
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(int(code))


@contextlib.contextmanager
def user_errors(console: Console) -> Iterator[None]:
    """Turn the errors users can fix into messages and exit codes."""
    try:
        yield
    except (typer.Exit, FitStopped, KeyboardInterrupt):
        raise
    except SchedulerError as exc:
        raise fail(console, ExitCode.SCHEDULER, str(exc)) from exc
    except UnsafeOutputError as exc:
        raise fail(console, ExitCode.USAGE, str(exc)) from exc
    except (CheckpointError, FileExistsError) as exc:
        raise fail(console, ExitCode.CHECKPOINT, str(exc)) from exc
    except (FileNotFoundError, KeyError, TypeError, ValueError, FloatingPointError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise fail(console, ExitCode.DATA, str(message)) from exc


def scheduler_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the client lost its scheduler (not a data or disk error)."""
    from distributed.comm.core import CommClosedError

    text = str(exc).lower()
    return (
        isinstance(exc, CommClosedError | concurrent.futures.CancelledError)
        or "scheduler-connection-lost" in text
        or "connection to the scheduler" in text
    )


class Interrupts:
    """First Ctrl-C (or SIGTERM): stop once the running iteration is checkpointed.

    A second one stops at once; the iteration being written is then discarded by the
    checkpoint's completeness marker, so the previous one is what a resume uses.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.console.print(
            "[yellow]Stopping after the current iteration is checkpointed; press Ctrl-C again "
            "to stop now.[/]"
        )

    def __enter__(self) -> Interrupts:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Reporter:
    """Live progress of a fit: one line per iteration, and a bar on terminals."""

    def __init__(
        self, console: Console, max_iter: int, n_init: int, interrupts: Interrupts | None
    ) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = console
        self.interrupts = interrupts
        self.n_init = n_init
        self.seconds: list[float] = []
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self.task = self.progress.add_task("initialising", total=max_iter)
        self._header = False

    def __enter__(self) -> Reporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, info: Any) -> None:
        if not self._header:
            self.console.print(
                f"{'run':>4} {'iter':>5} {'log-likelihood':>16} {'change':>11} {'s/iter':>8}"
                "  checkpoint"
            )
            self._header = True
        change = "" if not math.isfinite(info.change) else f"{info.change:.3e}"
        self.seconds.append(info.seconds)
        self.console.print(
            f"{info.run:>4} {info.iteration:>5} {info.loglik:>16.8f} {change:>11}"
            f" {info.seconds:>8.2f}  {'written' if info.checkpointed else 'no'}"
        )
        run = f"run {info.run + 1}/{self.n_init} " if self.n_init > 1 else ""
        self.progress.update(
            self.task, completed=info.iteration, description=f"{run}loglik {info.loglik:.6f}"
        )
        if self.interrupts is not None and self.interrupts.requested:
            raise FitStopped


def print_warnings(console: Console, caught: list[warnings.WarningMessage]) -> None:
    """Print each distinct caught warning once, as ``warning: Category: message``."""
    seen = set()
    for w in caught:
        text = f"{w.category.__name__}: {w.message}"
        if text not in seen:
            seen.add(text)
            console.print(f"[yellow]warning:[/] {escape(text)}", soft_wrap=True)
