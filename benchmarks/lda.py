"""Latent Dirichlet allocation: dem from Zarr on worker processes vs scikit-learn's batch LDA.

A corpus drawn from the generative model (``dem synth lda``: documents of ~``words``
words over a vocabulary, K topics) is written in the Zarr CSR layout. dem fits it from
the store on a LocalCluster of one-thread worker processes; its seconds per iteration
are the median of the engine's per-iteration times after the first (which also digests
the chunks). scikit-learn's ``LatentDirichletAllocation(learning_method="batch")`` fits
the same documents in memory (``--sklearn-docs``: the first that many; the steps each
document takes depend on the corpus size, so compare at the same), its seconds per
iteration the median of its iterations 2 .. 1 + m (its ``_em_step``, timed as dem's);
twice: limited to one BLAS thread and ``n_jobs=1`` (the per-core figure), and with
``n_jobs=--workers`` and its default BLAS threads (the issue's peer). Throughput is
compared per document: seconds per iteration divided by the documents fitted. gensim's
``LdaMulticore`` (``--workers`` processes, seconds per pass by the difference of
1 + m passes and 1) runs
too when gensim is installed (not a dependency of dem).

Run ``python benchmarks/lda.py`` (the issue's size: 1e6 documents, vocabulary 5e4,
K=50, ~100 words per document) or ``--quick`` (2e4 documents, vocabulary 5000, K=20).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from typing import Any

import numpy as np
from _common import emit, local_cluster, machine, median, timed

BENCHMARK = "lda"


def sklearn_seconds(x: Any, k: int, iterations: int, n_jobs: int, one_thread: bool) -> float:
    """scikit-learn's median seconds per batch iteration (its ``_em_step``: E-step and
    M-step) over iterations 2 .. 1 + ``iterations``, as dem's."""
    import time

    from sklearn.decomposition import LatentDirichletAllocation
    from threadpoolctl import threadpool_limits

    seconds: list[float] = []

    class Timed(LatentDirichletAllocation):
        def _em_step(self, *args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return super()._em_step(*args, **kwargs)
            finally:
                seconds.append(time.perf_counter() - began)

    model = Timed(
        k, learning_method="batch", max_iter=1 + iterations, n_jobs=n_jobs, random_state=0
    )
    if one_thread:
        with threadpool_limits(limits=1):
            model.fit(x)
    else:
        model.fit(x)
    return median(seconds[1:])


def gensim_seconds(x: Any, k: int, passes: int, workers: int) -> float | None:
    """gensim's ``LdaMulticore`` (online variational Bayes, ``workers`` processes) seconds
    per pass over ``x``, by the difference (T(1 + m passes) - T(1 pass)) / m; None when
    gensim is not installed (it is not a dependency: ``pip install gensim``)."""
    try:
        from gensim.matutils import Sparse2Corpus
        from gensim.models import LdaMulticore
    except ImportError:
        return None
    documents = Sparse2Corpus(x, documents_columns=False)
    words = {i: str(i) for i in range(x.shape[1])}

    def fit(count: int) -> Any:
        return LdaMulticore(
            documents, num_topics=k, id2word=words, workers=workers, passes=count,
            random_state=0, eval_every=None,
        )  # fmt: skip

    base, _ = timed(lambda: fit(1))
    total, _ = timed(lambda: fit(1 + passes))
    return (total - base) / passes


def dem_seconds(store: str, k: int, iterations: int) -> tuple[float, list[float], float]:
    """dem's median seconds per iteration (iterations 2 ..), all of them, and the final
    perplexity."""
    import dem

    seconds: list[float] = []
    model = dem.LatentDirichletAllocation(
        k, max_iter=1 + iterations, random_state=0, callback=lambda i: seconds.append(i.seconds)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dem.ConvergenceWarning)
        model.fit(store, variable="X")
    return median(seconds[1:]), seconds, float(model.bound_)


def kernel_cpu(x: Any, k: int, warmup: int, repeats: int) -> dict[str, float]:
    """CPU seconds of one E-step over the documents ``x`` (one thread, one process):
    dem's kernel and scikit-learn's ``_e_step`` (``n_jobs=1``, the deterministic start)
    at the same topics, those of ``warmup`` batch iterations from the same start (so
    that documents need the number of steps of a fit under way). Medians of
    ``repeats``; process CPU time, which a busy machine disturbs less than wall time."""
    import time

    from sklearn.decomposition import LatentDirichletAllocation
    from threadpoolctl import threadpool_limits

    import dem
    from dem.models.lda import kernels

    start = np.random.default_rng(0).gamma(100.0, 0.01, (k, x.shape[1]))
    fitted = dem.LatentDirichletAllocation(k, max_iter=max(warmup, 1), components_init=start)
    with threadpool_limits(limits=1):
        fitted.fit(x)
        peer = LatentDirichletAllocation(k, learning_method="batch", n_jobs=1)
        peer._init_latent_vars(x.shape[1])
        peer.components_ = fitted.components_.copy()
        peer.exp_dirichlet_component_ = fitted.exp_dirichlet_component_.copy()
        words = fitted.exp_dirichlet_component_
        alpha = fitted.doc_topic_prior_
        seconds: dict[str, list[float]] = {"dem": [], "sklearn": []}
        for _ in range(repeats):
            began = time.process_time()
            ours = kernels.e_step(kernels.as_csr(x), words, alpha, 100, 1e-3)
            seconds["dem"].append(time.process_time() - began)
            began = time.process_time()
            _, theirs = peer._e_step(x, cal_sstats=True, random_init=False)
            seconds["sklearn"].append(time.process_time() - began)
    difference = float(np.max(np.abs(ours["sstats"] - theirs)) / np.max(np.abs(theirs)))
    return {
        "dem_cpu_s": median(seconds["dem"]),
        "sklearn_cpu_s": median(seconds["sklearn"]),
        "statistics_max_diff_over_max": difference,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=float, default=1e6)
    parser.add_argument("--vocabulary", type=float, default=5e4)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--words", type=float, default=100.0)
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=2, help="timed dem iterations")
    parser.add_argument(
        "--sklearn-docs", type=float, default=None, help="documents scikit-learn fits "
        "(default: all; steps per document depend on the corpus size, so compare at the same)",
    )  # fmt: skip
    parser.add_argument(
        "--sklearn-iterations", type=int, default=1,
        help="timed scikit-learn iterations (gensim: passes)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--store", default=None, help="corpus store (written if missing)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--kernel", type=float, default=0, help="only the one-thread E-step CPU time on this "
        "many documents (no cluster, no store)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.docs, args.vocabulary, args.k, args.chunk_rows = 2e4, 5e3, 20, 2000
    n, v, k = int(args.docs), int(args.vocabulary), args.k
    args.sklearn_docs = n if args.sklearn_docs is None else min(args.sklearn_docs, n)
    if args.kernel:
        from dem.synth import lda_draw_sparse, lda_truth

        truth = lda_truth(v, np.random.default_rng(0), n_components=k, words=args.words)
        x = lda_draw_sparse(truth, np.random.default_rng(1), int(args.kernel))[0]
        found = kernel_cpu(x, k, warmup=3, repeats=args.repeats)
        per_doc = {name: found[f"{name}_cpu_s"] / x.shape[0] for name in ("dem", "sklearn")}
        emit(
            BENCHMARK, "kernel", docs=x.shape[0], vocabulary=v, k=k, words=args.words,
            dem_us_per_doc=1e6 * per_doc["dem"], sklearn_us_per_doc=1e6 * per_doc["sklearn"],
            speedup=per_doc["sklearn"] / per_doc["dem"], **found, machine=machine(),
        )  # fmt: skip
        return
    config = {
        "docs": n, "vocabulary": v, "k": k, "words": args.words, "chunk_rows": args.chunk_rows,
        "workers": args.workers, "sklearn_docs": int(args.sklearn_docs), "machine": machine(),
    }  # fmt: skip
    from dem.models.lda import corpus
    from dem.synth import write_store

    folder = tempfile.mkdtemp(prefix="dem-lda-")
    store = args.store or os.path.join(folder, "corpus.zarr")
    if not os.path.exists(store):
        seconds, _ = timed(
            lambda: write_store(
                store, "lda", n_samples=n, n_features=v, seed=0, chunk_rows=args.chunk_rows,
                options={"n_components": k, "words": args.words},
            )
        )  # fmt: skip
        emit(BENCHMARK, "synth", seconds=seconds, **config)
    import zarr

    group = zarr.open_group(store, mode="r")
    samples = corpus.read_csr(group["X"], "X", store)
    subset = int(args.sklearn_docs)
    x = samples.array[:subset].compute()
    times: dict[str, list[float]] = {}
    with local_cluster(args.workers):
        for _ in range(args.repeats):
            per_iter, trace, perplexity = dem_seconds(store, k, args.iterations)
            times.setdefault("dem", []).append(per_iter)
            emit(BENCHMARK, "dem_run", iterations=trace, perplexity=perplexity, **config)
    m = args.sklearn_iterations
    for _ in range(args.repeats):
        times.setdefault("sklearn_1thread", []).append(sklearn_seconds(x, k, m, 1, True))
        times.setdefault("sklearn_default", []).append(
            sklearn_seconds(x, k, m, args.workers, False)
        )
        found = gensim_seconds(x, k, m, args.workers)
        if found is not None:
            times.setdefault("gensim_multicore", []).append(found)
    per_doc = {
        name: median(values) / (n if name == "dem" else subset) for name, values in times.items()
    }
    for name, values in times.items():
        emit(
            BENCHMARK, name, seconds_per_iter=median(values), repeats=values,
            us_per_doc=1e6 * per_doc[name], **config,
        )  # fmt: skip
    emit(
        BENCHMARK,
        "summary",
        throughput_vs_sklearn_default=per_doc["sklearn_default"] / per_doc["dem"],
        per_core_vs_sklearn_1thread=per_doc["sklearn_1thread"] / (per_doc["dem"] * args.workers),
        **(
            {"throughput_vs_gensim_multicore": per_doc["gensim_multicore"] / per_doc["dem"]}
            if "gensim_multicore" in per_doc
            else {}
        ),
        **config,
    )


if __name__ == "__main__":
    main()
