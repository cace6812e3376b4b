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
    except (UnsafeOutputError, UsageError) as exc:
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


class UsageError(ValueError):
    """A command-line option or argument that cannot work (exit 2), found before any work."""


class Interrupts:
    """Ctrl-C (or SIGTERM) while a command runs.

    Before the first iteration is checkpointed (start-up: the cluster, the sample read,
    the initialisation passes) the first one stops at once. Afterwards the first one
    stops once the running iteration is checkpointed, and a second one stops at once;
    the iteration being written is then discarded by the checkpoint's completeness
    marker, so the previous one is what a resume uses.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.requested = False
        self.iterating = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested or not self.iterating:
            self.requested = True
            silence_shutdown()  # before the event loop learns its tasks were cut short
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
        self._previous.clear()


def silence_shutdown() -> None:
    """Keep the event loop's and distributed's complaints about tasks cut short by an
    interruption (``Task exception was never retrieved``) off the terminal."""
    import logging

    for name in ("asyncio", "distributed", "tornado"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def exit_now(connection: Any) -> None:
    """End the process at once with exit status 130, after a Ctrl-C that stops work in
    flight: the local cluster's workers are killed rather than shut down in order (which
    waits for their running tasks), and no clean-up runs that could print tracebacks."""
    import os
    import sys

    if connection is not None:
        connection.abort()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(ExitCode.INTERRUPTED))


#: What the task prefixes of dem's computations do, in words; prefixes not named here
#: (dask's own, e.g. ``finalize``) are parts of a step, not steps.
STEP_NAMES = {
    "_map_task": "pass over the data",
    "from-zarr": "reading chunks",
    "original-array": "reading chunks",
    "getitem": "reading the sample",
}


def _steps(groups: dict[str, tuple[str, int, int]]) -> dict[str, tuple[str, int, int]]:
    """Steps from the scheduler's unfinished task groups: the groups of one computation
    (one token) are summed, and named by the most telling of their prefixes."""
    steps: dict[str, tuple[str, int, int]] = {}
    for name, (prefix, done, total) in groups.items():
        token = name[len(prefix) + 1 :] if name.startswith(prefix + "-") else name
        token = token.split("-")[0]
        known, so_far, size = steps.get(token, ("", 0, 0))
        if prefix in STEP_NAMES and (not known or known == "pass over the data"):
            known = STEP_NAMES[prefix]
        steps[token] = (known, so_far + done, size + total)
    return {token: step for token, step in steps.items() if step[0]}


def _active_groups_function() -> Any:
    """A function for ``Client.run_on_scheduler``: task group name → (prefix, finished,
    total) of the groups with unfinished tasks. Defined locally, so it is pickled by value
    and the scheduler needs no dem installed."""

    def active_groups(dask_scheduler: Any) -> dict[str, tuple[str, int, int]]:
        unfinished = ("waiting", "queued", "processing", "no-worker")
        found = {}
        for name, group in dask_scheduler.task_groups.items():
            total = sum(group.states.values())
            pending = sum(group.states.get(s, 0) for s in unfinished)
            if pending and total:
                found[str(name)] = (str(group.prefix.name), total - pending, total)
        return found

    return active_groups


class StepWatcher:
    """The start-up steps of a fit (sample read, initialisation passes), each with its
    own progress, read from the scheduler's task groups while no iteration has ended.

    A thread asks the scheduler every ``interval`` seconds which task groups have
    unfinished tasks; each new group is a step. On a terminal each step is a progress
    bar; elsewhere a line is printed when a step ends.
    """

    def __init__(self, reporter: Reporter, client: Any, interval: float = 0.5) -> None:
        import threading

        self.reporter = reporter
        self.client = client
        self.interval = interval
        self.steps: dict[str, Any] = {}
        self._seen: dict[str, tuple[str, int, int]] = {}
        self._started: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dem-steps", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2 * self.interval + 1)
        self._finish(set(self._seen))

    def _poll(self) -> dict[str, tuple[str, int, int]]:
        try:
            found: dict[str, tuple[str, int, int]] = self.client.run_on_scheduler(
                _active_groups_function()
            )
        except Exception:  # the scheduler is busy or gone: the fit reports that itself
            return {}
        return found

    def _run(self) -> None:
        import time

        while not self._stop.wait(self.interval):
            active = _steps(self._poll())
            if self._stop.is_set():
                break
            self._finish(set(self._seen) - set(active))
            for name, (what, done, total) in active.items():
                if name not in self._seen:
                    self._started[name] = time.perf_counter()
                    self.steps[name] = self.reporter.progress.add_task(
                        f"start-up step {len(self.steps) + 1}: {what}", total=total
                    )
                self._seen[name] = (what, done, total)
                self.reporter.progress.update(self.steps[name], completed=done, total=total)

    def _finish(self, names: set[str]) -> None:
        import time

        for name in sorted(names, key=lambda n: self._started.get(n, 0.0)):
            _, _, total = self._seen.pop(name)
            task = self.steps[name]
            self.reporter.progress.update(task, completed=total, visible=False)
            seconds = time.perf_counter() - self._started[name]
            description = self.reporter.progress.tasks[task].description
            self.reporter.console.print(f"  {description}: {total} task(s), {seconds:.1f} s")


class Reporter:
    """Live progress of a fit: start-up steps, one line per iteration, and a bar on
    terminals that tracks both the iterations and the convergence (change against tol)."""

    def __init__(
        self,
        console: Console,
        max_iter: int,
        n_init: int,
        interrupts: Interrupts | None,
        tol: float | None = None,
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
        self.max_iter = max(1, max_iter)
        self.tol = tol
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
        self.task = self.progress.add_task("starting", total=self.max_iter, visible=False)
        self._header = False
        self._first_change: float | None = None
        self.watcher: StepWatcher | None = None

    def watch_steps(self, client: Any) -> None:
        """Show the start-up steps that run on ``client``'s cluster until the first iteration."""
        self.watcher = StepWatcher(self, client)
        self.watcher.start()

    def __enter__(self) -> Reporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_watching()
        self.progress.stop()

    def _stop_watching(self) -> None:
        if self.watcher is not None:
            watcher, self.watcher = self.watcher, None
            watcher.stop()

    def convergence(self, change: float) -> float:
        """Fraction of the way from the first change to ``tol``, on a log scale (0 to 1)."""
        if self.tol is None or not math.isfinite(change):
            return 0.0
        change = abs(change)
        if change <= self.tol:
            return 1.0
        if self._first_change is None:
            self._first_change = change
        first = max(self._first_change, change)
        if self.tol <= 0 or first <= self.tol:
            return 0.0
        return max(0.0, min(1.0, math.log(first / change) / math.log(first / self.tol)))

    def __call__(self, info: Any) -> None:
        if not self._header:
            self._stop_watching()
            if self.interrupts is not None:
                self.interrupts.iterating = True
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
        towards = "" if self.tol is None or not change else f" change {change} → tol {self.tol:g}"
        done = max(info.iteration / self.max_iter, self.convergence(info.change))
        self.progress.update(
            self.task,
            completed=round(done * self.max_iter),
            visible=True,
            description=f"{run}iter {info.iteration}/{self.max_iter}{towards}",
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
