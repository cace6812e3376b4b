"""``dem synth | fit | show | predict`` for PPCA, factor analysis, Tobit and the HMMs.

Each model goes through the command line on a real cluster of worker processes (the
``process_client`` fixture); ``dem`` runs in process with typer's CliRunner (the
subprocess end to end is in test_cli.py). The checkpoint must hold the parameters of an
in-process fit with the library on the same data, ``dem predict`` must write what the
estimator's methods return, chunk by chunk, and ``dem show`` must print the model. The
estimators themselves are checked against independent references in their own test
files; here the fitted parameters are also compared with the ground truth that
``dem synth`` kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

import dem
from dem.cli import ExitCode, app
from dem.restore import from_checkpoint
from dem.synth import read_truth


def invoke(*args: str | os.PathLike[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, [os.fspath(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def scheduler(process_client) -> tuple[str, str]:
    return ("--scheduler", process_client.scheduler.address)


def synth(path: Path, model: str, *args: str) -> dict[str, np.ndarray]:
    code, output = invoke("synth", model, path, "--seed", "1", *args)
    assert code == 0, output
    assert f"dem fit {model} {path}" in output  # the hint names the store
    return read_truth(path)


def written(out: Path) -> zarr.Group:
    return zarr.open_group(out, mode="r")


# --- PPCA and factor analysis ---------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "cls", "model_name"),
    [("ppca", dem.PPCA, "ppca"), ("fa", dem.FactorAnalysis, "factor_analysis")],
)
def test_ppca_and_fa(key, cls, model_name, scheduler, tmp_path: Path) -> None:
    data = tmp_path / "data.zarr"
    truth = synth(
        data, key, "-n", "2000", "-d", "6", "-k", "2", "--missing", "0.05", "--chunk-rows", "500"
    )
    assert written(data)["X"].chunks == (500, 6)
    checkpoint = tmp_path / "fit.zarr"
    options = ("--n-components", "2", "--tol", "1e-3", "--init-params", "pca")
    code, output = invoke(
        "fit", key, data, "--var", "X", *options, "--checkpoint", checkpoint, *scheduler
    )
    assert code == 0, output

    reference = cls(2, tol=1e-3, random_state=0).fit(data, variable="X")
    restored = from_checkpoint(checkpoint)
    assert type(restored) is cls and restored.n_iter_ == reference.n_iter_
    for name in ("loadings_", "mean_", "noise_variance_"):
        np.testing.assert_allclose(
            getattr(restored, name), getattr(reference, name), rtol=1e-10, atol=1e-12
        )
    # the truth: the model covariance W Wᵀ + Ψ, which does not depend on W's rotation
    noise = np.broadcast_to(truth["noise_variance"], (6,))
    true_cov = truth["loadings"] @ truth["loadings"].T + np.diag(noise)
    assert np.abs(restored.get_covariance() - true_cov).max() < 0.25 * np.abs(true_cov).max()

    code, output = invoke("show", checkpoint)
    assert code == 0, output
    assert model_name in output and "loadings" in output and "noise_variance" in output

    out = tmp_path / "predicted.zarr"
    code, output = invoke("predict", checkpoint, data, "--var", "X", "--out", out, *scheduler)
    assert code == 0, output
    group = written(out)
    assert group["latent"].chunks == (500, 2) and group["imputed"].chunks == (500, 6)
    x = written(data)["X"][:]
    imputed = group["imputed"][:]
    assert np.isnan(x).any() and not np.isnan(imputed).any()
    np.testing.assert_allclose(group["latent"][:], reference.transform(x), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(imputed, reference.impute(x), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(group["loglik"][:], reference.score_samples(x), rtol=1e-10)


# --- Tobit -------------------------------------------------------------------------------


def test_tobit_scalar_and_per_row_limits(scheduler, tmp_path: Path) -> None:
    data = tmp_path / "data.zarr"
    truth = synth(data, "tobit", "-n", "3000", "-d", "3", "--left", "-1", "--chunk-rows", "1000")
    options = ("--tol", "1e-6")
    scalar, per_row = tmp_path / "scalar.zarr", tmp_path / "per-row.zarr"
    code, output = invoke(
        "fit", "tobit", data, "--x", "X", "--y", "y", "--left", "-1", *options,
        "--checkpoint", scalar, *scheduler,
    )  # fmt: skip
    assert code == 0, output
    assert "Log(scale)" in output  # the coefficient table, with standard errors
    code, output = invoke(
        "fit", "tobit", data, "--x", "X", "--y", "y", "--left", "left", "--right", "right",
        *options, "--checkpoint", per_row, *scheduler,
    )  # fmt: skip
    assert code == 0, output

    reference = dem.CensoredRegression(-1.0, tol=1e-6, random_state=0).fit(data, "y", variable="X")
    by_rows = dem.CensoredRegression(tol=1e-6, random_state=0).fit(
        data, "y", left="left", right="right", variable="X"
    )
    restored, restored_rows = from_checkpoint(scalar), from_checkpoint(per_row)
    assert restored.fit_limits_ == (-1.0, np.inf) and restored_rows.fit_limits_ == (None, None)
    for fitted, expected in ((restored, reference), (restored_rows, by_rows)):
        assert fitted.n_iter_ == expected.n_iter_
        np.testing.assert_allclose(fitted.coef_, expected.coef_, rtol=1e-10)
        np.testing.assert_allclose(fitted.intercept_, expected.intercept_, rtol=1e-10)
        np.testing.assert_allclose(fitted.scale_, expected.scale_, rtol=1e-10)
    # limits of -1 and inf on every row are the scalar limits; both recover the truth
    np.testing.assert_allclose(restored_rows.coef_, restored.coef_, rtol=1e-7)
    np.testing.assert_allclose(restored.coef_, truth["coef"], atol=0.1)

    code, output = invoke("show", per_row)
    assert code == 0, output
    assert "censored_regression" in output and "per-observation" in output and "coef" in output
    # the checkpoint holds the standard errors: show prints the coefficient table
    assert "(Intercept)" in output and "Log(scale)" in output
    assert restored_rows.summary().std_error == pytest.approx(by_rows.bse_, rel=1e-6)

    x = written(data)["X"][:]
    out = tmp_path / "predicted.zarr"
    code, output = invoke("predict", scalar, data, "--var", "X", "--out", out, *scheduler)
    assert code == 0, output
    group = written(out)
    assert group["expected"].chunks == (1000,)
    # the parameters agree to 1e-10 (above); E[y] near the left limit loses digits to
    # cancellation, hence the absolute tolerance
    np.testing.assert_allclose(group["latent"][:], reference.predict(x), rtol=1e-9)
    np.testing.assert_allclose(
        group["expected"][:], reference.predict_expected(x), rtol=1e-9, atol=1e-13
    )

    code, output = invoke("predict", per_row, data, "--var", "X", "--out", out, "--overwrite")
    assert code == ExitCode.DATA and "per-observation left limits" in output
    code, output = invoke(
        "predict", per_row, data, "--var", "X", "--out", out, "--overwrite", "--lengths", "n"
    )
    assert code == ExitCode.USAGE and "--lengths does not apply to tobit" in output
    code, output = invoke(
        "predict", per_row, data, "--var", "X", "--out", out, "--overwrite",
        "--left", "left", "--right", "inf", "--output", "expected", *scheduler,
    )  # fmt: skip
    assert code == 0, output
    expected = by_rows.predict_expected(data, left="left", right=np.inf, variable="X")
    np.testing.assert_allclose(
        written(out)["expected"][:], expected.compute(), rtol=1e-9, atol=1e-13
    )
    assert sorted(written(out).array_keys()) == ["expected"]


# --- hidden Markov models ------------------------------------------------------------------


def test_gaussian_hmm_with_ragged_sequences(scheduler, tmp_path: Path) -> None:
    data = tmp_path / "data.zarr"
    truth = synth(
        data, "hmm", "-n", "300", "-d", "2", "--times", "30", "-k", "2", "--ragged",
        "--separation", "2", "--chunk-rows", "100",
    )  # fmt: skip
    lengths = written(data)["lengths"][:]
    assert lengths.min() < 30 and np.isnan(written(data)["X"][:]).any()
    checkpoint = tmp_path / "fit.zarr"
    code, output = invoke(
        "fit", "hmm", data, "--var", "X", "--lengths", "lengths", "-k", "2",
        "--covariance-type", "diag", "--checkpoint", checkpoint, *scheduler,
    )  # fmt: skip
    assert code == 0, output

    reference = dem.GaussianHMM(2, covariance_type="diag", random_state=0).fit(
        data, "lengths", variable="X"
    )
    restored = from_checkpoint(checkpoint)
    assert restored.n_iter_ == reference.n_iter_ and restored.n_features_in_ == 2
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        np.testing.assert_allclose(
            getattr(restored, name), getattr(reference, name), rtol=1e-10, atol=1e-12
        )
    order = np.argsort(restored.means_[:, 0])
    true_order = np.argsort(truth["means"][:, 0])
    np.testing.assert_allclose(restored.means_[order], truth["means"][true_order], atol=0.15)

    code, output = invoke("show", checkpoint)
    assert code == 0, output
    assert "gaussian_hmm" in output and "transmat" in output and "state" in output

    out = tmp_path / "predicted.zarr"
    code, output = invoke(
        "predict", checkpoint, data, "--var", "X", "--lengths", "lengths", "--out", out,
        *scheduler,
    )  # fmt: skip
    assert code == 0, output
    group = written(out)
    assert group["posteriors"].chunks == (100, 30, 2) and group["states"].chunks == (100, 30)
    x = written(data)["X"][:]
    np.testing.assert_array_equal(group["states"][:], reference.predict(x, lengths))
    np.testing.assert_allclose(
        group["posteriors"][:], reference.predict_proba(x, lengths), rtol=1e-9, atol=1e-12
    )
    np.testing.assert_allclose(
        group["loglik"][:], reference.score_sequences(x, lengths), rtol=1e-10
    )
    agreement = np.mean((group["states"][:] == written(data)["states"][:])[x[..., 0] == x[..., 0]])
    assert max(agreement, 1 - agreement) > 0.9  # the true paths, up to the states' labels


def test_categorical_hmm(scheduler, tmp_path: Path) -> None:
    data = tmp_path / "data.zarr"
    truth = synth(data, "categorical-hmm", "-n", "200", "-d", "4", "--times", "25", "-k", "2")
    checkpoint = tmp_path / "fit.zarr"
    code, output = invoke(
        "fit", "categorical-hmm", data, "--var", "X", "--lengths", "lengths", "-k", "2",
        "--emissionprob-prior", "1.5", "--checkpoint", checkpoint, *scheduler,
    )  # fmt: skip
    assert code == 0, output

    reference = dem.CategoricalHMM(2, emissionprob_prior=1.5, random_state=0).fit(
        data, "lengths", variable="X"
    )
    restored = from_checkpoint(checkpoint)
    assert restored.n_features_in_ == 4 == reference.n_features_in_  # symbols, not time steps
    for name in ("startprob_", "transmat_", "emissionprob_"):
        np.testing.assert_allclose(
            getattr(restored, name), getattr(reference, name), rtol=1e-10, atol=1e-12
        )
    assert restored.emissionprob_.shape == truth["emissionprob"].shape

    code, output = invoke("show", checkpoint)
    assert code == 0, output
    assert "categorical_hmm" in output and "emissionprob" in output

    out = tmp_path / "predicted.zarr"
    code, output = invoke(
        "predict", checkpoint, data, "--var", "X", "--out", out, "--output", "states", *scheduler
    )
    assert code == 0, output
    x = written(data)["X"][:]
    np.testing.assert_array_equal(written(out)["states"][:], reference.predict(x))
    assert sorted(written(out).array_keys()) == ["states"]
