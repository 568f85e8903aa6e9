"""The task board: submit, claim under a lease, report, fail, cancel.

A claim's holder also starts the task and heartbeats its lease.

Every change is one unit of work in the store: the task's new state (a compare-and-set on the
state and attempt number it was read in) and its event commit together or not at all. A claim
takes a lease of ``claim_ttl_sec`` and returns a **fencing token** (the attempt number); only the
current holder with the current token may start, heartbeat or report, so a worker that lost its
lease (stopped, partitioned, slow) can never overwrite the work of the one that took over.

Leases read the manager's clock (wall-clock by default), so they mean the same after a restart.

**Batches.** A worker that takes many tasks pays per call, not per task, with ``submit_many``
(all the tasks or none, one unit), ``claim_next`` (up to ``limit`` tasks visible to the agent,
each under its own lease and fencing token) and ``report_many`` (one ``Report`` per task: its
id, result and token). A batch is one ``Store.write_tasks`` (one transaction where the store
has them): every task still moves through the same states with the same event as a lone call
would write, judged by the same compare-and-set. What one task's refusal does to the others:

- ``submit_many``: nothing is submitted (a taken id is a ``TaskConflict``, as ``submit``'s).
- ``claim_next``: a task another claimer took first is skipped, and the board read again
  (``_CLAIM_ROUNDS`` times at most) for others; the call returns the tasks it did claim.
- ``report_many``: the others are completed all the same; then ``ReportsRefused`` says which
  task was refused and why (the error ``report`` would have raised for it), and carries the
  tasks that were completed.

Bad input — an empty batch, one over ``MAX_BATCH``, an item of the wrong type, a task id twice
in one batch, a ``limit`` below 1 — is a ``ValidationError`` naming the item, before anything is
written.

``release_expired_claims(now)`` also takes seed 001's ``time.monotonic()`` readings (see it); the
other components that take a ``now`` (discovery, delegation, consensus, negotiation) accept only
values within 30 days of their clock.

Events: ``task.submitted``, ``task.claimed``, ``task.started``, ``task.heartbeat``,
``task.completed``, ``task.failed``, ``task.cancelled``, ``task.released``; their trace id is the
task's trace (its own id by default). Acting without the current lease is ``LeaseLost`` (a
``StateError``) saying who holds it or that the token is stale. ``claim`` re-checks visibility
against the agent's pools and capabilities. ``submitted_by`` records the submitting agent: only
it may cancel the task through the executor.

``watch(callback)`` calls back whenever this manager makes a task PENDING, and inside
``following()`` (runtimes enter it) one follower per manager tails the store's
``task.submitted``/``task.released`` events, so tasks made PENDING by another process call back
too (events this manager wrote are skipped).

A manager remembers the tasks it last wrote (up to 10,000, oldest out first; terminal tasks are
forgotten), and claim, start, heartbeat and report start from that copy instead of reading the
store — on SQLite a read is a hop to the reader thread. This is safe because every write is a
compare-and-set on (state, attempts): a copy made stale by another manager or process loses. A
copy is used only when it says the call will succeed; a conflict, or anything that would be
refused, is judged again from a fresh read, so callers get the store's answer (``LeaseLost``,
``InvalidTransition``, the idempotent repeat) exactly as without the copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, Protocol

import msgspec

from converge.core.capability import Capability, CapabilitySet, Requirement
from converge.core.clock import CLOCK_SKEW_LIMIT_S, Clock, system_clock
from converge.core.ids import new_id, new_ids
from converge.core.task import TERMINAL_STATES, Task, TaskState, check_transition
from converge.errors import (
    ConvergeError,
    InvalidTransition,
    LeaseLost,
    PolicyViolation,
    ReportsRefused,
    StateError,
    StoreClosed,
    TaskConflict,
    ValidationError,
)
from converge.protocol.event import Event
from converge.store.base import Store, TaskWrite

__all__ = [
    "MAX_BATCH",
    "CapabilityDirectory",
    "LeaseLost",
    "Membership",
    "Report",
    "ReportsRefused",
    "TaskManager",
]

MAX_BATCH = 1000
"""The most tasks one ``submit_many``, ``claim_next`` or ``report_many`` call takes."""

# Enum members read through their class cost a lookup each: the hot paths use these names.
_PENDING = TaskState.PENDING
_CLAIMED = TaskState.CLAIMED
_RUNNING = TaskState.RUNNING
_COMPLETED = TaskState.COMPLETED
_HELD = frozenset({_CLAIMED, _RUNNING})
_replace = msgspec.structs.replace
_PENDING_KINDS = ("task.submitted", "task.released")
_KNOWN_MAX = 10_000  # tasks a manager remembers as it last wrote them
# claim_next: how many times it reads the board again after losing tasks to other claimers.
_CLAIM_ROUNDS = 3
# release_expired_claims(now): how far `now` may be from time.monotonic() to be taken as read
# from it just before the call (a descheduled process, a GC pause: seconds at worst), and how
# close two clocks must read to be taken as one clock (the two are read one after the other,
# so a busy machine puts some milliseconds between them; a lease judged 50 ms off is the same).
_MONOTONIC_TOLERANCE_S = 10.0
_SAME_CLOCK_S = 0.05


class Membership(Protocol):
    """Who is in which pool (``PoolManager`` implements it)."""

    async def get_pools_for_agent(self, agent_id: str) -> list[str]:
        """The ids of the pools ``agent_id`` has joined."""
        ...


class CapabilityDirectory(Protocol):
    """What an agent can do (discovery implements it)."""

    async def capabilities_of(self, agent_id: str) -> CapabilitySet | None:
        """The agent's capabilities, or None if it is unknown."""
        ...


