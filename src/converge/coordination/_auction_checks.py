"""The checks an offer must pass to enter an auction, pure: ``refusal`` on arrival, ``lapse`` at
arrival and again at close. ``_auction.receive`` and ``_auction.close`` call them.

The first rule an offer breaks is its refusal, in this order: the window (``window_closed``), its
figures (``malformed``: a NaN or an infinity in ``cost``, ``latency_s``, ``quality``,
``reliability`` or ``expires_at`` would make every weighted score NaN and hand the award to
arrival order), the intent (``wrong_intent``), admission (``not_admitted``, ``untrusted``), the
one-offer rule (``duplicate``), then the intent's constraints (``currency``, ``capability``,
``over_budget``, ``low_quality``, ``resource_limits``), then ``expired`` and ``too_slow``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from converge.core.capability import Capability, CapabilitySet, Requirement
from converge.errors import ValidationError

if TYPE_CHECKING:  # _auction imports this module at run time
    from converge.coordination._auction import Auction, RejectReason
    from converge.protocol.objects import Intent, Offer

__all__ = ["capability", "lapse", "refusal", "requirement"]

_FIGURES = ("cost", "latency_s", "quality", "reliability", "expires_at")
"""The numeric fields of an offer that ranking and the window checks compare."""


# -- validation ----------------------------------------------------------------------------------


def refusal(
    auction: Auction,
    offer: Offer,
    now: float,
    trust: Mapping[str, float] | None,
    caps: CapabilitySet | None,
) -> tuple[RejectReason, str] | None:
    """The first rule ``offer`` breaks, with the figures, or None if it is acceptable."""
    intent = auction.intent
    c = intent.constraints
    if auction.is_closed:
        return "window_closed", f"the auction is {auction.state.value}"
    if now >= intent.closes_at:
        return "window_closed", f"arrived at {now}, the window closed at {intent.closes_at}"
    for name in _FIGURES:
        value = getattr(offer, name)
        if value is not None and not math.isfinite(value):
            return "malformed", f"{name} {value!r} is not a finite number"
    if offer.intent_id != intent.id or offer.trace_id != intent.trace_id:
        return "wrong_intent", (
            f"for intent {offer.intent_id} trace {offer.trace_id!r}, "
            f"not {intent.id} trace {intent.trace_id!r}"
        )
    if auction.admitted is not None and offer.provider not in auction.admitted:
        return "not_admitted", f"{offer.provider} is not admitted to bid"
    if auction.min_trust is not None and trust is not None:
        t = trust.get(offer.provider, 0.0)
        if not t >= auction.min_trust:  # `not >=` also refuses a NaN
            return "untrusted", f"trust {t} < min_trust {auction.min_trust}"
    if offer.provider in auction.bidders:
        return "duplicate", f"{offer.provider} already has an offer in this auction"
    if offer.currency != auction.currency:
        return "currency", f"priced in {offer.currency}, the auction is in {auction.currency}"
    missing = _capability_gap(intent, offer.capability, caps)
    if missing is not None:
        return "capability", missing
    if c.max_cost is not None and offer.cost > c.max_cost:
        return "over_budget", f"cost {offer.cost} > max_cost {c.max_cost}"
    if c.min_quality is not None and offer.quality is not None and offer.quality < c.min_quality:
        return "low_quality", f"quality {offer.quality} < min_quality {c.min_quality}"
    for name, cap in c.resource_limits.items():
        own = offer.resource_limits.get(name)
        if isinstance(own, bool) or not isinstance(own, (int, float)) or not own <= cap:
            return "resource_limits", f"{name} {own!r}, the intent allows at most {cap}"
    return lapse(offer, now, c.deadline)


def lapse(offer: Offer, now: float, deadline: float | None) -> tuple[RejectReason, str] | None:
    """Why ``offer`` can no longer be taken at ``now`` (expired, or too slow), or None."""
    if offer.expires_at is not None and offer.expires_at <= now:
        return "expired", f"expired at {offer.expires_at}, now {now}"
    if deadline is not None:
        finish = now + (offer.latency_s or 0.0)
        if finish > deadline:
            return "too_slow", f"done at {finish} at best, the deadline is {deadline}"
    return None


def _capability_gap(intent: Intent, offered_text: str, caps: CapabilitySet | None) -> str | None:
    """Why the offered capability does not meet the intent, or None."""
    try:
        offered = capability(offered_text)
    except ValidationError:
        return f"offered capability {offered_text!r} is malformed"
    need = requirement(intent.capability)
    if not need.matches(offered):
        return f"offered {offered_text}, the intent needs {need}"
    if caps is not None:
        if not caps.satisfies(Requirement(offered.name, f"=={offered.version}")):
            return f"the provider does not list {offered_text} among its capabilities"
        gaps = caps.missing(intent.constraints.required_capabilities)
    else:
        gaps = [
            r
            for r in intent.constraints.required_capabilities
            if not requirement(r).matches(offered)
        ]
    if gaps:
        return f"the provider does not meet {', '.join(gaps)}"
    return None


@functools.lru_cache(maxsize=1024)
def requirement(text: str) -> Requirement:
    return Requirement.parse(text)


@functools.lru_cache(maxsize=4096)
def capability(text: str) -> Capability:
    return Capability.parse(text)
