"""Latent Dirichlet allocation against scikit-learn's batch ``LatentDirichletAllocation``.

scikit-learn's ``fit`` draws each document's start γ at random in every E-step; its
``transform``, ``score`` and ``perplexity`` start from γ = 1, as dem always does. The
reference here is scikit-learn's own code with that deterministic start in ``fit`` too
(``_e_step`` called with ``random_init=False``) and the same initial ``components_``.
scikit-learn's Cython digamma is an asymptotic series accurate to about 3e-9; with it
in place of scipy's (``sklearn_digamma``, the same formula) every quantity agrees to
round-off (1e-11), with scipy's to 1e-6. Also: a topic-recovery check on a corpus
drawn from the generative model, chunk invariance, sparse and dense input, the Zarr
CSR layout, checkpoints, the command line and a cluster of worker processes.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from scipy.optimize import linear_sum_assignment
from sklearn.decomposition import LatentDirichletAllocation as SkLDA
from sklearn.decomposition._online_lda_fast import _dirichlet_expectation_2d
from typer.testing import CliRunner

import dem
from dem.cli import app
from dem.models.lda import corpus, kernels
from dem.restore import from_checkpoint
from dem.synth import GENERATORS, lda_draw_sparse, lda_truth, write_store

K, V, N = 4, 40, 300


def sklearn_digamma(x: np.ndarray) -> np.ndarray:
    """scikit-learn's digamma (``_lda_fast.pyx``: recurrence up to 6, then the asymptotic
    series), vectorised."""
    x = original = np.array(x, dtype=np.float64)
    result = np.zeros_like(x)
    small = x <= 1e-6
    for _ in range(6):
        shift = x < 6
        result = np.where(shift, result - 1.0 / x, result)
        x = np.where(shift, x + 1.0, x)
    r = 1.0 / x
    result += np.log(x) - 0.5 * r
    r = r * r
    result -= r * ((1.0 / 12.0) - r * ((1.0 / 120.0) - r * (1.0 / 252.0)))
    with np.errstate(divide="ignore"):
        return np.where(small, -0.5772156649015329 - 1.0 / original, result)


@pytest.fixture
def sklearn_psi(monkeypatch):
    monkeypatch.setattr(kernels, "psi", sklearn_digamma)


def counts(n: int = N, v: int = V, seed: int = 1) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    matrix = sp.random(
        n, v, density=0.2, format="csr", random_state=seed,
        data_rvs=lambda size: rng.integers(1, 5, size).astype(float),
    )  # fmt: skip
    matrix = sp.lil_matrix(matrix)
    matrix[7] = 0.0  # an empty document
    return sp.csr_matrix(matrix)


START = np.random.default_rng(5).gamma(100.0, 0.01, (K, V))


def reference(x, max_iter: int, start: np.ndarray = START, **options) -> SkLDA:
    """scikit-learn's batch LDA from ``start`` with the deterministic document start."""

    class Deterministic(SkLDA):
        def _e_step(self, X, cal_sstats, random_init, parallel=None):
            return super()._e_step(X, cal_sstats, False, parallel)

        def _init_latent_vars(self, n_features, dtype=np.float64):
            super()._init_latent_vars(n_features, dtype)
            self.components_ = start.copy()
            self.exp_dirichlet_component_ = np.exp(_dirichlet_expectation_2d(self.components_))

    return Deterministic(
        n_components=len(start), max_iter=max_iter, **{"learning_method": "batch", **options}
    ).fit(x)


def ours(
    x, max_iter: int, start: np.ndarray = START, sample_weight=None, **options
) -> dem.LatentDirichletAllocation:
    return dem.LatentDirichletAllocation(
        len(start), max_iter=max_iter, components_init=start, **options
    ).fit(x, sample_weight=sample_weight)


