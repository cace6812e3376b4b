"""The model registry: each model family registered once, every command derived from it.

An entry (:class:`ModelEntry`) names the family's command-line name, the model name
its checkpoints carry, its estimator class (as ``"module:Class"``, imported only when a
command needs it), its synthetic-data generator, and its own command-line options,
data inputs and ``dem predict`` outputs. ``dem fit|predict|synth|show`` and
:func:`dem.from_checkpoint` read this table, so a new model gets every command by
calling :func:`register` (or by one more entry below). The engine's options (``--max-iter``,
``--accelerate``, ``--n-init``, ``--method`` ...) are not listed here: ``dem fit`` offers
every parameter of the estimator's signature.
"""

from __future__ import annotations

import math
from typing import Any

from dem.entry import Input, ModelEntry, Opt, Output, load


def _n_components(what: str) -> Opt:
    return Opt("n_components", what, flags=("--n-components", "-k"))


def _synth_components(default: int) -> Opt:
    return Opt(
        "n_components",
        "Number of components (states) of the truth.",
        default=default,
        flags=("--components", "-k"),
    )


def _prior(param: str, what: str) -> Opt:
    return Opt(param, f"{what} (a number, or a .npy array).", "number_or_array")


def _number_or_npy(text: str | None) -> Any:
    """An optional prior on the command line: None, a number, or a ``.npy`` file's array."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        import numpy as np

        try:
            return np.load(text, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read {text} as a number or a .npy array ({exc}).") from exc


PPCA_OPTIONS = (
    _n_components("Number of latent dimensions (below the number of features)."),
    Opt(
        "init_params",
        "'pca': closed-form PPCA of a row sample; 'random': random loadings.",
        "choice",
        "dem.models.ppca:INIT_METHODS",
    ),
)
PPCA_OUTPUTS = {
    "latent": Output("transform", ("sample", "component"), "posterior means of the latents"),
    "imputed": Output("impute", ("sample", "feature"), "the data, NaN replaced by E[x | observed]"),
    "loglik": Output(
        "score_samples", ("sample",), "log-likelihood of each sample's observed values"
    ),
}


def _ppca_synth(noise: str) -> tuple[Opt, ...]:
    return (
        _synth_components(2),
        Opt("noise_variance", noise, "float", default=0.1),
        Opt("missing", "Probability that an entry is missing (NaN).", "float", default=0.0),
    )


TRANSITION_OPTIONS = (
    _prior("startprob_prior", "Dirichlet prior of the start probabilities"),
    _prior("transmat_prior", "Dirichlet prior of each row of the transition matrix"),
)
TRANSITION_INITS = (
    Opt("startprob_init", "Initial start probabilities, shape (K,).", "array"),
    Opt("transmat_init", "Initial transition matrix, shape (K, K).", "array"),
)
LENGTHS = Input(
    "lengths",
    "lengths",
    "Variable of each sequence's length (what follows is padding); default: all full.",
    required=False,
)
HMM_OUTPUTS = {
    "states": Output(
        "predict", ("sequence", "time"), "Viterbi state paths (-1 at padding)", ("lengths",)
    ),
    "posteriors": Output(
        "predict_proba",
        ("sequence", "time", "state"),
        "state posteriors (NaN at padding)",
        ("lengths",),
    ),
    "loglik": Output(
        "score_sequences", ("sequence",), "log-likelihood of each sequence", ("lengths",)
    ),
}
HMM_SYNTH = (
    _synth_components(3),
    Opt("n_times", "Time steps of each sequence.", default=100, flags=("--times",)),
    Opt(
        "ragged",
        "Sequence lengths uniform in [times/2, times], NaN padding.",
        "bool",
        default=False,
    ),
)
HMM_INPUTS = (
    Input("var", "variable", "Name of the sequences variable in the store."),
    LENGTHS,
)
HMM_SYNTH_FIT = ("--var", "X", "--lengths", "lengths", "--n-components", "{n_components}")


def _limit(side: str, default: str) -> Input:
    return Input(
        side,
        side,
        f"{side.capitalize()} censoring limit: a number, or the variable of per-row limits "
        f"(NaN or ±inf: none). Default: {default}.",
        required=False,
        kind="limit",
    )


_ENTRIES = (
    ModelEntry(
        name="gmm",
        checkpoint_model="gaussian_mixture",
        estimator="dem.models.mixture:GaussianMixture",
        help="Gaussian mixture (scikit-learn's GaussianMixture options).",
        options=(
            _n_components("Number of mixture components."),
            Opt(
                "covariance_type",
                "Form of the component covariances.",
                "choice",
                ("full", "tied", "diag", "spherical"),
            ),
            Opt("reg_covar", "Added to the diagonal of every covariance.", "float"),
            Opt(
                "missing",
                "What NaN entries are: 'raise' (an error) or 'marginalize' (values missing "
                "at random, handled exactly by EM).",
                "choice",
                ("raise", "marginalize"),
            ),
            Opt(
                "init_params",
                "How the start is found: k-means|| over all the data, or a method on a row "
                "sample ('auto': k-means|| when the data exceed the sample).",
                "choice",
                "dem.models.mixture:INIT_METHODS",
            ),
            Opt("weights_init", "Initial weights, shape (K,).", "array"),
            Opt("means_init", "Initial means, shape (K, d).", "array"),
            Opt("precisions_init", "Initial precisions, shaped like the covariances.", "array"),
        ),
        outputs={
            "labels": Output("predict", ("sample",), "most probable component"),
            "probabilities": Output("predict_proba", ("sample", "component"), "responsibilities"),
            "loglik": Output("score_samples", ("sample",), "log-likelihood of each sample"),
        },
        synth="gmm",
        synth_options=(
            _synth_components(8),
            Opt(
                "separation", "Spread of the true means (std per coordinate).", "float", default=1.0
            ),
            Opt("missing", "Probability that an entry is missing (NaN).", "float", default=0.0),
        ),
    ),
    ModelEntry(
        name="ppca",
        checkpoint_model="ppca",
        estimator="dem.models.ppca:PPCA",
        help="Probabilistic PCA (isotropic noise); NaN entries are missing values.",
        options=PPCA_OPTIONS,
        outputs=PPCA_OUTPUTS,
        synth="ppca",
        synth_options=_ppca_synth("Noise variance σ² of every feature."),
    ),
    ModelEntry(
        name="fa",
        checkpoint_model="factor_analysis",
        estimator="dem.models.ppca:FactorAnalysis",
        help="Factor analysis (one noise variance per feature); NaN entries are missing values.",
        options=PPCA_OPTIONS,
        outputs=PPCA_OUTPUTS,
        synth="fa",
        synth_options=_ppca_synth("Mean noise variance (each feature's is 0.5 to 1.5 times it)."),
    ),
    ModelEntry(
        name="tobit",
        checkpoint_model="censored_regression",
        config_reader="dem.restore:censored_config",
        estimator="dem.models.censored:CensoredRegression",
        help="Censored (Tobit) regression of y on X, with scalar or per-row censoring limits.",
        options=(
            Opt("fit_intercept", "Add an intercept.", "bool"),
            Opt("init_sample_size", "Rows sampled for the initial least-squares fit."),
        ),
        inputs=(
            Input("x", "variable", "Name of the features variable (samples × features)."),
            Input(
                "y",
                "y",
                "Name of the outcome variable (NaN: interval-censored by per-row limits). "
                "Leave it out when every row is interval-censored by per-row --left/--right.",
                required=False,
            ),
            _limit("left", "none"),
            _limit("right", "none"),
        ),
        outputs={
            "latent": Output("predict", ("sample",), "latent mean intercept + X coef"),
            "expected": Output(
                "predict_expected",
                ("sample",),
                "E[y | x] of the censored outcome",
                ("left", "right"),
            ),
        },
        predict_inputs=(_limit("left", "the fit's"), _limit("right", "the fit's")),
        summary="summary",
        synth="tobit",
        synth_options=(
            Opt("left", "Left censoring limit.", "float", default=0.0),
            Opt("right", "Right censoring limit.", "float", default=math.inf),
            Opt("scale", "Standard deviation of the latent errors.", "float", default=1.0),
            Opt(
                "limit_spread",
                "Per-row limits: the limits plus a uniform shift in [-spread, spread].",
                "float",
                default=0.0,
            ),
        ),
        synth_fit=("--x", "X", "--y", "y", "--left", "left", "--right", "right"),
    ),
    ModelEntry(
        name="hmm",
        checkpoint_model="gaussian_hmm",
        estimator="dem.models.hmm:GaussianHMM",
        help="Hidden Markov model with Gaussian emissions, on sequences × time × features "
        "(hmmlearn's GaussianHMM options).",
        options=(
            _n_components("Number of hidden states."),
            Opt(
                "covariance_type",
                "Form of the state covariances.",
                "choice",
                "dem.models.hmm:COVARIANCE_TYPES",
            ),
            Opt("min_covar", "Floor on the covariances' diagonal at initialisation.", "float"),
            *TRANSITION_OPTIONS,
            _prior("means_prior", "Prior mean of the state means"),
            _prior("means_weight", "Weight of the means prior"),
            _prior("covars_prior", "Prior of the covariances"),
            Opt("covars_weight", "Weight of the covariances prior.", "float"),
            *TRANSITION_INITS,
            Opt("means_init", "Initial means, shape (K, d).", "array"),
            Opt("covars_init", "Initial covariances, shaped for --covariance-type.", "array"),
        ),
        inputs=HMM_INPUTS,
        outputs=HMM_OUTPUTS,
        predict_inputs=(LENGTHS,),
        feature_axis=2,
        synth="hmm",
        synth_options=(
            *HMM_SYNTH,
            Opt(
                "separation", "Spread of the true means (std per coordinate).", "float", default=3.0
            ),
        ),
        synth_fit=HMM_SYNTH_FIT,
    ),
    ModelEntry(
        name="categorical-hmm",
        checkpoint_model="categorical_hmm",
        estimator="dem.models.hmm:CategoricalHMM",
        help="Hidden Markov model with categorical emissions, on sequences × time of integer "
        "symbols (hmmlearn's CategoricalHMM options).",
        options=(
            _n_components("Number of hidden states."),
            Opt("n_features", "Number of distinct symbols (default: 1 + the largest).", "int"),
            *TRANSITION_OPTIONS,
            _prior("emissionprob_prior", "Dirichlet prior of each row of the emission matrix"),
            *TRANSITION_INITS,
            Opt(
                "emissionprob_init", "Initial emission probabilities, shape (K, symbols).", "array"
            ),
        ),
        inputs=HMM_INPUTS,
        outputs=HMM_OUTPUTS,
        predict_inputs=(LENGTHS,),
        feature_axis=None,
        synth="categorical-hmm",
        synth_options=HMM_SYNTH,
        synth_fit=HMM_SYNTH_FIT,
    ),
    ModelEntry(
        name="bgmm",
        checkpoint_model="bayesian_gaussian_mixture",
        estimator="dem.models.bayesian_mixture:BayesianGaussianMixture",
        help="Variational Bayesian Gaussian mixture (scikit-learn's BayesianGaussianMixture "
        "options): a generous -k shrinks to the clusters the data need.",
        options=(
            _n_components("Upper bound on the number of mixture components."),
            Opt(
                "covariance_type",
                "Form of the component covariances.",
                "choice",
                ("full", "tied", "diag", "spherical"),
            ),
            Opt("reg_covar", "Added to the diagonal of every sample covariance.", "float"),
            Opt(
                "tol",
                "Convergence threshold on the change of the lower bound (scikit-learn's total "
                "ELBO, not a mean).",
                "float",
            ),
            Opt(
                "init_params",
                "How the initial responsibilities are found: k-means|| over all the data, or a "
                "method on a row sample ('auto': k-means|| when the data exceed the sample).",
                "choice",
                "dem.models.mixture:INIT_METHODS",
            ),
            Opt(
                "weight_concentration_prior_type",
                "Prior of the weights: a Dirichlet process (stick-breaking) or a Dirichlet.",
                "choice",
                "dem.models.bayesian_mixture:PRIOR_TYPES",
            ),
            Opt(
                "weight_concentration_prior",
                "Dirichlet concentration (default 1/K).",
                "float",
                default=None,
            ),
            Opt(
                "mean_precision_prior",
                "Precision prior of the means (default 1).",
                "float",
                default=None,
            ),
            Opt("mean_prior", "Prior of the means, shape (d,) (default: the data mean).", "array"),
            Opt(
                "degrees_of_freedom_prior",
                "Wishart degrees of freedom, > d - 1 (default d).",
                "float",
                default=None,
            ),
            Opt(
                "covariance_prior",
                "Wishart covariance prior: a number (spherical) or a .npy array (default: "
                "the data's covariance).",
                "str",
                default=None,
                convert=_number_or_npy,
            ),
            Opt(
                "resp_init",
                "Initial responsibilities of every row, shape (N, K) (replaces --init-params).",
                "array",
            ),
        ),
        outputs={
            "labels": Output("predict", ("sample",), "most probable component"),
            "probabilities": Output("predict_proba", ("sample", "component"), "responsibilities"),
            "score": Output(
                "score_samples", ("sample",), "log-sum-exp of the variational log densities"
            ),
        },
        synth="gmm",
        synth_options=(
            _synth_components(8),
            Opt(
                "separation", "Spread of the true means (std per coordinate).", "float", default=1.0
            ),
        ),
    ),
    ModelEntry(
        name="mfa",
        checkpoint_model="mixture_of_factor_analyzers",
        estimator="dem.models.factor_mixture:MixtureOfFactorAnalyzers",
        help="Mixture of factor analyzers (or of PPCA, --noise isotropic); NaN entries are "
        "missing values.",
        options=(
            _n_components("Number of mixture components."),
            Opt(
                "n_factors",
                "Factors (latent dimensions) per component.",
                flags=("--n-factors", "-q"),
            ),
            Opt(
                "noise",
                "Noise of each component: one variance per feature, or one (mixture of PPCA).",
                "choice",
                "dem.models.factor_mixture:NOISE_TYPES",
            ),
            Opt(
                "reg_noise",
                "Floor of the noise variances (fraction of the mean variance).",
                "float",
            ),
            Opt(
                "init_params",
                "How rows are clustered for the start (each cluster then gets its PPCA).",
                "choice",
                "dem.models.factor_mixture:INIT_METHODS",
            ),
        ),
        outputs={
            "labels": Output("predict", ("sample",), "most probable component"),
            "probabilities": Output("predict_proba", ("sample", "component"), "responsibilities"),
            "latent": Output(
                "transform", ("sample", "factor"), "E[z | x] under the most probable component"
            ),
            "loglik": Output(
                "score_samples", ("sample",), "log-likelihood of each sample's observed values"
            ),
        },
        synth="mfa",
        synth_options=(
            _synth_components(4),
            Opt(
                "n_factors",
                "Factors of each component of the truth.",
                default=2,
                flags=("--factors", "-q"),
            ),
            Opt(
                "noise_variance",
                "Mean noise variance (per feature 0.5 to 1.5 times it).",
                "float",
                default=0.1,
            ),
            Opt(
                "separation", "Spread of the true means (std per coordinate).", "float", default=3.0
            ),
            Opt("missing", "Probability that an entry is missing (NaN).", "float", default=0.0),
        ),
        synth_fit=("--var", "X", "--n-components", "{n_components}", "--n-factors", "{n_factors}"),
    ),
)


#: Command-line name → entry, in the order the commands list them.
REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> ModelEntry:
    """Add a model family; its commands appear in ``dem`` built after this call.

    Raises
    ------
    ValueError
        The command-line name or the checkpoint model name is already registered.
    """
    if entry.name in REGISTRY:
        raise ValueError(f"A model is already registered as {entry.name!r}.")
    taken = {e.checkpoint_model: e.name for e in REGISTRY.values()}
    if entry.checkpoint_model in taken:
        raise ValueError(
            f"Checkpoint model {entry.checkpoint_model!r} is already registered by "
            f"{taken[entry.checkpoint_model]!r}."
        )
    REGISTRY[entry.name] = entry
    return entry


for _entry in _ENTRIES:
    register(_entry)


def by_checkpoint_model(model: str) -> ModelEntry | None:
    """The entry whose checkpoints carry the model name ``model`` (None if none does)."""
    return next((e for e in REGISTRY.values() if e.checkpoint_model == model), None)


def by_estimator(estimator: Any) -> ModelEntry | None:
    """The entry whose estimator class ``estimator`` is an instance of (None if none); the
    entry of its own class before those of its base classes (a StudentMixture is a
    GaussianMixture)."""
    matches = [e for e in REGISTRY.values() if isinstance(estimator, e.estimator_class())]
    exact = [e for e in matches if type(estimator) is e.estimator_class()]
    found = exact or matches
    return found[0] if found else None


def choices(opt: Opt) -> tuple[str, ...]:
    """The choices of a ``"choice"`` option (a ``"module:NAME"`` path is read now)."""
    found = load(opt.choices) if isinstance(opt.choices, str) else opt.choices
    return tuple(str(c) for c in found)


def _dof(value: Any) -> Any:
    """``--dof``: omitted (None, estimated per component), ``tied``, or a number."""
    if value is None or value == "tied":
        return value
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"--dof must be a positive number or 'tied', got {value!r}.") from None


register(
    ModelEntry(
        name="tmix",
        checkpoint_model="student_mixture",
        estimator="dem.models.student_mixture:StudentMixture",
        help="Mixture of multivariate t distributions (robust to outliers), fitted by ECM.",
        options=(
            _n_components("Number of mixture components."),
            Opt(
                "covariance_type",
                "Form of the component scale matrices.",
                "choice",
                ("full", "tied", "diag", "spherical"),
            ),
            Opt(
                "dof",
                "Degrees of freedom: leave out to estimate one per component, 'tied' for one "
                "shared estimate, or a number to fix them.",
                "str",
                default=None,
                convert=_dof,
            ),
            Opt("reg_covar", "Added to the diagonal of every scale matrix.", "float"),
            Opt(
                "init_params",
                "How the start is found: k-means|| over all the data, or a method on a row "
                "sample ('auto': k-means|| when the data exceed the sample).",
                "choice",
                "dem.models.mixture:INIT_METHODS",
            ),
            Opt("weights_init", "Initial weights, shape (K,).", "array"),
            Opt("means_init", "Initial locations, shape (K, d).", "array"),
            Opt("precisions_init", "Initial inverse scale matrices.", "array"),
        ),
        outputs={
            "labels": Output("predict", ("sample",), "most probable component"),
            "probabilities": Output("predict_proba", ("sample", "component"), "responsibilities"),
            "loglik": Output("score_samples", ("sample",), "log-likelihood of each sample"),
        },
        synth="tmix",
        synth_options=(
            _synth_components(8),
            Opt(
                "separation", "Spread of the true means (std per coordinate).", "float", default=1.0
            ),
            Opt("dof", "Degrees of freedom of every component.", "float", default=5.0),
        ),
    )
)


register(
    ModelEntry(
        name="lda",
        checkpoint_model="latent_dirichlet_allocation",
        estimator="dem.models.lda:LatentDirichletAllocation",
        help="Latent Dirichlet allocation (topics of word counts; scikit-learn's "
        "LatentDirichletAllocation options), by batch variational EM over sparse chunks.",
        options=(
            _n_components("Number of topics."),
            Opt(
                "doc_topic_prior",
                "Prior of the document-topic distributions (default 1/K).",
                "float",
                default=None,
            ),
            Opt(
                "topic_word_prior",
                "Prior of the topic-word distributions (default 1/K).",
                "float",
                default=None,
            ),
            Opt("max_doc_update_iter", "Steps of each document's fixed point at most."),
            Opt("mean_change_tol", "A document stops when its γ moves less than this.", "float"),
            Opt("evaluate_every", "> 0: stop when the perplexity moves less than --perp-tol."),
            Opt("perp_tol", "Perplexity tolerance.", "float"),
            Opt("components_init", "Initial topic-word parameters, shape (K, V).", "array"),
        ),
        inputs=(
            Input(
                "var",
                "variable",
                "Name of the word counts in the store: a CSR group (dem synth lda writes one) "
                "or a documents × terms array.",
            ),
        ),
        outputs={
            "topics": Output("transform", ("sample", "component"), "document-topic distributions"),
        },
        synth="lda",
        synth_options=(
            _synth_components(10),
            Opt("words", "Mean words per document (Poisson).", "float", default=100.0),
            Opt(
                "doc_topic_prior",
                "Dirichlet prior α of each document's topics.",
                "float",
                default=0.1,
            ),
            Opt(
                "topic_word_prior",
                "Dirichlet prior of each topic's words (small: well-separated topics).",
                "float",
                default=0.05,
            ),
        ),
    )
)


register(
    ModelEntry(
        name="gmmhmm",
        checkpoint_model="gmm_hmm",
        estimator="dem.models.hmm:GMMHMM",
        help="Hidden Markov model with Gaussian-mixture emissions, on sequences × time × "
        "features (hmmlearn's GMMHMM options).",
        options=(
            _n_components("Number of hidden states."),
            Opt("n_mix", "Gaussian components of each state's emission mixture."),
            Opt(
                "covariance_type",
                "Form of the component covariances (tied: one per state).",
                "choice",
                "dem.models.hmm:COVARIANCE_TYPES",
            ),
            Opt("min_covar", "Floor on the covariances' diagonal at initialisation.", "float"),
            *TRANSITION_OPTIONS,
            _prior("weights_prior", "Dirichlet prior of each state's mixture weights"),
            _prior("means_prior", "Prior mean of the component means"),
            _prior("means_weight", "Weight of the means prior"),
            Opt(
                "covars_prior",
                "Prior of the covariances, hmmlearn's (a number or a .npy array; default: "
                "hmmlearn's for the covariance type).",
                "str",
                default=None,
                convert=_number_or_npy,
            ),
            Opt(
                "covars_weight",
                "Weight of the covariances prior (a number or a .npy array; default: "
                "hmmlearn's for the covariance type).",
                "str",
                default=None,
                convert=_number_or_npy,
            ),
            *TRANSITION_INITS,
            Opt("weights_init", "Initial mixture weights, shape (K, M).", "array"),
            Opt("means_init", "Initial means, shape (K, M, d).", "array"),
            Opt("covars_init", "Initial covariances, shaped for --covariance-type.", "array"),
        ),
        inputs=HMM_INPUTS,
        outputs=HMM_OUTPUTS,
        predict_inputs=(LENGTHS,),
        feature_axis=2,
        synth="gmmhmm",
        synth_options=(
            *HMM_SYNTH,
            Opt("n_mix", "Gaussian components of each state's emissions.", default=2),
            Opt(
                "separation",
                "Spread of the states' centres (std per coordinate).",
                "float",
                default=4.0,
            ),
        ),
        synth_fit=(*HMM_SYNTH_FIT, "--n-mix", "{n_mix}"),
    )
)
