"""``converge demo``: the foundation end to end on SQLite.

What the foundation does, end to end, on a real SQLite event log.

It records into ``.converge/demo.db`` by default, one new trace per run. Two agents get
identities. The requester publishes a signed ``Intent`` inside a signed message;
the provider verifies both signatures and answers with a signed ``Offer``; the requester verifies
and accepts it. Then an attacker's copies arrive: the offer with its price rewritten in transit,
and a replay of the genuine message. Both are rejected with a reason. Every step is an event in
the store, and the timeline is read back from the store.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from converge.core import Identity, Message, ReplayGuard, new_id, unseal
from converge.errors import ConvergeError
from converge.protocol import Constraints, Event, Intent, Offer
from converge.store import SQLiteStore

__all__ = ["DemoResult", "run_demo"]


@dataclass
class DemoResult:
    """What the demo did: its trace, and the events it recorded, as read back from the store."""

    trace_id: str
    store_path: Path
    events: list[Event] = field(default_factory=list)


@dataclass
class _Party:
    name: str
    identity: Identity
    guard: ReplayGuard = field(default_factory=ReplayGuard)

    @property
    def did(self) -> str:
        return self.identity.did


async def run_demo(store_path: Path) -> DemoResult:
    """Run the intent/offer exchange, recording every step in the SQLite store at ``store_path``."""
    store_path.parent.mkdir(parents=True, exist_ok=True)
    trace = new_id()
    async with await SQLiteStore.open(store_path) as store:
        record = _Recorder(store, trace)
        requester = _Party("requester", Identity.generate())
        provider = _Party("provider", Identity.generate())
        for party in (requester, provider):
            await record(
                "agent.registered",
                party,
                party.did,
                name=party.name,
                fingerprint=party.identity.fingerprint,
            )

        # 1. The requester publishes a signed intent, inside a signed message on a topic.
        intent = Intent(
            goal="Summarize the quarterly report in three bullet points",
            capability="summarize>=1.0",
            inputs={"document": "q3-report.pdf"},
            constraints=Constraints(max_cost=5.0, min_quality=0.8),
            utility={"cost": 0.5, "quality": 0.5},
            bid_window_s=5.0,
            trace_id=trace,
        ).sign(requester.identity)
        wire = Message(
            kind="intent", topic="market.summarize", payload=intent.seal(), trace_id=trace
        ).sign(requester.identity)
        intent_bytes = wire.seal()
        await record(
            "intent.published",
            requester,
            intent.id,
            topic="market.summarize",
            goal=intent.goal,
            capability=intent.capability,
            max_cost=5.0,
            bytes=len(intent_bytes),
        )

        # 2. The provider verifies the message and the intent inside it, then makes an offer.
        received = unseal(intent_bytes, Message)
        provider.guard.check(received)
        got_intent = unseal(received.payload, Intent)
        await record(
            "intent.verified",
            provider,
            got_intent.id,
            issuer=got_intent.issuer,
            sender=received.sender,
        )
        offer = Offer(
            intent_id=got_intent.id,
            capability="summarize@1.2.0",
            cost=3.5,
            latency_s=2.0,
            quality=0.92,
            reliability=0.98,
            trace_id=trace,
        ).sign(provider.identity)
        offer_bytes = received.reply("offer", offer.seal()).sign(provider.identity).seal()
        await record(
            "offer.sent", provider, offer.id, cost=offer.cost, quality=0.92, bytes=len(offer_bytes)
        )

        # 3. The requester verifies the offer and checks it against the intent's constraints.
        await _receive_offer(record, requester, intent, offer_bytes)

        # 4. An attacker rewrites the price in transit (3.5 -> 0.5): the signature catches it.
        tampered = offer_bytes.replace(struct.pack(">d", 3.5), struct.pack(">d", 0.5))
        assert tampered != offer_bytes
        await _receive_offer(record, requester, intent, tampered, note="price rewritten 3.5 -> 0.5")

        # 5. The genuine message is delivered a second time: the replay guard catches it.
        await _receive_offer(record, requester, intent, offer_bytes, note="second delivery")

        events = await store.read(trace_id=trace)
    return DemoResult(trace, store_path, events)


@dataclass
class _Recorder:
    """Appends one event of the demo's trace, acknowledged once it is committed."""

    store: SQLiteStore
    trace_id: str

    async def __call__(self, kind: str, actor: _Party, subject: str = "", **data: object) -> None:
        event = Event(
            kind=kind, trace_id=self.trace_id, actor=actor.did, subject=subject, data=data
        )
        await self.store.append([event])


async def _receive_offer(
    record: _Recorder, requester: _Party, intent: Intent, data: bytes, *, note: str = ""
) -> None:
    try:
        msg = unseal(data, Message)
        requester.guard.check(msg)
        offer = unseal(msg.payload, Offer)
    except ConvergeError as exc:
        reason = getattr(exc, "reason", type(exc).__name__)
        extra = {"note": note} if note else {}
        await record("offer.rejected", requester, "", reason=reason, error=str(exc), **extra)
        return
    limits = intent.constraints
    within = (limits.max_cost is None or offer.cost <= limits.max_cost) and (
        limits.min_quality is None or (offer.quality or 0.0) >= limits.min_quality
    )
    kind = "offer.accepted" if within else "offer.declined"
    await record(kind, requester, offer.id, provider=offer.provider, cost=offer.cost)
