"""The model protocol: the pure functions the engine calls.

A model is a small immutable object (its configuration) whose methods are pure
functions over numpy arrays. The engine knows nothing of Gaussians or censoring; it
only maps :meth:`EMModel.e_step` over aligned chunks of the input arrays, sums the
statistics in a tree with :meth:`EMModel.combine`, and calls :meth:`EMModel.m_step`
on the client.

``Params`` and ``Stats`` are plain ``dict[str, numpy.ndarray]``. Statistics are
additive, always float64, and must include ``"n"`` (the number of samples the chunk
contributed) and ``"loglik"`` (the chunk's summed log-likelihood at the parameters
the E-step was given).

A model may also define ``converged(change, tol, previous, params) -> bool``, its own
stopping rule (for example on the change of its parameters); without it the engine
stops when the mean log-likelihood changes by less than ``tol``.

A model may also define ``e_step_many(block, runs) -> list[Stats]``: the statistics of
one chunk at each parameter set of ``runs``, as ``e_step`` would give them, computed
together. The engine calls it when several runs of the same model share a pass
(restarts), so that the model can share work between them (the mixture stacks the
runs' components into single matrix products).

A model may also define ``remedy``, a class attribute: the sentence the engine appends
to its error when an iteration produces NaN parameters or a log-likelihood that is not
finite, saying what the user can change in that model ("increase reg_covar", ...);
without it the engine gives :data:`DEFAULT_REMEDY`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

Params = dict[str, np.ndarray]
# float64 arrays, or float64 scalars for counts and log-likelihoods; typed Any because
# numpy's stubs cannot express "an array or a scalar" that callers may index
Stats = dict[str, Any]
Block = Mapping[str, np.ndarray]


@runtime_checkable
class EMModel(Protocol):
    """What a model gives the engine.

    Attributes
    ----------
    name : str
        Identifies the model family in checkpoints (``"gaussian_mixture"``).
    inputs : tuple of str
        Names of the aligned input arrays each block holds, in order (``("X",)``,
        or ``("X", "y", "lower", "upper")``).
    missing_ok : frozenset of str
        Inputs in which NaN means "missing" rather than invalid. Infinity is
        always invalid.
    """

    # read-only properties, so that a model may set them per class or per instance
    @property
    def name(self) -> str: ...

    @property
    def inputs(self) -> tuple[str, ...]: ...

    @property
    def missing_ok(self) -> frozenset[str]: ...

    def config(self) -> dict[str, Any]:
        """JSON-serialisable configuration that changes the mathematics."""
        ...

    def param_dims(self) -> dict[str, tuple[str, ...]]:
        """Dimension names of each parameter array (for xarray and checkpoints)."""
        ...

    def e_step(self, block: Block, params: Params) -> Stats:
        """Sufficient statistics of one chunk at ``params``."""
        ...

    def combine(self, a: Stats, b: Stats) -> Stats:
        """Sum of two statistics (associative; the engine reduces in a tree)."""
        ...

    def m_step(self, stats: Stats, params: Params) -> Params:
        """New parameters from the statistics of all the data."""
        ...


DEFAULT_REMEDY = (
    "Rescale or clean the input data (look for extreme values), or start from other "
    "initial parameters."
)


def remedy(model: Any) -> str:
    """What to tell the user when ``model``'s fit became non-finite (see the module notes)."""
    return str(getattr(model, "remedy", DEFAULT_REMEDY))


def add_stats(a: Stats, b: Stats) -> Stats:
    """Elementwise sum of two statistics dictionaries (the default ``combine``)."""
    if a.keys() != b.keys():
        raise ValueError(f"cannot combine statistics with keys {sorted(a)} and {sorted(b)}")
    return {key: a[key] + b[key] for key in a}
