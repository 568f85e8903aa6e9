"""The HTML trace (``converge trace RUN -f html``) in a real headless chromium, driven by
Playwright: each panel holds what it draws at 1400 x 1000 and 1920 x 1080 (screenshots of
both), every edge of the graph is drawn, the nodes of a branch not taken are grey and say
why, the auction and the ballot are drawn with providers and voters by name, a click shows a
pass's details as a form, and the timeline zooms to detail and back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import Page
from typer.testing import CliRunner

from converge.cli import app
from converge.observability.render_text import STATUS_COLOURS
from converge.orchestration import ConsensusGate, Tender
from tests.observability._browser import Viewer, viewer
from tests.observability._runs import (
    REVIEW_EDGES,
    chain_run,
    failing_run,
    review_graph,
    review_run,
)

pytestmark = pytest.mark.browser

SIZES = [(1400, 1000), (1920, 1080)]
CHAIN = 300

_RECT = (
    "e => { const r = e.getBoundingClientRect();"
    " return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width}; }"
)


def _record(tmp: Path, name: str, record: Callable[[Path], Awaitable[str]]) -> Path:
    """Record a run, and write its page with the command a user types."""
    db = tmp / f"{name}.db"
    run_id = asyncio.run(record(db))
    page = tmp / f"{name}.html"
    args = ["trace", run_id, "--store", str(db), "--format", "html", "-o", str(page)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return page


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("trace")

    async def chain(db: Path) -> str:
        return await chain_run(db, CHAIN)

    return {
        "review": _record(tmp, "review", review_run),
        "failing": _record(tmp, "failing", failing_run),
        "chain": _record(tmp, "chain", chain),
    }


@pytest.fixture(scope="module")
def chromium(pages: dict[str, Path]) -> Iterator[Viewer]:
    # After the pages: Playwright's sync API runs an event loop in this thread while the
    # browser is open, and the runs are recorded with asyncio.run.
    with viewer() as opened:
        yield opened


@pytest.fixture
def review(chromium: Viewer, pages: dict[str, Path]) -> Iterator[Page]:
    yield chromium.show(pages["review"].as_uri())
    assert chromium.errors == []


def rect(page: Page, selector: str) -> dict[str, float]:
    found: dict[str, float] = page.eval_on_selector(selector, _RECT)
    return found


def rects(page: Page, selector: str) -> list[dict[str, float]]:
    found: list[dict[str, float]] = page.eval_on_selector_all(selector, f"es => es.map({_RECT})")
    return found


def inside(inner: dict[str, float], outer: dict[str, float]) -> bool:
    """Whether ``inner`` lies within ``outer`` from side to side (half a pixel of rounding)."""
    return outer["left"] - 0.5 <= inner["left"] and inner["right"] <= outer["right"] + 0.5


def rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_each_panel_holds_what_it_draws_and_the_screenshot_shows_it(
    chromium: Viewer,
    pages: dict[str, Path],
    size: tuple[int, int],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    width, height = size
    page = chromium.show(pages["review"].as_uri(), width, height)
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert page.inner_text("#details") == "Click a node or a bar."
    fits = page.eval_on_selector("#timeline-view", "v => v.scrollWidth <= v.clientWidth")
    view, bars = rect(page, "#timeline-view"), rects(page, "#timeline .bar")
    assert fits and len(bars) == 9 and all(inside(b, view) for b in bars)
    # the run spans the track: the last pass ends at its right end, not short of it
    assert max(b["right"] for b in bars) >= view["right"] - 30
    graph, nodes = rect(page, "#graph-view"), rects(page, "#graph .node")
    assert len(nodes) == 11 and all(inside(n, graph) for n in nodes)
    panel = rect(page, "#coordination-panel")
    steps = rects(page, "#coordination-panel .step")
    assert len(steps) == 7 and all(inside(s, panel) for s in steps)
    assert inside(rect(page, "#details-panel"), {"left": 0, "right": width})

    shot = tmp_path_factory.mktemp("screenshots") / f"review-{width}x{height}.png"
    page.screenshot(path=str(shot))
    image = Image.open(shot).convert("RGB")
    assert image.size == (width, height)
    colours = {colour: count for count, colour in image.getcolors(maxcolors=width * height) or []}
    assert len(colours) > 100  # text, nodes, bars: not a blank page
    # the passes' green fills most of 9 nodes and shows on 9 bars
    assert colours.get(rgb(STATUS_COLOURS["success"]), 0) >= 0.6 * 9 * 170 * 36

    page = chromium.show(pages["failing"].as_uri(), width, height)
    view, failed = rect(page, "#timeline-view"), rect(page, ".bar[data-node='bad']")
    assert inside(failed, view) and failed["width"] >= 2  # the failed pass is on screen
    assert "failed at bad: RuntimeError: disk on fire" in page.inner_text("header")
    assert chromium.errors == []


def test_a_long_run_fits_the_width_and_scrolls_down(
    chromium: Viewer, pages: dict[str, Path]
) -> None:
    page = chromium.show(pages["chain"].as_uri())
    assert page.locator("#graph .node").count() == CHAIN
    assert page.evaluate("document.documentElement.scrollWidth") <= 1400
    view, bars = rect(page, "#timeline-view"), rects(page, "#timeline .bar")
    assert len(bars) == CHAIN and all(inside(b, view) for b in bars)
    tall = page.eval_on_selector("#graph-view", "v => [v.clientHeight, v.scrollHeight]")
    assert tall[0] < 1000 < tall[1]  # the graph scrolls in its own panel
    assert chromium.errors == []


def test_every_edge_of_the_graph_is_drawn_each_into_its_own_point(review: Page) -> None:
    plan = review_graph(Tender(capability="write"), ConsensusGate("council")).compile()
    declared = sorted((plan.nodes[e.source].id, plan.nodes[e.target].id) for e in plan.edges)
    drawn = review.eval_on_selector_all(
        "#graph path.edge",
        "es => es.map(e => { const p = e.getPointAtLength(e.getTotalLength());"
        " return [e.dataset.from, e.dataset.to, e.dataset.state,"
        " getComputedStyle(e).strokeDasharray, Math.round(p.x)]; })",
    )
    assert len(drawn) == len(declared) == REVIEW_EDGES
    assert sorted((f, t) for f, t, *_ in drawn) == declared
    into_join = [row for row in drawn if row[1] == "review"]
    assert sorted(row[0] for row in into_join) == ["analyze", "deep", "lint", "quick"]
    assert len({row[4] for row in into_join}) == 4  # four ends, not one line over another
    not_taken = {(f, t) for f, t, state, *_ in drawn if state == "not_taken"}
    assert not_taken == {("route", "deep"), ("deep", "deep_report"), ("deep", "review")}
    assert all(row[3] != "none" for row in drawn if row[2] == "not_taken")  # dashed
    assert all(row[3] == "none" for row in drawn if row[2] == "taken")


def test_nodes_of_the_branch_not_taken_are_grey_and_say_why(review: Page) -> None:
    fills = review.eval_on_selector_all(
        "#graph .node",
        "ns => ns.map(n => [n.dataset.node, n.dataset.status,"
        " getComputedStyle(n.querySelector('rect')).fill, n.textContent])",
    )
    grey = {
        node: (status, text) for node, status, fill, text in fills if fill == "rgb(236, 239, 241)"
    }
    assert set(grey) == {"deep", "deep_report"}
    assert grey["deep"][0] == "untaken" and "route.output == 'deep'" in grey["deep"][1]
    assert grey["deep_report"] == ("untaken", grey["deep_report"][1])
    assert "deep not taken" in grey["deep_report"][1]
    green = "rgb({}, {}, {})".format(*rgb(STATUS_COLOURS["success"]))
    assert all(fill == green for node, _, fill, _ in fills if node not in grey)
    conditions = review.eval_on_selector_all("#graph .cond", "ts => ts.map(t => t.textContent)")
    assert sorted(conditions) == ["route.output == 'deep'", "route.output == 'quick'"]


def test_the_auction_and_the_ballot_are_drawn_with_names_prices_and_scores(review: Page) -> None:
    auction = review.locator(".auction")
    assert auction.count() == 1
    steps = auction.locator(".step").evaluate_all("ss => ss.map(s => s.className)")
    assert steps == ["step intent", "step offers", "step award", "step receipt"]
    offers = auction.locator("tr.offer").evaluate_all(
        "rs => rs.map(r => Array.from(r.cells).slice(0, 4).map(c => c.textContent))"
    )
    assert offers == [["1", "p0", "10", "10"], ["2", "p1", "11", "11"], ["3", "p2", "12", "12"]]
    assert auction.locator("tr.won").inner_text().startswith("1\tp0")
    assert "p0 at 10 USD" in auction.locator(".award").inner_text()
    assert "completed · 10 USD" in auction.locator(".receipt").inner_text()
    assert "trust of p0: success" in auction.locator(".receipt").inner_text()

    ballot = review.locator(".ballot")
    assert ballot.count() == 1
    steps = ballot.locator(".step").evaluate_all("ss => ss.map(s => s.className)")
    assert steps == ["step question", "step votes", "step outcome won"]
    votes = ballot.locator("tr.vote").evaluate_all(
        "rs => rs.map(r => [r.cells[0].textContent, r.cells[1].textContent])"
    )
    assert sorted(votes) == [["v0", "→ yes"], ["v1", "→ yes"], ["v2", "→ no"]]
    assert "yes wins · yes 2 : no 1" in ballot.locator(".outcome").inner_text()
    assert "publish it?" in ballot.locator(".question").inner_text()
    shown = review.inner_text("#coordination-panel")
    assert "did:key:z" not in shown  # names, not dids
    arrows = review.locator("#coordination-panel .arrow")
    assert arrows.count() == 5 and all(b["width"] > 0 for b in rects(review, ".arrow"))


def test_a_click_shows_the_pass_as_a_form(
    review: Page, chromium: Viewer, pages: dict[str, Path]
) -> None:
    review.click(".node[data-node='analyze']")
    form = review.inner_text("#details")
    for line in (
        "attempts\n2 (1 failed)",
        "tokens\n1500 in, 800 out",
        "tool calls\n3",
        "cost\n0.0325 USD",
        "Inputs\ningest.output\nx = 1",
        '"summary": "analysis of x = 1"',
        "Failed tries\ntry 1\nTimeoutError: model endpoint timed out",
    ):
        assert line in form, line
    assert "node_id" not in form and "tokens_in" not in form  # a form, not the raw row
    selected = review.eval_on_selector_all(".sel", "es => es.map(e => e.dataset.node)")
    assert selected == ["analyze", "analyze"]  # the node and its bar

    review.click(".node[data-node='review']")
    form = review.inner_text("#details")
    assert "quick.output\nlooks fine" in form
    assert "deep.output\nnothing (a branch not taken" in form

    review.click(".node[data-node='deep']")
    form = review.inner_text("#details")
    assert "status\nnot taken" in form and "because\nwhen route.output == 'deep'" in form
    assert "would read\nroute.output" in form

    review.click(".bar[data-node='write']")
    form = review.inner_text("#details")
    assert form.startswith("write") and "Coordination\nauction awarded: p0 at 10 USD" in form

    page = chromium.show(pages["failing"].as_uri())
    page.click(".bar[data-node='bad']")
    assert "Error\nRuntimeError: disk on fire" in page.inner_text("#details")


def test_the_timeline_zooms_to_detail_and_back(review: Page) -> None:
    def widths() -> Any:
        return review.eval_on_selector("#timeline-view", "v => [v.clientWidth, v.scrollWidth]")

    client, scroll = widths()
    assert scroll <= client
    review.click("#zoom-in")
    review.click("#zoom-in")
    client, scroll = widths()
    # the track (right of the 180 px of labels) is four times as wide
    assert scroll - 180 == pytest.approx(4 * (client - 180), abs=2)
    assert review.inner_text("#zoom-level") == "400%"
    assert review.locator("#ticks .tick").count() >= 4
    review.click("#zoom-fit")
    assert widths()[1] <= widths()[0]
    before = rect(review, ".bar[data-node='quick']")["width"]
    review.dblclick(".bar[data-node='quick']")  # a short pass: zoom until it fills the view
    view, bar = rect(review, "#timeline-view"), rect(review, ".bar[data-node='quick']")
    assert bar["width"] > 10 * before and bar["width"] >= 0.3 * (view["right"] - view["left"])
    assert inside(bar, view)
    assert review.inner_text("#details").startswith("quick")
