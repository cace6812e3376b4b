"""The user API of latent Dirichlet allocation: :class:`LatentDirichletAllocation`."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable
from numbers import Integral
from typing import Any, ClassVar

import numpy as np
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions

from dem.data import Samples, as_samples
from dem.display import HTMLRepr
from dem.engine import ConvergenceWarning, EMResult, map_reduce, memory_budget
from dem.estimator import (
    EMEstimator,
    NotFittedError,
    RandomState,
    as_generator,
    counts,
    fit_restarts,
    in_memory_array,
    per_sample,
    reals,
)
from dem.model import Params
from dem.models.lda import corpus, kernels
from dem.models.lda.model import LDAModel
from dem.online import fit_online
from dem.weights import with_weights


class LatentDirichletAllocation(
    HTMLRepr, ClassNamePrefixFeaturesOutMixin, TransformerMixin, EMEstimator
):
    """Latent Dirichlet allocation by batch variational EM over Dask chunks of documents,
    with scikit-learn's interface (:class:`sklearn.decomposition.LatentDirichletAllocation`).

    The input is a document × term matrix of word counts: a ``scipy.sparse`` matrix, a
    dask array of sparse (CSR) chunks, a Zarr group in the CSR layout
    (:mod:`dem.models.lda.corpus`), or any dense input dem reads. Each E-step runs every
    document of a chunk to its variational fixed point at once and returns the expected
    topic-word counts (K × V); the M-step sets ``components_``. From the same
    ``components_init`` every iteration equals scikit-learn's batch LDA whose
    per-document start is deterministic (``γ = 1``, scikit-learn's ``transform`` start;
    its ``fit`` draws one per call instead).

    Parameters
    ----------
    n_components : int, default=10
        Number of topics.
    doc_topic_prior : float, optional
        Prior α of the document-topic distributions; default ``1 / n_components``.
    topic_word_prior : float, optional
        Prior η of the topic-word distributions; default ``1 / n_components``.
    learning_method : {"batch", "online"}, default="batch"
        ``"batch"``: variational EM, each iteration a pass over all the documents.
        ``"online"``: dem's online EM (:mod:`dem.online`; Hoffman, Blei & Bach 2010 for
        LDA): λ ← (1 − ρ) λ + ρ (η + N / size(B) · counts of the batch B) after every
        ``batch_chunks`` chunks (in a random order each pass), ρ = (t + 1) ** -κ for the
        t-th update (t = 0, 1, ...: scikit-learn's rate with ``learning_offset`` 0).
    learning_decay : float, default=0.7
        κ, in (0.5, 1].
    batch_chunks : int, default=1
        Chunks per online update (dem's batches are whole chunks, in place of
        scikit-learn's ``batch_size`` documents).
    max_iter : int, default=10
        Passes over the data (EM iterations, or online passes).
    max_doc_update_iter : int, default=100
        Steps of each document's fixed point at most.
    mean_change_tol : float, default=1e-3
        A document stops after the first step that changes its γ by less than this
        (mean absolute change).
    evaluate_every : int, default=-1
        > 0: stop when the perplexity changes by less than ``perp_tol`` (tested every
        iteration: each pass measures it at no extra cost); <= 0: run ``max_iter``
        iterations (no ``ConvergenceWarning``).
    perp_tol : float, default=0.1
        Perplexity tolerance (scikit-learn's).
    tol : float, optional
        dem's threshold on the change of minus the perplexity, tested every iteration
        whatever ``evaluate_every`` says (``0``: none; a ``ConvergenceWarning`` when
        ``max_iter`` ends the fit). Default: scikit-learn's rule above.
    components_init : array-like of shape (n_components, n_features), optional
        The initial topic-word parameters λ (positive). Default: drawn from
        Gamma(100, 1/100) with ``random_state``, as scikit-learn draws them.
    random_state : int, numpy.random.RandomState or numpy.random.Generator, optional
    chunk_rows : int, optional
        Documents per chunk for in-memory input (default 100,000).
    checkpoint, resume, storage_options, checkpoint_storage_options, split_every, persist, \
callback, sample_dim, feature_dim
        As :class:`dem.GaussianMixture`. The trace is minus the perplexity.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        The variational parameters λ of the topics.
    exp_dirichlet_component_ : ndarray of shape (n_components, n_features)
        ``exp(E[log β])``.
    doc_topic_prior_, topic_word_prior_ : float
        The priors in use.
    n_iter_ : int
        Passes over the data (EM iterations).
    bound_ : float
        The perplexity of the training data at the final parameters (one more pass,
        as scikit-learn's).
    lower_bounds_ : list of float
        Minus the perplexity at the parameters each iteration started from (online:
        each pass's document part of the bound per document, measured batch by batch).
    n_batch_iter_ : int
        Online updates made (``learning_method="online"`` only).
    lower_bound_ : float
        Its last value.
    converged_ : bool
    n_features_in_ : int
    """

    _objective: ClassVar[str] = "minus perplexity"
    n_init: int = 1
    accelerate: str = "none"

    def __init__(
        self,
        n_components: int = 10,
        *,
        doc_topic_prior: float | None = None,
        topic_word_prior: float | None = None,
        learning_method: str = "batch",
        learning_decay: float = 0.7,
        batch_chunks: int = 1,
        max_iter: int = 10,
        max_doc_update_iter: int = 100,
        mean_change_tol: float = 1e-3,
        evaluate_every: int = -1,
        perp_tol: float = 1e-1,
        tol: float | None = None,
        components_init: Any = None,
        random_state: RandomState = None,
        chunk_rows: int | None = None,
        checkpoint: Any = None,
        resume: bool = False,
        storage_options: dict[str, Any] | None = None,
        checkpoint_storage_options: dict[str, Any] | None = None,
        split_every: int = 8,
        persist: bool | None = None,
        callback: Callable[[Any], Any] | None = None,
        sample_dim: str = "sample",
        feature_dim: str = "feature",
    ) -> None:
        self.n_components = n_components
        self.doc_topic_prior = doc_topic_prior
        self.topic_word_prior = topic_word_prior
        self.learning_method = learning_method
        self.learning_decay = learning_decay
        self.batch_chunks = batch_chunks
        self.max_iter = max_iter
        self.max_doc_update_iter = max_doc_update_iter
        self.mean_change_tol = mean_change_tol
        self.evaluate_every = evaluate_every
        self.perp_tol = perp_tol
        self.tol = tol  # type: ignore[assignment]  # None: scikit-learn's rule
        self.components_init = components_init
        self.random_state = random_state
        self.chunk_rows = chunk_rows
        self.checkpoint = checkpoint
        self.resume = resume
        self.storage_options = storage_options
        self.checkpoint_storage_options = checkpoint_storage_options
        self.split_every = split_every
        self.persist = persist
        self.callback = callback
        self.sample_dim = sample_dim
        self.feature_dim = feature_dim

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **EMEstimator._parameter_constraints,
        "n_components": counts(1),
        "doc_topic_prior": [None, *reals(0, None, closed="neither")],
        "topic_word_prior": [None, *reals(0, None, closed="neither")],
        "learning_method": [StrOptions({"batch", "online"})],
        "learning_decay": reals(0.5, 1, closed="right"),
        "max_doc_update_iter": counts(0),
        "mean_change_tol": reals(0),
        "evaluate_every": [Interval(Integral, None, None, closed="neither")],
        "perp_tol": reals(0),
        "tol": [None, *reals(0)],
        "components_init": [None, "array-like"],
        "chunk_rows": [None, *counts(1)],
    }

    # --- input ---------------------------------------------------------------------------

    def _samples(self, X: Any, variable: str | None) -> Samples:
        """The documents as :class:`~dem.data.Samples`: sparse input stays sparse (CSR
        chunks), dense input is read as dem reads any input."""
        return self._corpus(X, variable)[0]

    def _corpus(self, X: Any, variable: str | None) -> tuple[Samples, int | None]:
        """:meth:`_samples` and, for sparse input, the bytes its CSR chunks take in
        memory (None for dense input, which the engine sizes itself)."""
        if corpus.is_sparse(X):
            if X.ndim != 2 or 0 in X.shape:
                raise ValueError(
                    f"X is empty or not 2-D (shape {X.shape}); it needs documents × terms."
                )
            array = corpus.from_scipy(X, self.chunk_rows)
            samples = dataclasses.replace(as_samples(array, name="X"), kind="numpy")
            return samples, corpus.scipy_bytes(X)
        if isinstance(variable, str):
            group = corpus.csr_group(X, variable, self.storage_options)
            if group is not None:
                where = f"{os.fspath(X)}" if isinstance(X, str | os.PathLike) else None
                samples = corpus.read_csr(group, variable, where and f"{where}::{variable}")
                return samples, corpus.group_bytes(group)
        samples = self._dense_samples(X, variable)
        if corpus.is_sparse_dask(samples.array):
            return samples, corpus.estimated_bytes(samples.array)
        return samples, None

    def _persist(self, stored: int | None) -> bool | None:
        """``persist`` for the engine: the estimator's, or with ``persist=None`` and
        sparse input, whether its CSR chunks (not its dense size) fit the engine's
        memory budget."""
        if self.persist is not None or stored is None:
            return self.persist
        return stored <= memory_budget()

    def _dense_samples(self, X: Any, variable: str | None) -> Samples:
        return as_samples(
            in_memory_array(X, self),
            variable=variable,
            sample_dim=self.sample_dim,
            feature_dim=self.feature_dim,
            chunk_rows=self.chunk_rows,
            storage_options=self.storage_options,
        )

    def _model(self) -> LDAModel:
        k = int(self.n_components)
        alpha = 1.0 / k if self.doc_topic_prior is None else float(self.doc_topic_prior)
        eta = 1.0 / k if self.topic_word_prior is None else float(self.topic_word_prior)
        return LDAModel(k, alpha, eta, int(self.max_doc_update_iter), float(self.mean_change_tol))

    def _components_init(self, n_features: int) -> np.ndarray | None:
        if self.components_init is None:
            return None
        start = np.asarray(self.components_init, dtype=np.float64)
        shape = (int(self.n_components), n_features)
        if start.shape != shape:
            raise ValueError(f"components_init must have shape {shape}, got {start.shape}.")
        if not np.all(np.isfinite(start)) or np.any(start <= 0):
            raise ValueError("components_init must hold finite, positive numbers.")
        return start

    def _stopping(self) -> tuple[float, bool]:
        """The engine's ``tol`` and whether convergence is tested at all."""
        if self.tol is not None:
            return float(self.tol), True
        if self.evaluate_every > 0:
            return float(self.perp_tol), True
        return 0.0, False

    # --- fitting -------------------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(
        self, X: Any, y: Any = None, *, variable: str | None = None, sample_weight: Any = None
    ) -> LatentDirichletAllocation:
        """Fit the topics by batch variational EM.

        Parameters
        ----------
        X : sparse matrix, dask array, array-like, xarray.DataArray or path
            Word counts, documents × terms; a Zarr store path needs ``variable`` (an
            array, or a group in the CSR layout).
        y : ignored
        variable : str, optional
            Name of the array or CSR group in a Zarr store (or of an xarray Dataset's
            variable).
        sample_weight : array-like of shape (n_documents,), dask array, or str, optional
            One non-negative weight per document (a string names a variable of ``X``'s
            Zarr store): every statistic, the bound and the word count are weighted sums,
            so an integer weight counts as the document repeated and a zero weight as
            the document left out. Batch learning only.

        Returns
        -------
        self
        """
        samples, stored = self._corpus(X, variable)
        weights = self._sample_weight(sample_weight, X, samples)
        if weights is not None and self.learning_method == "online":
            raise ValueError(
                "sample_weight is supported with learning_method='batch' only; use it, or "
                "repeat the documents."
            )
        persist = self._persist(stored)
        n_features = int(samples.array.shape[1])
        model = self._model()
        start = self._components_init(n_features)
        k = model.n_components

        def make_init(rng: np.random.Generator) -> Params:
            components = start if start is not None else rng.gamma(100.0, 0.01, (k, n_features))
            return model.initial(components)

        if self.learning_method == "online":
            self._fit_online(model, samples, make_init, persist)
            self._set_features(X, variable, n_features)
            stats = self._pass(samples)
            self.bound_ = kernels.perplexity(model.bound(stats), float(stats["n_words"]))
            return self
        tol, tested = self._stopping()

        def finish(best: EMResult) -> tuple[Params, dict[str, Any]]:
            """``bound_`` (one more pass, as in scikit-learn), recorded in the checkpoint
            with whether the fit tested convergence (for :meth:`_set_final`)."""
            self._set_params(best.params)
            stats = self._pass(samples, weights)
            self.bound_ = kernels.perplexity(model.bound(stats), float(stats["n_words"]))
            self._planned_passes = not tested
            return {}, {"bound": self.bound_, "stopping_tested": tested}

        with warnings.catch_warnings():
            if not tested:  # max_iter iterations is the plan, as in scikit-learn
                warnings.simplefilter("ignore", ConvergenceWarning)
            best, _ = fit_restarts(
                model,
                with_weights({"X": samples}, weights),
                make_init,
                n_init=1,
                random_state=self.random_state,
                tol=tol,
                max_iter=int(self.max_iter),
                split_every=int(self.split_every),
                checkpoint=self.checkpoint,
                resume=self.resume,
                callback=self.callback,
                persist=persist,
                finish=finish,
                checkpoint_storage_options=self._checkpoint_options(),
            )
        self.converged_ = best.converged
        self.n_iter_ = best.n_iter
        self.lower_bounds_ = list(best.lower_bounds)
        self.lower_bound_ = best.lower_bound
        self._set_features(X, variable, n_features)
        return self

    def _set_final(self, final: dict[str, Any]) -> None:
        """What :func:`dem.from_checkpoint` restores of a finished fit: ``bound_``, and
        whether the fit made its ``max_iter`` iterations without a stopping test."""
        self.bound_ = float(final["bound"])
        self._planned_passes = not bool(final["stopping_tested"])

    def _finished_unconverged(self) -> bool:
        """Whether a fit that did not converge finished as planned: with
        ``evaluate_every <= 0`` and ``tol=None`` (scikit-learn's default) a fit makes
        ``max_iter`` iterations and tests nothing, so it has nothing to converge to and
        :func:`dem.from_checkpoint` does not warn; it warns about an interrupted fit,
        or one stopped by ``max_iter`` before ``perp_tol``."""
        return bool(getattr(self, "_planned_passes", False))

    def _fit_online(
        self,
        model: LDAModel,
        samples: Samples,
        make_init: Callable[..., Params],
        persist: bool | None,
    ) -> None:
        """``max_iter`` passes of online EM (no checkpoint: each update is too short)."""
        if self.checkpoint is not None:
            raise ValueError(
                "learning_method='online' does not write checkpoints; pass checkpoint=None "
                "or use learning_method='batch'."
            )
        rng = as_generator(self.random_state)
        result = fit_online(
            model,
            {"X": samples.array},
            lambda: make_init(rng),
            n_passes=int(self.max_iter),
            batch_chunks=int(self.batch_chunks),
            step_exponent=float(self.learning_decay),
            random_state=rng,
            split_every=int(self.split_every),
            callback=self.callback,
            persist=persist,
        )
        self._set_params(result.params)
        self.converged_ = False
        self.n_iter_ = int(self.max_iter)
        self.n_batch_iter_ = result.n_iter
        self.lower_bounds_ = list(result.lower_bounds)
        self.lower_bound_ = result.lower_bound

    def _set_params(self, params: Params) -> None:
        model = self._model()
        self.doc_topic_prior_ = model.doc_topic_prior
        self.topic_word_prior_ = model.topic_word_prior
        self.components_ = np.asarray(params["components"])
        self.exp_dirichlet_component_ = np.asarray(params["exp_dirichlet_component"])

    def _params(self) -> Params:
        if not hasattr(self, "components_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit first.")
        return self._model().initial(self.components_)

    def _checked(self, X: Any, variable: str | None) -> Samples:
        samples = self._samples(X, variable)
        self._check_features(X, variable, int(samples.array.shape[1]))
        return samples

    def _pass(self, samples: Samples, weights: Samples | None = None) -> dict[str, Any]:
        """The statistics of all the documents at the fitted parameters (one pass),
        weighted by ``weights`` when given."""
        model = self._model()
        return map_reduce(
            model.e_step,
            model.combine,
            {name: s.array for name, s in with_weights({"X": samples}, weights).items()},
            self._params(),
            split_every=int(self.split_every),
            missing_ok=model.missing_ok,
        )

    # --- per-document results and scores -------------------------------------------------

    def transform(self, X: Any, *, normalize: bool = True, variable: str | None = None) -> Any:
        """Document-topic distributions, shape (n_documents, n_components): numpy for
        in-memory input, lazy (chunked as the documents) for dask or Zarr input.

        Parameters
        ----------
        X : as for :meth:`fit`
        normalize : bool, default=True
            Normalise each row (else the variational γ, as scikit-learn's
            ``normalize=False``).
        variable : str, optional
        """
        params = self._params()
        samples = self._checked(X, variable)
        model = self._model()
        words = params["exp_dirichlet_component"]

        def topics(block: Any) -> np.ndarray:
            matrix = kernels.as_csr(block)
            kernels.check_counts(matrix)
            gamma, _ = kernels.doc_topics(
                matrix, words, model.doc_topic_prior, model.max_doc_update_iter,
                model.mean_change_tol,
            )  # fmt: skip
            return gamma / gamma.sum(axis=1, keepdims=True) if normalize else gamma

        return per_sample(samples, topics, columns=model.n_components)

    def fit_transform(
        self, X: Any, y: Any = None, *, normalize: bool = True, variable: str | None = None
    ) -> Any:
        """Fit, then :meth:`transform` the same documents."""
        return self.fit(X, variable=variable).transform(X, normalize=normalize, variable=variable)

    def score(self, X: Any, y: Any = None, *, variable: str | None = None) -> float:
        """The approximate log-likelihood (evidence lower bound) of ``X``: scikit-learn's
        ``score`` (one pass)."""
        self._params()
        stats = self._pass(self._checked(X, variable))
        return self._model().bound(stats)

    def perplexity(
        self, X: Any, sub_sampling: bool = False, *, variable: str | None = None
    ) -> float:
        """``exp(-score(X) / words)``: scikit-learn's ``perplexity`` (one pass).
        ``sub_sampling`` must be False (scikit-learn's is deprecated)."""
        if sub_sampling:
            raise ValueError("sub_sampling is not supported; pass sub_sampling=False.")
        self._params()
        stats = self._pass(self._checked(X, variable))
        return kernels.perplexity(self._model().bound(stats), float(stats["n_words"]))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags

    @property
    def _n_features_out(self) -> int:
        return int(self.components_.shape[0])
