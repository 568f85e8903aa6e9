"""The task board of ``MemoryStore``.

Tasks are in a dict, the pending index in ordered lists, the lease index in a heap.

The pending index must be read in order and paged (``after``), so each of its keys holds a
``_PendingList``: its entries in order, in a plain list. A board takes most tasks in the order
they came (ids are time-ordered, so a new task sorts last among its priority), so adding one is
usually an append and taking the first is moving a start index; an entry taken from the middle
is marked dead, skipped by reads and dropped when the list is compacted, and one that comes
back (a released task) is put in its place. Only an entry that sorts before others — a task
released back, an id of the caller's — costs an insertion.

The lease index is only ever read from its earliest end, so it is a heap with lazy deletion: an
entry ``(lease, id)`` counts only while the task is still CLAIMED or RUNNING with that very
lease; stale entries are dropped when they reach the top, and the heap is rebuilt from its live
entries once most of it is stale, so a lease costs one push, never a search.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Callable, Collection, Iterator
from typing import Any

import msgspec

from converge.core.task import Task, TaskState
from converge.errors import TaskConflict
from converge.store._board import (
    TaskOp,
    encode_task,
    index_capability,
    pool_key,
    task_decoder,
)

__all__ = ["MemoryBoard"]

_PENDING = TaskState.PENDING
_LEASED = frozenset({TaskState.CLAIMED, TaskState.RUNNING})
_Key = tuple[int, str]  # (-priority, id): ascending order is the board's order
# Values a caller cannot change after handing them over: the board may keep them as they are.
_IMMUTABLE = frozenset({type(None), bool, int, float, str, bytes})
_EMPTY_KEPT = 1024  # empty pending lists kept before they are swept
_SHARED: Any = object()  # ``_owned``: this part of the task is the stored one's, or immutable
# A shallow copy, without ``__post_init__`` (msgspec's ``Struct.__copy__``; half the cost of
# ``copy.copy``, and absent from msgspec's type stubs).
_copy_task: Callable[[Task], Task] = Task.__copy__  # type: ignore[attr-defined]
_set = msgspec.structs.force_setattr


class MemoryBoard:
    """Tasks and their indexes, changed by ``write`` (one op) or ``stage`` then ``apply``."""

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self._pending: dict[tuple[str, str], _PendingList] = {}
        self._leases: list[tuple[float, str]] = []  # a heap; see the module docstring
        self._leased = 0  # tasks that hold a lease now (live entries of the heap)
        self._empty = 0  # empty lists kept in the pending index

    # -- writes ------------------------------------------------------------------------------------

    def write(
        self,
        task: Task,
        body: bytes | None,
        expected_state: TaskState | None,
        expected_attempts: int,
    ) -> Task:
        """Check one task write against the stored task and apply it; returns the task as stored.

        ``expected_state`` None puts a new task (the id must be free); else the stored task must
        be in ``expected_state`` with ``expected_attempts``. ``body`` is the task's encoding
        (None: the caller checked that it encodes, and it is encoded here if a copy needs it).

        Raises:
            TaskConflict: the precondition does not hold (nothing changes).
        """
        current = self.tasks.get(task.id)
        if (
            current is not None
            if expected_state is None
            else (
                current is None
                or current.state is not expected_state
                or current.attempts != expected_attempts
            )
        ):
            _check(task.id, current, expected_state, expected_attempts)  # raises
        if (
            current is None
            or task.inputs is not current.inputs
            or not (type(task.result) in _IMMUTABLE or task.result is current.result)
        ):
            task = _owned(task, body, current)
        self._replace(current, task)
        return task

    def stage(self, op: TaskOp, staged: dict[str, Task | None]) -> None:
        """Check ``op`` against the task as the unit's earlier ops leave it, and stage it.

        Raises:
            TaskConflict: the precondition does not hold.
        """
        self.stage_write(op.task, op.body, op.expected_state, op.expected_attempts, staged)

    def stage_write(
        self,
        task: Task,
        body: bytes | None,
        expected_state: TaskState | None,
        expected_attempts: int,
        staged: dict[str, Task | None],
    ) -> None:
        """``stage`` of a write given by its parts (see ``write``)."""
        task_id = task.id
        current = staged[task_id] if task_id in staged else self.tasks.get(task_id)
        _check(task_id, current, expected_state, expected_attempts)
        staged[task_id] = _owned(task, body, current)

    def apply(self, staged: dict[str, Task | None]) -> None:
        """Make staged tasks current and keep the indexes in step."""
        for task_id, new in staged.items():
            assert new is not None
            self._replace(self.tasks.get(task_id), new)

    def _replace(self, old: Task | None, new: Task) -> None:
        self.tasks[new.id] = new
        if old is None:
            old_state = None
        else:
            old_state = old.state
            if old_state is _PENDING:
                pool = old.pool_id or ""
                cap = index_capability(old) if old.required_capabilities else ""
                bucket = self._pending[pool, cap]
                bucket.remove((-old.priority, old.id))
                if not bucket.size:
                    # Kept for the next task under its key (a board that takes each task as it
                    # comes would otherwise make a list per task); swept once many are empty.
                    self._empty += 1
                    if self._empty > _EMPTY_KEPT:
                        self._sweep()
        new_state = new.state
        if new_state is _PENDING:
            pool = new.pool_id or ""
            cap = index_capability(new) if new.required_capabilities else ""
            pending = self._pending.get((pool, cap))
            if pending is None:
                pending = self._pending[pool, cap] = _PendingList()
            elif not pending.size:
                self._empty -= 1
            pending.add((-new.priority, new.id))
            if old_state not in _LEASED:
                return
        # The lease index: a new lease is pushed, one given up only counted (see above).
        old_lease = old.lease_expires_at if old is not None and old_state in _LEASED else None
        lease = new.lease_expires_at if new_state in _LEASED else None
        if lease is None:
            if old_lease is not None:
                self._leased -= 1
            return
        if old_lease is None:
            self._leased += 1
        elif lease == old_lease:
            return
        heapq.heappush(self._leases, (lease, new.id))
        if len(self._leases) > 2 * self._leased + 1024:
            self._compact_leases()

    def _sweep(self) -> None:
        self._pending = {key: bucket for key, bucket in self._pending.items() if bucket.size}
        self._empty = 0

    def _compact_leases(self) -> None:
        live = {entry for entry in self._leases if self._holds(entry)}
        self._leases = list(live)
        heapq.heapify(self._leases)

    def _holds(self, entry: tuple[float, str]) -> bool:
        task = self.tasks.get(entry[1])
        return task is not None and task.state in _LEASED and task.lease_expires_at == entry[0]

    # -- reads -------------------------------------------------------------------------------------

    def pending(
        self,
        pools: Collection[str | None] | None,
        capabilities: Collection[str | None] | None,
        limit: int,
        after: tuple[int, str] | None,
    ) -> list[Task]:
        """PENDING tasks under the given index keys (None: any), in board order.

        Each index key's list is already in order, so the answer is a merge of the keys asked
        for: O(keys) to start, then O(log keys) per task. There is no list of every pending task
        to keep in step on each write; a read over all pools or all capabilities merges every
        key that has pending tasks.
        """
        start = None if after is None else (-after[0], after[1])
        pool_keys = None if pools is None else {pool_key(p) for p in pools}
        cap_keys = None if capabilities is None else {c or "" for c in capabilities}
        index = self._pending
        if pool_keys is not None and cap_keys is not None:
            wanted = [
                k for k in itertools.product(pool_keys, cap_keys) if k in index and index[k].size
            ]
        else:
            wanted = [
                k
                for k, bucket in index.items()
                if bucket.size
                and (pool_keys is None or k[0] in pool_keys)
                and (cap_keys is None or k[1] in cap_keys)
            ]
        keys = heapq.merge(*(index[k].after(start) for k in wanted))
        return [self.tasks[task_id] for _, task_id in itertools.islice(keys, max(limit, 0))]

    def expiring(self, before: float, limit: int) -> list[Task]:
        """Leased tasks whose lease is at or before ``before``, earliest first (then by id)."""
        heap = self._leases
        found: list[Task] = []
        kept: list[tuple[float, str]] = []
        while heap and heap[0][0] <= before and len(found) < limit:
            entry = heapq.heappop(heap)
            if self._holds(entry) and (not kept or kept[-1] != entry):
                kept.append(entry)
                found.append(self.tasks[entry[1]])
        for entry in kept:  # still leased: they stay indexed until their task moves on
            heapq.heappush(heap, entry)
        return found


def _check(
    task_id: str, current: Task | None, expected_state: TaskState | None, expected_attempts: int
) -> None:
    if expected_state is None:
        if current is not None:
            raise TaskConflict(task_id, None, current.state, 0, current.attempts)
    elif (
        current is None
        or current.state is not expected_state
        or current.attempts != expected_attempts
    ):
        raise TaskConflict(
            task_id,
            expected_state,
            None if current is None else current.state,
            expected_attempts,
            0 if current is None else current.attempts,
        )


def _owned(task: Task, body: bytes | None, current: Task | None) -> Task:
    """The task the board keeps: a copy of whatever the caller could still change.

    Only ``inputs`` and ``result`` can hold mutable values (the other fields are strings,
    numbers, tuples of strings or None). A task derived from the stored one shares its (already
    owned) inputs and result; a dict or list of immutable scalars is copied as it is; anything
    else is decoded from ``body`` (which also copies it; None: from the task's encoding).
    """
    inputs = task.inputs
    if current is not None and inputs is current.inputs:
        inputs = _SHARED
    else:
        inputs = _flat_copy(inputs)
        if inputs is None:
            return _decoded(task, body)
    result = task.result
    if type(result) in _IMMUTABLE or (current is not None and result is current.result):
        result = _SHARED
    else:
        result = _flat_copy(result)
        if result is None:
            return _decoded(task, body)
    if inputs is _SHARED and result is _SHARED:
        return task
    owned = _copy_task(task)
    if inputs is not _SHARED:
        _set(owned, "inputs", inputs)
    if result is not _SHARED:
        _set(owned, "result", result)
    return owned


def _decoded(task: Task, body: bytes | None) -> Task:
    return task_decoder.decode(encode_task(task) if body is None else body)


def _flat_copy(value: Any) -> Any:
    """A copy of a dict or list whose items are all immutable scalars; None for anything else.

    Such a copy shares nothing the caller can change; it is what decoding the value from its
    encoding would give, at a fraction of the cost.
    """
    kind = type(value)
    if kind is dict:
        for item in value.values():
            if type(item) not in _IMMUTABLE:
                return None
        for key in value:
            if type(key) not in _IMMUTABLE:
                return None
        return dict(value)
    if kind is list:
        for item in value:
            if type(item) not in _IMMUTABLE:
                return None
        return list(value)
    return None


class _PendingList:
    """The pending entries ``(-priority, id)`` of one index key, in order (see the module
    docstring): ``items[start:]`` sorted, less the entries in ``dead``."""

    __slots__ = ("dead", "items", "size", "start")

    def __init__(self) -> None:
        self.items: list[_Key] = []
        self.start = 0
        self.dead: set[_Key] = set()
        self.size = 0  # live entries

    def add(self, key: _Key) -> None:
        """Add ``key`` (not already live)."""
        items = self.items
        self.size += 1
        if self.start == len(items):  # every entry taken: start over
            items.clear()
            self.dead.clear()
            self.start = 0
            items.append(key)
        elif key > items[-1]:
            items.append(key)
        elif key in self.dead:
            self.dead.discard(key)  # back in the place it never left
        else:
            bisect.insort(items, key, self.start)

    def remove(self, key: _Key) -> None:
        """Remove the live ``key``."""
        items = self.items
        self.size -= 1
        start = self.start
        if items[start] != key:
            self.dead.add(key)
            if len(self.dead) > 1024 and 2 * len(self.dead) > len(items) - start:
                self._compact()
            return
        start += 1
        dead = self.dead
        while dead and start < len(items) and items[start] in dead:
            dead.discard(items[start])
            start += 1
        if start > 1024 and 2 * start > len(items):
            del items[:start]
            start = 0
        self.start = start

    def _compact(self) -> None:
        dead = self.dead
        self.items = [
            key for key in itertools.islice(self.items, self.start, None) if key not in dead
        ]
        self.start = 0
        dead.clear()

    def after(self, start: _Key | None) -> Iterator[_Key]:
        """Live entries in order, from the first one after ``start`` (None: from the first)."""
        items = self.items
        # Only ``items[self.start:]`` is in order: what lies before it is gone.
        i = self.start if start is None else bisect.bisect_right(items, start, self.start)
        dead = self.dead
        if not dead:
            return itertools.islice(items, i, None)
        return (key for key in itertools.islice(items, i, None) if key not in dead)