def assert_same_fit(found, expected, x, rtol: float, atol: float = 1e-13) -> None:
    for name in ("components_", "exp_dirichlet_component_"):
        np.testing.assert_allclose(getattr(found, name), getattr(expected, name), rtol=rtol)
    np.testing.assert_allclose(found.bound_, expected.bound_, rtol=rtol)
    np.testing.assert_allclose(found.score(x), expected.score(x), rtol=rtol)
    np.testing.assert_allclose(found.perplexity(x), expected.perplexity(x), rtol=rtol)
    transformed = found.transform(x)
    np.testing.assert_allclose(np.asarray(transformed), expected.transform(x), rtol=rtol, atol=atol)


INPUTS = {
    "csr": lambda m: m,
    "numpy": lambda m: m.toarray(),
    "dask-sparse": lambda m: da.from_array(m, chunks=(64, V), asarray=False),
    "dask-dense": lambda m: da.from_array(m.toarray(), chunks=(90, V)),
}


@pytest.mark.parametrize(
    ("kind", "max_iter"),
    [("csr", 1), ("csr", 6), ("numpy", 6), ("dask-sparse", 6), ("dask-dense", 1)],
)
def test_every_iteration_equals_scikit_learn(sklearn_psi, kind, max_iter):
    """Every input kind, many chunks, each document's fixed point run to max_doc_update_iter."""
    x = counts()
    options = {"mean_change_tol": 0.0, "max_doc_update_iter": 25}
    expected = reference(x, max_iter, **options)
    found = ours(INPUTS[kind](x), max_iter, chunk_rows=37, **options)
    assert found.n_iter_ == max_iter
    assert_same_fit(found, expected, x, rtol=1e-11)


def test_scikit_learns_document_stopping_rule_and_priors(sklearn_psi):
    """Documents stop at scikit-learn's mean_change_tol, each after its own count of steps."""
    x = counts(seed=3)
    options = {"doc_topic_prior": 0.3, "topic_word_prior": 0.7, "mean_change_tol": 1e-3}
    expected = reference(x, 5, **options)
    found = ours(x, 5, chunk_rows=50, **options)
    assert found.doc_topic_prior_ == 0.3 and found.topic_word_prior_ == 0.7
    assert_same_fit(found, expected, x, rtol=1e-10)


@pytest.mark.parametrize(("block_entries", "tail"), [(100, 0.9), (40, 0.5), (10**6, 0.0)])
def test_blocks_and_pooled_slow_documents_equal_scikit_learn(
    sklearn_psi, monkeypatch, block_entries, tail
):
    """Documents run block by block (a few documents per block here), the slow ones of
    several blocks pooled, each stopping after its own count of steps (mean_change_tol)
    or at max_doc_update_iter: scikit-learn's per-document loop."""
    monkeypatch.setattr(kernels, "BLOCK_ELEMENTS", block_entries * K)
    monkeypatch.setattr(kernels, "TAIL", tail)
    x = counts(seed=3)
    options = {"mean_change_tol": 1e-3, "max_doc_update_iter": 12}
    expected = reference(x, 3, **options)
    found = ours(x, 3, chunk_rows=100, **options)
    assert_same_fit(found, expected, x, rtol=1e-10)
    # both limits bind on this corpus: some documents stop at the tolerance, some at 12
    for other in ({"mean_change_tol": 0.0}, {"max_doc_update_iter": 100}):
        changed = reference(x, 3, **{**options, **other}).components_
        assert np.max(np.abs(changed - expected.components_)) > 1e-8


