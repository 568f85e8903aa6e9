"""The requester's exchange with providers: whom an intent goes to (discovery, the pool, trust),
sending signed messages in the round's trace, and taking the messages that come back.

Functions of a ``BiddingProtocol`` (``p``), which keeps its public methods in ``bidding.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from converge.coordination import _bidding_work as work
from converge.coordination._bidding_core import ContractRound, RoundRefusal, round_event
from converge.coordination._bidding_provider import (
    INTENT_KIND,
    OFFER_KIND,
    RECEIPT_KIND,
    TASK_DONE_KIND,
    TASK_PROGRESS_KIND,
    TASK_START_KIND,
)
from converge.core.clip import clip_text
from converge.core.message import Message
from converge.errors import ConvergeError, SignatureError, ValidationError
from converge.network.local import Inbox
from converge.protocol.objects import Intent

if TYPE_CHECKING:  # bidding imports this module at run time
    from converge.coordination.bidding import BiddingProtocol

__all__ = [
    "dispatch",
    "invite",
    "pump",
    "send",
    "send_intent",
    "send_task_start",
    "signed_intent",
]

_BATCH = 100
_log = logging.getLogger(__name__)


def signed_intent(p: BiddingProtocol, intent: Intent, now: float) -> Intent:
    """``intent`` stamped with ``now`` and signed by the requester; or, already signed, verified
    and checked to be the requester's."""
    if not isinstance(intent, Intent):
        raise ValidationError(f"expected an Intent, not {type(intent).__name__}", field="intent")
    if intent.signature is None:
        return msgspec.structs.replace(intent, created_at=now).sign(p.identity)
    intent.verify()
    if intent.issuer != p.did:
        raise ValidationError(
            f"intent {intent.id} is issued by {intent.issuer}, not this requester",
            field="issuer",
        )
    return intent


async def invite(
    p: BiddingProtocol,
    intent: Intent,
    providers: Sequence[str] | None,
    pool_id: str | None,
    min_trust: float | None,
    limit: int,
) -> list[str]:
    """The providers to send ``intent`` to: those named, or those discovery finds for its
    capability; then only members of ``pool_id`` and those with at least ``min_trust``; never
    the requester itself."""
    if providers is not None:
        invited = list(dict.fromkeys(providers))
        if not all(isinstance(d, str) and d for d in invited):
            raise ValidationError("providers must be non-empty dids", field="providers")
    elif p.discovery is not None:
        found = await p.discovery.find(capability=intent.capability, limit=limit)
        invited = [d.did for d in found]
    else:
        raise ValidationError(
            "name the providers, or give the protocol a discovery service", field="providers"
        )
    invited = [d for d in invited if d != p.did]
    if pool_id is not None:
        if p.pools is None:
            raise ValidationError("pool_id needs the protocol's pools", field="pool_id")
        members = set(await p.pools.members(pool_id))
        invited = [d for d in invited if d in members]
    if min_trust is not None:
        if p.trust is None:
            raise ValidationError("min_trust needs the protocol's trust", field="min_trust")
        scores = await p.trust.scores(invited) if invited else {}
        invited = [d for d in invited if scores[d] >= min_trust]
    return invited


async def send_intent(p: BiddingProtocol, round_: ContractRound, to: list[str]) -> list[str]:
    """Send the round's intent to each of ``to``; returns those it could not reach."""
    if p.network is None:
        return []
    payload = round_.auction.intent.seal()
    sent = [await send(p, round_, INTENT_KIND, payload, d) for d in to]
    return [d for d, ok in zip(to, sent, strict=True) if not ok]


async def send_task_start(p: BiddingProtocol, round_: ContractRound) -> None:
    """Send the winner its ``TaskStart``; record ``bidding.unreachable`` if it cannot be."""
    award = round_.award
    if p.network is None or award is None or round_.task_start is None:
        return
    if not await send(p, round_, TASK_START_KIND, round_.task_start, award.provider):
        gone = [award.provider]
        event = round_event("unreachable", round_, actor=p.did, at=p.clock.now(), providers=gone)
        await p.store.append([event])


async def send(
    p: BiddingProtocol, round_: ContractRound, kind: str, payload: bytes, to: str
) -> bool:
    """Send a message signed by the requester in the round's trace; False if ``to`` is not
    reachable (or there is no network)."""
    if p.network is None:
        return False
    message = Message(
        kind=kind,
        payload=payload,
        recipient=to,
        trace_id=round_.trace_id,
        created_at=p.clock.now(),
    ).sign(p.identity)
    try:
        await p.network.send(message)
    except ConvergeError:
        return False
    return True


async def dispatch(p: BiddingProtocol, message: Message) -> None:
    """``BiddingProtocol.handle``: verify, replay-check and route one message.

    Whatever one message carries, it ends here: a ``ConvergeError`` raised while taking it
    (a field of the wrong type, bytes that verify but do not decode, a value that cannot be
    encoded canonically, a store refusing a write) is recorded as a ``bidding.refused`` event
    and the next message is taken.
    Only cancellation and bugs (non-converge exceptions) propagate.
    """
    try:
        if not isinstance(message, Message):
            raise ValidationError(f"not a Message but {type(message).__name__}")
        message.verify()  # its fields' types (as if decoded from bytes), then its signature
        p.guard.check(message)
    except ConvergeError as exc:
        why: RoundRefusal = "malformed" if isinstance(exc, ValidationError) else "bad_signature"
        await work.refuse(p, message, why, clip_text(str(exc)), authenticated=False)
        return
    try:
        await _route(p, message)
    except ConvergeError as exc:
        reason: RoundRefusal = "bad_signature" if isinstance(exc, SignatureError) else "malformed"
        await work.refuse(p, message, reason, f"{type(exc).__name__}: {exc}")


async def _route(p: BiddingProtocol, message: Message) -> None:
    if not isinstance(message.payload, bytes):
        await work.refuse(p, message, "malformed", "the payload is not a sealed object")
    elif message.kind == OFFER_KIND:
        await p.receive_offer(message.payload, sender=message.sender)
    elif message.kind == TASK_PROGRESS_KIND:
        await work.on_progress(p, message)
    elif message.kind == TASK_DONE_KIND:
        await work.on_done(p, message)
    elif message.kind == RECEIPT_KIND:
        await work.on_receipt(p, message)
    else:
        await work.refuse(p, message, "unknown_kind", f"kind {message.kind!r}")


async def pump(p: BiddingProtocol, inbox: Inbox, wake: asyncio.Event, stop: asyncio.Event) -> None:
    """Handle the requester's inbox in arrival order until ``stop``, then what is left.

    One message never ends the loop: ``handle`` records a refusal for any ``ConvergeError``, and
    should even that record fail (the store is down), the message is dropped with a log line.
    """
    while True:
        await wake.wait()
        wake.clear()
        while batch := inbox.drain(_BATCH):
            for message in batch:
                try:
                    await p.handle(message)
                except ConvergeError:
                    _log.exception(
                        "bidding: message %s from %s dropped", message.id, message.sender
                    )
        if stop.is_set():
            return
