"""The contract-net auction, pure: an ``Auction``, an already signature-verified ``Offer`` and
``now`` in; the new auction (and, on close, the ``Award``) out. No I/O, no clock, no store.

``open_auction`` starts one for a verified ``Intent``; ``receive`` validates each offer as it
arrives and records it in ``offers`` or, with a machine-readable reason, in ``rejected`` (an
offer's fault never raises: only a caller's mistake does); ``close`` picks the winner by the
auction's named strategy. ``converge.coordination.bidding.BiddingProtocol`` drives this over
the store, the runtime and receipts.

Choices this module makes, each a rule a caller can rely on:

* **One binding offer per provider.** A provider's first *accepted* offer stands; a later one
  is rejected as ``duplicate``. An offer is a signed commitment the requester may already have
  acted on, and on an open bus a revisable bid lets a provider undercut rivals it has seen by a
  cent at the last moment; a single sealed bid is also what makes second-price bidding
  truthful. An offer that was *rejected* does not bind, so its provider may bid again.
* **The bid window is half-open**, ``[created_at, closes_at)``: an offer at ``closes_at`` is
  late (``window_closed``), and ``close`` is allowed from ``closes_at`` on. Closing earlier
  needs ``force=True`` — the requester has enough offers, or must act now — so a driver that
  closes early by mistake is an error, not a silently shorter window.
* **Offers are re-checked at close**: one that expired, or whose promised latency no longer
  reaches the deadline, moves to ``rejected`` (``expired``, ``too_slow``) and cannot win.
* **Scoring, tie-breaks and prices** at close are ``_auction_select``'s: see its docstring.
* **Figures are finite**: an offer whose ``cost``, ``latency_s``, ``quality``, ``reliability``
  or ``expires_at`` is a NaN or an infinity is refused (``malformed``). The order of all the
  checks is ``_auction_checks``'s: see its docstring.
* **Resource limits**: for each bound in ``intent.constraints.resource_limits`` the offer must
  state a limit of its own (``offer.resource_limits``) no greater; an unbounded or larger one is
  refused (``resource_limits``). The winner's limits travel in the award.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Literal, get_args

import msgspec

from converge.coordination._auction_checks import lapse, refusal, requirement
from converge.coordination._auction_select import CRITERIA, award_reason, price_of, rank
from converge.core.capability import CapabilitySet
from converge.errors import InvalidTransition, SignatureError, StateError, ValidationError
from converge.protocol.objects import Intent, Offer

__all__ = [
    "AUCTION_TRANSITIONS",
    "CRITERIA",
    "MAX_REFUSALS_PER_PROVIDER",
    "STRATEGIES",
    "Auction",
    "AuctionClosed",
    "AuctionState",
    "Award",
    "BidWindowOpen",
    "RankedOffer",
    "RejectReason",
    "Rejection",
    "Strategy",
    "close",
    "open_auction",
    "receive",
]

Strategy = Literal["lowest_cost", "highest_quality", "weighted", "first_price", "second_price"]
"""How ``close`` picks the winner and what it pays."""
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)

RejectReason = Literal[
    "window_closed",
    "wrong_intent",
    "not_admitted",
    "untrusted",
    "duplicate",
    "currency",
    "capability",
    "over_budget",
    "low_quality",
    "resource_limits",
    "expired",
    "too_slow",
    "bad_signature",
    "malformed",
    "wrong_sender",
]
"""Why an offer was refused (``Rejection.reason``). ``malformed`` is also an offer with a
non-finite figure; ``bad_signature`` and ``wrong_sender`` are the driver's: an offer whose
signature does not verify, or that another agent than its provider sent."""


MAX_REFUSALS_PER_PROVIDER = 8
"""The most refusals ``rejected`` keeps per provider (the latest): a refused offer does not
bind, so a provider may bid again and again, and the record must not grow with it."""


class AuctionState(enum.StrEnum):
    """Where an auction is in its life."""

    OPEN = "open"
    """Taking offers."""
    CLOSED_AWARDED = "closed_awarded"
    """Closed with a winner (``Auction.award``). Terminal."""
    CLOSED_FAILED = "closed_failed"
    """Closed without a valid offer (``Auction.failure_reason``). Terminal."""


_S = AuctionState
AUCTION_TRANSITIONS: dict[AuctionState, frozenset[AuctionState]] = {
    _S.OPEN: frozenset({_S.CLOSED_AWARDED, _S.CLOSED_FAILED}),
    _S.CLOSED_AWARDED: frozenset(),
    _S.CLOSED_FAILED: frozenset(),
}
"""Every allowed move: ``AUCTION_TRANSITIONS[a]`` is the set of states ``a`` may move to."""


class BidWindowOpen(StateError):
    """``close`` was called before the bid window ended, without ``force=True``.

    Attributes:
        auction_id: the auction.
        closes_at: when its window ends.
        now: when close was attempted.
    """

    def __init__(self, auction_id: str, closes_at: float, now: float) -> None:
        super().__init__(
            f"auction {auction_id} takes offers until {closes_at} (now {now}); "
            "pass force=True to close it early"
        )
        self.auction_id = auction_id
        self.closes_at = closes_at
        self.now = now


class AuctionClosed(StateError):
    """``close`` was called on an auction that is already closed.

    Attributes:
        auction_id: the auction.
        state: its (terminal) state.
    """

    def __init__(self, auction_id: str, state: AuctionState) -> None:
        super().__init__(f"auction {auction_id} is already {state.value}")
        self.auction_id = auction_id
        self.state = state


class Rejection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """An offer the auction refused, and why."""

    offer_id: str
    """The offer."""
    provider: str
    """Its provider's did."""
    reason: RejectReason
    """Machine-readable reason."""
    detail: str = ""
    """The same for people: the figures compared."""


