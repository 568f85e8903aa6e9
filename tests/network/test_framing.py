"""Frames: what ``converge.network.framing`` encodes, decodes and refuses."""

from __future__ import annotations

import asyncio
import struct

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from converge.core import Identity, Message
from converge.errors import FrameError, FrameTooLarge, MessageTooLarge, TransportError
from converge.network.framing import (
    HEADER_SIZE,
    Deliver,
    Delivered,
    Frame,
    Refused,
    decode_frame,
    deliver_frame,
    encode_frame,
    encode_message,
    read_frame,
    unpack_frame,
)

ALICE, BOB = Identity.generate(), Identity.generate()


def _message(payload: object = None) -> Message:
    return Message(kind="note", payload=payload, recipient=BOB.did).sign(ALICE)


def _stream(data: bytes, *, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


payloads = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@given(payloads, st.integers(0, 2**32), st.data())
async def test_frames_read_back_as_written_however_the_stream_splits_them(
    payload: object, seq: int, data: st.DataObject
) -> None:
    message = _message(payload)
    frames: list[Frame] = [
        Deliver(seq, message),
        Delivered(seq, 3),
        Refused(seq + 1, "no agent"),
    ]
    wire = b"".join(encode_frame(f) for f in frames)
    assert deliver_frame(seq, encode_message(message)) == encode_frame(Deliver(seq, message))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    reader = asyncio.StreamReader()
    start = 0
    for cut in [*cuts, len(wire)]:
        reader.feed_data(wire[start:cut])
        start = cut
    reader.feed_eof()
    got = [await read_frame(reader) for _ in frames]
    assert got == frames
    assert await read_frame(reader) is None  # a clean end between frames
    assert unpack_frame(encode_frame(frames[0])) == frames[0]


async def test_a_stream_that_ends_inside_a_frame_is_a_frame_error() -> None:
    whole = encode_frame(Deliver(1, _message()))
    for cut in (1, HEADER_SIZE - 1, HEADER_SIZE, len(whole) - 1):
        with pytest.raises(FrameError, match="truncated"):
            await read_frame(_stream(whole[:cut]))


async def test_an_announced_size_over_the_limit_is_refused_before_the_body_is_read() -> None:
    # Only the header arrives, and no end of stream: reading the body would hang.
    reader = _stream(struct.pack(">I", 1025), eof=False)
    async with asyncio.timeout(5):
        with pytest.raises(FrameTooLarge) as caught:
            await read_frame(reader, limit=1024)
    assert (caught.value.size, caught.value.limit) == (1025, 1024)
    assert isinstance(caught.value, TransportError)
    with pytest.raises(FrameTooLarge):
        unpack_frame(struct.pack(">I", 1025) + b"x" * 1025, limit=1024)


@pytest.mark.parametrize(
    "body",
    [
        b"\xc1",  # never valid MessagePack
        b"\x93\xa7deliver\x01",  # an array announcing 3 items, holding 2
        msgspec.msgpack.encode(["deliver", 1, {"kind": "note"}]),  # neither recipient nor topic
        msgspec.msgpack.encode(["shout", 1, "hello"]),  # an unknown tag
        msgspec.msgpack.encode(["delivered", "one", 1]),  # a seq that is not an int
        msgspec.msgpack.encode({"seq": 1}),
    ],
)
async def test_bytes_that_are_not_a_frame_are_a_frame_error(body: bytes) -> None:
    with pytest.raises(FrameError):
        decode_frame(body)
    with pytest.raises(FrameError):
        await read_frame(_stream(struct.pack(">I", len(body)) + body))
    with pytest.raises(FrameError):
        unpack_frame(struct.pack(">I", len(body)) + body)


def test_a_whole_message_frame_must_match_its_prefix() -> None:
    whole = encode_frame(Delivered(1, 1))
    with pytest.raises(FrameError, match="header"):
        unpack_frame(whole[:2])
    with pytest.raises(FrameError, match="announcing"):
        unpack_frame(whole[:-1])
    with pytest.raises(FrameError, match="announcing"):
        unpack_frame(whole + b"\x00")


def test_a_message_over_the_limit_is_refused_before_it_is_sent() -> None:
    big = _message("x" * 2000)
    with pytest.raises(MessageTooLarge) as caught:
        encode_message(big, limit=1024)
    assert caught.value.size > 1024 and caught.value.limit == 1024
    with pytest.raises(FrameTooLarge):
        encode_frame(Deliver(1, big), limit=1024)
    assert len(encode_message(big, limit=4096)) < 4096


def test_a_payload_messagepack_cannot_hold_is_a_frame_error() -> None:
    # Built unsigned: a signature would refuse it first.
    message = Message(kind="note", payload=object(), recipient=BOB.did)
    with pytest.raises(FrameError):
        encode_message(message)


@given(st.binary(max_size=200), st.integers(0, 300))
def test_any_bytes_decode_to_frames_or_a_frame_error_and_nothing_else(
    data: bytes, cut: int
) -> None:
    # What a hostile peer can send: each call either returns frames or raises FrameError.
    for call in (
        lambda: decode_frame(data),
        lambda: unpack_frame(data, limit=256),
        lambda: unpack_frame(struct.pack(">I", len(data)) + data, limit=256),
    ):
        try:
            frame = call()
        except FrameError:
            continue
        assert isinstance(frame, Deliver | Delivered | Refused)
