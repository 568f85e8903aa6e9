"""Discovery: registration, expiry, indexed queries, signed registration from outside."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from converge.coordination import TaskManager
from converge.coordination.discovery import AgentDescriptor, DiscoveryService
from converge.core.capability import Capability
from converge.core.clip import MAX_ID_CHARS, MAX_TEXT_CHARS, clip
from converge.core.clock import ManualClock
from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.task import Task
from converge.errors import (
    ConvergeError,
    PolicyViolation,
    ReplayedMessage,
    SignatureError,
    StaleMessage,
    ValidationError,
)
from converge.store import SQLiteStore, Store

ALICE, BOB, CAROL, DAVE = (Identity.from_private_bytes(bytes([i]) * 32) for i in range(1, 5))
TTL = 30.0


class Trust:
    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores

    async def score(self, agent_id: str) -> float:
        return self.scores.get(agent_id, 0.5)


class Spy:
    """A store that records the keys and prefixes read, to show which queries use the index."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.reads: list[str] = []

    async def get(self, key: str) -> Any:
        self.reads.append(key)
        return await self.store.get(key)

    async def list(self, prefix: str = "", *, limit: int | None = None) -> Any:
        self.reads.append(prefix + "*")
        return await self.store.list(prefix, limit=limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def agent(
    who: Identity,
    *caps: str,
    topics: tuple[str, ...] = (),
    pools: tuple[str, ...] = (),
) -> AgentDescriptor:
    return AgentDescriptor(
        did=who.did,
        name=f"agent-{who.fingerprint[:4]}",
        capabilities=tuple(Capability.parse(c) for c in caps),
        topics=topics,
        pools=pools,
        endpoint="local:",
    )


def signed(sender: Identity, payload: Any, clock: ManualClock, **kw: Any) -> Message:
    fields: dict[str, Any] = {"kind": "discovery.register", "topic": "discovery", **kw}
    fields.setdefault("created_at", clock.now())
    return Message(payload=payload, **fields).sign(sender)


def dids(found: list[AgentDescriptor]) -> list[str]:
    return [d.did for d in found]


@pytest.fixture
def service(store: Store, clock: ManualClock) -> DiscoveryService:
    trust = Trust({ALICE.did: 0.9, BOB.did: 0.3, CAROL.did: 0.7})
    return DiscoveryService(store, ttl_s=TTL, clock=clock, trust=trust)


async def index_keys(store: Store) -> list[str]:
    return [e.key for e in await store.list("agent-cap/")]


async def test_register_get_and_the_registered_event(
    service: DiscoveryService, store: Store, clock: ManualClock
) -> None:
    stored = await service.register(agent(ALICE, "summarize@1.5", topics=("market.>",)))
    assert (stored.registered_at, stored.expires_at) == (clock.now(), clock.now() + TTL)
    assert await service.get(ALICE.did) == stored
    assert await service.get(BOB.did) is None
    [ev] = await store.read(kinds=["agent.registered"])
    assert (ev.trace_id, ev.actor, ev.subject) == (ALICE.did, ALICE.did, ALICE.did)
    assert ev.data == {
        "name": stored.name,
        "capabilities": ["summarize@1.5"],
        "topics": ["market.>"],
        "pools": [],
    }
    caps = await service.capabilities_of(ALICE.did)
    assert caps is not None and caps.satisfies("summarize>=1.2")
    assert await service.capabilities_of(BOB.did) is None


async def test_find_by_capability_honours_version_ranges(service: DiscoveryService) -> None:
    await service.register(agent(ALICE, "summarize@1.0"))
    await service.register(agent(BOB, "summarize@1.5"))
    await service.register(agent(CAROL, "summarize@2.1", "translate@0.3"))
    assert dids(await service.find(capability="summarize")) == sorted(
        [ALICE.did, BOB.did, CAROL.did]
    )
    assert dids(await service.find(capability="summarize>=1.2")) == sorted([BOB.did, CAROL.did])
    assert dids(await service.find(capability="summarize>=1.2,<2")) == [BOB.did]
    assert dids(await service.find(capability="translate")) == [CAROL.did]
    assert await service.find(capability="translate>=1") == []
    assert await service.find(capability="paint") == []
    assert (
        dids(await service.find(capability="summarize", limit=2))
        == sorted([ALICE.did, BOB.did, CAROL.did])[:2]
    )


async def test_indexed_and_scanned_queries_agree_across_batches(
    service: DiscoveryService, clock: ManualClock
) -> None:
    early = [Identity.generate() for _ in range(20)]
    late = [Identity.generate() for _ in range(20)]
    for who in early:
        await service.register(agent(who, "x@1.0"))
    clock.advance(TTL / 2)
    for who in late:
        await service.register(agent(who, "x@1.0"))
    clock.advance(TTL / 2)  # the early ones lapse; live and lapsed dids interleave in the index
    live = sorted(who.did for who in late)
    assert dids(await service.find(capability="x", limit=30)) == live
    assert dids(await service.find(capability="x", limit=5)) == live[:5]
    assert dids(await service.find(limit=30)) == live


async def test_a_capability_query_reads_only_its_index(store: Store, clock: ManualClock) -> None:
    spy = Spy(store)
    service = DiscoveryService(spy, clock=clock)  # type: ignore[arg-type]
    await service.register(agent(ALICE, "gpu@1.0"))
    await service.register(agent(BOB, "gpu/a100@1.0"))  # a name that extends "gpu" with '/'
    await service.register(agent(CAROL, "summarize@1.0"))
    spy.reads.clear()
    assert dids(await service.find(capability="gpu")) == [ALICE.did]
    assert spy.reads == ["agent-cap/gpu/did:*", f"agent/{ALICE.did}"]
    assert dids(await service.find(capability="gpu/a100")) == [BOB.did]


async def test_find_by_topic_pool_and_limit(service: DiscoveryService) -> None:
    await service.register(agent(ALICE, topics=("market.*.gpu",), pools=("eu",)))
    await service.register(agent(BOB, topics=("market.>",), pools=("eu", "us")))
    await service.register(agent(CAROL, topics=("chat",), pools=("us",)))
    everyone = sorted([ALICE.did, BOB.did, CAROL.did])
    assert dids(await service.find(topic="market.eu.gpu")) == sorted([ALICE.did, BOB.did])
    assert dids(await service.find(topic="market.eu.cpu")) == [BOB.did]
    assert dids(await service.find(topic="market")) == []  # '>' needs at least one more token
    assert dids(await service.find(topic="chat")) == [CAROL.did]
    assert dids(await service.find(pool="us")) == sorted([BOB.did, CAROL.did])
    assert dids(await service.find(pool="us", topic="market.x")) == [BOB.did]
    assert dids(await service.find()) == everyone
    assert dids(await service.find(limit=2)) == everyone[:2]


async def test_min_trust_filters_and_ranks_by_trust(
    service: DiscoveryService, store: Store, clock: ManualClock
) -> None:
    for who in (ALICE, BOB, CAROL, DAVE):  # trust 0.9, 0.3, 0.7, 0.5 (unknown)
        await service.register(agent(who, "summarize@1.0"))
    assert dids(await service.find(min_trust=0.5)) == [ALICE.did, CAROL.did, DAVE.did]
    assert dids(await service.find(capability="summarize", min_trust=0.6, limit=1)) == [ALICE.did]
    assert await service.find(min_trust=0.95) == []
    untrusted = DiscoveryService(store, clock=clock)
    with pytest.raises(ValidationError) as info:
        await untrusted.find(min_trust=0.5)
    assert info.value.field == "min_trust"


async def test_without_heartbeats_a_registration_lapses(
    service: DiscoveryService, clock: ManualClock
) -> None:
    await service.register(agent(ALICE, "summarize@1.0", topics=("chat",)))
    clock.advance(TTL - 1)
    assert await service.get(ALICE.did) is not None
    clock.advance(1)
    assert await service.get(ALICE.did) is None
    assert await service.find() == []
    assert await service.find(capability="summarize") == []
    assert await service.capabilities_of(ALICE.did) is None
    with pytest.raises(ValidationError, match="lapsed") as info:
        await service.heartbeat(ALICE.did)
    assert info.value.field == "did"
    with pytest.raises(ValidationError, match="not registered"):
        await service.heartbeat(BOB.did)


async def test_heartbeats_keep_an_agent_alive_without_events(
    service: DiscoveryService, store: Store, clock: ManualClock
) -> None:
    await service.register(agent(ALICE, "summarize@1.0"))
    for _ in range(3):
        clock.advance(TTL - 5)
        assert await service.heartbeat(ALICE.did) == clock.now() + TTL
    clock.advance(TTL - 5)
    assert dids(await service.find(capability="summarize")) == [ALICE.did]
    assert [e.kind for e in await store.read()] == ["agent.registered"]


async def test_prune_deletes_lapsed_agents_and_their_index_keys(
    service: DiscoveryService, store: Store, clock: ManualClock
) -> None:
    await service.register(agent(ALICE, "summarize@1.0", "translate@1.0"))
    await service.register(agent(BOB, "summarize@1.0"))
    clock.advance(TTL / 2)
    await service.heartbeat(BOB.did)
    assert await service.prune_expired() == []
    clock.advance(TTL / 2)
    assert await service.prune_expired() == [ALICE.did]
    assert await service.prune_expired() == []
    assert [e.key for e in await store.list("agent/")] == [f"agent/{BOB.did}"]
    assert await index_keys(store) == [f"agent-cap/summarize/{BOB.did}"]
    [ev] = await store.read(kinds=["agent.expired"])
    assert (ev.trace_id, ev.actor, ev.subject) == (ALICE.did, "", ALICE.did)
    assert ev.data == {"expires_at": clock.now()}
    with pytest.raises(ValidationError) as info:
        await service.prune_expired(time.monotonic())  # another clock would prune nothing
    assert info.value.field == "now"


async def test_reregistration_replaces_and_drops_old_index_keys(
    service: DiscoveryService, store: Store, clock: ManualClock
) -> None:
    await service.register(agent(ALICE, "summarize@1.0", "translate@1.0"))
    clock.advance(10)
    again = await service.register(agent(ALICE, "translate@2.0", "ocr@1.0"))
    assert again.registered_at == clock.now()
    assert await index_keys(store) == [
        f"agent-cap/ocr/{ALICE.did}",
        f"agent-cap/translate/{ALICE.did}",
    ]
    assert await service.find(capability="summarize") == []
    assert dids(await service.find(capability="translate>=2")) == [ALICE.did]
    assert len(await store.read(kinds=["agent.registered"])) == 2


async def test_unregister_removes_everything_once(service: DiscoveryService, store: Store) -> None:
    await service.register(agent(ALICE, "summarize@1.0"))
    assert await service.unregister(ALICE.did)
    assert not await service.unregister(ALICE.did)
    assert await service.get(ALICE.did) is None
    assert await store.list("agent") == []
    [ev] = await store.read(kinds=["agent.unregistered"])
    assert (ev.actor, ev.subject) == (ALICE.did, ALICE.did)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"did": ""}, "did"),
        ({"did": "alice"}, "did"),
        ({"did": "did:key:z6MkAgentA"}, "did"),  # shaped like a did, but no Ed25519 key
        ({"capabilities": (Capability("a"), Capability("a", "2.0"))}, "capabilities[1]"),
        ({"topics": ("ok", "a..b")}, "topics[1]"),
        ({"topics": ("a.>.b",)}, "topics[0]"),
        ({"pools": ("",)}, "pools[0]"),
    ],
)
def test_a_bad_descriptor_names_its_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        msgspec.structs.replace(agent(ALICE), **changes)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"capability": "Summarize!"}, "capability"),
        ({"capability": "summarize>>1"}, "capability"),
        ({"topic": "market.*"}, "topic"),
        ({"topic": "a..b"}, "topic"),
        ({"pool": ""}, "pool"),
        ({"limit": 0}, "limit"),
        ({"min_trust": 1.5}, "min_trust"),
    ],
)
async def test_a_bad_query_names_its_field(
    service: DiscoveryService, query: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        await service.find(**query)
    assert info.value.field == field


async def test_signed_registration_of_oneself_is_stored(
    service: DiscoveryService, store: Store, clock: ManualClock
) -> None:
    wanted = agent(ALICE, "summarize@1.5", topics=("market.>",))
    stored = await service.register_signed(signed(ALICE, msgspec.to_builtins(wanted), clock))
    assert stored == msgspec.structs.replace(
        wanted, registered_at=clock.now(), expires_at=clock.now() + TTL
    )
    assert await service.get(ALICE.did) == stored
    [ev] = await store.read(kinds=["agent.registered"])
    assert ev.actor == ALICE.did


async def test_registering_someone_else_is_refused_and_stores_nothing(
    service: DiscoveryService, store: Store, clock: ManualClock
) -> None:
    forged = signed(ALICE, msgspec.to_builtins(agent(BOB, "summarize@1.0")), clock)
    forged.verify()  # the signature is Alice's own and valid: only the claim is false
    with pytest.raises(PolicyViolation, match="register themselves"):
        await service.register_signed(forged)
    assert await service.get(BOB.did) is None
    assert await store.list("agent") == []
    [ev] = await store.read()
    assert ev.kind == "discovery.refused"
    assert (ev.trace_id, ev.actor, ev.subject) == (BOB.did, ALICE.did, BOB.did)
    assert (ev.data["message_id"], ev.data["sender"]) == (forged.id, ALICE.did)


async def test_a_tampered_message_is_refused_as_unauthenticated(
    service: DiscoveryService, store: Store, clock: ManualClock
) -> None:
    genuine = signed(ALICE, msgspec.to_builtins(agent(ALICE, "summarize@1.0")), clock)
    tampered = msgspec.structs.replace(genuine, payload={**genuine.payload, "pools": ["admin"]})
    with pytest.raises(SignatureError):
        await service.register_signed(tampered)
    # Alice's signed message with Bob named as its sender: Bob never signed it
    claiming = msgspec.structs.replace(genuine, sender=BOB.did)
    with pytest.raises(SignatureError):
        await service.register_signed(claiming)
    assert await store.list("agent") == []
    events = await store.read(kinds=["discovery.refused"])
    assert [(e.actor, e.data["sender"]) for e in events] == [("", ALICE.did), ("", BOB.did)]


async def test_stale_replayed_and_malformed_requests_are_refused(
    service: DiscoveryService, store: Store, clock: ManualClock
) -> None:
    me = msgspec.to_builtins(agent(ALICE, "summarize@1.0"))
    message = signed(ALICE, me, clock)
    await service.register_signed(message)
    with pytest.raises(ReplayedMessage):
        await service.register_signed(message)
    with pytest.raises(StaleMessage):
        await service.register_signed(signed(ALICE, me, clock, created_at=clock.now() - 3600))
    with pytest.raises(ValidationError) as info:
        await service.register_signed(signed(ALICE, me, clock, kind="chat"))
    assert info.value.field == "kind"
    bad_cap = {**me, "capabilities": [{"name": "Not A Name"}]}
    with pytest.raises(ValidationError) as info:
        await service.register_signed(signed(ALICE, bad_cap, clock))
    assert info.value.field == "capabilities[0].name"
    with pytest.raises(ValidationError) as info:
        await service.register_signed(signed(ALICE, {**me, "role": "admin"}, clock))
    assert info.value.field == "role"
    refused = await store.read(kinds=["discovery.refused"])
    assert [e.actor for e in refused] == [ALICE.did] * 5
    assert len(await store.read(kinds=["agent.registered"])) == 1


async def test_registrations_survive_a_sqlite_reopen(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "discovery.db"
    async with await SQLiteStore.open(path) as store:
        service = DiscoveryService(store, ttl_s=TTL, clock=clock)
        await service.register(agent(ALICE, "summarize@1.5", topics=("market.>",)))
        await service.register(agent(BOB, "summarize@1.0"))
        clock.advance(TTL / 2)
        await service.heartbeat(ALICE.did)
    clock.advance(TTL / 2)
    async with await SQLiteStore.open(path) as store:
        service = DiscoveryService(store, ttl_s=TTL, clock=clock)
        assert dids(await service.find(capability="summarize>=1.2", topic="market.eu")) == [
            ALICE.did
        ]
        assert await service.get(BOB.did) is None
        assert await service.prune_expired() == [BOB.did]
        assert await index_keys(store) == [f"agent-cap/summarize/{ALICE.did}"]


async def test_the_task_board_claims_by_registered_capabilities(
    service: DiscoveryService, store: Store, clock: ManualClock
) -> None:
    board = TaskManager(store, claim_ttl_sec=60.0, clock=clock, directory=service)
    await service.register(agent(ALICE, "summarize@1.5"))
    await service.register(agent(BOB, "summarize@1.0"))
    await service.register(agent(CAROL, "summarize@1.5"))
    need = ("summarize>=1.2",)
    first, second, third = [
        await board.submit(Task(objective=f"t{i}", required_capabilities=need)) for i in range(3)
    ]
    with pytest.raises(PolicyViolation, match="missing capabilities"):
        await board.claim(BOB.did, first.id)  # registered, but an older version
    with pytest.raises(PolicyViolation, match="missing capabilities"):
        await board.claim(DAVE.did, first.id)  # never registered
    assert await board.claim(ALICE.did, first.id) == 1
    clock.advance(TTL - 1)
    await service.heartbeat(ALICE.did)
    clock.advance(1)
    assert await board.claim(ALICE.did, second.id) == 1
    with pytest.raises(PolicyViolation, match="missing capabilities"):
        await board.claim(CAROL.did, third.id)  # capable, but its registration lapsed


async def test_a_refused_registration_is_logged_with_its_claims_clipped(
    service: DiscoveryService, store: Store, clock: ManualClock
) -> None:
    huge = "did:key:z6Mk" + "x" * 400_000
    claim = {**msgspec.to_builtins(agent(ALICE, "summarize@1.0")), "did": huge}
    message = msgspec.structs.replace(signed(ALICE, claim, clock), id="i" * 100_000)
    with pytest.raises(ConvergeError):  # the id changed after signing: a forgery
        await service.register_signed(message)
    with pytest.raises(ConvergeError):  # signed, naming someone else (and no did at all)
        await service.register_signed(signed(ALICE, claim, clock, kind="k" * 100_000))
    refused = await store.read(kinds=["discovery.refused"])
    assert [e.subject for e in refused] == [clip(huge), clip(huge)]
    assert refused[0].data["message_id"] == clip("i" * 100_000)
    for event in refused:
        assert len(event.trace_id) <= MAX_ID_CHARS
        assert len(event.data["reason"]) <= MAX_TEXT_CHARS
        assert len(msgspec.json.encode(event)) < 2_000


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"created_at": "yesterday"}, "created_at"),
        ({"nonce": ["a", "list"]}, "nonce"),
        ({"kind": 5}, "kind"),
        ({"id": None}, "id"),
    ],
)
async def test_a_registration_with_a_field_of_the_wrong_type_is_refused(
    service: DiscoveryService, store: Store, clock: ManualClock, fields: dict[str, Any], field: str
) -> None:
    """Once, a validly signed registration with ``created_at="yesterday"`` raised TypeError from
    the replay guard instead of a refusal."""
    me = msgspec.to_builtins(agent(ALICE, "summarize@1.0"))
    with pytest.raises(ValidationError) as info:
        await service.register_signed(signed(ALICE, me, clock, **fields))
    assert info.value.field == field
    [refused] = await store.read(kinds=["discovery.refused"])
    assert all(v is None or isinstance(v, str) for v in refused.data.values())
    assert await store.list("agent") == []
