"""One run of a plan: start ready nodes within the concurrency limit, apply each node's
policies, log every step, follow edges, and end COMPLETED, FAILED, WAITING or CANCELLED.

A node that is the only one ready while nothing else runs is awaited inline: a task per node
costs more than the node when a graph is a chain. Nodes run as tasks of the run's
``TaskGroup`` only when several can run at once.

**Durability.** Events are buffered and written in one append. With ``checkpoint_enabled`` a
node's ``node.done`` (with the ``node.start`` before it) is written — committed — before any
node after it starts; without, the buffer is written when it grows large and when the run
stops, so a crash may lose the last completions (``resume`` then runs those nodes again).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

import msgspec

from converge.core.clock import Clock
from converge.core.signing import maybe_nonfinite
from converge.core.user_code import is_interruption
from converge.errors import ConvergeError
from converge.orchestration._agents import NodeAgent
from converge.orchestration._budget import AgentBudget
from converge.orchestration._context import NodeContext, Paused
from converge.orchestration._host import NodeHost
from converge.orchestration._missing import explain_missing, explain_nonfinite
from converge.orchestration._pass import (
    NO_USAGE,
    FailureHook,
    NodeFailure,
    Outcome,
    add_usage,
    describe_error,
    invoke,
    nth,
    run_replacements,
)
from converge.orchestration._plan import Plan, PlanNode
from converge.orchestration._records import RunRecords
from converge.orchestration._refs import MISSING, Halt, resolve_path
from converge.orchestration._scheduler import Scheduler
from converge.orchestration.services import Services
from converge.protocol.event import Event
from converge.protocol.objects import Usage
from converge.store.base import Store

__all__ = ["EventListener", "RunState"]

_FLUSH_AT = 256  # buffered events that force a write when checkpoints are off
_encoder = msgspec.msgpack.Encoder()


Listener = Callable[[str, str | None, dict[str, Any]], None]
EventListener = Callable[[Event], None]


Spawn = Callable[[Any, dict[str, Any], str, str, Any, AgentBudget], Awaitable[Any]]
"""Starts or continues a child run: (graph, inputs, child run id, trace id, answer, the
parent's per-agent budget)."""


class RunState(NodeHost):
    """The state and the loop of one run."""

    def __init__(
        self,
        plan: Plan,
        run_id: str,
        inputs: dict[str, Any],
        *,
        store: Store,
        clock: Clock,
        pool: Executor,
        records: RunRecords | None = None,
        listener: Listener | None = None,
        on_node_failed: FailureHook | None = None,
        services: Services | None = None,
        spawn: Spawn | None = None,
        trace_id: str | None = None,
        observer: EventListener | None = None,
        budget: AgentBudget | None = None,
    ) -> None:
        self.plan = plan
        self.observer = observer  # sees every event: the engine's listeners (tracing…)
        self.run_id = run_id
        self.inputs = inputs
        self.store = store
        self.clock = clock
        self.pool = pool
        self.records = records or RunRecords()
        self.listener = listener
        self.on_node_failed = on_node_failed
        self._services = services or Services()
        self._spawn = spawn
        self.trace_id = trace_id or run_id
        self.scheduler = Scheduler(plan)
        self.outputs: dict[int, Any] = {}
        self.values: dict[str, Any] = dict(inputs)  # what conditions read
        self.done_event: list[str | None] = [None] * len(plan.nodes)
        self.usage = Usage()
        self.status = "running"
        self.error: str | None = None
        self.failed_node: str | None = None
        self.waiting: list[tuple[str, str]] = []  # (node id, question)
        self.started_event: str | None = None
        self._buffer: list[Event] = []
        self._early: asyncio.Future[None] | None = None  # a write begun by ``write_soon``
        self._early_begun = False  # whether that write has taken the buffer
        self.wrote = False  # whether anything of the run was written yet (its start goes first)
        self.task: asyncio.Task[Any] | None = None  # the task executing the run
        self.cancels = 0  # how many times ``Engine.cancel`` cancelled that task
        self.claim: tuple[str, int, bytes] | None = None
        """A compare-and-set (key, expected version, value) that goes with the next write: a
        resumed run takes its ``run-owner/`` key in the unit of its ``run.resumed``."""
        self.claimed = False  # whether that write succeeded: the run is this engine's
        self.stopping = False  # its end is being written: ``Engine.cancel`` leaves it be
        self._dependents = False  # a settled pass has dependents: write before they start
        self._request: Any = None  # the run's request scope, made on first use
        self.plan_grants: dict[str, Any] = {}
        execution = plan.execution
        # A child run (a subgraph's) counts in its parent's budget; a resumed one starts from
        # what its log says its agents used.
        self.budget = (budget if budget is not None else AgentBudget(self.records.spent)).within(
            execution.max_tokens_per_agent, execution.max_tool_calls_per_agent
        )
        self._started = time.perf_counter()

    # -- the log -----------------------------------------------------------------------------------

    def log(
        self,
        kind: str,
        data: dict[str, Any],
        *,
        parent: str | None = None,
        at: float | None = None,
    ) -> Event:
        """Buffer an event of this run (written by the next ``flush``)."""
        event = Event(
            kind=kind,
            trace_id=self.trace_id,
            subject=self.run_id,
            data=data,
            parent_id=parent or self.started_event,
            at=self.clock.now() if at is None else at,
        )
        self._buffer.append(event)
        if self.observer is not None:
            self.observer(event)
        if self.listener is not None:
            self.listener(kind, data.get("node"), data)
        return event

    async def flush(self) -> None:
        """Write every buffered event (one unit of work); returns once it is committed, and
        once an early write (``write_soon``) is too: its failure is the run's.

        The buffer's write is queued before anything is awaited (both stores keep the order
        writes are queued in, and the early one is queued first if it has begun), so a flush
        cancelled while it waits still writes its events — a cancelled run's end included.
        """
        early, self._early = self._early, None
        if early is not None and not self._early_begun:
            early.cancel()  # it never ran: its events are still in the buffer, written here
            early = None
        self._early_begun = False
        await self._write_buffer()
        if early is not None:
            await early

    def write_soon(self) -> None:
        """Start writing what is buffered now, without waiting for it (the next ``flush``
        waits): a run whose first node is slow shows in the store before that node ends."""
        if self._buffer and self._early is None:
            self._early = asyncio.ensure_future(self._write_early())
            # Seen here if no flush ever awaits it (the run raised, or its flush was cancelled).
            self._early.add_done_callback(_retrieve)

    async def _write_early(self) -> None:
        self._early_begun = True
        await self._write_buffer()

    async def _write_buffer(self) -> None:
        if self._buffer:
            events, self._buffer = self._buffer, []
            self.wrote = True
            if self.claim is None:
                await self.store.append(events)
                return
            (key, version, value), self.claim = self.claim, None
            unit = self.store.transaction()
            unit.compare_and_set(key, version, value)
            unit.append(*events)
            await unit.commit()

    # -- the loop ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until nothing more can run; sets ``status`` (and ``error`` / ``waiting``)."""
        sched = self.scheduler
        limit = self.plan.execution.max_concurrent_agents
        running: dict[int, asyncio.Task[Outcome]] = {}  # nodes with a pass in flight
        finished: deque[tuple[int, Outcome]] = deque()  # in the order they finished
        wake = asyncio.Event()

        async def tracked(node: int) -> Outcome:
            outcome = await self._pass(node)
            finished.append((node, outcome))
            wake.set()
            return outcome

        sched.start()
        try:
            async with asyncio.TaskGroup() as group:
                while self.status == "running":
                    deferred: list[int] = []
                    while sched.ready and len(running) < limit:
                        node = sched.ready.popleft()
                        if node in running:  # a second pass waits for the first
                            deferred.append(node)
                            continue
                        if not running and not sched.ready and not deferred:
                            self._settle(node, await self._pass(node))
                            await self._durable()
                            break
                        running[node] = group.create_task(tracked(node))
                    sched.ready.extendleft(reversed(deferred))
                    if self.status != "running":
                        break
                    if running or finished:
                        if not finished:
                            wake.clear()
                            await wake.wait()
                        # Settle every pass that has finished, then make them durable in one
                        # write before any node after them starts.
                        while finished and self.status == "running":
                            node, outcome = finished.popleft()
                            running.pop(node, None)
                            self._settle(node, outcome)
                        await self._durable()
                        continue
                    if sched.ready:
                        continue
                    if self.waiting:
                        break  # a paused node may still take its loop's exits: nothing is final
                    if sched.quiesce():
                        continue
                    stuck = sched.stuck()
                    if stuck:
                        waits = "; ".join(f"{n} waits for {', '.join(s)}" for n, s in stuck.items())
                        self._fail(f"the run cannot progress: {waits}", next(iter(stuck)))
                    break
                for task in running.values():  # abort: stop what is still in flight
                    task.cancel()
        except BaseExceptionGroup as group_error:
            # Passes catch their nodes' errors: what is left is the loop's own (a write the
            # store refused), raised as itself rather than wrapped by the task group.
            if len(group_error.exceptions) == 1:
                raise group_error.exceptions[0] from None
            raise
        finally:
            if self.status == "running":
                self.status = "waiting" if self.waiting else "completed"

    async def _durable(self) -> None:
        """With checkpoints on, write what the settled passes logged before anything after them
        starts (nothing to do if only sinks finished: their completions go with the run's end).
        """
        if self._dependents or len(self._buffer) >= _FLUSH_AT:
            self._dependents = False
            await self.flush()

    def _fail(self, error: str, node: str | None) -> None:
        if self.status == "running":
            self.status = "failed"
            self.error = error
            self.failed_node = node

    # -- one pass of one node ----------------------------------------------------------------------

    async def _pass(self, index: int) -> Outcome:
        node = self.plan.nodes[index]
        iteration = self.scheduler.runs[index] + 1
        limit = self.plan.max_iterations
        if limit is not None and iteration > limit:
            return Outcome(
                "fatal",
                error=f"node {node.id!r} would run a {nth(iteration)} time; "
                f"config.max_iterations is {limit}",
            )
        recorded = self.records.done.get((node.id, iteration))
        if recorded is not None:
            out = MISSING if recorded.status == "skipped" else recorded.output
            replay = Outcome(recorded.status, out, replayed=True)
            replay.event_id = recorded.event_id
            return replay
        answer_key = (node.id, iteration, -1)
        if answer_key in self.records.answers:
            return Outcome("answered", self.records.answers[answer_key])
        inputs = self._inputs(node)
        retry = node.retry
        attempt = 1
        while True:
            started = self.clock.now()
            trigger = self.scheduler.trigger[index]
            self.log(
                "node.start",
                {
                    "node": node.id,
                    "agent": node.agent.name,
                    "iteration": iteration,
                    "attempt": attempt,
                    "task_id": f"{self.run_id}/{node.id}/{iteration}",
                },
                parent=None if trigger is None else self.done_event[trigger],
                at=started,
            )
            # An agent that takes no context needs none made (it cannot report usage or pause).
            ctx = self._context(node, iteration, attempt) if node.agent.takes_ctx else None
            try:
                output = await self._call(node.agent, inputs, ctx, node.timeout)
                usage = NO_USAGE if ctx is None else ctx.usage
                return Outcome("completed", output, usage=usage, started_at=started)
            except Paused as paused:
                usage = NO_USAGE if ctx is None else ctx.usage
                return Outcome("paused", question=paused.question, index=paused.index, usage=usage)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                # Whatever the agent raised is its failure (``sys.exit()`` and its own
                # ``KeyboardInterrupt`` too); the process's stop (a signal's) goes on.
                if is_interruption(exc):
                    raise
                error = describe_error(exc, node.timeout)
                usage = NO_USAGE if ctx is None else ctx.usage
            if attempt <= retry.max_retries:
                delay = retry.delay(attempt)
                data = {
                    "node": node.id,
                    "iteration": iteration,
                    "attempt": attempt,
                    "error": error,
                    "delay": delay,
                }
                self.log("node.retry", self._spent(data, usage))
                if delay > 0:
                    await self.clock.sleep(delay)
                attempt += 1
                continue
            return await self._after_failure(node, iteration, inputs, error, usage, started)

    async def _after_failure(
        self,
        node: PlanNode,
        iteration: int,
        inputs: dict[str, Any],
        error: str,
        usage: Usage,
        started: float,
    ) -> Outcome:
        if node.on_error == "skip":
            return Outcome("skipped", MISSING, error=error, usage=usage, started_at=started)
        if node.on_error == "human":
            question = (
                f"node {node.id!r} failed: {error}. Answer with the output to use in its place."
            )
            return Outcome("paused", question=question, index=-1, error=error, usage=usage)
        if node.on_error == "fallback" and node.fallback is not None:
            ctx = self._context(node, iteration, 0)
            try:
                output = await self._call(node.fallback, inputs, ctx, node.timeout)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                if is_interruption(exc):
                    raise
                error = (
                    f"{error}; its fallback {node.fallback.name!r} failed too: "
                    + describe_error(exc, node.timeout)
                )
                return Outcome("failed", error=error, usage=add_usage(usage, ctx.usage))
            usage = add_usage(usage, ctx.usage)
            return Outcome("fallback", output, error=error, usage=usage, started_at=started)
        if self.on_node_failed is not None:
            failure = NodeFailure(
                node.id, iteration, error, dict(inputs), self.node_outputs(), self.run_id
            )
            replacements = await self.on_node_failed(failure)
            if replacements:
                return await run_replacements(
                    self, node, iteration, inputs, error, replacements, started, usage
                )
        return Outcome("failed", error=error, usage=usage)

    def _inputs(self, node: PlanNode) -> dict[str, Any]:
        if node.node.inputs is None and node.forward_in == 0 and not node.inputs:
            return dict(self.inputs)  # an entry node without inputs gets the graph's inputs
        outputs = self.outputs
        by_id = self.plan.by_id
        values: dict[str, Any] = {}
        for ref in node.inputs:
            if ref.node is None:
                value = self.inputs.get(ref.name, MISSING)
            else:
                value = outputs.get(by_id[ref.node].index, MISSING)
            values[ref.text] = resolve_path(value, ref.path) if ref.path else value
        return values

    def _context(self, node: PlanNode, iteration: int, attempt: int) -> NodeContext:
        answers = (
            {
                index: answer
                for (node_id, it, index), answer in self.records.answers.items()
                if node_id == node.id and it == iteration and index >= 0
            }
            if self.records.answers
            else {}
        )
        return NodeContext(
            self.run_id,
            node.id,
            iteration,
            attempt,
            self.clock,
            answers=answers,
            agent=node.agent.name,
            budget=self.budget,
            host=self,
            trace_id=self.trace_id,
        )

    async def _call(
        self,
        agent: NodeAgent,
        inputs: dict[str, Any],
        ctx: NodeContext | None,
        timeout: float | None,
    ) -> Any:
        args = (inputs, ctx) if agent.takes_ctx else (inputs,)
        if timeout is None:
            if agent.is_async:  # the common case, without a frame more
                return await agent.fn(*args)
            return await invoke(agent, args, self.pool)
        async with asyncio.timeout(timeout):
            return await invoke(agent, args, self.pool)

    # -- after a pass ------------------------------------------------------------------------------

    def _settle(self, index: int, outcome: Outcome) -> None:
        """Record how a pass ended and follow its edges (``_durable`` writes the log)."""
        node = self.plan.nodes[index]
        iteration = self.scheduler.runs[index] + 1
        status = outcome.status
        if status == "fatal":
            self._fail(outcome.error or "", node.id)
            return
        if status == "failed":
            failed = {"node": node.id, "iteration": iteration, "error": outcome.error}
            self.log("node.failed", self._spent(failed, outcome.usage))
            self._fail(f"node {node.id!r} failed: {outcome.error}", node.id)
            return
        if status == "paused":
            assert outcome.question is not None
            asked = {
                "node": node.id,
                "iteration": iteration,
                "index": outcome.index,
                "question": outcome.question,
            }
            self.log("node.waiting", self._spent(asked, outcome.usage))
            self.waiting.append((node.id, outcome.question))
            return
        output = outcome.output
        halt = status == "halted"
        if isinstance(output, Halt):
            output, halt, status = output.output, True, "halted"
        if outcome.replayed:
            self.done_event[index] = outcome.event_id
        else:
            if output is MISSING and status != "skipped":
                self._unstorable(node, iteration, outcome, output, None)
                return
            stored = None if output is MISSING else output
            try:
                if not _plainly_storable(stored):
                    encoded = _encoder.encode(stored)
                    # A scan of the bytes, ~0.1 µs; only a hit walks the output.
                    if maybe_nonfinite(encoded) and (why := explain_nonfinite(stored)):
                        raise ValueError(why)
            except (TypeError, ValueError, OverflowError) as exc:
                self._unstorable(node, iteration, outcome, output, exc)
                return
            data: dict[str, Any] = {
                "node": node.id,
                "iteration": iteration,
                "status": status,
                "output": stored,
                "started_at": outcome.started_at,
                "finished_at": (finished := self.clock.now()),
            }
            self._spent(data, outcome.usage)
            if outcome.error is not None:
                data["error"] = outcome.error
            done = self.log("node.done", data, at=finished)
            self.done_event[index] = done.id
            # Durable before anything after it starts (``_durable``); a sink has nothing after
            # it, and its completion is written with the run's end.
            if self.plan.checkpoint and node.out:
                self._dependents = True
        self.outputs[index] = output
        self.values[node.id] = {"output": output}
        try:
            self.scheduler.finish(index, self.values, halt=halt)
        except ConvergeError as exc:
            self._fail(f"after node {node.id!r}: {exc}", node.id)

    def _unstorable(
        self,
        node: PlanNode,
        iteration: int,
        outcome: Outcome,
        output: Any,
        exc: Exception | None,
    ) -> None:
        """Fail ``node``, whose output cannot be stored: said why at length if it holds
        ``MISSING`` (a value from a branch not taken, most often)."""
        why = explain_missing(self.plan, node, output, self.inputs, self.outputs)
        error = why or str(exc)
        failed = {"node": node.id, "iteration": iteration, "error": error}
        self.log("node.failed", self._spent(failed, outcome.usage))
        kind = "" if why else f" ({type(output).__name__})"
        self._fail(
            f"node {node.id!r} returned an output that cannot be stored{kind}: {error}", node.id
        )

    def _spent(self, data: dict[str, Any], usage: Usage | None) -> dict[str, Any]:
        """``data`` (an event's) with the usage it accounts for, if any; the run's total counts
        it. Failed, retried and paused tries are logged with theirs, so a resumed run's
        per-agent counts (``_budget``) miss nothing its log could hold."""
        if usage is not None and usage != NO_USAGE:
            self.usage = add_usage(self.usage, usage)
            data["usage"] = msgspec.structs.asdict(usage)
        return data

    # -- the result --------------------------------------------------------------------------------

    def output(self) -> Any:
        """The run's output: the sole sink's, or ``{sink id: output}`` of the sinks that ran."""
        sinks = self.plan.sinks
        if len(sinks) == 1:
            value = self.outputs.get(sinks[0].index, MISSING)
            return None if value is MISSING else value
        return {
            n.id: (None if self.outputs[n.index] is MISSING else self.outputs[n.index])
            for n in sinks
            if n.index in self.outputs
        }

    def node_outputs(self) -> dict[str, Any]:
        """Every node's latest output (None for a skipped one), by node id."""
        return {
            self.plan.nodes[i].id: (None if v is MISSING else v) for i, v in self.outputs.items()
        }

    @property
    def duration_ms(self) -> float:
        """Milliseconds since this process started (or resumed) the run."""
        return (time.perf_counter() - self._started) * 1e3


_PLAIN = frozenset({type(None), bool})


def _plainly_storable(value: Any) -> bool:
    """Whether ``value`` is stored as it is without trying: None, a bool, a finite float, an
    int that fits 64 bits, an ASCII str (a str may hold a lone surrogate, which UTF-8 cannot
    encode)."""
    kind = type(value)
    if kind in _PLAIN:
        return True
    if kind is int:
        return bool(-(2**63) <= value < 2**64)
    if kind is float:
        return bool(value - value == 0.0)  # false for NaN and ±inf: each minus itself is NaN
    return kind is str and value.isascii()


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()
