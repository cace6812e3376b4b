"""The ``dem`` application and its ``fit`` and ``synth`` groups (commands add themselves)."""

from __future__ import annotations

from typing import Annotated

import typer
import typer.models

app = typer.Typer(
    name="dem",
    help="Fit latent-variable models by EM on Dask clusters, out of core, from Zarr data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from dem import __version__

        typer.echo(f"dem {__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print dem's version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Fit latent-variable models by EM on Dask clusters, out of core, from Zarr data."""


fit_app = typer.Typer(
    help="Fit a model to Zarr data on a Dask cluster, checkpointing every iteration.",
    no_args_is_help=True,
)
synth_app = typer.Typer(
    help="Write a synthetic Zarr store of any size, chunk by chunk.", no_args_is_help=True
)
app.add_typer(fit_app, name="fit")
app.add_typer(synth_app, name="synth")
