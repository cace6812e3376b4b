"""``dem convert DATA.parquet OUT.zarr``: Parquet columns to a Zarr store dem fits."""

from __future__ import annotations

import inspect
import os
import shlex
import time
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from dem.cli.apps import app
from dem.cli.console import UsageError, make_console, user_errors
from dem.cli.options import (
    absolute_location,
    keyword_parameter,
    overwrite_parameter,
    with_signature,
)
from dem.outputs import ATTRIBUTE as OUTPUT_ATTRIBUTE
from dem.outputs import check_output, mark_complete, remove_output
from dem.outputs import marker as output_marker

DEFAULT_CHUNK_ROWS = 100_000


def _convert_parameters() -> list[inspect.Parameter]:
    return [
        keyword_parameter(
            "source",
            Path,
            typer.Argument(
                ...,
                help="Parquet data: a .parquet file, a folder of them or a glob.",
                show_default=False,
            ),
        ),
        keyword_parameter(
            "out", Path, typer.Argument(..., help="Zarr store to create.", show_default=False)
        ),
        keyword_parameter(
            "columns",
            str | None,
            typer.Option(
                None,
                "--columns",
                help="Columns to convert, comma-separated (default: every numeric column).",
                show_default=False,
            ),
        ),
        keyword_parameter(
            "var",
            str,
            typer.Option("X", "--var", help="Name of the samples × features array written."),
        ),
        keyword_parameter(
            "chunk_rows",
            int,
            typer.Option(
                DEFAULT_CHUNK_ROWS, "--chunk-rows", help="Rows per chunk of the array written."
            ),
        ),
        overwrite_parameter(),
    ]


def convert(**values: Any) -> None:
    """Write Parquet columns to a Zarr store: one float array (rows × columns) whose
    feature coordinate holds the column names, chunked by rows."""
    import dask
    import xarray as xr

    from dem.tabular import is_parquet, read_parquet

    console = make_console()
    source, out = absolute_location(values["source"]), absolute_location(values["out"])
    with user_errors(console):
        if values["chunk_rows"] < 1:
            raise UsageError(f"--chunk-rows must be at least 1; got {values['chunk_rows']}.")
        if not is_parquet(source):
            raise UsageError(
                f"{source!r} is not Parquet data (a .parquet file, a folder of them or a glob); "
                "dem fits Zarr stores as they are."
            )
        check_output(out, protected={"the input": source}, overwrite=values["overwrite"])
        X = read_parquet(source, values["columns"])
        started = time.perf_counter()
        dataset = xr.Dataset(
            {values["var"]: X.chunk({"sample": values["chunk_rows"]})},
            attrs={
                OUTPUT_ATTRIBUTE: output_marker("dem convert", complete=False),
                "dem_convert": {"source": source, "columns": list(X.coords["feature"].values)},
            },
        )
        if os.path.lexists(out):
            remove_output(out)  # check_output allowed it: a dem output store
        write = dataset.to_zarr(out, mode="w-", compute=False, consolidated=False)
        with console.status(f"Writing {escape(out)}"):
            dask.compute(write)
        mark_complete(out)
        columns = ", ".join(X.coords["feature"].values)
        fit_words = ["dem", "fit", "gmm", out, "--var", values["var"]]
        console.print(
            f"Wrote {escape(values['var'])} {X.shape} (columns {escape(columns)}) to "
            f"{escape(out)} in {time.perf_counter() - started:.1f} s.",
            soft_wrap=True,
        )
        console.print(f"Fit it with: {escape(shlex.join(fit_words))}", soft_wrap=True)


app.command(name="convert", help="Parquet columns to a Zarr store (one samples × features array).")(
    with_signature(convert, _convert_parameters(), "Parquet columns to a Zarr store.")
)
