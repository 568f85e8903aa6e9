"""Frames: how socket transports put messages on a byte stream.

A frame is a 4-byte big-endian length, then that many bytes of MessagePack: one of the tagged
structs below, encoded as an array (``["deliver", seq, message]``). TCP carries frames back to
back on its stream; WebSocket carries one frame per binary message, header included, so both
transports share this module, its size limit and its errors.

The exchange is one-way per connection: the side that dialed sends ``Deliver`` frames, each
numbered (``seq``); the listening side delivers each message into its inboxes and answers with
``Delivered`` (how many inboxes it reached) or ``Refused`` (a direct message whose recipient is
not there, or stopped). A message travels as the ``Message`` struct itself, signature included;
nothing here verifies it — receiving is the receiver's job (``converge.network.transport``).

Anything that is not a frame is a ``FrameError`` (``FrameTooLarge`` for a length over the limit,
raised from the header alone, before any body is read): the connection it came on is dropped and
nothing of that frame is delivered. A frame over the limit is refused before it is sent too.
"""

from __future__ import annotations

import asyncio
import struct

import msgspec

from converge.core.message import Message
from converge.errors import FrameError, FrameTooLarge, MessageTooLarge

__all__ = [
    "DEFAULT_MAX_FRAME",
    "HEADER_SIZE",
    "Deliver",
    "Delivered",
    "Frame",
    "Refused",
    "decode_frame",
    "deliver_frame",
    "encode_frame",
    "encode_message",
    "read_frame",
    "unpack_frame",
]

DEFAULT_MAX_FRAME = 1 << 20
"""The default limit on a frame's body: 1 MiB."""

_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size
"""Bytes of the length prefix."""


class Deliver(msgspec.Struct, frozen=True, tag="deliver", array_like=True):
    """A message for the listening side to deliver."""

    seq: int
    """Numbers the frames of one connection, so answers can name what they answer."""
    message: Message
    """The message, as its sender signed it."""


class Delivered(msgspec.Struct, frozen=True, tag="delivered", array_like=True):
    """The listening side put a message into its inboxes."""

    seq: int
    """The ``Deliver`` frame this answers."""
    count: int
    """How many inboxes it reached (0 for a topic without subscribers there)."""


class Refused(msgspec.Struct, frozen=True, tag="refused", array_like=True):
    """The listening side could not deliver a direct message."""

    seq: int
    """The ``Deliver`` frame this answers."""
    reason: str
    """Why, for the sender's ``TransportError``."""


Frame = Deliver | Delivered | Refused
"""Any frame; decoded by its tag."""

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Frame)


def encode_frame(frame: Frame, limit: int = DEFAULT_MAX_FRAME) -> bytes:
    """The frame's bytes, length prefix first.

    Raises:
        FrameTooLarge: its body is over ``limit`` bytes (nothing is sent).
        FrameError: it cannot be encoded (a payload MessagePack cannot hold).
    """
    try:
        body = _encoder.encode(frame)
    except (TypeError, ValueError, OverflowError) as exc:
        raise FrameError(f"cannot encode a {type(frame).__name__} frame: {exc}") from exc
    if len(body) > limit:
        raise FrameTooLarge(len(body), limit)
    return _HEADER.pack(len(body)) + body


_DELIVER_OVERHEAD = 18
"""The most a ``Deliver`` frame's body adds to its message: an array header, the tag, a seq."""


def encode_message(message: Message, limit: int = DEFAULT_MAX_FRAME) -> msgspec.Raw:
    """A message encoded once, for ``deliver_frame`` to send to any number of peers.

    Raises:
        MessageTooLarge: its frame would be over ``limit`` bytes (nothing is sent), as every
            transport refuses a message over its limit.
        FrameError: it cannot be encoded (a payload MessagePack cannot hold).
    """
    try:
        raw = _encoder.encode(message)
    except (TypeError, ValueError, OverflowError) as exc:
        raise FrameError(f"cannot encode message {message.id}: {exc}") from exc
    if len(raw) + _DELIVER_OVERHEAD > limit:
        raise MessageTooLarge(len(raw) + _DELIVER_OVERHEAD, limit, "a frame (max_frame)")
    return msgspec.Raw(raw)


def deliver_frame(seq: int, message: msgspec.Raw) -> bytes:
    """The bytes of ``Deliver(seq, message)`` for a message ``encode_message`` encoded."""
    body = _encoder.encode(("deliver", seq, message))
    return _HEADER.pack(len(body)) + body


def decode_frame(body: bytes, *, peer: str | None = None) -> Frame:
    """The frame a body (the bytes after the length prefix) holds.

    Raises:
        FrameError: the bytes are not a frame.
    """
    try:
        return _decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        where = f" from {peer}" if peer else ""
        raise FrameError(f"bytes{where} are not a frame: {exc}", peer=peer) from exc
    except ValueError as exc:  # Message.__post_init__: neither or both of recipient and topic
        where = f" from {peer}" if peer else ""
        raise FrameError(f"a frame{where} holds a malformed message: {exc}", peer=peer) from exc


def unpack_frame(data: bytes, limit: int = DEFAULT_MAX_FRAME, *, peer: str | None = None) -> Frame:
    """The frame ``data`` holds whole, prefix included (one WebSocket message).

    Raises:
        FrameTooLarge: the prefix announces a body over ``limit``.
        FrameError: shorter or longer than its prefix says, or not a frame.
    """
    if len(data) < HEADER_SIZE:
        raise FrameError(f"a truncated frame header ({len(data)} bytes)", peer=peer)
    (size,) = _HEADER.unpack_from(data)
    if size > limit:
        raise FrameTooLarge(size, limit, peer=peer)
    if len(data) - HEADER_SIZE != size:
        raise FrameError(
            f"a frame announcing {size} bytes carries {len(data) - HEADER_SIZE}", peer=peer
        )
    return decode_frame(data[HEADER_SIZE:], peer=peer)


async def read_frame(
    reader: asyncio.StreamReader, limit: int = DEFAULT_MAX_FRAME, *, peer: str | None = None
) -> Frame | None:
    """The next frame of a stream, or None if it ended cleanly between frames.

    Raises:
        FrameTooLarge: the prefix announces a body over ``limit`` (the body is not read).
        FrameError: the stream ended inside a frame, or the bytes are not a frame.
    """
    try:
        header = await reader.readexactly(HEADER_SIZE)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise FrameError(
            f"a truncated frame header ({len(exc.partial)} bytes)", peer=peer
        ) from None
    (size,) = _HEADER.unpack(header)
    if size > limit:
        raise FrameTooLarge(size, limit, peer=peer)
    try:
        body = await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise FrameError(
            f"a truncated frame: {len(exc.partial)} of {size} bytes", peer=peer
        ) from None
    return decode_frame(body, peer=peer)
