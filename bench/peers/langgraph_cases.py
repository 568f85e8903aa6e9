"""LangGraph on the orchestration benchmarks' no-op graphs: the peer half of the comparison.

Runs INSIDE the peer venv (it imports langgraph, not converge), and prints one JSON line per
case on stdout with the fields the converge benches use (``bench``, ``case``, ``value``,
``unit``, details, ``load_1m``) plus ``peer`` and ``peer_version``. Every node is a no-op that
returns a one-key state update. ``value`` comes from ``invoke()`` with plain ``def`` nodes, the
API LangGraph's docs lead with; ``ainvoke_*`` is the same graph with ``async def`` nodes under
``ainvoke()``, to set beside an asyncio engine. Times are the best of a few repeats, after a
warm-up; each case first checks that its graph computed the right answer.

- ``chain_50``: a 50-node linear chain; µs per node step (time / (invocations x 50)).
- ``pipeline_3``: a 3-node pipeline invoked sequentially; invocations/s.
- ``pipeline_3_sqlite``: the same, compiled with ``SqliteSaver`` on a file in a temp directory,
  each invocation on its own ``thread_id`` with ``durability="sync"`` (an ``invoke`` keyword; a
  checkpoint is committed before the next step starts, which the case checks from a second
  connection before timing); invocations/s. The async figure uses ``AsyncSqliteSaver``.
- ``fanout_100``: a start node ``Send``s to 100 no-op branches, each appending to an
  ``Annotated[list, operator.add]`` channel, then one merge node sums them; ms per invocation.

Run (the runner makes the venv): ``.venv/bin/python bench/peers/run_langgraph.py [--quick]``, or
directly ``.venv-peers/langgraph/bin/python bench/peers/langgraph_cases.py [--quick]
[--only CASE ...]``. Exits 1 if a case failed (it prints a line with ``error`` for it).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import operator
import os
import sqlite3
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

BENCH = "orchestration"
PEER = "langgraph"
CASES = ("chain_50", "pipeline_3", "pipeline_3_sqlite", "fanout_100")
CHAIN = 50
WIDTH = 100


@dataclass(frozen=True)
class Counts:
    """Invocations per timed repeat, and repeats, of one case."""

    invocations: int
    repeats: int


# The cyclic GC stays on, as in use: the full counts' longer batches pay its share (about 25%
# of fanout_100's time), which the quick counts' short batches can dodge, so quick reads lower.
FULL = {
    "chain_50": Counts(40, 5),
    "pipeline_3": Counts(2000, 3),
    "pipeline_3_sqlite": Counts(500, 3),
    "fanout_100": Counts(30, 5),
}
QUICK = {
    "chain_50": Counts(5, 2),
    "pipeline_3": Counts(200, 2),
    "pipeline_3_sqlite": Counts(50, 2),
    "fanout_100": Counts(5, 2),
}


def emit(**fields: Any) -> None:
    """One case as one JSON line, as ``bench/_common.emit`` prints it (this venv lacks it)."""
    fields.setdefault("peer", PEER)
    fields.setdefault("peer_version", version("langgraph"))
    fields.setdefault("load_1m", round(os.getloadavg()[0], 2))
    print(json.dumps(fields, separators=(", ", ": ")), flush=True)


def best_of(fn: Callable[[], object], counts: Counts) -> float:
    """Seconds per invocation: the best of ``counts.repeats`` runs of ``fn`` (one repeat each),
    after one untimed warm-up run."""
    fn()
    best = float("inf")
    for _ in range(counts.repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best / counts.invocations


async def abest_of(fn: Callable[[], Awaitable[object]], counts: Counts) -> float:
    """``best_of`` for a coroutine function, inside one event loop."""
    await fn()
    best = float("inf")
    for _ in range(counts.repeats):
        start = time.perf_counter()
        await fn()
        best = min(best, time.perf_counter() - start)
    return best / counts.invocations


# --- graphs -------------------------------------------------------------------------------


class Count(TypedDict):
    n: int


class Fan(TypedDict):
    results: Annotated[list[int], operator.add]
    total: int


def step(state: Count) -> dict[str, int]:
    return {"n": state["n"] + 1}


async def astep(state: Count) -> dict[str, int]:
    return {"n": state["n"] + 1}


def line(length: int, node: Callable[..., Any]) -> StateGraph[Any]:
    """``START -> n0 -> n1 -> ... -> END``, every node ``node``."""
    builder: StateGraph[Any] = StateGraph(Count)
    previous = START
    for i in range(length):
        builder.add_node(f"n{i}", node)
        builder.add_edge(previous, f"n{i}")
        previous = f"n{i}"
    builder.add_edge(previous, END)
    return builder


def scatter(state: Fan) -> list[Send]:
    return [Send("branch", {"i": i}) for i in range(WIDTH)]


def fanout(asynchronous: bool) -> StateGraph[Any]:
    """``START -> start -> Send x WIDTH -> branch -> merge -> END``."""

    def start(state: Fan) -> dict[str, Any]:
        return {}

    def branch(arg: dict[str, int]) -> dict[str, list[int]]:
        return {"results": [arg["i"]]}

    async def abranch(arg: dict[str, int]) -> dict[str, list[int]]:
        return {"results": [arg["i"]]}

    def merge(state: Fan) -> dict[str, int]:
        return {"total": sum(state["results"])}

    builder: StateGraph[Any] = StateGraph(Fan)
    builder.add_node("start", start)
    branch_node: Callable[..., Any] = abranch if asynchronous else branch
    builder.add_node("branch", branch_node)
    builder.add_node("merge", merge)
    builder.add_edge(START, "start")
    builder.add_conditional_edges("start", scatter, ["branch"])
    builder.add_edge("branch", "merge")
    builder.add_edge("merge", END)
    return builder


def check(case: str, got: object, want: object) -> None:
    if got != want:
        raise AssertionError(f"{case}: graph returned {got!r}, expected {want!r}")


# --- cases --------------------------------------------------------------------------------


def case_chain(counts: Counts) -> None:
    graph = line(CHAIN, step).compile()
    agraph = line(CHAIN, astep).compile()
    check("chain_50", graph.invoke({"n": 0}), {"n": CHAIN})
    check("chain_50", asyncio.run(agraph.ainvoke({"n": 0})), {"n": CHAIN})

    def run() -> None:
        for _ in range(counts.invocations):
            graph.invoke({"n": 0})

    async def arun() -> None:
        for _ in range(counts.invocations):
            await agraph.ainvoke({"n": 0})

    per_invocation = best_of(run, counts)
    aper_invocation = asyncio.run(abest_of(arun, counts))
    emit(
        bench=BENCH,
        case="chain_50",
        value=round(per_invocation / CHAIN * 1e6, 1),
        unit="us/node step",
        ms_per_invocation=round(per_invocation * 1e3, 3),
        ainvoke_us_per_node_step=round(aper_invocation / CHAIN * 1e6, 1),
        invocations=counts.invocations,
        repeats=counts.repeats,
    )


def case_pipeline(counts: Counts) -> None:
    graph = line(3, step).compile()
    agraph = line(3, astep).compile()
    check("pipeline_3", graph.invoke({"n": 0}), {"n": 3})

    def run() -> None:
        for _ in range(counts.invocations):
            graph.invoke({"n": 0})

    async def arun() -> None:
        for _ in range(counts.invocations):
            await agraph.ainvoke({"n": 0})

    per_invocation = best_of(run, counts)
    aper_invocation = asyncio.run(abest_of(arun, counts))
    emit(
        bench=BENCH,
        case="pipeline_3",
        value=round(1 / per_invocation),
        unit="invocations/s",
        ainvoke_invocations_per_s=round(1 / aper_invocation),
        invocations=counts.invocations,
        repeats=counts.repeats,
    )


# Checkpoints one 3-node run writes: the input, after START's step, after each of the 3 nodes.
CHECKPOINTS_PER_RUN = 5
# What the nodes of ``probe_line`` see under durability="sync": each step's checkpoint is in the
# file before the next step starts. Under "async" the counts race behind; under "exit" all are 0.
SYNC_SEEN = [2, 3, 4]


def committed(path: Path, thread: str) -> int:
    """Checkpoints of ``thread`` committed to the file, read through a connection of our own."""
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = ?", (thread,))
        return int(row.fetchone()[0])


def probe_line(path: Path, seen: list[int], asynchronous: bool) -> StateGraph[Any]:
    """A 3-node pipeline whose nodes record how many checkpoints of their thread are committed."""

    def probe(state: Count, config: RunnableConfig) -> dict[str, int]:
        seen.append(committed(path, config["configurable"]["thread_id"]))
        return {"n": state["n"] + 1}

    async def aprobe(state: Count, config: RunnableConfig) -> dict[str, int]:
        return probe(state, config)

    return line(3, aprobe if asynchronous else probe)


def thread(name: str) -> RunnableConfig:
    return {"configurable": {"thread_id": name}}


def case_pipeline_sqlite(counts: Counts, tmp: Path) -> None:
    path = tmp / "langgraph.db"
    ids = itertools.count()
    with SqliteSaver.from_conn_string(str(path)) as saver:
        seen: list[int] = []
        probe = probe_line(path, seen, asynchronous=False).compile(checkpointer=saver)
        out = probe.invoke({"n": 0}, thread("probe"), durability="sync")
        check("pipeline_3_sqlite", out, {"n": 3})
        check("pipeline_3_sqlite: checkpoints seen by each node", seen, SYNC_SEEN)
        runs = committed(path, "probe")
        check("pipeline_3_sqlite: checkpoints per run", runs, CHECKPOINTS_PER_RUN)
        graph = line(3, step).compile(checkpointer=saver)

        def run() -> None:
            for _ in range(counts.invocations):
                graph.invoke({"n": 0}, thread(f"t{next(ids)}"), durability="sync")

        per_invocation = best_of(run, counts)
        check("pipeline_3_sqlite: checkpoints per run", committed(path, "t0"), CHECKPOINTS_PER_RUN)
        # The saver sets WAL and leaves synchronous at SQLite's default (2 = FULL).
        journal = saver.conn.execute("PRAGMA journal_mode").fetchone()[0]
        synchronous = saver.conn.execute("PRAGMA synchronous").fetchone()[0]
        # The same with synchronous=NORMAL (a commit survives a crash of the process, not a
        # power loss): the setting converge's SQLiteStore uses by default.
        saver.conn.execute("PRAGMA synchronous = NORMAL")
        normal_per_invocation = best_of(run, counts)

    async def arun_all() -> float:
        async with AsyncSqliteSaver.from_conn_string(str(path)) as asaver:
            seen.clear()
            probe = probe_line(path, seen, asynchronous=True).compile(checkpointer=asaver)
            out = await probe.ainvoke({"n": 0}, thread("aprobe"), durability="sync")
            check("pipeline_3_sqlite (async)", out, {"n": 3})
            check("pipeline_3_sqlite (async): checkpoints seen by each node", seen, SYNC_SEEN)
            agraph = line(3, astep).compile(checkpointer=asaver)

            async def arun() -> None:
                for _ in range(counts.invocations):
                    await agraph.ainvoke({"n": 0}, thread(f"a{next(ids)}"), durability="sync")

            return await abest_of(arun, counts)

    aper_invocation = asyncio.run(arun_all())
    emit(
        bench=BENCH,
        case="pipeline_3_sqlite",
        value=round(1 / per_invocation),
        unit="invocations/s",
        ainvoke_invocations_per_s=round(1 / aper_invocation),
        normal_invocations_per_s=round(1 / normal_per_invocation),
        durability="sync",
        checkpoints_per_invocation=CHECKPOINTS_PER_RUN,
        sqlite_journal_mode=journal,
        sqlite_synchronous=synchronous,
        invocations=counts.invocations,
        repeats=counts.repeats,
    )


def case_fanout(counts: Counts) -> None:
    graph = fanout(asynchronous=False).compile()
    agraph = fanout(asynchronous=True).compile()
    want = {"results": list(range(WIDTH)), "total": sum(range(WIDTH))}
    out = graph.invoke({"results": []})
    check("fanout_100", {**out, "results": sorted(out["results"])}, want)
    out = asyncio.run(agraph.ainvoke({"results": []}))
    check("fanout_100 (async)", {**out, "results": sorted(out["results"])}, want)

    def run() -> None:
        for _ in range(counts.invocations):
            graph.invoke({"results": []})

    async def arun() -> None:
        for _ in range(counts.invocations):
            await agraph.ainvoke({"results": []})

    per_invocation = best_of(run, counts)
    aper_invocation = asyncio.run(abest_of(arun, counts))
    emit(
        bench=BENCH,
        case="fanout_100",
        value=round(per_invocation * 1e3, 3),
        unit="ms/invocation",
        ainvoke_ms_per_invocation=round(aper_invocation * 1e3, 3),
        branches=WIDTH,
        invocations=counts.invocations,
        repeats=counts.repeats,
    )


def main(args: argparse.Namespace) -> int:
    counts = QUICK if args.quick else FULL
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        runs: dict[str, Callable[[], None]] = {
            "chain_50": lambda: case_chain(counts["chain_50"]),
            "pipeline_3": lambda: case_pipeline(counts["pipeline_3"]),
            "pipeline_3_sqlite": lambda: case_pipeline_sqlite(
                counts["pipeline_3_sqlite"], Path(tmp)
            ),
            "fanout_100": lambda: case_fanout(counts["fanout_100"]),
        }
        for case in args.only or CASES:
            try:
                runs[case]()
            except Exception as exc:
                # Report and go on: one broken case should not hide the others' figures.
                traceback.print_exc(file=sys.stderr)
                emit(bench=BENCH, case=case, error=f"{type(exc).__name__}: {exc}")
                failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke test")
    parser.add_argument("--only", nargs="*", choices=CASES, help="run only these cases")
    sys.exit(main(parser.parse_args()))
