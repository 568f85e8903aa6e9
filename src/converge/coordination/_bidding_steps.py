"""The auction phase of a contract-net round as pure steps on a ``ContractRound``: an offer
arriving, the close that awards (signing the winner's ``TaskStart``) or fails it, and the
events each records. ``BiddingProtocol._update`` applies a step to the round it read, with the
time, and writes what it returns in one unit of work.

A step is ``(round, now) -> (new round or None when nothing changes, events, result)``; it
reads nothing and writes nothing, so a conflicting write is retried by calling it again.

Events (trace: the intent's; subject: the auction id; actor: who caused it), ``data``:

- ``bidding.opened``: ``capability``, ``strategy``, ``closes_at``, ``invited``;
- ``bidding.unreachable``: ``providers`` the intent could not be delivered to (no longer waited
  for);
- ``bidding.offer_accepted``: ``offer_id``, ``provider``, ``cost``;
- ``bidding.offer_refused``: ``offer_id``, ``claimed_provider`` (the provider the offer names),
  ``reason`` (a ``RejectReason``), ``detail``, ``recorded`` (whether the auction's ``rejected``
  holds it: offers that do not verify, come from another sender, or reach a closed auction are
  only logged); its actor is the authenticated sender, "" when none (``_bidding_offers``);
- ``bidding.awarded``: ``winner``, ``offer_id``, ``price``, ``currency``, ``strategy``,
  ``score``, ``reason``, ``ranking`` (offer ids, best first), ``task_id``;
- ``bidding.failed``: ``reason`` (``no_offers``, ``no_valid_offers``), ``refused`` (count by
  reason);
- ``bidding.progress``, ``bidding.done``, ``bidding.settled``, ``bidding.disputed``,
  ``bidding.refused``: see ``_bidding_work``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from converge.coordination import _auction as core
from converge.coordination._auction import Rejection, RejectReason
from converge.coordination._bidding_core import ContractRound, RoundStage, move, round_event
from converge.core.capability import CapabilitySet
from converge.core.clip import clip, clip_text
from converge.core.identity import Identity
from converge.core.signing import decode_body
from converge.errors import ConvergeError, SignatureError
from converge.protocol.event import Event
from converge.protocol.objects import Offer, TaskStart

__all__ = [
    "UNRECORDED",
    "Step",
    "close_step",
    "drop_step",
    "offer_step",
    "open_round",
    "refusal_event",
    "unverified_rejection",
]

Step = Callable[[ContractRound, float], tuple[ContractRound | None, list[Event], Any]]
"""A pure change to a round at a time: (new round or None for no change, events, result)."""

_envelope = msgspec.msgpack.Decoder(list[bytes])

UNRECORDED: frozenset[RejectReason] = frozenset({"not_admitted", "untrusted", "wrong_intent"})
"""Refusals only logged, never stored in the round: anyone can send offers that earn them."""


def open_round(
    auction: core.Auction, requester: str, invited: list[str], now: float
) -> tuple[ContractRound, Event]:
    """A new round for an open ``auction``, and its ``bidding.opened`` event."""
    round_ = ContractRound(
        auction=auction, requester=requester, invited=tuple(invited), updated_at=now
    )
    intent = auction.intent
    opened = round_event(
        "opened",
        round_,
        actor=requester,
        at=now,
        capability=intent.capability,
        strategy=auction.strategy,
        closes_at=intent.closes_at,
        invited=list(invited),
    )
    return round_, opened


def drop_step(requester: str, gone: list[str]) -> Step:
    """Stop waiting for providers the intent could not reach (``bidding.unreachable``)."""

    def step(r: ContractRound, now: float) -> tuple[ContractRound, list[Event], None]:
        kept = tuple(d for d in r.invited if d not in gone)
        event = round_event("unreachable", r, actor=requester, at=now, providers=gone)
        return msgspec.structs.replace(r, invited=kept, updated_at=now), [event], None

    return step


def offer_step(
    offer: Offer,
    trust: Mapping[str, float] | None,
    caps: CapabilitySet | None,
    sender: str | None,
) -> Step:
    """Put a verified ``offer`` to the round's auction. Result: the offer, or its ``Rejection``
    (its event's actor: the authenticated ``sender``, "" when none).

    An accepted offer, or one refused while the auction is open, is written into the auction
    (``offers`` or ``rejected``, which keeps a provider's latest refusals only) with its event.
    Only logged (``recorded`` false): an offer that reaches a closed auction (a closed auction
    is never rewritten), and one refused as ``UNRECORDED`` — from a provider not admitted or
    trusted, or for another intent — so nobody outside the round can grow what it stores.
    """

    def step(r: ContractRound, now: float) -> tuple[ContractRound | None, list[Event], Any]:
        auction = core.receive(r.auction, offer, now=now, trust=trust, provider_capabilities=caps)
        if len(auction.offers) > len(r.auction.offers):
            # Only an accepted offer answers: a refused one does not bind, and its provider may
            # bid again within the window.
            answered = r.answered | ({offer.provider} & frozenset(r.invited))
            event = round_event(
                "offer_accepted",
                r,
                actor=offer.provider,
                at=now,
                offer_id=offer.id,
                provider=offer.provider,
                cost=offer.cost,
            )
            new = msgspec.structs.replace(r, auction=auction, answered=answered, updated_at=now)
            return new, [event], offer
        rejection = auction.rejected[-1]
        recorded = not r.auction.is_closed and rejection.reason not in UNRECORDED
        actor = sender or ""
        event = refusal_event(rejection, r.trace_id, r.id, now, recorded=recorded, actor=actor)
        if not recorded:
            return None, [event], rejection
        new = msgspec.structs.replace(r, auction=auction, updated_at=now)
        return new, [event], rejection

    return step


def close_step(
    identity: Identity,
    trust: Mapping[str, float] | None,
    *,
    force: bool,
    task_id: str,
    start_id: str,
    min_offers: int = 1,
) -> Step:
    """Close the round's auction: AWARDED with a ``TaskStart`` signed by ``identity`` (the
    requester) for the winner, or FAILED with the reason and a count of refusals by reason.

    Raises (from ``_auction.close``): ``AuctionClosed``, ``BidWindowOpen``.
    """

    def step(r: ContractRound, now: float) -> tuple[ContractRound, list[Event], None]:
        auction, award = core.close(
            r.auction, now=now, trust=trust, force=force, min_offers=min_offers
        )
        if award is None:
            reason = auction.failure_reason or "no_valid_offers"
            refused: dict[str, int] = {}
            for rejection in auction.rejected:
                refused[rejection.reason] = refused.get(rejection.reason, 0) + 1
            failed = move(r, RoundStage.FAILED, now, auction=auction, reason=reason)
            event = round_event(
                "failed", failed, actor=identity.did, at=now, reason=reason, refused=refused
            )
            return failed, [event], None
        start = TaskStart(
            task_id=task_id,
            executor=award.provider,
            inputs=auction.intent.inputs,
            intent_id=auction.intent.id,
            offer_id=award.offer.id,
            agreed_cost=award.price,
            deadline=auction.intent.constraints.deadline,
            id=start_id,
            trace_id=r.trace_id,
            issued_at=now,
        ).sign(identity)
        awarded = move(r, RoundStage.AWARDED, now, auction=auction, task_start=start.seal())
        event = round_event(
            "awarded",
            awarded,
            actor=identity.did,
            at=now,
            winner=award.provider,
            offer_id=award.offer.id,
            price=award.price,
            currency=award.currency,
            strategy=award.strategy,
            score=award.score,
            reason=award.reason,
            ranking=[row.offer_id for row in award.ranking],
            task_id=task_id,
        )
        return awarded, [event], None

    return step


def refusal_event(
    rejection: Rejection, trace_id: str, subject: str, now: float, *, recorded: bool, actor: str
) -> Event:
    """The ``bidding.offer_refused`` event of ``rejection``; ``actor`` is the authenticated
    sender ("" when none), the offer's provider only a claim (``data.claimed_provider``)."""
    # Every string here may come from the offer's bytes, verified or not: clipped for the log.
    return Event(
        kind="bidding.offer_refused",
        trace_id=trace_id,
        actor=clip(actor),
        subject=subject,
        data={
            "offer_id": clip(rejection.offer_id),
            "claimed_provider": clip(rejection.provider),
            "reason": rejection.reason,
            "detail": clip_text(rejection.detail),
            "recorded": recorded,
        },
        at=now,
    )


def unverified_rejection(
    sealed: bytes, error: ConvergeError, sender: str | None
) -> tuple[Rejection, str]:
    """The rejection of sealed bytes that did not verify as an ``Offer``, and the intent id
    they claim ("" if none can be read).

    The body is decoded *without* trusting it, only to say which offer was refused; nothing of
    it is stored in a round, and the caller files the event by its own rules.
    """
    reason: RejectReason = "bad_signature" if isinstance(error, SignatureError) else "malformed"
    claimed = _peek_offer(sealed)
    rejection = Rejection(
        claimed.id if claimed else "",
        claimed.provider if claimed else (sender or ""),
        reason,
        str(error),
    )
    return rejection, claimed.intent_id if claimed else ""


def _peek_offer(sealed: bytes) -> Offer | None:
    try:
        parts = _envelope.decode(sealed)
        return decode_body(parts[0], Offer) if parts else None
    except (ConvergeError, msgspec.DecodeError):
        return None
