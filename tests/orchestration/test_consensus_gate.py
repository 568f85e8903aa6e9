from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from converge.coordination import Consensus, PoolManager
from converge.core import Agent, Identity, Message, Pool, Task, Vote
from converge.core.clock import ManualClock
from converge.core.decisions import Decision
from converge.errors import ValidationError
from converge.network import LocalNetwork
from converge.orchestration import (
    ConsensusGate,
    Engine,
    Graph,
    RunFailed,
    RunStatus,
    Services,
    loads_graph,
)
from converge.runtime import AgentRuntime, StandardExecutor
from converge.store import Store
from tests.loop_clock import LoopClock, until
from tests.orchestration._crash_harness import append, crash_and_resume, crashing, hang

POOL = "council"


class Voter(Agent):
    """Votes ``choice(proposal)`` on every ballot it is asked about (in its own runtime)."""

    def __init__(self, seed: int, choice: Callable[[Any], str]) -> None:
        super().__init__(Identity.from_private_bytes(bytes([seed + 1]) * 32), name=f"v{seed}")
        self.choice = choice
        self.asked: list[Any] = []

    async def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        out: list[Decision] = []
        for m in messages:
            if m.kind == ConsensusGate.REQUEST:
                self.asked.append(m.payload)
                choice = await self.vote_on(m.payload)
                out.append(Vote(ballot_id=m.payload["ballot_id"], choice=choice))
        return out

    async def vote_on(self, payload: dict[str, Any]) -> str:
        return self.choice(payload["proposal"])


@contextlib.asynccontextmanager
async def council(
    store: Store, voters: Sequence[Agent], **consensus: Any
) -> AsyncIterator[Services]:
    """The pool ``council`` of ``voters``, each running in its own runtime that casts its votes
    on the ballots; the engine's services to reach them."""
    ballots = Consensus(store, **consensus)
    pools = PoolManager(store)
    if await pools.get_pool(POOL) is None:
        await pools.create_pool(Pool(name=POOL, id=POOL))
    network = LocalNetwork()
    executor = StandardExecutor(votes_store=ballots, pools=pools)
    async with contextlib.AsyncExitStack() as stack:
        for voter in voters:
            await pools.join_pool(voter.did, POOL)
            runtime = AgentRuntime(
                voter, network=network, store=store, pools=pools, executor=executor
            )
            await stack.enter_async_context(runtime)
        engine_id = Identity.from_private_bytes(b"\x00" * 32)
        yield Services(identity=engine_id, network=network, pools=pools, consensus=ballots)


def gated(gate: ConsensusGate, ran: list[str]) -> Graph:
    async def propose(inputs: dict[str, Any]) -> str:
        return f"raise the budget by {inputs['amount']}"

    async def act(inputs: dict[str, Any]) -> str:
        ran.append("act")
        return f"done: {inputs['vote.output.proposal']}"

    return (
        Graph("budget")
        .add_node("propose", propose, inputs=["amount"])
        .add_node("vote", gate, inputs=["propose.output"])
        .add_node("act", act, inputs=["vote.output.proposal"])
    )


async def _count(store: Store, kind: str, n: int) -> bool:
    return len(await store.read(kinds=[kind])) >= n


def votes(*choices: str) -> list[Voter]:
    return [Voter(i, lambda _, c=c: c) for i, c in enumerate(choices)]


async def test_a_consensus_gate_that_passes_runs_its_dependents(store: Store) -> None:
    ran: list[str] = []
    voters = votes("yes", "yes", "no", "yes", "no")
    async with council(store, voters) as services:
        graph = gated(ConsensusGate(POOL, rule="majority"), ran)
        result = await Engine(store, services=services).execute(graph, {"amount": 5})
    assert result.output == "done: raise the budget by 5"
    gate = result.outputs["vote"]
    assert (gate["passed"], gate["winner"], gate["eligible"]) == (True, "yes", 5)
    assert gate["ballot_id"] == f"gate/{result.run_id}/vote/1"
    # A majority settles the ballot: it closes on the third "yes", whoever has not voted yet.
    assert gate["tallies"]["yes"]["count"] == 3
    assert voters[0].asked[0]["proposal"] == "raise the budget by 5"


async def test_a_consensus_gate_that_fails_the_vote_skips_its_dependents(store: Store) -> None:
    ran: list[str] = []
    voters = votes("no", "yes", "no", "no", "yes")
    async with council(store, voters) as services:
        graph = gated(ConsensusGate(POOL, rule="majority"), ran)
        result = await Engine(store, services=services).execute(graph, {"amount": 5})
    assert result.status is RunStatus.COMPLETED
    assert ran == []  # `act` never ran
    gate = result.outputs["vote"]
    assert (gate["passed"], gate["winner"]) == (False, "no")
    assert gate["tallies"]["no"]["count"] == 3
    done = await store.read(trace_id=result.run_id, kinds=["node.done"])
    assert {e.data["node"]: e.data["status"] for e in done}["vote"] == "halted"


