"""Graphs in YAML, in the shape of seed 002 §4.1 plus the §7.2 ``execution`` block, per-node
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
rather than ignored: a misspelt ``on_eror`` would otherwise silently change nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

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

__all__ = ["load_graph", "loads_graph"]

T = TypeVar("T")

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
_constructor = yaml.SafeLoader(b"")


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
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError(f"cannot read graph file: {exc.strerror}", source=source) from None
    except UnicodeDecodeError:
        raise ValidationError("the graph file is not UTF-8 text", source=source) from None
    return loads_graph(text, source=source, agents=agents)


def loads_graph(
    text: str, *, source: str = "<string>", agents: Mapping[str, Any] | None = None
) -> Graph:
    """Read and validate a graph from YAML ``text`` (``source`` names it in errors)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ValidationError(
            f"invalid YAML: {exc.problem or exc.context}",
            source=source,
            line=None if mark is None else mark.line + 1,
        ) from None
    except yaml.YAMLError as exc:
        raise ValidationError(f"invalid YAML: {exc}", source=source) from None
    if root is None:
        raise ValidationError("the graph file is empty", source=source)
    reader = _Reader(source)
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


class _Reader:
    """Reads the composed YAML tree, checking shapes and keeping lines for errors."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, message: str, node: yaml.Node, field: str) -> ValidationError:
        return ValidationError(
            message, field=field or None, source=self.source, line=node.start_mark.line + 1
        )

    def is_null(self, node: yaml.Node) -> bool:
        return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"

    def mapping(
        self, node: yaml.Node, field: str, allowed: tuple[str, ...] | None
    ) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(f"{field or 'the graph'} must be a mapping", node, field)
        out: dict[str, yaml.Node] = {}
        for key_node, value in node.value:
            key = self.scalar(key_node, field)
            where = f"{field}.{key}" if field else str(key)
            if not isinstance(key, str):
                raise self.fail(f"keys are strings, not {key!r}", key_node, where)
            if key in out:
                raise self.fail(f"duplicate key {key!r}", key_node, where)
            if allowed is not None and key not in allowed:
                raise self.fail(
                    f"unknown key {key!r}; expected one of {', '.join(allowed)}", key_node, where
                )
            out[key] = value
        return out

    def sequence(self, node: yaml.Node, field: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(f"{field} must be a list", node, field)
        return list(node.value)

    def scalar(self, node: yaml.Node, field: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(f"{field} must be a single value, not a list or mapping", node, field)
        try:
            return _constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise self.fail(f"bad value: {exc}", node, field) from None

    def string(self, node: yaml.Node, field: str) -> str:
        value = self.scalar(node, field)
        if not isinstance(value, str) or not value:
            raise self.fail(f"{field} must be a non-empty string, not {value!r}", node, field)
        return value

    def strings(self, node: yaml.Node, field: str) -> tuple[str, ...]:
        """A string or a list of strings."""
        if isinstance(node, yaml.SequenceNode):
            return tuple(self.string(item, f"{field}[{i}]") for i, item in enumerate(node.value))
        return (self.string(node, field),)

    def number(self, node: yaml.Node, field: str) -> Any:
        value = self.scalar(node, field)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(f"{field} must be a number, not {value!r}", node, field)
        return value

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
        if "inputs" in raw and not self.is_null(raw["inputs"]):
            inputs = tuple(
                self.string(item, f"{field}.inputs[{i}]")
                for i, item in enumerate(self.sequence(raw["inputs"], f"{field}.inputs"))
            )
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
        )

    def edges(self, node: yaml.Node, field: str) -> list[Edge]:
        raw = self.mapping(node, field, _EDGE)
        for required in ("from", "to"):
            if required not in raw:
                raise self.fail(f"an edge needs `{required}`", node, f"{field}.{required}")
        when = self.string(raw["when"], f"{field}.when") if "when" in raw else None
        line = node.start_mark.line + 1
        return [
            Edge(source=src, target=dst, when=when, line=line, field=field)
            for src in self.strings(raw["from"], f"{field}.from")
            for dst in self.strings(raw["to"], f"{field}.to")
        ]

    def agent(self, node: yaml.Node, field: str, name: str, agents: Mapping[str, Any]) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return self.string(node, field)
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

    def plain(self, node: yaml.Node, field: str) -> Any:
        """A value as plain Python (mappings, lists, scalars)."""
        if isinstance(node, yaml.MappingNode):
            return {
                k: self.plain(v, f"{field}.{k}") for k, v in self.mapping(node, field, None).items()
            }
        if isinstance(node, yaml.SequenceNode):
            return [self.plain(v, f"{field}[{i}]") for i, v in enumerate(node.value)]
        return self.scalar(node, field)
