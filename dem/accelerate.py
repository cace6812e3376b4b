"""Steps of EM: plain, SQUAREM-accelerated, and α-EM.

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

α-EM (Matsuyama 2003; :func:`alpha_momentum` has the derivation) adds to each EM step
``β = (1 + α) / 2`` times the previous one, in the same flat vector; a point the
projection would have to move, or whose log-likelihood is below its predecessor's, is
replaced by the plain EM step, so the log-likelihood never decreases either.
"""

from __future__ import annotations

import functools
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


ALPHA_CYCLE = 30
"""Passes in one α-EM cycle (a checkpointed step): one plain EM point, then momentum points."""


def alpha_em(
    model: EMModel,
    params: Params,
    previous: float,
    tol: float,
    *,
    alpha: float,
    cycle: int = ALPHA_CYCLE,
) -> StepGenerator:
    """One α-EM cycle of up to ``cycle`` passes (Matsuyama 2003; see :func:`alpha_momentum`).

    Evaluates ``params`` (θ₀), then the points
    ``θ_{k+1} = unpack(F(θ_k) + β (F(θ_k) − F(θ_{k−1})))`` with ``β = (1 + α) / 2`` and
    ``F(θ_{−1}) = θ₀`` (the first momentum step uses the plain EM step from θ₀). A point whose
    log-likelihood is below its predecessor's is rejected and the cycle ends with the
    plain EM step from the predecessor, so the log-likelihood never decreases. The cycle
    returns the plain EM step from its last point, the next cycle's θ₀; it converges by
    the plain EM rule on its first pass only, where θ₀ is a plain EM step from the
    previous cycle's last point (a momentum point's small change is no sign of a
    stationary point). ``alpha=-1`` (β = 0) is plain EM: use :func:`plain` for its bits.
    """
    beta = alpha_momentum(alpha)
    result, loglik = yield params
    result = _checked(model, result, loglik)
    passes = 1
    if has_converged(model, loglik - previous, tol, params, result):
        return Step(result, loglik, passes, True)
    earlier = model.pack(params)  # type: ignore[attr-defined]
    while passes < cycle:
        current = model.pack(result)  # type: ignore[attr-defined]
        vector = current + beta * (current - earlier)
        try:
            candidate = model.unpack(vector, result)  # type: ignore[attr-defined]
        except (ValueError, np.linalg.LinAlgError):
            break
        if not np.allclose(model.pack(candidate), vector, rtol=1e-9, atol=0.0):  # type: ignore[attr-defined]
            break  # outside the valid parameters: the plain EM step instead of a projection
        following, loglik_candidate = yield candidate
        passes += 1
        if isinstance(following, Exception) or not loglik_candidate >= loglik:
            break  # EM's guarantee: keep the plain EM step from the last accepted point
        earlier, change = current, loglik_candidate - loglik
        result, loglik = _checked(model, following, loglik_candidate), loglik_candidate
        if has_converged(model, change, tol, candidate, result):
            break  # perhaps converged: the next cycle's plain EM step says
    return Step(result, loglik, passes, False)


