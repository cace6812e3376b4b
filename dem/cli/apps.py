"""The ``dem`` application and its ``fit`` and ``synth`` groups (commands add themselves)."""

from __future__ import annotations

import typer
import typer.models

app = typer.Typer(
    name="dem",
    help="Fit latent-variable models by EM on Dask clusters, out of core, from Zarr data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
fit_app = typer.Typer(
    help="Fit a model to Zarr data on a Dask cluster, checkpointing every iteration.",
    no_args_is_help=True,
)
synth_app = typer.Typer(
    help="Write a synthetic Zarr store of any size, chunk by chunk.", no_args_is_help=True
)
app.add_typer(fit_app, name="fit")
app.add_typer(synth_app, name="synth")
