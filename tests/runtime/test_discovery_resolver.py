"""Socket transports routed by discovery: two simulated hosts sharing one SQLite store find and
message each other through agents' signed descriptors; lapsed or bad descriptors do not route."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from converge.coordination.discovery import AgentDescriptor, DiscoveryService
from converge.core import Agent, Decision, Identity, Message, Task
from converge.core.clock import ManualClock
from converge.errors import SignatureError, TransportError, ValidationError
from converge.network import Endpoint, Inbox, Resolver
from converge.network.socket_network import SocketNetwork
from converge.network.tcp import tcp_network
from converge.network.websocket import websocket_network
from converge.runtime import AgentRuntime
from converge.runtime.discovery_resolver import DiscoveryResolver
from converge.store.sqlite import SQLiteStore
from tests.network.transport_conformance import received

ALICE, BOB, CAROL = (Identity.generate() for _ in range(3))
WAIT = 10.0


class Listener(Agent):
    """An agent that keeps what it is shown and decides nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Message] = []

    async def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        self.seen.extend(messages)
        return []


async def eventually(check: Callable[[], Any]) -> None:
    """Wait until ``check()`` holds (awaited if it is a coroutine), at most ``WAIT`` seconds."""
    async with asyncio.timeout(WAIT):
        while True:
            result = check()
            if await result if asyncio.iscoroutine(result) else result:
                return
            await asyncio.sleep(0.005)


def signed(who: Identity, descriptor: AgentDescriptor, clock: ManualClock) -> Message:
    payload: Any = msgspec.to_builtins(descriptor)
    return Message(
        kind="discovery.register", topic="discovery", payload=payload, created_at=clock.now()
    ).sign(who)


def to(recipient: Identity, sender: Identity, payload: object) -> Message:
    return Message(kind="note", payload=payload, recipient=recipient.did).sign(sender)


class Host:
    """A simulated host: its own handle on the shared store, discovery service and network."""

    def __init__(self, store: SQLiteStore, service: DiscoveryService, network: SocketNetwork):
        self.store, self.service, self.network = store, service, network


@pytest.fixture(params=["tcp", "ws"])
async def hosts(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[tuple[Host, Host]]:
    """127.0.0.2 and 127.0.0.3, each opening the same store file, over TCP or WebSocket."""
    scheme: str = request.param
    opener = tcp_network if scheme == "tcp" else websocket_network
    made: list[Host] = []
    try:
        for ip in ("127.0.0.2", "127.0.0.3"):
            store = await SQLiteStore.open(tmp_path / "shared.db")
            service = DiscoveryService(store, ttl_s=30, clock=clock)
            network = await opener(DiscoveryResolver(service, schemes=[scheme]), host=ip)
            made.append(Host(store, service, network))
        yield made[0], made[1]
    finally:
        for host in made:
            await host.network.aclose()
            await host.store.aclose()


async def join(host: Host, who: Identity, clock: ManualClock, **kw: Any) -> Inbox:
    """Register ``who`` on ``host``'s network and, signed, in discovery with its endpoint."""
    inbox = Inbox()
    host.network.register(who.did, inbox)
    endpoints = (host.network.endpoint.url,)
    descriptor = AgentDescriptor(did=who.did, name="agent", endpoints=endpoints, **kw)
    await host.service.register_signed(signed(who, descriptor, clock))
    return inbox


async def test_agents_on_two_hosts_find_and_message_each_other_through_discovery(
    hosts: tuple[Host, Host], clock: ManualClock
) -> None:
    two, three = hosts
    assert isinstance(two.network.resolver, Resolver)
    alice = await join(two, ALICE, clock)
    bob = await join(three, BOB, clock, topics=("market.>",))
    three.network.subscribe(BOB.did, "market.gpu")

    # Each host reads the other's registration from the shared file.
    assert await two.network.resolver.resolve(BOB.did) == three.network.endpoint
    assert await three.network.resolver.resolve(ALICE.did) == two.network.endpoint
    assert await two.network.send(to(BOB, ALICE, 1)) == 1
    assert await three.network.send(to(ALICE, BOB, 2)) == 1
    assert [m.payload for m in await received(bob, 1)] == [1]
    assert [m.payload for m in await received(alice, 1)] == [2]
    published = Message(kind="ad", topic="market.gpu").sign(ALICE)
    assert await two.network.send(published) == 1
    assert await received(bob, 1) == [published]


async def test_topic_endpoints_are_those_of_agents_that_may_follow_the_topic(
    hosts: tuple[Host, Host], clock: ManualClock
) -> None:
    two, three = hosts
    await join(two, ALICE, clock, topics=("chat.*",))
    await join(three, BOB, clock, topics=("market.>",))
    resolver = DiscoveryResolver(two.service)
    assert await resolver.topic_endpoints("market.gpu") == [three.network.endpoint]
    assert await resolver.topic_endpoints("chat.room") == [two.network.endpoint]
    assert await resolver.topic_endpoints("news") == []
    await join(three, CAROL, clock)  # declares no topics: it may follow any
    assert await resolver.topic_endpoints("news") == [three.network.endpoint]
    # A transport of another scheme does not dial these endpoints.
    other = "wss" if two.network.endpoint.scheme == "ws" else "tls"
    assert await DiscoveryResolver(two.service, schemes=[other]).resolve(BOB.did) is None
    with pytest.raises(ValidationError) as info:
        DiscoveryResolver(two.service, schemes=["http"])
    assert info.value.field == "schemes"


async def test_an_agent_whose_descriptor_lapsed_or_left_is_unreachable(
    hosts: tuple[Host, Host], clock: ManualClock
) -> None:
    two, three = hosts
    await join(two, ALICE, clock)
    bob = await join(three, BOB, clock)
    assert await two.network.send(to(BOB, ALICE, 1)) == 1
    assert [m.payload for m in await received(bob, 1)] == [1]
    clock.advance(31)  # no heartbeat within ttl_s: Bob's descriptor lapsed
    with pytest.raises(TransportError, match="no endpoint known"):
        await two.network.send(to(BOB, ALICE, 2))
    await three.service.register(
        AgentDescriptor(did=BOB.did, name="bob", endpoints=(three.network.endpoint.url,))
    )
    assert await two.network.send(to(BOB, ALICE, 3)) == 1
    assert [m.payload for m in await received(bob, 1)] == [3]
    await three.service.unregister(BOB.did)
    with pytest.raises(TransportError, match="no endpoint known"):
        await two.network.send(to(BOB, ALICE, 4))


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.2:7001", "scheme"),
        ("tcp://127.0.0.2:0", "port"),
        ("tcp://0.0.0.0:7001", "wildcard"),
        ("127.0.0.2:7001", "scheme"),
        ("tcp://127.0.0.2", "expected scheme://host:port"),
    ],
)
async def test_a_descriptor_with_a_bad_endpoint_is_refused_naming_the_field(
    tmp_path: Path, clock: ManualClock, url: str, why: str
) -> None:
    good = "tcp://127.0.0.2:7001"
    with pytest.raises(ValidationError, match=why) as info:
        AgentDescriptor(did=ALICE.did, name="alice", endpoints=(good, url))
    assert info.value.field == "endpoints[1]"
    store = await SQLiteStore.open(tmp_path / "shared.db")
    try:
        service = DiscoveryService(store, clock=clock)
        payload = {"did": ALICE.did, "name": "alice", "endpoints": [good, url]}
        message = Message(
            kind="discovery.register", topic="discovery", payload=payload, created_at=clock.now()
        ).sign(ALICE)
        with pytest.raises(ValidationError, match=why) as info:
            await service.register_signed(message)
        assert info.value.field == "endpoints[1]"
        assert await service.get(ALICE.did) is None
    finally:
        await store.aclose()


