"""Where a store is, spelled one way: the rule that keeps dem's writes out of user data.

Two spellings of one location (a relative and an absolute path, a path through a
symbolic link, ``file:///x`` and ``/x``) resolve to the same string, so that whether a
store lies inside another is decided on what the paths name, not on how they are typed.
"""

from __future__ import annotations

import os

from dem import storage


def resolved_location(location: str | os.PathLike[str]) -> str:
    """``location`` as one canonical string without credentials (:func:`dem.storage.location`):
    an absolute local path with symbolic links resolved, or ``scheme://host/path`` with
    the path normalised; ``file://`` URLs become local paths."""
    return storage.location(location)


def overlaps(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether the locations ``a`` and ``b`` are the same or one lies inside the other."""
    first, second = resolved_location(a), resolved_location(b)
    if first == second:
        return True
    separator = "/" if "://" in first or os.sep == "/" else os.sep
    return first.startswith(second.rstrip(separator) + separator) or second.startswith(
        first.rstrip(separator) + separator
    )


def source_location(source: str | None) -> str | None:
    """The store of an input's ``source`` (``"path::variable"``), or None for in-memory data."""
    if not source:
        return None
    return source.rsplit("::", 1)[0] if "::" in source else source


def resolved_source(source: str | None) -> str | None:
    """``source`` (``"path::variable"``) with its path resolved (see :func:`resolved_location`)."""
    store = source_location(source)
    if store is None or source is None:
        return source
    variable = source[len(store) :]
    return resolved_location(store) + variable


def check_apart(
    written: str | os.PathLike[str],
    what: str,
    inputs: dict[str, str],
    *,
    error: type[ValueError] = ValueError,
) -> None:
    """Refuse to write ``what`` at ``written`` when it overlaps an input store.

    ``inputs`` maps each input's name to its store's location. Raises ``error`` (a
    ValueError) naming both resolved paths and the fix.
    """
    for name, store in inputs.items():
        if overlaps(written, store):
            raise error(
                f"The {what} {resolved_location(written)!r} and the input store of {name!r} "
                f"({resolved_location(store)!r}) overlap (one is, or lies inside, the other); "
                f"dem never writes inside its input. Put the {what} outside the input store."
            )
