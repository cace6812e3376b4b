"""Censored (Tobit) regression by EM: the E-step, M-step, standard errors, and the estimator.

The model is the linear regression ``y* = x β + σ ε`` with standard normal ``ε``, where
the latent ``y*`` of each row is either observed exactly or only known to lie in an
interval ``[lower, upper]`` (one end may be infinite: left or right censoring).

Every row is reduced to such an interval (see :func:`~.kernels.interval_bounds`; an exact value
is the interval ``[y, y]``). The E-step replaces ``y*`` by its conditional moments
given the interval, which are truncated-normal moments computed from ``log Φ`` and the
inverse Mills ratio (:func:`~.kernels.truncated_normal`), stable for any standardised limits. The
statistics of one chunk, taken about the current linear predictor ``μ = x β``, are

- ``sum_x_resid`` = Σ x E[y* − μ]  (a matrix-vector product per chunk),
- ``sum_resid_sq`` = Σ E[(y* − μ)²],
- ``n`` and ``loglik``,
- ``sum_xxT`` = Σ x xᵀ, only in the first pass: the M-step stores it in the parameters
  (as ``mean_xxT``), and later E-steps, which see it there, skip it.

With an intercept, ``x`` is ``(1, x_1, ..., x_p)`` throughout. The M-step is closed
form: ``β ← β + (XᵀX)⁻¹ Σ x E[y* − μ]`` and ``σ² ← (Σ E[(y* − μ)²] − Δβᵀ Σ x E[y* − μ]) / n``,
which is the usual ``(XᵀX)⁻¹ Xᵀ E[y*]`` update written about ``μ`` so nothing cancels.

Standard errors of ``(β, log σ)`` come from the analytic Hessian of the observed
log-likelihood at the optimum, summed over chunks in one more pass
(:meth:`~.model.CensoredModel.information`).

The modules: ``kernels`` (the maths on blocks of rows, numpy and scipy only), ``model``
(:class:`~.model.CensoredModel`, the passes the engine calls), ``init`` (the least-squares
start), ``summary`` (the R-style table, the marginal effects) and ``estimator``
(:class:`~.estimator.CensoredRegression`, the user API).
"""

from dem.models.censored.estimator import CensoredRegression
from dem.models.censored.summary import CensoredSummary, MarginalEffects

__all__ = ["CensoredRegression", "CensoredSummary", "MarginalEffects"]
