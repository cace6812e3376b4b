"""Variational Bayesian Gaussian mixture: scikit-learn's ``BayesianGaussianMixture`` at scale.

The E-step is the Gaussian mixture's (:mod:`dem.models.mixture`): a map over chunks
giving the additive statistics ``resp_sum``, ``sum_x`` and ``scatter``, with the
parameters' ``log_weights`` (expected log weights and the Wishart expected log-determinant
and precision terms) in place of log(weights), and each chunk's Σ r log r computed from
its statistics. The variational M-step and scikit-learn's lower bound run on the client
from the reduced statistics; the engine traces the lower bound and stops on its change
(the model's ``lower_bound`` hook, :mod:`dem.model`).

Modules: :mod:`.kernels` (the maths on statistics), :mod:`.model`
(:class:`~dem.models.bayesian_mixture.model.BayesianMixtureModel`, what the engine
calls), :mod:`.init` (priors and the first parameters) and :mod:`.estimator`
(:class:`BayesianGaussianMixture`).
"""

from dem.models.bayesian_mixture.estimator import BayesianGaussianMixture
from dem.models.bayesian_mixture.kernels import PRIOR_TYPES

__all__ = ["PRIOR_TYPES", "BayesianGaussianMixture"]
