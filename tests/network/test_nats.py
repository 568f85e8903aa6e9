"""``NatsNetwork`` beyond the conformance suite: networks in two connections, what a broker
adds (interest told between networks, no responders, the payload limit), token auth and a
server restart on a server of the test's own."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from converge.core import Identity, Message, Topic
from converge.errors import MessageTooLarge, MissingExtra, TransportError, ValidationError
from converge.network import Inbox
from converge.network.nats import NatsNetwork, agent_subject, topic_subject
from tests.network.nats_servers import NatsServer, nats_url, unique_prefix
from tests.network.transport_conformance import WAIT, received

ALICE, BOB, CAROL = (Identity.generate() for _ in range(3))


def to(recipient: Identity, sender: Identity, payload: object = None) -> Message:
    return Message(kind="note", payload=payload, recipient=recipient.did).sign(sender)


def on(topic: str, sender: Identity, payload: object = None) -> Message:
    return Message(kind="note", payload=payload, topic=topic).sign(sender)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[NatsNetwork, NatsNetwork]]:
    """Two networks on the shared server under one fresh prefix (two processes, in effect)."""
    url, prefix = nats_url(), unique_prefix()
    a = await NatsNetwork.connect(url, prefix=prefix, ack_timeout=WAIT)
    try:
        b = await NatsNetwork.connect(url, prefix=prefix, ack_timeout=WAIT)
        try:
            yield a, b
        finally:
            await b.aclose()
    finally:
        await a.aclose()


async def _until(condition: object, what: str) -> None:
    """Wait, a bounded number of times, until ``condition()`` holds."""
    assert callable(condition)
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never: {what}")


def test_subjects_are_one_safe_token_per_did_and_the_topic_under_the_prefix() -> None:
    subject = agent_subject("converge", ALICE.did)
    prefix, kind, token = subject.split(".")
    assert (prefix, kind, len(token)) == ("converge", "agent", 32)
    assert token.isalnum() and agent_subject("converge", BOB.did) != subject
    assert agent_subject("converge", "did:x:a.b *>").count(".") == 2  # any did: one token
    assert topic_subject("p.q", Topic("market.*.gpu")) == "p.q.topic.market.*.gpu"


async def test_a_direct_message_crosses_connections_and_is_in_the_inbox_when_send_returns(
    pair: tuple[NatsNetwork, NatsNetwork],
) -> None:
    a, b = pair
    inbox = Inbox()
    b.register(BOB.did, inbox)
    message = to(BOB, ALICE, {"text": "é"})
    # b subscribes from its own task; until the server has it, nobody answers for BOB.
    for _ in range(200):
        try:
            assert await a.send(message) == 1
            break
        except TransportError:
            await asyncio.sleep(0.02)
    assert inbox.drain(10) == [message]
    b.unregister(BOB.did)
    with pytest.raises(TransportError):  # b answers "err", or, unsubscribed, nobody does
        await a.send(to(BOB, ALICE))
    assert len(inbox) == 0


async def test_a_publisher_waits_for_a_full_subscriber_in_another_network(
    pair: tuple[NatsNetwork, NatsNetwork],
) -> None:
    a, b = pair
    slow = Inbox(maxsize=1)
    b.register(CAROL.did, slow)
    b.subscribe(CAROL.did, "feed.*")
    await _until(lambda: Topic("feed.*") in a.interest.get(b.id, ()), "a knows b's interest")
    assert await a.send(on("feed.x", ALICE, 1)) == 1  # b answered: it is in the inbox
    assert len(slow) == 1
    held = asyncio.ensure_future(a.send(on("feed.x", ALICE, 2)))
    done, _ = await asyncio.wait({held}, timeout=0.2)
    assert not done  # held back, not dropped
    assert b.held == 1  # in CAROL's queue at b, waiting for room
    assert [m.payload for m in slow.drain(1)] == [1]
    assert await asyncio.wait_for(held, WAIT) == 1
    assert [m.payload for m in await received(slow, 1)] == [2]


async def test_a_network_that_closes_is_no_longer_waited_for(
    pair: tuple[NatsNetwork, NatsNetwork],
) -> None:
    a, b = pair
    b.register(CAROL.did, Inbox(maxsize=1))
    b.subscribe(CAROL.did, "feed")
    await _until(lambda: Topic("feed") in a.interest.get(b.id, ()), "a knows b's interest")
    assert await a.send(on("feed", ALICE, 1)) == 1  # CAROL's inbox is full now
    held = asyncio.ensure_future(a.send(on("feed", ALICE, 2)))
    done, _ = await asyncio.wait({held}, timeout=0.1)
    assert not done
    await b.aclose()
    assert await asyncio.wait_for(held, WAIT) == 0  # a subscriber that left only misses it
    assert b.id not in a.interest


async def test_a_message_over_the_servers_max_payload_is_refused_and_not_sent() -> None:
    async with await NatsNetwork.connect(nats_url(), prefix=unique_prefix()) as network:
        inbox = Inbox()
        network.register(BOB.did, inbox)
        big = to(BOB, ALICE, b"x" * network.max_payload)
        with pytest.raises(MessageTooLarge) as caught:
            await network.send(big)
        assert caught.value.limit == network.max_payload
        assert caught.value.size > caught.value.limit
        assert isinstance(caught.value, TransportError)
        await network.send(to(BOB, ALICE, "small"))
        assert [m.payload for m in inbox.drain(10)] == ["small"]


async def test_bytes_that_are_not_a_message_are_dropped_counted_and_refused() -> None:
    import nats

    prefix = unique_prefix()
    async with await NatsNetwork.connect(nats_url(), prefix=prefix) as network:
        inbox = Inbox()
        network.register(BOB.did, inbox)
        await network.send(to(BOB, ALICE, 1))  # BOB's subject is at the server now
        raw = await nats.connect(nats_url())
        try:
            answer = await raw.request(agent_subject(prefix, BOB.did), b"\xc1junk", timeout=WAIT)
            assert b"err" in answer.data
            # a message for someone else, sent to BOB's subject: not delivered to BOB
            forwarded = await raw.request(
                agent_subject(prefix, BOB.did), _msgpack(to(CAROL, ALICE)), timeout=WAIT
            )
            assert b"err" in forwarded.data
        finally:
            await raw.close()
        assert network.stats["dropped"] == 2
        assert [m.payload for m in inbox.drain(10)] == [1]


def _msgpack(message: Message) -> bytes:
    from converge.protocol.codec import to_msgpack

    return to_msgpack(message)


async def test_connect_refuses_a_bad_prefix_and_reports_an_unreachable_server() -> None:
    with pytest.raises(ValidationError):
        await NatsNetwork.connect(nats_url(), prefix="a.*")
    with pytest.raises(ValidationError):
        await NatsNetwork.connect(nats_url(), prefix="a..b")
    with pytest.raises(ValidationError):
        await NatsNetwork.connect(nats_url(), ack_timeout=0)
    server = NatsServer(Path("/nonexistent"))  # never started: its port refuses
    with pytest.raises(TransportError, match="could not connect"):
        await NatsNetwork.connect(server.url, connect_timeout=1, reconnect_time_wait=0.1)


async def test_token_auth_is_passed_through(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "js", token="s3cret")
    await server.start()
    try:
        with pytest.raises(TransportError):
            await NatsNetwork.connect(server.url, token="wrong", max_reconnect_attempts=0)
        async with await NatsNetwork.connect(server.url, token="s3cret") as network:
            inbox = Inbox()
            network.register(BOB.did, inbox)
            assert await network.send(to(BOB, ALICE, "in")) == 1
    finally:
        await server.stop()


async def test_after_the_server_restarts_the_network_reconnects_and_delivers(
    tmp_path: Path,
) -> None:
    server = NatsServer(tmp_path / "js")
    await server.start()
    try:
        options = {"prefix": unique_prefix(), "ack_timeout": 2.0, "reconnect_time_wait": 0.1}
        async with (
            await NatsNetwork.connect(server.url, **options) as a,  # type: ignore[arg-type]
            await NatsNetwork.connect(server.url, **options) as b,  # type: ignore[arg-type]
        ):
            inbox = Inbox()
            b.register(BOB.did, inbox)
            first = to(BOB, ALICE, "before")
            for _ in range(200):
                try:
                    await a.send(first)
                    break
                except TransportError:
                    await asyncio.sleep(0.02)
            assert inbox.drain(10) == [first]  # acknowledged: it is there, whatever follows
            await server.stop()
            await server.start()
            delivered = None
            for i in range(100):
                try:
                    await a.send(to(BOB, ALICE, i))
                except TransportError:
                    await asyncio.sleep(0.05)
                    continue
                delivered = i
                break
            assert delivered is not None, "never delivered after the restart"
            got = inbox.drain(100)
            assert got[-1].payload == delivered
            assert a.stats["reconnects"] >= 1 and b.stats["reconnects"] >= 1
    finally:
        await server.stop()


def test_without_nats_py_the_module_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [m for m in sys.modules if m == "nats" or m.startswith("nats.")]:
        monkeypatch.setitem(sys.modules, name, None)  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "nats", None)  # type: ignore[arg-type]
    monkeypatch.delitem(sys.modules, "converge.network.nats")
    with pytest.raises(MissingExtra) as caught:
        __import__("converge.network.nats")
    assert caught.value.extra == "nats"
    assert "converge-agents[nats]" in str(caught.value)


async def test_a_message_held_longer_than_ack_timeout_is_still_delivered() -> None:
    url, prefix = nats_url(), unique_prefix()
    async with (
        await NatsNetwork.connect(url, prefix=prefix, ack_timeout=0.3) as a,
        await NatsNetwork.connect(url, prefix=prefix, ack_timeout=0.3) as b,
    ):
        inbox = Inbox(maxsize=1)
        b.register(BOB.did, inbox)
        for _ in range(200):
            try:
                await a.send(to(BOB, ALICE, 1))  # now full
                break
            except TransportError:
                await asyncio.sleep(0.02)
        held = asyncio.ensure_future(a.send(to(BOB, ALICE, 2)))
        done, _ = await asyncio.wait({held}, timeout=1.0)  # over three ack_timeouts
        assert not done  # "held" answers keep the sender waiting
        assert [m.payload for m in inbox.drain(1)] == [1]
        assert await asyncio.wait_for(held, WAIT) == 1
        assert [m.payload for m in inbox.drain(1)] == [2]


async def test_a_direct_send_nobody_answers_fails_after_ack_timeout() -> None:
    import nats

    prefix = unique_prefix()
    raw = await nats.connect(nats_url())
    try:
        await raw.subscribe(agent_subject(prefix, BOB.did))  # listens, never answers
        await raw.flush()
        async with await NatsNetwork.connect(nats_url(), prefix=prefix, ack_timeout=0.3) as a:
            with pytest.raises(TransportError, match="no answer"):
                await a.send(to(BOB, ALICE))
    finally:
        await raw.close()


async def test_tls_is_passed_through(tmp_path: Path) -> None:
    import ssl

    from tests.network.nats_servers import self_signed

    cert, key = self_signed(tmp_path)
    server = NatsServer(tmp_path / "js", tls=(cert, key))
    await server.start()
    try:
        with pytest.raises(TransportError):  # the server requires TLS
            await NatsNetwork.connect(server.url, connect_timeout=1, reconnect_time_wait=0.1)
        context = ssl.create_default_context(cafile=str(cert))
        url = server.url.replace("nats://", "tls://")
        async with await NatsNetwork.connect(url, tls=context, tls_hostname="127.0.0.1") as net:
            inbox = Inbox()
            net.register(BOB.did, inbox)
            assert await net.send(to(BOB, ALICE, "over tls")) == 1
            assert [m.payload for m in inbox.drain(1)] == ["over tls"]
    finally:
        await server.stop()


async def test_a_durable_subscriber_that_comes_back_gets_what_it_missed() -> None:
    import nats

    url, prefix = nats_url(), unique_prefix()
    publisher = await NatsNetwork.connect(url, prefix=prefix, ack_timeout=WAIT)
    try:
        first = await NatsNetwork.connect(url, prefix=prefix, ack_timeout=WAIT)
        inbox = Inbox()
        first.register(CAROL.did, inbox)
        await first.subscribe_durable(CAROL.did, "news.>", name="carol-news")
        await publisher.send(on("news.a", ALICE, "a"))
        assert [m.payload for m in await received(inbox, 1)] == ["a"]
        await first.aclose()  # CAROL's process stops
        for payload in ("b", "c"):
            await publisher.send(on(f"news.{payload}", ALICE, payload))
        async with await NatsNetwork.connect(url, prefix=prefix, ack_timeout=WAIT) as second:
            again = Inbox()
            second.register(CAROL.did, again)
            await second.subscribe_durable(CAROL.did, "news.>", name="carol-news")
            assert [m.payload for m in await received(again, 2)] == ["b", "c"]
            await publisher.send(on("news.d", ALICE, "d"))
            assert [m.payload for m in await received(again, 1)] == ["d"]
        with pytest.raises(ValidationError):
            await publisher.subscribe_durable(CAROL.did, "news.>", name="carol-news")
        with pytest.raises(ValidationError):
            await publisher.subscribe_durable(ALICE.did, "news.>", name="two.tokens")
    finally:
        stream = publisher.stream
        await publisher.aclose()
        raw = await nats.connect(url)
        try:
            await raw.jetstream().delete_stream(stream)
        finally:
            await raw.close()


def test_without_a_server_nats_tests_skip_or_fail_when_services_are_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CONVERGE_TEST_NATS_URL", raising=False)
    monkeypatch.delenv("CONVERGE_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="CONVERGE_TEST_NATS_URL"):
        nats_url()
    monkeypatch.setenv("CONVERGE_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="CONVERGE_REQUIRE_SERVICES"):
        nats_url()
