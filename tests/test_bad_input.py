"""Bad input, for every estimator: one contract, one table of estimator factories.

Each case builds the user's input (in a Zarr store where it can be stored), fits, and
expects a clear error whose type and message say what to do, or the documented
outcome (a warning and a rechunk, or a finite fit). The user's store must be
byte-for-byte unchanged afterwards: it is hashed before and after every case.

A new model slots in with one entry in ``CONTRACTS``.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
import zarr

import dem
from dem.checkpoint import Checkpoint

N_FEATURES = 3


def _fit_unsupervised(estimator: Any, X: Any, y: Any, variable: str | None) -> Any:
    return estimator.fit(X, variable=variable)


@dataclass(frozen=True)
class Contract:
    """How to build and fit one estimator for the bad-input matrix."""

    make: Callable[..., Any]  # make(**options) -> estimator (few iterations, fixed seed)
    model: str  # the model name its checkpoints carry
    min_samples: int  # the fewest samples a fit accepts
    fit: Callable[[Any, Any, Any, str | None], Any] = _fit_unsupervised
    targets: bool = False  # fit takes a per-sample y
    messages: dict[str, str] = field(default_factory=dict)  # per-case message overrides


CONTRACTS: dict[str, Contract] = {
    "gaussian_mixture": Contract(
        make=lambda **o: dem.GaussianMixture(n_components=3, max_iter=3, random_state=0, **o),
        model="gaussian_mixture",
        min_samples=3,
        messages={"fewer samples than components": "n_samples >= n_components"},
    ),
}


def good_data(n: int = 600, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(3, N_FEATURES))
    return centres[rng.integers(0, 3, n)] + rng.standard_normal((n, N_FEATURES))


def write_store(root: Path, arrays: dict[str, np.ndarray], chunks: int = 200) -> str:
    path = root / "user.zarr"
    group = zarr.open_group(str(path), mode="w")
    for name, value in arrays.items():
        value_chunks = (chunks, *value.shape[1:]) if value.ndim else ()
        group.create_array(name, data=value, chunks=value_chunks)
    return str(path)


def store_digest(root: Path) -> dict[str, str]:
    """Every file under the user's store: name -> SHA-256 of its bytes."""
    path = root / "user.zarr"
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@dataclass(frozen=True)
class Case:
    """One bad input: build(contract, tmp) -> (X, y, variable, options)."""

    build: Callable[[Contract, Path], tuple[Any, Any, str | None, dict[str, Any]]]
    error: type[BaseException] | None  # None: the documented outcome is a fit
    message: str  # regex for the error (or the warning when error is None)
    needs_targets: bool = False


def _stored(x: np.ndarray, y: np.ndarray | None = None, **options: Any):
    def build(contract: Contract, tmp: Path):
        arrays = {"X": x}
        if contract.targets:
            arrays["y"] = np.arange(len(x), dtype=float) if y is None else y
        return write_store(tmp, arrays), None, "X", options

    return build


def _with_nan() -> np.ndarray:
    x = good_data()
    x[417, 1] = np.nan
    return x


def _with_inf() -> np.ndarray:
    x = good_data()
    x[5, 0] = -np.inf
    return x


def _in_memory(x: Any):
    def build(contract: Contract, tmp: Path):
        return x, (np.zeros(len(x)) if contract.targets else None), None, {}

    return build


def _missing_path(contract: Contract, tmp: Path):
    return str(tmp / "no-such.zarr"), None, "X", {}


def _path_without_variable(contract: Contract, tmp: Path):
    return _stored(good_data())(contract, tmp)[0], None, None, {}


def _missing_variable(contract: Contract, tmp: Path):
    return _stored(good_data())(contract, tmp)[0], None, "Z", {}


def _fewer_samples(contract: Contract, tmp: Path):
    return _stored(good_data()[: contract.min_samples - 1])(contract, tmp)


def _checkpoint_of_another_model(contract: Contract, tmp: Path):
    checkpoint = tmp / "fit.zarr"
    Checkpoint.open(
        checkpoint, model="another_model", config={}, fingerprint={}, resume=False
    ).close()
    return (
        _stored(good_data())(contract, tmp)[0],
        None,
        "X",
        {
            "checkpoint": checkpoint,
            "resume": True,
        },
    )


def _checkpoint_of_other_data(contract: Contract, tmp: Path):
    checkpoint = tmp / "fit.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        estimator = contract.make(checkpoint=checkpoint)
        other = good_data(seed=1)
        contract.fit(estimator, other, np.zeros(len(other)) if contract.targets else None, None)
    return (
        _stored(good_data())(contract, tmp)[0],
        None,
        "X",
        {
            "checkpoint": checkpoint,
            "resume": True,
        },
    )


