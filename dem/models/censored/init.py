"""The start of censored regression's EM: least squares on a sample of rows."""

from __future__ import annotations

import math

import numpy as np

from dem.model import Block, Params
from dem.models.censored.kernels import finite, interval_bounds
from dem.models.censored.model import CensoredModel


def initial_params(model: CensoredModel, block: Block) -> Params:
    """Least squares on a sample, each censored value replaced by its limit.

    Interval-censored values are replaced by the interval's midpoint. Attenuated by
    censoring, but a start EM corrects.
    """
    y, left, right = model.targets(block)
    lower, upper = interval_bounds(y, left, right)
    both = np.isfinite(lower) & np.isfinite(upper)
    filled = np.where(
        both, 0.5 * (finite(lower) + finite(upper)), np.where(np.isfinite(lower), lower, upper)
    )
    x = np.asarray(block["X"], dtype=np.float64)
    design = np.column_stack([np.ones(len(x)), x]) if model.fit_intercept else x
    # rows with NaN or infinity are left to the first E-step's check, which names them
    usable = np.all(np.isfinite(design), axis=1) & np.isfinite(filled)
    design, filled = design[usable], filled[usable]
    if len(filled) == 0:
        return {"coef": np.zeros(design.shape[1]), "scale": np.asarray(1.0)}
    # columns brought to a common norm first: lstsq drops a column far smaller than the
    # others (the intercept's, for X of scale 1e37), so the start would depend on the scale
    norms = np.linalg.norm(design, axis=0)
    norms = np.where(norms > 0.0, norms, 1.0)
    coef = np.linalg.lstsq(design / norms, filled, rcond=None)[0] / norms
    rms = math.sqrt(float(np.mean((filled - design @ coef) ** 2)))
    spread = float(np.std(filled))
    scale = rms if rms > 1e-8 * max(spread, 1e-300) else (spread if spread > 0 else 1.0)
    return {"coef": coef, "scale": np.float64(scale)}
