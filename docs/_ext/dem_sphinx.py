"""Pages of dem's site generated from the code: the API reference, model cards, exit codes.

Directives
----------
``dem-api``
    One entry (``autoclass`` / ``autofunction`` / ``autoexception``) for every name in
    ``dem.__all__``, grouped by kind. A name without a docstring is a warning.
``dem-model NAME``
    The registry entry of one model family (:data:`dem.registry.REGISTRY`): its commands,
    estimator, checkpoint model name, data inputs and ``dem predict`` outputs. A registered
    family that no page shows is a warning when the build ends.
``dem-exit-codes``
    The table of :class:`dem.cli.console.ExitCode`, with each code's meaning from the
    ``Exit codes`` section of :mod:`dem.cli`'s docstring. A code without a meaning is a
    warning.

References to dem's own objects that have no entry of their own (internal modules, classes
and functions named in docstrings) resolve to plain text when the object exists, and to
its public entry when it is one of ``dem.__all__`` under another path; a reference to
nothing that exists stays a warning (with ``nitpicky``).

``dem-cli``
    Every command of the ``dem`` application, with its usage and every argument and
    option as ``dem COMMAND --help`` prints them (typer bundles its own click, which
    ``sphinx-click`` does not recognise).
"""

from __future__ import annotations

import enum
import importlib
import inspect
import re
from typing import Any, ClassVar

import typer.main
from docutils import nodes
from docutils.statemachine import StringList
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

import dem
import dem.cli
from dem.cli.console import ExitCode
from dem.registry import REGISTRY, ModelEntry

logger = logging.getLogger(__name__)


GROUPS = (
    ("Estimators", "estimators"),
    ("Functions", "functions"),
    ("Results and warnings", "classes"),
    ("Exceptions", "exceptions"),
)


def public_kind(obj: Any) -> str:
    """Which group of the API page ``obj`` belongs to."""
    from sklearn.base import BaseEstimator

    if inspect.isclass(obj):
        if issubclass(obj, BaseException) and not issubclass(obj, Warning):
            return "exceptions"
        if issubclass(obj, BaseEstimator):
            return "estimators"
        return "classes"
    return "functions"


def own_members(cls: type) -> list[str]:
    """Public members of ``cls`` defined by dem (itself or a dem base class), in MRO order.

    Members that come from scikit-learn, hmmlearn or Python (``get_params``,
    ``with_traceback`` ...) are left to those libraries' documentation.
    """
    names: list[str] = []
    for name in dir(cls):
        if name.startswith("_"):
            continue
        owner = next(klass for klass in cls.__mro__ if name in vars(klass))
        value = vars(owner)[name]
        value = getattr(value, "fget", value)  # a property: where its getter is defined
        module = getattr(value, "__module__", None) or owner.__module__
        if module.split(".")[0] == "dem" and owner.__module__.split(".")[0] == "dem":
            names.append(name)
    return names


def has_docstring(obj: Any) -> bool:
    """Whether ``obj`` has a docstring of its own (a class does not inherit one here)."""
    doc = vars(obj).get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    return bool(doc and doc.strip())


class ApiDirective(SphinxDirective):
    """Reference entries for every name in ``dem.__all__``."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        lines: list[str] = []
        by_group: dict[str, list[str]] = {key: [] for _, key in GROUPS}
        for name in dem.__all__:
            obj = getattr(dem, name)
            if not has_docstring(obj):
                logger.warning(
                    "dem.%s has no docstring", name, location=self.get_location(), type="dem"
                )
            by_group[public_kind(obj)].append(name)
        for title, key in GROUPS:
            if not by_group[key]:
                continue
            lines += [title, "-" * len(title), ""]
            for name in sorted(by_group[key], key=str.lower):
                obj = getattr(dem, name)
                if key == "functions":
                    lines += [f".. autofunction:: dem.{name}", ""]
                    continue
                directive = "autoexception" if key == "exceptions" else "autoclass"
                members = own_members(obj)
                for member in members:
                    if not inspect.getdoc(getattr(obj, member)):
                        logger.warning(
                            "dem.%s.%s has no docstring",
                            name,
                            member,
                            location=self.get_location(),
                            type="dem",
                        )
                lines.append(f".. {directive}:: dem.{name}")
                if members:
                    lines.append(f"   :members: {', '.join(members)}")
                else:
                    lines.append("   :no-members:")
                lines.append("")
        return self.parse(lines)

    def parse(self, lines: list[str]) -> list[nodes.Node]:
        """Parse reStructuredText ``lines`` in this directive's place, with titles."""
        node = nodes.section()
        node.document = self.state.document
        source = self.get_source_info()[0]
        self.state.nested_parse(
            StringList(lines, source=source), self.content_offset, node, match_titles=True
        )
        return list(node.children)


