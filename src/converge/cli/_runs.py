"""Runs read back from the store: the ``converge runs`` table, ``converge show`` and
``converge cancel``.

A run's status is its last ``run.*`` event: ``completed``, ``failed``, ``waiting``,
``cancelled``, or ``running`` (started or resumed, not ended: running now, or its process
died; ``converge resume`` continues it either way). Duration is from ``run.started`` to the
run's last end event (pauses included); cost sums its nodes' ``usage.cost``. Child runs of
subgraph nodes (ids with ``/``) are listed within their parent, not as runs.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converge.cli._run import CANCEL_KEY, run_note

if TYPE_CHECKING:
    from converge.store import SQLiteStore

__all__ = ["cancel_run", "list_runs", "show_run"]

_RUN_KINDS = (
    "run.started",
    "run.resumed",
    "run.completed",
    "run.failed",
    "run.waiting",
    "run.cancelled",
    "node.done",
)
_ENDS = ("run.completed", "run.failed", "run.waiting", "run.cancelled")


async def list_runs(store: SQLiteStore, limit: int | None) -> list[dict[str, Any]]:
    """The store's runs, newest first: id, graph, status, started, duration_ms, cost."""
    runs: dict[str, dict[str, Any]] = {}
    for ev in await store.read(kinds=_RUN_KINDS):
        run_id = ev.subject
        if "/" in run_id:
            continue
        if ev.kind == "run.started":
            runs[run_id] = {
                "run_id": run_id,
                "graph": ev.data.get("graph", ""),
                "status": "running",
                "started_at": ev.at,
                "ended_at": None,
                "duration_ms": None,
                "cost": 0.0,
            }
            continue
        run = runs.get(run_id)
        if run is None:
            continue
        if ev.kind == "node.done":
            run["cost"] += float((ev.data.get("usage") or {}).get("cost", 0.0))
        elif ev.kind == "run.resumed":
            run["status"] = "running"
        else:
            run["status"] = ev.kind.removeprefix("run.")
            run["ended_at"] = ev.at
            run["duration_ms"] = round((ev.at - run["started_at"]) * 1e3, 3)
    found = sorted(runs.values(), key=lambda r: r["started_at"], reverse=True)
    for run in found:
        run["cost"] = round(run["cost"], 10)
    return found[:limit] if limit is not None else found


async def show_run(store: SQLiteStore, run_id: str) -> dict[str, Any]:
    """Run ``run_id`` in detail: its inputs, status, result and nodes (exit 2 if unknown)."""
    from converge.errors import ValidationError
    from converge.orchestration._records import read_records
    from converge.orchestration.trace import trace_of

    events = await store.read(trace_id=run_id.split("/", 1)[0])
    own = [e for e in events if e.subject == run_id]
    records = read_records(own)
    if records.started is None:
        raise ValidationError(f"no run {run_id!r} in {store.path}", field="run_id")
    trace = trace_of(events, run_id)
    note = await run_note(store, run_id)
    declared = _declared_inputs(note.get("graph_path"))
    last = next((e for e in reversed(own) if e.kind in (*_ENDS, "run.resumed")), None)
    nodes = []
    for row in trace["nodes"]:
        done = records.done.get((row["node_id"], row["iteration"]))
        nodes.append(
            {
                "node": row["node_id"],
                "iteration": row["iteration"],
                "agent": row["agent"],
                "status": row["status"],
                "attempts": row["attempts"],
                "inputs": declared.get(row["node_id"]),
                "output": None if done is None else done.output,
                "error": row.get("error"),
                "question": row.get("question"),
                "tokens": row["tokens_in"] + row["tokens_out"],
                "cost": row["cost"],
                "latency_ms": row["latency_ms"],
            }
        )
    return {
        "run_id": run_id,
        "graph": trace["graph_id"],
        "graph_path": note.get("graph_path"),
        "status": trace["status"],
        "inputs": records.inputs,
        "output": last.data.get("output") if last is not None else None,
        "error": last.data.get("error") if last is not None else None,
        "questions": [q for _, _, _, q in records.waiting],
        "total_tokens": trace["total_tokens"],
        "total_cost": trace["total_cost"],
        "duration_ms": trace["duration_ms"],
        "nodes": nodes,
    }


def _declared_inputs(path: object) -> dict[str, list[str]]:
    """Each node's declared inputs, from the recorded graph file (empty if it cannot load)."""
    if not isinstance(path, str):
        return {}
    from converge.errors import ConvergeError
    from converge.orchestration import load_graph

    try:
        graph = load_graph(path)
    except (ConvergeError, ImportError):
        return {}
    return {n.id: list(n.inputs) for n in graph.nodes if n.inputs is not None}


async def cancel_run(store: SQLiteStore, run_id: str, wait: float) -> str:
    """Cancel run ``run_id``; returns what was done, for one line of output.

    - ended (completed, failed, cancelled): nothing to cancel (``StateError``);
    - waiting for an answer: no process runs it, so ``run.cancelled`` is logged here;
    - running in a live process on this host: a request is written and, for up to ``wait``
      seconds, its ``run.cancelled`` awaited; a process on another host gets the request;
    - running, but its process is gone (this host): ``run.cancelled`` is logged here.
    """
    from converge.errors import StateError, ValidationError
    from converge.orchestration._records import read_records
    from converge.protocol.event import Event

    async def records() -> Any:
        found = await store.read(trace_id=run_id.split("/", 1)[0])
        return read_records([e for e in found if e.subject == run_id])

    state = await records()
    note = await run_note(store, run_id)
    alive = _alive(note)
    # A new run's `run.started` is written with its first result: until then, the note
    # `converge run` wrote beside it says it exists.
    if state.started is None and (not note or alive is False):
        raise ValidationError(f"no run {run_id!r} in {store.path}", field="run_id")
    if state.ended is not None:
        raise StateError(f"run {run_id} has already ended ({state.ended.kind}): nothing to cancel")
    if state.started is not None and (state.waiting or alive is False):
        why = "waiting for an answer" if state.waiting else "its process is gone"
        event = Event(
            kind="run.cancelled",
            trace_id=run_id.split("/", 1)[0],
            subject=run_id,
            data={"by": "converge cancel", "reason": why},
            parent_id=state.started.id,
        )
        await store.append([event])
        return f"run {run_id} cancelled ({why})"
    await store.put(CANCEL_KEY + run_id, b"requested")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if (await records()).ended is not None:
            return f"run {run_id} cancelled"
        await _sleep(0.1)
    where = f"pid {note.get('pid')}" if note.get("pid") else "its process"
    return f"cancellation of run {run_id} requested; {where} will stop it"


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def _alive(note: dict[str, Any]) -> bool | None:
    """Whether the process that runs the run lives (None: cannot tell, e.g. another host)."""
    pid, host = note.get("pid"), note.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid() or None


def graph_label(path: object) -> str:
    """A graph file path for display (relative to the cwd when under it)."""
    if not isinstance(path, str):
        return ""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path
