"""``dem predict CKPT STORE --out OUT``: per-sample outputs of a fitted model, to Zarr."""

from __future__ import annotations

import inspect
import os
import time
import warnings
from typing import Any

import numpy as np
import typer
import typer.models
from rich.markup import escape

from dem.checkpoint import CheckpointMismatchError
from dem.cli.apps import app
from dem.cli.console import (
    ExitCode,
    UsageError,
    fail,
    make_console,
    print_warnings,
    user_errors,
)
from dem.cli.options import (
    absolute_location,
    cluster_parameters,
    connect_cluster,
    data_ndim,
    infer_variable,
    inferred_data,
    input_parameter,
    input_values,
    keyword_parameter,
    overwrite_parameter,
    storage_option_parameter,
    storage_options,
    variable_shape,
    with_signature,
)
from dem.cli.show import missing_checkpoint
from dem.outputs import ATTRIBUTE as OUTPUT_ATTRIBUTE
from dem.outputs import (
    check_output,
    is_remote,
    mark_complete,
    output_exists,
    remove_output,
)
from dem.outputs import marker as output_marker
from dem.registry import REGISTRY, Input, ModelEntry, by_estimator
from dem.storage import location

# --- dem predict -----------------------------------------------------------------------


def _spec_for(estimator: Any) -> tuple[str, ModelEntry]:
    entry = by_estimator(estimator)
    if entry is None:
        raise CheckpointMismatchError(
            f"No command-line outputs are defined for {type(estimator).__name__}."
        )
    return entry.name, entry


def _predict_parameters() -> list[inspect.Parameter]:
    return [
        keyword_parameter(
            "checkpoint",
            str,
            typer.Argument(
                ...,
                help="Checkpoint store written by `dem fit`: a path or a URL "
                "(see --checkpoint-storage-option).",
                show_default=False,
            ),
        ),
        keyword_parameter(
            "store",
            str,
            typer.Argument(
                ...,
                help="Zarr store holding the data, or Parquet data (--var a,b,c: its columns): "
                "a path or a URL (see --storage-option).",
                show_default=False,
            ),
        ),
        keyword_parameter(
            "var",
            str | None,
            typer.Option(
                None,
                "--var",
                help="Name of the data variable in the store (default: its only array with "
                "the dimensions of the model's data).",
                show_default=False,
            ),
        ),
        keyword_parameter(
            "out",
            str,
            typer.Option(
                ...,
                "--out",
                help="Zarr store to write, a path or a URL written with --storage-option (must "
                "not exist, or be one dem wrote, with --overwrite); "
                "never inside the input or the checkpoint. The workers write it, so it must be "
                "reachable from them.",
                show_default=False,
            ),
        ),
        keyword_parameter(
            "output",
            list[str] | None,
            typer.Option(
                None,
                "--output",
                help="Output to write (repeatable; default: all the model's outputs; "
                + "; ".join(f"{k}: {', '.join(s.outputs)}" for k, s in REGISTRY.items())
                + ").",
            ),
        ),
        overwrite_parameter(),
        storage_option_parameter("storage_option", "--storage-option", "the data and OUT"),
        storage_option_parameter(
            "checkpoint_storage_option",
            "--checkpoint-storage-option",
            "the checkpoint (default: those of --storage-option)",
        ),
        *_predict_input_parameters(),
        *cluster_parameters(),
    ]


def _predict_inputs() -> dict[str, tuple[Input, list[str]]]:
    """The models' optional ``dem predict`` inputs, each once, with the models that take it."""
    found: dict[str, tuple[Input, list[str]]] = {}
    for key, spec in REGISTRY.items():
        for data in spec.predict_inputs:
            found.setdefault(data.option, (data, []))[1].append(key)
    return found


def _predict_input_parameters() -> list[inspect.Parameter]:
    return [
        input_parameter(data, f" [{', '.join(models)} only]")
        for data, models in _predict_inputs().values()
    ]


