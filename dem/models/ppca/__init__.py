"""Probabilistic PCA and factor analysis by EM, exact with missing values.

The model
---------
A row is ``x = W z + μ + ε`` with latent ``z ~ N(0, I_q)`` and noise ``ε ~ N(0, Ψ)``:
``Ψ = σ² I`` is probabilistic PCA (Tipping & Bishop 1999), ``Ψ = diag(ψ)`` is factor
analysis. NaN entries are missing at random, so the observed part of a row is
Gaussian, ``x_O ~ N(μ_O, W_O W_Oᵀ + Ψ_O)``, and that is the likelihood EM maximises.

The EM (Roweis 1998; Liu, Rubin & Wu 1998), with missing values
----------------------------------------------------------------
For a row with observed features ``O`` the posterior of ``z`` is ``N(M⁻¹ u, M⁻¹)`` with
``M = I + W_Oᵀ Ψ_O⁻¹ W_O`` and ``u = W_Oᵀ Ψ_O⁻¹ (x_O − μ_O)``. The mean is estimated
jointly with the loadings: it is one more column of an augmented loading matrix
``[W, δ]`` acting on ``z̃ = [z, 1]``, where ``δ`` is this iteration's change of the mean.
All sums are taken about the current mean, which keeps them accurate for data far
from the origin (incremental EM takes them about a mean fixed for the fit, its
``anchor_mean``, so that sums taken at different parameters add up; see
:mod:`dem.incremental`). The E-step of a chunk adds, for each feature ``j``:

- ``count[j]``: Σ 1 over the rows where ``j`` is observed;
- ``sum_x2[j]``: Σ (x_j − μ_j)² over those rows;
- ``sum_xz[j]``: Σ (x_j − μ_j) E[z̃] over those rows, shape (d, q+1);
- ``sum_zz``: Σ E[z̃ z̃ᵀ] over all rows, shape (q+1, q+1);
- ``sum_zz_missing[j]``: Σ E[z̃ z̃ᵀ] over the rows where ``j`` is missing, shape
  (d, q+1, q+1); left out of the statistics of chunks without missing values (a
  missing key counts as zeros), so complete data move only O(d·q) numbers.

The M-step solves one (q+1)-square system per feature,
``[W, δ]_j = (sum_zz − sum_zz_missing[j])⁻¹ sum_xz[j]`` (a single system shared by all
features for complete data), and sets the noise to the mean expected squared residual:
over all observed entries for PPCA (:func:`~dem.models.ppca.kernels.isotropic_noise`),
per feature for factor analysis (:func:`~dem.models.ppca.kernels.diagonal_noise`).

It is the M-step of the parameter-expanded model (PX-EM, Liu, Rubin & Wu 1998) in which
the latents have a free mean ``α`` and covariance ``Γ = L Lᵀ``: from ``sum_zz``, ``α`` and
``Γ`` are the mean and covariance of the posterior latents over all rows, and folding
them back (``W ← W L``, ``μ ← μ + δ + W α``) returns to ``z ~ N(0, I)`` with the same
likelihood. It is still an EM (the log-likelihood never decreases), but plain EM
shrinks the error in the scale of a component of variance ``λ`` only by a factor
``1 − 2σ²/λ`` per iteration, and so crawls on data with little noise; PX-EM removes that
slow mode (and the matching one of the mean when values are missing). From a random
start on the closed-form test's data (λ₁/σ² ≈ 200), PPCA comes within 1e-8 of the
maximum mean log-likelihood in 16 iterations; plain EM has not after 300. Factor
analysis still converges slowly where a uniqueness ψ_j is small next to its feature's
variance (near a Heywood case), as scikit-learn's iteration does.

Cost
----
Rows without missing values share one ``M``, so their posterior is one product with a
d × q matrix and an iteration over complete data costs O(N·d·q). A row with missing
values has its own ``M``; such rows are handled a block at a time: the packed
``W_Oᵀ Ψ_O⁻¹ W_O`` of every row is one matrix product of the block's observation mask
with the per-feature outer products ``w_j w_jᵀ / ψ_j``, and the q × q Cholesky
factorisations and inverses run vectorised across the block (a Python loop over the q
latent dimensions, never over rows), O(d·q² + q³) per row.

Acceleration
------------
For ``accelerate="squarem"`` (:mod:`dem.accelerate`) the parameters travel as one vector:
the loadings in EM's own rotation, the mean, and the logarithm of the noise variance(s),
so every extrapolated vector is a valid model. EM crawls where eigenvalues are close (the
principal subspace then moves by a small fraction of its error per iteration); there
SQUAREM needs two to four times fewer passes (``benchmarks/accelerate.py``).

The start
---------
``init_params="pca"`` starts from the closed-form PPCA maximum (Tipping & Bishop 1999)
for the covariance of a random sample of rows, read before the first pass: the leading
``q`` eigenpairs give ``W``, the mean of the other eigenvalues ``σ²`` (factor analysis
takes that ``σ²`` for every ψ_j). With missing values the covariance is the
available-case one, each entry averaged over the rows where both features are observed,
about the observed column means; its eigenvalues are clipped at 0, since under heavy
missingness it need not be positive semidefinite. Filling missing entries with the
column mean instead shrinks each variance by its feature's observed fraction and each
covariance by the product of two, and starts far from the maximum: on the data of
``benchmarks/ppca.py`` (10⁶ × 100, q = 10, 20% missing) EM took 7 passes to converge
from there and takes 4 from the available-case start. The covariance is d × d and
costs O(n·d² + d³), so data with more than ``MAX_COVARIANCE_FEATURES`` features keep
the mean-filled start (subspace iteration, O(n·d·q)).

Rules
-----
- A row with no observed value carries no information. It is left out of the fit (it
  does not count in ``n``); ``transform`` gives it the prior mean 0, ``impute`` the
  fitted mean, ``score_samples`` 0 (the log-probability of observing nothing).
- A feature with no observed value cannot be estimated: a ``ValueError`` after the
  first pass over the data.
- Noise variances are floored at ``NOISE_FLOOR`` times the mean observed feature
  variance (the exact M-step under that constraint, so EM stays monotone). Data of rank
  at most ``q`` then give a finite likelihood instead of a noise variance tending to 0.
- The loadings are identified only up to a rotation; EM keeps its own rotation in the
  parameters (and checkpoints), and the estimators report the canonical one: columns
  orthogonal, sorted by explained variance, each with its largest entry positive.

Modules
-------
:mod:`~dem.models.ppca.kernels` (packing, posteriors, E-step statistics, noise updates),
:mod:`~dem.models.ppca.model` (:class:`~dem.models.ppca.model.LinearGaussianModel`, the
functions the engine calls), :mod:`~dem.models.ppca.init` (the starts) and
:mod:`~dem.models.ppca.estimator` (:class:`PPCA`, :class:`FactorAnalysis`).
"""

from dem.models.ppca.estimator import PPCA, FactorAnalysis
from dem.models.ppca.init import INIT_METHODS
from dem.models.ppca.model import MODEL_NAMES, NOISE_TYPES

__all__ = ["INIT_METHODS", "MODEL_NAMES", "NOISE_TYPES", "PPCA", "FactorAnalysis"]
