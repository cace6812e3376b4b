"""The HMMs' :class:`dem.model.EMModel` implementations: what :mod:`dem.engine` calls.

:class:`HMMModel` holds what every HMM shares (the transitions' statistics and M-step,
the walk of a chunk in blocks of sequences, the per-sequence outputs); its subclasses
:class:`GaussianHMMModel` and :class:`CategoricalHMMModel` add their emissions. The maths
is in :mod:`dem.models.hmm.kernels`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from dem.model import Block, Params, Stats, add_stats
from dem.models import gaussian
from dem.models.hmm.kernels import (
    CENTRED_SCATTER,
    COVARS_DIMS,
    COVARS_UPDATE,
    check_finite,
    checked_lengths,
    checked_symbols,
    dirichlet_map,
    forward_backward,
    from_log_cholesky,
    log_cholesky,
    padding_mask,
    precision_cholesky,
    probabilities,
    valid_steps,
    viterbi,
)
from dem.models.scratch import Scratch, thread_scratch

#: Elements (time steps × max(states, features) × sequences) of one block of sequences
#: in the E-step: each of the block's few large buffers holds about this many floats.
BLOCK_ELEMENTS = 2**20
#: Elements of the widest temporary of the emission kernels, per row block.
ROW_BLOCK_ELEMENTS = 2**18


# --- the parts every HMM shares ----------------------------------------------------------


def _jsonable(value: Any) -> Any:
    array = np.asarray(value, dtype=np.float64)
    return float(array) if array.ndim == 0 else array.tolist()


@dataclass(frozen=True)
class HMMModel(ABC):
    """What every HMM's pure functions share: transitions and the E-step's walk.

    Subclasses give the emission model: :meth:`prepare`, :meth:`emission_log_prob`
    (time-major log-densities), :meth:`emission_stats` and :meth:`emission_m_step`.

    The inputs are ``X`` and, for ragged sequences, ``lengths``; without ``lengths``
    every sequence has all ``n_times`` steps. ``X`` may hold NaN in the padding after a
    sequence's length, so the engine leaves it to :meth:`prepare` to reject NaN and
    infinity inside the sequences themselves.
    """

    n_components: int
    startprob_prior: Any = 1.0
    transmat_prior: Any = 1.0

    name: ClassVar[str] = "hmm"
    inputs: ClassVar[tuple[str, ...]] = ("X", "lengths")
    missing_ok: ClassVar[frozenset[str]] = frozenset({"X"})
    remedy: ClassVar[str] = (
        "Decrease n_components, raise the priors (transmat_prior, startprob_prior), or check "
        "the sequences for extreme values."
    )

    def config(self) -> dict[str, Any]:
        return {
            "n_components": self.n_components,
            "startprob_prior": _jsonable(self.startprob_prior),
            "transmat_prior": _jsonable(self.transmat_prior),
        }

    def param_dims(self) -> dict[str, tuple[str, ...]]:
        return {"startprob": ("state",), "transmat": ("state", "state_")}

    # --- emission model (subclasses) ----------------------------------------------------

    # Each takes the buffers to work in (``scratch``; fresh ones when None) and may return
    # one of them, valid until the next call with the same buffers.

    @abstractmethod
    def prepare(
        self,
        x: np.ndarray,
        valid: np.ndarray | None,
        params: Params,
        first: int = 0,
        scratch: Scratch | None = None,
    ) -> np.ndarray:
        """A block of sequences, time-major, checked, with its padding neutralised.

        ``first`` is the position of the block's first sequence in its chunk (for errors).
        """

    @abstractmethod
    def emission_log_prob(
        self, data: np.ndarray, params: Params, scratch: Scratch | None = None
    ) -> np.ndarray:
        """Emission log-densities of a prepared block, shape (n_times, n_states, n_seq)."""

    @abstractmethod
    def empty_emission_stats(self, x: np.ndarray, params: Params) -> Stats:
        """Zero emission statistics for a chunk ``x`` (sequence-major)."""

    @abstractmethod
    def emission_stats(
        self, data: np.ndarray, gamma: np.ndarray, params: Params, scratch: Scratch | None = None
    ) -> Stats:
        """Emission statistics of a prepared block given its state posteriors (zero at padding)."""

    @abstractmethod
    def emission_m_step(self, stats: Stats, params: Params) -> Params:
        """New emission parameters from the statistics of all the data."""

    @abstractmethod
    def pack_emissions(self, params: Params) -> np.ndarray:
        """The emission parameters as a flat vector (for SQUAREM)."""

    @abstractmethod
    def unpack_emissions(self, vector: np.ndarray, like: Params) -> Params:
        """Valid emission parameters from a vector made like ``pack_emissions(like)``."""

    # --- the protocol -------------------------------------------------------------------

    def blocks(
        self, block: Block, params: Params, scratch: Scratch
    ) -> Iterator[tuple[slice, np.ndarray, np.ndarray | None]]:
        """The chunk's blocks of sequences, one at a time: (rows, prepared data, valid steps),
        the last two in ``scratch`` (overwritten by the next block)."""
        x = block["X"]
        n_sequences, n_times = x.shape[:2]
        lengths = checked_lengths(block.get("lengths"), n_sequences, n_times, " of this chunk")
        width = max(self.n_components, math.prod(x.shape[2:]))  # states, or features if more
        step = max(1, BLOCK_ELEMENTS // (n_times * width))
        for start in range(0, n_sequences, step):
            rows = slice(start, min(start + step, n_sequences))
            shape = (n_times, rows.stop - start)
            valid = valid_steps(lengths[rows], n_times, scratch("valid", shape, np.bool_))
            yield rows, self.prepare(x[rows], valid, params, start, scratch), valid

    def e_step(self, block: Block, params: Params) -> Stats:
        """The chunk's statistics; with ``block["sample_weight"]`` (one weight per
        sequence) each sequence's statistics count its weight times: ``n`` is the
        weighted number of time steps and ``loglik`` the weighted sum of the sequences'
        log-likelihoods."""
        x = block["X"]
        weights = block.get("sample_weight")  # absent: every sequence has weight 1
        stats: Stats = {
            "n": np.float64(0.0),
            "loglik": np.float64(0.0),
            "start": np.zeros(self.n_components),
            "trans": np.zeros((self.n_components, self.n_components)),
            **self.empty_emission_stats(x, params),
        }
        scratch = thread_scratch("hmm")
        for rows, data, valid in self.blocks(block, params, scratch):
            w = None if weights is None else np.asarray(weights[rows], dtype=np.float64)
            log_b = self.emission_log_prob(data, params, scratch)
            found = forward_backward(
                log_b, params["startprob"], params["transmat"], valid, scratch=scratch, weights=w
            )
            assert found.gamma is not None and found.trans is not None
            steps = np.full(log_b.shape[2], log_b.shape[0]) if valid is None else valid.sum(axis=0)
            if w is None:
                stats["n"] += steps.sum()
                stats["loglik"] += found.loglik.sum()
            else:  # (a sequence of weight 0 adds nothing, whatever its log-likelihood)
                stats["n"] += np.where(w > 0.0, w * steps, 0.0).sum()
                stats["loglik"] += np.where(w > 0.0, w * found.loglik, 0.0).sum()
            stats["start"] += found.gamma[0].sum(axis=1)
            stats["trans"] += found.trans
            for key, value in self.emission_stats(data, found.gamma, params, scratch).items():
                stats[key] += value
        return stats

    def combine(self, a: Stats, b: Stats) -> Stats:
        return add_stats(a, b)

    def m_step(self, stats: Stats, params: Params) -> Params:
        return {
            "startprob": dirichlet_map(
                np.asarray(stats["start"]), params["startprob"], self.startprob_prior
            ),
            "transmat": dirichlet_map(
                np.asarray(stats["trans"]), params["transmat"], self.transmat_prior
            ),
            **self.emission_m_step(stats, params),
        }

    # --- parameters as a flat vector, for SQUAREM ----------------------------------------

    def pack(self, params: Params) -> np.ndarray:
        """``startprob``, ``transmat`` and the emission parameters as one vector."""
        return np.concatenate(
            [
                params["startprob"],
                params["transmat"].ravel(),
                self.pack_emissions(params),
            ]
        )

    def unpack(self, vector: np.ndarray, like: Params) -> Params:
        """Valid parameters from a vector (probability rows clipped and renormalised).

        Entries of ``startprob`` and ``transmat`` that are zero in ``like`` stay zero.
        A vector that is not finite, or that leaves a covariance not positive definite,
        is refused with a ValueError (SQUAREM then keeps the plain EM step).
        """
        if not np.all(np.isfinite(vector)):
            raise ValueError("No valid parameters: the vector is not finite.")
        k = self.n_components
        with np.errstate(all="ignore"):  # what overflows is refused below
            params = {
                "startprob": probabilities(vector[:k], like["startprob"]),
                "transmat": probabilities(vector[k : k + k * k], like["transmat"]),
                **self.unpack_emissions(vector[k + k * k :], like),
            }
        for name, value in params.items():
            if not np.all(np.isfinite(value)):
                raise ValueError(f"No valid parameters: {name} is not finite.")
        return params

    # --- per-sequence functions, applied to any block ----------------------------------

    def sequence_loglik(
        self, x: np.ndarray, lengths: np.ndarray | None, params: Params
    ) -> np.ndarray:
        """Log-likelihood of each sequence, shape (n_sequences,)."""
        out = np.empty(len(x))
        scratch = thread_scratch("hmm")
        for rows, data, valid in self.blocks(_block(x, lengths), params, scratch):
            log_b = self.emission_log_prob(data, params, scratch)
            out[rows] = forward_backward(
                log_b,
                params["startprob"],
                params["transmat"],
                valid,
                posteriors=False,
                scratch=scratch,
            ).loglik
        return out

    def state_posteriors(
        self, x: np.ndarray, lengths: np.ndarray | None, params: Params
    ) -> np.ndarray:
        """P(state | sequence) per step, shape (n_sequences, n_times, n_states); NaN at padding."""
        n_sequences, n_times = x.shape[:2]
        out = np.empty((n_sequences, n_times, self.n_components))
        scratch = thread_scratch("hmm")
        for rows, data, valid in self.blocks(_block(x, lengths), params, scratch):
            log_b = self.emission_log_prob(data, params, scratch)
            gamma = forward_backward(
                log_b, params["startprob"], params["transmat"], valid, scratch=scratch
            ).gamma
            assert gamma is not None
            out[rows] = gamma.transpose(2, 0, 1)
            if valid is not None:
                out[rows][~valid.T] = np.nan
        return out

    def decode(self, x: np.ndarray, lengths: np.ndarray | None, params: Params) -> np.ndarray:
        """Viterbi paths, shape (n_sequences, n_times); -1 at padding."""
        n_sequences, n_times = x.shape[:2]
        out = np.empty((n_sequences, n_times), dtype=np.int64)
        scratch = thread_scratch("hmm")
        for rows, data, valid in self.blocks(_block(x, lengths), params, scratch):
            log_b = self.emission_log_prob(data, params, scratch)
            out[rows] = viterbi(log_b, params["startprob"], params["transmat"], valid)
        return out


def _block(x: np.ndarray, lengths: np.ndarray | None) -> dict[str, np.ndarray]:
    return {"X": x} if lengths is None else {"X": x, "lengths": lengths}


# --- Gaussian emissions -------------------------------------------------------------------


def _sums(
    covariance_type: str, xt: np.ndarray, moments: np.ndarray, resp: np.ndarray, scratch: Scratch
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``gaussian.SUMS`` for the posteriors ``resp`` (K, rows) of a block of time steps.

    Its tied scatter is Σ x xᵀ, right for a mixture, whose rows' responsibilities sum to
    1; here a row's posteriors sum to its sequence's weight, and to 0 at padding, in a
    sequence of weight 0 and outside the segments a long sequence's pass keeps, so the
    tied scatter is Σ_t (Σ_k γ_tk) x_t x_tᵀ.
    """
    if covariance_type != "tied":
        return gaussian.SUMS[covariance_type](xt, moments, resp)
    rows = xt[:-1]
    weighted = np.multiply(rows, resp.sum(axis=0), out=scratch("weighted", rows.shape))
    return resp.sum(axis=-1), resp @ rows.T, weighted @ rows.T