def predict(**values: Any) -> None:
    """Write the chosen per-sample outputs of the checkpoint's model to a new Zarr store."""
    from dem.restore import from_checkpoint

    console = make_console()
    store, out = absolute_location(values["store"]), absolute_location(values["out"])
    shown_store, shown_out = (location(p) if is_remote(p) else p for p in (store, out))
    with user_errors(console):
        options = storage_options(values["storage_option"], "--storage-option")
        checkpoint_options = storage_options(
            values["checkpoint_storage_option"], "--checkpoint-storage-option"
        )
        if checkpoint_options is None:
            checkpoint_options = options
        if not is_remote(values["checkpoint"]) and not os.path.exists(values["checkpoint"]):
            raise UsageError(missing_checkpoint(os.fspath(values["checkpoint"])))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            estimator = from_checkpoint(values["checkpoint"], storage_options=checkpoint_options)
        print_warnings(console, caught)
        if "storage_options" in estimator.get_params():
            estimator.set_params(storage_options=options)
        key, spec = _spec_for(estimator)
        if values["var"] is None:
            variable = infer_variable(store, data_ndim(spec), "--var", options)
            values["var"] = variable
            console.print(
                escape(inferred_data(shown_store, variable, data_ndim(spec), "--var")),
                soft_wrap=True,
            )
        wanted = values["output"] or list(spec.outputs)
        unknown = sorted(set(wanted) - set(spec.outputs))
        if unknown:
            raise fail(
                console,
                ExitCode.USAGE,
                f"Unknown output(s) {unknown}; this model writes {list(spec.outputs)}.",
            )
        accepted = {data.option for data in spec.predict_inputs}
        for option in _predict_inputs():
            if values[option] is not None and option not in accepted:
                raise fail(
                    console, ExitCode.USAGE, f"--{option} does not apply to {key} checkpoints."
                )
        shape = variable_shape(store, values["var"], options)
        arguments = input_values(store, spec.predict_inputs, values, options)
        axis, expected = spec.feature_axis, getattr(estimator, "n_features_in_", None)
        # a sequence model (features on axis 2) takes a 2-D variable as one long sequence
        one_sequence = axis == 2 and len(shape) == 2
        if one_sequence and expected is not None and shape[-1] != expected:
            axis = 1
        if (
            axis is not None
            and expected is not None
            and not (one_sequence and axis == 2)
            and (len(shape) != axis + 1 or shape[axis] != expected)
        ):
            raise ValueError(
                f"{values['var']!r} in {shown_store!r} has shape {shape}, but the model was fitted "
                f"to {expected} features."
            )
        check_output(
            out,
            protected={"the input store": store, "the checkpoint": values["checkpoint"]},
            overwrite=values["overwrite"],
            storage_options=options,
        )
        import xarray as xr

        variables = {}  # lazy: nothing is computed before the cluster is connected
        for name in wanted:
            output = spec.outputs[name]
            given = {
                data.argument: arguments[data.argument]
                for data in spec.predict_inputs
                if data.option in output.uses and data.argument in arguments
            }
            result = getattr(estimator, output.method)(store, variable=values["var"], **given)
            dims = output.dims
            if one_sequence and np.ndim(result) == len(dims) - 1:  # no sequence axis
                dims = dims[1:]
            variables[name] = xr.Variable(dims, result)
        connection = connect_cluster(console, values)
    with connection, user_errors(console):
        import dask
        from rich.status import Status

        dataset = xr.Dataset(
            variables,
            attrs={
                OUTPUT_ATTRIBUTE: output_marker("dem predict", complete=False),
                "dem_predict": {
                    "checkpoint": location(values["checkpoint"]),
                    "source": f"{location(store)}::{values['var']}",
                },
            },
        )
        started = time.perf_counter()
        if output_exists(out, options):
            remove_output(out, options)  # check_output allowed it: a dem output store
        # the metadata (marker included, complete=false) is written here, the chunks below
        write = dataset.to_zarr(
            out,
            mode="w-",
            compute=False,
            consolidated=False,
            storage_options=options if is_remote(out) else None,
        )
        with Status(f"Writing {', '.join(wanted)} to {escape(shown_out)}", console=console):
            try:
                dask.compute(write)
            except KeyboardInterrupt as exc:
                console.print(
                    f"[yellow]Interrupted[/]; {escape(shown_out)} is incomplete: delete it or "
                    "rerun with --overwrite."
                )
                raise typer.Exit(int(ExitCode.INTERRUPTED)) from exc
        mark_complete(out, options)
        chunks = len(next(iter(variables.values())).data.chunks[0])
        console.print(
            f"Wrote {', '.join(f'{n} {variables[n].shape}' for n in wanted)} to "
            f"{escape(shown_out)} in {chunks} chunk(s), {time.perf_counter() - started:.1f} s.",
            soft_wrap=True,
        )


app.command(
    name="predict",
    help="Per-sample outputs of a fitted model (labels, probabilities, ...) "
    "written chunk by chunk to Zarr on the cluster.",
)(
    with_signature(
        predict, _predict_parameters(), "Per-sample outputs of a fitted model, written to Zarr."
    )
)
