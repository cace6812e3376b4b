"""dem: Expectation-Maximization for latent-variable models on Dask and Zarr."""

from dem.checkpoint import (
    CheckpointError,
    CheckpointLockedError,
    CheckpointMismatchError,
    CheckpointWriteError,
    load_checkpoint,
)
from dem.engine import ConvergenceWarning, EMResult, IterationInfo, fit
from dem.estimator import NotFittedError
from dem.models.censored import CensoredRegression
from dem.models.factor_mixture import MixtureOfFactorAnalyzers
from dem.models.hmm import CategoricalHMM, GaussianHMM
from dem.models.mixture import ComponentSelection, GaussianMixture, select_n_components
from dem.models.ppca import PPCA, FactorAnalysis
from dem.restore import from_checkpoint

__all__ = [
    "PPCA",
    "CategoricalHMM",
    "CensoredRegression",
    "CheckpointError",
    "CheckpointLockedError",
    "CheckpointMismatchError",
    "CheckpointWriteError",
    "ComponentSelection",
    "ConvergenceWarning",
    "EMResult",
    "FactorAnalysis",
    "GaussianHMM",
    "GaussianMixture",
    "IterationInfo",
    "MixtureOfFactorAnalyzers",
    "NotFittedError",
    "fit",
    "from_checkpoint",
    "load_checkpoint",
    "select_n_components",
]

__version__ = "0.1.0"
