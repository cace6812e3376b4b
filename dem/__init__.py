"""dem: Expectation-Maximization for latent-variable models on Dask and Zarr."""

from dem.checkpoint import CheckpointMismatchError, load_checkpoint
from dem.engine import ConvergenceWarning, EMResult, IterationInfo, fit
from dem.estimator import NotFittedError
from dem.models.mixture import GaussianMixture
from dem.models.ppca import PPCA, FactorAnalysis

__all__ = [
    "PPCA",
    "CheckpointMismatchError",
    "ConvergenceWarning",
    "EMResult",
    "FactorAnalysis",
    "GaussianMixture",
    "IterationInfo",
    "NotFittedError",
    "fit",
    "load_checkpoint",
]

__version__ = "0.1.0"