def test_integer_document_weights_equal_repeated_documents():
    """Weights (the engine's "sample_weight" input) 0, 1, 2, 3 give the fit of each
    document repeated that many times (0: left out), through dem.engine.fit."""
    from dem import engine
    from dem.models.lda.model import LDAModel

    x = counts(seed=6)
    weights = np.random.default_rng(0).integers(0, 4, x.shape[0]).astype(float)
    repeated = x[np.repeat(np.arange(x.shape[0]), weights.astype(int))]
    model = LDAModel(K, 1.0 / K, 1.0 / K, 30, 1e-3)

    def fit(arrays):
        with warnings.catch_warnings():  # 4 iterations, no convergence test intended
            warnings.simplefilter("ignore", dem.ConvergenceWarning)
            return engine.fit(model, arrays, lambda: model.initial(START), tol=0.0, max_iter=4)

    weighted = fit({
        "X": da.from_array(x, chunks=(64, V), asarray=False),
        "sample_weight": da.from_array(weights, chunks=64),
    })  # fmt: skip
    plain = fit({"X": da.from_array(repeated, chunks=(97, V), asarray=False)})
    np.testing.assert_allclose(weighted.params["components"], plain.params["components"],
                               rtol=1e-10)  # fmt: skip
    np.testing.assert_allclose(weighted.lower_bounds, plain.lower_bounds, rtol=1e-10)
    unweighted = fit({"X": da.from_array(x, chunks=(64, V), asarray=False)})
    assert weighted.lower_bounds != unweighted.lower_bounds
    # the estimator: fit(sample_weight=) is the fit of the repeated documents
    found = ours(x, 4, sample_weight=weights, max_doc_update_iter=30)
    expected = ours(repeated, 4, max_doc_update_iter=30)
    np.testing.assert_allclose(found.components_, expected.components_, rtol=1e-10)
    np.testing.assert_allclose(found.bound_, expected.bound_, rtol=1e-10)
    with pytest.raises(ValueError, match="learning_method='batch'"):
        ours(x, 1, sample_weight=weights, learning_method="online")


def test_with_scipys_digamma_equals_scikit_learn_to_its_series_accuracy():
    x = counts()
    options = {"mean_change_tol": 0.0, "max_doc_update_iter": 30}  # no stopping to flip
    for max_iter in (1, 8):
        expected = reference(x, max_iter, **options)
        # topic proportions (in [0, 1]) to 1e-6 absolute: each γ's fixed point, not run to
        # convergence here, carries the series' error along its 30 steps
        assert_same_fit(ours(x, max_iter, **options), expected, x, rtol=1e-6, atol=1e-6)


def test_trace_is_minus_the_perplexity_of_each_iterate(sklearn_psi):
    """lower_bounds_[t] is minus scikit-learn's perplexity after t iterations."""
    x = counts(seed=4)
    found = ours(x, 4)
    expected = [-reference(x, t).bound_ for t in range(4)]
    np.testing.assert_allclose(found.lower_bounds_, expected, rtol=1e-11)


def test_online_updates_equal_scikit_learns_online_lda(sklearn_psi):
    """One online update per pass (every chunk in the batch): dem's rates 1, 2^-κ, 3^-κ
    are scikit-learn's with learning_offset=1 after a first, batch, step."""
    x = counts(seed=8)
    options = {"mean_change_tol": 0.0, "max_doc_update_iter": 25}
    found = ours(
        x, 3, learning_method="online", learning_decay=0.6, batch_chunks=10, chunk_rows=50,
        **options,
    )  # fmt: skip
    assert found.n_batch_iter_ == 3 and found.n_iter_ == 3
    first = reference(x, 1, **options).components_  # rate 1: the batch step
    expected = reference(
        x, 2, start=first, learning_method="online", learning_decay=0.6, learning_offset=1.0,
        batch_size=N, total_samples=N, **options,
    )  # fmt: skip
    np.testing.assert_allclose(found.components_, expected.components_, rtol=1e-11)
    np.testing.assert_allclose(found.bound_, expected.bound_, rtol=1e-11)
    with pytest.raises(ValueError, match=r"online.*does not write checkpoints"):
        ours(x, 1, learning_method="online", checkpoint="never.zarr")


