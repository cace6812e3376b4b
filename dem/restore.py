"""Rebuild a fitted estimator from its checkpoint.

A checkpoint names its model and holds the configuration and the parameters of every
iteration of every restart. :func:`from_checkpoint` picks the estimator class from
:data:`dem.registry.REGISTRY` (the entry with that checkpoint model name), passes it the
configuration entries that are constructor arguments, and hands the parameters of the
best restart (the highest final log-likelihood, as ``fit`` chooses) to the estimator's
``_set_params``. So a registered model needs only an estimator that has
``_set_params(params)`` (the inverse of the parameters it checkpoints). Where the
configuration a model checkpoints is not its estimator's arguments verbatim, the
entry's ``config_reader`` translates it.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import xarray as xr

from dem import checkpoint as ckpt
from dem import storage
from dem.checkpoint import CheckpointMismatchError, check_format, load_checkpoint
from dem.model import Params
from dem.registry import REGISTRY, by_checkpoint_model, load


def censored_config(config: dict[str, Any]) -> dict[str, Any]:
    """Limits as :class:`~dem.models.censored.model.CensoredModel` writes them: a number, None
    (no limit) or ``"per-observation"``; back to the estimator's scalar defaults and its
    ``fit_limits_`` (None where they were per-observation)."""
    fitted = tuple(
        None if value == "per-observation" else none if value is None else float(value)
        for value, none in ((config["left"], -math.inf), (config["right"], math.inf))
    )
    return {
        "left": -math.inf if fitted[0] is None else fitted[0],
        "right": math.inf if fitted[1] is None else fitted[1],
        "fit_limits_": fitted,
    }


def estimator_class(model: str) -> type:
    """The estimator class that writes checkpoints of ``model`` (from :mod:`dem.registry`)."""
    entry = by_checkpoint_model(model)
    if entry is None:
        known = sorted(e.checkpoint_model for e in REGISTRY.values())
        raise CheckpointMismatchError(
            f"No estimator is registered for checkpoints of model {model!r}; known models are "
            f"{known}. Upgrade dem or restore it with the library that wrote it."
        )
    return entry.estimator_class()


def _config_reader(model: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The registered function that translates ``model``'s checkpointed configuration."""
    entry = by_checkpoint_model(model)
    if entry is None or entry.config_reader is None:
        return lambda config: {}
    reader: Callable[[dict[str, Any]], dict[str, Any]] = load(entry.config_reader)
    return reader


