"""``Market`` and ``Provider``: contract-net among providers' runtimes in a few lines — each
provider with its own identity and price, the strategy named, the receipt awaited — and every
way a request or a provider can be wrong."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest

from converge.coordination import RoundStage
from converge.coordination.bidding import INTENT_KIND, Provider
from converge.core import Agent, Decision, Message, SubmitBid, Task
from converge.errors import (
    CapabilityError,
    ContractFailed,
    StateError,
    ValidationError,
)
from converge.protocol import Intent
from converge.runtime import Contract, Market
from converge.store import SQLiteStore

WORDS = {"hello": "bonjour", "cat": "chat"}


def translate(inputs: dict[str, Any]) -> str:
    return WORDS[inputs["text"]]


def provider(name: str, price: Any, **kw: Any) -> Provider:
    return Provider(name, "translate@1.0", price=price, work=kw.pop("work", translate), **kw)


async def test_the_cheapest_of_two_providers_wins_and_its_receipt_is_countersigned() -> None:
    async with Market() as market:
        alice, bob = provider("alice", 4.0), provider("bob", 3.0)
        await market.add(alice, bob)
        deal = await market.request("translate>=1.0", {"text": "hello"}, strategy="lowest_cost")
        assert isinstance(deal, Contract)
        assert (deal.provider, deal.provider_name, deal.price, deal.output) == (
            bob.did,
            "bob",
            3.0,
            "bonjour",
        )
        receipt = deal.receipt  # unsealed with both signatures verified
        assert (receipt.executor, receipt.requester) == (bob.did, market.did)
        assert receipt.status == "completed" and receipt.cost == 3.0
        assert receipt.matches_output("bonjour")
        assert deal.round.stage is RoundStage.SETTLED and deal.round.outcome == "success"
        assert {o.provider: o.cost for o in deal.round.auction.offers} == {
            alice.did: 4.0,
            bob.did: 3.0,
        }
        assert (alice.jobs, bob.jobs) == (0, 1)
        assert await market.trust.score(bob.did) > await market.trust.score(alice.did)
        kinds = [e.kind for e in await market.store.read(trace_id=deal.round.trace_id)]
        assert kinds[0] == "bidding.opened" and kinds.count("bidding.offer_accepted") == 2
        assert "bidding.settled" in kinds and "trust.updated" in kinds


async def test_each_strategy_is_named_and_second_price_pays_the_next_offer() -> None:
    async with Market() as market:
        await market.add(
            provider("cheap", 2.0, terms={"quality": 0.5}),
            provider("mid", 5.0, terms={"quality": 0.7}),
            provider("best", 9.0, work=lambda inputs: "excellent", terms={"quality": 0.99}),
        )
        second = await market.request("translate", {"text": "cat"}, strategy="second_price")
        assert (second.provider_name, second.price, second.receipt.cost) == ("cheap", 5.0, 5.0)
        best = await market.request("translate", {"text": "cat"}, strategy="highest_quality")
        assert (best.provider_name, best.price, best.output) == ("best", 9.0, "excellent")


async def test_a_price_function_decides_per_intent_and_none_lets_it_pass() -> None:
    seen: list[Intent] = []

    def price(intent: Intent) -> float | None:
        seen.append(intent)
        return None if intent.inputs["text"] == "cat" else 1.0

    async with Market() as market:
        await market.add(provider("picky", price), provider("steady", 6.0))
        assert (await market.request("translate", {"text": "hello"})).provider_name == "picky"
        # picky lets this one pass: the window runs out with steady's offer alone
        deal = await market.request("translate", {"text": "cat"}, bid_window=0.2)
        assert deal.provider_name == "steady"
    assert [i.inputs["text"] for i in seen] == ["hello", "cat"]
    assert all(i.goal == "translate" for i in seen)


async def test_async_work_and_any_agent_that_bids_take_part() -> None:
    class Bidder(Agent):
        """A hand-written provider: bids 1.0 through the executor and never does the work."""

        async def decide(self, messages: list[Message], tasks: list[Task]) -> list[Decision]:
            return [
                SubmitBid(auction_id=_intent_id(m), amount=7.0)
                for m in messages
                if m.kind == INTENT_KIND
            ]

    async def slow_translate(inputs: dict[str, Any]) -> str:
        await asyncio.sleep(0)
        return translate(inputs).upper()

    async with Market() as market:
        hand = Bidder(name="hand", capabilities=["translate@1.0"])
        await market.add(provider("async", 3.0, work=slow_translate), hand)
        deal = await market.request("translate", {"text": "cat"}, strategy="lowest_cost")
        assert (deal.provider_name, deal.output) == ("async", "CHAT")
        assert len(deal.round.auction.offers) == 2  # the hand-written bid was taken too


def _intent_id(message: Message) -> str:
    from converge.coordination import intent_of

    return intent_of(message).id


async def test_no_provider_of_the_capability_fails_the_request_at_once() -> None:
    async with Market() as market:
        await market.add(provider("alice", 4.0))
        with pytest.raises(ContractFailed) as info:
            await market.request("summarize>=1.0", {"text": "x"})
    assert (info.value.stage, info.value.reason) == ("failed", "no_offers")
    assert info.value.round.invited == ()


async def test_a_winner_whose_work_raises_fails_the_request_and_loses_trust() -> None:
    def broken(inputs: dict[str, Any]) -> str:
        raise RuntimeError("dictionary not found")

    async with Market() as market:
        flaky = provider("flaky", 1.0, work=broken)
        await market.add(flaky, provider("steady", 5.0))
        with pytest.raises(ContractFailed) as info:
            await market.request("translate", {"text": "cat"}, strategy="lowest_cost")
        assert info.value.stage == "settled"
        assert "RuntimeError: dictionary not found" in info.value.reason
        assert info.value.round.outcome == "failure"
        assert await market.trust.score(flaky.did) < 0.5


async def test_an_output_that_cannot_be_sent_fails_the_job() -> None:
    async with Market() as market:
        await market.add(provider("odd", 1.0, work=lambda inputs: object()))
        with pytest.raises(ContractFailed, match="cannot be sent"):
            await market.request("translate", {"text": "cat"})


async def test_an_output_the_requester_refuses_is_disputed() -> None:
    async with Market(check_output=lambda done: done.output != "chat") as market:
        await market.add(provider("alice", 1.0))
        with pytest.raises(ContractFailed) as info:
            await market.request("translate", {"text": "cat"})
    assert info.value.stage == "disputed"
    assert "output check refused" in info.value.reason


async def test_a_store_given_is_left_open_and_holds_the_rounds(tmp_path: Path) -> None:
    async with await SQLiteStore.open(tmp_path / "market.db") as store:
        async with Market(store) as market:
            await market.add(provider("alice", 2.0))
            deal = await market.request("translate", {"text": "hello"})
        await market.aclose()  # idempotent
        events = await store.read(trace_id=deal.round.trace_id)
        assert events[-1].kind == "trust.updated"


# -- bad input -------------------------------------------------------------------------------------


async def test_a_capability_given_for_the_requirement_says_what_was_meant() -> None:
    async with Market() as market:
        with pytest.raises(CapabilityError) as info:
            await market.request("translate@1.0", {"text": "hello"})
    assert info.value.hint == "translate>=1.0"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"inputs": ["hello"]}, "inputs"),
        ({"strategy": "cheapest"}, "strategy"),
        ({"bid_window": 0}, "bid_window_s"),
        ({"providers": [""]}, "providers"),
        ({"min_trust": 0.5, "providers": [3]}, "providers"),
    ],
)
async def test_a_bad_request_is_refused_naming_its_field(
    kwargs: dict[str, Any], field: str
) -> None:
    async with Market() as market:
        with pytest.raises(ValidationError) as info:
            await market.request("translate", **kwargs)
    assert info.value.field == field


async def test_a_market_is_used_inside_async_with_and_once() -> None:
    market = Market()
    with pytest.raises(StateError, match="enter the market first"):
        await market.request("translate")
    with pytest.raises(StateError, match="enter the market first"):
        await market.add(provider("alice", 1.0))
    async with market:
        with pytest.raises(ValidationError, match="not str"):
            await market.add("alice")  # type: ignore[arg-type]
        alice = provider("alice", 1.0)
        await market.add(alice)
        with pytest.raises(ValidationError, match="already"):
            await market.add(alice)
    with pytest.raises(StateError, match="closed"):
        await market.request("translate")
    with pytest.raises(StateError, match="once"):
        await market.__aenter__()
    with pytest.raises(ValidationError, match="Store"):
        Market("market.db")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"price": -1.0}, ValidationError, "price"),
        ({"price": math.nan}, ValidationError, "price"),
        ({"price": True}, ValidationError, "price"),
        ({"price": "cheap"}, ValidationError, "price"),
        ({"work": "translate"}, ValidationError, "work"),
        ({"terms": [("quality", 1)]}, ValidationError, "terms"),
        ({"capabilities": "translate>=1.0"}, CapabilityError, "name"),
        ({"capabilities": []}, ValidationError, "capabilities"),
        ({"name": ""}, ValidationError, "name"),
    ],
)
def test_a_bad_provider_is_refused_naming_its_field(
    kwargs: dict[str, Any], error: type[Exception], field: str
) -> None:
    args: dict[str, Any] = {
        "name": "p",
        "capabilities": "translate@1.0",
        "price": 1.0,
        "work": translate,
    }
    args.update(kwargs)
    with pytest.raises(error) as info:
        Provider(**args)
    assert getattr(info.value, "field", None) == field


async def test_a_price_function_returning_a_bad_price_is_the_providers_failure() -> None:
    async with Market() as market:
        bad = provider("bad", lambda intent: -5)
        await market.add(bad, provider("good", 3.0))
        deal = await market.request("translate", {"text": "cat"}, bid_window=0.2)
        assert deal.provider_name == "good"
        failed = [e for e in await market.store.read(kinds=["decide.failed"]) if e.actor == bad.did]
        assert len(failed) == 1 and "a price is a number >= 0" in str(failed[0].data)
