"""Kinds of agents a graph's ``agents:`` section can declare.

Each kind says how it is read from YAML.

```yaml
agents:
  writer: mypackage.agents:write                  # kind: python (the default)
  fast:   {kind: python, ref: "mypackage.agents:quick", inline: true}
  review: {kind: subgraph, graph: review.yaml, inputs: {code: analyzer.output}}
```

Each kind is a builder ``(options, KindContext) -> agent``: it checks its options (unknown
ones are refused, like every YAML key) and returns an object the engine runs as a node's agent
— usually one whose ``__call__(inputs, ctx)`` does the kind's work with ``ctx.services``.

Every kind converge ships is a module of this package that declares a ``Kind`` (its name,
builder, options with a one-line doc each, and what it does), and ``_builtin`` lists them all:
that table is the one place they are registered; importing a kind's module registers nothing.

- ``python`` (the default), ``subgraph``;
- the coordination kinds: ``tender`` (contract-net), ``team``, ``board`` (the task board),
  ``consensus`` (a vote);
- ``llm`` (an ``LLMAgent``) and the agent roles: ``worker``, ``router``, ``critic``,
  ``supervisor``, ``planner`` (``roles``);
- the checks the orchestration patterns add: ``assign``, ``unknown_route`` (``pattern_checks``).

The table is read on first use, so reading a graph file imports the kinds' modules (and the
coordination layer) only when one of its agents is a mapping (``{kind: ...}``).

``register_kind`` adds a kind of one's own (or replaces a built-in one of the same name, whether
it is called before or after the table is first read);
``kind_info(name)`` reads back what a kind declared, and
``converge.orchestration.yaml_reference`` writes it into the YAML reference. An option that
names a Python object (``module:attr``) is imported with ``ctx.reference(key, value)``, so
every kind refuses the same malformed references, at the agent's line (``object_refs``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from converge.errors import ValidationError
from converge.orchestration.object_refs import import_object_ref

__all__ = [
    "Kind",
    "KindContext",
    "KindInfo",
    "kind_info",
    "kind_names",
    "read_kind",
    "register_kind",
]


class KindContext:
    """Where a kind's options come from, for locating errors and relative paths.

    Attributes:
        name: the agent's name in ``agents:``.
        source: the YAML file (or ``<string>``).
        line: the line of the agent's entry.
        base: the directory relative paths are read from.
        agents: agents given to the loader by name (they also reach nested graphs).
    """

    def __init__(
        self,
        name: str,
        source: str,
        line: int | None,
        base: Path,
        agents: Mapping[str, Any],
    ) -> None:
        self.name = name
        self.source = source
        self.line = line
        self.base = base
        self.agents = agents

    def fail(self, message: str, key: str | None = None) -> ValidationError:
        """A ``ValidationError`` about option ``key`` of this agent."""
        field = f"agents.{self.name}" + (f".{key}" if key else "")
        return ValidationError(message, field=field, source=self.source, line=self.line)

    def reference(self, key: str, value: object) -> Any:
        """What option ``key``'s ``module:attr`` reference ``value`` names, imported
        (``object_refs.import_object_ref``: the module's top-level code runs).

        Raises:
            ValidationError: a malformed reference or one that cannot be imported, about
                option ``key`` of this agent.
        """
        field = f"agents.{self.name}.{key}"
        return import_object_ref(value, field=field, source=self.source, line=self.line, what=key)

    def options(
        self,
        options: Mapping[str, Any],
        allowed: Collection[str],
        required: Collection[str] = (),
    ) -> dict[str, Any]:
        """``options`` checked against ``allowed`` and ``required`` keys (``kind`` excluded)."""
        found = {k: v for k, v in options.items() if k != "kind"}
        for key in found:
            if key not in allowed:
                raise self.fail(
                    f"unknown option {key!r}; expected one of {', '.join(allowed)}", key
                )
        for key in required:
            if key not in found:
                raise self.fail(f"a {options.get('kind', 'python')} agent needs `{key}`", key)
        return found


KindBuilder = Callable[[Mapping[str, Any], KindContext], Any]


class KindInfo:
    """What a kind declares, for documentation (``kind_info``).

    Attributes:
        name: the kind (``kind: name``).
        doc: what an agent of this kind does, in one line.
        options: each option's name and one-line doc, in the order the kind lists them.
        required: the options an agent of this kind must set.
    """

    __slots__ = ("doc", "name", "options", "required")

    def __init__(
        self, name: str, doc: str, options: Mapping[str, str], required: Collection[str]
    ) -> None:
        self.name = name
        self.doc = doc
        self.options = dict(options)
        self.required = tuple(required)

    def __repr__(self) -> str:
        return f"KindInfo({self.name!r}, options={list(self.options)!r})"


class Kind:
    """A node kind: how it builds its agent, and what it declares for the YAML reference.

    Args:
        name: the kind (``kind: name``).
        builder: ``(options, KindContext) -> agent``; it checks the options itself.
        options: the options it takes, each with a one-line doc.
        required: the options it cannot do without.
        doc: what an agent of this kind does, in one line.

    Raises:
        ValueError: ``required`` names an option that ``options`` does not declare.
    """

    __slots__ = ("builder", "info")

    def __init__(
        self,
        name: str,
        builder: KindBuilder,
        *,
        options: Mapping[str, str] | None = None,
        required: Collection[str] = (),
        doc: str = "",
    ) -> None:
        declared = dict(options or {})
        unknown = [key for key in required if key not in declared]
        if unknown:
            raise ValueError(f"kind {name!r}: required options {unknown} are not declared")
        self.builder = builder
        self.info = KindInfo(name, doc, declared, required)

    @property
    def name(self) -> str:
        """The kind (``kind: name``)."""
        return self.info.name

    def __repr__(self) -> str:
        return f"Kind({self.name!r})"


@functools.cache
def _builtin() -> dict[str, Kind]:
    """The kinds converge ships, by name: the one table that registers them.

    Read on first use rather than when this module is imported: the coordination kinds import
    the coordination layer, and ``llm`` and the roles import ``converge.agents``.
    """
    from converge.orchestration.kinds import (
        board,
        consensus,
        llm,
        pattern_checks,
        python,
        roles,
        subgraph,
        team,
        tender,
    )

    table = (
        python.KIND,
        subgraph.KIND,
        tender.KIND,
        team.KIND,
        board.KIND,
        consensus.KIND,
        llm.KIND,
        roles.WORKER,
        roles.ROUTER,
        roles.CRITIC,
        roles.SUPERVISOR,
        roles.PLANNER,
        pattern_checks.ASSIGN,
        pattern_checks.UNKNOWN_ROUTE,
    )
    return {kind.name: kind for kind in table}


_registered: dict[str, Kind] = {}
"""The kinds ``register_kind`` added; one named like a built-in kind replaces it."""


def register_kind(
    name: str,
    builder: KindBuilder,
    *,
    options: Mapping[str, str] | None = None,
    required: Collection[str] = (),
    doc: str = "",
) -> None:
    """Make ``kind: name`` readable from YAML (replacing a built-in kind of that name).

    Args:
        name: the kind.
        builder: ``(options, KindContext) -> agent``; it checks the options itself.
        options: the options it takes, each with a one-line doc (for the YAML reference).
        required: the options it cannot do without.
        doc: what an agent of this kind does, in one line.

    Raises:
        ValueError: ``required`` names an option that ``options`` does not declare.
    """
    _registered[name] = Kind(name, builder, options=options, required=required, doc=doc)


def _kind(name: str) -> Kind | None:
    return _registered.get(name) or _builtin().get(name)


def kind_info(name: str) -> KindInfo:
    """What kind ``name`` declared when it registered.

    Raises:
        KeyError: no such kind.
    """
    kind = _kind(name)
    if kind is None:
        raise KeyError(name)
    return kind.info


def kind_names() -> list[str]:
    """The kinds YAML can declare."""
    return sorted({*_builtin(), *_registered})


def read_kind(kind: str, options: Mapping[str, Any], ctx: KindContext) -> Any:
    """Build the agent of ``kind`` from ``options``.

    Raises:
        ValidationError: an unknown kind, or options the kind refuses.
    """
    found = _kind(kind)
    if found is None:
        raise ctx.fail(f"unknown agent kind {kind!r}; known: {', '.join(kind_names())}", "kind")
    return found.builder(options, ctx)
