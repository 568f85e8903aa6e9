"""The log of one run as it is written.

Its events buffered and written in one append, the rule that decides when, the early write of a new
run (the ``Announcer``), and the unit of work that takes a resumed run over.

**Durability.** Events are buffered and written in one append. With ``checkpoint_enabled`` a
node's ``node.done`` (with the ``node.start`` before it) is written — committed — before any
node after it starts (``due``); without, the buffer is written every 256 events and when the
run stops, so a crash may lose the last completions (``resume`` then runs those nodes again). A
sink's ``node.done`` goes with the run's end. A submitted run (its id handed out at once) and a
resumed or forked one are written at once. The engine's ``listeners`` see every event as it is
added (the ``observer`` hook of ``add``; a listener that raises is logged and ignored).

**Announcing.** A new run's ``run.started`` is buffered and written with its first
completion: one commit the fewer for every run. A run whose first node is slow would then be
missing from the store (from ``converge runs`` in another process) until that node ends; the
announcer writes what such a run has buffered once it has written nothing for ``after``
seconds (the engine's: 0.1 s, so a run is in the store 0.1-0.2 s after it starts). One timer
per event loop serves every run of an engine, so a quick run costs a dict entry, not a timer.
The early write is a task; the run's next flush queues its own write first (after the early one
if that has taken the buffer, else instead of it) and then waits for both, so a flush cancelled
while it waits — a run cancelled twice, or by ``asyncio.run``'s shutdown — still writes its
events, the run's end included. The early write's failure is the run's. A process killed inside
a run's first node before either write leaves nothing to resume: the run is simply started
again.

**Taking a run over.** A resumed run's first write carries the compare-and-set of its
``run-owner/`` key (``ownership``), so of two processes resuming it one is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from converge.core.clock import Clock
from converge.errors import ConflictError, RunOwned
from converge.orchestration.ownership import RUN_OWNER_KEY, taken_by
from converge.protocol.event import Event
from converge.protocol.objects import Usage
from converge.store.base import Store

__all__ = ["NO_USAGE", "Announcer", "EventListener", "Listener", "RunLog", "add_usage"]

_FLUSH_AT = 256  # buffered events that force a write when checkpoints are off

Listener = Callable[[str, str | None, dict[str, Any]], None]
"""Hears each event of a run as it is logged (kind, node, data), and streamed chunks."""
EventListener = Callable[[Event], None]
"""Sees each event of a run as it is logged (the engine's listeners: tracing…)."""

NO_USAGE = Usage()
"""No usage reported."""


def add_usage(a: Usage, b: Usage) -> Usage:
    """``a`` and ``b`` summed."""
    if b == NO_USAGE:
        return a
    return Usage(
        tokens_in=a.tokens_in + b.tokens_in,
        tokens_out=a.tokens_out + b.tokens_out,
        tool_calls=a.tool_calls + b.tool_calls,
        cost=a.cost + b.cost,
    )


class RunLog:
    """The events of one run, buffered until they are written (``flush``).

    Attributes:
        started_event: the id of the run's ``run.started``: the parent of events that name no
            other.
        usage: what the run's events have accounted for (every try's: ``spend``).
        dependents: a ``node.done`` buffered since the last write has nodes after it.
        wrote: whether anything of the run was written yet (its start goes first).
        claimed: whether ``take_over`` won the run.
    """

    __slots__ = (
        "_buffer",
        "_claim",
        "_early",
        "_early_begun",
        "checkpoint",
        "claimed",
        "clock",
        "dependents",
        "listener",
        "observer",
        "run_id",
        "started_event",
        "store",
        "trace_id",
        "usage",
        "wrote",
    )

    def __init__(
        self,
        store: Store,
        clock: Clock,
        run_id: str,
        trace_id: str,
        *,
        checkpoint: bool,
        observer: EventListener | None = None,
        listener: Listener | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.run_id = run_id
        self.trace_id = trace_id
        self.checkpoint = checkpoint
        self.observer = observer
        self.listener = listener
        self.started_event: str | None = None
        self.usage = Usage()
        self.dependents = False
        self.wrote = False
        self.claimed = False
        self._buffer: list[Event] = []
        self._early: asyncio.Future[None] | None = None  # a write begun by ``write_soon``
        self._early_begun = False  # whether that write has taken the buffer
        self._claim: tuple[str, int, bytes] | None = None  # goes with the next write

    def add(
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

    def spend(self, data: dict[str, Any], usage: Usage | None) -> dict[str, Any]:
        """``data`` (an event's) with the usage it accounts for, if any; the run's total counts
        it. Failed, retried and paused tries are logged with theirs, so a resumed run's
        per-agent counts (``_budget``) miss nothing its log could hold."""
        if usage is not None and usage != NO_USAGE:
            self.usage = add_usage(self.usage, usage)
            data["usage"] = msgspec.structs.asdict(usage)
        return data

    def due(self) -> bool:
        """Whether the buffer must be written before any node starts: with checkpoints on, a
        settled pass has nodes after it; in any case, the buffer has grown large. (A sink's
        completion has nothing after it: it goes with the run's end.)"""
        return (self.dependents and self.checkpoint) or len(self._buffer) >= _FLUSH_AT

    async def flush(self) -> None:
        """Write every buffered event (one unit of work); returns once it is committed, and
        once an early write (``write_soon``) is too: its failure is the run's.

        The buffer's write is queued before anything is awaited (both stores keep the order
        writes are queued in, and the early one is queued first if it has begun), so a flush
        cancelled while it waits still writes its events — a cancelled run's end included.
        """
        self.dependents = False
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

    async def take_over(self, version: int, owner_id: str) -> None:
        """Write what is buffered (a resumed run's first events) in one unit with the
        compare-and-set of the run's ``run-owner/`` key from ``version`` to ``owner_id``, and
        wait for its outcome even if cancelled meanwhile: whether the run became this
        owner's (``claimed``) decides what its end may write.

        Raises:
            RunOwned: another engine took it over first (nothing was written).
        """
        self._claim = (RUN_OWNER_KEY + self.run_id, version, owner_id.encode())
        write = asyncio.ensure_future(self.flush())
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
        self.claimed = error is None
        if cancelled is not None:
            raise cancelled
        if isinstance(error, ConflictError):
            winner = await taken_by(self.store, self.run_id)
            now = self.clock.now()
            why = "another engine took it over first"
            raise RunOwned(self.run_id, winner, now, why, now) from error
        if error is not None:
            raise error

    async def _write_early(self) -> None:
        self._early_begun = True
        await self._write_buffer()

    async def _write_buffer(self) -> None:
        if self._buffer:
            events, self._buffer = self._buffer, []
            self.wrote = True
            if self._claim is None:
                await self.store.append(events)
                return
            (key, version, value), self._claim = self._claim, None
            unit = self.store.transaction()
            unit.compare_and_set(key, version, value)
            unit.append(*events)
            await unit.commit()


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()


class Announced(Protocol):
    """What the announcer needs of a run's log."""

    wrote: bool
    """Whether the run has written anything to the store (its start goes first)."""

    def write_soon(self) -> None:
        """Start writing what the run has buffered, without waiting for it."""


class Announcer:
    """Calls ``write_soon`` on run logs that have written nothing ``after`` seconds after
    ``add``.

    One timer per event loop with runs to watch (an engine may serve several loops).
    """

    def __init__(self, after: float) -> None:
        self.after = after
        self._runs: dict[Announced, tuple[asyncio.AbstractEventLoop, float]] = {}
        self._timers: dict[asyncio.AbstractEventLoop, asyncio.TimerHandle] = {}

    def add(self, run: Announced) -> None:
        """Watch ``run`` (call on its event loop, as it starts)."""
        loop = asyncio.get_running_loop()
        self._runs[run] = (loop, loop.time())
        if loop not in self._timers:
            self._timers[loop] = loop.call_later(self.after, self._tick, loop)

    def discard(self, run: Announced) -> None:
        """Stop watching ``run`` (it ended)."""
        self._runs.pop(run, None)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timers.pop(loop, None)
        now = loop.time()
        mine = False
        for run, (run_loop, since) in list(self._runs.items()):
            if run_loop is not loop:
                if run_loop.is_closed():  # its loop ended without it: nothing will end it
                    self._runs.pop(run, None)
            elif run.wrote:
                self._runs.pop(run, None)
            elif now - since >= self.after:
                self._runs.pop(run, None)
                run.write_soon()
            else:
                mine = True
        if mine:
            self._timers[loop] = loop.call_later(self.after, self._tick, loop)
        for closed in [other for other in self._timers if other.is_closed()]:
            self._timers.pop(closed, None)
