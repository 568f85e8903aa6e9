"""A contract-net among 20 provider runtimes: real ``AgentRuntime``s on a ``LocalNetwork``, each
provider an ``Agent`` whose ``decide()`` answers the intent with ``SubmitBid`` and the award with
its signed reports. The requester is a ``BiddingProtocol`` serving its inbox. Over several rounds
each strategy picks the right winner, second price pays the next cost, receipts carry both
signatures, and trust follows the outcomes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Sequence
from typing import Any

import msgspec
import pytest

from converge.coordination import (
    BiddingProtocol,
    DiscoveryService,
    PoolManager,
    RoundStage,
    intent_of,
    report_done,
    report_progress,
    task_start_of,
)
from converge.coordination.bidding import INTENT_KIND, TASK_START_KIND, Strategy
from converge.core import Agent, Decision, Identity, Message, SubmitBid, Task, unseal
from converge.core.clock import ManualClock
from converge.core.pool import Pool
from converge.errors import SignatureError
from converge.network import LocalNetwork
from converge.policy.trust import TrustModel
from converge.protocol import Constraints, Intent, Receipt, Usage
from converge.runtime import AgentRuntime, StandardExecutor
from converge.store import Store

N = 20
TRUSTED = 7  # seeded with good history: the weighted strategy's winner
SLOPPY = 19  # the best quality on paper, but its output fails the requester's check
OUTSIDERS = (0, 1)  # the cheapest two are not in the pool, so never invited


class Provider(Agent):
    """Bids its own figures on every intent; does the work when awarded."""

    def __init__(self, index: int, clock: ManualClock) -> None:
        super().__init__(name=f"p{index}", capabilities=["summarize@1.4.0"])
        self.index = index
        self.clock = clock
        self.cost = 10.0 + index  # cheap providers are also the low-quality, slow ones...
        self.quality = round(0.5 + 0.02 * index, 4)
        self.latency_s = 5.0 + index
        self.awarded = 0

    async def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        out: list[Decision] = []
        for m in messages:
            if m.kind == INTENT_KIND:
                intent = intent_of(m)
                terms = {
                    "quality": self.quality,
                    "latency_s": self.latency_s,
                    "reliability": 0.9,
                    "resource_limits": {"max_tokens": 2000},
                }
                out.append(SubmitBid(auction_id=intent.id, amount=self.cost, terms=terms))
            elif m.kind == TASK_START_KIND:
                self.awarded += 1
                start = task_start_of(m)
                now = self.clock.now()
                output = "garbage" if self.index == SLOPPY else f"summary of {start.inputs['doc']}"
                out.append(report_progress(self.identity, start, seq=0, progress=0.5, now=now))
                out += report_done(
                    self.identity,
                    start,
                    output=output,
                    now=now,
                    started_at=now,
                    usage=Usage(tokens_in=900, tokens_out=300),
                )
        return out


def intent(clock: ManualClock, doc: str, **utility: float) -> Intent:
    return Intent(
        goal="summarise",
        capability="summarize>=1.0",
        inputs={"doc": doc},
        utility=utility,
        bid_window_s=30.0,
        constraints=Constraints(
            max_cost=100.0, deadline=clock.now() + 3600, resource_limits={"max_tokens": 5000}
        ),
    )


async def test_contract_net_among_twenty_provider_runtimes(store: Store) -> None:
    clock = ManualClock(time.time())  # messages carry timestamps that replay guards check
    net = LocalNetwork()
    trust = TrustModel(store, clock=clock)
    discovery = DiscoveryService(store, clock=clock)
    pools = PoolManager(store, clock=clock)
    pool = await pools.create_pool(Pool(name="summarisers", id="summarisers"))
    requester = Identity.generate()
    protocol = BiddingProtocol(
        store,
        requester,
        network=net,
        discovery=discovery,
        pools=pools,
        trust=trust,
        clock=clock,
        check_output=lambda done: done.output != "garbage",
    )
    providers = [Provider(i, clock) for i in range(N)]
    for p in providers:
        if p.index not in OUTSIDERS:
            await pools.join_pool(p.did, pool.id)
    for _ in range(3):
        await trust.record(providers[TRUSTED].did, "success")
    executor = StandardExecutor(network=net, bidding_protocols={"*": protocol}, clock=clock)
    members = {p.did for p in providers if p.index not in OUTSIDERS}

    async def registered() -> bool:
        return len(await discovery.find(capability="summarize>=1.0")) == N

    async with contextlib.AsyncExitStack() as stack:
        for p in providers:
            await stack.enter_async_context(
                AgentRuntime(
                    p, network=net, store=store, discovery=discovery, executor=executor, clock=clock
                )
            )
        await stack.enter_async_context(protocol.serving())
        assert await registered()  # each runtime registered as its `async with` was entered

        async def round_(strategy: Strategy, doc: str, **utility: float) -> Any:
            opened = await protocol.announce(
                intent(clock, doc, **utility), strategy=strategy, pool_id=pool.id
            )
            assert set(opened.invited) == members  # discovery, then pool admission
            closed = await protocol.run(opened.id)  # all answered: closes before the window
            assert len(closed.auction.offers) == N - len(OUTSIDERS)
            return await protocol.wait(opened.id, timeout=10.0)

        def score_of(i: int) -> Awaitable[float]:
            return trust.score(providers[i].did)

        before = {i: await score_of(i) for i in (2, TRUSTED, SLOPPY)}
        weighted = await round_("weighted", "d1", cost=1, quality=1, trust=4)
        after_weighted = await score_of(TRUSTED)
        cheapest = await round_("lowest_cost", "d2")
        after_cheap = await score_of(2)
        second = await round_("second_price", "d3")
        after_second = await score_of(2)
        best = await round_("highest_quality", "d4")

    rounds = {"weighted": weighted, "lowest": cheapest, "second": second, "quality": best}
    winners = {k: r.award.provider for k, r in rounds.items()}
    assert winners == {
        "weighted": providers[TRUSTED].did,
        "lowest": providers[2].did,  # 0 and 1 are cheaper, but not admitted by the pool
        "second": providers[2].did,
        "quality": providers[SLOPPY].did,
    }
    assert cheapest.award.price == 12.0
    assert second.award.price == 13.0  # the second-lowest cost, not its own 12
    assert [p.awarded for p in providers].count(0) == N - 3  # TaskStart only to winners

    for r in (weighted, cheapest, second):
        assert r.stage is RoundStage.SETTLED and r.outcome == "success"
        receipt = unseal(r.receipt, Receipt)  # both signatures, from the stored bytes
        assert (receipt.executor, receipt.requester) == (r.award.provider, requester.did)
        assert receipt.cost == r.award.price
        assert receipt.matches_output(f"summary of {r.auction.intent.inputs['doc']}")
        forged = msgspec.msgpack.decode(r.receipt)
        forged[2] = bytes(64)  # a requester signature that is not the requester's
        with pytest.raises(SignatureError):
            unseal(msgspec.msgpack.encode(forged), Receipt)
    assert best.stage is RoundStage.DISPUTED and best.outcome == "failure"

    # Trust moved by outcomes, round by round.
    assert after_weighted > before[TRUSTED]
    assert before[2] < after_cheap < after_second
    assert await score_of(SLOPPY) < before[SLOPPY]

    # One trace per round links every event; nothing was refused or failed on the way.
    kinds = [e.kind for e in await store.read(trace_id=weighted.trace_id)]
    assert kinds == [
        "bidding.opened",
        *["bidding.offer_accepted"] * (N - len(OUTSIDERS)),
        "bidding.awarded",
        "bidding.progress",
        "bidding.done",
        "bidding.settled",
        "trust.updated",
    ]
    trouble = ["decision.failed", "decision.refused", "message.rejected", "bidding.refused"]
    assert await store.read(kinds=trouble) == []
