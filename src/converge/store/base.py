"""The ``Store`` protocol every backend implements.

Also the pieces backends share.

A store holds two things:

- a **key-value map** of ``str`` keys to ``bytes`` values, each with a version that starts at 1
  and grows by one on every write (0 means absent), for optimistic concurrency;
- an **event log**: ``Event``s with sequence numbers the store assigns, strictly increasing and
  never reused, readable by position, trace and kind, and waitable without polling.

Values are ``bytes``: the store never guesses how to encode a value, callers encode (msgspec).
``compare_and_set(key, 0, value)`` means "create".

Writes are grouped in a ``Transaction`` (a unit of work): its key-value writes, its preconditions
(``put_if_absent``, ``compare_and_set``) and its events commit together or not at all. Every
``await`` that changes state returns only after the change is committed. Nothing is read inside
a unit: read first, then write with a precondition — optimistic concurrency, which works with
group commit. A failed precondition makes the commit raise ``ConflictError`` (key, expected and
actual version) and writes nothing of that unit. Operations apply in order, so a later
precondition sees the unit's earlier writes.

Events get their ``seq`` from the store and are never deleted. ``wait_for_events`` and
``tail()`` wake on this process's commits at once; ``tail()`` tracks the log's horizon, so
events of other traces do not make it spin. Inputs (key type, bytes values, ``Event``
instances, kind syntax, encodability of ``data``) are checked here, in the caller, so one
caller's bad input never fails another caller's batch.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import AsyncIterator, Collection, Sequence
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

import msgspec

from converge.core.task import Task, TaskState
from converge.errors import TaskConflict, ValidationError
from converge.protocol.event import EVENT_KIND_PATTERN, Event
from converge.store._board import TaskOp, encode_task

__all__ = [
    "Entry",
    "Op",
    "Store",
    "TaskOp",
    "TaskWrite",
    "Transaction",
    "check_task_writes",
    "task_op",
    "validate_event",
    "validate_events",
    "validate_key",
    "validate_value",
    "write_error",
]


class Entry(msgspec.Struct, frozen=True):
    """A key-value entry as read from a store."""

    key: str
    """The key."""
    value: bytes
    """The stored bytes."""
    version: int
    """1 after the first write, +1 on each later write."""


class Op(msgspec.Struct, frozen=True, array_like=True):
    """One buffered key-value operation of a transaction.

    ``kind`` is ``"put"``, ``"delete"``, ``"put_if_absent"`` or ``"cas"``; ``expected`` is the
    version a ``"cas"`` requires (0: the key must be absent).
    """

    kind: str
    key: str
    value: bytes | None = None
    expected: int = 0


class TaskWrite(msgspec.Struct, frozen=True, gc=False):
    """One task write of ``Store.write_tasks``: a task, the event that records the change, and
    the precondition the stored task must meet."""

    task: Task
    """The task as it is to be stored."""
    event: Event
    """The event appended with it (in the same unit, or not at all)."""
    expected_state: TaskState | None = None
    """None: a new task (its id must be free); else the state the stored task must be in."""
    expected_attempts: int = 0
    """With ``expected_state``: the attempt number the stored task must have."""


class Transaction:
    """A unit of work: buffered writes and events that commit together or not at all.

    Obtain one from ``store.transaction()``; it commits when the ``async with`` block exits
    normally and is discarded if the block raises. Methods only buffer; nothing is visible to
    others until the commit, and the commit raises ``ConflictError`` (writing nothing) if a
    precondition does not hold at that moment.
    """

    __slots__ = ("_commit", "_done", "events", "ops", "seqs")

    def __init__(self, commit: _Committer) -> None:
        self._commit = commit
        self._done = False
        self.ops: list[Op | TaskOp] = []
        """The buffered key-value and task operations, in order."""
        self.events: list[Event] = []
        """The buffered events, in order."""
        self.seqs: list[int] = []
        """After commit: the sequence numbers assigned to ``events``."""

    def put(self, key: str, value: bytes) -> None:
        """Write ``value`` under ``key``."""
        self._check_open()
        self.ops.append(Op("put", validate_key(key), validate_value(value)))

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error if absent)."""
        self._check_open()
        self.ops.append(Op("delete", validate_key(key)))

    def put_if_absent(self, key: str, value: bytes) -> None:
        """Write ``value`` under ``key``; the commit fails unless ``key`` is absent."""
        self._check_open()
        self.ops.append(Op("put_if_absent", validate_key(key), validate_value(value)))

    def compare_and_set(self, key: str, expected_version: int, value: bytes) -> None:
        """Write ``value``; the commit fails unless ``key`` is at ``expected_version``.

        ``expected_version=0`` means the key must be absent.
        """
        self._check_open()
        if not isinstance(expected_version, int) or expected_version < 0:
            raise ValidationError(
                f"expected_version must be an int >= 0, not {expected_version!r}",
                field="expected_version",
            )
        self.ops.append(Op("cas", validate_key(key), validate_value(value), expected_version))

    def put_task(self, task: Task) -> None:
        """Add a new task to the board; the commit fails if its id is taken."""
        self._check_open()
        self.ops.append(task_op(task, None, 0))

    def update_task(self, task: Task, expected_state: TaskState, expected_attempts: int) -> None:
        """Replace the stored task by ``task``; the commit fails unless the stored one is still
        in ``expected_state`` with ``expected_attempts`` attempts."""
        self._check_open()
        self.ops.append(task_op(task, expected_state, expected_attempts))

    def append(self, *events: Event) -> None:
        """Add events to the log with this transaction."""
        self._check_open()
        self.events.extend(validate_events(events))

    async def commit(self) -> list[int]:
        """Commit now (``async with`` does this for you); returns the events' sequence numbers."""
        self._check_open()
        self._done = True
        if self.ops or self.events:
            self.seqs = await self._commit(self.ops, self.events)
        return self.seqs

    def _check_open(self) -> None:
        if self._done:
            raise ValidationError("this transaction has already been committed or discarded")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._done = True
            return
        if not self._done:
            await self.commit()


