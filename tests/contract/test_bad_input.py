"""Bad input, for every registered model: one matrix of cases, derived from the registry.

Each case builds the user's input (in a Zarr store where it can be stored), fits, and
expects a clear error whose type and message say what to do, or the documented
outcome (a warning and a rechunk, or a fit with finite parameters). The user's store
must be byte-for-byte unchanged afterwards: it is hashed before and after every case.

Data are made once as rows × features (``good_data``) and laid out by each contract
as its estimator takes them: rows for the mixture, PPCA, factor analysis and Tobit
regression, sequences of ``N_TIMES`` steps for the HMMs (a categorical HMM reads the
first feature as one of three symbols). A model that takes a second per-sample input
(Tobit's ``y``, an HMM's ``lengths``) meets the cases of a misaligned second input too.

Every model of ``dem.registry`` meets the matrix: its estimator comes from the registry
with the suite's fast settings (``tests/contract/models.py``), its layout from the
entry's ``feature_axis`` and its second input from the entry's inputs. A case that
means something else for a model (NaN is "missing" to PPCA) is overridden in its
``DIFFERENCES`` entry's ``outcomes``, and cases only one model can meet (censoring
limits, sequence lengths) are its ``extra``.
"""

from __future__ import annotations

import hashlib
import inspect
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
import zarr

import dem
from dem.checkpoint import Checkpoint
from dem.registry import REGISTRY
from tests.contract.models import first_cases, fitted_arrays

N_ROWS = 600
N_FEATURES = 3
N_TIMES = 10  # steps per sequence, for the HMMs
CHUNK = 200  # rows per chunk in the user's store (sequences: CHUNK // N_TIMES)


@dataclass(frozen=True)
class Outcome:
    """What a case must end in: an error (type and message regex), a warning (regex),
    or neither (a fit with finite parameters)."""

    error: type[BaseException] | None = None
    message: str | None = None


FIT = Outcome()


@dataclass(frozen=True)
class Input:
    """What one case hands the estimator."""

    X: Any
    vector: Any = None  # the second per-sample input (an array, or a variable name)
    variable: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # estimator options
    fit_options: dict[str, Any] = field(default_factory=dict)  # more arguments of fit


# --- layouts: rows × features -> what each estimator takes --------------------------------


def _rows(x: np.ndarray) -> np.ndarray:
    return x


