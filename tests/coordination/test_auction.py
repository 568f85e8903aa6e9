"""The pure auction core: validation on arrival, strategies, prices, tie-breaks, failure."""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converge.coordination.bidding import Strategy
from converge.coordination.bidding._award import tie_key
from converge.coordination.bidding._round import (
    _AUCTION_TRANSITIONS,
    Auction,
    AuctionClosed,
    AuctionState,
    BidWindowOpen,
    close,
    open_auction,
    receive,
)
from converge.core import Identity, unseal
from converge.core.capability import CapabilitySet
from converge.errors import SignatureError, ValidationError
from converge.protocol.objects import Constraints, Intent, Offer

T0 = 1_800_000_000.0
WINDOW = 10.0
DURING = T0 + 1.0
AFTER = T0 + WINDOW
SIG = b"\x01" * 64  # stands for a signature the driver has already verified


def make_intent(**kw: Any) -> Intent:
    fields: dict[str, Any] = {
        "goal": "summarise the report",
        "capability": "summarize>=1.2,<2",
        "bid_window_s": WINDOW,
        "id": "intent-1",
        "trace_id": "trace-1",
        "created_at": T0,
        "issuer": "did:requester",
        "signature": SIG,
    }
    fields.update(kw)
    return Intent(**fields)


def make_offer(provider: str, cost: float, **kw: Any) -> Offer:
    fields: dict[str, Any] = {
        "intent_id": "intent-1",
        "trace_id": "trace-1",
        "capability": "summarize@1.3.0",
        "cost": cost,
        "provider": provider,
        "id": f"offer-{provider}",
        "created_at": DURING,
        "signature": SIG,
    }
    fields.update(kw)
    return Offer(**fields)


def auction_of(
    offers: list[Offer], strategy: Strategy = "weighted", intent: Intent | None = None, **kw: Any
) -> Auction:
    a = open_auction(intent or make_intent(), now=T0, strategy=strategy, **kw)
    for o in offers:
        a = receive(a, o, now=DURING)
    return a


def reasons(a: Auction) -> list[str]:
    return [r.reason for r in a.rejected]


# -- opening ---------------------------------------------------------------------------------------


def test_open_auction_defaults_to_equal_weights_keyed_by_intent() -> None:
    a = open_auction(make_intent(), now=T0)
    assert a.id == "intent-1"
    assert a.state is AuctionState.OPEN
    assert a.closes_at == T0 + WINDOW
    assert a.weights == dict.fromkeys(("cost", "latency", "quality", "reliability", "trust"), 1.0)


