"""Input references: graph inputs, node outputs and their parts.

``source_code`` (a graph input), ``analyzer.output`` (a node's output) and
``analyzer.output.summary`` / ``items.output.0`` (a part of it).

A node receives a dict keyed by each reference as written. Undotted references are graph
inputs, which must all be given (checked before the run starts); ``node.output[.key…]`` reads
an output. A node without ``inputs`` gets the outputs of the nodes with edges into it (an entry
node: the graph's inputs). A reference to something that is not there (a node that was
skipped, or has not run yet on a loop's first pass, or a key its output lacks) gives
``MISSING``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from converge.core.missing import MISSING, Missing
from converge.errors import ValidationError

__all__ = ["MISSING", "Halt", "Missing", "Ref", "parse_ref", "resolve_path"]

_SEGMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$|^[0-9]+$")


class Halt:
    """Returned by a node: "this is my output, and none of my edges is taken".

    A gate that did not open (a vote that failed) halts: its output is recorded as usual (and
    read by anyone who asks), but the nodes after it run only on account of other nodes. It is
    logged as ``status: halted`` and replayed the same on resume.

    Args:
        output: the node's output.
    """

    __slots__ = ("output",)

    def __init__(self, output: Any = None) -> None:
        self.output = output

    def __repr__(self) -> str:
        return f"Halt({self.output!r})"


class Ref(NamedTuple):
    """A parsed input reference."""

    text: str
    """As written; the key of the node's inputs dict."""
    node: str | None
    """The node whose output it reads; None for a graph input."""
    name: str
    """The graph input's name, or the node id."""
    path: tuple[str, ...]
    """Keys (or list indexes, as digits) below the output or the graph input."""


def parse_ref(
    text: object, *, field: str = "", source: str | None = None, line: int | None = None
) -> Ref:
    """Parse ``text`` as an input reference.

    Raises:
        ValidationError: not a reference: empty parts, a second part other than ``output``, or
            characters other than letters, digits, ``_`` and ``-``.
    """
    if not isinstance(text, str) or not text:
        raise ValidationError(
            f"an input reference is a non-empty string, not {text!r}",
            field=field,
            source=source,
            line=line,
        )
    parts = text.split(".")
    for part in parts:
        if not _SEGMENT.match(part):
            raise ValidationError(
                f"bad input reference {text!r}: {part!r} is not a name "
                "(letters, digits, '_', '-') or an index",
                field=field,
                source=source,
                line=line,
            )
    if len(parts) == 1:
        return Ref(text, None, text, ())
    if parts[1] != "output":
        raise ValidationError(
            f"bad input reference {text!r}: a node's output is read as "
            f"'{parts[0]}.output' (or '{parts[0]}.output.<key>'), not '.{parts[1]}'",
            field=field,
            source=source,
            line=line,
        )
    return Ref(text, parts[0], parts[0], tuple(parts[2:]))


def resolve_path(value: Any, path: tuple[str, ...]) -> Any:
    """``value`` followed down ``path`` (dict keys, list indexes); ``MISSING`` where it ends."""
    for key in path:
        if value is MISSING:
            return MISSING
        if isinstance(value, Mapping):
            value = value.get(key, MISSING)
        elif isinstance(value, (list, tuple)) and key.isdigit():
            index = int(key)
            value = value[index] if index < len(value) else MISSING
        else:
            value = getattr(value, key, MISSING) if not key.startswith("_") else MISSING
    return value
