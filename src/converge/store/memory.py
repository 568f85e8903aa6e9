"""``MemoryStore``: the whole ``Store`` protocol in process memory.

It is for tests and ephemeral runs. Events are kept as MessagePack too: what is read back is a
copy, and data a persistent store could not encode is refused here as well, so the backends
behave alike under the conformance suite. The key-value map is a ``SortedDict``, so
``list(prefix)`` is a range.
"""

from __future__ import annotations

import asyncio
import bisect
import builtins
import itertools
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from types import TracebackType
from typing import Self

from sortedcontainers import SortedDict

from converge.core.task import Task, TaskState
from converge.errors import ConflictError, StoreClosed, ValidationError
from converge.protocol.event import Event
from converge.store._board import TaskOp
from converge.store._memory_board import MemoryBoard
from converge.store._shared import EventWaiters, decode_event, encode_event, tail_events
from converge.store.base import (
    Entry,
    Op,
    Transaction,
    task_op,
    validate_event,
    validate_events,
    validate_key,
    validate_value,
)

__all__ = ["MemoryStore"]


class MemoryStore:
    """A ``Store`` that keeps everything in memory and loses it when the process ends.

    Events are kept as MessagePack, exactly as a persistent store keeps them, so what is read back
    is a copy: mutating an event's ``data`` after appending it changes nothing stored, and data
    that a persistent store could not encode is refused here too.
    """

    def __init__(self) -> None:
        # Sorted, so that list(prefix) is a range, not a scan of every key.
        self._kv: SortedDict[str, tuple[bytes, int]] = SortedDict()
        # seq -> (trace_id, kind, body), in seq order; a forgotten trace leaves a gap.
        self._events: dict[int, tuple[str, str, bytes]] = {}
        self._seq = 0
        self._by_trace: dict[str, builtins.list[int]] = {}
        self._board = MemoryBoard()
        self._waiters = EventWaiters()
        self._closed = False

    # -- key-value -------------------------------------------------------------------------------

    async def get(self, key: str) -> Entry | None:
        self._check_open()
        item = self._kv.get(validate_key(key))
        return None if item is None else Entry(key, item[0], item[1])

    async def put(self, key: str, value: bytes) -> int:
        self._check_open()
        await self._commit([Op("put", validate_key(key), validate_value(value))], [])
        return self._kv[key][1]

    async def delete(self, key: str) -> bool:
        self._check_open()
        existed = validate_key(key) in self._kv
        await self._commit([Op("delete", key)], [])
        return existed

    async def list(self, prefix: str = "", *, limit: int | None = None) -> builtins.list[Entry]:
        self._check_open()
        if not isinstance(prefix, str):
            raise ValidationError(f"prefix must be a str, not {prefix!r}", field="prefix")
        keys = self._kv.irange(minimum=prefix)
        out: builtins.list[Entry] = []
        cap = len(self._kv) if limit is None else max(limit, 0)
        for key in keys:
            if len(out) >= cap or not key.startswith(prefix):
                break
            out.append(Entry(key, *self._kv[key]))
        return out

    async def put_if_absent(self, key: str, value: bytes) -> bool:
        return await self._try([Op("put_if_absent", validate_key(key), validate_value(value))])

    async def compare_and_set(self, key: str, expected_version: int, value: bytes) -> bool:
        tx = self.transaction()
        tx.compare_and_set(key, expected_version, value)
        return await self._try(tx.ops)

    async def _try(self, ops: builtins.list[Op | TaskOp]) -> bool:
        self._check_open()
        try:
            await self._commit(ops, [])
        except ConflictError:
            return False
        return True

    # -- event log -------------------------------------------------------------------------------

    async def append(self, events: Sequence[Event]) -> builtins.list[int]:
        self._check_open()
        return await self._commit([], list(validate_events(events)))

    async def read(
        self,
        *,
        after_seq: int = 0,
        trace_id: str | None = None,
        kinds: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> builtins.list[Event]:
        self._check_open()
        kind_set = _kind_filter(kinds)
        after_seq = max(after_seq, 0)
        events = self._events
        candidates: Iterable[int]
        if trace_id is not None:
            seqs = self._by_trace.get(trace_id, [])
            candidates = seqs[bisect.bisect_right(seqs, after_seq) :]
        elif self._seq - after_seq <= len(events):  # a tail: fewer seqs after it than kept
            candidates = (s for s in range(after_seq + 1, self._seq + 1) if s in events)
        else:  # most of what was logged after it is forgotten: walk what is kept
            candidates = itertools.dropwhile(after_seq.__ge__, events)
        out: builtins.list[Event] = []
        cap = len(events) if limit is None else max(limit, 0)
        for seq in candidates:
            if len(out) >= cap:
                break
            _, kind, body = events[seq]
            if kind_set is None or kind in kind_set:
                out.append(decode_event(body, seq))
        return out

    async def last_seq(self) -> int:
        self._check_open()
        return self._seq

    def forget(self, trace_id: str) -> int:
        """Drop every event of trace ``trace_id`` from memory; how many there were.

        For an owner that bounds what it keeps (an engine's ``keep_runs``): the other events
        keep their seqs, and a reader past the forgotten ones reads on as before. Nothing else
        (keys, tasks) is touched.
        """
        self._check_open()
        if not isinstance(trace_id, str):
            raise ValidationError(f"trace_id must be a str, not {trace_id!r}", field="trace_id")
        seqs = self._by_trace.pop(trace_id, [])
        events = self._events
        for seq in seqs:
            del events[seq]
        return len(seqs)

    async def wait_for_events(self, after_seq: int, timeout: float | None = None) -> int:
        self._check_open()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._seq <= after_seq and not self._closed:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                break
            await self._waiters.wait(remaining)
        return self._seq

    def tail(
        self,
        *,
        after_seq: int = 0,
        trace_id: str | None = None,
        kinds: Sequence[str] | None = None,
    ) -> AsyncIterator[Event]:
        return tail_events(self, after_seq=after_seq, trace_id=trace_id, kinds=kinds)

    # -- task board ------------------------------------------------------------------------------

    async def get_task(self, task_id: str) -> Task | None:
        self._check_open()
        return self._board.tasks.get(task_id)

    async def pending_tasks(
        self,
        *,
        pools: Collection[str | None] | None = None,
        capabilities: Collection[str | None] | None = None,
        limit: int = 100,
        after: tuple[int, str] | None = None,
    ) -> builtins.list[Task]:
        self._check_open()
        return self._board.pending(pools, capabilities, limit, after)

    async def expiring_tasks(self, before: float, *, limit: int = 1000) -> builtins.list[Task]:
        self._check_open()
        return self._board.expiring(before, limit)

    async def write_task(
        self,
        task: Task,
        event: Event,
        *,
        expected_state: TaskState | None = None,
        expected_attempts: int = 0,
    ) -> Task:
        self._check_open()
        op = task_op(task, expected_state, expected_attempts)
        body = encode_event(validate_event(event))
        stored = self._board.write(op)
        self._waiters.publish(self._log(event.trace_id, event.kind, body))
        return stored

    # -- units of work ---------------------------------------------------------------------------

    def transaction(self) -> Transaction:
        return Transaction(self._commit)

    async def _commit(
        self, ops: builtins.list[Op | TaskOp], events: builtins.list[Event]
    ) -> builtins.list[int]:
        self._check_open()
        bodies = [encode_event(ev, i) for i, ev in enumerate(events)]
        if not ops:  # an append: nothing to check
            log = self._log
            seqs = [log(ev.trace_id, ev.kind, b) for ev, b in zip(events, bodies, strict=True)]
            if seqs:
                self._waiters.publish(seqs[-1])
            return seqs
        # Check every precondition against the state as the earlier ops leave it, then apply all:
        # nothing awaits in between, so the whole unit is atomic.
        staged: dict[str, tuple[bytes, int] | None] = {}
        staged_tasks: dict[str, Task | None] = {}
        for op in ops:
            if isinstance(op, TaskOp):
                self._board.stage(op, staged_tasks)
                continue
            current = staged[op.key] if op.key in staged else self._kv.get(op.key)
            version = 0 if current is None else current[1]
            if op.kind == "delete":
                staged[op.key] = None
                continue
            if op.kind == "put_if_absent" and version != 0:
                raise ConflictError(op.key, 0, version)
            if op.kind == "cas" and version != op.expected:
                raise ConflictError(op.key, op.expected, version)
            assert op.value is not None
            staged[op.key] = (op.value, version + 1)
        for key, item in staged.items():
            if item is None:
                self._kv.pop(key, None)
            else:
                self._kv[key] = item
        if staged_tasks:
            self._board.apply(staged_tasks)
        seqs = [self._log(ev.trace_id, ev.kind, b) for ev, b in zip(events, bodies, strict=True)]
        if seqs:
            self._waiters.publish(seqs[-1])
        return seqs

    def _log(self, trace_id: str, kind: str, body: bytes) -> int:
        self._seq = seq = self._seq + 1
        self._events[seq] = (trace_id, kind, body)
        seqs = self._by_trace.get(trace_id)
        if seqs is None:
            self._by_trace[trace_id] = [seq]
        else:
            seqs.append(seq)
        return seq

    # -- lifetime --------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("this MemoryStore is closed")

    async def aclose(self) -> None:
        self._closed = True
        self._waiters.publish(self._seq)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (
            f"MemoryStore(keys={len(self._kv)}, tasks={len(self._board.tasks)}, "
            f"events={len(self._events)})"
        )


def _kind_filter(kinds: Sequence[str] | None) -> frozenset[str] | None:
    if kinds is None:
        return None
    if isinstance(kinds, str):
        return frozenset((kinds,))
    return frozenset(kinds)
