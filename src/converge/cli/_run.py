"""``converge run`` and ``converge resume``: a graph file run.

They run a graph file on the embedded SQLite store.

- ``--input key=value``: the value is decoded as JSON when it parses as JSON (``n=3`` is an int,
  ``tags=["a","b"]`` a list, ``ok=true`` a bool, ``name="3"`` the string ``3``), else it is the
  raw string (``topic=cats``; ``x=NaN``: JSON has no NaN, and a run stores none). ``--input
  key=@file`` is the file's text, never decoded. ``--answer`` follows the ``key=value`` rule.
  JSON is strict: ``NaN``, ``Infinity`` and ``1e999`` (which Python's reader takes as floats)
  stay strings, since a run stores no non-finite number.
- The graph file's absolute path is recorded beside the run, in the store key
  ``cli/run/<run id>`` (with the pid and host of the process running it), so ``converge
  resume`` finds it without ``--graph``.
- ``converge cancel`` in another process writes ``cli/cancel/<run id>``; the running command
  polls for it (every 0.2 s) and cancels the run on purpose (``Engine.cancel``), which logs
  ``run.cancelled``. A request carries its time and is honoured only by a command begun before
  it. Ctrl-C interrupts the run (``run.interrupted``, exit 130). Either way the run stays
  resumable: ``converge resume`` clears the request and finishes it.
- The process running a run owns it (the engine's lease, ``converge.orchestration.ownership``):
  ``converge resume`` of a run whose owner is alive is refused (``RunOwned``, exit 1) before
  anything is touched, its notes included. ``--run-id X`` reserves the id in the store
  (``put_if_absent``) before anything runs, so two commands given one id cannot both run it.
- A graph that needs coordination services gets them over the run's store (``_services``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converge.cli._config import Settings, fail

if TYPE_CHECKING:
    from converge.cli._agents_config import AgentsConfig
    from converge.orchestration import Engine, Graph
    from converge.protocol import Event
    from converge.store import SQLiteStore

Observer = Callable[["Event"], None]
"""Sees each event of the run as it is logged (an engine listener: when, for live progress)."""
StreamListener = Callable[[str, str | None, dict[str, Any]], None]
"""Hears each event the run streams, its chunks included (kind, node, data)."""

__all__ = ["RunReport", "parse_inputs", "parse_value", "resume_run", "start_run"]

RUN_KEY = "cli/run/"
CANCEL_KEY = "cli/cancel/"
POLL_SECONDS = 0.2


def _quiet(line: str) -> None:
    """Say nothing (the default for the agents' start and stop lines)."""


class RunReport:
    """How a run (or its continuation) ended, as the CLI reports it."""

    def __init__(self, run_id: str, status: str, data: dict[str, Any]) -> None:
        self.run_id = run_id
        self.status = status
        """completed, failed, waiting or cancelled."""
        self.data = data
        """The end event's data (``output``, ``error``, ``questions``…)."""
        self.outputs: dict[str, Any] = {}
        self.usage: dict[str, Any] = {}


def parse_value(text: str) -> Any:
    """JSON if ``text`` parses as JSON, else ``text`` itself. JSON has no ``NaN`` or
    infinity (Python's reader takes ``NaN``, ``Infinity`` and ``1e999``): those stay strings."""
    try:
        return json.loads(text, parse_constant=_not_json, parse_float=_finite)
    except ValueError:
        return text


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value - value != 0.0:
        raise ValueError(f"{text} is not a finite number")
    return value


def parse_inputs(items: list[str]) -> dict[str, Any]:
    """``key=value`` and ``key=@file`` items as a dict (exit 2 on a bad one)."""
    inputs: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"bad --input {item!r}: expected key=value or key=@file", 2)
        if value.startswith("@"):
            path = Path(value[1:])
            try:
                inputs[key.strip()] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or "not UTF-8 text"
                fail(f"bad --input {key}: cannot read {path}: {reason}", 2)
        else:
            inputs[key.strip()] = parse_value(value)
    return inputs


def load(path: Path) -> Graph:
    """Load and compile the graph file (``ValidationError`` with file and line).

    Agents named ``module:attr`` are imported with the current directory on the import path,
    as ``python -m`` and ``uvicorn module:app`` do: a project's own modules resolve from where
    the command runs.
    """
    from converge.orchestration import load_graph

    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    graph = load_graph(path)
    graph.compile()
    return graph


async def open_store(cfg: Settings, *, create: bool, read_only: bool = False) -> SQLiteStore:
    """Open the configured store (without ``create``, a missing file is bad input; with
    ``read_only``, nothing is ever written to it)."""
    from converge.store import SQLiteStore

    if not create and not cfg.store.exists():
        fail(f"no store at {cfg.store}", 2)
    if read_only:
        return await SQLiteStore.open(cfg.store, busy_timeout=cfg.busy_timeout, read_only=True)
    if create:
        cfg.store.parent.mkdir(parents=True, exist_ok=True)
    return await SQLiteStore.open(cfg.store, busy_timeout=cfg.busy_timeout, create=create)


