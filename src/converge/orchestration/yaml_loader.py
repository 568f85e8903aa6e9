"""Graphs read from YAML files.

Graphs in YAML: nodes and edges, ``config`` and ``execution`` blocks, per-node
policies, conditional edges and an ``agents`` section.

```yaml
name: review
nodes:
  - id: analyzer
    agent: code_analyzer
    inputs: [source_code]
    timeout: 30            # seconds; also: retry, on_error, fallback
  - id: reporter
    agent: report_generator
    inputs: [analyzer.output]
edges:
  - from: analyzer
    to: reporter
    when: analyzer.output.ok    # optional condition
config: {max_iterations: 20, timeout_seconds: 300, checkpoint_enabled: true}
execution: {max_concurrent_agents: 10, retry_policy: {max_retries: 3, backoff: exponential}}
agents:
  code_analyzer: mypackage.agents:analyze          # module:attr, a callable or an Agent
  report_generator: {ref: mypackage.agents:report, inline: true}
```

Every mistake is a ``ValidationError`` carrying the file (``source``), the line and the key
(``field``, e.g. ``nodes[1].inputs[0]``); YAML syntax errors too. Unknown keys are refused
rather than ignored: a misspelt ``on_eror`` would otherwise silently change nothing. The file
is read by ``yaml_reader`` (its limits on aliases, nesting and numbers apply), and every
``module:attr`` is checked by ``object_refs`` as it is read.

Graph files that read others (``kind: subgraph``) are read once per outermost load: a file
named twice, anywhere below, is one ``Graph``, so nested files cost what they contain, not the
number of paths to them. A file that names itself, directly or through others, is a cycle,
refused with its chain of files (``reading()`` and ``nesting_problem()`` tell a kind that reads
graph files where it stands), and files nest at most ``MAX_NESTING`` deep.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import yaml

from converge.errors import ValidationError
from converge.orchestration._model import (
    Edge,
    ExecutionConfig,
    GraphConfig,
    Node,
    NodePolicy,
    RetryPolicy,
)
from converge.orchestration.graph import Graph
from converge.orchestration.kinds import KindContext, read_kind
from converge.orchestration.object_refs import check_object_ref
from converge.orchestration.yaml_reader import YamlReader, compose

__all__ = ["MAX_NESTING", "load_graph", "loads_graph", "nesting_problem", "reading"]

MAX_NESTING = 16
"""The deepest chain of graph files reading one another (``kind: subgraph``), the first one
included."""

_SCOPES = ("request", "session", "agent", "graph", "global")
_TOP = ("name", "description", "nodes", "edges", "config", "execution", "agents", "grants")
_NODE = ("id", "agent", "inputs", "parallel_group", "wait_for", "timeout", "retry", "on_error",
         "fallback")  # fmt: skip
_EDGE = ("from", "to", "when")
_CONFIG = ("max_iterations", "timeout_seconds", "checkpoint_enabled")
_EXECUTION = (
    "max_concurrent_agents",
    "max_tokens_per_agent",
    "max_tool_calls_per_agent",
    "timeout_per_agent_seconds",
    "total_timeout_seconds",
    "retry_policy",
)
_RETRY = ("max_retries", "backoff", "initial_delay", "max_delay")


class _Reading:
    """One outermost load: the graph files being read, and the graphs read, by file."""

    def __init__(self) -> None:
        self.files: list[Path | None] = []  # outermost first; None: text that is not a file
        self.graphs: dict[Path, tuple[dict[str, Any], Graph]] = {}  # with the agents given


_READING: ContextVar[_Reading | None] = ContextVar("converge_graph_reading", default=None)


def reading() -> tuple[Path, ...]:
    """The graph files being read right now, outermost first (empty outside a load)."""
    current = _READING.get()
    return () if current is None else tuple(f for f in current.files if f is not None)


def nesting_problem(path: str | os.PathLike[str]) -> str | None:
    """Why the graph file ``path`` cannot be read from the one being read now, if it cannot:
    it is being read already (a cycle, named by its chain of files), or it would nest deeper
    than ``MAX_NESTING``."""
    chain = reading()
    file = _file(path)
    if file in chain:
        cycle = [*chain[chain.index(file) :], file]
        return f"graph files read each other in a cycle: {' -> '.join(map(_shown, cycle))}"
    if len(chain) >= MAX_NESTING:
        return f"graph files nest deeper than {MAX_NESTING}: {' -> '.join(map(_shown, chain))}"
    return None


def _file(path: str | os.PathLike[str]) -> Path:
    """The file ``path`` names, the same however it is spelt (links, ``..``)."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):  # a link loop: the path as given, made absolute
        return Path(os.path.abspath(path))


