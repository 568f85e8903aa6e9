"""What ``SQLiteStore`` promises beyond the conformance suite: durability across reopen and
SIGKILL, schema versioning, WAL, settings, and several stores (processes) on one file."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from converge.core.task import Task
from converge.errors import (
    NotAStore,
    SchemaVersionError,
    StoreError,
    StoreReadOnly,
    ValidationError,
)
from converge.protocol.event import Event
from converge.store import Entry, SQLiteStore
from tests.store._crash_child import KIND, payload, payload_bytes
from tests.store.conformance import make_event, with_seq

WAIT = 10.0
CHILD = Path(__file__).with_name("_crash_child.py")


@asynccontextmanager
async def open_many(
    path: Path, count: int, *, concurrently: bool = False, **kwargs: Any
) -> AsyncIterator[list[SQLiteStore]]:
    """``count`` stores on one file, as separate processes would hold them.

    With ``concurrently`` all are opened at the same moment (racing to create and migrate the
    file); otherwise one after the other.
    """
    async with AsyncExitStack() as stack:
        if concurrently:
            results = await asyncio.gather(
                *(SQLiteStore.open(path, **kwargs) for _ in range(count)), return_exceptions=True
            )
        else:
            results = [await SQLiteStore.open(path, **kwargs) for _ in range(count)]
        stores = [r for r in results if isinstance(r, SQLiteStore)]
        for s in stores:
            stack.push_async_callback(s.aclose)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        yield stores


def _sqlite_rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# -- persistence ----------------------------------------------------------------------------------


async def test_reopened_file_has_the_same_kv_and_events(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    events = [make_event("task.created", n=1, nested={"x": [1.5, None, b"\x00"]})]
    events.append(make_event("task.claimed", "trace-2", n=2))
    async with await SQLiteStore.open(path) as store:
        await store.put("k", b"one")
        await store.put("k", b"two")
        await store.put("gone", b"x")
        await store.delete("gone")
        seqs = await store.append(events)
    async with await SQLiteStore.open(path) as store:
        assert await store.list() == [Entry("k", b"two", 2)]
        assert await store.read() == [with_seq(e, s) for e, s in zip(events, seqs, strict=True)]
        assert await store.last_seq() == seqs[-1]
        assert await store.put("k", b"three") == 3
        (next_seq,) = await store.append([make_event(n=3)])
        assert next_seq > seqs[-1]


async def test_file_is_in_wal_mode_with_a_schema_version_table(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with await SQLiteStore.open(path):
        pass
    assert _sqlite_rows(path, "PRAGMA journal_mode") == [("wal",)]
    columns = _sqlite_rows(path, "PRAGMA table_info(schema_version)")
    # (name, declared type, not null, primary key)
    assert [(c[1], c[2].upper(), c[3], c[5]) for c in columns] == [
        ("version", "INTEGER", 0, 1),
        ("applied_at", "REAL", 1, 0),
        ("description", "TEXT", 1, 0),
    ]
    rows = _sqlite_rows(path, "SELECT version, applied_at, description FROM schema_version")
    assert [r[0] for r in rows] == list(range(1, SQLiteStore.SCHEMA_VERSION + 1))
    assert all(abs(r[1] - time.time()) < 3600 and r[2].strip() for r in rows)
    async with await SQLiteStore.open(path):
        pass
    assert _sqlite_rows(path, "SELECT version, applied_at, description FROM schema_version") == rows


async def test_concurrent_first_opens_wait_for_each_other_and_migrate_once(
    tmp_path: Path,
) -> None:
    # Processes started together on a new file race to create it, switch it to WAL and migrate
    # it; each must wait for the others (busy_timeout), not fail. The race is lost only now and
    # then, hence the rounds.
    for round_no in range(40):
        path = tmp_path / f"s{round_no}.db"
        async with open_many(path, 2, concurrently=True) as stores:
            await asyncio.gather(*(s.put(f"k{i}", b"v") for i, s in enumerate(stores)))
            assert len(await stores[0].list()) == len(stores)
        versions = _sqlite_rows(path, "SELECT version FROM schema_version ORDER BY version")
        assert versions == [(v,) for v in range(1, SQLiteStore.SCHEMA_VERSION + 1)]


# -- schema versions ------------------------------------------------------------------------------


def _make_future_db(path: Path, version: int) -> None:
    """A database as a newer converge might leave it, in rollback-journal mode."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL, "
            "description TEXT NOT NULL)"
        )
        conn.execute(
            "INSERT INTO schema_version VALUES (?, ?, ?)", (version, time.time(), "the future")
        )
        conn.execute("CREATE TABLE future_things (x BLOB)")
    conn.close()


