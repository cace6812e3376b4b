"""The package layout (issue 16): model maths import no graph machinery; no module is long.

Every model family under ``dem/models/`` that is a package with a ``kernels.py`` or a
``model.py`` keeps those two pure: neither they nor any dem module they import (followed
transitively, read from the source with :mod:`ast`, so nothing is imported here) may
import dask, xarray or the modules that build and run graphs or hold the user API. A new
family is checked as soon as its package exists.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DEM = Path(__file__).resolve().parents[1] / "dem"
MAX_LINES = 800
# what a kernels.py or model.py must not reach (a name covers its submodules); dem.graph
# is the engine's graph construction
FORBIDDEN = ("dask", "xarray", "dem.engine", "dem.graph", "dem.data", "dem.estimator")
PURE_MODULES = ("kernels.py", "model.py")


def module_file(root: Path, name: str) -> Path | None:
    """The source file of dem module ``name`` under the package directory ``root``."""
    parts = name.split(".")
    if parts[0] != root.name:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(root: Path, path: Path) -> str:
    """The dotted name of the module in ``path`` (a package's ``__init__.py``: the package)."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(root: Path, path: Path) -> set[str]:
    """Every module the file imports, anywhere in it (``from p import m`` names ``p.m``
    when ``m`` is a module of ``p``, else ``p``); relative imports resolved."""
    package = module_name(root, path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                names.add(submodule if module_file(root, submodule) else base)
    return names


def forbidden_chains(root: Path, path: Path) -> list[str]:
    """Import chains from ``path`` to a forbidden module, through the dem modules it imports."""
    start = module_name(root, path)
    parent: dict[str, str | None] = {start: None}
    queue, chains = [path], []
    while queue:
        current = queue.pop(0)
        current_name = module_name(root, current)
        for name in sorted(imported_names(root, current)):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN):
                chain, link = [name], current_name
                while link is not None:
                    chain.append(link)
                    link = parent[link]
                chains.append(" -> ".join(reversed(chain)))
            elif name not in parent and (found := module_file(root, name)) is not None:
                parent[name] = current_name
                queue.append(found)
    return chains


def pure_modules(root: Path) -> list[Path]:
    """The kernels.py and model.py of every model family package under ``root/models``."""
    return sorted(
        package / name
        for package in (root / "models").iterdir()
        if package.is_dir()
        for name in PURE_MODULES
        if (package / name).is_file()
    )


def long_modules(root: Path, limit: int = MAX_LINES) -> dict[str, int]:
    """Modules under ``root`` longer than ``limit`` lines, with their lengths."""
    lengths = {
        str(path.relative_to(root.parent)): len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted(root.rglob("*.py"))
    }
    return {path: n for path, n in lengths.items() if n > limit}


@pytest.mark.parametrize("path", pure_modules(DEM), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_kernels_and_models_import_no_graph_machinery(path: Path) -> None:
    chains = forbidden_chains(DEM, path)
    assert not chains, f"{path.relative_to(DEM.parent)} must stay pure maths:\n" + "\n".join(chains)


def test_the_mixture_package_is_checked() -> None:
    # the discovery above finds packages at all (an empty parametrization would pass)
    assert DEM / "models" / "mixture" / "kernels.py" in pure_modules(DEM)
    assert DEM / "models" / "mixture" / "model.py" in pure_modules(DEM)


def test_no_module_is_longer_than_the_limit() -> None:
    offenders = long_modules(DEM)
    assert not offenders, f"modules over {MAX_LINES} lines (split them): " + ", ".join(
        f"{path} ({n})" for path, n in offenders.items()
    )


def test_the_import_check_follows_imports_and_names_the_chain(tmp_path: Path) -> None:
    root = tmp_path / "dem"
    family = root / "models" / "fake"
    family.mkdir(parents=True)
    for package in (root, root / "models", family):
        (package / "__init__.py").write_text("")
    (root / "engine.py").write_text("import numpy\n")
    (family / "kernels.py").write_text("import numpy as np\nfrom . import helper\n")
    (family / "helper.py").write_text("def f():\n    from dask import array\n")
    (family / "model.py").write_text(
        "from dem.models.fake.kernels import np\nfrom dem import engine\n"
    )
    assert pure_modules(root) == [family / "kernels.py", family / "model.py"]
    assert forbidden_chains(root, family / "kernels.py") == [
        "dem.models.fake.kernels -> dem.models.fake.helper -> dask"
    ]
    assert forbidden_chains(root, family / "model.py") == [
        "dem.models.fake.model -> dem.engine",
        "dem.models.fake.model -> dem.models.fake.kernels -> dem.models.fake.helper -> dask",
    ]


def test_the_size_check_names_long_modules(tmp_path: Path) -> None:
    root = tmp_path / "dem"
    (root / "models").mkdir(parents=True)
    (root / "short.py").write_text("x = 1\n" * 3)
    (root / "models" / "long.py").write_text("x = 1\n" * 4)
    assert long_modules(root, limit=3) == {str(Path("dem", "models", "long.py")): 4}
