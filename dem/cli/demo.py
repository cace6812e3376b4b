"""``dem demo``: a self-contained end-to-end run on generated data."""

from __future__ import annotations

import os
import shlex
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
import typer.models
from rich.markup import escape
from rich.table import Table

from dem.cli.apps import app
from dem.cli.console import (
    ExitCode,
    FitStopped,
    Interrupts,
    Reporter,
    fail,
    make_console,
    print_warnings,
    user_errors,
)
from dem.cli.options import (
    connect_cluster,
)
from dem.cli.synth import write_synthetic
from dem.cluster import DEFAULT_TIMEOUT
from dem.registry import REGISTRY

# --- dem demo -----------------------------------------------------------------------------


@app.command()
def demo(
    samples: Annotated[int, typer.Option("--samples", "-n", help="Number of samples.")] = 1_000_000,
    features: Annotated[int, typer.Option("--features", "-d", help="Number of features.")] = 16,
    components: Annotated[
        int, typer.Option("--components", "-k", help="Number of mixture components.")
    ] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the data and of the fit.")] = 0,
    workers: Annotated[int, typer.Option(help="Worker processes of the local Dask cluster.")] = 2,
    chunk_rows: Annotated[int, typer.Option(help="Samples per chunk.")] = 100_000,
    max_iter: Annotated[int, typer.Option(help="Maximum EM iterations.")] = 100,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Where to write the data and checkpoint (default: a new temporary directory).",
        ),
    ] = None,
) -> None:
    """Generate a Zarr store, fit a Gaussian mixture on a local Dask cluster, and report."""
    from scipy.optimize import linear_sum_assignment

    console = make_console()
    if min(samples, features, components, workers, chunk_rows, max_iter) < 1:
        raise fail(
            console,
            ExitCode.USAGE,
            "--samples, --features, --components, --workers, --chunk-rows "
            "and --max-iter must be at least 1.",
        )
    if samples < components:
        raise fail(console, ExitCode.USAGE, "--samples must be at least --components.")
    root = Path(tempfile.mkdtemp(prefix="dem-demo-")) if directory is None else directory
    root.mkdir(parents=True, exist_ok=True)
    store, checkpoint = os.fspath(root / "data.zarr"), os.fspath(root / "fit.zarr")
    console.print(
        f"[bold]dem demo[/]: {samples:,} samples × {features} features from a "
        f"{components}-component Gaussian mixture, in {escape(os.fspath(root))}",
        soft_wrap=True,
    )
    spec = REGISTRY["gmm"]
    with user_errors(console):
        started = time.perf_counter()
        truth = write_synthetic(
            console,
            "gmm",
            spec,
            store,
            {
                "samples": samples,
                "features": features,
                "seed": seed,
                "chunk_rows": chunk_rows,
                "dtype": "float64",
                "threads": workers,
                "n_components": components,
                "separation": 1.0,
                "missing": 0.0,
            },
        )
        size = samples * features * 8 / 1e6
        console.print(
            f"Wrote {escape(store)} ({size:,.0f} MB in {-(-samples // chunk_rows)} chunks) "
            f"in {time.perf_counter() - started:.1f} s.",
            soft_wrap=True,
        )
        connection = connect_cluster(
            console,
            {
                "scheduler": None,
                "scheduler_file": None,
                "local_workers": workers,
                "tls_ca_file": None,
                "tls_cert": None,
                "tls_key": None,
                "insecure": False,
                "connect_timeout": DEFAULT_TIMEOUT,
            },
        )
    cls = spec.estimator_class()
    with connection, Interrupts(console) as interrupts, user_errors(console):
        reporter = Reporter(console, max_iter, 1, interrupts)
        estimator = cls(
            components,
            covariance_type="full",
            random_state=seed,
            max_iter=max_iter,
            checkpoint=checkpoint,
            callback=reporter,
        )
        started = time.perf_counter()
        try:
            with reporter, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                estimator.fit(store, variable="X")
        except (FitStopped, KeyboardInterrupt) as exc:
            console.print(
                f"[yellow]Interrupted.[/] Checkpoint so far: {escape(checkpoint)}", soft_wrap=True
            )
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from exc
        print_warnings(console, caught)
        elapsed = time.perf_counter() - started

    trace = estimator.lower_bounds_
    console.print(
        f"\n[bold]{'Converged' if estimator.converged_ else 'Did not converge'}[/] after "
        f"{estimator.n_iter_} iterations in {elapsed:.1f} s (including initialisation); "
        f"median {statistics.median(reporter.seconds):.2f} s per iteration."
    )
    console.print("Mean log-likelihood per sample: " + " → ".join(f"{v:.4f}" for v in trace))
    distance = np.linalg.norm(truth["means"][:, None, :] - estimator.means_[None, :, :], axis=2)
    true_index, fitted_index = linear_sum_assignment(distance)
    spacing = np.linalg.norm(truth["means"][:, None] - truth["means"][None], axis=2)
    nearest = (
        np.min(spacing + np.diag(np.full(components, np.inf)), axis=1)
        if components > 1
        else np.full(1, np.nan)
    )
    table = Table(
        title="recovered vs true components (matched by the Hungarian algorithm on mean distance)"
    )
    for column in (
        "true",
        "fitted",
        "true weight",
        "fitted weight",
        "‖mean error‖",
        "nearest other true mean",
    ):
        table.add_column(column, justify="right")
    for t, f in zip(true_index, fitted_index, strict=True):
        table.add_row(
            str(t),
            str(f),
            f"{truth['weights'][t]:.4f}",
            f"{estimator.weights_[f]:.4f}",
            f"{distance[t, f]:.4f}",
            f"{nearest[t]:.2f}",
        )
    console.print(table)
    console.print(
        f"Largest mean error {distance[true_index, fitted_index].max():.4f} (means lie "
        f"{np.nanmin(nearest):.2f} or more apart)."
    )
    console.print(
        f"Checkpoint: {escape(checkpoint)}   (inspect: dem show {escape(shlex.quote(checkpoint))})",
        soft_wrap=True,
    )
    console.print(
        f"Data: {escape(store)}   (delete {escape(os.fspath(root))} when done)", soft_wrap=True
    )
