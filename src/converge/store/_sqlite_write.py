"""The writer thread's side of ``SQLiteStore``: committing batches.

A batch is one SQLite transaction (``BEGIN IMMEDIATE … COMMIT``), so its units share one commit.
Each unit in it is atomic on its own (a unit of several operations runs inside its own
``SAVEPOINT``; a single statement is atomic by itself) and fails alone when its precondition
does not hold; the others commit. An unexpected SQLite error fails the whole batch (nothing of
it commits) with a ``StoreError``; "database is locked" past the busy timeout is ``retryable``.
The board's everyday unit — one task write with its event — is applied for the whole batch in
two ``executemany`` calls when that cannot change any outcome (see ``_apply_board_writes``).
A job of task writes (``Store.write_tasks``: payload ``("tasks", ops, rows)``, one event row
per op) is many such units in one job: applied the same way, each write holding or failing on
its own (``_apply_task_writes``). Events of the batch are inserted in one ``executemany``, their
sequence numbers assigned under the write lock.
Sequence numbers: ``max(seq)`` is read once per batch and SQLite assigns the rowids (max + 1 each),
which is checked after the insert rather than trusted. Binding each seq explicitly cost 0.5-1 µs
per event more.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from converge.errors import ConflictError, StoreError, TaskConflict, ValidationError
from converge.store._board import TaskOp, index_capability, pool_key
from converge.store._sqlite_worker import Job, JobResult
from converge.store.base import Op

__all__ = ["commit_now", "last_seq", "translate", "while_busy", "write_batch"]

_Row = tuple[str, str, bytes]  # trace_id, kind, body


def _is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc)
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def translate(exc: sqlite3.Error, what: str) -> StoreError:
    text = str(exc)
    busy = _is_busy(exc)
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in text:
        return StoreError(f"{what}: the file is not a SQLite database")
    return StoreError(f"{what}: {text}", retryable=busy)


def _version(conn: sqlite3.Connection, key: str) -> int:
    row = conn.execute("SELECT version FROM kv WHERE key = ?", (key,)).fetchone()
    return 0 if row is None else int(row[0])


def last_seq(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])


def write_batch(conn: sqlite3.Connection, jobs: list[Job], busy_timeout: float) -> list[JobResult]:
    """Run a batch of the writer thread's jobs; the commits wait up to ``busy_timeout`` seconds
    for another process's write lock."""
    outcomes: list[JobResult] = []
    commits: list[Job] = []
    for job in jobs:
        if job.payload[0] == "call":
            try:
                outcomes.append((job.future, None, job.payload[1](conn)))
            except Exception as exc:
                outcomes.append((job.future, exc, None))
        else:
            commits.append(job)
    if commits:
        try:
            while_busy(lambda: conn.execute("BEGIN IMMEDIATE"), busy_timeout)
        except sqlite3.Error as exc:
            error = translate(exc, "write failed; nothing in this batch was committed")
            outcomes.extend((job.future, error, None) for job in commits)
        else:
            outcomes.extend(_commit_batch(conn, commits))
    return outcomes