async def test_unanimity_among_named_voters(store: Store) -> None:
    ran: list[str] = []
    voters = votes("yes", "yes", "no")
    async with council(store, voters) as services:
        gate = ConsensusGate(voters=[v.did for v in voters[:2]], rule="unanimity")
        result = await Engine(store, services=services).execute(gated(gate, ran), {"amount": 1})
    assert result.outputs["vote"]["passed"] is True
    assert voters[2].asked == []  # not among the voters: never asked


async def test_at_its_timeout_the_gate_closes_the_ballot_with_the_votes_it_has(
    store: Store, loop_clock: LoopClock
) -> None:
    ran: list[str] = []
    voters = votes("yes", "no")
    absent = Identity.from_private_bytes(b"\x09" * 32).did  # in the pool, not on the network
    clock = ManualClock(time.time())  # the ballot's deadline is on the consensus's clock
    async with council(store, voters, clock=clock) as services:
        assert services.pools is not None
        await services.pools.join_pool(absent, POOL)
        gate = ConsensusGate(POOL, timeout=60)
        engine = Engine(store, services=services)
        run = asyncio.ensure_future(engine.execute(gated(gate, ran), {"amount": 1}))
        await until(lambda: _count(store, "ballot.voted", 2))  # both voters in time
        clock.advance(60)  # the deadline passes, and the gate's wait for the next vote ends
        loop_clock.advance(60)
        result = await run
    gate_out = result.outputs["vote"]
    assert (gate_out["passed"], gate_out["decided"], gate_out["final"]) == (False, False, True)
    assert len(gate_out["voted"]) == 2 and ran == []


async def test_the_ballot_and_every_vote_are_in_the_run_s_trace(store: Store) -> None:
    voters = votes("yes", "yes", "yes")  # unanimity settles on the last of the three
    async with council(store, voters) as services:
        engine = Engine(store, services=services)
        gate = ConsensusGate(POOL, rule="unanimity")
        result = await engine.execute(gated(gate, []), {"amount": 2})
        trace = await engine.trace(result.run_id)
        assert services.consensus is not None
        ballot = await services.consensus.get(f"gate/{result.run_id}/vote/1")
    run = result.run_id
    assert ballot is not None and ballot.trace_id == run
    # Logged under the run's trace id, the ballot's own id the events' subject.
    logged = [e for e in await store.read(trace_id=run) if e.kind.startswith("ballot.")]
    assert [e.kind for e in logged] == ["ballot.opened", *["ballot.voted"] * 3, "ballot.closed"]
    assert {e.subject for e in logged} == {ballot.id}
    objects = trace["coordination"]
    assert [
        (o["type"], o["id"], o["node"], o["status"]) for o in objects if o["type"] == "ballot"
    ] == [("ballot", ballot.id, "vote", "closed")]
    [ballot_row] = [o for o in objects if o["type"] == "ballot"]
    assert (ballot_row["detail"]["winner"], ballot_row["events"]) == ("yes", 2)
    cast = sorted(
        (o["detail"]["voter"], o["detail"]["option"], o["node"], o["status"])
        for o in objects
        if o["type"] == "vote"
    )
    assert cast == sorted((v.did, "yes", "vote", "cast") for v in voters)


class LateVoter(Voter):
    """Votes ``choice`` only once the ballot it is asked about has closed without it."""

    def __init__(self, seed: int, choice: str, store: Store) -> None:
        super().__init__(seed, lambda _: choice)
        self.ballots = Consensus(store)

    async def vote_on(self, payload: dict[str, Any]) -> str:
        store = self.ballots.store
        while True:
            seen = await store.last_seq()
            ballot = await self.ballots.get(payload["ballot_id"])
            if ballot is not None and ballot.is_closed:
                return await super().vote_on(payload)
            await store.wait_for_events(seen, timeout=5)


async def test_a_late_vote_is_refused_as_ballot_closed_and_shown_in_the_trace(
    store: Store,
) -> None:
    late = LateVoter(2, "no", store)
    voters = [*votes("yes", "yes"), late]  # 2 of 3 eligible settle it before `late` votes
    async with council(store, voters) as services:
        engine = Engine(store, services=services)
        result = await engine.execute(gated(ConsensusGate(POOL), []), {"amount": 3})
        run = result.run_id

        async def logged(kind: str) -> list[Any]:
            return [e for e in await store.read(trace_id=run) if e.kind == kind]

        # The late vote lands after the run: wait (woken by each event) for its refusal and
        # for the voter's runtime to record the failed decision that follows it.
        async with asyncio.timeout(10):
            while True:
                seen = await store.last_seq()
                if await logged("decision.failed"):
                    break
                await store.wait_for_events(seen, timeout=5)
        trace = await engine.trace(run)
        failed = await logged("decision.failed")
        refusals = await logged("ballot.refused")
    assert result.outputs["vote"]["passed"] is True
    [refusal] = refusals
    reason = refusal.data["reason"]
    assert (refusal.data["voter"], refusal.data["code"], refusal.data["error"]) == (
        late.did,
        "closed",
        "BallotClosed",
    )
    assert reason.startswith(f"ballot gate/{run}/vote/1 closed at ")
    assert "(a vote settled it) with outcome 'yes'" in reason
    assert "closed -> open" not in reason
    # The late voter's runtime heard the same: a BallotClosed, not a raw InvalidTransition.
    assert [(e.actor, e.data["error_type"], e.data["error"]) for e in failed] == [
        (late.did, "BallotClosed", reason)
    ]
    late_rows = [
        o for o in trace["coordination"] if o["type"] == "vote" and o["status"] == "refused"
    ]
    assert [(o["node"], o["detail"]["voter"], o["detail"]["reason"]) for o in late_rows] == [
        ("vote", late.did, reason)
    ]


