"""A run's coordination graph, derived from the events of its trace alone.

``run_graph(events, run_id)`` is the §8.1 trace (``trace_of``) plus what the renderers draw:

- ``edges``: ``{"from": node, "to": node}``, the node whose ``node.done`` started another
  (the ``parent_id`` of that ``node.start``: the dependency that finished last). The log
  records causes, not the graph's declared edges, so a node with several dependencies shows
  the one that released it.
- each node row gains ``depth`` (its distance from a node nothing started) and ``run`` (the
  id of the run it ran in: a subgraph's nodes ran in a child run, ``root/write/1``);
- ``agents``: ``{"agent", "nodes", "tokens", "tool_calls", "cost"}`` per agent name;
- ``runs``: the child runs of subgraph nodes, ``{"run_id", "node", "graph", "status"}``;
- ``coordination``: the protocol objects the run's trace holds, folded from their events —
  ``intent`` (``bidding.opened/awarded/failed``), ``offer``, ``award``, ``receipt``
  (``bidding.settled/disputed``), ``ballot``, ``vote``, ``task`` (``task.*``) — each
  ``{"type", "id", "node", "status", "actor", "start_time", "end_time", "latency_ms",
  "events", "detail"}``. ``node`` is the node the object belongs to when its id says so
  (tender rounds ``tender:<run>/<node>/<iteration>:<n>``, board tasks ``<run>/<node>/<i>``,
  gate ballots ``gate/<run>/<node>/<i>``), else None.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from converge.orchestration.trace import trace_of
from converge.protocol.event import Event

__all__ = ["run_events", "run_graph"]

_OFFER_STATUS = {"bidding.offer_accepted": "accepted", "bidding.offer_refused": "refused"}


def run_events(events: Sequence[Event], run_id: str) -> list[Event]:
    """The events of run ``run_id`` and of its child runs, among those of its trace."""
    return [e for e in events if e.subject == run_id or e.subject.startswith(run_id + "/")]


def run_graph(events: Sequence[Event], run_id: str) -> dict[str, Any]:
    """The coordination graph of run ``run_id`` from the events of its trace (log order)."""
    own = run_events(events, run_id)
    trace = trace_of(own, run_id)
    rows: list[dict[str, Any]] = trace["nodes"]
    by_event: dict[str, str] = {}  # node.done event id -> node id
    parent: dict[str, str] = {}  # node id -> the node whose done started it
    runs: dict[str, dict[str, Any]] = {}
    for ev in own:
        if ev.kind == "run.started" and ev.subject != run_id:
            runs[ev.subject] = {
                "run_id": ev.subject,
                "node": _node_of(ev.subject, run_id),
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
        "coordination": coordination_objects(events, run_id),
    }


def coordination_objects(events: Sequence[Event], run_id: str) -> list[dict[str, Any]]:
    """The intents, offers, awards, receipts, ballots, votes and tasks of a run's trace."""
    objects: dict[tuple[str, str], dict[str, Any]] = {}

    def touch(kind: str, oid: str, ev: Event, status: str, **detail: Any) -> None:
        obj = objects.get((kind, oid))
        if obj is None:
            obj = objects[(kind, oid)] = {
                "type": kind,
                "id": oid,
                "node": _node_of(ev.subject, run_id),
                "status": status,
                "actor": ev.actor,
                "_start": ev.at,
                "_end": None,
                "events": 0,
                "detail": {},
            }
        obj["status"] = status
        obj["events"] += 1
        obj["detail"].update({k: v for k, v in detail.items() if v is not None})
        if status not in ("open", "submitted", "claimed", "started", "running"):
            obj["_end"] = ev.at

    for ev in events:
        kind, data = ev.kind, ev.data
        if kind == "bidding.opened":
            touch("intent", ev.subject, ev, "open", capability=data.get("capability"))
        elif kind in ("bidding.awarded", "bidding.failed"):
            status = kind.removeprefix("bidding.")
            touch("intent", ev.subject, ev, status, reason=data.get("reason"))
            if kind == "bidding.awarded":
                touch(
                    "award",
                    f"{ev.subject}:award",
                    ev,
                    "awarded",
                    winner=data.get("winner"),
                    offer_id=data.get("offer_id"),
                    price=data.get("price"),
                    strategy=data.get("strategy"),
                    task_id=data.get("task_id"),
                )
        elif kind in _OFFER_STATUS:
            oid = str(data.get("offer_id", ev.id))
            provider = data.get("provider", data.get("claimed_provider"))
            touch("offer", oid, ev, _OFFER_STATUS[kind], provider=provider, cost=data.get("cost"))
        elif kind in ("bidding.settled", "bidding.disputed"):
            rid = str(data.get("receipt_id", ev.subject))
            status = data.get("status", "settled") if kind == "bidding.settled" else "disputed"
            touch("receipt", rid, ev, str(status), cost=data.get("cost"), reason=data.get("reason"))
        elif kind == "ballot.opened":
            touch("ballot", ev.subject, ev, "open", question=data.get("question"))
        elif kind == "ballot.closed":
            touch("ballot", ev.subject, ev, "closed", cause=data.get("cause"))
        elif kind == "ballot.voted":
            voter = str(data.get("voter", ev.actor))
            touch("vote", f"{ev.subject}:{voter}", ev, "cast", option=data.get("option"))
        elif kind.startswith("task."):
            if kind != "task.heartbeat":
                touch("task", ev.subject, ev, kind.removeprefix("task."))
    out = []
    for obj in objects.values():
        start, end = obj.pop("_start"), obj.pop("_end")
        obj["start_time"] = _iso(start)
        obj["end_time"] = None if end is None else _iso(end)
        obj["latency_ms"] = None if end is None else round((end - start) * 1e3, 3)
        out.append(obj)
    return out


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


def _node_of(subject: str, root: str) -> str | None:
    """The node an id names (``tender:<root>/<node>/<i>:<n>``, ``<root>/a/1/b/1#2``…), or None."""
    at = subject.find(root + "/")
    if at < 0:
        return None
    rest = subject[at + len(root) + 1 :]
    for stop in ":#":
        rest = rest.split(stop, 1)[0]
    parts = [p for p in rest.split("/")[0::2] if p]
    return "/".join(parts) or None


def _run_of(node: str, root: str, runs: dict[str, dict[str, Any]]) -> str:
    if "/" not in node:
        return root
    owner = node.rsplit("/", 1)[0]
    for run in runs.values():
        if run["node"] == owner:
            return str(run["run_id"])
    return root


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
