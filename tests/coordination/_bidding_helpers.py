"""What the BiddingProtocol tests share: identities, an intent, bids, and messages as an agent's
executor would sign them."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from converge.coordination.bidding import BiddingProtocol, ContractRound, Strategy
from converge.core import Identity, Message, SendMessage, SubmitBid
from converge.core.clock import ManualClock
from converge.protocol.objects import Constraints, Intent, Offer
from converge.store import Store

REQUESTER = Identity.generate()
ALICE, BOB, CAROL, MALLORY = (Identity.generate() for _ in range(4))


class SleepClock(ManualClock):
    """A manual clock that says when someone starts sleeping on it, so a test advances time
    once a waiter is really waiting, without polling."""

    def __init__(self, start: float) -> None:
        super().__init__(start)
        self.sleeping = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.sleeping.set()
        await super().sleep(seconds)


def intent(**kw: Any) -> Intent:
    fields: dict[str, Any] = {
        "goal": "summarise the report",
        "capability": "summarize>=1.0",
        "inputs": {"doc": "r-1"},
        "bid_window_s": 10.0,
        "constraints": Constraints(max_cost=50.0, resource_limits={"max_tokens": 1000}),
    }
    fields.update(kw)
    return Intent(**fields)


def bid(round_: ContractRound, cost: float, **terms: Any) -> SubmitBid:
    terms.setdefault("capability", "summarize@1.2.0")
    terms.setdefault("resource_limits", {"max_tokens": 800})
    return SubmitBid(auction_id=round_.id, amount=cost, terms=terms)


def offer(round_: ContractRound, cost: float, clock: ManualClock, **kw: Any) -> Offer:
    """An unsigned offer on ``round_`` that meets its intent."""
    fields: dict[str, Any] = {
        "intent_id": round_.id,
        "trace_id": round_.trace_id,
        "capability": "summarize@1.2.0",
        "cost": cost,
        "resource_limits": {"max_tokens": 800},
        "created_at": clock.now(),
    }
    fields.update(kw)
    return Offer(**fields)


def raw_seal(obj: msgspec.Struct, who: Identity) -> bytes:
    """``obj`` sealed with a valid signature over bytes that are *not* canonical (they may hold
    a NaN or an infinity, which ``seal()`` refuses): what a hostile signer can send."""
    body = msgspec.msgpack.encode(obj)
    return msgspec.msgpack.encode([body, who.sign(body)])


def signed(decision: SendMessage, who: Identity, clock: ManualClock) -> Message:
    """What the agent's executor would put on the network for ``decision``."""
    to, trace = decision.recipient or REQUESTER.did, decision.trace_id
    return message(decision.kind, decision.payload, who, clock, to=to, trace_id=trace)


def message(
    kind: str,
    payload: bytes,
    who: Identity,
    clock: ManualClock,
    *,
    to: str = REQUESTER.did,
    trace_id: str | None = None,
) -> Message:
    return Message(
        kind=kind, payload=payload, recipient=to, trace_id=trace_id, created_at=clock.now()
    ).sign(who)


async def kinds(store: Store, trace_id: str) -> list[str]:
    return [e.kind for e in await store.read(trace_id=trace_id)]


async def refusals(store: Store, kind: str = "bidding.offer_refused") -> list[dict[str, Any]]:
    return [e.data for e in await store.read(kinds=[kind])]


async def awarded_round(
    protocol: BiddingProtocol, clock: ManualClock, strategy: Strategy = "second_price"
) -> ContractRound:
    """A round ALICE (12), BOB (9) and CAROL (15) bid on, closed after its window."""
    round_ = await protocol.announce(
        intent(), strategy=strategy, providers=[ALICE.did, BOB.did, CAROL.did]
    )
    for who, cost in ((ALICE, 12.0), (BOB, 9.0), (CAROL, 15.0)):
        assert isinstance(await protocol.bid(who, bid(round_, cost)), Offer)
    clock.advance(10)
    return await protocol.close(round_.id)
