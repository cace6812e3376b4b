"""The documentation site builds with warnings as errors, and docstring examples run.

The site (docs/, Sphinx) is built once per run into a temporary folder, with the notebooks
rendered but not executed (tests/test_notebooks.py runs them). With ``-W`` a broken
reference, a public name or member without a docstring, a model family without a guide
page, an exit code without a meaning or a notebook that does not parse fails the build.
"""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil
import subprocess
import sys
import zlib
from pathlib import Path

import nbformat
import pytest
import typer.main

import dem
import dem.cli
from dem.cli.console import ExitCode

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built from this checkout: ``-W``, no notebook executed."""
    out = tmp_path_factory.mktemp("docs")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["DEM_DOCS_EXECUTE"] = "off"
    command = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "--keep-going",
        "-q",
        "-b",
        "html",
        "-d",
        str(out / "doctrees"),
        str(ROOT / "docs"),
        str(out / "html"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, f"the site does not build:\n{done.stderr}\n{done.stdout}"
    return out / "html"


def inventory(html: Path) -> dict[str, str]:
    """``{name: domain:role}`` of every object the site documents (its ``objects.inv``)."""
    data = (html / "objects.inv").read_bytes()
    header_end = 0
    for _ in range(4):  # four text lines, then the zlib-compressed entries
        header_end = data.index(b"\n", header_end) + 1
    entries: dict[str, str] = {}
    for line in zlib.decompress(data[header_end:]).decode().splitlines():
        name, role = line.split(" ", 2)[:2]
        entries[name] = role
    return entries


def test_every_public_name_has_a_reference_entry(site: Path) -> None:
    documented = inventory(site)
    missing = [name for name in dem.__all__ if f"dem.{name}" not in documented]
    assert missing == []
    # the estimators' own methods have entries too
    for method in ("fit", "predict", "score_samples", "bic", "sample"):
        assert f"dem.GaussianMixture.{method}" in documented
    assert documented["dem.fit"] == "py:function"
    assert documented["dem.CheckpointError"] == "py:exception"


def test_every_command_option_and_exit_code_is_on_the_cli_page(site: Path) -> None:
    page = (site / "cli.html").read_text()
    command = typer.main.get_command(dem.cli.app)

    def walk(cmd: object, ctx: object) -> None:
        path = ctx.command_path  # type: ignore[attr-defined]
        assert f">{path}<" in page, path
        for param in cmd.params:  # type: ignore[attr-defined]
            for opt in param.opts:
                if opt.startswith("-"):
                    assert opt in page, (path, opt)
        for name in getattr(cmd, "commands", {}):
            sub = cmd.commands[name]  # type: ignore[attr-defined]
            walk(sub, type(ctx)(sub, info_name=name, parent=ctx))

    walk(command, command.context_class(command, info_name="dem"))
    for code in ExitCode:
        assert f"<p>{int(code)}</p>" in page and code.name in page


def test_every_notebook_is_rendered(site: Path) -> None:
    assert NOTEBOOKS
    for notebook in NOTEBOOKS:
        page = site / "notebooks" / f"{notebook.stem}.html"
        assert page.exists(), notebook.name
        cells = nbformat.read(notebook, as_version=4).cells
        code = sum(cell.cell_type == "code" for cell in cells)
        assert page.read_text().count('class="cell_input') == code, notebook.name


def test_every_guide_page_is_in_the_site(site: Path) -> None:
    sources = sorted((ROOT / "docs").rglob("*.md"))
    for source in sources:
        relative = source.relative_to(ROOT / "docs").with_suffix(".html")
        assert (site / relative).exists(), relative


def dem_modules() -> list[str]:
    """Every module of the dem package (``__main__`` modules run a command on import)."""
    names = ["dem"]
    for info in pkgutil.walk_packages(dem.__path__, prefix="dem."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return sorted(names)


FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("name", dem_modules())
def test_docstring_examples_run(name: str) -> None:
    """What ``python -m pytest --doctest-modules dem`` would run, module by module."""
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, name):
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} docstring example(s) of {name} failed"


def test_docstring_examples_are_found() -> None:
    import dem.tabular

    tests = doctest.DocTestFinder().find(dem.tabular.read_parquet, "read_parquet")
    assert sum(len(t.examples) for t in tests) >= 10


def test_the_site_extension_reads_the_code_it_documents() -> None:
    sys.path.insert(0, str(ROOT / "docs" / "_ext"))
    try:
        import dem_sphinx
    finally:
        sys.path.remove(str(ROOT / "docs" / "_ext"))
    # every exit code has its meaning in dem.cli's docstring, and nothing else is described
    meanings = dem_sphinx.exit_code_meanings()
    assert set(meanings) == {int(code) for code in ExitCode}
    assert meanings[int(ExitCode.SCHEDULER)].startswith("scheduler problem")
    # an internal reference resolves when its object exists, and only then
    found, obj, _ = dem_sphinx.find_object("dem.engine.fit_runs")
    assert found and obj.__name__ == "fit_runs"
    assert not dem_sphinx.find_object("dem.engine.no_such_function")[0]
    assert dem_sphinx.public_path(dem.GaussianMixture, None, "GaussianMixture") == (
        "dem.GaussianMixture"
    )
    # scikit-learn's methods are left to scikit-learn's documentation
    members = dem_sphinx.own_members(dem.GaussianMixture)
    assert {"fit", "predict", "bic"} <= set(members)
    assert not {"get_params", "set_params", "set_fit_request"} & set(members)
