"""``AgentRuntime``: runs one agent of the decentralized model.

The runtime sleeps until something happens — a message arrives in the agent's inbox, or the
board makes a task PENDING that the agent might see — never on a polling tick. Then it hands the
agent every queued message (up to ``max_batch``) and the tasks visible to it, passes what the
agent decides through ``validate_safety``, and has the executor apply the accepted decisions.

- One agent never runs two ``decide()`` calls at once; different agents' runtimes run
  concurrently.
- Incoming messages are checked as if they had been decoded from bytes — every field's type,
  then the signature, then the replay guard. Anything wrong with one (even an exception no
  check expected) drops it with a ``message.rejected`` event whose fields are capped, and the
  runtime goes on.
- A refused decision is a ``decision.refused`` event (its rule and why). A decision whose
  execution raises — a refusal by the board, a lost race, a bug in a protocol or a tool — is a
  ``decision.failed`` event (the error's type and message, the decision as data, the agent),
  logged too; the runtime goes on with the next decision either way. A ``decide()`` that
  raises is a ``decide.failed`` event, and the runtime goes on. Either holds for whatever the
  code raised, ``sys.exit()`` and its own ``KeyboardInterrupt`` included; only the process's
  own stop (a cancellation, a signal: ``converge.core.user_code.is_interruption``) stops it
  there.
- ``max_consecutive_failures`` decisions failing in a row (100 by default; a decision that
  succeeds starts the count again) stop the runtime: ``runtime.stopped`` says why, and ``run()``
  and ``wait()`` raise ``TooManyFailedDecisions``. An agent whose every decision fails would
  otherwise go on failing for ever, unnoticed.
- An agent that exhausts a budget (wall time, tokens, cost) is stopped with ``runtime.stopped``.
- ``decide()`` is called at most ``limits.max_decide_calls_per_second`` times in any second
  (1,000 by default): before a call that would exceed it the runtime waits on its clock, and
  what arrives meanwhile joins that call's batch. An agent that wakes itself on every call
  would otherwise spin a core.
- Without an executor, messages are signed and sent, and every other
  decision is refused with an event.
- The runtime also returns expired leases to the board, on a timer set to the earliest lease.
- Several ``ClaimTask`` decisions in a row go to the board as one unit (``claim_next`` among
  their tasks), and so do several ``ReportTask`` decisions in a row (``report_many``); each
  decision still succeeds or fails on its own, with the same events as one at a time (a claim
  not made in the unit is tried alone, which says why).
- The runtime keeps the fencing token of each claim its agent makes (``claims``) and hands it
  to the executor with the agent's ``ReportTask`` or ``FailTask`` of that task: ``decide()``
  never sees tokens. A claim is dropped when the report or failure is done, when the board
  refuses it (the task is no longer the agent's), when the task becomes PENDING again (its
  lease was lost), and — for a task that ended some other way, cancelled say — at the first
  round after its lease would have run out, once the board confirms the agent no longer holds
  it. Dropping one frees its place under ``limits.max_claimed_tasks``. Claims belong to the
  runtime that made them: another runtime of the same agent (a restart) does not inherit them,
  and leaves them to expire.
- The agent's pools are read once a round (when something in it needs them: visible tasks, a
  claim), and again after it joins or leaves a pool.
- Tasks that another process puts on the board wake it too, through the board's follower of
  the store's event log.

Details a user relies on:

- The runtime yields to the loop once per round, so a self-busy agent cannot starve others.
  The agent is on the network from ``start()``, before the loop runs, so nothing sent to it
  right after ``async with`` is lost. ``ready()`` waits until it is registered with discovery
  and ``runtime.started`` is logged, and ``async with`` enters only then: a requester that
  announces inside the block finds every agent started before it, without polling.
- A rejected message's event carries ``reason`` (the protocol error's own, ``malformed`` for a
  wrong type, or the exception's type), ``field``, and ``sender``, ``message_id`` and ``error``
  capped by ``core.clip.shown``; it is filed in the agent's own trace unless the signature
  verified (a claimed trace id is not believed). An exception no check expected is also logged
  with its traceback. (Once, a signed message with ``created_at="yesterday"`` raised
  ``TypeError`` in the guard and ended the runtime.)
- A failed decision is logged on ``converge.runtime.agent_runtime``: a ``ConvergeError`` as a
  warning, anything else as an error with its traceback. After ``max_consecutive_failures``
  the decisions left in that batch are not executed, ``runtime.stopped`` says ``N decisions
  failed in a row``, and ``run()``, ``wait()`` and ``shutdown()`` raise
  ``TooManyFailedDecisions``, chained from the last failure: a failure, not a planned end like
  a budget. ``decide()`` raising (``decide.failed``) does not count: it runs only when
  something wakes the agent.
- ``throttled`` counts the waits before ``decide()`` calls over the rate.
- The lease reaper sleeps on the runtime's clock until the earliest lease, or one lease length
  when none is out, then releases expired claims. Every runtime runs one by default
  (``reap_leases=False`` to opt out); concurrent reapers are harmless (compare-and-set).
- The agent's pools read once a round go to the executor with a claim (``pool_ids=``) and to
  discovery's descriptor, so a membership changed elsewhere is seen at the next round; only the
  wake-up pre-check on a task made PENDING uses the pools last read (a task in a pool the agent
  just joined elsewhere waits for its next wake-up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import msgspec

from converge.coordination.discovery import AgentDescriptor, DiscoveryService
from converge.coordination.pool_manager import PoolManager
from converge.coordination.task_manager import TaskManager
from converge.core.agent import Agent
from converge.core.clip import MAX_TEXT_CHARS, clip, shown
from converge.core.clock import Clock, system_clock
from converge.core.decisions import (
    ClaimTask,
    Decision,
    FailTask,
    JoinPool,
    LeavePool,
    ReportTask,
    SendMessage,
)
from converge.core.message import Message, ReplayGuard
from converge.core.task import Task, TaskState
from converge.core.user_code import is_interruption
from converge.errors import (
    ConvergeError,
    ProtocolError,
    StateError,
    TooManyFailedDecisions,
    ValidationError,
)
from converge.network.inbox import Inbox
from converge.network.socket_network import SocketNetwork
from converge.network.transport import Transport
from converge.policy.safety import (
    ActionPolicy,
    AgentUsage,
    ResourceLimits,
    SafetyViolation,
    accepted,
    validate_safety,
)
from converge.protocol.event import Event
from converge.runtime._arguments import check_count, check_type
from converge.runtime.executor import StandardExecutor, sign_and_send
from converge.store.base import Store

__all__ = ["DEFAULT_MAX_CONSECUTIVE_FAILURES", "AgentRuntime", "TooManyFailedDecisions"]

_BUDGETS = frozenset({"max_wall_time_s", "max_tokens", "max_cost"})
_HELD = frozenset({TaskState.CLAIMED, TaskState.RUNNING})
_BATCHED = (ClaimTask, ReportTask)  # decisions a run of which goes to the board as one unit
_log = logging.getLogger(__name__)

DEFAULT_MAX_CONSECUTIVE_FAILURES = 100
"""How many decisions may fail in a row before a runtime stops (``AgentRuntime``'s default)."""


class AgentRuntime:
    """Runs ``agent`` until ``shutdown()``; use ``async with`` or ``await run()``.

    Args:
        agent: the agent; its identity signs what it sends.
        network: the transport it receives and sends messages on.
        store: where the runtime's events go (default: the board's store).
        tasks: the board whose visible tasks the agent is shown.
        pools: the pools, for the agent's memberships.
        discovery: where the agent is registered while it runs (and heartbeats); on a
            ``SocketNetwork`` its descriptor carries the network's endpoint, so a
            ``DiscoveryResolver`` on another host routes to it.
        executor: applies accepted decisions; None: only messages are sent.
        limits: the agent's resource limits (``ResourceLimits()`` by default, which bounds
            its messages to 10,000 and its ``decide()`` calls to 1,000 a second; None in a
            field is unlimited).
        policy: the decisions and tools it may use (everything by default).
        max_batch: the most messages (and visible tasks) per ``decide()`` call.
        inbox_size: the inbox bound; senders wait while it is full.
        replay_guard: rejects stale and replayed messages (one per runtime by default).
        clock: the time source.
        reap_leases: whether this runtime returns expired leases to the board.
        max_consecutive_failures: how many decisions may fail in a row before the runtime
            stops (``TooManyFailedDecisions``); a decision that succeeds resets the count.

    Raises:
        ValidationError: an argument of the wrong type or out of range (``field`` names it),
            an agent without ``decide()``, or no store for the runtime's events.
    """

    def __init__(
        self,
        agent: Agent,
        *,
        network: Transport,
        store: Store | None = None,
        tasks: TaskManager | None = None,
        pools: PoolManager | None = None,
        discovery: DiscoveryService | None = None,
        executor: StandardExecutor | None = None,
        limits: ResourceLimits | None = None,
        policy: ActionPolicy | None = None,
        max_batch: int = 100,
        inbox_size: int = 1000,
        replay_guard: ReplayGuard | None = None,
        clock: Clock = system_clock,
        reap_leases: bool = True,
        max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES,
    ) -> None:
        check_type(agent, Agent, "agent", optional=False)
        check_type(network, Transport, "network", optional=False)
        check_type(store, Store, "store")
        check_type(tasks, TaskManager, "tasks")
        check_type(pools, PoolManager, "pools")
        check_type(discovery, DiscoveryService, "discovery")
        check_type(executor, StandardExecutor, "executor")
        check_type(limits, ResourceLimits, "limits")
        check_type(policy, ActionPolicy, "policy")
        check_type(replay_guard, ReplayGuard, "replay_guard")
        check_type(clock, Clock, "clock", optional=False)
        check_type(reap_leases, bool, "reap_leases", optional=False)
        max_batch = check_count(max_batch, "max_batch")
        inbox_size = check_count(inbox_size, "inbox_size")
        self.max_consecutive_failures = check_count(
            max_consecutive_failures, "max_consecutive_failures"
        )
        """How many decisions may fail in a row before the runtime stops."""
        if not agent.supports_decide:
            raise ValidationError(
                f"agent {agent.name!r} does not implement decide(), so it cannot run in the "
                "decentralized runtime",
                field="agent",
            )
        events = store or (tasks.store if tasks else None) or (pools.store if pools else None)
        if events is None:
            raise ValidationError("a runtime needs a store for its events", field="store")
        self.agent = agent
        self.network = network
        self.store = events
        self.tasks = tasks
        self.pools = pools
        self.discovery = discovery
        self.executor = executor
        self.limits = limits or ResourceLimits()
        self.policy = policy or ActionPolicy.allow_all()
        self.max_batch = max_batch
        self.clock = clock
        self.reap_leases = reap_leases and tasks is not None
        # Not `replay_guard or ...`: a guard holding no nonce yet is falsy (it has a length).
        self.guard = ReplayGuard(clock=clock) if replay_guard is None else replay_guard
        self._wake = asyncio.Event()
        self.inbox = Inbox(inbox_size, notify=self._wake.set)
        self.usage = AgentUsage(clock.now())
        self.stop_reason: str | None = None
        self._stopping = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unwatch: Any = None
        self._attached = False
        self._pool_ids: list[str] = []
        self._pools_read = False  # whether _pool_ids was read in this round
        self._claims: dict[str, _Claim] = {}
        self._next_check = math.inf  # no claim is due for a check before (board's clock)
        self.decide_calls = 0
        """How many times ``decide()`` has been called."""
        self.throttled = 0
        """How many times the runtime waited before a ``decide()`` call, to keep within
        ``limits.max_decide_calls_per_second``."""
        self.failed_in_a_row = 0
        """How many decisions have failed since the last one that succeeded."""
        self._gave_up: TooManyFailedDecisions | None = None

    @property
    def did(self) -> str:
        """The agent's did."""
        return self.agent.did

    @property
    def claims(self) -> Mapping[str, int]:
        """The fencing token of each task the agent holds through this runtime, by task id (a
        copy)."""
        return {task_id: claim.token for task_id, claim in self._claims.items()}

    # -- lifetime ----------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        """Start the runtime and return once it is ``ready()``: inside the block the agent is
        registered with discovery, so a requester finds it without polling."""
        self.start()
        try:
            await self.ready()
        except BaseException:
            with contextlib.suppress(Exception):  # its own error is the one ready() raised
                await self.shutdown()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    def start(self) -> None:
        """Start ``run()`` in the background (the runtime owns the task; ``shutdown`` ends it).

        The agent is on the network as soon as this returns: messages sent to it are queued.
        """
        if self._task is None:
            self._attach()
            self._task = asyncio.ensure_future(self.run())

    def _attach(self) -> None:
        if self._attached:
            return
        self._attached = True
        self.network.register(self.did, self.inbox)
        for topic in self.agent.topics:
            self.network.subscribe(self.did, topic)
        if self.tasks is not None:
            self._unwatch = self.tasks.watch(self._on_pending)
        self._wake.set()  # look at the board once at start

    async def ready(self) -> None:
        """Wait until the agent is running: its ``on_start()`` has returned, it is registered
        with discovery (when the runtime has one), ``runtime.started`` is logged and the
        board's follower listens (when it has a board).

        Raises:
            StateError: the runtime was never started, or it stopped before it was ready.
            Exception: what ended the runtime before it was ready (``on_start()`` raising,
                say).
        """
        if self._task is None:
            raise StateError("the runtime was never started: call start() first")
        if self._ready.is_set():
            return
        ready = asyncio.ensure_future(self._ready.wait())
        try:
            await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if self._ready.is_set():
            return
        await asyncio.shield(self._task)  # ended first: its error, if it had one
        raise StateError(
            f"agent {self.agent.name!r}'s runtime stopped before it was ready "
            f"({self.stop_reason or 'ended'})"
        )

    async def shutdown(self, reason: str = "shutdown") -> None:
        """Stop after the current ``decide()`` and its decisions; idempotent."""
        self._request_stop(reason)
        if self._task is not None:
            await asyncio.shield(self._task)

    async def wait(self) -> None:
        """Wait until the runtime has ended: by ``shutdown()``, an exhausted budget (see
        ``stop_reason``), or a failure of ``run()``, raised here.

        Raises:
            StateError: the runtime was never started.
            TooManyFailedDecisions: it stopped after ``max_consecutive_failures`` failed
                decisions in a row.
        """
        if self._task is None:
            raise StateError("the runtime was never started: call start() first")
        await asyncio.shield(self._task)

    def _request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Run the agent until ``shutdown()``, until it exhausts a budget, or until
        ``max_consecutive_failures`` of its decisions have failed in a row.

        Raises:
            TooManyFailedDecisions: that many decisions failed in a row.
        """
        self._attach()
        try:
            await self.agent.on_start()
            await self._register()
            await self._record("runtime.started", name=self.agent.name)
            async with contextlib.AsyncExitStack() as stack:
                if self.tasks is not None:
                    await stack.enter_async_context(self.tasks.following())
                # Ready once the board's follower has its starting point too: a task submitted
                # after `async with` is then heard once, not also through the follower.
                self._ready.set()
                async with asyncio.TaskGroup() as group:
                    loop = group.create_task(self._loop())
                    helpers = []
                    if self.reap_leases:
                        helpers.append(group.create_task(self._reaper()))
                    if self.discovery is not None:
                        helpers.append(group.create_task(self._heartbeats(self.discovery)))
                    if self.limits.max_wall_time_s is not None:
                        helpers.append(group.create_task(self._wall_clock()))
                    await loop
                    for helper in helpers:
                        helper.cancel()
            if self._gave_up is not None:
                raise self._gave_up  # chained from the last failure
        finally:
            if self._unwatch is not None:
                self._unwatch()
            self.inbox.close()
            self.network.unregister(self.did)
            # Work that must finish survives cancellation: the agent hears it stopped, and the
            # log says so.
            if self.discovery is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.discovery.unregister(self.did))
            with contextlib.suppress(Exception):
                await asyncio.shield(self.agent.on_stop())
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    self._record("runtime.stopped", reason=self.stop_reason or "cancelled")
                )

    # -- the loop ----------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            await self._wake.wait()
            self._wake.clear()
            # Yield once per round even when already woken: an agent that keeps itself busy (in
            # memory nothing else suspends) must not starve the other agents of the loop.
            await asyncio.sleep(0)
            if self._stopping.is_set():
                return
            limit = self.limits.max_decide_calls_per_second
            now = self.clock.now()
            delay = self.usage.decide_delay(limit, now)
            if delay > 0:
                # Before draining: what arrives meanwhile joins this call's batch.
                self.throttled += 1
                await self._pause_until(now + delay)
                if self._stopping.is_set():
                    return
            messages = await self._accept(self.inbox.drain(self.max_batch))
            self._pools_read = False
            if self._claims and self._claims_due():
                await self._check_claims()
            tasks = await self._visible_tasks()
            if not messages and not tasks:
                continue
            self.decide_calls += 1
            self.usage.record_decide(self.clock.now())
            try:
                decisions = await self.agent.decide(messages, tasks)
            except BaseException as exc:  # the agent's bug (``sys.exit()`` too): record it
                if is_interruption(exc):
                    raise
                await self._record("decide.failed", error=f"{type(exc).__name__}: {exc}")
                with contextlib.suppress(Exception):
                    await self.agent.on_error(exc)
                continue
            if len(self.inbox):
                self._wake.set()
            # A peer picks its messages' trace id: the events this round writes carry it, clipped.
            trace = next((clip(m.trace_id) for m in messages if m.trace_id), None)
            await self._apply(list(decisions), trace)

    async def _pause_until(self, deadline: float) -> None:
        """Wait until ``deadline`` on the runtime's clock (for ever if infinite), or until the
        runtime is asked to stop."""

        async def sleep() -> None:  # measured when it starts: the clock may have moved
            await self.clock.sleep(max(0.0, deadline - self.clock.now()))

        async with asyncio.TaskGroup() as group:
            waits: set[asyncio.Task[Any]] = {group.create_task(self._stopping.wait())}
            if math.isfinite(deadline):
                waits.add(group.create_task(sleep()))
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()

    async def _apply(self, decisions: list[Decision], trace_id: str | None) -> None:
        now = self.clock.now()
        violations = validate_safety(
            decisions, limits=self.limits, policy=self.policy, usage=self.usage, now=now
        )
        for v in violations:
            await self._refused(v, trace_id)
        if any(v.rule in _BUDGETS for v in violations):
            rule = next(v.rule for v in violations if v.rule in _BUDGETS)
            self._request_stop(f"budget exhausted: {rule}")
            return
        todo = list(accepted(decisions, violations))
        i = 0
        while i < len(todo):
            run = self._batch_at(todo, i)
            if run:
                # Several claims (or reports) in a row: one unit of the board, each decision's
                # outcome kept apart. The whole run was applied, so a stop at the failure limit
                # only leaves the decisions after it unexecuted.
                assert self.executor is not None
                outcomes = await self._apply_run(self.executor, run, trace_id)
                for decision, failure in zip(run, outcomes, strict=True):
                    if failure is None:
                        self._succeeded(decision)
                        continue
                    await self._failed(decision, failure, trace_id)
                    if self.failed_in_a_row >= self.max_consecutive_failures:
                        return
                i += len(run)
                continue
            decision = todo[i]
            i += 1
            tag = type(decision).__struct_config__.tag
            try:
                if self.executor is not None:
                    await self._execute(self.executor, decision, trace_id)
                elif isinstance(decision, SendMessage):
                    await sign_and_send(self.agent, decision, self.network, trace_id, self.clock)
                else:
                    await self._record(
                        "decision.refused",
                        trace_id,
                        type=tag,
                        rule="no_executor",
                        detail="without an executor only messages are sent",
                    )
                    continue
            except BaseException as exc:  # any failure of one decision; cancellation goes on
                if is_interruption(exc):
                    raise
                await self._failed(decision, exc, trace_id)
                if self.failed_in_a_row >= self.max_consecutive_failures:
                    return  # the runtime stops: the decisions left are not executed
                continue
            self._succeeded(decision)

    def _succeeded(self, decision: Decision) -> None:
        self.failed_in_a_row = 0
        self.usage.apply(decision, self.clock.now())
        if isinstance(decision, (JoinPool, LeavePool)):
            self._pools_read = False  # memberships changed: read them again

    def _batch_at(self, todo: list[Decision], start: int) -> list[Decision]:
        """The claims (or reports) in a row from ``todo[start]``, if there are two or more and
        the executor takes them as one unit; else nothing."""
        executor = self.executor
        first = todo[start]
        if executor is None or not executor.batches or not isinstance(first, _BATCHED):
            return []
        end = start + 1
        while end < len(todo) and type(todo[end]) is type(first):
            end += 1
        return todo[start:end] if end - start > 1 else []

    async def _apply_run(
        self, executor: StandardExecutor, run: list[Decision], trace_id: str | None
    ) -> list[BaseException | None]:
        """Apply a run of claims or of reports as one unit; per decision, what it raised (the
        error a lone ``execute`` of it raises) or None."""
        board = executor.tasks
        assert board is not None
        if isinstance(run[0], ClaimTask):
            claims = [d for d in run if isinstance(d, ClaimTask)]
            pools = None if self.pools is None else await self._agent_pools()
            tokens = await executor.claim_tasks(self.agent, claims, pool_ids=pools)
            outcomes: list[BaseException | None] = []
            for decision in claims:
                token = tokens.pop(decision.task_id, None)
                if token is None:  # not claimed: alone, it says why (or wins a late race)
                    outcomes.append(await self._alone(executor, decision, trace_id))
                    continue
                until = board.clock.now() + board.claim_ttl_sec
                self._claims[decision.task_id] = _Claim(token, until)
                self._next_check = min(self._next_check, until)
                outcomes.append(None)
            return outcomes
        reports = [d for d in run if isinstance(d, ReportTask)]
        held = {task_id: claim.token for task_id, claim in self._claims.items()}
        try:
            results = await executor.report_tasks(self.agent, reports, held)
        except ValidationError:  # the batch as a whole cannot be written: one at a time
            return [await self._alone(executor, decision, trace_id) for decision in reports]
        outcomes = []
        for report, result in zip(reports, results, strict=True):
            claim = self._claims.get(report.task_id)
            ours = report.token in (None, None if claim is None else claim.token)
            failed = isinstance(result, ConvergeError)
            # Done, or refused because the agent does not hold the task: its claim is gone.
            if ours and (not failed or isinstance(result, StateError)):
                self._drop(report.task_id)
            outcomes.append(result if isinstance(result, ConvergeError) else None)
        return outcomes

    async def _alone(
        self, executor: StandardExecutor, decision: Decision, trace_id: str | None
    ) -> BaseException | None:
        """``_execute`` one decision; what it raised, or None."""
        try:
            await self._execute(executor, decision, trace_id)
        except BaseException as exc:  # a failure of this decision; cancellation goes on
            if is_interruption(exc):
                raise
            return exc
        return None

    async def _execute(
        self, executor: StandardExecutor, decision: Decision, trace_id: str | None
    ) -> None:
        """Have the executor apply ``decision``, with what the runtime keeps for it: the claim's
        token for a report or failure, the round's pools for a claim."""
        agent = self.agent
        if isinstance(decision, ClaimTask):
            pools = None if self.pools is None else await self._agent_pools()
            token = await executor.execute(agent, decision, trace_id=trace_id, pool_ids=pools)
            board = executor.tasks
            assert board is not None  # the claim went through it
            # Read after the claim returned: the lease the board granted ends no later.
            until = board.clock.now() + board.claim_ttl_sec
            self._claims[decision.task_id] = _Claim(token, until)
            self._next_check = min(self._next_check, until)
            return
        if not isinstance(decision, (ReportTask, FailTask)):
            await executor.execute(agent, decision, trace_id=trace_id)
            return
        claim = self._claims.get(decision.task_id)
        token = None if claim is None else claim.token
        ours = isinstance(decision, FailTask) or decision.token in (None, token)
        try:
            await executor.execute(agent, decision, trace_id=trace_id, token=token)
        except StateError:
            # The board says the agent does not hold the task (a lost lease, a task that
            # ended): its claim is gone.
            if ours:
                self._drop(decision.task_id)
            raise
        if ours:
            self._drop(decision.task_id)

    def _drop(self, task_id: str) -> None:
        """Forget a claim: the agent no longer holds the task."""
        if self._claims.pop(task_id, None) is not None:
            self.usage.release_task(task_id)

    def _claims_due(self) -> bool:
        """Whether a claim's lease may have run out (a runtime holding many claims pays
        nothing per round until one has)."""
        board = None if self.executor is None else self.executor.tasks
        return board is not None and board.clock.now() >= self._next_check

    async def _check_claims(self) -> None:
        """Drop the claims whose lease has run out and which the board says the agent no
        longer holds (a task cancelled, or failed out of attempts, while it held it)."""
        board = None if self.executor is None else self.executor.tasks
        if board is None:
            return
        now = board.clock.now()
        self._next_check = math.inf
        for task_id, claim in list(self._claims.items()):
            if claim.until > now:
                self._next_check = min(self._next_check, claim.until)
                continue
            task = await board.get(task_id)
            if (
                task is None
                or task.state not in _HELD
                or task.assigned_to != self.did
                or task.attempts != claim.token
            ):
                self._drop(task_id)
            else:  # still its own: a heartbeat extended it, or nobody reaped it yet
                lease = task.lease_expires_at
                claim.until = (
                    lease if lease is not None and lease > now else now + board.claim_ttl_sec
                )
                self._next_check = min(self._next_check, claim.until)

    async def _accept(self, messages: Sequence[Message]) -> list[Message]:
        good: list[Message] = []
        for message in messages:
            authentic = False
            try:
                if not isinstance(message, Message):
                    raise ProtocolError(f"not a Message but {type(message).__name__}")
                message.verify()  # its fields' types, then its signature
                authentic = True
                self.guard.check(message)
            except Exception as exc:  # whatever one message holds, the runtime goes on
                await self._rejected(message, exc, authentic)
                continue
            good.append(message)
        return good

    async def _rejected(self, message: object, exc: Exception, authentic: bool) -> None:
        """Record a message that was not accepted: the fields shown are capped, and the trace
        it names is believed only if its signature verified."""
        if not isinstance(exc, ConvergeError):  # a bug the checks let through: its traceback
            _log.error(
                "agent %s: message rejected: %s: %s",
                self.agent.name,
                type(exc).__name__,
                shown(str(exc)),
                exc_info=exc,
                extra={"agent": self.did},
            )
        trace = getattr(message, "trace_id", None) if authentic else None
        await self._record(
            "message.rejected",
            shown(trace) if trace else None,
            sender=shown(getattr(message, "sender", None)),
            message_id=shown(getattr(message, "id", None)),
            reason=_reason(exc),
            field=shown(getattr(exc, "field", None)),
            error=shown(str(exc), MAX_TEXT_CHARS),
        )

    async def _agent_pools(self) -> list[str] | None:
        """The agent's pools, read once a round (and again after it joined or left one); None
        without a pool manager."""
        if self.pools is None:
            return None
        if not self._pools_read:
            self._pool_ids = await self.pools.get_pools_for_agent(self.did)
            self._pools_read = True
        return self._pool_ids

    async def _visible_tasks(self) -> list[Task]:
        if self.tasks is None:
            return []
        pools = [] if self.pools is None else await self._agent_pools()
        return await self.tasks.list_pending_tasks_for_agent(
            self.did, pools or [], self.agent.capabilities, limit=self.max_batch
        )

    def _on_pending(self, task: Task) -> None:
        claim = self._claims.get(task.id)
        if claim is not None and claim.token <= task.attempts:
            self._drop(task.id)  # its lease was lost: the task is offered again
        # Cheap pre-check by the pools last read; the query on waking applies the full rules.
        if task.pool_id is None or not self._pool_ids or task.pool_id in self._pool_ids:
            self._wake.set()

    # -- discovery ---------------------------------------------------------------------------------

    async def _register(self) -> None:
        if self.discovery is None:
            return
        pools = await self._agent_pools() or []
        url = self.network.endpoint.url if isinstance(self.network, SocketNetwork) else None
        await self.discovery.register(
            AgentDescriptor(
                did=self.did,
                name=self.agent.name,
                capabilities=tuple(self.agent.capabilities),
                topics=tuple(t.name for t in self.agent.topics),
                pools=tuple(pools),
                endpoint=url or "local:",
                endpoints=(url,) if url else (),
            )
        )

    async def _heartbeats(self, discovery: DiscoveryService) -> None:
        # Three heartbeats per time-to-live: one lost beat does not make the agent vanish.
        while not self._stopping.is_set():
            await self.clock.sleep(discovery.ttl_s / 3)
            try:
                await discovery.heartbeat(self.did)
            except ConvergeError:
                await self._register()  # lapsed (a long pause): register again

    # -- leases ------------------------------------------------------------------------------------

    async def _wall_clock(self) -> None:
        """Stop the runtime once its wall-time budget is spent, even if it has nothing to
        decide (a decision past it is refused as well)."""
        limit = self.limits.max_wall_time_s
        assert limit is not None
        await self.clock.sleep(max(0.0, self.usage.started_at + limit - self.clock.now()))
        self._request_stop("budget exhausted: max_wall_time_s")

    async def _reaper(self) -> None:
        tasks = self.tasks
        assert tasks is not None
        while not self._stopping.is_set():
            try:
                soonest = await tasks.store.expiring_tasks(float("inf"), limit=1)
                now = self.clock.now()
                lease = soonest[0].lease_expires_at if soonest else None
                # Sleep to the earliest lease, or one lease length if none is out: a claim made
                # meanwhile cannot expire sooner than that.
                delay = tasks.claim_ttl_sec if lease is None else max(lease - now, 0.0)
                if delay > 0:
                    await self.clock.sleep(delay)
                await tasks.release_expired_claims()
            except ConvergeError as exc:
                await self._record("runtime.reaper_failed", error=str(exc))
                await self.clock.sleep(tasks.claim_ttl_sec)

    async def _failed(self, decision: Decision, exc: BaseException, trace_id: str | None) -> None:
        """Record (and log) a decision that failed; stop the runtime at the limit."""
        self.failed_in_a_row += 1
        tag = str(type(decision).__struct_config__.tag)
        error = f"{type(exc).__name__}: {exc}"
        # A refusal (a ConvergeError) is the decision's fault or a lost race; anything else is a
        # bug in the executor, a protocol or a tool: log its traceback.
        _log.log(
            logging.WARNING if isinstance(exc, ConvergeError) else logging.ERROR,
            "agent %s: decision %s failed: %s",
            self.agent.name,
            tag,
            error,
            exc_info=None if isinstance(exc, ConvergeError) else exc,
            extra={"agent": self.did, "trace_id": trace_id},
        )
        await self._record(
            "decision.failed",
            trace_id,
            type=tag,
            error=str(exc),
            error_type=type(exc).__name__,
            decision=_as_data(decision),
            agent=self.did,
        )
        if self.failed_in_a_row >= self.max_consecutive_failures:
            gave_up = TooManyFailedDecisions(self.did, self.failed_in_a_row, error)
            gave_up.__cause__ = exc
            self._gave_up = gave_up
            self._request_stop(f"{self.failed_in_a_row} decisions failed in a row")

    # -- events ------------------------------------------------------------------------------------

    async def _refused(self, violation: SafetyViolation, trace_id: str | None) -> None:
        await self._record(
            "decision.refused",
            trace_id,
            type=violation.decision_type,
            rule=violation.rule,
            detail=violation.detail,
            index=violation.index,
        )

    async def _record(self, kind: str, trace_id: str | None = None, **data: Any) -> None:
        await self.store.append(
            [
                Event(
                    kind=kind,
                    trace_id=trace_id or self.did,
                    actor=self.did,
                    subject=self.did,
                    data={k: v for k, v in data.items() if v is not None},
                    at=self.clock.now(),
                )
            ]
        )


class _Claim:
    """A claim the agent made through this runtime: its fencing token, and the time (on the
    board's clock) after which the runtime asks the board whether the agent still holds it."""

    __slots__ = ("token", "until")

    def __init__(self, token: int, until: float) -> None:
        self.token = token
        self.until = until


def _reason(exc: Exception) -> str:
    """A rejected message's ``reason``: the protocol error's own (``bad_signature``,
    ``stale``, ``replayed``…), ``malformed`` for a field of the wrong type, else the type."""
    if isinstance(exc, ProtocolError):
        return exc.reason
    return "malformed" if isinstance(exc, ValidationError) else type(exc).__name__


def _as_data(decision: Decision) -> Any:
    """The decision as plain data for its ``decision.failed`` event; its ``repr`` when a field
    holds something that is not data (a payload object)."""
    try:
        return msgspec.to_builtins(decision)
    except (TypeError, ValueError):
        return {"type": type(decision).__struct_config__.tag, "repr": repr(decision)[:1000]}
