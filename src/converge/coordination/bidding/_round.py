"""The contract-net round, pure: its states, checks and steps.

The ``Auction`` and the ``ContractRound`` that holds it, their
states and transition tables, the checks on what arrives (offers before the close, the winner's
reports after the award), and every change to a round as a pure step. No I/O, no clock, no
store: ``BiddingProtocol`` (``_requester``) reads a round, applies a step with the time, and
writes what it returns in one unit of work with its events; who wins at close is ``_award``'s.
The tables: ``_AUCTION_TRANSITIONS`` (OPEN -> CLOSED_AWARDED or CLOSED_FAILED) and
``_ROUND_TRANSITIONS`` (BIDDING -> AWARDED or FAILED; AWARDED -> AWARDED, a progress note, or
DONE; DONE -> SETTLED or DISPUTED).

**The auction.** ``open_auction`` starts one for a verified ``Intent``; ``receive`` validates
each offer as it arrives and records it in ``offers`` or, with a machine-readable reason, in
``rejected`` (an offer's fault never raises: only a caller's mistake does); ``close`` picks the
winner by the auction's named strategy. Choices, each a rule a caller can rely on:

* **One binding offer per provider.** A provider's first *accepted* offer stands; a later one
  is rejected as ``duplicate``. An offer is a signed commitment the requester may already have
  acted on, and on an open bus a revisable bid lets a provider undercut rivals it has seen by a
  cent at the last moment; a single sealed bid is also what makes second-price bidding
  truthful. An offer that was *rejected* does not bind, so its provider may bid again.
* **The bid window is half-open**, ``[created_at, closes_at)``: an offer at ``closes_at`` is
  late (``window_closed``), and ``close`` is allowed from ``closes_at`` on. Closing earlier
  needs ``force=True`` — the requester has enough offers, or must act now — so a driver that
  closes early by mistake is an error, not a silently shorter window.
* **The checks, in order**: the first rule an offer breaks is its refusal: the window
  (``window_closed``), its figures (``malformed``: a NaN or an infinity in ``cost``,
  ``latency_s``, ``quality``, ``reliability`` or ``expires_at`` would make every weighted score
  NaN and hand the award to arrival order), the intent (``wrong_intent``), admission
  (``not_admitted``, ``untrusted``), the one-offer rule (``duplicate``), then the intent's
  constraints (``currency``, ``capability``, ``over_budget``, ``low_quality``,
  ``resource_limits``), then ``expired`` and ``too_slow``.
* **Offers are re-checked at close**: one that expired, or whose promised latency no longer
  reaches the deadline, moves to ``rejected`` (``expired``, ``too_slow``) and cannot win.
* **Resource limits**: for each bound in ``intent.constraints.resource_limits`` the offer must
  state a limit of its own (``offer.resource_limits``) no greater; an unbounded or larger one is
  refused (``resource_limits``). The winner's limits travel in the award.

**After the award** the round follows the work: the ``TaskStart`` sent, the progress reported,
the ``TaskDone`` and the receipt.

* Only the winner speaks after the award, and only about the task it was given: anything else
  is refused with a reason (``RoundRefusal``) and changes nothing.
* Progress is accepted in order of ``seq`` only (a repeated or skipped ``seq`` is refused), and
  only while the work is AWARDED.
* A ``TaskDone`` is accepted once; a receipt only after it, and only if it vouches for exactly
  that ``TaskDone`` (task, status, output digest, usage) in the awarded currency.
* **What a receipt costs**: completed work is paid the awarded price, exactly; failed or
  cancelled work is paid nothing, so its receipt must carry cost 0. A completed receipt at
  another price is refused (``receipt_mismatch``: the executor may send the right one); a
  failed or cancelled receipt that claims a cost is disputed: the requester never countersigns
  a bill for work it did not get.

**Steps.** A step is ``(round, now) -> (new round or None when nothing changes, events,
result)``; it reads nothing and writes nothing, so a conflicting write is retried by calling it
again.

Events (trace: the intent's; subject: the auction id; actor: who caused it), ``data``:

- ``bidding.opened``: ``capability``, ``strategy``, ``closes_at``, ``invited``;
- ``bidding.unreachable``: ``providers`` the intent could not be delivered to (no longer waited
  for);
- ``bidding.offer_accepted``: ``offer_id``, ``provider``, ``cost``;
- ``bidding.offer_refused``: ``offer_id``, ``claimed_provider`` (the provider the offer names),
  ``reason`` (a ``RejectReason``), ``detail``, ``recorded`` (whether the auction's ``rejected``
  holds it: offers that do not verify, come from another sender, or reach a closed auction are
  only logged); its actor is the authenticated sender, "" when none;
- ``bidding.awarded``: ``winner``, ``offer_id``, ``price``, ``currency``, ``strategy``,
  ``score``, ``reason``, ``ranking`` (offer ids, best first), ``scores`` (each ranked offer's
  score under the strategy, in ``ranking``'s order), ``task_id``;
- ``bidding.failed``: ``reason`` (``no_offers``, ``no_valid_offers``, ``too_few_offers``),
  ``refused`` (count by reason);
- ``bidding.progress``: ``task_id``, ``seq``, ``progress``, ``message``;
- ``bidding.done``: ``task_id``, ``status``, ``output_digest``, ``error``;
- ``bidding.settled``: ``receipt_id``, ``status``, ``cost``, ``currency``, ``outcome`` (the
  trust outcome: ``success``; ``timeout`` when the TaskDone reached the requester after the
  deadline, by the requester's clock (``ContractRound.done_at``); ``failure`` when
  the work failed or was cancelled);
- ``bidding.disputed``: ``receipt_id``, ``reason`` (over the winner's own resource limits,
  refused by the requester's output check, or a failed or cancelled task's receipt claiming a
  cost), ``outcome`` (``failure``);
- ``bidding.refused``: ``kind`` (the message's), ``reason`` (a ``RoundRefusal``), ``detail``,
  ``message_id``; ``claimed_sender`` when the message did not verify (its actor is then empty:
  the actor is always the authenticated sender). A refusal about a round of this requester is
  filed in the round's trace; any other (no round found, another requester's round, a message
  that did not verify) in the trace named by the requester's own did, never in a trace the
  message chose.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import msgspec

from converge.coordination.bidding._award import STRATEGIES, Award, Strategy, select, weights_of
from converge.core.capability import Capability, CapabilitySet, Requirement
from converge.core.clip import clip, clip_text, shown
from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.signing import decode_body
from converge.errors import (
    AuctionClosed,
    BidWindowOpen,
    ConvergeError,
    InvalidTransition,
    SignatureError,
    ValidationError,
)
from converge.protocol.event import Event
from converge.protocol.objects import (
    Intent,
    Offer,
    Receipt,
    TaskDone,
    TaskProgress,
    TaskStart,
    output_digest,
)

__all__ = [
    "MAX_REFUSALS_PER_PROVIDER",
    "UNRECORDED",
    "Auction",
    "AuctionState",
    "ContractRound",
    "ProgressNote",
    "RejectReason",
    "Rejection",
    "RoundRefusal",
    "RoundStage",
    "Step",
    "check_done",
    "check_progress",
    "check_receipt",
    "close",
    "close_step",
    "done_step",
    "drop_step",
    "message_refused_event",
    "offer_refused_event",
    "offer_step",
    "open_auction",
    "open_round",
    "over_limits",
    "progress_step",
    "receive",
    "round_event",
    "settle_step",
    "unverified_rejection",
]

# -- the auction ----------------------------------------------------------------------------------

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


_A = AuctionState
_AUCTION_TRANSITIONS: dict[AuctionState, frozenset[AuctionState]] = {
    _A.OPEN: frozenset({_A.CLOSED_AWARDED, _A.CLOSED_FAILED}),
    _A.CLOSED_AWARDED: frozenset(),
    _A.CLOSED_FAILED: frozenset(),
}
"""Every allowed move: ``_AUCTION_TRANSITIONS[a]`` is the set of states ``a`` may move to."""


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
        return self.state is not _A.OPEN


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
    _requirement(intent.capability)  # a malformed requirement is the opener's mistake
    return Auction(
        id=auction_id or intent.id,
        intent=intent,
        strategy=strategy,
        weights=weights_of(intent.utility),
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
    refused = _offer_refusal(auction, offer, now, trust, provider_capabilities)
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
    if auction.state is not _A.OPEN:
        raise AuctionClosed(auction.id, auction.state)
    if now < auction.closes_at and not force:
        raise BidWindowOpen(auction.id, auction.closes_at, now)

    deadline = auction.intent.constraints.deadline
    live: list[Offer] = []
    lapsed: list[Rejection] = []
    for o in auction.offers:
        late = _lapse(o, now, deadline)
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
        failed = _move_auction(
            auction, _A.CLOSED_FAILED, now, rejected=rejected, failure_reason=reason
        )
        return failed, None
    if len(live) < min_offers:
        reason = "too_few_offers"
        failed = _move_auction(
            auction, _A.CLOSED_FAILED, now, rejected=rejected, failure_reason=reason
        )
        return failed, None

    award = select(
        live,
        auction_id=auction.id,
        intent_id=auction.intent.id,
        strategy=auction.strategy,
        weights=auction.weights,
        currency=auction.currency,
        trust=trust,
    )
    done = _move_auction(auction, _A.CLOSED_AWARDED, now, rejected=rejected, award=award)
    return done, award


def _keep_latest(rejected: tuple[Rejection, ...], provider: str) -> tuple[Rejection, ...]:
    """``rejected`` with at most ``MAX_REFUSALS_PER_PROVIDER`` of ``provider``'s, the latest."""
    mine = [i for i, r in enumerate(rejected) if r.provider == provider]
    if len(mine) <= MAX_REFUSALS_PER_PROVIDER:
        return rejected
    drop = set(mine[: len(mine) - MAX_REFUSALS_PER_PROVIDER])
    return tuple(r for i, r in enumerate(rejected) if i not in drop)