def commit_now(conn: sqlite3.Connection, job: Job) -> JobResult | None:
    """Commit ``job``'s unit if the write lock is free this instant; None (nothing done) if
    another connection holds it, so the caller can queue the job for the writer thread, which
    waits for the lock. The writer's connection has no busy handler: ``BEGIN`` fails at once."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        if _is_busy(exc):
            return None
        return (job.future, translate(exc, "write failed; nothing was committed"), None)
    try:
        return _commit_batch(conn, [job])[0]
    except BaseException:
        # Interrupted on the loop (KeyboardInterrupt, SystemExit from a signal handler): the
        # connection must not stay in the transaction, holding the write lock.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _commit_batch(conn: sqlite3.Connection, jobs: list[Job]) -> list[JobResult]:
    """Commit every job's unit of work in the transaction just begun (holding the write lock),
    each unit atomic on its own."""
    done: list[JobResult] = []
    failed: list[JobResult] = []
    try:
        next_seq = -1
        all_rows: list[_Row] = []
        applied = _apply_board_writes(conn, jobs)
        for job in jobs:
            kind, ops, rows = job.payload
            if kind == "tasks":
                try:
                    outcomes = _apply_task_writes(conn, ops)
                except sqlite3.Error:
                    raise  # the database itself is in trouble: the whole batch fails
                except Exception as exc:  # a value SQLite would not take
                    failed.append((job.future, exc, None))
                    continue
                written: list[int | TaskConflict] = []
                for outcome, row in zip(outcomes, rows, strict=True):
                    if outcome is not None:
                        written.append(outcome)
                        continue
                    if next_seq < 0:
                        next_seq = last_seq(conn)
                    next_seq += 1
                    written.append(next_seq)
                    all_rows.append(row)
                done.append((job.future, None, written))
                continue
            info = None
            if ops and job not in applied:
                try:
                    info = _apply_unit(conn, ops)
                except sqlite3.Error:
                    raise  # the database itself is in trouble: the whole batch fails
                except Exception as exc:  # ConflictError, or a value SQLite would not take
                    failed.append((job.future, exc, None))
                    continue
            seqs: list[int] = []
            if rows:
                if next_seq < 0:
                    # We hold the write lock, so nobody else can append until we commit.
                    next_seq = last_seq(conn)
                seqs = list(range(next_seq + 1, next_seq + 1 + len(rows)))
                next_seq += len(rows)
                all_rows.extend(rows)
            done.append((job.future, None, (seqs, info)))
        if all_rows:
            # SQLite gives each row max(rowid) + 1; holding the write lock, that is exactly the
            # run of seqs computed above. Checked below rather than trusted.
            conn.executemany("INSERT INTO events (trace_id, kind, body) VALUES (?, ?, ?)", all_rows)
            if last_seq(conn) != next_seq:
                raise sqlite3.IntegrityError("event sequence numbers were not contiguous")
        conn.execute("COMMIT")
    except Exception as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        error: Exception = exc
        if isinstance(exc, sqlite3.Error):
            error = translate(exc, "write failed; nothing in this batch was committed")
        return [(job.future, error, None) for job in jobs]
    return done + failed


def _apply_unit(conn: sqlite3.Connection, ops: list[Op | TaskOp]) -> Any:
    """Apply one unit's operations; on any error, none of them stays applied."""
    if len(ops) == 1:  # a single statement is atomic by itself
        return _apply_ops(conn, ops)
    conn.execute("SAVEPOINT unit")
    try:
        if _tasks_at_once(conn, ops):  # a unit of task writes only (a batch submitted)
            info = None
        else:
            conn.execute("ROLLBACK TO unit")  # whatever the attempt applied
            info = _apply_ops(conn, ops)  # raises the precondition that failed, if one did
    except BaseException:
        conn.execute("ROLLBACK TO unit")
        conn.execute("RELEASE unit")
        raise
    conn.execute("RELEASE unit")
    return info


def _apply_ops(conn: sqlite3.Connection, ops: list[Op | TaskOp]) -> Any:
    info: Any = None
    for op in ops:
        if isinstance(op, TaskOp):
            _apply_task_op(conn, op)
        elif op.kind == "put":
            (info,) = conn.execute(
                "INSERT INTO kv (key, value, version) VALUES (?, ?, 1) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = kv.version + 1 "
                "RETURNING version",
                (op.key, op.value),
            ).fetchone()
        elif op.kind == "delete":
            info = conn.execute("DELETE FROM kv WHERE key = ?", (op.key,)).rowcount > 0
        elif op.kind == "put_if_absent" or (op.kind == "cas" and op.expected == 0):
            cur = conn.execute(
                "INSERT INTO kv (key, value, version) VALUES (?, ?, 1) "
                "ON CONFLICT (key) DO NOTHING",
                (op.key, op.value),
            )
            if cur.rowcount == 0:
                raise ConflictError(op.key, 0, _version(conn, op.key))
            info = 1
        elif op.kind == "cas":
            cur = conn.execute(
                "UPDATE kv SET value = ?, version = version + 1 WHERE key = ? AND version = ?",
                (op.value, op.key, op.expected),
            )
            if cur.rowcount == 0:
                raise ConflictError(op.key, op.expected, _version(conn, op.key))
            info = op.expected + 1
        else:  # pragma: no cover - Op kinds are fixed by Transaction
            raise ValidationError(f"unknown operation {op.kind!r}")
    return info


def _apply_task_op(conn: sqlite3.Connection, op: TaskOp) -> None:
    if op.kind == "put":
        cur = conn.execute(_INSERT_TASK, _task_row(op))
        expected_state = None
    else:
        assert op.expected_state is not None
        cur = conn.execute(_UPDATE_TASK, _task_row(op))
        expected_state = op.expected_state.value
    if cur.rowcount == 0:
        task = op.task
        row = conn.execute("SELECT state, attempts FROM tasks WHERE id = ?", (task.id,)).fetchone()
        actual_state, actual_attempts = (None, 0) if row is None else (row[0], row[1])
        raise TaskConflict(
            task.id, expected_state, actual_state, op.expected_attempts, actual_attempts
        )


