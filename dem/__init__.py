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
from dem.models.mixture import GaussianMixture
from dem.restore import from_checkpoint

__all__ = [
    "CheckpointError",
    "CheckpointLockedError",
    "CheckpointMismatchError",
    "CheckpointWriteError",
    "ConvergenceWarning",
    "EMResult",
    "GaussianMixture",
    "IterationInfo",
    "NotFittedError",
    "fit",
    "from_checkpoint",
    "load_checkpoint",
]

__version__ = "0.1.0"