def _bump_version(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "INSERT INTO schema_version VALUES (?, ?, ?)", (version, time.time(), "the future")
        )
    conn.close()


@pytest.mark.parametrize("origin", ["hand-made", "written-by-converge"])
async def test_newer_schema_is_refused_and_the_file_left_untouched(
    tmp_path: Path, origin: str
) -> None:
    path = tmp_path / "s.db"
    newer = SQLiteStore.SCHEMA_VERSION + 1
    if origin == "hand-made":
        _make_future_db(path, newer)
    else:
        async with await SQLiteStore.open(path) as store:
            await store.put("k", b"v")
            await store.append([make_event()])
        _bump_version(path, newer)
    before = _files(tmp_path)

    with pytest.raises(SchemaVersionError) as caught:
        await SQLiteStore.open(path)

    assert isinstance(caught.value, StoreError)
    assert (caught.value.found, caught.value.supported) == (newer, SQLiteStore.SCHEMA_VERSION)
    after = _files(tmp_path)
    assert after[path.name] == before[path.name]
    # In WAL mode a write would sit in the -wal file before reaching the database file.
    assert after.get(f"{path.name}-wal", b"") == before.get(f"{path.name}-wal", b"")
    assert _sqlite_rows(path, "SELECT max(version) FROM schema_version") == [(newer,)]


# -- read-only ------------------------------------------------------------------------------------


async def transaction(store: SQLiteStore) -> None:
    async with store.transaction() as tx:
        tx.put("n", b"w")
        tx.append(make_event())