class Report(msgspec.Struct, frozen=True):
    """One report of ``TaskManager.report_many``: a held task's result, with the fencing token
    of the claim that holds it."""

    task_id: str
    """The task."""
    result: Any
    """Its output (anything the store can encode)."""
    token: int
    """The fencing token its claim returned (``claim``'s result, or ``task.attempts`` of a task
    ``claim_next`` returned)."""


class TaskManager:
    """The durable task board over a ``Store``.

    Args:
        store: where tasks and their events live.
        claim_ttl_sec: the lease a claim (or heartbeat) grants.
        clock: the time source for leases (wall-clock by default; persisted values need it).
        membership: where to look up an agent's pools when a claim does not say.
        directory: where to look up an agent's capabilities when a claim does not say.
    """

    def __init__(
        self,
        store: Store,
        *,
        claim_ttl_sec: float = 30.0,
        clock: Clock = system_clock,
        membership: Membership | None = None,
        directory: CapabilityDirectory | None = None,
    ) -> None:
        if not claim_ttl_sec > 0:
            raise ValidationError(
                f"claim_ttl_sec must be > 0, not {claim_ttl_sec!r}", field="claim_ttl_sec"
            )
        self.store = store
        self.claim_ttl_sec = float(claim_ttl_sec)
        self.clock = clock
        self.membership = membership
        self.directory = directory
        self._watchers: list[Callable[[Task], None]] = []
        self._followers = 0
        self._follow_task: asyncio.Task[None] | None = None
        self._own_events: set[str] = set()
        # Tasks as this manager last wrote them: the fast path of claim, start, heartbeat and
        # report reads here instead of the store. Every write is a compare-and-set on (state,
        # attempts), so a stale copy can never win; any refusal or conflict reads the store again.
        self._known: dict[str, Task] = {}
        # Tasks a claim_next of this manager is claiming right now: the next one passes them by
        # instead of racing it for them.
        self._claiming: set[str] = set()

    def watch(self, callback: Callable[[Task], None]) -> Callable[[], None]:
        """Call ``callback(task)`` whenever this manager makes a task PENDING (a submit, or a
        lease returned); returns the function that stops watching. Runtimes wake on it instead of
        polling the board."""
        self._watchers.append(callback)
        return lambda: self._watchers.remove(callback) if callback in self._watchers else None

    def _pending(self, task: Task) -> None:
        if self._watchers:
            for callback in list(self._watchers):
                callback(task)

    @contextlib.asynccontextmanager
    async def following(self) -> AsyncIterator[None]:
        """While inside, watchers also hear of tasks made PENDING by *other* processes.

        One follower per manager tails the store's ``task.submitted`` and ``task.released``
        events, however many runtimes enter; it starts with the first and stops with the last.
        Across processes it is as prompt as the store's event wake-up (SQLite: within 250 ms).
        """
        self._followers += 1
        if self._follow_task is None:
            start = await self.store.last_seq()
            self._follow_task = asyncio.ensure_future(self._follow(start))
        try:
            yield
        finally:
            self._followers -= 1
            if self._followers == 0 and self._follow_task is not None:
                task, self._follow_task = self._follow_task, None
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                self._own_events.clear()

    async def _follow(self, after_seq: int) -> None:
        try:
            async for event in self.store.tail(after_seq=after_seq, kinds=_PENDING_KINDS):
                if event.id in self._own_events:
                    self._own_events.discard(event.id)  # ours: watchers heard already
                    continue
                task = await self.store.get_task(event.subject)
                if task is not None and task.state is TaskState.PENDING:
                    self._pending(task)
        except StoreClosed:
            return  # the store closed under the follower (a shutdown): nothing more will come

    # -- submitting --------------------------------------------------------------------------------

    async def submit(self, task: Task, *, actor: str = "") -> Task:
        """Put a new PENDING task on the board; returns it as stored (with its trace id).

        Raises:
            ValidationError: a bad requirement, or a task that is not new and PENDING.
            TaskConflict: a task with this id exists.
        """
        if (
            type(task) is not Task
            or task.state is not _PENDING
            or task.attempts
            or task.assigned_to
            or task.required_capabilities
        ):
            _check_new(task, "task")  # the full checks, requirements parsed
        stored, event = self._submission(task, actor, self.clock.now())
        kept = await self.store.write_task(stored, event)
        known = self._known
        known[kept.id] = kept
        if len(known) > _KNOWN_MAX:
            del known[next(iter(known))]  # the oldest entry: dicts keep insertion order
        if self._watchers:
            self._pending(stored)
        return stored

    def _submission(
        self, task: Task, actor: str, now: float, event_id: str = ""
    ) -> tuple[Task, Event]:
        """The task as submitted at ``now`` and its ``task.submitted`` event (``event_id``: the
        event's id, from a batch's ``new_ids``; a new one when empty)."""
        trace = task.trace_id or task.id
        stored = _replace(
            task,
            trace_id=trace,
            submitted_by=task.submitted_by or actor or None,
            created_at=now,
            updated_at=now,
        )
        data: dict[str, Any] = {"objective": stored.objective, "priority": stored.priority}
        if stored.pool_id is not None:
            data["pool_id"] = stored.pool_id
        if stored.required_capabilities:
            data["required_capabilities"] = list(stored.required_capabilities)
        event = Event(
            kind="task.submitted",
            trace_id=trace,
            actor=actor,
            subject=stored.id,
            data=data,
            id=event_id or new_id(),
            at=now,
        )
        if self._followers:
            self._own_events.add(event.id)
        return stored, event

    async def submit_many(self, tasks: Sequence[Task], *, actor: str = "") -> list[Task]:
        """Put new PENDING tasks on the board in one unit: all of them, or none.

        Each is stored as ``submit`` stores it, with its own ``task.submitted`` event.

        Returns:
            The tasks as stored, in order.

        Raises:
            ValidationError: an empty batch or one over ``MAX_BATCH``, an item that is not a
                new PENDING ``Task``, a bad requirement, or an id twice (``field`` names
                ``tasks[i]``); nothing is written.
            TaskConflict: a task with one of these ids is on the board; nothing is written.
        """
        batch = _batch(tasks, "tasks")
        seen: set[str] = set()
        for i, task in enumerate(batch):
            if (
                type(task) is not Task
                or task.state is not _PENDING
                or task.attempts
                or task.assigned_to
                or task.required_capabilities
            ):
                _check_new(task, f"tasks[{i}]")  # the full checks, requirements parsed
            if task.id in seen:
                raise ValidationError(
                    f"tasks[{i}] has the id {task.id!r} of an earlier task of the batch",
                    field=f"tasks[{i}].id",
                )
            seen.add(task.id)
        now = self.clock.now()
        submission = self._submission
        writes = [
            TaskWrite(*submission(task, actor, now, event_id))
            for task, event_id in zip(batch, new_ids(len(batch)), strict=True)
        ]
        kept = await self.store.write_tasks(writes, atomic=True)
        known = self._known
        for task in kept:
            assert isinstance(task, Task)  # atomic: a conflict raised
            known[task.id] = task
        while len(known) > _KNOWN_MAX:
            del known[next(iter(known))]
        stored = [write.task for write in writes]
        if self._watchers:
            for task in stored:
                self._pending(task)
        return stored

    # -- claiming and holding ----------------------------------------------------------------------

    async def claim(
        self,
        agent_id: str,
        task_id: str,
        *,
        pool_ids: Iterable[str] | None = None,
        capabilities: CapabilitySet | Iterable[Capability | str] | None = None,
    ) -> int:
        """Claim a PENDING task for ``agent_id`` under a lease; returns the fencing token.

        The agent's pools and capabilities are taken from the arguments, else from the
        manager's ``membership`` and ``directory``, else as none at all: a task that needs a pool
        or a capability is never claimed by an agent nobody vouches for.

        Raises:
            PolicyViolation: the task is not visible to the agent (pool or capability).
            InvalidTransition: the task is not PENDING.
            TaskConflict: another agent claimed it first.
            ValidationError: no such task.
        """
        task = self._known.get(task_id)
        fresh = task is None or task.state is not _PENDING
        while True:
            if fresh:
                task = await self._get(task_id)
            assert task is not None
            if task.state is not _PENDING:
                raise _not_claimable(task, agent_id)
            if task.pool_id is not None or task.required_capabilities:
                # Only a task that asks for a pool or a capability needs the agent's.
                pools = await self._pools(agent_id, pool_ids)
                caps = await self._capabilities(agent_id, capabilities)
                refusal = _invisibility(task, pools, caps)
                if refusal:
                    raise PolicyViolation(f"{agent_id} may not claim task {task.id}: {refusal}")
            claimed, event = self._claim(task, agent_id, self.clock.now())
            try:
                stored = await self.store.write_task(
                    claimed, event, expected_state=_PENDING, expected_attempts=task.attempts
                )
            except TaskConflict:
                self._known.pop(task_id, None)
                if fresh:
                    raise
                fresh = True  # our copy was stale: judge again by the store's
                continue
            known = self._known
            known[task_id] = stored
            if len(known) > _KNOWN_MAX:
                del known[next(iter(known))]
            return claimed.attempts

    def _claim(
        self, task: Task, agent_id: str, now: float, event_id: str = ""
    ) -> tuple[Task, Event]:
        """``task`` claimed by ``agent_id`` at ``now`` and its ``task.claimed`` event."""
        check_transition(task.state, _CLAIMED, task.id)
        lease = now + self.claim_ttl_sec
        attempt = task.attempts + 1
        claimed = _replace(
            task,
            state=_CLAIMED,
            updated_at=now,
            attempts=attempt,
            assigned_to=agent_id,
            lease_expires_at=lease,
        )
        return claimed, Event(
            kind="task.claimed",
            trace_id=task.trace_id or task.id,
            actor=agent_id,
            subject=task.id,
            data={"attempt": attempt, "lease": lease},
            id=event_id or new_id(),
            at=now,
        )

    async def claim_next(
        self,
        agent_id: str,
        *,
        limit: int = 1,
        pool_ids: Iterable[str] | None = None,
        capabilities: CapabilitySet | Iterable[Capability | str] | None = None,
        among: Iterable[str] | None = None,
    ) -> list[Task]:
        """Claim up to ``limit`` PENDING tasks visible to ``agent_id``, in board order
        (priority, then submission), in one unit; returns them as claimed.

        Each task is claimed as ``claim`` claims it: under its own lease, with its own fencing
        token — the returned task's ``attempts`` (pass it to ``report``, ``heartbeat`` or a
        ``Report``). The agent's pools and capabilities come from the arguments, else from
        ``membership`` and ``directory``, else none. A task another claimer takes between the
        read and the claim is skipped and the board read again for others (a few times at
        most), so fewer than ``limit`` tasks — none, on an empty board — may come back.

        With ``among`` (task ids), only those tasks are candidates, in that order: the ones
        chosen already (a runtime applying an agent's several ``ClaimTask`` decisions). One not
        claimed — not PENDING, not visible, taken first — is simply left out; ``claim`` of it
        says why.

        Raises:
            ValidationError: ``limit`` is not an int from 1 to ``MAX_BATCH``, or ``among``
                is not a collection of task ids.
        """
        if type(limit) is not int or not 1 <= limit <= MAX_BATCH:
            raise ValidationError(
                f"limit must be an int from 1 to {MAX_BATCH}, not {limit!r}", field="limit"
            )
        chosen = None if among is None else _task_ids(among)
        pools = await self._pools(agent_id, pool_ids)
        caps = await self._capabilities(agent_id, capabilities)
        claimed: list[Task] = []
        claiming = self._claiming
        for _ in range(1 if chosen is not None else _CLAIM_ROUNDS):
            wanted = limit - len(claimed)
            if chosen is not None:
                found = await asyncio.gather(*(self.store.get_task(i) for i in chosen))
                candidates = [
                    task
                    for task in found
                    if task is not None
                    and task.state is _PENDING
                    and task.id not in claiming
                    and not _invisibility(task, pools, caps)
                ][:wanted]
            else:
                # Read enough to skip the tasks other claims of this manager are taking.
                visible = await self.list_pending_tasks_for_agent(
                    agent_id, pools, caps, limit=wanted + len(claiming)
                )
                candidates = [task for task in visible if task.id not in claiming][:wanted]
            if not candidates:
                break
            now = self.clock.now()
            claim = self._claim
            writes = [
                TaskWrite(*claim(task, agent_id, now, event_id), _PENDING, task.attempts)
                for task, event_id in zip(candidates, new_ids(len(candidates)), strict=True)
            ]
            ids = [task.id for task in candidates]
            claiming.update(ids)
            try:
                results = await self.store.write_tasks(writes)
            finally:
                claiming.difference_update(ids)
            lost = False
            for result in results:
                if type(result) is TaskConflict:
                    self._known.pop(result.task_id, None)
                    lost = True
                else:
                    assert isinstance(result, Task)
                    self._remember(result)
                    claimed.append(result)
            if not lost or len(claimed) >= limit:
                break
        return claimed

    async def start(self, agent_id: str, task_id: str, token: int) -> Task:
        """Mark a held task RUNNING (the holder began work)."""
        try:
            return await self._start(await self._held(agent_id, task_id, token), agent_id, token)
        except TaskConflict:  # judged by a stale copy, or raced: judge again by the store's
            task = await self._held(agent_id, task_id, token, fresh=True)
            return await self._start(task, agent_id, token)

    async def _start(self, task: Task, agent_id: str, token: int) -> Task:
        if task.state is TaskState.RUNNING:  # nothing to write: say so only if the store agrees
            fresh = await self._held(agent_id, task.id, token, fresh=True)
            if fresh.state is TaskState.RUNNING:
                return fresh
            task = fresh
        running = task.transition(TaskState.RUNNING, at=self.clock.now())
        await self._write(running, task, "task.started", agent_id, {"attempt": token})
        return running

    async def heartbeat(self, agent_id: str, task_id: str, token: int) -> float:
        """Extend the holder's lease by ``claim_ttl_sec`` from now; returns the new expiry."""
        try:
            return await self._renew(await self._held(agent_id, task_id, token), agent_id, token)
        except TaskConflict:  # judged by a stale copy, or raced: judge again by the store's
            task = await self._held(agent_id, task_id, token, fresh=True)
            return await self._renew(task, agent_id, token)

    async def _renew(self, task: Task, agent_id: str, token: int) -> float:
        now = self.clock.now()
        lease = now + self.claim_ttl_sec
        renewed = msgspec.structs.replace(task, lease_expires_at=lease, updated_at=now)
        await self._write(
            renewed, task, "task.heartbeat", agent_id, {"attempt": token, "lease": lease}
        )
        return lease

    async def report(self, agent_id: str, task_id: str, result: Any, token: int) -> Task:
        """Complete a held task with ``result``.

        Reporting the same result again (same agent, same token) is a no-op that returns the
        task; any other report on a finished task is refused.

        Raises:
            LeaseLost: the agent does not hold the current lease.
            StateError: the task was already completed with a different result.
            InvalidTransition: the task failed or was cancelled.
        """
        known = self._known.get(task_id)
        if (
            known is not None
            and known.state in _HELD
            and known.assigned_to == agent_id
            and known.attempts == token
        ):
            done, event = self._complete(known, agent_id, result, self.clock.now())
            del self._known[task_id]  # finished, or our copy was stale: not kept either way
            try:
                await self.store.write_task(
                    done, event, expected_state=known.state, expected_attempts=token
                )
            except TaskConflict:
                pass  # judge again by the store's copy
            else:
                return done
        task = await self._get(task_id)
        if task.state is _COMPLETED:
            if task.assigned_to != agent_id or task.attempts != token:
                raise LeaseLost(task_id, agent_id, token, None, task.attempts, task)
            if task.result == result:
                return task
            raise StateError(
                f"task {task_id} was already completed by {task.assigned_to} "
                f"(attempt {task.attempts}); a different report is refused"
            )
        if task.state in TERMINAL_STATES:
            raise InvalidTransition(task.state, _COMPLETED, subject=task_id)
        self._check_holder(task, agent_id, token)
        done, event = self._complete(task, agent_id, result, self.clock.now())
        await self._write_event(done, task, event)
        return done

    def _complete(
        self, task: Task, agent_id: str, result: Any, now: float, event_id: str = ""
    ) -> tuple[Task, Event]:
        """``task`` completed by its holder with ``result`` at ``now``, and its event."""
        check_transition(task.state, _COMPLETED, task.id)
        done = _replace(
            task, state=_COMPLETED, updated_at=now, result=result, lease_expires_at=None
        )
        return done, Event(
            kind="task.completed",
            trace_id=task.trace_id or task.id,
            actor=agent_id,
            subject=task.id,
            data={"attempt": task.attempts},
            id=event_id or new_id(),
            at=now,
        )

    async def report_many(self, agent_id: str, reports: Sequence[Report]) -> list[Task]:
        """Complete several held tasks, each with its own result and fencing token, in one unit.

        Each report is judged as ``report`` judges it (the same result reported again is a
        no-op that returns the task). The reports that hold are committed whatever happens to
        the others.

        Returns:
            The completed tasks, in the order of ``reports``.

        Raises:
            ReportsRefused: some reports were refused (``refused``: the error ``report`` would
                have raised for each, by task id); the others were completed (``completed``).
            ValidationError: an empty batch or one over ``MAX_BATCH``, an item that is not a
                ``Report``, a bad token, or a task reported twice (``field`` names
                ``reports[i]``); nothing is written.
        """
        batch = _batch(reports, "reports")
        seen: set[str] = set()
        for i, item in enumerate(batch):
            _check_report(item, i)
            if item.task_id in seen:
                raise ValidationError(
                    f"reports[{i}] reports task {item.task_id!r} a second time",
                    field=f"reports[{i}].task_id",
                )
            seen.add(item.task_id)
        done: dict[str, Task] = {}
        refused: dict[str, ConvergeError] = {}
        pending = list(batch)
        fresh = False  # first judged by this manager's copies; after a conflict by the store's
        while pending:
            writes: list[TaskWrite] = []
            writing: list[Report] = []
            now = self.clock.now()
            event_ids = iter(new_ids(len(pending)))
            for item in pending:
                task = None if fresh else self._known.get(item.task_id)
                if task is None or not _holds(task, agent_id, item.token):
                    task = await self.store.get_task(item.task_id)
                    try:
                        if self._already_reported(task, item, agent_id):
                            assert task is not None
                            done[item.task_id] = task
                            continue
                    except ConvergeError as exc:
                        refused[item.task_id] = exc
                        continue
                    assert task is not None
                new, event = self._complete(task, agent_id, item.result, now, next(event_ids))
                writes.append(TaskWrite(new, event, task.state, task.attempts))
                writing.append(item)
            if not writes:
                break
            results = await self.store.write_tasks(writes)
            pending = []
            for item, write, result in zip(writing, writes, results, strict=True):
                self._known.pop(item.task_id, None)
                if type(result) is not TaskConflict:
                    done[item.task_id] = write.task
                elif fresh:  # lost again to a write in between: judged by the store's copy
                    task = await self.store.get_task(item.task_id)
                    try:
                        if self._already_reported(task, item, agent_id):
                            assert task is not None
                            done[item.task_id] = task
                            continue
                    except ConvergeError as exc:
                        refused[item.task_id] = exc
                        continue
                    refused[item.task_id] = result
                else:
                    pending.append(item)
            fresh = True
        completed = [done[item.task_id] for item in batch if item.task_id in done]
        if refused:
            raise ReportsRefused(completed, refused)
        return completed

    @staticmethod
    def _already_reported(task: Task | None, item: Report, agent_id: str) -> bool:
        """Judge ``item`` by the stored ``task`` as ``report`` does: True if it is the same
        report again (nothing to write), False if the agent holds the task (a write follows).

        Raises:
            ValidationError: no such task.
            LeaseLost, StateError, InvalidTransition: the report is refused.
        """
        if task is None:
            raise ValidationError(f"no task {item.task_id!r} on the board", field="task_id")
        if task.state is _COMPLETED:
            if task.assigned_to != agent_id or task.attempts != item.token:
                raise LeaseLost(task.id, agent_id, item.token, None, task.attempts, task)
            if task.result == item.result:
                return True
            raise StateError(
                f"task {task.id} was already completed by {task.assigned_to} "
                f"(attempt {task.attempts}); a different report is refused"
            )
        if task.state in TERMINAL_STATES:
            raise InvalidTransition(task.state, _COMPLETED, subject=task.id)
        TaskManager._check_holder(task, agent_id, item.token)
        return False

    # -- ending ------------------------------------------------------------------------------------

    async def fail_task(
        self,
        task_id: str,
        reason: str,
        *,
        agent_id: str | None = None,
        token: int | None = None,
    ) -> Task:
        """Move a task to FAILED with ``reason``.

        With ``agent_id`` the caller must hold the task (and, with ``token``, its current
        lease); without, it is an administrative failure of any unfinished task.
        """
        task = await self._get(task_id)
        if task.state is TaskState.FAILED:
            return task
        if agent_id is not None:
            if task.state in TERMINAL_STATES:
                raise InvalidTransition(task.state, TaskState.FAILED, subject=task_id)
            self._check_holder(task, agent_id, task.attempts if token is None else token)
        failed = task.transition(
            TaskState.FAILED, at=self.clock.now(), error=reason, lease_expires_at=None
        )
        await self._write(failed, task, "task.failed", agent_id or "", {"reason": reason})
        return failed

    async def cancel_task(self, task_id: str, reason: str = "", *, actor: str = "") -> Task:
        """Withdraw an unfinished task (CANCELLED); cancelling it again is a no-op."""
        task = await self._get(task_id)
        if task.state is TaskState.CANCELLED:
            return task
        cancelled = task.transition(
            TaskState.CANCELLED, at=self.clock.now(), error=reason or None, lease_expires_at=None
        )
        await self._write(cancelled, task, "task.cancelled", actor, {"reason": reason})
        return cancelled

    async def release_expired_claims(self, now: float | None = None) -> list[Task]:
        """Return tasks whose lease expired to PENDING, or FAIL those out of attempts.

        Leases are stored in the manager's clock (wall-clock seconds by default), and seed 001
        has callers pass ``time.monotonic()``, so ``now`` may come from either clock:

        - ``None``: the manager's clock, now.
        - a value from the manager's clock (within 30 days of it, ``CLOCK_SKEW_LIMIT_S``):
          used as is.
        - a value from this process's ``time.monotonic()`` (within 10 s of it: read just
          before the call): translated to the manager's clock, keeping its age:
          ``clock.now() - (time.monotonic() - now)``.
        - anything else is refused.

        With the default wall clock the two never meet (seconds since 1970 against seconds
        since boot). An injected clock can read close to ``time.monotonic()`` (one started at
        0, say): a ``now`` that fits both rules is then ambiguous, and refused, unless the two
        clocks read the same (within 50 ms: the manager's clock is the monotonic one), when
        both rules give the same time.

        Args:
            now: the time to judge leases by (see above).

        Returns:
            The tasks changed, as stored after the change.

        Raises:
            ValidationError: ``now`` is not a finite number, fits neither clock, or fits both
                while they read differently (``field`` is ``"now"``).
        """
        now = _lease_time(now, self.clock.now(), time.monotonic())
        changed: list[Task] = []
        for task in await self.store.expiring_tasks(now, limit=1000):
            if task.attempts >= task.max_attempts:
                reason = f"lease expired on attempt {task.attempts} of {task.max_attempts}"
                new = task.transition(TaskState.FAILED, at=now, error=reason, lease_expires_at=None)
                kind = "task.failed"
                data: dict[str, Any] = {"reason": reason, "attempt": task.attempts}
            else:
                new = task.transition(
                    TaskState.PENDING, at=now, assigned_to=None, lease_expires_at=None
                )
                kind = "task.released"
                data = {"attempt": task.attempts, "reason": "expired"}
                if task.assigned_to is not None:
                    data["holder"] = task.assigned_to
            try:
                await self._write(new, task, kind, "", data)
            except TaskConflict:
                continue  # the holder reported or heartbeat just in time: its move stands
            changed.append(new)
            if new.state is TaskState.PENDING:
                self._pending(new)
        return changed

    # -- reading -----------------------------------------------------------------------------------

    async def get(self, task_id: str) -> Task | None:
        """The task, or None."""
        return await self.store.get_task(task_id)

    async def list_pending_tasks(self, limit: int = 100) -> list[Task]:
        """PENDING tasks in priority order, at most ``limit``."""
        return await self.store.pending_tasks(limit=limit)

    async def list_pending_tasks_for_agent(
        self,
        agent_id: str,
        pool_ids: Iterable[str] | None,
        capabilities: CapabilitySet | Iterable[Capability | str] | None,
        limit: int = 100,
    ) -> list[Task]:
        """PENDING tasks ``agent_id`` may claim, in priority order, at most ``limit``.

        A task is visible iff its pool is unset or among ``pool_ids`` and every requirement is
        met by ``capabilities``. ``None`` turns that filter off (seed 001's
        ``list_pending_tasks_for_agent(agent_id, None, None)`` lists every pending task):
        ``pool_ids=None`` is any pool, ``capabilities=None`` any requirement. ``claim`` still
        checks the agent's own pools and capabilities. Served from the (pool, capability)
        index, never a full scan.
        """
        caps = None if capabilities is None else _as_capability_set(capabilities)
        pools = None if pool_ids is None else frozenset(pool_ids)
        keys_pools: list[str | None] | None = None if pools is None else [None, *pools]
        keys_caps: list[str | None] | None = None if caps is None else [None, *caps.names]
        found: list[Task] = []
        after: tuple[int, str] | None = None
        page = max(limit, 1)
        while len(found) < limit:
            batch = await self.store.pending_tasks(
                pools=keys_pools, capabilities=keys_caps, limit=page, after=after
            )
            found.extend(t for t in batch if not _invisibility(t, pools, caps))
            if len(batch) < page:
                break
            after = (batch[-1].priority, batch[-1].id)
        return found[:limit]

    async def wait(self, task_id: str, timeout: float | None = None) -> Task:
        """Wait until the task is COMPLETED, FAILED or CANCELLED, and return it.

        Raises:
            TimeoutError: it did not finish within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            seen = await self.store.last_seq()
            while True:
                task = await self._get(task_id)
                if task.is_terminal:
                    return task
                seen = await self.store.wait_for_events(seen)

    # -- internals ---------------------------------------------------------------------------------

    async def _get(self, task_id: str) -> Task:
        task = await self.store.get_task(task_id)
        if task is None:
            raise ValidationError(f"no task {task_id!r} on the board", field="task_id")
        return task

    async def _held(self, agent_id: str, task_id: str, token: int, fresh: bool = False) -> Task:
        known = None if fresh else self._known.get(task_id)
        if known is not None and _holds(known, agent_id, token):
            return known  # the write that follows is a compare-and-set: a stale copy loses
        task = await self._get(task_id)
        if task.state not in _HELD:
            raise InvalidTransition(task.state, TaskState.RUNNING, subject=task_id)
        self._check_holder(task, agent_id, token)
        return task

    @staticmethod
    def _check_holder(task: Task, agent_id: str, token: int) -> None:
        if task.state not in _HELD or task.assigned_to != agent_id or task.attempts != token:
            holder = task.assigned_to if task.state in _HELD else None
            raise LeaseLost(task.id, agent_id, token, holder, task.attempts, task)

    async def _write(
        self, new: Task, old: Task, kind: str, actor: str, data: dict[str, Any]
    ) -> None:
        await self._write_event(new, old, self._event(kind, new, actor, data))

    async def _write_event(self, new: Task, old: Task, event: Event) -> None:
        try:
            stored = await self.store.write_task(
                new, event, expected_state=old.state, expected_attempts=old.attempts
            )
        except TaskConflict:
            self._known.pop(new.id, None)
            raise
        self._remember(stored)

    def _remember(self, task: Task) -> None:
        known = self._known
        if task.state in TERMINAL_STATES:
            known.pop(task.id, None)
            return
        known[task.id] = task
        if len(known) > _KNOWN_MAX:
            del known[next(iter(known))]  # the oldest entry: dicts keep insertion order

    def _event(self, kind: str, task: Task, actor: str, data: dict[str, Any]) -> Event:
        event = Event(
            kind=kind,
            trace_id=task.trace_id or task.id,
            actor=actor,
            subject=task.id,
            data=data,
            at=task.updated_at,
        )
        if self._followers and kind in _PENDING_KINDS:
            self._own_events.add(event.id)
        return event

    async def _pools(self, agent_id: str, given: Iterable[str] | None) -> frozenset[str]:
        if given is not None:
            return frozenset(given)
        if self.membership is not None:
            return frozenset(await self.membership.get_pools_for_agent(agent_id))
        return frozenset()

    async def _capabilities(
        self, agent_id: str, given: CapabilitySet | Iterable[Capability | str] | None
    ) -> CapabilitySet:
        if given is not None:
            return _as_capability_set(given)
        if self.directory is not None:
            found = await self.directory.capabilities_of(agent_id)
            if found is not None:
                return found
        return CapabilitySet()


def _lease_time(now: float | None, board_now: float, monotonic_now: float) -> float:
    """``now`` on the board's clock, by the rule ``release_expired_claims`` documents:
    ``board_now`` is the board's clock and ``monotonic_now`` ``time.monotonic()``, both read
    on entry.

    Raises:
        ValidationError: ``now`` fits neither clock, or both when they differ.
    """
    if now is None:
        return board_now
    if isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now):
        raise ValidationError(f"now must be a finite number of seconds, not {now!r}", field="now")
    on_board = abs(now - board_now) <= CLOCK_SKEW_LIMIT_S
    on_monotonic = abs(monotonic_now - now) <= _MONOTONIC_TOLERANCE_S
    if on_board and on_monotonic and abs(monotonic_now - board_now) > _SAME_CLOCK_S:
        raise ValidationError(
            f"now={now!r} is ambiguous: the board's clock reads {board_now!r}, too close to "
            f"time.monotonic() ({monotonic_now!r}) to tell which of the two it was read from. "
            "Omit `now` (the board's clock is used) or pass the board's clock.now().",
            field="now",
        )
    if on_board:
        return float(now)
    if on_monotonic:
        return board_now - (monotonic_now - now)
    raise ValidationError(
        f"now={now!r} is a time on neither the board's clock (it reads {board_now!r}; a value "
        f"within {CLOCK_SKEW_LIMIT_S / 86400:g} days of it is used as is) nor time.monotonic() "
        f"({monotonic_now!r}; a value read within {_MONOTONIC_TOLERANCE_S:g} s of it is "
        "translated to the board's clock). Omit `now` to use the board's clock.",
        field="now",
    )


def _batch(items: object, where: str) -> list[Any]:
    """``items`` as a list of 1 to ``MAX_BATCH`` items, else ``ValidationError``."""
    if isinstance(items, (str, bytes, dict)) or not isinstance(items, Iterable):
        raise ValidationError(
            f"{where} must be a list of items, not {type(items).__name__}", field=where
        )
    batch = list(items)
    if not batch:
        raise ValidationError(f"{where} is empty: a batch holds 1 to {MAX_BATCH}", field=where)
    if len(batch) > MAX_BATCH:
        raise ValidationError(
            f"{where} holds {len(batch)} items; a batch holds at most {MAX_BATCH} "
            "(split it into several calls)",
            field=where,
        )
    return batch


def _task_ids(among: object) -> list[str]:
    """``among`` as a list of distinct task ids, in order, else ``ValidationError``."""
    if isinstance(among, (str, bytes)) or not isinstance(among, Iterable):
        raise ValidationError(
            f"among must be a collection of task ids, not {type(among).__name__}", field="among"
        )
    ids = list(among)
    for i, task_id in enumerate(ids):
        if not isinstance(task_id, str):
            raise ValidationError(
                f"among[{i}] is a {type(task_id).__name__}, not a task id", field=f"among[{i}]"
            )
    return list(dict.fromkeys(ids))


def _check_report(item: object, index: int) -> None:
    """Raise ``ValidationError`` unless ``item`` is a well-formed ``Report``."""
    where = f"reports[{index}]"
    if type(item) is not Report:
        raise ValidationError(
            f"{where} is a {type(item).__name__}, not a Report(task_id, result, token)",
            field=where,
        )
    if not isinstance(item.task_id, str) or not item.task_id:
        raise ValidationError(
            f"{where}.task_id must be a non-empty str, not {item.task_id!r}",
            field=f"{where}.task_id",
        )
    if type(item.token) is not int or item.token < 1:
        raise ValidationError(
            f"{where}.token must be the int >= 1 a claim returned, not {item.token!r}",
            field=f"{where}.token",
        )


def _check_new(task: object, where: str) -> None:
    """Raise ``ValidationError`` unless ``task`` is a new, PENDING ``Task``."""
    if not isinstance(task, Task):
        raise ValidationError(f"{where} is a {type(task).__name__}, not a Task", field=where)
    if task.state is not _PENDING or task.attempts or task.assigned_to:
        raise ValidationError(
            f"{where}: a submitted task must be new and pending, not {task.state.value} "
            f"(attempts={task.attempts}, assigned_to={task.assigned_to!r})",
            field=f"{where}.state",
        )
    for req in task.required_capabilities:
        Requirement.parse(req)


def _holds(task: Task, agent_id: str, token: int) -> bool:
    return task.state in _HELD and task.assigned_to == agent_id and task.attempts == token


def _as_capability_set(caps: CapabilitySet | Iterable[Capability | str]) -> CapabilitySet:
    return caps if isinstance(caps, CapabilitySet) else CapabilitySet(caps)


def _invisibility(task: Task, pools: frozenset[str] | None, caps: CapabilitySet | None) -> str:
    """Why ``task`` is not visible to an agent with ``pools`` and ``caps`` ('' if it is;
    ``None`` does not filter)."""
    if pools is not None and task.pool_id is not None and task.pool_id not in pools:
        return f"not a member of pool {task.pool_id}"
    required = task.required_capabilities
    if caps is not None and required and not caps.satisfies_all(required):
        return f"missing capabilities {', '.join(caps.missing(required))}"
    return ""


def _not_claimable(task: Task, agent_id: str) -> InvalidTransition:
    """Why ``agent_id`` cannot claim ``task`` (not PENDING), in words: who holds it, or how it
    ended."""
    state = task.state.value
    if task.state in (TaskState.CLAIMED, TaskState.RUNNING):
        holder = "this agent" if task.assigned_to == agent_id else task.assigned_to
        why = f"task {task.id} is {state} by {holder} (attempt {task.attempts}): not pending"
    else:
        why = f"task {task.id} is {state}: not pending"
    return InvalidTransition(task.state, _CLAIMED, subject=task.id, message=why)
