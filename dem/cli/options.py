"""Command-line options built at run time: model and engine options, cluster, inputs."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import os
import shlex
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import typer
import typer.models
from rich.console import Console
from rich.markup import escape

from dem.cli.console import (
    UsageError,
    print_warnings,
)
from dem.cluster import DEFAULT_TIMEOUT, Connection, connect, make_security
from dem.registry import Input, ModelEntry, Opt, choices
from dem.tabular import is_parquet, open_parquet, refuse_text_table


def choice_enum(name: str, choices: tuple[str, ...]) -> type[enum.Enum]:
    """An enum of string ``choices`` (typer shows and checks them)."""
    return enum.Enum(name, {c: c for c in choices}, type=str)  # type: ignore[return-value]


def option_parameter(
    opt: Opt, estimator_defaults: dict[str, Any], prefix: str
) -> inspect.Parameter:
    """The typer option of ``opt``; its default is the estimator's unless ``opt`` sets one."""
    default = opt.default
    if default is inspect.Parameter.empty:
        default = estimator_defaults.get(opt.param)
    flags = opt.flags or ("--" + opt.param.replace("_", "-"),)
    annotation: Any
    if opt.kind == "bool":
        flags = (f"{flags[0]}/--no-{flags[0][2:]}", *flags[1:])
        annotation = bool
    elif opt.kind == "choice":
        choice = choice_enum(f"{prefix}_{opt.param}", choices(opt))
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


def parse_number(text: str) -> float | None:
    """``text`` as a number (``inf`` and ``-inf`` included), or None when it is not one."""
    try:
        return float(text)
    except ValueError:
        return None


def option_value(opt: Opt, value: Any) -> Any:
    """The estimator argument for the parsed ``value`` of ``opt`` (arrays loaded, converted)."""
    if isinstance(value, enum.Enum):
        value = value.value
    if opt.kind == "number_or_array" and parse_number(value) is not None:
        value = parse_number(value)
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


def with_signature(
    function: Callable[..., Any], parameters: list[inspect.Parameter], doc: str
) -> Callable[..., Any]:
    """Give ``function`` the ``parameters`` typer reads as its options and arguments."""
    function.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    function.__annotations__ = {p.name: p.annotation for p in parameters}
    function.__doc__ = doc
    return function


def estimator_defaults(cls: type) -> dict[str, Any]:
    """Parameter name → default of the estimator class ``cls``."""
    return {
        name: p.default
        for name, p in inspect.signature(cls).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def keyword_parameter(name: str, annotation: Any, info: Any) -> inspect.Parameter:
    """A keyword-only parameter carrying a typer ``Option`` or ``Argument``."""
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=info
    )


def weights_parameter() -> inspect.Parameter:
    """``--weights NAME``: the variable of the store holding one weight per sample."""
    return keyword_parameter(
        "weights",
        str | None,
        typer.Option(
            None,
            "--weights",
            help="Variable (or Parquet column) of the same store holding one non-negative "
            "weight per sample: the fit maximises the weighted log-likelihood (an integer "
            "weight counts the sample that many times, 0 leaves it out).",
            show_default=False,
        ),
    )


