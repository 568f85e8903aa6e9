"""In-process delivery of signed messages: to one agent by did, or to every subscriber of a topic.

``LocalNetwork`` is an object, not a process-wide singleton: tests and programs make as many
separate networks as they like. Each registered agent has a bounded ``Inbox``; a sender whose
recipient's inbox is full waits (backpressure) instead of growing memory without bound.
Messages are delivered as the objects they are (no encoding in process); receivers still verify
their signatures and replay-check them, as they would bytes from a socket.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from converge.core.message import Message
from converge.core.topic import Topic
from converge.errors import TransportError, ValidationError

__all__ = ["Inbox", "LocalNetwork"]


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


class LocalNetwork:
    """Delivers messages between agents of one process."""

    def __init__(self) -> None:
        self._inboxes: dict[str, Inbox] = {}
        self._subscriptions: dict[str, set[Topic]] = {}

    def register(self, agent_id: str, inbox: Inbox) -> None:
        """Deliver messages for ``agent_id`` into ``inbox``.

        Raises:
            ValidationError: another inbox is registered for that did.
        """
        current = self._inboxes.get(agent_id)
        if current is not None and current is not inbox and not current.closed:
            raise ValidationError(f"{agent_id} is already registered on this network")
        self._inboxes[agent_id] = inbox

    def is_registered(self, agent_id: str) -> bool:
        """Whether messages for ``agent_id`` are delivered (an open inbox is registered)."""
        inbox = self._inboxes.get(agent_id)
        return inbox is not None and not inbox.closed

    def unregister(self, agent_id: str) -> None:
        """Stop delivering to ``agent_id`` and drop its subscriptions."""
        self._inboxes.pop(agent_id, None)
        self._subscriptions.pop(agent_id, None)

    def subscribe(self, agent_id: str, topic: Topic | str) -> None:
        """Deliver messages published on topics matching ``topic`` (``*`` and ``>`` allowed)."""
        pattern = topic if isinstance(topic, Topic) else Topic(topic)
        self._subscriptions.setdefault(agent_id, set()).add(pattern)

    def unsubscribe(self, agent_id: str, topic: Topic | str) -> None:
        """Stop one subscription."""
        pattern = topic if isinstance(topic, Topic) else Topic(topic)
        self._subscriptions.get(agent_id, set()).discard(pattern)

    def recipients(self, message: Message) -> list[str]:
        """Who ``message`` would be delivered to (a topic message skips its sender)."""
        if message.recipient is not None:
            return [message.recipient] if message.recipient in self._inboxes else []
        assert message.topic is not None
        return [
            agent
            for agent, patterns in self._subscriptions.items()
            if agent != message.sender
            and agent in self._inboxes
            and any(p.matches(message.topic) for p in patterns)
        ]

    async def send(self, message: Message) -> int:
        """Deliver ``message``; returns how many inboxes received it.

        Only its addressing is checked here; receivers check the rest (types, signature,
        replay), as they would of bytes from a socket.

        Raises:
            ValidationError: not a ``Message``, or a recipient or topic that is not a str.
            TransportError: a direct message to an agent not on this network.
        """
        if not isinstance(message, Message):
            raise ValidationError(f"expected a Message, not {type(message).__name__}")
        for name in ("recipient", "topic"):
            value = getattr(message, name)
            if value is not None and not isinstance(value, str):
                raise ValidationError(
                    f"a message's `{name}` is a str, not {type(value).__name__}", field=name
                )
        targets = self.recipients(message)
        if message.recipient is not None and not targets:
            raise TransportError(f"no agent {message.recipient} on this network")
        delivered = 0
        for agent in targets:
            try:
                await self._inboxes[agent].put(message)
            except TransportError:
                if message.recipient is not None:
                    raise
                continue  # a subscriber that stopped meanwhile misses a broadcast
            delivered += 1
        return delivered
