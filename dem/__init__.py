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
from dem.models.bayesian_mixture import BayesianGaussianMixture
from dem.models.censored import CensoredRegression
from dem.models.factor_mixture import MixtureOfFactorAnalyzers
from dem.models.hmm import GMMHMM, CategoricalHMM, GaussianHMM
from dem.models.lda import LatentDirichletAllocation
from dem.models.mixture import ComponentSelection, GaussianMixture, select_n_components
from dem.models.ppca import PPCA, FactorAnalysis
from dem.models.student_mixture import StudentMixture
from dem.restore import from_checkpoint
from dem.tabular import read_parquet

__all__ = [
    "GMMHMM",
    "PPCA",
    "BayesianGaussianMixture",
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
    "LatentDirichletAllocation",
    "MixtureOfFactorAnalyzers",
    "NotFittedError",
    "StudentMixture",
    "fit",
    "from_checkpoint",
    "load_checkpoint",
    "read_parquet",
    "select_n_components",
]

__version__ = "0.1.0"
