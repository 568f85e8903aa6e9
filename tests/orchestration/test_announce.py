"""A new run's start is written with its first completion, or soon after it starts if that
completion is slow to come: other processes see every run that is running, and every run that
started ends in the log (cancelled while that write waits, or broken by an escaping error)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from converge.cli._runs import list_runs
from converge.errors import StoreClosed
from converge.orchestration import Engine, Graph, GraphConfig
from converge.store import MemoryStore, SQLiteStore


async def quick(inputs: dict[str, Any]) -> int:
    return 1


def gated(gate: asyncio.Event) -> Graph:
    async def slow(inputs: dict[str, Any]) -> int:
        await gate.wait()
        return 1

    return Graph("slow").add_node("a", slow).add_node("b", quick).connect("a", "b")


async def test_a_run_with_a_slow_first_node_is_listed_before_that_node_ends(
    tmp_path: Path,
) -> None:
    gate = asyncio.Event()
    path = tmp_path / "runs.db"
    async with await SQLiteStore.open(path) as store, await SQLiteStore.open(path) as other:
        run = asyncio.ensure_future(Engine(store).execute(gated(gate)))
        async with asyncio.timeout(10):
            while not (runs := await list_runs(other, None)):  # noqa: ASYNC110 - polls the file as another process would
                await asyncio.sleep(0.02)
        assert [(r["graph"], r["status"]) for r in runs] == [("slow", "running")]
        assert not run.done()
        gate.set()
        result = await run
        assert [r["status"] for r in await list_runs(other, None)] == ["completed"]
        kinds = [e.kind for e in await other.read(trace_id=result.run_id)]
        assert kinds == [
            "run.started",
            "node.start",
            "node.done",
            "node.start",
            "node.done",
            "run.completed",
        ]


async def test_quick_runs_each_write_their_start_once_and_first(tmp_path: Path) -> None:
    graph = Graph("quick").add_node("a", quick).add_node("b", quick).connect("a", "b")
    async with await SQLiteStore.open(tmp_path / "runs.db") as store:
        engine = Engine(store)
        results = [await engine.execute(graph) for _ in range(20)]
        results += await asyncio.gather(*(engine.execute(graph) for _ in range(20)))
        await asyncio.sleep(0.25)  # the announcer has had its turn: nothing more is written
        for result in results:
            kinds = [e.kind for e in await store.read(trace_id=result.run_id)]
            assert kinds[0] == "run.started" and kinds.count("run.started") == 1
            assert kinds[-1] == "run.completed"
        assert len(await store.read(kinds=["run.started"])) == 40


@pytest.mark.parametrize("announced", [False, True])
async def test_a_store_that_closes_under_a_run_fails_it_with_store_closed(
    tmp_path: Path, announced: bool
) -> None:
    gate = asyncio.Event()
    store = await SQLiteStore.open(tmp_path / "runs.db")
    run = asyncio.ensure_future(Engine(store).execute(gated(gate)))
    await asyncio.sleep(0)  # the run has started and buffered its start
    await store.aclose()
    if announced:
        await asyncio.sleep(0.3)  # the announcer tried to write the start, and failed
    gate.set()
    with pytest.raises(StoreClosed):
        await asyncio.wait_for(run, 10)


def _hold_write_lock(path: Path, seconds: float, held: threading.Event) -> None:
    """Another process, as SQLite sees it, holding the write lock for ``seconds``."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
    finally:
        conn.close()


async def test_a_run_cancelled_twice_while_its_start_is_being_written_still_logs_its_end(
    tmp_path: Path,
) -> None:
    gate = asyncio.Event()
    path = tmp_path / "runs.db"
    async with await SQLiteStore.open(path) as store:
        await store.put("created", b"")
        run = asyncio.ensure_future(Engine(store).execute(gated(gate)))
        await asyncio.sleep(0.02)
        held = threading.Event()
        locker = threading.Thread(target=_hold_write_lock, args=(path, 0.8, held))
        locker.start()
        try:
            assert await asyncio.to_thread(held.wait, 10)
            await asyncio.sleep(0.3)  # the announcer's write waits for the lock
            run.cancel()
            await asyncio.sleep(0.05)
            run.cancel()  # again, while the run's end waits behind that write
            with pytest.raises(asyncio.CancelledError):
                await run
        finally:
            await asyncio.to_thread(locker.join, 10)
        async with asyncio.timeout(10):
            while not await store.read(kinds=["run.interrupted"]):  # noqa: ASYNC110 - queued writes
                await asyncio.sleep(0.02)
        kinds = [e.kind for e in await store.read() if e.kind.startswith(("run.", "node."))]
        assert kinds == ["run.started", "node.start", "run.interrupted"]


async def failing_node(inputs: dict[str, Any]) -> int:
    raise ValueError("node failed")


@pytest.mark.parametrize("timeout", [None, 30.0])
async def test_an_error_escaping_a_run_is_raised_as_itself_and_the_run_logged_failed(
    timeout: float | None,
) -> None:
    async def hook(failure: Any) -> Any:
        raise TimeoutError("the supervisor's call timed out")

    config = GraphConfig() if timeout is None else GraphConfig(timeout_seconds=timeout)
    graph = Graph("g", config=config).add_node("a", failing_node)
    store = MemoryStore()
    with pytest.raises(TimeoutError, match="supervisor"):  # not taken for the run's timeout
        await Engine(store, on_node_failed=hook).execute(graph)
    (ended,) = await store.read(kinds=["run.failed"])
    assert "TimeoutError: the supervisor's call timed out" in ended.data["error"]
