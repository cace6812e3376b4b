"""What a registry entry is: a model family's commands, options, inputs and outputs.

:mod:`dem.registry` holds the table of entries; these are its row types.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def load(path: str) -> Any:
    """The object a ``"module:name"`` path names (the module is imported now)."""
    module, _, name = path.partition(":")
    if not name:
        raise ValueError(f"{path!r} is not a 'module:name' path.")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Opt:
    """One model option on the command line.

    ``kind`` is ``"int"``, ``"float"``, ``"str"``, ``"bool"``, ``"choice"`` (with
    ``choices``), ``"array"`` (a ``.npy`` file loaded with numpy) or
    ``"number_or_array"`` (a number, or else a ``.npy`` file). ``choices`` is a tuple,
    or ``"module:NAME"`` of one (read when the command line is built). The default is
    the estimator's own unless ``default`` is given; ``convert`` maps the parsed value
    to the estimator argument.
    """

    param: str
    help: str
    kind: str = "int"
    choices: tuple[str, ...] | str = ()
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
class ModelEntry:
    """One model family, registered once: every command and ``from_checkpoint`` use it.

    Attributes
    ----------
    name : str
        The command-line name (``dem fit NAME``, ``dem synth NAME``).
    checkpoint_model : str
        The model name its checkpoints carry (``dem show``, ``from_checkpoint``).
    estimator : str
        ``"module:Class"`` of the estimator, imported only when needed.
    help : str
        One line for ``dem fit --help``.
    options : tuple of Opt
        The estimator's model options on the command line. Every other parameter of
        the estimator's signature (the engine's: ``--max-iter``, ``--accelerate``,
        ``--n-init`` ...) is offered by ``dem fit`` without being listed here.
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
        Key of :data:`dem.synth.GENERATORS` for ``dem synth`` (None: no generator).
    synth_options : tuple of Opt
        Options of the generator's ground truth.
    synth_fit : tuple of str
        The arguments after ``dem fit NAME STORE`` that fit a synthetic store
        (``{option}`` is replaced by the value of a ``dem synth`` option).
    config_reader : str or None
        ``"module:function"`` turning the configuration a checkpoint holds into
        constructor arguments and fitted attributes (names ending in ``_``), where
        they differ; see :func:`dem.restore.from_checkpoint`.
    """

    name: str
    checkpoint_model: str
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
    config_reader: str | None = None

    def estimator_class(self) -> type:
        """The estimator class (imported now)."""
        found: type = load(self.estimator)
        return found
