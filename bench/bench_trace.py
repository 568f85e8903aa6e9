"""``converge trace --format html`` on a run of 1,000 nodes (issue 8). Targets: written in <= 2 s;
opened and drawn in headless chromium in <= 3 s.

Cases, each one JSON line; the run is made once per shape with the engine, in a temporary
SQLite store, with no-op ``async def`` nodes:

- ``html_chain_1000``: a 1,000-node chain (1,000 layers in the graph);
- ``html_fanout_1000``: one node fans out to 998 branches, one node joins them (1,000 rows of
  concurrency on the timeline);

each timed (best of 5) from opening the store to the HTML file written: read the trace, fold
it into the run's model (``RunModel``), render, write. ``cli_fanout_1000`` runs the command itself
(``converge trace RUN --format html -o FILE`` in a new process, once), interpreter start-up
and imports included.

Then the two pages in Debian's headless ``chromium`` (each case skipped, with the reason, when
there is no ``chromium`` binary on ``PATH``):

- ``chromium_blank``: ``chromium --headless --screenshot`` of an empty page (wall time, best
  of 3): the browser's own start-up and exit, for scale;
- ``chromium_screenshot_{chain,fanout}_1000``: the same command on the trace's page: start
  chromium, open the file, draw it, write a 1,280 x 900 PNG, exit (best of 3);
- ``chromium_draw_{chain,fanout}_1000``: in a chromium already running, driven by Playwright
  (``tests/observability/_browser.py``; ``playwright`` is in ``dev``): from navigation to the
  page's ``<body data-drawn="1">``, set after its first paint (best of 5).

Run: ``.venv/bin/python bench/bench_trace.py``
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import best_of, emit
from converge.observability import RunModel, render_html
from converge.orchestration import Engine, Graph
from converge.store import SQLiteStore

BENCH = "trace"
N = 1000
TARGET_S = 2.0
BROWSER_TARGET_S = 3.0
ROOT = Path(__file__).resolve().parents[1]


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
    view = RunModel(run_id).add(asyncio.run(read(path, run_id))).view()
    out.write_text(render_html(view), encoding="utf-8")
    return len(view.nodes)


def screenshot(chromium: str, page: Path, png: Path) -> None:
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={png}",
            "--window-size=1280,900",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    if not png.stat().st_size:
        raise RuntimeError(f"chromium wrote an empty screenshot of {page}")


def browser_cases(pages: dict[str, Path], tmp: Path) -> None:
    chromium = shutil.which("chromium")
    cases = ["chromium_blank"]
    cases += [f"chromium_{how}_{name}" for how in ("screenshot", "draw") for name in pages]
    if chromium is None:
        for case in cases:
            emit(bench=BENCH, case=case, value=None, unit="s", skipped="no chromium on PATH")
        return
    blank = tmp / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>\n", encoding="utf-8")
    png = tmp / "shot.png"
    seconds = best_of(lambda: screenshot(chromium, blank, png), repeat=3)
    emit(bench=BENCH, case="chromium_blank", value=round(seconds, 4), unit="s")
    for name, page in pages.items():
        seconds = best_of(lambda: screenshot(chromium, page, png), repeat=3)  # noqa: B023
        emit(
            bench=BENCH,
            case=f"chromium_screenshot_{name}",
            value=round(seconds, 4),
            unit="s",
            target=BROWSER_TARGET_S,
            ok=seconds <= BROWSER_TARGET_S,
        )
    sys.path.insert(0, str(ROOT))  # the Playwright helper lives with the tests
    try:
        from tests.observability._browser import viewer
    except ImportError as exc:  # playwright: in dev, not in a plain install
        for name in pages:
            emit(bench=BENCH, case=f"chromium_draw_{name}", value=None, unit="s", skipped=str(exc))
        return
    with viewer() as browser:
        for name, page in pages.items():
            nodes = 0

            def draw(page: Path = page) -> None:
                nonlocal nodes
                shown = browser.show(page.as_uri(), 1280, 900)
                nodes = shown.locator("#graph .node").count()

            seconds = best_of(draw)
            emit(
                bench=BENCH,
                case=f"chromium_draw_{name}",
                value=round(seconds, 4),
                unit="s",
                nodes_drawn=nodes,
                target=BROWSER_TARGET_S,
                ok=seconds <= BROWSER_TARGET_S and nodes == N,
            )


def main() -> None:
    pages: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case, graph in (("html_chain_1000", chain()), ("html_fanout_1000", fanout())):
            db = Path(tmp) / f"{case}.db"
            out = Path(tmp) / f"{case}.html"
            run_id = asyncio.run(record(db, graph))
            nodes = write_html(db, run_id, out)
            pages[case.removeprefix("html_")] = out
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
        browser_cases(pages, Path(tmp))


if __name__ == "__main__":
    main()
