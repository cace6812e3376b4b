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

Optional hooks
--------------
Beyond :class:`EMModel`, the engine looks for these by name (``hasattr``/``getattr``);
a model defines only those it needs. This is the complete list for batch EM (incremental
EM's hooks are described below the table).

===============  ===========================================  =================  ==================
hook             signature                                    called by          when absent
===============  ===========================================  =================  ==================
``e_step_many``  ``(block, runs) -> list[Stats]``             the engine, for    each run's
                                                              runs of equal      ``e_step``
                                                              models sharing
                                                              a pass
``converged``    ``(change, tol, previous, params) -> bool``  ``has_converged``  ``abs(change) <
                                                              (dem.accelerate),  tol``
                                                              every EM step
``remedy``       class attribute, ``str``                     :func:`remedy`,    ``DEFAULT_REMEDY``
                                                              in the engine's
                                                              and SQUAREM's
                                                              errors
``pack``         ``(params) -> ndarray``                      SQUAREM            ``"squarem"`` is
                                                              (dem.accelerate)   refused
``unpack``       ``(vector, like) -> Params``                 SQUAREM            ``"squarem"`` is
                                                              (dem.accelerate)   refused
``lower_bound``  ``(stats, params) -> float``                 ``em_pass``        the mean
                                                              (dem.engine),      log-likelihood
                                                              every EM step      ``loglik / n``
``own_pass``     ``(params, names, blocks, *, split_every,    ``em_pass``        the engine's map
                 missing_ok, content) -> (Stats, digests)``   (dem.engine), for  and tree reduce
                                                              every evaluation
===============  ===========================================  =================  ==================

``e_step_many`` returns, for each parameter set of ``runs``, the statistics ``e_step``
would give, computed together so that the model can share work between runs (the
mixture stacks the runs' components into single matrix products).

``converged`` is the model's own stopping rule, for a model whose log-likelihood
flattens long before its parameters settle (EM that crawls, as under heavy censoring);
``previous`` and ``params`` are the parameters before and after the EM step. The
engine's ``ConvergenceWarning`` then says the model's rule was not met.

``lower_bound`` is the objective of a model fitted by variational EM (an evidence
lower bound, ELBO), of the statistics of the pass and the parameters the M-step made
from them: the engine reports it, traces it, checkpoints it and tests convergence on
its change in place of the mean log-likelihood, so ``tol`` is in its units (the
variational Gaussian mixture reports scikit-learn's total ``lower_bound_``). It needs
no extra pass: whatever it reads of the data is a statistic of the E-step.

``remedy`` is the sentence appended to the error when an iteration produces NaN
parameters or a log-likelihood that is not finite, saying what the user can change in
that model ("increase reg_covar", ...).

``pack`` flattens the parameters SQUAREM and α-EM extrapolate into one vector; ``unpack``
turns an extrapolated vector back into parameters shaped as ``like`` (and carrying
what ``like`` holds that is not packed), projected onto valid ones. ``unpack`` may
raise ``ValueError`` or ``numpy.linalg.LinAlgError``; the cycle then keeps the plain
EM steps (α-EM also takes the plain EM step when ``unpack`` had to move the vector).
``accelerate="squarem"`` or ``"alpha"`` on a model without both raises ``ValueError``
(``dem.accelerate.check_accelerate``).

``own_pass`` is for a model whose statistics need more than one map over the chunks
(a sequence spanning chunks: :mod:`dem.models.hmm.long`). It gets the chunks as
:func:`dem.graph.chunk_blocks` gives them, runs its own computes, and returns the
reduced statistics of all the data at ``params`` and, when ``content`` is not False,
the chunks' content digests (checked against ``content`` when it holds them). It must
give the same bits whichever workers run its tasks. The engine then evaluates each run
of such models apart.

Incremental EM (:mod:`dem.incremental`) adds the statistics of groups of chunks taken
at different parameters, so it takes a model that declares ``comparable_stats = True``
(its statistics mean the same whatever the parameters: counts, sums about a shift
fixed for the fit) or gives ``anchor(params) -> Params``: entries (named ``anchor_*``)
that, among the parameters, make ``e_step`` take its statistics about them rather than
about the current parameters and ``m_step`` read them so; it is called once per fit, on
the initial parameters. Batch EM never passes them. ``free_energy = True`` with
``expected_loglik(stats, params) -> float`` lets it report Neal & Hinton's free energy.

Online EM (:mod:`dem.online`, and ``partial_fit``) uses only the protocol's methods:
it blends per-sample statistics across batches, so a model's statistics must keep the
same keys from batch to batch and mean the same thing whatever the parameters, and
``m_step`` must accept the blended average scaled to the number of rows.
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
