"""The contract suite's one table: for each registered model, small data and fast settings.

Every test of ``tests/contract/`` runs over :data:`MODELS`, keyed by the names of
:data:`dem.registry.REGISTRY`. A row says how big the model's synthetic data are (drawn
by the registry's own generator, :data:`dem.synth.GENERATORS`, in memory) and which
estimator options make a fit fast; the data reach ``fit`` as the registry's
``synth_fit`` arguments name them, so no model needs data code of its own here. A model
that registers without a row fails ``test_every_registered_model_has_a_row``.

``estimator_classes()`` is the slot of the scikit-learn checks (``tests/test_sklearn.py``):
the estimators they run must cover it, so a registered model meets them too.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import dem
from dem.registry import REGISTRY, ModelEntry
from dem.synth import GENERATORS

#: Passes of a fast fit (with tol=0, every one is made).
ITERATIONS = 6


@dataclass(frozen=True)
class Variant:
    """Options that change the code a model runs (covariance type, missing values)."""

    synth: dict[str, Any] = field(default_factory=dict)  # of the generator's ground truth
    estimator: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ContractModel:
    """How the contract suite fits one registered model.

    Attributes
    ----------
    n_samples, n_features : int
        Size of the synthetic data (samples are rows, or sequences for sequence models).
    synth : dict
        Options of the registry's generator (``dem synth NAME`` options).
    estimator : dict
        Keyword arguments of a fast fit; the suite adds ``max_iter``, ``tol`` and
        ``random_state``.
    variants : dict
        Named variants, each a run of every contract test.
    """

    n_samples: int
    n_features: int
    synth: dict[str, Any]
    estimator: dict[str, Any]
    variants: dict[str, Variant] = field(default_factory=lambda: {"default": Variant()})


def _covariances(*types: str) -> dict[str, Variant]:
    return {kind: Variant(estimator={"covariance_type": kind}) for kind in types}


_LINEAR_GAUSSIAN = {
    "complete": Variant(),
    "missing": Variant(synth={"missing": 0.15}),
}

MODELS: dict[str, ContractModel] = {
    "gmm": ContractModel(
        240,
        3,
        {"n_components": 3, "separation": 2.0},
        {"n_components": 3},
        {
            **_covariances("full", "tied", "diag", "spherical"),
            **{
                f"missing-{kind}": Variant(
                    synth={"missing": 0.15},
                    estimator={"covariance_type": kind, "missing": "marginalize"},
                )
                for kind in ("full", "diag")
            },
        },
    ),
    "ppca": ContractModel(
        200, 5, {"n_components": 2}, {"n_components": 2, "init_params": "random"}, _LINEAR_GAUSSIAN
    ),
    "fa": ContractModel(
        200, 5, {"n_components": 2}, {"n_components": 2, "init_params": "random"}, _LINEAR_GAUSSIAN
    ),
    "tobit": ContractModel(240, 2, {"left": 0.0, "right": 1.5, "limit_spread": 0.3}, {"left": 0.0}),
    "hmm": ContractModel(
        24,
        2,
        {"n_components": 3, "n_times": 12, "ragged": True},
        {"n_components": 3},
        _covariances("diag", "full", "tied", "spherical"),  # hmmlearn's default first
    ),
    "categorical-hmm": ContractModel(
        24, 4, {"n_components": 3, "n_times": 12, "ragged": True}, {"n_components": 3}
    ),
    # variational EM: lower_bounds_ is scikit-learn's ELBO, which never decreases
    "bgmm": ContractModel(
        240,
        3,
        {"n_components": 3, "separation": 2.0},
        {"n_components": 5},
        {
            **_covariances("full", "tied", "diag", "spherical"),
            "dirichlet": Variant(
                estimator={"weight_concentration_prior_type": "dirichlet_distribution"}
            ),
        },
    ),
    "mfa": ContractModel(
        300,
        6,
        {"n_components": 3, "n_factors": 2},
        {"n_components": 3, "n_factors": 2, "init_params": "kmeans"},
        {
            "per_feature": Variant(),
            "isotropic": Variant(estimator={"noise": "isotropic"}),
            "missing": Variant(synth={"missing": 0.15}),
        },
    ),
}
MODELS["tmix"] = ContractModel(
    240,
    3,
    {"n_components": 3, "separation": 2.0, "dof": 4.0},
    {"n_components": 3},
    {
        **_covariances("full", "tied", "diag", "spherical"),
        "tied-dof": Variant(estimator={"dof": "tied"}),
        "fixed-dof": Variant(estimator={"dof": 3.0}),
    },
)
# word counts of documents of 4 topics (the suite sets tol=0: max_iter passes)
MODELS["lda"] = ContractModel(
    120,
    30,
    {"n_components": 4, "words": 30.0},
    {"n_components": 4, "chunk_rows": 50},
    {
        "batch": Variant(),
        "priors": Variant(estimator={"doc_topic_prior": 0.5, "topic_word_prior": 0.2}),
    },
)

MODELS["gmmhmm"] = ContractModel(
    24,
    2,
    {"n_components": 2, "n_mix": 2, "n_times": 12, "ragged": True},
    {"n_components": 2, "n_mix": 2},
    _covariances("diag", "full", "tied", "spherical"),  # hmmlearn's default first
)


@dataclass(frozen=True)
class Case:
    """One registered model in one variant: its entry, data and fast estimator."""

    name: str
    variant: str

    @property
    def entry(self) -> ModelEntry:
        return REGISTRY[self.name]

    @property
    def row(self) -> ContractModel:
        return MODELS[self.name]

    def estimator(self, **options: Any) -> Any:
        """The registered estimator with the fast settings (and ``options``)."""
        settings = {
            "max_iter": ITERATIONS,
            "tol": 0.0,
            "random_state": 0,
            **self.row.estimator,
            **self.row.variants[self.variant].estimator,
            **options,
        }
        return self.entry.estimator_class()(**settings)

    def data(self, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """X and the other ``fit`` arguments, drawn by the registry's generator."""
        generator = GENERATORS[str(self.entry.synth)]
        options = {**self.row.synth, **self.row.variants[self.variant].synth}
        rng = np.random.default_rng(seed)
        truth = generator.truth(self.row.n_features, rng, **options)
        drawn = generator.draw(truth, rng, self.row.n_samples)
        inputs = {f"--{i.option}".replace("_", "-"): i.argument for i in self.entry.inputs}
        flags = self.entry.synth_fit
        x, arguments = None, {}
        for flag, value in zip(flags[::2], flags[1::2], strict=True):
            if flag not in inputs:  # an estimator option (--n-components): the row sets it
                continue
            if inputs[flag] == "variable":
                x = drawn[value]
            else:
                arguments[inputs[flag]] = drawn[value]
        assert x is not None, f"{self.name}: synth_fit names no data variable"
        return x, arguments

    def fit(self, seed: int = 0, **options: Any) -> Any:
        """A fast fit of the drawn data (ConvergenceWarning expected: max_iter is the plan)."""
        x, arguments = self.data(seed)
        estimator = self.estimator(**options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dem.ConvergenceWarning)
            return estimator.fit(x, **arguments)

    def __str__(self) -> str:
        return self.name if self.variant == "default" else f"{self.name}-{self.variant}"


def cases() -> Iterator[Case]:
    """Every registered model in each of its variants (a model without a row: none)."""
    for name in REGISTRY:
        if name in MODELS:
            for variant in MODELS[name].variants:
                yield Case(name, variant)


def first_cases() -> Iterator[Case]:
    """Every registered model once, in its first variant."""
    for name in REGISTRY:
        if name in MODELS:
            yield Case(name, next(iter(MODELS[name].variants)))


def fitted_arrays(estimator: Any) -> dict[str, np.ndarray]:
    """The estimator's numeric fitted attributes (public, ending in ``_``)."""
    found = {}
    for name, value in vars(estimator).items():
        if not name.endswith("_") or name.startswith("_"):
            continue
        if isinstance(value, bool | int | float | np.ndarray | np.generic):
            array = np.asarray(value)
            if array.dtype.kind in "fiub":
                found[name] = array
    return found


# --- the slot of the scikit-learn checks (tests/test_sklearn.py) -----------------------------


def estimator_classes() -> list[type]:
    """The estimator class of every registered model, in the registry's order (what
    ``parametrize_with_checks`` must cover)."""
    return [entry.estimator_class() for entry in REGISTRY.values()]
