"""Who executes a run: owners, their leases, the liveness rule.

The rule says when an owner is alive.

A run is executed by one process at a time. Each ``Engine`` is an *owner*: it keeps one record
in its store, ``owner/<owner id>``, saying which process it lives in (host, pid, the process's
start time, the boot and PID namespace it runs in) and until when its lease holds. The record
is written before the engine's first run starts and renewed every ``renew_every`` seconds while
the engine has runs in flight, so a run costs no write of its own for ownership: its
``run.started`` (and every ``run.resumed``) names the owner executing it in ``data.owner``.

**The rule.** A run whose log ends with ``run.started`` or ``run.resumed`` is executed by that
event's owner while the owner is alive:

- the same process: alive while one of its engines has the run in flight;
- the same host (same host name, boot and PID namespace): alive while its pid runs the same
  process (pid and start time both match) — a dead owner is dead at once, so resuming right
  after a ``kill -9`` works;
- another host (or a process whose liveness cannot be checked here): alive until its lease
  lapses (``expires_at`` on the judging clock).

Anything else (no owner recorded, an unknown record) is not alive. ``resume`` of a run whose
owner is alive is refused with ``RunOwned``. Taking a run over is a compare-and-set of the key
``run-owner/<run id>`` written in the same unit of work as the ``run.resumed`` event, and read
*before* the log: of two processes resuming one run, one writes and the other is refused,
naming the winner, even if both saw the owner dead.

Details: the start time is Linux's ``/proc/<pid>/stat`` field 22, and a zombie is not alive.
Pids compare only within one host name, boot id and PID namespace (two machines may share a
name, and every kernel's first namespace has the same inode). A live pid on this host keeps its
runs even with a lapsed lease: a blocked loop must not let a second process in. A start time
that cannot be read (not Linux, ``hidepid``) falls back to the lease. The lease
(``LeasePolicy``: ``ttl`` 30 s, ``renew_every`` 10 s) is renewed by one timer per event loop
while runs are in flight (a run that starts with the lease due renews it first), on the
engine's clock, and deleted when the engine closes with no run in flight: 10,000 runs in flight
renew one record, not 10,000. ``RunOwned`` (a ``StateError``) gives the pid, host, since when
and the lease's age. An engine refuses a run it already has in flight before touching the store.
The take-over write finishes even if the resume is cancelled meanwhile, so a resumed run that
took over always logs its end; one cancelled before it took over writes nothing. ``converge
cancel`` of a run nobody executes appends ``run.cancelled`` under the same guard, and
``reserve`` (``converge run --run-id``) takes an id with ``put_if_absent`` before anything runs.
A forked process (``os.register_at_fork``) becomes a new owner with nothing in flight.

Known limit: an owner that stops renewing but keeps running (a loop blocked past ``ttl``) is not
fenced off when a process on another host takes its run over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import weakref
from typing import TYPE_CHECKING, Any

import msgspec

from converge.core.clock import Clock
from converge.core.ids import new_id
from converge.errors import ConflictError, RunOwned, ValidationError, shown_age, shown_time
from converge.protocol.event import Event
from converge.store.base import Store

if TYPE_CHECKING:
    from converge.orchestration.records import RunRecords

__all__ = [
    "LeasePolicy",
    "Owner",
    "OwnerLease",
    "RunOwned",
    "Verdict",
    "append_unowned",
    "check_resumable",
    "claim_version",
    "describe_owner",
    "judge",
    "read_owner",
    "reserve",
    "run_verdict",
    "taken_by",
]

_log = logging.getLogger(__name__)

OWNER_KEY = "owner/"
"""``owner/<owner id>``: the owner's record (MessagePack ``Owner``)."""
RUN_OWNER_KEY = "run-owner/"
"""``run-owner/<run id>``: the id of the owner that last took the run over (the guard of
``resume``'s compare-and-set)."""


class LeasePolicy(msgspec.Struct, frozen=True):
    """How long an owner's lease holds, and how often it is renewed while runs are in flight.

    Another host takes a run over only once its owner's lease has lapsed: ``ttl`` is how long
    a dead owner on another host keeps its runs. On the owner's host, a dead owner is seen at
    once.
    """

    ttl: float = 30.0
    """Seconds a lease holds after its last renewal."""
    renew_every: float = 10.0
    """Seconds between renewals while runs are in flight (less than ``ttl``)."""

    def __post_init__(self) -> None:
        for name in ("ttl", "renew_every"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 < value < float("inf")
            ):
                raise ValidationError(
                    f"a lease's {name} is a finite number of seconds > 0, not {value!r}",
                    field=name,
                )
        if self.renew_every >= self.ttl:
            raise ValidationError(
                f"a lease is renewed more often than it lasts: renew_every ({self.renew_every:g} "
                f"s) must be less than ttl ({self.ttl:g} s)",
                field="renew_every",
            )