class _Committer(Protocol):
    async def __call__(self, ops: list[Op | TaskOp], events: list[Event]) -> list[int]: ...


@runtime_checkable
class Store(Protocol):
    """What every converge store offers. All methods are coroutines except ``transaction``."""

    # -- key-value -------------------------------------------------------------------------------

    async def get(self, key: str) -> Entry | None:
        """The entry under ``key``, or None."""
        ...

    async def put(self, key: str, value: bytes) -> int:
        """Write ``value`` under ``key``; returns the new version."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove ``key``; returns whether it existed."""
        ...

    async def list(self, prefix: str = "", *, limit: int | None = None) -> builtins.list[Entry]:
        """Entries whose key starts with ``prefix``, in key order, at most ``limit``."""
        ...

    async def put_if_absent(self, key: str, value: bytes) -> bool:
        """Write ``value`` only if ``key`` is absent; returns whether it wrote."""
        ...

    async def compare_and_set(self, key: str, expected_version: int, value: bytes) -> bool:
        """Write ``value`` only if ``key`` is at ``expected_version`` (0: absent); returns whether
        it wrote."""
        ...

    # -- event log -------------------------------------------------------------------------------

    async def append(self, events: Sequence[Event]) -> builtins.list[int]:
        """Append events (their ``seq`` is ignored); returns their assigned sequence numbers."""
        ...

    async def read(
        self,
        *,
        after_seq: int = 0,
        trace_id: str | None = None,
        kinds: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> builtins.list[Event]:
        """Events with ``seq > after_seq``, optionally of one trace and some kinds, in ``seq``
        order, at most ``limit``."""
        ...

    async def last_seq(self) -> int:
        """The highest sequence number in the log (0 if empty)."""
        ...

    async def wait_for_events(self, after_seq: int, timeout: float | None = None) -> int:
        """Wait until the log holds an event with ``seq > after_seq``; returns the last seq.

        Returns at once if there already is one; on timeout returns the last seq unchanged.
        Wakes on this process's commits immediately, without polling.
        """
        ...

    def tail(
        self,
        *,
        after_seq: int = 0,
        trace_id: str | None = None,
        kinds: Sequence[str] | None = None,
    ) -> AsyncIterator[Event]:
        """Every matching event after ``after_seq``, then each new one as it is committed."""
        ...

    # -- task board ------------------------------------------------------------------------------

    async def get_task(self, task_id: str) -> Task | None:
        """The task with ``task_id``, or None."""
        ...

    async def pending_tasks(
        self,
        *,
        pools: Collection[str | None] | None = None,
        capabilities: Collection[str | None] | None = None,
        limit: int = 100,
        after: tuple[int, str] | None = None,
    ) -> builtins.list[Task]:
        """PENDING tasks, highest priority first (then by id), at most ``limit``.

        Args:
            pools: only tasks in these pools (None in the collection: tasks without a pool);
                None: every pool.
            capabilities: only tasks whose index capability (see ``converge.store._board``) is
                one of these names (None in the collection: tasks requiring nothing); None: any.
            limit: the most tasks returned.
            after: resume after this (priority, id), from the last task of a previous page.
        """
        ...

    async def expiring_tasks(self, before: float, *, limit: int = 1000) -> builtins.list[Task]:
        """CLAIMED or RUNNING tasks whose lease expires at or before ``before``, earliest first."""
        ...

    async def write_task(
        self,
        task: Task,
        event: Event,
        *,
        expected_state: TaskState | None = None,
        expected_attempts: int = 0,
    ) -> Task:
        """One task and its event as a unit of work; returns the task as the store keeps it.

        The board's everyday write, with none of a ``Transaction``'s bookkeeping: with
        ``expected_state`` None it adds a new task (the id must be free), else it replaces the
        stored task if that is still in ``expected_state`` with ``expected_attempts``.

        Raises:
            TaskConflict: the precondition does not hold (nothing is written).
            ValidationError: the task or the event cannot be stored.
        """
        ...

    async def write_tasks(
        self, writes: Sequence[TaskWrite], *, atomic: bool = False
    ) -> builtins.list[Task | TaskConflict]:
        """Several task writes, each with its event, committed together: the board's batch.

        Each write is ``write_task``'s unit on its own: it holds or fails by its own
        precondition, judged after the writes before it in ``writes`` (two writes of one task
        apply in order). Those that hold are committed at once (one transaction where the
        store has them), their events in the order of ``writes``; one that fails writes
        nothing and takes nothing else with it. With ``atomic``, the batch is one unit
        instead: every write holds, or none is written and the first that fails raises.

        Returns:
            Per write, in order: the task as the store keeps it, or the ``TaskConflict`` that
            refused it (never one with ``atomic``).

        Raises:
            ValidationError: an item that is not a ``TaskWrite``, or a task or event that
                cannot be stored (``field`` names ``writes[i]``); nothing at all is written.
            TaskConflict: with ``atomic``, the first write whose precondition failed; nothing
                is written.
        """
        ...

    # -- units of work ---------------------------------------------------------------------------

    def transaction(self) -> Transaction:
        """A new unit of work (use with ``async with``)."""
        ...

    # -- lifetime --------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Finish pending writes and release resources; idempotent."""
        ...


def task_op(task: object, expected_state: TaskState | None, expected_attempts: int) -> TaskOp:
    """The ``TaskOp`` that puts (``expected_state`` None) or updates ``task``, encoded and checked.

    Raises:
        ValidationError: ``task`` is not a ``Task``, or holds a value no store can keep.
    """
    if not isinstance(task, Task):
        raise ValidationError(f"expected a Task, not {type(task).__name__}", field="task")
    if expected_state is None:
        return TaskOp("put", task, encode_task(task))
    if type(expected_state) is not TaskState:
        try:
            expected_state = TaskState(expected_state)
        except ValueError:
            states = ", ".join(s.value for s in TaskState)
            raise ValidationError(
                f"expected_state must be one of {states}, not {expected_state!r}",
                field="expected_state",
            ) from None
    if type(expected_attempts) is not int or expected_attempts < 0:
        raise ValidationError(
            f"expected_attempts must be an int >= 0, not {expected_attempts!r}",
            field="expected_attempts",
        )
    return TaskOp("update", task, encode_task(task), expected_state, expected_attempts)


def check_task_writes(writes: object) -> list[TaskWrite]:
    """``writes`` as a list of checked ``TaskWrite``s (a state given as its string value becomes
    the ``TaskState``); each event's kind is checked too.

    Raises:
        ValidationError: ``writes`` is not a sequence of ``TaskWrite``s, or one holds something
            that is not a ``Task`` or an ``Event``, or a bad precondition (``field`` names
            ``writes[i]``).
    """
    if isinstance(writes, (str, bytes)) or not isinstance(writes, Sequence):
        raise ValidationError(
            f"writes must be a sequence of TaskWrite, not {type(writes).__name__}",
            field="writes",
        )
    checked = list(writes)
    for i, write in enumerate(checked):
        if type(write) is not TaskWrite:
            raise ValidationError(
                f"writes[{i}] is a {type(write).__name__}, not a TaskWrite", field=f"writes[{i}]"
            )
        state = write.expected_state
        if (
            type(write.task) is Task
            and type(write.event) is Event
            and (state is None or type(state) is TaskState)
            and type(write.expected_attempts) is int
            and write.expected_attempts >= 0
            and write.event.kind in _known_kinds
        ):
            continue
        try:
            op = task_op(write.task, state, write.expected_attempts)
        except ValidationError as exc:
            raise write_error(exc, i) from None
        try:
            validate_event(write.event)
        except ValidationError as exc:
            raise write_error(exc, i, "event") from None
        checked[i] = TaskWrite(op.task, write.event, op.expected_state, op.expected_attempts)
    return checked


def write_error(exc: ValidationError, index: int, part: str | None = None) -> ValidationError:
    """``exc``, raised about ``part`` (``"task"``, ``"event"``) of ``writes[index]``, as an
    error that names it: its field becomes ``writes[index].part.field``."""
    text = str(exc)
    field = exc.field or ""
    if field:
        text = text.removesuffix(f" (field `{field}`)")
    if field.startswith("events["):  # said of the event as the one of a list
        field = field.partition("]")[2].lstrip(".")
    path = [f"writes[{index}]"]
    if part:
        path.append(part)
    if field and field != part:
        path.append(field)
    return ValidationError(f"writes[{index}]: {text}", field=".".join(path))


def validate_key(key: object) -> str:
    """Return ``key`` if it is a non-empty ``str`` that UTF-8 can encode, else raise
    ``ValidationError``."""
    if not isinstance(key, str) or not key:
        raise ValidationError(f"a store key is a non-empty str, not {key!r}", field="key")
    if not key.isascii():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(f"store key {key!r} is not valid Unicode", field="key") from None
    return key


def validate_value(value: object) -> bytes:
    """Return ``value`` as ``bytes`` if it is bytes-like, else raise ``ValidationError``."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise ValidationError(
        f"a store value is bytes, not {type(value).__name__}; encode it first "
        "(converge.protocol.codec.to_msgpack)",
        field="value",
    )


_kind_ok = re.compile(EVENT_KIND_PATTERN).match
_known_kinds: set[str] = set()  # kinds repeat: remember the valid ones (bounded below)


def validate_event(event: Event) -> Event:
    """Return ``event`` if it is an ``Event`` with a valid kind, else raise ``ValidationError``."""
    if type(event) is Event and event.kind in _known_kinds:
        return event
    return validate_events((event,))[0]


def validate_events(events: Sequence[Event]) -> Sequence[Event]:
    """Return ``events`` if every item is an ``Event`` with a valid kind, else raise."""
    for i, ev in enumerate(events):
        if type(ev) is not Event:
            raise ValidationError(
                f"events[{i}] is a {type(ev).__name__}, not an Event", field=f"events[{i}]"
            )
        if ev.kind in _known_kinds:
            continue
        if not (isinstance(ev.kind, str) and _kind_ok(ev.kind)):
            raise ValidationError(
                f"events[{i}].kind {ev.kind!r} is not a dotted lower-case name like 'task.claimed'",
                field=f"events[{i}].kind",
            )
        if len(_known_kinds) < 4096:
            _known_kinds.add(ev.kind)
    return events
