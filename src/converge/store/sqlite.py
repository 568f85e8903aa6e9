"""``SQLiteStore``: the embedded default store, on a single SQLite file.

- **One writer thread** owns the write connection. Callers' units of work queue up while a batch
  commits and are committed together in the next one (group commit, ``_sqlite_write``); each
  caller's ``await`` returns once its batch is committed. A caller cancelled after submitting
  does not stop its write (it may already be committed); cancellation never leaves half a unit.
- **A lone small commit runs on the loop.** With ``synchronous=NORMAL`` a commit appends to
  the WAL without an fsync (~30 µs here), where handing it to an idle thread and back costs two
  thread wake-ups (~120 µs here). So while the thread is idle, a small unit (at most 16
  operations and events, 64 KiB) is held until the end of the current turn of the loop
  (``call_soon``): if no other unit was written in that turn, the loop commits it itself, on
  the writer's connection. That connection has no busy handler: the loop's ``BEGIN IMMEDIATE``
  fails at once if another process holds the lock, and the unit goes to the thread, which waits
  for the lock (``while_busy``, up to ``busy_timeout``, then a retryable ``StoreError``). A
  second unit in the same turn means concurrent callers: both go to the thread at once (they
  keep their group commit and the overlap of the loop's work with the thread's), and so does
  everything while it is busy, as do ``FULL`` commits (an fsync can take milliseconds) and
  large units. So does a commit while the checkpointer runs (it holds ``Checkpointer.lock``;
  the loop only tries it), and the first after a checkpoint that copied the whole WAL
  (``Checkpointer.completed`` moved past what the thread's last commit saw): that one restarts
  the WAL and syncs its header even under ``NORMAL``. So does one that finds the WAL over its
  bound (64 MiB): the thread checkpoints it first (``Checkpointer.restart``) and starts it
  over. A reader holding the WAL at that moment can put the restart off past the thread's
  commit onto a later one on the loop — the one fsync the loop may still meet. The loop's
  commit uses the writer's loop only (a store used from another loop fails at once), and an
  interrupt inside it (``KeyboardInterrupt``, ``SystemExit``) rolls it back before it
  propagates. Measured on one machine: a lone caller's append went from p50 ~270 µs to ~84 µs
  (``bench_store.py`` ``sqlite_lone_caller``, 2.5-3.2k to 11k events/s), a durable 3-node
  pipeline from ~660 to ~1,900-2,400 runs/s, the sequential board from ~0.9k to ~3k
  lifecycles/s; 100 concurrent callers unchanged or better (27-29k to 34k events/s), as their
  writes find the thread busy or come several to a turn.
- **One reader thread** serves reads on its own connection, so reads run beside writes and the
  event loop never waits on the disk.
- **WAL** lets other processes read while one writes; a second writing process waits up to
  ``busy_timeout`` (5 s by default) for the lock. Waiters notice another process's commits by
  asking the file again with a backoff from 5 ms to 250 ms; this process's commits wake them
  at once. ``synchronous=NORMAL`` (the default) loses nothing acknowledged when the process
  crashes; a power loss may lose the last transactions. ``FULL`` also survives a power loss, at
  the price of an fsync per commit.
- The schema is versioned (table ``schema_version``, ``_sqlite_schema``) and migrated forward
  on open; a file from a newer converge is refused before anything is written to it: its
  version is read before any pragma that could write (``journal_mode=WAL`` writes the header).
- **Checkpoints** run off the commit path, on a third thread, under a bound the writer keeps
  (``_sqlite_checkpoint``); the last one runs on ``aclose()``.
- **Read-only** (``open(path, read_only=True)``): only the reader thread, no writer and no
  checkpointer; its connection opens the file with SQLite's ``mode=ro`` URI (and
  ``query_only``), so SQLite itself refuses any write to the database file, its header
  included, and runs no pragma that writes (no ``journal_mode``, no migration). A file that is
  not a SQLite database, an empty one, or one without converge's ``schema_version`` table (or
  with an empty one) is ``NotAStore``, a newer one ``SchemaVersionError``, and nothing is
  written to it; an older one is read as it is. Writes raise ``StoreReadOnly``. Each read is
  its own statement, so it sees everything committed before it, also by another process
  writing meanwhile. SQLite's WAL readers share the ``-wal`` and ``-shm`` files: a read-only
  connection opens them when they exist (read-only ones too, since SQLite 3.22), rebuilds the
  ``-shm`` index after a writer's crash, and creates them empty when absent (as after a clean
  close) — the only files it may create. Where it cannot (a directory it may not write to),
  the open fails with a ``StoreError`` that says so, rather than falling back to
  ``immutable=1``, which would read wrong data were a writer to come along.
- ``create=False`` (writable) opens an existing converge store only: it refuses a file that is
  not one instead of adding converge's tables to it.
"""

