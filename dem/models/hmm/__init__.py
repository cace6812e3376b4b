"""Hidden Markov models fitted by Baum–Welch (EM) over Dask chunks of many sequences.

Data
----
Many independent sequences, stored as one array of shape ``(n_sequences, n_times,
n_features)`` (``(n_sequences, n_times)`` of integer symbols for
:class:`CategoricalHMM`), chunked along sequences only, with an optional ``lengths``
vector for ragged sequences: sequence ``i`` is ``X[i, :lengths[i]]`` and whatever
follows it (NaN, say) is padding that is never read.

E-step
------
Each chunk is walked in blocks of sequences. For a block, the emission log-densities
of every time step and state are computed at once (reusing the Gaussian kernels of
:mod:`dem.models.gaussian`) and laid out time-major as ``(n_times, n_states,
n_sequences)``, so that each step of the forward and backward recursions is one small
matrix product over all the block's sequences; only time steps are looped over. Every
block-sized array lives in buffers that each thread keeps from chunk to chunk
(:func:`dem.models.scratch.thread_scratch`, a few arrays of about ``BLOCK_ELEMENTS``
floats, tens of MiB, for as long as the thread lives), so that a worker maps no fresh
pages for them.

The recursions are the scaled forward–backward algorithm: the emission probabilities
of each step are divided by their largest value (a log-space shift), the forward
variables are renormalised at every step, and the log-likelihood is the sum of the
logs of the normalisers and shifts. The backward pass forms the state posteriors as
it goes, keeping only two steps of backward variables. Scaling only fails where a
normaliser underflows (an observation all the states reachable at that step make
impossible to within e^-460, which can happen with zeros in ``transmat`` or
``startprob``) or a backward variable overflows; every sequence where that happens is
recomputed exactly in log space (log-sum-exp recursions), so the results are those of
log-space forward–backward everywhere.

The statistics of a chunk are additive: ``start`` (Σ γ₀, expected initial states),
``trans`` (Σ ξ, expected transitions), and the emission statistics: ``post`` (Σ γ),
``sum_x`` (Σ γ (x - c)) and ``scatter`` (Σ γ (x - c)(x - c)ᵀ or its diagonal) about a
shift ``c`` (the mean of the state means) for Gaussian emissions, or ``symbol_counts``
(Σ γ [x = m]) for categorical ones. ``n`` counts observations (valid time steps) and
``loglik`` sums the sequences' log-likelihoods.

M-step
------
Closed form, with the same (MAP) formulas and priors as hmmlearn's ``GaussianHMM``
and ``CategoricalHMM``, so that from identical initial parameters both give the same
iterates. Documented rules for degenerate cases, where hmmlearn would produce invalid
parameters: entries of ``startprob`` and ``transmat`` that are exactly zero stay zero;
a row of ``transmat`` (or ``emissionprob``) with no expected counts, and the emission
parameters of a state with no expected occupancy, keep their previous values.

Modules: :mod:`.kernels` (the block maths: forward–backward, Viterbi, the M-step
formulas, packing), :mod:`.model` (:class:`~dem.models.hmm.model.GaussianHMMModel` and
:class:`~dem.models.hmm.model.CategoricalHMMModel`, what the engine calls), :mod:`.init`
(starting parameters), :mod:`.base` (what the estimators share), :mod:`.estimator`
(:class:`GaussianHMM`, :class:`CategoricalHMM`), :mod:`.gmm` and :mod:`.gmm_estimator`
(Gaussian-mixture emissions: :class:`GMMHMM`), :mod:`.chain` and :mod:`.long` (one
sequence longer than a chunk).
"""

from dem.models.hmm.estimator import CategoricalHMM, GaussianHMM
from dem.models.hmm.gmm_estimator import GMMHMM
from dem.models.hmm.kernels import COVARIANCE_TYPES, MAX_SYMBOLS, pad_sequences

__all__ = [
    "COVARIANCE_TYPES",
    "GMMHMM",
    "MAX_SYMBOLS",
    "CategoricalHMM",
    "GaussianHMM",
    "pad_sequences",
]
