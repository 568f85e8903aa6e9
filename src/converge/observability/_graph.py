"""A run's coordination graph, derived from the events of its trace alone.

``run_graph(events, run_id)`` is the §8.1 trace (``trace_of``, whose ``coordination`` lists
the protocol objects the run caused: see ``coordination_objects``) plus what the renderers
draw:

- ``edges``: ``{"from": node, "to": node}``, the node whose ``node.done`` started another
  (the ``parent_id`` of that ``node.start``: the dependency that finished last). The log
  records causes, not the graph's declared edges, so a node with several dependencies shows
  the one that released it.
- each node row gains ``depth`` (its distance from a node nothing started) and ``run`` (the
  id of the run it ran in: a subgraph's nodes ran in a child run, ``root/write/1``);
- ``agents``: ``{"agent", "nodes", "tokens", "tool_calls", "cost"}`` per agent name;
- ``runs``: the child runs of subgraph nodes, ``{"run_id", "node", "graph", "status"}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from converge.orchestration.trace import coordination_objects, node_of, trace_of
from converge.protocol.event import Event

__all__ = ["coordination_objects", "run_events", "run_graph"]


def run_events(events: Sequence[Event], run_id: str) -> list[Event]:
    """The events of run ``run_id`` and of its child runs, among those of its trace."""
    return [e for e in events if e.subject == run_id or e.subject.startswith(run_id + "/")]


def run_graph(events: Sequence[Event], run_id: str) -> dict[str, Any]:
    """The coordination graph of run ``run_id`` from the events of its trace (log order)."""
    own = run_events(events, run_id)
    trace = trace_of(events, run_id)  # its nodes, and the coordination objects of the trace
    rows: list[dict[str, Any]] = trace["nodes"]
    by_event: dict[str, str] = {}  # node.done event id -> node id
    parent: dict[str, str] = {}  # node id -> the node whose done started it
    runs: dict[str, dict[str, Any]] = {}
    for ev in own:
        if ev.kind == "run.started" and ev.subject != run_id:
            runs[ev.subject] = {
                "run_id": ev.subject,
                "node": node_of(ev.subject, run_id),
                "graph": ev.data.get("graph", ""),
                "status": "running",
            }
        elif ev.kind.startswith("run.") and ev.subject in runs and ev.kind != "run.checkpoint":
            runs[ev.subject]["status"] = ev.kind.removeprefix("run.")
        elif ev.kind.startswith("node."):
            node = _path(ev.subject, run_id) + str(ev.data.get("node", ""))
            if ev.kind == "node.done":
                by_event[ev.id] = node
            elif ev.kind == "node.start" and ev.parent_id is not None and node not in parent:
                trigger = by_event.get(ev.parent_id)
                if trigger is not None and trigger != node:
                    parent[node] = trigger
    ids = {row["node_id"] for row in rows}
    depths = _depths(ids, parent)
    for row in rows:
        row["run"] = _run_of(row["node_id"], run_id, runs)
        row["depth"] = depths.get(row["node_id"], 0)
    edges = [{"from": p, "to": n} for n, p in parent.items() if n in ids and p in ids]
    return {
        **trace,
        "edges": edges,
        "agents": _agents(rows),
        "runs": list(runs.values()),
    }


def _agents(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    agents: dict[str, dict[str, Any]] = {}
    for row in rows:
        a = agents.setdefault(
            row["agent"],
            {"agent": row["agent"], "nodes": 0, "tokens": 0, "tool_calls": 0, "cost": 0.0},
        )
        a["nodes"] += 1
        a["tokens"] += row["tokens_in"] + row["tokens_out"]
        a["tool_calls"] += row["tool_calls"]
        a["cost"] = round(a["cost"] + row["cost"], 10)
    return list(agents.values())


def _depths(ids: set[str], parent: dict[str, str]) -> dict[str, int]:
    """Each node's distance from a node nothing started; a subgraph's nodes sit one below the
    subgraph node that holds them."""
    depths: dict[str, int] = {}

    def depth(node: str) -> int:
        start = node
        chain: list[str] = []
        while node not in depths:
            if node in chain:  # a cause that loops: break it here
                depths[node] = 0
                del chain[chain.index(node) :]
                break
            chain.append(node)
            up = parent.get(node)
            if up is None or up not in ids:
                owner = node.rpartition("/")[0]
                base = depth(owner) + 1 if owner in ids else 0
                depths[chain.pop()] = base
                break
            node = up
        while chain:
            below = chain.pop()
            depths[below] = depths[parent[below]] + 1
        return depths[start]

    for node in sorted(ids):
        depth(node)
    return depths


def _path(subject: str, root: str) -> str:
    """``"write/"`` for a child run ``root/write/1``, ``""`` for the root run."""
    if subject == root or not subject.startswith(root + "/"):
        return ""
    return "".join(f"{n}/" for n in subject[len(root) + 1 :].split("/")[0::2])


def _run_of(node: str, root: str, runs: dict[str, dict[str, Any]]) -> str:
    if "/" not in node:
        return root
    owner = node.rsplit("/", 1)[0]
    for run in runs.values():
        if run["node"] == owner:
            return str(run["run_id"])
    return root
