"""Every notebook in notebooks/ runs top to bottom, and is stored without outputs.

Each notebook's first cell is its parameters cell (tagged ``parameters``, as papermill
expects); the run inserts a cell after it that points ``workdir`` at a temporary
directory, and for the scale-out notebook ``scheduler_address`` at a real LocalCluster
whose workers have less memory than the notebook's data.
"""

from __future__ import annotations

import os
from pathlib import Path

import dask
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WORKER_MEMORY = "300MiB"


def test_there_are_notebooks():
    assert [p.name[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_", "04_", "05_", "06_"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_clean(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "a notebook without code"
    for cell in code:
        assert cell.outputs == [], f"{path.name}: outputs are stored; clear them before committing"
        assert cell.execution_count is None, f"{path.name}: execution counts are stored"
    first = notebook.cells[0] if notebook.cells[0].cell_type == "code" else code[0]
    assert first is code[0] and "parameters" in first.metadata.get("tags", []), (
        f"{path.name}: the first code cell must be the parameters cell, tagged 'parameters'"
    )
    assert "workdir = None" in first.source


@pytest.fixture(scope="module")
def small_cluster():
    """Two worker processes, each with less memory than the scale-out notebook's store."""
    distributed = pytest.importorskip("distributed")
    # an idle worker process takes about 190 MiB: dask must not pause it at 80% of the limit
    with (
        dask.config.set({"distributed.worker.memory.pause": False}),
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            memory_limit=WORKER_MEMORY,
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
    ):
        yield cluster


def inject(notebook, values: dict[str, object]) -> None:
    """Insert a cell setting ``values`` after the parameters cell (as papermill does)."""
    index = next(
        i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])
    )
    source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    cell.id = "injected-parameters"
    notebook.cells.insert(index + 1, cell)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, request):
    notebook = nbformat.read(path, as_version=4)
    values: dict[str, object] = {"workdir": str(tmp_path)}
    if path.name.startswith("04_"):
        values["scheduler_address"] = request.getfixturevalue("small_cluster").scheduler_address
    inject(notebook, values)
    # the kernel imports this checkout's dem, whether or not it is installed
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(env=env)
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert errors == []
