"""The input boundary (dem.data) against independent references.

Masked entries and pandas' NA must fit exactly as NaN does; a zip store and a store with
stale consolidated metadata exactly as the data they hold; unwritten chunks are found from
one listing and agree with the files on disk; extreme values are named only when a fit
has failed, never for heavy tails or large offsets.
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import zarr
from zarr.storage import LocalStore

import dem
from dem.data import EXTREME_RATIO, as_samples, raise_if_extreme, unwritten_chunks


def _data(n: int = 600, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(scale=4.0, size=(3, 3))[rng.integers(0, 3, n)] + rng.standard_normal((n, 3))


def _ppca(x: object) -> dict[str, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        model = dem.PPCA(1, max_iter=5, random_state=0).fit(x)
    return {name: model.__dict__[name] for name in ("components_", "noise_variance_", "mean_")}


def _mixture(x: object, variable: str | None = None) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        model = dem.GaussianMixture(3, max_iter=5, random_state=0).fit(x, variable=variable)
    return np.concatenate([model.means_.ravel(), model.covariances_.ravel()])


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_masked_entries_fit_exactly_as_nan_entries():
    """-999 masked in numpy or dask (dask.array.ma) is a missing value, not a number."""
    x = _data()
    hidden = np.zeros_like(x, dtype=bool)
    hidden[[7, 9, 300], [1, 1, 2]] = True
    with_nan = np.where(hidden, np.nan, x)
    masked = np.ma.masked_array(np.where(hidden, -999.0, x), mask=hidden)
    reference = _ppca(da.from_array(with_nan, chunks=200))
    _assert_same(_ppca(da.ma.masked_array(da.from_array(masked, chunks=200))), reference)
    _assert_same(_ppca(masked), _ppca(with_nan))
    assert abs(_ppca(masked)["mean_"][1] - np.nanmean(with_nan[:, 1])) < 0.5  # not -999


def test_pandas_na_fits_exactly_as_nan():
    x = np.round(_data() * 10)
    frame = pd.DataFrame(x).astype("Int64")
    frame.iloc[33, 1] = pd.NA
    with_nan = x.copy()
    with_nan[33, 1] = np.nan
    _assert_same(_ppca(frame), _ppca(with_nan))
    assert as_samples(pd.DataFrame(x.astype(np.float32))).array.dtype == np.float32


def _half_written(path: Path, n_chunks: int = 30, written: int = 15, rows: int = 20) -> str:
    """An X of ``n_chunks`` chunks of which only the first ``written`` were stored,
    as when a writer is killed halfway."""
    group = zarr.open_group(str(path), mode="w")
    array = group.create_array("X", shape=(n_chunks * rows, 3), chunks=(rows, 3), dtype="f8")
    array[: written * rows] = _data(written * rows)
    return str(path)


def test_a_store_written_halfway_is_refused_with_its_chunks(tmp_path):
    store = _half_written(tmp_path / "data.zarr")
    message = (
        r"'X' in '.*data.zarr': 15 of 30 chunks were never written; chunk\(s\) 15, 16, 17, "
        r"18, 19 and 10 more along the samples, the first holding samples 300-319. They would "
        r"read as the fill value 0.0"
    )
    for model in (dem.GaussianMixture(2), dem.PPCA(1), dem.GaussianHMM(2)):
        with pytest.raises(ValueError, match=message):
            model.fit(store, variable="X")


def test_unwritten_shards_are_found(tmp_path):
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    array = group.create_array(
        "X", data=_data(), chunks=(20, 3), shards=(100, 3), config={"write_empty_chunks": True}
    )
    shutil.rmtree(tmp_path / "s.zarr" / "X" / "c" / "4")
    assert unwritten_chunks(array) == [(4, 0)]
    with pytest.raises(ValueError, match=r"1 of 6 chunks were never written; chunk\(s\) 4 "):
        dem.GaussianMixture(2).fit(str(tmp_path / "s.zarr"), variable="X")


def test_unwritten_chunks_come_from_one_listing_and_match_the_files(tmp_path, monkeypatch):
    """5,000 chunks, a random tenth removed: the indices are those of the missing files,
    found with one listing of the store."""
    group = zarr.open_group(str(tmp_path / "big.zarr"), mode="w")
    array = group.create_array("X", shape=(5000, 2), chunks=(1, 2), dtype="f4")
    array[...] = 1.0
    removed = sorted(np.random.default_rng(0).choice(5000, size=500, replace=False).tolist())
    for index in removed:
        (tmp_path / "big.zarr" / "X" / "c" / str(index) / "0").unlink()
    listings = []
    original = LocalStore.list_prefix

    def counted(self, prefix):
        listings.append(prefix)
        return original(self, prefix)

    monkeypatch.setattr(LocalStore, "list_prefix", counted)
    start = time.perf_counter()
    found = unwritten_chunks(zarr.open_array(str(tmp_path / "big.zarr" / "X"), mode="r"))
    elapsed = time.perf_counter() - start
    assert found == [(index, 0) for index in removed]
    assert len(listings) == 1
    print(f"unwritten_chunks over 5,000 chunks: {elapsed:.3f} s")
    assert elapsed < 5.0


def test_a_zip_store_fits_as_its_directory(tmp_path):
    group = zarr.open_group(str(tmp_path / "d.zarr"), mode="w")
    group.create_array("X", data=_data(), chunks=(200, 3))
    archive = shutil.make_archive(str(tmp_path / "d"), "zip", tmp_path / "d.zarr")
    before = Path(archive).read_bytes()
    np.testing.assert_array_equal(
        _mixture(archive, variable="X"), _mixture(str(tmp_path / "d.zarr"), variable="X")
    )
    assert Path(archive).read_bytes() == before


def test_stale_consolidated_metadata_read_the_array_as_it_is(tmp_path):
    path = str(tmp_path / "c.zarr")
    x = _data()
    group = zarr.open_group(path, mode="w")
    group.create_array("X", data=x[:300], chunks=(100, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zarr: consolidated is not in the spec
        zarr.consolidate_metadata(path)
    group = zarr.open_group(path, mode="r+", use_consolidated=False)
    del group["X"]
    group.create_array("X", data=x, chunks=(200, 3))
    with pytest.warns(UserWarning, match=r"stale for 'X'.*shape \(300, 3\).*shape \(600, 3\)"):
        fitted = _mixture(path, variable="X")
    np.testing.assert_array_equal(fitted, _mixture(da.from_array(x, chunks=200)))


def test_extreme_values_are_named_only_beyond_the_rule():
    """Heavy tails (Cauchy, 100,000 rows) and a 1e12 offset are not extreme; a value
    1e9 times the rest is, by row; the failure is chained."""
    rng = np.random.default_rng(0)
    failure = ValueError("collapsed.")
    heavy = da.from_array(rng.standard_cauchy((100_000, 2)), chunks=10_000)
    offset = da.from_array(1e12 + rng.standard_normal((1000, 2)), chunks=100)
    raise_if_extreme({"X": heavy, "y": offset[:, 0]}, failure)  # returns: nothing extreme
    outlier = rng.standard_normal((1000, 2))
    outlier[[412, 977], 1] = [2e9, -1e149]
    assert EXTREME_RATIO * np.median(np.abs(outlier[:, 1])) < 1e9
    with pytest.raises(
        ValueError, match=r"X contains extreme values: 2 row\(s\).*row\(s\) 412, 977\."
    ):
        raise_if_extreme({"X": da.from_array(outlier, chunks=300)}, failure)


def test_an_extreme_value_is_named_instead_of_a_collapsed_component():
    x = _data()
    x[123, 1] = 1e149
    with pytest.raises(ValueError, match=r"extreme values: 1 row\(s\).*at row\(s\) 123\. ") as info:
        _mixture(x)
    assert "not positive definite" in str(info.value.__cause__)


def test_a_variable_added_after_consolidation_is_found(tmp_path):
    path = str(tmp_path / "c.zarr")
    group = zarr.open_group(path, mode="w")
    group.create_array("X", data=_data(), chunks=(200, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zarr: consolidated is not in the spec
        zarr.consolidate_metadata(path)
    zarr.open_group(path, mode="r+", use_consolidated=False).create_array(
        "Z", data=np.arange(600.0), chunks=(200,)
    )
    with pytest.warns(UserWarning, match=r"stale for 'Z' \(they say nothing; .*shape \(600,\)"):
        found = as_samples(path, variable="Z", ndim=1)
    np.testing.assert_array_equal(found.array.compute(), np.arange(600.0))


def test_a_synthetic_store_with_a_variable_of_fill_values_fits(tmp_path):
    """`dem synth tobit --left 0`: the left variable is all 0, Zarr's fill value, so no
    chunk of it is stored; dem wrote the store to its end, so it is not refused."""
    from dem.synth import write_store

    path = tmp_path / "cens.zarr"
    write_store(path, "tobit", n_samples=2000, n_features=3, seed=0, options={"left": 0.0})
    assert unwritten_chunks(zarr.open_array(str(path / "left"), mode="r"))  # none stored
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        model = dem.CensoredRegression(max_iter=3).fit(str(path), "y", variable="X", left="left")
    assert np.all(np.isfinite(model.coef_))
