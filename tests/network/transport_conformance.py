"""The conformance suite every ``Transport`` passes (the guarantees ``converge.network.transport``
lists).

``TransportConformance`` holds the tests; ``test_transports.py`` runs them through its
``transport`` fixture, parametrized over ``TRANSPORTS``. A new transport joins by adding one
entry to ``TRANSPORTS``: an async factory that returns an open transport (the fixture closes
it). Several agents of one test share that transport; a transport between processes makes its
factory return one end wired to peers that deliver back into it.

The tests never assume that a message is in an inbox the moment ``send`` returns — only that a
direct message is there once its ``send`` has returned (the send is acknowledged). Topic
messages are waited for (``received``), and "nothing else arrived" is shown with a fence: a
last message from the same sender, behind which, by per-sender order, nothing can be late.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import pytest

from converge.core import Identity, Message
from converge.errors import SignatureError, TransportClosed, TransportError, ValidationError
from converge.network import Inbox, LocalNetwork, Transport
from converge.network.tcp import tcp_network
from converge.network.websocket import websocket_network
from tests.network.two_hosts import TwoHosts

__all__ = ["TRANSPORTS", "TransportConformance", "received"]


async def _local() -> Transport:
    return LocalNetwork()


async def _nats() -> Transport:
    from converge.network.nats import NatsNetwork
    from tests.network.nats_servers import nats_url, unique_prefix

    return await NatsNetwork.connect(nats_url(), prefix=unique_prefix(), ack_timeout=WAIT)


async def _tcp() -> Transport:
    return await TwoHosts.open(tcp_network)


async def _ws() -> Transport:
    return await TwoHosts.open(websocket_network)


TRANSPORTS: dict[str, Callable[[], Awaitable[Transport]]] = {
    "local": _local,
    "tcp": _tcp,
    "ws": _ws,
    "nats": _nats,
}
"""Transport name -> async factory of an open transport."""

WAIT = 10.0
"""Upper bound for anything that should happen promptly; a hang fails here, not at the timeout."""

ALICE, BOB, CAROL = (Identity.generate() for _ in range(3))
FENCE = "zz.fence"
"""A topic every subscriber in the wildcard tests listens on, to close a run of sends."""


async def received(inbox: Inbox, count: int) -> list[Message]:
    """The next ``count`` messages of ``inbox``, waiting for them (at most ``WAIT`` seconds)."""
    out: list[Message] = []
    async with asyncio.timeout(WAIT):
        while len(out) < count:
            await inbox.wait()
            out.extend(inbox.drain(count - len(out)))
    return out


def to(recipient: Identity, sender: Identity, payload: Any = None, kind: str = "note") -> Message:
    """A direct message, signed."""
    return Message(kind=kind, payload=payload, recipient=recipient.did).sign(sender)


def on(topic: str, sender: Identity, payload: Any = None, kind: str = "note") -> Message:
    """A topic message, signed."""
    return Message(kind=kind, payload=payload, topic=topic).sign(sender)


async def _not_done_within(task: asyncio.Future[Any], seconds: float) -> bool:
    done, _ = await asyncio.wait({task}, timeout=seconds)
    return not done


# (pattern, topic, whether the pattern matches the topic): NATS subject rules.
WILDCARDS: list[tuple[str, str, bool]] = [
    ("market.gpu", "market.gpu", True),
    ("market.gpu", "market.cpu", False),
    ("market.gpu", "market.gpu.h100", False),
    ("market.*", "market.gpu", True),
    ("market.*", "market.gpu.h100", False),
    ("market.*", "market", False),
    ("*.gpu", "market.gpu", True),
    ("*.gpu", "market.cpu", False),
    ("market.*.h100", "market.gpu.h100", True),
    ("market.*.h100", "market.gpu.a100", False),
    ("market.>", "market.gpu", True),
    ("market.>", "market.gpu.h100", True),
    ("market.>", "market", False),
    ("market.>", "marketing.gpu", False),
    ("*.*.>", "market.gpu.h100", True),
    ("*.*.>", "market.gpu", False),
    (">", "market", True),
    (">", "market.gpu.h100", True),
]


class TransportConformance:
    """The tests; a subclass collected by pytest runs them once per transport."""

    async def test_it_is_a_transport(self, transport: Transport) -> None:
        assert isinstance(transport, Transport)

    # -- addressing --------------------------------------------------------------------------------

    async def test_a_direct_message_reaches_its_recipient_as_sent(
        self, transport: Transport
    ) -> None:
        inbox = Inbox()
        transport.register(BOB.did, inbox)
        message = to(BOB, ALICE, {"n": 1, "text": "é"})
        assert await transport.send(message) == 1
        assert inbox.drain(10) == [message]
        assert transport.is_registered(BOB.did)

    async def test_a_direct_message_to_an_agent_not_on_the_transport_is_a_transport_error(
        self, transport: Transport
    ) -> None:
        with pytest.raises(TransportError):
            await transport.send(to(BOB, ALICE))
        inbox = Inbox()
        transport.register(BOB.did, inbox)
        transport.unregister(BOB.did)
        assert not transport.is_registered(BOB.did)
        with pytest.raises(TransportError):
            await transport.send(to(BOB, ALICE))
        assert len(inbox) == 0

    async def test_a_second_open_inbox_for_one_did_is_refused(self, transport: Transport) -> None:
        first = Inbox()
        transport.register(BOB.did, first)
        with pytest.raises(ValidationError):
            transport.register(BOB.did, Inbox())
        first.close()  # its owner stopped: a new one may take the did
        second = Inbox()
        transport.register(BOB.did, second)
        await transport.send(to(BOB, ALICE))
        assert len(second) == 1

    async def test_what_cannot_be_addressed_is_a_validation_error(
        self, transport: Transport
    ) -> None:
        transport.register(BOB.did, Inbox())
        with pytest.raises(ValidationError):
            await transport.send("not a message")  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            transport.subscribe(BOB.did, "market..gpu")
        with pytest.raises(ValidationError):
            transport.subscribe(BOB.did, "market.>.gpu")

    @pytest.mark.parametrize(("pattern", "topic", "matches"), WILDCARDS)
    async def test_a_topic_message_reaches_the_subscribers_whose_pattern_matches(
        self, transport: Transport, pattern: str, topic: str, matches: bool
    ) -> None:
        inbox = Inbox()
        transport.register(BOB.did, inbox)
        transport.subscribe(BOB.did, pattern)
        transport.subscribe(BOB.did, FENCE)
        published = on(topic, ALICE)
        await transport.send(published)
        fence = on(FENCE, ALICE, kind="fence")
        await transport.send(fence)
        got = await received(inbox, 2 if matches else 1)
        assert got == ([published, fence] if matches else [fence])

    async def test_each_subscriber_gets_a_topic_message_once_and_its_sender_none(
        self, transport: Transport
    ) -> None:
        inboxes = {who.did: Inbox() for who in (ALICE, BOB, CAROL)}
        for did, inbox in inboxes.items():
            transport.register(did, inbox)
            transport.subscribe(did, "market.gpu")
            transport.subscribe(did, "market.>")  # a second match: still one copy
            transport.subscribe(did, FENCE)
        published = on("market.gpu", ALICE)
        await transport.send(published)
        await transport.send(on(FENCE, ALICE, kind="fence"))
        for who in (BOB, CAROL):
            assert [m.kind for m in await received(inboxes[who.did], 2)] == ["note", "fence"]
        # The sender's own inbox: nothing, and the fence of another sender comes first.
        await transport.send(on(FENCE, BOB, kind="fence"))
        assert [m.sender for m in await received(inboxes[ALICE.did], 1)] == [BOB.did]

    async def test_unsubscribing_and_unregistering_stop_topic_delivery(
        self, transport: Transport
    ) -> None:
        inbox = Inbox()
        transport.register(BOB.did, inbox)
        transport.subscribe(BOB.did, "market.*")
        transport.subscribe(BOB.did, FENCE)
        transport.unsubscribe(BOB.did, "market.*")
        transport.unsubscribe(BOB.did, "never.subscribed")
        await transport.send(on("market.gpu", ALICE))
        await transport.send(on(FENCE, ALICE, kind="fence"))
        assert [m.kind for m in await received(inbox, 1)] == ["fence"]
        transport.subscribe(BOB.did, "market.*")
        transport.unregister(BOB.did)  # drops its subscriptions with it
        again = Inbox()
        transport.register(BOB.did, again)
        transport.subscribe(BOB.did, FENCE)
        await transport.send(on("market.gpu", ALICE))
        await transport.send(on(FENCE, ALICE, kind="fence"))
        assert [m.kind for m in await received(again, 1)] == ["fence"]
        assert len(inbox) == 0

    async def test_a_message_arrives_as_signed_and_a_tampered_one_is_left_to_the_receiver(
        self, transport: Transport
    ) -> None:
        inbox = Inbox()
        transport.register(BOB.did, inbox)
        transport.subscribe(BOB.did, "feed")
        honest = to(BOB, ALICE, {"amount": 10})
        tampered = msgspec.structs.replace(on("feed", ALICE, {"amount": 10}), payload={"amount": 1})
        await transport.send(honest)
        await transport.send(tampered)
        got = await received(inbox, 2)
        assert got == [honest, tampered]
        got[0].verify()
        with pytest.raises(SignatureError):
            got[1].verify()

    # -- order -------------------------------------------------------------------------------------

    async def test_each_senders_messages_arrive_in_the_order_it_sent_them(
        self, transport: Transport
    ) -> None:
        inbox = Inbox(maxsize=5)  # small: the senders are held back and interleave
        transport.register(CAROL.did, inbox)
        transport.subscribe(CAROL.did, "feed.>")

        async def sends(sender: Identity) -> None:
            for i in range(40):
                # Direct and topic messages mixed: order is per sender, to each recipient.
                message = to(CAROL, sender, i) if i % 3 else on(f"feed.{i}", sender, i)
                await transport.send(message)

        async with asyncio.TaskGroup() as group:
            group.create_task(sends(ALICE))
            group.create_task(sends(BOB))
            got = await received(inbox, 80)
        for sender in (ALICE, BOB):
            assert [m.payload for m in got if m.sender == sender.did] == list(range(40))

    # -- backpressure ------------------------------------------------------------------------------

    async def test_a_full_inbox_holds_messages_back_and_loses_none(
        self, transport: Transport
    ) -> None:
        direct, subscriber = Inbox(maxsize=2), Inbox(maxsize=1)
        transport.register(BOB.did, direct)
        transport.register(CAROL.did, subscriber)
        transport.subscribe(CAROL.did, "feed")

        async def sends() -> None:
            for i in range(30):
                await transport.send(to(BOB, ALICE, i))
                await transport.send(on("feed", ALICE, i))

        async def read(inbox: Inbox) -> list[Any]:
            out: list[Any] = []
            async with asyncio.timeout(WAIT):
                while len(out) < 30:
                    await inbox.wait()
                    assert len(inbox) <= inbox.maxsize
                    out.extend(m.payload for m in inbox.drain(1))  # a slow reader
                    await asyncio.sleep(0)
            return out

        async with asyncio.TaskGroup() as group:
            group.create_task(sends())
            reads = [group.create_task(read(direct)), group.create_task(read(subscriber))]
        assert [r.result() for r in reads] == [list(range(30)), list(range(30))]

    async def test_a_direct_send_to_a_recipient_that_stops_while_its_inbox_is_full_fails(
        self, transport: Transport
    ) -> None:
        inbox = Inbox(maxsize=1)
        transport.register(BOB.did, inbox)
        await transport.send(to(BOB, ALICE, 1))  # now full
        waiting = asyncio.ensure_future(transport.send(to(BOB, ALICE, 2)))
        assert await _not_done_within(waiting, 0.05)
        inbox.close()
        transport.unregister(BOB.did)
        with pytest.raises(TransportError):
            await asyncio.wait_for(waiting, WAIT)
        assert [m.payload for m in inbox.drain(10)] == [1]

    async def test_a_subscriber_that_stops_while_a_publisher_waits_only_misses_the_message(
        self, transport: Transport
    ) -> None:
        stays, leaves = Inbox(maxsize=1), Inbox(maxsize=1)
        for who, inbox in ((BOB, stays), (CAROL, leaves)):
            transport.register(who.did, inbox)
            transport.subscribe(who.did, "feed")
        await transport.send(on("feed", ALICE, 1))
        assert [len(await received(i, 1)) for i in (stays, leaves)] == [1, 1]
        await transport.send(on("feed", ALICE, 2))  # both full again
        publishing = asyncio.ensure_future(transport.send(on("feed", ALICE, 3)))
        assert await _not_done_within(publishing, 0.05)
        leaves.close()
        transport.unregister(CAROL.did)
        got = await received(stays, 2)
        await asyncio.wait_for(publishing, WAIT)  # no error: a subscriber may leave
        assert [m.payload for m in got] == [2, 3]

    # -- lifetime ----------------------------------------------------------------------------------

    async def test_after_aclose_sends_and_registrations_are_refused_and_inboxes_gone(
        self, transport: Transport
    ) -> None:
        inbox = Inbox()
        transport.register(BOB.did, inbox)
        transport.subscribe(BOB.did, "feed")
        await transport.aclose()
        await transport.aclose()  # idempotent
        assert not transport.is_registered(BOB.did)
        for message in (to(BOB, ALICE), on("feed", ALICE)):
            with pytest.raises(TransportClosed):
                await transport.send(message)
        with pytest.raises(TransportClosed):
            transport.register(CAROL.did, Inbox())
        with pytest.raises(TransportClosed):
            transport.subscribe(BOB.did, "feed")
        transport.unsubscribe(BOB.did, "feed")  # cleanup after close is harmless
        transport.unregister(BOB.did)
        assert len(inbox) == 0

    async def test_aclose_releases_a_send_waiting_for_room(self, transport: Transport) -> None:
        inbox = Inbox(maxsize=1)
        transport.register(BOB.did, inbox)
        await transport.send(to(BOB, ALICE, 1))
        waiting = asyncio.ensure_future(transport.send(to(BOB, ALICE, 2)))
        assert await _not_done_within(waiting, 0.05)
        await transport.aclose()
        with pytest.raises(TransportClosed):
            await asyncio.wait_for(waiting, WAIT)
        assert [m.payload for m in inbox.drain(10)] == [1]  # what was delivered stays readable
