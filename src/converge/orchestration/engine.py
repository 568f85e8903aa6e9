"""The ``Engine``: runs graphs; continues, forks, streams, batches.

It runs graphs, and continues, forks, streams and batches their runs.

```python
async with Engine(store=await SQLiteStore.open("runs.db")) as engine:
    result = await engine.execute(graph, {"source_code": code})      # wait for the result
    handle = await engine.submit(graph, {"source_code": code})       # a run id at once
    async for event in engine.stream(graph, {"source_code": code}):  # events as they happen
        ...
    results = await engine.batch(graph, many_inputs, concurrency=8)  # input order
    result = await engine.resume(graph, run_id, answer="approved")   # after a pause or a crash
```

Runs are logged in the engine's store (a ``MemoryStore`` when none is given); everything about
a run — its results, ``resume``, ``fork`` and its trace — is read back from that log.

Each engine is the *owner* of the runs it executes (``ownership``): it holds a lease in the
store while they are in flight, and ``resume`` refuses a run whose owner is alive
(``RunOwned``), in this process or another. A run stopped on purpose (``cancel``,
``RunHandle.cancel``) ends CANCELLED; a run whose task is cancelled otherwise (Ctrl-C, a
shutdown, a caller's timeout) ends INTERRUPTED. Both are resumable.

**Modes.** ``execute`` raises ``RunFailed`` for FAILED and CANCELLED (WAITING is a result);
``submit`` needs ``async with Engine`` (runs belong to its task group; ``RunHandle.cancel``
stops one run, which logs ``run.cancelled``); ``stream`` yields events as they happen,
``node.chunk`` included (chunks are streamed, never logged); ``batch`` keeps input order, is
bounded, and returns failures as results. ``stream(run_id=...)`` runs under a chosen id: one
without ``/`` that names no run in the store (else ``ValidationError``, field ``run_id``, before
anything runs; one read, made only for a chosen id). A run starts one of three ways
(``_run_new``, ``_run_resumed``, ``_run_forked``: what each logs first), then one driver
executes it (``_drive``: the lease, the take-over, the timeout, cancelled vs interrupted). The
run's timeout is the smaller of ``config.timeout_seconds`` and
``execution.total_timeout_seconds``. ``aclose()`` (idempotent; ``async with`` calls it after the
submitted runs end) shuts the thread pool and closes the lease.

**Cancelled vs interrupted.** ``cancel(run_id)`` (also ``RunHandle.cancel()`` and ``converge
cancel``) cancels the run's task with a count the engine keeps; if every cancellation of that
task was one of these (``Task.uncancel()`` back to 0) the run logs ``run.cancelled`` and returns
CANCELLED. Any other cancellation logs ``run.interrupted`` and the ``CancelledError`` goes on. A
run whose owner died is read as interrupted without anything being written. ``cancel`` leaves
alone a run whose end is being written and a subgraph's child run (it shares its parent's task).

**Resume** replays the log: the scheduler is driven again from the start, finished passes are
read (never re-run), the rest run; only a graph with the same fingerprint may resume a run.
**Checkpoints**: ``ctx.checkpoint(label)`` / ``checkpoint(run_id, label)`` log
``run.checkpoint``; ``fork(run_id, label, new_input=…)`` starts a new run whose log begins with
copies of the passes finished before that point; the rest run again; the original is untouched.
**Re-planning**: ``Engine(on_node_failed=hook)``; when a node has run out of
retries and would fail the run, the hook gets a ``NodeFailure`` (node, error, inputs, outputs so
far) and may return ``Replacement`` nodes: they run in a chain in the node's place (the first gets
its inputs, each next one the previous output), each logged as a node of its own
(``node.replaced``), and the last one's output becomes the node's (``status: replanned``). They
are spliced into the failed node's place rather than into the graph, so resume needs nothing but
the log: a pass that finished is read back; one interrupted mid-replacement fails and asks again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import msgspec

from converge.core.clock import Clock, system_clock
from converge.core.ids import new_id
from converge.core.signing import maybe_nonfinite
from converge.core.user_code import WorkerThreads
from converge.errors import RunFailed, StateError, ValidationError
from converge.orchestration._attempt import FailureHook
from converge.orchestration._budget import AgentBudget
from converge.orchestration._loop import RunLoop
from converge.orchestration._missing import explain_nonfinite
from converge.orchestration._plan import ExecutionPlan
from converge.orchestration._results import (
    RunEvent,
    RunHandle,
    RunResult,
    RunStatus,
    check_run_transition,
)
from converge.orchestration._run_log import Announcer, EventListener, Listener
from converge.orchestration.graph import Graph
from converge.orchestration.ownership import (
    RUN_OWNER_KEY,
    LeasePolicy,
    OwnerLease,
    check_free,
    claim_version,
    owner_of,
    read_owner,
)
from converge.orchestration.records import RunRecords, agent_usage, read_records
from converge.orchestration.services import Services
from converge.orchestration.trace import metrics_of, trace_of
from converge.protocol.event import Event
from converge.store.base import Store
from converge.store.memory import MemoryStore

__all__ = [
    "Engine",
    "RunEvent",
    "RunFailed",
    "RunHandle",
    "RunResult",
    "RunStatus",
    "default_engine",
]

T = TypeVar("T")
_log = logging.getLogger(__name__)
_encoder = msgspec.msgpack.Encoder()
_FINISHED = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
_ANNOUNCE_AFTER = 0.1
"""Seconds after which a new run that has written nothing has its buffered start written:
other processes (``converge runs``) see a run whose first node is slow within twice this."""


class Engine:
    """Runs graphs over a store.

    Args:
        store: where runs are logged (a new ``MemoryStore`` if None).
        clock: time for events, timeouts' backoff and retries (wall-clock by default).
        id_factory: makes run ids.
        max_threads: the size of the pool that runs sync callables (bounded).
        on_node_failed: called when a node has run out of retries and would fail its run; the
            ``Replacement`` nodes it returns run in a chain in its place (the last one's output
            is the node's), and the run goes on. None (or an empty list): the run fails.
        services: what nodes of other kinds (tender, team, board, consensus) work with.
        listeners: called with every event a run of this engine logs, as it is logged (before
            it is written), e.g. ``converge.observability.otel.OTelListener``. A listener
            observes: it must not block, and what it raises is logged and ignored.
        lease: how long this engine's lease on its runs holds (``ttl``, 30 s) and how often it
            is renewed while runs are in flight (``renew_every``, 10 s): a process on another
            host may resume a run of this engine only once the lease has lapsed.
        keep_runs: with an in-memory store, how many finished runs (COMPLETED, FAILED,
            CANCELLED) it keeps: past that, the oldest one's log is dropped (its trace, resume
            and fork are gone with it). None keeps every run. A durable store keeps every run.
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        clock: Clock = system_clock,
        id_factory: Callable[[], str] = new_id,
        max_threads: int = 8,
        on_node_failed: FailureHook | None = None,
        services: Services | None = None,
        listeners: Sequence[EventListener] = (),
        lease: LeasePolicy | None = None,
        keep_runs: int | None = None,
        threads: WorkerThreads | None = None,
    ) -> None:
        self.listeners = tuple(listeners)
        self.on_node_failed = on_node_failed
        self.services = services or Services()
        self.store: Store = store if store is not None else MemoryStore()
        self.clock = clock
        self.id_factory = id_factory
        self._own_pool = threads is None
        self._pool = threads or WorkerThreads(max_threads, name="converge-node")
        self._finished: collections.deque[str] = collections.deque()
        self.keep_runs = keep_runs
        self._group: asyncio.TaskGroup | None = None
        self._handles: dict[str, RunHandle] = {}
        self._announcer = Announcer(_ANNOUNCE_AFTER)
        if lease is not None and not isinstance(lease, LeasePolicy):
            raise ValidationError(
                f"lease is a LeasePolicy, not {type(lease).__name__}", field="lease"
            )
        self.owner = OwnerLease(self.store, clock, lease or LeasePolicy())
        """This engine's lease on the runs it executes (``owner.id`` names it in their log)."""

    @property
    def keep_runs(self) -> int | None:
        """How many finished runs an in-memory store keeps (None: all); settable."""
        return self._keep_runs

    @keep_runs.setter
    def keep_runs(self, value: int | None) -> None:
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValidationError(
                    f"keep_runs must be an int >= 0 or None, not {value!r}", field="keep_runs"
                )
            if not isinstance(self.store, MemoryStore):
                raise ValidationError(
                    f"keep_runs bounds what an in-memory store keeps; "
                    f"{type(self.store).__name__} keeps every run",
                    field="keep_runs",
                )
        self._keep_runs = value

    async def _retire(self, result: RunResult) -> None:
        """Count a top-level run that ended; drop the oldest finished ones past ``keep_runs``."""
        keep = self._keep_runs
        if keep is None or result.status not in _FINISHED or "/" in result.run_id:
            return
        finished = self._finished
        finished.append(result.run_id)
        store = self.store
        assert isinstance(store, MemoryStore)
        while len(finished) > keep:
            run_id = finished.popleft()
            if run_id not in self.owner.active:  # resumed again meanwhile: it is running
                store.forget(run_id)
                if await store.get(RUN_OWNER_KEY + run_id) is not None:
                    await store.delete(RUN_OWNER_KEY + run_id)

    async def __aenter__(self) -> Self:
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        group, self._group = self._group, None
        try:
            if group is not None:  # waits for the runs submitted meanwhile
                await group.__aexit__(exc_type, exc, tb)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Release what the engine holds: its thread pool, and its lease (the owner record is
        removed from the store when no run of it is in flight). Idempotent. ``async with``
        calls it once the runs submitted in it have ended; an engine used without (``execute``,
        ``resume``…) is closed with it once its runs have ended."""
        if self._own_pool:
            self._pool.close()
        await self.owner.aclose()

    def _observe(self, event: Event) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # an observer's bug must not fail the run it watches
                _log.exception("engine listener %r failed on %s", listener, event.kind)

    # -- modes -------------------------------------------------------------------------------------

    async def execute(self, graph: Graph, inputs: Mapping[str, Any] | None = None) -> RunResult:
        """Run ``graph`` and wait: the result if it COMPLETED or is WAITING.

        Raises:
            ValidationError: a bad graph or missing inputs (before anything runs).
            RunFailed: the run FAILED (the exception carries the result).
        """
        return _raise_failed(await self._run_new(graph, inputs))

    async def submit(self, graph: Graph, inputs: Mapping[str, Any] | None = None) -> RunHandle:
        """Start a run and return its handle at once (needs ``async with engine``)."""
        if self._group is None:
            raise StateError("submit() needs a running engine: use `async with Engine(...)`")
        plan = graph.compile()
        run_id = self.id_factory()
        args = _inputs(plan.graph_inputs, inputs)
        handle = RunHandle(self, run_id, graph.name)
        # A cancelled child does not cancel the group: `cancel()` stops this run alone.
        task = self._group.create_task(
            self._run_new(graph, args, run_id=run_id, sink=handle._results)
        )
        handle._bind(task)
        self._handles[run_id] = handle
        task.add_done_callback(lambda _: self._handles.pop(run_id, None))
        return handle

    def handle(self, run_id: str) -> RunHandle | None:
        """The handle of a run this engine is running (None once it ended)."""
        return self._handles.get(run_id)

    def cancel(self, run_id: str) -> bool:
        """Stop run ``run_id`` on purpose, if this engine is executing it: its in-flight nodes
        are cancelled and it ends CANCELLED (``execute`` raises ``RunFailed``, ``stream`` yields
        ``run.cancelled``, a handle's ``wait`` returns the result). Returns whether it was
        found and still running (a run already ending is left to end). The child run of a
        subgraph node stops with its parent: cancel the parent. ``resume`` can still continue
        a cancelled run later, on purpose."""
        state: RunLoop | None = self.owner.active.get(run_id)
        return state is not None and state.cancel()

    async def stream(
        self,
        graph: Graph,
        inputs: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
    ) -> AsyncIterator[RunEvent]:
        """Run ``graph`` and yield its events as they happen; the last is the run's end.

        ``run_id`` names the new run (the engine's ``id_factory`` makes one if None): a
        non-empty id without ``/`` (a ``/`` names a subgraph's child run) that names no run in
        the engine's store. To take a chosen id for good before the run starts (of two
        processes given one id, one is refused), ``ownership.reserve`` it first.

        Raises:
            ValidationError: a bad ``run_id``, or a run by that id exists.
        """
        if run_id is None:
            run_id = self.id_factory()
        else:
            await self._check_new(run_id)
        queue: asyncio.Queue[RunEvent | None] = asyncio.Queue()
        chosen = run_id

        def listen(kind: str, node: str | None, data: dict[str, Any]) -> None:
            queue.put_nowait(RunEvent(kind=kind, run_id=chosen, node=node, data=data))

        async def drive() -> None:
            try:
                await self._run_new(graph, inputs, run_id=chosen, listener=listen)
            finally:
                queue.put_nowait(None)

        async with asyncio.TaskGroup() as group:
            task = group.create_task(drive())
            try:
                while (event := await queue.get()) is not None:
                    yield event
            finally:
                if not task.done():
                    task.cancel()

    async def batch(
        self,
        graph: Graph,
        inputs: Iterable[Mapping[str, Any]],
        *,
        concurrency: int = 10,
    ) -> list[RunResult]:
        """Run ``graph`` once per input, at most ``concurrency`` at a time. Results come in input
        order; a FAILED run is a result, not an exception, so it does not sink the others."""
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValidationError(f"concurrency must be an int >= 1, not {concurrency!r}")
        graph.compile()
        items = list(inputs)
        results: list[RunResult | None] = [None] * len(items)
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with gate:
                results[i] = await self._run_new(graph, items[i])

        async with asyncio.TaskGroup() as group:
            for i in range(len(items)):
                group.create_task(one(i))
        return [r for r in results if r is not None]

    # -- continuing runs ---------------------------------------------------------------------------

    async def resume(
        self,
        graph: Graph,
        run_id: str,
        *,
        answer: Any = None,
        listener: Callable[[str, str | None, dict[str, Any]], None] | None = None,
    ) -> RunResult:
        """Continue a run from its log: nodes that finished are read, never run again; nodes that
        had started run again (same ``idempotency_key``). ``answer`` answers the oldest open
        question of a WAITING run. A COMPLETED run's result is returned as it is. ``listener``
        gets each event of the continuation as it is logged, like ``stream``'s.

        Raises:
            ValidationError: no such run, or it was started by a different graph.
            RunFailed: the run FAILED again.
        """
        if not isinstance(run_id, str) or not run_id:
            raise ValidationError(f"invalid run id {run_id!r}", field="run_id")
        version = await claim_version(self.store, run_id)  # before the log: see ``ownership``
        records = await self._records(run_id)
        return _raise_failed(
            await self._run_resumed(graph, run_id, records, answer, listener, version)
        )

    async def _check_new(self, run_id: Any) -> None:
        """Refuse ``run_id`` as the id of a new run unless it is well formed and names no run
        of the store."""
        if not isinstance(run_id, str) or not run_id.strip() or "/" in run_id:
            raise ValidationError(
                f"bad run id {run_id!r}: a non-empty string without '/'", field="run_id"
            )
        if await self.store.read(trace_id=run_id, kinds=("run.started",), limit=1):
            raise ValidationError(
                f"run {run_id} already exists: continue it with resume", field="run_id"
            )

    # -- the three ways a run starts: new, resumed, forked -----------------------------------------

    def _loop(
        self,
        graph: Graph,
        plan: ExecutionPlan,
        run_id: str,
        inputs: dict[str, Any],
        *,
        records: RunRecords | None = None,
        listener: Listener | None = None,
        trace_id: str | None = None,
        budget: AgentBudget | None = None,
    ) -> RunLoop:
        """The loop of a run of ``graph``, before anything of it is logged."""
        state = RunLoop(
            plan,
            run_id,
            inputs,
            store=self.store,
            clock=self.clock,
            pool=self._pool,
            records=records,
            listener=listener,
            on_node_failed=self.on_node_failed,
            services=self.services,
            spawn=self._child,
            trace_id=trace_id,
            observer=self._observe if self.listeners else None,
            budget=budget,
        )
        state.plan_grants = graph.grants
        return state

    async def _run_new(
        self,
        graph: Graph,
        inputs: Mapping[str, Any] | None,
        *,
        run_id: str | None = None,
        listener: Listener | None = None,
        sink: list[RunResult] | None = None,
        trace_id: str | None = None,
        budget: AgentBudget | None = None,
    ) -> RunResult:
        """Start a new run of ``graph`` (a subgraph's child run: in its parent's ``trace_id``
        and ``budget``) and execute it to its end. ``sink`` gets its result even if it is
        cancelled (a submitted run's handle)."""
        plan = graph.compile()
        args = _inputs(plan.graph_inputs, inputs)
        state = self._loop(
            graph,
            plan,
            run_id or self.id_factory(),
            args,
            listener=listener,
            trace_id=trace_id,
            budget=budget,
        )
        started = {
            "graph": plan.name,
            "fingerprint": plan.fingerprint,
            "shape": plan.shape,
            "inputs": args,
            "owner": self.owner.id,
        }
        state.events.started_event = state.log("run.started", started).id
        # A submitted run (its id is out) is durable at once; another new run's `run.started`
        # goes with its first completion, or the announcer writes it if that is slow to come.
        return await self._drive(state, announced=sink is not None, sink=sink)

    async def _run_forked(
        self, graph: Graph, inputs: dict[str, Any], records: RunRecords, source: str, label: str
    ) -> RunResult:
        """Start a new run of ``graph`` whose log begins with copies of the passes in
        ``records`` (those of run ``source`` before its checkpoint ``label``)."""
        plan = graph.compile()
        args = _inputs(plan.graph_inputs, inputs)
        state = self._loop(graph, plan, self.id_factory(), args, records=records)
        started = {
            "graph": plan.name,
            "fingerprint": plan.fingerprint,
            "shape": plan.shape,
            "inputs": args,
            "owner": self.owner.id,
            "forked_from": source,
            "label": label,
        }
        state.events.started_event = state.log("run.started", started).id
        for (node, iteration), done in sorted(records.done.items(), key=lambda kv: kv[1].seq):
            copied = {
                "node": node,
                "iteration": iteration,
                "status": done.status,
                "output": done.output,
                "copied_from": source,
            }
            state.log("node.done", copied)
        return await self._drive(state, announced=True)

    async def _run_resumed(
        self,
        graph: Graph,
        run_id: str,
        records: RunRecords,
        answer: Any,
        listener: Listener | None = None,
        version: int = 0,
        budget: AgentBudget | None = None,
    ) -> RunResult:
        """Continue run ``run_id`` from its log (``records``, read after its ``run-owner/``
        key's ``version``), ``answer`` answering its oldest open question; take it over and
        execute it to its end. A COMPLETED run's result is returned as it is.

        Raises:
            ValidationError: the run was started by a different graph.
            RunOwned: its owner is alive, or another engine took it over first.
        """
        plan = graph.compile()
        assert records.started is not None
        if records.started.data.get("fingerprint") != plan.fingerprint:
            raise ValidationError(
                f"run {run_id} was started by a different version of graph "
                f"{records.started.data.get('graph')!r}: it cannot be resumed with this one",
                field="graph",
            )
        if records.ended is not None and records.ended.kind == "run.completed":
            return self._ended_result(graph, run_id, records)
        owner_id, _ = owner_of(records)
        check_free(run_id, records, await read_owner(self.store, owner_id), self.clock.now())
        check_run_transition(_logged_status(records), RunStatus.RUNNING, run_id)
        answered: dict[str, Any] = {}
        if records.waiting and answer is not None:
            node, iteration, index, _ = records.waiting[0]
            records.answers[(node, iteration, index)] = answer
            answered = {"node": node, "iteration": iteration, "index": index, "answer": answer}
        args = _inputs(plan.graph_inputs, records.inputs)
        state = self._loop(
            graph,
            plan,
            run_id,
            args,
            records=records,
            listener=listener,
            trace_id=records.started.trace_id,
            budget=budget,
        )
        state.events.started_event = records.started.id
        state.log("run.resumed", {"owner": self.owner.id, **answered})
        if answered:
            state.log("node.answered", answered)
        return await self._drive(state, announced=True, claim=version)

    async def _child(
        self,
        graph: Graph,
        inputs: dict[str, Any],
        run_id: str,
        trace_id: str,
        answer: Any,
        budget: AgentBudget,
    ) -> RunResult:
        """Start, or continue from its log, the child run ``run_id`` (a subgraph node's), its
        agents counted in its parent's ``budget``."""
        if not isinstance(graph, Graph):
            raise ValidationError(f"a subgraph is a Graph, not {type(graph).__name__}")
        # Most child runs are new: look for their start alone before reading the whole trace
        # (every event of every run in it), which would make each child cost more than the last.
        started = await self.store.read(trace_id=trace_id, kinds=("run.started",))
        if any(e.subject == run_id for e in started):
            version = await claim_version(self.store, run_id)
            records = read_records(_own(await self.store.read(trace_id=trace_id), run_id))
            return await self._run_resumed(
                graph, run_id, records, answer, version=version, budget=budget
            )
        return await self._run_new(graph, inputs, run_id=run_id, trace_id=trace_id, budget=budget)

    async def checkpoint(self, run_id: str, label: str) -> None:
        """Name the current point of a run (``fork`` can start from it)."""
        if not isinstance(label, str) or not label:
            raise ValidationError(f"a checkpoint label is a non-empty string, not {label!r}")
        await self._records(run_id)
        await self.store.append([_event(self, run_id, "run.checkpoint", {"label": label})])

    async def list_checkpoints(self, run_id: str) -> list[dict[str, Any]]:
        """The run's checkpoints in order: ``{label, seq, at}``."""
        records = await self._records(run_id)
        return [{"label": lb, "seq": seq, "at": at} for lb, seq, at in records.checkpoints]

    async def fork(
        self,
        graph: Graph,
        run_id: str,
        label: str,
        *,
        new_input: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """Start a new run from checkpoint ``label`` of ``run_id``: nodes finished before it keep
        their outputs; the rest run again in the new run, with the inputs updated by
        ``new_input``. The original run is not touched."""
        plan = graph.compile()
        source = await self._records(run_id)
        assert source.started is not None
        if source.started.data.get("fingerprint") != plan.fingerprint:
            raise ValidationError(
                f"run {run_id} was started by a different version of graph "
                f"{source.started.data.get('graph')!r}: it cannot be forked with this one",
                field="graph",
            )
        marks = [seq for lb, seq, _ in source.checkpoints if lb == label]
        if not marks:
            raise ValidationError(f"run {run_id} has no checkpoint {label!r}", field="label")
        cut = marks[-1]
        records = RunRecords()
        records.done = {k: d for k, d in source.done.items() if d.seq < cut}
        inputs = {**source.inputs, **(new_input or {})}
        _inputs(plan.graph_inputs, inputs)
        return _raise_failed(await self._run_forked(graph, inputs, records, run_id, label))

    # -- reading runs ------------------------------------------------------------------------------

    async def trace(self, run_id: str) -> dict[str, Any]:
        """The run's trace, from its log (see ``trace``), with
        ``coordination``: the intents, offers, awards, receipts, trust updates, ballots, votes
        and board tasks its nodes caused (``coordination_objects``), each attached to its node.
        """
        await self._records(run_id)
        return trace_of(await self.store.read(trace_id=run_id.split("/", 1)[0]), run_id)

    async def metrics(self, run_id: str) -> dict[str, Any]:
        """The run's metrics, from its log (see ``trace``)."""
        await self._records(run_id)
        return metrics_of(await self.store.read(trace_id=run_id.split("/", 1)[0]), run_id)

    # -- internals ---------------------------------------------------------------------------------

    async def _records(self, run_id: str) -> RunRecords:
        if not isinstance(run_id, str) or not run_id:
            raise ValidationError(f"invalid run id {run_id!r}", field="run_id")
        events = await self.store.read(trace_id=run_id.split("/", 1)[0])
        records = read_records(_own(events, run_id))
        records.spent = agent_usage(events, run_id)
        if records.started is None:
            raise ValidationError(f"no run {run_id!r} in this engine's store", field="run_id")
        return records

    def _ended_result(self, graph: Graph, run_id: str, records: RunRecords) -> RunResult:
        assert records.ended is not None
        data = records.ended.data
        outputs = {node: d.output for (node, _), d in sorted(records.done.items())}
        return RunResult(
            run_id=run_id,
            graph=graph.name,
            status=RunStatus.COMPLETED,
            output=data.get("output"),
            outputs=outputs,
        )

    async def _drive(
        self,
        state: RunLoop,
        *,
        announced: bool,
        sink: list[RunResult] | None = None,
        claim: int | None = None,
    ) -> RunResult:
        """Execute ``state``'s run as this engine's (its owner's) until it ends, log its end
        and return its result.

        ``announced``: its first events are written before anything runs (else with its first
        completion, or by the announcer). ``claim``: the version of its ``run-owner/`` key to
        take a resumed run over from (``RunLog.take_over``). ``sink`` gets its result even if
        it is cancelled. A run stopped on purpose (``cancel``) ends CANCELLED and returns;
        otherwise a cancellation (or a signal's exception) ends it INTERRUPTED and goes on; an
        error escaping it ends it FAILED and goes on — each logged if the run is this
        engine's (a resumed run stopped before it took the run over logs nothing).
        """
        owner = self.owner
        run_id = state.run_id
        events = state.events
        timeout = state.plan.timeout
        deadline: asyncio.Timeout | None = None
        state.task = asyncio.current_task()
        owner.hold(run_id, state)  # refuses a run this engine has in flight
        try:
            await owner.fresh()
            if claim is not None:
                # Taking the run over: the compare-and-set of its `run-owner/` key goes in one
                # unit with `run.resumed`, so of two processes resuming it one is refused.
                await events.take_over(claim, owner.id)
            if announced:
                await events.flush()
            else:
                self._announcer.add(events)
            if timeout is None:  # most runs: no timeout object to make and cancel
                await state.run()
            else:
                async with asyncio.timeout(timeout) as deadline:
                    await state.run()
        except TimeoutError as error:
            if deadline is None or not deadline.expired():  # not the run's timeout: a hook's
                await state.end_broken(error)
                owner.drop(run_id, state)
                raise
            state.move(RunStatus.FAILED, f"the run timed out after {timeout:g} s")
        except asyncio.CancelledError:
            # On purpose (``cancel``) if every cancellation of this task is one of ours: the
            # run ends CANCELLED and returns. Otherwise (Ctrl-C, a shutdown, a caller's
            # timeout) it is INTERRUPTED and the cancellation goes on.
            own = state.cancelled_on_purpose()
            if own:
                state.move(RunStatus.CANCELLED, "cancelled")
            else:
                state.move(RunStatus.INTERRUPTED, "interrupted")
            if claim is not None and not events.claimed:
                # Stopped before it took the run over: nothing of it was written, so nothing
                # is logged (the run is as it was).
                owner.drop(run_id, state)
                ended = state.unstarted()
            else:
                # Its end is logged even so: the write is queued before anything can interrupt
                # it.
                state.stopping = True
                try:
                    ended = await state.end()
                finally:
                    owner.drop(run_id, state)
            if sink is not None:
                sink.append(ended)
            await self._retire(ended)
            if own:
                return ended
            raise
        except Exception as error:
            if claim is None or events.claimed:
                await state.end_broken(error)
            owner.drop(run_id, state)  # lost the take-over: it wrote nothing
            raise
        except (KeyboardInterrupt, SystemExit):
            # A signal's (Ctrl-C pressed twice, a SIGTERM handler's ``sys.exit``): the run is
            # INTERRUPTED, as by a cancellation, and the exception goes on. What an agent
            # raises itself is its node's failure and does not come here (``is_interruption``).
            try:
                if claim is None or events.claimed:
                    state.move(RunStatus.INTERRUPTED, "interrupted")
                    state.stopping = True
                    with contextlib.suppress(Exception):  # the signal's exception goes on
                        ended = await state.end()
                        if sink is not None:
                            sink.append(ended)
            finally:
                owner.drop(run_id, state)
            raise
        finally:
            if not announced:
                self._announcer.discard(events)
        state.stopping = True
        try:
            ended = await state.end()
        finally:
            owner.drop(run_id, state)
        if sink is not None:
            sink.append(ended)
        await self._retire(ended)
        return ended


def _inputs(names: frozenset[str], inputs: Mapping[str, Any] | None) -> dict[str, Any]:
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, Mapping):
        raise ValidationError(f"a graph's inputs are a mapping, not {type(inputs).__name__}")
    missing = sorted(names - inputs.keys())
    if missing:
        raise ValidationError(
            f"the graph reads inputs it was not given: {', '.join(missing)}", field=missing[0]
        )
    if inputs:
        try:
            encoded = _encoder.encode(inputs)
        except (TypeError, ValueError, OverflowError):
            encoded = b""  # not data at all: the store refuses it when the run starts
        if maybe_nonfinite(encoded) and (why := explain_nonfinite(inputs, "inputs")):
            raise ValidationError(why, field="inputs")
    return dict(inputs)


def _own(events: list[Any], run_id: str) -> list[Any]:
    """The events of run ``run_id`` among those of its trace (child runs share the trace)."""
    return [e for e in events if e.subject == run_id]


def _logged_status(records: RunRecords) -> RunStatus:
    """Where a run stands by its log: how its last execution ended; WAITING if it paused; a
    run whose log ends with its start has lost its owner (``check_free``): INTERRUPTED."""
    if records.ended is not None:
        return RunStatus(records.ended.kind.removeprefix("run."))
    return RunStatus.INTERRUPTED if records.last_start is not None else RunStatus.WAITING


def _raise_failed(result: RunResult) -> RunResult:
    if result.status in (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED):
        raise RunFailed(result)
    return result


def _event(engine: Engine, run_id: str, kind: str, data: dict[str, Any]) -> Any:
    from converge.protocol.event import Event

    trace = run_id.split("/", 1)[0]
    return Event(kind=kind, trace_id=trace, subject=run_id, data=data, at=engine.clock.now())


# -- the quick start's engine ------------------------------------------------------------------

DEFAULT_KEEP_RUNS = 1000
"""How many finished runs a default engine keeps in memory unless told otherwise."""

_ATTRIBUTE = "_converge_default_engine"
_defaults: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Engine] = (
    weakref.WeakKeyDictionary()
)  # for a loop that takes no attribute of ours
_default_threads: WorkerThreads | None = None


def default_engine() -> Engine:
    """The running event loop's default engine: what ``Graph.execute()``, ``stream()``,
    ``batch()`` and ``run_sync()`` use when given no engine.

    One per event loop, made on first use and gone with its loop: it is kept on the loop
    itself, so the two are collected together once the loop is closed and dropped, and it
    holds nothing that outlives them (its store is in memory; its threads are the default
    engines' shared pool, at most 8). It keeps the last ``DEFAULT_KEEP_RUNS`` finished runs
    (``default_engine().keep_runs = n`` to change that; older ones are dropped), so a loop
    calling ``execute`` forever stays bounded. For a durable store, other limits or
    ``resume`` across processes, make an ``Engine`` of your own.

    Raises:
        RuntimeError: no event loop is running in this thread.
    """
    loop = asyncio.get_running_loop()
    engine: Engine | None = getattr(loop, _ATTRIBUTE, None) or _defaults.get(loop)
    if engine is None:
        global _default_threads
        if _default_threads is None:
            _default_threads = WorkerThreads(8, name="converge-default")
        engine = Engine(keep_runs=DEFAULT_KEEP_RUNS, threads=_default_threads)
        try:
            setattr(loop, _ATTRIBUTE, engine)
        except AttributeError:
            _defaults[loop] = engine
    return engine


class _ThreadLoop:
    """The event loop ``run_sync`` runs in, one per thread, closed with the thread (or at exit)."""

    def __init__(self) -> None:
        self.runner = asyncio.Runner()
        self._done = weakref.finalize(self, _close_runner, self.runner)
        self._done.atexit = True


def _close_runner(runner: asyncio.Runner) -> None:
    try:
        runner.close()
    except RuntimeError:  # closed from a thread that runs a loop of its own: just close it
        runner.get_loop().close()


_thread_loop = threading.local()


def run_in_thread_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end in this thread's own event loop (made on first use, kept for the
    next call: its default engine with it).

    Raises:
        StateError: an event loop is already running in this thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        coro.close()
        raise StateError(
            "run_sync() cannot run inside a running event loop (an async function, a "
            "notebook): await graph.execute(...) there instead"
        )
    holder: _ThreadLoop | None = getattr(_thread_loop, "loop", None)
    if holder is None:
        holder = _thread_loop.loop = _ThreadLoop()
    return holder.runner.run(coro)
