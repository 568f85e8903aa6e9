"""``Inbox``: where a transport delivers one agent's messages.

Its owner reads them there.

Every transport delivers into the same bounded queue, so a runtime reads its messages the same
way whichever transport brought them. The owner (a runtime, a bidding protocol's ``serving()``)
makes the inbox, registers it on a transport, reads it in batches and closes it when it stops.
A full inbox makes ``put`` wait: that wait is the transport's backpressure.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from converge.core.message import Message
from converge.errors import TransportError, ValidationError

__all__ = ["Inbox"]


class Inbox:
    """A bounded queue of messages with batch reads and a wake-up for the reader.

    Args:
        maxsize: the most messages held; ``put`` waits while it is full.
        notify: called after each message is added (a runtime's wake-up).
    """

    def __init__(self, maxsize: int = 1000, notify: Callable[[], None] | None = None) -> None:
        if maxsize < 1:
            raise ValidationError(f"inbox size must be >= 1, not {maxsize}", field="maxsize")
        self.maxsize = maxsize
        self._items: deque[Message] = deque()
        self._not_full = asyncio.Event()
        self._not_full.set()
        self._not_empty = asyncio.Event()
        self._notify = notify
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        """Whether the owner stopped reading (puts are then refused)."""
        return self._closed

    async def put(self, message: Message) -> None:
        """Add ``message``, waiting while the inbox is full.

        Raises:
            TransportError: the inbox is closed (its agent stopped).
        """
        while len(self._items) >= self.maxsize:
            if self._closed:
                break
            self._not_full.clear()
            await self._not_full.wait()
        if self._closed:
            raise TransportError("the recipient's inbox is closed")
        self._items.append(message)
        self._not_empty.set()
        if self._notify is not None:
            self._notify()

    def drain(self, limit: int) -> list[Message]:
        """Take up to ``limit`` messages, oldest first, without waiting."""
        out: list[Message] = []
        items = self._items
        while items and len(out) < limit:
            out.append(items.popleft())
        if not items:
            self._not_empty.clear()
        self._not_full.set()
        return out

    async def wait(self) -> None:
        """Return once the inbox holds a message (at once if it does)."""
        await self._not_empty.wait()

    def close(self) -> None:
        """Refuse further messages and release waiting senders."""
        self._closed = True
        self._not_full.set()
        self._not_empty.set()
