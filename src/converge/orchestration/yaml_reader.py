"""Reading YAML that may be hostile, at a cost bounded by its size.

The graph files and the ``converge agents run`` file.

``compose(text, source)`` parses a document into its node tree (PyYAML's safe loader: no
Python tags) under limits that make every file cost time and memory in proportion to its own
size; ``YamlReader`` then reads that tree, checking shapes and values and keeping the line of
each for errors. Every mistake is a ``ValidationError`` with the file (``source``), line and
key (``field``), never a traceback. The limits:

- **Aliases** (``*name``) are read as copies of the node they name, so a file of a few hundred
  bytes whose anchors nest aliases of aliases would stand for billions of nodes. Composing
  keeps each node's full size (aliases inside it counted at theirs) and refuses the file once
  its aliases stand for more than ``MAX_ALIAS_NODES`` nodes in all, at the alias that crossed
  it; nothing is ever expanded to count. An alias inside the node it names (a cycle) is refused.
- **Nesting** deeper than ``MAX_DEPTH`` (aliases counted at the depth they add) is refused as
  it is met, before anything recursive can overflow the stack; an open bracket past it is
  refused by the scanner itself, which checks every open one at each token.
- **Numbers**: an integer is a signed 64-bit one (what stores and the wire carry), and its text
  is at most ``MAX_NUMBER_TEXT`` characters (longer is out of range anyway: a 5,000-digit or a
  sexagesimal ``1:0:0:…`` integer is refused before Python converts it); a float is finite
  (``.inf`` and ``.nan`` are refused). Fields narrow these further (``_model``: counts,
  seconds up to ``MAX_SECONDS``).
- **Scalars** the safe constructor cannot build (``2001-02-31``, ``!!float abc``) are refused
  at their line, whatever Python raised. Every scalar is built by the reader's own constructor
  (PyYAML's caches each node it builds for its lifetime).

Composing overrides the safe loader's ``compose_node`` to keep each node's expanded size and
height, so an alias is priced when it is met, without expanding anything; aliases are still
read as copies (``YamlReader.plain`` hands a kind its own values), the cap bounding the copies.
A 500-byte "billion laughs" file (40 s and 1.16 GB before) is refused in about 3 ms at the alias
that crosses the cap. ``_model`` also caps ``RetryPolicy.delay``'s exponent (``2.0 ** 1024``
overflows). The limits are in the YAML reference, rendered from these constants.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import yaml
from yaml.composer import ComposerError
from yaml.error import Mark
from yaml.events import AliasEvent

from converge.errors import ValidationError
from converge.orchestration._model import MAX_SECONDS, describe

__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "MAX_NUMBER_TEXT",
    "YamlReader",
    "compose",
]

T = TypeVar("T")

MAX_ALIAS_NODES = 100_000
"""Nodes a file's aliases may stand for in all, each alias counted at the full size of the
node it names."""
MAX_DEPTH = 100
"""The deepest nesting of lists and mappings, aliases counted at the depth they add."""
MAX_NUMBER_TEXT = 200
"""The longest integer or float, in characters."""

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_NULL = "tag:yaml.org,2002:null"
_MIN_INT, _MAX_INT = -(2**63), 2**63 - 1


def compose(text: str, source: str) -> yaml.Node | None:
    """The node tree of the YAML document ``text`` (None when empty), within the limits.

    Raises:
        ValidationError: not valid YAML (one document), or past a limit; with ``source`` and
            the line.
    """
    loader = _Loader(text)
    try:
        node: yaml.Node | None = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = "" if isinstance(exc, _PastLimit) else "invalid YAML: "
        raise ValidationError(
            f"{what}{exc.problem or exc.context}",
            source=source,
            line=None if mark is None else mark.line + 1,
        ) from None
    except yaml.YAMLError as exc:
        raise ValidationError(f"invalid YAML: {exc}", source=source) from None
    finally:
        loader.dispose()
    return node


class _PastLimit(ComposerError):
    """Valid YAML past one of the limits."""


class _Loader(yaml.SafeLoader):
    """The safe loader, composing with the limits of the module doc.

    Each node's size (nodes in its expansion) and height (levels below it, itself included)
    are kept as it is composed, so an alias is priced at once, whatever it names.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.depth = 0
        self.alias_nodes = 0
        self.sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (size, height); done only

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        # The scanner keeps a possible key per open bracket and checks them all at every token:
        # refused here, ten thousand `[` cost what a hundred do.
        if self.flow_level >= MAX_DEPTH:
            message = f"nested deeper than {MAX_DEPTH} levels"
            raise _PastLimit(None, None, message, self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            target = self.anchors.get(event.anchor)
            if target is not None:  # else PyYAML's own "undefined alias" error
                self._price(event.anchor, target, event.start_mark)
            return super().compose_node(parent, index)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                message = f"nested deeper than {MAX_DEPTH} levels"
                raise _PastLimit(None, None, message, event.start_mark)
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        size, height = 1, 0
        for child in children:
            child_size, child_height = self.sizes[id(child)]
            size += child_size
            height = max(height, child_height)
        self.sizes[id(node)] = (size, height + 1)
        return node

    def _price(self, anchor: str, target: yaml.Node, mark: Mark) -> None:
        """Count what the alias ``*anchor`` stands for; refuse it past a limit."""
        done = self.sizes.get(id(target))
        if done is None:  # still being composed: the alias is inside the node it names
            raise ComposerError(
                None, None, f"alias *{anchor} is inside the node it names (a cycle)", mark
            )
        size, height = done
        self.alias_nodes += size
        if self.alias_nodes > MAX_ALIAS_NODES:
            raise _PastLimit(
                None,
                None,
                f"aliases stand for more than {MAX_ALIAS_NODES:,} nodes (at *{anchor}): an "
                "alias is a copy of what it names",
                mark,
            )
        if self.depth + height > MAX_DEPTH:
            raise _PastLimit(
                None, None, f"alias *{anchor} nests deeper than {MAX_DEPTH} levels", mark
            )


class YamlReader:
    """Reads a composed YAML tree, checking shapes and values and keeping lines for errors.

    Args:
        source: the file (or ``<string>``), named in every error.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        # A constructor of its own: PyYAML's caches every node it builds, for its lifetime.
        self._constructor = yaml.SafeLoader("")

    def fail(self, message: str, node: yaml.Node, field: str) -> ValidationError:
        """A ``ValidationError`` at ``node``'s line about ``field``."""
        return ValidationError(
            message, field=field or None, source=self.source, line=node.start_mark.line + 1
        )

    def is_null(self, node: yaml.Node) -> bool:
        """Whether ``node`` is ``null`` (or empty)."""
        return isinstance(node, yaml.ScalarNode) and node.tag == _NULL

    def mapping(
        self, node: yaml.Node, field: str, allowed: tuple[str, ...] | None
    ) -> dict[str, yaml.Node]:
        """A mapping's entries by key: string keys, no duplicates, each in ``allowed``
        (None: any)."""
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(f"{field or 'the file'} must be a mapping", node, field)
        out: dict[str, yaml.Node] = {}
        for key_node, value in node.value:
            key = self.scalar(key_node, field)
            where = f"{field}.{key}" if field else str(key)
            if not isinstance(key, str):
                raise self.fail(f"keys are strings, not {describe(key)}", key_node, where)
            if key in out:
                raise self.fail(f"duplicate key {describe(key)}", key_node, where)
            if allowed is not None and key not in allowed:
                raise self.fail(
                    f"unknown key {describe(key)}; expected one of {', '.join(allowed)}",
                    key_node,
                    where,
                )
            out[key] = value
        return out

    def sequence(self, node: yaml.Node, field: str) -> list[yaml.Node]:
        """A list's items."""
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(f"{field} must be a list", node, field)
        return list(node.value)

    def scalar(self, node: yaml.Node, field: str) -> Any:
        """A single value (string, number, bool, null, date…), numbers within range."""
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(f"{field} must be a single value, not a list or mapping", node, field)
        if node.tag in (_INT, _FLOAT) and len(node.value) > MAX_NUMBER_TEXT:
            raise self.fail(
                f"{field} is a number of {len(node.value):,} characters: out of range",
                node,
                field,
            )
        try:
            value = self._constructor.construct_object(node, deep=True)
        except Exception as exc:  # PyYAML's errors and Python's (a date that does not exist…)
            if isinstance(exc, yaml.MarkedYAMLError):
                detail = exc.problem or ""
            else:  # Python's own words only where they are about the value
                detail = str(exc) if isinstance(exc, (ValueError, ArithmeticError)) else ""
            kind = node.tag.rpartition(":")[2] if node.tag.startswith("tag:yaml.org") else node.tag
            message = f"{field}: {describe(node.value)} is not a valid {kind}"
            raise self.fail(f"{message}: {detail}" if detail else message, node, field) from None
        if isinstance(value, int) and not isinstance(value, bool):
            if not _MIN_INT <= value <= _MAX_INT:
                raise self.fail(
                    f"{field} is out of range: an integer fits in 64 bits "
                    f"({_MIN_INT:,} to {_MAX_INT:,})",
                    node,
                    field,
                )
        elif isinstance(value, float) and not math.isfinite(value):
            raise self.fail(f"{field} must be a finite number, not {value!r}", node, field)
        return value

    def string(self, node: yaml.Node, field: str) -> str:
        """A non-empty string."""
        value = self.scalar(node, field)
        if not isinstance(value, str) or not value:
            raise self.fail(
                f"{field} must be a non-empty string, not {describe(value)}", node, field
            )
        return value

    def strings(self, node: yaml.Node, field: str) -> tuple[str, ...]:
        """A string or a list of strings."""
        if isinstance(node, yaml.SequenceNode):
            return tuple(self.string(item, f"{field}[{i}]") for i, item in enumerate(node.value))
        return (self.string(node, field),)

    def number(self, node: yaml.Node, field: str) -> Any:
        """An int or a float (not a bool)."""
        value = self.scalar(node, field)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(f"{field} must be a number, not {describe(value)}", node, field)
        return value

    def seconds(self, node: yaml.Node, field: str) -> float:
        """A number of seconds, from 0 to ``MAX_SECONDS``."""
        value = self.number(node, field)
        if not 0 <= value <= MAX_SECONDS:
            raise self.fail(
                f"{field} must be a number of seconds >= 0 and <= {MAX_SECONDS:,.0f}, "
                f"not {value!r}",
                node,
                field,
            )
        return float(value)

    def build(
        self,
        cls: type[T],
        node: yaml.Node,
        field: str,
        values: dict[str, Any],
        keys: dict[str, yaml.Node] | None = None,
    ) -> T:
        """``cls(**values)``; its error is at ``node``, or at the key it names among ``keys``."""
        try:
            return cls(**values)
        except ValidationError as exc:
            if keys is not None and exc.field in keys:
                raise self.fail(str(exc), keys[exc.field], f"{field}.{exc.field}") from None
            raise self.fail(str(exc), node, field) from None

    def plain(self, node: yaml.Node, field: str) -> Any:
        """A value as plain Python (mappings, lists, scalars); an alias is read as a copy."""
        if isinstance(node, yaml.MappingNode):
            return {
                k: self.plain(v, f"{field}.{k}") for k, v in self.mapping(node, field, None).items()
            }
        if isinstance(node, yaml.SequenceNode):
            return [self.plain(v, f"{field}[{i}]") for i, v in enumerate(node.value)]
        return self.scalar(node, field)
