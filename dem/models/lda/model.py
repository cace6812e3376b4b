"""Latent Dirichlet allocation as an :class:`~dem.model.EMModel`: what the engine calls.

:class:`LDAModel` holds the configuration (K, the priors in use, the per-document
iteration limits). Its E-step runs every document of a chunk to its variational
fixed point (:func:`dem.models.lda.kernels.doc_topics`) and returns the additive
topic-word statistics; the M-step is scikit-learn's batch update. The traced objective
(the ``lower_bound`` hook) is minus the perplexity of the parameters the pass
evaluated, ``-exp(-bound / words)``: it increases whenever the evidence lower bound
does, and its change is scikit-learn's stopping rule (``perp_tol``) as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from dem.model import Block, Params, Stats
from dem.models.lda import kernels


@dataclass(frozen=True)
class LDAModel:
    """The pure functions of LDA by batch variational EM (see :mod:`dem.model`).

    Parameters
    ----------
    n_components : int
        Number of topics.
    doc_topic_prior, topic_word_prior : float
        The priors in use (α, η).
    max_doc_update_iter : int
        Steps of each document's fixed point at most.
    mean_change_tol : float
        A document stops after the first step that changes its γ by less than this
        (mean absolute change).
    """

    n_components: int
    doc_topic_prior: float
    topic_word_prior: float
    max_doc_update_iter: int = 100
    mean_change_tol: float = 1e-3

    name: ClassVar[str] = "latent_dirichlet_allocation"
    inputs: ClassVar[tuple[str, ...]] = ("X",)
    missing_ok: ClassVar[frozenset[str]] = frozenset()
    remedy: ClassVar[str] = (
        "Check that the input holds non-negative word counts and that every topic has "
        "a positive topic_word_prior."
    )

    def config(self) -> dict[str, Any]:
        return {
            "n_components": self.n_components,
            "doc_topic_prior": self.doc_topic_prior,
            "topic_word_prior": self.topic_word_prior,
            "max_doc_update_iter": self.max_doc_update_iter,
            "mean_change_tol": self.mean_change_tol,
        }

    def param_dims(self) -> dict[str, tuple[str, ...]]:
        return {
            "components": ("component", "feature"),
            "exp_dirichlet_component": ("component", "feature"),
            "topic_bound": (),
        }

    def initial(self, components: np.ndarray) -> Params:
        """The parameters of the initial topics ``components`` (λ, K × V)."""
        return kernels.params_from_components(components, self.topic_word_prior)

    def e_step(self, block: Block, params: Params) -> Stats:
        matrix = kernels.as_csr(block["X"])
        kernels.check_counts(matrix)
        stats = kernels.e_step(
            matrix,
            params["exp_dirichlet_component"],
            self.doc_topic_prior,
            self.max_doc_update_iter,
            self.mean_change_tol,
            block.get("sample_weight"),
        )
        stats["topic_bound"] = np.float64(params["topic_bound"])
        return stats

    def combine(self, a: Stats, b: Stats) -> Stats:
        """The sum of the additive statistics; ``topic_bound`` (the same in every chunk:
        a function of the parameters the pass evaluated) is kept once."""
        if a.keys() != b.keys():
            raise ValueError(f"cannot combine statistics with keys {sorted(a)} and {sorted(b)}")
        return {key: a[key] if key == "topic_bound" else a[key] + b[key] for key in a}

    def m_step(self, stats: Stats, params: Params) -> Params:
        return kernels.m_step(stats, params, self.topic_word_prior)

    def bound(self, stats: Stats) -> float:
        """The evidence lower bound of the parameters the pass evaluated (scikit-learn's
        ``score``)."""
        return float(stats["loglik"]) + float(stats["topic_bound"])

    def lower_bound(self, stats: Stats, params: Params) -> float:
        """Minus the perplexity of the parameters the pass evaluated (``params``, the
        M-step's result, is not used: the bound is that of the E-step's parameters)."""
        words = float(stats["n_words"])
        if not words > 0:
            raise ValueError(
                "The documents hold no words (every count is zero); LDA needs word counts."
            )
        return -kernels.perplexity(self.bound(stats), words)