async def test_a_gate_without_its_services_fails_naming_them(store: Store) -> None:
    with pytest.raises(RunFailed) as info:
        await Engine(store).execute(gated(ConsensusGate(POOL), []), {"amount": 1})
    assert "Services(consensus=...)" in (info.value.result.error or "")


def test_consensus_gates_in_yaml() -> None:
    graph = loads_graph(
        "name: g\nnodes:\n  - {id: v, agent: gate}\n"
        "agents:\n  gate: {kind: consensus, pool: council, rule: plurality, timeout: 30}\n"
    )
    gate = graph.agents["gate"]
    assert isinstance(gate, ConsensusGate)
    assert (gate.pool, gate.rule, gate.timeout) == ("council", "plurality", 30.0)
    for options, field in (
        ("{kind: consensus, pool: c, rule: loudest}", "agents.gate.rule"),
        ("{kind: consensus, pool: c, passes: maybe}", "agents.gate.passes"),
        ("{kind: consensus, pool: c, tiemout: 3}", "agents.gate.tiemout"),
        ("{kind: consensus, rule: majority}", "agents.gate.pool"),
        ("{kind: consensus, pool: c, timeout: -1}", "agents.gate.timeout"),
    ):
        with pytest.raises(ValidationError) as info:
            loads_graph(
                f"name: g\nnodes:\n  - {{id: v, agent: gate}}\nagents:\n  gate: {options}\n",
                source="g.yaml",
            )
        assert (info.value.field, info.value.source, info.value.line) == (field, "g.yaml", 5)


class LoggedVoter(Voter):
    """Logs each time it is asked; ``v4`` in the child process waits until the four others
    have voted (the ballot still open, 2 to 2), then hangs there to be killed."""

    def __init__(self, seed: int, choice: str, log: Path, store: Store) -> None:
        super().__init__(seed, lambda _: choice)
        self.log = log
        self.store = store

    async def vote_on(self, payload: dict[str, Any]) -> str:
        append(self.log, f"{self.name} asked")
        if self.name == "v4" and crashing():
            ballots = Consensus(self.store)
            while True:
                seen = await self.store.last_seq()
                ballot = await ballots.get(payload["ballot_id"])
                if ballot is not None and len(ballot.votes) == 4:
                    await hang(self.log)
                await self.store.wait_for_events(seen, timeout=5)
        return await super().vote_on(payload)


@contextlib.asynccontextmanager
async def crash_setup(
    store: Store, log: Path, crash: bool
) -> AsyncIterator[tuple[Graph, Services, dict[str, Any]]]:
    """A gate whose fifth voter (the decisive one) hangs in the child process."""
    choices = ("yes", "yes", "no", "no", "yes")
    voters = [LoggedVoter(i, c, log, store) for i, c in enumerate(choices)]
    ran: list[str] = []

    async def act(inputs: dict[str, Any]) -> str:
        append(log, "act done")
        return f"done: {inputs['vote.output.proposal']}"

    graph = gated(ConsensusGate(POOL), ran)
    graph.add_node("record", act, inputs=["vote.output.proposal"])
    async with council(store, voters) as services:
        yield graph, services, {"amount": 7}


@pytest.mark.slow
async def test_a_consensus_gate_killed_mid_vote_resumes_in_a_new_process(tmp_path: Path) -> None:
    result, lines = await crash_and_resume(
        tmp_path, "tests.orchestration.test_consensus_gate:crash_setup"
    )
    gate = result.outputs["vote"]
    assert (gate["passed"], gate["winner"], len(gate["voted"])) == (True, "yes", 5)
    assert result.outputs["record"] == "done: raise the budget by 7"
    # Each of the first four was asked once (the resumed gate asks only who has not voted).
    assert [lines.count(f"v{i} asked") for i in range(4)] == [1, 1, 1, 1]
    assert lines.count("v4 asked") == 2
    assert lines.count("act done") == 1
    from converge.store import SQLiteStore

    async with await SQLiteStore.open(tmp_path / "runs.db") as store:
        opened = await store.read(kinds=["ballot.opened"])
        assert [e.subject for e in opened] == ["gate/crash-run/vote/1"]