from __future__ import annotations

import asyncio
import builtins
import heapq
import itertools
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

from converge.core.task import Task, TaskState
from converge.errors import (
    ConflictError,
    NotAStore,
    StoreClosed,
    StoreError,
    StoreReadOnly,
    TaskConflict,
    ValidationError,
)
from converge.protocol.event import Event
from converge.store import _sqlite_schema as schema
from converge.store._board import TaskOp, encode_task, pool_key, task_decoder
from converge.store._shared import EventWaiters, decode_event, encode_event, tail_events
from converge.store._sqlite_checkpoint import Checkpointer
from converge.store._sqlite_worker import BatchWorker, Job, JobResult, resolve
from converge.store._sqlite_write import commit_now, last_seq, translate, while_busy, write_batch
from converge.store.base import (
    Entry,
    Op,
    TaskWrite,
    Transaction,
    check_task_writes,
    task_op,
    validate_event,
    validate_events,
    validate_key,
    validate_value,
    write_error,
)

__all__ = ["SQLiteStore"]

T = TypeVar("T")
_MAX_WAL_BYTES = 64 * 1024 * 1024  # past this, the writer makes the WAL start over first
_INLINE_ITEMS = 16  # operations + events of a unit the loop may commit itself
_INLINE_BYTES = 64 * 1024  # and their encoded bytes
Synchronous = Literal["NORMAL", "FULL"]
_Row = tuple[str, str, bytes]  # trace_id, kind, body


