"""``converge trace --format html`` on a run of 1,000 nodes (issue 8). Target: written in <= 2 s.

Cases, each one JSON line; the run is made once per shape with the engine, in a temporary
SQLite store, with no-op ``async def`` nodes:

- ``html_chain_1000``: a 1,000-node chain (1,000 layers in the graph);
- ``html_fanout_1000``: one node fans out to 998 branches, one node joins them (1,000 rows of
  concurrency on the timeline);

each timed (best of 5) from opening the store to the HTML file written: read the trace, build
the coordination graph, render, write. ``cli_fanout_1000`` runs the command itself
(``converge trace RUN --format html -o FILE`` in a new process, once), interpreter start-up
and imports included.

Run: ``.venv/bin/python bench/bench_trace.py``
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import best_of, emit
from converge.observability import render_html, run_graph
from converge.orchestration import Engine, Graph
from converge.store import SQLiteStore

BENCH = "trace"
N = 1000
TARGET_S = 2.0


async def step(inputs: dict[str, Any]) -> int:
    return len(inputs)


def chain() -> Graph:
    g = Graph("chain_1000")
    for i in range(N):
        g.add_node(f"n{i}", step)
        if i:
            g.connect(f"n{i - 1}", f"n{i}")
    return g


def fanout() -> Graph:
    g = Graph("fanout_1000").add_node("source", step).add_node("join", step)
    for i in range(N - 2):
        g.add_node(f"b{i}", step).connect("source", f"b{i}").connect(f"b{i}", "join")
    return g


async def record(path: Path, graph: Graph) -> str:
    async with await SQLiteStore.open(path) as store:
        result = await Engine(store).execute(graph, {})
    return result.run_id


async def read(path: Path, run_id: str) -> list[Any]:
    async with await SQLiteStore.open(path, create=False) as store:
        return list(await store.read(trace_id=run_id))


def write_html(path: Path, run_id: str, out: Path) -> int:
    graph = run_graph(asyncio.run(read(path, run_id)), run_id)
    out.write_text(render_html(graph), encoding="utf-8")
    return len(graph["nodes"])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for case, graph in (("html_chain_1000", chain()), ("html_fanout_1000", fanout())):
            db = Path(tmp) / f"{case}.db"
            out = Path(tmp) / f"{case}.html"
            run_id = asyncio.run(record(db, graph))
            nodes = write_html(db, run_id, out)
            seconds = best_of(lambda: write_html(db, run_id, out))  # noqa: B023
            emit(
                bench=BENCH,
                case=case,
                value=round(seconds, 4),
                unit="s",
                nodes=nodes,
                html_bytes=out.stat().st_size,
                target=TARGET_S,
                ok=seconds <= TARGET_S,
            )
        converge = Path(sys.executable).with_name("converge")
        out = Path(tmp) / "cli.html"
        db = Path(tmp) / "html_fanout_1000.db"
        run_id = asyncio.run(record(db, fanout()))
        start = time.perf_counter()
        subprocess.run(
            [str(converge), "trace", run_id, "--store", str(db), "-f", "html", "-o", str(out)],
            check=True,
            capture_output=True,
        )
        seconds = time.perf_counter() - start
        emit(
            bench=BENCH,
            case="cli_fanout_1000",
            value=round(seconds, 4),
            unit="s",
            target=TARGET_S,
            ok=seconds <= TARGET_S,
        )


if __name__ == "__main__":
    main()