class Owner(msgspec.Struct, frozen=True, kw_only=True):
    """An engine that executes runs, and the process it lives in."""

    id: str
    """The owner's id (one per engine)."""
    host: str
    """The host name of its machine."""
    pid: int
    """Its process id."""
    pid_start: int | None = None
    """Its process's start time as the kernel counts it (Linux: clock ticks since boot), which
    tells a live process from a later one given the same pid; None where unknown."""
    boot_id: str | None = None
    """The boot its process runs in (Linux ``/proc/sys/kernel/random/boot_id``)."""
    pid_ns: int | None = None
    """Its PID namespace (Linux): pids are comparable only within one namespace."""
    started_at: float
    """When the owner first wrote its record (its clock's time)."""
    renewed_at: float
    """Its lease's last renewal."""
    expires_at: float
    """When its lease lapses unless renewed."""


class Verdict(msgspec.Struct, frozen=True):
    """Whether a run's owner is alive, and why."""

    alive: bool
    """Whether the owner still executes the run."""
    reason: str
    """Why, in words (``pid 123 is gone``, ``lease renewed 2 s ago``…)."""
    owner: Owner | None = None
    """The owner's record, when there is one."""


# -- the process we run in ------------------------------------------------------------------------


class _Process(msgspec.Struct, frozen=True):
    host: str
    pid: int
    pid_start: int | None
    boot_id: str | None
    pid_ns: int | None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as file:
            return file.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _stat(pid: int) -> tuple[str, int] | None:
    """Process ``pid``'s state letter and start time (Linux ``/proc/<pid>/stat``: clock ticks
    after boot), None where unknown."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields resume after the last
    # ')'. The state is field 3, starttime field 22.
    fields = text.rpartition(")")[2].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def _pid_start(pid: int) -> int | None:
    """The start time of process ``pid`` (Linux: clock ticks after boot), None if unknown."""
    found = _stat(pid)
    return None if found is None else found[1]


def _pid_ns() -> int | None:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


_process: _Process | None = None


def this_process() -> _Process:
    """This process as an owner record describes it (read once; a fork reads again)."""
    global _process
    pid = os.getpid()
    if _process is None or _process.pid != pid:
        _process = _Process(
            host=socket.gethostname(),
            pid=pid,
            pid_start=_pid_start(pid),
            boot_id=_read("/proc/sys/kernel/random/boot_id"),
            pid_ns=_pid_ns(),
        )
    return _process


def _pid_runs(pid: int, start: int | None) -> bool | None:
    """Whether ``pid`` is the live process that started at ``start``: False if it is gone, a
    zombie, or another process given the same pid; None if this cannot be told here (not
    POSIX, or the start time cannot be read): then the lease decides."""
    if os.name != "posix":
        return None  # os.kill(pid, 0) is not a probe elsewhere
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, run by another user
    except OSError:
        return None
    found = _stat(pid)
    if found is None or start is None:
        return None
    state, started = found
    if state in ("Z", "X"):  # killed, not yet reaped by its parent
        return False
    return started == start


# -- judging an owner -----------------------------------------------------------------------------

_live: weakref.WeakValueDictionary[str, OwnerLease] = weakref.WeakValueDictionary()
"""The owners of this process, by id."""


def judge(owner: Owner | None, run_id: str, now: float) -> Verdict:
    """Whether ``owner`` (the owner named by run ``run_id``'s last start) still executes it,
    judged at ``now`` (the judging clock's time) by the rule in this module's docstring."""
    if owner is None:
        return Verdict(False, "no owner is recorded for it")
    me = this_process()
    # Pids compare only within one boot and one PID namespace of one host: two machines may
    # share a host name (and every kernel's first namespace has the same inode), and a
    # restarted host reuses pids. Anything else is judged by its lease.
    local = owner.host == me.host and owner.pid_ns == me.pid_ns and owner.boot_id == me.boot_id
    if local and owner.pid == me.pid and owner.pid_start == me.pid_start:
        lease = _live.get(owner.id)
        if lease is not None and run_id in lease.active:
            return Verdict(True, "this process runs it", owner)
        return Verdict(False, "this process no longer runs it", owner)
    if local:
        runs = _pid_runs(owner.pid, owner.pid_start)
        if runs is False:
            return Verdict(False, f"pid {owner.pid} on {owner.host} is gone", owner)
        if runs:
            return Verdict(True, f"pid {owner.pid} runs on {owner.host}", owner)
    if now < owner.expires_at:
        return Verdict(True, f"its lease holds until {shown_time(owner.expires_at)}", owner)
    lapsed = f"its lease lapsed {shown_age(now - owner.expires_at)}"
    return Verdict(False, f"{lapsed} (at {shown_time(owner.expires_at)})", owner)


def describe_owner(owner: Owner, now: float) -> str:
    """``pid 123 on host, lease renewed 2 s ago``."""
    return f"pid {owner.pid} on {owner.host}, lease renewed {shown_age(now - owner.renewed_at)}"


def owner_of(records: RunRecords) -> tuple[str | None, Event | None]:
    """The owner id named by the run's last ``run.started`` / ``run.resumed``, and that event
    (None, None when the run has ended since: nobody executes it)."""
    if records.last_start is None:
        return None, None
    owner = records.last_start.data.get("owner")
    return (owner if isinstance(owner, str) else None), records.last_start


async def read_owner(store: Store, owner_id: str | None) -> Owner | None:
    """The record of owner ``owner_id`` (None if absent or unreadable)."""
    if not owner_id:
        return None
    entry = await store.get(OWNER_KEY + owner_id)
    if entry is None:
        return None
    try:
        return msgspec.msgpack.decode(entry.value, type=Owner)
    except msgspec.DecodeError:
        return None


async def run_verdict(store: Store, run_id: str, now: float) -> Verdict | None:
    """Whether run ``run_id`` is being executed by a live owner, judged at ``now`` from its log
    (None: no such run, or it has ended or paused: nobody executes it)."""
    from converge.orchestration.records import read_records

    events = await store.read(trace_id=run_id.split("/", 1)[0])
    records = read_records([e for e in events if e.subject == run_id])
    if records.last_start is None:
        return None
    owner_id, _ = owner_of(records)
    return judge(await read_owner(store, owner_id), run_id, now)


async def check_resumable(store: Store, run_id: str, now: float) -> None:
    """Raise ``RunOwned`` if run ``run_id`` is being executed by a live owner (``resume`` checks
    this itself; a caller that prepares a resume checks it first, before touching anything)."""
    from converge.orchestration.records import read_records

    events = await store.read(trace_id=run_id.split("/", 1)[0])
    records = read_records([e for e in events if e.subject == run_id])
    owner_id, _ = owner_of(records)
    check_free(run_id, records, await read_owner(store, owner_id), now)


# -- an engine's own lease ------------------------------------------------------------------------


class OwnerLease:
    """An engine's owner record: written before its first run, renewed while runs are in
    flight, removed when the engine closes with none.

    ``hold(run_id, state)`` as a run starts (it refuses a run this engine already has in
    flight), then ``fresh()`` (awaits a write only when the record is missing or due for
    renewal), ``drop(run_id, state)`` as it ends. One timer per event loop renews the lease
    every ``renew_every`` seconds while runs are in flight. A process forked from this one
    starts a lease of its own (a new owner id): the record names one pid.
    """

    def __init__(self, store: Store, clock: Clock, policy: LeasePolicy) -> None:
        self.store = store
        self.clock = clock
        self.policy = policy
        self._reset()

    def _reset(self) -> None:
        self.id = new_id()
        self.active: dict[str, Any] = {}
        """Runs in flight, by run id (the value is the run's state)."""
        self._started_at: float | None = None
        self._renewed: float | None = None  # time.monotonic() of the last renewal written
        self._timers: dict[asyncio.AbstractEventLoop, asyncio.TimerHandle] = {}
        self._writes: set[asyncio.Task[None]] = set()
        _live[self.id] = self

    def hold(self, run_id: str, state: Any) -> None:
        """Count run ``run_id`` in flight.

        Raises:
            RunOwned: this engine has it in flight already.
        """
        if run_id in self.active:
            now = self.clock.now()
            raise RunOwned(run_id, self.record(), None, "this engine runs it", now)
        self.active[run_id] = state

    async def fresh(self) -> None:
        """Make sure the lease is written and fresh, and renewed while runs are in flight."""
        renewed = self._renewed
        if renewed is None or time.monotonic() - renewed >= self.policy.renew_every:
            await self.renew()
        loop = asyncio.get_running_loop()
        if loop not in self._timers:
            self._timers[loop] = loop.call_later(self.policy.renew_every, self._tick, loop)

    def drop(self, run_id: str, state: Any) -> None:
        """Run ``run_id`` (as ``state``) is no longer in flight."""
        if self.active.get(run_id) is state:
            del self.active[run_id]

    def record(self) -> Owner:
        """The record as it would be written now."""
        me = this_process()
        now = self.clock.now()
        if self._started_at is None:
            self._started_at = now
        return Owner(
            id=self.id,
            host=me.host,
            pid=me.pid,
            pid_start=me.pid_start,
            boot_id=me.boot_id,
            pid_ns=me.pid_ns,
            started_at=self._started_at,
            renewed_at=now,
            expires_at=now + self.policy.ttl,
        )

    async def renew(self) -> None:
        """Write the record with a fresh lease."""
        began = time.monotonic()
        await self.store.put(OWNER_KEY + self.id, msgspec.msgpack.encode(self.record()))
        self._renewed = began

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timers.pop(loop, None)
        for closed in [other for other in self._timers if other.is_closed()]:
            self._timers.pop(closed, None)
        if not self.active:
            return  # idle: the next run renews before it starts
        write = loop.create_task(self.renew())
        self._writes.add(write)
        write.add_done_callback(self._written)
        self._timers[loop] = loop.call_later(self.policy.renew_every, self._tick, loop)

    def _written(self, write: asyncio.Task[None]) -> None:
        self._writes.discard(write)
        if write.cancelled():
            return
        error = write.exception()
        if error is not None:  # the next tick tries again; the lease lapses if none succeeds
            _log.warning("could not renew the lease of owner %s: %s", self.id, error)

    async def aclose(self) -> None:
        """Stop renewing; remove the record when no run is in flight (idempotent)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for write in list(self._writes):
            write.cancel()
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        if self._renewed is not None and not self.active:
            self._renewed = None
            with contextlib.suppress(Exception):  # a closed or failing store: the lease lapses
                await self.store.delete(OWNER_KEY + self.id)


def _after_fork() -> None:
    """In a forked child, every engine inherited is a new owner with nothing in flight."""
    for lease in list(_live.values()):
        _live.pop(lease.id, None)
        lease._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


async def claim_version(store: Store, run_id: str) -> int:
    """The version of ``run-owner/<run id>`` (0: never written). Read it *before* the run's
    log: a write guarded by it then fails if anyone took the run over after the log was read."""
    entry = await store.get(RUN_OWNER_KEY + run_id)
    return 0 if entry is None else entry.version


async def taken_by(store: Store, run_id: str) -> Owner | None:
    """The owner that last took run ``run_id`` over, if its record is still there."""
    entry = await store.get(RUN_OWNER_KEY + run_id)
    if entry is None:
        return None
    try:
        owner_id = entry.value.decode()
    except UnicodeDecodeError:
        return None
    return await read_owner(store, owner_id)


async def reserve(store: Store, run_id: str) -> bool:
    """Take ``run_id`` for a new run: False if it was taken (a run by that id exists, or is
    starting elsewhere). For run ids a user chooses; the engine's own ids are new."""
    return await store.put_if_absent(RUN_OWNER_KEY + run_id, b"")


async def append_unowned(store: Store, run_id: str, version: int, events: list[Event]) -> bool:
    """Append ``events`` about run ``run_id`` (``run.cancelled`` of a run nobody executes) only
    if nobody took the run over since ``claim_version`` read ``version``; False if somebody
    did (nothing is written)."""
    unit = store.transaction()
    unit.compare_and_set(RUN_OWNER_KEY + run_id, version, b"")
    unit.append(*events)
    try:
        await unit.commit()
    except ConflictError:
        return False
    return True


def check_free(run_id: str, records: RunRecords, owner: Owner | None, now: float) -> None:
    """Raise ``RunOwned`` if the run is executed by ``owner`` (the record of the owner its
    last start names) and that owner is alive."""
    if records.last_start is None:
        return
    verdict = judge(owner, run_id, now)
    if verdict.alive:
        raise RunOwned(run_id, verdict.owner, records.last_start.at, verdict.reason, now)
