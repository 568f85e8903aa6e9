"""A run's coordination graph and its renderings, from a SQLite store's log."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from converge.observability import (
    printable,
    render_dot,
    render_html,
    render_mermaid,
    render_tree,
    run_graph,
)
from converge.observability.render_text import _label, _title
from converge.store import SQLiteStore
from tests.observability._hostile import HOSTILE, any_text, terminal_unsafe
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
    assert any(line.strip().startswith('subgraph s_write["write (subgraph)"]') for line in lines)
    assert "  n_review --> n_write" in lines
    assert "  n_write_2f_x --> n_write_2f_y" in lines  # write/x, write/y
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


# -- hostile names: every renderer keeps what the log holds as text ------------------------------


def synthetic(
    node_ids: list[str],
    agent: str = "agent",
    *,
    graph_id: str = "g",
    trace_id: str = "r",
    detail: str = "p1",
) -> dict[str, Any]:
    """A ``run_graph`` result holding the given names: a chain of nodes, one coordination
    object on the first node and one on no node."""
    rows = [
        {
            "node_id": node_id,
            "agent": agent,
            "status": "success" if i % 2 == 0 else "failed",
            "latency_ms": 1.0 + i,
            "iteration": 1,
            "tokens_in": 0,
            "tokens_out": 0,
            "tool_calls": 0,
            "attempts": 1,
            "depth": i,
            "run": trace_id,
            "start_time": f"2025-01-01T00:00:0{i % 10}.000000Z",
            "end_time": f"2025-01-01T00:00:0{i % 10}.500000Z",
        }
        for i, node_id in enumerate(node_ids)
    ]
    coordination = [
        {
            "type": kind,
            "id": f"{kind}:{detail}",
            "node": node,
            "status": "closed",
            "latency_ms": None,
            "detail": {"winner": detail},
        }
        for kind, node in ((agent, node_ids[0]), (graph_id, None))
    ]
    return {
        "trace_id": trace_id,
        "graph_id": graph_id,
        "status": "completed",
        "duration_ms": 10.0,
        "total_tokens": 0,
        "total_cost": 0.0,
        "nodes": rows,
        "edges": [{"from": a, "to": b} for a, b in itertools.pairwise(node_ids)],
        "coordination": coordination,
        "agents": [{"agent": agent, "nodes": len(rows), "tokens": 0, "tool_calls": 0, "cost": 0.0}],
        "runs": [],
    }


_KEY = r"[0-9A-Za-z_]+"
_LABEL = r'((?:[^"%{}<>`#&\\\x00-\x1f\x7f-\x9f]|#\d+;)*)'
_MERMAID = {
    "head": re.compile(r"flowchart LR"),
    "comment": re.compile(rf"  %% {_LABEL}"),
    "subgraph": re.compile(rf'  subgraph (s_{_KEY})\["{_LABEL}"\]'),
    "node": re.compile(rf'(?:  |    )(n_{_KEY})\["{_LABEL}"\]'),
    "end": re.compile(r"  end"),
    "edge": re.compile(rf"  (n_{_KEY}) --> (n_{_KEY})"),
    "object": re.compile(rf'  (c_\d+)\(\["{_LABEL}"\]\)'),
    "link": re.compile(rf"  (n_{_KEY}) -\.- (c_\d+)"),
    "classdef": re.compile(r"  classDef [a-z]+ fill:#[0-9a-f]{6},color:#fff"),
    "class": re.compile(rf"  class n_{_KEY}(?:,n_{_KEY})* [a-z]+"),
}


def mermaid_statements(text: str) -> list[tuple[str, re.Match[str]]]:
    """Each line of ``text`` as the one statement it is (an assertion fails on any other)."""
    statements = []
    for line in text.splitlines():
        kinds = [(k, m) for k, p in _MERMAID.items() if (m := p.fullmatch(line))]
        assert len(kinds) == 1, f"not exactly one statement: {line!r}"
        statements.append(kinds[0])
    return statements


def decoded(label: str) -> str:
    """A Mermaid label's text: its entity codes (``#34;``) read back."""
    return re.sub(r"#(\d+);", lambda m: chr(int(m[1])), label)


def check_mermaid(graph: dict[str, Any]) -> None:
    """``render_mermaid(graph)`` holds exactly the statements the graph calls for, every label
    reads back as the text it shows, and every node id has a key of its own."""
    text = render_mermaid(graph)
    assert terminal_unsafe(text, newlines=True) == []
    found: dict[str, list[re.Match[str]]] = {}
    for kind, match in mermaid_statements(text):
        found.setdefault(kind, []).append(match)
    ids = list(dict.fromkeys(n["node_id"] for n in graph["nodes"]))
    paths = {i.rpartition("/")[0] for i in ids} - {""}
    assert [m[0] for m in found["head"]] == ["flowchart LR"]
    assert [decoded(m[1]) for m in found["comment"]] == [
        f"run {graph['trace_id']} of graph {graph['graph_id']}"
    ]
    assert sorted(decoded(m[2]) for m in found.get("subgraph", [])) == sorted(
        f"{p} (subgraph)" for p in paths
    )
    assert len(found.get("end", [])) == len(paths)
    labels = {m[1]: decoded(m[2]) for m in found["node"]}
    assert len(labels) == len(ids)  # one key per node id, no two alike
    agent = graph["nodes"][0]["agent"]
    assert sorted(labels.values()) == sorted(
        f"{n['node_id'].rsplit('/', 1)[-1]} · {agent} · {n['status']} · {n['latency_ms']:.0f} ms"
        for n in {n["node_id"]: n for n in graph["nodes"]}.values()
    )
    assert len(found.get("edge", [])) == len(graph["edges"])
    assert len(found["object"]) == len(graph["coordination"])
    assert len(found.get("link", [])) == sum(o["node"] is not None for o in graph["coordination"])
    assert {m[1] for m in found.get("edge", [])} | {m[2] for m in found.get("edge", [])} <= set(
        labels
    )


