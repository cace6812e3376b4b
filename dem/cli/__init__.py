"""The ``dem`` command line: fit, inspect and apply models on a Dask cluster.

Commands
--------
``dem demo``                      a self-contained end-to-end run on generated data
``dem fit MODEL STORE ...``       fit a model to Zarr data, checkpointing every iteration
``dem show CKPT``                 what a checkpoint holds (``--plot`` draws the trace)
``dem predict CKPT STORE ...``    per-sample outputs of a fitted model, written to Zarr
``dem synth MODEL OUT ...``       a synthetic store of any size, with its ground truth
``dem convert DATA.parquet OUT``  Parquet columns to a Zarr store

Every model is one entry of :data:`dem.registry.REGISTRY`; the ``fit``, ``predict``,
``synth`` and ``show`` commands and their options are built from it, and ``dem fit MODEL``
offers every parameter of the model's estimator.

Modules: :mod:`~dem.cli.console` (exit codes, errors, progress), :mod:`~dem.cli.options`
(options built from the registry and the estimators' signatures), :mod:`~dem.cli.apps`
(the typer applications), and one module per command: :mod:`~dem.cli.fit`,
:mod:`~dem.cli.predict`, :mod:`~dem.cli.synth`, :mod:`~dem.cli.show`, :mod:`~dem.cli.demo`,
:mod:`~dem.cli.convert`.

Exit codes
----------
0    success (a fit that stopped at ``--max-iter`` unconverged also exits 0, with a warning)
1    unexpected error (a bug: please report it with the traceback)
2    usage error: bad options (checked before any cluster starts), ``--var`` missing or
     ambiguous, an output that exists (``--overwrite`` or another path), a checkpoint
     path that does not exist, or a missing optional dependency
3    bad input data: missing store or variable, wrong shape or type, NaN or infinity
4    checkpoint problem: exists without ``--resume``, written by another model,
     configuration or data, or not a dem checkpoint
5    scheduler problem: not found, unreachable, or an insecure address refused
130  interrupted (Ctrl-C or SIGTERM); the last complete iteration is checkpointed and
     the command that resumes is printed
"""

from __future__ import annotations

from dem.cli import convert, demo, fit, predict, show, synth  # noqa: F401  (each adds its commands)
from dem.cli.apps import app
from dem.cli.console import ExitCode

__all__ = ["ExitCode", "app", "main"]


def main() -> None:
    """Entry point for ``python -m dem.cli``."""
    app()
