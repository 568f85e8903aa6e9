"""LocalNetwork beyond the transport conformance suite: what it checks of a message itself (its
addressing) before delivering it, and how it holds senders back."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from converge.core import Identity, Message
from converge.errors import ValidationError
from converge.network import Inbox, LocalNetwork

ALICE = Identity.generate()


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("not a message", None),
        ({"kind": "x", "recipient": ALICE.did}, None),
        (
            msgspec.structs.replace(Message(kind="x", topic="t"), topic=None, recipient=["a"]),
            "recipient",
        ),
        (msgspec.structs.replace(Message(kind="x", topic="t"), topic={"t": 1}), "topic"),
    ],
)
async def test_a_message_that_cannot_be_addressed_is_a_validation_error(
    message: Any, field: str | None
) -> None:
    """Once, a recipient of the wrong type raised TypeError (an unhashable list) from send."""
    net = LocalNetwork()
    inbox = Inbox()
    net.register(ALICE.did, inbox)
    net.subscribe(ALICE.did, "t")
    with pytest.raises(ValidationError) as info:
        await net.send(message)
    assert info.value.field == field
    assert len(inbox) == 0


async def test_the_rest_of_a_message_is_left_to_its_receiver() -> None:
    """Types other than the addressing, and the signature, are checked where it is received
    (as they would be of bytes from a socket): the network delivers the object as it is."""
    net = LocalNetwork()
    inbox = Inbox()
    net.register(ALICE.did, inbox)
    odd = Message(kind="x", recipient=ALICE.did, created_at="yesterday")  # type: ignore[arg-type]
    assert await net.send(odd) == 1
    assert inbox.drain(10) == [odd]


async def test_a_topic_message_waits_for_each_full_subscriber_in_turn() -> None:
    """LocalNetwork's backpressure: ``send`` returns once every subscriber's inbox holds the
    message, so one slow subscriber holds up its publisher (and the subscribers after it)."""
    bob, carol = Identity.generate(), Identity.generate()
    net = LocalNetwork()
    slow, quick = Inbox(maxsize=1), Inbox(maxsize=1)
    for did, inbox in ((bob.did, slow), (carol.did, quick)):
        net.register(did, inbox)
        net.subscribe(did, "feed")
    assert await net.send(Message(kind="x", topic="feed", payload=1).sign(ALICE)) == 2
    assert net.queued() == 2
    quick.drain(1)
    assert net.queued() == 1
    publishing = asyncio.ensure_future(
        net.send(Message(kind="x", topic="feed", payload=2).sign(ALICE))
    )
    done, _ = await asyncio.wait({publishing}, timeout=0.05)
    assert not done and len(quick) == 0  # waiting on `slow`, before `quick`'s turn
    slow.drain(1)
    assert await asyncio.wait_for(publishing, 10) == 2
    assert [m.payload for m in quick.drain(5)] == [2]


async def test_closing_the_network_closes_its_inboxes_and_async_with_closes_it() -> None:
    inbox = Inbox()
    async with LocalNetwork() as net:
        net.register(ALICE.did, inbox)
        assert not net.closed and not inbox.closed
    assert net.closed and inbox.closed  # its owner still drains what was delivered
