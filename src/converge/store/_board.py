"""What every store shares for the task board.

The task operation and the visibility keys.

A store keeps tasks beside its key-value map and event log, with two indexes:

- **pending**, by (pool key, index capability) in priority order (higher first, then id, which
  for converge ids is submission order). The pool key is the task's ``pool_id`` or ``""``; the
  index capability is the smallest name among its required capabilities, or ``""``. An agent in
  pools P with capability names C can only see tasks under the keys (p, c) with p in P or ``""``
  and c in C or ``""``, so finding its tasks costs O(|P| x |C|) index lookups, never a scan of
  all tasks. The caller then checks each candidate's other requirements (names, versions).
- **leases**, CLAIMED and RUNNING tasks by ``lease_expires_at``, for the scan of expired leases.

Tasks change only through ``TaskOp``s inside a unit of work: ``put`` (a new task; the id must be
free) and ``update`` (replace the task if its stored state and attempt number are still the
ones the caller read — optimistic concurrency, so two claimers cannot both win: the loser gets
``TaskConflict`` (a ``ConflictError``) and nothing of its unit is written). A store's
``write_task(task, event, expected_state=…, expected_attempts=…)`` is the board's everyday unit
— one task write and its event — without a ``Transaction``'s bookkeeping (buffer lists, a
context manager, two extra coroutine hops); it returns the task as the store keeps it, so a
caller deriving its next write from it shares the store's own copy of ``inputs``.

``MemoryStore`` keeps the board in ``_memory_board``. ``SQLiteStore`` keeps a ``tasks`` table
(mutable columns for the compare-and-set and the indexes, the whole task as MessagePack in
``body``) with partial indexes ``WHERE state = 'pending'`` (by key and priority) and ``WHERE
state IN ('claimed', 'running')`` (by lease); an agent's visible tasks are one ordered index
range per key, merged in the reader thread, bounded by keys x limit rows, where a single ``IN
(…) ORDER BY`` would sort every matching task. Its writer applies a batch's single-task units in
two ``executemany`` calls (``_sqlite_write``).
"""

from __future__ import annotations

import msgspec

from converge.core.capability import Requirement
from converge.core.codec_errors import ENCODE_ERRORS, encode_error
from converge.core.signing import check_finite, maybe_nonfinite
from converge.core.task import Task, TaskState

__all__ = ["TaskOp", "encode_task", "index_capability", "pool_key", "task_decoder"]

_encoder = msgspec.msgpack.Encoder()
task_decoder = msgspec.msgpack.Decoder(Task)
"""Decodes a stored task body."""


class TaskOp(msgspec.Struct, frozen=True):
    """One buffered task operation of a unit of work.

    ``kind`` is ``"put"`` (insert; the id must be free) or ``"update"`` (replace; the stored
    task must be in ``expected_state`` with ``expected_attempts``).
    """

    kind: str
    task: Task
    body: bytes
    expected_state: TaskState | None = None
    expected_attempts: int = 0


def encode_task(task: Task) -> bytes:
    """The stored bytes of ``task``; a value that cannot be stored is a ``ValidationError``,
    a NaN or an infinity in its inputs or result too (no store keeps one: JSON has none)."""
    try:
        data = _encoder.encode(task)
    except ENCODE_ERRORS as exc:
        raise encode_error(exc, f"task {task.id}", field="inputs") from exc
    if maybe_nonfinite(data):  # a cheap scan; the values are walked only on a hit
        check_finite(task.inputs, "inputs")
        check_finite(task.result, "result")
    return data


def pool_key(pool_id: str | None) -> str:
    """The pending index's pool key: the pool id, or ``""`` for a task any agent may see."""
    return pool_id or ""


def index_capability(task: Task) -> str:
    """The pending index's capability key: the smallest required capability name, or ``""``."""
    if not task.required_capabilities:
        return ""
    return min(_requirement_name(r) for r in task.required_capabilities)


def _requirement_name(text: str) -> str:
    return Requirement.parse(text).name
