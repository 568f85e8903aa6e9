"""The loop of one run: ready nodes, their task group, the settling.

The queue of ready nodes, the task group their passes run in, and after each pass settle → scheduler
→ log — store its output, follow its edges (``_scheduler``), write the log when its durability rule
says (``_run_log``) — until nothing more can run; the run then ends COMPLETED, FAILED or WAITING
(``RunStatus``).

A pass is attempted by ``_attempt``; what comes before (a pass read back from the log, an
answer standing in for it, ``max_iterations``) is the loop's. A node that is the only one ready
while nothing else runs is awaited inline: a task per node costs more than the node when a
graph is a chain (its attempt's coroutine is awaited directly: no frame between the loop and an
async agent without a timeout). Nodes run as tasks of the run's ``TaskGroup``, at most
``max_concurrent_agents`` at once, only when several can run. Each such node is a task from its
first step: an "eager" first step on the loop's own task (what Python 3.12's
``eager_task_factory`` does, with the new task set as current, which 3.11 cannot) was tried and
removed — a node entering ``asyncio.timeout`` (or an SDK's cancel scope) on its first step bound
it to the run's task, so an overrun cancelled the whole run (a 30-node fan-out of LLM agents
found it; tests pin it). Passes that finished are settled together and written in one append
before any node after them starts.

Whatever escapes the loop itself (a write the store refuses: it closed, the disk is full; a
failure hook's bug) leaves ``execute`` as that error, not wrapped in the task group, after the
run is logged ``run.failed`` with it if the store still takes writes. A ``TimeoutError`` is the
run's timeout only if the run's own deadline expired. A node left with some edges carried and
others never carrying fails the run naming it ("cannot progress"), never hangs.

``RunLoop`` is also what its nodes' contexts report to (``_context.NodeHost``) and what an
attempt needs of its run (``_attempt.AttemptHost``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgspec

from converge.core.clock import Clock
from converge.core.signing import maybe_nonfinite
from converge.core.user_code import WorkerThreads
from converge.errors import ConvergeError, ValidationError
from converge.orchestration._attempt import (
    FailureHook,
    PassResult,
    PassStatus,
    attempt,
    check_pass_transition,
    nth,
)
from converge.orchestration._budget import AgentBudget
from converge.orchestration._context import NodeContext
from converge.orchestration._missing import explain_missing, explain_nonfinite
from converge.orchestration._plan import ExecutionPlan, PlanNode
from converge.orchestration._refs import MISSING, Halt, resolve_path
from converge.orchestration._results import RunResult, RunStatus, check_run_transition
from converge.orchestration._run_log import EventListener, Listener, RunLog
from converge.orchestration._scheduler import Scheduler
from converge.orchestration.records import RunRecords
from converge.orchestration.services import Services
from converge.store.base import Store

__all__ = ["RunLoop", "Spawn"]

# The statuses a pass's settling tells apart (module names: an enum's attribute costs more).
_SKIPPED = PassStatus.SKIPPED
_HALTED = PassStatus.HALTED
_PAUSED = PassStatus.PAUSED
_FAILED = PassStatus.FAILED
_FATAL = PassStatus.FATAL
_encoder = msgspec.msgpack.Encoder()


Spawn = Callable[[Any, dict[str, Any], str, str, Any, AgentBudget], Awaitable[Any]]
"""Starts or continues a child run: (graph, inputs, child run id, trace id, answer, the
parent's per-agent budget)."""


class RunLoop:
    """The state and the loop of one run (one execution of it: a resumed run gets another).

    Attributes:
        status: RUNNING until ``run`` ends; then how it ended (``move``).
        events: the run's log as it is written.
        ready: nodes ready to run, in the order they became ready.
        outputs: each node's latest output, by node index.
    """

    def __init__(
        self,
        plan: ExecutionPlan,
        run_id: str,
        inputs: dict[str, Any],
        *,
        store: Store,
        clock: Clock,
        pool: WorkerThreads,
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
        self.run_id = run_id
        self.inputs = inputs
        self.store = store
        self.clock = clock
        self.pool = pool
        self.records = records or RunRecords()
        self.on_node_failed = on_node_failed
        self._services = services or Services()
        self._spawn = spawn
        self.trace_id = trace_id or run_id
        self.events = RunLog(
            store,
            clock,
            run_id,
            self.trace_id,
            checkpoint=plan.checkpoint,
            observer=observer,  # sees every event: the engine's listeners (tracing…)
            listener=listener,
        )
        self.log = self.events.add
        self.scheduler = Scheduler(plan)
        self.ready: deque[int] = deque()
        self.outputs: dict[int, Any] = {}
        self.values: dict[str, Any] = dict(inputs)  # what conditions read
        self.done_event: list[str | None] = [None] * len(plan.nodes)
        self.status = RunStatus.RUNNING
        self.error: str | None = None
        self.failed_node: str | None = None
        self.failing = False  # a node failed: the run ends FAILED once its loop stops
        self.waiting: list[tuple[str, str]] = []  # (node id, question)
        self.task: asyncio.Task[Any] | None = None  # the task executing the run
        self.cancels = 0  # how many times ``Engine.cancel`` cancelled that task
        self.stopping = False  # its end is being written: ``Engine.cancel`` leaves it be
        self._request: Any = None  # the run's request scope, made on first use
        self.plan_grants: dict[str, Any] = {}
        execution = plan.execution
        # A child run (a subgraph's) counts in its parent's budget; a resumed one starts from
        # what its log says its agents used.
        self.budget = (budget if budget is not None else AgentBudget(self.records.spent)).within(
            execution.max_tokens_per_agent, execution.max_tool_calls_per_agent
        )
        self._started = time.perf_counter()

    # -- the loop ----------------------------------------------------------------------------------

    def move(self, status: RunStatus, error: str | None = None) -> None:
        """Move the run to ``status`` (with ``error``, if given).

        Raises:
            InvalidTransition: ``_RUN_TRANSITIONS`` has no such move.
        """
        check_run_transition(self.status, status, self.run_id)
        self.status = status
        if error is not None:
            self.error = error

    async def run(self) -> None:
        """Run until nothing more can run; moves ``status`` to how it ended (with ``error`` /
        ``waiting``). What escapes it leaves the run RUNNING, for its caller to end."""
        sched = self.scheduler
        limit = self.plan.execution.max_concurrent_agents
        running: dict[int, asyncio.Task[PassResult]] = {}  # nodes with a pass in flight
        finished: deque[tuple[int, PassResult]] = deque()  # in the order they finished
        wake = asyncio.Event()

        async def tracked(node: int) -> PassResult:
            outcome = await self._pass(node)
            finished.append((node, outcome))
            wake.set()
            return outcome

        ready = self.ready
        events = self.events
        ready.extend(sched.start())
        try:
            async with asyncio.TaskGroup() as group:
                while not self.failing:
                    deferred: list[int] | None = None  # made only when a pass must wait
                    while ready and len(running) < limit:
                        node = ready.popleft()
                        if node in running:  # a second pass waits for the first
                            if deferred is None:
                                deferred = []
                            deferred.append(node)
                            continue
                        if not running and not ready and deferred is None:
                            # The lone ready node, nothing in flight: awaited inline.
                            self._settle(node, await self._pass(node))
                            if events.due():
                                await events.flush()
                            if self.failing:
                                break
                            continue
                        running[node] = group.create_task(tracked(node))
                    if deferred is not None:
                        ready.extendleft(reversed(deferred))
                    if self.failing:
                        break
                    if running or finished:
                        if not finished:
                            wake.clear()
                            await wake.wait()
                        # Settle every pass that has finished, then make them durable in one
                        # write before any node after them starts.
                        while finished and not self.failing:
                            node, outcome = finished.popleft()
                            running.pop(node, None)
                            self._settle(node, outcome)
                        if events.due():
                            await events.flush()
                        continue
                    if ready:
                        continue
                    if self.waiting:
                        break  # a paused node may still take its loop's exits: nothing is final
                    made = sched.quiesce()
                    if made:
                        ready.extend(made)
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
        if self.failing:
            self.move(RunStatus.FAILED)
        else:
            self.move(RunStatus.WAITING if self.waiting else RunStatus.COMPLETED)

    def _fail(self, error: str, node: str | None) -> None:
        """The run fails with ``error`` at ``node`` (the first failure is the run's)."""
        if not self.failing:
            self.failing = True
            self.error = error
            self.failed_node = node

    # -- one pass of one node ----------------------------------------------------------------------

    def _pass(self, index: int) -> Coroutine[Any, Any, PassResult]:
        """The pass of node ``index`` that is to run now: read back if the log says it
        finished (a resumed run), a person's answer if one stands in for it, else attempted
        (``_attempt``). Not a coroutine itself: an attempt is awaited without a frame more."""
        node = self.plan.nodes[index]
        iteration = self.scheduler.runs[index] + 1
        limit = self.plan.max_iterations
        if limit is not None and iteration > limit:
            return _at_once(
                PassResult(
                    _FATAL,
                    error=f"node {node.id!r} would run a {nth(iteration)} time; "
                    f"config.max_iterations is {limit}",
                )
            )
        records = self.records
        recorded = records.done.get((node.id, iteration))
        if recorded is not None:
            out = MISSING if recorded.status == "skipped" else recorded.output
            replay = PassResult(PassStatus(recorded.status), out, replayed=True)
            replay.event_id = recorded.event_id
            return _at_once(replay)
        answer_key = (node.id, iteration, -1)
        if answer_key in records.answers:
            return _at_once(PassResult(PassStatus.ANSWERED, records.answers[answer_key]))
        trigger = self.scheduler.trigger[index]
        parent = None if trigger is None else self.done_event[trigger]
        return attempt(self, node, iteration, self._inputs(node), parent)

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

    def context(self, node: PlanNode, iteration: int, attempt: int) -> NodeContext:
        """The context of try ``attempt`` of ``node``'s pass ``iteration``."""
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

    # -- after a pass ------------------------------------------------------------------------------

    def _settle(self, index: int, outcome: PassResult) -> None:
        """Record how a pass ended and follow its edges (the loop writes the log when it is
        ``due``)."""
        node = self.plan.nodes[index]
        iteration = self.scheduler.runs[index] + 1
        status = outcome.status
        if status is _FATAL:
            self._fail(outcome.error or "", node.id)
            return
        if status is _FAILED:
            failed = {"node": node.id, "iteration": iteration, "error": outcome.error}
            self.log("node.failed", self.events.spend(failed, outcome.usage))
            self._fail(f"node {node.id!r} failed: {outcome.error}", node.id)
            return
        if status is _PAUSED:
            assert outcome.question is not None
            asked = {
                "node": node.id,
                "iteration": iteration,
                "index": outcome.index,
                "question": outcome.question,
            }
            self.log("node.waiting", self.events.spend(asked, outcome.usage))
            self.waiting.append((node.id, outcome.question))
            return
        output = outcome.output
        halt = status is _HALTED
        if isinstance(output, Halt):
            check_pass_transition(status, _HALTED, node.id)
            output, halt, status = output.output, True, _HALTED
        if outcome.replayed:
            self.done_event[index] = outcome.event_id
        else:
            if output is MISSING and status is not _SKIPPED:
                self._unstorable(node, iteration, status, outcome, output, None)
                return
            stored = None if output is MISSING else output
            try:
                if not _plainly_storable(stored):
                    encoded = _encoder.encode(stored)
                    # A scan of the bytes, ~0.1 µs; only a hit walks the output.
                    if maybe_nonfinite(encoded) and (why := explain_nonfinite(stored)):
                        raise ValueError(why)
            except (TypeError, ValueError, OverflowError) as exc:
                self._unstorable(node, iteration, status, outcome, output, exc)
                return
            data: dict[str, Any] = {
                "node": node.id,
                "iteration": iteration,
                "status": status._value_,  # the log holds the word (``.value`` costs more)
                "output": stored,
                "started_at": outcome.started_at,
                "finished_at": (finished := self.clock.now()),
            }
            events = self.events
            events.spend(data, outcome.usage)
            if outcome.error is not None:
                data["error"] = outcome.error
            done = events.add("node.done", data, at=finished)
            self.done_event[index] = done.id
            if node.out:  # written before they start, with checkpoints on (``RunLog.due``)
                events.dependents = True
        self.outputs[index] = output
        self.values[node.id] = {"output": output}
        try:
            self.ready.extend(self.scheduler.finish(index, self.values, halt=halt))
        except ConvergeError as exc:
            self._fail(f"after node {node.id!r}: {exc}", node.id)

    def _unstorable(
        self,
        node: PlanNode,
        iteration: int,
        status: PassStatus,
        outcome: PassResult,
        output: Any,
        exc: Exception | None,
    ) -> None:
        """Fail ``node``'s pass (``status`` so far), whose output cannot be stored: said why
        at length if it holds ``MISSING`` (a value from a branch not taken, most often)."""
        check_pass_transition(status, _FAILED, node.id)
        why = explain_missing(self.plan, node, output, self.inputs, self.outputs)
        error = why or str(exc)
        failed = {"node": node.id, "iteration": iteration, "error": error}
        self.log("node.failed", self.events.spend(failed, outcome.usage))
        kind = "" if why else f" ({type(output).__name__})"
        self._fail(
            f"node {node.id!r} returned an output that cannot be stored{kind}: {error}", node.id
        )

    # -- what node contexts report to (``_context.NodeHost``) -----------------------------------

    def chunk(self, node_id: str, chunk: Any) -> None:
        """Stream a node's partial output to the listener (never logged)."""
        listener = self.events.listener
        if listener is not None:
            listener("node.chunk", node_id, {"node": node_id, "chunk": chunk})

    def progress(self, node_id: str, iteration: int, fraction: float, message: str) -> None:
        """Log a node's progress."""
        if not 0.0 <= fraction <= 1.0:
            raise ValidationError(f"progress is a fraction in [0, 1], not {fraction!r}")
        self.log(
            "node.progress",
            {"node": node_id, "iteration": iteration, "fraction": fraction, "message": message},
        )

    async def checkpoint(self, node_id: str, label: str) -> None:
        """Log a checkpoint named by a node, and write it at once."""
        self.log("run.checkpoint", {"label": label, "node": node_id})
        await self.events.flush()

    @property
    def services(self) -> Services:
        """What the engine lends to nodes."""
        return self._services

    def memory_context(self, node_id: str) -> Any:
        """The context of a node's agent: its grants, the run's request scope (shared by the
        run's nodes), the session named by the graph input ``session_id`` if any, the agent
        scope of its name and the graph scope of the run's root."""
        scopes = self._services.memory
        if scopes is None:
            raise ValidationError(
                f"node {node_id!r} asks for its context, but the engine has no memory: "
                "Engine(services=Services(memory=ContextScopes(store)))",
                field="services.memory",
            )
        agent = self.plan.by_id[node_id].agent.name
        grants = self.plan_grants.get(agent, self._services.grants.get(agent, {}))
        from converge.agents.memory import Grants, RequestScope

        if isinstance(grants, dict) and grants and set(grants) <= {"read", "write"}:
            grants = Grants(
                read={k: tuple(v) for k, v in grants.get("read", {}).items()},
                write={k: tuple(v) for k, v in grants.get("write", {}).items()},
            )
        if self._request is None:
            self._request = RequestScope()
        session = self.inputs.get("session_id")
        return scopes.context(
            grants,
            agent=agent,
            session_id=str(session) if session is not None else None,
            run_id=self.trace_id,
            request=self._request,
        )

    async def subrun(
        self, node_id: str, iteration: int, graph: Any, inputs: dict[str, Any], answer: Any
    ) -> Any:
        """Run (or continue) the child run of a node's pass; see ``NodeContext.run_graph``."""
        if self._spawn is None:
            raise ValidationError("this run cannot start child runs")
        child = f"{self.run_id}/{node_id}/{iteration}"
        # The child's agents count in this run's budget (``_budget``).
        return await self._spawn(graph, inputs, child, self.trace_id, answer, self.budget)

    # -- its end -----------------------------------------------------------------------------------

    def cancel(self) -> bool:
        """Stop the run on purpose (``Engine.cancel``): cancel the task executing it, unless
        its end is being written already, or it is a subgraph's child run (it shares its
        parent's task: cancel the parent). Returns whether it was cancelled."""
        task = self.task
        if self.stopping or task is None or task.done() or self.trace_id != self.run_id:
            return False
        self.cancels += 1
        task.cancel()
        return True

    def cancelled_on_purpose(self) -> bool:
        """Whether every cancellation of the run's task was ``cancel``'s (taking them back)."""
        task, own = self.task, False
        if self.cancels and task is not None:
            remaining = task.cancelling()
            for _ in range(self.cancels):
                remaining = task.uncancel()
            own = remaining == 0
        self.cancels = 0
        return own

    async def end(self) -> RunResult:
        """Log how the run ended (``run.completed``, ``run.waiting``, ``run.failed``,
        ``run.cancelled`` or ``run.interrupted``), write the log, and return its result."""
        status = self.status
        output = self.output() if status is RunStatus.COMPLETED else None
        events = self.events
        if status is RunStatus.COMPLETED:
            events.add(
                "run.completed",
                {
                    "output": output,
                    "usage": msgspec.structs.asdict(events.usage),
                    "duration_ms": round(self.duration_ms, 3),
                },
            )
        elif status is RunStatus.WAITING:
            events.add("run.waiting", {"questions": dict(self.waiting)})
        elif status is RunStatus.FAILED:
            events.add("run.failed", {"error": self.error, "node": self.failed_node})
        elif status is RunStatus.CANCELLED:
            events.add("run.cancelled", {})
        else:
            events.add("run.interrupted", {})
        await events.flush()
        return RunResult(
            run_id=self.run_id,
            graph=self.plan.name,
            status=status,
            output=output,
            outputs=self.node_outputs(),
            error=self.error,
            failed_node=self.failed_node,
            questions=dict(self.waiting),
            usage=events.usage,
            duration_ms=self.duration_ms,
        )

    async def end_broken(self, error: BaseException) -> None:
        """Log the run FAILED with ``error``, which escaped it (a hook's bug, a write the
        store refused), if the store still takes it: not left looking running."""
        self.move(RunStatus.FAILED, f"{type(error).__name__}: {error}")
        with contextlib.suppress(Exception):
            await self.end()

    def unstarted(self) -> RunResult:
        """The result of a continuation stopped before it took its run over (nothing of it
        was written)."""
        return RunResult(
            run_id=self.run_id,
            graph=self.plan.name,
            status=self.status,
            error=f"{self.status} before it took the run over",
        )

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


async def _at_once(outcome: PassResult) -> PassResult:
    return outcome
