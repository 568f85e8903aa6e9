"""The task board of ``MemoryStore``.

Tasks are in a dict, the pending index in sorted lists, the lease index in a heap.

The pending index must be read in order and paged (``after``), which heaps cannot do without
popping, so it is a ``sortedcontainers.SortedList`` per index key (well kept, pure Python), kept
exact: a task leaves its sorted list the moment it stops being PENDING. There is no second list
of every pending task (keeping it in step cost a sorted insert and removal per task): a read
over all pools or capabilities merges every key's list, O(keys) to start — the runtime's reads
always name their keys. The lease index is only ever read from its earliest end, so it is a
heap with lazy deletion: an entry ``(lease, id)`` counts only while the task is still CLAIMED
or RUNNING with that very lease; stale entries are dropped when they reach the top, and the
heap is rebuilt from its live entries once it holds more than twice their number plus 1,024,
so a lease costs one push, never a sorted insert and removal.

Stored tasks are the store's own: a task is decoded from its encoding (a copy) unless every
value a caller could still change is already the store's (inputs shared with the stored task, a
result of an immutable type, or shared with the stored one) — a claim copies nothing, a submit
copies its inputs.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Collection, Iterator

from sortedcontainers import SortedList

from converge.core.task import Task, TaskState
from converge.errors import TaskConflict
from converge.store._board import TaskOp, index_capability, pool_key, task_decoder

__all__ = ["MemoryBoard"]

_PENDING = TaskState.PENDING
_LEASED = frozenset({TaskState.CLAIMED, TaskState.RUNNING})
_Key = tuple[int, str]  # (-priority, id): ascending order is the board's order
# Values a caller cannot change after handing them over: the board may keep them as they are.
_IMMUTABLE = frozenset({type(None), bool, int, float, str, bytes})
_EMPTY_KEPT = 1024  # empty pending lists kept before they are swept


class MemoryBoard:
    """Tasks and their indexes, changed by ``write`` (one op) or ``stage`` then ``apply``."""

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self._pending: dict[tuple[str, str], SortedList[_Key]] = {}
        self._leases: list[tuple[float, str]] = []  # a heap; see the module docstring
        self._leased = 0  # tasks that hold a lease now (live entries of the heap)
        self._empty = 0  # empty lists kept in the pending index

    # -- writes ------------------------------------------------------------------------------------

    def write(self, op: TaskOp) -> Task:
        """Check ``op`` against the stored task and apply it; returns the task as stored.

        Raises:
            TaskConflict: the precondition does not hold (nothing changes).
        """
        current = self.tasks.get(op.task.id)
        _check(op, current)
        new = _owned(op, current)
        self._replace(current, new)
        return new

    def stage(self, op: TaskOp, staged: dict[str, Task | None]) -> None:
        """Check ``op`` against the task as the unit's earlier ops leave it, and stage it.

        Raises:
            TaskConflict: the precondition does not hold.
        """
        task_id = op.task.id
        current = staged[task_id] if task_id in staged else self.tasks.get(task_id)
        _check(op, current)
        staged[task_id] = _owned(op, current)

    def apply(self, staged: dict[str, Task | None]) -> None:
        """Make staged tasks current and keep the indexes in step."""
        for task_id, new in staged.items():
            assert new is not None
            self._replace(self.tasks.get(task_id), new)

    def _replace(self, old: Task | None, new: Task) -> None:
        self.tasks[new.id] = new
        old_state = None if old is None else old.state
        new_state = new.state
        if old_state is _PENDING:
            assert old is not None
            key = (pool_key(old.pool_id), index_capability(old))
            bucket = self._pending[key]
            bucket.remove((-old.priority, old.id))
            if not bucket:
                # Kept for the next task under its key (a board that takes each task as it
                # comes would otherwise make a list per task); swept once many are empty.
                self._empty += 1
                if self._empty > _EMPTY_KEPT:
                    self._sweep()
        if new_state is _PENDING:
            key = (pool_key(new.pool_id), index_capability(new))
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = SortedList()
            elif not pending:
                self._empty -= 1
            pending.add((-new.priority, new.id))
        if old_state not in _LEASED and new_state not in _LEASED:
            return  # nothing for the lease index
        old_lease = None if old is None or old_state not in _LEASED else old.lease_expires_at
        lease = new.lease_expires_at if new_state in _LEASED else None
        self._leased += (lease is not None) - (old_lease is not None)
        if lease is not None and lease != old_lease:
            heapq.heappush(self._leases, (lease, new.id))
            if len(self._leases) > 2 * self._leased + 1024:
                self._compact_leases()

    def _sweep(self) -> None:
        self._pending = {key: bucket for key, bucket in self._pending.items() if bucket}
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
            wanted = [k for k in itertools.product(pool_keys, cap_keys) if index.get(k)]
        else:
            wanted = [
                k
                for k, bucket in index.items()
                if bucket
                and (pool_keys is None or k[0] in pool_keys)
                and (cap_keys is None or k[1] in cap_keys)
            ]
        keys = heapq.merge(*(_from(index[k], start) for k in wanted))
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


def _check(op: TaskOp, current: Task | None) -> None:
    if op.kind == "put":
        if current is not None:
            raise TaskConflict(op.task.id, None, current.state, 0, current.attempts)
    elif (
        current is None
        or current.state is not op.expected_state
        or current.attempts != op.expected_attempts
    ):
        raise TaskConflict(
            op.task.id,
            op.expected_state,
            None if current is None else current.state,
            op.expected_attempts,
            0 if current is None else current.attempts,
        )


def _owned(op: TaskOp, current: Task | None) -> Task:
    """The task the board keeps for ``op``: a copy of whatever the caller could still change.

    A task derived from the stored one shares its (already owned) inputs; a result of an
    immutable type cannot be changed by anyone. Anything else is decoded from the op's bytes.
    """
    task = op.task
    result_owned = type(task.result) in _IMMUTABLE or (
        current is not None and task.result is current.result
    )
    inputs_owned = current is not None and task.inputs is current.inputs
    return task if result_owned and inputs_owned else task_decoder.decode(op.body)


def _from(bucket: SortedList[_Key], start: _Key | None) -> Iterator[_Key]:
    if start is None:
        return iter(bucket)
    return bucket.irange(minimum=start, inclusive=(False, True))