async def start_run(
    cfg: Settings,
    graph_path: Path,
    inputs: dict[str, Any],
    run_id: str,
    *,
    chosen: bool,
    observe: Observer | None = None,
    listener: StreamListener | None = None,
    tracer_provider: Any = None,
    agents: AgentsConfig | None = None,
    echo: Callable[[str], None] = _quiet,
) -> RunReport:
    """Run the graph at ``graph_path`` as run ``run_id`` (``chosen``: the user's ``--run-id``,
    reserved before anything runs; else a new id made by the command, which knows it before
    the run starts), streaming its events to ``listener`` and showing them to ``observe`` as
    they are logged (and to an ``OTelListener`` on ``tracer_provider`` when one is given),
    with the coordination services its nodes need on the store and the agents of ``agents``
    running beside it (``_services``)."""
    from converge.cli._services import run_services
    from converge.errors import ValidationError
    from converge.orchestration import Engine

    graph = load(graph_path)
    missing = sorted(graph.compile().graph_inputs - inputs.keys())
    if missing:
        raise ValidationError(
            f"the graph reads inputs it was not given: {', '.join(missing)} "
            f"(pass --input {missing[0]}=...)"
        )
    from converge.orchestration.ownership import reserve

    if "/" in run_id or not run_id.strip():
        raise ValidationError(f"bad run id {run_id!r}: no '/' and not empty", field="run_id")
    since = time.time()
    async with await open_store(cfg, create=True) as store:
        # A chosen id is taken for good before anything runs: of two commands given the same
        # id at once, one is refused (the run's start is written only with its first result).
        if await store.read(trace_id=run_id, kinds=("run.started",), limit=1) or (
            chosen and not await reserve(store, run_id)
        ):
            raise ValidationError(
                f"run {run_id} already exists: continue it with `converge resume {run_id}`"
            )
        await _record_run(store, run_id, graph_path)
        listeners: list[Any] = [] if observe is None else [observe]
        if tracer_provider is not None:
            from converge.observability.otel import OTelListener

            listeners.append(OTelListener(tracer_provider))
        async with (
            _agents_closed(graph),
            run_services(cfg, store, graph, agents, echo) as services,
            Engine(
                store,
                listeners=listeners,
                lease=lease_policy(cfg),
                services=services,
            ) as engine,
        ):

            async def drive() -> RunReport:
                outcome = RunReport(run_id, "cancelled", {})
                async for ev in engine.stream(graph, inputs, run_id=run_id):
                    if listener is not None:
                        listener(ev.kind, ev.node, ev.data)
                    if ev.kind == "node.done" and ev.node is not None:
                        outcome.outputs[ev.node] = ev.data.get("output")
                    if ev.kind in _ENDS:
                        outcome.status, outcome.data = ev.kind.removeprefix("run."), ev.data
                return outcome

            return await _cancellable(store, engine, run_id, drive, since)


@contextlib.asynccontextmanager
async def _agents_closed(graph: Graph) -> AsyncIterator[None]:
    """Close, on the way out, the agents the graph file made (``kind: llm`` ones hold an HTTP
    client): they live for this command only. A failure to close is logged, not raised: the
    run's outcome is what the command reports."""
    try:
        yield
    finally:
        for name, agent in graph.agents.items():
            close = getattr(agent, "aclose", None)
            if isinstance(agent, str) or close is None:
                continue
            try:
                await close()
            except Exception:
                logging.getLogger(__name__).warning("closing agent %r failed", name, exc_info=True)


def lease_policy(cfg: Settings) -> Any:
    """The engine's ``LeasePolicy`` from the settings."""
    from converge.orchestration.ownership import LeasePolicy

    return LeasePolicy(ttl=cfg.lease_ttl, renew_every=cfg.lease_renew)