@pytest.mark.parametrize(
    ("utility", "field"),
    [
        ({"cost": -1.0}, "utility.cost"),
        ({"price": 1.0}, "utility"),
        ({"cost": 0.0, "quality": 0.0}, "utility"),
        ({"cost": float("nan")}, "utility.cost"),
    ],
)
def test_open_auction_refuses_bad_weights(utility: dict[str, float], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        open_auction(make_intent(utility=utility), now=T0)
    assert info.value.field == field


def test_open_auction_refuses_an_unknown_strategy() -> None:
    with pytest.raises(ValidationError):
        open_auction(make_intent(), now=T0, strategy="dutch")  # type: ignore[arg-type]


def test_terminal_states_have_no_moves() -> None:
    assert _AUCTION_TRANSITIONS[AuctionState.CLOSED_AWARDED] == frozenset()
    assert _AUCTION_TRANSITIONS[AuctionState.CLOSED_FAILED] == frozenset()


# -- validation on arrival -------------------------------------------------------------------------

CAP_INTENT = {"constraints": Constraints(required_capabilities=("summarize>=1.0", "translate"))}


@pytest.mark.parametrize(
    ("offer", "intent_kw", "open_kw", "receive_kw", "reason"),
    [
        (make_offer("p", 1), {}, {}, {"now": AFTER}, "window_closed"),
        (make_offer("p", 1, intent_id="other"), {}, {}, {}, "wrong_intent"),
        (make_offer("p", 1, trace_id="other"), {}, {}, {}, "wrong_intent"),
        (make_offer("p", 1), {}, {"admitted": frozenset({"q"})}, {}, "not_admitted"),
        (make_offer("p", 1), {}, {"min_trust": 0.5}, {"trust": {"p": 0.4}}, "untrusted"),
        (make_offer("p", 1), {}, {"min_trust": 0.5}, {"trust": {}}, "untrusted"),
        (make_offer("p", 1, currency="EUR"), {}, {}, {}, "currency"),
        (make_offer("p", 1, capability="translate@1.3.0"), {}, {}, {}, "capability"),
        (make_offer("p", 1, capability="summarize@2.0.0"), {}, {}, {}, "capability"),
        (make_offer("p", 1, capability="Not A Cap!"), {}, {}, {}, "capability"),
        (
            make_offer("p", 1),
            {},
            {},
            {"provider_capabilities": CapabilitySet(["summarize@1.2.0"])},
            "capability",
        ),
        (make_offer("p", 1), CAP_INTENT, {}, {}, "capability"),
        (
            make_offer("p", 1),
            CAP_INTENT,
            {},
            {"provider_capabilities": CapabilitySet(["summarize@1.3.0"])},
            "capability",
        ),
        (make_offer("p", 5.01), {"constraints": Constraints(max_cost=5)}, {}, {}, "over_budget"),
        (
            make_offer("p", 1, quality=0.69),
            {"constraints": Constraints(min_quality=0.7)},
            {},
            {},
            "low_quality",
        ),
        (make_offer("p", 1, expires_at=DURING), {}, {}, {}, "expired"),
        (
            make_offer("p", 1, latency_s=3.0),
            {"constraints": Constraints(deadline=DURING + 2.0)},
            {},
            {},
            "too_slow",
        ),
    ],
)
def test_receive_records_each_refusal_with_its_reason(
    offer: Offer,
    intent_kw: dict[str, Any],
    open_kw: dict[str, Any],
    receive_kw: dict[str, Any],
    reason: str,
) -> None:
    a = open_auction(make_intent(**intent_kw), now=T0, **open_kw)
    after = receive(a, offer, **{"now": DURING, **receive_kw})
    assert after.offers == ()
    assert [(r.offer_id, r.provider, r.reason) for r in after.rejected] == [(offer.id, "p", reason)]
    assert after.rejected[0].detail  # the figures, for people


@pytest.mark.parametrize(
    ("offer", "intent_kw", "receive_kw"),
    [
        (make_offer("p", 5.0), {"constraints": Constraints(max_cost=5)}, {}),
        (make_offer("p", 1, quality=0.7), {"constraints": Constraints(min_quality=0.7)}, {}),
        (make_offer("p", 1), {"constraints": Constraints(min_quality=0.7)}, {}),  # unstated
        (make_offer("p", 1, latency_s=2.0), {"constraints": Constraints(deadline=DURING + 2)}, {}),
        (
            make_offer("p", 1),
            CAP_INTENT,
            {"provider_capabilities": CapabilitySet(["summarize@1.3.0", "translate@1.0"])},
        ),
        (make_offer("p", 1, expires_at=DURING + 0.5), {}, {}),
    ],
)
def test_receive_accepts_offers_on_the_boundary(
    offer: Offer, intent_kw: dict[str, Any], receive_kw: dict[str, Any]
) -> None:
    a = receive(open_auction(make_intent(**intent_kw), now=T0), offer, now=DURING, **receive_kw)
    assert a.offers == (offer,)
    assert a.rejected == ()


def test_a_second_offer_from_a_provider_is_refused_and_the_first_stands() -> None:
    first, second = make_offer("p", 5), make_offer("p", 1, id="offer-p2")
    a = auction_of([first, second])
    assert a.offers == (first,)
    assert [(r.offer_id, r.reason) for r in a.rejected] == [("offer-p2", "duplicate")]


def test_a_refused_offer_does_not_bind_its_provider() -> None:
    intent = make_intent(constraints=Constraints(max_cost=5))
    retry = make_offer("p", 4, id="offer-p2")
    a = auction_of([make_offer("p", 9), retry], intent=intent)
    assert a.offers == (retry,)
    assert reasons(a) == ["over_budget"]


def test_an_offer_after_close_is_recorded_as_late_not_raised() -> None:
    a, _ = close(auction_of([make_offer("a", 1)]), now=AFTER)
    late = receive(a, make_offer("b", 1), now=AFTER + 1)
    assert late.state is AuctionState.CLOSED_AWARDED
    assert reasons(late) == ["window_closed"]


def test_an_unsigned_offer_is_a_programming_error() -> None:
    with pytest.raises(SignatureError):
        receive(open_auction(make_intent(), now=T0), make_offer("p", 1, signature=None), now=DURING)


def test_really_signed_offers_round_trip_through_unseal() -> None:
    requester, cheap, dear = Identity.generate(), Identity.generate(), Identity.generate()
    intent = unseal(make_intent(signature=None).sign(requester).seal(), Intent)
    a = open_auction(intent, now=T0, strategy="second_price")
    for who, cost in ((cheap, 2.0), (dear, 3.0)):
        sealed = make_offer("", cost, id=f"o{cost}", signature=None).sign(who).seal()
        a = receive(a, unseal(sealed, Offer), now=DURING)
    _, award = close(a, now=AFTER)
    assert award is not None
    assert (award.provider, award.price) == (cheap.did, 3.0)
    award.offer.verify()  # the award carries the provider's signature


# -- closing ---------------------------------------------------------------------------------------


def test_close_before_the_window_ends_needs_force() -> None:
    a = auction_of([make_offer("a", 1)])
    with pytest.raises(BidWindowOpen) as info:
        close(a, now=DURING)
    assert info.value.closes_at == AFTER
    closed, award = close(a, now=DURING, force=True)
    assert closed.state is AuctionState.CLOSED_AWARDED
    assert closed.closed_at == DURING
    assert award is not None
    assert award.provider == "a"


def test_closing_twice_is_an_error() -> None:
    closed, _ = close(auction_of([make_offer("a", 1)]), now=AFTER)
    with pytest.raises(AuctionClosed):
        close(closed, now=AFTER)


def test_no_offer_fails_with_a_reason() -> None:
    closed, award = close(auction_of([]), now=AFTER)
    assert award is None
    assert closed.state is AuctionState.CLOSED_FAILED
    assert closed.failure_reason == "no_offers"


def test_only_refused_offers_fail_as_no_valid_offers() -> None:
    intent = make_intent(constraints=Constraints(max_cost=1))
    closed, award = close(auction_of([make_offer("a", 2)], intent=intent), now=AFTER)
    assert award is None
    assert closed.failure_reason == "no_valid_offers"


def test_fewer_valid_offers_than_min_offers_fail_without_an_award() -> None:
    offers = [make_offer("a", 2), make_offer("b", 3)]
    closed, award = close(auction_of(offers), now=AFTER, min_offers=3)
    assert award is None
    assert closed.state is AuctionState.CLOSED_FAILED
    assert closed.failure_reason == "too_few_offers"
    _, enough = close(auction_of(offers), now=AFTER, min_offers=2)
    assert enough is not None and enough.provider == "a"
    with pytest.raises(ValidationError) as bad:
        close(auction_of(offers), now=AFTER, min_offers=0)
    assert bad.value.field == "min_offers"


def test_an_offer_that_lapsed_before_close_cannot_win() -> None:
    lapsing = make_offer("cheap", 1, expires_at=AFTER - 1)
    a = auction_of([lapsing, make_offer("dear", 2)], strategy="lowest_cost")
    closed, award = close(a, now=AFTER)
    assert award is not None
    assert award.provider == "dear"
    assert [(r.provider, r.reason) for r in closed.rejected] == [("cheap", "expired")]
    assert closed.offers == a.offers  # the record of what arrived is kept


def test_offers_too_slow_for_the_deadline_at_close_fail_the_auction() -> None:
    intent = make_intent(constraints=Constraints(deadline=AFTER + 1))
    a = auction_of([make_offer("a", 1, latency_s=5)], intent=intent)
    closed, award = close(a, now=AFTER)
    assert award is None
    assert closed.failure_reason == "no_valid_offers"
    assert reasons(closed) == ["too_slow"]


# -- strategies ------------------------------------------------------------------------------------

A = make_offer("a", 10, latency_s=4, quality=0.9, id="A")
B = make_offer("b", 20, latency_s=2, quality=1.0, reliability=0.99, id="B")
C = make_offer("c", 30, quality=0.5, reliability=0.95, id="C")
TRUST = {"a": 0.5, "b": 0.9}


@pytest.mark.parametrize(
    ("strategy", "winner", "price", "score"),
    [
        ("lowest_cost", "A", 10, 10),
        ("first_price", "A", 10, 10),
        ("second_price", "A", 20, 10),
        ("highest_quality", "B", 20, 1.0),
    ],
)
def test_each_strategy_picks_and_pays(
    strategy: Strategy, winner: str, price: float, score: float
) -> None:
    _, award = close(auction_of([C, A, B], strategy=strategy), now=AFTER)
    assert award is not None
    assert (award.offer.id, award.price, award.score, award.strategy) == (
        winner,
        price,
        score,
        strategy,
    )


def test_weighted_scores_by_hand() -> None:
    # Equal weights. cost: A 1, B .5, C 0. latency (C unstated): A 0, B 1, C 0.
    # quality: A .8, B 1, C 0. reliability (A unstated): A 0, B 1, C 0.
    # trust (c unknown): A 0, B 1, C 0. Sums / 5: A .36, B .9, C 0.
    _, award = close(auction_of([A, B, C]), now=AFTER, trust=TRUST)
    assert award is not None
    assert award.offer.id == "B"
    assert award.price == 20
    got = [(r.offer_id, round(r.score, 9)) for r in award.ranking]
    assert got == [("B", 0.9), ("A", 0.36), ("C", 0.0)]


@pytest.mark.parametrize(
    ("utility", "winner", "scores"),
    [
        # cost: A 1, B .5, C 0; quality: A .8, B 1, C 0.
        ({"cost": 2, "quality": 1}, "A", {"A": 2.8 / 3, "B": 2 / 3, "C": 0.0}),
        ({"cost": 1, "quality": 3}, "B", {"A": 3.4 / 4, "B": 3.5 / 4, "C": 0.0}),
        ({"quality": 1}, "B", {"A": 0.8, "B": 1.0, "C": 0.0}),
    ],
)
def test_weights_from_utility_change_the_winner(
    utility: dict[str, float], winner: str, scores: dict[str, float]
) -> None:
    intent = make_intent(utility=utility)
    _, award = close(auction_of([A, B, C], intent=intent), now=AFTER)
    assert award is not None
    assert award.offer.id == winner
    assert {r.offer_id: r.score for r in award.ranking} == pytest.approx(scores)


def test_a_single_offer_scores_full_on_every_stated_criterion() -> None:
    _, award = close(auction_of([A]), now=AFTER)  # reliability, trust unstated: 0 of 5
    assert award is not None
    assert award.score == pytest.approx(3 / 5)


def test_second_price_with_one_offer_pays_its_own_price() -> None:
    _, award = close(auction_of([B], strategy="second_price"), now=AFTER)
    assert award is not None
    assert (award.offer.id, award.price) == ("B", 20)


@pytest.mark.parametrize("strategy", ["lowest_cost", "second_price", "weighted", "highest_quality"])
def test_ties_break_by_cost_then_a_key_no_bidder_picks_whatever_the_arrival_order(
    strategy: Strategy,
) -> None:
    # Offer ids are the bidders' choice: "id-0" .. "id-4" would decide if ids broke ties.
    ids = {"q": "id-3", "z": "id-1", "b": "id-4", "m": "id-2", "x": "id-0"}
    offers = [make_offer(p, 5, quality=0.8, id=i) for p, i in ids.items()]
    offers.append(make_offer("dear", 6, quality=0.8, id="id-00"))
    tied = sorted(ids, key=lambda p: tie_key("intent-1", p))
    awards = set()
    for seed in range(6):
        random.Random(seed).shuffle(offers)
        _, award = close(auction_of(offers, strategy=strategy), now=AFTER)
        assert award is not None
        awards.add(msgspec.msgpack.encode(award))
        assert award.provider == tied[0]
        assert [r.offer_id for r in award.ranking] == [*(ids[p] for p in tied), "id-00"]
    assert len(awards) == 1


def test_an_offer_id_chosen_to_sort_first_does_not_win_a_tie() -> None:
    # Whoever wins the tie, renaming the loser's offer "0" does not change the winner.
    first, second = sorted(["a", "b"], key=lambda p: tie_key("intent-1", p))
    for loser_id in ("0", "zzz"):
        offers = [make_offer(first, 5, id="m"), make_offer(second, 5, id=loser_id)]
        _, award = close(auction_of(offers, strategy="lowest_cost"), now=AFTER)
        assert award is not None and award.provider == first


def test_a_stated_value_beats_a_missing_one_even_when_all_stated_values_are_equal() -> None:
    intent = make_intent(utility={"quality": 1})
    stated, silent = make_offer("s", 9, quality=0.5), make_offer("m", 1)
    _, award = close(auction_of([stated, silent], intent=intent), now=AFTER)
    assert award is not None
    assert [(r.offer_id, r.score) for r in award.ranking] == [(stated.id, 1.0), (silent.id, 0.0)]


def test_a_closed_auction_round_trips_through_msgpack() -> None:
    closed, _ = close(auction_of([A, B, C], admitted=frozenset("abc")), now=AFTER, trust=TRUST)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(closed), type=Auction) == closed