# -- auction helpers ------------------------------------------------------------------------------


def _move_auction(auction: Auction, target: AuctionState, now: float, **changes: object) -> Auction:
    """``auction`` moved to ``target``; the one place a state changes, checked by the table."""
    if target not in _AUCTION_TRANSITIONS[auction.state]:
        raise InvalidTransition(auction.state, target, subject=auction.id)
    return msgspec.structs.replace(auction, state=target, closed_at=now, **changes)


def _check_time(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValidationError(f"{field} must be a finite number, not {value!r}", field=field)
    return float(value)


# -- offer checks ---------------------------------------------------------------------------------

_FIGURES = ("cost", "latency_s", "quality", "reliability", "expires_at")
"""The numeric fields of an offer that ranking and the window checks compare."""


def _offer_refusal(
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
    return _lapse(offer, now, c.deadline)


def _lapse(offer: Offer, now: float, deadline: float | None) -> tuple[RejectReason, str] | None:
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
        offered = _capability(offered_text)
    except ValidationError:
        return f"offered capability {offered_text!r} is malformed"
    need = _requirement(intent.capability)
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
            if not _requirement(r).matches(offered)
        ]
    if gaps:
        return f"the provider does not meet {', '.join(gaps)}"
    return None


@functools.lru_cache(maxsize=1024)
def _requirement(text: str) -> Requirement:
    return Requirement.parse(text)


@functools.lru_cache(maxsize=4096)
def _capability(text: str) -> Capability:
    return Capability.parse(text)


# -- the round ------------------------------------------------------------------------------------


class RoundStage(enum.StrEnum):
    """Where a contract-net round is."""

    BIDDING = "bidding"
    """The auction takes offers."""
    FAILED = "failed"
    """Closed without a valid offer (``ContractRound.reason``). Terminal."""
    AWARDED = "awarded"
    """The winner has its ``TaskStart``; progress may follow."""
    DONE = "done"
    """The winner's ``TaskDone`` is in; its receipt is awaited."""
    SETTLED = "settled"
    """The receipt is signed by both sides (``ContractRound.receipt``). Terminal."""
    DISPUTED = "disputed"
    """The requester refused the output (``ContractRound.reason``); no countersignature.
    Terminal."""


_S = RoundStage
_ROUND_TRANSITIONS: dict[RoundStage, frozenset[RoundStage]] = {
    _S.BIDDING: frozenset({_S.AWARDED, _S.FAILED}),
    _S.AWARDED: frozenset({_S.AWARDED, _S.DONE}),
    _S.DONE: frozenset({_S.SETTLED, _S.DISPUTED}),
    _S.FAILED: frozenset(),
    _S.SETTLED: frozenset(),
    _S.DISPUTED: frozenset(),
}
"""Every allowed move: ``_ROUND_TRANSITIONS[a]`` is the set of stages ``a`` may move to."""

RoundRefusal = Literal[
    "unknown_round",
    "not_awarded",
    "wrong_task",
    "wrong_executor",
    "wrong_sender",
    "bad_signature",
    "malformed",
    "out_of_order",
    "duplicate",
    "receipt_mismatch",
    "unknown_kind",
]
"""Why a message about a round was refused (``bidding.refused`` events, ``data.reason``)."""


class ProgressNote(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One accepted progress report."""

    seq: int
    """Its position among the task's reports, from 0."""
    progress: float
    """Fraction done."""
    at: float
    """When the executor reported it."""
    message: str = ""
    """What it said."""


class ContractRound(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One contract-net round as stored: the auction, then the work it awarded."""

    auction: Auction
    """The auction (intent, offers, rejections, award)."""
    requester: str
    """The did of the agent that issued the intent and pays."""
    invited: tuple[str, ...]
    """The providers the intent was sent to (discovery and the pool admitted them)."""
    stage: RoundStage = RoundStage.BIDDING
    """Where the round is."""
    answered: frozenset[str] = frozenset()
    """The invited providers whose offer was accepted (a refused offer does not bind: its
    provider may still bid, so it is not counted as having answered)."""
    task_start: bytes | None = None
    """The sealed ``TaskStart`` sent to the winner."""
    progress: tuple[ProgressNote, ...] = ()
    """The winner's accepted progress reports, in order."""
    done: bytes | None = None
    """The winner's sealed ``TaskDone``."""
    done_at: float | None = None
    """When the ``TaskDone`` reached the requester, on the requester's clock: what the deadline
    is judged by (the executor's own ``finished_at`` is only its claim)."""
    receipt: bytes | None = None
    """The sealed ``Receipt``: the executor's signature, and once SETTLED the requester's."""
    outcome: str | None = None
    """The trust outcome recorded for the winner (``success``, ``failure``, ``timeout``)."""
    reason: str | None = None
    """Why it FAILED or was DISPUTED."""
    updated_at: float = 0.0
    """When it last changed."""

    @property
    def id(self) -> str:
        """The auction's id (the intent's)."""
        return self.auction.id

    @property
    def trace_id(self) -> str:
        """The trace every message and event of the round carries."""
        return self.auction.intent.trace_id

    @property
    def award(self) -> Award | None:
        """The award, once the auction closed with a winner."""
        return self.auction.award

    @property
    def all_answered(self) -> bool:
        """Whether every invited provider has answered (nothing more can be waited for)."""
        return self.answered >= frozenset(self.invited)

    @property
    def is_terminal(self) -> bool:
        """Whether the round can no longer change."""
        return not _ROUND_TRANSITIONS[self.stage]


def _move_round(
    round_: ContractRound, target: RoundStage, now: float, **changes: Any
) -> ContractRound:
    """``round_`` moved to ``target``; the one place a stage changes, checked by the table."""
    if target not in _ROUND_TRANSITIONS[round_.stage]:
        raise InvalidTransition(round_.stage, target, subject=round_.id)
    return msgspec.structs.replace(round_, stage=target, updated_at=now, **changes)


def round_event(kind: str, round_: ContractRound, *, actor: str, at: float, **data: Any) -> Event:
    """A ``bidding.<kind>`` event in the round's trace, about its auction."""
    return Event(
        kind=f"bidding.{kind}",
        trace_id=round_.trace_id,
        actor=actor,
        subject=round_.id,
        data={k: v for k, v in data.items() if v is not None},
        at=at,
    )


# -- what the winner sends back -------------------------------------------------------------------


def _about_the_task(
    round_: ContractRound, start: TaskStart, task_id: str, executor: str, trace_id: str, sender: str
) -> tuple[RoundRefusal, str] | None:
    if executor != start.executor:
        return "wrong_executor", f"{executor} is not the executor {start.executor}"
    if sender != executor:
        return "wrong_sender", f"sent by {sender}, signed by the executor {executor}"
    if task_id != start.task_id or trace_id != round_.trace_id:
        return "wrong_task", f"task {task_id} trace {trace_id!r}, not {start.task_id}"
    return None


def check_progress(
    round_: ContractRound, start: TaskStart, report: TaskProgress, sender: str
) -> tuple[RoundRefusal, str] | None:
    """Why ``report`` (signature verified) cannot be taken, or None."""
    wrong = _about_the_task(round_, start, report.task_id, report.executor, report.trace_id, sender)
    if wrong is not None:
        return wrong
    if round_.stage is not _S.AWARDED:
        return "not_awarded", f"the round is {round_.stage.value}"
    expected = len(round_.progress)
    if report.seq != expected:
        return "out_of_order", f"seq {report.seq}, expected {expected}"
    return None


def check_done(
    round_: ContractRound, start: TaskStart, done: TaskDone, sender: str
) -> tuple[RoundRefusal, str] | None:
    """Why ``done`` (signature verified) cannot be taken, or None."""
    wrong = _about_the_task(round_, start, done.task_id, done.executor, done.trace_id, sender)
    if wrong is not None:
        return wrong
    if round_.stage is not _S.AWARDED:
        what: RoundRefusal = "duplicate" if round_.done is not None else "not_awarded"
        return what, f"the round is {round_.stage.value}"
    return None


def check_receipt(
    round_: ContractRound, start: TaskStart, done: TaskDone | None, receipt: Receipt, sender: str
) -> tuple[RoundRefusal, str] | None:
    """Why ``receipt`` (executor's signature verified) cannot be countersigned, or None."""
    wrong = _about_the_task(
        round_, start, receipt.task_id, receipt.executor, receipt.trace_id, sender
    )
    if wrong is not None:
        return wrong
    if round_.stage is not _S.DONE or done is None:
        late: RoundRefusal = "duplicate" if round_.receipt is not None else "out_of_order"
        return late, f"the round is {round_.stage.value}; a receipt follows the TaskDone"
    award = round_.award
    if award is None:  # a DONE round has one; a damaged stored round must not pass
        return "not_awarded", "the round has no award"
    expected: dict[str, tuple[object, object]] = {
        "requester": (receipt.requester, round_.requester),
        "intent_id": (receipt.intent_id, round_.auction.intent.id),
        "status": (receipt.status, done.status),
        "output_digest": (receipt.output_digest, output_digest(done.output)),
        "usage": (receipt.usage, done.usage),
        "currency": (receipt.currency, award.currency),
    }
    if done.status == "completed":  # an unpaid failure's cost is judged by the verdict
        expected["cost"] = (receipt.cost, award.price)
    for name, (got, want) in expected.items():
        if got != want:
            return "receipt_mismatch", f"{name} {got!r}, expected {want!r}"
    return None


def over_limits(done: TaskDone, limits: dict[str, Any]) -> str | None:
    """How ``done``'s usage exceeds the winner's own stated limits, or None."""
    usage = done.usage
    used = {
        "max_tokens": usage.tokens_in + usage.tokens_out,
        "max_tool_calls": usage.tool_calls,
        "max_cost": usage.cost,
    }
    if done.started_at is not None:
        used["max_seconds"] = done.finished_at - done.started_at
    for name, value in used.items():
        cap = limits.get(name)
        if isinstance(cap, (int, float)) and not isinstance(cap, bool) and value > cap:
            return f"used {name.removeprefix('max_')} {value} over its stated limit {cap}"
    return None


# -- steps ----------------------------------------------------------------------------------------

Step = Callable[[ContractRound, float], tuple[ContractRound | None, list[Event], Any]]
"""A pure change to a round at a time: (new round or None for no change, events, result)."""

_envelope = msgspec.msgpack.Decoder(list[bytes])

UNRECORDED: frozenset[RejectReason] = frozenset({"not_admitted", "untrusted", "wrong_intent"})
"""Refusals only logged, never stored in the round: anyone can send offers that earn them."""


def open_round(
    auction: Auction, requester: str, invited: list[str], now: float
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
        auction = receive(r.auction, offer, now=now, trust=trust, provider_capabilities=caps)
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
        event = offer_refused_event(
            rejection, r.trace_id, r.id, now, recorded=recorded, actor=actor
        )
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

    Raises (from ``close``): ``AuctionClosed``, ``BidWindowOpen``.
    """

    def step(r: ContractRound, now: float) -> tuple[ContractRound, list[Event], None]:
        auction, award = close(r.auction, now=now, trust=trust, force=force, min_offers=min_offers)
        if award is None:
            reason = auction.failure_reason or "no_valid_offers"
            refused: dict[str, int] = {}
            for rejection in auction.rejected:
                refused[rejection.reason] = refused.get(rejection.reason, 0) + 1
            failed = _move_round(r, RoundStage.FAILED, now, auction=auction, reason=reason)
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
        awarded = _move_round(r, RoundStage.AWARDED, now, auction=auction, task_start=start.seal())
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
            scores=[row.score for row in award.ranking],
            task_id=task_id,
        )
        return awarded, [event], None

    return step


def progress_step(message: Message, start: TaskStart, report: TaskProgress) -> Step:
    """Record the winner's progress ``report`` (signature verified), carried by ``message``,
    in ``seq`` order (``bidding.progress``); or refuse it (``bidding.refused``)."""

    def step(r: ContractRound, now: float) -> tuple[ContractRound | None, list[Event], None]:
        problem = check_progress(r, start, report, message.sender)
        if problem is not None:
            return None, [message_refused_event(message, *problem, r, r.requester, now)], None
        note = ProgressNote(report.seq, report.progress, report.at, report.message)
        new = _move_round(r, _S.AWARDED, now, progress=(*r.progress, note))
        event = round_event(
            "progress",
            new,
            actor=message.sender,
            at=now,
            task_id=report.task_id,
            seq=report.seq,
            progress=report.progress,
            message=report.message or None,
        )
        return new, [event], None

    return step


def done_step(message: Message, start: TaskStart, done: TaskDone, sealed: bytes) -> Step:
    """Record the winner's ``done`` (signature verified; ``sealed`` its bytes as received),
    once (``bidding.done``); its receipt is awaited next. Or refuse it (``bidding.refused``)."""

    def step(r: ContractRound, now: float) -> tuple[ContractRound | None, list[Event], None]:
        problem = check_done(r, start, done, message.sender)
        if problem is not None:
            return None, [message_refused_event(message, *problem, r, r.requester, now)], None
        new = _move_round(r, _S.DONE, now, done=sealed, done_at=now)
        event = round_event(
            "done",
            new,
            actor=message.sender,
            at=now,
            task_id=done.task_id,
            status=done.status,
            output_digest=output_digest(done.output),
            error=done.error,
        )
        return new, [event], None

    return step


def settle_step(
    message: Message,
    start: TaskStart,
    done: TaskDone,
    receipt: Receipt,
    *,
    sealed: bytes,
    outcome: str,
    dispute: str | None,
) -> Step:
    """End the round on the winner's ``receipt``: SETTLED with ``sealed`` (the countersigned
    receipt), or DISPUTED for ``dispute`` with ``sealed`` (the receipt as received); the trust
    ``outcome`` is recorded either way. Result: the new round, or None when the receipt is
    refused after all (a concurrent receipt got in first)."""

    def step(r: ContractRound, now: float) -> tuple[ContractRound | None, list[Event], Any]:
        again = check_receipt(r, start, done, receipt, message.sender)  # a concurrent receipt?
        if again is not None:
            return None, [message_refused_event(message, *again, r, r.requester, now)], None
        if dispute is not None:
            new = _move_round(r, _S.DISPUTED, now, receipt=sealed, outcome=outcome, reason=dispute)
            data: dict[str, Any] = {"reason": dispute}
        else:
            new = _move_round(r, _S.SETTLED, now, receipt=sealed, outcome=outcome)
            data = {"status": receipt.status, "cost": receipt.cost, "currency": receipt.currency}
        event = round_event(
            new.stage.value,
            new,
            actor=r.requester,
            at=now,
            receipt_id=receipt.id,
            outcome=outcome,
            **data,
        )
        return new, [event], new

    return step


def message_refused_event(
    message: Message,
    reason: RoundRefusal,
    detail: str,
    round_: ContractRound | None,
    requester: str,
    at: float,
    *,
    authenticated: bool = True,
) -> Event:
    """The ``bidding.refused`` event of a ``message`` to ``requester``; nothing else changes.

    ``round_`` is the requester's round the message is about (its trace), None when none is
    known (the requester's own did names the trace). ``authenticated`` false: the message's
    signature did not verify, so its ``sender`` is only a claim (``data.claimed_sender``) and
    the event names no actor.
    """
    # The trace is the round's only once the round is known to be this requester's; what a
    # message merely claims never picks the trace its refusal is filed in.
    # What a refused message holds may be of any type and size: the event shows it clipped.
    data = {
        "kind": shown(getattr(message, "kind", None)),
        "reason": reason,
        "detail": clip_text(detail),
        "message_id": shown(getattr(message, "id", None)),
    }
    if not authenticated:
        data["claimed_sender"] = shown(getattr(message, "sender", None))
    return Event(
        kind="bidding.refused",
        trace_id=round_.trace_id if round_ else requester,
        actor=clip(message.sender) if authenticated else "",
        subject=round_.id if round_ else "",
        data=data,
        at=at,
    )


def offer_refused_event(
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
