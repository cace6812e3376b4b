"""Gaussian mixture: the E-step, M-step and initialisation, and the estimator.

The E-step of one chunk walks it in row blocks that stay in cache, held transposed
(see :mod:`dem.models.gaussian`); for each block it computes the block's second
moments, the weighted log densities (for full covariances one matrix product for all
components), the responsibilities, and adds the sufficient statistics ``resp_sum``
(Σ r), ``sum_x`` (Σ r (x - c)) and ``scatter`` (Σ r (x - c)(x - c)ᵀ, or its diagonal)
about the shift ``c``: a fixed reference point (the mean of the initialisation sample)
that travels with the parameters, so that the statistics of different iterations are
comparable (online EM blends them). The M-step reproduces scikit-learn's formulas
exactly, including its ``10 * eps`` added to the component counts.

Modules: :mod:`.kernels` (the block maths: responsibilities, the M-step),
:mod:`.model` (:class:`~dem.models.mixture.model.MixtureModel`, what the engine
calls), :mod:`.init` (starting parameters), :mod:`.estimator` (:class:`GaussianMixture`)
and :mod:`.selection` (:func:`select_n_components`, every K in the same passes).
"""

from dem.models.mixture.estimator import GaussianMixture
from dem.models.mixture.init import INIT_METHODS
from dem.models.mixture.selection import ComponentSelection, select_n_components

__all__ = ["INIT_METHODS", "ComponentSelection", "GaussianMixture", "select_n_components"]