def checkpoint_header(
    path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Model name, configuration and data fingerprint of a checkpoint (no arrays read);
    ``path`` may be an fsspec URL, read with ``storage_options``."""
    from dem.remote import open_for_reading

    try:
        root, path, _ = open_for_reading(path, storage_options)
        attrs = dict(root.attrs)
    except FileNotFoundError:
        raise
    except Exception as exc:  # zarr raises several types for unreadable stores
        shown = storage.location(path) if storage.is_remote(path) else os.fspath(path)
        raise CheckpointMismatchError(
            f"{shown!r} is not a readable Zarr group: "
            f"{storage.redact(str(exc), storage_options, path)}"
        ) from exc
    header = attrs.get("dem")
    if not isinstance(header, dict) or "model" not in header:
        raise CheckpointMismatchError(f"{path!r} is not a dem checkpoint.")
    check_format(path, header)
    return {**header, "latest": attrs.get("latest")}


def load_runs(
    path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
) -> dict[int, xr.Dataset]:
    """Every restart with at least its initial parameters, as :func:`load_checkpoint` reads it."""
    header = checkpoint_header(path, storage_options)
    n_init = int(header["config"].get("n_init", 1))
    runs = {}
    for run in range(n_init):
        try:
            runs[run] = load_checkpoint(path, run=run, storage_options=storage_options)
        except ValueError:  # this restart has not started yet
            continue
    if not runs:
        raise CheckpointMismatchError(f"Checkpoint {_shown(path)!r} holds no complete iteration.")
    return runs


def final_loglik(dataset: xr.Dataset) -> float:
    """The last finite log-likelihood of a run's trace (-inf when it has none)."""
    trace = dataset["loglik"].values
    finite = trace[np.isfinite(trace)]
    return float(finite[-1]) if len(finite) else -math.inf


def best_run(runs: dict[int, xr.Dataset]) -> int:
    """The restart ``fit`` would keep: the highest final log-likelihood (first on ties)."""
    return max(runs, key=lambda run: (final_loglik(runs[run]), -run))


def _shown(path: str | os.PathLike[str]) -> str:
    """How messages name the checkpoint ``path``: a URL without credentials."""
    return storage.location(path) if storage.is_remote(path) else os.fspath(path)


def load_final(
    path: str | os.PathLike[str],
    run: int,
    iteration: int,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The results :meth:`Checkpoint.write_final` recorded for ``run`` at ``iteration``
    (arrays under their names, the recorded attributes under theirs), or None: none
    recorded, recorded for another run or iteration (the fit went on), or damaged.
    """
    from dem.remote import open_for_reading

    try:
        root, _, _ = open_for_reading(path, storage_options)
        group = ckpt._group(root, "final")
        attrs = dict(group.attrs)
        if not attrs.get("complete") or (attrs.get("run"), attrs.get("iteration")) != (
            run,
            iteration,
        ):
            return None
        values: Params = {name: np.asarray(array[...]) for name, array in group.arrays()}
    except Exception:  # no final group, or one that cannot be read: the fit's results only
        return None
    if ckpt._checksum(values) != attrs.get("checksum"):
        return None
    recorded: Any = attrs.get("attributes") or {}
    return {**values, **dict(recorded)}


def from_checkpoint(
    path: str | os.PathLike[str],
    *,
    run: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Any:
    """A fitted estimator with the parameters stored in a checkpoint.

    Parameters
    ----------
    path : str or path-like
        The checkpoint store written by ``fit(checkpoint=...)`` or ``dem fit``: a local
        path or an fsspec URL (``s3://...``).
    run : int, optional
        Which restart to restore; by default the best one.
    storage_options : dict, optional
        Options of the URL's filesystem (credentials, endpoint).

    Returns
    -------
    estimator
        An instance of the class registered for the checkpoint's model, with its
        configuration and fitted attributes (``converged_``, ``n_iter_``,
        ``lower_bounds_``, ``lower_bound_``, ``n_features_in_`` and the model's
        parameters; and what the fit computed after its last iteration where the
        checkpoint holds it for that iteration, such as a censored regression's
        standard errors and term names, so that its ``summary()`` works).

    Warns
    -----
    UserWarning
        When the chosen restart had not converged (an interrupted or capped fit), unless
        its estimator's ``_finished_unconverged()`` says that it made every iteration it
        was to make without testing convergence (scikit-learn's LDA with
        ``evaluate_every <= 0``).
    """
    header = checkpoint_header(path, storage_options)
    cls = estimator_class(header["model"])
    runs = (
        load_runs(path, storage_options)
        if run is None
        else {run: load_checkpoint(path, run=run, storage_options=storage_options)}
    )
    chosen = best_run(runs)
    dataset = runs[chosen]
    accepted = inspect.signature(cls).parameters
    config = dict(header["config"])
    translated = _config_reader(header["model"])(config)
    config.update({k: v for k, v in translated.items() if not k.endswith("_")})
    estimator = cls(**{k: v for k, v in config.items() if k in accepted})
    for name, value in translated.items():
        if name.endswith("_"):
            setattr(estimator, name, value)
    fingerprint = json.loads(dataset.attrs["fingerprint"])
    first: Any = next(iter(fingerprint.values()), {})
    if isinstance(first, dict) and len(first.get("shape", ())) == 2:
        # samples × features data; ``_set_params`` may need it, and may correct it
        estimator.n_features_in_ = int(first["shape"][1])
    estimator._set_params(
        {name: dataset[name].values for name in dataset.data_vars if name != "loglik"}
    )
    lower_bounds = [float(v) for v in dataset["loglik"].values[1:]]
    estimator.converged_ = bool(dataset.attrs["converged"])
    estimator.n_iter_ = int(dataset.attrs["last_iteration"])
    estimator.lower_bounds_ = lower_bounds
    estimator.lower_bound_ = lower_bounds[-1] if lower_bounds else -math.inf
    final = load_final(path, chosen, estimator.n_iter_, storage_options)
    if final is not None and hasattr(estimator, "_set_final"):
        estimator._set_final(final)
    finished = getattr(estimator, "_finished_unconverged", None)  # a plan of max_iter passes
    if not estimator.converged_ and not (finished is not None and finished()):
        warnings.warn(
            f"Checkpoint {_shown(path)!r}: restart {chosen} stopped after iteration "
            f"{estimator.n_iter_} without converging; its latest parameters are used. Resume the "
            "fit to finish it.",
            UserWarning,
            stacklevel=2,
        )
    return estimator
