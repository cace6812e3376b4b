"""Mixtures of factor analyzers and of probabilistic PCA, by EM, exact with missing values.

The model
---------
Component ``k`` (weight ``w_k``) draws ``x = W_k z + μ_k + ε`` with factors
``z ~ N(0, I_q)`` and noise ``ε ~ N(0, Ψ_k)``: ``Ψ_k`` diagonal is a mixture of factor
analyzers (Ghahramani & Hinton 1996), ``Ψ_k = σ_k² I`` a mixture of probabilistic PCA
(Tipping & Bishop 1999). NaN entries are missing at random, so the observed part of a
row is a mixture of ``N(μ_kO, W_kO W_kOᵀ + Ψ_kO)``, and that is the likelihood EM
maximises.

The E-step
----------
Densities never form a d × d matrix (Woodbury): with ``M_k = I + W_kᵀ Ψ_k⁻¹ W_k`` and
``u_k = W_kᵀ Ψ_k⁻¹ (x − μ_k)``, ``log N = −½ (Σ log 2πψ_kj + log det M_k +
(x − μ_k)ᵀ Ψ_k⁻¹ (x − μ_k) − u_kᵀ M_k⁻¹ u_k)``, and the factors' posterior under
component ``k`` is ``N(M_k⁻¹ u_k, M_k⁻¹)``. For a block of complete rows, about a fixed
shift ``c`` (the data mean of the start, carried in the parameters), every component's
``u_k`` and cross term come from one matrix product of the block with a
(K·q + K) × d matrix, and the squared Mahalanobis terms from one more with the
inverse noise: O(K·d·q) per row. A row with missing values has its own ``M_k`` per
component, computed with the PPCA kernels (:mod:`dem.models.ppca.kernels`),
O(K·(d·q² + q³)) per row. The responsibilities ``r_k`` follow, and the chunk adds, per
component and about ``c``: ``count`` (Σ r where each feature is observed), ``sum_x2``
(Σ r (x − c)²), ``sum_xz`` (Σ r (x − c) E[z̃]ᵀ with ``z̃ = [z, 1]``), ``sum_zz``
(Σ r E[z̃ z̃ᵀ]), and with missing values ``sum_zz_missing`` (Σ r E[z̃ z̃ᵀ] over the rows
where each feature is missing).

The M-step
----------
The weights are the components' shares of the responsibility. Each component's mean is
estimated jointly with its loadings, as the intercept of the regression of ``x − c`` on
``z̃`` (Ghahramani & Hinton's augmented loading matrix), over the rows where each
feature is observed, weighted by ``r_k``; the noise is the mean expected squared
residual (per feature, or over all observed entries). That is the exact EM of the
complete data (observed values, component labels and factors) and never decreases the
likelihood. As in :mod:`dem.models.ppca`, the factors' fitted mean and covariance under
each component (parameter expansion, Liu, Rubin & Wu 1998) are folded back into the
loadings and mean, which removes EM's slow mode in the scale of the loadings.

Rules
-----
- Noise variances are floored at ``reg_noise`` times the mean variance of the features
  (the exact M-step under that constraint; the variance is that of all the data, which
  does not change between iterations, so EM stays monotone).
- A component with less than ``EMPTY_COMPONENT`` (1e-10) of the rows' responsibility
  keeps its loadings, mean and noise; its weight follows the data.
- A row with no observed value is left out of the fit; it scores 0.
- A feature with no observed value is a ``ValueError`` after the first pass.
- The loadings are identified up to a rotation per component; EM keeps its own in the
  parameters (and checkpoints), the estimator reports the canonical one.

Modules
-------
:mod:`~dem.models.factor_mixture.kernels` (block maths), :mod:`~dem.models.factor_mixture.model`
(:class:`~dem.models.factor_mixture.model.FactorMixtureModel`),
:mod:`~dem.models.factor_mixture.init` (k-means or k-means‖, then each cluster's PPCA) and
:mod:`~dem.models.factor_mixture.estimator` (:class:`MixtureOfFactorAnalyzers`).
"""

from dem.models.factor_mixture.estimator import MixtureOfFactorAnalyzers
from dem.models.factor_mixture.init import INIT_METHODS
from dem.models.factor_mixture.model import NOISE_TYPES

__all__ = ["INIT_METHODS", "NOISE_TYPES", "MixtureOfFactorAnalyzers"]
