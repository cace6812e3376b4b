"""Starting parameters of the HMMs.

Uniform start and transition probabilities; for Gaussian emissions, k-means centres and
the sample covariance of a sample of observations.
"""

from __future__ import annotations

import numpy as np

from dem.models.mixture.init import kmeans_labels


def uniform(n_components: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(n_components, 1.0 / n_components), np.full(
        (n_components, n_components), 1.0 / n_components
    )


def initial_gaussian_means(
    observations: np.ndarray, n_components: int, rng: np.random.Generator
) -> np.ndarray:
    """k-means centres of a sample of observations (a random row for an empty cluster)."""
    labels = kmeans_labels(observations, n_components, rng)
    means = np.empty((n_components, observations.shape[1]))
    for k in range(n_components):
        members = observations[labels == k]
        means[k] = (
            members.mean(axis=0) if len(members) else observations[rng.integers(len(observations))]
        )
    return means


def initial_gaussian_covars(
    observations: np.ndarray, n_components: int, covariance_type: str, min_covar: float
) -> np.ndarray:
    """The sample covariance plus ``min_covar`` on its diagonal, shaped for the type."""
    n_features = observations.shape[1]
    covariance = (
        np.atleast_2d(np.cov(observations.T))
        if len(observations) > 1
        else np.zeros((n_features, n_features))
    )
    covariance = covariance + min_covar * np.eye(n_features)
    return {
        "full": lambda: np.tile(covariance, (n_components, 1, 1)),
        "tied": lambda: covariance,
        "diag": lambda: np.tile(np.diag(covariance), (n_components, 1)),
        "spherical": lambda: np.full(n_components, np.diag(covariance).mean()),
    }[covariance_type]()