async def test_read_only_reads_a_store_and_refuses_every_write(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with await SQLiteStore.open(path) as store:  # closed cleanly: no -wal, no -shm
        await store.put("k", b"v")
        seqs = await store.append([make_event(n=1)])
    assert list(_files(tmp_path)) == ["s.db"]
    database = path.read_bytes()
    async with await SQLiteStore.open(path, read_only=True) as store:
        assert store.read_only and "read-only" in repr(store)
        assert await store.get("k") == Entry("k", b"v", 1)
        assert [e.seq for e in await store.read()] == seqs
        assert await store.pending_tasks() == []
        writes = [
            lambda: store.put("k", b"w"),
            lambda: store.put_if_absent("n", b"w"),
            lambda: store.compare_and_set("k", 1, b"w"),
            lambda: store.delete("k"),
            lambda: store.append([make_event(n=2)]),
            lambda: store.write_task(Task(objective="x"), make_event()),
            lambda: transaction(store),
        ]
        for write in writes:
            with pytest.raises(StoreReadOnly, match="read-only; nothing was written"):
                await write()
        assert await store.get("k") == Entry("k", b"v", 1)
    assert path.read_bytes() == database
    # SQLite's WAL readers share these two files (created empty when absent): never data.
    assert (tmp_path / "s.db-wal").read_bytes() == b""
    assert _sqlite_rows(path, "PRAGMA journal_mode") == [("wal",)]
    with pytest.raises(ValidationError, match="cannot be created"):
        await SQLiteStore.open(path, read_only=True, create=True)


async def test_files_that_are_not_stores_are_refused_untouched(tmp_path: Path) -> None:
    other = tmp_path / "app.db"  # someone's own SQLite database, in rollback-journal mode
    conn = sqlite3.connect(other)
    with conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.execute("INSERT INTO users VALUES ('ada')")
    conn.close()
    (tmp_path / "notes.db").write_text("not the bytes of a database\n" * 100)
    (tmp_path / "empty.db").write_bytes(b"")
    before = _files(tmp_path)
    for name, reason in (
        ("app.db", "a SQLite database of other tables"),
        ("notes.db", "not a SQLite database"),
        ("empty.db", "an empty SQLite database"),
    ):
        for kwargs in ({"read_only": True}, {"create": False}):
            with pytest.raises(NotAStore) as caught:
                await SQLiteStore.open(tmp_path / name, **kwargs)
            assert caught.value.location == str(tmp_path / name)
            assert reason in str(caught.value), kwargs
    assert _files(tmp_path) == before  # no table added, no -wal or -journal left
    with pytest.raises(StoreError, match="no converge store"):
        await SQLiteStore.open(tmp_path / "absent.db", read_only=True)
    assert not (tmp_path / "absent.db").exists()
    _make_future_db(tmp_path / "future.db", SQLiteStore.SCHEMA_VERSION + 1)
    with pytest.raises(SchemaVersionError):
        await SQLiteStore.open(tmp_path / "future.db", read_only=True)


_WRITER = """\
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA wal_autocheckpoint = 0")  # what it commits stays in the -wal file
for line in sys.stdin:
    conn.execute("INSERT INTO kv (key, value, version) VALUES (?, x'01', 1)", (line.strip(),))
    print(line.strip(), flush=True)
conn.close()
"""


async def test_a_read_only_store_sees_what_another_process_commits(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with await SQLiteStore.open(path) as store:
        await store.put("first", b"v")
    async with AsyncExitStack() as stack:
        early = await SQLiteStore.open(path, read_only=True)  # before any -wal file exists
        stack.push_async_callback(early.aclose)
        writer = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WRITER,
            str(path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert writer.stdin is not None and writer.stdout is not None
        try:

            async def commit(key: str) -> None:
                assert writer.stdin is not None and writer.stdout is not None
                writer.stdin.write(f"{key}\n".encode())
                await writer.stdin.drain()
                async with asyncio.timeout(WAIT):
                    assert (await writer.stdout.readline()).decode().strip() == key

            await commit("a")
            # opened while a commit sits in the -wal file only
            late = await SQLiteStore.open(path, read_only=True)
            stack.push_async_callback(late.aclose)
            await commit("b")
            for reader in (early, late):
                keys = [e.key for e in await reader.list()]
                assert keys == ["a", "b", "first"]
        finally:
            writer.stdin.close()
            async with asyncio.timeout(WAIT):
                assert await writer.wait() == 0
        assert [e.key for e in await early.list()] == ["a", "b", "first"]


_CRASHING_WRITER = """\
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA wal_autocheckpoint = 0")
conn.execute("INSERT INTO kv (key, value, version) VALUES ('crashed', x'01', 1)")
os._exit(0)  # no close: the commit is in the -wal file only, the -shm index as it was
"""


async def test_a_read_only_store_reads_the_wal_a_crashed_writer_left(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with await SQLiteStore.open(path) as store:
        await store.put("first", b"v")
    writer = await asyncio.create_subprocess_exec(sys.executable, "-c", _CRASHING_WRITER, str(path))
    async with asyncio.timeout(WAIT):
        assert await writer.wait() == 0
    database = path.read_bytes()
    async with await SQLiteStore.open(path, read_only=True) as store:
        assert [e.key for e in await store.list()] == ["crashed", "first"]
    assert path.read_bytes() == database  # the -wal was read, not checkpointed into the file


# -- settings -------------------------------------------------------------------------------------


async def test_synchronous_full_stores_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with await SQLiteStore.open(path, synchronous="FULL", busy_timeout=1.0) as store:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(store.append([make_event(n=i)])) for i in range(20)]
        assert await store.put("k", b"v") == 1
    async with await SQLiteStore.open(path) as store:
        assert await store.get("k") == Entry("k", b"v", 1)
        events = await store.read()
        assert {e.seq: e.data["n"] for e in events} == {
            t.result()[0]: i for i, t in enumerate(tasks)
        }


@pytest.mark.parametrize("synchronous", ["OFF", "EXTRA", "", "FULL; DROP TABLE kv", None, 2])
async def test_bad_synchronous_is_a_validation_error(tmp_path: Path, synchronous: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        await SQLiteStore.open(tmp_path / "s.db", synchronous=synchronous)
    assert caught.value.field == "synchronous"


# -- several stores on one file -------------------------------------------------------------------


async def test_two_stores_on_one_file_lose_no_writes(tmp_path: Path) -> None:
    writers_per_store = 80
    increments_per_store = 15

    async with open_many(tmp_path / "s.db", 2, busy_timeout=WAIT) as (a, b):
        await a.put("counter", b"0")

        async def write(store: SQLiteStore, name: str, i: int) -> list[int]:
            if i % 4 == 0:
                return await store.append(
                    [make_event(who=name, i=i, part=0), make_event(who=name, i=i, part=1)]
                )
            return await store.append([make_event(who=name, i=i, part=0)])

        async def increment(store: SQLiteStore) -> None:
            for _ in range(500):
                entry = await store.get("counter")
                assert entry is not None
                if await store.compare_and_set(
                    "counter", entry.version, str(int(entry.value) + 1).encode()
                ):
                    return
            pytest.fail("compare_and_set never succeeded")

        async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
            appends = {
                (name, i): tg.create_task(write(store, name, i))
                for i in range(writers_per_store)
                for name, store in (("a", a), ("b", b))
            }
            for _ in range(increments_per_store):
                tg.create_task(increment(a))
                tg.create_task(increment(b))

        acknowledged = [seq for t in appends.values() for seq in t.result()]
        assert len(acknowledged) == len(set(acknowledged))
        events_a = await a.read()
        assert await b.read() == events_a
        assert [e.seq for e in events_a] == sorted(acknowledged)
        by_seq = {e.seq: (e.data["who"], e.data["i"], e.data["part"]) for e in events_a}
        for (name, i), task in appends.items():
            assert [by_seq[s] for s in task.result()] == [
                (name, i, part) for part in range(len(task.result()))
            ]
        total = 2 * increments_per_store
        assert await a.get("counter") == Entry("counter", str(total).encode(), total + 1)


async def test_wait_for_events_sees_commits_of_another_store(tmp_path: Path) -> None:
    async with open_many(tmp_path / "s.db", 2) as (a, b):
        base = await a.last_seq()
        async with asyncio.timeout(WAIT), asyncio.TaskGroup() as tg:
            waiter = tg.create_task(a.wait_for_events(base, timeout=WAIT * 3))
            done, _ = await asyncio.wait({waiter}, timeout=0.05)
            assert not done
            seqs = await b.append([make_event()])
        assert waiter.result() == seqs[-1]
        tail = a.tail(after_seq=seqs[-1])

        async def next_event() -> Event:
            return await anext(tail)

        try:
            async with asyncio.timeout(WAIT), asyncio.TaskGroup() as tg:
                nxt = tg.create_task(next_event())
                more = await b.append([make_event(n=7)])
            assert nxt.result().seq == more[0]
        finally:
            await tail.aclose()  # type: ignore[attr-defined]


async def test_writes_issued_together_commit_in_the_order_issued(tmp_path: Path) -> None:
    async with await SQLiteStore.open(tmp_path / "s.db") as store:
        for width in (1, 2, 3, 40):
            results = await asyncio.gather(
                *(store.append([make_event(n=i), make_event(n=i)]) for i in range(width)),
                store.put(f"k{width}", b"v"),
                store.append([make_event(n=width)]),
            )
            seqs = [seq for r in results if isinstance(r, list) for seq in r]
            assert seqs == sorted(seqs) and len(set(seqs)) == 2 * width + 1
            events = await store.read(after_seq=seqs[0] - 1)
            expected = [i for i in range(width) for _ in "ab"] + [width]
            assert [e.data["n"] for e in events] == expected
            assert await store.get(f"k{width}") == Entry(f"k{width}", b"v", 1)


async def test_a_write_waits_for_another_process_lock_and_the_loop_goes_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    async with await SQLiteStore.open(path, busy_timeout=WAIT) as store:
        await store.put("before", b"1")  # a lone write: committed on the loop when it can be
        other = sqlite3.connect(path, isolation_level=None)  # another process, as SQLite sees it
        try:
            other.execute("BEGIN IMMEDIATE")
            write = asyncio.ensure_future(store.put("k", b"v"))
            event = asyncio.ensure_future(store.append([make_event(n=1)]))
            ticks = 0
            for _ in range(5):  # the loop is not held by the waiting writes
                await asyncio.sleep(0.01)
                ticks += 1
            assert ticks == 5 and not write.done() and not event.done()
            other.execute("INSERT INTO kv (key, value, version) VALUES ('theirs', x'00', 1)")
            other.execute("COMMIT")
            async with asyncio.timeout(WAIT):
                assert await write == 1
                (seq,) = await event
        finally:
            other.close()
        assert await store.get("theirs") == Entry("theirs", b"\x00", 1)
        assert [e.seq for e in await store.read(after_seq=seq - 1)] == [seq]
        assert await store.put("after", b"2") == 1


async def test_a_write_fails_typed_after_busy_timeout_and_commits_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with await SQLiteStore.open(path, busy_timeout=0.2) as store:
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreError) as caught:
                await store.put("k", b"v")
            assert caught.value.retryable
            assert "locked" in str(caught.value) or "busy" in str(caught.value)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert await store.get("k") is None
        assert await store.put("k", b"w") == 1  # and the store goes on


# -- crash safety ---------------------------------------------------------------------------------


Ack = tuple[int, int, str]
"""One acknowledged event as the child reports it: (seq, n, mode)."""


async def _run_child_until_killed(path: Path, first_n: int, min_acks: int) -> list[Ack]:
    """Run the child appender, SIGKILL it after ``min_acks`` acknowledgements, return them all."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        str(path),
        str(first_n),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines: list[bytes] = []
    try:
        async with asyncio.timeout(60):
            while len(lines) < min_acks:
                line = await proc.stdout.readline()
                if not line:
                    break  # the child ended by itself; reported below
                lines.append(line)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        rest, err = await proc.communicate()
    assert proc.returncode == -signal.SIGKILL, (
        f"child exited with {proc.returncode} before it was killed:\n{err.decode()}"
    )
    # Lines the child wrote before it died were acknowledged too; a torn last line was not.
    lines += rest.splitlines(keepends=True)
    acks = []
    for line in lines:
        if line.endswith(b"\n"):
            seq, n, mode = line.decode().split()
            acks.append((int(seq), int(n), mode))
    return acks


async def _check_acknowledged(path: Path, acks: list[Ack]) -> None:
    assert _sqlite_rows(path, "PRAGMA integrity_check") == [("ok",)]
    async with await SQLiteStore.open(path) as store:
        events = await store.read()
        by_seq = {e.seq: e for e in events}
        assert len(by_seq) == len(events)
        # Nothing was written twice, acknowledged or not.
        assert max(Counter(e.data["n"] for e in events if e.kind == KIND).values()) == 1
        for seq, n, mode in acks:
            ev = by_seq.get(seq)
            assert ev is not None, f"acknowledged event {n} at seq {seq} ({mode}) is lost"
            assert (ev.kind, ev.subject, ev.trace_id) == (KIND, str(n), f"trace-{n % 3}")
            assert ev.data == payload(n)
            if mode == "tx":
                assert await store.get(f"crash/{n}") == Entry(f"crash/{n}", payload_bytes(n), 1)
        new = await store.append([Event(kind="crash.recovered", trace_id="after")])
        assert new[0] > max(by_seq)
        assert (await store.read(after_seq=new[0] - 1))[0].kind == "crash.recovered"


@pytest.mark.slow
async def test_sigkill_while_appending_loses_no_acknowledged_event(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    all_acks: list[Ack] = []
    for round_no in range(2):
        acks = await _run_child_until_killed(path, first_n=round_no * 1_000_000, min_acks=400)
        assert len(acks) >= 400
        assert {mode for _, _, mode in acks} == {"batch", "single", "tx"}
        all_acks += acks
        assert len({seq for seq, _, _ in all_acks}) == len(all_acks)
        await _check_acknowledged(path, all_acks)
