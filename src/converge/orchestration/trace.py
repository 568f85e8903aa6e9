"""A run's trace and metrics, derived from its events alone.

Seed 002 §8.1 and §8.2.

```json
{"trace_id": "...", "graph_id": "code_review", "status": "completed",
 "nodes": [{"node_id": "analyzer", "agent": "code_analyzer", "iteration": 1,
            "start_time": "2025-12-26T10:00:00.000000Z", "end_time": "...",
            "tokens_in": 1500, "tokens_out": 800, "tool_calls": 3, "cost": 0.01,
            "attempts": 1, "status": "success"}],
 "coordination": [{"type": "ballot", "id": "gate/<run>/approve/1", "node": "approve",
                   "status": "closed", "actor": "did:key:…", "start_time": "...",
                   "end_time": "...", "latency_ms": 12.5, "events": 5,
                   "detail": {"question": "...", "winner": "yes"}}],
 "total_tokens": 15000, "total_cost": 0.045, "duration_ms": 45000}
```

A node's ``status`` is ``success``, ``fallback``, ``answered`` (a person's answer stood in),
``replanned`` (``on_node_failed``'s replacement nodes stood in),
``skipped``, ``failed``, ``waiting`` or ``running`` (started, not finished: the run is still
going, or its process died). Times are UTC ISO 8601 from the events' ``at``.

``coordination`` (beyond §8.1) lists the protocol objects the run caused, folded from their
events in the run's trace (``coordination_objects``): each intent, offer, award, receipt and
trust update of a tender node's auctions, each ballot and vote of a consensus node, each task
of a board node. Node kinds log these under the run's trace id with the object's own id as
the events' subject, and derive that id from the node's idempotency key, which says which node
an object belongs to (``node_of``; a trust update belongs to the round it names as ``cause``).
The root run lists every object of its trace (those no node claims too); a subgraph's child run
(``Engine.trace("<root>/<node>/<i>")``) lists those of its own nodes. Runs stored before node
kinds logged under the run's trace id render as they are: a gate's ballot and votes (then in
the ballot's own trace) and a child run's board task (then in the child's) are missing from
them. ``node.call`` events (calls inside a node) are for the OTel listener: the trace and the
metrics ignore them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from converge.protocol.event import Event

__all__ = ["coordination_objects", "metrics_of", "node_of", "trace_of"]

_STATUS = {"completed": "success"}
_END = ("run.completed", "run.failed", "run.cancelled", "run.interrupted", "run.waiting")
_OFFER_STATUS = {"bidding.offer_accepted": "accepted", "bidding.offer_refused": "refused"}
_OPEN = frozenset({"open", "submitted", "claimed", "started", "running"})
_USAGE_KINDS = frozenset({"node.done", "node.retry", "node.failed", "node.waiting"})


def trace_of(events: Sequence[Event], run_id: str | None = None) -> dict[str, Any]:
    """The §8.1 trace of run ``run_id`` from the events of its trace (in log order).

    Runs of subgraph nodes share their parent's trace: their nodes are listed too, their ids
    prefixed by the path of subgraph nodes that leads to them (``review/analyzer``), and so
    are the coordination objects they caused. Without ``run_id``, every event is taken as the
    run's own.
    """
    root = run_id if run_id is not None else (events[0].subject if events else "")
    coordination = coordination_objects(events, root)
    if run_id is not None:
        events = [e for e in events if e.subject == run_id or e.subject.startswith(run_id + "/")]
    graph = ""
    status = "running"
    first_at: float | None = None
    last_at: float | None = None
    nodes: dict[tuple[str, int], dict[str, Any]] = {}
    for ev in events:
        data = ev.data
        first_at = ev.at if first_at is None else first_at
        prefix = _prefix(root, ev.subject)
        if prefix and ev.kind.startswith("run."):
            continue  # a child run's start and end: its nodes are what the trace lists
        if prefix and ev.kind.startswith("node."):
            data = {**data, "node": prefix + data.get("node", "")}
        if ev.kind == "run.started":
            graph = data.get("graph", "")
        elif ev.kind in _END:
            status = ev.kind.removeprefix("run.")
            last_at = ev.at
        elif ev.kind == "run.resumed":
            status = "running"
        elif ev.kind.startswith("node."):
            key = (data.get("node", ""), int(data.get("iteration", 0)))
            if ev.kind == "node.start":
                node = nodes.setdefault(key, _node(key, data.get("agent", ""), ev.at))
                node["attempts"] += 1
                node["status"] = "running"
            elif key in nodes or ev.kind == "node.done":
                node = nodes.setdefault(key, _node(key, "", ev.at))
                _apply(node, ev.kind, data, ev.at)
    rows = sorted(nodes.values(), key=lambda n: (n["_start"], n["node_id"], n["iteration"]))
    for row in rows:
        del row["_start"]
    end = last_at if last_at is not None else (events[-1].at if events else None)
    return {
        "trace_id": root,
        "graph_id": graph,
        "status": status,
        "nodes": rows,
        "coordination": coordination,
        "total_tokens": sum(n["tokens_in"] + n["tokens_out"] for n in rows),
        "total_cost": round(sum(n["cost"] for n in rows), 10),
        "duration_ms": 0.0 if first_at is None or end is None else round((end - first_at) * 1e3, 3),
    }


def coordination_objects(events: Sequence[Event], run_id: str) -> list[dict[str, Any]]:
    """The coordination objects of run ``run_id``, folded from the events of its trace (in
    log order), in the order they first appear.

    Each is ``{"type", "id", "node", "status", "actor", "start_time", "end_time",
    "latency_ms", "events", "detail"}``; ``type`` is one of

    - ``intent`` (a tender's auction round; ``bidding.opened``, ``bidding.awarded``,
      ``bidding.failed``: ``open``, ``awarded``, ``failed``), ``offer`` (``accepted`` or
      ``refused``), ``award`` (``awarded``), ``receipt`` (``bidding.settled``/``disputed``:
      its status, or ``disputed``), ``trust`` (the winner's ``trust.updated``: its outcome);
    - ``ballot`` (``open``, ``closed``) and ``vote`` (``cast``; a vote the ballot refused,
      ``ballot.refused``, is a vote ``refused``, with the ``reason`` and ``code``);
    - ``task`` (a board task: the last ``task.*`` state).

    ``detail`` holds what the events said, keys absent when they did not: an intent's
    ``capability``, ``strategy``, ``invited`` (dids), ``reason``; an offer's ``auction`` (the
    intent's id), ``provider``, ``cost``, ``reason`` (refused); an award's ``winner``,
    ``offer_id``, ``price``, ``currency``, ``strategy``, ``score``, ``reason``, ``ranking``
    (offer ids, best first), ``scores`` (theirs, in that order), ``task_id``; a receipt's
    ``auction``, ``cost``, ``currency``, ``outcome``, ``reason``; a trust update's ``agent``,
    ``score``; a ballot's ``question``, ``options``, ``rule``, ``cause``, ``winner``, ``reason``,
    ``tallies``; a vote's ``ballot``, ``voter``, ``option`` (``code``, ``reason`` refused); a
    task's ``worker`` (the did that claimed it last), ``attempt``, ``reason`` (failed).

    ``node`` is the node the object belongs to, read from its id (``node_of``), else None.
    The trace's own run (``run_id`` is the trace id) lists every object of its trace, those no
    node claims included; a subgraph's child run lists the objects of its own nodes.
    """
    objects: dict[tuple[str, str], dict[str, Any]] = {}

    def touch(kind: str, oid: str, ev: Event, status: str, ref: str, **detail: Any) -> None:
        obj = objects.get((kind, oid))
        if obj is None:
            obj = objects[(kind, oid)] = {
                "type": kind,
                "id": oid,
                "node": node_of(ref, run_id),
                "status": status,
                "actor": ev.actor,
                "_start": ev.at,
                "_end": None,
                "_own": False,
                "events": 0,
                "detail": {},
            }
        obj["status"] = status
        obj["events"] += 1
        obj["_own"] = obj["_own"] or ev.trace_id == run_id
        obj["detail"].update({k: v for k, v in detail.items() if v is not None})
        if status not in _OPEN:
            obj["_end"] = ev.at

    for ev in events:
        kind, data, subject = ev.kind, ev.data, ev.subject
        if kind == "bidding.opened":
            touch(
                "intent",
                subject,
                ev,
                "open",
                subject,
                capability=data.get("capability"),
                strategy=data.get("strategy"),
                invited=data.get("invited"),
            )
        elif kind in ("bidding.awarded", "bidding.failed"):
            status = kind.removeprefix("bidding.")
            touch("intent", subject, ev, status, subject, reason=data.get("reason"))
            if kind == "bidding.awarded":
                touch(
                    "award",
                    f"{subject}:award",
                    ev,
                    "awarded",
                    subject,
                    winner=data.get("winner"),
                    offer_id=data.get("offer_id"),
                    price=data.get("price"),
                    currency=data.get("currency"),
                    strategy=data.get("strategy"),
                    score=data.get("score"),
                    reason=data.get("reason"),
                    ranking=data.get("ranking"),
                    scores=data.get("scores"),
                    task_id=data.get("task_id"),
                )
        elif kind in _OFFER_STATUS:
            oid = str(data.get("offer_id", ev.id))
            provider = data.get("provider", data.get("claimed_provider"))
            touch(
                "offer",
                oid,
                ev,
                _OFFER_STATUS[kind],
                subject,
                auction=subject,
                provider=provider,
                cost=data.get("cost"),
                reason=data.get("reason"),
            )
        elif kind in ("bidding.settled", "bidding.disputed"):
            rid = str(data.get("receipt_id", subject))
            status = data.get("status", "settled") if kind == "bidding.settled" else "disputed"
            touch(
                "receipt",
                rid,
                ev,
                str(status),
                subject,
                auction=subject,
                cost=data.get("cost"),
                currency=data.get("currency"),
                outcome=data.get("outcome"),
                reason=data.get("reason"),
            )
        elif kind == "trust.updated":
            cause = str(data.get("cause") or "")
            touch(
                "trust",
                f"{cause or ev.id}:{subject}",
                ev,
                str(data.get("outcome", "updated")),
                cause,
                agent=subject,
                score=data.get("score"),
            )
        elif kind == "ballot.opened":
            touch(
                "ballot",
                subject,
                ev,
                "open",
                subject,
                question=data.get("question"),
                options=data.get("options"),
                rule=data.get("rule"),
            )
        elif kind == "ballot.closed":
            result = data.get("result") or {}
            touch(
                "ballot",
                subject,
                ev,
                "closed",
                subject,
                cause=data.get("cause"),
                winner=result.get("winner"),
                reason=result.get("reason"),
                tallies=result.get("tallies"),
            )
        elif kind == "ballot.voted":
            voter = str(data.get("voter", ev.actor))
            touch(
                "vote",
                f"{subject}:{voter}",
                ev,
                "cast",
                subject,
                ballot=subject,
                voter=voter,
                option=data.get("option"),
            )
        elif kind == "ballot.refused" and data.get("act") == "vote":
            voter = str(data.get("voter", ev.actor))
            touch(
                "vote",
                f"{subject}:{voter}#refused",
                ev,
                "refused",
                subject,
                ballot=subject,
                voter=voter,
                option=data.get("option"),
                code=data.get("code"),
                reason=data.get("reason"),
            )
        elif kind.startswith("task.") and kind != "task.heartbeat":
            worker = ev.actor if kind == "task.claimed" else None
            touch(
                "task",
                subject,
                ev,
                kind.removeprefix("task."),
                subject,
                worker=worker,
                attempt=data.get("attempt"),
                reason=data.get("reason"),
            )
    out = []
    for obj in objects.values():
        start, end, own = obj.pop("_start"), obj.pop("_end"), obj.pop("_own")
        if obj["node"] is None and not own:
            continue  # another run's: a child run lists only what its own nodes caused
        obj["start_time"] = _iso(start)
        obj["end_time"] = None if end is None else _iso(end)
        obj["latency_ms"] = None if end is None else round((end - start) * 1e3, 3)
        out.append(obj)
    return out


def node_of(object_id: str, run_id: str) -> str | None:
    """The node of run ``run_id`` that object ``object_id`` belongs to, read from the id, or
    None.

    Node kinds derive their objects' ids from the node's idempotency key
    (``<run>/<node>/<iteration>``): tender rounds ``tender:<run>/<node>/<i>:<n>``, board
    tasks ``<run>/<node>/<i>[#n]``, gate ballots ``gate/<run>/<node>/<i>``. A node of a
    subgraph's child run (``<run>/write/1/x/1``) is named by its path, ``write/x``.
    """
    at = object_id.find(run_id + "/")
    if not run_id or at < 0:
        return None
    rest = object_id[at + len(run_id) + 1 :]
    for stop in ":#":
        rest = rest.split(stop, 1)[0]
    parts = [p for p in rest.split("/")[0::2] if p]
    return "/".join(parts) or None


def metrics_of(events: Sequence[Event], run_id: str | None = None) -> dict[str, Any]:
    """The §8.2 metrics of a run: agents used, tokens, tool calls and cost (US dollars) per
    agent and in all, latency per node, success and failure counts and rate, retries,
    checkpoints (and per minute)."""
    if run_id is not None:
        events = [e for e in events if e.subject == run_id or e.subject.startswith(run_id + "/")]
    trace = trace_of(events, run_id)
    rows = trace["nodes"]
    tokens: dict[str, int] = {}
    tools: dict[str, int] = {}
    cost: dict[str, float] = {}
    latency: dict[str, float] = {}
    for row in rows:
        agent = row["agent"]
        tokens[agent] = tokens.get(agent, 0) + row["tokens_in"] + row["tokens_out"]
        tools[agent] = tools.get(agent, 0) + row["tool_calls"]
        cost[agent] = cost.get(agent, 0.0) + row["cost"]
        if row["latency_ms"] is not None:
            latency[row["node_id"]] = latency.get(row["node_id"], 0.0) + row["latency_ms"]
    finished = [r for r in rows if r["status"] not in ("running", "waiting")]
    succeeded = sum(
        1
        for r in finished
        if r["status"] in ("success", "fallback", "answered", "replanned", "halted")
    )
    checkpoints = sum(1 for ev in events if ev.kind == "run.checkpoint")
    minutes = trace["duration_ms"] / 60_000
    return {
        "trace_id": trace["trace_id"],
        "graph_id": trace["graph_id"],
        "agents_spawned": len({r["agent"] for r in rows}),
        "node_executions": len(rows),
        "tokens_per_agent": tokens,
        "tool_calls_per_agent": tools,
        "cost_per_agent": {k: round(v, 10) for k, v in cost.items()},
        "total_cost": trace["total_cost"],
        "latency_ms_per_node": {k: round(v, 3) for k, v in latency.items()},
        "succeeded": succeeded,
        "failed": len(finished) - succeeded,
        "success_rate": round(succeeded / len(finished), 6) if finished else None,
        "retries": sum(1 for ev in events if ev.kind == "node.retry"),
        "checkpoints": checkpoints,
        "checkpoints_per_minute": round(checkpoints / minutes, 3) if minutes > 0 else None,
    }


def _node(key: tuple[str, int], agent: str, at: float) -> dict[str, Any]:
    return {
        "node_id": key[0],
        "agent": agent,
        "iteration": key[1],
        "start_time": _iso(at),
        "end_time": None,
        "latency_ms": None,
        "tokens_in": 0,
        "tokens_out": 0,
        "tool_calls": 0,
        "cost": 0.0,
        "attempts": 0,
        "status": "running",
        "_start": at,
    }


def _prefix(root: str, subject: str) -> str:
    """``"sub/"`` for a child run ``root/sub/1``, ``"sub/inner/"`` deeper, ``""`` for the root."""
    if subject == root or not subject.startswith(root + "/"):
        return ""
    parts = subject[len(root) + 1 :].split("/")
    return "".join(f"{node}/" for node in parts[0::2])


def _apply(node: dict[str, Any], kind: str, data: dict[str, Any], at: float) -> None:
    usage = data.get("usage") if kind in _USAGE_KINDS else None
    if usage:  # a pass's usage: its retried, failed or paused tries' too
        node["tokens_in"] += int(usage.get("tokens_in", 0))
        node["tokens_out"] += int(usage.get("tokens_out", 0))
        node["tool_calls"] += int(usage.get("tool_calls", 0))
        node["cost"] += float(usage.get("cost", 0.0))
    if kind == "node.done":
        node["status"] = _STATUS.get(data.get("status", ""), data.get("status", ""))
        _end(node, at)
    elif kind == "node.replaced":  # a replacement node spliced in by on_node_failed
        node["status"] = "success"
        _end(node, at)
    elif kind == "node.failed":
        node["status"] = "failed"
        node["error"] = data.get("error")
        _end(node, at)
    elif kind == "node.waiting":
        node["status"] = "waiting"
        node["question"] = data.get("question")


def _end(node: dict[str, Any], at: float) -> None:
    node["end_time"] = _iso(at)
    node["latency_ms"] = round((at - node["_start"]) * 1e3, 3)


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
