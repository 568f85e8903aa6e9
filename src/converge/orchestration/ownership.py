"""Who executes a run: owners, their leases, and the rule that judges an owner alive.

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
*before* the log: of two processes resuming one run, one writes and the other is refused.
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
from converge.errors import StateError, ValidationError
from converge.protocol.event import Event
from converge.store.base import Store

if TYPE_CHECKING:
    from converge.orchestration._records import RunRecords

__all__ = [
    "LeasePolicy",
    "Owner",
    "OwnerLease",
    "RunOwned",
    "Verdict",
    "check_resumable",
    "describe_owner",
    "judge",
    "read_owner",
    "run_verdict",
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


class RunOwned(StateError):
    """A run is being executed by a live owner, so it cannot be resumed here.

    Attributes:
        run_id: the run.
        owner: the owner's record (None when it is being taken over at this very moment).
        since: when the owner started or resumed the run (its clock's time), if known.
    """

    def __init__(
        self, run_id: str, owner: Owner | None, since: float | None, reason: str, now: float
    ) -> None:
        if owner is None:
            text = f"run {run_id} is being resumed by another process: {reason}"
        else:
            when = "" if since is None else f"since {_clock_text(since)}, "
            text = (
                f"run {run_id} is running in pid {owner.pid} on {owner.host} ({when}lease "
                f"renewed {_ago(now - owner.renewed_at)}); wait for it to end, or stop it "
                f"with `converge cancel {run_id}`"
            )
        super().__init__(text)
        self.run_id = run_id
        self.owner = owner
        self.since = since


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


def _pid_start(pid: int) -> int | None:
    """The start time of process ``pid`` (Linux: clock ticks after boot), None if unknown."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields resume after the last
    # ')'. starttime is field 22, the 20th after it.
    fields = text.rpartition(")")[2].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


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
    """Whether ``pid`` is a live process started at ``start`` (None: cannot tell here)."""
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
    if start is None:
        return True
    now_start = _pid_start(pid)
    return now_start is None or now_start == start


# -- judging an owner -----------------------------------------------------------------------------

_live: weakref.WeakValueDictionary[str, OwnerLease] = weakref.WeakValueDictionary()
"""The owners of this process, by id."""


def judge(owner: Owner | None, run_id: str, now: float) -> Verdict:
    """Whether ``owner`` (the owner named by run ``run_id``'s last start) still executes it,
    judged at ``now`` (the judging clock's time) by the rule in this module's docstring."""
    if owner is None:
        return Verdict(False, "no owner is recorded for it")
    me = this_process()
    local = owner.host == me.host and owner.pid_ns == me.pid_ns
    if local and owner.boot_id is not None and me.boot_id is not None:
        if owner.boot_id != me.boot_id:
            return Verdict(False, f"{owner.host} has restarted since", owner)
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
        return Verdict(True, f"its lease holds until {_clock_text(owner.expires_at)}", owner)
    lapsed = f"its lease lapsed {_ago(now - owner.expires_at)}"
    return Verdict(False, f"{lapsed} (at {_clock_text(owner.expires_at)})", owner)


def describe_owner(owner: Owner, now: float) -> str:
    """``pid 123 on host, lease renewed 2 s ago``."""
    return f"pid {owner.pid} on {owner.host}, lease renewed {_ago(now - owner.renewed_at)}"


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
    from converge.orchestration._records import read_records

    events = await store.read(trace_id=run_id.split("/", 1)[0])
    records = read_records([e for e in events if e.subject == run_id])
    if records.last_start is None:
        return None
    owner_id, _ = owner_of(records)
    return judge(await read_owner(store, owner_id), run_id, now)


async def check_resumable(store: Store, run_id: str, now: float) -> None:
    """Raise ``RunOwned`` if run ``run_id`` is being executed by a live owner (``resume`` checks
    this itself; a caller that prepares a resume checks it first, before touching anything)."""
    from converge.orchestration._records import read_records

    events = await store.read(trace_id=run_id.split("/", 1)[0])
    records = read_records([e for e in events if e.subject == run_id])
    owner_id, _ = owner_of(records)
    check_free(run_id, records, await read_owner(store, owner_id), now)


def _ago(seconds: float) -> str:
    if seconds < 0:
        return "just now"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _clock_text(at: float) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
    except (OverflowError, OSError, ValueError):
        return repr(at)


# -- an engine's own lease ------------------------------------------------------------------------


class OwnerLease:
    """An engine's owner record: written before its first run, renewed while runs are in
    flight, removed when the engine closes with none.

    ``hold(run_id)`` as a run starts (awaits a write only when the record is missing or due for
    renewal), ``drop(run_id)`` as it ends. One timer per event loop renews the lease every
    ``renew_every`` seconds while runs are in flight.
    """

    def __init__(self, store: Store, clock: Clock, policy: LeasePolicy) -> None:
        self.store = store
        self.clock = clock
        self.policy = policy
        self.id = new_id()
        self.active: dict[str, Any] = {}
        """Runs in flight, by run id (the value is the run's state)."""
        self._started_at: float | None = None
        self._renewed: float | None = None  # time.monotonic() of the last renewal written
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._writes: set[asyncio.Task[None]] = set()
        _live[self.id] = self

    async def hold(self, run_id: str, state: Any) -> None:
        """Count run ``run_id`` in flight; make sure the lease is written and fresh."""
        self.active[run_id] = state
        renewed = self._renewed
        if renewed is None or time.monotonic() - renewed >= self.policy.renew_every:
            try:
                await self.renew()
            except BaseException:
                self.active.pop(run_id, None)
                raise
        loop = asyncio.get_running_loop()
        if self._timer is None or self._timer_loop is not loop or loop.is_closed():
            self._timer_loop = loop
            self._timer = loop.call_later(self.policy.renew_every, self._tick)

    def drop(self, run_id: str) -> None:
        """Run ``run_id`` is no longer in flight."""
        self.active.pop(run_id, None)

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

    def _tick(self) -> None:
        self._timer = None
        if not self.active:
            return  # idle: the next run renews before it starts
        loop = self._timer_loop
        assert loop is not None
        write = loop.create_task(self.renew())
        self._writes.add(write)
        write.add_done_callback(self._written)
        self._timer = loop.call_later(self.policy.renew_every, self._tick)

    def _written(self, write: asyncio.Task[None]) -> None:
        self._writes.discard(write)
        if write.cancelled():
            return
        error = write.exception()
        if error is not None:  # the next tick tries again; the lease lapses if none succeeds
            _log.warning("could not renew the lease of owner %s: %s", self.id, error)

    async def aclose(self) -> None:
        """Stop renewing; remove the record when no run is in flight (idempotent)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for write in list(self._writes):
            write.cancel()
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        if self._renewed is not None and not self.active:
            self._renewed = None
            with contextlib.suppress(Exception):  # a closed or failing store: the lease lapses
                await self.store.delete(OWNER_KEY + self.id)


async def claim_version(store: Store, run_id: str) -> int:
    """The version of ``run-owner/<run id>`` (0: never taken over), read before the log."""
    entry = await store.get(RUN_OWNER_KEY + run_id)
    return 0 if entry is None else entry.version


def check_free(run_id: str, records: RunRecords, owner: Owner | None, now: float) -> None:
    """Raise ``RunOwned`` if the run is executed by ``owner`` (the record of the owner its
    last start names) and that owner is alive."""
    if records.last_start is None:
        return
    verdict = judge(owner, run_id, now)
    if verdict.alive:
        raise RunOwned(run_id, verdict.owner, records.last_start.at, verdict.reason, now)
