"""The quick start: ``Graph.execute()``, ``stream()``, ``batch()`` and ``run_sync()`` with no
engine use one default engine per event loop, leak nothing and keep a bounded number of runs."""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

from converge.errors import StateError, ValidationError
from converge.orchestration import Engine, Graph, RunStatus, default_engine
from converge.orchestration.engine import DEFAULT_KEEP_RUNS
from converge.store import MemoryStore, SQLiteStore


def step(inputs: dict[str, Any]) -> int:
    return 1


def pipeline() -> Graph:
    return Graph("p").add_node("a", step).add_node("b", step).connect("a", "b")


def open_stores() -> int:
    gc.collect()
    return sum(isinstance(o, MemoryStore) and not o._closed for o in gc.get_objects())


def converge_threads() -> int:
    return sum(t.name.startswith("converge-") for t in threading.enumerate())


async def test_one_default_engine_per_loop_with_bounded_runs() -> None:
    graph = pipeline()
    engine = default_engine()
    assert engine is default_engine()
    assert engine.keep_runs == DEFAULT_KEEP_RUNS
    engine.keep_runs = 20
    try:
        results = [await graph.execute() for _ in range(1000)]
        assert all(r.output == 1 for r in results)
        [event async for event in graph.stream()]
        assert [r.output for r in await graph.batch([{}] * 10)] == [1] * 10
        assert default_engine() is engine
        kept = {event.trace_id for event in await engine.store.read()}
        assert len(kept) == 20  # the last 20 finished runs; the oldest were dropped
        assert results[-1].run_id in kept and results[0].run_id not in kept
        with pytest.raises(ValidationError, match="no run"):
            await engine.trace(results[0].run_id)
        assert (await engine.trace(results[-1].run_id))["status"] == "completed"
        assert engine._pool.threads <= engine._pool.max_threads
    finally:
        engine.keep_runs = DEFAULT_KEEP_RUNS


def test_a_thousand_calls_leak_no_thread_and_no_store() -> None:
    graph = pipeline()
    asyncio.run(graph.execute())  # the default engines' shared threads exist from here on
    graph.run_sync()
    threads, stores = converge_threads(), open_stores()
    for _ in range(500):
        assert asyncio.run(graph.execute()).output == 1  # a new loop (and engine) each time
    for _ in range(500):
        assert graph.run_sync().output == 1  # this thread's one loop
    assert converge_threads() <= threads
    assert open_stores() <= stores


def test_run_sync_from_threads_of_its_own() -> None:
    graph = pipeline()
    outputs: list[int] = []

    def work() -> None:
        outputs.extend(graph.run_sync().output for _ in range(20))

    workers = [threading.Thread(target=work) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert outputs == [1] * 60


async def test_run_sync_inside_a_running_loop_says_what_to_do_instead() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the coroutine it was handed is closed, not leaked
        with pytest.raises(StateError, match=r"await graph\.execute"):
            pipeline().run_sync()


async def test_keep_runs_bounds_an_engines_memory_store() -> None:
    engine = Engine(keep_runs=2)
    graph = pipeline()
    runs = [(await engine.execute(graph)).run_id for _ in range(5)]
    for run_id in runs[:3]:
        with pytest.raises(ValidationError, match="no run"):
            await engine.resume(graph, run_id)
    for run_id in runs[3:]:
        assert (await engine.resume(graph, run_id)).status is RunStatus.COMPLETED
    engine.keep_runs = None  # keeps every run from now on
    more = [(await engine.execute(graph)).run_id for _ in range(5)]
    assert {e.trace_id for e in await engine.store.read()} == set(runs[3:] + more)
    await engine.aclose()


async def test_keep_runs_is_checked(tmp_path: Path) -> None:
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(ValidationError, match="keep_runs") as raised:
            Engine(keep_runs=bad)  # type: ignore[arg-type]
        assert raised.value.field == "keep_runs"
    async with await SQLiteStore.open(tmp_path / "runs.db") as store:
        with pytest.raises(ValidationError, match="SQLiteStore keeps every run"):
            Engine(store, keep_runs=10)