# -- properties ------------------------------------------------------------------------------------

offer_specs = st.lists(
    st.tuples(
        st.integers(0, 10_000).map(lambda c: c / 100),  # cost
        st.none() | st.floats(0, 60),  # latency_s
        st.none() | st.floats(0, 1),  # quality
        st.none() | st.floats(0, 1),  # reliability
    ),
    min_size=0,
    max_size=12,
)


def build(specs: list[tuple[float, float | None, float | None, float | None]]) -> list[Offer]:
    return [
        make_offer(f"p{i}", c, latency_s=lat, quality=q, reliability=r, id=f"o{i}")
        for i, (c, lat, q, r) in enumerate(specs)
    ]


@settings(max_examples=60, deadline=None)
@given(specs=offer_specs, seed=st.integers(0, 2**32 - 1), trusts=st.lists(st.floats(0, 1)))
def test_awards_are_right_and_independent_of_arrival_order(
    specs: list[tuple[float, float | None, float | None, float | None]],
    seed: int,
    trusts: list[float],
) -> None:
    offers = build(specs)
    trust = {f"p{i}": t for i, t in enumerate(trusts)}
    shuffled = offers[:]
    random.Random(seed).shuffle(shuffled)
    costs = sorted(o.cost for o in offers)
    for strategy in ("lowest_cost", "second_price", "weighted", "highest_quality"):
        _, award = close(auction_of(offers, strategy=strategy), now=AFTER, trust=trust)
        _, again = close(auction_of(shuffled, strategy=strategy), now=AFTER, trust=trust)
        assert award == again
        if not offers:
            assert award is None
            continue
        assert award is not None
        if strategy == "lowest_cost":
            assert award.offer.cost == costs[0]
            assert award.price == costs[0]
        elif strategy == "second_price":
            assert award.price >= award.offer.cost
            assert award.price == (costs[1] if len(costs) > 1 else costs[0])
        elif strategy == "weighted":
            assert 0.0 <= award.score <= 1.0 + 1e-9
            assert award.score == max(r.score for r in award.ranking)
