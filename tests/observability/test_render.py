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

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from converge.observability import (
    RunModel,
    RunView,
    printable,
    render_dot,
    render_html,
    render_mermaid,
    render_tree,
    run_graph,
)
from converge.observability.render_text import _label, _title
from converge.observability.run_model import (
    AgentUse,
    AuctionView,
    AwardView,
    BallotView,
    EdgeView,
    NodeView,
    OfferView,
    Pass,
    VoteView,
)
from converge.store import SQLiteStore
from tests.observability._hostile import HOSTILE, any_text, terminal_unsafe
from tests.observability._runs import add_coordination, chain_run, failing_run, subgraph_run


async def graph_of(path: Path, run_id: str) -> dict[str, Any]:
    async with await SQLiteStore.open(path) as store:
        return run_graph(list(await store.read(trace_id=run_id)), run_id)


async def view_of(path: Path, run_id: str) -> RunView:
    async with await SQLiteStore.open(path) as store:
        return RunModel(run_id).add(await store.read(trace_id=run_id)).view()


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
    assert {("analyze", "review"), ("lint", "review")} <= edges  # both edges into the join
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
    round_id = f"tender:{recorded['trace_id']}/analyze/1:1"
    assert objs[("offer", "analyze")]["detail"] == {
        "auction": round_id,
        "provider": "p1",
        "cost": 3.0,
    }
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
    assert render_html(await view_of(path, run_id)).startswith("<!DOCTYPE html>")
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
        self.edges: list[dict[str, str | None]] = []
        self.scripts: list[dict[str, str | None]] = []
        self.links: list[str] = []
        self._script: dict[str, str | None] | None = None
        self.data: str = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "svg":
            self.svgs[str(a.get("id"))] = a
        if tag == "g" and str(a.get("class")).split()[0] == "node":
            self.nodes.append(a)
        elif tag == "div" and a.get("class") == "bar":
            self.bars.append(a)
        elif tag == "path" and str(a.get("class")).startswith("edge"):
            self.edges.append(a)
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


