"""Latent Dirichlet allocation (Blei, Ng & Jordan 2003) by variational EM over sparse
document chunks.

Modules: :mod:`.kernels` (every document of a chunk to its variational fixed point at
once, the expected topic-word counts, the evidence lower bound), :mod:`.model`
(:class:`~dem.models.lda.model.LDAModel`, what the engine calls), :mod:`.corpus`
(sparse matrices as dask arrays of CSR chunks; the Zarr CSR layout) and
:mod:`.estimator` (:class:`LatentDirichletAllocation`).
"""

from dem.models.lda.estimator import LatentDirichletAllocation

__all__ = ["LatentDirichletAllocation"]
