"""The HTML trace in a real headless chromium, driven over the DevTools protocol: the nodes
are drawn in their status colours (read off a screenshot), a click shows a node's details, and
a long run's page keeps its width."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from converge.observability import render_html, run_graph
from converge.observability.render_text import STATUS_COLOURS
from converge.store import SQLiteStore
from tests.observability._chromium import Chromium
from tests.observability._runs import chain_run, failing_run, subgraph_run

pytestmark = pytest.mark.browser

NODE_AREA = 170 * 36  # a node's rect in the graph, in CSS px


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    with Chromium(width=1280, height=900) as chromium:
        yield chromium


async def page_of(tmp_path: Path, record: Any, *args: Any) -> tuple[Path, dict[str, Any]]:
    db = tmp_path / "runs.db"
    run_id = await record(db, *args)
    async with await SQLiteStore.open(db) as store:
        graph = run_graph(list(await store.read(trace_id=run_id)), run_id)
    page = tmp_path / "run.html"
    page.write_text(render_html(graph), encoding="utf-8")
    return page, graph


def rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def graph_pixels(browser: Chromium) -> Counter[tuple[int, int, int]]:
    """How many pixels of each colour the screenshot shows inside the graph's viewport (so not
    the legend's nor the timeline's, which use the same colours)."""
    box = browser.evaluate(
        "(function(){var r=document.getElementById('graph').parentElement"
        ".getBoundingClientRect();return [r.left,r.top,r.right,r.bottom];})()"
    )
    shot = Image.open(io.BytesIO(browser.screenshot())).convert("RGB")
    assert shot.size == (1280, 900)
    left, top, right, bottom = (round(v) for v in box)
    crop = shot.crop((max(left, 0), max(top, 0), min(right, 1280), min(bottom, 900)))
    colours = crop.getcolors(maxcolors=crop.width * crop.height) or []
    return Counter({colour: count for count, colour in colours})


def centre_of(browser: Chromium, node: str) -> tuple[float, float]:
    """Scroll ``node`` into the graph's viewport, as a user would; its centre on screen."""
    x, y = browser.evaluate(
        f"(function(){{var n=document.querySelector('.node[data-node=\"{node}\"]');"
        "n.scrollIntoView({block:'center',inline:'center'});var r=n.getBoundingClientRect();"
        "return [r.left+r.width/2,r.top+r.height/2];})()"
    )
    return x, y


async def test_screenshot_shows_each_status_of_the_run_in_its_colour(
    browser: Chromium, tmp_path: Path
) -> None:
    page, graph = await page_of(tmp_path, failing_run)
    browser.open(page.as_uri())
    pixels = graph_pixels(browser)
    statuses = Counter(n["status"] for n in graph["nodes"])
    assert statuses == {"success": 1, "failed": 1}
    for status, nodes in statuses.items():
        # most of each node's rect is fill; its text and border take the rest
        assert pixels[rgb(STATUS_COLOURS[status])] >= 0.6 * NODE_AREA * nodes, status
    for status in ("waiting", "running", "skipped"):
        assert pixels[rgb(STATUS_COLOURS[status])] == 0, status


async def test_clicking_a_node_shows_its_trace_row_and_coordination(
    browser: Chromium, tmp_path: Path
) -> None:
    page, _ = await page_of(tmp_path, failing_run)
    browser.open(page.as_uri())
    x, y = centre_of(browser, "bad")
    assert browser.evaluate("document.getElementById('details').textContent") == (
        "Click a node or a bar."
    )
    browser.click(x, y)
    details = browser.evaluate("JSON.parse(document.getElementById('details').textContent)")
    assert details["node"]["node_id"] == "bad"
    assert details["node"]["status"] == "failed"
    assert "disk on fire" in str(details["node"])
    assert details["coordination"] == []
    selected = browser.evaluate(
        "Array.from(document.querySelectorAll('.sel')).map(function(e){"
        "return e.tagName+':'+e.getAttribute('data-node');})"
    )
    assert sorted(selected) == ["g:bad", "rect:bad"]  # the node and its timeline bar


async def test_clicking_a_subgraph_node_shows_the_nested_pass(
    browser: Chromium, tmp_path: Path
) -> None:
    page, graph = await page_of(tmp_path, subgraph_run)
    browser.open(page.as_uri())
    x, y = centre_of(browser, "write/y")
    browser.click(x, y)
    details = browser.evaluate("JSON.parse(document.getElementById('details').textContent)")
    assert details["node"]["node_id"] == "write/y"
    assert details["node"]["run"] == f"{graph['trace_id']}/write/1"


async def test_a_1000_node_chain_is_drawn_without_widening_the_page(
    browser: Chromium, tmp_path: Path
) -> None:
    page, _ = await page_of(tmp_path, chain_run, 1000)
    browser.open(page.as_uri())
    assert browser.evaluate("document.querySelectorAll('#graph .node').length") == 1000
    # the page is as wide as the window: the graph scrolls inside its own viewport
    assert browser.evaluate("document.documentElement.scrollWidth") <= 1280
    viewport = browser.evaluate(
        "(function(){var v=document.getElementById('graph').parentElement;"
        "return [v.clientHeight, v.scrollHeight];})()"
    )
    assert viewport[0] < 900 < viewport[1]
    pixels = graph_pixels(browser)
    # the viewport shows several full bands of nodes, all done
    assert pixels[rgb(STATUS_COLOURS["success"])] >= 0.6 * NODE_AREA * 10
    assert pixels[rgb(STATUS_COLOURS["failed"])] == 0