def _inputs_table(entry: ModelEntry) -> list[str]:
    rows = [
        f"``--{i.option}``: {i.help}" + ("" if i.required else " (optional)") for i in entry.inputs
    ]
    return [f"- {row}" for row in rows]


class ModelDirective(SphinxDirective):
    """A model family's registry entry, as a definition list."""

    required_arguments = 1
    option_spec: ClassVar[dict[str, Any]] = {}

    def run(self) -> list[nodes.Node]:
        name = self.arguments[0]
        entry = REGISTRY.get(name)
        if entry is None:
            logger.warning(
                "dem-model: %r is not a registered model (registered: %s)",
                name,
                ", ".join(REGISTRY),
                location=self.get_location(),
                type="dem",
            )
            return []
        documented: dict[str, set[str]] = self.env.__dict__.setdefault("dem_models", {})
        documented.setdefault(self.env.docname, set()).add(name)
        module, _, cls = entry.estimator.partition(":")
        public = f"dem.{cls}" if getattr(dem, cls, None) is entry.estimator_class() else None
        estimator = f":class:`{public}`" if public else f"``{module}.{cls}``"
        outputs = ", ".join(
            f"``{key}`` ({out.help}, dims {' × '.join(out.dims)})"
            for key, out in entry.outputs.items()
        )
        synth = (
            f"``dem synth {name} OUT.zarr`` writes data with a known truth"
            if entry.synth
            else "no generator"
        )
        lines = [
            f".. rubric:: Model ``{name}``",
            "",
            f"{entry.help}",
            "",
            "Estimator",
            f"   {estimator}",
            "Commands",
            f"   ``dem fit {name} STORE``, ``dem predict CKPT STORE``, ``dem show CKPT``; {synth}.",
            "Checkpoint",
            f"   a Zarr group whose model name is ``{entry.checkpoint_model}``: the fitted "
            "parameters of every iteration and the log-likelihood trace "
            "(:func:`dem.load_checkpoint`); :func:`dem.from_checkpoint` rebuilds the "
            "fitted estimator.",
            "Data inputs of ``dem fit``",
            *[f"   {row}" for row in _inputs_table(entry)],
            "Outputs of ``dem predict``",
            f"   {outputs}." if outputs else "   none.",
            "",
        ]
        node = nodes.section()
        node.document = self.state.document
        self.state.nested_parse(StringList(lines), self.content_offset, node)
        return list(node.children)


EXIT_SECTION = re.compile(r"^Exit codes\n-+\n(?P<body>.*?)(?:\n\n|\Z)", re.S | re.M)


def exit_code_meanings() -> dict[int, str]:
    """Each exit code's meaning, read from the ``Exit codes`` section of dem.cli's docstring."""
    match = EXIT_SECTION.search(inspect.cleandoc(dem.cli.__doc__ or ""))
    meanings: dict[int, str] = {}
    if match is None:
        return meanings
    code = None
    for line in match.group("body").splitlines():
        head = re.match(r"^(\d+)\s+(.*)$", line)
        if head:
            code = int(head.group(1))
            meanings[code] = head.group(2).strip()
        elif code is not None and line.strip():
            meanings[code] += " " + line.strip()
    return meanings


class ExitCodesDirective(SphinxDirective):
    """The exit-code table of every ``dem`` command."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        meanings = exit_code_meanings()
        codes: list[enum.IntEnum] = list(ExitCode)
        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 8 16 76",
            "",
            "   * - exit",
            "     - ``ExitCode``",
            "     - meaning",
        ]
        for code in codes:
            meaning = meanings.get(int(code))
            if meaning is None:
                logger.warning(
                    "exit code %d (%s) has no meaning in dem.cli's docstring",
                    int(code),
                    code.name,
                    location=self.get_location(),
                    type="dem",
                )
                meaning = ""
            lines += [f"   * - {int(code)}", f"     - ``{code.name}``", f"     - {meaning}"]
        for extra in sorted(set(meanings) - {int(c) for c in codes}):
            logger.warning(
                "dem.cli's docstring describes exit code %d, which ExitCode lacks",
                extra,
                location=self.get_location(),
                type="dem",
            )
        node = nodes.section()
        node.document = self.state.document
        self.state.nested_parse(StringList(lines), self.content_offset, node)
        return list(node.children)


def find_object(path: str) -> tuple[bool, Any, Any]:
    """``(found, object, parent)`` for a dotted ``path``: import its longest module prefix."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        parent: Any = None
        try:
            for name in parts[cut:]:
                parent, obj = obj, getattr(obj, name)
        except AttributeError:
            return False, None, None
        return True, obj, parent
    return False, None, None


