"""BiddingProtocol against hostile or broken input: a bad message never ends ``serving()``, another
requester's round is never touched, offers are refused for figures that cannot be ranked, refusals
name only authenticated actors, and the round's stored state stays bounded."""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar

import msgspec
import pytest

from converge.coordination.bidding import (
    OFFER_KIND,
    RECEIPT_KIND,
    TASK_DONE_KIND,
    BiddingProtocol,
    ContractRound,
    Rejection,
    RoundStage,
    report_done,
)
from converge.coordination.bidding._round import MAX_REFUSALS_PER_PROVIDER, open_auction, receive
from converge.core import Identity, Message, ReplayGuard, unseal
from converge.core import identity as identity_module
from converge.core.clip import MAX_ID_CHARS, MAX_TEXT_CHARS, clip
from converge.core.clock import ManualClock
from converge.errors import SignatureError
from converge.network import LocalNetwork
from converge.network.local import Inbox
from converge.policy.trust import TrustModel
from converge.protocol.objects import Constraints, Offer, Receipt, TaskDone, TaskStart
from converge.store import Store
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
    message,
    offer,
    raw_seal,
    refusals,
    signed,
)


@pytest.fixture
def clock() -> SleepClock:
    return SleepClock(time.time())  # messages carry timestamps the replay guard checks


def nan_done(start: TaskStart, clock: ManualClock) -> TaskDone:
    return TaskDone(
        task_id=start.task_id,
        status="completed",
        output={"x": float("nan")},
        finished_at=clock.now(),
        trace_id=start.trace_id,
        executor=BOB.did,
    )


async def test_a_signed_task_done_holding_nan_is_refused_and_serving_goes_on(
    store: Store, clock: ManualClock
) -> None:
    net = LocalNetwork()
    protocol = BiddingProtocol(store, REQUESTER, network=net, clock=clock)
    round_ = await awarded_round(protocol, clock)
    assert round_.task_start is not None
    start = unseal(round_.task_start, TaskStart)
    async with protocol.serving():
        await net.send(message(TASK_DONE_KIND, raw_seal(nan_done(start, clock), BOB), BOB, clock))
        for d in report_done(BOB, start, output="fine", now=clock.now()):
            await net.send(signed(d, BOB, clock))
        settled = await protocol.wait(round_.id, timeout=5)
    assert settled.stage is RoundStage.SETTLED  # the loop took the messages after the bad one
    [refused] = await refusals(store, "bidding.refused")
    assert (refused["kind"], refused["reason"]) == (TASK_DONE_KIND, "malformed")


async def test_reports_about_another_requesters_round_are_refused_and_leave_it_alone(
    store: Store, clock: ManualClock
) -> None:
    net = LocalNetwork()
    mine = BiddingProtocol(store, REQUESTER, network=net, clock=clock)
    other = BiddingProtocol(store, Identity.generate(), clock=clock)
    theirs = await awarded_round(other, clock)
    assert theirs.task_start is not None
    start = unseal(theirs.task_start, TaskStart)
    async with mine.serving():  # would end with an ExceptionGroup if the loop died
        for d in report_done(BOB, start, output="ok", now=clock.now()):
            sent = message(d.kind, d.payload, BOB, clock, to=REQUESTER.did, trace_id=d.trace_id)
            await net.send(sent)  # to this requester, about the other's round
    assert await other.get(theirs.id) == theirs  # not moved to DONE by the wrong requester
    data = await refusals(store, "bidding.refused")
    assert [r["reason"] for r in data] == ["unknown_round", "unknown_round"]
    filed = await store.read(kinds=["bidding.refused"])
    assert {e.trace_id for e in filed} == {REQUESTER.did}  # not the other requester's trace
    # An offer on the other requester's auction is refused too, without touching it.
    late = await mine.bid(ALICE, bid(theirs, 1.0))
    assert late.reason == "wrong_intent"  # type: ignore[union-attr]
    assert await other.get(theirs.id) == theirs