def cluster_parameters() -> list[inspect.Parameter]:
    """The options that say where the work runs (scheduler, TLS, timeout)."""
    panel = "Cluster"
    return [
        keyword_parameter(
            "scheduler",
            str | None,
            typer.Option(
                None,
                "--scheduler",
                help="Scheduler address (tls://host:8786, or tcp:// on loopback).",
                rich_help_panel=panel,
            ),
        ),
        keyword_parameter(
            "scheduler_file",
            Path | None,
            typer.Option(
                None,
                "--scheduler-file",
                help="JSON file written by `dask scheduler --scheduler-file`.",
                rich_help_panel=panel,
            ),
        ),
        keyword_parameter(
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
        keyword_parameter(
            "tls_ca_file",
            Path | None,
            typer.Option(
                None,
                "--tls-ca-file",
                help="CA certificate (PEM) for tls:// schedulers.",
                rich_help_panel=panel,
            ),
        ),
        keyword_parameter(
            "tls_cert",
            Path | None,
            typer.Option(
                None, "--tls-cert", help="This client's certificate (PEM).", rich_help_panel=panel
            ),
        ),
        keyword_parameter(
            "tls_key",
            Path | None,
            typer.Option(
                None, "--tls-key", help="This client's private key (PEM).", rich_help_panel=panel
            ),
        ),
        keyword_parameter(
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
        keyword_parameter(
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


def overwrite_parameter() -> inspect.Parameter:
    """``--overwrite`` of the commands that write an output store (see :mod:`dem.outputs`)."""
    return keyword_parameter(
        "overwrite",
        bool,
        typer.Option(
            False,
            "--overwrite",
            help="Replace OUT if it exists and is a store dem wrote (else: refused).",
        ),
    )


def connect_cluster(console: Console, values: dict[str, Any]) -> Connection:
    """Connect as the cluster options in ``values`` say, and print where the work runs."""
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
    print_warnings(console, caught)
    return connection


def command_line(
    words: list[str], parameters: list[inspect.Parameter], values: dict[str, Any]
) -> str:
    """The ``dem`` command that repeats a call: every option that differs from its default."""
    words = list(words)
    for p in parameters:
        info = p.default
        value = values[p.name]
        if not isinstance(info, typer.models.OptionInfo):
            words.append(absolute_location(value))
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
        elif isinstance(value, list | tuple):  # a repeatable option
            for item in value:
                words += [flag, str(item)]
        else:
            words += [
                flag,
                str(
                    value.value
                    if isinstance(value, enum.Enum)
                    else absolute_location(value)
                    if isinstance(value, Path)
                    else value
                ),
            ]
    return shlex.join(["dem", *words])


def absolute_location(location: str | os.PathLike[str]) -> str:
    """``location`` made absolute, unless it is a URL."""
    location = os.fspath(location)
    return location if "://" in location else os.path.abspath(location)


def _persist(value: str) -> bool | None:
    return {"auto": None, "yes": True, "no": False}[value]


def _scalar(text: str | None) -> Any:
    """An option given as text: an int or a float where it parses as one, else the text."""
    if text is None:
        return None
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            continue
    return text


#: How the engine's options (parameters every estimator may have) appear on the command
#: line. ``dem fit MODEL`` offers those of them the estimator's signature has.
ENGINE_OPTIONS: dict[str, Opt] = {
    o.param: o
    for o in (
        Opt("max_iter", "Maximum EM iterations (per initialisation, counting resumed ones)."),
        Opt(
            "tol",
            "Convergence threshold on the change of the mean log-likelihood (tobit: on the "
            "change of the fit, see CensoredRegression).",
            "float",
        ),
        Opt("n_init", "Number of initialisations; the best is kept."),
        Opt("random_state", "Random seed of the initialisation.", default=0, flags=("--seed",)),
        Opt("init_sample_size", "Rows (sequences) sampled for the initialisation."),
        Opt("split_every", "Fan-in of the tree that sums the statistics."),
        Opt(
            "persist",
            "Keep the data in cluster memory (auto: when it takes at most half of it).",
            "choice",
            ("auto", "yes", "no"),
            default="auto",
            convert=_persist,
        ),
        Opt(
            "accelerate",
            "'squarem' extrapolates between EM steps, 'alpha' is alpha-EM (a momentum step; "
            "see --alpha): fewer passes over the data.",
            "choice",
            ("none", "squarem", "alpha"),
        ),
        Opt(
            "alpha",
            "Alpha of --accelerate alpha, in [-1, 1): -1 is plain EM, larger takes larger steps.",
            "float",
        ),
        Opt(
            "method",
            "'batch' is EM; 'incremental' takes an M-step after every --incremental-chunks "
            "chunks; 'online' (where listed) starts with online-EM passes, then batch EM.",
            "choice",
            ("batch", "online", "incremental"),
        ),
        Opt("incremental_chunks", "Chunks per M-step of incremental EM (--method incremental)."),
        Opt("online_passes", "Online-EM passes over the data before batch EM (--method online)."),
        Opt("batch_chunks", "Chunks in each online-EM step (--method online)."),
        Opt("step_exponent", "Exponent of the online-EM step size (--method online).", "float"),
        Opt(
            "forgetting",
            "Online EM with a constant step in (0, 1] (Sato-Ishii discount; tracks drift) "
            "instead of the decaying one (--method online).",
            "float",
        ),
    )
}

#: Estimator parameters that are not options of ``dem fit``, and why.
NOT_OPTIONS: dict[str, str] = {
    "checkpoint": "--checkpoint, with a default name",
    "resume": "--resume",
    "storage_options": "--storage-option KEY=VALUE, repeatable",
    "checkpoint_storage_options": "--checkpoint-storage-option KEY=VALUE, repeatable",
    "callback": "the command's own progress report",
    "warm_start": "each command is a fresh process: --resume continues a fit instead",
}


def _generic_option(param: inspect.Parameter) -> Opt:
    """A parameter no table describes, offered with the type of its default."""
    default = param.default
    help_text = f"The estimator's {param.name!r} (see its documentation)."
    if isinstance(default, bool):
        return Opt(param.name, help_text, "bool")
    for kind, cls in (("int", int), ("float", float), ("str", str)):
        if isinstance(default, cls):
            return Opt(param.name, help_text, kind)
    return Opt(param.name, help_text + " A number or a word.", "str", default=None, convert=_scalar)


def _declared_choices(cls: type, param: str) -> tuple[str, ...] | None:
    """Choices a scikit-learn style ``_parameter_constraints`` declares for ``param``."""
    for constraint in getattr(cls, "_parameter_constraints", {}).get(param, ()):
        options = getattr(constraint, "options", None)
        if isinstance(options, set | frozenset) and all(isinstance(o, str) for o in options):
            return tuple(sorted(options))
    return None


def fit_options(entry: ModelEntry, cls: type) -> tuple[Opt, ...]:
    """Every option of ``dem fit NAME``: the entry's model options, then every other
    parameter of the estimator's signature (engine options), in signature order.

    Parameters in :data:`NOT_OPTIONS` are left to the command, and those named like one of
    the entry's data inputs (Tobit's ``left``/``right``) are given as inputs. A choice option whose
    parameter declares string options in ``_parameter_constraints`` takes them from there.
    """
    own = {o.param: o for o in entry.options}
    inputs = {i.option for i in entry.inputs} | {i.argument for i in entry.inputs}
    found = []
    for name, param in inspect.signature(cls).parameters.items():
        if (
            name in NOT_OPTIONS
            or name in inputs
            or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
        ):
            continue
        opt = own.get(name) or ENGINE_OPTIONS.get(name) or _generic_option(param)
        declared = _declared_choices(cls, name) if opt.kind == "choice" else None
        if declared is not None and opt.convert is None:
            opt = dataclasses.replace(opt, choices=declared)
        found.append(opt)
    return tuple(found)


COLUMNS_HELP = " For Parquet data: its columns, comma-separated (--columns a,b,c)."


def input_parameter(
    data: Input, help_suffix: str = "", *, columns: bool = False
) -> inspect.Parameter:
    """The ``--option`` of a data input (a variable name, or a number for limits);
    ``columns``: also ``--columns`` (the samples × features input: Parquet columns)."""
    return keyword_parameter(
        data.option,
        str if data.required else str | None,
        typer.Option(
            ... if data.required else None,
            f"--{data.option}",
            *(("--columns",) if columns else ()),
            help=data.help + (COLUMNS_HELP if columns else "") + help_suffix,
            show_default=False,
        ),
    )


def input_values(
    store: str,
    inputs: tuple[Input, ...],
    values: dict[str, Any],
    storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Estimator keyword → value of each input given, after checking its variable exists."""
    arguments: dict[str, Any] = {}
    for data in inputs:
        text = values[data.option]
        if text is None:
            continue
        number = parse_number(text) if data.kind == "limit" else None
        if number is None:
            variable_shape(store, text, storage_options)
        arguments[data.argument] = text if number is None else number
    return arguments


def variable_shape(
    store: str, variable: str, storage_options: dict[str, Any] | None = None
) -> tuple[int, ...]:
    """The shape of ``variable`` in ``store`` (a Zarr array, or for Parquet data the
    comma-separated columns: rows × columns), from metadata only."""
    from dem.data import open_zarr_variable

    if is_parquet(store, storage_options):
        table = open_parquet(store, variable, storage_options=storage_options)
        return (table.n_rows, len(table.columns))
    from dem.models.lda.corpus import csr_group

    sparse = csr_group(
        store, variable, storage_options
    )  # a sparse matrix in the CSR layout: its shape
    if sparse is not None:
        shape: list[int] = sparse.attrs["shape"]  # type: ignore[assignment]
        return tuple(int(size) for size in shape)
    return tuple(open_zarr_variable(store, variable, storage_options=storage_options).shape)


def inferred_data(store: str, variable: str, ndim: int, option: str) -> str:
    """What a command says of the data it found without ``option`` (``--var``)."""
    if is_parquet(store):
        return (
            f"Data: columns {variable} of {store} (every numeric column; choose with "
            f"{option} a,b,c)."
        )
    return f"Data: {variable}, the only {ndim}-D array in {store} ({option} {variable})."


def validate_parameters(estimator: Any, flags: dict[str, str] | None = None) -> None:
    """Check the estimator's parameters as its ``fit`` would, before any cluster starts.

    Through scikit-learn's ``_validate_params`` (the estimator's
    ``_parameter_constraints``); an estimator without it checks its parameters in
    ``fit``. A parameter that fails is a :class:`~dem.cli.console.UsageError` whose
    message starts with its command-line option (``flags``: parameter → option, by
    default ``--`` and the parameter's name with dashes).
    """
    validate = getattr(estimator, "_validate_params", None)
    if validate is None:
        return
    try:
        validate()
    except (TypeError, ValueError) as exc:
        raise UsageError(_option_message(str(exc), flags or {})) from exc


def _option_message(message: str, flags: dict[str, str]) -> str:
    """An estimator's message about a parameter, with its command-line option named."""
    import re

    found = re.search(r"\b([a-z][a-z0-9_]*) must be", message) or re.search(
        r"The '([a-z][a-z0-9_]*)' parameter", message
    )
    if found is None:
        return message
    option = flags.get(found.group(1), "--" + found.group(1).replace("_", "-"))
    return f"{option}: {message}"


def data_ndim(entry: ModelEntry) -> int:
    """Dimensions of the model's data array (samples × features, or sequences × time [×
    features])."""
    return 2 if entry.feature_axis is None else entry.feature_axis + 1


def optional_data_input(entry: ModelEntry) -> tuple[Input, ...]:
    """The entry's inputs with the data variable (``--var``) made optional: when it is
    omitted, :func:`infer_variable` picks the store's only array of the right shape."""
    return tuple(
        dataclasses.replace(
            i,
            required=False,
            help=i.help + f" Default: the store's only {data_ndim(entry)}-D array.",
        )
        if i.argument == "variable"
        else i
        for i in entry.inputs
    )


def infer_variable(
    store: str, ndim: int, option: str = "--var", storage_options: dict[str, Any] | None = None
) -> str:
    """The name of the only ``ndim``-dimensional array in ``store`` (metadata only); for
    Parquet data, its numeric columns (comma-separated).

    Raises
    ------
    UsageError
        None, or several, of the store's arrays have ``ndim`` dimensions; the message
        lists the candidates.
    """
    import zarr

    from dem import storage

    if is_parquet(store, storage_options):
        if ndim != 2:
            raise UsageError(
                f"{store!r} holds Parquet data, a table; this model needs {ndim}-D arrays "
                "(sequences × time × features): write them to Zarr."
            )
        return ",".join(open_parquet(store, storage_options=storage_options).columns)
    refuse_text_table(store)
    if "://" not in store and not os.path.exists(store):
        raise FileNotFoundError(f"Zarr store {store!r} does not exist.")
    try:
        group = zarr.open_group(storage.open_store(store, storage_options), mode="r")
        arrays = {name: array.ndim for name, array in group.arrays()}
    except Exception as exc:  # zarr raises several types for unreadable stores
        raise ValueError(
            f"{storage.location(store)!r} is not a readable Zarr group: "
            f"{storage.redact(str(exc), storage_options, store)}"
        ) from exc
    candidates = sorted(name for name, n in arrays.items() if n == ndim)
    if len(candidates) == 1:
        return candidates[0]
    found = ", ".join(f"{name} ({n}-D)" for name, n in sorted(arrays.items())) or "no arrays"
    which = "several" if candidates else "no"
    raise UsageError(
        f"{option} not given and {store!r} has {which} {ndim}-D arrays"
        + (f" ({', '.join(candidates)})" if candidates else "")
        + f"; it holds {found}. Pass {option} NAME."
    )


STORAGE_OPTION_HELP = (
    "KEY=VALUE of the fsspec filesystem of {what} when it is a URL (s3://, gs://, az://, "
    "...): an endpoint_url, key, secret, token, anon=true... Repeatable; a VALUE that "
    "parses as JSON (true, 1, {{...}}) is that, else text. Without it, credentials come "
    "from the environment. Never printed nor written into the checkpoint."
)


def storage_option_parameter(name: str, flag: str, what: str) -> inspect.Parameter:
    """A repeatable ``--...storage-option KEY=VALUE`` (see :func:`storage_options`)."""
    return keyword_parameter(
        name,
        list[str] | None,
        typer.Option(None, flag, help=STORAGE_OPTION_HELP.format(what=what), show_default=False),
    )


def storage_options(items: list[str] | None, flag: str) -> dict[str, Any] | None:
    """``KEY=VALUE`` items as ``storage_options``: each VALUE parsed as JSON where it
    parses (``true``, ``1``, ``{"a": 1}``), else kept as text; None when none is given.

    Raises UsageError for an item without ``=`` (its value is not shown: it may be a
    secret).
    """
    import json

    if not items:
        return None
    found: dict[str, Any] = {}
    for item in items:
        key, equals, text = item.partition("=")
        if not equals or not key.strip():
            raise UsageError(f"{flag} takes KEY=VALUE; got an item without a KEY=.")
        try:
            found[key.strip()] = json.loads(text)
        except ValueError:
            found[key.strip()] = text
    return found


def masked_storage_options(items: list[str] | None) -> list[str] | None:
    """``KEY=VALUE`` items with each VALUE that may be a credential shown as ``***``
    (what a printed command holds)."""
    from dem.storage import secrets

    if not items:
        return items
    shown = []
    for item in items:
        key = item.partition("=")[0]
        shown.append(f"{key}=***" if secrets(storage_options([item], "")) else item)
    return shown
