"""Pieces every store backend uses.

Waking waiters on new events, tailing the log, encoding.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import msgspec

from converge.core.codec_errors import ENCODE_ERRORS, encode_error
from converge.protocol.event import Event

__all__ = ["EventWaiters", "decode_event", "encode_event", "tail_events"]

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Event)


def encode_event(ev: Event, index: int = 0, where: str = "events[{}]") -> bytes:
    """MessagePack of ``ev`` (its ``seq`` left out); a value that cannot be encoded is a
    ``ValidationError`` naming ``where.format(index) + ".data"`` (``events[index].data``)."""
    try:
        return _encoder.encode(ev)
    except ENCODE_ERRORS as exc:
        name = where.format(index)
        raise encode_error(exc, name, field=f"{name}.data") from exc


def decode_event(body: bytes, seq: int) -> Event:
    """The event stored as ``body`` at ``seq``."""
    ev = _decoder.decode(body)
    msgspec.structs.force_setattr(ev, "seq", seq)
    return ev


class EventWaiters:
    """Futures waiting for the log to pass a sequence number, woken by ``publish``."""

    __slots__ = ("_waiters", "last")

    def __init__(self) -> None:
        self.last = 0
        self._waiters: list[asyncio.Future[None]] = []

    def publish(self, last_seq: int) -> None:
        """Record that the log reached ``last_seq`` and wake every waiter."""
        if last_seq > self.last:
            self.last = last_seq
        if not self._waiters:
            return
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait(self, timeout: float | None) -> bool:
        """Wait for the next ``publish``; returns False on timeout."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            return False
        finally:
            if not fut.done():
                fut.cancel()
        return True


class _Readable(Protocol):
    async def read(
        self,
        *,
        after_seq: int = 0,
        trace_id: str | None = None,
        kinds: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[Event]: ...

    async def last_seq(self) -> int: ...

    async def wait_for_events(self, after_seq: int, timeout: float | None = None) -> int: ...


async def tail_events(
    store: _Readable,
    *,
    after_seq: int = 0,
    trace_id: str | None = None,
    kinds: Sequence[str] | None = None,
    batch: int = 500,
) -> AsyncIterator[Event]:
    """Yield matching events after ``after_seq``, then new ones as they are committed."""
    cursor = after_seq
    while True:
        # Everything up to `horizon` is covered by the reads below, matching or not, so the wait
        # afterwards does not wake for events of other traces or kinds we have already skipped.
        horizon = await store.last_seq()
        while True:
            events = await store.read(after_seq=cursor, trace_id=trace_id, kinds=kinds, limit=batch)
            for ev in events:
                cursor = ev.seq
                yield ev
            if len(events) < batch:
                break
        cursor = max(cursor, horizon)
        await store.wait_for_events(cursor)
