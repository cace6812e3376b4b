"""``dem show CKPT``: what a checkpoint holds, and ``--plot`` of its trace."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
import typer.models
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dem.cli.apps import app
from dem.cli.console import (
    ExitCode,
    UsageError,
    fail,
    make_console,
    user_errors,
)
from dem.cli.options import STORAGE_OPTION_HELP, storage_options
from dem.outputs import (
    UnsafeOutputError,
    is_remote,
)
from dem.paths import overlaps
from dem.storage import location

# --- dem show ---------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:.6g}"


@app.command()
def show(
    checkpoint: Annotated[
        str,
        typer.Argument(
            help="Checkpoint store written by `dem fit`: a path or a URL (s3://...).",
            show_default=False,
        ),
    ],
    run: Annotated[int | None, typer.Option(help="Restart to show (default: the best).")] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Draw the log-likelihood trace to this image file "
            "(needs matplotlib: pip install 'dem\\[plot]')."
        ),
    ] = None,
    all_arrays: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Show every array the checkpoint holds, the engine's internal ones "
            "(e.g. 'shift', 'mean_xxT') included.",
        ),
    ] = False,
    storage_option: Annotated[
        list[str] | None,
        typer.Option(
            "--storage-option",
            help=STORAGE_OPTION_HELP.format(what="the checkpoint"),
            show_default=False,
        ),
    ] = None,
) -> None:
    """Model, configuration, data, log-likelihood trace and parameters of a checkpoint."""
    import json

    from dem.restore import best_run, checkpoint_header, final_loglik, load_runs

    console = make_console()
    with user_errors(console):
        path = os.fspath(checkpoint)
        options = storage_options(storage_option, "--storage-option")
        if not is_remote(path) and not os.path.exists(path):
            raise UsageError(missing_checkpoint(path))
        if plot is not None:
            _check_plot_target(plot, path)
        header = checkpoint_header(path, options)
        runs = load_runs(path, options)
        if run is not None and run not in runs:
            raise fail(
                console,
                ExitCode.USAGE,
                f"Run {run} is not in the checkpoint; it has runs {sorted(runs)}.",
            )
        best = best_run(runs)
        chosen = best if run is None else run
    shown_path = location(path) if is_remote(path) else path
    console.print(f"[bold]{escape(shown_path)}[/]: model [bold]{escape(header['model'])}[/]")
    config = Table(title="configuration", show_header=False)
    for name, value in header["config"].items():
        config.add_row(name, escape(json.dumps(value)))
    console.print(config)
    data = Table(title="data fingerprint")
    for column in ("input", "source", "shape", "dtype", "chunks"):
        data.add_column(column)
    for name, fp in header["fingerprint"].items():
        chunks = fp.get("sample_chunks", [])
        data.add_row(
            name,
            escape(str(fp.get("source"))),
            str(tuple(fp.get("shape", ()))),
            str(fp.get("dtype")),
            f"{len(chunks)} of ≤{max(chunks, default=0)} rows",
        )
    console.print(data)
    table = Table(title="restarts")
    for column in ("run", "iterations", "converged", "final log-likelihood", ""):
        table.add_column(column)
    for r, ds in runs.items():
        table.add_row(
            str(r),
            str(ds.attrs["last_iteration"]),
            "yes" if ds.attrs["converged"] else "no",
            _fmt(final_loglik(ds)),
            "best" if r == best else "",
        )
    console.print(table)

    dataset = runs[chosen]
    trace = dataset["loglik"].values
    lines = Table(title=f"log-likelihood trace (run {chosen})")
    for column in ("iteration", "mean log-likelihood", "change"):
        lines.add_column(column, justify="right")
    shown = (
        range(1, len(trace))
        if len(trace) <= 31
        else [*range(1, 6), *range(len(trace) - 20, len(trace))]
    )
    previous = None
    for i in shown:
        if previous is not None and i != previous + 1:
            lines.add_row("…", "", "")
        change = trace[i] - trace[i - 1] if i > 1 else math.nan
        lines.add_row(
            str(i), f"{trace[i]:.10f}", "" if not math.isfinite(change) else f"{change:.3e}"
        )
        previous = i
    console.print(lines)
    estimator = restored(path, options)
    shown_names = (
        None
        if all_arrays or estimator is None
        else {str(n) for n in dataset.data_vars if hasattr(estimator, f"{n}_")}
    )
    hidden = (
        []
        if shown_names is None
        else [str(n) for n in dataset.data_vars if n != "loglik" and n not in shown_names]
    )
    params = Table(title=f"parameters (run {chosen}, iteration {dataset.attrs['last_iteration']})")
    for column in ("name", "dims", "shape", "min", "mean", "max"):
        params.add_column(column)
    small = {}
    for name, variable in dataset.data_vars.items():
        if name == "loglik" or str(name) in hidden:
            continue
        values = np.asarray(variable.values, dtype=np.float64)
        if values.ndim <= 1 and values.size <= 32:
            small[name] = values
        params.add_row(
            str(name),
            " × ".join(map(str, variable.dims)),
            str(values.shape),
            _fmt(values.min()),
            _fmt(values.mean()),
            _fmt(values.max()),
        )
    console.print(params)
    if hidden:
        console.print(f"Internal arrays not shown (--all shows them): {', '.join(hidden)}.")
    for name, values in small.items():
        console.print(f"{name}: " + " ".join(f"{v:.4g}" for v in values.ravel()), soft_wrap=True)
    _print_summary(console, header["model"], estimator, run is None or run == best)
    _print_topics(console, header, estimator, options)
    if plot is not None:
        _plot_trace(console, path, plot, options)


def _print_summary(console: Console, model: str, estimator: Any, best: bool) -> None:
    """The model's summary (the registry's ``summary`` method, e.g. a censored
    regression's coefficient table) where the checkpoint holds what it needs."""
    from dem.registry import by_checkpoint_model

    entry = by_checkpoint_model(model)
    if entry is None or entry.summary is None or estimator is None or not best:
        return
    try:
        text = str(getattr(estimator, entry.summary)())
    except Exception:  # e.g. no standard errors recorded: no summary
        console.print(
            "No summary: the checkpoint holds no final results for its last iteration "
            "(the fit was interrupted or is still running)."
        )
        return
    console.print(escape(text), soft_wrap=True)