def test_perplexity_stopping_rule_is_scikit_learns():
    x = counts(seed=6)
    found = ours(x, 200, evaluate_every=1, perp_tol=1e-2)
    trace = np.asarray(found.lower_bounds_)
    assert found.converged_ and found.n_iter_ < 200
    assert abs(trace[-1] - trace[-2]) < 1e-2 <= np.min(np.abs(np.diff(trace[:-1])))
    with warnings.catch_warnings():  # evaluate_every <= 0: max_iter is the plan, no warning
        warnings.simplefilter("error")
        assert ours(x, 3).n_iter_ == 3
    with pytest.warns(dem.ConvergenceWarning):
        ours(x, 3, tol=0.0)


def test_bound_never_decreases():
    x = sp.csr_matrix(corpus_of(GENERATORS["lda"].truth(60, np.random.default_rng(0),
                                                         n_components=5), 400))  # fmt: skip
    fitted = dem.LatentDirichletAllocation(
        5, max_iter=30, mean_change_tol=1e-9, max_doc_update_iter=500, random_state=0
    ).fit(x)
    bounds = np.asarray(fitted.lower_bounds_)
    assert np.all(np.diff(bounds) >= -1e-12 * np.abs(bounds[1:])), np.diff(bounds).min()
    assert bounds[-1] > bounds[0] + 1.0


def corpus_of(truth, n: int, seed: int = 1) -> sp.csr_matrix:
    return lda_draw_sparse(truth, np.random.default_rng(seed), n)[0]


def test_chunking_and_sparse_or_dense_input_change_nothing_but_round_off():
    x = counts(seed=2)
    fits = [ours(x, 5, chunk_rows=rows) for rows in (23, 64, 1000)]
    fits.append(ours(x.toarray(), 5, chunk_rows=64))
    for fit in fits[1:]:
        np.testing.assert_allclose(fit.components_, fits[0].components_, rtol=1e-12)
        np.testing.assert_allclose(fit.lower_bounds_, fits[0].lower_bounds_, rtol=1e-13)
    # the same chunks, sparse or dense: the same bits
    assert np.array_equal(fits[1].components_, fits[3].components_)


