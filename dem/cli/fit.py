"""``dem fit MODEL STORE``: one command per registered model, checkpointing every iteration."""

from __future__ import annotations

import concurrent.futures
import contextlib
import inspect
import os
import shlex
import statistics
import time
import warnings
from datetime import datetime
from typing import Any

import typer
import typer.models
from rich.console import Console
from rich.markup import escape

from dem.cli.apps import fit_app
from dem.cli.console import (
    ExitCode,
    FitStopped,
    Interrupts,
    Reporter,
    exit_now,
    make_console,
    print_warnings,
    scheduler_lost,
    silence_shutdown,
    user_errors,
)
from dem.cli.options import (
    absolute_location,
    cluster_parameters,
    command_line,
    connect_cluster,
    data_ndim,
    estimator_defaults,
    fit_options,
    infer_variable,
    inferred_data,
    input_parameter,
    input_values,
    keyword_parameter,
    masked_storage_options,
    option_parameter,
    option_value,
    optional_data_input,
    storage_option_parameter,
    storage_options,
    validate_parameters,
    variable_shape,
    weights_parameter,
    with_signature,
)
from dem.outputs import UnsafeOutputError
from dem.paths import overlaps
from dem.registry import REGISTRY, ModelEntry, Opt
from dem.storage import is_remote, location


def _fit_parameters(
    key: str, spec: ModelEntry, options: tuple[Opt, ...], defaults: dict[str, Any]
) -> list[inspect.Parameter]:
    parameters = [
        keyword_parameter(
            "store",
            str,
            typer.Argument(
                ...,
                help="Zarr store holding the data, or Parquet data (a .parquet file, a folder "
                "of them or a glob; see --columns): a path or a URL (s3://, gs://, az://, "
                "file://; see --storage-option).",
                show_default=False,
            ),
        ),
    ]
    parameters += [
        input_parameter(i, columns=i.argument == "variable" and data_ndim(spec) == 2)
        for i in optional_data_input(spec)
    ]
    parameters += [option_parameter(o, defaults, key) for o in options]
    fit = getattr(spec.estimator_class(), "fit")  # noqa: B009 (a class of the registry)
    if "sample_weight" in inspect.signature(fit).parameters:
        parameters.append(weights_parameter())
    parameters += [
        keyword_parameter(
            "checkpoint",
            str | None,
            typer.Option(
                None,
                "--checkpoint",
                help="Zarr store for the per-iteration checkpoint, a path or a URL "
                f"(default: dem-{key}-<date>.zarr here).",
            ),
        ),
        keyword_parameter(
            "resume",
            bool,
            typer.Option(
                False,
                "--resume",
                help="Continue from the checkpoint's latest complete iteration "
                "(starts afresh when it does not exist yet).",
            ),
        ),
        storage_option_parameter("storage_option", "--storage-option", "the data"),
        storage_option_parameter(
            "checkpoint_storage_option",
            "--checkpoint-storage-option",
            "the checkpoint (default: those of --storage-option)",
        ),
    ]
    return parameters + cluster_parameters()


def _make_fit_command(key: str, spec: ModelEntry) -> None:
    cls = spec.estimator_class()
    options = fit_options(spec, cls)
    parameters = _fit_parameters(key, spec, options, estimator_defaults(cls))

    def command(**values: Any) -> None:
        _run_fit(key, spec, cls, options, parameters, values)

    fit_app.command(name=key, help=spec.help)(with_signature(command, parameters, spec.help))