def alpha_momentum(alpha: float) -> float:
    """β = (1 + α) / 2, the weight of the past EM step in the α-EM update.

    Source: Matsuyama (2003), "The α-EM algorithm: surrogate likelihood maximization
    using α-logarithmic information measures", IEEE Trans. Inf. Theory 49(3):692-706.
    It replaces the logarithm of EM's surrogate by the α-logarithm
    ``L_α(r) = 2/(1+α) (r^{(1+α)/2} − 1)`` of the complete-data likelihood ratio
    ``r = p(x,z|θ)/p(x,z|θ')`` (α = −1 is the logarithm: plain EM), shows that the
    α-surrogate still minorises the observed likelihood ratio, and that its update
    matrices converge faster than EM's for a range of α; the α-HMM (Matsuyama 2011,
    IJCNN, doi:10.1109/IJCNN.2011.6033304) makes the update practical with an
    "iteration index shift": terms of the one-step past iterate, stored from the
    previous M-step, stand in for those of the point being sought.

    What is implemented (our derivation from that construction, model-agnostic, in the
    flat vector of ``pack``): since ``r = [p(x|θ)/p(x|θ')] [p(z|x,θ)/p(z|x,θ')]``, the
    α-surrogate's gradient averages the complete-data score over the posteriors at θ' and
    at θ with weights ``1 − β`` and ``β``, so to first order its maximiser solves
    ``θ⁺ = β M(θ⁺) + (1 − β) M(θ')`` (M: the EM map), whose linearised rate for an EM
    eigenvalue λ is ``(1 − β) λ / (1 − β λ)``. The index shift (``M(θ⁺)`` extrapolated
    from the last two EM steps) gives the momentum update
    ``θ_{t+1} = M(θ_t) + β (M(θ_t) − M(θ_{t−1}))``, whose slowest mode contracts as
    ``1 − (1 − λ)/(1 − β)`` for λ near 1, as the exact α-EM's does to first order: up to
    ``2 / (1 − α)`` times fewer passes where EM crawls, and no gain where EM is fast.

    Raises
    ------
    ValueError
        Unless ``-1 <= alpha < 1`` (α ≥ 1 makes the surrogate no minoriser and the
        momentum undamped; α < −1 slows EM down).
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)):
        raise ValueError(f"alpha must be a real number in [-1, 1); got {alpha!r}.")
    if not -1.0 <= float(alpha) < 1.0:
        raise ValueError(
            f"alpha must be in [-1, 1) (-1 is plain EM; larger alpha takes larger steps); "
            f"got {alpha!r}."
        )
    return (1.0 + float(alpha)) / 2.0


DEFAULT_ALPHA = 0.9
"""The default α of ``accelerate="alpha"`` (β = 0.95; see ``benchmarks/accelerate.py``)."""

STEPS: dict[str, Callable[[EMModel, Params, float, float], StepGenerator]] = {
    "none": plain,
    "squarem": squarem,
    "alpha": functools.partial(alpha_em, alpha=DEFAULT_ALPHA),
}

StepFactory = Callable[[EMModel, Params, float, float, int], StepGenerator]


def step_factory(accelerate: str, alpha: float = DEFAULT_ALPHA) -> StepFactory:
    """``make(model, params, previous, tol, remaining)``: the next step of ``accelerate``.

    ``remaining`` is the number of passes ``max_iter`` still allows; an α-EM cycle takes
    at most that many (and at most :data:`ALPHA_CYCLE`). ``"alpha"`` with ``alpha=-1`` is
    :func:`plain`. Raises ValueError for an unknown ``accelerate`` or, with ``"alpha"``,
    a bad ``alpha``.
    """
    if accelerate not in STEPS:
        raise ValueError(f"accelerate must be one of {sorted(STEPS)}; got {accelerate!r}.")
    step = STEPS[accelerate]
    if accelerate == "alpha" and alpha_momentum(alpha) > 0.0:

        def make(
            model: EMModel, params: Params, previous: float, tol: float, remaining: int
        ) -> StepGenerator:
            cycle = min(ALPHA_CYCLE, max(remaining, 1))
            return alpha_em(model, params, previous, tol, alpha=float(alpha), cycle=cycle)

        return make
    if accelerate == "alpha":
        step = plain

    def make_other(
        model: EMModel, params: Params, previous: float, tol: float, remaining: int
    ) -> StepGenerator:
        return step(model, params, previous, tol)

    return make_other


def check_accelerate(model: Any, accelerate: str) -> None:
    """Raise a clear error for an unknown method or a model that cannot extrapolate."""
    if accelerate not in STEPS:
        raise ValueError(f"accelerate must be one of {sorted(STEPS)}; got {accelerate!r}.")
    if accelerate in ("squarem", "alpha") and not (
        hasattr(model, "pack") and hasattr(model, "unpack")
    ):
        name = "SQUAREM" if accelerate == "squarem" else "α-EM"
        raise ValueError(
            f"{type(model).__name__} has no pack/unpack, so {name} cannot extrapolate its "
            "parameters; use accelerate='none'."
        )