def hellinger(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Hellinger distances between the rows of p and of q (a matrix)."""
    return np.sqrt(0.5 * ((np.sqrt(p)[:, None, :] - np.sqrt(q)[None, :, :]) ** 2).sum(-1))


RECOVERY = 0.1
"""Largest Hellinger distance between a true topic and its fitted match (5 topics on a
vocabulary of 200, η = 0.05, 1500 documents of 100 words, 40 iterations)."""


def test_topics_of_a_generated_corpus_are_recovered():
    truth = lda_truth(200, np.random.default_rng(0), n_components=5, words=100.0)
    x = corpus_of(truth, 1500)
    fitted = dem.LatentDirichletAllocation(5, max_iter=40, random_state=1, chunk_rows=750).fit(x)
    topics = fitted.components_ / fitted.components_.sum(axis=1, keepdims=True)
    distances = hellinger(truth["topics"], topics)
    rows, cols = linear_sum_assignment(distances)
    assert distances[rows, cols].max() < RECOVERY, distances[rows, cols]


def test_bad_counts_are_refused_naming_the_rows():
    x = counts()
    negative = x.copy()
    negative.data[negative.indptr[40]] = -1.0
    with pytest.raises(
        ValueError, match=r"Negative values.*row 3 of this chunk.*chunk of samples 37"
    ):
        ours(negative, 1, chunk_rows=37)
    nan = x.copy()
    nan.data[nan.indptr[100]] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinity in 1 row\(s\) between rows 100 and 100"):
        ours(nan, 1, chunk_rows=37)
    with pytest.raises(ValueError, match=r"components_init must have shape \(4, 40\)"):
        dem.LatentDirichletAllocation(K, components_init=np.ones((K, V - 1))).fit(x)
    with pytest.raises(ValueError, match=r"components_init must hold finite, positive"):
        dem.LatentDirichletAllocation(K, components_init=np.zeros((K, V))).fit(x)


def test_transform_is_lazy_for_lazy_input():
    x = counts()
    fitted = ours(x, 3)
    lazy = fitted.transform(da.from_array(x, chunks=(50, V), asarray=False))
    assert isinstance(lazy, da.Array) and lazy.chunks == ((50,) * 6, (K,))
    np.testing.assert_array_equal(lazy.compute(), fitted.transform(x))
    np.testing.assert_allclose(lazy.sum(axis=1).compute(), 1.0)
    raw = fitted.transform(x, normalize=False)
    assert np.all(raw >= fitted.doc_topic_prior_)


# --- the Zarr CSR layout, checkpoints, command line, cluster ---------------------------


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.zarr"
    write_store(
        path, "lda", n_samples=500, n_features=80, seed=3, chunk_rows=120,
        options={"n_components": 4, "words": 40.0},
    )  # fmt: skip
    return path


def test_persist_none_sizes_a_sparse_corpus_by_its_csr_arrays(monkeypatch, store):
    """persist=None persists a sparse corpus when its data, indices and indptr fit the
    engine's budget (its dense size is far larger); persist=True/False are kept."""
    from dem import engine
    from dem.models.lda import estimator as lda_estimator

    asked: list[bool | None] = []
    real = engine.prepare
    monkeypatch.setattr(
        engine, "prepare", lambda a, persist: asked.append(persist) or real(a, persist)
    )

    def decisions(x, budget: int, **options) -> list[bool | None]:
        monkeypatch.setattr(lda_estimator, "memory_budget", lambda: budget)
        asked.clear()
        dem.LatentDirichletAllocation(4, max_iter=1, random_state=0, **options).fit(
            x, variable="X" if not sp.issparse(x) else None
        )
        return list(asked)

    x = counts()
    stored = x.nnz * 8 + x.nnz * 4 + (x.shape[0] + 1) * 4  # float64 counts, int32 indices
    assert 3 * stored < x.shape[0] * x.shape[1] * 8
    assert decisions(x, stored) == [True] and decisions(x, stored - 1) == [False]
    assert decisions(x, 10**12, persist=False) == [False]
    assert decisions(x, 0, persist=True) == [True]
    group = zarr.open_group(store, mode="r")["X"]
    on_disk = sum(
        group[p].shape[0] * group[p].dtype.itemsize for p in ("data", "indices", "indptr")
    )
    assert decisions(store, on_disk) == [True] and decisions(store, on_disk - 1) == [False]
    chunked = da.from_array(x, chunks=(100, V), asarray=False)  # estimated from a chunk
    assert abs(corpus.estimated_bytes(chunked) - stored) < 0.1 * stored


def test_zarr_csr_layout_reads_as_the_matrix_it_holds(store):
    group = zarr.open_group(store, mode="r")
    assert group["X"].attrs["format"] == "csr" and group["X"].attrs["shape"] == [500, 80]
    samples = corpus.read_csr(group["X"], "X", str(store))
    assert samples.array.chunks[0] == (120, 120, 120, 120, 20)
    chunk = samples.array.blocks[1].compute()
    assert sp.issparse(chunk) and chunk.shape == (120, 80)
    matrix = sp.csr_matrix(samples.array.compute())
    assert matrix.nnz == group["X"]["data"].shape[0] and matrix.data.min() >= 1
    fitted_store = dem.LatentDirichletAllocation(4, max_iter=3, random_state=0).fit(
        store, variable="X"
    )
    fitted_memory = dem.LatentDirichletAllocation(4, max_iter=3, random_state=0, chunk_rows=120)
    fitted_memory.fit(matrix)
    assert np.array_equal(fitted_store.components_, fitted_memory.components_)
    lazy = fitted_store.transform(str(store), variable="X")
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), fitted_memory.transform(matrix))


