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

**Run ids** (``resolve_run_id``), wherever a command takes one: the id itself, ``last`` (the
run started last), or a prefix of one, as git takes a commit (``01M95`` for
``01M955TJNYBNR3MBYCPNSXMMZP``); a prefix that fits several runs is refused with them listed,
and an id that fits none is refused with the closest known one (``did you mean``). A child run
of a subgraph node is the parent's id (or prefix, or ``last``) then ``/node/pass``.

``show`` lists each pass with its inputs as it got them (``records.pass_inputs``: the keys its
``node.start`` logged, valued from the log), its attempts and each failed try's error
(``errors``: the first is kept, whatever the retries did after it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converge.cli._run import CANCEL_KEY, RUN_KEY, run_note

if TYPE_CHECKING:
    from converge.orchestration.ownership import Verdict
    from converge.store import SQLiteStore

__all__ = ["cancel_run", "list_runs", "resolve_run_id", "show_run"]

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
    from converge.orchestration.records import pass_inputs, read_records
    from converge.orchestration.trace import trace_of

    events = await store.read(trace_id=run_id.split("/", 1)[0])
    own = [e for e in events if e.subject == run_id]
    records = read_records(own)
    if records.started is None:
        raise ValidationError(f"no run {run_id} in {store.path}", field="run_id")
    trace = trace_of(events, run_id)
    note = await run_note(store, run_id)
    given = pass_inputs(own)
    errors: dict[tuple[str, int], list[str]] = {}
    for ev in own:
        if ev.kind in ("node.retry", "node.failed") and "node" in ev.data:
            key = (ev.data["node"], int(ev.data.get("iteration", 1)))
            errors.setdefault(key, []).append(str(ev.data.get("error")))
    last = next((e for e in reversed(own) if e.kind in (*_ENDS, "run.resumed")), None)
    nodes = []
    for row in trace["nodes"]:
        key = (row["node_id"], row["iteration"])
        done = records.done.get(key)
        inputs = given.get(key)
        nodes.append(
            {
                "node": row["node_id"],
                "iteration": row["iteration"],
                "agent": row["agent"],
                "status": row["status"],
                "attempts": row["attempts"],
                "inputs": None if inputs is None else {k: _jsonable(v) for k, v in inputs.items()},
                "output": None if done is None else done.output,
                "error": row.get("error"),
                "errors": errors.get(key, []),
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


def _jsonable(value: Any) -> Any:
    """An input's value as ``show`` prints it: ``None`` for ``MISSING`` (nothing to read)."""
    from converge.core.missing import MISSING

    return None if value is MISSING else value


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
                raise ValidationError(f"no run {run_id} in {store.path}", field="run_id")
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


async def resolve_run_id(store: SQLiteStore, text: str) -> str:
    """The run ``text`` names: an id, ``last``, or an unambiguous prefix of an id (each
    optionally followed by ``/node/pass``, a subgraph's child run).

    Raises:
        ValidationError: no run fits (with the closest id, if one is close), or several do.
    """
    from converge.core.spelling import did_you_mean
    from converge.errors import ValidationError

    head, sep, tail = text.partition("/")
    if head != "last" and (
        await store.read(trace_id=head, kinds=("run.started",), limit=1)
        or await store.get(RUN_KEY + head) is not None
    ):
        return text  # an id as it is: found without reading every run
    started: dict[str, float] = {}
    for ev in await store.read(kinds=("run.started",)):
        if "/" not in ev.subject:
            started.setdefault(ev.subject, ev.at)
    known = set(started) | {e.key[len(RUN_KEY) :] for e in await store.list(RUN_KEY)}
    if head == "last":
        if not started:
            raise ValidationError(f"no runs yet in {store.path}", field="run_id")
        return max(started, key=lambda r: (started[r], r)) + sep + tail
    fits = sorted(k for k in known if head and k.startswith(head))
    if len(fits) == 1:
        return fits[0] + sep + tail
    if fits:
        shown = ", ".join(fits[:5]) + (", …" if len(fits) > 5 else "")
        raise ValidationError(
            f"run id {head!r} fits {len(fits)} runs ({shown}): give more of it", field="run_id"
        )
    raise ValidationError(
        f"no run {text} in {store.path}{did_you_mean(head, known)}", field="run_id"
    )
