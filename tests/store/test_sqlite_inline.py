"""When ``SQLiteStore`` commits a lone unit on the event loop, and when it must not: after a
checkpoint (the WAL restart syncs), from another loop, and what an interrupt leaves behind."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from converge.store import SQLiteStore
from converge.store import _sqlite_write as write_side
from converge.store import sqlite as sqlite_store
from tests.loop_clock import until
from tests.store.conformance import make_event


def _committers(store: SQLiteStore) -> list[tuple[str, int]]:
    """Each write transaction begun on the writer's connection from now on: the thread that
    began it and how many checkpoints had copied the whole WAL by then."""
    seen: list[tuple[str, int]] = []
    conn = store._writer._conn  # type: ignore[union-attr]
    checkpointer = store._checkpointer
    assert conn is not None and checkpointer is not None

    def trace(statement: str) -> None:
        if statement.startswith("BEGIN IMMEDIATE"):
            seen.append((threading.current_thread().name, checkpointer.completed))

    conn.set_trace_callback(trace)
    return seen


async def test_lone_writes_commit_on_the_loop_but_never_the_first_after_a_checkpoint(
    tmp_path: Path,
) -> None:
    async with await SQLiteStore.open(tmp_path / "s.db") as store:
        checkpointer = store._checkpointer
        assert checkpointer is not None
        checkpointer._interval = 0.01  # (0.2 s by default) checkpoints come soon and often
        seen = _committers(store)
        writer = store._writer._thread.name  # type: ignore[union-attr]
        for i in range(90):
            await store.put(f"k{i % 7}", b"v")
            if i % 30 == 29:  # a pause: the checkpointer copies the whole WAL meanwhile
                copied = checkpointer.completed
                await until(lambda c=copied: checkpointer.completed > c)
        assert len(seen) == 90
        assert seen[0][0] == writer  # the first after opening
        # The first commit after a checkpoint may restart the WAL, which syncs its header.
        after_checkpoint = [
            now
            for (now, completed), (_, before) in zip(seen[1:], seen[:-1], strict=True)
            if completed > before
        ]
        assert len(after_checkpoint) >= 2 and set(after_checkpoint) == {writer}
        # With no checkpoint under way, every lone write but that first commits on the loop.
        await asyncio.to_thread(checkpointer.stop)  # (its last checkpoint: the WAL restarts)
        seen.clear()
        for i in range(100):
            await store.put(f"k{i % 7}", b"v")
        assert [name for name, _ in seen] == [writer] + ["MainThread"] * 99
        assert await store.get("k0") is not None


def test_a_store_used_from_another_loop_fails_at_once(tmp_path: Path) -> None:
    store = asyncio.run(SQLiteStore.open(tmp_path / "s.db"))

    async def misuse() -> list[BaseException | int]:
        lone: list[BaseException | int] = []
        try:
            lone.append(await asyncio.wait_for(store.put("a", b"1"), 5))
        except RuntimeError as exc:
            lone.append(exc)
        pair = await asyncio.wait_for(
            asyncio.gather(store.put("b", b"1"), store.put("c", b"1"), return_exceptions=True), 5
        )
        return lone + pair

    results = asyncio.run(misuse())
    assert all(isinstance(r, RuntimeError) for r in results), results
    assert all("different loop" in str(r) for r in results)


@pytest.fixture
def interrupt_once(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """Raise KeyboardInterrupt inside the next commit made on the main thread (mid-transaction)."""
    armed = [False]
    last_seq = write_side.last_seq

    def interrupted(conn: sqlite3.Connection) -> int:
        if armed[0] and threading.current_thread() is threading.main_thread():
            armed[0] = False
            raise KeyboardInterrupt
        return last_seq(conn)

    monkeypatch.setattr(write_side, "last_seq", interrupted)
    yield armed


def test_an_interrupt_inside_a_commit_on_the_loop_rolls_it_back(
    tmp_path: Path, interrupt_once: list[bool]
) -> None:
    path = tmp_path / "s.db"
    loop = asyncio.new_event_loop()
    try:
        store = loop.run_until_complete(SQLiteStore.open(path, busy_timeout=1.0))
        first = loop.run_until_complete(store.append([make_event(n=-1)]))
        interrupt_once[0] = True
        written = 0
        with pytest.raises(KeyboardInterrupt):
            for _ in range(200):  # until a commit runs on the loop (the first ones may not)
                loop.run_until_complete(store.append([make_event(n=written)]))
                written += 1
        assert not interrupt_once[0] and written < 200
        assert not store._writer._conn.in_transaction  # type: ignore[union-attr]
        other = sqlite3.connect(path, isolation_level=None, timeout=1.0)
        try:  # the write lock was given back
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
        finally:
            other.close()
        after = loop.run_until_complete(store.append([make_event(n=1000)]))
        events = loop.run_until_complete(store.read(after_seq=first[0]))
        assert [e.data["n"] for e in events] == [*range(written), 1000]  # the interrupted one: not
        assert events[-1].seq == after[0]
        loop.run_until_complete(store.aclose())
    finally:
        loop.close()


_BOUND = 1024 * 1024  # the WAL bound for these tests (64 MiB by default)


@pytest.mark.parametrize("checkpointer", ["running", "never runs"])
@pytest.mark.parametrize("callers", ["lone", "concurrent"])
async def test_the_wal_stays_bounded_under_a_steady_stream_of_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checkpointer: str, callers: str
) -> None:
    monkeypatch.setattr(sqlite_store, "_MAX_WAL_BYTES", _BOUND)
    wal = tmp_path / "s.db-wal"
    async with await SQLiteStore.open(tmp_path / "s.db") as store:
        assert store._checkpointer is not None
        if checkpointer == "never runs":  # starved of CPU, as on a busy machine: the bound holds
            await asyncio.to_thread(store._checkpointer.stop)
        sizes: list[tuple[int, int]] = []  # the WAL file's size before and after each commit
        for i in range(1000):  # each commit right after the last: never a pause to catch up
            before = wal.stat().st_size
            if callers == "lone":  # committed on the loop
                await store.put(f"k{i}", bytes(2048))
            else:  # two in one turn: committed by the writer thread
                await asyncio.gather(store.put(f"k{i}", bytes(2048)), store.put(f"j{i}", b"v"))
            sizes.append((before, wal.stat().st_size))
        # Never started over, the WAL would hold every commit: over 1000 x 2 KiB.
        found_over = [after for before, after in sizes if before > _BOUND]
        assert found_over, "the WAL never reached its bound: the test proves nothing"
        # A commit that finds the WAL over its bound starts it over (no reader holds it here),
        # so the WAL never holds more than the bound and one commit.
        assert all(after <= _BOUND for after in found_over), found_over
        assert len(await store.list("k")) == 1000