def test_checkpoint_resume_gives_the_same_bits(store, tmp_path):
    def fit(path, **options):
        return dem.LatentDirichletAllocation(
            4, max_iter=5, random_state=0, checkpoint=path, **options
        ).fit(store, variable="X")

    whole = fit(tmp_path / "whole.zarr")

    def stop(info):
        if info.iteration == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "cut.zarr", callback=stop)
    with pytest.warns(UserWarning, match="after iteration 2 without converging"):
        from_checkpoint(tmp_path / "cut.zarr")  # interrupted: resume to finish it
    resumed = fit(tmp_path / "cut.zarr", resume=True)
    assert np.array_equal(resumed.components_, whole.components_)
    assert resumed.lower_bounds_ == whole.lower_bounds_ and resumed.bound_ == whole.bound_
    with warnings.catch_warnings():  # evaluate_every=-1: max_iter passes, nothing to test
        warnings.simplefilter("error")
        restored = from_checkpoint(tmp_path / "whole.zarr")
    assert np.array_equal(restored.components_, whole.components_)
    assert restored.doc_topic_prior_ == whole.doc_topic_prior_ == 0.25
    assert restored.bound_ == whole.bound_ and restored.n_iter_ == 5
    with pytest.warns(dem.ConvergenceWarning):  # perp_tol tested, max_iter came first
        fit(tmp_path / "capped.zarr", evaluate_every=1, perp_tol=1e-12)
    with pytest.warns(UserWarning, match="after iteration 5 without converging"):
        from_checkpoint(tmp_path / "capped.zarr")


def test_show_prints_each_topics_most_probable_words(store, tmp_path):
    """`dem show` names each topic's ten most probable terms by the store's vocabulary
    (written by `dem synth lda`), as term indices when the store has none."""
    group = zarr.open_group(store, mode="r")
    vocabulary = [str(word) for word in group["vocabulary"][:].tolist()]
    assert vocabulary[:3] == ["w00", "w01", "w02"] and len(vocabulary) == 80
    checkpoint = tmp_path / "fit.zarr"
    fitted = dem.LatentDirichletAllocation(4, max_iter=3, random_state=0, checkpoint=checkpoint)
    fitted.fit(store, variable="X")
    code, output = invoke("show", checkpoint)
    assert code == 0, output
    assert "top words per topic" in output
    for topic in fitted.components_:
        expected = [vocabulary[i] for i in sorted(range(80), key=lambda i: -topic[i])[:10]]
        assert " ".join(expected) in output
    del zarr.open_group(store, mode="r+")["vocabulary"]  # a corpus without one
    code, output = invoke("show", checkpoint)
    assert code == 0 and "term indices" in output
    top = sorted(range(80), key=lambda i: -fitted.components_[0][i])[:10]
    assert " ".join(map(str, top)) in output


def invoke(*args: str | os.PathLike[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, [os.fspath(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_command_line_on_worker_processes(process_client, tmp_path):
    """(Last in the file: the module's cluster stays the default client after it.)"""
    data, fit, out = tmp_path / "c.zarr", tmp_path / "fit.zarr", tmp_path / "topics.zarr"
    code, output = invoke(
        "synth", "lda", data, "-n", "600", "-d", "50", "-k", "3", "--words", "30",
        "--chunk-rows", "150", "--seed", "2",
    )  # fmt: skip
    assert code == 0, output
    assert "dem fit lda" in output
    scheduler = ("--scheduler", process_client.scheduler.address)
    code, output = invoke(
        "fit", "lda", data, "--var", "X", "-k", "3", "--max-iter", "4", "--checkpoint", fit,
        *scheduler,
    )  # fmt: skip
    assert code == 0, output
    local = dem.LatentDirichletAllocation(3, max_iter=4, random_state=0).fit(data, variable="X")
    restored = from_checkpoint(fit)
    assert isinstance(restored, dem.LatentDirichletAllocation)
    assert np.array_equal(restored.components_, local.components_)  # workers: the same bits
    code, output = invoke("predict", fit, data, "--var", "X", "--out", out, *scheduler)
    assert code == 0, output
    written = zarr.open_group(out, mode="r")["topics"][:]
    np.testing.assert_allclose(written, local.transform(data, variable="X"), rtol=1e-12)
    code, output = invoke("show", fit)
    assert code == 0 and "latent_dirichlet_allocation" in output
