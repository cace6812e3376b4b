"""The ``dem`` command line: fit, inspect and apply models on a Dask cluster.

Commands
--------
``dem demo``                      a self-contained end-to-end run on generated data
``dem fit MODEL STORE ...``       fit a model to Zarr data, checkpointing every iteration
``dem show CKPT``                 what a checkpoint holds (``--plot`` draws the trace)
``dem predict CKPT STORE ...``    per-sample outputs of a fitted model, written to Zarr
``dem synth MODEL OUT ...``       a synthetic store of any size, with its ground truth

Every model is one entry of :data:`MODELS`; the ``fit``, ``predict`` and ``synth``
subcommands and their options are built from that table.

Exit codes
----------
0    success (a fit that stopped at ``--max-iter`` unconverged also exits 0, with a warning)
1    unexpected error (a bug: please report it with the traceback)
2    usage error: bad options, or a missing optional dependency
3    bad input data: missing store or variable, wrong shape or type, NaN or infinity
4    checkpoint problem: exists without ``--resume``, or written by another model,
     configuration or data
5    scheduler problem: not found, unreachable, or an insecure address refused
130  interrupted (Ctrl-C or SIGTERM); the last complete iteration is checkpointed and
     the command that resumes is printed
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import enum
import inspect
import math
import os
import shlex
import signal
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
import typer.models
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dem.checkpoint import CheckpointError, CheckpointMismatchError
from dem.cluster import DEFAULT_TIMEOUT, Connection, SchedulerError, connect, make_security
from dem.models.hmm import COVARIANCE_TYPES
from dem.models.mixture import INIT_METHODS
from dem.models.ppca import INIT_METHODS as PPCA_INIT_METHODS
from dem.outputs import ATTRIBUTE as OUTPUT_ATTRIBUTE
from dem.outputs import (
    UnsafeOutputError,
    check_output,
    mark_complete,
    paths_overlap,
    remove_output,
)
from dem.outputs import marker as output_marker
from dem.synth import GENERATORS


class ExitCode(enum.IntEnum):
    """Exit statuses of every ``dem`` command (see the module docstring)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    DATA = 3
    CHECKPOINT = 4
    SCHEDULER = 5
    INTERRUPTED = 130


class FitStopped(Exception):
    """Raised from the progress callback when the user asked the fit to stop."""


# --- the model table ----------------------------------------------------------------


@dataclass(frozen=True)
class Opt:
    """One model option on the command line.

    ``kind`` is ``"int"``, ``"float"``, ``"str"``, ``"bool"``, ``"choice"`` (with
    ``choices``), ``"array"`` (a ``.npy`` file loaded with numpy) or
    ``"number_or_array"`` (a number, or else a ``.npy`` file). The default is the
    estimator's own unless ``default`` is given; ``convert`` maps the parsed value to
    the estimator argument.
    """

    param: str
    help: str
    kind: str = "int"
    choices: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    default: Any = inspect.Parameter.empty
    convert: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class Input:
    """A data input: the name of a variable in the store, or for ``kind="limit"`` a
    number or a variable name (a value that parses as a number is a number).

    ``option`` is the command-line option (``--option``); ``argument`` the keyword of
    the estimator's ``fit`` (and ``dem predict`` methods) that receives it.
    """

    option: str
    argument: str
    help: str
    required: bool = True
    kind: str = "variable"


@dataclass(frozen=True)
class Output:
    """A per-sample output of ``dem predict``.

    ``method`` is called as ``method(store, variable=..., **inputs)`` with the
    ``dem predict`` inputs named in ``uses``, and returns a lazy array with dims ``dims``.
    """

    method: str
    dims: tuple[str, ...] = ("sample",)
    help: str = ""
    uses: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelCommand:
    """How one model appears on the command line.

    Attributes
    ----------
    estimator : str
        ``"module:Class"`` of the estimator.
    help : str
        One line for ``dem fit --help``.
    options : tuple of Opt
        The estimator's model options (the engine's options are common to all).
    inputs : tuple of Input
        The data options of ``dem fit``; the estimator is fitted as
        ``fit(store, **{input.argument: value})``.
    outputs : dict
        ``dem predict`` outputs, name → :class:`Output`.
    predict_inputs : tuple of Input
        Optional data options of ``dem predict`` besides ``--var`` (the data).
    feature_axis : int or None
        Axis of the data that holds the features (checked by ``dem predict`` against
        the fitted model); None when the data have none (symbols).
    summary : str or None
        Method of the fitted estimator whose text ``dem fit`` prints at the end.
    synth : str or None
        Key of :data:`dem.synth.GENERATORS` for ``dem synth``.
    synth_options : tuple of Opt
        Options of the generator's ground truth.
    synth_fit : tuple of str
        The arguments after ``dem fit MODEL STORE`` that fit a synthetic store
        (``{option}`` is replaced by the value of a ``dem synth`` option).
    """

    estimator: str
    help: str
    options: tuple[Opt, ...]
    inputs: tuple[Input, ...] = (
        Input("var", "variable", "Name of the data variable (samples × features) in the store."),
    )
    outputs: dict[str, Output] = field(default_factory=dict)
    predict_inputs: tuple[Input, ...] = ()
    feature_axis: int | None = 1
    summary: str | None = None
    synth: str | None = None
    synth_options: tuple[Opt, ...] = ()
    synth_fit: tuple[str, ...] = ("--var", "X", "--n-components", "{n_components}")


def _persist(value: str) -> bool | None:
    return {"auto": None, "yes": True, "no": False}[value]


def _n_components(what: str) -> Opt:
    return Opt("n_components", what, flags=("--n-components", "-k"))


N_INIT = Opt("n_init", "Number of initialisations; the best is kept.")
INIT_SAMPLE_SIZE = Opt("init_sample_size", "Rows (sequences) sampled for the initialisation.")


def _synth_components(default: int) -> Opt:
    return Opt(
        "n_components",
        "Number of components (states) of the truth.",
        default=default,
        flags=("--components", "-k"),
    )