async def test_handle_never_raises_on_a_bad_payload(store: Store, clock: ManualClock) -> None:
    protocol = BiddingProtocol(store, REQUESTER, clock=clock)
    round_ = await awarded_round(protocol, clock)
    assert round_.task_start is not None
    start = unseal(round_.task_start, TaskStart)
    await protocol.handle(
        message(TASK_DONE_KIND, raw_seal(nan_done(start, clock), BOB), BOB, clock)
    )
    await protocol.handle(message(OFFER_KIND, b"\xc1", BOB, clock))
    stored = await protocol.get(round_.id)
    assert stored is not None and stored.stage is RoundStage.AWARDED
    assert [r["reason"] for r in await refusals(store, "bidding.refused")] == ["malformed"]
    assert [r["reason"] for r in await refusals(store)] == ["malformed"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("latency_s", float("inf")),
        ("cost", float("inf")),
        ("quality", float("nan")),
        ("reliability", float("nan")),
        ("expires_at", float("inf")),
    ],
)
async def test_an_offer_with_a_non_finite_figure_is_refused_as_malformed(
    store: Store, clock: ManualClock, field: str, value: float
) -> None:
    protocol = BiddingProtocol(store, REQUESTER, clock=clock)
    round_ = await protocol.announce(intent(), strategy="weighted", providers=[ALICE.did, BOB.did])
    assert isinstance(await protocol.bid(ALICE, bid(round_, 10.0, latency_s=5.0)), Offer)
    fair = offer(round_, 20.0, clock, latency_s=6.0, quality=0.1, reliability=0.1).sign(BOB)
    fields = msgspec.to_builtins(msgspec.structs.replace(fair, signature=None))
    body = msgspec.msgpack.encode({**fields, field: value})  # as a hostile signer may send it
    sealed = msgspec.msgpack.encode([body, BOB.sign(body)])
    refused = await protocol.receive_offer(sealed, sender=BOB.did)
    assert isinstance(refused, Rejection) and refused.reason == "malformed"
    clock.advance(10)
    closed = await protocol.close(round_.id)
    assert closed.award is not None and closed.award.provider == ALICE.did
    assert all(math.isfinite(row.score) for row in closed.award.ranking)


def test_the_auction_core_refuses_a_non_finite_figure() -> None:
    opened = open_auction(intent().sign(REQUESTER), now=time.time())
    poisoned = Offer(
        intent_id=opened.id,
        trace_id=opened.intent.trace_id,
        capability="summarize@1.2.0",
        cost=1.0,
        latency_s=float("inf"),
        resource_limits={"max_tokens": 800},
        provider=BOB.did,
        signature=b"\x01" * 64,  # stands for one the driver verified over raw bytes
    )
    after = receive(opened, poisoned, now=time.time())
    assert after.offers == ()
    assert [r.reason for r in after.rejected] == ["malformed"]


async def test_a_forged_offer_on_a_made_up_round_is_filed_in_the_requesters_own_trace(
    store: Store, clock: ManualClock
) -> None:
    net = LocalNetwork()
    protocol = BiddingProtocol(store, REQUESTER, network=net, clock=clock)
    round_ = await protocol.announce(intent(), providers=[ALICE.did, BOB.did])
    made_up = offer(round_, 1.0, clock, intent_id="no-such-round", trace_id="victim-trace")
    forged = msgspec.structs.replace(made_up.sign(MALLORY), provider=BOB.did).seal()
    async with protocol.serving():
        await net.send(message(OFFER_KIND, forged, MALLORY, clock, trace_id="victim-trace"))
    [event] = await store.read(kinds=["bidding.offer_refused"])
    assert (event.actor, event.trace_id, event.subject) == (MALLORY.did, REQUESTER.did, "")
    assert event.data["claimed_provider"] == BOB.did
    assert event.data["reason"] == "bad_signature"
    assert await store.read(trace_id="victim-trace") == []