def _run_fit(
    key: str,
    spec: ModelEntry,
    cls: type,
    opts: tuple[Opt, ...],
    parameters: list[inspect.Parameter],
    values: dict[str, Any],
) -> None:
    console = make_console()
    store = absolute_location(values["store"])
    if values["checkpoint"] is None:
        values["checkpoint"] = f"dem-{key}-{datetime.now():%Y%m%d-%H%M%S}.zarr"
    checkpoint = absolute_location(values["checkpoint"])
    values["store"], values["checkpoint"] = store, checkpoint

    with user_errors(console):  # everything a fit needs is checked before any cluster starts
        estimator, arguments = _checked_fit(console, spec, cls, opts, store, checkpoint, values)
        shown = {
            **values,
            "resume": True,
            "store": location(store) if is_remote(store) else store,
            "checkpoint": location(checkpoint) if is_remote(checkpoint) else checkpoint,
            "storage_option": masked_storage_options(values["storage_option"]),
            "checkpoint_storage_option": masked_storage_options(
                values["checkpoint_storage_option"]
            ),
        }
        resume_command = command_line(["fit", key], parameters, shown)
        checkpoint = shown["checkpoint"]  # named without credentials from here on
        latest = None
        if values["resume"] and (is_remote(checkpoint) or os.path.exists(checkpoint)):
            from dem.restore import checkpoint_header

            with contextlib.suppress(FileNotFoundError):
                latest = (
                    checkpoint_header(values["checkpoint"], estimator._checkpoint_options()).get(
                        "latest"
                    )
                    or {}
                )
    with Interrupts(console) as interrupts:
        connection = None
        try:
            with user_errors(console):
                connection = connect_cluster(console, values)
            with user_errors(console):
                if latest is not None:
                    console.print(
                        f"Resuming {escape(checkpoint)} after run {latest.get('run', 0)}, "
                        f"iteration {latest.get('iteration', 0)}.",
                        soft_wrap=True,
                    )
                _fit_and_report(
                    console, spec, estimator, arguments, interrupts, resume_command, values
                )
                if not estimator.converged_:
                    more = {**shown, "max_iter": 2 * values["max_iter"]}
                    console.print("Continue it with more iterations:", soft_wrap=True)
                    console.print(
                        escape(command_line(["fit", key], parameters, more)), soft_wrap=True
                    )
                console.print(
                    f"Inspect it with: {escape(shlex.join(['dem', 'show', checkpoint]))}",
                    soft_wrap=True,
                )
            connection.close()
        except (FitStopped, KeyboardInterrupt) as exc:
            silence_shutdown()
            console.print(
                "[yellow]Interrupted.[/] "
                + (
                    f"The last complete iteration is in {escape(checkpoint)}."
                    if interrupts.iterating
                    else "No iteration had ended yet."
                ),
                soft_wrap=True,
            )
            console.print("Resume with:")
            console.print(escape(resume_command), soft_wrap=True)
            if isinstance(exc, KeyboardInterrupt):
                exit_now(connection)
            try:  # a Ctrl-C while the cluster shuts down stops that at once
                if connection is not None:
                    connection.close()
            except KeyboardInterrupt:
                exit_now(connection)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from exc
        except BaseException:
            if connection is not None:
                connection.close()
            raise


