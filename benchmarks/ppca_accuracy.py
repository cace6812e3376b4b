"""PPCA and factor analysis: the accuracy figures behind tests/test_ppca.py, printed.

Refits the tests' data with the tests' settings and prints, as JSON lines, how far dem
lands from each independent reference: the closed-form PPCA maximum (Tipping & Bishop
1999), ``sklearn.decomposition.PCA`` (after its N − 1 covariance is rescaled to 1/N),
``sklearn.decomposition.FactorAnalysis``, and a direct L-BFGS maximisation of the
observed-data likelihood with values missing at random (scipy). Plain EM and SQUAREM
are both reported. Differences are absolute unless named ``rel``; log-likelihoods are
means per row unless named ``total``.

Example
-------
python benchmarks/ppca_accuracy.py
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.decomposition import FactorAnalysis as SkFactorAnalysis

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import dem
from tests.test_ppca import (
    ESTIMATORS,
    close_eigenvalues,
    direct_maximum,
    factor_data,
    low_rank_data,
    missingness_groups,
    negative_loglik,
    principal_sine,
    with_missing,
)

METHODS = ("none", "squarem")


def emit(what: str, **fields: Any) -> None:
    print(json.dumps({"benchmark": "ppca_accuracy", "what": what, **fields}), flush=True)


def closed_form(X: np.ndarray, q: int) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Mean log-likelihood at the maximum, σ², eigenvalues and eigenvectors (1/N)."""
    n, d = X.shape
    centred = X - X.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred / n)
    values, vectors = values[::-1], vectors[:, ::-1]
    sigma2 = values[q:].mean()
    loglik = -0.5 * (
        d * np.log(2 * np.pi) + np.log(values[:q]).sum() + (d - q) * np.log(sigma2) + d
    )
    return float(loglik), float(sigma2), values, vectors


def against_closed_form(name: str, X: np.ndarray, q: int, **options: Any) -> None:
    loglik, sigma2, values, vectors = closed_form(X, q)
    for method in METHODS:
        model = dem.PPCA(q, accelerate=method, **options).fit(X)
        emit(
            f"PPCA vs closed form ({name})",
            accelerate=method,
            n_iter=model.n_iter_,
            loglik_diff=model.score(X) - loglik,
            noise_variance_rel=abs(model.noise_variance_ - sigma2) / sigma2,
            explained_variance_rel=float(
                np.max(np.abs(model.explained_variance_ - values[:q]) / values[:q])
            ),
            mean_diff=float(np.abs(model.mean_ - X.mean(axis=0)).max()),
            subspace_sin=principal_sine(model.components_, vectors[:, :q].T),
        )


def against_sklearn_pca() -> None:
    X, _, _ = low_rank_data(2000, 10, 4, seed=2)
    n = len(X)
    reference = PCA(4).fit(X)
    reference.explained_variance_ *= (n - 1) / n
    reference.noise_variance_ *= (n - 1) / n
    for method in METHODS:
        model = dem.PPCA(4, tol=1e-12, max_iter=500, accelerate=method).fit(X)
        emit(
            "PPCA vs sklearn PCA (N-1 corrected)",
            accelerate=method,
            n_iter=model.n_iter_,
            loglik_diff=model.score(X) - reference.score(X),
            score_samples_diff=float(
                np.abs(model.score_samples(X) - reference.score_samples(X)).max()
            ),
            explained_variance_rel=float(
                np.max(np.abs(model.explained_variance_ / reference.explained_variance_ - 1))
            ),
            noise_variance_rel=abs(model.noise_variance_ / reference.noise_variance_ - 1),
            components_diff=float(np.abs(model.components_ - reference.components_).max()),
            covariance_diff=float(
                np.abs(model.get_covariance() - reference.get_covariance()).max()
            ),
        )