def public_path(obj: Any, parent: Any, name: str) -> str | None:
    """``dem.NAME`` (or ``dem.NAME.attr``) when ``obj`` is, or belongs to, a public name."""
    for public in dem.__all__:
        value = getattr(dem, public)
        if obj is value:
            return f"dem.{public}"
        if parent is value:
            return f"dem.{public}.{name}"
    return None


def resolve_internal(
    app: Sphinx, env: BuildEnvironment, node: addnodes.pending_xref, contnode: nodes.Element
) -> nodes.Element | None:
    """Resolve a reference to a dem object that exists but has no entry (see module doc)."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~")
    module = node.get("py:module") or ""
    klass = node.get("py:class") or ""
    if target.startswith("."):
        candidates = [module + target, module.rpartition(".")[0] + target]
    else:
        candidates = [f"{module}.{klass}.{target}", f"{module}.{target}", target]
    for path in candidates:
        if not path.startswith("dem.") or ".." in path:
            continue
        found, obj, parent = find_object(path)
        if not found:
            continue
        public = public_path(obj, parent, path.rpartition(".")[2])
        if public is not None and public != path:
            domain = env.get_domain("py")
            resolved: nodes.Element | None = domain.resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], public, node, contnode
            )
            if resolved is not None:
                return resolved
        return contnode
    return None


def purge_models(app: Sphinx, env: BuildEnvironment, docname: str) -> None:
    """Forget the model families a page showed before it is read again."""
    env.__dict__.get("dem_models", {}).pop(docname, None)


def _paragraphs(text: str) -> list[nodes.Node]:
    return [
        nodes.paragraph(text=" ".join(block.split()))
        for block in inspect.cleandoc(text).split("\n\n")
        if block.strip()
    ]


def command_sections(command: Any, ctx: Any, document: Any) -> nodes.section:
    """A section for ``command`` (usage, help, arguments and options), its subcommands nested."""
    path = ctx.command_path
    section = nodes.section(
        ids=[nodes.make_id("cli " + path)], names=[nodes.fully_normalize_name(path)]
    )
    document.note_implicit_target(section, section)
    section += nodes.title(text=path)
    section += nodes.literal_block(text=command.get_usage(ctx))
    section.extend(_paragraphs(command.help or ""))
    items = nodes.definition_list()
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        term, help_text = record
        item = nodes.definition_list_item()
        item += nodes.term("", "", nodes.literal(text=term))
        item += nodes.definition("", *_paragraphs(help_text or ""))
        items += item
    if items.children:
        section += items
    for name in getattr(command, "list_commands", lambda _: [])(ctx):
        sub = command.get_command(ctx, name)
        if sub is None or sub.hidden:
            continue
        sub_ctx = type(ctx)(sub, info_name=name, parent=ctx)
        section += command_sections(sub, sub_ctx, document)
    return section


class CliDirective(SphinxDirective):
    """Every ``dem`` command, read from the typer application."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        command = typer.main.get_command(dem.cli.app)
        ctx = command.context_class(command, info_name="dem")
        return [command_sections(command, ctx, self.state.document)]


def merge_models(
    app: Sphinx, env: BuildEnvironment, docnames: set[str], other: BuildEnvironment
) -> None:
    """Combine the documented model families of parallel readers."""
    mine: dict[str, set[str]] = env.__dict__.setdefault("dem_models", {})
    for docname, names in other.__dict__.get("dem_models", {}).items():
        if docname in docnames:
            mine[docname] = names


def check_models(app: Sphinx, env: BuildEnvironment) -> None:
    """Warn about every registered model family that no page shows."""
    documented = set().union(*env.__dict__.get("dem_models", {}).values())
    for name in sorted(set(REGISTRY) - documented):
        logger.warning(
            "model %r is registered but no page has a `dem-model %s` directive",
            name,
            name,
            type="dem",
        )


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directives and the end-of-read check."""
    app.add_directive("dem-api", ApiDirective)
    app.add_directive("dem-model", ModelDirective)
    app.add_directive("dem-exit-codes", ExitCodesDirective)
    app.add_directive("dem-cli", CliDirective)
    app.connect("env-purge-doc", purge_models)
    app.connect("env-merge-info", merge_models)
    app.connect("env-check-consistency", check_models)
    app.connect("missing-reference", resolve_internal)
    return {"version": dem.__version__, "parallel_read_safe": True, "parallel_write_safe": True}
