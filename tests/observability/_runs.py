"""Runs recorded in SQLite files for the observability tests: a fan-out with a subgraph, a
failing run, a long chain, coordination events of a tender round and a board task added to a
run's trace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converge.orchestration import Engine, Graph, RunFailed
from converge.orchestration.subgraph import Subgraph
from converge.protocol import Event
from converge.store import SQLiteStore

__all__ = ["COORDINATION_KINDS", "add_coordination", "chain_run", "failing_run", "subgraph_run"]


async def analyze(inputs: dict[str, Any], ctx: Any) -> str:
    ctx.report_usage(tokens_in=1500, tokens_out=800, tool_calls=3, cost=0.03)
    return f"analysis of {inputs['code']}"


async def lint(inputs: dict[str, Any]) -> str:
    return "lint ok"


async def review(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"review": [inputs["analyze.output"], inputs["lint.output"]]}


def child() -> Graph:
    async def x(inputs: dict[str, Any]) -> str:
        return f"x({inputs['topic']})"

    async def y(inputs: dict[str, Any]) -> str:
        return f"y({inputs['x.output']})"

    return (
        Graph("child")
        .add_node("x", x, inputs=["topic"])
        .add_node("y", y, inputs=["x.output"])
        .connect("x", "y")
    )


def graph() -> Graph:
    """analyze and lint fan out from the input; review joins them; write is a subgraph."""
    return (
        Graph("code_review")
        .add_node("analyze", analyze, inputs=["code"])
        .add_node("lint", lint, inputs=["code"])
        .add_node("review", review, inputs=["analyze.output", "lint.output"])
        .add_node("write", Subgraph(child(), inputs={"topic": "review.output"}))
        .connect("analyze", "review")
        .connect("lint", "review")
        .connect("review", "write")
    )


async def subgraph_run(path: Path) -> str:
    """Run ``graph()`` into the store at ``path``; its run id."""
    async with await SQLiteStore.open(path) as store:
        result = await Engine(store).execute(graph(), {"code": "def f(): pass"})
    return result.run_id


async def failing_run(path: Path) -> str:
    async def broken(inputs: dict[str, Any]) -> str:
        raise RuntimeError("disk on fire")

    g = Graph("fragile").add_node("ok", lint).add_node("bad", broken).connect("ok", "bad")
    async with await SQLiteStore.open(path) as store:
        try:
            await Engine(store).execute(g, {})
        except RunFailed as exc:
            return exc.result.run_id
    raise AssertionError("the run should have failed")


async def chain_run(path: Path, length: int) -> str:
    """Run a chain ``n0 -> n1 -> …`` of ``length`` nodes into the store at ``path``; its run id."""
    g = Graph("chain")
    for i in range(length):
        g.add_node(f"n{i}", lint)
        if i:
            g.connect(f"n{i - 1}", f"n{i}")
    async with await SQLiteStore.open(path) as store:
        result = await Engine(store).execute(g, {})
    return result.run_id


COORDINATION_KINDS = (
    "bidding.opened",
    "bidding.offer_accepted",
    "bidding.awarded",
    "bidding.settled",
    "task.submitted",
    "task.claimed",
    "task.completed",
    "ballot.opened",
    "ballot.voted",
    "ballot.closed",
)


async def add_coordination(path: Path, run_id: str, *, ballot_trace: str | None = None) -> None:
    """Append a tender round on ``analyze``, a board task on ``lint`` and a gate ballot on
    ``review`` to the run's trace, as those nodes would have written them (the ballot's events
    in ``ballot_trace`` if given: a gate before gates logged in the run's trace used the
    ballot's id)."""
    round_id = f"tender:{run_id}/analyze/1:1"
    task_id = f"{run_id}/lint/1"
    ballot_id = f"gate/{run_id}/review/1"
    t = 1_700_000_000.0
    rows: list[tuple[str, str, dict[str, Any]]] = [
        ("bidding.opened", round_id, {"capability": "analyze@1.0.0", "strategy": "lowest_cost"}),
        ("bidding.offer_accepted", round_id, {"offer_id": "off-1", "provider": "p1", "cost": 3.0}),
        ("bidding.awarded", round_id, {"winner": "p1", "offer_id": "off-1", "price": 3.0}),
        ("bidding.settled", round_id, {"receipt_id": "rcpt-1", "status": "completed", "cost": 3.0}),
        ("task.submitted", task_id, {}),
        ("task.claimed", task_id, {"attempt": 1}),
        ("task.completed", task_id, {"attempt": 1}),
        ("ballot.opened", ballot_id, {"question": "ship it?", "options": ["yes", "no"]}),
        ("ballot.voted", ballot_id, {"voter": "judge", "option": "yes", "replaced": False}),
        ("ballot.closed", ballot_id, {"cause": "settled", "result": {"winner": "yes"}}),
    ]
    events = [
        Event(
            kind=kind,
            trace_id=ballot_trace if ballot_trace and kind.startswith("ballot.") else run_id,
            subject=subject,
            data=data,
            at=t + i,
            actor="engine",
        )
        for i, (kind, subject, data) in enumerate(rows)
    ]
    async with await SQLiteStore.open(path) as store:
        await store.append(events)
