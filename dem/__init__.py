"""dem: Expectation-Maximization for latent-variable models on Dask and Zarr."""

from dem.checkpoint import CheckpointMismatchError, load_checkpoint
from dem.engine import ConvergenceWarning, EMResult, IterationInfo, fit
from dem.estimator import NotFittedError
from dem.models.mixture import GaussianMixture
from dem.models.selection import ComponentSelection, select_n_components

__all__ = [
    "CheckpointMismatchError",
    "ComponentSelection",
    "ConvergenceWarning",
    "EMResult",
    "GaussianMixture",
    "IterationInfo",
    "NotFittedError",
    "fit",
    "load_checkpoint",
    "select_n_components",
]

__version__ = "0.1.0"