def _prior(param: str, what: str) -> Opt:
    return Opt(param, f"{what} (a number, or a .npy array).", "number_or_array")


PPCA_OPTIONS = (
    _n_components("Number of latent dimensions (below the number of features)."),
    N_INIT,
    Opt(
        "init_params",
        "'pca': closed-form PPCA of a row sample; 'random': random loadings.",
        "choice",
        PPCA_INIT_METHODS,
    ),
    INIT_SAMPLE_SIZE,
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


MODELS: dict[str, ModelCommand] = {
    "gmm": ModelCommand(
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
            N_INIT,
            Opt(
                "init_params",
                "How the start is found: k-means|| over all the data, or a method on a row "
                "sample ('auto': k-means|| when the data exceed the sample).",
                "choice",
                INIT_METHODS,
            ),
            Opt(
                "accelerate",
                "'squarem' extrapolates between EM steps (fewer passes over the data).",
                "choice",
                ("none", "squarem"),
            ),
            Opt(
                "method",
                "'online' starts with online-EM passes, then continues with batch EM.",
                "choice",
                ("batch", "online"),
            ),
            Opt("init_sample_size", "Rows sampled for the initialisation."),
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
        ),
    ),
    "ppca": ModelCommand(
        estimator="dem.models.ppca:PPCA",
        help="Probabilistic PCA (isotropic noise); NaN entries are missing values.",
        options=PPCA_OPTIONS,
        outputs=PPCA_OUTPUTS,
        synth="ppca",
        synth_options=_ppca_synth("Noise variance σ² of every feature."),
    ),
    "fa": ModelCommand(
        estimator="dem.models.ppca:FactorAnalysis",
        help="Factor analysis (one noise variance per feature); NaN entries are missing values.",
        options=PPCA_OPTIONS,
        outputs=PPCA_OUTPUTS,
        synth="fa",
        synth_options=_ppca_synth("Mean noise variance (each feature's is 0.5 to 1.5 times it)."),
    ),
    "tobit": ModelCommand(
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
    "hmm": ModelCommand(
        estimator="dem.models.hmm:GaussianHMM",
        help="Hidden Markov model with Gaussian emissions, on sequences × time × features "
        "(hmmlearn's GaussianHMM options).",
        options=(
            _n_components("Number of hidden states."),
            Opt("covariance_type", "Form of the state covariances.", "choice", COVARIANCE_TYPES),
            Opt("min_covar", "Floor on the covariances' diagonal at initialisation.", "float"),
            *TRANSITION_OPTIONS,
            _prior("means_prior", "Prior mean of the state means"),
            _prior("means_weight", "Weight of the means prior"),
            _prior("covars_prior", "Prior of the covariances"),
            Opt("covars_weight", "Weight of the covariances prior.", "float"),
            N_INIT,
            *TRANSITION_INITS,
            Opt("means_init", "Initial means, shape (K, d).", "array"),
            Opt("covars_init", "Initial covariances, shaped for --covariance-type.", "array"),
            INIT_SAMPLE_SIZE,
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
    "categorical-hmm": ModelCommand(
        estimator="dem.models.hmm:CategoricalHMM",
        help="Hidden Markov model with categorical emissions, on sequences × time of integer "
        "symbols (hmmlearn's CategoricalHMM options).",
        options=(
            _n_components("Number of hidden states."),
            Opt("n_features", "Number of distinct symbols (default: 1 + the largest).", "int"),
            *TRANSITION_OPTIONS,
            _prior("emissionprob_prior", "Dirichlet prior of each row of the emission matrix"),
            N_INIT,
            *TRANSITION_INITS,
            Opt(
                "emissionprob_init", "Initial emission probabilities, shape (K, symbols).", "array"
            ),
            INIT_SAMPLE_SIZE,
        ),
        inputs=HMM_INPUTS,
        outputs=HMM_OUTPUTS,
        predict_inputs=(LENGTHS,),
        feature_axis=None,
        synth="categorical-hmm",
        synth_options=HMM_SYNTH,
        synth_fit=HMM_SYNTH_FIT,
    ),
}

ENGINE_OPTIONS = (
    Opt("max_iter", "Maximum EM iterations (per initialisation, counting resumed ones)."),
    Opt(
        "tol",
        "Convergence threshold on the change of the mean log-likelihood (tobit: on the change "
        "of the fit, see CensoredRegression).",
        "float",
    ),
    Opt("random_state", "Random seed of the initialisation.", default=0, flags=("--seed",)),
    Opt("split_every", "Fan-in of the tree that sums the statistics."),
    Opt(
        "persist",
        "Keep the data in cluster memory (auto: when it takes at most half of it).",
        "choice",
        ("auto", "yes", "no"),
        default="auto",
        convert=_persist,
    ),
)


def _import(path: str) -> Any:
    import importlib

    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


# --- console, errors, interrupts -----------------------------------------------------


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _fail(console: Console, code: ExitCode, message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(int(code))


@contextlib.contextmanager
def _errors(console: Console) -> Iterator[None]:
    """Turn the errors users can fix into messages and exit codes."""
    try:
        yield
    except (typer.Exit, FitStopped, KeyboardInterrupt):
        raise
    except SchedulerError as exc:
        raise _fail(console, ExitCode.SCHEDULER, str(exc)) from exc
    except UnsafeOutputError as exc:
        raise _fail(console, ExitCode.USAGE, str(exc)) from exc
    except (CheckpointError, FileExistsError) as exc:
        raise _fail(console, ExitCode.CHECKPOINT, str(exc)) from exc
    except (FileNotFoundError, KeyError, TypeError, ValueError, FloatingPointError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise _fail(console, ExitCode.DATA, str(message)) from exc


def _scheduler_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the client lost its scheduler (not a data or disk error)."""
    from distributed.comm.core import CommClosedError

    text = str(exc).lower()
    return (
        isinstance(exc, CommClosedError | concurrent.futures.CancelledError)
        or "scheduler-connection-lost" in text
        or "connection to the scheduler" in text
    )


class Interrupts:
    """First Ctrl-C (or SIGTERM): stop once the running iteration is checkpointed.

    A second one stops at once; the iteration being written is then discarded by the
    checkpoint's completeness marker, so the previous one is what a resume uses.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.console.print(
            "[yellow]Stopping after the current iteration is checkpointed; press Ctrl-C again "
            "to stop now.[/]"
        )

    def __enter__(self) -> Interrupts:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Reporter:
    """Live progress of a fit: one line per iteration, and a bar on terminals."""

    def __init__(
        self, console: Console, max_iter: int, n_init: int, interrupts: Interrupts | None
    ) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = console
        self.interrupts = interrupts
        self.n_init = n_init
        self.seconds: list[float] = []
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self.task = self.progress.add_task("initialising", total=max_iter)
        self._header = False

    def __enter__(self) -> Reporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, info: Any) -> None:
        if not self._header:
            self.console.print(
                f"{'run':>4} {'iter':>5} {'log-likelihood':>16} {'change':>11} {'s/iter':>8}"
                "  checkpoint"
            )
            self._header = True
        change = "" if not math.isfinite(info.change) else f"{info.change:.3e}"
        self.seconds.append(info.seconds)
        self.console.print(
            f"{info.run:>4} {info.iteration:>5} {info.loglik:>16.8f} {change:>11}"
            f" {info.seconds:>8.2f}  {'written' if info.checkpointed else 'no'}"
        )
        run = f"run {info.run + 1}/{self.n_init} " if self.n_init > 1 else ""
        self.progress.update(
            self.task, completed=info.iteration, description=f"{run}loglik {info.loglik:.6f}"
        )
        if self.interrupts is not None and self.interrupts.requested:
            raise FitStopped


def _print_warnings(console: Console, caught: list[warnings.WarningMessage]) -> None:
    seen = set()
    for w in caught:
        text = f"{w.category.__name__}: {w.message}"
        if text not in seen:
            seen.add(text)
            console.print(f"[yellow]warning:[/] {escape(text)}", soft_wrap=True)


# --- dynamic options ------------------------------------------------------------------


def _choice_enum(name: str, choices: tuple[str, ...]) -> type[enum.Enum]:
    return enum.Enum(name, {c: c for c in choices}, type=str)  # type: ignore[return-value]


def _option_parameter(
    opt: Opt, estimator_defaults: dict[str, Any], prefix: str
) -> inspect.Parameter:
    default = opt.default
    if default is inspect.Parameter.empty:
        default = estimator_defaults.get(opt.param)
    flags = opt.flags or ("--" + opt.param.replace("_", "-"),)
    annotation: Any
    if opt.kind == "bool":
        flags = (f"{flags[0]}/--no-{flags[0][2:]}", *flags[1:])
        annotation = bool
    elif opt.kind == "choice":
        choice = _choice_enum(f"{prefix}_{opt.param}", opt.choices)
        annotation = choice if default is not None else choice | None
        default = choice(default) if default is not None else None
    elif opt.kind == "array":
        annotation, default = Path | None, None
    elif opt.kind == "number_or_array":
        annotation, default = str, str(default)
    else:
        base = {"int": int, "float": float, "str": str}[opt.kind]
        annotation = base if default is not None else base | None
    help_text = opt.help + (" (.npy file)" if opt.kind == "array" else "")
    return inspect.Parameter(
        opt.param,
        inspect.Parameter.KEYWORD_ONLY,
        annotation=annotation,
        default=typer.Option(default, *flags, help=help_text, show_default=default is not None),
    )


def _number(text: str) -> float | None:
    """``text`` as a number (``inf`` and ``-inf`` included), or None when it is not one."""
    try:
        return float(text)
    except ValueError:
        return None


def _option_value(opt: Opt, value: Any) -> Any:
    if isinstance(value, enum.Enum):
        value = value.value
    if opt.kind == "number_or_array" and _number(value) is not None:
        value = _number(value)
    elif opt.kind in ("array", "number_or_array") and value is not None:
        try:
            value = np.load(value, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"--{opt.param.replace('_', '-')}: cannot read {value} as a .npy array ({exc})."
            ) from exc
    if opt.convert is not None:
        value = opt.convert(value)
    return value


def _with_signature(
    function: Callable[..., Any], parameters: list[inspect.Parameter], doc: str
) -> Callable[..., Any]:
    function.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    function.__annotations__ = {p.name: p.annotation for p in parameters}
    function.__doc__ = doc
    return function


def _estimator_defaults(cls: type) -> dict[str, Any]:
    return {
        name: p.default
        for name, p in inspect.signature(cls).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def _parameter(name: str, annotation: Any, info: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=info
    )


def _cluster_parameters() -> list[inspect.Parameter]:
    panel = "Cluster"
    return [
        _parameter(
            "scheduler",
            str | None,
            typer.Option(
                None,
                "--scheduler",
                help="Scheduler address (tls://host:8786, or tcp:// on loopback).",
                rich_help_panel=panel,
            ),
        ),
        _parameter(
            "scheduler_file",
            Path | None,
            typer.Option(
                None,
                "--scheduler-file",
                help="JSON file written by `dask scheduler --scheduler-file`.",
                rich_help_panel=panel,
            ),
        ),
        _parameter(
            "local_workers",
            int | None,
            typer.Option(
                None,
                "--local-workers",
                help="Worker processes of the local cluster started when no "
                "scheduler is given or configured (default: one per core).",
                rich_help_panel=panel,
            ),
        ),
        _parameter(
            "tls_ca_file",
            Path | None,
            typer.Option(
                None,
                "--tls-ca-file",
                help="CA certificate (PEM) for tls:// schedulers.",
                rich_help_panel=panel,
            ),
        ),
        _parameter(
            "tls_cert",
            Path | None,
            typer.Option(
                None, "--tls-cert", help="This client's certificate (PEM).", rich_help_panel=panel
            ),
        ),
        _parameter(
            "tls_key",
            Path | None,
            typer.Option(
                None, "--tls-key", help="This client's private key (PEM).", rich_help_panel=panel
            ),
        ),
        _parameter(
            "connect_timeout",
            float,
            typer.Option(
                DEFAULT_TIMEOUT,
                "--timeout",
                "--connect-timeout",
                help="Seconds to wait for the scheduler to answer (a port that does not speak "
                "Dask fails after this long; one where nothing listens fails at once).",
                rich_help_panel=panel,
            ),
        ),
        _parameter(
            "insecure",
            bool,
            typer.Option(
                False,
                "--insecure",
                help="Allow an unencrypted tcp:// scheduler that is not on loopback "
                "(anyone who reaches it can run code).",
                rich_help_panel=panel,
            ),
        ),
    ]


def _overwrite_parameter() -> inspect.Parameter:
    """``--overwrite`` of the commands that write an output store (see :mod:`dem.outputs`)."""
    return _parameter(
        "overwrite",
        bool,
        typer.Option(
            False,
            "--overwrite",
            help="Replace OUT if it exists and is a store dem wrote (else: refused).",
        ),
    )


def _connect(console: Console, values: dict[str, Any]) -> Connection:
    security = make_security(
        *(
            None if values[k] is None else os.fspath(values[k])
            for k in ("tls_ca_file", "tls_cert", "tls_key")
        )
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        connection = connect(
            values["scheduler"],
            None if values["scheduler_file"] is None else os.fspath(values["scheduler_file"]),
            local_workers=values["local_workers"],
            security=security,
            insecure=values["insecure"],
            timeout=values["connect_timeout"],
        )
    console.print(escape(connection.describe()), soft_wrap=True)
    _print_warnings(console, caught)
    return connection


def _command_line(
    words: list[str], parameters: list[inspect.Parameter], values: dict[str, Any]
) -> str:
    """The ``dem`` command that repeats a call: every option that differs from its default."""
    words = list(words)
    for p in parameters:
        info = p.default
        value = values[p.name]
        if not isinstance(info, typer.models.OptionInfo):
            words.append(os.fspath(value))
            continue
        default = info.default
        if value == default or value is None:
            continue
        flag = (info.param_decls or ("--" + p.name.replace("_", "-"),))[0]
        if "/" in flag:
            on, off = flag.split("/")
            words.append(on if value else off)
        elif isinstance(value, bool):
            words.append(flag)
        else:
            words += [
                flag,
                str(
                    value.value
                    if isinstance(value, enum.Enum)
                    else os.fspath(value)
                    if isinstance(value, Path)
                    else value
                ),
            ]
    return shlex.join(["dem", *words])


def _absolute(location: str | os.PathLike[str]) -> str:
    location = os.fspath(location)
    return location if "://" in location else os.path.abspath(location)


# --- dem fit --------------------------------------------------------------------------

app = typer.Typer(
    name="dem",
    help="Fit latent-variable models by EM on Dask clusters, out of core, from Zarr data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
fit_app = typer.Typer(
    help="Fit a model to Zarr data on a Dask cluster, checkpointing every iteration.",
    no_args_is_help=True,
)
synth_app = typer.Typer(
    help="Write a synthetic Zarr store of any size, chunk by chunk.", no_args_is_help=True
)
app.add_typer(fit_app, name="fit")
app.add_typer(synth_app, name="synth")


def _input_parameter(data: Input, help_suffix: str = "") -> inspect.Parameter:
    return _parameter(
        data.option,
        str if data.required else str | None,
        typer.Option(
            ... if data.required else None,
            f"--{data.option}",
            help=data.help + help_suffix,
            show_default=False,
        ),
    )


def _input_values(store: str, inputs: tuple[Input, ...], values: dict[str, Any]) -> dict[str, Any]:
    """Estimator keyword → value of each input given, after checking its variable exists."""
    from dem.data import open_zarr_variable

    arguments: dict[str, Any] = {}
    for data in inputs:
        text = values[data.option]
        if text is None:
            continue
        number = _number(text) if data.kind == "limit" else None
        if number is None:
            open_zarr_variable(store, text)
        arguments[data.argument] = text if number is None else number
    return arguments


def _fit_parameters(
    key: str, spec: ModelCommand, defaults: dict[str, Any]
) -> list[inspect.Parameter]:
    parameters = [
        _parameter(
            "store",
            Path,
            typer.Argument(..., help="Zarr store holding the data.", show_default=False),
        ),
    ]
    parameters += [_input_parameter(i) for i in spec.inputs]
    parameters += [_option_parameter(o, defaults, key) for o in spec.options]
    parameters += [_option_parameter(o, defaults, key) for o in ENGINE_OPTIONS]
    parameters += [
        _parameter(
            "checkpoint",
            Path | None,
            typer.Option(
                None,
                "--checkpoint",
                help="Zarr store for the per-iteration checkpoint (default: "
                f"dem-{key}-<date>.zarr here).",
            ),
        ),
        _parameter(
            "resume",
            bool,
            typer.Option(
                False,
                "--resume",
                help="Continue from the checkpoint's latest complete iteration "
                "(starts afresh when it does not exist yet).",
            ),
        ),
    ]
    return parameters + _cluster_parameters()


def _make_fit_command(key: str, spec: ModelCommand) -> None:
    cls = _import(spec.estimator)
    parameters = _fit_parameters(key, spec, _estimator_defaults(cls))

    def command(**values: Any) -> None:
        _run_fit(key, spec, cls, parameters, values)

    fit_app.command(name=key, help=spec.help)(_with_signature(command, parameters, spec.help))


def _run_fit(
    key: str,
    spec: ModelCommand,
    cls: type,
    parameters: list[inspect.Parameter],
    values: dict[str, Any],
) -> None:
    console = _console()
    store = _absolute(values["store"])
    if values["checkpoint"] is None:
        values["checkpoint"] = Path(f"dem-{key}-{datetime.now():%Y%m%d-%H%M%S}.zarr")
    checkpoint = _absolute(values["checkpoint"])
    values["store"], values["checkpoint"] = Path(store), Path(checkpoint)
    resume_values = {**values, "resume": True}
    resume_command = _command_line(["fit", key], parameters, resume_values)

    with _errors(console):
        options = {
            o.param: _option_value(o, values[o.param]) for o in (*spec.options, *ENGINE_OPTIONS)
        }
        arguments = _input_values(store, spec.inputs, values)
        if os.path.exists(checkpoint) and not values["resume"]:
            raise FileExistsError(
                f"Checkpoint {checkpoint!r} already exists. Add --resume to continue that fit, or "
                "pass another --checkpoint."
            )
        latest = None
        if values["resume"] and os.path.exists(checkpoint):
            from dem.restore import checkpoint_header

            latest = checkpoint_header(checkpoint).get("latest") or {}
        connection = _connect(console, values)
        if latest is not None:
            console.print(
                f"Resuming {escape(checkpoint)} after run {latest.get('run', 0)}, iteration "
                f"{latest.get('iteration', 0)}.",
                soft_wrap=True,
            )
    with connection, Interrupts(console) as interrupts, _errors(console):
        reporter = Reporter(
            console, options["max_iter"], int(options.get("n_init", 1) or 1), interrupts
        )
        estimator = cls(
            **options, checkpoint=checkpoint, resume=values["resume"], callback=reporter
        )
        started = time.perf_counter()
        try:
            with reporter, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                estimator.fit(store, **arguments)
        except (FitStopped, KeyboardInterrupt) as exc:
            console.print(
                f"[yellow]Interrupted.[/] The last complete iteration is in {escape(checkpoint)}."
            )
            console.print("Resume with:")
            console.print(escape(resume_command), soft_wrap=True)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from exc
        except (concurrent.futures.CancelledError, OSError, TimeoutError) as exc:
            if not _scheduler_lost(exc):
                raise
            console.print(
                f"[red]Lost the scheduler[/] ({escape(str(exc).strip() or type(exc).__name__)}). "
                f"The last complete iteration is in {escape(checkpoint)}."
            )
            console.print("Once a scheduler runs again (pass its address or file), resume with:")
            console.print(escape(resume_command), soft_wrap=True)
            raise typer.Exit(int(ExitCode.SCHEDULER)) from exc
        _print_warnings(console, caught)
        elapsed = time.perf_counter() - started
        seconds = reporter.seconds
        console.print(
            f"{'Converged' if estimator.converged_ else 'Stopped without converging'} after "
            f"{estimator.n_iter_} iteration(s) in {elapsed:.1f} s"
            + (
                f" (median {statistics.median(seconds):.2f} s per iteration this session)"
                if seconds
                else ""
            )
            + f"; mean log-likelihood {estimator.lower_bounds_[-1]:.8f}."
        )
        if spec.summary is not None:
            console.print(escape(str(getattr(estimator, spec.summary)())), soft_wrap=True)
        console.print(f"Checkpoint: {escape(checkpoint)}", soft_wrap=True)
        if not estimator.converged_:
            more = {**resume_values, "max_iter": 2 * values["max_iter"]}
            console.print("Continue it with more iterations:", soft_wrap=True)
            console.print(escape(_command_line(["fit", key], parameters, more)), soft_wrap=True)
        console.print(
            f"Inspect it with: {escape(shlex.join(['dem', 'show', checkpoint]))}", soft_wrap=True
        )


# --- dem show ---------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:.6g}"


@app.command()
def show(
    checkpoint: Annotated[
        Path, typer.Argument(help="Checkpoint store written by `dem fit`.", show_default=False)
    ],
    run: Annotated[int | None, typer.Option(help="Restart to show (default: the best).")] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Draw the log-likelihood trace to this image file "
            "(needs matplotlib: pip install 'dem\\[plot]')."
        ),
    ] = None,
) -> None:
    """Model, configuration, data, log-likelihood trace and parameters of a checkpoint."""
    import json

    from dem.restore import best_run, checkpoint_header, final_loglik, load_runs

    console = _console()
    with _errors(console):
        path = os.fspath(checkpoint)
        if plot is not None:
            _check_plot_target(plot, path)
        header = checkpoint_header(path)
        runs = load_runs(path)
        if run is not None and run not in runs:
            raise _fail(
                console,
                ExitCode.USAGE,
                f"Run {run} is not in the checkpoint; it has runs {sorted(runs)}.",
            )
        best = best_run(runs)
        chosen = best if run is None else run
    console.print(f"[bold]{escape(path)}[/]: model [bold]{escape(header['model'])}[/]")
    config = Table(title="configuration", show_header=False)
    for name, value in header["config"].items():
        config.add_row(name, escape(json.dumps(value)))
    console.print(config)
    data = Table(title="data fingerprint")
    for column in ("input", "source", "shape", "dtype", "chunks"):
        data.add_column(column)
    for name, fp in header["fingerprint"].items():
        chunks = fp.get("sample_chunks", [])
        data.add_row(
            name,
            escape(str(fp.get("source"))),
            str(tuple(fp.get("shape", ()))),
            str(fp.get("dtype")),
            f"{len(chunks)} of ≤{max(chunks, default=0)} rows",
        )
    console.print(data)
    table = Table(title="restarts")
    for column in ("run", "iterations", "converged", "final log-likelihood", ""):
        table.add_column(column)
    for r, ds in runs.items():
        table.add_row(
            str(r),
            str(ds.attrs["last_iteration"]),
            "yes" if ds.attrs["converged"] else "no",
            _fmt(final_loglik(ds)),
            "best" if r == best else "",
        )
    console.print(table)

    dataset = runs[chosen]
    trace = dataset["loglik"].values
    lines = Table(title=f"log-likelihood trace (run {chosen})")
    for column in ("iteration", "mean log-likelihood", "change"):
        lines.add_column(column, justify="right")
    shown = (
        range(1, len(trace))
        if len(trace) <= 31
        else [*range(1, 6), *range(len(trace) - 20, len(trace))]
    )
    previous = None
    for i in shown:
        if previous is not None and i != previous + 1:
            lines.add_row("…", "", "")
        change = trace[i] - trace[i - 1] if i > 1 else math.nan
        lines.add_row(
            str(i), f"{trace[i]:.10f}", "" if not math.isfinite(change) else f"{change:.3e}"
        )
        previous = i
    console.print(lines)
    params = Table(title=f"parameters (run {chosen}, iteration {dataset.attrs['last_iteration']})")
    for column in ("name", "dims", "shape", "min", "mean", "max"):
        params.add_column(column)
    small = {}
    for name, variable in dataset.data_vars.items():
        if name == "loglik":
            continue
        values = np.asarray(variable.values, dtype=np.float64)
        if values.ndim <= 1 and values.size <= 32:
            small[name] = values
        params.add_row(
            str(name),
            " × ".join(map(str, variable.dims)),
            str(values.shape),
            _fmt(values.min()),
            _fmt(values.mean()),
            _fmt(values.max()),
        )
    console.print(params)
    for name, values in small.items():
        console.print(f"{name}: " + " ".join(f"{v:.4g}" for v in values.ravel()), soft_wrap=True)
    if plot is not None:
        _plot_trace(console, path, plot)


def _check_plot_target(target: Path, checkpoint: str) -> None:
    """Refuse a ``--plot`` file that would be written into a checkpoint, over a folder, or
    into a folder that does not exist."""
    if paths_overlap(target, checkpoint):
        raise UnsafeOutputError(
            f"--plot {os.fspath(target)!r} lies inside the checkpoint {checkpoint!r}; dem never "
            "writes there. Choose a file outside it."
        )
    if os.path.isdir(target):
        raise UnsafeOutputError(
            f"--plot {os.fspath(target)!r} is a folder; give the image file to write, e.g. "
            f"{os.fspath(Path(target) / 'trace.png')!r}."
        )
    folder = Path(target).parent
    if not folder.is_dir():
        raise UnsafeOutputError(
            f"--plot {os.fspath(target)!r}: the folder {os.fspath(folder)!r} does not exist. "
            "Create it first, or choose a file in an existing folder."
        )


def _plot_trace(console: Console, checkpoint: str, target: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise _fail(
            console, ExitCode.USAGE, "--plot needs matplotlib: pip install 'dem[plot]'."
        ) from exc
    from dem.plot import loglik_trace

    figure, axes = plt.subplots(figsize=(6, 4))
    loglik_trace(checkpoint, ax=axes)
    axes.legend()
    figure.tight_layout()
    figure.savefig(target, dpi=120)
    plt.close(figure)
    console.print(f"Trace drawn to {escape(os.fspath(target))}")


# --- dem predict -----------------------------------------------------------------------


def _spec_for(estimator: Any) -> tuple[str, ModelCommand]:
    for key, spec in MODELS.items():
        if isinstance(estimator, _import(spec.estimator)):
            return key, spec
    raise CheckpointMismatchError(
        f"No command-line outputs are defined for {type(estimator).__name__}."
    )


def _predict_parameters() -> list[inspect.Parameter]:
    return [
        _parameter(
            "checkpoint",
            Path,
            typer.Argument(..., help="Checkpoint store written by `dem fit`.", show_default=False),
        ),
        _parameter(
            "store",
            Path,
            typer.Argument(..., help="Zarr store holding the data.", show_default=False),
        ),
        _parameter(
            "var",
            str,
            typer.Option(
                ..., "--var", help="Name of the data variable in the store.", show_default=False
            ),
        ),
        _parameter(
            "out",
            Path,
            typer.Option(
                ...,
                "--out",
                help="Zarr store to write (must not exist, or be one dem wrote, with --overwrite); "
                "never inside the input or the checkpoint. The workers write it, so it must be "
                "reachable from them.",
                show_default=False,
            ),
        ),
        _parameter(
            "output",
            list[str] | None,
            typer.Option(
                None,
                "--output",
                help="Output to write (repeatable; default: all the model's outputs; "
                + "; ".join(f"{k}: {', '.join(s.outputs)}" for k, s in MODELS.items())
                + ").",
            ),
        ),
        _overwrite_parameter(),
        *_predict_input_parameters(),
        *_cluster_parameters(),
    ]


def _predict_inputs() -> dict[str, tuple[Input, list[str]]]:
    """The models' optional ``dem predict`` inputs, each once, with the models that take it."""
    found: dict[str, tuple[Input, list[str]]] = {}
    for key, spec in MODELS.items():
        for data in spec.predict_inputs:
            found.setdefault(data.option, (data, []))[1].append(key)
    return found


def _predict_input_parameters() -> list[inspect.Parameter]:
    return [
        _input_parameter(data, f" [{', '.join(models)} only]")
        for data, models in _predict_inputs().values()
    ]


def predict(**values: Any) -> None:
    from dem.data import open_zarr_variable
    from dem.restore import from_checkpoint

    console = _console()
    store, out = _absolute(values["store"]), _absolute(values["out"])
    with _errors(console):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            estimator = from_checkpoint(values["checkpoint"])
        _print_warnings(console, caught)
        key, spec = _spec_for(estimator)
        wanted = values["output"] or list(spec.outputs)
        unknown = sorted(set(wanted) - set(spec.outputs))
        if unknown:
            raise _fail(
                console,
                ExitCode.USAGE,
                f"Unknown output(s) {unknown}; this model writes {list(spec.outputs)}.",
            )
        accepted = {data.option for data in spec.predict_inputs}
        for option in _predict_inputs():
            if values[option] is not None and option not in accepted:
                raise _fail(
                    console, ExitCode.USAGE, f"--{option} does not apply to {key} checkpoints."
                )
        data = open_zarr_variable(store, values["var"])
        arguments = _input_values(store, spec.predict_inputs, values)
        axis, expected = spec.feature_axis, getattr(estimator, "n_features_in_", None)
        if (
            axis is not None
            and expected is not None
            and (len(data.shape) != axis + 1 or data.shape[axis] != expected)
        ):
            raise ValueError(
                f"{values['var']!r} in {store!r} has shape {data.shape}, but the model was fitted "
                f"to {expected} features."
            )
        check_output(
            out,
            protected={"the input store": store, "the checkpoint": values["checkpoint"]},
            overwrite=values["overwrite"],
        )
        import xarray as xr

        variables = {}  # lazy: nothing is computed before the cluster is connected
        for name in wanted:
            output = spec.outputs[name]
            given = {
                data.argument: arguments[data.argument]
                for data in spec.predict_inputs
                if data.option in output.uses and data.argument in arguments
            }
            result = getattr(estimator, output.method)(store, variable=values["var"], **given)
            variables[name] = xr.Variable(output.dims, result)
        connection = _connect(console, values)
    with connection, _errors(console):
        import dask
        from rich.status import Status

        dataset = xr.Dataset(
            variables,
            attrs={
                OUTPUT_ATTRIBUTE: output_marker("dem predict", complete=False),
                "dem_predict": {
                    "checkpoint": _absolute(values["checkpoint"]),
                    "source": f"{store}::{values['var']}",
                },
            },
        )
        started = time.perf_counter()
        if os.path.lexists(out):
            remove_output(out)  # check_output allowed it: a dem output store
        # the metadata (marker included, complete=false) is written here, the chunks below
        write = dataset.to_zarr(out, mode="w-", compute=False, consolidated=False)
        with Status(f"Writing {', '.join(wanted)} to {escape(out)}", console=console):
            try:
                dask.compute(write)
            except KeyboardInterrupt as exc:
                console.print(
                    f"[yellow]Interrupted[/]; {escape(out)} is incomplete: delete it or rerun "
                    "with --overwrite."
                )
                raise typer.Exit(int(ExitCode.INTERRUPTED)) from exc
        mark_complete(out)
        chunks = len(next(iter(variables.values())).data.chunks[0])
        console.print(
            f"Wrote {', '.join(f'{n} {variables[n].shape}' for n in wanted)} to {escape(out)} "
            f"in {chunks} chunk(s), {time.perf_counter() - started:.1f} s.",
            soft_wrap=True,
        )


app.command(
    name="predict",
    help="Per-sample outputs of a fitted model (labels, probabilities, ...) "
    "written chunk by chunk to Zarr on the cluster.",
)(
    _with_signature(
        predict, _predict_parameters(), "Per-sample outputs of a fitted model, written to Zarr."
    )
)


# --- dem synth ---------------------------------------------------------------------------


def _synth_parameters(key: str, spec: ModelCommand) -> list[inspect.Parameter]:
    return [
        _parameter(
            "out", Path, typer.Argument(..., help="Zarr store to create.", show_default=False)
        ),
        _parameter(
            "samples",
            int,
            typer.Option(
                1_000_000, "--samples", "-n", help="Number of samples (sequences for HMMs)."
            ),
        ),
        _parameter(
            "features",
            int,
            typer.Option(
                16, "--features", "-d", help="Number of features (symbols for categorical-hmm)."
            ),
        ),
        *[_option_parameter(o, {}, f"synth_{key}") for o in spec.synth_options],
        _parameter(
            "seed", int, typer.Option(0, "--seed", help="Seed of the ground truth and the samples.")
        ),
        _parameter(
            "chunk_rows",
            int | None,
            typer.Option(
                None,
                "--chunk-rows",
                help="Samples (sequences) per chunk (default: 100,000 observations: samples, or "
                "time steps of sequences).",
            ),
        ),
        _parameter(
            "dtype",
            _choice_enum("synth_dtype", ("float64", "float32")),
            typer.Option("float64", "--dtype", help="Data type of the feature matrix."),
        ),
        _parameter(
            "threads",
            int,
            typer.Option(
                2, "--threads", help="Chunks generated at once (memory ≈ threads chunks)."
            ),
        ),
        _overwrite_parameter(),
    ]


def _write_synthetic(
    console: Console, key: str, spec: ModelCommand, out: str, values: dict[str, Any]
) -> dict[str, np.ndarray]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dem.synth import write_store

    options = {o.param: _option_value(o, values[o.param]) for o in spec.synth_options}
    with Progress(
        TextColumn("writing {task.fields[name]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task("synth", total=values["samples"], name=os.path.basename(out))
        return write_store(
            out,
            spec.synth or key,
            n_samples=values["samples"],
            n_features=values["features"],
            seed=values["seed"],
            chunk_rows=values["chunk_rows"],
            dtype=getattr(values["dtype"], "value", values["dtype"]),
            threads=values["threads"],
            options=options,
            on_chunk=lambda done, total: bar.update(task, completed=done),
        )


def _make_synth_command(key: str, spec: ModelCommand) -> None:
    parameters = _synth_parameters(key, spec)

    def command(**values: Any) -> None:
        console = _console()
        out = _absolute(values["out"])
        with _errors(console):
            check_output(out, protected={}, overwrite=values["overwrite"], option="OUT")
            if os.path.lexists(out):
                remove_output(out)
            started = time.perf_counter()
            _write_synthetic(console, key, spec, out, values)
        import zarr

        group = zarr.open_group(out, mode="r")
        shapes = ", ".join(
            f"{name} {dict(group.arrays())[name].shape}"
            for name in GENERATORS[spec.synth or key].dims
        )
        console.print(
            f"Wrote {escape(out)} in {time.perf_counter() - started:.1f} s: {shapes}; ground "
            "truth in the attribute 'dem_synth'.",
            soft_wrap=True,
        )
        fit_words = ["dem", "fit", key, out, *(w.format(**values) for w in spec.synth_fit)]
        console.print(f"Fit it with: {escape(shlex.join(fit_words))}", soft_wrap=True)

    variables = ", ".join(GENERATORS[spec.synth or key].dims)
    text = f"Synthetic data for `dem fit {key}`: variables {variables}; ground truth in attributes."
    synth_app.command(name=key, help=text)(_with_signature(command, parameters, text))


for _key, _spec in MODELS.items():
    _make_fit_command(_key, _spec)
    if _spec.synth is not None:
        _make_synth_command(_key, _spec)


# --- dem demo -----------------------------------------------------------------------------


@app.command()
def demo(
    samples: Annotated[int, typer.Option("--samples", "-n", help="Number of samples.")] = 1_000_000,
    features: Annotated[int, typer.Option("--features", "-d", help="Number of features.")] = 16,
    components: Annotated[
        int, typer.Option("--components", "-k", help="Number of mixture components.")
    ] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the data and of the fit.")] = 0,
    workers: Annotated[int, typer.Option(help="Worker processes of the local Dask cluster.")] = 2,
    chunk_rows: Annotated[int, typer.Option(help="Samples per chunk.")] = 100_000,
    max_iter: Annotated[int, typer.Option(help="Maximum EM iterations.")] = 100,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Where to write the data and checkpoint (default: a new temporary directory).",
        ),
    ] = None,
) -> None:
    """Generate a Zarr store, fit a Gaussian mixture on a local Dask cluster, and report."""
    from scipy.optimize import linear_sum_assignment

    console = _console()
    if min(samples, features, components, workers, chunk_rows, max_iter) < 1:
        raise _fail(
            console,
            ExitCode.USAGE,
            "--samples, --features, --components, --workers, --chunk-rows "
            "and --max-iter must be at least 1.",
        )
    if samples < components:
        raise _fail(console, ExitCode.USAGE, "--samples must be at least --components.")
    root = Path(tempfile.mkdtemp(prefix="dem-demo-")) if directory is None else directory
    root.mkdir(parents=True, exist_ok=True)
    store, checkpoint = os.fspath(root / "data.zarr"), os.fspath(root / "fit.zarr")
    console.print(
        f"[bold]dem demo[/]: {samples:,} samples × {features} features from a "
        f"{components}-component Gaussian mixture, in {escape(os.fspath(root))}",
        soft_wrap=True,
    )
    spec = MODELS["gmm"]
    with _errors(console):
        started = time.perf_counter()
        truth = _write_synthetic(
            console,
            "gmm",
            spec,
            store,
            {
                "samples": samples,
                "features": features,
                "seed": seed,
                "chunk_rows": chunk_rows,
                "dtype": "float64",
                "threads": workers,
                "n_components": components,
                "separation": 1.0,
            },
        )
        size = samples * features * 8 / 1e6
        console.print(
            f"Wrote {escape(store)} ({size:,.0f} MB in {-(-samples // chunk_rows)} chunks) "
            f"in {time.perf_counter() - started:.1f} s.",
            soft_wrap=True,
        )
        connection = _connect(
            console,
            {
                "scheduler": None,
                "scheduler_file": None,
                "local_workers": workers,
                "tls_ca_file": None,
                "tls_cert": None,
                "tls_key": None,
                "insecure": False,
                "connect_timeout": DEFAULT_TIMEOUT,
            },
        )
    cls = _import(spec.estimator)
    with connection, Interrupts(console) as interrupts, _errors(console):
        reporter = Reporter(console, max_iter, 1, interrupts)
        estimator = cls(
            components,
            covariance_type="full",
            random_state=seed,
            max_iter=max_iter,
            checkpoint=checkpoint,
            callback=reporter,
        )
        started = time.perf_counter()
        try:
            with reporter, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                estimator.fit(store, variable="X")
        except (FitStopped, KeyboardInterrupt) as exc:
            console.print(
                f"[yellow]Interrupted.[/] Checkpoint so far: {escape(checkpoint)}", soft_wrap=True
            )
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from exc
        _print_warnings(console, caught)
        elapsed = time.perf_counter() - started

    trace = estimator.lower_bounds_
    console.print(
        f"\n[bold]{'Converged' if estimator.converged_ else 'Did not converge'}[/] after "
        f"{estimator.n_iter_} iterations in {elapsed:.1f} s (including initialisation); "
        f"median {statistics.median(reporter.seconds):.2f} s per iteration."
    )
    console.print("Mean log-likelihood per sample: " + " → ".join(f"{v:.4f}" for v in trace))
    distance = np.linalg.norm(truth["means"][:, None, :] - estimator.means_[None, :, :], axis=2)
    true_index, fitted_index = linear_sum_assignment(distance)
    spacing = np.linalg.norm(truth["means"][:, None] - truth["means"][None], axis=2)
    nearest = (
        np.min(spacing + np.diag(np.full(components, np.inf)), axis=1)
        if components > 1
        else np.full(1, np.nan)
    )
    table = Table(
        title="recovered vs true components (matched by the Hungarian algorithm on mean distance)"
    )
    for column in (
        "true",
        "fitted",
        "true weight",
        "fitted weight",
        "‖mean error‖",
        "nearest other true mean",
    ):
        table.add_column(column, justify="right")
    for t, f in zip(true_index, fitted_index, strict=True):
        table.add_row(
            str(t),
            str(f),
            f"{truth['weights'][t]:.4f}",
            f"{estimator.weights_[f]:.4f}",
            f"{distance[t, f]:.4f}",
            f"{nearest[t]:.2f}",
        )
    console.print(table)
    console.print(
        f"Largest mean error {distance[true_index, fitted_index].max():.4f} (means lie "
        f"{np.nanmin(nearest):.2f} or more apart)."
    )
    console.print(
        f"Checkpoint: {escape(checkpoint)}   (inspect: dem show {escape(shlex.quote(checkpoint))})",
        soft_wrap=True,
    )
    console.print(
        f"Data: {escape(store)}   (delete {escape(os.fspath(root))} when done)", soft_wrap=True
    )


def main() -> None:
    """Entry point for ``python -m dem.cli``."""
    app()


if __name__ == "__main__":
    main()
