"""The mathematics of latent Dirichlet allocation by variational EM, on sparse blocks.

Notation (Blei, Ng & Jordan 2003; Hoffman, Blei & Bach 2010; scikit-learn's
``LatentDirichletAllocation``): ``λ`` (``components``, K × V) are the variational
Dirichlet parameters of the topics, ``γ`` (n × K) those of each document's topic
proportions, ``α`` (``doc_topic_prior``) and ``η`` (``topic_word_prior``) the priors.
``exp(E[log β])`` (``exp_dirichlet_component``) and ``exp(E[log θ])`` are the
exponentiated Dirichlet expectations.

The documents of a chunk are processed in blocks of a few thousand stored entries:
a block's word counts are a CSR slice, the K topic weights of its stored entries a
dense (entries × K) array gathered once, and one step of the fixed point of all its
documents is a few passes over those (O(entries · K)), not a Python loop over
documents. A block runs to its fixed point before the next is gathered, so its arrays
stay in cache through every step. Each document stops as scikit-learn's does, after
the first step whose mean absolute change of ``γ`` is below ``mean_change_tol``, and
leaves the block's working set.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse
from scipy.special import gammaln, psi

EPS = float(np.finfo(np.float64).eps)
"""Added to each normaliser of the word-topic responsibilities (scikit-learn's ``EPS``)."""


def as_csr(block: Any) -> sparse.csr_matrix:
    """A block of word counts (dense or any scipy.sparse format) as float64 CSR, with
    its entries sorted and summed (duplicates added), never densified."""
    if sparse.issparse(block):
        matrix = sparse.csr_matrix(block, dtype=np.float64, copy=False)
    else:
        matrix = sparse.csr_matrix(np.asarray(block, dtype=np.float64))
    if not matrix.has_canonical_format:
        matrix = matrix.copy()
        matrix.sum_duplicates()
    return matrix


def dirichlet_expectation(alpha: np.ndarray) -> np.ndarray:
    """``E[log x]`` for ``x ~ Dirichlet(alpha)`` along the last axis."""
    return psi(alpha) - psi(np.sum(alpha, axis=-1, keepdims=True))


def exp_dirichlet_expectation(alpha: np.ndarray) -> np.ndarray:
    """``exp(E[log x])`` (the geometric mean) for ``x ~ Dirichlet(alpha)``."""
    return np.exp(dirichlet_expectation(alpha))


def check_counts(matrix: sparse.csr_matrix) -> None:
    """Refuse negative counts (NaN and infinity are refused before, by the engine)."""
    if matrix.nnz and matrix.data.min() < 0:
        rows = np.unique(np.searchsorted(matrix.indptr, np.flatnonzero(matrix.data < 0), "right"))
        rows = rows - 1
        raise ValueError(
            f"Negative values in data passed to LatentDirichletAllocation: {len(rows)} "
            f"document(s) hold negative counts, the first at row {rows[0]} of this chunk. "
            "LDA needs non-negative word counts."
        )


def _row_lengths(indptr: np.ndarray) -> np.ndarray:
    """The number of stored entries of each row of a CSR matrix with pointers ``indptr``."""
    return np.diff(indptr)


def _norms(exp_theta: np.ndarray, lengths: np.ndarray, topic_words: np.ndarray) -> np.ndarray:
    """``Σ_k exp(E[log θ_dk]) exp(E[log β_kw])`` for each stored entry (d, w) (each row
    of ``exp_theta`` repeated for its ``lengths`` entries: a contiguous copy, several
    times faster than gathering by row index)."""
    return np.einsum("jk,jk->j", np.repeat(exp_theta, lengths, axis=0), topic_words)


BLOCK_ELEMENTS = 2**19
"""Entries × topics of a block of documents (4 MiB of float64 topic weights): each block
runs to its fixed point with its arrays in cache (2× faster per document than steps over
whole chunks, and than blocks 8× smaller or larger, measured at K = 50, V = 5e4)."""


def _blocks(indptr: np.ndarray, k: int) -> list[tuple[int, int]]:
    """Consecutive row ranges of about ``BLOCK_ELEMENTS / k`` stored entries each."""
    step = max(1, BLOCK_ELEMENTS // max(k, 1))
    cuts = np.searchsorted(indptr, np.arange(step, indptr[-1], step))
    bounds = np.unique(np.concatenate([[0], cuts, [len(indptr) - 1]]))
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


@dataclass
class _Working:
    """Documents still moving towards their fixed point: their rows in the chunk, the
    chunk positions, counts and topic weights (entries × K, rows of the transposed
    ``exp(E[log β])``) of their stored entries, their ``lengths`` (entries per
    document), γ, ``exp(E[log θ])`` and the steps each has taken."""

    rows: np.ndarray
    positions: np.ndarray
    counts: np.ndarray
    words: np.ndarray
    lengths: np.ndarray
    gamma: np.ndarray
    theta: np.ndarray
    steps: np.ndarray

    def select(self, keep: np.ndarray) -> _Working:
        """The documents ``keep`` (a boolean mask) of this set."""
        entries = np.repeat(keep, self.lengths)
        return _Working(
            self.rows[keep], self.positions[entries], self.counts[entries],
            self.words[entries], self.lengths[keep], self.gamma[keep], self.theta[keep],
            self.steps[keep],
        )  # fmt: skip

    @staticmethod
    def join(parts: list[_Working]) -> _Working:
        """One set of the documents of ``parts``."""
        return _Working(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


_FIELDS = ("rows", "positions", "counts", "words", "lengths", "gamma", "theta", "steps")

SHRINK = 0.75
"""The working set is compacted when fewer than this fraction of its documents still
move (compacting after every step costs more than the steps it saves)."""

TAIL = 0.125
"""A block stops when fewer than this fraction of its documents still move; those wait
to be joined with the slow documents of other blocks, so that the last steps of a few
slow documents are not paid per block."""


@dataclass
class _Result:
    """Where documents that stopped are written: γ, ``exp(E[log θ])`` (n × K) and the
    final normaliser of each stored entry."""

    gamma: np.ndarray
    exp_theta: np.ndarray
    norm: np.ndarray

    def finish(self, done: _Working) -> None:
        self.gamma[done.rows], self.exp_theta[done.rows] = done.gamma, done.theta
        self.norm[done.positions] = _norms(done.theta, done.lengths, done.words)


def _converge(
    work: _Working,
    result: _Result,
    doc_topic_prior: float,
    max_iter: int,
    mean_change_tol: float,
    tail: float,
) -> _Working | None:
    """Steps of the documents of ``work`` until fewer than ``tail`` of them still move
    (``tail = 0``: until none does); the documents that stopped are written to
    ``result``, those still moving returned. A document stops after the first step that
    changes its γ by less than ``mean_change_tol`` (mean absolute change) or after its
    ``max_iter``-th step, as scikit-learn's per-document loop does."""
    floor = tail * len(work.rows)
    moving = work.steps < max_iter
    while True:
        still = int(moving.sum())
        if still < SHRINK * len(work.rows) or still <= floor:  # compact the working set
            result.finish(work.select(~moving))
            work, moving = work.select(moving), np.ones(still, dtype=bool)
        if still <= floor:
            break
        norm = _norms(work.theta, work.lengths, work.words) + EPS
        pointers = np.concatenate([[0], np.cumsum(work.lengths)])
        weights = sparse.csr_matrix(  # row d sums its entries' x / norm times their words
            (work.counts / norm, np.arange(len(norm)), pointers),
            shape=(len(work.lengths), len(norm)),
        )
        updated = work.theta * (weights @ work.words)
        updated += doc_topic_prior
        work.steps += moving
        change = np.mean(np.abs(work.gamma - updated), axis=1)
        np.copyto(work.gamma, updated, where=moving[:, None])  # those that stopped keep theirs
        np.copyto(work.theta, exp_dirichlet_expectation(updated), where=moving[:, None])
        moving &= (change >= mean_change_tol) & (work.steps < max_iter)
    return work if len(work.rows) else None


def _fixed_points(
    matrix: sparse.csr_matrix,
    exp_topic_word: np.ndarray,
    doc_topic_prior: float,
    max_iter: int,
    mean_change_tol: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """γ, ``exp(E[log θ])`` and the final normaliser of each stored entry
    (``Σ_k exp(E[log θ_dk]) exp(E[log β_kw])``, without ``EPS``) of every document,
    block of documents by block: each block's topic weights are gathered once (rows of
    the transposed ``exp(E[log β])``, contiguous) and stay in cache while its documents
    step; the few slow documents of several blocks then step together."""
    n, k = matrix.shape[0], exp_topic_word.shape[0]
    result = _Result(np.empty((n, k)), np.empty((n, k)), np.empty(matrix.nnz))
    by_word = np.ascontiguousarray(exp_topic_word.T)
    lengths = _row_lengths(matrix.indptr)
    start = exp_dirichlet_expectation(np.ones(k))
    waiting: list[_Working] = []
    waiting_entries = 0
    for a, b in _blocks(matrix.indptr, k):
        p, q = int(matrix.indptr[a]), int(matrix.indptr[b])
        work = _Working(
            np.arange(a, b), np.arange(p, q), matrix.data[p:q],
            np.take(by_word, matrix.indices[p:q], axis=0), lengths[a:b],
            np.ones((b - a, k)), np.tile(start, (b - a, 1)), np.zeros(b - a, dtype=np.int64),
        )  # fmt: skip
        rest = _converge(work, result, doc_topic_prior, max_iter, mean_change_tol, TAIL)
        if rest is not None:
            waiting.append(rest)
            waiting_entries += len(rest.counts)
        if waiting_entries * k >= BLOCK_ELEMENTS:
            rest = _converge(
                _Working.join(waiting), result, doc_topic_prior, max_iter, mean_change_tol, TAIL
            )
            waiting, waiting_entries = ([], 0) if rest is None else ([rest], len(rest.counts))
    if waiting:
        _converge(_Working.join(waiting), result, doc_topic_prior, max_iter, mean_change_tol, 0.0)
    return result.gamma, result.exp_theta, result.norm


def doc_topics(
    matrix: sparse.csr_matrix,
    exp_topic_word: np.ndarray,
    doc_topic_prior: float,
    max_iter: int,
    mean_change_tol: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The variational ``γ`` of every document of ``matrix`` and ``exp(E[log θ])``.

    scikit-learn's ``_update_doc_distribution`` for all documents, from its
    deterministic start (``γ = 1``): at most ``max_iter`` steps, each document
    stopping after the first step whose mean absolute change is below
    ``mean_change_tol`` (an empty document's first step gives ``γ = α``, its second
    no change).
    """
    gamma, exp_theta, _ = _fixed_points(
        matrix, exp_topic_word, doc_topic_prior, max_iter, mean_change_tol
    )
    return gamma, exp_theta


def e_step(
    matrix: sparse.csr_matrix,
    exp_topic_word: np.ndarray,
    doc_topic_prior: float,
    max_iter: int,
    mean_change_tol: float,
    weights: np.ndarray | None = None,
) -> dict[str, Any]:
    """One block's statistics: the expected number of times each topic produced each
    word, ``sstats = exp(E[log β]) ⊙ Σ_d outer(exp(E[log θ_d]), x_d / norm_d)`` (K × V:
    scikit-learn's sufficient statistics after its product with ``exp(E[log β])``, so
    that they mean the same whatever the parameters), the block's part of the evidence
    lower bound (``loglik``), its word count and its number of documents. With
    ``weights`` (one per document) every sum is weighted: an integer weight counts as
    the document repeated, a zero weight as the document left out."""
    gamma, exp_theta, norm = _fixed_points(
        matrix, exp_topic_word, doc_topic_prior, max_iter, mean_change_tol
    )
    if weights is not None:
        return _weighted_stats(matrix, exp_topic_word, doc_topic_prior, gamma, exp_theta, norm,
                               np.asarray(weights, dtype=np.float64))  # fmt: skip
    scaled = sparse.csr_matrix((matrix.data / (norm + EPS), matrix.indices, matrix.indptr),
                               shape=matrix.shape)  # fmt: skip
    sstats = (scaled.T @ exp_theta).T * exp_topic_word  # expected counts of each topic's words
    with np.errstate(divide="ignore"):  # a word of zero probability: -inf, as scikit-learn's
        words_bound = float(matrix.data @ np.log(norm)) if matrix.nnz else 0.0
    bound = words_bound + doc_bound(gamma, doc_topic_prior)
    return {
        "sstats": sstats,
        "loglik": np.float64(bound),
        "n_words": np.float64(matrix.data.sum()),
        "n": np.float64(matrix.shape[0]),
    }


def _weighted_stats(
    matrix: sparse.csr_matrix,
    exp_topic_word: np.ndarray,
    doc_topic_prior: float,
    gamma: np.ndarray,
    exp_theta: np.ndarray,
    norm: np.ndarray,
    weights: np.ndarray,
) -> dict[str, Any]:
    """:func:`e_step`'s statistics with one weight per document (``np.where``: a
    zero-weight document adds nothing, not even a ``-inf`` word bound)."""
    entry = np.repeat(weights, _row_lengths(matrix.indptr))
    kept = entry > 0
    scaled = sparse.csr_matrix(
        (np.where(kept, entry * matrix.data / (norm + EPS), 0.0), matrix.indices, matrix.indptr),
        shape=matrix.shape,
    )
    sstats = (scaled.T @ exp_theta).T * exp_topic_word
    with np.errstate(divide="ignore", invalid="ignore"):
        words_bound = float(np.sum(np.where(kept, entry * matrix.data * np.log(norm), 0.0)))
    per_doc = doc_bounds(gamma, doc_topic_prior)
    bound = words_bound + float(np.sum(np.where(weights > 0, weights * per_doc, 0.0)))
    return {
        "sstats": sstats,
        "loglik": np.float64(bound),
        "n_words": np.float64(np.sum(np.where(kept, entry * matrix.data, 0.0))),
        "n": np.float64(weights.sum()),
    }


def doc_bounds(gamma: np.ndarray, doc_topic_prior: float) -> np.ndarray:
    """Each document's ``E[log p(θ_d | α) − log q(θ_d | γ_d)]`` (:func:`doc_bound`'s
    terms)."""
    k = gamma.shape[1]
    elog = dirichlet_expectation(gamma)
    terms = np.sum((doc_topic_prior - gamma) * elog + gammaln(gamma), axis=1)
    return (
        terms
        - k * gammaln(doc_topic_prior)
        + gammaln(doc_topic_prior * k)
        - gammaln(gamma.sum(axis=1))
    )


def doc_bound(gamma: np.ndarray, doc_topic_prior: float) -> float:
    """``Σ_d E[log p(θ_d | α) − log q(θ_d | γ_d)]`` (scikit-learn's ``_loglikelihood``
    of the document-topic part)."""
    k = gamma.shape[1]
    elog = dirichlet_expectation(gamma)
    total = float(np.sum((doc_topic_prior - gamma) * elog))
    total += float(np.sum(gammaln(gamma)) - gamma.size * gammaln(doc_topic_prior))
    total += float(len(gamma) * gammaln(doc_topic_prior * k) - np.sum(gammaln(gamma.sum(axis=1))))
    return total


def topic_bound(components: np.ndarray, topic_word_prior: float) -> float:
    """``Σ_k E[log p(β_k | η) − log q(β_k | λ_k)]`` (the topic part of the bound)."""
    v = components.shape[1]
    elog = dirichlet_expectation(components)
    total = float(np.sum((topic_word_prior - components) * elog))
    total += float(np.sum(gammaln(components)) - components.size * gammaln(topic_word_prior))
    total += float(
        len(components) * gammaln(topic_word_prior * v) - np.sum(gammaln(components.sum(axis=1)))
    )
    return total


def params_from_components(components: np.ndarray, topic_word_prior: float) -> dict[str, Any]:
    """The parameters of topics ``λ``: ``λ`` itself, ``exp(E[log β])`` and the topic part
    of the bound (both derived from ``λ``, kept so that each E-step need not recompute
    them)."""
    components = np.asarray(components, dtype=np.float64)
    return {
        "components": components,
        "exp_dirichlet_component": exp_dirichlet_expectation(components),
        "topic_bound": np.float64(topic_bound(components, topic_word_prior)),
    }


def m_step(
    stats: dict[str, Any], params: dict[str, Any], topic_word_prior: float
) -> dict[str, Any]:
    """Batch variational M-step: ``λ = η + sstats`` (the expected counts)."""
    components = topic_word_prior + np.asarray(stats["sstats"], dtype=np.float64)
    return params_from_components(components, topic_word_prior)


def perplexity(bound: float, n_words: float) -> float:
    """scikit-learn's perplexity: ``exp(−bound / words)``."""
    return float(np.exp(-bound / n_words))
