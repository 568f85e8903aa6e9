"""Offers reaching the requester: verified as received, checked against the requester's round,
then put to its auction (``_bidding_steps.offer_step``); or refused with a reason and an event.

Functions of a ``BiddingProtocol`` (``p``), which keeps its public methods in ``bidding.py``.

Who a refusal names: the ``bidding.offer_refused`` event's actor is the authenticated sender
(the message's verified signer, or the ``sender`` the caller vouches for), empty when there is
none; the provider the offer names goes in ``data.claimed_provider``, whatever it claims. The
event is filed in the round's trace, about the auction, only when the offer names a round that
exists and is this requester's; otherwise in the trace named by the requester's own did, with
no subject, so an unverified claim never chooses where its refusal is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from converge.coordination._auction import Rejection, RejectReason
from converge.coordination._bidding_core import ContractRound
from converge.coordination._bidding_steps import offer_step, refusal_event, unverified_rejection
from converge.core.signing import unseal
from converge.errors import ConvergeError
from converge.protocol.objects import Offer

if TYPE_CHECKING:  # bidding imports this module at run time
    from converge.coordination.bidding import BiddingProtocol

__all__ = ["receive_offer"]


async def receive_offer(p: BiddingProtocol, sealed: bytes, sender: str | None) -> Offer | Rejection:
    """``BiddingProtocol.receive_offer``: verify ``sealed`` and put it to its auction."""
    try:
        offer = unseal(sealed, Offer)  # refuses a NaN or an infinity, which cannot be ranked
    except ConvergeError as exc:
        rejection, intent_id = unverified_rejection(sealed, exc, sender)
        await _log(p, rejection, intent_id, sender)
        return rejection
    if sender is not None and sender != offer.provider:
        detail = f"sent by {sender}, not by its provider"
        return await _refused(p, offer, "wrong_sender", detail, sender)
    round_ = await _own_round(p, offer.intent_id)
    if round_ is None:  # another requester's round is none of ours
        detail = f"no auction of this requester for intent {offer.intent_id}"
        return await _refused(p, offer, "wrong_intent", detail, sender)
    trust = None
    if round_.auction.min_trust is not None and p.trust is not None:
        trust = {offer.provider: await p.trust.score(offer.provider)}
    caps = None
    if p.discovery is not None:
        caps = await p.discovery.capabilities_of(offer.provider)
    result: Offer | Rejection = await p._update(round_.id, offer_step(offer, trust, caps, sender))
    return result


async def _own_round(p: BiddingProtocol, intent_id: str) -> ContractRound | None:
    if not intent_id:
        return None
    round_ = await p.get(intent_id)
    return round_ if round_ is not None and round_.requester == p.did else None


async def _refused(
    p: BiddingProtocol, offer: Offer, reason: RejectReason, detail: str, sender: str | None
) -> Rejection:
    rejection = Rejection(offer.id, offer.provider, reason, detail)
    await _log(p, rejection, offer.intent_id, sender)
    return rejection


async def _log(
    p: BiddingProtocol, rejection: Rejection, intent_id: str, sender: str | None
) -> None:
    """Record a refusal that changes no round (see the module docstring for its trace)."""
    round_ = await _own_round(p, intent_id)
    trace, subject = (round_.trace_id, round_.id) if round_ is not None else (p.did, "")
    event = refusal_event(
        rejection, trace, subject, p.clock.now(), recorded=False, actor=sender or ""
    )
    await p.store.append([event])