def _shown(path: Path) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)
    return str(path) if relative.startswith(os.pardir) else relative


def load_graph(path: str | os.PathLike[str], *, agents: Mapping[str, Any] | None = None) -> Graph:
    """Read and validate the graph in the YAML file at ``path``.

    Args:
        path: the file.
        agents: agents by name, added to (and overriding) the file's ``agents`` section.

    Raises:
        ValidationError: the file cannot be read, is not valid YAML, or does not describe a
            valid graph (with the file, line and key).
    """
    source = str(path)
    outer = _READING.get()
    if outer is not None:  # read from another graph file (a subgraph)
        problem = nesting_problem(path)
        if problem is not None:
            here = reading()
            raise ValidationError(problem, source=str(here[-1]) if here else None)
        done = outer.graphs.get(_file(path))
        if done is not None and _same(done[0], agents or {}):
            return done[1]
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError(f"cannot read graph file: {exc.strerror}", source=source) from None
    except UnicodeDecodeError:
        raise ValidationError("the graph file is not UTF-8 text", source=source) from None
    graph = loads_graph(text, source=source, agents=agents)
    if outer is not None:
        outer.graphs[_file(path)] = (dict(agents or {}), graph)
    return graph


def _same(given: Mapping[str, Any], agents: Mapping[str, Any]) -> bool:
    """Whether two ``agents`` arguments give the same objects (by identity: agents need not
    compare)."""
    return len(given) == len(agents) and all(
        key in agents and agents[key] is value for key, value in given.items()
    )


def loads_graph(
    text: str, *, source: str = "<string>", agents: Mapping[str, Any] | None = None
) -> Graph:
    """Read and validate a graph from YAML ``text`` (``source`` names it in errors)."""
    outer = _READING.get()
    current = _Reading() if outer is None else outer
    token = _READING.set(current) if outer is None else None
    current.files.append(None if source == "<string>" else _file(source))
    try:
        return _read(text, source, agents)
    finally:
        current.files.pop()
        if token is not None:
            _READING.reset(token)


def _read(text: str, source: str, agents: Mapping[str, Any] | None) -> Graph:
    root = compose(text, source)
    if root is None:
        raise ValidationError("the graph file is empty", source=source)
    reader = _GraphReader(source)
    top = reader.mapping(root, "", _TOP)
    name = reader.string(top["name"], "name") if "name" in top else None
    if name is None:
        raise ValidationError("a graph needs a `name`", field="name", source=source, line=1)
    graph = Graph(
        name,
        description=reader.string(top["description"], "description")
        if "description" in top
        else "",
        config=reader.config(top.get("config")),
        execution=reader.execution(top.get("execution")),
        source=source,
    )
    if "nodes" not in top:
        raise ValidationError("a graph needs `nodes`", field="nodes", source=source, line=1)
    for i, item in enumerate(reader.sequence(top["nodes"], "nodes")):
        graph._add(reader.node(item, f"nodes[{i}]"))
    if "edges" in top and not reader.is_null(top["edges"]):
        for i, item in enumerate(reader.sequence(top["edges"], "edges")):
            graph._edges.extend(reader.edges(item, f"edges[{i}]"))
    if "agents" in top and not reader.is_null(top["agents"]):
        for key, value in reader.mapping(top["agents"], "agents", None).items():
            graph.agents[key] = reader.agent(value, f"agents.{key}", key, agents or {})
            graph._agent_lines[key] = (value.start_mark.line + 1, graph.agents[key])
    graph.agents.update(agents or {})
    if "grants" in top and not reader.is_null(top["grants"]):
        for key, value in reader.mapping(top["grants"], "grants", None).items():
            graph.grants[key] = reader.grants(value, f"grants.{key}")
    graph.compile()
    return graph


