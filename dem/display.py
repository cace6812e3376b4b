"""A compact HTML summary of any estimator, for notebooks (``_repr_html_``).

Every estimator class inherits :class:`HTMLRepr`; what it shows is read from the
estimator the way scikit-learn's conventions define it, so one implementation serves
all models:

- the constructor arguments (``inspect.signature`` of the class), those that differ
  from their defaults in the heading;
- whether it is fitted (it has public attributes ending in ``_``), and if so the
  convergence (``n_iter_``, ``converged_``), the final log-likelihood
  (``lower_bound_``, else the last of ``lower_bounds_``) and the checkpoint location;
- every fitted attribute with its shape and type, and its value where it is small.

Every piece of text is HTML-escaped.
"""

from __future__ import annotations

import html
import inspect
import math
import os
from typing import Any

import numpy as np

from dem import storage

#: Arrays with at most this many entries are shown in full.
SMALL = 8

_STYLE = (
    "<style>"
    ".dem-estimator{font-family:var(--jp-ui-font-family,sans-serif);font-size:13px;"
    "line-height:1.4;max-width:60em}"
    ".dem-estimator code{font-size:12px}"
    ".dem-estimator .dem-state{display:inline-block;padding:0 .4em;border-radius:.3em;"
    "font-size:11px;margin-left:.5em;color:#fff}"
    ".dem-estimator .dem-fitted{background:#2a7d3c}"
    ".dem-estimator .dem-unconverged{background:#b36b00}"
    ".dem-estimator .dem-unfitted{background:#777}"
    ".dem-estimator table{border-collapse:collapse;margin:.2em 0 .4em 1em}"
    ".dem-estimator td,.dem-estimator th{padding:.1em .6em;text-align:left;"
    "vertical-align:top;border-bottom:1px solid #ddd}"
    ".dem-estimator .dem-changed{font-weight:bold}"
    "</style>"
)


def _escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def _is_default(value: Any, default: Any) -> bool:
    if value is default:
        return True
    if isinstance(value, np.ndarray) or isinstance(default, np.ndarray):
        return False
    try:
        return bool(value == default)
    except (TypeError, ValueError):
        return False


