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

LangGraph runs in its own virtual environment (``bench/peers``). Converge's nodes are
``async def`` and run on the event loop; the ratios are against LangGraph's ``ainvoke`` with
``async def`` nodes (the same footing), and its sync ``invoke`` figure is printed beside.

Run: ``.venv/bin/python bench/bench_orchestration.py [--quick] [--only CASE ...] [--no-peer]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit
from converge.orchestration import Engine, Graph
from converge.store import SQLiteStore

BENCH = "orchestration"
CASES = ("chain_50", "pipeline_3", "pipeline_3_sqlite", "fanout_100", "inflight_10000")


async def noop(inputs: dict[str, Any]) -> int:
    return 1


async def merge(inputs: dict[str, Any]) -> int:
    return len(inputs)


def chain(n: int) -> Graph:
    graph = Graph(f"chain_{n}")
    for i in range(n):
        graph.add_node(f"n{i}", noop)
        if i:
            graph.connect(f"n{i - 1}", f"n{i}")
    return graph


def fanout(branches: int) -> Graph:
    graph = Graph("fanout").add_node("start", noop)
    for i in range(branches):
        graph.add_node(f"b{i}", noop).connect("start", f"b{i}")
    graph.add_node("merge", merge, wait_for=[f"b{i}" for i in range(branches)])
    return graph


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


async def main(args: argparse.Namespace) -> None:
    only = list(args.only or CASES)
    lg: dict[str, dict[str, Any]] = {}
    peer_cases = [c for c in only if c != "inflight_10000"]
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=CASES, help="run only these cases")
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--no-peer", action="store_true", help="skip LangGraph (no ratios)")
    asyncio.run(main(parser.parse_args()))
