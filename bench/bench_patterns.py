"""The orchestration patterns (issue 6): what a hierarchy costs per node step over plain graphs.

Case, one JSON line:

- ``hierarchy_40``: a 3-level hierarchy (a top supervisor, 4 managers, 10 workers each: 40
  workers) built by ``hierarchy()``; every supervisor assigns all its members in one round,
  then reports. Its node steps are every node that finishes, in the top run and in each
  manager's child run (supervisors twice, ``assign``, workers, ``gather``, ``done``, and the
  manager's subgraph node itself), counted from the store. Against the plain engine on a
  comparable flat graph of no-op async nodes of the same tree shape (a root, 4 mids, 40
  leaves, 4 joins, a final join). Target: µs per node step within 2x of the plain engine's.

Both run on ``Engine()`` (in-memory store) with the same warm-up, alternated so a noisy
stretch of the machine hits both alike; the best of the rounds is reported.

Run: ``.venv/bin/python bench/bench_patterns.py [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from _common import emit
from converge.orchestration import MISSING, Engine, Graph, hierarchy
from converge.store import MemoryStore

BENCH = "patterns"
MANAGERS = 4
WORKERS = 10


async def noop(inputs: dict[str, Any]) -> int:
    return 1


def lead(*members: str) -> Any:
    """A supervisor that assigns every member at once, then returns how many answered."""

    async def supervise(inputs: dict[str, Any]) -> dict[str, Any]:
        results = inputs["gather.output"]
        if results is MISSING:
            return {"assign": dict.fromkeys(members, 1)}
        return {"done": len(results)}

    return supervise


def build_hierarchy() -> Graph:
    managers = {}
    for m in range(MANAGERS):
        workers = {f"w{m}_{w}": noop for w in range(WORKERS)}
        managers[f"m{m}"] = (lead(*workers), workers)
    return hierarchy(lead(*managers), managers)


def build_flat() -> Graph:
    graph = Graph("flat").add_node("root", noop)
    for m in range(MANAGERS):
        graph.add_node(f"m{m}", noop).connect("root", f"m{m}")
        leaves = [f"w{m}_{w}" for w in range(WORKERS)]
        for leaf in leaves:
            graph.add_node(leaf, noop).connect(f"m{m}", leaf)
        graph.add_node(f"j{m}", noop, wait_for=leaves)
    graph.add_node("final", noop, wait_for=[f"j{m}" for m in range(MANAGERS)])
    return graph


async def steps(graph: Graph, inputs: dict[str, Any]) -> int:
    """Node steps of one run, top and child runs alike, from the store."""
    store = MemoryStore()
    result = await Engine(store).execute(graph, inputs)
    return sum(e.kind == "node.done" for e in await store.read(trace_id=result.run_id))


async def seconds(engine: Engine, graph: Graph, inputs: dict[str, Any], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        await engine.execute(graph, inputs)
    return (time.perf_counter() - start) / count


async def main(quick: bool) -> None:
    graphs = {"hierarchy": build_hierarchy(), "flat": build_flat()}
    inputs: dict[str, dict[str, Any]] = {"hierarchy": {"task": "t"}, "flat": {}}
    counts = {name: await steps(graph, inputs[name]) for name, graph in graphs.items()}
    engine = Engine()
    count, rounds = (10, 3) if quick else (50, 7)
    for name, graph in graphs.items():
        await seconds(engine, graph, inputs[name], count)  # warm-up
    best = dict.fromkeys(graphs, float("inf"))
    for _ in range(rounds):
        for name, graph in graphs.items():
            best[name] = min(best[name], await seconds(engine, graph, inputs[name], count))
    per_step = {name: best[name] / counts[name] * 1e6 for name in graphs}
    ratio = per_step["hierarchy"] / per_step["flat"]
    emit(
        bench=BENCH,
        case="hierarchy_40",
        value=round(per_step["hierarchy"], 2),
        unit="us/node step",
        plain_engine=round(per_step["flat"], 2),
        ratio=round(ratio, 3),
        hierarchy_steps=counts["hierarchy"],
        flat_steps=counts["flat"],
        hierarchy_ms_per_run=round(best["hierarchy"] * 1e3, 3),
        flat_ms_per_run=round(best["flat"] * 1e3, 3),
        target=2,
        ok=ratio <= 2,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    asyncio.run(main(parser.parse_args().quick))