async def test_the_endpoints_are_signed_with_the_rest_of_the_descriptor(
    tmp_path: Path, clock: ManualClock
) -> None:
    store = await SQLiteStore.open(tmp_path / "shared.db")
    try:
        service = DiscoveryService(store, clock=clock)
        mine = AgentDescriptor(did=ALICE.did, name="alice", endpoints=("tcp://127.0.0.2:7001",))
        genuine = signed(ALICE, mine, clock)
        redirected = {**genuine.payload, "endpoints": ["tcp://127.0.0.3:7001"]}
        with pytest.raises(SignatureError):
            await service.register_signed(msgspec.structs.replace(genuine, payload=redirected))
        assert await service.get(ALICE.did) is None
        stored = await service.register_signed(genuine)
        assert stored.endpoints == ("tcp://127.0.0.2:7001",)
        assert await DiscoveryResolver(service).resolve(ALICE.did) == Endpoint.parse(
            "tcp://127.0.0.2:7001"
        )
    finally:
        await store.aclose()


async def test_a_runtime_on_a_socket_network_advertises_its_endpoint(
    hosts: tuple[Host, Host], clock: ManualClock
) -> None:
    two, three = hosts
    await join(two, ALICE, clock)
    bob = Listener()
    async with AgentRuntime(
        bob, network=three.network, store=three.store, discovery=three.service, clock=clock
    ):
        await eventually(lambda: two.service.get(bob.did))
        found = await two.service.get(bob.did)
        assert found is not None
        assert found.endpoints == (three.network.endpoint.url,)
        assert await two.network.send(to(bob.identity, ALICE, 1)) == 1
        await eventually(lambda: [m.payload for m in bob.seen] == [1])
    with pytest.raises(TransportError, match="no endpoint known"):
        await two.network.send(to(bob.identity, ALICE, 2))


async def test_with_max_age_answers_are_reused_until_they_are_that_old(
    hosts: tuple[Host, Host], clock: ManualClock
) -> None:
    two, three = hosts
    await join(three, BOB, clock, topics=("market.>",))
    caching = DiscoveryResolver(two.service, max_age_s=5)
    fresh = DiscoveryResolver(two.service)
    assert await caching.resolve(BOB.did) == three.network.endpoint
    assert await caching.topic_endpoints("market.gpu") == [three.network.endpoint]
    await three.service.unregister(BOB.did)
    assert await fresh.resolve(BOB.did) is None
    assert await fresh.topic_endpoints("market.gpu") == []
    clock.advance(4)  # younger than max_age_s: the old answers still
    assert await caching.resolve(BOB.did) == three.network.endpoint
    assert await caching.topic_endpoints("market.gpu") == [three.network.endpoint]
    clock.advance(1)
    assert await caching.resolve(BOB.did) is None
    assert await caching.topic_endpoints("market.gpu") == []
    for bad in (-1, float("nan"), True, "5"):
        with pytest.raises(ValidationError) as info:
            DiscoveryResolver(two.service, max_age_s=bad)  # type: ignore[arg-type]
        assert info.value.field == "max_age_s"