def against_sklearn_fa() -> None:
    X = factor_data(2000, 10, 3, seed=3)
    reference = SkFactorAnalysis(3, tol=1e-9, max_iter=10_000, svd_method="lapack").fit(X)
    for method in METHODS:
        model = dem.FactorAnalysis(3, tol=1e-12, max_iter=1000, accelerate=method).fit(X)
        emit(
            "FactorAnalysis vs sklearn FactorAnalysis",
            accelerate=method,
            n_iter=model.n_iter_,
            sklearn_n_iter=int(reference.n_iter_),
            loglik_diff=model.score(X) - reference.score(X),
            noise_variance_rel=float(
                np.max(np.abs(model.noise_variance_ / reference.noise_variance_ - 1))
            ),
            covariance_diff=float(
                np.abs(model.get_covariance() - reference.get_covariance()).max()
            ),
            subspace_sin=principal_sine(model.components_, reference.components_),
        )


def against_direct_maximum() -> None:
    for noise in ("isotropic", "diagonal"):
        for fraction in (0.1, 0.3):
            X = with_missing(factor_data(300, 6, 2, seed=3), fraction, seed=5)
            d = X.shape[1]
            n_seen = int((~np.isnan(X)).any(axis=1).sum())
            started = time.perf_counter()
            reference = direct_maximum(X, 2, noise)
            lbfgs_seconds = time.perf_counter() - started
            W = reference.x[: d * 2].reshape(d, 2)
            mean = reference.x[d * 2 : d * 3]
            psi = np.exp(reference.x[d * 3 :]) * np.ones(d)
            fixed = direct_maximum(X, 2, noise, fixed_mean=np.nanmean(X, axis=0))
            for method in METHODS:
                model = ESTIMATORS[noise](
                    2, tol=1e-11, max_iter=1000, random_state=0, accelerate=method
                ).fit(X)
                theta = np.concatenate(
                    [
                        model.loadings_.T.ravel(),
                        model.mean_,
                        np.log(np.atleast_1d(model.noise_variance_)),
                    ]
                )
                at_ours = -negative_loglik(theta, missingness_groups(X), d, 2, noise)[0]
                emit(
                    "missing values vs scipy L-BFGS of the observed-data likelihood",
                    model=ESTIMATORS[noise].__name__,
                    missing=fraction,
                    accelerate=method,
                    n_iter=model.n_iter_,
                    total_loglik_diff=model.score(X) * n_seen + reference.fun,
                    total_loglik_rel_vs_independent_formula=abs(
                        model.score(X) * n_seen / at_ours - 1
                    ),
                    mean_diff=float(np.abs(model.mean_ - mean).max()),
                    covariance_diff=float(
                        np.abs(model.get_covariance() - (W @ W.T + np.diag(psi))).max()
                    ),
                    column_mean_fixed_total_loglik_loss=fixed.fun - reference.fun,
                    lbfgs_seconds=lbfgs_seconds,
                )


def imputation() -> None:
    noise = 0.01
    X, _, _ = low_rank_data(3000, 20, 3, seed=8, noise=noise)
    X_missing = with_missing(X, 0.2, seed=9)
    held_out = np.isnan(X_missing)
    imputed = dem.PPCA(3, random_state=0).fit(X_missing).impute(X_missing)
    rmse = np.sqrt(np.mean((imputed[held_out] - X[held_out]) ** 2))
    column_means = np.broadcast_to(np.nanmean(X_missing, axis=0), X.shape)
    baseline = np.sqrt(np.mean((column_means[held_out] - X[held_out]) ** 2))
    emit(
        "impute: held-out entries, 20% missing, noise sd 0.1",
        rmse=float(rmse),
        noise_sd=float(np.sqrt(noise)),
        column_mean_rmse=float(baseline),
    )


def main() -> None:
    warnings.simplefilter("ignore", dem.ConvergenceWarning)
    X, _, _ = low_rank_data(1500, 8, 3, seed=0)
    against_closed_form(
        "random start", X, 3, init_params="random", tol=1e-11, max_iter=3000, random_state=1
    )
    against_closed_form(
        "small eigengap",
        close_eigenvalues(2000, 12, seed=0),
        3,
        init_params="random",
        tol=1e-10,
        max_iter=5000,
        random_state=1,
    )
    against_sklearn_pca()
    against_sklearn_fa()
    against_direct_maximum()
    imputation()


if __name__ == "__main__":
    main()
