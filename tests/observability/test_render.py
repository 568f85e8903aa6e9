"""A run's coordination graph and its renderings, from a SQLite store's log."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from converge.observability import (
    render_dot,
    render_html,
    render_mermaid,
    render_tree,
    run_graph,
)
from converge.store import SQLiteStore
from tests.observability._runs import add_coordination, chain_run, failing_run, subgraph_run


async def graph_of(path: Path, run_id: str) -> dict[str, Any]:
    async with await SQLiteStore.open(path) as store:
        return run_graph(list(await store.read(trace_id=run_id)), run_id)


@pytest.fixture
async def recorded(tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "runs.db"
    run_id = await subgraph_run(path)
    await add_coordination(path, run_id)
    return await graph_of(path, run_id)


async def test_graph_holds_nodes_nested_runs_edges_and_depths(recorded: dict[str, Any]) -> None:
    nodes = {n["node_id"]: n for n in recorded["nodes"]}
    assert set(nodes) == {"analyze", "lint", "review", "write", "write/x", "write/y"}
    assert recorded["graph_id"] == "code_review"
    assert recorded["status"] == "completed"
    run_id = recorded["trace_id"]
    assert nodes["write/x"]["run"] == f"{run_id}/write/1"
    assert recorded["runs"] == [
        {"run_id": f"{run_id}/write/1", "node": "write", "graph": "child", "status": "completed"}
    ]
    edges = {(e["from"], e["to"]) for e in recorded["edges"]}
    assert {("review", "write"), ("write/x", "write/y")} <= edges
    assert ("analyze", "review") in edges or ("lint", "review") in edges
    assert [nodes[n]["depth"] for n in ("analyze", "review", "write", "write/x", "write/y")] == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert nodes["analyze"]["tokens_in"] == 1500
    agents = {a["agent"]: a for a in recorded["agents"]}
    assert agents["analyze"]["tokens"] == 2300
    assert agents["analyze"]["tool_calls"] == 3


async def test_coordination_objects_are_folded_and_attached_to_their_nodes(
    recorded: dict[str, Any],
) -> None:
    objs = {(o["type"], o["node"]): o for o in recorded["coordination"]}
    assert set(objs) == {
        ("intent", "analyze"),
        ("offer", "analyze"),
        ("award", "analyze"),
        ("receipt", "analyze"),
        ("task", "lint"),
        ("ballot", "review"),
        ("vote", "review"),
    }
    assert objs[("intent", "analyze")]["status"] == "awarded"
    assert objs[("award", "analyze")]["detail"]["winner"] == "p1"
    assert objs[("offer", "analyze")]["detail"] == {"provider": "p1", "cost": 3.0}
    task = objs[("task", "lint")]
    assert task["status"] == "completed"
    assert task["events"] == 3
    assert task["latency_ms"] == pytest.approx(2000.0)  # submitted at t+4, completed at t+6
    assert objs[("ballot", "review")]["status"] == "closed"
    assert objs[("vote", "review")]["detail"]["option"] == "yes"


async def test_a_run_stored_with_the_gate_s_ballot_in_its_own_trace_still_renders(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    run_id = await subgraph_run(path)
    await add_coordination(path, run_id, ballot_trace=f"gate/{run_id}/review/1")
    graph = await graph_of(path, run_id)
    types = {o["type"] for o in graph["coordination"]}
    assert types == {"intent", "offer", "award", "receipt", "task"}  # no ballot, no vote
    assert "review" in {n["node_id"] for n in graph["nodes"]}
    assert render_mermaid(graph).startswith("flowchart LR")
    assert render_dot(graph).startswith("digraph run {")
    assert render_html(graph).startswith("<!DOCTYPE html>")
    console = Console(record=True, width=120)
    console.print(render_tree(graph))
    assert "review" in console.export_text()


async def test_mermaid_draws_nodes_subgraph_edges_objects_and_status(
    recorded: dict[str, Any],
) -> None:
    text = render_mermaid(recorded)
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    assert any(
        line.strip().startswith('subgraph n_sub_write["write (subgraph)"]') for line in lines
    )
    assert "  n_review --> n_write" in lines
    assert "    n_write_x --> n_write_y" not in lines and "  n_write_x --> n_write_y" in lines
    assert any(
        line.startswith("  c_") and "award:" in line and "winner p1" in line for line in lines
    )
    assert "  n_lint -.- c_4" in lines or any("n_lint -.-" in line for line in lines)
    assert any(line.startswith("  class ") and line.endswith(" success") for line in lines)


async def test_dot_is_a_digraph_with_a_cluster_per_subgraph(recorded: dict[str, Any]) -> None:
    text = render_dot(recorded)
    assert text.startswith("digraph run {") and text.rstrip().endswith("}")
    assert "subgraph cluster_n_write {" in text
    assert "n_review -> n_write;" in text
    assert 'n_analyze [label="analyze · analyze · success' in text
    assert 'fillcolor="#2e7d32"' in text
    assert "[style=dashed, arrowhead=none]" in text
    assert text.count("{") == text.count("}")


async def test_tree_nests_subgraph_nodes_and_shows_objects(recorded: dict[str, Any]) -> None:
    console = Console(record=True, width=160, emoji=False, highlight=False)
    console.print(render_tree(recorded))
    text = console.export_text()
    lines = text.splitlines()
    write = next(i for i, line in enumerate(lines) if "write [write]" in line)
    x = next(i for i, line in enumerate(lines) if "x [x]" in line)
    indent = len(lines[write]) - len(lines[write].lstrip("│ ├└─"))
    assert x > write and len(lines[x]) - len(lines[x].lstrip("│ ├└─")) > indent
    assert "tokens 1500+800" in text
    assert "award " in text and "winner p1" in text
    assert "ballot " in text and "vote " in text
    assert "agents" in text


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.svgs: dict[str, dict[str, str | None]] = {}
        self.nodes: list[dict[str, str | None]] = []
        self.bars: list[dict[str, str | None]] = []
        self.scripts: list[dict[str, str | None]] = []
        self.links: list[str] = []
        self._script: dict[str, str | None] | None = None
        self.data: str = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "svg":
            self.svgs[str(a.get("id"))] = a
        if tag == "g" and a.get("class") == "node":
            self.nodes.append(a)
        elif tag == "rect" and a.get("class") == "bar":
            self.bars.append(a)
        elif tag == "script":
            self.scripts.append(a)
            self._script = a
        for key in ("src", "href"):
            if a.get(key):
                self.links.append(str(a[key]))

    def handle_data(self, data: str) -> None:
        if self._script is not None and self._script.get("id") == "trace-data":
            self.data += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = None


async def test_html_is_self_contained_with_nodes_timeline_and_details(
    recorded: dict[str, Any],
) -> None:
    page = _Page()
    page.feed(render_html(recorded))
    assert sorted(str(n["data-node"]) for n in page.nodes) == sorted(
        n["node_id"] for n in recorded["nodes"]
    )
    assert {n["data-status"] for n in page.nodes} == {"success"}
    assert len(page.bars) == len(recorded["nodes"])
    assert all(float(str(b["width"])) > 0 for b in page.bars)
    assert page.links == []  # no CDN, no external script or style
    assert all("src" not in s for s in page.scripts)
    embedded = json.loads(page.data)
    assert [n["node_id"] for n in embedded["nodes"]] == [n["node_id"] for n in recorded["nodes"]]
    assert len(embedded["coordination"]) == 7


async def test_html_colours_a_failed_node(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    run_id = await failing_run(path)
    page = _Page()
    page.feed(render_html(await graph_of(path, run_id)))
    assert {str(n["data-node"]): n["data-status"] for n in page.nodes} == {
        "ok": "success",
        "bad": "failed",
    }


async def test_html_escapes_what_the_log_holds(recorded: dict[str, Any]) -> None:
    recorded["nodes"][0]["node_id"] = "<script>alert(1)</script>"
    recorded["nodes"][0]["agent"] = "</script><b>"
    text = render_html(recorded)
    assert "<script>alert(1)" not in text
    assert "</script><b>" not in text


def _corner(node: dict[str, str | None]) -> tuple[float, float]:
    x, y = str(node["transform"]).removeprefix("translate(").removesuffix(")").split(",")
    return float(x), float(y)


async def test_html_wraps_a_long_chain_into_bands_of_capped_width(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    run_id = await chain_run(path, 23)
    page = _Page()
    page.feed(render_html(await graph_of(path, run_id)))
    at = {str(n["data-node"]): _corner(n) for n in page.nodes}
    assert len(at) == 23
    # 23 layers in bands of 4 columns: 4 columns wide, 6 bands tall, not 23 columns wide.
    assert float(str(page.svgs["graph"]["width"])) == 2 * 20 + 4 * 200
    assert len({x for x, _ in at.values()}) == 4
    assert len({y for _, y in at.values()}) == 6
    # read like text: left to right along a band, then the next band below
    order = sorted(at, key=lambda n: (at[n][1], at[n][0]))
    assert order == [f"n{i}" for i in range(23)]
    # the SVG holds every node, and no two overlap
    height = float(str(page.svgs["graph"]["height"]))
    assert all(0 <= y and y + 36 <= height for _, y in at.values())
    assert all(
        abs(a[0] - b[0]) >= 170 or abs(a[1] - b[1]) >= 36
        for a, b in itertools.combinations(at.values(), 2)
    )


@pytest.mark.browser
def test_html_draws_nodes_in_a_headless_browser(recorded: dict[str, Any], tmp_path: Path) -> None:
    page = tmp_path / "run.html"
    page.write_text(render_html(recorded), encoding="utf-8")
    chromium = shutil.which("chromium")
    assert chromium is not None
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    parsed = _Page()
    parsed.feed(dom)
    assert len(parsed.nodes) == len(recorded["nodes"])
    assert len(parsed.bars) == len(recorded["nodes"])