async def resume_run(
    cfg: Settings,
    run_id: str,
    graph_path: Path | None,
    answer: Any,
    *,
    observe: Observer | None = None,
    listener: StreamListener | None = None,
    history: Callable[[list[Event]], None] | None = None,
    agents: AgentsConfig | None = None,
    echo: Callable[[str], None] = _quiet,
) -> tuple[RunReport, Path]:
    """Continue run ``run_id`` (``answer`` answers its open question); ``history`` first gets
    the events of the passes logged before, then ``listener`` hears the continuation's events
    (chunks included) and ``observe`` sees them as they are logged. The run gets the services
    and agents ``start_run`` gives it."""
    from converge.cli._services import run_services
    from converge.core.clock import system_clock
    from converge.errors import ValidationError
    from converge.orchestration import Engine, RunFailed
    from converge.orchestration.ownership import check_resumable

    since = time.time()
    async with await open_store(cfg, create=False) as store:
        # A run that a live process executes is refused before its notes are touched (the
        # engine checks again, atomically, as it takes the run over).
        await check_resumable(store, run_id, system_clock.now())
        if graph_path is None:
            graph_path = await recorded_graph(store, run_id)
            if graph_path is None:
                raise ValidationError(
                    f"run {run_id} has no recorded graph file: pass --graph GRAPH.yaml"
                )
        graph = load(graph_path)
        await _record_run(store, run_id, graph_path)
        if history is not None:
            found = await store.read(trace_id=run_id.split("/", 1)[0])
            history([ev for ev in found if ev.subject == run_id and ev.kind.startswith("node.")])
        async with (
            _agents_closed(graph),
            run_services(cfg, store, graph, agents, echo) as services,
            Engine(
                store,
                lease=lease_policy(cfg),
                services=services,
                listeners=[] if observe is None else [observe],
            ) as engine,
        ):

            async def drive() -> RunReport:
                try:
                    result = await engine.resume(graph, run_id, answer=answer, listener=listener)
                except RunFailed as exc:
                    result = exc.result
                status = str(result.status)
                data = {
                    "output": result.output,
                    "error": result.error,
                    "node": result.failed_node,
                    "questions": result.questions,
                }
                outcome = RunReport(run_id, status, data)
                outcome.outputs = dict(result.outputs)
                return outcome

            return await _cancellable(store, engine, run_id, drive, since), graph_path


_ENDS = ("run.completed", "run.failed", "run.waiting", "run.cancelled", "run.interrupted")


async def _cancellable(
    store: SQLiteStore,
    engine: Engine,
    run_id: str,
    drive: Callable[[], Awaitable[RunReport]],
    since: float,
) -> RunReport:
    """Run ``drive`` while polling for a ``converge cancel`` request, which cancels the run on
    purpose (it logs ``run.cancelled`` itself, on the way out). A request made before
    ``since`` (when this command began) was for a process that ran the run before: ignored.
    """
    requested = False
    outcome: RunReport | None = None

    async def run() -> None:
        nonlocal outcome
        try:
            outcome = await drive()
        finally:
            watcher.cancel()

    async def watch() -> None:
        nonlocal requested
        # The request comes from another process through the store: there is nothing to wait
        # on but the store itself.
        while not _requested(await store.get(CANCEL_KEY + run_id), since):  # noqa: ASYNC110
            await asyncio.sleep(POLL_SECONDS)
        requested = True
        if not engine.cancel(run_id):
            runner.cancel()  # the run has not started (or is ending): stop the command

    async with asyncio.TaskGroup() as group:
        runner = group.create_task(run())
        watcher = group.create_task(watch())
    if requested or outcome is None:
        await store.delete(CANCEL_KEY + run_id)
        return RunReport(run_id, "cancelled", {"error": "cancelled by `converge cancel`"})
    return outcome


def _requested(entry: Any, since: float) -> bool:
    """Whether a cancel request (``{"at": time}``) stands for a command begun at ``since``."""
    if entry is None:
        return False
    try:
        at = json.loads(entry.value).get("at")
    except (ValueError, AttributeError):
        return False
    return isinstance(at, (int, float)) and at >= since


def cancel_request() -> bytes:
    """A cancel request made now."""
    return json.dumps({"at": time.time()}).encode()


async def _record_run(store: SQLiteStore, run_id: str, graph_path: Path) -> None:
    note = {
        "graph_path": str(graph_path),  # absolute: the commands resolve it
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }
    await store.put(RUN_KEY + run_id, json.dumps(note).encode())


async def run_note(store: SQLiteStore, run_id: str) -> dict[str, Any]:
    """What ``converge run`` recorded beside run ``run_id`` (empty if nothing)."""
    entry = await store.get(RUN_KEY + run_id)
    if entry is None:
        return {}
    try:
        note = json.loads(entry.value)
    except ValueError:
        return {}
    return note if isinstance(note, dict) else {}


async def graph_of(cfg: Settings, run_id: str) -> Path:
    """The graph file recorded for ``run_id`` in the configured store (bad input if none)."""
    from converge.errors import ValidationError

    async with await open_store(cfg, create=False, read_only=True) as store:
        path = await recorded_graph(store, run_id)
        started = await store.read(trace_id=run_id.split("/", 1)[0], kinds=("run.started",))
    if path is None and not any(ev.subject == run_id for ev in started):
        raise ValidationError(f"no run {run_id} in {cfg.store}", field="run_id")
    if path is None:
        raise ValidationError(f"run {run_id} has no recorded graph file: pass --graph GRAPH.yaml")
    return path


async def recorded_graph(store: SQLiteStore, run_id: str) -> Path | None:
    """The graph file recorded for run ``run_id``, if any."""
    path = (await run_note(store, run_id)).get("graph_path")
    return Path(path) if isinstance(path, str) else None