_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')  # DOT's quoted string: \" inside it, \\ a pair
_DOT = [
    re.compile(p)
    for p in (
        r"digraph run \{",
        r"  rankdir=LR;",
        r"  label=Q;",
        r"  node \[shape=box, style=Q, fontcolor=white, fontname=Q\];",
        rf"  subgraph cluster_n_{_KEY} \{{",
        r"    label=Q;",
        rf"(?:  |    )n_{_KEY} \[label=Q, fillcolor=Q\];",
        r"  \}",
        rf"  n_{_KEY} -> n_{_KEY};",
        r"  c_\d+ \[label=Q, shape=note, style=filled, fillcolor=Q, fontcolor=black\];",
        rf"  n_{_KEY} -> c_\d+ \[style=dashed, arrowhead=none\];",
        r"\}",
    )
]


def check_dot(graph: dict[str, Any]) -> None:
    """``render_dot(graph)``: each line one statement once its quoted strings are set aside,
    and each quoted string the text it shows, control characters as escapes."""
    text = render_dot(graph)
    assert terminal_unsafe(text, newlines=True) == []
    strings: list[str] = []
    for line in text.splitlines():
        strings += [json.loads(q) for q in _QUOTED.findall(line)]
        skeleton = _QUOTED.sub("Q", line)
        assert sum(bool(p.fullmatch(skeleton)) for p in _DOT) == 1, line
    assert printable(_title(graph)) in strings
    for row in graph["nodes"]:
        assert printable(_label(row)) in strings


async def test_mermaid_and_dot_keep_hostile_names_inside_their_labels() -> None:
    names = [HOSTILE, "up", "a-b", "a_b", "a/b", f"sub/{HOSTILE}", "end"]
    graph = synthetic(names, HOSTILE, graph_id=HOSTILE, trace_id=HOSTILE, detail=HOSTILE)
    check_mermaid(graph)
    check_dot(graph)
    text = render_mermaid(graph)
    assert not any(line.lstrip().startswith(("click", "%%{")) for line in text.splitlines())


@given(
    st.lists(any_text.filter(bool), min_size=1, max_size=4, unique=True),
    any_text,
    any_text,
    any_text,
)
def test_mermaid_and_dot_hold_any_names_as_text(
    names: list[str], agent: str, graph_id: str, detail: str
) -> None:
    graph = synthetic(names, agent, graph_id=graph_id, trace_id=graph_id[::-1], detail=detail)
    check_mermaid(graph)
    check_dot(graph)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_graphviz_reads_the_hostile_dot_as_the_nodes_drawn() -> None:
    names = [HOSTILE, "up", f"sub/{HOSTILE}"]
    graph = synthetic(names, HOSTILE, graph_id=HOSTILE, detail=HOSTILE)
    drawn = subprocess.run(
        ["dot", "-Tjson"], input=render_dot(graph), capture_output=True, text=True, check=True
    ).stdout
    objects = json.loads(drawn)["objects"]
    nodes = {o["name"] for o in objects if "nodes" not in o}  # not a cluster
    assert len(nodes) == len(names) + len(graph["coordination"])
    # the label as drawn, a doubled backslash (escString) read as one
    [label] = [o["label"].replace("\\\\", "\\") for o in objects if o["name"] == "n_up"]
    assert label == printable(_label(graph["nodes"][1]))


def test_html_and_tree_show_hostile_names_as_text() -> None:
    names = [HOSTILE, "up", f"sub/{HOSTILE}"]
    graph = synthetic(names, HOSTILE, graph_id=HOSTILE, trace_id=HOSTILE, detail=HOSTILE)
    text = render_html(graph)
    assert terminal_unsafe(text, newlines=True) == []
    page = _Page()
    page.feed(text)
    assert [n["data-node"] for n in page.nodes] == [printable(n) for n in names]
    assert len(page.bars) == len(names) and page.links == []
    assert [n["node_id"] for n in json.loads(page.data)["nodes"]] == names  # the exact values
    console = Console(record=True, width=400, emoji=False, highlight=False)
    console.print(render_tree(graph))
    shown = console.export_text()
    assert terminal_unsafe(shown, newlines=True) == []
    assert printable(HOSTILE) in shown  # markup and all, as text
