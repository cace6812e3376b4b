"""The errors of checkpoints: what cannot be used, is held elsewhere or cannot be written.

:mod:`dem.checkpoint` raises them (and dem re-exports them); they live here so that the
lock modules raise the same classes without importing the checkpoint.
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint cannot be used as asked; the message says what to do."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint was written by another model, configuration or data."""


class CheckpointLockedError(CheckpointError):
    """Another live fit holds the checkpoint."""


class CheckpointWriteError(CheckpointError):
    """An iteration could not be written (disk full, permissions); earlier ones are intact."""
