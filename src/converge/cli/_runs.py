"""Runs read back: ``converge runs``, ``show`` and ``cancel``.

A run's status is its last ``run.*`` event: ``completed``, ``failed``, ``waiting``,
``cancelled``, ``interrupted``; or, started or resumed and not ended, ``running`` while the
process that owns it is alive (``running (pid 123 on host, lease renewed 2 s ago)``) and
``interrupted`` once it is not (it died: ``converge resume`` continues it). Duration is from
``run.started`` to the run's last end event (pauses included); cost sums its nodes'
``usage.cost``. Child runs of subgraph nodes (ids with ``/``) are listed within their parent,
not as runs. A running run's owner (pid, host, lease) and an interrupted one's
``interrupted_because`` are in ``--json``. A new run's ``run.started`` is durable with its first
result, or 0.1-0.2 s after it starts if that is slower (the engine's announcer), so a running run
is listed within 0.2 s (``cancel`` finds it earlier, through its ``cli/run/`` key).

``cancel`` marks a run that is WAITING or interrupted (logged so, or its owner dead by the
ownership rule) ``run.cancelled`` itself: no process runs it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converge.cli._run import CANCEL_KEY, run_note

if TYPE_CHECKING:
    from converge.orchestration.ownership import Verdict
    from converge.store import SQLiteStore

__all__ = ["cancel_run", "list_runs", "show_run"]

_RUN_KINDS = (
    "run.started",
    "run.resumed",
    "run.completed",
    "run.failed",
    "run.waiting",
    "run.cancelled",
    "run.interrupted",
    "node.done",
)
_ENDS = ("run.completed", "run.failed", "run.waiting", "run.cancelled", "run.interrupted")


async def list_runs(store: SQLiteStore, limit: int | None) -> list[dict[str, Any]]:
    """The store's runs, newest first: id, graph, status, started, duration_ms, cost (and, for
    a run being executed, ``owner``: its process, from the owner's lease)."""
    runs: dict[str, dict[str, Any]] = {}
    owners: dict[str, str | None] = {}  # the owner named by the last start of open runs
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
            owners[run_id] = ev.data.get("owner")
            continue
        run = runs.get(run_id)
        if run is None:
            continue
        if ev.kind == "node.done":
            run["cost"] += float((ev.data.get("usage") or {}).get("cost", 0.0))
        elif ev.kind == "run.resumed":
            run["status"] = "running"
            owners[run_id] = ev.data.get("owner")
        else:
            run["status"] = ev.kind.removeprefix("run.")
            run["ended_at"] = ev.at
            run["duration_ms"] = round((ev.at - run["started_at"]) * 1e3, 3)
            owners.pop(run_id, None)
    found = sorted(runs.values(), key=lambda r: r["started_at"], reverse=True)
    if limit is not None:
        found = found[:limit]
    for run in found:
        run["cost"] = round(run["cost"], 10)
        if run["status"] == "running":
            owner = owners.get(run["run_id"])
            owner_id = owner if isinstance(owner, str) else None
            _owned(run, await _verdict(store, run["run_id"], owner_id))
    return found


async def _verdict(store: SQLiteStore, run_id: str, owner_id: str | None) -> Verdict:
    from converge.core.clock import system_clock
    from converge.orchestration.ownership import judge, read_owner

    return judge(await read_owner(store, owner_id), run_id, system_clock.now())


def _owned(run: dict[str, Any], verdict: Verdict) -> None:
    """Set the status of an open run from its owner's verdict: ``running`` with ``owner`` (its
    ``summary`` reads ``pid … on host, lease renewed … ago``), or ``interrupted`` with
    ``interrupted_because``."""
    from converge.core.clock import system_clock
    from converge.orchestration.ownership import describe_owner

    owner = verdict.owner
    if verdict.alive and owner is not None:
        run["status"] = "running"
        run["owner"] = {
            "id": owner.id,
            "host": owner.host,
            "pid": owner.pid,
            "renewed_at": owner.renewed_at,
            "expires_at": owner.expires_at,
            "summary": describe_owner(owner, system_clock.now()),
        }
    else:
        run["status"] = "interrupted"
        run["interrupted_because"] = verdict.reason


