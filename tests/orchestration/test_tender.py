"""Tender nodes: a node's work put out to tender among 20 provider runtimes on the engine's
bidding service, on each store. The winner's output is the node's; the receipt is
countersigned; trust moves; a failing winner is replaced by the next-best offer, then by the
fallback agent; nobody bidding fails, falls back or retries later; a node killed mid-run
resumes in a new process without announcing a second auction."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from converge.coordination import RoundStage
from converge.core import unseal
from converge.core.pool import Pool
from converge.errors import ValidationError
from converge.orchestration import (
    Engine,
    Graph,
    RunFailed,
    Services,
    Tender,
    loads_graph,
)
from converge.protocol import Receipt
from converge.store import SQLiteStore, Store
from tests.orchestration._crash_harness import append, crash_and_resume, crashing, hang
from tests.orchestration._tender_helpers import (
    POOL,
    N,
    Provider,
    SleepClock,
    World,
    eventually,
    world,
    write,
)


def graph(tender: Tender) -> Graph:
    """plan -> write (the tender) -> publish."""
    return (
        Graph("article")
        .add_node("plan", lambda inputs: inputs["topic"].upper(), inputs=["topic"])
        .add_node("write", tender)
        .add_node("publish", lambda inputs: f"published: {inputs['write.output']}")
        .connect("plan", "write")
        .connect("write", "publish")
    )


async def rounds(w: World, run_id: str) -> list[Any]:
    """The node ``write``'s rounds, in order."""
    found = []
    for n in range(1, 10):
        r = await w.bidding.get(f"tender:{run_id}/write/1:{n}")
        if r is None:
            break
        found.append(r)
    return found


async def test_a_tender_awards_the_best_offer_and_the_winner_does_the_work(store: Store) -> None:
    # p0 and p1 are the cheapest but not in the pool: never invited.
    async with world(store, members=lambda p: p.index not in (0, 1)) as w:
        before = await w.trust.score(w.providers[2].did)
        tender = Tender(pool=POOL, capability="write>=1.0", strategy="second_price", bid_window=30)
        result = await Engine(store, services=w.services).execute(graph(tender), {"topic": "t"})
        after = await w.trust.score(w.providers[2].did)

    assert result.output == "published: text on T"
    assert result.usage.cost == 13.0  # second price: p3's cost, paid to p2
    (round_,) = await rounds(w, result.run_id)
    assert round_.stage is RoundStage.SETTLED and round_.award.provider == w.providers[2].did
    assert len(round_.auction.offers) == N - 2
    receipt = unseal(round_.receipt, Receipt)  # both signatures verify
    assert (receipt.executor, receipt.requester) == (w.providers[2].did, w.bidding.did)
    assert receipt.cost == 13.0
    assert after > before
    assert [p.index for p in w.providers if p.tasks] == [2]
    # The round's steps are in the run's trace, before the node's end.
    kinds = [
        f"{e.kind} {e.data.get('node', '')}".strip()
        for e in await store.read(trace_id=result.run_id)
    ]
    assert kinds.count("bidding.opened") == 1
    assert kinds.index("bidding.settled") < kinds.index("node.done write")


async def test_engine_trace_lists_the_auction_s_intent_offers_award_receipt_and_trust(
    store: Store,
) -> None:
    def three(clock: Any) -> list[Provider]:
        return [Provider(i, clock) for i in range(3)]

    async with world(store, three) as w:
        engine = Engine(store, services=w.services)
        tender = Tender(pool=POOL, capability="write", strategy="lowest_cost", bid_window=30)
        result = await engine.execute(graph(tender), {"topic": "t"})
        trace = await engine.trace(result.run_id)
    (round_,) = await rounds(w, result.run_id)
    winner = w.providers[0].did
    rows = {(o["type"], o["id"]): o for o in trace["coordination"]}
    assert {o["node"] for o in rows.values()} == {"write"}  # every object is the node's
    assert rows[("intent", round_.id)]["status"] == "awarded"
    offers = [o for o in rows.values() if o["type"] == "offer"]
    assert sorted(o["detail"]["provider"] for o in offers) == sorted(p.did for p in w.providers)
    assert {o["status"] for o in offers} == {"accepted"}
    award = rows[("award", f"{round_.id}:award")]
    assert (award["detail"]["winner"], award["detail"]["price"]) == (winner, 10.0)
    receipt = unseal(round_.receipt, Receipt)
    assert rows[("receipt", receipt.id)]["detail"]["cost"] == 10.0
    trust = rows[("trust", f"{round_.id}:{winner}")]
    assert (trust["status"], trust["detail"]["agent"]) == ("success", winner)
    assert [o["type"] for o in trace["coordination"]].count("trust") == 1


