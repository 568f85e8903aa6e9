"""A run's trace (seed 002 §8.1) and metrics (§8.2), derived from its events alone.

```json
{"trace_id": "...", "graph_id": "code_review", "status": "completed",
 "nodes": [{"node_id": "analyzer", "agent": "code_analyzer", "iteration": 1,
            "start_time": "2025-12-26T10:00:00.000000Z", "end_time": "...",
            "tokens_in": 1500, "tokens_out": 800, "tool_calls": 3, "cost": 0.01,
            "attempts": 1, "status": "success"}],
 "total_tokens": 15000, "total_cost": 0.045, "duration_ms": 45000}
```

A node's ``status`` is ``success``, ``fallback``, ``answered`` (a person's answer stood in),
``replanned`` (``on_node_failed``'s replacement nodes stood in),
``skipped``, ``failed``, ``waiting`` or ``running`` (started, not finished: the run is still
going, or its process died). Times are UTC ISO 8601 from the events' ``at``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from converge.protocol.event import Event

__all__ = ["metrics_of", "trace_of"]

_STATUS = {"completed": "success"}
_END = ("run.completed", "run.failed", "run.cancelled", "run.waiting")
_USAGE_KINDS = frozenset({"node.done", "node.retry", "node.failed", "node.waiting"})


def trace_of(events: Sequence[Event], run_id: str | None = None) -> dict[str, Any]:
    """The §8.1 trace of run ``run_id`` from the events of its trace (in log order).

    Runs of subgraph nodes share their parent's trace: their nodes are listed too, their ids
    prefixed by the path of subgraph nodes that leads to them (``review/analyzer``). Without
    ``run_id``, every event is taken as the run's own.
    """
    if run_id is not None:
        events = [e for e in events if e.subject == run_id or e.subject.startswith(run_id + "/")]
    root = run_id if run_id is not None else (events[0].subject if events else "")
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
        "total_tokens": sum(n["tokens_in"] + n["tokens_out"] for n in rows),
        "total_cost": round(sum(n["cost"] for n in rows), 10),
        "duration_ms": 0.0 if first_at is None or end is None else round((end - first_at) * 1e3, 3),
    }


def metrics_of(events: Sequence[Event], run_id: str | None = None) -> dict[str, Any]:
    """The §8.2 metrics of a run: agents used, tokens and tool calls per agent, latency per
    node, success and failure counts and rate, retries, checkpoints (and per minute)."""
    if run_id is not None:
        events = [e for e in events if e.subject == run_id or e.subject.startswith(run_id + "/")]
    trace = trace_of(events, run_id)
    rows = trace["nodes"]
    tokens: dict[str, int] = {}
    tools: dict[str, int] = {}
    latency: dict[str, float] = {}
    for row in rows:
        agent = row["agent"]
        tokens[agent] = tokens.get(agent, 0) + row["tokens_in"] + row["tokens_out"]
        tools[agent] = tools.get(agent, 0) + row["tool_calls"]
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