def _short(value: Any) -> str:
    """A one-line text for a hyperparameter or a small fitted value."""
    if callable(value) and not isinstance(value, type):
        name = getattr(value, "__qualname__", None) or type(value).__name__
        return f"<{name}>"
    if isinstance(value, os.PathLike):
        return repr(os.fspath(value))
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    if isinstance(value, np.ndarray):
        return _array(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _array(value: np.ndarray) -> str:
    if value.size <= SMALL and value.ndim <= 1:
        if np.issubdtype(value.dtype, np.floating):
            return "[" + ", ".join(f"{v:.4g}" for v in value.ravel()) + "]"
        return np.array2string(value, separator=", ")
    return f"array {value.shape} {value.dtype}"


def _describe(value: Any) -> tuple[str, str]:
    """(shape or type, value) of a fitted attribute."""
    if isinstance(value, np.ndarray):
        shape = str(value.shape) if value.ndim else "scalar"
        shown = _array(value) if value.size <= SMALL and value.ndim <= 1 else ""
        if value.ndim == 0:
            shown = _short(value.item())
        return f"{shape} {value.dtype}", shown
    if isinstance(value, list):
        if value and all(isinstance(v, float | int | np.number) for v in value):
            return f"list of {len(value)}", f"last {_short(value[-1])}"
        return f"list of {len(value)}", _short(value) if len(value) <= SMALL else ""
    if isinstance(value, dict):
        return f"dict of {len(value)}", ", ".join(f"{k}: {_short(v)}" for k, v in value.items())
    return type(value).__name__, _short(value)


def _parameters(estimator: Any) -> list[tuple[str, Any, bool]]:
    """(name, value, differs from the default) of each constructor argument."""
    try:
        signature = inspect.signature(type(estimator))
    except (TypeError, ValueError):
        return []
    rows = []
    for name, parameter in signature.parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if not hasattr(estimator, name):
            continue
        value = getattr(estimator, name)
        if name.endswith("storage_options") and isinstance(value, dict):
            value = storage.masked(value)  # credentials are never displayed
        changed = parameter.default is parameter.empty or not _is_default(value, parameter.default)
        rows.append((name, value, changed))
    return rows


def fitted_attributes(estimator: Any) -> dict[str, Any]:
    """The public attributes ending in ``_``, in the order ``fit`` set them."""
    return {
        name: value
        for name, value in vars(estimator).items()
        if name.endswith("_") and not name.startswith("_")
    }


def _final_loglik(estimator: Any) -> float | None:
    value = getattr(estimator, "lower_bound_", None)
    if value is None:
        bounds = getattr(estimator, "lower_bounds_", None)
        value = bounds[-1] if bounds else None
    return None if value is None else float(value)


def _status(estimator: Any, fitted: dict[str, Any]) -> str:
    """The badge and one line on convergence, log-likelihood and checkpoint."""
    if not fitted:
        return '<span class="dem-state dem-unfitted">not fitted</span>'
    converged = fitted.get("converged_")
    badge = (
        '<span class="dem-state dem-fitted">fitted</span>'
        if converged is not False
        else '<span class="dem-state dem-unconverged">fitted, not converged</span>'
    )
    facts = []
    if "n_iter_" in fitted:
        verb = {True: "converged after", False: "stopped after", None: "ran"}[
            None if converged is None else bool(converged)
        ]
        facts.append(f"{verb} {int(fitted['n_iter_'])} iteration(s)")
    loglik = _final_loglik(estimator)
    if loglik is not None and math.isfinite(loglik):
        # a model fitted by variational EM names its objective (``_objective``)
        objective = getattr(estimator, "_objective", "mean log-likelihood")
        facts.append(f"final {objective} {loglik:.6g}")
    if "n_features_in_" in fitted:
        facts.append(f"{int(fitted['n_features_in_'])} features")
    return badge + ("<br>" + _escape(" · ".join(facts)) if facts else "")


def estimator_html(estimator: Any) -> str:
    """The HTML summary of ``estimator`` (what notebooks display for it).

    Parameters
    ----------
    estimator : object
        Any estimator: its constructor arguments are stored as attributes of the
        same names, and what ``fit`` learns in public attributes ending in ``_``.

    Returns
    -------
    str
        A self-contained ``<div>``, every value HTML-escaped.
    """
    name = type(estimator).__name__
    parameters = _parameters(estimator)
    fitted = fitted_attributes(estimator)
    changed = ", ".join(f"{p}={_short(v)}" for p, v, differs in parameters if differs)
    checkpoint = getattr(estimator, "checkpoint", None)
    lines = [
        _STYLE,
        '<div class="dem-estimator">',
        f"<div><code><b>{_escape(name)}</b>({_escape(changed)})</code>"
        f"{_status(estimator, fitted)}</div>",
    ]
    if any(p == "checkpoint" for p, _, _ in parameters):
        where = "none" if checkpoint is None else os.fspath(checkpoint)
        lines.append(f"<div>checkpoint: <code>{_escape(where)}</code></div>")
    if parameters:
        lines.append(f"<details><summary>Parameters ({len(parameters)})</summary><table>")
        for p, value, differs in parameters:
            css = ' class="dem-changed"' if differs else ""
            lines.append(f"<tr{css}><td>{_escape(p)}</td><td>{_escape(_short(value))}</td></tr>")
        lines.append("</table></details>")
    if fitted:
        lines.append(
            f"<details open><summary>Fitted attributes ({len(fitted)})</summary><table>"
            "<tr><th>name</th><th>shape or type</th><th>value</th></tr>"
        )
        for attribute, value in fitted.items():
            shape, shown = _describe(value)
            lines.append(
                f"<tr><td>{_escape(attribute)}</td><td>{_escape(shape)}</td>"
                f"<td>{_escape(shown)}</td></tr>"
            )
        lines.append("</table></details>")
    lines.append("</div>")
    return "\n".join(lines)


class HTMLRepr:
    """Mixin: notebooks display the estimator with :func:`estimator_html` (placed before
    scikit-learn's ``BaseEstimator`` in the bases, it replaces that one's diagram)."""

    def _repr_html_(self) -> str:
        return estimator_html(self)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, str]:
        return {"text/plain": repr(self), "text/html": estimator_html(self)}
