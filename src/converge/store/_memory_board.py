"""The task board of ``MemoryStore``: tasks in a dict, indexes in sorted lists."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Collection, Iterable, Iterator

from sortedcontainers import SortedList

from converge.core.task import Task, TaskState
from converge.errors import TaskConflict
from converge.store._board import TaskOp, index_capability, pool_key, task_decoder

__all__ = ["MemoryBoard"]

_LEASED = frozenset({TaskState.CLAIMED, TaskState.RUNNING})
_Key = tuple[int, str]  # (-priority, id): ascending order is the board's order


def _order(task: Task) -> _Key:
    return (-task.priority, task.id)


class MemoryBoard:
    """Tasks and their pending and lease indexes, changed only by ``stage`` then ``apply``."""

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self._pending: dict[tuple[str, str], SortedList[_Key]] = {}
        self._pending_all: SortedList[_Key] = SortedList()
        self._leases: SortedList[tuple[float, str]] = SortedList()

    # -- writes ------------------------------------------------------------------------------------

    def stage(self, op: TaskOp, staged: dict[str, Task | None]) -> None:
        """Check ``op`` against the task as the unit's earlier ops leave it, and stage it.

        Raises:
            TaskConflict: the precondition does not hold.
        """
        task_id = op.task.id
        current = staged[task_id] if task_id in staged else self.tasks.get(task_id)
        if op.kind == "put":
            if current is not None:
                raise TaskConflict(task_id, None, current.state, 0, current.attempts)
        elif current is None or (current.state, current.attempts) != (
            op.expected_state,
            op.expected_attempts,
        ):
            raise TaskConflict(
                task_id,
                op.expected_state,
                None if current is None else current.state,
                op.expected_attempts,
                0 if current is None else current.attempts,
            )
        # The board keeps its own copy: a caller's later change to inputs or result is not ours.
        staged[task_id] = task_decoder.decode(op.body)

    def apply(self, staged: dict[str, Task | None]) -> None:
        """Make staged tasks current and keep the indexes in step."""
        for task_id, new in staged.items():
            assert new is not None
            old = self.tasks.get(task_id)
            if old is not None:
                self._unindex(old)
            self.tasks[task_id] = new
            self._index(new)

    def _index(self, task: Task) -> None:
        if task.state is TaskState.PENDING:
            key = (pool_key(task.pool_id), index_capability(task))
            bucket = self._pending.get(key)
            if bucket is None:
                bucket = self._pending[key] = SortedList()
            bucket.add(_order(task))
            self._pending_all.add(_order(task))
        elif task.state in _LEASED and task.lease_expires_at is not None:
            self._leases.add((task.lease_expires_at, task.id))

    def _unindex(self, task: Task) -> None:
        if task.state is TaskState.PENDING:
            key = (pool_key(task.pool_id), index_capability(task))
            bucket = self._pending[key]
            bucket.remove(_order(task))
            if not bucket:
                del self._pending[key]
            self._pending_all.remove(_order(task))
        elif task.state in _LEASED and task.lease_expires_at is not None:
            self._leases.remove((task.lease_expires_at, task.id))

    # -- reads -------------------------------------------------------------------------------------

    def pending(
        self,
        pools: Collection[str | None] | None,
        capabilities: Collection[str | None] | None,
        limit: int,
        after: tuple[int, str] | None,
    ) -> list[Task]:
        start = None if after is None else (-after[0], after[1])
        if pools is not None and capabilities is not None:
            pool_keys = {pool_key(p) for p in pools}
            cap_keys = {c or "" for c in capabilities}
            buckets = [
                self._pending[k]
                for k in itertools.product(pool_keys, cap_keys)
                if k in self._pending
            ]
            keys: Iterable[_Key] = heapq.merge(*(_from(b, start) for b in buckets))
        else:
            keys = _from(self._pending_all, start)
            if pools is not None or capabilities is not None:
                keys = self._matching(keys, pools, capabilities)
        return [self.tasks[task_id] for _, task_id in itertools.islice(keys, max(limit, 0))]

    def _matching(
        self,
        keys: Iterable[_Key],
        pools: Collection[str | None] | None,
        capabilities: Collection[str | None] | None,
    ) -> Iterator[_Key]:
        pool_keys = None if pools is None else {pool_key(p) for p in pools}
        cap_keys = None if capabilities is None else {c or "" for c in capabilities}
        for key in keys:
            task = self.tasks[key[1]]
            if pool_keys is not None and pool_key(task.pool_id) not in pool_keys:
                continue
            if cap_keys is not None and index_capability(task) not in cap_keys:
                continue
            yield key

    def expiring(self, before: float, limit: int) -> list[Task]:
        found = self._leases.irange(maximum=(before, "\U0010ffff"))
        return [self.tasks[task_id] for _, task_id in itertools.islice(found, max(limit, 0))]


def _from(bucket: SortedList[_Key], start: _Key | None) -> Iterator[_Key]:
    if start is None:
        return iter(bucket)
    return bucket.irange(minimum=start, inclusive=(False, True))
