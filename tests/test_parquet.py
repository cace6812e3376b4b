"""Parquet input (dem.tabular): row groups as chunks, columns as features, same bits as arrays.

Each fit from Parquet is compared with the same fit from the same values given as a dask
array with the same chunks (the row groups): the bits must be equal. The files are
written here with pyarrow; the CLI runs as subprocesses.
"""

from __future__ import annotations

import os
import subprocess
import sys

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import zarr
from conftest import initial_parameters, make_blobs

import dem
from dem.data import as_samples

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

pytestmark = pytest.mark.filterwarnings("ignore::dem.ConvergenceWarning")

ROW_GROUP = 400
COLUMNS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return make_blobs(n_per=250, seed=5)  # 1500 rows, 3 features


def _frame(x: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(x, columns=COLUMNS)
    frame.insert(1, "name", [f"row{i}" for i in range(len(x))])  # a text column, skipped
    frame["count"] = np.arange(len(x), dtype=np.int64)
    return frame


def _write(path: os.PathLike[str] | str, frame: pd.DataFrame, row_group: int = ROW_GROUP) -> str:
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group
    )
    return os.fspath(path)


def _gmm(x: np.ndarray) -> dem.GaussianMixture:
    return dem.GaussianMixture(
        3, max_iter=4, tol=0.0, random_state=0, **initial_parameters(x, 3, "full")
    )


def test_a_parquet_file_fits_with_the_bits_of_the_same_array(x, tmp_path):
    path = _write(tmp_path / "t.parquet", _frame(x))
    samples = as_samples(path, variable=COLUMNS)
    assert samples.array.chunks[0] == (400, 400, 400, 300)  # the row groups
    assert samples.source.endswith("t.parquet::a,b,c") and samples.kind == "parquet"
    from_parquet = _gmm(x).fit(path, variable=COLUMNS)
    from_array = _gmm(x).fit(da.from_array(x, chunks=(ROW_GROUP, 3)))
    np.testing.assert_array_equal(from_parquet.means_, from_array.means_)
    np.testing.assert_array_equal(from_parquet.covariances_, from_array.covariances_)
    assert list(from_parquet.feature_names_in_) == COLUMNS
    # a comma-separated string names the same columns; predict takes the path too
    again = _gmm(x).fit(path, variable="a, b,c")
    np.testing.assert_array_equal(again.means_, from_parquet.means_)
    labels = np.asarray(from_parquet.predict(path, variable=COLUMNS))
    np.testing.assert_array_equal(labels, from_array.predict(x))


def test_every_numeric_column_is_read_by_default(x, tmp_path):
    path = _write(tmp_path / "t.parquet", _frame(x))
    samples = as_samples(path)
    np.testing.assert_array_equal(
        samples.array.compute(), np.column_stack([x, np.arange(len(x), dtype=float)])
    )
    assert dem.tabular.open_parquet(path).columns == ("a", "b", "c", "count")


def test_a_folder_and_a_glob_read_their_files_in_name_order(x, tmp_path):
    folder = tmp_path / "table"
    folder.mkdir()
    frame = _frame(x)
    _write(folder / "part-1.parquet", frame.iloc[700:], row_group=500)  # 800 rows
    _write(folder / "part-0.parquet", frame.iloc[:700], row_group=500)
    (folder / "_SUCCESS").write_text("")
    _write(folder / ".hidden.parquet", frame.iloc[:10])  # skipped, as Spark and dask do
    for given in (folder, f"{folder}/*.parquet"):
        samples = as_samples(given, variable=COLUMNS)
        assert samples.array.chunks[0] == (500, 200, 500, 300)
        np.testing.assert_array_equal(samples.array.compute(), x)


def test_nulls_are_missing_values(x, tmp_path):
    frame = _frame(x)
    holes = x.copy()
    holes[::7, 1] = np.nan
    holes[3::11, 0] = np.nan
    frame["a"], frame["b"] = holes[:, 0], holes[:, 1]
    frame["b"] = frame["b"].astype("Float64")  # pandas NA, stored as a Parquet null
    path = _write(tmp_path / "t.parquet", frame)
    np.testing.assert_array_equal(as_samples(path, variable=COLUMNS).array.compute(), holes)
    ppca = dem.PPCA(1, max_iter=3, tol=0.0, random_state=0)
    from_parquet = ppca.fit(path, variable=COLUMNS).components_
    from_array = dem.PPCA(1, max_iter=3, tol=0.0, random_state=0).fit(
        da.from_array(holes, chunks=(ROW_GROUP, 3))
    )
    np.testing.assert_array_equal(from_parquet, from_array.components_)
    with pytest.raises(ValueError, match="NaN"):
        _gmm(x).fit(path, variable=COLUMNS)


def test_float32_columns_stay_float32_and_integers_become_float64(x, tmp_path):
    frame = pd.DataFrame(x.astype(np.float32), columns=COLUMNS)
    frame["n"] = np.arange(len(x), dtype=np.int32)
    path = _write(tmp_path / "t.parquet", frame)
    assert as_samples(path, variable=COLUMNS).array.dtype == np.float32
    assert as_samples(path, variable=["a", "n"]).array.dtype == np.float64