async def test_an_offer_naming_a_huge_provider_did_is_refused_cheaply_and_logged_clipped(
    store: Store, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[str] = []
    monkeypatch.setattr(identity_module, "_b58decode", decoded.append)
    protocol = BiddingProtocol(store, REQUESTER, clock=clock)
    round_ = await protocol.announce(intent(), providers=[ALICE.did, BOB.did])
    huge = "did:key:z6Mk" + "x" * 400_000
    fields = msgspec.to_builtins(offer(round_, 1.0, clock, id="o" * 100_000, provider=huge))
    body = msgspec.msgpack.encode(fields)
    sealed = msgspec.msgpack.encode([body, MALLORY.sign(body)])
    for sender in (None, huge):  # as bytes from anywhere, and as vouched for by a caller
        refused = await protocol.receive_offer(sealed, sender=sender)
        assert isinstance(refused, Rejection) and refused.reason == "bad_signature"
    assert decoded == []  # refused on its shape, before any base58
    events = await store.read(kinds=["bidding.offer_refused"])
    assert [e.actor for e in events] == ["", clip(huge)]
    for event in events:
        assert event.data["claimed_provider"] == clip(huge)
        assert len(event.data["offer_id"]) <= MAX_ID_CHARS
        assert len(event.data["detail"]) <= MAX_TEXT_CHARS
        assert len(msgspec.json.encode(event)) < 2_000


async def test_a_refused_message_is_logged_clipped(store: Store, clock: ManualClock) -> None:
    protocol = BiddingProtocol(store, REQUESTER, clock=clock)
    sent = Message(kind="k" * 100_000, payload=b"", recipient=REQUESTER.did, id="i" * 100_000).sign(
        BOB
    )
    await protocol.handle(msgspec.structs.replace(sent, created_at=clock.now()))  # forged
    await protocol.handle(  # genuine, of a kind nobody handles
        msgspec.structs.replace(sent, created_at=clock.now(), signature=None).sign(BOB)
    )
    events = await store.read(kinds=["bidding.refused"])
    assert [e.data["reason"] for e in events] == ["bad_signature", "unknown_kind"]
    for event in events:
        assert event.data["kind"] == clip("k" * 100_000)
        assert event.data["message_id"] == clip("i" * 100_000)
        assert len(event.data["detail"]) <= MAX_TEXT_CHARS
        assert len(msgspec.json.encode(event)) < 2_000


def failed_work(start: TaskStart, clock: ManualClock, cost: float) -> list[Message]:
    """BOB's failed TaskDone and a receipt for it at ``cost``, as messages."""
    done = TaskDone(
        task_id=start.task_id,
        status="failed",
        error="gave up",
        finished_at=clock.now(),
        trace_id=start.trace_id,
    ).sign(BOB)
    receipt = Receipt.for_done(
        done, requester=REQUESTER.did, intent_id=start.intent_id, cost=cost
    ).sign_as_executor(BOB)
    trace = start.trace_id
    return [
        message(TASK_DONE_KIND, done.seal(), BOB, clock, trace_id=trace),
        message(RECEIPT_KIND, receipt.seal(), BOB, clock, trace_id=trace),
    ]


async def test_failed_work_is_settled_at_cost_zero_and_disputed_if_it_bills(
    store: Store, clock: ManualClock
) -> None:
    protocol = BiddingProtocol(store, REQUESTER, clock=clock)
    honest = await awarded_round(protocol, clock, strategy="lowest_cost")
    assert honest.task_start is not None
    start = unseal(honest.task_start, TaskStart)
    for d in report_done(BOB, start, status="failed", error="gave up", now=clock.now()):
        await protocol.handle(signed(d, BOB, clock))
    settled = await protocol.get(honest.id)
    assert settled is not None
    assert (settled.stage, settled.outcome) == (RoundStage.SETTLED, "failure")
    receipt = await protocol.receipt(honest.id)
    assert receipt is not None and (receipt.status, receipt.cost) == ("failed", 0.0)

    billing = await awarded_round(protocol, clock, strategy="lowest_cost")
    assert billing.task_start is not None and billing.award is not None
    start = unseal(billing.task_start, TaskStart)
    for m in failed_work(start, clock, cost=billing.award.price):  # the full price for nothing
        await protocol.handle(m)
    disputed = await protocol.get(billing.id)
    assert disputed is not None and disputed.stage is RoundStage.DISPUTED
    assert disputed.reason is not None and "not paid for" in disputed.reason
    assert disputed.receipt is not None
    with pytest.raises(SignatureError):  # never countersigned
        unseal(disputed.receipt, Receipt)


async def test_a_late_winner_cannot_claim_it_finished_on_time(
    store: Store, clock: ManualClock
) -> None:
    trust = TrustModel(store, clock=clock)
    protocol = BiddingProtocol(store, REQUESTER, trust=trust, clock=clock)
    deadline = clock.now() + 100
    constraints = Constraints(max_cost=50.0, deadline=deadline)
    round_ = await protocol.announce(
        intent(constraints=constraints), strategy="lowest_cost", providers=[BOB.did]
    )
    assert isinstance(await protocol.bid(BOB, bid(round_, 10.0, resource_limits={})), Offer)
    closed = await protocol.run(round_.id)
    assert closed.task_start is not None
    start = unseal(closed.task_start, TaskStart)
    clock.advance(1000)  # far past the deadline on the requester's clock
    for d in report_done(BOB, start, output="ok", now=deadline - 1):  # claims it was on time
        await protocol.handle(signed(d, BOB, clock))
    settled = await protocol.get(round_.id)
    assert settled is not None and settled.stage is RoundStage.SETTLED
    assert (settled.outcome, settled.done_at) == ("timeout", clock.now())
    [event] = await store.read(kinds=["bidding.settled"])
    assert event.data["outcome"] == "timeout"


async def test_strangers_and_repeated_refusals_cannot_grow_the_stored_round(
    store: Store, clock: ManualClock
) -> None:
    protocol = BiddingProtocol(store, REQUESTER, clock=clock)
    round_ = await protocol.announce(intent(), providers=[ALICE.did])
    stored = await store.get(f"bidding/{round_.id}")
    assert stored is not None
    for _ in range(20):  # authenticated, but never invited
        stranger = Identity.generate()
        sent = offer(round_, 1.0, clock).sign(stranger).seal()
        await protocol.handle(message(OFFER_KIND, sent, stranger, clock))
    for _ in range(3 * MAX_REFUSALS_PER_PROVIDER):  # an invited provider, refused again and again
        assert isinstance(await protocol.bid(ALICE, bid(round_, 99.0)), Rejection)
    after = await protocol.get(round_.id)
    assert after is not None
    assert [r.provider for r in after.auction.rejected] == [ALICE.did] * MAX_REFUSALS_PER_PROVIDER
    logged = await refusals(store)
    assert [r["recorded"] for r in logged] == [False] * 20 + [True] * 3 * MAX_REFUSALS_PER_PROVIDER
    assert {r["reason"] for r in logged[:20]} == {"not_admitted"}


async def test_a_forced_close_scores_an_offer_accepted_while_it_read_trust(
    store: Store, clock: ManualClock
) -> None:
    other_process = BiddingProtocol(store, REQUESTER, clock=clock)  # its own locks

    class Interleaving(TrustModel):
        """Another process accepts CAROL's offer while the close is reading trust."""

        pending: ClassVar[list[ContractRound]] = []  # a class per test run

        async def scores(self, dids: Any, at: float | None = None) -> dict[str, float]:
            if self.pending:
                late = self.pending.pop()
                assert isinstance(await other_process.bid(CAROL, bid(late, 10.0)), Offer)
            return await super().scores(dids, at)

    trust = Interleaving(store, clock=clock)
    for _ in range(5):
        await trust.record(CAROL.did, "success")
    protocol = BiddingProtocol(store, REQUESTER, trust=trust, clock=clock)
    round_ = await protocol.announce(
        intent(utility={"trust": 1.0}), providers=[ALICE.did, CAROL.did]
    )
    assert isinstance(await protocol.bid(ALICE, bid(round_, 10.0)), Offer)
    trust.pending.append(round_)
    closed = await protocol.close(round_.id, force=True)
    assert len(closed.auction.offers) == 2  # CAROL's offer was in the round that was closed
    assert closed.award is not None and closed.award.provider == CAROL.did  # the trusted one
    assert [row.score for row in closed.award.ranking] == [1.0, 0.0]


async def test_an_offer_message_runs_end_to_end_through_serving(
    store: Store, clock: ManualClock
) -> None:
    net = LocalNetwork()
    trust = TrustModel(store, clock=clock)
    protocol = BiddingProtocol(store, REQUESTER, network=net, trust=trust, clock=clock)
    bobs_inbox = Inbox(10)
    net.register(BOB.did, bobs_inbox)  # BOB is reachable: the intent and TaskStart go there
    round_ = await protocol.announce(intent(), strategy="lowest_cost", providers=[BOB.did])
    assert [m.kind for m in bobs_inbox.drain(10)] == ["intent"]
    async with protocol.serving():
        sent = message(OFFER_KIND, offer(round_, 9.0, clock).sign(BOB).seal(), BOB, clock)
        await net.send(sent)
        replayed = sent  # the same signed message again: the ReplayGuard refuses it
        await net.send(replayed)
        closed = await protocol.run(round_.id)  # BOB's accepted offer answers: no waiting
        assert closed.task_start is not None
        start = unseal(closed.task_start, TaskStart)
        done, receipt = (signed(d, BOB, clock) for d in report_done(BOB, start, now=clock.now()))
        await net.send(done)
        await net.send(receipt)
        settled = await protocol.wait(round_.id, timeout=5)
        score = await trust.score(BOB.did)
        again = signed(report_done(BOB, start, now=clock.now())[1], BOB, clock)
        await net.send(again)  # a fresh message with a duplicate receipt
    assert settled.stage is RoundStage.SETTLED and settled.award is not None
    assert settled.award.provider == BOB.did
    assert await trust.score(BOB.did) == score  # the duplicate changed no trust
    assert await protocol.get(round_.id) == settled
    reasons = [r["reason"] for r in await refusals(store, "bidding.refused")]
    assert reasons == ["bad_signature", "duplicate"]  # the replay, then the second receipt
    assert not protocol._changed and not protocol._locks  # nothing kept for a settled round


async def test_a_wait_that_times_out_leaves_nothing_behind(
    store: Store, clock: ManualClock
) -> None:
    protocol = BiddingProtocol(store, REQUESTER, clock=clock)
    round_ = await protocol.announce(intent(), providers=[ALICE.did])
    with pytest.raises(TimeoutError):
        await protocol.wait(round_.id, timeout=0.01)
    assert not protocol._changed and not protocol._waiting


async def test_a_flood_dated_ahead_does_not_lock_honest_providers_out(
    store: Store, clock: ManualClock
) -> None:
    """The requester's replay guard: one identity's authentic messages dated just inside the
    future edge of the window once raised its floor past the clock, and every provider's offer
    was refused as stale for five minutes."""
    guard = ReplayGuard(max_entries=20, clock=clock)  # the default holds 100,000
    guard.check_values("did:key:earlier", "n", clock.now() - 10)  # in use already
    protocol = BiddingProtocol(store, REQUESTER, clock=clock, replay_guard=guard)
    assert protocol.guard is guard
    round_ = await protocol.announce(intent(), providers=[BOB.did])
    for _ in range(3 * guard.max_entries):
        spam = Message(
            kind=OFFER_KIND, payload=b"junk", recipient=REQUESTER.did, created_at=clock.now() + 299
        )
        await protocol.handle(spam.sign(MALLORY))
    await protocol.handle(
        message(OFFER_KIND, offer(round_, 9.0, clock).sign(BOB).seal(), BOB, clock)
    )
    stored = await protocol.get(round_.id)
    assert stored is not None
    assert [o.provider for o in stored.auction.offers] == [BOB.did]
    assert guard.floor <= clock.now()


@pytest.mark.parametrize(
    "fields",
    [
        {"created_at": "yesterday"},
        {"created_at": None},
        {"nonce": ["a", "list"]},
        {"kind": 5},
        {"trace_id": ["victim"]},
        {"id": "x" * 100_000},  # a str, but huge: accepted as a str, shown capped if refused
    ],
)
async def test_a_malformed_message_is_refused_and_serving_goes_on(
    store: Store, clock: ManualClock, fields: dict[str, Any]
) -> None:
    """Once, a validly signed message with ``created_at="yesterday"`` raised TypeError in the
    replay guard: ``handle`` raised it, and ``serving()`` ended."""
    net = LocalNetwork()
    protocol = BiddingProtocol(store, REQUESTER, network=net, clock=clock)
    round_ = await protocol.announce(intent(), providers=[BOB.did])
    base: dict[str, Any] = {"kind": OFFER_KIND, "payload": b"junk", "recipient": REQUESTER.did}
    hostile = Message(**{**base, "created_at": clock.now(), **fields}).sign(MALLORY)
    async with protocol.serving():
        await net.send(hostile)
        await net.send(message(OFFER_KIND, offer(round_, 9.0, clock).sign(BOB).seal(), BOB, clock))
        accepted = await protocol.wait(round_.id, until=lambda r: bool(r.auction.offers))
    assert [o.provider for o in accepted.auction.offers] == [BOB.did]
    for refused in await refusals(store, "bidding.refused"):
        assert all(v is None or (isinstance(v, str) and len(v) <= 1000) for v in refused.values())
        assert refused["reason"] in {"malformed", "bad_signature"}


def test_an_injected_replay_guard_is_used_even_while_empty(store: Store) -> None:
    """``replay_guard or ReplayGuard()`` once dropped the guard given: a guard has a length, so
    one that holds no nonce yet is falsy."""
    guard = ReplayGuard(max_entries=10)
    assert BiddingProtocol(store, REQUESTER, replay_guard=guard).guard is guard
