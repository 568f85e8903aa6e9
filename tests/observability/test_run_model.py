"""``RunModel``: a run's coordination folded from its log — every node and edge of the graph
(those not taken too, and why), each pass's inputs, output and failed tries, auctions and
ballots with providers and voters by name — for real runs recorded in SQLite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from converge.observability import RunModel, RunView
from converge.orchestration import Engine, Graph, GraphConfig, Halt, RunFailed
from converge.orchestration.subgraph import Subgraph
from converge.protocol import Event
from converge.store import SQLiteStore
from tests.observability._runs import REVIEW_EDGES, failing_run, review_run


async def events_of(path: Path, run_id: str, *, names: bool = False) -> list[Event]:
    async with await SQLiteStore.open(path) as store:
        events = list(await store.read(trace_id=run_id))
        if names:
            for did in sorted(RunModel(run_id).add(events).unnamed()):
                events += await store.read(trace_id=did, kinds=("agent.registered",))
    return events


async def run(path: Path, graph: Graph, inputs: dict[str, Any] | None = None) -> str:
    async with await SQLiteStore.open(path) as store:
        try:
            return (await Engine(store).execute(graph, inputs or {})).run_id
        except RunFailed as exc:
            return exc.result.run_id


async def test_the_model_holds_every_edge_the_untaken_branch_and_each_pass(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    run_id = await review_run(path)
    events = await events_of(path, run_id)
    started = next(e for e in events if e.kind == "run.started")
    assert len(started.data["shape"]["edges"]) == REVIEW_EDGES  # the log holds the graph
    view = RunModel(run_id).add(events).view()
    assert view.shaped and view.status == "completed"

    edges = {(e.source, e.target): e for e in view.edges}
    assert len(edges) == REVIEW_EDGES
    assert sorted(s for s, t in edges if t == "review") == ["analyze", "deep", "lint", "quick"]
    assert {k for k, e in edges.items() if e.state == "not_taken"} == {
        ("route", "deep"),
        ("deep", "deep_report"),
        ("deep", "review"),
    }
    assert edges[("route", "quick")].when == "route.output == 'quick'"

    nodes = {n.id: n for n in view.nodes}
    assert [n.id for n in view.nodes][:4] == ["ingest", "analyze", "lint", "route"]
    assert (nodes["deep"].status, nodes["deep"].condition) == (
        "untaken",
        "when route.output == 'deep'",
    )
    assert (nodes["deep_report"].status, nodes["deep_report"].condition) == (
        "untaken",
        "deep not taken",
    )
    assert nodes["deep"].passes == () and nodes["deep"].inputs == ("route.output",)
    # layers: the longest path of edges to each node
    assert [nodes[n].depth for n in ("ingest", "route", "quick", "review", "publish")] == [
        0,
        1,
        2,
        3,
        6,
    ]

    analyze = view.passes[nodes["analyze"].passes[0]]
    assert analyze.inputs == {"ingest.output": "x = 1"}
    assert analyze.output == {"summary": "analysis of x = 1", "issues": 2}
    assert (analyze.attempts, analyze.retries) == (2, ("TimeoutError: model endpoint timed out",))
    assert (analyze.tokens_in, analyze.tokens_out, analyze.tool_calls, analyze.cost) == (
        1500,
        800,
        3,
        0.0325,
    )
    review = view.passes[nodes["review"].passes[0]]
    assert review.inputs == {
        "analyze.output.summary": "analysis of x = 1",
        "lint.output": {"warnings": 1},
        "quick.output": "looks fine",
    }
    assert review.missing_inputs == ("deep.output",)
    publish = view.passes[nodes["publish"].passes[0]]
    assert publish.inputs == {"approve.output.proposal": "text on analysis of x = 1; looks fine"}


async def test_auctions_and_ballots_name_providers_and_voters(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    run_id = await review_run(path)
    bare = RunModel(run_id).add(await events_of(path, run_id))
    assert len(bare.unnamed()) == 6  # three providers, three voters
    anonymous = bare.view()
    assert {o.name for o in anonymous.auctions[0].offers} == {
        o.provider[:8] + "…" + o.provider[-6:] for o in anonymous.auctions[0].offers
    }
    model = RunModel(run_id).add(await events_of(path, run_id, names=True))
    assert model.unnamed() == set()
    view = model.view()

    (auction,) = view.auctions
    assert (auction.node, auction.capability, auction.strategy, auction.status) == (
        "write",
        "write",
        "lowest_cost",
        "awarded",
    )
    assert sorted(auction.invited) == ["p0", "p1", "p2"]
    assert [(o.rank, o.name, o.price, o.score, o.won) for o in auction.offers] == [
        (1, "p0", 10.0, 10.0, True),
        (2, "p1", 11.0, 11.0, False),
        (3, "p2", 12.0, 12.0, False),
    ]
    assert auction.award is not None and auction.receipt is not None and auction.trust
    assert (auction.award.name, auction.award.price, auction.award.currency) == ("p0", 10.0, "USD")
    assert (auction.receipt.status, auction.receipt.cost, auction.receipt.outcome) == (
        "completed",
        10.0,
        "success",
    )
    assert (auction.trust.name, auction.trust.outcome) == ("p0", "success")

    (ballot,) = view.ballots
    assert (ballot.node, ballot.question, ballot.options, ballot.status) == (
        "approve",
        "publish it?",
        ("yes", "no"),
        "closed",
    )
    assert sorted((v.name, v.option) for v in ballot.votes) == [
        ("v0", "yes"),
        ("v1", "yes"),
        ("v2", "no"),
    ]
    assert (ballot.winner, ballot.cause, ballot.tallies) == ("yes", "settled", {"yes": 2, "no": 1})
    # the view is plain data: it goes to JSON and back
    assert msgspec.json.decode(msgspec.json.encode(view), type=RunView) == view


async def test_a_loop_s_back_edge_a_halt_and_a_failure(tmp_path: Path) -> None:
    async def count(inputs: dict[str, Any]) -> int:
        return int(inputs.get("count.output") or 0) + 1

    loop = (
        Graph("loop", config=GraphConfig(max_iterations=5))
        .add_node("count", count, inputs=["count.output"])
        .add_node("done", lambda inputs: "done", inputs=["count.output"])
        .add_node("gate", lambda inputs: Halt("closed"), inputs=["count.output"])
        .add_node("after", lambda inputs: "never", inputs=["gate.output"])
        .connect("count", "count", when="count.output < 3")
        .connect("count", "done", when="count.output >= 3")
        .connect("count", "gate", when="count.output >= 3")
        .connect("gate", "after")
    )
    path = tmp_path / "loop.db"
    run_id = await run(path, loop)
    view = RunModel(run_id).add(await events_of(path, run_id)).view()
    nodes = {n.id: n for n in view.nodes}
    assert len(nodes["count"].passes) == 3
    assert [view.passes[i].inputs for i in nodes["count"].passes] == [
        {},
        {"count.output": 1},
        {"count.output": 2},
    ]
    edges = {(e.source, e.target): e for e in view.edges}
    assert edges[("count", "count")].back and edges[("count", "count")].state == "taken"
    assert edges[("count", "done")].state == "taken"
    assert nodes["done"].depth == 1  # the back edge does not push it down
    assert edges[("gate", "after")].state == "not_taken"
    assert (nodes["after"].status, nodes["after"].condition) == ("untaken", "gate halted")

    path = tmp_path / "failing.db"
    run_id = await failing_run(path)
    view = RunModel(run_id).add(await events_of(path, run_id)).view()
    assert [(p.node, p.status, p.error) for p in view.passes] == [
        ("ok", "success", None),
        ("bad", "failed", "RuntimeError: disk on fire"),
    ]


async def test_a_subgraph_s_nodes_and_a_run_stored_without_its_shape(tmp_path: Path) -> None:
    child = (
        Graph("child")
        .add_node("x", lambda inputs: f"x({inputs['topic']})", inputs=["topic"])
        .add_node("y", lambda inputs: f"y({inputs['x.output']})", inputs=["x.output"])
    )
    graph = (
        Graph("parent")
        .add_node("a", lambda inputs: "a")
        .add_node("b", lambda inputs: "b")
        .add_node("join", lambda inputs: "j", inputs=["a.output", "b.output"])
        .add_node("write", Subgraph(child, inputs={"topic": "join.output"}), inputs=["join.output"])
    )
    path = tmp_path / "sub.db"
    run_id = await run(path, graph)
    events = await events_of(path, run_id)
    view = RunModel(run_id).add(events).view()
    nodes = {n.id: n for n in view.nodes}
    assert [n.id for n in view.nodes] == ["a", "b", "join", "write", "write/x", "write/y"]
    assert [(nodes[n].depth, nodes[n].run) for n in ("write", "write/x", "write/y")] == [
        (2, run_id),
        (3, f"{run_id}/write/1"),
        (4, f"{run_id}/write/1"),
    ]
    assert ("write/x", "write/y") in {(e.source, e.target) for e in view.edges}
    assert view.passes[nodes["write/x"].passes[0]].inputs == {"topic": "j"}
    assert [r.run_id for r in view.runs] == [f"{run_id}/write/1"]

    # Stored before run.started held the shape: the causes the log records, one edge per node
    bare = [
        msgspec.structs.replace(e, data={k: v for k, v in e.data.items() if k != "shape"})
        if e.kind == "run.started"
        else e
        for e in events
    ]
    old = RunModel(run_id).add(bare).view()
    assert not old.shaped
    assert {n.id for n in old.nodes} == set(nodes)
    into_join = [e for e in old.edges if e.target == "join"]
    assert len(into_join) == 1 and into_join[0].source in ("a", "b")
    assert all(p.inputs is None for p in old.passes)
