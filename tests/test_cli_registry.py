"""The model registry: every command is derived from it, and ``dem fit MODEL`` offers every
parameter of the model's estimator.

The expected options are read from each estimator's signature at test time (not listed
here), so a model added to the registry, or a parameter added to an estimator, is
covered without editing this file.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from dem.cli import app
from dem.cli.options import NOT_OPTIONS
from dem.registry import REGISTRY, ModelEntry, by_checkpoint_model, register
from dem.restore import estimator_class
from dem.synth import GENERATORS

REPO = Path(__file__).resolve().parents[1]
ENTRIES = sorted(REGISTRY)


def command(*path: str) -> Any:
    """The click command (or group) of ``dem PATH...``."""
    found: Any = typer.main.get_command(app)
    for name in path:
        found = found.commands[name]
    return found


def engine_parameters(entry: ModelEntry) -> list[str]:
    """The estimator's parameters that ``dem fit`` must offer as options."""
    inputs = {i.argument for i in entry.inputs} | {i.option for i in entry.inputs}
    return [
        name
        for name in inspect.signature(entry.estimator_class()).parameters
        if name not in NOT_OPTIONS and name not in inputs
    ]


@pytest.mark.parametrize("name", ENTRIES)
def test_fit_help_lists_every_estimator_parameter(name: str) -> None:
    entry = REGISTRY[name]
    options = {p.name: p for p in command("fit", name).params}
    wanted = engine_parameters(entry)
    assert wanted, name
    missing = [p for p in wanted if p not in options]
    assert not missing, f"dem fit {name} lacks options for {missing}"
    help_text = CliRunner().invoke(app, ["fit", name, "--help"], env={"COLUMNS": "250"}).output
    for parameter in wanted:
        flag = options[parameter].opts[0]
        assert flag in help_text, f"{flag} ({parameter}) not in `dem fit {name} --help`"
    for flag in ("--checkpoint", "--resume", "--timeout", "--scheduler"):
        assert flag in help_text


@pytest.mark.parametrize("name", ENTRIES)
def test_every_command_derives_from_the_entry(name: str) -> None:
    entry = REGISTRY[name]
    assert by_checkpoint_model(entry.checkpoint_model) is entry
    assert estimator_class(entry.checkpoint_model) is entry.estimator_class()
    synth_commands = command("synth").commands
    assert (name in synth_commands) == (entry.synth is not None)
    if entry.synth is not None:
        assert entry.synth in GENERATORS
    predict_help = CliRunner().invoke(app, ["predict", "--help"], env={"COLUMNS": "400"}).output
    assert f"{name}: {', '.join(entry.outputs)}" in " ".join(predict_help.replace("│", " ").split())


def test_tobit_takes_every_engine_option_it_has() -> None:
    """The README says every model takes --accelerate; Tobit's fit lacked it."""
    options = {p.name for p in command("fit", "tobit").params}
    assert {"accelerate", "split_every", "persist", "init_sample_size", "max_iter"} <= options
    gmm = {p.name for p in command("fit", "gmm").params}
    assert {"method", "online_passes", "batch_chunks", "step_exponent", "n_init"} <= gmm


def test_register_refuses_duplicates() -> None:
    from dataclasses import replace

    with pytest.raises(ValueError, match="already registered as 'gmm'"):
        register(REGISTRY["gmm"])
    with pytest.raises(ValueError, match="gaussian_mixture"):
        register(replace(REGISTRY["gmm"], name="another"))
    assert "another" not in REGISTRY


def test_a_registered_model_gets_every_command() -> None:
    """One register() call, before the CLI is built, adds fit, synth and predict outputs."""
    script = """
from dataclasses import replace
import dem.registry as registry
registry.register(replace(registry.REGISTRY["ppca"], name="ppca-copy", checkpoint_model="copy"))
from dem.cli import main
main()
"""
    env = {**os.environ, "COLUMNS": "200"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    expected = {"fit": ("--n-components", "--accelerate", "--n-init"), "synth": ("--missing",)}
    for verb, flags in expected.items():
        done = subprocess.run(
            [sys.executable, "-c", script, verb, "ppca-copy", "--help"],
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert all(flag in done.stdout for flag in flags), done.stdout


def test_an_engine_option_new_to_a_model_reaches_its_estimator(
    process_client, tmp_path: Path
) -> None:
    """`dem fit tobit --accelerate squarem` fits what the library fits with accelerate='squarem'."""
    import numpy as np

    import dem
    from dem.restore import from_checkpoint
    from dem.synth import write_store

    data = tmp_path / "cens.zarr"
    write_store(data, "tobit", n_samples=3000, n_features=2, chunk_rows=1000, seed=4)
    checkpoint = tmp_path / "tobit.zarr"
    arguments = ["fit", "tobit", os.fspath(data), "--x", "X", "--y", "y", "--left", "0"]
    result = CliRunner().invoke(
        app,
        [*arguments, "--accelerate", "squarem", "--checkpoint", os.fspath(checkpoint),
         "--scheduler", process_client.scheduler.address],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    restored = from_checkpoint(checkpoint)
    fits = {
        accelerate: dem.CensoredRegression(left=0.0, accelerate=accelerate, random_state=0).fit(
            os.fspath(data), variable="X", y="y"
        )
        for accelerate in ("none", "squarem")
    }
    assert fits["none"].n_iter_ != fits["squarem"].n_iter_  # the option changes the fit's path
    assert restored.n_iter_ == fits["squarem"].n_iter_
    np.testing.assert_allclose(restored.coef_, fits["squarem"].coef_, rtol=1e-8)