@dataclass(frozen=True)
class GaussianHMMModel(HMMModel):
    """The pure functions of an HMM with Gaussian emissions (see :mod:`dem.model`)."""

    covariance_type: str = "diag"
    means_prior: Any = 0.0
    means_weight: Any = 0.0
    covars_prior: Any = 1e-2
    covars_weight: float = 1.0

    name: ClassVar[str] = "gaussian_hmm"
    remedy: ClassVar[str] = (
        "Decrease n_components, increase covars_prior, or scale the input data to unit variance."
    )

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "covariance_type": self.covariance_type,
            "means_prior": _jsonable(self.means_prior),
            "means_weight": _jsonable(self.means_weight),
            "covars_prior": _jsonable(self.covars_prior),
            "covars_weight": float(self.covars_weight),
        }

    def param_dims(self) -> dict[str, tuple[str, ...]]:
        dims = COVARS_DIMS[self.covariance_type]
        return {
            **super().param_dims(),
            "means": ("state", "feature"),
            "covars": dims,
            "precisions_cholesky": dims,
        }

    @staticmethod
    def shift(params: Params) -> np.ndarray:
        """What the data are centred on: the mean of the state means, or the anchor."""
        if "anchor_shift" in params:
            return np.asarray(params["anchor_shift"])
        result: np.ndarray = params["means"].mean(axis=0)
        return result

    def anchor(self, params: Params) -> Params:
        """The shift of ``params``, as ``anchor_shift``: with it among the parameters the
        statistics are sums about it, whatever the means, so those taken at different
        parameters add up (incremental EM; see :mod:`dem.incremental`)."""
        return {"anchor_shift": np.array(self.shift(params), dtype=np.float64)}

    def prepare(
        self,
        x: np.ndarray,
        valid: np.ndarray | None,
        params: Params,
        first: int = 0,
        scratch: Scratch | None = None,
    ) -> np.ndarray:
        """Time-major rows centred on :meth:`shift`; zero at padding."""
        scratch = Scratch() if scratch is None else scratch
        centred = scratch("data", (x.shape[1], x.shape[0], x.shape[2]))
        np.subtract(np.swapaxes(x, 0, 1), self.shift(params), out=centred)
        if valid is not None:
            np.copyto(centred, 0.0, where=padding_mask(valid, scratch)[:, :, None])
        check_finite(centred, None, "X", first)
        return centred

    def row_block(self, n_features: int) -> int:
        """Rows per block of the emission kernels: temporaries stay in cache."""
        return max(gaussian.BLOCK_ROWS, ROW_BLOCK_ELEMENTS // (self.n_components * n_features))

    def time_blocks(self, data: np.ndarray, scratch: Scratch) -> Iterator[tuple[slice, np.ndarray]]:
        """Walk prepared ``data`` (n_times, n_sequences, n_features) a few whole time steps
        at a time, about :meth:`row_block` rows: ``(steps, xt)`` with ``xt`` the rows
        transposed with a row of ones below (d + 1, m), as
        :func:`dem.models.gaussian.transposed_blocks` gives them (in ``scratch``).
        """
        n_times, n_sequences, n_features = data.shape
        n_steps = max(1, self.row_block(n_features) // n_sequences)
        blocks = gaussian.transposed_blocks(
            data.reshape(-1, n_features),
            np.zeros(n_features),
            np.float64,
            n_steps * n_sequences,
            scratch,
        )
        for start, xt in zip(range(0, n_times, n_steps), blocks, strict=True):
            yield slice(start, start + n_steps), xt

    def emission_log_prob(
        self, data: np.ndarray, params: Params, scratch: Scratch | None = None
    ) -> np.ndarray:
        scratch = Scratch() if scratch is None else scratch
        n_times, n_sequences, n_features = data.shape
        ctype = self.covariance_type
        prec_chol = params["precisions_cholesky"]
        distances = gaussian.DISTANCES[ctype](
            params["means"] - self.shift(params), prec_chol, np.float64
        )
        no_weights = np.zeros(self.n_components)
        constants = gaussian.log_prob_constants(no_weights, prec_chol, ctype, n_features)
        out = scratch("log_b", (n_times, self.n_components, n_sequences))
        for steps, xt in self.time_blocks(data, scratch):
            squared = distances(xt, gaussian.MOMENTS[ctype](xt, scratch), scratch)
            log_prob = out[steps].transpose(1, 0, 2)  # (K, steps, n_sequences)
            np.multiply(squared.reshape(log_prob.shape), -0.5, out=log_prob)
            log_prob += constants[:, :, None]
        return out

    def empty_emission_stats(self, x: np.ndarray, params: Params) -> Stats:
        n_features = x.shape[2]
        return {
            "post": np.zeros(self.n_components),
            "sum_x": np.zeros((self.n_components, n_features)),
            "scatter": gaussian.scatter_statistic(
                np.zeros((0, n_features)), np.zeros((0, self.n_components)), self.covariance_type
            ),
        }

    def emission_stats(
        self, data: np.ndarray, gamma: np.ndarray, params: Params, scratch: Scratch | None = None
    ) -> Stats:
        scratch = Scratch() if scratch is None else scratch
        n_features = data.shape[2]
        ctype = self.covariance_type
        post = np.zeros(self.n_components)
        sum_x = np.zeros((self.n_components, n_features))
        scatter = gaussian.scatter_zeros(ctype, self.n_components, n_features)
        for steps, xt in self.time_blocks(data, scratch):
            block = gamma[steps].transpose(1, 0, 2)  # (K, steps, n_sequences)
            resp = scratch("resp", block.shape)
            np.copyto(resp, block)
            moments = gaussian.MOMENTS[ctype](xt, scratch)
            sums = _sums(ctype, xt, moments, resp.reshape(self.n_components, -1), scratch)
            post += sums[0]
            sum_x += sums[1]
            scatter += sums[2]
        return {
            "post": post,
            "sum_x": sum_x,
            "scatter": gaussian.unpack_scatter(scatter, ctype, n_features),
        }

    def emission_m_step(self, stats: Stats, params: Params) -> Params:
        ctype = self.covariance_type
        n_features = params["means"].shape[1]
        shift = self.shift(params)
        post, sum_x = np.asarray(stats["post"]), np.asarray(stats["sum_x"])
        weight = np.broadcast_to(np.asarray(self.means_weight, dtype=np.float64), post.shape)
        prior_means = np.broadcast_to(
            np.asarray(self.means_prior, dtype=np.float64), params["means"].shape
        )
        denominator = weight + post
        empty = denominator <= 0.0
        safe = np.where(empty, 1.0, denominator)
        # means = (w m0 + Σ γ x) / (w + Σ γ), written about the shift so nothing cancels
        dm = (weight[:, None] * (prior_means - shift) + sum_x) / safe[:, None]
        means = shift + dm
        centred = CENTRED_SCATTER[ctype](np.asarray(stats["scatter"]), post, sum_x, dm)
        meandiff = means - prior_means
        if ctype == "full":
            centred = centred + weight[:, None, None] * np.einsum("ki,kj->kij", meandiff, meandiff)
        elif ctype == "tied":
            centred = centred + np.einsum("k,ki,kj->ij", weight, meandiff, meandiff)
        else:
            centred = centred + weight[:, None] * meandiff**2
        covars = COVARS_UPDATE[ctype](
            centred, self.prior_term(n_features), post, float(self.covars_weight), n_features
        )
        if empty.any() and ctype != "tied":  # a state nothing informs keeps its emissions
            means = np.where(empty[:, None], params["means"], means)
            covars = np.where(
                empty.reshape(-1, *([1] * (covars.ndim - 1))), params["covars"], covars
            )
        return {
            "means": means,
            "covars": covars,
            "precisions_cholesky": precision_cholesky(covars, ctype),
        }

    def pack_emissions(self, params: Params) -> np.ndarray:
        """Means, and covariances as log-Cholesky factors (log variances for diag/spherical)."""
        covars = params["covars"]
        if self.covariance_type in ("full", "tied"):
            packed = log_cholesky(covars)
        else:
            packed = np.log(covars).ravel()
        return np.concatenate([params["means"].ravel(), packed])

    def unpack_emissions(self, vector: np.ndarray, like: Params) -> Params:
        n_means = like["means"].size
        means = vector[:n_means].reshape(like["means"].shape)
        shape = like["covars"].shape
        if self.covariance_type in ("full", "tied"):
            covars = from_log_cholesky(vector[n_means:], shape)
        else:
            covars = np.exp(vector[n_means:]).reshape(shape)
        if not np.all(np.isfinite(covars)):
            raise ValueError("No valid parameters: a covariance is not finite.")
        return {
            "means": means.copy(),
            "covars": covars,
            "precisions_cholesky": precision_cholesky(covars, self.covariance_type),
        }

    def prior_term(self, n_features: int) -> np.ndarray:
        """``covars_prior`` as added to the scatter: a scalar is that multiple of the
        identity for full and tied covariances."""
        prior = np.asarray(self.covars_prior, dtype=np.float64)
        if prior.ndim == 0 and self.covariance_type in ("full", "tied"):
            return prior * np.eye(n_features)
        return prior


# --- categorical emissions ----------------------------------------------------------------


@dataclass(frozen=True)
class CategoricalHMMModel(HMMModel):
    """The pure functions of an HMM with categorical emissions (see :mod:`dem.model`)."""

    n_features: int = 2
    emissionprob_prior: Any = 1.0

    name: ClassVar[str] = "categorical_hmm"
    comparable_stats: ClassVar[bool] = True  # counts, whatever the parameters
    free_energy: ClassVar[bool] = True  # expected_loglik below (incremental EM)

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "n_features": self.n_features,
            "emissionprob_prior": _jsonable(self.emissionprob_prior),
        }

    def param_dims(self) -> dict[str, tuple[str, ...]]:
        return {**super().param_dims(), "emissionprob": ("state", "symbol")}

    def prepare(
        self,
        x: np.ndarray,
        valid: np.ndarray | None,
        params: Params,
        first: int = 0,
        scratch: Scratch | None = None,
    ) -> np.ndarray:
        """Time-major symbols as integers; zero at padding."""
        scratch = Scratch() if scratch is None else scratch
        values = scratch("values", (x.shape[1], x.shape[0]))
        np.copyto(values, np.swapaxes(x, 0, 1))
        if valid is not None:
            np.copyto(values, 0.0, where=padding_mask(valid, scratch))
        check_finite(values, None, "X", first)
        return checked_symbols(values, self.n_features, scratch, first)

    def emission_log_prob(
        self, data: np.ndarray, params: Params, scratch: Scratch | None = None
    ) -> np.ndarray:
        scratch = Scratch() if scratch is None else scratch
        with np.errstate(divide="ignore"):
            log_emission = np.log(params["emissionprob"])
        # log_b[t, k, i] = log_emission[k, data[t, i]], at k * n_symbols + data[t, i] in the table
        offsets = np.arange(self.n_components) * log_emission.shape[1]
        index = scratch("index", (len(data), self.n_components, data.shape[1]), np.int64)
        np.add(data[:, None, :], offsets[None, :, None], out=index)
        return np.take(log_emission.ravel(), index, out=scratch("log_b", index.shape), mode="clip")

    def empty_emission_stats(self, x: np.ndarray, params: Params) -> Stats:
        return {"symbol_counts": np.zeros((self.n_components, self.n_features))}

    def emission_stats(
        self, data: np.ndarray, gamma: np.ndarray, params: Params, scratch: Scratch | None = None
    ) -> Stats:
        scratch = Scratch() if scratch is None else scratch
        n_states = self.n_components
        # the bin of (symbol, state) is symbol * n_states + state
        index = scratch("index", gamma.shape, np.int64)
        np.multiply(data[:, None, :], n_states, out=index)
        index += np.arange(n_states)[None, :, None]
        counts = np.bincount(
            index.ravel(), weights=gamma.ravel(), minlength=self.n_features * n_states
        )
        return {"symbol_counts": counts.reshape(self.n_features, n_states).T}

    def expected_loglik(self, stats: Stats, params: Params) -> float:
        """Expected complete-data log-likelihood of the counts ``stats`` at ``params``:
        Σ counts × log probabilities of the starts, transitions and symbols (incremental
        EM's free energy, :mod:`dem.incremental`)."""
        total = 0.0
        for key, name in [
            ("start", "startprob"),
            ("trans", "transmat"),
            ("symbol_counts", "emissionprob"),
        ]:
            counts = np.asarray(stats[key])
            with np.errstate(divide="ignore"):
                logs = np.log(params[name])
            total += float(np.sum(np.where(counts > 0.0, counts * logs, 0.0)))
        return total

    def emission_m_step(self, stats: Stats, params: Params) -> Params:
        new = np.maximum(
            np.asarray(self.emissionprob_prior, dtype=np.float64) - 1.0 + stats["symbol_counts"],
            0.0,
        )
        total = new.sum(axis=1, keepdims=True)
        empty = total <= 0.0
        return {
            "emissionprob": np.where(
                empty, params["emissionprob"], new / np.where(empty, 1.0, total)
            )
        }

    def pack_emissions(self, params: Params) -> np.ndarray:
        """``emissionprob``, row by row."""
        return params["emissionprob"].ravel()

    def unpack_emissions(self, vector: np.ndarray, like: Params) -> Params:
        return {"emissionprob": probabilities(vector, like["emissionprob"])}
