"""Steps of EM: plain, and SQUAREM-accelerated.

A step is a generator. It yields the parameters it needs one EM pass at, and
receives back ``(F(params), loglik(params))``, where ``F`` is one E-step plus M-step
over all the data (``F(params)`` is an exception instead when the M-step failed).
It returns a :class:`Step`. The engine drives the steps of several runs in lockstep,
so one read of each chunk serves every run.

SQUAREM (Varadhan & Roland 2008, step length SqS3) extrapolates in parameter space
from two EM steps. The model maps its parameters to a flat vector (``pack``) and a
vector back onto valid parameters (``unpack``: weights on the simplex, positive
definite covariances, positive variances). When the extrapolated point's
log-likelihood is below that of the plain EM path, the step falls back to the plain
EM result, so the log-likelihood never decreases from step to step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from dem.model import EMModel, Params, remedy

Evaluation = tuple[Params | Exception, float]
StepGenerator = Generator[Params, Evaluation, "Step"]


@dataclass(frozen=True)
class Step:
    """The outcome of one step.

    ``params`` are one EM step past the point whose log-likelihood is ``loglik`` (as
    in plain EM, where the log-likelihood reported for an iteration is that of the
    parameters it started from). ``passes`` counts reads of the data.
    """

    params: Params
    loglik: float
    passes: int
    converged: bool


def _checked(model: EMModel, result: Params | Exception, loglik: float) -> Params:
    if not math.isfinite(loglik):
        raise FloatingPointError(f"The log-likelihood became {loglik}. {remedy(model)}")
    if isinstance(result, Exception):
        raise result
    return result


def has_converged(
    model: EMModel, change: float, tol: float, previous: Params, params: Params
) -> bool:
    """The model's own stopping rule when it defines ``converged``, else ``|change| < tol``.

    ``change`` is the change of the mean log-likelihood over the EM step that took
    ``previous`` to ``params``. A model whose log-likelihood flattens long before its
    parameters settle (EM that crawls, as under heavy censoring) may define
    ``converged(change, tol, previous, params) -> bool`` to stop on its parameters.
    """
    rule = getattr(model, "converged", None)
    if rule is None:
        return abs(change) < tol
    return bool(rule(change, tol, previous, params))


def plain(model: EMModel, params: Params, previous: float, tol: float) -> StepGenerator:
    """One EM iteration: converged when the log-likelihood moved less than ``tol``."""
    updated, loglik = yield params
    updated = _checked(model, updated, loglik)
    return Step(updated, loglik, 1, has_converged(model, loglik - previous, tol, params, updated))


def squarem(model: EMModel, params: Params, previous: float, tol: float) -> StepGenerator:
    """One SQUAREM cycle: two EM steps, an extrapolation, and one EM step from there.

    Converges by the plain EM rule on either of the two EM steps.
    """
    first, loglik0 = yield params
    first = _checked(model, first, loglik0)
    if has_converged(model, loglik0 - previous, tol, params, first):
        return Step(first, loglik0, 1, True)
    second, loglik1 = yield first
    second = _checked(model, second, loglik1)
    if has_converged(model, loglik1 - loglik0, tol, first, second):
        return Step(second, loglik1, 2, True)
    x0, x1, x2 = (model.pack(p) for p in (params, first, second))  # type: ignore[attr-defined]
    r = x1 - x0
    v = x2 - x1 - r
    v_norm = float(np.dot(v, v))
    if v_norm == 0.0:
        return Step(second, loglik1, 2, False)
    alpha = min(-math.sqrt(float(np.dot(r, r)) / v_norm), -1.0)
    try:
        candidate = model.unpack(x0 - 2.0 * alpha * r + alpha**2 * v, params)  # type: ignore[attr-defined]
    except (ValueError, np.linalg.LinAlgError):
        return Step(second, loglik1, 2, False)
    stabilised, loglik_candidate = yield candidate
    if isinstance(stabilised, Exception) or not loglik_candidate >= loglik0:
        return Step(second, loglik1, 3, False)  # EM's guarantee: keep the plain EM path
    return Step(stabilised, loglik_candidate, 3, False)


STEPS: dict[str, Callable[[EMModel, Params, float, float], StepGenerator]] = {
    "none": plain,
    "squarem": squarem,
}


def check_accelerate(model: Any, accelerate: str) -> None:
    """Raise a clear error for an unknown method or a model that cannot extrapolate."""
    if accelerate not in STEPS:
        raise ValueError(f"accelerate must be one of {sorted(STEPS)}; got {accelerate!r}.")
    if accelerate == "squarem" and not (hasattr(model, "pack") and hasattr(model, "unpack")):
        raise ValueError(
            f"{type(model).__name__} has no pack/unpack, so SQUAREM cannot extrapolate its "
            "parameters; use accelerate='none'."
        )
