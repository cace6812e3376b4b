"""What the Gaussian mixtures' estimators, maximum-likelihood and variational, share:
the results computed from their components' weighted log densities."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import logsumexp
from sklearn.base import DensityMixin

from dem.estimator import EMEstimator, RandomState
from dem.models import gaussian


class BaseMixture(DensityMixin, EMEstimator):
    """The base of :class:`~dem.GaussianMixture` and :class:`~dem.BayesianGaussianMixture`:
    their per-sample results (lazy for lazy input) and ``score``, from their model's
    ``weighted_log_prob(x, params)`` (log w_k + log p(x | k) per sample and component)."""

    n_components: int
    covariance_type: str
    weights_: np.ndarray
    means_: np.ndarray
    covariances_: np.ndarray

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
        return self._fitted_per_sample(
            X,
            variable,
            lambda model, x, p: function(model.weighted_log_prob(x, p)),
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

    def sample(
        self, n_samples: int = 1, *, random_state: RandomState = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n_samples`` points from the fitted mixture (for the variational one, the
        mixture of the expected weights ``weights_``, the means and ``covariances_``, as
        scikit-learn's ``sample``); returns (X, component labels).

        A row of component k is ``μ_k + z`` with ``z ~ N(0, Σ_k)``; for
        :class:`~dem.StudentMixture`, ``μ_k + z / sqrt(τ)`` with
        ``τ ~ Gamma(ν_k/2, rate ν_k/2)``.
        """
        rng = self._sampling_rng(n_samples, random_state)
        counts = rng.multinomial(n_samples, self.weights_)
        k, d = self.means_.shape
        draws = []
        for component, count in enumerate(counts):
            z = gaussian.correlated(
                rng.standard_normal((count, d)), self.covariances_, self.covariance_type, component
            )
            draws.append(self.means_[component] + self._component_draws(z, component, rng))
        return np.vstack(draws), np.repeat(np.arange(k), counts)

    def _component_draws(
        self, z: np.ndarray, component: int, rng: np.random.Generator
    ) -> np.ndarray:
        """The draws of ``component`` about its mean, from its Gaussian draws ``z``."""
        return z