class _GraphReader(YamlReader):
    """Reads a graph's parts from the composed YAML tree."""

    def retry(self, node: yaml.Node, field: str) -> RetryPolicy:
        if isinstance(node, yaml.ScalarNode):  # `retry: 3`
            count = self.number(node, field)
            return self.build(RetryPolicy, node, field, {"max_retries": count})
        values: dict[str, Any] = {}
        for key, value in self.mapping(node, field, _RETRY).items():
            where = f"{field}.{key}"
            values[key] = (
                self.string(value, where) if key == "backoff" else self.number(value, where)
            )
        return self.build(RetryPolicy, node, field, values)

    def config(self, node: yaml.Node | None) -> GraphConfig:
        if node is None or self.is_null(node):
            return GraphConfig()
        values: dict[str, Any] = {}
        for key, value in self.mapping(node, "config", _CONFIG).items():
            values[key] = self.scalar(value, f"config.{key}")
        return self.build(GraphConfig, node, "config", values)

    def execution(self, node: yaml.Node | None) -> ExecutionConfig:
        if node is None or self.is_null(node):
            return ExecutionConfig()
        values: dict[str, Any] = {}
        for key, value in self.mapping(node, "execution", _EXECUTION).items():
            field = f"execution.{key}"
            values[key] = (
                self.retry(value, field) if key == "retry_policy" else self.scalar(value, field)
            )
        return self.build(ExecutionConfig, node, "execution", values)

    def node(self, node: yaml.Node, field: str) -> Node:
        raw = self.mapping(node, field, _NODE)
        for required in ("id", "agent"):
            if required not in raw:
                raise self.fail(f"a node needs `{required}`", node, f"{field}.{required}")
        policy: dict[str, Any] = {}
        if "timeout" in raw:
            policy["timeout"] = self.number(raw["timeout"], f"{field}.timeout")
        if "retry" in raw:
            policy["retry"] = self.retry(raw["retry"], f"{field}.retry")
        for key in ("on_error", "fallback"):
            if key in raw:
                policy[key] = self.string(raw[key], f"{field}.{key}")
        inputs = None
        lines = [(key, value.start_mark.line + 1) for key, value in raw.items()]
        if "inputs" in raw and not self.is_null(raw["inputs"]):
            items = self.sequence(raw["inputs"], f"{field}.inputs")
            inputs = tuple(
                self.string(item, f"{field}.inputs[{i}]") for i, item in enumerate(items)
            )
            lines += [(f"inputs[{i}]", item.start_mark.line + 1) for i, item in enumerate(items)]
        if "wait_for" in raw and isinstance(raw["wait_for"], yaml.SequenceNode):
            lines += [
                (f"wait_for[{i}]", item.start_mark.line + 1)
                for i, item in enumerate(raw["wait_for"].value)
            ]
        return Node(
            id=self.string(raw["id"], f"{field}.id"),
            agent=self.string(raw["agent"], f"{field}.agent"),
            inputs=inputs,
            parallel_group=(
                self.string(raw["parallel_group"], f"{field}.parallel_group")
                if "parallel_group" in raw
                else None
            ),
            wait_for=self.strings(raw["wait_for"], f"{field}.wait_for")
            if "wait_for" in raw
            else (),
            policy=self.build(NodePolicy, node, field, policy),
            line=node.start_mark.line + 1,
            field=field,
            lines=tuple(lines),
        )

    def edges(self, node: yaml.Node, field: str) -> list[Edge]:
        raw = self.mapping(node, field, _EDGE)
        for required in ("from", "to"):
            if required not in raw:
                raise self.fail(f"an edge needs `{required}`", node, f"{field}.{required}")
        when = self.string(raw["when"], f"{field}.when") if "when" in raw else None
        line = node.start_mark.line + 1
        lines = tuple((key, value.start_mark.line + 1) for key, value in raw.items())
        return [
            Edge(source=src, target=dst, when=when, line=line, field=field, lines=lines)
            for src in self.strings(raw["from"], f"{field}.from")
            for dst in self.strings(raw["to"], f"{field}.to")
        ]

    def agent(self, node: yaml.Node, field: str, name: str, agents: Mapping[str, Any]) -> Any:
        if isinstance(node, yaml.ScalarNode):
            ref = self.string(node, field)
            if name not in agents:  # else replaced: never imported
                # Only its form here: the module is imported when the graph is compiled.
                line = node.start_mark.line + 1
                check_object_ref(ref, field=field, source=self.source, line=line)
            return ref
        raw = self.mapping(node, field, None)
        kind = self.string(raw["kind"], f"{field}.kind") if "kind" in raw else "python"
        options = {key: self.plain(value, f"{field}.{key}") for key, value in raw.items()}
        base = Path(self.source).parent if self.source != "<string>" else Path.cwd()
        ctx = KindContext(name, self.source, node.start_mark.line + 1, base, agents)
        return read_kind(kind, options, ctx)

    def grants(self, node: yaml.Node, field: str) -> dict[str, dict[str, list[str]]]:
        """An agent's grants: ``{read: {scope: [key pattern...]}, write: {...}}``."""
        raw = self.mapping(node, field, ("read", "write"))
        out: dict[str, dict[str, list[str]]] = {}
        for access, scopes in raw.items():
            out[access] = {}
            for scope, keys in self.mapping(scopes, f"{field}.{access}", _SCOPES).items():
                out[access][scope] = list(self.strings(keys, f"{field}.{access}.{scope}"))
        return out