async def show_run(store: SQLiteStore, run_id: str) -> dict[str, Any]:
    """Run ``run_id`` in detail: its inputs, status, result and nodes (exit 2 if unknown)."""
    from converge.errors import ValidationError
    from converge.orchestration.records import read_records
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
    found = {
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
    if records.last_start is not None:
        owner = records.last_start.data.get("owner")
        _owned(found, await _verdict(store, run_id, owner if isinstance(owner, str) else None))
    return found


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
    - waiting for an answer, or interrupted (ended so, or its owner is dead): no process runs
      it, so ``run.cancelled`` is logged here — unless a process takes it over meanwhile (the
      write is guarded like a resume's), then as below;
    - being executed by a live owner: a request is written and, for up to ``wait`` seconds, its
      ``run.cancelled`` awaited (a ``converge run`` or ``resume`` process polls for requests).
    """
    from converge.errors import StateError, ValidationError
    from converge.orchestration.ownership import append_unowned, claim_version
    from converge.orchestration.records import read_records
    from converge.protocol.event import Event

    async def records() -> Any:
        found = await store.read(trace_id=run_id.split("/", 1)[0])
        return read_records([e for e in found if e.subject == run_id])

    for _ in range(3):  # a process that takes the run over meanwhile makes this look again
        version = await claim_version(store, run_id)  # before the log, as a resume reads it
        state = await records()
        if state.started is None:
            # A new run's `run.started` is written with its first result: until then, the
            # note `converge run` wrote beside it says it exists.
            if not await run_note(store, run_id):
                raise ValidationError(f"no run {run_id!r} in {store.path}", field="run_id")
            return await _request(store, run_id, None, wait, records)
        ended = state.ended
        if ended is not None and ended.kind != "run.interrupted":
            what = ended.kind.removeprefix("run.")
            raise StateError(f"run {run_id} has already ended ({what}): nothing to cancel")
        why: str | None = None
        verdict = None
        if state.waiting:
            why = "waiting for an answer"
        elif ended is not None:
            why = "it was interrupted"
        else:
            owner = state.last_start.data.get("owner") if state.last_start is not None else None
            verdict = await _verdict(store, run_id, owner if isinstance(owner, str) else None)
            if not verdict.alive:
                why = f"it was interrupted: {verdict.reason}"
        if why is None:
            return await _request(store, run_id, verdict, wait, records)
        event = Event(
            kind="run.cancelled",
            trace_id=run_id.split("/", 1)[0],
            subject=run_id,
            data={"by": "converge cancel", "reason": why},
            parent_id=state.started.id,
        )
        if await append_unowned(store, run_id, version, [event]):
            return f"run {run_id} cancelled ({why})"
    raise StateError(f"run {run_id} keeps being taken over by other processes: try again")


async def _request(
    store: SQLiteStore, run_id: str, verdict: Verdict | None, wait: float, records: Any
) -> str:
    """Ask the process running ``run_id`` to cancel it, and wait up to ``wait`` s for its end."""
    from converge.cli._run import cancel_request

    await store.put(CANCEL_KEY + run_id, cancel_request())
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if (await records()).ended is not None:
            return f"run {run_id} cancelled"
        await _sleep(0.1)
    owner = verdict.owner if verdict is not None else None
    who = f"pid {owner.pid} on {owner.host}" if owner is not None else "the process running it"
    return (
        f"cancellation of run {run_id} requested; {who} has not stopped it yet (a `converge "
        "run` or `resume` process stops it within a moment; an engine of a program of yours "
        "stops it only through Engine.cancel)"
    )


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def status_text(run: dict[str, Any]) -> str:
    """A run's status for a table: ``running (pid 123 on host, lease renewed 2 s ago)``."""
    owner = run.get("owner")
    if run["status"] == "running" and isinstance(owner, dict):
        return f"running ({owner['summary']})"
    return str(run["status"])


def graph_label(path: object) -> str:
    """A graph file path for display (relative to the cwd when under it)."""
    if not isinstance(path, str):
        return ""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path