@pytest.mark.parametrize(
    ("strategy", "winner", "price"),
    [("lowest_cost", 0, 10.0), ("highest_quality", N - 1, 29.0), ("first_price", 0, 10.0)],
)
async def test_the_named_strategy_picks_the_winner(
    store: Store, strategy: Any, winner: int, price: float
) -> None:
    async with world(store) as w:
        tender = Tender(pool=POOL, capability="write", strategy=strategy, bid_window=30)
        result = await Engine(store, services=w.services).execute(graph(tender), {"topic": "t"})
    (round_,) = await rounds(w, result.run_id)
    assert round_.award.provider == w.providers[winner].did
    assert result.usage.cost == price


def failing(inputs: dict[str, Any]) -> str:
    raise RuntimeError("the model crashed mid-task")


async def test_the_best_provider_fails_mid_task_and_the_next_best_takes_over(
    store: Store,
) -> None:
    def providers(clock: Any) -> list[Provider]:
        return [Provider(0, clock, work=failing), *(Provider(i, clock) for i in range(1, N))]

    async with world(store, providers) as w:
        before = await w.trust.score(w.providers[0].did)
        tender = Tender(pool=POOL, capability="write", strategy="lowest_cost", bid_window=30)
        result = await Engine(store, services=w.services).execute(graph(tender), {"topic": "t"})
        after = await w.trust.score(w.providers[0].did)

    assert result.output == "published: text on T"
    first, second = await rounds(w, result.run_id)
    assert first.stage is RoundStage.SETTLED and first.outcome == "failure"
    assert unseal(first.receipt, Receipt).cost == 0.0  # failed work is not paid
    assert after < before
    # The second round invites the other valid bidders; the next-best wins it.
    assert set(second.invited) == {p.did for p in w.providers[1:]}
    assert second.award.provider == w.providers[1].did and second.outcome == "success"
    assert result.usage.cost == 11.0


async def test_when_every_winner_fails_the_fallback_agent_takes_over(store: Store) -> None:
    def providers(clock: Any) -> list[Provider]:
        return [Provider(i, clock, work=failing) for i in range(2)]

    async with world(store, providers) as w:
        tender = Tender(
            pool=POOL, capability="write", bid_window=30, fallback=lambda i: f"in-house {i}"
        )
        result = await Engine(store, services=w.services).execute(graph(tender), {"topic": "t"})
    assert result.output == "published: in-house {'plan.output': 'T'}"
    assert [r.outcome for r in await rounds(w, result.run_id)] == ["failure", "failure"]
    assert all(len(p.tasks) == 1 for p in w.providers)


async def test_nobody_bids_fails_or_falls_back(store: Store) -> None:
    def silent(clock: Any) -> list[Provider]:
        return [Provider(i, clock, bids=False) for i in range(3)]

    # Nobody in the pool: the round closes at once, without offers.
    async with world(store, silent, members=lambda p: False) as w:
        engine = Engine(store, services=w.services)
        with pytest.raises(RunFailed) as failed:
            await engine.execute(graph(Tender(pool=POOL, capability="write")), {"topic": "t"})
        assert failed.value.result.failed_node == "write"
        assert "no_offers" in (failed.value.result.error or "")
        tender = Tender(pool=POOL, capability="write", on_no_bids="fallback", fallback=str)
        result = await engine.execute(graph(tender), {"topic": "t"})
    assert result.output == "published: {'plan.output': 'T'}"


async def test_fewer_offers_than_min_offers_are_not_awarded(store: Store) -> None:
    def three(clock: Any) -> list[Provider]:
        return [Provider(i, clock) for i in range(3)]

    async with world(store, three) as w:
        tender = Tender(pool=POOL, capability="write", bid_window=30, min_offers=4)
        with pytest.raises(RunFailed) as failed:
            await Engine(store, services=w.services).execute(graph(tender), {"topic": "t"})
        (round_,) = await rounds(w, failed.value.result.run_id)
    assert round_.stage is RoundStage.FAILED and round_.reason == "too_few_offers"
    assert len(round_.auction.offers) == 3 and not any(p.tasks for p in w.providers)


async def test_on_no_bids_retry_opens_a_new_round_after_retry_after(store: Store) -> None:
    clock = SleepClock(time.time())  # messages carry timestamps that replay guards check
    async with world(store, clock=clock, members=lambda p: p.index == 5) as w:
        tender = Tender(
            pool="late", capability="write", on_no_bids="retry", retry_after=7, max_rounds=2
        )
        await w.pools.create_pool(Pool(name="late", id="late"))
        engine = Engine(store, services=w.services, clock=clock)
        async with engine:
            handle = await engine.submit(graph(tender), {"topic": "t"})

            async def waiting() -> bool:  # the first round failed; the tender waits 7 s
                return any(abs(s - 7) < 1e-6 for s in clock.slept)

            await eventually(waiting)
            await w.pools.join_pool(w.providers[5].did, "late")
            clock.advance(7)  # within discovery's 30 s: p5 stays listed
            result = await handle.wait()
    assert result.error is None
    assert result.output == "published: text on T"
    first, second = await rounds(w, result.run_id)
    assert first.reason == "no_offers" and second.award.provider == w.providers[5].did
    assert second.auction.opened_at >= first.updated_at + 7