def _sequences(x: np.ndarray) -> np.ndarray:
    """Rows → (sequences, N_TIMES, ...); fewer rows than N_TIMES make one sequence."""
    steps = N_TIMES if len(x) % N_TIMES == 0 else len(x)
    return x.reshape(len(x) // steps, steps, *x.shape[1:])


def _symbols(x: np.ndarray) -> np.ndarray:
    """The first feature as symbols 0, 1, 2 (NaN and infinity kept), in sequences."""
    if x.shape[1] == 0:  # no feature to read: sequences of no steps
        return np.empty((len(x), 0))
    first = x[:, 0]
    with np.errstate(invalid="ignore"):
        symbols = np.where(np.isfinite(first), np.digitize(first, [-1.0, 1.0]), first)
    return _sequences(symbols)


def _tobit_y(x: np.ndarray) -> np.ndarray:
    """A latent linear response, left-censored at 0 (about a third of the rows)."""
    noise = np.random.default_rng(1).standard_normal(len(x))
    if x.ndim != 2 or x.shape[1] != N_FEATURES:
        return np.maximum(noise, 0.0)
    signal = np.nan_to_num(x, posinf=0.0, neginf=0.0) @ np.array([0.4, -0.3, 0.2])
    return np.maximum(0.5 + signal + noise, 0.0)


def _counts(x: np.ndarray) -> np.ndarray:
    """Rows → word counts (LDA): non-negative whole numbers; NaN, infinity and extreme
    values stay where they were."""
    return np.floor(np.abs(x) * 2.0)


def _full_lengths(x: np.ndarray) -> np.ndarray:
    return np.full(len(x), x.shape[1] if x.ndim > 1 else 1, dtype=np.int64)


def _fit(estimator: Any, given: Input) -> Any:
    if given.vector is None:
        return estimator.fit(given.X, variable=given.variable, **given.fit_options)
    return estimator.fit(given.X, given.vector, variable=given.variable, **given.fit_options)


@dataclass(frozen=True)
class Contract:
    """How to build and fit one registered estimator for the bad-input matrix."""

    make: Callable[..., Any]  # make(**options) -> estimator (few iterations, fixed seed)
    min_rows: int  # the fewest rows (of good_data) a fit accepts
    layout: Callable[[np.ndarray], np.ndarray] = _rows  # rows × features -> the model's X
    vector: str | None = None  # name of a second per-sample input (y, lengths), if any
    vector_of: Callable[[np.ndarray], np.ndarray] = _full_lengths  # laid-out X -> a good one
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # per-case overrides
    extra: dict[str, Case] = field(default_factory=dict)  # cases only this model meets

    @property
    def chunk(self) -> int:
        """Store chunk along the first axis: CHUNK rows, or as many sequences."""
        return CHUNK if self.layout in (_rows, _counts) else CHUNK // N_TIMES


# --- building the user's input ---------------------------------------------------------


def good_data(n: int = N_ROWS, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(3, N_FEATURES))
    return centres[rng.integers(0, 3, n)] + rng.standard_normal((n, N_FEATURES))


def write_store(root: Path, arrays: dict[str, np.ndarray], chunks: int) -> str:
    path = root / "user.zarr"
    group = zarr.open_group(str(path), mode="w")
    for name, value in arrays.items():
        value_chunks = (chunks, *value.shape[1:]) if value.ndim else ()
        # every chunk written, even one equal to the fill value: a missing chunk is a case
        group.create_array(
            name, data=value, chunks=value_chunks, config={"write_empty_chunks": True}
        )
    return str(path)


def store_digest(root: Path) -> dict[str, str]:
    """Every file of the user's store (and its zip copy, if any): name -> SHA-256."""
    path = root / "user.zarr"
    files = [p for p in sorted(path.rglob("*")) if p.is_file()] + sorted(root.glob("user.zip"))
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


Build = Callable[[Contract, Path], Input]


@dataclass(frozen=True)
class Case:
    """One bad input: build(contract, tmp) -> Input, and what it must end in."""

    build: Build
    expected: Outcome
    needs_vector: bool = False  # only for models with a second per-sample input


def _stored(rows: np.ndarray, **arrays: Any) -> Build:
    """The laid-out ``rows`` as variable X (and the model's vector) in the user's store.

    ``arrays`` adds or replaces variables: an array, or a function of the laid-out X.
    """

    def build(contract: Contract, tmp: Path) -> Input:
        x = contract.layout(rows)
        stored = {"X": x}
        if contract.vector is not None:
            stored[contract.vector] = contract.vector_of(x)
        for name, value in arrays.items():
            stored[name] = value(x) if callable(value) else value
        return Input(write_store(tmp, stored, contract.chunk), contract.vector, "X")

    return build


def _with(rows: np.ndarray, value: float, at: Any) -> np.ndarray:
    """A copy of ``rows`` with ``value`` at ``at``."""
    rows = rows.copy()
    rows[at] = value
    return rows


def _in_memory(transform: Callable[[np.ndarray], Any]) -> Build:
    def build(contract: Contract, tmp: Path) -> Input:
        x = contract.layout(good_data())
        vector = contract.vector_of(x) if contract.vector is not None else None
        return Input(transform(x), vector)

    return build


def _missing_path(contract: Contract, tmp: Path) -> Input:
    return Input(str(tmp / "no-such.zarr"), contract.vector, "X")


def _path_without_variable(contract: Contract, tmp: Path) -> Input:
    return replace(_stored(good_data())(contract, tmp), variable=None)


def _missing_variable(contract: Contract, tmp: Path) -> Input:
    return replace(_stored(good_data())(contract, tmp), variable="Z")


def _fewer_samples(contract: Contract, tmp: Path) -> Input:
    return _stored(good_data()[: contract.min_rows - 1])(contract, tmp)


def _constant_feature(rows: np.ndarray) -> np.ndarray:
    return _with(rows, 5.0, (slice(None), 0))


def _duplicated_feature(rows: np.ndarray) -> np.ndarray:
    rows = rows.copy()
    rows[:, 2] = rows[:, 0]
    return rows


def _checkpoint_of_another_model(contract: Contract, tmp: Path) -> Input:
    checkpoint = tmp / "fit.zarr"
    Checkpoint.open(
        checkpoint, model="another_model", config={}, fingerprint={}, resume=False
    ).close()
    given = _stored(good_data())(contract, tmp)
    return replace(given, options={"checkpoint": checkpoint, "resume": True})


def _checkpoint_of_other_data(contract: Contract, tmp: Path) -> Input:
    checkpoint = tmp / "fit.zarr"
    other = contract.layout(good_data(seed=1))
    vector = contract.vector_of(other) if contract.vector is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        _fit(contract.make(checkpoint=checkpoint), Input(other, vector))
    given = _stored(good_data())(contract, tmp)
    return replace(given, options={"checkpoint": checkpoint, "resume": True})


def _corrupted_chunk(contract: Contract, tmp: Path) -> Input:
    given = _stored(good_data())(contract, tmp)
    ndim = zarr.open_array(str(Path(given.X, "X")), mode="r").ndim
    chunk = Path(given.X, "X", "c", "1", *["0"] * (ndim - 1))  # the second chunk
    raw = bytearray(chunk.read_bytes())
    raw[8:24] = b"x" * 16
    chunk.write_bytes(bytes(raw))
    return given


def _restored(path: str, name: str, values: np.ndarray, chunks: int) -> None:
    """Replace variable ``name`` of the store at ``path`` (while building a case)."""
    group = zarr.open_group(path, mode="r+")
    del group[name]
    group.create_array(name, data=values, chunks=(chunks,))


def _vector_shorter(contract: Contract, tmp: Path) -> Input:
    assert contract.vector is not None
    shorter = {contract.vector: lambda x: contract.vector_of(x)[:-7]}
    return _stored(good_data(), **shorter)(contract, tmp)


def _vector_chunked_otherwise(contract: Contract, tmp: Path) -> Input:
    assert contract.vector is not None
    given = _stored(good_data())(contract, tmp)
    values = np.asarray(zarr.open_array(str(Path(given.X, contract.vector)), mode="r")[...])
    _restored(given.X, contract.vector, values, contract.chunk * 3 // 4)
    return given


def _unwritten_chunk(variable: str | None, fill_value: float = 0.0) -> Build:
    """The store with the third chunk of ``variable`` (X, or the model's vector) never
    written, as when a writer is killed halfway."""

    def build(contract: Contract, tmp: Path) -> Input:
        given = _stored(good_data())(contract, tmp)
        name = variable or contract.vector
        assert name is not None
        if fill_value != 0.0:  # the same values under another fill value
            values = np.asarray(zarr.open_array(str(Path(given.X, name)), mode="r")[...])
            group = zarr.open_group(given.X, mode="r+")
            del group[name]
            group.create_array(
                name,
                data=values,
                chunks=(contract.chunk, *values.shape[1:]),
                fill_value=fill_value,
                config={"write_empty_chunks": True},
            )
        chunk = Path(given.X, name, "c", "2")
        if chunk.is_dir():
            shutil.rmtree(chunk)
        else:
            chunk.unlink()
        return given

    return build


def _marked(complete: bool, build_store: Build | None = None) -> Build:
    """The store as ``dem synth`` marks it: complete=false first, true when done."""

    def build(contract: Contract, tmp: Path) -> Input:
        given = (build_store or _stored(good_data()))(contract, tmp)
        group = zarr.open_group(given.X, mode="r+")
        group.attrs["dem_output"] = {"writer": "dem synth", "complete": complete}
        return given

    return build


def _stale_consolidated(contract: Contract, tmp: Path) -> Input:
    """Consolidated metadata written when X had half its rows, then X rewritten whole."""
    given = _stored(good_data())(contract, tmp)
    x = np.asarray(zarr.open_array(str(Path(given.X, "X")), mode="r")[...])
    group = zarr.open_group(given.X, mode="r+")
    del group["X"]
    group.create_array("X", data=x[: len(x) // 2], chunks=(contract.chunk, *x.shape[1:]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zarr: consolidated is not in the spec
        zarr.consolidate_metadata(given.X)
    group = zarr.open_group(given.X, mode="r+", use_consolidated=False)
    del group["X"]
    group.create_array("X", data=x, chunks=(contract.chunk, *x.shape[1:]))
    return given


def _zipped(contract: Contract, tmp: Path) -> Input:
    given = _stored(good_data())(contract, tmp)
    archive = shutil.make_archive(str(tmp / "user"), "zip", given.X)
    return replace(given, X=archive)


def _masked(chunks: int | None) -> Build:
    """X with -999 at the NaN case's entry, masked (a numpy, or chunked dask, masked array)."""

    def build(contract: Contract, tmp: Path) -> Input:
        x = contract.layout(good_data())
        hidden = np.isnan(contract.layout(_with(good_data(), np.nan, (417, 0))))
        masked = np.ma.masked_array(np.where(hidden, -999.0, x), mask=hidden)
        vector = contract.vector_of(x) if contract.vector is not None else None
        if chunks is None:
            return Input(masked, vector)
        return Input(da.ma.masked_array(da.from_array(masked, chunks=contract.chunk)), vector)

    return build


def _unknown_chunk_sizes(x: np.ndarray) -> da.Array:
    every = da.from_array(np.ones(len(x), dtype=bool), chunks=CHUNK)
    return da.from_array(x, chunks=CHUNK)[every]


UNWRITTEN = r"in '.*user.zarr': 1 of 3 chunks were never written; chunk\(s\) 2 along the sam"
NAN_ERROR = r"NaN or infinity (in|inside) \d+ (row|sequence)"

CASES: dict[str, Case] = {
    "NaN": Case(
        _stored(_with(good_data(), np.nan, (417, 0))),
        Outcome(ValueError, r"NaN or infinity in 1 row.*rows 417 and 417.*Remove or impute"),
    ),
    "infinity": Case(
        _stored(_with(good_data(), -np.inf, (5, 0))),
        Outcome(ValueError, r"NaN or infinity in 1 row.*rows 5 and 5.*Remove or impute"),
    ),
    "one dimension too few": Case(
        _in_memory(lambda x: x[..., 0]), Outcome(ValueError, r"must be 2-D.*reshape\(-1, 1\)")
    ),
    "one dimension too many": Case(
        _in_memory(lambda x: x[..., None]), Outcome(ValueError, r"must be 2-D; got 3-D")
    ),
    "empty": Case(_stored(np.empty((0, N_FEATURES))), Outcome(ValueError, r"empty.*at least one")),
    "no features": Case(
        _stored(np.empty((N_TIMES, 0))), Outcome(ValueError, r"empty.*at least one")
    ),
    "fewer samples than components": Case(_fewer_samples, Outcome(ValueError, r"samples")),
    "constant feature": Case(_stored(_constant_feature(good_data())), FIT),
    "duplicated feature": Case(_stored(_duplicated_feature(good_data())), FIT),
    "string dtype": Case(
        _in_memory(lambda x: x.astype(str)), Outcome(TypeError, r"dtype <U.*Convert it to float")
    ),
    "object dtype": Case(  # numbers stored as objects: converted, as scikit-learn does
        _in_memory(lambda x: x.astype(object)), FIT
    ),
    "feature axis split into chunks": Case(
        _in_memory(lambda x: da.from_array(x, chunks=(CHUNK, *[1] * (x.ndim - 1)))),
        Outcome(None, r"split into 3 chunks along the feature axis; rechunking"),
    ),
    "corrupted chunk in the store": Case(
        _corrupted_chunk,
        Outcome(ValueError, r"'X': chunk 1 along the samples \(rows 200-399\) cannot be read"),
    ),
    "missing variable": Case(
        _missing_variable, Outcome(KeyError, r"has no variable 'Z'; it has \['X")
    ),
    "path that does not exist": Case(
        _missing_path, Outcome(FileNotFoundError, r"no-such.zarr.*not exist")
    ),
    "store path without a variable": Case(
        _path_without_variable, Outcome(ValueError, r"variable='X'")
    ),
    "checkpoint of another model": Case(
        _checkpoint_of_another_model,
        Outcome(dem.CheckpointMismatchError, r"model 'another_model'"),
    ),
    "checkpoint of other data": Case(
        _checkpoint_of_other_data,
        Outcome(dem.CheckpointMismatchError, r"fingerprint.*new checkpoint"),
    ),
    "extreme value": Case(  # below the first pass's 1e150, far beyond the rest
        _stored(_with(good_data(), 1e149, (417, 1))),
        Outcome(
            ValueError,
            r"X contains extreme values: 1 (row|sequence)\(s\) hold a value more than 1e\+08 "
            r"times.*at (row|sequence)\(s\) (417|41)\. .*Remove or correct",
        ),
    ),
    "unwritten chunk": Case(
        _unwritten_chunk("X"), Outcome(ValueError, r"'X' " + UNWRITTEN + r".*rerun it")
    ),
    "unwritten chunk of the second input": Case(
        _unwritten_chunk(None),
        Outcome(ValueError, r"'(y|lengths)' " + UNWRITTEN),
        needs_vector=True,
    ),
    "unwritten chunk, NaN fill value": Case(
        _unwritten_chunk("X", np.nan), Outcome(ValueError, NAN_ERROR)
    ),
    "store left incomplete by dem synth": Case(
        _marked(False), Outcome(ValueError, r"is incomplete.*Rerun the `dem synth` command")
    ),
    "store marked complete by dem synth": Case(_marked(True), FIT),
    # dem wrote it to the end: a chunk it lacks is one Zarr skipped as all fill value
    "unwritten chunk in a store marked complete": Case(_marked(True, _unwritten_chunk("X")), FIT),
    "stale consolidated metadata": Case(
        _stale_consolidated,
        Outcome(None, r"consolidated metadata.*stale for 'X'.*zarr.consolidate_metadata"),
    ),
    "zip store": Case(_zipped, FIT),
    "masked values (numpy)": Case(_masked(None), Outcome(ValueError, NAN_ERROR)),
    "masked values (dask)": Case(_masked(CHUNK), Outcome(ValueError, NAN_ERROR)),
    "dask array of unknown chunk sizes": Case(
        _in_memory(_unknown_chunk_sizes),
        Outcome(ValueError, r"chunk sizes are unknown.*compute_chunk_sizes\(\)"),
    ),
    "second input of a different length": Case(
        _vector_shorter, Outcome(ValueError, r"has 593 samples but X has 600"), needs_vector=True
    ),
    "second input chunked otherwise": Case(
        _vector_chunked_otherwise,
        Outcome(ValueError, r"same sample chunks.*Rechunk"),
        needs_vector=True,
    ),
}


# --- cases of one model ------------------------------------------------------------------


def _tobit_limits(**limits: Any) -> Build:
    """Good data, with per-row limits stored as variables named after their fit argument
    (an array: stored; a function of the number of rows: its result is stored)."""

    def build(contract: Contract, tmp: Path) -> Input:
        arrays = {
            name: value(N_ROWS) if callable(value) else value for name, value in limits.items()
        }
        given = _stored(good_data(), **arrays)(contract, tmp)
        return replace(given, fit_options={name: name for name in limits})

    return build


def _crossing_limits(n: int) -> np.ndarray:
    lower = np.full(n, -1.0)
    lower[[40, 41]] = 5.0
    return lower


def _tobit_limits_chunked_otherwise(contract: Contract, tmp: Path) -> Input:
    given = _tobit_limits(left=np.full(N_ROWS, -1.0))(contract, tmp)
    _restored(given.X, "left", np.full(N_ROWS, -1.0), 150)
    return given


TOBIT_EXTRA = {
    "limits in the wrong order": Case(
        lambda c, t: replace(_stored(good_data())(c, t), options={"right": -1.0}),
        Outcome(ValueError, r"left must be below right; got left=0.0, right=-1.0"),
    ),
    "per-row limits of a different length": Case(
        _tobit_limits(left=np.full(N_ROWS - 7, -1.0)),
        Outcome(ValueError, r"left has 593 samples but X has 600; they must describe the same"),
    ),
    "per-row limits chunked otherwise": Case(
        _tobit_limits_chunked_otherwise,
        Outcome(ValueError, r"left and X must have the same sample chunks.*Rechunk"),
    ),
    "per-row limits crossing": Case(
        _tobit_limits(left=_crossing_limits, right=np.full(N_ROWS, 2.0)),
        Outcome(ValueError, r"left >= right in 2 row\(s\), the first at row 40"),
    ),
    "limit naming a missing variable": Case(
        lambda c, t: replace(_stored(good_data())(c, t), fit_options={"left": "lo"}),
        Outcome(KeyError, r"has no variable 'lo'"),
    ),
    "every row censored": Case(
        _stored(good_data(), y=np.zeros(N_ROWS)),
        Outcome(ValueError, r"Every row is censored \(600 left, 0 right\).*Check the limits"),
    ),
    "NaN in y without interval limits": Case(
        _stored(good_data(), y=lambda x: _with(_tobit_y(x), np.nan, 17)),
        Outcome(ValueError, r"y is NaN in 1 row\(s\), the first at row 17. Remove those rows"),
    ),
}


HMM_EXTRA = {
    "lengths out of range": Case(
        _stored(good_data(), lengths=lambda x: _with(_full_lengths(x), 0, 33)),
        Outcome(
            ValueError,
            r"lengths must be whole numbers between 1 and n_times=10; got \[0.0\] \(for 1 "
            r"sequence\(s\), the first at position 13 of this chunk\).*chunk of samples 20-39",
        ),
    ),
    "NaN in the padding": Case(
        # sequence 7 has 4 steps; NaN after them is padding, never read
        _stored(
            _with(good_data(), np.nan, (slice(74, 80), slice(None))),
            lengths=lambda x: _with(_full_lengths(x), 4, 7),
        ),
        FIT,
    ),
}

SYMBOL_EXTRA = {
    "symbols that are not integers": Case(
        _in_memory(lambda x: _with(x, 1.5, (3, 4))),
        Outcome(ValueError, r"symbols must be non-negative integers; got \[1.5\].*Encode"),
    ),
}


# --- the contracts -----------------------------------------------------------------------


def _pandas(dtype: str, na_at: int | None = None) -> Build:
    """X (rows) as a pandas DataFrame of ``dtype`` (×10, rounded), NA at row ``na_at``."""
    import pandas as pd

    def build(contract: Contract, tmp: Path) -> Input:
        x = good_data()
        frame = pd.DataFrame(np.round(x * 10)).astype(dtype)
        if na_at is not None:
            frame.iloc[na_at, 1] = pd.NA
        vector = contract.vector_of(x) if contract.vector is not None else None
        return Input(frame, vector)

    return build


def _sparse(contract: Contract, tmp: Path) -> Input:
    import scipy.sparse

    x = good_data()
    vector = contract.vector_of(x) if contract.vector is not None else None
    return Input(scipy.sparse.csr_matrix(x), vector)


ROWS_EXTRA = {  # inputs that only come as rows × features
    "nullable integers with NA": Case(
        _pandas("Int64", na_at=33),
        Outcome(ValueError, r"NaN or infinity in 1 row.*rows 33 and 33.*Remove or impute"),
    ),
    "numeric DataFrame": Case(_pandas("float32"), FIT),
    "nullable floats without NA": Case(_pandas("Float64"), FIT),
    "sparse matrix": Case(_sparse, Outcome(TypeError, r"(?i)sparse.*dense.*toarray")),
}

LINEAR_GAUSSIAN_OUTCOMES = {
    "NaN": FIT,  # NaN is a missing value: the likelihood of the observed entries is fitted
    "unwritten chunk, NaN fill value": FIT,  # unwritten chunks read as missing values
    "masked values (numpy)": FIT,
    "extreme value": FIT,  # no covariance of all features to swamp
    "masked values (dask)": FIT,
    "nullable integers with NA": FIT,
    "infinity": Outcome(ValueError, r"infinity in 1 row.*rows 5 and 5.*Remove or impute"),
    "fewer samples than components": Outcome(ValueError, r"n_samples > n_components.*more data"),
}


def _hmm_outcomes(ndim: int) -> dict[str, Outcome]:
    located = r".*fix those values or shorten the lengths. \(In the chunk of samples {}.\)"
    return {
        "NaN": Outcome(
            ValueError,
            r"NaN or infinity inside 1 sequence.*sequence 1 of this chunk, at time step 7"
            + located.format("40-59"),
        ),
        "one dimension too few": Outcome(  # one long sequence, given lengths
            ValueError,
            rf"one sequence \({ndim - 1}-D, time first\), which has no lengths.*Arrange the "
            "sequences",
        ),
        "one dimension too many": Outcome(
            ValueError, rf"must be {ndim}-D; got {ndim + 1}-D.*Arrange the sequences"
        ),
        "feature axis split into chunks": Outcome(
            None, r"split into 10 chunks along the time axis; rechunking"
        ),
        "corrupted chunk in the store": Outcome(
            ValueError, r"'X': chunk 1 along the samples \(rows 20-39\) cannot be read"
        ),
        "second input of a different length": Outcome(
            ValueError, r"lengths has 53 entries but X has 60 sequences; pass one length"
        ),
        "second input chunked otherwise": FIT,  # lengths are rechunked as X is
    }


@dataclass(frozen=True)
class Differences:
    """What one registered model does otherwise than the common matrix expects."""

    min_rows: int = 3  # the fewest rows (of good_data) a fit accepts
    layout: Callable[[np.ndarray], np.ndarray] | None = None  # None: by the feature axis
    vector_of: Callable[[np.ndarray], np.ndarray] = _full_lengths  # X -> a good second input
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # per-case overrides
    extra: dict[str, Case] = field(default_factory=dict)  # cases only this model meets


#: Keyed by registry name; a registered model without an entry meets the common matrix.
DIFFERENCES: dict[str, Differences] = {
    "gmm": Differences(
        extra=ROWS_EXTRA,
        outcomes={
            "fewer samples than components": Outcome(
                ValueError, r"n_samples >= n_components.*more data"
            )
        },
    ),
    "ppca": Differences(outcomes=LINEAR_GAUSSIAN_OUTCOMES, extra=ROWS_EXTRA),
    "fa": Differences(outcomes=LINEAR_GAUSSIAN_OUTCOMES, extra=ROWS_EXTRA),
    "mfa": Differences(
        outcomes={
            **LINEAR_GAUSSIAN_OUTCOMES,
            "fewer samples than components": Outcome(
                ValueError, r"n_samples >= n_components.*more data"
            ),
        },
        extra=ROWS_EXTRA,
    ),
    "tobit": Differences(
        min_rows=5,
        vector_of=_tobit_y,
        outcomes={
            "fewer samples than components": Outcome(
                ValueError, r"more samples than coefficients.*n_samples=4 and 4 coef.*more data"
            ),
            "constant feature": Outcome(
                ValueError, r"the intercept, column 0 are linearly dependent.*duplicates the int"
            ),
            "extreme value": FIT,  # one huge regressor value: a tiny coefficient
            "duplicated feature": Outcome(
                ValueError, r"collinear: column 0, column 2 are linearly dependent.*Drop one"
            ),
        },
        extra={**TOBIT_EXTRA, **ROWS_EXTRA},
    ),
    "hmm": Differences(
        outcomes={
            **_hmm_outcomes(3),
            "infinity": Outcome(ValueError, r"infinity in 1 row.*rows 0 and 0.*Remove or impute"),
            "fewer samples than components": Outcome(
                ValueError, r"holds 2 finite observations, fewer than n_components=3.*fewer st"
            ),
        },
        extra=HMM_EXTRA,
    ),
    "categorical-hmm": Differences(
        outcomes={
            **_hmm_outcomes(2),
            "infinity": Outcome(
                ValueError,
                r"NaN or infinity inside 1 sequence.*sequence 0 of this chunk, at time step 5.*"
                r"\(In the chunk of samples 0-19",
            ),
            "fewer samples than components": FIT,  # emissions need no minimum of symbols
            "extreme value": FIT,  # read as symbol 2
        },
        extra={**HMM_EXTRA, **SYMBOL_EXTRA},
    ),
}
DIFFERENCES["gmmhmm"] = Differences(
    outcomes={
        **_hmm_outcomes(3),
        "infinity": Outcome(ValueError, r"infinity in 1 row.*rows 0 and 0.*Remove or impute"),
        "fewer samples than components": Outcome(
            ValueError, r"holds 2 finite observations, fewer than n_components × n_mix = 4"
        ),
        # hmmlearn's default priors add nothing to a variance: a constant feature's is 0
        "constant feature": Outcome(
            ValueError, r"not positive definite.*a feature is constant.*covars_weight > 0"
        ),
    },
    extra=HMM_EXTRA,
)


def _sparse_counts(nan_at: int | None = None) -> Build:
    """The word counts as an in-memory scipy.sparse CSR matrix (NaN at row ``nan_at``)."""

    def build(contract: Contract, tmp: Path) -> Input:
        import scipy.sparse

        x = _counts(good_data())
        if nan_at is not None:
            x[nan_at, 1] = np.nan
        return Input(scipy.sparse.csr_matrix(x))

    return build


LDA_EXTRA = {
    "sparse matrix": Case(_sparse_counts(), FIT),  # a corpus: sparse chunks, never densified
    "sparse matrix with NaN": Case(
        _sparse_counts(nan_at=417),
        Outcome(ValueError, r"NaN or infinity in 1 row.*rows 417 and 417.*Remove or impute"),
    ),
    "negative counts": Case(
        lambda c, t: Input(write_store(t, {"X": good_data()}, CHUNK), None, "X"),
        Outcome(
            ValueError, r"Negative values.*non-negative word counts.*chunk of samples \d+-\d+\."
        ),
    ),
}
DIFFERENCES["lda"] = Differences(
    min_rows=1,
    layout=_counts,
    outcomes={
        "fewer samples than components": Outcome(ValueError, r"empty.*at least one sample"),
        "extreme value": FIT,  # a huge count: a topic that explains it, no sum of squares
    },
    extra=LDA_EXTRA,
)

#: The data layout of each registry ``feature_axis``: rows, sequences, symbol sequences.
LAYOUTS: dict[int | None, Callable[[np.ndarray], np.ndarray]] = {
    1: _rows,
    2: _sequences,
    None: _symbols,
}


def contract_of(name: str) -> Contract:
    """The bad-input contract of a registered model: its estimator with the suite's fast
    settings but its own ``tol`` (at most 3 iterations); its layout and second input
    from its registry entry."""
    entry, differences = REGISTRY[name], DIFFERENCES.get(name, Differences())
    case = next(c for c in first_cases() if c.name == name)
    own_tol = inspect.signature(entry.estimator_class()).parameters["tol"].default
    second = [i.argument for i in entry.inputs[1:] if i.kind == "variable"]
    return Contract(
        make=lambda **options: case.estimator(max_iter=3, tol=own_tol, **options),
        min_rows=differences.min_rows,
        layout=differences.layout or LAYOUTS[entry.feature_axis],
        vector=second[0] if second else None,
        vector_of=differences.vector_of,
        outcomes=differences.outcomes,
        extra=differences.extra,
    )


CONTRACTS: dict[str, Contract] = {case.name: contract_of(case.name) for case in first_cases()}


def cases_of(contract: Contract) -> dict[str, Case]:
    common = {
        name: case
        for name, case in CASES.items()
        if contract.vector is not None or not case.needs_vector
    }
    return {**common, **contract.extra}


MATRIX = [
    pytest.param(model, case, id=f"{model}-{case}")
    for model, contract in CONTRACTS.items()
    for case in cases_of(contract)
]


@pytest.mark.parametrize(("model", "case"), MATRIX)
def test_bad_input_gets_a_clear_error_and_the_store_is_untouched(tmp_path, model, case):
    contract = CONTRACTS[model]
    spec = cases_of(contract)[case]
    given = spec.build(contract, tmp_path)
    before = store_digest(tmp_path)
    estimator = contract.make(**given.options)
    expected = contract.outcomes.get(case, spec.expected)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        if expected.error is not None:
            with pytest.raises(expected.error, match=expected.message):
                _fit(estimator, given)
        elif expected.message is not None:
            with pytest.warns(UserWarning, match=expected.message):
                _fit(estimator, given)
        else:
            _fit(estimator, given)
    if expected.error is None:
        for name, value in fitted_arrays(estimator).items():
            assert np.all(np.isfinite(value)), name
    assert store_digest(tmp_path) == before


def test_the_matrix_covers_every_case_for_every_model():
    """Each model meets every case that applies to it (second-input cases only with one),
    and overrides only cases it meets."""
    assert set(CONTRACTS) == set(REGISTRY) and set(DIFFERENCES) <= set(REGISTRY)
    for model, contract in CONTRACTS.items():
        covered = {case for m, case in (p.values for p in MATRIX) if m == model}
        expected = {c for c, s in CASES.items() if contract.vector or not s.needs_vector}
        assert covered == expected | set(contract.extra)
        assert set(contract.outcomes) <= covered
