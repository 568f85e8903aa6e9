"""LocalNetwork: what it checks of a message itself (its addressing), before delivering it."""

from __future__ import annotations

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
