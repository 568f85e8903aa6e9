"""The orchestration engine (issue 5), side by side with LangGraph in the same invocation.

Cases, each one JSON line (no-op nodes, the code path users get: events logged in the store):

- ``chain_50``: a 50-node chain; microseconds per node step. Target <= 1/10 of LangGraph's.
- ``pipeline_3``: a 3-node pipeline invoked sequentially; invocations/s. Target >= 10x.
- ``pipeline_3_sqlite``: the same, each node's completion committed to SQLite before the next
  node starts (``checkpoint_enabled``); against LangGraph's ``SqliteSaver`` with
  ``durability="sync"``, both with ``synchronous=NORMAL`` (a commit survives a crash of the
  process; converge's default). ``pipeline_3_sqlite_full``: both with ``FULL`` (also a power
  loss; LangGraph's default), where an fsync per commit bounds both. Target >= 10x.
- ``fanout_100``: one node fans out to 100 branches, a merge reads all 100; ms per invocation
  against LangGraph's ``Send``. Target >= 10x faster.
- ``inflight_10000``: 10,000 runs of a 3-node graph in flight at once (their first node waits
  on an event); resident memory with all of them in flight. Target < 1 GB.
- ``chain_50_def``, ``pipeline_3_def``, ``fanout_100_def``: the same graphs with plain ``def``
  nodes (run on the engine's worker threads, never on the loop) against LangGraph's ``invoke``
  with ``def`` nodes. Target >= 3x. ``before`` is the same build handing each call to a
  ``ThreadPoolExecutor`` through ``run_in_executor``, as converge did; ``hop_floor_us`` is
  what two threads of this interpreter pay to hand a value to each other and back (two
  wake-ups), which no thread hand-off avoids; ``speedup_bound`` (chain) is LangGraph's step
  over an ``async`` step plus that floor: what a perfect hand-off could reach in this run.
- ``quickstart_execute``, ``quickstart_stream``, ``quickstart_batch``: ``Graph.execute()`` /
  ``stream()`` / ``batch()`` with no engine (the loop's default engine) against the same call
  on one reused ``Engine``, on ``pipeline_3_def``. Target <= 1.2x. ``before`` is a new
  ``Engine`` per call, as converge did. ``quickstart_run_sync``: ``Graph.run_sync()`` against
  a reused ``Engine`` driven by a reused ``asyncio.Runner`` (both pay the runner's Ctrl-C
  handling per call).

LangGraph runs in its own virtual environment (``bench/peers``). Converge's nodes are
``async def`` and run on the event loop; the ratios are against LangGraph's ``ainvoke`` with
``async def`` nodes (the same footing), and its sync ``invoke`` figure is printed beside.

Run: ``.venv/bin/python bench/bench_orchestration.py [--quick] [--only CASE ...] [--no-peer]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import queue
import random
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from _common import emit
from converge.core.user_code import WorkerThreads
from converge.orchestration import Engine, Graph
from converge.store import SQLiteStore

T = TypeVar("T")
BENCH = "orchestration"
CASES = (
    "chain_50",
    "pipeline_3",
    "pipeline_3_sqlite",
    "fanout_100",
    "inflight_10000",
    "chain_50_def",
    "pipeline_3_def",
    "fanout_100_def",
    "quickstart",
)
PEER_CASES = {
    "chain_50_def": "chain_50",
    "pipeline_3_def": "pipeline_3",
    "fanout_100_def": "fanout_100",
}


async def noop(inputs: dict[str, Any]) -> int:
    return 1


async def merge(inputs: dict[str, Any]) -> int:
    return len(inputs)


def noop_def(inputs: dict[str, Any]) -> int:
    return 1


def merge_def(inputs: dict[str, Any]) -> int:
    return len(inputs)


def chain(n: int, node: Any = noop) -> Graph:
    graph = Graph(f"chain_{n}")
    for i in range(n):
        graph.add_node(f"n{i}", node)
        if i:
            graph.connect(f"n{i - 1}", f"n{i}")
    return graph


def fanout(branches: int, node: Any = noop, join: Any = merge) -> Graph:
    graph = Graph("fanout").add_node("start", node)
    for i in range(branches):
        graph.add_node(f"b{i}", node).connect("start", f"b{i}")
    graph.add_node("merge", join, wait_for=[f"b{i}" for i in range(branches)])
    return graph


class ExecutorThreads(WorkerThreads):
    """The hand-off converge used before ``WorkerThreads``: ``run_in_executor`` per call."""

    def __init__(self, max_threads: int) -> None:
        super().__init__(max_threads)
        self.pool = ThreadPoolExecutor(max_threads)

    async def run(self, fn: Callable[..., T], /, *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def close(self) -> None:
        self.pool.shutdown(wait=False)


def hop_floor_us(count: int = 5000, repeats: int = 3) -> float:
    """The best µs per round trip of a value between two threads through two queues."""
    there: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    back: queue.SimpleQueue[int] = queue.SimpleQueue()

    def echo() -> None:
        while (item := there.get()) is not None:
            back.put(item)

    thread = threading.Thread(target=echo)
    thread.start()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(count):
            there.put(i)
            back.get()
        best = min(best, (time.perf_counter() - start) / count)
    there.put(None)
    thread.join()
    return best * 1e6


async def best_rate(engine: Engine, graph: Graph, count: int, repeats: int) -> float:
    """The best seconds per invocation over ``repeats`` batches of ``count`` (after a warm-up)."""
    for _ in range(max(count // 10, 3)):
        await engine.execute(graph)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(count):
            await engine.execute(graph)
        best = min(best, (time.perf_counter() - start) / count)
    return best


def peer(lg: dict[str, dict[str, Any]], case: str, key: str) -> float | None:
    row = lg.get(case)
    return None if row is None or "error" in row else float(row[key])


async def case_chain(lg: dict[str, dict[str, Any]], quick: bool) -> None:
    per = await best_rate(Engine(), chain(50), 20 if quick else 200, 3 if quick else 5)
    value = per / 50 * 1e6
    theirs = peer(lg, "chain_50", "ainvoke_us_per_node_step")
    emit(
        bench=BENCH,
        case="chain_50",
        value=round(value, 2),
        unit="us/node step",
        langgraph_ainvoke=theirs,
        langgraph_invoke=peer(lg, "chain_50", "value"),
        ratio=None if theirs is None else round(value / theirs, 4),
        target=0.1,
        ok=None if theirs is None else value <= theirs / 10,
    )


async def case_pipeline(lg: dict[str, dict[str, Any]], quick: bool) -> None:
    graph = chain(3)
    per = await best_rate(Engine(), graph, 500 if quick else 5000, 3 if quick else 5)
    value = 1 / per
    theirs = peer(lg, "pipeline_3", "ainvoke_invocations_per_s")
    emit(
        bench=BENCH,
        case="pipeline_3",
        value=round(value),
        unit="invocations/s",
        langgraph_ainvoke=theirs,
        langgraph_invoke=peer(lg, "pipeline_3", "value"),
        ratio=None if theirs is None else round(value / theirs, 2),
        target=10,
        ok=None if theirs is None else value >= 10 * theirs,
    )


async def case_pipeline_sqlite(lg: dict[str, dict[str, Any]], quick: bool, tmp: Path) -> None:
    graph = chain(3)
    rates: dict[str, float] = {}
    for sync in ("FULL", "NORMAL"):
        async with await SQLiteStore.open(tmp / f"runs_{sync}.db", synchronous=sync) as store:
            per = await best_rate(Engine(store), graph, 100 if quick else 1000, 3)
            rates[sync] = 1 / per
    full = peer(lg, "pipeline_3_sqlite", "value")  # LangGraph's fastest path: sync invoke
    normal = peer(lg, "pipeline_3_sqlite", "normal_invocations_per_s")
    for sync, theirs in (("NORMAL", normal), ("FULL", full)):
        value = rates[sync]
        emit(
            bench=BENCH,
            case="pipeline_3_sqlite" if sync == "NORMAL" else "pipeline_3_sqlite_full",
            value=round(value),
            unit="invocations/s",
            synchronous=sync,
            langgraph_invoke=theirs,
            langgraph_ainvoke_full=peer(lg, "pipeline_3_sqlite", "ainvoke_invocations_per_s"),
            ratio=None if theirs is None else round(value / theirs, 2),
            target=10,
            ok=None if theirs is None else value >= 10 * theirs,
        )


async def case_fanout(lg: dict[str, dict[str, Any]], quick: bool) -> None:
    per = await best_rate(Engine(), fanout(100), 20 if quick else 200, 3 if quick else 5)
    value = per * 1e3
    theirs = peer(lg, "fanout_100", "ainvoke_ms_per_invocation")
    emit(
        bench=BENCH,
        case="fanout_100",
        value=round(value, 3),
        unit="ms/invocation",
        langgraph_ainvoke=theirs,
        langgraph_invoke=peer(lg, "fanout_100", "value"),
        speedup=None if theirs is None else round(theirs / value, 2),
        target=10,
        ok=None if theirs is None else theirs / value >= 10,
    )


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def case_inflight(quick: bool) -> None:
    runs = 1_000 if quick else 10_000
    gate = asyncio.Event()
    waiting = 0

    async def first(inputs: dict[str, Any]) -> int:
        nonlocal waiting
        waiting += 1
        await gate.wait()
        return 1

    graph = (
        Graph("inflight")
        .add_node("a", first)
        .add_node("b", noop)
        .add_node("c", noop)
        .connect("a", "b")
        .connect("b", "c")
    )
    gc.collect()
    before = rss_mb()
    async with Engine() as engine:
        handles = [await engine.submit(graph) for _ in range(runs)]
        async with asyncio.timeout(120):
            while waiting < runs:  # noqa: ASYNC110 - a bounded wait for every run to be in flight
                await asyncio.sleep(0.01)
        in_flight = rss_mb()
        gate.set()
        results = [await h.wait() for h in handles]
    assert all(r.output == 1 for r in results)
    emit(
        bench=BENCH,
        case="inflight_10000",
        value=round(in_flight, 1),
        unit="MB resident",
        runs=runs,
        before_mb=round(before, 1),
        per_run_kb=round((in_flight - before) * 1024 / runs, 2),
        target=1024,
        ok=in_flight < 1024,
    )


DEF_GRAPHS: dict[str, tuple[Callable[[], Graph], int, int]] = {
    # case: (graph, invocations per repeat (full), per-invocation unit divisor)
    "chain_50_def": (lambda: chain(50, noop_def), 100, 50),
    "pipeline_3_def": (lambda: chain(3, noop_def), 2000, 1),
    "fanout_100_def": (lambda: fanout(100, noop_def, merge_def), 100, 1),
}


async def case_def(lg: dict[str, dict[str, Any]], case: str, quick: bool) -> None:
    make, count, steps = DEF_GRAPHS[case]
    count = max(count // 10, 5) if quick else count
    graph = make()
    before_engine = Engine(threads=ExecutorThreads(8))
    after_engine = Engine()
    same_async = chain(50) if case == "chain_50_def" else None
    befores, afters, asyncs = [], [], []
    for _ in range(2 if quick else 3):  # alternated, so a noisy stretch hits both alike
        befores.append(await best_rate(before_engine, graph, count, 1))
        afters.append(await best_rate(after_engine, graph, count, 1))
        if same_async is not None:
            asyncs.append(await best_rate(after_engine, same_async, count, 1))
    await before_engine.aclose()
    await after_engine.aclose()
    before, after = min(befores), min(afters)
    name = PEER_CASES[case]
    floor = hop_floor_us()
    extra: dict[str, Any] = {}
    if case == "chain_50_def":
        value, prior, unit = after / steps * 1e6, before / steps * 1e6, "us/node step"
        theirs = peer(lg, name, "value")
        ratio = None if theirs is None else theirs / value
        # What a perfect hand-off could reach in this run: an async step plus the floor.
        async_step = min(asyncs) / steps * 1e6
        extra["async_step_us"] = round(async_step, 2)
        if theirs is not None:
            extra["speedup_bound"] = round(theirs / (async_step + floor), 2)
    elif case == "pipeline_3_def":
        value, prior, unit = 1 / after, 1 / before, "invocations/s"
        theirs = peer(lg, name, "value")
        ratio = None if theirs is None else value / theirs
    else:
        value, prior, unit = after * 1e3, before * 1e3, "ms/invocation"
        theirs = peer(lg, name, "value")
        ratio = None if theirs is None else theirs / value
    emit(
        bench=BENCH,
        case=case,
        value=round(value, 3),
        unit=unit,
        before=round(prior, 3),
        langgraph_invoke=theirs,
        speedup=None if ratio is None else round(ratio, 2),
        hop_floor_us=round(floor, 1),
        **extra,
        target=3,
        ok=None if ratio is None else ratio >= 3,
    )


async def timed(call: Callable[[], Any], count: int) -> float:
    """The seconds per call of ``count`` awaited calls (after a warm-up)."""
    for _ in range(max(count // 10, 3)):
        await call()
    start = time.perf_counter()
    for _ in range(count):
        await call()
    return (time.perf_counter() - start) / count


async def drain(events: Any) -> None:
    async for _ in events:
        pass


async def case_quickstart(quick: bool) -> None:
    graph = chain(3, noop_def)
    count = 50 if quick else 200
    rounds = 4 if quick else 12
    engine = Engine()
    many = [{} for _ in range(10)]
    calls: dict[str, tuple[Callable[[], Any], Callable[[], Any], Callable[[], Any]]] = {
        # case: (default engine, reused engine, a new engine per call: the old default)
        "quickstart_execute": (
            lambda: graph.execute(),
            lambda: graph.execute(engine=engine),
            lambda: graph.execute(engine=Engine()),
        ),
        "quickstart_stream": (
            lambda: drain(graph.stream()),
            lambda: drain(graph.stream(engine=engine)),
            lambda: drain(graph.stream(engine=Engine())),
        ),
        "quickstart_batch": (
            lambda: graph.batch(many),
            lambda: graph.batch(many, engine=engine),
            lambda: graph.batch(many, engine=Engine()),
        ),
    }
    for case, (default, reused, fresh) in calls.items():
        n = max(count // 10, 5) if case == "quickstart_batch" else count
        contenders = {"default": (default, n), "reused": (reused, n), "before": (fresh, n // 4)}
        best = dict.fromkeys(contenders, float("inf"))
        for _ in range(rounds):  # short rounds in a shuffled order: noise hits all alike
            order = list(contenders)
            random.shuffle(order)
            for name in order:
                call, times = contenders[name]
                best[name] = min(best[name], await timed(call, max(times, 3)))
        ratio = best["default"] / best["reused"]
        emit(
            bench=BENCH,
            case=case,
            value=round(ratio, 3),
            unit="x reused Engine",
            default_us=round(best["default"] * 1e6, 1),
            reused_us=round(best["reused"] * 1e6, 1),
            before_us=round(best["before"] * 1e6, 1),
            target=1.2,
            ok=ratio <= 1.2,
        )
    await engine.aclose()


def case_run_sync(quick: bool) -> None:
    graph = chain(3, noop_def)
    count = 50 if quick else 200
    runner = asyncio.Runner()
    engine = runner.run(_new_engine())

    def sync_timed(call: Callable[[], Any]) -> float:
        for _ in range(max(count // 10, 3)):
            call()
        start = time.perf_counter()
        for _ in range(count):
            call()
        return (time.perf_counter() - start) / count

    contenders: dict[str, Callable[[], Any]] = {
        "default": graph.run_sync,
        "reused": lambda: runner.run(graph.execute(engine=engine)),
    }
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(4 if quick else 12):
        order = list(contenders)
        random.shuffle(order)
        for name in order:
            best[name] = min(best[name], sync_timed(contenders[name]))
    runner.run(engine.aclose())
    runner.close()
    ratio = best["default"] / best["reused"]
    emit(
        bench=BENCH,
        case="quickstart_run_sync",
        value=round(ratio, 3),
        unit="x reused Engine",
        default_us=round(best["default"] * 1e6, 1),
        reused_us=round(best["reused"] * 1e6, 1),
        target=1.2,
        ok=ratio <= 1.2,
    )


async def _new_engine() -> Engine:
    return Engine()


async def main(args: argparse.Namespace) -> None:
    only = list(args.only or CASES)
    lg: dict[str, dict[str, Any]] = {}
    peer_cases = sorted(
        {PEER_CASES.get(c, c) for c in only if c not in ("inflight_10000", "quickstart")}
    )
    if peer_cases and not args.no_peer:
        from peers.run_langgraph import run_langgraph

        lg = run_langgraph(peer_cases, quick=args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        if "chain_50" in only:
            await case_chain(lg, args.quick)
        if "pipeline_3" in only:
            await case_pipeline(lg, args.quick)
        if "pipeline_3_sqlite" in only:
            await case_pipeline_sqlite(lg, args.quick, Path(tmp))
        if "fanout_100" in only:
            await case_fanout(lg, args.quick)
        if "inflight_10000" in only:
            await case_inflight(args.quick)
        for case in DEF_GRAPHS:
            if case in only:
                await case_def(lg, case, args.quick)
        if "quickstart" in only:
            await case_quickstart(args.quick)


def run(args: argparse.Namespace) -> None:
    asyncio.run(main(args))
    if "quickstart" in (args.only or CASES):
        case_run_sync(args.quick)  # run_sync makes its own loop: outside asyncio.run


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=CASES, help="run only these cases")
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--no-peer", action="store_true", help="skip LangGraph (no ratios)")
    run(parser.parse_args())
