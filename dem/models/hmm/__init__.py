"""Hidden Markov models (being split into modules; see dem.models.hmm.kernels)."""

from dem.models.hmm.kernels import COVARIANCE_TYPES, MAX_SYMBOLS, CategoricalHMM, GaussianHMM, pad_sequences

__all__ = ["COVARIANCE_TYPES", "MAX_SYMBOLS", "CategoricalHMM", "GaussianHMM", "pad_sequences"]
