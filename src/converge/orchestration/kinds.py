"""Kinds of agents a graph's ``agents:`` section can declare, and how each is read from YAML.

```yaml
agents:
  writer: mypackage.agents:write                  # kind: python (the default)
  fast:   {kind: python, ref: "mypackage.agents:quick", inline: true}
  review: {kind: subgraph, graph: review.yaml, inputs: {code: analyzer.output}}
```

Each kind is a builder ``(options, KindContext) -> agent``: it checks its options (unknown
ones are refused, like every YAML key) and returns an object the engine runs as a node's agent
— usually one whose ``__call__(inputs, ctx)`` does the kind's work with ``ctx.services``.
``register_kind`` adds one (the coordination kinds — tender, team, board, consensus — register
themselves this way), declaring its options with a one-line doc each: ``kind_info(name)`` reads
them back, and ``converge.orchestration.yaml_reference`` writes them into the YAML reference.
An option that names a Python object (``module:attr``) is imported with
``ctx.reference(key, value)``, so every kind refuses the same malformed references, at the
agent's line (``object_refs``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from converge.errors import ValidationError
from converge.orchestration._agents import AgentSpec
from converge.orchestration.object_refs import check_object_ref, import_object_ref

__all__ = ["KindContext", "KindInfo", "kind_info", "kind_names", "read_kind", "register_kind"]


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
    """What a kind declared when it registered, for documentation.

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


_KINDS: dict[str, KindBuilder] = {}
_INFO: dict[str, KindInfo] = {}


def register_kind(
    name: str,
    builder: KindBuilder,
    *,
    options: Mapping[str, str] | None = None,
    required: Collection[str] = (),
    doc: str = "",
) -> None:
    """Make ``kind: name`` readable from YAML.

    Args:
        name: the kind.
        builder: ``(options, KindContext) -> agent``; it checks the options itself.
        options: the options it takes, each with a one-line doc (for the YAML reference).
        required: the options it cannot do without.
        doc: what an agent of this kind does, in one line.

    Raises:
        ValueError: ``required`` names an option that ``options`` does not declare.
    """
    declared = dict(options or {})
    unknown = [key for key in required if key not in declared]
    if unknown:
        raise ValueError(f"kind {name!r}: required options {unknown} are not declared")
    _KINDS[name] = builder
    _INFO[name] = KindInfo(name, doc, declared, required)


def kind_info(name: str) -> KindInfo:
    """What kind ``name`` declared when it registered.

    Raises:
        KeyError: no such kind.
    """
    _load_builtin()
    return _INFO[name]


def kind_names() -> list[str]:
    """The kinds YAML can declare."""
    _load_builtin()
    return sorted(_KINDS)


def read_kind(kind: str, options: Mapping[str, Any], ctx: KindContext) -> Any:
    """Build the agent of ``kind`` from ``options``.

    Raises:
        ValidationError: an unknown kind, or options the kind refuses.
    """
    _load_builtin()
    builder = _KINDS.get(kind)
    if builder is None:
        raise ctx.fail(f"unknown agent kind {kind!r}; known: {', '.join(sorted(_KINDS))}", "kind")
    return builder(options, ctx)


_PYTHON = {
    "ref": "``module:attr`` of the agent: an ``Agent`` (instance or class) or a callable "
    "``fn(inputs)`` / ``fn(inputs, ctx)``, async or not.",
    "inline": "``true``: run a sync callable on the event loop instead of the thread pool "
    "(default false).",
}


def _python(options: Mapping[str, Any], ctx: KindContext) -> Any:
    found = ctx.options(options, _PYTHON, required=("ref",))
    ref, inline = found["ref"], found.get("inline", False)
    # Only its form here: the module is imported when the graph is compiled.
    check_object_ref(ref, field=f"agents.{ctx.name}.ref", source=ctx.source, line=ctx.line)
    if not isinstance(inline, bool):
        raise ctx.fail(f"inline must be true or false, not {inline!r}", "inline")
    return AgentSpec(ref, inline=inline)


register_kind(
    "python",
    _python,
    options=_PYTHON,
    required=("ref",),
    doc="The default: an agent or callable named by ``module:attr`` (a bare string is this kind).",
)
_loaded = False


def _load_builtin() -> None:
    """Import the modules whose kinds register themselves (once, on first use)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    # Imported for their effect: each registers its kind.
    import converge.agents.roles._kinds  # worker, router, critic, supervisor, planner
    import converge.orchestration._patterns_steps  # "assign", "unknown_route"
    import converge.orchestration.board_node
    import converge.orchestration.consensus_gate
    import converge.orchestration.llm_kind  # "llm" (its SDKs load on first call, not here)
    import converge.orchestration.subgraph
    import converge.orchestration.team
    import converge.orchestration.tender  # noqa: F401