def _checked_fit(
    console: Console,
    spec: ModelEntry,
    cls: type,
    opts: tuple[Opt, ...],
    store: str,
    checkpoint: str,
    values: dict[str, Any],
) -> tuple[Any, dict[str, Any]]:
    """The estimator and the ``fit`` arguments, every option, input and path checked
    from the options and the store's metadata (no data is read, no cluster started)."""
    data_options = storage_options(values["storage_option"], "--storage-option")
    checkpoint_options = storage_options(
        values["checkpoint_storage_option"], "--checkpoint-storage-option"
    )
    for data in spec.inputs:
        if data.argument == "variable" and values[data.option] is None:
            option, ndim = f"--{data.option}", data_ndim(spec)
            values[data.option] = infer_variable(store, ndim, option, data_options)
            console.print(
                escape(inferred_data(location(store) if is_remote(store) else store,
                                     values[data.option], ndim, option)),
                soft_wrap=True,
            )  # fmt: skip
    options = {o.param: option_value(o, values[o.param]) for o in opts}
    estimator = cls(
        **options,
        checkpoint=checkpoint,
        resume=values["resume"],
        storage_options=data_options,
        checkpoint_storage_options=checkpoint_options,
    )
    validate_parameters(
        estimator, {o.param: (o.flags or ("--" + o.param.replace("_", "-"),))[0] for o in opts}
    )
    arguments = input_values(store, spec.inputs, values, data_options)
    if values.get("weights") is not None:
        variable_shape(store, values["weights"], data_options)  # it exists: a clear error
        arguments["sample_weight"] = values["weights"]
    if is_remote(store) == is_remote(checkpoint) and overlaps(checkpoint, store):
        raise UnsafeOutputError(
            f"--checkpoint {location(checkpoint)!r} is, contains or lies inside the input "
            f"store {location(store)!r}; dem never writes there. Choose a --checkpoint "
            "outside it."
        )
    exists = (
        _remote_checkpoint_exists(checkpoint, estimator._checkpoint_options())
        if is_remote(checkpoint)
        else os.path.exists(checkpoint)
    )
    if exists and not values["resume"]:
        raise FileExistsError(
            f"Checkpoint {location(checkpoint) if is_remote(checkpoint) else checkpoint!r} "
            "already exists. Add --resume to continue that fit, or "
            "pass another --checkpoint."
        )
    return estimator, arguments


def _remote_checkpoint_exists(url: str, options: dict[str, Any]) -> bool:
    """Whether a checkpoint (its root metadata) exists at the URL ``url``."""
    from dem.storage import writable

    fs, where, _ = writable(url, options)
    return bool(fs.exists(f"{where}/zarr.json"))


def _fit_and_report(
    console: Console,
    spec: ModelEntry,
    estimator: Any,
    arguments: dict[str, Any],
    interrupts: Interrupts,
    resume_command: str,
    values: dict[str, Any],
) -> None:
    """Fit with a live report, then print the outcome and the model's summary."""
    checkpoint = os.fspath(values["checkpoint"])
    checkpoint = location(checkpoint) if is_remote(checkpoint) else checkpoint
    tol = getattr(estimator, "tol", None)
    reporter = Reporter(
        console,
        values["max_iter"],
        int(getattr(estimator, "n_init", 1) or 1),
        interrupts,
        tol=float(tol) if isinstance(tol, int | float) else None,
    )
    estimator.callback = reporter
    started = time.perf_counter()
    try:
        with reporter, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            client = _current_client()
            if client is not None:
                reporter.watch_steps(client)
            estimator.fit(os.fspath(values["store"]), **arguments)
    except (concurrent.futures.CancelledError, OSError, TimeoutError) as exc:
        if not scheduler_lost(exc):
            raise
        console.print(
            f"[red]Lost the scheduler[/] ({escape(str(exc).strip() or type(exc).__name__)}). "
            f"The last complete iteration is in {escape(checkpoint)}."
        )
        console.print("Once a scheduler runs again (pass its address or file), resume with:")
        console.print(escape(resume_command), soft_wrap=True)
        raise typer.Exit(int(ExitCode.SCHEDULER)) from exc
    print_warnings(console, caught)
    elapsed = time.perf_counter() - started
    seconds = reporter.seconds
    console.print(
        f"{'Converged' if estimator.converged_ else 'Stopped without converging'} after "
        f"{estimator.n_iter_} iteration(s) in {elapsed:.1f} s"
        + (
            f" (median {statistics.median(seconds):.2f} s per iteration this session)"
            if seconds
            else ""
        )
        + f"; mean log-likelihood {estimator.lower_bounds_[-1]:.8f}."
    )
    if spec.summary is not None:
        console.print(escape(str(getattr(estimator, spec.summary)())), soft_wrap=True)
    console.print(f"Checkpoint: {escape(checkpoint)}", soft_wrap=True)


def _current_client() -> Any:
    """The distributed client the fit runs on, or None when there is none."""
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


for _entry in REGISTRY.values():
    _make_fit_command(_entry.name, _entry)
