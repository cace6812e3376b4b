"""Plots of fitted models (matplotlib, imported only when a function here is called).

Every function takes a fitted estimator (and data where the plot needs some), draws
on ``ax`` (a new figure's axes when it is None) and returns the axes. Data may be
anything the estimators take (numpy, dask, xarray, a Zarr path with ``variable``);
only a random subset of at most ``max_rows`` rows is read and drawn, in one pass.

========================  ==================================================================
:func:`loglik_trace`      log-likelihood per iteration, of an estimator or of a checkpoint
:func:`mixture_ellipses`  a Gaussian mixture's components on two features, with the data
:func:`information_criteria`  BIC and AIC against the number of components
:func:`scree`             PPCA / factor analysis: variance along each component
:func:`imputation`        PPCA / factor analysis: imputed against true values
:func:`censored_fit`      censored regression: observed against fitted, censored rows marked
========================  ==================================================================

Install matplotlib with ``pip install 'dem[plot]'``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dem.data import Samples, as_samples

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "censored_fit",
    "imputation",
    "information_criteria",
    "loglik_trace",
    "mixture_ellipses",
    "scree",
]


def _axes(ax: Axes | None) -> Axes:
    """``ax``, or the axes of a new figure."""
    if ax is not None:
        return ax
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "dem.plot needs matplotlib: pip install 'dem[plot]' (or pip install matplotlib)."
        ) from exc
    _, new = plt.subplots()
    return new


def _fitted(estimator: Any, attribute: str, what: str) -> None:
    if not hasattr(estimator, attribute):
        raise ValueError(
            f"{type(estimator).__name__} has no {attribute}: {what} needs a fitted model; "
            "call fit first."
        )


def _rows(
    inputs: Sequence[Samples], max_rows: int, random_state: int | np.random.Generator | None
) -> list[np.ndarray]:
    """The same random rows (at most ``max_rows``, in data order) of aligned inputs."""
    import dask

    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1; got {max_rows}.")
    n = inputs[0].n_samples
    for samples in inputs[1:]:
        if samples.n_samples != n:
            raise ValueError(
                f"{samples.name} has {samples.n_samples} rows but {inputs[0].name} has {n}; "
                "they must describe the same samples."
            )
    if n <= max_rows:
        arrays = [s.array for s in inputs]
    else:
        chosen = np.sort(np.random.default_rng(random_state).choice(n, max_rows, replace=False))
        arrays = [s.array[chosen] for s in inputs]
    return [np.asarray(a) for a in dask.compute(*arrays)]


# --- the EM trace -------------------------------------------------------------------------


def loglik_trace(source: Any, *, ax: Axes | None = None) -> Axes:
    """Mean log-likelihood per sample at every EM iteration.

    Parameters
    ----------
    source : fitted estimator, or str or path-like
        An estimator with ``lower_bounds_`` (one line), or a checkpoint written by
        ``fit(checkpoint=...)`` or ``dem fit`` (one line per restart, the best one,
        which ``fit`` keeps, drawn thicker).
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        One line per trace, iterations numbered from 1 on the x axis.
    """
    if isinstance(source, str | os.PathLike):
        from dem.restore import best_run, load_runs

        runs = load_runs(source)
        best = best_run(runs)
        traces = {
            f"run {r}" + (" (best)" if r == best else ""): (ds["loglik"].values[1:], r == best)
            for r, ds in runs.items()
        }
    else:
        _fitted(source, "lower_bounds_", "the log-likelihood trace")
        traces = {type(source).__name__: (np.asarray(source.lower_bounds_), True)}
    ax = _axes(ax)
    for label, (trace, best) in traces.items():
        ax.plot(
            np.arange(1, len(trace) + 1),
            trace,
            marker="o",
            markersize=3,
            linewidth=2.0 if best else 1.0,
            label=label,
        )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_xlabel("iteration")
    ax.set_ylabel("mean log-likelihood per sample")
    ax.set_title("EM trace")
    if len(traces) > 1:
        ax.legend()
    return ax


# --- Gaussian mixtures --------------------------------------------------------------------

#: Covariance type → the 2 × 2 covariance of features ``f`` of component ``k``.
_MARGINAL_COVARIANCE: dict[str, Callable[[np.ndarray, int, list[int]], np.ndarray]] = {
    "full": lambda cov, k, f: cov[k][np.ix_(f, f)],
    "tied": lambda cov, k, f: cov[np.ix_(f, f)],
    "diag": lambda cov, k, f: np.diag(cov[k][f]),
    "spherical": lambda cov, k, f: cov[k] * np.eye(2),
}


def _two_features(features: Sequence[int], n_features: int) -> list[int]:
    chosen = [int(j) for j in features]
    if len(chosen) != 2 or chosen[0] == chosen[1]:
        raise ValueError(f"features must be two different feature indices; got {features!r}.")
    if not all(0 <= j < n_features for j in chosen):
        raise ValueError(
            f"features {features!r} out of range: the model has {n_features} features "
            f"(indices 0 to {n_features - 1})."
        )
    return chosen


def mixture_ellipses(
    mixture: Any,
    X: Any = None,
    *,
    features: Sequence[int] = (0, 1),
    variable: str | None = None,
    n_std: float = 2.0,
    max_rows: int = 2_000,
    random_state: int | np.random.Generator | None = 0,
    ax: Axes | None = None,
) -> Axes:
    """A Gaussian mixture's components on two features, over a sample of the data.

    Each component is drawn as the ellipse of its marginal Gaussian on the two
    features at ``n_std`` standard deviations (semi-axes ``n_std · sqrt(λ)`` for the
    eigenvalues λ of the 2 × 2 marginal covariance), any covariance type, with its
    mean marked. Points, if ``X`` is given, are coloured by their most probable
    component.

    Parameters
    ----------
    mixture : GaussianMixture
        Fitted.
    X : array-like of shape (n_samples, n_features), dask array, xarray, or path, optional
        Data to scatter (at most ``max_rows`` random rows are read).
    features : pair of int, default=(0, 1)
        The features on the x and y axes.
    variable : str, optional
        Name of X in a Zarr store or xarray Dataset.
    n_std : float, default=2.0
        Size of the ellipses in standard deviations.
    max_rows : int, default=2000
    random_state : int or numpy.random.Generator, optional
        Chooses the rows drawn.
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        With one :class:`matplotlib.patches.Ellipse` per component, in component order.
    """
    from matplotlib.patches import Ellipse

    _fitted(mixture, "means_", "mixture_ellipses")
    if not n_std > 0:
        raise ValueError(f"n_std must be positive; got {n_std}.")
    means = np.asarray(mixture.means_)
    chosen = _two_features(features, means.shape[1])
    marginal = _MARGINAL_COVARIANCE[mixture.covariance_type]
    ax = _axes(ax)
    if X is not None:
        samples = as_samples(
            X,
            variable=variable,
            sample_dim=getattr(mixture, "sample_dim", "sample"),
            feature_dim=getattr(mixture, "feature_dim", "feature"),
        )
        (rows,) = _rows([samples], max_rows, random_state)
        labels = np.asarray(mixture.predict(rows))
        ax.scatter(
            rows[:, chosen[0]],
            rows[:, chosen[1]],
            c=[f"C{k % 10}" for k in labels],
            s=4,
            alpha=0.4,
            linewidths=0,
        )
    for k in range(len(means)):
        values, vectors = np.linalg.eigh(marginal(np.asarray(mixture.covariances_), k, chosen))
        major = vectors[:, 1]
        radii = n_std * np.sqrt(np.maximum(values, 0.0))
        ax.add_patch(
            Ellipse(
                xy=(float(means[k, chosen[0]]), float(means[k, chosen[1]])),
                width=2.0 * float(radii[1]),
                height=2.0 * float(radii[0]),
                angle=math.degrees(math.atan2(major[1], major[0])),
                fill=False,
                linewidth=2.0,
                edgecolor=f"C{k % 10}",
                label=f"component {k} (weight {mixture.weights_[k]:.2f})",
            )
        )
    ax.scatter(
        means[:, chosen[0]],
        means[:, chosen[1]],
        c=[f"C{k % 10}" for k in range(len(means))],
        marker="x",
        s=60,
        zorder=3,
    )
    ax.set_xlabel(f"feature {chosen[0]}")
    ax.set_ylabel(f"feature {chosen[1]}")
    ax.set_title(f"{len(means)} components ({mixture.covariance_type}), {n_std:g} std")
    ax.autoscale_view()
    return ax


def information_criteria(
    selection: Any, *, criteria: Sequence[str] = ("bic", "aic"), ax: Axes | None = None
) -> Axes:
    """BIC and AIC against the number of components, each minimum marked.

    Parameters
    ----------
    selection : ComponentSelection or xarray.Dataset
        What :func:`dem.select_n_components` returns, or its ``table``.
    criteria : sequence of {"bic", "aic"}, default=("bic", "aic")
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        One line per criterion (its values at every K tried), then one marker per
        criterion at its minimum.
    """
    table = getattr(selection, "table", selection)
    missing = [c for c in criteria if c not in getattr(table, "data_vars", {})]
    if missing or not criteria:
        raise ValueError(
            f"criteria must name columns of the selection table ('bic', 'aic'); got "
            f"{list(criteria)!r}. Pass what dem.select_n_components returns."
        )
    counts = np.asarray(table["n_components"].values)
    order = np.argsort(counts)
    ax = _axes(ax)
    lines = []
    for criterion in criteria:
        values = np.asarray(table[criterion].values, dtype=np.float64)
        (line,) = ax.plot(counts[order], values[order], marker="o", label=criterion.upper())
        lines.append((line, values))
    for line, values in lines:
        best = int(np.argmin(values))
        ax.plot(
            [counts[best]],
            [values[best]],
            marker="*",
            markersize=14,
            linestyle="none",
            color=line.get_color(),
            label=f"lowest {line.get_label()}: K = {counts[best]}",
        )
    ax.set_xlabel("number of components K")
    ax.set_ylabel("information criterion (lower is better)")
    ax.set_xticks(counts[order])
    ax.legend()
    return ax


# --- PPCA and factor analysis ------------------------------------------------------------


def scree(model: Any, *, ax: Axes | None = None) -> Axes:
    """Variance of the fitted model along each component, with the noise level.

    Bars are ``explained_variance_`` (labelled with ``explained_variance_ratio_``);
    the dashed line is the noise variance σ² (for PPCA at the maximum likelihood, the
    mean of the discarded eigenvalues of the sample covariance; for factor analysis,
    the mean of the per-feature variances ψ).

    Parameters
    ----------
    model : PPCA or FactorAnalysis
        Fitted.
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        One bar per component, in order, and one horizontal line.
    """
    _fitted(model, "explained_variance_", "scree")
    variance = np.asarray(model.explained_variance_)
    ratio = np.asarray(model.explained_variance_ratio_)
    noise = float(np.mean(model.noise_variance_))
    positions = np.arange(1, len(variance) + 1)
    ax = _axes(ax)
    bars = ax.bar(positions, variance, color="C0", label="explained variance")
    ax.bar_label(bars, labels=[f"{r:.1%}" for r in ratio], padding=2)
    per_feature = np.ndim(model.noise_variance_) > 0
    ax.axhline(
        noise,
        color="C3",
        linestyle="--",
        label="mean noise variance ψ" if per_feature else "noise variance σ²",
    )
    ax.set_xticks(positions)
    ax.set_xlabel("component")
    ax.set_ylabel("variance")
    ax.set_title(
        f"{type(model).__name__}: {ratio.sum():.1%} of the variance in {len(ratio)} components"
    )
    ax.legend()
    return ax


def imputation(
    model: Any,
    X: Any,
    truth: Any,
    *,
    variable: str | None = None,
    max_rows: int = 2_000,
    random_state: int | np.random.Generator | None = 0,
    ax: Axes | None = None,
) -> Axes:
    """Imputed against true values of the missing entries of ``X``.

    Parameters
    ----------
    model : PPCA or FactorAnalysis
        Fitted.
    X : array-like of shape (n_samples, n_features), dask array, xarray, or path
        The data with NaN for missing values.
    truth : array-like of shape (n_samples, n_features), dask array or xarray
        The complete data (only its entries missing in ``X`` are used).
    variable : str, optional
        Name of X in a Zarr store or xarray Dataset.
    max_rows : int, default=2000
        Rows drawn at random (every missing entry of those rows is plotted).
    random_state : int or numpy.random.Generator, optional
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        A scatter of (true, imputed) per missing entry, then the line y = x. The legend
        gives the root-mean-square error, and that of filling with ``mean_``.
    """
    _fitted(model, "mean_", "imputation")
    sample_dim: str = getattr(model, "sample_dim", "sample")
    feature_dim: str = getattr(model, "feature_dim", "feature")
    data = as_samples(X, variable=variable, sample_dim=sample_dim, feature_dim=feature_dim)
    complete = as_samples(truth, name="truth", sample_dim=sample_dim, feature_dim=feature_dim)
    if data.array.shape != complete.array.shape:
        raise ValueError(
            f"truth has shape {complete.array.shape} but X has {data.array.shape}; pass the "
            "complete version of the same data."
        )
    rows, true_rows = _rows([data, complete], max_rows, random_state)
    missing = np.isnan(rows)
    if not missing.any():
        raise ValueError("The rows drawn have no missing value (NaN) to compare.")
    imputed = np.asarray(model.impute(rows))[missing]
    true = true_rows[missing]
    mean_fill = np.broadcast_to(model.mean_, rows.shape)[missing]
    rmse = float(np.sqrt(np.mean((imputed - true) ** 2)))
    mean_rmse = float(np.sqrt(np.mean((mean_fill - true) ** 2)))
    ax = _axes(ax)
    ax.scatter(
        true,
        imputed,
        s=6,
        alpha=0.5,
        linewidths=0,
        label=f"{type(model).__name__}: RMSE {rmse:.3g} (mean fill: {mean_rmse:.3g})",
    )
    low, high = float(min(true.min(), imputed.min())), float(max(true.max(), imputed.max()))
    ax.plot([low, high], [low, high], color="k", linewidth=1, label="y = x")
    ax.set_xlabel("true value")
    ax.set_ylabel("imputed value")
    ax.set_title(f"{missing.sum()} missing entries in {len(rows)} rows")
    ax.legend()
    return ax


# --- censored regression ------------------------------------------------------------------


def censored_fit(
    model: Any,
    X: Any,
    y: Any,
    *,
    variable: str | None = None,
    left: float | None = None,
    right: float | None = None,
    max_rows: int = 2_000,
    random_state: int | np.random.Generator | None = 0,
    ax: Axes | None = None,
) -> Axes:
    """Observed outcome against the fitted latent mean, censored rows marked.

    The x axis is the fitted latent mean ``intercept_ + X coef_``; the lines are the
    latent mean itself (y = x) and the expected observed outcome E[y | x], which
    bends to the censoring limits.

    Parameters
    ----------
    model : CensoredRegression
        Fitted.
    X : array-like of shape (n_samples, n_features), dask array, xarray, or path
    y : array-like of shape (n_samples,), dask array, xarray, or str
        The observed outcome; a string names a variable of X's store or Dataset.
    variable : str, optional
        Name of X in a Zarr store or xarray Dataset.
    left, right : float, optional
        Censoring limits; by default those of the fit (``fit_limits_``). They must be
        scalars: a row is left-censored where ``y <= left``, else right-censored where
        ``y >= right``.
    max_rows : int, default=2000
    random_state : int or numpy.random.Generator, optional
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        Scatters of the uncensored, the left-censored and the right-censored rows
        (each present only if such rows were drawn), then the lines E[y | x] and
        y = x.
    """
    _fitted(model, "coef_", "censored_fit")
    limits = []
    given_limits = zip(("left", "right"), (left, right), model.fit_limits_, strict=True)
    for name, given, fitted in given_limits:
        value = fitted if given is None else given
        if value is None:
            raise ValueError(
                f"The model was fitted with per-observation {name} limits; pass {name}= (a "
                "number) to mark the censored rows."
            )
        limits.append(float(value))
    lo, hi = limits
    x = as_samples(
        X,
        variable=variable,
        sample_dim=model.sample_dim,
        feature_dim=model.feature_dim,
    )
    if isinstance(y, str):
        outcome = as_samples(X, variable=y, sample_dim=model.sample_dim, name=y, ndim=1)
    else:
        outcome = as_samples(y, sample_dim=model.sample_dim, name="y", ndim=1)
    rows, observed = _rows([x, outcome], max_rows, random_state)
    latent = np.asarray(model.predict(rows))
    expected = np.asarray(model.predict_expected(rows, left=lo, right=hi))
    below = observed <= lo
    above = ~below & (observed >= hi)
    exact = ~below & ~above & ~np.isnan(observed)
    ax = _axes(ax)
    groups = (
        (exact, "o", "C0", "uncensored"),
        (below, "v", "C1", f"left-censored (y ≤ {lo:g})"),
        (above, "^", "C2", f"right-censored (y ≥ {hi:g})"),
    )
    for rows_in, marker, color, label in groups:
        if rows_in.any():
            ax.scatter(
                latent[rows_in],
                observed[rows_in],
                marker=marker,
                s=10,
                alpha=0.5,
                color=color,
                linewidths=0,
                label=f"{label}: {int(rows_in.sum())}",
            )
    order = np.argsort(latent)
    ax.plot(latent[order], expected[order], color="k", linewidth=2, label="E[y | x] (fitted)")
    ax.plot(
        latent[order],
        latent[order],
        color="k",
        linestyle="--",
        linewidth=1,
        label="latent mean (y* = x·β)",
    )
    ax.set_xlabel("fitted latent mean intercept + x·coef")
    ax.set_ylabel("observed y")
    ax.set_title(f"{type(model).__name__}: {len(rows)} rows")
    ax.legend()
    return ax
