"""Runs recorded in SQLite files for the observability tests: a fan-out with a subgraph, a
failing run, a long chain, coordination events of a tender round and a board task added to a
run's trace, and a review (``review_run``) with a retried node, a branch not taken, a
three-way join, a real auction among three providers and a real ballot of three voters."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from converge.coordination import Consensus
from converge.core import Agent, Identity, Message, Pool, Task, Vote
from converge.core.decisions import Decision
from converge.orchestration import (
    ConsensusGate,
    Engine,
    Graph,
    RetryPolicy,
    RunFailed,
    Services,
    Tender,
)
from converge.orchestration.subgraph import Subgraph
from converge.protocol import Event
from converge.runtime import AgentRuntime, StandardExecutor
from converge.store import SQLiteStore
from tests.orchestration._tender_helpers import POOL, Provider, world

__all__ = [
    "COORDINATION_KINDS",
    "REVIEW_EDGES",
    "add_coordination",
    "chain_run",
    "failing_run",
    "review_graph",
    "review_run",
    "subgraph_run",
]


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


class Voter(Agent):
    """Votes ``choice`` on every ballot it is asked about, from its own runtime."""

    def __init__(self, seed: int, choice: str) -> None:
        super().__init__(Identity.from_private_bytes(bytes([seed + 101]) * 32), name=f"v{seed}")
        self.choice = choice

    async def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        return [
            Vote(ballot_id=m.payload["ballot_id"], choice=self.choice)
            for m in messages
            if m.kind == ConsensusGate.REQUEST
        ]


def review_graph(tender: Tender, gate: ConsensusGate) -> Graph:
    """ingest fans out to analyze (fails once, then reports usage), lint and route; route
    takes ``quick``, not ``deep`` (nor ``deep_report`` after it); review joins analyze, lint,
    quick and deep; write is put out to tender, approve is a vote, publish follows."""
    tries: list[int] = []

    async def analyze(inputs: dict[str, Any], ctx: Any) -> dict[str, Any]:
        tries.append(1)
        if len(tries) == 1:
            raise TimeoutError("model endpoint timed out")
        ctx.report_usage(tokens_in=1500, tokens_out=800, tool_calls=3, cost=0.0325)
        return {"summary": f"analysis of {inputs['ingest.output']}", "issues": 2}

    return (
        Graph("review")
        .add_node("ingest", lambda inputs: inputs["code"].strip(), inputs=["code"])
        .add_node("analyze", analyze, retry=RetryPolicy(max_retries=2, initial_delay=0.01))
        .add_node("lint", lambda inputs: {"warnings": 1})
        .add_node("route", lambda inputs: "quick")
        .add_node("quick", lambda inputs: "looks fine")
        .add_node("deep", lambda inputs: "a deep review")
        .add_node("deep_report", lambda inputs: "a long report")
        .add_node(
            "review",
            lambda inputs: f"{inputs['analyze.output.summary']}; {inputs['quick.output']}",
            inputs=["analyze.output.summary", "lint.output", "quick.output", "deep.output"],
        )
        .add_node("write", tender, inputs=["review.output"])
        .add_node("approve", gate, inputs=["write.output"])
        .add_node(
            "publish",
            lambda inputs: f"published: {inputs['approve.output.proposal']}",
            inputs=["approve.output.proposal"],
        )
        .connect("ingest", "analyze")
        .connect("ingest", "lint")
        .connect("ingest", "route")
        .connect("route", "quick", when="route.output == 'quick'")
        .connect("route", "deep", when="route.output == 'deep'")
        .connect("deep", "deep_report")
        .connect("analyze", "review")
        .connect("lint", "review")
        .connect("quick", "review")
        .connect("deep", "review")
        .connect("review", "write")
        .connect("write", "approve")
        .connect("approve", "publish")
    )


REVIEW_EDGES = 13
"""The edges of ``review_graph``."""


async def review_run(path: Path) -> str:
    """Run ``review_graph`` into the store at ``path`` among three providers (p0, p1, p2,
    bidding 10, 11, 12) and three voters (v0, v1, v2: yes, yes, no); its run id."""
    async with await SQLiteStore.open(path) as store:

        def three(clock: Any) -> list[Provider]:
            return [Provider(i, clock) for i in range(3)]

        async with world(store, three) as w, contextlib.AsyncExitStack() as stack:
            ballots = Consensus(store)
            if await w.pools.get_pool("council") is None:
                await w.pools.create_pool(Pool(name="council", id="council"))
            voters = [Voter(i, c) for i, c in enumerate(("yes", "yes", "no"))]
            executor = StandardExecutor(votes_store=ballots, pools=w.pools)
            for voter in voters:
                await w.pools.join_pool(voter.did, "council")
                runtime = AgentRuntime(
                    voter, network=w.network, store=store, pools=w.pools, discovery=w.discovery,
                    executor=executor,
                )  # fmt: skip
                await stack.enter_async_context(runtime)
            services = Services(
                identity=w.services.identity,
                bidding=w.bidding,
                trust=w.trust,
                network=w.network,
                pools=w.pools,
                consensus=ballots,
            )
            tender = Tender(pool=POOL, capability="write", strategy="lowest_cost", bid_window=30)
            gate = ConsensusGate("council", rule="majority", question="publish it?")
            graph = review_graph(tender, gate)
            result = await Engine(store, services=services).execute(graph, {"code": " x = 1 "})
    return result.run_id
