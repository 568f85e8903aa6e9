"""A run's coordination graph as plain data, from its trace's events.

``run_graph(events, run_id)`` is the §8.1 trace (``trace_of``, whose ``coordination`` lists
the protocol objects the run caused: see ``coordination_objects``) plus what the text
renderers draw, taken from the run's ``RunModel`` (``run_model``):

- ``edges``: ``{"from", "to", "when", "state"}``, each edge of the graph between two nodes
  that ran (every edge into a join; ``state``: ``taken`` or ``not_taken``, a condition that
  was false); for a run stored before its graph's shape was logged, the causes the log holds
  (the node whose ``node.done`` started another);
- each node row gains ``depth`` (its layer: the longest path of edges to it) and ``run`` (the
  id of the run it ran in: a subgraph's nodes ran in a child run, ``root/write/1``);
- ``agents``: ``{"agent", "nodes", "tokens", "tool_calls", "cost"}`` per agent name;
- ``runs``: the child runs of subgraph nodes, ``{"run_id", "node", "graph", "status"}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from converge.observability.run_model import RunModel
from converge.orchestration.trace import coordination_objects
from converge.protocol.event import Event

__all__ = ["coordination_objects", "run_events", "run_graph"]


def run_events(events: Sequence[Event], run_id: str) -> list[Event]:
    """The events of run ``run_id`` and of its child runs, among those of its trace."""
    return [e for e in events if e.subject == run_id or e.subject.startswith(run_id + "/")]


def run_graph(events: Sequence[Event], run_id: str) -> dict[str, Any]:
    """The coordination graph of run ``run_id`` from the events of its trace (log order)."""
    view = RunModel(run_id).add(events).view()
    depth = {n.id: n.depth for n in view.nodes}
    rows: list[dict[str, Any]] = []
    for p in view.passes:
        row = {
            "node_id": p.node,
            "agent": p.agent,
            "iteration": p.iteration,
            "start_time": p.start_time,
            "end_time": p.end_time,
            "latency_ms": p.latency_ms,
            "tokens_in": p.tokens_in,
            "tokens_out": p.tokens_out,
            "tool_calls": p.tool_calls,
            "cost": p.cost,
            "attempts": p.attempts,
            "status": p.status,
        }
        if p.status == "failed" and p.error is not None:
            row["error"] = p.error
        if p.status == "waiting":
            row["question"] = p.question
        row["run"] = p.run
        row["depth"] = depth.get(p.node, 0)
        rows.append(row)
    ran = {p.node for p in view.passes}
    edges: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for e in view.edges:
        if e.source in ran and e.target in ran and (e.source, e.target) not in seen:
            seen.add((e.source, e.target))
            edges.append({"from": e.source, "to": e.target, "when": e.when, "state": e.state})
    return {
        "trace_id": view.run_id,
        "graph_id": view.graph,
        "status": view.status,
        "nodes": rows,
        "coordination": list(view.coordination),
        "total_tokens": view.total_tokens,
        "total_cost": view.total_cost,
        "duration_ms": view.duration_ms,
        "edges": edges,
        "agents": [msgspec.to_builtins(a) for a in view.agents],
        "runs": [msgspec.to_builtins(r) for r in view.runs],
    }
