"""BiddingProtocol, driven directly: offers verified on arrival, refusals as events, the award
and its TaskStart, the winner's reports, the countersigned receipt, trust, and reopening."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import pytest

from converge.coordination.bidding import (
    BiddingProtocol,
    BidWindowOpen,
    Rejection,
    RoundStage,
    report_done,
    report_progress,
)
from converge.core import Message, SubmitBid, unseal
from converge.core.clock import ManualClock
from converge.errors import SignatureError, ValidationError
from converge.policy.trust import TrustModel
from converge.protocol.objects import Offer, Receipt, TaskStart, Usage
from converge.store import SQLiteStore, Store
from tests.coordination._bidding_helpers import (
    ALICE,
    BOB,
    CAROL,
    MALLORY,
    REQUESTER,
    SleepClock,
    awarded_round,
    bid,
    intent,
    kinds,
    refusals,
    signed,
)


@pytest.fixture
def clock() -> SleepClock:
    return SleepClock(time.time())  # messages carry timestamps the replay guard checks


async def test_a_round_from_intent_to_countersigned_receipt(
    store: Store, clock: ManualClock
) -> None:
    trust = TrustModel(store, clock=clock)
    protocol = BiddingProtocol(store, REQUESTER, trust=trust, clock=clock)
    round_ = await awarded_round(protocol, clock)

    assert round_.stage is RoundStage.AWARDED
    award = round_.award
    assert award is not None
    assert (award.provider, award.price) == (BOB.did, 12.0)  # second price: the next cost
    assert round_.task_start is not None
    start = unseal(round_.task_start, TaskStart)
    assert (start.executor, start.requester, start.agreed_cost) == (BOB.did, REQUESTER.did, 12.0)
    assert (start.inputs, start.trace_id) == ({"doc": "r-1"}, round_.trace_id)

    progress = report_progress(BOB, start, seq=0, progress=0.5, now=clock.now())
    await protocol.handle(signed(progress, BOB, clock))
    usage = Usage(tokens_in=300, tokens_out=200)
    for d in report_done(BOB, start, output={"summary": "ok"}, now=clock.now(), usage=usage):
        await protocol.handle(signed(d, BOB, clock))

    done = await protocol.get(round_.id)
    assert done is not None and done.stage is RoundStage.SETTLED
    assert [n.progress for n in done.progress] == [0.5]
    assert done.outcome == "success"
    receipt = await protocol.receipt(round_.id)
    assert receipt is not None
    assert receipt.executor == BOB.did and receipt.requester == REQUESTER.did
    assert receipt.cost == 12.0 and receipt.matches_output({"summary": "ok"})
    assert done.receipt is not None
    unseal(done.receipt, Receipt)  # both signatures verify from the stored bytes
    assert await trust.score(BOB.did) > await trust.score(ALICE.did)
    assert await kinds(store, round_.trace_id) == [
        "bidding.opened",
        "bidding.offer_accepted",
        "bidding.offer_accepted",
        "bidding.offer_accepted",
        "bidding.awarded",
        "bidding.progress",
        "bidding.done",
        "bidding.settled",
        "trust.updated",
    ]


async def test_offers_are_checked_on_arrival_and_refusals_recorded(
    store: Store, clock: ManualClock
) -> None:
    protocol = BiddingProtocol(store, REQUESTER, clock=clock)
    round_ = await protocol.announce(intent(), providers=[ALICE.did, BOB.did, CAROL.did])
    over = await protocol.bid(ALICE, bid(round_, 80.0))
    unbounded = await protocol.bid(BOB, bid(round_, 5.0, resource_limits={}))
    stranger = await protocol.bid(MALLORY, bid(round_, 1.0))
    assert isinstance(over, Rejection) and over.reason == "over_budget"
    assert isinstance(unbounded, Rejection) and unbounded.reason == "resource_limits"
    assert isinstance(stranger, Rejection) and stranger.reason == "not_admitted"
    again = await protocol.bid(ALICE, bid(round_, 20.0))  # a refused offer does not bind
    assert isinstance(again, Offer)
    stored = await protocol.get(round_.id)
    assert stored is not None
    # A stranger's refusal is only logged: nobody outside the invited set grows the round.
    assert [r.reason for r in stored.auction.rejected] == ["over_budget", "resource_limits"]
    assert stored.answered == {ALICE.did}  # only an accepted offer answers
    assert [r["reason"] for r in await refusals(store)] == [
        "over_budget",
        "resource_limits",
        "not_admitted",
    ]


async def test_a_forged_or_relayed_offer_is_refused_and_disturbs_nothing(
    store: Store, clock: ManualClock
) -> None:
    protocol = BiddingProtocol(store, REQUESTER, clock=clock)
    round_ = await protocol.announce(intent(), providers=[ALICE.did, BOB.did])
    assert isinstance(await protocol.bid(ALICE, bid(round_, 10.0)), Offer)
    before = await protocol.get(round_.id)

    # MALLORY signs an offer that names BOB as its provider.
    mine = Offer(
        intent_id=round_.id,
        trace_id=round_.trace_id,
        capability="summarize@1.2.0",
        cost=0.5,
        resource_limits={"max_tokens": 10},
        created_at=clock.now(),
    ).sign(MALLORY)
    forged = msgspec.structs.replace(mine, provider=BOB.did).seal()
    refused = await protocol.receive_offer(forged, sender=MALLORY.did)
    assert isinstance(refused, Rejection) and refused.reason == "bad_signature"
    assert refused.provider == BOB.did  # who it claimed to be, for the record

    # BOB's genuine offer, relayed by MALLORY as its own message.
    genuine = Offer(
        intent_id=round_.id,
        trace_id=round_.trace_id,
        capability="summarize@1.2.0",
        cost=0.5,
        resource_limits={"max_tokens": 10},
        created_at=clock.now(),
    ).sign(BOB)
    relay = Message(
        kind="offer",
        payload=genuine.seal(),
        recipient=REQUESTER.did,
        trace_id=round_.trace_id,
        created_at=clock.now(),
    )
    await protocol.handle(relay.sign(MALLORY))
    # Garbage bytes are refused as malformed.
    garbage = await protocol.receive_offer(b"\x01\x02")
    assert isinstance(garbage, Rejection) and garbage.reason == "malformed"

    assert await protocol.get(round_.id) == before  # nothing else changed
    data = await refusals(store)
    assert [(r["reason"], r["recorded"]) for r in data] == [
        ("bad_signature", False),
        ("wrong_sender", False),
        ("malformed", False),
    ]
    # The actor is who really sent it; the provider an offer names is only a claim.
    assert [(r["claimed_provider"]) for r in data] == [BOB.did, BOB.did, ""]
    events = await store.read(kinds=["bidding.offer_refused"])
    assert [e.actor for e in events] == [MALLORY.did, MALLORY.did, ""]
    # Filed in the round's trace only as it names this requester's round; else in its own.
    assert [e.trace_id for e in events] == [round_.trace_id, round_.trace_id, REQUESTER.did]
    assert [e.subject for e in events] == [round_.id, round_.id, ""]


async def test_an_offer_after_the_window_is_refused_before_and_after_close(
    store: Store, clock: ManualClock
) -> None:
    protocol = BiddingProtocol(store, REQUESTER, clock=clock)
    round_ = await protocol.announce(intent(), providers=[ALICE.did, BOB.did, CAROL.did])
    assert isinstance(await protocol.bid(ALICE, bid(round_, 10.0)), Offer)
    with pytest.raises(BidWindowOpen):
        await protocol.close(round_.id)
    clock.advance(10)  # the window is [created_at, closes_at)
    late = await protocol.bid(BOB, bid(round_, 1.0))
    assert isinstance(late, Rejection) and late.reason == "window_closed"
    closed = await protocol.close(round_.id)
    assert closed.award is not None and closed.award.provider == ALICE.did
    later = await protocol.bid(CAROL, bid(round_, 0.5))
    assert isinstance(later, Rejection) and later.reason == "window_closed"
    assert await protocol.get(round_.id) == closed  # a closed auction is not rewritten
    assert [(r["reason"], r["recorded"]) for r in await refusals(store)] == [
        ("window_closed", True),
        ("window_closed", False),
    ]


async def test_no_valid_offer_fails_the_intent_with_a_reason(
    store: Store, clock: SleepClock
) -> None:
    protocol = BiddingProtocol(store, REQUESTER, clock=clock)
    round_ = await protocol.announce(intent(), providers=[ALICE.did])
    await protocol.bid(ALICE, bid(round_, 99.0))
    async with asyncio.TaskGroup() as group:
        running = group.create_task(protocol.run(round_.id))
        await clock.sleeping.wait()  # a refused offer does not bind: ALICE may bid again
        clock.advance(10)
    failed = running.result()
    assert (failed.stage, failed.reason, failed.award) == (
        RoundStage.FAILED,
        "no_valid_offers",
        None,
    )
    event = (await store.read(kinds=["bidding.failed"]))[0]
    assert event.data == {"reason": "no_valid_offers", "refused": {"over_budget": 1}}
    nobody = await protocol.announce(intent(), providers=[])
    assert (await protocol.run(nobody.id)).reason == "no_offers"  # nobody to wait for


async def test_run_waits_for_the_window_on_the_clock(store: Store, clock: SleepClock) -> None:
    protocol = BiddingProtocol(store, REQUESTER, clock=clock)
    round_ = await protocol.announce(intent(), providers=[ALICE.did, BOB.did])
    await protocol.bid(ALICE, bid(round_, 10.0))
    async with asyncio.TaskGroup() as group:
        running = group.create_task(protocol.run(round_.id))
        await clock.sleeping.wait()  # BOB never answers: run() sleeps on the clock
        assert not running.done()
        clock.advance(10)  # the window elapses
    closed = running.result()
    assert closed.award is not None and closed.award.provider == ALICE.did
    assert closed.auction.closed_at == clock.now()


async def test_run_closes_early_only_once_a_refused_provider_bids_again(
    store: Store, clock: SleepClock
) -> None:
    protocol = BiddingProtocol(store, REQUESTER, clock=clock)
    round_ = await protocol.announce(intent(), providers=[ALICE.did])
    assert isinstance(await protocol.bid(ALICE, bid(round_, 99.0)), Rejection)
    async with asyncio.TaskGroup() as group:
        running = group.create_task(protocol.run(round_.id))
        await clock.sleeping.wait()  # ALICE's refused offer does not count as an answer
        assert not running.done()
        assert isinstance(await protocol.bid(ALICE, bid(round_, 20.0)), Offer)
    closed = running.result()  # ALICE answered: closed before the window, no clock advance
    assert closed.award is not None and closed.award.price == 20.0
    assert (
        closed.auction.closed_at is not None and closed.auction.closed_at < round_.auction.closes_at
    )


async def test_reports_from_anyone_but_the_winner_are_refused(
    store: Store, clock: ManualClock
) -> None:
    protocol = BiddingProtocol(store, REQUESTER, clock=clock)
    round_ = await awarded_round(protocol, clock)
    assert round_.task_start is not None
    start = unseal(round_.task_start, TaskStart)
    # ALICE lost, but reports on the winner's task; BOB skips a progress seq.
    for d in report_done(ALICE, start, output="mine", now=clock.now()):
        await protocol.handle(signed(d, ALICE, clock))
    skipped = report_progress(BOB, start, seq=3, progress=0.9, now=clock.now())
    await protocol.handle(signed(skipped, BOB, clock))
    stored = await protocol.get(round_.id)
    assert stored is not None and stored.stage is RoundStage.AWARDED
    reasons = [r["reason"] for r in await refusals(store, "bidding.refused")]
    assert reasons == ["wrong_executor", "wrong_executor", "out_of_order"]


async def test_a_refused_output_is_disputed_and_costs_trust(
    store: Store, clock: ManualClock
) -> None:
    trust = TrustModel(store, clock=clock)
    protocol = BiddingProtocol(
        store, REQUESTER, trust=trust, clock=clock, check_output=lambda done: bool(done.output)
    )
    round_ = await awarded_round(protocol, clock, strategy="lowest_cost")
    assert round_.task_start is not None
    start = unseal(round_.task_start, TaskStart)
    for d in report_done(BOB, start, output="", now=clock.now()):
        await protocol.handle(signed(d, BOB, clock))
    disputed = await protocol.get(round_.id)
    assert disputed is not None and disputed.stage is RoundStage.DISPUTED
    assert disputed.reason == "the requester's output check refused the output"
    assert disputed.receipt is not None
    with pytest.raises(SignatureError):  # never countersigned
        unseal(disputed.receipt, Receipt)
    assert await trust.score(BOB.did) < 0.5


async def test_announce_refuses_bad_input(store: Store, clock: ManualClock) -> None:
    protocol = BiddingProtocol(store, REQUESTER, clock=clock)
    with pytest.raises(ValidationError) as info:
        await protocol.announce(intent(), providers=[ALICE.did], min_trust=0.5)
    assert info.value.field == "min_trust"
    with pytest.raises(ValidationError) as info:
        await protocol.announce(intent())  # neither providers nor discovery
    assert info.value.field == "providers"
    foreign = intent().sign(MALLORY)
    with pytest.raises(ValidationError) as info:
        await protocol.announce(foreign, providers=[ALICE.did])
    assert info.value.field == "issuer"
    with pytest.raises(ValidationError) as info:
        await protocol.bid(ALICE, SubmitBid(auction_id="nope", amount=1.0))
    assert info.value.field == "auction_id"


async def test_a_round_reads_back_the_same_after_reopening(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "rounds.db"
    store = await SQLiteStore.open(path)
    try:
        protocol = BiddingProtocol(
            store, REQUESTER, trust=TrustModel(store, clock=clock), clock=clock
        )
        round_ = await awarded_round(protocol, clock)
        assert round_.task_start is not None
        start = unseal(round_.task_start, TaskStart)
        for d in report_done(BOB, start, output=[1, 2, 3], now=clock.now()):
            await protocol.handle(signed(d, BOB, clock))
        before = await protocol.get(round_.id)
        log = await store.read(trace_id=round_.trace_id)
    finally:
        await store.aclose()

    reopened = await SQLiteStore.open(path)
    try:
        again = BiddingProtocol(reopened, REQUESTER, clock=clock)
        after = await again.get(round_.id)
        assert after == before and after is not None
        assert after.stage is RoundStage.SETTLED
        assert after.award is not None and after.award.provider == BOB.did
        receipt = await again.receipt(round_.id)
        assert receipt is not None and receipt.matches_output([1, 2, 3])
        assert await reopened.read(trace_id=round_.trace_id) == log
        score = await TrustModel(reopened, clock=clock).score(BOB.did)
        assert score > 0.5
    finally:
        await reopened.aclose()
