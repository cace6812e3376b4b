"""``dem synth MODEL OUT``: a synthetic store for each registered model that has a generator."""

from __future__ import annotations

import inspect
import os
import shlex
import time
from typing import Any

import numpy as np
import typer
import typer.models
from rich.console import Console
from rich.markup import escape

from dem.cli.apps import synth_app
from dem.cli.console import (
    make_console,
    user_errors,
)
from dem.cli.options import (
    absolute_location,
    choice_enum,
    keyword_parameter,
    option_parameter,
    option_value,
    overwrite_parameter,
    storage_option_parameter,
    storage_options,
    with_signature,
)
from dem.outputs import (
    check_output,
    output_exists,
    remove_output,
)
from dem.registry import REGISTRY, ModelEntry
from dem.storage import is_remote, location, open_store
from dem.synth import GENERATORS

# --- dem synth ---------------------------------------------------------------------------


def _synth_parameters(key: str, spec: ModelEntry) -> list[inspect.Parameter]:
    return [
        keyword_parameter(
            "out",
            str,
            typer.Argument(
                ...,
                help="Zarr store to create: a path or a URL (see --storage-option).",
                show_default=False,
            ),
        ),
        keyword_parameter(
            "samples",
            int,
            typer.Option(
                1_000_000, "--samples", "-n", help="Number of samples (sequences for HMMs)."
            ),
        ),
        keyword_parameter(
            "features",
            int,
            typer.Option(
                16, "--features", "-d", help="Number of features (symbols for categorical-hmm)."
            ),
        ),
        *[option_parameter(o, {}, f"synth_{key}") for o in spec.synth_options],
        keyword_parameter(
            "seed", int, typer.Option(0, "--seed", help="Seed of the ground truth and the samples.")
        ),
        keyword_parameter(
            "chunk_rows",
            int | None,
            typer.Option(
                None,
                "--chunk-rows",
                help="Samples (sequences) per chunk (default: 100,000 observations: samples, or "
                "time steps of sequences).",
            ),
        ),
        keyword_parameter(
            "dtype",
            choice_enum("synth_dtype", ("float64", "float32")),
            typer.Option("float64", "--dtype", help="Data type of the feature matrix."),
        ),
        keyword_parameter(
            "threads",
            int,
            typer.Option(
                2, "--threads", help="Chunks generated at once (memory ≈ threads chunks)."
            ),
        ),
        overwrite_parameter(),
        storage_option_parameter("storage_option", "--storage-option", "OUT"),
    ]


def write_synthetic(
    console: Console, key: str, spec: ModelEntry, out: str, values: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Write a synthetic store for ``key`` with a progress bar; return its ground truth."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dem.synth import write_store

    options = {o.param: option_value(o, values[o.param]) for o in spec.synth_options}
    with Progress(
        TextColumn("writing {task.fields[name]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task("synth", total=values["samples"], name=os.path.basename(out))
        return write_store(
            out,
            spec.synth or key,
            n_samples=values["samples"],
            n_features=values["features"],
            seed=values["seed"],
            chunk_rows=values["chunk_rows"],
            dtype=getattr(values["dtype"], "value", values["dtype"]),
            threads=values["threads"],
            options=options,
            on_chunk=lambda done, total: bar.update(task, completed=done),
            storage_options=storage_options(values.get("storage_option"), "--storage-option"),
        )


def _make_synth_command(key: str, spec: ModelEntry) -> None:
    parameters = _synth_parameters(key, spec)

    def command(**values: Any) -> None:
        console = make_console()
        out = absolute_location(values["out"])
        shown = location(out) if is_remote(out) else out
        with user_errors(console):
            options = storage_options(values["storage_option"], "--storage-option")
            check_output(
                out,
                protected={},
                overwrite=values["overwrite"],
                option="OUT",
                storage_options=options,
            )
            if output_exists(out, options):
                remove_output(out, options)
            started = time.perf_counter()
            write_synthetic(console, key, spec, out, values)
        import zarr

        group = zarr.open_group(open_store(out, options), mode="r")
        shapes = ", ".join(
            f"{name} {dict(group.arrays())[name].shape}"
            for name in GENERATORS[spec.synth or key].dims
        )
        console.print(
            f"Wrote {escape(shown)} in {time.perf_counter() - started:.1f} s: {shapes}; ground "
            "truth in the attribute 'dem_synth'.",
            soft_wrap=True,
        )
        fit_words = ["dem", "fit", key, shown, *(w.format(**values) for w in spec.synth_fit)]
        console.print(f"Fit it with: {escape(shlex.join(fit_words))}", soft_wrap=True)

    variables = ", ".join(GENERATORS[spec.synth or key].dims)
    text = f"Synthetic data for `dem fit {key}`: variables {variables}; ground truth in attributes."
    synth_app.command(name=key, help=text)(with_signature(command, parameters, text))


for _entry in REGISTRY.values():
    if _entry.synth is not None:
        _make_synth_command(_entry.name, _entry)
