"""The provider's side of a contract-net round, pure.

The provider's side of a contract-net round, pure: reading what the requester sends, turning a
``SubmitBid`` into a signed-ready ``Offer``, and building the signed replies that report the
work (``TaskProgress``, ``TaskDone`` and the executor-signed ``Receipt``) as ``SendMessage``
decisions an agent's ``decide()`` returns.

The requester's messages carry the sealed object in ``payload``: an agent reads them with
``intent_of`` and ``task_start_of``, which verify the object's own signature and that the
message's authenticated sender is its signer.
"""

from __future__ import annotations

from typing import Any

import msgspec

from converge.core.capability import CapabilitySet, Requirement
from converge.core.decisions import SendMessage, SubmitBid
from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.signing import unseal
from converge.errors import SignatureError, ValidationError
from converge.protocol.objects import (
    Intent,
    Offer,
    Receipt,
    TaskDone,
    TaskProgress,
    TaskStart,
    TaskStatus,
    Usage,
)

__all__ = [
    "INTENT_KIND",
    "OFFER_KIND",
    "RECEIPT_KIND",
    "TASK_DONE_KIND",
    "TASK_PROGRESS_KIND",
    "TASK_START_KIND",
    "intent_of",
    "offer_from_bid",
    "report_done",
    "report_progress",
    "task_start_of",
]

INTENT_KIND = "intent"
"""Message kind of an intent sent to a provider (payload: the sealed ``Intent``)."""
OFFER_KIND = "offer"
"""Message kind of an offer sent to the requester (payload: the sealed ``Offer``)."""
TASK_START_KIND = "task_start"
"""Message kind of the award sent to the winner (payload: the sealed ``TaskStart``)."""
TASK_PROGRESS_KIND = "task_progress"
"""Message kind of a progress report (payload: the sealed ``TaskProgress``)."""
TASK_DONE_KIND = "task_done"
"""Message kind of the final report (payload: the sealed ``TaskDone``)."""
RECEIPT_KIND = "receipt"
"""Message kind of the executor-signed receipt (payload: the sealed ``Receipt``)."""

# Keys of ``SubmitBid.terms`` that are fields of the ``Offer``; the rest go to ``Offer.terms``.
_OFFER_FIELDS: tuple[str, ...] = ("capability", "currency", "latency_s", "quality")
_OFFER_FIELDS += ("reliability", "resource_limits", "expires_at")


def intent_of(message: Message) -> Intent:
    """The verified ``Intent`` a requester's ``intent`` message carries.

    Raises:
        ProtocolError: not a sealed intent, or its signature does not verify (``SignatureError``).
        SignatureError: the message was not sent by the intent's issuer.
    """
    intent = unseal(_payload(message), Intent)
    if intent.issuer != message.sender:
        raise SignatureError(
            f"intent {intent.id} is issued by {intent.issuer}, sent by {message.sender}",
            field="issuer",
        )
    return intent


def task_start_of(message: Message) -> TaskStart:
    """The verified ``TaskStart`` a requester's ``task_start`` message carries.

    Raises:
        ProtocolError: not a sealed TaskStart, or its signature does not verify.
        SignatureError: the message was not sent by its requester.
    """
    start = unseal(_payload(message), TaskStart)
    if start.requester != message.sender:
        raise SignatureError(
            f"task {start.task_id} is started by {start.requester}, sent by {message.sender}",
            field="requester",
        )
    return start


def offer_from_bid(
    bid: SubmitBid,
    intent: Intent,
    *,
    capabilities: CapabilitySet | None,
    offer_id: str,
    now: float,
) -> Offer:
    """The unsigned ``Offer`` that ``bid`` makes on ``intent``.

    ``bid.amount`` is the cost; ``bid.terms`` may set the offer's ``capability``, ``currency``,
    ``latency_s``, ``quality``, ``reliability``, ``resource_limits`` and ``expires_at``; other
    keys go to ``Offer.terms``. Without a ``capability`` term, the provider's first capability
    that meets the intent's requirement is offered.

    Raises:
        ValidationError: a term of the wrong type or range (``field`` names it), or no
            capability to offer.
    """
    terms = dict(bid.terms)
    fields: dict[str, Any] = {name: terms.pop(name) for name in _OFFER_FIELDS if name in terms}
    if "capability" not in fields:
        fields["capability"] = _capability_for(intent.capability, capabilities)
    fields.update(
        intent_id=intent.id,
        trace_id=intent.trace_id,
        cost=bid.amount,
        terms=terms,
        id=offer_id,
        created_at=now,
    )
    try:
        return msgspec.convert(fields, Offer)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"bid on auction {bid.auction_id}: {exc}", field="terms") from exc


def report_progress(
    identity: Identity,
    start: TaskStart,
    *,
    seq: int,
    progress: float,
    now: float,
    message: str = "",
    data: dict[str, Any] | None = None,
) -> SendMessage:
    """A ``task_progress`` message to the requester, signed by ``identity`` (the executor)."""
    report = TaskProgress(
        task_id=start.task_id,
        seq=seq,
        progress=progress,
        message=message,
        data=data or {},
        trace_id=start.trace_id,
        at=now,
    ).sign(identity)
    return _to_requester(start, TASK_PROGRESS_KIND, report.seal())


def report_done(
    identity: Identity,
    start: TaskStart,
    *,
    output: Any = None,
    now: float,
    status: TaskStatus = "completed",
    error: str | None = None,
    usage: Usage | None = None,
    started_at: float | None = None,
) -> list[SendMessage]:
    """The ``task_done`` message and the executor-signed ``receipt`` message that end the work.

    The receipt vouches for exactly this ``TaskDone``: at the agreed cost when ``status`` is
    ``completed``, at cost 0 when the work failed or was cancelled (unfinished work is not
    paid for); the requester checks the output and countersigns it.
    """
    done = TaskDone(
        task_id=start.task_id,
        status=status,
        output=output,
        error=error,
        usage=usage or Usage(),
        started_at=started_at,
        finished_at=now,
        trace_id=start.trace_id,
    ).sign(identity)
    receipt = msgspec.structs.replace(
        Receipt.for_done(
            done,
            requester=start.requester,
            intent_id=start.intent_id,
            cost=(start.agreed_cost or 0.0) if status == "completed" else 0.0,
        ),
        issued_at=now,
    ).sign_as_executor(identity)
    return [
        _to_requester(start, TASK_DONE_KIND, done.seal()),
        _to_requester(start, RECEIPT_KIND, receipt.seal()),
    ]


def _to_requester(start: TaskStart, kind: str, payload: bytes) -> SendMessage:
    return SendMessage(
        kind=kind, payload=payload, recipient=start.requester, trace_id=start.trace_id
    )


def _payload(message: Message) -> bytes:
    if not isinstance(message.payload, bytes):
        raise ValidationError(
            f"a {message.kind!r} message carries the sealed object as bytes, not "
            f"{type(message.payload).__name__}",
            field="payload",
        )
    return message.payload


def _capability_for(requirement: str, capabilities: CapabilitySet | None) -> str:
    need = Requirement.parse(requirement)
    for cap in capabilities or ():
        if cap.satisfies(need):
            return f"{cap.name}@{cap.version}"
    raise ValidationError(
        f"the bidder has no capability that meets {requirement}; name one in terms",
        field="capability",
    )
