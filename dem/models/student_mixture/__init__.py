"""Mixtures of multivariate t distributions (Peel & McLachlan 2000), fitted by ECM.

The Gaussian mixture's machinery (:mod:`dem.models.mixture`: distances, initialisation,
restarts, SQUAREM packing) with the latent scale weights of the t distribution.

Modules: :mod:`.kernels` (t log densities, scale weights, the ECM steps including the
degrees of freedom's root solve), :mod:`.model`
(:class:`~dem.models.student_mixture.model.StudentMixtureModel`, what the engine calls)
and :mod:`.estimator` (:class:`StudentMixture`).
"""

from dem.models.student_mixture.estimator import StudentMixture

__all__ = ["StudentMixture"]
