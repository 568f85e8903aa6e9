"""Plain ``def`` nodes: on the engine's worker threads, never stalling its loop (issue 16)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from converge.orchestration import AgentSpec, Engine, Graph, LeasePolicy, RetryPolicy, RunStatus
from converge.orchestration.ownership import read_owner

NO_RETRY = RetryPolicy(max_retries=0, backoff="none")


async def test_a_two_second_def_node_leaves_lease_renewal_and_other_runs_going() -> None:
    started = threading.Event()

    def slow(inputs: dict[str, Any]) -> str:
        started.set()
        time.sleep(2)
        return "slept"

    ticks = 0

    async def busy(inputs: dict[str, Any]) -> int:
        nonlocal ticks
        while not started.is_set():  # noqa: ASYNC110 - bounded: the slow node starts at once
            await asyncio.sleep(0.01)
        for _ in range(100):  # about a second of steps while the slow node sleeps
            ticks += 1
            await asyncio.sleep(0.01)
        return ticks

    engine = Engine(lease=LeasePolicy(ttl=1.0, renew_every=0.1))
    renewals: set[float] = set()
    async with engine:
        slow_run = await engine.submit(Graph("slow").add_node("a", slow))
        other_run = await engine.submit(Graph("other").add_node("b", busy))
        async with asyncio.timeout(30):
            while await slow_run.status() is RunStatus.RUNNING:
                owner = await read_owner(engine.store, engine.owner.id)
                if owner is not None and started.is_set():
                    renewals.add(owner.renewed_at)
                await asyncio.sleep(0.05)
        slow_result, other_result = await slow_run.wait(), await other_run.wait()
    assert slow_result.output == "slept"
    assert other_result.output == 100  # finished while the def node slept
    # Renewed every 0.1 s during the 2 s sleep: far more than 3 distinct renewals.
    assert len(renewals) >= 3


async def test_a_def_node_runs_on_a_worker_thread_and_inline_on_the_loop() -> None:
    loop_thread = threading.get_ident()
    seen: dict[str, int] = {}

    def pooled(inputs: dict[str, Any]) -> int:
        seen["pooled"] = threading.get_ident()
        return 1

    def on_loop(inputs: dict[str, Any]) -> int:
        seen["inline"] = threading.get_ident()
        return 2

    graph = Graph("t").add_node("a", pooled).add_node("b", AgentSpec(on_loop, inline=True))
    async with Engine() as engine:
        for _ in range(20):
            result = await engine.execute(graph)
    assert result.output == {"a": 1, "b": 2}
    assert seen["pooled"] != loop_thread
    assert seen["inline"] == loop_thread


async def test_a_def_node_timeout_fires_while_the_call_goes_on() -> None:
    finished = threading.Event()

    def hangs(inputs: dict[str, Any]) -> str:
        time.sleep(0.5)
        finished.set()
        return "late"

    graph = Graph("t").add_node("a", hangs, timeout=0.05, retry=NO_RETRY, on_error="skip")
    async with Engine() as engine:
        result = await engine.execute(graph)
    assert result.status is RunStatus.COMPLETED
    (done,) = await engine.store.read(trace_id=result.run_id, kinds=("node.done",))
    assert done.data["status"] == "skipped"
    assert done.data["error"] == "timed out after 0.05 s"
    assert await asyncio.to_thread(finished.wait, 10)


async def test_cancelling_a_run_does_not_wait_for_its_def_node() -> None:
    started, release = threading.Event(), threading.Event()

    def blocks(inputs: dict[str, Any]) -> str:
        started.set()
        release.wait(10)
        return "done"

    async with Engine() as engine:
        handle = await engine.submit(Graph("c").add_node("a", blocks))
        assert await asyncio.to_thread(started.wait, 10)
        assert engine.cancel(handle.run_id)
        result = await handle.wait()
        assert result.status is RunStatus.CANCELLED
        assert not release.is_set()  # ended while the call still blocked
        release.set()


async def test_def_nodes_fan_out_over_the_threads() -> None:
    def branch(inputs: dict[str, Any]) -> int:
        return 1

    def merge(inputs: dict[str, Any]) -> int:
        return sum(inputs.values())

    graph = Graph("fan").add_node("start", branch)
    for i in range(50):
        graph.add_node(f"b{i}", branch).connect("start", f"b{i}")
    graph.add_node("merge", merge, wait_for=[f"b{i}" for i in range(50)])
    async with Engine(max_threads=4) as engine:
        result = await engine.execute(graph)
        assert engine._pool.threads <= 4
    assert result.outputs["merge"] == 50
