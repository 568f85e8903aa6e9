"""Checking a graph as a whole; the plan the engine runs.

Everything a run could trip over is refused here, before anything runs, with a
``ValidationError`` that names the file, line and key for YAML: duplicate or malformed ids,
unknown agents, nodes, groups and fallback agents, inputs that nothing produces, edges that
contradict the inputs, bad conditions, and a cycle without ``config.max_iterations``.

**Edges.** A node's incoming edges are its explicit edges (``edges:`` or ``connect``; a
parallel group stands for each of its members), plus one from each member of every group (or
node) it ``wait_for``s. A node with no explicit incoming edge gets one from each node its
inputs read. A node *with* explicit incoming edges must have one from every node its inputs
read: an input from a node that no edge brings in contradicts the edges.

**Cycles.** Edges are classified by a depth-first walk from the entry nodes in declaration
order: an edge into a node still on the walk's stack is a *back* edge (it closes a loop). A
node's first run waits for its forward edges only; a back edge, when taken, runs it again.
``max_iterations`` bounds the passes of any node, so a graph with a cycle must set it. A run is
resumed only by a graph with the same ``fingerprint`` (a digest of nodes, edges, policies and
limits).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from converge.core.spelling import did_you_mean
from converge.errors import ValidationError
from converge.orchestration._agents import NodeAgent, resolve_agent
from converge.orchestration._expr import Expression, parse_expression
from converge.orchestration._model import (
    Edge,
    ExecutionConfig,
    GraphConfig,
    Node,
    OnError,
    RetryPolicy,
)
from converge.orchestration._refs import Ref, parse_ref

__all__ = ["ExecutionPlan", "PlanEdge", "PlanNode", "build_plan"]

_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class PlanEdge:
    """An edge as the engine follows it.

    ``back`` closes a loop; ``leaves_loop`` leaves a loop (its source is on a cycle, its target
    is not on the same one): a loop exit that is not taken on one pass may be taken on the next,
    so "not taken" becomes final only once the loop has stopped.
    """

    __slots__ = ("back", "index", "leaves_loop", "source", "target", "when")

    def __init__(
        self, index: int, source: int, target: int, when: Expression | None, back: bool
    ) -> None:
        self.index = index
        self.source = source
        self.target = target
        self.when = when
        self.back = back
        self.leaves_loop = False


class PlanNode:
    """A node as the engine runs it: resolved agent, effective policy, edges by index."""

    __slots__ = (
        "agent",
        "cyclic",
        "fallback",
        "forward_in",
        "id",
        "in_edges",
        "index",
        "inputs",
        "loop",
        "node",
        "on_error",
        "out",
        "outside_in",
        "retry",
        "timeout",
    )

    def __init__(self, index: int, node: Node, agent: NodeAgent) -> None:
        self.index = index
        self.id = node.id
        self.node = node
        self.agent = agent
        self.fallback: NodeAgent | None = None
        self.inputs: list[Ref] = []
        self.timeout: float | None = None
        self.retry = RetryPolicy()
        self.on_error: OnError = node.policy.on_error
        self.out: list[PlanEdge] = []
        self.in_edges: list[PlanEdge] = []
        self.forward_in = 0
        """Forward edges into it: its first run waits for each to be taken or not."""
        self.loop = index
        """Its strongly connected component (nodes on one cycle share it)."""
        self.cyclic = False
        """Whether it is on a cycle."""
        self.outside_in = 0
        """Forward edges into it from outside its loop: on a later pass they count as taken."""


class ExecutionPlan:
    """A validated graph, ready to run."""

    __slots__ = (
        "_shape",
        "by_id",
        "checkpoint",
        "edges",
        "execution",
        "fingerprint",
        "graph_inputs",
        "has_cycle",
        "max_iterations",
        "name",
        "nodes",
        "sinks",
        "timeout",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[PlanNode] = []
        self.edges: list[PlanEdge] = []
        self.by_id: dict[str, PlanNode] = {}
        self.sinks: list[PlanNode] = []
        self.graph_inputs: frozenset[str] = frozenset()
        self.has_cycle = False
        self.max_iterations: int | None = None
        self.timeout: float | None = None
        self.checkpoint = True
        self.execution = ExecutionConfig()
        self.fingerprint = ""
        self._shape: dict[str, Any] | None = None

    @property
    def shape(self) -> dict[str, Any]:
        """The graph as drawn from its log: its nodes and edges as plain data, logged in the
        ``run.started`` of each run (``records``), so a trace shows the edges into a join and
        the nodes of a branch not taken, which no event of theirs names (made once per plan).

        ``{"nodes": [{"id", "agent", "inputs"}], "edges": [{"from", "to", "when", "back"}]}``:
        ``inputs`` is None for an entry node that gets the graph's inputs, else each reference
        the node reads, ``{"ref": "a.output.x", "node": "a", "path": ["x"]}`` or ``{"ref":
        "topic", "input": "topic", "path": []}``; ``when`` is the edge's condition as written
        (None: always taken); ``back`` says it closes a loop.
        """
        if self._shape is None:
            nodes = [
                {
                    "id": n.id,
                    "agent": n.agent.name,
                    "inputs": None
                    if n.node.inputs is None and n.forward_in == 0 and not n.inputs
                    else [
                        {"ref": r.text, "input": r.name, "path": list(r.path)}
                        if r.node is None
                        else {"ref": r.text, "node": r.node, "path": list(r.path)}
                        for r in n.inputs
                    ],
                }
                for n in self.nodes
            ]
            edges = [
                {
                    "from": self.nodes[e.source].id,
                    "to": self.nodes[e.target].id,
                    "when": None if e.when is None else e.when.source,
                    "back": e.back,
                }
                for e in self.edges
            ]
            self._shape = {"nodes": nodes, "edges": edges}
        return self._shape


def build_plan(
    name: str,
    nodes: list[Node],
    edges: list[Edge],
    agents: Mapping[str, Any],
    config: GraphConfig,
    execution: ExecutionConfig,
    *,
    source: str | None = None,
    agent_lines: Mapping[str, int] | None = None,
) -> ExecutionPlan:
    """Check the graph and build its plan (``agent_lines``: where ``source`` defines agents).

    Raises:
        ValidationError: the first problem found, located as precisely as the input allows.
    """
    if not nodes:
        raise ValidationError(f"graph {name!r} has no nodes", field="nodes", source=source)
    plan = ExecutionPlan(name)
    plan.checkpoint = config.checkpoint_enabled
    plan.execution = execution
    plan.max_iterations = config.max_iterations
    timeouts = [t for t in (config.timeout_seconds, execution.total_timeout_seconds) if t]
    plan.timeout = min(timeouts) if timeouts else None

    resolved: dict[str, NodeAgent] = {}

    def agent_named(agent_name: str, where: Node, key: str) -> NodeAgent:
        if agent_name not in resolved:
            if agent_name not in agents:
                known = ", ".join(sorted(agents)) or "none"
                raise ValidationError(
                    f"node {where.id!r} names agent {agent_name!r}, which the graph does not "
                    f"define{did_you_mean(agent_name, agents)} (agents: {known})",
                    field=f"{where.field or 'node ' + where.id}.{key}",
                    source=source,
                    line=where.line_of(key),
                )
            resolved[agent_name] = resolve_agent(
                agent_name,
                agents[agent_name],
                source=source,
                line=(agent_lines or {}).get(agent_name),
            )
        return resolved[agent_name]

    groups: dict[str, list[str]] = {}
    for node in nodes:
        where = node.field or f"node {node.id!r}"
        if not isinstance(node.id, str) or not _ID.match(node.id):
            raise ValidationError(
                f"node id {node.id!r} is not a name (a letter or '_', then letters, digits, "
                "'_' or '-')",
                field=f"{where}.id",
                source=source,
                line=node.line_of("id"),
            )
        if node.id in plan.by_id:
            raise ValidationError(
                f"duplicate node id {node.id!r}",
                field=f"{where}.id",
                source=source,
                line=node.line_of("id"),
            )
        planned = PlanNode(len(plan.nodes), node, agent_named(node.agent, node, "agent"))
        if node.policy.fallback is not None:
            planned.fallback = agent_named(node.policy.fallback, node, "fallback")
        planned.retry = node.policy.retry or execution.retry_policy
        planned.timeout = node.policy.timeout or execution.timeout_per_agent_seconds
        plan.nodes.append(planned)
        plan.by_id[node.id] = planned
        if node.parallel_group is not None:
            groups.setdefault(node.parallel_group, []).append(node.id)
    for group in groups:
        if group in plan.by_id:
            first = groups[group][0]
            raise ValidationError(
                f"parallel group {group!r} has the name of a node",
                field=f"node {first!r}.parallel_group",
                source=source,
                line=plan.by_id[first].node.line,
            )

    def members(ref: str, field: str, line: int | None) -> list[str]:
        if ref in plan.by_id:
            return [ref]
        if ref in groups:
            return groups[ref]
        raise ValidationError(
            f"{ref!r} is neither a node nor a parallel group"
            + did_you_mean(ref, [*plan.by_id, *groups]),
            field=field,
            source=source,
            line=line,
        )

    # Explicit edges, then wait_for, then edges implied by inputs; ``implied`` keeps the line
    # of what implied each edge that is not written, to point at it should it close a cycle.
    incoming: dict[str, dict[str, Edge | None]] = {n.id: {} for n in nodes}
    implied: dict[tuple[str, str], tuple[int | None, str]] = {}
    explicit: set[str] = set()
    for i, edge in enumerate(edges):
        where = edge.field or f"edges[{i}]"
        for src in members(edge.source, f"{where}.from", edge.line_of("from")):
            for dst in members(edge.target, f"{where}.to", edge.line_of("to")):
                incoming[dst][src] = edge
                explicit.add(dst)
    graph_inputs: set[str] = set()
    for planned in plan.nodes:
        node = planned.node
        where = node.field or f"node {node.id!r}"
        for j, group in enumerate(node.wait_for):
            line = node.line_of(f"wait_for[{j}]")
            for src in members(group, f"{where}.wait_for[{j}]", line):
                if src == node.id:
                    raise ValidationError(
                        f"node {node.id!r} waits for itself",
                        field=f"{where}.wait_for[{j}]",
                        source=source,
                        line=line,
                    )
                if src not in incoming[node.id]:
                    incoming[node.id][src] = None
                    implied[(src, node.id)] = (line, f"{where}.wait_for[{j}]")
        refs = _input_refs(planned, incoming, source)
        planned.inputs = refs
        for j, ref in enumerate(refs):
            field = f"{where}.inputs[{j}]"
            line = node.line_of(f"inputs[{j}]")
            if ref.node is None:
                graph_inputs.add(ref.name)
                continue
            if ref.node not in plan.by_id:
                raise ValidationError(
                    f"input {ref.text!r} of node {node.id!r}: no node {ref.node!r} produces it"
                    + did_you_mean(ref.node, plan.by_id),
                    field=field,
                    source=source,
                    line=line,
                )
            if ref.node in incoming[node.id]:
                continue
            if node.id in explicit:
                raise ValidationError(
                    f"node {node.id!r} reads {ref.text!r}, but no edge from {ref.node!r} "
                    f"leads to it: the edges contradict its inputs",
                    field=field,
                    source=source,
                    line=line,
                )
            incoming[node.id][ref.node] = None
            implied[(ref.node, node.id)] = (line, field)
    plan.graph_inputs = frozenset(graph_inputs)

    _link(plan, incoming, implied, source)
    plan.fingerprint = _fingerprint(name, nodes, edges, config, execution)
    return plan


def _input_refs(
    planned: PlanNode, incoming: dict[str, dict[str, Edge | None]], source: str | None
) -> list[Ref]:
    node = planned.node
    where = node.field or f"node {node.id!r}"
    if node.inputs is not None:
        return [
            parse_ref(
                text, field=f"{where}.inputs[{j}]", source=source, line=node.line_of(f"inputs[{j}]")
            )
            for j, text in enumerate(node.inputs)
        ]
    # Not written: the outputs of the nodes with edges into it (none for an entry node, which
    # gets the graph's inputs: see the engine).
    return [parse_ref(f"{src}.output") for src in incoming[node.id]]


def _link(
    plan: ExecutionPlan,
    incoming: dict[str, dict[str, Edge | None]],
    implied: Mapping[tuple[str, str], tuple[int | None, str]],
    source: str | None,
) -> None:
    """Create the plan's edges, classify back edges, find sinks, and check cycles (a cycle
    without ``max_iterations`` is reported at its back edge: the edge as written, or the input
    or ``wait_for`` entry that implied it)."""
    out: dict[str, list[tuple[str, Edge | None]]] = {n.id: [] for n in plan.nodes}
    for dst, sources in incoming.items():
        for src, edge in sources.items():
            out[src].append((dst, edge))
    back: set[tuple[str, str]] = set()
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    roots = [n.id for n in plan.nodes if not incoming[n.id]] + [n.id for n in plan.nodes]
    for root in roots:
        if root in state:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        state[root] = 1
        while stack:
            current, i = stack[-1]
            if i < len(out[current]):
                stack[-1] = (current, i + 1)
                nxt = out[current][i][0]
                if state.get(nxt) == 1:
                    back.add((current, nxt))
                elif nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, 0))
            else:
                state[current] = 2
                stack.pop()
    compiled: dict[str, Expression] = {}
    for src, targets in out.items():
        planned = plan.by_id[src]
        for dst, edge in targets:
            when = None
            if edge is not None and edge.when is not None:
                when = compiled.get(edge.when)
                if when is None:
                    when = _condition(plan, edge, source)
                    compiled[edge.when] = when
            is_back = (src, dst) in back
            target = plan.by_id[dst]
            edge_ = PlanEdge(len(plan.edges), planned.index, target.index, when, is_back)
            plan.edges.append(edge_)
            planned.out.append(edge_)
            target.in_edges.append(edge_)
            if not is_back:
                target.forward_in += 1
    _loops(plan)
    plan.sinks = [n for n in plan.nodes if not n.out]
    plan.has_cycle = bool(back)
    if back and plan.max_iterations is None:
        src, dst = sorted(back, key=lambda e: (plan.by_id[e[0]].index, plan.by_id[e[1]].index))[0]
        written = incoming[dst][src]
        line, field = (written.line, written.field) if written is not None else implied[(src, dst)]
        where = f" ({field})" if field else ""
        raise ValidationError(
            f"the edge {src} -> {dst}{where} closes a cycle: a graph with a cycle needs "
            "config.max_iterations to bound it",
            field="config.max_iterations",
            source=source,
            line=line if line is not None else plan.by_id[dst].node.line,
        )


def _loops(plan: ExecutionPlan) -> None:
    """Find the strongly connected components (Tarjan, iterative) and mark loop edges."""
    index_of: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    counter = 0
    for root in range(len(plan.nodes)):
        if root in index_of:
            continue
        work: list[tuple[int, int]] = [(root, 0)]
        while work:
            v, i = work[-1]
            if i == 0:
                index_of[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack.add(v)
            out = plan.nodes[v].out
            if i < len(out):
                work[-1] = (v, i + 1)
                w = out[i].target
                if w not in index_of:
                    work.append((w, 0))
                elif w in on_stack:
                    low[v] = min(low[v], index_of[w])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
            if low[v] == index_of[v]:
                members = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    members.append(w)
                    if w == v:
                        break
                for w in members:
                    plan.nodes[w].loop = v
                    plan.nodes[w].cyclic = len(members) > 1 or any(
                        e.target == w for e in plan.nodes[w].out
                    )
    for edge in plan.edges:
        source, target = plan.nodes[edge.source], plan.nodes[edge.target]
        edge.leaves_loop = source.cyclic and source.loop != target.loop
        if not edge.back and target.cyclic and source.loop != target.loop:
            target.outside_in += 1


def _condition(plan: ExecutionPlan, edge: Edge, source: str | None) -> Expression:
    assert edge.when is not None
    field = f"{edge.field or 'edge ' + edge.source + ' -> ' + edge.target}.when"
    if not isinstance(edge.when, str):
        raise ValidationError(
            f"a condition is a string, not {edge.when!r}",
            field=field,
            source=source,
            line=edge.line_of("when"),
        )
    expr = parse_expression(edge.when, source=source, line=edge.line_of("when"), field=field)
    for path in sorted(expr.paths):
        head, _, rest = path.partition(".")
        if head in plan.by_id:
            if rest and not (rest == "output" or rest.startswith("output.")):
                raise ValidationError(
                    f"condition {edge.when!r}: a node's output is read as '{head}.output', "
                    f"not {path!r}",
                    field=field,
                    source=source,
                    line=edge.line_of("when"),
                )
        elif "." in path:
            raise ValidationError(
                f"condition {edge.when!r} reads {path!r}, but there is no node {head!r}"
                + did_you_mean(head, plan.by_id),
                field=field,
                source=source,
                line=edge.line_of("when"),
            )
    return expr


def _fingerprint(
    name: str,
    nodes: list[Node],
    edges: list[Edge],
    config: GraphConfig,
    execution: ExecutionConfig,
) -> str:
    """A digest of what decides a run's course, so a run is resumed only with its own graph."""
    shape = {
        "name": name,
        "nodes": [
            [n.id, n.agent, n.inputs, n.parallel_group, list(n.wait_for), n.policy] for n in nodes
        ],
        "edges": [[e.source, e.target, e.when] for e in edges],
        "config": config,
        "execution": execution,
    }
    body = msgspec.msgpack.Encoder(order="sorted").encode(shape)
    return hashlib.sha256(body).hexdigest()[:32]