_INSERT_TASK = (
    "INSERT INTO tasks (state, attempts, pool_key, index_cap, priority, lease_expires_at, "
    "body, id) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)
_UPDATE_TASK = (
    "UPDATE tasks SET state = ?, attempts = ?, pool_key = ?, index_cap = ?, priority = ?, "
    "lease_expires_at = ?, body = ? WHERE id = ? AND state = ? AND attempts = ?"
)


def _task_row(op: TaskOp) -> tuple[Any, ...]:
    """The parameters of ``_INSERT_TASK`` (a put) or ``_UPDATE_TASK`` (an update) for ``op``."""
    task = op.task
    row = (
        str(task.state),  # a StrEnum: its value (``.value`` costs an enum lookup)
        task.attempts,
        pool_key(task.pool_id),
        index_capability(task),
        task.priority,
        task.lease_expires_at,
        op.body,
        task.id,
    )
    if op.kind == "put":
        return row
    assert op.expected_state is not None
    return (*row, str(op.expected_state), op.expected_attempts)


def _apply_task_writes(conn: sqlite3.Connection, ops: list[TaskOp]) -> list[TaskConflict | None]:
    """Apply independent task writes; per op, None if it held, else the ``TaskConflict``.

    At once when every op holds (the common case, ``_tasks_at_once``); else, rolled back to a
    savepoint, op by op in order, each a single statement that holds or fails alone.
    """
    conn.execute("SAVEPOINT tasks")
    held = _tasks_at_once(conn, ops)
    if not held:
        conn.execute("ROLLBACK TO tasks")
    conn.execute("RELEASE tasks")
    if held:
        return [None] * len(ops)
    outcomes: list[TaskConflict | None] = []
    for op in ops:
        try:
            _apply_task_op(conn, op)
        except TaskConflict as exc:
            outcomes.append(exc)
        else:
            outcomes.append(None)
    return outcomes


def _tasks_at_once(conn: sqlite3.Connection, ops: Sequence[Op | TaskOp]) -> bool:
    """Apply ``ops`` in two ``executemany`` calls if they are all task writes of distinct tasks;
    returns whether every one held (if not, the caller rolls back what was applied).

    Each statement changes at most one row (the id is the key), so all held iff the rows changed
    add up to the number of ops; writes to distinct tasks commute, so inserts may go first.
    """
    if len(ops) < 2 or not all(type(op) is TaskOp for op in ops):
        return False
    tasks = [op for op in ops if isinstance(op, TaskOp)]
    if len({op.task.id for op in tasks}) != len(tasks):
        return False
    puts = [_task_row(op) for op in tasks if op.kind == "put"]
    updates = [_task_row(op) for op in tasks if op.kind != "put"]
    try:
        changed = conn.executemany(_INSERT_TASK, puts).rowcount if puts else 0
        if updates:
            changed += conn.executemany(_UPDATE_TASK, updates).rowcount
    except Exception:  # a value SQLite would not take: op by op, it fails alone
        return False
    return changed == len(tasks)


def _apply_board_writes(conn: sqlite3.Connection, jobs: list[Job]) -> set[Job]:
    """Apply every unit that is a single task write in two ``executemany`` calls; returns the
    jobs applied (none if the batch does not allow it or a precondition failed).

    Each statement changes at most one row (the id is the key), so the units all held iff the
    rows changed add up to their number. Writes to distinct tasks commute, so inserts may run
    before updates; a batch that touches one task twice keeps the order of its units and goes
    unit by unit, as does a batch where any precondition failed (rolled back here first), so
    each unit still fails alone and with its own ``TaskConflict``.
    """
    single: list[Job] = []
    seen: set[str] = set()
    for job in jobs:
        kind, ops, _ = job.payload
        ids = [op.task.id for op in ops if isinstance(op, TaskOp)]
        if not seen.isdisjoint(ids) or len(set(ids)) != len(ids):
            return set()
        seen.update(ids)
        if kind == "commit" and len(ops) == 1 and ids:
            single.append(job)
    if len(single) < 2:
        return set()
    puts = [_task_row(job.payload[1][0]) for job in single if job.payload[1][0].kind == "put"]
    updates = [_task_row(job.payload[1][0]) for job in single if job.payload[1][0].kind != "put"]
    conn.execute("SAVEPOINT board")
    changed = -1
    try:
        changed = conn.executemany(_INSERT_TASK, puts).rowcount if puts else 0
        if updates:
            changed += conn.executemany(_UPDATE_TASK, updates).rowcount
    except Exception:  # a value SQLite would not take: unit by unit, it fails alone
        changed = -1
    if changed != len(single):
        conn.execute("ROLLBACK TO board")
        conn.execute("RELEASE board")
        return set()
    conn.execute("RELEASE board")
    return set(single)


def while_busy(fn: Callable[[], object], timeout: float) -> None:
    """Run ``fn``, retrying while the database is locked, for up to ``timeout`` seconds.

    The writer's connection has no busy handler (see ``commit_now``), so its thread waits for
    the write lock here; SQLite's busy handler does not cover ``PRAGMA journal_mode`` either (two
    processes opening a new file at once would otherwise fail instead of waiting for each other).
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            fn()
            return
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if ("locked" not in text and "busy" not in text) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)  # on the store's own thread, never the event loop
        delay = min(delay * 2, 0.05)