def test_a_tobit_target_is_a_column(tmp_path):
    rng = np.random.default_rng(1)
    features = rng.normal(size=(1200, 2))
    latent = features @ [1.0, -0.5] + 0.3 + rng.normal(size=1200)
    y = np.maximum(latent, 0.0)
    path = _write(
        tmp_path / "t.parquet", pd.DataFrame({"u": features[:, 0], "v": features[:, 1], "y": y})
    )
    from_parquet = dem.CensoredRegression(max_iter=5, tol=0.0).fit(
        path, "y", variable="u,v", left=0.0
    )
    from_array = dem.CensoredRegression(max_iter=5, tol=0.0).fit(
        da.from_array(features, chunks=(ROW_GROUP, 2)), da.from_array(y, chunks=ROW_GROUP), left=0.0
    )
    np.testing.assert_array_equal(from_parquet.coef_, from_array.coef_)
    assert list(from_parquet.feature_names_in_) == ["u", "v"]


def test_bad_columns_and_text_tables_say_what_to_do(x, tmp_path):
    path = _write(tmp_path / "t.parquet", _frame(x))
    with pytest.raises(KeyError, match=r"\['z'\] not in Parquet data.*'a', 'name'"):
        as_samples(path, variable="a,z")
    with pytest.raises(TypeError, match=r"name \((string|large_string)\).*not numeric"):
        as_samples(path, variable="a,name")
    with pytest.raises(FileNotFoundError, match="do not exist"):
        as_samples(tmp_path / "none.parquet")
    empty = _write(tmp_path / "empty.parquet", _frame(x).iloc[:0])
    with pytest.raises(ValueError, match="hold no rows"):
        as_samples(empty)
    with pytest.raises(ValueError, match=r"text table.*read_csv.*to_parquet.*dem convert"):
        _gmm(x).fit(tmp_path / "data.csv")


def test_parquet_on_s3_reads_with_storage_options(x, tmp_path, s3_server):
    local = _write(tmp_path / "t.parquet", _frame(x))
    url = s3_server.url("table/t.parquet")
    s3_server.filesystem().put(local, url)
    samples = as_samples(url, variable=COLUMNS, storage_options=s3_server.options)
    assert samples.source == f"{url}::a,b,c"
    np.testing.assert_array_equal(samples.array.compute(), x)


def test_a_dask_dataframe_fits_as_its_values(x):
    dd = pytest.importorskip("dask.dataframe")
    frame = dd.from_pandas(pd.DataFrame(x, columns=COLUMNS), npartitions=3)
    fitted = _gmm(x).fit(frame)
    expected = _gmm(x).fit(frame.to_dask_array(lengths=True))
    np.testing.assert_array_equal(fitted.means_, expected.means_)
    assert list(fitted.feature_names_in_) == COLUMNS


def test_without_columns_the_cli_takes_every_numeric_column(x, tmp_path):
    from dem.cli.options import infer_variable, inferred_data, variable_shape

    path = _write(tmp_path / "t.parquet", _frame(x))
    assert infer_variable(path, 2) == "a,b,c,count"
    assert inferred_data(path, "a,b,c,count", 2, "--var").startswith("Data: columns a,b,c,count")
    assert variable_shape(path, "a,c") == (len(x), 2)
    with pytest.raises(ValueError, match="3-D arrays"):
        infer_variable(path, 3)


def _dem(*args: str, cwd: os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dem.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_cli_fits_parquet_columns_and_converts_to_zarr(x, tmp_path):
    path = _write(tmp_path / "t.parquet", _frame(x))
    fit = _dem(
        "fit", "gmm", path, "--columns", "a,b,c", "-k", "3", "--max-iter", "3",
        "--checkpoint", "ck.zarr", "--local-workers", "1", cwd=tmp_path,
    )  # fmt: skip
    assert fit.returncode == 0, fit.stdout + fit.stderr
    with pytest.warns(UserWarning, match="without converging"):
        fitted = dem.from_checkpoint(tmp_path / "ck.zarr")
    assert fitted.means_.shape == (3, 3)
    assert "Data: columns" not in fit.stdout  # named, not inferred

    converted = _dem("convert", path, "out.zarr", "--columns", "a,b,c", cwd=tmp_path)
    assert converted.returncode == 0, converted.stdout + converted.stderr
    group = zarr.open_group(tmp_path / "out.zarr", mode="r")
    np.testing.assert_array_equal(group["X"][:], x)
    assert group.attrs["dem_output"]["complete"] is True
    again = _dem("convert", path, "out.zarr", cwd=tmp_path)
    assert again.returncode == 2 and "--overwrite" in again.stdout + again.stderr

    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    csv = _dem("fit", "gmm", "data.csv", "-k", "2", cwd=tmp_path)
    assert csv.returncode != 0 and "dem convert" in csv.stdout + csv.stderr
