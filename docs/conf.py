"""Sphinx configuration of dem's documentation site.

Build it with ``python -m sphinx -W --keep-going -b html docs build/docs`` (after
``pip install -e '.[docs]'``). The notebooks are executed during that build; the test suite
builds with ``-D nb_execution_mode=off``, since ``tests/test_notebooks.py`` runs them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))

import dem  # noqa: E402  (the checkout beside this folder, installed or not)

project = "dem"
author = "the dem developers"
copyright = "the dem developers"
release = dem.__version__
version = dem.__version__

extensions = [
    "sphinx.ext.autodoc",
    "numpydoc",
    "myst_nb",
    "dem_sphinx",
]

root_doc = "index"
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "notebooks/README.md"]

# Broken references are errors (with -W): every cross-reference must resolve, except those
# into the libraries dem builds on, which this site does not fetch inventories for (the
# build runs without a network).
nitpicky = True
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(numpy|np|scipy|sklearn|hmmlearn|xarray|xr|dask|da|distributed|zarr|pandas|pd|"
        r"fsspec|pyarrow|matplotlib|typer|rich|collections|typing|os|pathlib|enum)\b.*",
    ),
]

# API reference: signatures without type hints (the numpydoc sections give the types),
# members in source order, nothing inherited from scikit-learn (see dem_sphinx).
autodoc_typehints = "none"
autodoc_member_order = "bysource"
autodoc_default_options: dict[str, object] = {}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# a public object without a docstring is a warning, so an error with -W
numpydoc_validation_checks = {"GL08"}
numpydoc_validation_exclude = {r"\.__\w+__$"}

# Notebooks: executed at build time (outputs are not stored in git); a notebook that fails
# fails the build. The test suite passes -D nb_execution_mode=off.
nb_execution_mode = os.environ.get("DEM_DOCS_EXECUTE", "force")
nb_execution_raise_on_error = True
nb_execution_timeout = 600
nb_execution_in_temp = True
nb_merge_streams = True
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3
# README sections are included below a page title of their own: their headings start deeper
suppress_warnings = ["myst.header"]

# "--columns" stays two hyphens in option names quoted in prose
smartquotes = False

html_theme = "pydata_sphinx_theme"
html_title = f"dem {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_show_sourcelink = False
html_copy_source = False
