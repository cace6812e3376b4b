"""Mixture of factor analyzers against dem's full-covariance Gaussian mixture, same data.

The data are drawn from a mixture of factor analyzers (``dem.synth.mfa_truth``: K
components, each near its own q-dimensional subspace, per-feature noise), float64,
scattered onto a ``LocalCluster`` of one-thread worker processes (one per core by
default) in chunks of ``--chunk-rows`` rows. Both estimators start from k-means on the
same sample, then run ``--iterations`` EM iterations with ``tol=0``; the seconds per
iteration are the median of the per-iteration callback intervals (so without the
initialisation). A second fit of each, to convergence (``tol=1e-4``, at most
``--max-iter``), gives the mean log-likelihood and the BIC (one more pass each).

Each line is a JSON object ``{"benchmark": "mfa", "what": ...}``: the machine, then one
line per estimator.

Issue 19's size: ``python benchmarks/mfa.py --samples 1000000 --features 100
--components 8 --factors 5``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

import numpy as np
from _common import emit, local_cluster, machine, median, scattered

import dem
from dem.synth import mfa_draw, mfa_truth


def per_iteration(make: Any, x: Any) -> tuple[float, Any]:
    stamps: list[float] = []
    estimator = make(callback=lambda info: stamps.append(time.perf_counter()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        estimator.fit(x)
    return median(list(np.diff(stamps))), estimator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--factors", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--max-iter", type=int, default=30)
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    emit("mfa", "machine", **machine())

    rng = np.random.default_rng(args.seed)
    truth = mfa_truth(
        args.features, rng, n_components=args.components, n_factors=args.factors, separation=3.0
    )
    x_local = np.vstack(
        [
            mfa_draw(truth, rng, min(args.chunk_rows, args.samples - start))["X"]
            for start in range(0, args.samples, args.chunk_rows)
        ]
    )
    common = {"random_state": 0, "init_params": "kmeans", "init_sample_size": 20_000}
    makers = {
        "mfa": lambda **o: dem.MixtureOfFactorAnalyzers(
            args.components, args.factors, **common, **o
        ),
        "gmm_full": lambda **o: dem.GaussianMixture(
            args.components, covariance_type="full", **common, **o
        ),
    }
    with local_cluster(args.workers) as client:
        x = scattered(client, x_local, args.chunk_rows)
        del x_local
        for name, make in makers.items():
            seconds, _ = per_iteration(
                lambda make=make, **o: make(tol=0.0, max_iter=args.iterations + 1, **o), x
            )
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", dem.ConvergenceWarning)
                fitted = make(tol=1e-4, max_iter=args.max_iter).fit(x)
            fit_seconds = time.perf_counter() - started
            emit(
                "mfa",
                name,
                samples=args.samples,
                features=args.features,
                components=args.components,
                factors=args.factors if name == "mfa" else None,
                seconds_per_iteration=seconds,
                fit_seconds=fit_seconds,
                n_iter=fitted.n_iter_,
                loglik=fitted.score(x),
                bic=fitted.bic(x),
                parameters=fitted._n_parameters(),
            )


if __name__ == "__main__":
    main()
