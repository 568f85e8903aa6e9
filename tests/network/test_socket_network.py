"""The TCP and WebSocket transports beyond the conformance suite: routing across three
simulated hosts, reachability, the frame limit and bad frames on a live connection, shutdown."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
import pytest

from converge.core import Identity, Message
from converge.core.clock import ManualClock
from converge.errors import MessageTooLarge, TransportClosed, TransportError, ValidationError
from converge.network import Endpoint, Inbox, StaticResolver, Transport
from converge.network.framing import Deliver, Delivered, encode_frame
from converge.network.limits import SocketLimits
from converge.network.reconnect import ReconnectPolicy
from converge.network.socket_network import SocketNetwork
from converge.network.tcp import tcp_network
from converge.network.websocket import websocket_network
from tests.network.transport_conformance import received

ALICE, BOB, CAROL, DAVE = (Identity.generate() for _ in range(4))
WAIT = 10.0

Opener = Callable[..., Awaitable[SocketNetwork]]
OPENERS: dict[str, Opener] = {"tcp": tcp_network, "ws": websocket_network}


@pytest.fixture(params=list(OPENERS))
def opener(request: pytest.FixtureRequest) -> Opener:
    return OPENERS[request.param]


@pytest.fixture
async def hosts(opener: Opener) -> AsyncIterator[tuple[StaticResolver, list[SocketNetwork]]]:
    """Three networks on 127.0.0.1, .2 and .3 sharing one resolver."""
    resolver = StaticResolver()
    networks = [await opener(resolver, host=f"127.0.0.{i}") for i in (1, 2, 3)]
    try:
        yield resolver, networks
    finally:
        for network in networks:
            await network.aclose()


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: nothing listens there


async def eventually(check: Callable[[], bool]) -> None:
    """Wait until ``check()`` holds: polled, at most ``WAIT`` seconds (for what another task
    does after the event the test saw, such as a listener counting the frame it refused)."""
    for _ in range(int(WAIT / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    assert check()


def to(recipient: Identity, sender: Identity, payload: object = None) -> Message:
    return Message(kind="note", payload=payload, recipient=recipient.did).sign(sender)


async def test_a_network_advertises_the_address_it_listens_on(
    hosts: tuple[StaticResolver, list[SocketNetwork]], opener: Opener
) -> None:
    _, networks = hosts
    for i, network in enumerate(networks, start=1):
        assert isinstance(network, Transport)
        assert network.endpoint.host == f"127.0.0.{i}"
        assert network.endpoint.scheme == ("tcp" if opener is tcp_network else "ws")
        assert network.endpoint.port > 0
    with pytest.raises(ValidationError, match="wildcard"):
        await opener(StaticResolver(), host="0.0.0.0")
    with pytest.raises(ValidationError, match="wrong protocol"):
        await opener(StaticResolver(), host="127.0.0.2", advertise="wss://127.0.0.2:443")


async def test_messages_are_routed_by_did_and_topics_reach_every_hosts_subscribers(
    hosts: tuple[StaticResolver, list[SocketNetwork]],
) -> None:
    resolver, (one, two, three) = hosts
    inboxes = {who.did: Inbox() for who in (ALICE, BOB, CAROL, DAVE)}
    for who, network in ((ALICE, one), (DAVE, one), (BOB, two), (CAROL, three)):
        network.register(who.did, inboxes[who.did])
        resolver.add(who.did, network.endpoint)
    two.subscribe(BOB.did, "market.gpu")
    three.subscribe(CAROL.did, "market.>")
    one.subscribe(DAVE.did, "market.*")
    one.subscribe(ALICE.did, "market.>")  # the sender: skipped

    assert await one.send(to(CAROL, ALICE, 1)) == 1
    assert await three.send(to(BOB, CAROL, 2)) == 1
    assert await two.send(to(ALICE, BOB, 3)) == 1
    assert [m.payload for m in inboxes[CAROL.did].drain(10)] == [1]
    assert [m.payload for m in inboxes[BOB.did].drain(10)] == [2]
    assert [m.payload for m in inboxes[ALICE.did].drain(10)] == [3]
    published = Message(kind="ad", topic="market.gpu").sign(ALICE)
    assert await one.send(published) == 3
    for who in (BOB, CAROL, DAVE):
        assert await received(inboxes[who.did], 1) == [published]
    assert len(inboxes[ALICE.did]) == 0
    # Agents on the same network meet without a connection.
    connections = one.stats.connections
    assert await one.send(to(DAVE, ALICE, 4)) == 1
    assert one.stats.connections == connections
    assert [m.payload for m in inboxes[DAVE.did].drain(10)] == [4]


async def test_an_unknown_did_or_an_endpoint_that_refuses_is_a_transport_error(
    hosts: tuple[StaticResolver, list[SocketNetwork]], opener: Opener
) -> None:
    resolver, (one, two, _) = hosts
    with pytest.raises(TransportError, match="no endpoint"):
        await one.send(to(BOB, ALICE))
    scheme = one.endpoint.scheme
    resolver.add(BOB.did, Endpoint(scheme, "127.0.0.2", _free_port("127.0.0.2")))
    with pytest.raises(TransportError, match="cannot reach"):
        await one.send(to(BOB, ALICE))
    resolver.add(BOB.did, two.endpoint)  # the right host, but BOB is not there
    with pytest.raises(TransportError, match="no agent"):
        await one.send(to(BOB, ALICE))
    resolver.add(BOB.did, one.endpoint)  # the sender's own endpoint, where BOB is not either
    with pytest.raises(TransportError, match="no agent"):
        await one.send(to(BOB, ALICE))
    # A topic message: an endpoint that cannot be reached only misses it.
    resolver.add_peer(Endpoint(scheme, "127.0.0.3", _free_port("127.0.0.3")))
    assert await one.send(Message(kind="ad", topic="market").sign(ALICE)) == 0
    assert one.stats.missed == 1


async def test_a_network_advertising_an_address_it_does_not_listen_on_is_unreachable(
    opener: Opener,
) -> None:
    # The bug the simulated hosts are there to show: bound to 127.0.0.3, advertising
    # 127.0.0.1. Senders dial the advertised endpoint, so nothing reaches it.
    resolver = StaticResolver()
    port = _free_port("127.0.0.1")
    scheme = "tcp" if opener is tcp_network else "ws"
    wrong = await opener(
        resolver, host="127.0.0.3", port=port, advertise=f"{scheme}://127.0.0.1:{port}"
    )
    sender = await opener(resolver, host="127.0.0.2")
    try:
        wrong.register(BOB.did, Inbox())
        resolver.add(BOB.did, wrong.endpoint)
        with pytest.raises(TransportError, match="cannot reach"):
            await sender.send(to(BOB, ALICE))
    finally:
        await sender.aclose()
        await wrong.aclose()


async def test_a_message_over_the_frame_limit_is_refused_on_both_sides(opener: Opener) -> None:
    resolver = StaticResolver()
    sender = await opener(resolver, host="127.0.0.2", max_frame=4096)
    receiver = await opener(resolver, host="127.0.0.3", max_frame=1024)
    try:
        inbox = Inbox()
        receiver.register(BOB.did, inbox)
        resolver.add(BOB.did, receiver.endpoint)
        # Over the sender's own limit: refused before anything is sent.
        with pytest.raises(MessageTooLarge):  # as on every transport
            await sender.send(to(BOB, ALICE, "x" * 5000))
        assert sender.stats.connections == 0
        # Within the sender's limit, over the receiver's: the receiver drops the connection
        # without delivering; the send fails.
        with pytest.raises(TransportError):
            await sender.send(to(BOB, ALICE, "x" * 2000))
        await eventually(lambda: receiver.stats.bad_frames == 1)
        assert len(inbox) == 0
        # The next send dials again and gets through.
        assert await sender.send(to(BOB, ALICE, "small")) == 1
        assert [m.payload for m in inbox.drain(10)] == ["small"]
        assert (sender.stats.connections, sender.stats.reconnects) == (2, 1)
    finally:
        await sender.aclose()
        await receiver.aclose()


# -- bad bytes on a live connection ----------------------------------------------------------------


class _Raw:
    """A raw client of a listener: writes bytes, waits for the listener to hang up."""

    def __init__(
        self, send: Callable[[bytes], Awaitable[None]], hung_up: Callable[[], Awaitable[None]]
    ):
        self.send = send
        self.hung_up = hung_up


@pytest.fixture
async def raw(opener: Opener) -> AsyncIterator[Callable[[Endpoint], Awaitable[_Raw]]]:
    closers: list[Callable[[], Awaitable[None]]] = []

    async def connect(endpoint: Endpoint) -> _Raw:
        if opener is tcp_network:
            reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)

            async def write(data: bytes) -> None:
                writer.write(data)
                await writer.drain()

            async def tcp_hung_up() -> None:
                # A truncated frame only shows once the stream ends: end our side.
                if writer.can_write_eof():
                    writer.write_eof()
                await reader.read()  # the answer to the good frame, then the end

            async def close_tcp() -> None:
                writer.close()

            closers.append(close_tcp)
            return _Raw(write, tcp_hung_up)
        from websockets.asyncio.client import connect as ws_connect
        from websockets.exceptions import ConnectionClosed

        connection = await ws_connect(f"{endpoint.url}/", proxy=None, compression=None)

        async def ws_hung_up() -> None:
            with pytest.raises(ConnectionClosed):
                while True:  # the answer to the good frame, then the close
                    await connection.recv()

        async def send(data: bytes) -> None:
            await connection.send(data)

        closers.append(connection.close)
        return _Raw(send, ws_hung_up)

    yield connect
    for close in closers:
        await close()


def _prefixed(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def _frame_bytes(message: Message) -> bytes:
    return encode_frame(Deliver(1, message))


BAD = {
    "garbage": struct.pack(">I", 3) + b"\xc1\xc1\xc1",
    "truncated": None,  # the frame of a message, cut short: built in the test
    "oversized": struct.pack(">I", 1 << 30) + b"\x00" * 64,
    "wrong way": encode_frame(Delivered(1, 1)),  # an answer, sent to the listening side
    "no addressee": _prefixed(
        msgspec.msgpack.encode(["deliver", 1, {"type": "message", "kind": "x"}])
    ),
}


@pytest.mark.parametrize("case", list(BAD))
async def test_a_bad_frame_drops_its_connection_and_delivers_nothing_of_it(
    opener: Opener, raw: Callable[[Endpoint], Awaitable[_Raw]], case: str
) -> None:
    async with await opener(StaticResolver(), host="127.0.0.3") as network:
        inbox = Inbox()
        network.register(BOB.did, inbox)
        network.subscribe(BOB.did, ">")
        client = await raw(network.endpoint)
        good = to(BOB, ALICE, "before")
        await client.send(_frame_bytes(good))
        bad = BAD[case]
        if bad is None:
            bad = _frame_bytes(to(BOB, ALICE, "cut"))[:-5]
        await client.send(bad)
        async with asyncio.timeout(WAIT):
            await client.hung_up()
        await eventually(lambda: network.stats.bad_frames == 1)
        assert inbox.drain(10) == [good]
        # The listener still serves others.
        other = await raw(network.endpoint)
        await other.send(_frame_bytes(to(BOB, ALICE, "after")))
        assert [m.payload for m in await received(inbox, 1)] == ["after"]


async def test_aclose_leaves_no_task_behind_and_refuses_what_comes_after(opener: Opener) -> None:
    before = asyncio.all_tasks()
    resolver = StaticResolver()
    one = await opener(resolver, host="127.0.0.2")
    two = await opener(resolver, host="127.0.0.3")
    inbox = Inbox(maxsize=1)
    two.register(BOB.did, inbox)
    resolver.add(BOB.did, two.endpoint)
    await one.send(to(BOB, ALICE, 1))
    waiting = asyncio.ensure_future(one.send(to(BOB, ALICE, 2)))  # held back: BOB's inbox is full
    await asyncio.sleep(0)
    await two.aclose()  # the receiver goes away: the waiting send fails, it is not lost silently
    with pytest.raises(TransportError):
        await asyncio.wait_for(waiting, WAIT)
    await one.aclose()
    await one.aclose()
    with pytest.raises(TransportClosed):
        await one.send(to(BOB, ALICE, 3))
    await eventually(lambda: not asyncio.all_tasks() - before - {asyncio.current_task()})


# -- limits ----------------------------------------------------------------------------------------


def test_limits_refuse_values_out_of_range() -> None:
    assert SocketLimits().messages_per_second == 10_000.0
    for bad in (
        {"max_connections": 0},
        {"max_connections_per_host": True},
        {"burst": 1.5},
        {"messages_per_second": 0},
        {"messages_per_second": float("inf")},
    ):
        with pytest.raises(ValidationError):
            SocketLimits(**bad)  # type: ignore[arg-type]


async def test_connections_over_a_limit_are_closed_and_their_sends_fail(opener: Opener) -> None:
    resolver = StaticResolver()
    limits = SocketLimits(max_connections=2, max_connections_per_host=1)
    listener = await opener(resolver, host="127.0.0.3", limits=limits)
    senders = [await opener(resolver, host=h) for h in ("127.0.0.2", "127.0.0.2", "127.0.0.1")]
    late = await opener(resolver, host="127.0.0.4")
    try:
        inbox = Inbox()
        listener.register(BOB.did, inbox)
        resolver.add(BOB.did, listener.endpoint)
        first, same_host, other_host = senders
        assert await first.send(to(BOB, ALICE, 1)) == 1
        with pytest.raises(TransportError):  # a second connection from 127.0.0.2
            await same_host.send(to(BOB, ALICE, 2))
        assert await other_host.send(to(BOB, ALICE, 3)) == 1
        with pytest.raises(TransportError):  # a third connection in all
            await late.send(to(BOB, ALICE, 4))
        assert [m.payload for m in inbox.drain(10)] == [1, 3]
        assert listener.stats.rejected_connections == 2
        await first.aclose()  # its connection ends: room for another from 127.0.0.2
        await eventually(lambda: listener.incoming == 1)
        assert await same_host.send(to(BOB, ALICE, 5)) == 1
    finally:
        for network in (*senders, late, listener):
            await network.aclose()


async def test_a_host_over_its_rate_is_slowed_down_not_dropped(opener: Opener) -> None:
    clock = ManualClock()
    resolver = StaticResolver()
    limits = SocketLimits(messages_per_second=1.0, burst=2)
    listener = await opener(resolver, host="127.0.0.3", limits=limits, clock=clock)
    sender = await opener(resolver, host="127.0.0.2")
    try:
        inbox = Inbox()
        listener.register(BOB.did, inbox)
        resolver.add(BOB.did, listener.endpoint)

        async def sends() -> None:
            for i in range(4):
                await sender.send(to(BOB, ALICE, i))

        async with asyncio.TaskGroup() as group:
            sending = group.create_task(sends())
            await eventually(lambda: clock.sleepers == 1)  # the burst is spent
            assert [m.payload for m in inbox.drain(10)] == [0, 1]
            assert not sending.done()
            assert sender.waiting_sends == 1
            clock.advance(1.0)
            await eventually(lambda: len(inbox) == 1 and clock.sleepers == 1)
            clock.advance(1.0)
        assert [m.payload for m in inbox.drain(10)] == [2, 3]
        assert listener.stats.throttled == 2
    finally:
        await sender.aclose()
        await listener.aclose()


# -- reconnecting ----------------------------------------------------------------------------------


async def test_a_peer_that_cannot_be_dialed_is_retried_after_growing_delays(
    opener: Opener,
) -> None:
    clock = ManualClock()
    resolver = StaticResolver()
    policy = ReconnectPolicy(initial_delay=1.0, max_delay=4.0)
    sender = await opener(resolver, host="127.0.0.2", clock=clock, reconnect=policy)
    port = _free_port("127.0.0.3")
    resolver.add(BOB.did, Endpoint(sender.endpoint.scheme, "127.0.0.3", port))
    receiver: SocketNetwork | None = None
    try:
        dials = []
        for step in (0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 1.0):  # failures at 0, 1, 3: waits 1, 2, 4
            clock.advance(step)
            with pytest.raises(TransportError, match="cannot reach"):
                await sender.send(to(BOB, ALICE))
            dials.append(sender.stats.failed_dials)
        assert dials == [1, 1, 2, 2, 3, 3, 3]
        receiver = await opener(resolver, host="127.0.0.3", port=port)
        receiver.register(BOB.did, Inbox())
        with pytest.raises(TransportError, match="next attempt"):
            await sender.send(to(BOB, ALICE))
        clock.advance(1.0)  # 4 s after the last failure
        assert await sender.send(to(BOB, ALICE)) == 1
        assert (sender.stats.failed_dials, sender.stats.connections) == (3, 1)
    finally:
        await sender.aclose()
        if receiver is not None:
            await receiver.aclose()


async def test_a_patient_send_waits_for_a_peer_that_comes_up(opener: Opener) -> None:
    clock = ManualClock()
    resolver = StaticResolver()
    policy = ReconnectPolicy(initial_delay=1.0, patience=10.0)
    sender = await opener(resolver, host="127.0.0.2", clock=clock, reconnect=policy)
    port = _free_port("127.0.0.3")
    resolver.add(BOB.did, Endpoint(sender.endpoint.scheme, "127.0.0.3", port))
    receiver: SocketNetwork | None = None
    try:
        inbox = Inbox()
        async with asyncio.TaskGroup() as group:
            sending = group.create_task(sender.send(to(BOB, ALICE, "patient")))
            await eventually(lambda: clock.sleepers == 1)  # the first dial failed; it waits
            receiver = await opener(resolver, host="127.0.0.3", port=port)
            receiver.register(BOB.did, inbox)
            clock.advance(1.0)
        assert sending.result() == 1
        assert [m.payload for m in inbox.drain(10)] == ["patient"]
    finally:
        await sender.aclose()
        if receiver is not None:
            await receiver.aclose()


async def test_a_restarted_peer_is_dialed_again(opener: Opener) -> None:
    resolver = StaticResolver()
    sender = await opener(resolver, host="127.0.0.2")
    first = await opener(resolver, host="127.0.0.3")
    port = first.endpoint.port
    first.register(BOB.did, Inbox())
    resolver.add(BOB.did, first.endpoint)
    again: SocketNetwork | None = None
    try:
        assert await sender.send(to(BOB, ALICE, 1)) == 1
        await first.aclose()
        await eventually(lambda: not sender.is_connected(first.endpoint))
        again = await opener(resolver, host="127.0.0.3", port=port)
        inbox = Inbox()
        again.register(BOB.did, inbox)
        assert await sender.send(to(BOB, ALICE, 2)) == 1
        assert [m.payload for m in inbox.drain(10)] == [2]
        assert (sender.stats.connections, sender.stats.reconnects) == (2, 1)
    finally:
        await sender.aclose()
        if again is not None:
            await again.aclose()


def test_a_reconnect_policy_refuses_values_out_of_range() -> None:
    for bad in (
        {"initial_delay": 0},
        {"initial_delay": 2.0, "max_delay": 1.0},
        {"factor": 0.5},
        {"patience": -1},
        {"patience": float("nan")},
    ):
        with pytest.raises(ValidationError):
            ReconnectPolicy(**bad)  # type: ignore[arg-type]
    assert ReconnectPolicy(max_delay=3.0).next_delay(2.0) == 3.0


async def test_stats_show_the_queues_while_a_full_inbox_holds_a_sender_back(
    opener: Opener,
) -> None:
    resolver = StaticResolver()
    sender = await opener(resolver, host="127.0.0.2")
    receiver = await opener(resolver, host="127.0.0.3")
    try:
        inbox = Inbox(maxsize=1)
        receiver.register(BOB.did, inbox)
        resolver.add(BOB.did, receiver.endpoint)
        await sender.send(to(BOB, ALICE, 1))
        waiting = asyncio.ensure_future(sender.send(to(BOB, ALICE, 2)))
        await eventually(lambda: sender.stats.waiting_sends == 1)
        sent, got = sender.stats, receiver.stats
        assert (sent.outgoing, sent.waiting_sends, sent.connections) == (1, 1, 1)
        assert (got.incoming, got.queued) == (1, 1)
        assert [m.payload for m in inbox.drain(1)] == [1]
        assert await asyncio.wait_for(waiting, WAIT) == 1
        assert (sender.stats.waiting_sends, receiver.stats.queued) == (0, 1)
    finally:
        await sender.aclose()
        await receiver.aclose()


def test_without_the_ws_extra_the_websocket_transport_names_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from converge.errors import MissingExtra
    from converge.network.websocket import WebSocketWire

    monkeypatch.setitem(sys.modules, "websockets", None)  # what an absent package looks like
    with pytest.raises(MissingExtra) as caught:
        WebSocketWire()
    assert caught.value.extra == "ws"