class SQLiteStore:
    """A ``Store`` in one SQLite file. Open it with ``await SQLiteStore.open(path)``."""

    SCHEMA_VERSION = schema.SCHEMA_VERSION
    """The newest schema version this converge knows."""

    def __init__(
        self,
        path: Path,
        synchronous: Synchronous,
        busy_timeout: float,
        create: bool = True,
        read_only: bool = False,
    ) -> None:
        self.path = path
        self._create = create and not read_only
        self.read_only = read_only
        """Whether the store was opened read-only (writes raise ``StoreReadOnly``)."""
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self._writer: BatchWorker | None = None
        self._checkpointer: Checkpointer | None = None
        self._reader: BatchWorker | None = None
        self._waiters = EventWaiters()
        self._held: Job | None = None  # a unit written in this turn of the loop, not yet sent
        self._restarted = -1  # whole-WAL checkpoints done before the thread's last commit began
        self._closed = False
        self._closing: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "NORMAL",
        busy_timeout: float = 5.0,
        create: bool | None = None,
        read_only: bool = False,
    ) -> SQLiteStore:
        """Open the store at ``path``: create it if need be and migrate it forward, or with
        ``create=False`` open an existing store only, or with ``read_only`` read one.

        Args:
            path: the SQLite file.
            synchronous: ``NORMAL`` (survives a crash of the process) or ``FULL`` (also a
                power loss).
            busy_timeout: seconds to wait for a lock another process holds.
            create: create the file and converge's tables when they are missing (default:
                true unless ``read_only``). Without it, the file must be a converge store.
            read_only: read an existing converge store without ever writing to it: no
                migration, no pragma that writes; writes raise ``StoreReadOnly``. A store from
                an older converge is read as it is.

        Raises:
            ValidationError: a bad ``synchronous`` or ``busy_timeout``, or ``create`` with
                ``read_only``.
            SchemaVersionError: the file was written by a newer converge (it is left untouched).
            NotAStore: (without ``create``) the file is not a SQLite database, or has no
                converge schema; it is left untouched.
            StoreError: the file cannot be opened or (without ``create``) does not exist.
        """
        if synchronous not in ("NORMAL", "FULL"):
            raise ValidationError(
                f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}", field="synchronous"
            )
        if not isinstance(busy_timeout, (int, float)) or busy_timeout < 0:
            raise ValidationError(
                f"busy_timeout must be a number of seconds >= 0, not {busy_timeout!r}",
                field="busy_timeout",
            )
        if create and read_only:
            raise ValidationError("a store opened read_only cannot be created", field="create")
        store = cls(
            Path(path), synchronous, float(busy_timeout), create is not False, read_only=read_only
        )
        loop = asyncio.get_running_loop()
        if read_only:
            store._reader = BatchWorker(
                f"converge-sqlite-reader:{store.path.name}",
                store._connect_read_only,
                _read_batch,
                loop,
            )
            try:
                await store._reader.submit(_noop)
            except BaseException:
                await store.aclose()
                raise
            return store
        store._writer = BatchWorker(
            f"converge-sqlite-writer:{store.path.name}",
            store._connect_writer,
            store._write_batch,
            loop,
        )
        try:
            await store._writer.submit(("call", _noop))
            store._checkpointer = Checkpointer(
                f"converge-sqlite-checkpoint:{store.path.name}",
                store._connect,
                f"{store.path}-wal",
                max_wal_bytes=_MAX_WAL_BYTES,
            )
            store._reader = BatchWorker(
                f"converge-sqlite-reader:{store.path.name}",
                store._connect_reader,
                _read_batch,
                loop,
            )
            await store._reader.submit(_noop)
        except BaseException:
            await store.aclose()
            raise
        return store

    # -- connections (run on the worker threads) ------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if not self._create and not self.path.exists():
            raise StoreError(f"no converge store at {self.path}")
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=self.busy_timeout
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        return conn

    def _connect_read_only(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise StoreError(f"no converge store at {self.path}")
        # mode=ro: SQLite itself refuses every write on this connection, to the database file
        # and to its header (a journal_mode change), whatever this code does.
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        try:
            conn = sqlite3.connect(
                uri,
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.busy_timeout,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path} read-only: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA query_only = ON")
            schema.check_store(conn, str(self.path))
        except sqlite3.Error as exc:
            conn.close()
            raise self._open_error(exc, "cannot open read-only") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_error(self, exc: sqlite3.Error, what: str) -> StoreError:
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
            return NotAStore(str(self.path), "not a SQLite database")
        if getattr(exc, "sqlite_errorname", None) == "SQLITE_READONLY_DIRECTORY":
            # SQLite's readers of a WAL database share its -wal and -shm files: they can read
            # them when another process created them, but not create them where they cannot
            # write.
            return StoreError(
                f"{what} {self.path}: its -wal and -shm files are absent and this process "
                "cannot create them in a directory it cannot write to (they exist while a "
                "writer has the store open)"
            )
        return translate(exc, f"{what} {self.path}")

    def _connect_writer(self) -> sqlite3.Connection:
        conn = self._connect()
        try:
            location = str(self.path)
            # before the first write of any kind
            (schema.check_version if self._create else schema.check_store)(conn, location)
            while_busy(lambda: conn.execute("PRAGMA journal_mode = WAL"), self.busy_timeout)
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            # The checkpointer thread copies the WAL into the database, off the commit path.
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            # After a RESTART, the WAL file is cut back to this when reused (at most the bound:
            # ``Checkpointer.over_bound`` measures the WAL by its file).
            conn.execute(f"PRAGMA journal_size_limit = {_MAX_WAL_BYTES // 4}")
            schema.migrate(conn, location)
            # No busy handler on the writer: a commit on the loop must never wait for another
            # process's lock, and the thread waits for it itself (``write_batch``).
            conn.execute("PRAGMA busy_timeout = 0")
        except sqlite3.Error as exc:
            conn.close()
            raise self._open_error(exc, "cannot open") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _write_batch(
        self, conn: sqlite3.Connection, jobs: builtins.list[Job]
    ) -> builtins.list[JobResult]:
        checkpointer = self._checkpointer
        commits = any(job.payload[0] != "call" for job in jobs)
        if checkpointer is not None and commits and checkpointer.over_bound():
            checkpointer.restart(conn)  # however far behind the checkpointer thread is
        completed = -1 if checkpointer is None else checkpointer.completed
        outcomes = write_batch(conn, jobs, self.busy_timeout)
        if checkpointer is not None:
            if commits:
                self._restarted = completed  # a WAL restart due before this batch: done here
            checkpointer.poke()
        return outcomes

    def _connect_reader(self) -> sqlite3.Connection:
        conn = self._connect()
        conn.execute("PRAGMA query_only = ON")
        return conn

    # -- key-value -------------------------------------------------------------------------------

    async def get(self, key: str) -> Entry | None:
        validate_key(key)
        row = await self._read(_get, key)
        return None if row is None else Entry(key, row[0], row[1])

    async def put(self, key: str, value: bytes) -> int:
        _, version = await self._submit([Op("put", validate_key(key), validate_value(value))], [])
        return int(version)

    async def delete(self, key: str) -> bool:
        _, existed = await self._submit([Op("delete", validate_key(key))], [])
        return bool(existed)

    async def list(self, prefix: str = "", *, limit: int | None = None) -> builtins.list[Entry]:
        if not isinstance(prefix, str):
            raise ValidationError(f"prefix must be a str, not {prefix!r}", field="prefix")
        rows = await self._read(_list, prefix, limit)
        return [Entry(k, v, ver) for k, v, ver in rows]

    async def put_if_absent(self, key: str, value: bytes) -> bool:
        return await self._try(Op("put_if_absent", validate_key(key), validate_value(value)))

    async def compare_and_set(self, key: str, expected_version: int, value: bytes) -> bool:
        tx = self.transaction()
        tx.compare_and_set(key, expected_version, value)
        return await self._try(tx.ops[0])

    async def _try(self, op: Op | TaskOp) -> bool:
        try:
            await self._submit([op], [])
        except ConflictError:
            return False
        return True

    # -- event log -------------------------------------------------------------------------------

    async def append(self, events: Sequence[Event]) -> builtins.list[int]:
        return await self._commit([], validate_events(events))

    async def read(
        self,
        *,
        after_seq: int = 0,
        trace_id: str | None = None,
        kinds: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> builtins.list[Event]:
        if isinstance(kinds, str):
            kinds = [kinds]
        return await self._read(_read_events, after_seq, trace_id, kinds, limit)

    async def last_seq(self) -> int:
        return await self._read(last_seq)

    async def wait_for_events(self, after_seq: int, timeout: float | None = None) -> int:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        last = await self.last_seq()
        # In-process commits wake us at once; another process's commits are noticed by asking
        # the file again, with a backoff that grows to a quarter of a second.
        backoff = 0.005
        while last <= after_seq:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                break
            slice_s = backoff if remaining is None else min(backoff, remaining)
            await self._waiters.wait(slice_s)
            last = max(self._waiters.last, await self.last_seq())
            backoff = min(backoff * 2, 0.25)
        return last

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
        return await self._read(_get_task, task_id)

    async def pending_tasks(
        self,
        *,
        pools: Collection[str | None] | None = None,
        capabilities: Collection[str | None] | None = None,
        limit: int = 100,
        after: tuple[int, str] | None = None,
    ) -> builtins.list[Task]:
        pool_keys = None if pools is None else sorted({pool_key(p) for p in pools})
        cap_keys = None if capabilities is None else sorted({c or "" for c in capabilities})
        return await self._read(_pending_tasks, pool_keys, cap_keys, max(limit, 0), after)

    async def expiring_tasks(self, before: float, *, limit: int = 1000) -> builtins.list[Task]:
        return await self._read(_expiring_tasks, before, max(limit, 0))

    async def write_task(
        self,
        task: Task,
        event: Event,
        *,
        expected_state: TaskState | None = None,
        expected_attempts: int = 0,
    ) -> Task:
        op = task_op(task, expected_state, expected_attempts)
        body = encode_event(validate_event(event))
        row = (event.trace_id, event.kind, body)
        seqs, _ = await self._write([op], [row])
        self._waiters.publish(seqs[0])
        return op.task  # stored as bytes: the caller's later changes do not reach it

    async def write_tasks(
        self, writes: Sequence[TaskWrite], *, atomic: bool = False
    ) -> builtins.list[Task | TaskConflict]:
        checked = check_task_writes(writes)
        # Encode here, in the caller: a value that cannot be stored fails the whole call, before
        # anything is sent to the writer.
        ops: builtins.list[Op | TaskOp] = []
        rows: builtins.list[_Row] = []
        for i, write in enumerate(checked):
            task, event = write.task, write.event
            try:
                body = encode_task(task)
            except ValidationError as exc:
                raise write_error(exc, i, "task") from None
            rows.append((event.trace_id, event.kind, encode_event(event, i, "writes[{}].event")))
            if write.expected_state is None:
                ops.append(TaskOp("put", task, body))
            else:
                ops.append(
                    TaskOp("update", task, body, write.expected_state, write.expected_attempts)
                )
        if not ops:
            return []
        if atomic:  # one unit of work: all hold, or its TaskConflict and nothing written
            seqs, _ = await self._write(ops, rows)
            self._waiters.publish(seqs[-1])
            return [write.task for write in checked]
        # One job: the writer applies the writes in one transaction, each holding or failing
        # on its own (``_sqlite_write._apply_task_writes``).
        outcomes: builtins.list[int | TaskConflict] = await self._write(ops, rows, "tasks")
        seqs = [outcome for outcome in outcomes if type(outcome) is int]
        if seqs:
            self._waiters.publish(seqs[-1])
        return [
            outcome if type(outcome) is TaskConflict else write.task  # stored as bytes
            for outcome, write in zip(outcomes, checked, strict=True)
        ]

    # -- units of work ---------------------------------------------------------------------------

    def transaction(self) -> Transaction:
        return Transaction(self._commit)

    async def _commit(
        self, ops: builtins.list[Op | TaskOp], events: Sequence[Event]
    ) -> builtins.list[int]:
        seqs, _ = await self._submit(ops, events)
        return seqs

    async def _submit(
        self, ops: builtins.list[Op | TaskOp], events: Sequence[Event]
    ) -> tuple[builtins.list[int], Any]:
        # Encode here, in the caller: a value that cannot be stored fails its own caller only.
        rows: builtins.list[_Row] = [
            (ev.trace_id, ev.kind, encode_event(ev, i)) for i, ev in enumerate(events)
        ]
        seqs, info = await self._write(ops, rows)
        if seqs:
            self._waiters.publish(seqs[-1])
        return seqs, info

    def _write(
        self,
        ops: builtins.list[Op | TaskOp],
        rows: builtins.list[_Row],
        kind: Literal["commit", "tasks"] = "commit",
    ) -> asyncio.Future[Any]:
        """Commit one unit (``"commit"``) or a job of task writes (``"tasks"``), on the loop or
        the writer thread (see the module doc); the caller awaits the returned future."""
        if self.read_only and not self._closed:
            raise StoreReadOnly(f"the store at {self.path} is open read-only; nothing was written")
        writer = self._check_open(self._writer)
        payload = (kind, ops, rows)
        if self._held is not None:
            # A second unit in this turn: concurrent callers. The thread takes both, at once,
            # and every unit after them while it is busy.
            writer.submit_jobs([self._held])
            self._held = None
        elif (
            self.synchronous == "NORMAL"
            and not writer.busy
            and _small(ops, rows)
            and asyncio.get_running_loop() is writer.loop
        ):
            # Held for the rest of this turn of the loop: if it stays alone, the loop commits it.
            self._held = Job(writer.loop.create_future(), payload)
            writer.loop.call_soon(self._release_held)
            return self._held.future
        return writer.submit(payload)

    def _release_held(self) -> None:
        job, self._held = self._held, None
        if job is None or self._writer is None:
            return
        conn = self._writer.idle_connection()
        checkpointer = self._checkpointer
        # Not while a checkpoint runs, nor as the first commit after one that copied the whole
        # WAL: that commit restarts the WAL and syncs its header. Nor on a WAL over the bound:
        # the thread restarts it first. The thread makes those.
        if (
            conn is not None
            and checkpointer is not None
            and checkpointer.lock.acquire(blocking=False)
        ):
            try:
                if checkpointer.completed != self._restarted or checkpointer.over_bound():
                    outcome = None
                else:
                    outcome = commit_now(conn, job)
            except Exception as exc:  # a bug fails its unit, never leaves its caller waiting
                outcome = (job.future, exc, None)
            except BaseException:  # interrupted (rolled back unless it had committed)
                if not job.future.done():
                    job.future.set_exception(
                        StoreError("interrupted while committing; it may not have been committed")
                    )
                raise
            finally:
                checkpointer.lock.release()
            if outcome is not None:
                checkpointer.poke()
                resolve([outcome])
                return
            # Or another process holds the write lock: the thread waits for it.
        self._writer.submit_jobs([job])

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        reader = self._check_open(self._reader)
        result: T = await reader.submit(lambda conn: fn(conn, *args))
        return result

    # -- lifetime --------------------------------------------------------------------------------

    def _check_open(self, worker: BatchWorker | None) -> BatchWorker:
        if self._closed or worker is None:
            raise StoreClosed(f"the store at {self.path} is closed")
        return worker

    async def aclose(self) -> None:
        """Commit everything already submitted, then close both connections. Idempotent."""
        if self._closing is None:
            self._closed = True
            self._closing = asyncio.ensure_future(self._shutdown())
        await asyncio.shield(self._closing)

    async def _shutdown(self) -> None:
        self._release_held()  # written before the close: committed before the thread stops
        try:
            for worker in (self._writer, self._reader):
                if worker is not None:
                    await worker.stop()
            if self._checkpointer is not None:
                await asyncio.to_thread(self._checkpointer.stop)
        finally:
            self._waiters.publish(self._waiters.last)

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
        state = "closed" if self._closed else "open"
        if self.read_only:
            return f"SQLiteStore({str(self.path)!r}, read-only, {state})"
        return f"SQLiteStore({str(self.path)!r}, synchronous={self.synchronous}, {state})"


# -- what the threads run ------------------------------------------------------------------------


def _small(ops: list[Op | TaskOp], rows: list[_Row]) -> bool:
    if len(ops) + len(rows) > _INLINE_ITEMS:
        return False
    size = sum(len(row[2]) for row in rows)
    for op in ops:
        if isinstance(op, TaskOp):
            size += len(op.body)
        else:
            size += len(op.key) + (0 if op.value is None else len(op.value))
    return size <= _INLINE_BYTES


def _noop(conn: sqlite3.Connection) -> None:
    return None


def _read_batch(conn: sqlite3.Connection, jobs: list[Job]) -> list[JobResult]:
    outcomes: list[JobResult] = []
    for job in jobs:
        try:
            outcomes.append((job.future, None, job.payload(conn)))
        except sqlite3.Error as exc:
            outcomes.append((job.future, translate(exc, "read failed"), None))
        except Exception as exc:
            outcomes.append((job.future, exc, None))
    return outcomes


def _get_task(conn: sqlite3.Connection, task_id: str) -> Task | None:
    row = conn.execute("SELECT body FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return None if row is None else task_decoder.decode(row[0])


_PENDING_ORDER = " ORDER BY priority DESC, id LIMIT ?"
_AFTER = " AND (priority < ? OR (priority = ? AND id > ?))"


def _pending_tasks(
    conn: sqlite3.Connection,
    pool_keys: list[str] | None,
    cap_keys: list[str] | None,
    limit: int,
    after: tuple[int, str] | None,
) -> list[Task]:
    after_params: list[Any] = [] if after is None else [after[0], after[0], after[1]]
    after_sql = "" if after is None else _AFTER
    if pool_keys is not None and cap_keys is not None:
        # One ordered range of the index per (pool, capability) key, merged here: bounded by
        # keys x limit rows, where a single query would sort every matching task.
        ranges = [
            conn.execute(
                "SELECT priority, id, body FROM tasks WHERE state = 'pending' AND pool_key = ? "
                "AND index_cap = ?" + after_sql + _PENDING_ORDER,
                (p, c, *after_params, limit),
            ).fetchall()
            for p in pool_keys
            for c in cap_keys
        ]
        merged = heapq.merge(*ranges, key=lambda row: (-row[0], row[1]))
        return [task_decoder.decode(body) for _, _, body in itertools.islice(merged, limit)]
    sql = "SELECT body FROM tasks WHERE state = 'pending'"
    params: list[Any] = []
    for column, keys in (("pool_key", pool_keys), ("index_cap", cap_keys)):
        if keys is not None:
            sql += f" AND {column} IN ({', '.join('?' * len(keys))})"
            params.extend(keys)
    rows = conn.execute(sql + after_sql + _PENDING_ORDER, (*params, *after_params, limit))
    return [task_decoder.decode(body) for (body,) in rows]


def _expiring_tasks(conn: sqlite3.Connection, before: float, limit: int) -> list[Task]:
    rows = conn.execute(
        "SELECT body FROM tasks WHERE state IN ('claimed', 'running') AND lease_expires_at <= ? "
        "ORDER BY lease_expires_at, id LIMIT ?",
        (before, limit),
    )
    return [task_decoder.decode(body) for (body,) in rows]


def _get(conn: sqlite3.Connection, key: str) -> tuple[bytes, int] | None:
    row = conn.execute("SELECT value, version FROM kv WHERE key = ?", (key,)).fetchone()
    return None if row is None else (row[0], row[1])


def _list(conn: sqlite3.Connection, prefix: str, limit: int | None) -> list[tuple[str, bytes, int]]:
    sql = "SELECT key, value, version FROM kv WHERE key >= ?"
    params: list[Any] = [prefix]
    upper = _prefix_upper_bound(prefix)
    if upper is not None:
        sql += " AND key < ?"
        params.append(upper)
    sql += " ORDER BY key"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(max(limit, 0))
    return conn.execute(sql, params).fetchall()


def _prefix_upper_bound(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix`` (None: no bound)."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:  # surrogates cannot be encoded; skip past them
                nxt = 0xE000
            return "".join(chars) + chr(nxt)
    return None


def _read_events(
    conn: sqlite3.Connection,
    after_seq: int,
    trace_id: str | None,
    kinds: Sequence[str] | None,
    limit: int | None,
) -> list[Event]:
    sql = "SELECT seq, body FROM events WHERE seq > ?"
    params: list[Any] = [after_seq]
    if trace_id is not None:
        sql += " AND trace_id = ?"
        params.append(trace_id)
    if kinds is not None:
        kinds = list(kinds)
        if not kinds:
            return []
        sql += f" AND kind IN ({', '.join('?' * len(kinds))})"
        params.extend(kinds)
    sql += " ORDER BY seq"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(max(limit, 0))
    return [decode_event(body, seq) for seq, body in conn.execute(sql, params)]
