"""A new run's start is written with its first completion, or soon after it starts if that
completion is slow to come: other processes see every run that is running."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from converge.cli._runs import list_runs
from converge.errors import StoreClosed
from converge.orchestration import Engine, Graph
from converge.store import SQLiteStore


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