async def test_html_is_self_contained_with_nodes_edges_timeline_and_data(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    run_id = await subgraph_run(path)
    await add_coordination(path, run_id)
    view = await view_of(path, run_id)
    page = _Page()
    page.feed(render_html(view))
    assert sorted(str(n["data-node"]) for n in page.nodes) == sorted(n.id for n in view.nodes)
    assert {n["data-status"] for n in page.nodes} == {"success"}
    # every edge: the join's two, the subgraph's own
    assert sorted((str(e["data-from"]), str(e["data-to"])) for e in page.edges) == [
        ("analyze", "review"),
        ("lint", "review"),
        ("review", "write"),
        ("write/x", "write/y"),
    ]
    assert len(page.bars) == len(view.passes) == 6
    assert page.links == []  # no CDN, no external script or style
    assert all("src" not in s for s in page.scripts)
    embedded = json.loads(page.data)
    assert [p["node"] for p in embedded["passes"]] == [p.node for p in view.passes]
    assert len(embedded["coordination"]) == 7
    assert [a["id"] for a in embedded["auctions"]] == [f"tender:{run_id}/analyze/1:1"]


async def test_html_colours_a_failed_node(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    run_id = await failing_run(path)
    page = _Page()
    page.feed(render_html(await view_of(path, run_id)))
    assert {str(n["data-node"]): n["data-status"] for n in page.nodes} == {
        "ok": "success",
        "bad": "failed",
    }


def _corner(node: dict[str, str | None]) -> tuple[float, float]:
    x, y = str(node["transform"]).removeprefix("translate(").removesuffix(")").split(",")
    return float(x), float(y)


async def test_html_lays_a_graph_out_in_layers_of_capped_width(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    run_id = await chain_run(path, 23)
    page = _Page()
    page.feed(render_html(await view_of(path, run_id)))
    at = {str(n["data-node"]): _corner(n) for n in page.nodes}
    assert len(at) == 23
    # a chain is one column, read top to bottom
    assert len({x for x, _ in at.values()}) == 1
    assert sorted(at, key=lambda n: at[n][1]) == [f"n{i}" for i in range(23)]
    # a wide layer wraps into lines of 4: the SVG's width is capped
    nodes = [synthetic_node(f"b{i}", depth=1) for i in range(10)] + [synthetic_node("a")]
    page = _Page()
    page.feed(render_html(synthetic_view(nodes, [])))
    assert float(str(page.svgs["graph"]["width"])) == 2 * 20 + 4 * 200 - 30
    at = {str(n["data-node"]): _corner(n) for n in page.nodes}
    assert len({x for n, (x, _) in at.items() if n != "a"}) == 4
    assert len({y for n, (_, y) in at.items() if n != "a"}) == 3  # 4 + 4 + 2
    height = float(str(page.svgs["graph"]["height"]))
    assert all(0 <= y and y + 36 <= height for _, y in at.values())
    assert all(
        abs(a[0] - b[0]) >= 170 or abs(a[1] - b[1]) >= 36
        for a, b in itertools.combinations(at.values(), 2)
    )


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
    view = synthetic_view(
        [synthetic_node(n, depth=i, agent=HOSTILE) for i, n in enumerate(names)]
        + [synthetic_node(f"not/{HOSTILE}", depth=3, status="untaken", condition=HOSTILE)],
        [
            EdgeView(source=a, target=b, when=HOSTILE, back=False, state="taken")
            for a, b in itertools.pairwise([*names, f"not/{HOSTILE}"])
        ],
        hostile=HOSTILE,
    )
    text = render_html(view)
    assert terminal_unsafe(text, newlines=True) == []
    assert "<script>alert" not in text and "</script><b>" not in text
    page = _Page()
    page.feed(text)
    assert [n["data-node"] for n in page.nodes] == [printable(n.id) for n in view.nodes]
    assert len(page.bars) == len(names) and page.links == []
    assert len(page.edges) == len(names)
    assert [p["node"] for p in json.loads(page.data)["passes"]] == names  # the exact values
    console = Console(record=True, width=400, emoji=False, highlight=False)
    console.print(render_tree(graph))
    shown = console.export_text()
    assert terminal_unsafe(shown, newlines=True) == []
    assert printable(HOSTILE) in shown  # markup and all, as text


def synthetic_node(
    node_id: str,
    *,
    depth: int = 0,
    agent: str = "agent",
    status: str = "success",
    condition: str | None = None,
) -> NodeView:
    return NodeView(
        id=node_id,
        agent=agent,
        run="r",
        status=status,
        depth=depth,
        passes=(),
        inputs=None,
        condition=condition,
    )


def synthetic_view(nodes: list[NodeView], edges: list[EdgeView], *, hostile: str = "x") -> RunView:
    """A view of ``nodes`` (each that has not a grey status with one pass) and ``edges``,
    an auction and a ballot, every name ``hostile``."""
    passes: list[Pass] = []
    ran: list[NodeView] = []
    for node in nodes:
        if node.status in ("untaken", "not_run", "pending"):
            ran.append(node)
            continue
        passes.append(
            Pass(
                index=len(passes),
                node=node.id,
                iteration=1,
                agent=node.agent,
                status=node.status,
                run="r",
                start_time=f"2025-01-01T00:00:0{len(passes) % 10}.000000Z",
                end_time=f"2025-01-01T00:00:0{len(passes) % 10}.500000Z",
                latency_ms=500.0,
                attempts=2,
                tokens_in=1,
                tokens_out=2,
                tool_calls=0,
                cost=0.5,
                inputs={hostile: hostile},
                missing_inputs=(hostile,),
                output=hostile,
                error=hostile,
                retries=(hostile,),
            )
        )
        ran.append(msgspec.structs.replace(node, passes=(len(passes) - 1,)))
    offer = OfferView(
        id=hostile,
        provider=hostile,
        name=hostile,
        price=1.0,
        score=1.0,
        rank=1,
        status="accepted",
        won=True,
        reason=hostile,
    )
    auction = AuctionView(
        id=hostile,
        node=hostile,
        capability=hostile,
        strategy=hostile,
        status="awarded",
        reason=hostile,
        invited=(hostile,),
        offers=(offer,),
        award=AwardView(
            winner=hostile,
            name=hostile,
            offer_id=hostile,
            price=1.0,
            currency=hostile,
            score=1.0,
            reason=hostile,
        ),
        receipt=None,
        trust=None,
        start_time="2025-01-01T00:00:00.000000Z",
        end_time=None,
    )
    ballot = BallotView(
        id=hostile,
        node=hostile,
        question=hostile,
        options=(hostile,),
        rule=hostile,
        status="closed",
        votes=(VoteView(voter=hostile, name=hostile, option=hostile, status="cast"),),
        winner=hostile,
        cause=hostile,
        reason=hostile,
        tallies={hostile: 1},
    )
    return RunView(
        run_id=hostile,
        graph=hostile,
        status="completed",
        start_time=None,
        duration_ms=10.0,
        total_tokens=3,
        total_cost=0.5,
        shaped=True,
        passes=tuple(passes),
        nodes=tuple(ran),
        edges=tuple(edges),
        auctions=(auction,),
        ballots=(ballot,),
        tasks=(),
        agents=(),
        runs=(),
        coordination=(),
        names={hostile: hostile},
    )


def test_html_shows_costs_with_significant_digits_and_their_currency() -> None:
    view = synthetic_view([synthetic_node("a", depth=0, agent="a")], [], hostile="h")
    view = msgspec.structs.replace(
        view,
        total_cost=0.0000325,
        agents=(AgentUse(agent="writer", nodes=1, tokens=10, tool_calls=0, cost=0.5),),
    )
    text = render_html(view)
    assert "cost 0.0000325 USD" in text
    assert "<td>0.50 USD</td>" in text