def _corrupted_chunk(contract: Contract, tmp: Path):
    path, y, variable, options = _stored(good_data())(contract, tmp)
    chunk = Path(path) / "X" / "c" / "1" / "0"  # rows 200-399
    raw = bytearray(chunk.read_bytes())
    raw[8:24] = b"x" * 16
    chunk.write_bytes(bytes(raw))
    return path, y, variable, options


def _x_and_y_lengths_differ(contract: Contract, tmp: Path):
    x = good_data()
    return write_store(tmp, {"X": x, "y": np.zeros(len(x) - 7)}), None, "X", {}


def _x_and_y_chunks_differ(contract: Contract, tmp: Path):
    x = good_data()
    path = write_store(tmp, {"X": x})
    zarr.open_group(path, mode="r+").create_array("y", data=np.zeros(len(x)), chunks=(150,))
    return path, None, "X", {}


CASES: dict[str, Case] = {
    "NaN": Case(_stored(_with_nan()), ValueError, r"NaN or infinity in 1 row.*rows 417 and 417"),
    "infinity": Case(_stored(_with_inf()), ValueError, r"NaN or infinity.*Remove or impute"),
    "1-D": Case(_stored(good_data()[:, 0]), ValueError, r"must be 2-D.*reshape\(-1, 1\)"),
    "3-D": Case(_stored(good_data().reshape(-1, 1, N_FEATURES)), ValueError, r"must be 2-D"),
    "empty": Case(_stored(np.empty((0, N_FEATURES))), ValueError, r"empty.*at least one"),
    "no features": Case(_stored(np.empty((10, 0))), ValueError, r"empty.*at least one"),
    "fewer samples than components": Case(_fewer_samples, ValueError, r"samples"),
    "string dtype": Case(
        _in_memory(good_data().astype(str)), TypeError, r"dtype <U.*Convert it to float"
    ),
    "object dtype": Case(
        _in_memory(good_data().astype(object)), TypeError, r"dtype object.*Convert it to float"
    ),
    "feature axis split into chunks": Case(
        lambda c, t: (
            da.from_array(good_data(), chunks=(200, 1)),
            np.zeros(600) if c.targets else None,
            None,
            {},
        ),
        None,
        r"split into 3 chunks along the feature axis; rechunking",
    ),
    "corrupted chunk in the store": Case(
        _corrupted_chunk, ValueError, r"'X': chunk 1 along the samples \(rows 200-399\) cannot be"
    ),
    "missing variable": Case(_missing_variable, KeyError, r"has no variable 'Z'; it has \['X"),
    "path that does not exist": Case(_missing_path, FileNotFoundError, r"no-such.zarr.*not exist"),
    "store path without a variable": Case(_path_without_variable, ValueError, r"variable='X'"),
    "checkpoint of another model": Case(
        _checkpoint_of_another_model, dem.CheckpointMismatchError, r"model 'another_model'"
    ),
    "checkpoint of other data": Case(
        _checkpoint_of_other_data, dem.CheckpointMismatchError, r"fingerprint.*new checkpoint"
    ),
    "X and y of different lengths": Case(
        _x_and_y_lengths_differ, ValueError, r"length|samples", needs_targets=True
    ),
    "X and y of different chunks": Case(
        _x_and_y_chunks_differ, ValueError, r"share their sample chunks", needs_targets=True
    ),
}

MATRIX = [
    pytest.param(model, case, id=f"{model}-{case}")
    for model, contract in CONTRACTS.items()
    for case, spec in CASES.items()
    if contract.targets or not spec.needs_targets
]


@pytest.mark.parametrize(("model", "case"), MATRIX)
def test_bad_input_gets_a_clear_error_and_the_store_is_untouched(tmp_path, model, case):
    contract, spec = CONTRACTS[model], CASES[case]
    X, y, variable, options = spec.build(contract, tmp_path)
    before = store_digest(tmp_path)
    estimator = contract.make(**options)
    message = contract.messages.get(case, spec.message)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        if spec.error is None:
            with pytest.warns(UserWarning, match=message):
                contract.fit(estimator, X, y, variable)
        else:
            with pytest.raises(spec.error, match=message):
                contract.fit(estimator, X, y, variable)
    assert store_digest(tmp_path) == before


def test_the_matrix_covers_every_case_for_every_model():
    """Each model meets every case that applies to it (targets cases only with targets)."""
    for model, contract in CONTRACTS.items():
        covered = {case for m, case in (p.values for p in MATRIX) if m == model}
        expected = {c for c, s in CASES.items() if contract.targets or not s.needs_targets}
        assert covered == expected
