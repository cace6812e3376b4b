"""What the Gaussian mixtures' estimators, maximum-likelihood and variational, share:
the results computed from their components' weighted log densities."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import logsumexp
from sklearn.base import DensityMixin

from dem.estimator import EMEstimator, per_sample


class BaseMixture(DensityMixin, EMEstimator):
    """The base of :class:`~dem.GaussianMixture` and :class:`~dem.BayesianGaussianMixture`:
    their per-sample results (lazy for lazy input) and ``score``, from their model's
    ``weighted_log_prob(x, params)`` (log w_k + log p(x | k) per sample and component)."""

    n_components: int

    def _marginalize(self) -> bool:
        """Whether NaN entries are missing values (the model marginalises them)."""
        return False

    def _per_sample(
        self,
        X: Any,
        variable: str | None,
        function: Callable[[np.ndarray], np.ndarray],
        columns: int | None,
        dtype: Any = np.float64,
    ) -> Any:
        """``function`` of the weighted log densities of each sample of ``X``."""
        params = self._params()
        samples = self._checked_samples(X, variable)
        model = self._model()
        return per_sample(
            samples,
            lambda x: function(model.weighted_log_prob(x, params)),
            columns=columns,
            dtype=dtype,
            missing_ok=self._marginalize(),
        )

    def predict_proba(self, X: Any, *, variable: str | None = None) -> Any:
        """Responsibilities of each component for each sample, shape (n_samples, n_components)."""
        return self._per_sample(
            X, variable, lambda w: np.exp(w - logsumexp(w, axis=1)[:, None]), self.n_components
        )

    def predict(self, X: Any, *, variable: str | None = None) -> Any:
        """Most probable component of each sample, shape (n_samples,)."""
        return self._per_sample(X, variable, lambda w: np.argmax(w, axis=1), None, dtype=np.int64)

    def fit_predict(self, X: Any, y: Any = None, *, variable: str | None = None) -> Any:
        """Fit, then label the same data with the fitted parameters."""
        return self.fit(X, variable=variable).predict(X, variable=variable)

    def score(
        self,
        X: Any,
        y: Any = None,
        *,
        variable: str | None = None,
        sample_weight: Any = None,
    ) -> float:
        """Mean of :meth:`score_samples` over the samples (one pass over the data): for
        :class:`~dem.GaussianMixture` the mean per-sample log-likelihood.

        With ``sample_weight`` (as for :meth:`fit`), the weighted mean
        Σ w_i log p(x_i) / Σ w_i. A row with nothing observed (every entry NaN, with
        ``missing="marginalize"``) is not counted.
        """
        return self._loglik(X, variable, sample_weight)[0]

    def _loglik(self, X: Any, variable: str | None, sample_weight: Any) -> tuple[float, float]:
        """The (weighted) mean of ``score_samples`` over ``X`` and the (weighted) number
        of samples counted."""
        total, n = self._fitted_loglik(
            X,
            variable,
            sample_weight,
            lambda model, x, p: logsumexp(model.weighted_log_prob(x, p), axis=1),
            observed_only=True,
        )
        return total / n, n
