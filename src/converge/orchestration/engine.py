"""The ``Engine``: runs graphs, and continues, forks, streams and batches their runs.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Self

import msgspec

from converge.core.clock import Clock, system_clock
from converge.core.ids import new_id
from converge.core.signing import maybe_nonfinite
from converge.errors import ConflictError, StateError, ValidationError
from converge.orchestration._announce import Announcer
from converge.orchestration._budget import AgentBudget
from converge.orchestration._missing import explain_nonfinite
from converge.orchestration._pass import FailureHook
from converge.orchestration._records import RunRecords, agent_usage, read_records
from converge.orchestration._results import RunEvent, RunFailed, RunHandle, RunResult, RunStatus
from converge.orchestration._run import EventListener, RunState
from converge.orchestration.graph import Graph
from converge.orchestration.ownership import (
    RUN_OWNER_KEY,
    LeasePolicy,
    OwnerLease,
    RunOwned,
    check_free,
    claim_version,
    owner_of,
    read_owner,
    taken_by,
)
from converge.orchestration.services import Services
from converge.orchestration.trace import metrics_of, trace_of
from converge.protocol.event import Event
from converge.store.base import Store
from converge.store.memory import MemoryStore

__all__ = ["Engine", "RunEvent", "RunFailed", "RunHandle", "RunResult", "RunStatus"]

_log = logging.getLogger(__name__)
_encoder = msgspec.msgpack.Encoder()
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
    ) -> None:
        self.listeners = tuple(listeners)
        self.on_node_failed = on_node_failed
        self.services = services or Services()
        self.store: Store = store if store is not None else MemoryStore()
        self.clock = clock
        self.id_factory = id_factory
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="converge-node")
        self._group: asyncio.TaskGroup | None = None
        self._handles: dict[str, RunHandle] = {}
        self._announcer = Announcer(_ANNOUNCE_AFTER)
        if lease is not None and not isinstance(lease, LeasePolicy):
            raise ValidationError(
                f"lease is a LeasePolicy, not {type(lease).__name__}", field="lease"
            )
        self.owner = OwnerLease(self.store, clock, lease or LeasePolicy())
        """This engine's lease on the runs it executes (``owner.id`` names it in their log)."""

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
            if group is not None:
                await group.__aexit__(exc_type, exc, tb)
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)
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
        return _raise_failed(await self._start(graph, inputs))

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
            self._start(graph, args, run_id=run_id, sink=handle._results)
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
        state = self.owner.active.get(run_id)
        if state is None or state.stopping or state.task is None or state.task.done():
            return False
        if state.trace_id != state.run_id:  # a subgraph's child run: it shares its parent's task
            return False
        state.cancels += 1
        state.task.cancel()
        return True

    async def stream(
        self, graph: Graph, inputs: Mapping[str, Any] | None = None
    ) -> AsyncIterator[RunEvent]:
        """Run ``graph`` and yield its events as they happen; the last is the run's end."""
        queue: asyncio.Queue[RunEvent | None] = asyncio.Queue()
        run_id = self.id_factory()

        def listen(kind: str, node: str | None, data: dict[str, Any]) -> None:
            queue.put_nowait(RunEvent(kind=kind, run_id=run_id, node=node, data=data))

        async def drive() -> None:
            try:
                await self._start(graph, inputs, run_id=run_id, listener=listen)
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
                results[i] = await self._start(graph, items[i])

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
            await self._continue(graph, run_id, records, answer, listener, version)
        )

    async def _continue(
        self,
        graph: Graph,
        run_id: str,
        records: RunRecords,
        answer: Any,
        listener: Callable[[str, str | None, dict[str, Any]], None] | None = None,
        version: int = 0,
        budget: AgentBudget | None = None,
    ) -> RunResult:
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
        resumed: dict[str, Any] = {}
        if records.waiting and answer is not None:
            node, iteration, index, _ = records.waiting[0]
            records.answers[(node, iteration, index)] = answer
            resumed = {"node": node, "iteration": iteration, "index": index, "answer": answer}
        return await self._start(
            graph,
            records.inputs,
            run_id=run_id,
            records=records,
            resumed=resumed,
            trace_id=records.started.trace_id,
            listener=listener,
            claim=version,
            budget=budget,
        )

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
            return await self._continue(
                graph, run_id, records, answer, version=version, budget=budget
            )
        return await self._start(graph, inputs, run_id=run_id, trace_id=trace_id, budget=budget)

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
        return _raise_failed(
            await self._start(
                graph,
                inputs,
                records=records,
                forked={"forked_from": run_id, "label": label},
            )
        )

    # -- reading runs ------------------------------------------------------------------------------

    async def trace(self, run_id: str) -> dict[str, Any]:
        """The run's trace in the shape of seed 002 §8.1, from its log (see ``trace``), with
        ``coordination``: the intents, offers, awards, receipts, trust updates, ballots, votes
        and board tasks its nodes caused (``coordination_objects``), each attached to its node.
        """
        await self._records(run_id)
        return trace_of(await self.store.read(trace_id=run_id.split("/", 1)[0]), run_id)

    async def metrics(self, run_id: str) -> dict[str, Any]:
        """The run's §8.2 metrics, from its log (see ``trace``)."""
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

    async def _start(
        self,
        graph: Graph,
        inputs: Mapping[str, Any] | None,
        *,
        run_id: str | None = None,
        records: RunRecords | None = None,
        resumed: dict[str, Any] | None = None,
        forked: dict[str, Any] | None = None,
        listener: Callable[[str, str | None, dict[str, Any]], None] | None = None,
        sink: list[RunResult] | None = None,
        trace_id: str | None = None,
        claim: int | None = None,
        budget: AgentBudget | None = None,
    ) -> RunResult:
        plan = graph.compile()
        args = _inputs(plan.graph_inputs, inputs)
        state = RunState(
            plan,
            run_id or self.id_factory(),
            args,
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
        owner = self.owner
        run_id = state.run_id
        if records is not None and records.started is not None and forked is None:
            state.started_event = records.started.id
            state.log("run.resumed", {"owner": owner.id, **(resumed or {})})
        else:
            data: dict[str, Any] = {
                "graph": plan.name,
                "fingerprint": plan.fingerprint,
                "inputs": args,
                "owner": owner.id,
                **(forked or {}),
            }
            state.started_event = state.log("run.started", data).id
            for (node, iteration), done in sorted(
                state.records.done.items(), key=lambda kv: kv[1].seq
            ):
                state.log(
                    "node.done",
                    {
                        "node": node,
                        "iteration": iteration,
                        "status": done.status,
                        "output": done.output,
                        "copied_from": (forked or {}).get("forked_from"),
                    },
                )
        if resumed:
            state.log("node.answered", resumed)
        announced = records is not None or sink is not None
        deadline: asyncio.Timeout | None = None
        state.task = asyncio.current_task()
        if claim is not None:
            # Taking the run over: the compare-and-set of its `run-owner/` key goes in one unit
            # with `run.resumed`, so of two processes resuming it one is refused.
            state.claim = (RUN_OWNER_KEY + run_id, claim, owner.id.encode())
        owner.hold(run_id, state)  # refuses a run this engine has in flight
        try:
            await owner.fresh()
            if claim is not None:
                await self._take_over(state)
            if announced:
                # A continued run's first events, and a submitted run (its id is out), are
                # durable at once; a new run's `run.started` goes with its first completion,
                # or is written by the announcer if that is slow to come.
                await state.flush()
            else:
                self._announcer.add(state)
            if plan.timeout is None:  # most runs: no timeout object to make and cancel
                await state.run()
            else:
                async with asyncio.timeout(plan.timeout) as deadline:
                    await state.run()
        except TimeoutError:
            if deadline is None or not deadline.expired():  # not the run's timeout: a hook's
                await self._broken(state)
                owner.drop(run_id, state)
                raise
            state.status = "failed"
            state.error = f"the run timed out after {plan.timeout:g} s"
        except asyncio.CancelledError:
            # On purpose (``cancel``) if every cancellation of this task is one of ours: the
            # run ends CANCELLED and returns. Otherwise (Ctrl-C, a shutdown, a caller's
            # timeout) it is INTERRUPTED and the cancellation goes on.
            own = _own_cancel(state)
            state.status = "cancelled" if own else "interrupted"
            state.error = "cancelled" if own else "interrupted"
            if claim is not None and not state.claimed:
                # Stopped before it took the run over: nothing of it was written, so nothing
                # is logged (the run is as it was).
                owner.drop(run_id, state)
                ended = _unstarted(state)
            else:
                # Its end is logged even so: the write is queued before anything can interrupt
                # it.
                state.stopping = True
                try:
                    ended = await self._finish(state)
                finally:
                    owner.drop(run_id, state)
            if sink is not None:
                sink.append(ended)
            if own:
                return ended
            raise
        except Exception:
            if claim is None or state.claimed:
                await self._broken(state)
            owner.drop(run_id, state)  # lost the take-over: it wrote nothing
            raise
        except (KeyboardInterrupt, SystemExit):
            # A signal's (Ctrl-C pressed twice, a SIGTERM handler's ``sys.exit``): the run is
            # INTERRUPTED, as by a cancellation, and the exception goes on. What an agent
            # raises itself is its node's failure and does not come here (``is_interruption``).
            try:
                if claim is None or state.claimed:
                    state.status = state.error = "interrupted"
                    state.stopping = True
                    with contextlib.suppress(Exception):  # the signal's exception goes on
                        ended = await self._finish(state)
                        if sink is not None:
                            sink.append(ended)
            finally:
                owner.drop(run_id, state)
            raise
        finally:
            if not announced:
                self._announcer.discard(state)
        state.stopping = True
        try:
            ended = await self._finish(state)
        finally:
            owner.drop(run_id, state)
        if sink is not None:
            sink.append(ended)
        return ended

    async def _take_over(self, state: RunState) -> None:
        """Write the resumed run's first unit, which takes it over (``state.claim``), and wait
        for its outcome even if cancelled meanwhile: whether the run became this engine's
        decides what its end may write (``state.claimed``).

        Raises:
            RunOwned: another engine took it over first (nothing was written).
        """
        write = asyncio.ensure_future(state.flush())
        cancelled: asyncio.CancelledError | None = None
        while not write.done():
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError as exc:
                cancelled = exc  # the write goes on: wait for its outcome, then stop
            except Exception:
                break  # the write failed: read below
        if write.cancelled():
            raise cancelled or asyncio.CancelledError()
        error = write.exception()
        state.claimed = error is None
        if cancelled is not None:
            raise cancelled
        if isinstance(error, ConflictError):
            winner = await taken_by(self.store, state.run_id)
            now = self.clock.now()
            why = "another engine took it over first"
            raise RunOwned(state.run_id, winner, now, why, now) from error
        if error is not None:
            raise error

    async def _broken(self, state: RunState) -> None:
        """Log the run FAILED with the error escaping it (a hook's bug, a write the store
        refused), if the store still takes it: not left looking running. Call in ``except``."""
        error = sys.exc_info()[1]
        state.status = "failed"
        state.error = f"{type(error).__name__}: {error}"
        with contextlib.suppress(Exception):
            await self._finish(state)

    async def _finish(self, state: RunState) -> RunResult:
        status = RunStatus(state.status)
        output = state.output() if status is RunStatus.COMPLETED else None
        if status is RunStatus.COMPLETED:
            state.log(
                "run.completed",
                {
                    "output": output,
                    "usage": msgspec.structs.asdict(state.usage),
                    "duration_ms": round(state.duration_ms, 3),
                },
            )
        elif status is RunStatus.WAITING:
            state.log("run.waiting", {"questions": dict(state.waiting)})
        elif status is RunStatus.FAILED:
            state.log("run.failed", {"error": state.error, "node": state.failed_node})
        elif status is RunStatus.CANCELLED:
            state.log("run.cancelled", {})
        else:
            state.log("run.interrupted", {})
        await state.flush()
        return RunResult(
            run_id=state.run_id,
            graph=state.plan.name,
            status=status,
            output=output,
            outputs=state.node_outputs(),
            error=state.error,
            failed_node=state.failed_node,
            questions=dict(state.waiting),
            usage=state.usage,
            duration_ms=state.duration_ms,
        )


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


def _own_cancel(state: RunState) -> bool:
    """Whether every cancellation of the run's task was ``Engine.cancel``'s (taking them back)."""
    task, own = state.task, False
    if state.cancels and task is not None:
        remaining = task.cancelling()
        for _ in range(state.cancels):
            remaining = task.uncancel()
        own = remaining == 0
    state.cancels = 0
    return own


def _unstarted(state: RunState) -> RunResult:
    """The result of a continuation stopped before it took its run over (nothing written)."""
    status = RunStatus(state.status)
    return RunResult(
        run_id=state.run_id,
        graph=state.plan.name,
        status=status,
        error=f"{state.status} before it took the run over",
    )


def _raise_failed(result: RunResult) -> RunResult:
    if result.status in (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED):
        raise RunFailed(result)
    return result


def _event(engine: Engine, run_id: str, kind: str, data: dict[str, Any]) -> Any:
    from converge.protocol.event import Event

    trace = run_id.split("/", 1)[0]
    return Event(kind=kind, trace_id=trace, subject=run_id, data=data, at=engine.clock.now())
