"""Sample weights (issue 18): every model's weighted fit against the fit of repeated rows.

The independent reference is ``np.repeat``: integer weights must give the fit of the data
with each row repeated that many times, weight 0 that of the data without the row. Each
pair of fits starts from the same parameters: with integer weights summing to at most
``init_sample_size``, the weighted initialisation sample is exactly the repeated rows
(:func:`dem.weights.init_sample`), which the repeated fit samples too, so the same
``random_state`` gives the same start.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
import zarr
from distributed import default_client
from typer.testing import CliRunner

import dem
from dem.cli import app
from dem.data import as_samples
from dem.seeding import kmeans_parallel
from dem.weights import as_sample_weight, init_sample

RTOL = 1e-8
CHUNK = 40  # rows per chunk of the weighted data: several chunks


def _data(seed: int = 0, n: int = 150, d: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0] * d, [4.0] * d, [-3.0, 3.0] + [0.0] * (d - 2)])
    labels = rng.integers(0, 3, size=n)
    mixing = rng.normal(size=(d, d)) * 0.3 + np.eye(d)
    return centres[labels] + rng.normal(size=(n, d)) @ mixing


def _weights(n: int, seed: int = 1) -> np.ndarray:
    w = np.random.default_rng(seed).integers(0, 4, size=n)  # zeros included: dropped rows
    return w


def _fitted(estimator: Any) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=np.float64) for k, v in estimator._params().items()}


def _assert_same_fit(a: Any, b: Any) -> None:
    pa, pb = _fitted(a), _fitted(b)
    assert pa.keys() == pb.keys()
    for key in pa:
        scale = max(float(np.max(np.abs(pb[key]))), 1e-300)
        np.testing.assert_allclose(pa[key], pb[key], rtol=RTOL, atol=RTOL * scale, err_msg=key)
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_allclose(a.lower_bounds_, b.lower_bounds_, rtol=RTOL)


def _quiet_fit(estimator: Any, *args: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        return estimator.fit(*args, **kwargs)


MODELS: dict[str, Callable[[], Any]] = {
    "gmm-full": lambda: dem.GaussianMixture(3, covariance_type="full"),
    "gmm-tied": lambda: dem.GaussianMixture(3, covariance_type="tied"),
    "gmm-diag": lambda: dem.GaussianMixture(3, covariance_type="diag"),
    "gmm-spherical": lambda: dem.GaussianMixture(3, covariance_type="spherical"),
    "student": lambda: dem.StudentMixture(2),
    "ppca": lambda: dem.PPCA(2),
    "fa": lambda: dem.FactorAnalysis(2),
    "mfa": lambda: dem.MixtureOfFactorAnalyzers(2, n_factors=1),
    "bgmm": lambda: dem.BayesianGaussianMixture(n_components=3),
}
WITH_MISSING = {"ppca", "fa", "mfa"}  # models that take NaN as missing: a few rows have some


@pytest.mark.parametrize("name", sorted(MODELS))
def test_integer_weights_equal_repeated_rows(name: str) -> None:
    X = _data()
    if name in WITH_MISSING:
        X[[3, 50, 51, 120], [0, 1, 3, 2]] = np.nan
    w = _weights(len(X))
    options = {"max_iter": 6, "tol": 0.0, "random_state": 3}
    weighted = MODELS[name]().set_params(**options)
    repeated = MODELS[name]().set_params(**options)
    _quiet_fit(weighted, da.from_array(X, chunks=CHUNK), sample_weight=w)
    _quiet_fit(repeated, da.from_array(np.repeat(X, w, axis=0), chunks=50))
    _assert_same_fit(weighted, repeated)


def test_censored_regression_weights_equal_repeated_rows() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(160, 2))
    y = np.maximum(X @ [1.0, -0.5] + 0.3 + rng.normal(size=160), 0.0)
    w = _weights(len(X))
    options = {"max_iter": 6, "tol": 0.0}
    weighted = dem.CensoredRegression(left=0.0, **options)
    repeated = dem.CensoredRegression(left=0.0, **options)
    _quiet_fit(weighted, da.from_array(X, chunks=CHUNK), y, sample_weight=w)
    _quiet_fit(repeated, np.repeat(X, w, axis=0), np.repeat(y, w))
    _assert_same_fit(weighted, repeated)
    # the standard errors are those of the repeated rows (the weighted information)
    np.testing.assert_allclose(weighted.bse_, repeated.bse_, rtol=1e-7)
    np.testing.assert_allclose(weighted.loglik_, repeated.loglik_, rtol=RTOL)


@pytest.mark.parametrize("name", ["gmm-full", "ppca", "mfa"])
def test_zero_weights_equal_dropped_rows(name: str) -> None:
    X = _data(seed=4)
    keep = np.random.default_rng(5).random(len(X)) < 0.7
    X[np.flatnonzero(~keep)[:5]] = 1e6  # what dropped rows hold must not matter
    options = {"max_iter": 5, "tol": 0.0, "random_state": 0}
    weighted = MODELS[name]().set_params(**options)
    dropped = MODELS[name]().set_params(**options)
    _quiet_fit(weighted, da.from_array(X, chunks=CHUNK), sample_weight=keep.astype(float))
    _quiet_fit(dropped, X[keep])
    _assert_same_fit(weighted, dropped)


def test_weighted_score_bic_aic_equal_repeated_rows() -> None:
    X = _data(seed=6)
    w = _weights(len(X), seed=7)
    gm = _quiet_fit(dem.GaussianMixture(2, max_iter=3, random_state=0), X)
    repeated = np.repeat(X, w, axis=0)
    np.testing.assert_allclose(gm.score(X, sample_weight=w), gm.score(repeated), rtol=1e-12)
    np.testing.assert_allclose(gm.bic(X, sample_weight=w), gm.bic(repeated), rtol=1e-12)
    np.testing.assert_allclose(gm.aic(X, sample_weight=w), gm.aic(repeated), rtol=1e-12)
    mfa = _quiet_fit(dem.MixtureOfFactorAnalyzers(2, n_factors=1, max_iter=3, random_state=0), X)
    np.testing.assert_allclose(mfa.bic(X, sample_weight=w), mfa.bic(repeated), rtol=1e-12)
    pp = _quiet_fit(dem.PPCA(1, max_iter=3, random_state=0), X)
    np.testing.assert_allclose(pp.score(X, sample_weight=w), pp.score(repeated), rtol=1e-12)


def test_weighted_component_selection_equals_repeated_rows() -> None:
    X = _data(seed=15)
    w = _weights(len(X), seed=16)
    options = {"max_iter": 4, "tol": 0.0, "random_state": 0, "covariance_type": "diag"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        weighted = dem.select_n_components(X, [1, 2, 3], sample_weight=w, **options)
        repeated = dem.select_n_components(np.repeat(X, w, axis=0), [1, 2, 3], **options)
    for name in ("bic", "aic", "loglik"):
        np.testing.assert_allclose(weighted.table[name], repeated.table[name], rtol=RTOL)
    _assert_same_fit(weighted.best, repeated.best)


def test_online_and_squarem_take_weights() -> None:
    """SQUAREM and online EM see the same weighted statistics as repeated rows."""
    X = _data(seed=8)
    w = _weights(len(X), seed=9)
    for options in ({"accelerate": "squarem"}, {"method": "online", "batch_chunks": 1}):
        kwargs = {"max_iter": 4, "tol": 0.0, "random_state": 1, **options}
        weighted = _quiet_fit(
            dem.GaussianMixture(2, **kwargs), da.from_array(X, chunks=CHUNK), sample_weight=w
        )
        assert np.isfinite(weighted.lower_bound_)
    # squarem from the same start: same as the repeated rows
    kwargs = {"max_iter": 4, "tol": 0.0, "random_state": 1, "accelerate": "squarem"}
    weighted = _quiet_fit(dem.GaussianMixture(2, **kwargs), X, sample_weight=w)
    repeated = _quiet_fit(dem.GaussianMixture(2, **kwargs), np.repeat(X, w, axis=0))
    _assert_same_fit(weighted, repeated)


# --- initialisation -----------------------------------------------------------------------


def test_init_sample_is_the_repeated_rows_or_a_weighted_draw() -> None:
    X = _data(seed=10, n=300)
    w = _weights(len(X))
    x = da.from_array(X, chunks=64)
    np.testing.assert_array_equal(
        init_sample(x, da.from_array(w.astype(float), chunks=64), 10_000, np.random.default_rng(0)),
        np.repeat(X, w, axis=0),
    )
    # more weight than the sample holds: draws from the rows of positive weight, in
    # proportion to the weights (a chi-square-free check: expected counts within 5 sd)
    heavy = np.where(np.arange(len(X)) < 150, 1.5, 4.5) * (w > 0)
    size = 20_000
    drawn = init_sample(x, da.from_array(heavy, chunks=64), size, np.random.default_rng(1))
    assert drawn.shape == (size, X.shape[1])
    index = {row.tobytes(): i for i, row in enumerate(X)}
    rows = np.array([index[r.tobytes()] for r in drawn])
    assert heavy[rows].min() > 0
    share = heavy[150:].sum() / heavy.sum()
    observed = np.mean(rows >= 150)
    assert abs(observed - share) < 5 * np.sqrt(share * (1 - share) / size)


def test_weighted_kmeans_parallel_counts_the_weights() -> None:
    """Candidates never come from rows of weight 0, and the candidates' weights (the
    weights of the rows each attracts) sum to the total weight."""
    X = _data(seed=11, n=400)
    w = _weights(len(X)).astype(float)
    (seeding,) = kmeans_parallel(
        da.from_array(X, chunks=64),
        [3],
        [np.random.default_rng(2)],
        scatter="full",
        weights=da.from_array(w, chunks=64),
    )
    np.testing.assert_allclose(seeding.weights.sum(), w.sum(), rtol=1e-12)
    np.testing.assert_allclose(seeding.stats["resp_sum"].sum(), w.sum(), rtol=1e-12)
    zero_rows = X[w == 0]
    for candidate in seeding.candidates[1:]:  # the first is a placeholder at the shift
        assert not np.any(np.all(np.isclose(zero_rows, candidate, rtol=0, atol=1e-12), axis=1))
    # the weighted fit with k-means|| runs end to end
    gm = _quiet_fit(
        dem.GaussianMixture(3, init_params="k-means||", max_iter=3, random_state=0),
        da.from_array(X, chunks=64),
        sample_weight=w,
    )
    assert np.isfinite(gm.lower_bound_)


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (-np.ones(100), "negative value"),
        (np.r_[np.nan, np.ones(99)], "NaN or infinite"),
        (np.r_[np.ones(99), np.inf], "NaN or infinite"),
        (np.zeros(100), "zero for every sample"),
        (np.ones(99), "99 values but X has 100"),
        (np.ones((100, 2)), "1-D"),
        (2.0, "scalar"),
        ("w", "not a store"),
    ],
)
def test_bad_weights_are_refused(weights: Any, message: str) -> None:
    X = _data(n=100)
    with pytest.raises(ValueError, match=message):
        dem.GaussianMixture(2).fit(X, sample_weight=weights)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_weighted_estimator_refuses_negative_weights(name: str) -> None:
    X = _data(n=60)
    with pytest.raises(ValueError, match="negative"):
        MODELS[name]().fit(X, sample_weight=np.r_[np.ones(59), -1.0])
    with pytest.raises(ValueError, match="negative"):
        dem.CensoredRegression().fit(X, X[:, 0], sample_weight=np.r_[np.ones(59), -1.0])


def test_lazy_weights_are_checked_and_aligned() -> None:
    X = _data(n=100)
    samples = as_samples(da.from_array(X, chunks=30))
    aligned = as_sample_weight(da.ones(100, chunks=50), X, samples)
    assert aligned is not None and aligned.array.chunks == samples.array.chunks[:1]
    bad = da.from_array(np.r_[np.ones(70), -1.0, np.ones(29)], chunks=25)
    with pytest.raises(ValueError, match="first at sample 70"):
        as_sample_weight(bad, X, samples)
    unknown = da.ones(200, chunks=50)
    unknown = unknown[unknown > 0]  # chunk sizes unknown
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        as_sample_weight(unknown, X, samples)


# --- stores, checkpoints, the command line, a cluster -------------------------------------


def _store(path: Path, X: np.ndarray, w: np.ndarray) -> Path:
    group = zarr.open_group(path, mode="w")
    group.create_array("X", data=X, chunks=(CHUNK, X.shape[1]))
    group.create_array("w", data=w.astype(np.float64), chunks=(CHUNK,))
    return path


def test_zarr_variable_and_checkpoint_refuses_other_weights(tmp_path: Path) -> None:
    X = _data(seed=12)
    w = _weights(len(X))
    store = _store(tmp_path / "data.zarr", X, w)
    options = {"max_iter": 4, "tol": 0.0, "random_state": 0}
    from_store = _quiet_fit(
        dem.GaussianMixture(2, checkpoint=tmp_path / "fit.zarr", **options),
        str(store),
        variable="X",
        sample_weight="w",
    )
    in_memory = _quiet_fit(dem.GaussianMixture(2, **options), X, sample_weight=w)
    _assert_same_fit(from_store, in_memory)
    # resuming with the same weights continues; with other weights it is refused
    resumed = _quiet_fit(
        dem.GaussianMixture(2, checkpoint=tmp_path / "fit.zarr", resume=True, **options),
        str(store),
        variable="X",
        sample_weight="w",
    )
    _assert_same_fit(resumed, from_store)
    # same data, same shapes and chunks, other weights: the content digests differ
    options = {**options, "max_iter": 2}
    _quiet_fit(
        dem.GaussianMixture(2, checkpoint=tmp_path / "n.zarr", **options), X, sample_weight=w
    )
    other = np.where(w > 0, w + 1, 0)
    for weights, message in ((other, "content"), (None, "fingerprint|input|data")):
        with pytest.raises(dem.CheckpointMismatchError, match=message):
            _quiet_fit(
                dem.GaussianMixture(
                    2, checkpoint=tmp_path / "n.zarr", resume=True, **{**options, "max_iter": 4}
                ),
                X,
                sample_weight=weights,
            )


def test_cli_weights(process_client, tmp_path: Path) -> None:
    X = _data(seed=13)
    w = _weights(len(X))
    store = _store(tmp_path / "data.zarr", X, w)
    checkpoint = tmp_path / "fit.zarr"
    options = ["-k", "2", "--max-iter", "4", "--tol", "0", "--seed", "0", "--var", "X"]
    cluster = ["--scheduler", process_client.scheduler.address, "--checkpoint"]
    result = CliRunner().invoke(
        app,
        ["fit", "gmm", os.fspath(store), *options, "--weights", "w", *cluster, str(checkpoint)],
    )
    assert result.exit_code == 0, result.output
    with pytest.warns(UserWarning, match="without converging"):
        fitted = dem.from_checkpoint(checkpoint)
    reference = _quiet_fit(
        dem.GaussianMixture(2, max_iter=4, tol=0.0, random_state=0),
        np.repeat(X, w, axis=0),
    )
    np.testing.assert_allclose(
        np.sort(fitted.means_, axis=0), np.sort(reference.means_, axis=0), rtol=RTOL
    )
    missing = CliRunner().invoke(
        app,
        [
            "fit",
            "gmm",
            str(store),
            *options,
            "--weights",
            "nope",
            *cluster,
            str(tmp_path / "o.zarr"),
        ],
    )
    assert missing.exit_code != 0 and "nope" in missing.output


def test_weighted_fit_on_a_cluster(process_client) -> None:
    X = _data(seed=14)
    w = _weights(len(X))
    options = {"max_iter": 4, "tol": 0.0, "random_state": 0}
    assert default_client() is process_client  # the fit runs on the cluster's workers
    on_cluster = _quiet_fit(
        dem.GaussianMixture(2, **options), da.from_array(X, chunks=CHUNK), sample_weight=w
    )
    repeated = _quiet_fit(dem.GaussianMixture(2, **options), np.repeat(X, w, axis=0))
    _assert_same_fit(on_cluster, repeated)