def _print_topics(
    console: Console, header: dict[str, Any], estimator: Any, options: dict[str, Any] | None
) -> None:
    """A topic model's ten most probable words of each topic: words of the vocabulary
    array of the corpus store it was fitted on (its fingerprint's source; see
    :mod:`dem.models.lda.corpus`) when that store has one, else term indices."""
    from dem.models.lda.corpus import VOCABULARY, read_vocabulary, top_words
    from dem.models.lda.model import LDAModel
    from dem.paths import source_location

    components = getattr(estimator, "components_", None)
    if header["model"] != LDAModel.name or components is None:
        return
    fingerprint = header["fingerprint"].get("X")
    store = source_location(fingerprint.get("source") if isinstance(fingerprint, dict) else None)
    vocabulary = None if store is None else read_vocabulary(store, components.shape[1], options)
    title = (
        "top words per topic"
        if vocabulary is not None
        else f"top terms per topic (term indices: the corpus has no '{VOCABULARY}' array)"
    )
    table = Table(title=title)
    table.add_column("topic", justify="right")
    table.add_column("most probable first")
    for topic, words in enumerate(top_words(components, vocabulary)):
        table.add_row(str(topic), escape(" ".join(words)))
    console.print(table)


def missing_checkpoint(path: str) -> str:
    """The message for a checkpoint path that does not exist (a usage error)."""
    return (
        f"Checkpoint {path!r} does not exist. Give the path `dem fit` printed "
        '("Checkpoint: ..."), or its --checkpoint.'
    )


def restored(path: str, options: dict[str, Any] | None = None) -> Any:
    """The estimator restored from the checkpoint, whose fitted attributes decide which
    arrays are shown (an array ``means`` when it has ``means_``); None when it cannot be
    restored, and then every array is shown."""
    import warnings

    from dem.restore import from_checkpoint

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return from_checkpoint(path, storage_options=options)
    except Exception:  # show what the checkpoint holds even when it cannot be restored
        return None


def _check_plot_target(target: Path, checkpoint: str) -> None:
    """Refuse a ``--plot`` file that would be written into a checkpoint, over a folder, or
    into a folder that does not exist."""
    if overlaps(target, checkpoint):
        raise UnsafeOutputError(
            f"--plot {os.fspath(target)!r} lies inside the checkpoint {checkpoint!r}; dem never "
            "writes there. Choose a file outside it."
        )
    if os.path.isdir(target):
        raise UnsafeOutputError(
            f"--plot {os.fspath(target)!r} is a folder; give the image file to write, e.g. "
            f"{os.fspath(Path(target) / 'trace.png')!r}."
        )
    folder = Path(target).parent
    if not folder.is_dir():
        raise UnsafeOutputError(
            f"--plot {os.fspath(target)!r}: the folder {os.fspath(folder)!r} does not exist. "
            "Create it first, or choose a file in an existing folder."
        )


def _plot_trace(
    console: Console, checkpoint: str, target: Path, options: dict[str, Any] | None
) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise fail(
            console, ExitCode.USAGE, "--plot needs matplotlib: pip install 'dem[plot]'."
        ) from exc
    from dem.plot import loglik_trace

    figure, axes = plt.subplots(figsize=(6, 4))
    if is_remote(checkpoint):  # the best restart, read with the storage options
        import warnings

        from dem.restore import from_checkpoint

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loglik_trace(from_checkpoint(checkpoint, storage_options=options), ax=axes)
    else:
        loglik_trace(checkpoint, ax=axes)
    axes.legend()
    figure.tight_layout()
    figure.savefig(target, dpi=120)
    plt.close(figure)
    console.print(f"Trace drawn to {escape(os.fspath(target))}")
