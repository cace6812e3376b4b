"""The HTML summary notebooks show for estimators (``_repr_html_``).

Every registered estimator's unfitted and fitted summary is a contract test
(``tests/contract/test_contract.py``, which uses this module's parsers); the tests here
check the content of particular summaries.
"""

from __future__ import annotations

import warnings
from html.parser import HTMLParser

import numpy as np
import pytest

import dem
from dem.display import estimator_html
from dem.engine import ConvergenceWarning
from tests.conftest import make_blobs

VOID = {"br", "hr", "img", "meta", "link", "input", "col", "wbr"}


class Structure(HTMLParser):
    """Tags (balanced, or an AssertionError) and the visible text of a fragment."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_style = tag == "style"
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, (self.open, tag)
        self.open.pop()
        self._in_style = False

    def handle_data(self, data):
        if not self._in_style:
            self.text.append(data)


def parse(fragment: str) -> Structure:
    parser = Structure()
    parser.feed(fragment)
    parser.close()
    assert parser.open == []
    return parser


def visible(structure: Structure) -> str:
    """The text a reader sees, whitespace collapsed."""
    return " ".join("".join(structure.text).split())


def rows(fragment: str) -> dict[str, list[str]]:
    """Table rows by their first cell, as text."""

    class Rows(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.rows: list[list[str]] = []
            self.cell: list[str] | None = None

        def handle_starttag(self, tag, attrs):
            if tag == "tr":
                self.rows.append([])
            elif tag in ("td", "th"):
                self.cell = []

        def handle_endtag(self, tag):
            if tag in ("td", "th") and self.cell is not None:
                self.rows[-1].append("".join(self.cell))
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell.append(data)

    parser = Rows()
    parser.feed(fragment)
    return {r[0]: r[1:] for r in parser.rows if r}


def test_fitted_mixture_summary(tmp_path):
    x = make_blobs(n_per=200)
    checkpoint = tmp_path / "fit.zarr"
    mixture = dem.GaussianMixture(3, covariance_type="diag", random_state=0, checkpoint=checkpoint)
    mixture.fit(x)
    fragment = mixture._repr_html_()
    text = visible(parse(fragment))
    heading = (
        "GaussianMixture(n_components=3, covariance_type='diag', random_state=0, "
        f"checkpoint={str(checkpoint)!r})"
    )
    assert heading in text
    assert f"converged after {mixture.n_iter_} iteration(s)" in text
    assert f"final mean log-likelihood {mixture.lower_bounds_[-1]:.6g}" in text
    assert "3 features" in text
    assert f"checkpoint: {checkpoint}" in text
    table = rows(fragment)
    assert table["means_"] == ["(3, 3) float64", ""]  # too large to list
    weights = "[" + ", ".join(f"{w:.4g}" for w in mixture.weights_) + "]"
    assert table["weights_"] == ["(3,) float64", weights]
    assert table["converged_"] == ["bool", "True"]
    assert table["n_iter_"] == ["int", str(mixture.n_iter_)]
    assert table["lower_bounds_"][0] == f"list of {mixture.n_iter_}"
    # every fitted attribute is listed, nothing private
    fitted = [name for name in vars(mixture) if name.endswith("_") and not name.startswith("_")]
    assert set(fitted) <= set(table)
    assert not any(name.startswith("_") for name in table)


def test_unconverged_fit_is_flagged():
    x = make_blobs(n_per=200)
    with pytest.warns(ConvergenceWarning):
        mixture = dem.GaussianMixture(3, max_iter=1, random_state=0).fit(x)
    text = visible(parse(mixture._repr_html_()))
    assert "fitted, not converged" in text and "stopped after 1 iteration(s)" in text


def test_censored_regression_summary_shows_its_results():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    y = np.maximum(x @ [1.0, -0.5] + rng.normal(size=400), 0.0)
    model = dem.CensoredRegression(left=0.0).fit(x, y)
    fragment = model._repr_html_()
    text = visible(parse(fragment))
    assert f"final mean log-likelihood {model.lower_bounds_[-1]:.6g}" in text
    table = rows(fragment)
    assert table["counts_"][0] == "dict of 5"
    assert f"left: {model.counts_['left']}" in table["counts_"][1]
    assert table["scale_"] == ["float", f"{model.scale_:.6g}"]
    assert table["fit_limits_"] == ["tuple", repr(model.fit_limits_)]


def test_everything_is_escaped(tmp_path):
    hostile = "<script>alert('x')</script>&amp"

    def callback(info):  # shown by name
        return None

    estimator = dem.PPCA(3, checkpoint=tmp_path / hostile, callback=callback)
    fragment = estimator_html(estimator)
    structure = parse(fragment)
    assert "script" not in structure.tags
    text = visible(structure)
    assert hostile in text  # shown as text, exactly
    assert "&amp;amp" in fragment
    assert "test_everything_is_escaped.<locals>.callback" in text


def test_arrays_as_hyperparameters_are_not_compared_with_defaults():
    means = np.zeros((2, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fragment = dem.GaussianMixture(2, means_init=means)._repr_html_()
    assert "means_init=array (2, 3) float64" in visible(parse(fragment))