class RankedOffer(msgspec.Struct, frozen=True, forbid_unknown_fields=True, array_like=True):
    """One row of an award's ranking."""

    offer_id: str
    """The offer."""
    score: float
    """Its score under the strategy (see ``Award.score``)."""


class Award(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The outcome of a closed auction with a winner."""

    auction_id: str
    """The auction."""
    intent_id: str
    """The intent awarded."""
    offer: Offer
    """The winning offer (as verified on arrival, signature included)."""
    provider: str
    """The winner's did."""
    price: float
    """What the requester pays (the second-lowest cost under ``second_price``)."""
    currency: str
    """The currency of ``price``."""
    strategy: Strategy
    """The strategy that picked it."""
    score: float
    """The winner's score: its cost for the cost strategies (lower is better), its quality for
    ``highest_quality``, its weighted score in [0, 1] for ``weighted``."""
    ranking: tuple[RankedOffer, ...]
    """Every valid offer, best first."""
    reason: str
    """Why it won, for people."""


class Auction(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A contract-net auction for one intent. Change it only through this module's functions."""

    id: str
    """Unique id (the intent's id unless the opener named one)."""
    intent: Intent
    """The intent put out to bid, already verified."""
    strategy: Strategy
    """How the winner is picked and paid."""
    weights: dict[str, float]
    """The weighted strategy's weights by criterion, from ``intent.utility`` (empty: 1 each)."""
    opened_at: float
    """When it was opened."""
    currency: str = "USD"
    """The currency offers must be priced in; costs in others are not comparable."""
    admitted: frozenset[str] | None = None
    """The providers allowed to bid; None: anyone."""
    min_trust: float | None = None
    """The least trust a provider needs to bid (checked when ``receive`` is given trust)."""
    state: AuctionState = AuctionState.OPEN
    """Where it is in its life."""
    offers: tuple[Offer, ...] = ()
    """The offers accepted so far, in arrival order."""
    bidders: frozenset[str] = frozenset()
    """The providers in ``offers`` (kept so the one-offer rule is a set lookup)."""
    rejected: tuple[Rejection, ...] = ()
    """The offers refused, with their reasons, in arrival order (at most
    ``MAX_REFUSALS_PER_PROVIDER`` per provider, the latest)."""
    closed_at: float | None = None
    """When it closed."""
    award: Award | None = None
    """The outcome, once CLOSED_AWARDED."""
    failure_reason: str | None = None
    """Why it failed, once CLOSED_FAILED: ``no_offers``, ``no_valid_offers`` or
    ``too_few_offers`` (fewer valid offers than the closer's ``min_offers``)."""

    @property
    def closes_at(self) -> float:
        """When the bid window ends."""
        return self.intent.closes_at

    @property
    def is_closed(self) -> bool:
        """Whether it is CLOSED_AWARDED or CLOSED_FAILED."""
        return self.state is not _S.OPEN


def open_auction(
    intent: Intent,
    *,
    now: float,
    strategy: Strategy = "weighted",
    admitted: frozenset[str] | None = None,
    min_trust: float | None = None,
    currency: str = "USD",
    auction_id: str | None = None,
) -> Auction:
    """An open auction for ``intent`` (already verified by the caller).

    Raises:
        ValidationError: an unknown strategy, a bad weight in ``intent.utility``, a bad time.
    """
    if strategy not in STRATEGIES:
        raise ValidationError(
            f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}", field="strategy"
        )
    requirement(intent.capability)  # a malformed requirement is the opener's mistake
    return Auction(
        id=auction_id or intent.id,
        intent=intent,
        strategy=strategy,
        weights=_weights(intent.utility),
        opened_at=_check_time(now, "now"),
        currency=currency,
        admitted=None if admitted is None else frozenset(admitted),
        min_trust=None if min_trust is None else _check_time(min_trust, "min_trust"),
    )


def receive(
    auction: Auction,
    offer: Offer,
    *,
    now: float,
    trust: Mapping[str, float] | None = None,
    provider_capabilities: CapabilitySet | None = None,
) -> Auction:
    """``auction`` with ``offer`` accepted, or recorded in ``rejected`` with its reason.

    Args:
        auction: the auction.
        offer: an offer whose signature the caller has verified (``unseal``).
        now: the current time.
        trust: trust by provider did, for ``auction.min_trust`` (a provider missing counts 0).
        provider_capabilities: what discovery lists for the provider; when given, the offered
            capability must be among them and they must meet ``required_capabilities``
            (without it, the offered capability alone must meet them).

    Raises:
        SignatureError: the offer is unsigned (the caller skipped verification).
        ValidationError: ``now`` is not a finite time.
    """
    _check_time(now, "now")
    if not isinstance(offer, Offer):
        raise ValidationError(f"expected an Offer, not {type(offer).__name__}", field="offer")
    if offer.signature is None:
        raise SignatureError(
            f"offer {offer.id} is unsigned; verify offers (unseal) before receive()",
            field="signature",
            reason="unsigned",
        )
    refused = refusal(auction, offer, now, trust, provider_capabilities)
    if refused is not None:
        reason, detail = refused
        rejection = Rejection(offer.id, offer.provider, reason, detail)
        rejected = _keep_latest((*auction.rejected, rejection), offer.provider)
        return msgspec.structs.replace(auction, rejected=rejected)
    return msgspec.structs.replace(
        auction,
        offers=(*auction.offers, offer),
        bidders=auction.bidders | {offer.provider},
    )


def close(
    auction: Auction,
    *,
    now: float,
    trust: Mapping[str, float] | None = None,
    force: bool = False,
    min_offers: int = 1,
) -> tuple[Auction, Award | None]:
    """Close ``auction`` and pick the winner by its strategy.

    Args:
        auction: an open auction.
        now: the current time.
        trust: trust by provider did, for the weighted score (missing: scores 0 on trust).
        force: close before the bid window ends.
        min_offers: the fewest valid offers worth awarding; with fewer the auction fails
            (``too_few_offers``) rather than award a contest nobody contested.

    Returns:
        The closed auction and its award; ``(failed auction, None)`` when no offer is valid,
        or fewer than ``min_offers`` are.

    Raises:
        AuctionClosed: the auction is already closed.
        BidWindowOpen: the window is still open and ``force`` is false.
        ValidationError: ``now`` or a trust value is not finite.
    """
    _check_time(now, "now")
    if auction.state is not _S.OPEN:
        raise AuctionClosed(auction.id, auction.state)
    if now < auction.closes_at and not force:
        raise BidWindowOpen(auction.id, auction.closes_at, now)

    deadline = auction.intent.constraints.deadline
    live: list[Offer] = []
    lapsed: list[Rejection] = []
    for o in auction.offers:
        late = lapse(o, now, deadline)
        if late is None:
            live.append(o)
        else:
            lapsed.append(Rejection(o.id, o.provider, late[0], f"at close: {late[1]}"))
    rejected = (*auction.rejected, *lapsed)

    if isinstance(min_offers, bool) or not isinstance(min_offers, int) or min_offers < 1:
        raise ValidationError(
            f"min_offers must be an int >= 1, not {min_offers!r}", field="min_offers"
        )
    if not live:
        reason = "no_offers" if not auction.offers and not auction.rejected else "no_valid_offers"
        failed = _move(auction, _S.CLOSED_FAILED, now, rejected=rejected, failure_reason=reason)
        return failed, None
    if len(live) < min_offers:
        reason = "too_few_offers"
        failed = _move(auction, _S.CLOSED_FAILED, now, rejected=rejected, failure_reason=reason)
        return failed, None

    ranked, scores = rank(auction, live, trust)
    winner = ranked[0]
    price = price_of(auction.strategy, ranked)
    award = Award(
        auction_id=auction.id,
        intent_id=auction.intent.id,
        offer=winner,
        provider=winner.provider,
        price=price,
        currency=auction.currency,
        strategy=auction.strategy,
        score=scores[0],
        ranking=tuple(RankedOffer(o.id, s) for o, s in zip(ranked, scores, strict=True)),
        reason=award_reason(auction.strategy, scores[0], price, len(ranked)),
    )
    done = _move(auction, _S.CLOSED_AWARDED, now, rejected=rejected, award=award)
    return done, award


def _keep_latest(rejected: tuple[Rejection, ...], provider: str) -> tuple[Rejection, ...]:
    """``rejected`` with at most ``MAX_REFUSALS_PER_PROVIDER`` of ``provider``'s, the latest."""
    mine = [i for i, r in enumerate(rejected) if r.provider == provider]
    if len(mine) <= MAX_REFUSALS_PER_PROVIDER:
        return rejected
    drop = set(mine[: len(mine) - MAX_REFUSALS_PER_PROVIDER])
    return tuple(r for i, r in enumerate(rejected) if i not in drop)


# -- helpers -------------------------------------------------------------------------------------


def _move(auction: Auction, target: AuctionState, now: float, **changes: object) -> Auction:
    """``auction`` moved to ``target``; the one place a state changes, checked by the table."""
    if target not in AUCTION_TRANSITIONS[auction.state]:
        raise InvalidTransition(auction.state, target, subject=auction.id)
    return msgspec.structs.replace(auction, state=target, closed_at=now, **changes)


def _weights(utility: Mapping[str, float]) -> dict[str, float]:
    """The weighted strategy's weights: ``utility`` checked, or 1 for every criterion."""
    if not utility:
        return dict.fromkeys(CRITERIA, 1.0)
    unknown = sorted(set(utility) - set(CRITERIA))
    if unknown:
        raise ValidationError(
            f"unknown utility criteria {unknown}; use {', '.join(CRITERIA)}", field="utility"
        )
    weights: dict[str, float] = {}
    for name in CRITERIA:
        w = utility.get(name, 0.0)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValidationError(
                f"utility weight {name!r} must be a finite number >= 0, not {w!r}",
                field=f"utility.{name}",
            )
        weights[name] = float(w)
    if not any(weights.values()):
        raise ValidationError("utility weights are all 0: nothing to score", field="utility")
    return weights


def _check_time(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValidationError(f"{field} must be a finite number, not {value!r}", field=field)
    return float(value)