async def test_a_tender_needs_a_serving_bidding_service(store: Store) -> None:
    async with world(store) as w:
        pass  # the world is torn down: the requester no longer receives its messages
    with pytest.raises(RunFailed) as failed:
        await Engine(store, services=w.services).execute(
            graph(Tender(capability="write")), {"topic": "t"}
        )
    assert "serving" in (failed.value.result.error or "")
    with pytest.raises(RunFailed) as missing:
        await Engine(store).execute(graph(Tender(capability="write")), {"topic": "t"})
    assert "bidding" in (missing.value.result.error or "")


YAML = """\
name: article
nodes:
  - {id: write, agent: writer, inputs: [topic]}
agents:
  writer:
    kind: tender
    pool: writers
    capability: write>=1.0
    strategy: weighted
    weights: {cost: 3, quality: 1}
    bid_window: 30
    on_no_bids: fallback
    fallback: house
"""


async def test_a_tender_from_yaml(store: Store) -> None:
    g = loads_graph(YAML, agents={"house": lambda i: "in-house"})
    async with world(store) as w:
        result = await Engine(store, services=w.services).execute(g, {"topic": "t"})
    assert result.output == "text on t"
    assert result.usage.cost == 10.0  # cost weighs most; p0 is the cheapest by far


@pytest.mark.parametrize(
    ("line", "key", "says"),
    [
        ("    strategy: cheapest\n", "strategy", "cheapest"),
        ("    min_offers: 0\n", "min_offers", ">= 1"),
        ("    bid_window: -1\n", "bid_window", "> 0"),
        ("    weights: {speed: 1}\n", "weights", "speed"),
        ("    on_no_bids: sulk\n", "on_no_bids", "sulk"),
        ("    bid_windw: 3\n", "bid_windw", "unknown option"),
        ("    fallback: no_such_module:fn\n", "fallback", "no_such_module"),
    ],
)
def test_bad_tender_options_name_the_option_file_and_line(line: str, key: str, says: str) -> None:
    text = "name: a\nnodes:\n  - {id: w, agent: t}\nagents:\n  t:\n    kind: tender\n"
    text += "    capability: write\n" + line
    with pytest.raises(ValidationError) as bad:
        loads_graph(text, source="a.yaml")
    assert (bad.value.field, bad.value.source, bad.value.line) == (f"agents.t.{key}", "a.yaml", 6)
    assert says in str(bad.value)


def test_bad_tender_options_in_python_name_the_option() -> None:
    with pytest.raises(ValidationError) as bad:
        Tender(capability="write", on_no_bids="fallback")
    assert bad.value.field == "fallback"
    with pytest.raises(ValidationError) as bad:
        Tender(capability="")
    assert bad.value.field == "capability"


# -- killed with SIGKILL mid-run, resumed in a new process ----------------------------------------


@contextlib.asynccontextmanager
async def crash_setup(
    store: Store, log: Path, crash: bool
) -> AsyncIterator[tuple[Graph, Services, dict[str, Any]]]:
    """The winner (p0, cheapest) hangs in the child process once it has the work; in the
    parent it does it."""

    async def work(inputs: dict[str, Any]) -> str:
        append(log, f"work {inputs}")
        if crashing():
            await hang(log)
        return write(inputs)

    def providers(clock: Any) -> list[Provider]:
        return [Provider(0, clock, work=work), *(Provider(i, clock) for i in range(1, N))]

    async with world(store, providers) as w:
        tender = Tender(pool=POOL, capability="write", strategy="lowest_cost", bid_window=30)
        yield graph(tender), w.services, {"topic": "t"}


async def test_a_tender_killed_mid_run_resumes_without_a_second_auction(tmp_path: Path) -> None:
    result, lines = await crash_and_resume(tmp_path, "tests.orchestration.test_tender:crash_setup")
    assert result.output == "published: text on T"
    assert lines == [
        "work {'plan.output': 'T'}",
        "work {'plan.output': 'T'}",
    ]  # the award, sent again

    async with await SQLiteStore.open(tmp_path / "runs.db") as store:
        events = await store.read(trace_id=result.run_id)
        kinds = [e.kind for e in events]
        assert kinds.count("bidding.opened") == 1
        assert kinds.count("bidding.awarded") == 1
        assert kinds.count("bidding.settled") == 1
        async with world(store) as w:
            (round_,) = await rounds(w, result.run_id)
    assert round_.award.provider == w.providers[0].did and round_.outcome == "success"
    assert result.usage.cost == 10.0
