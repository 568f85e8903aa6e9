"""``LocalNetwork``: the in-process ``Transport``.

It sends to one agent by did, or to every subscriber of a topic.

``LocalNetwork`` is an object, not a process-wide singleton: tests and programs make as many
separate networks as they like. Each registered agent has a bounded ``Inbox``; a sender whose
recipient's inbox is full waits (backpressure) instead of growing memory without bound, and a
topic message is put into its subscribers' inboxes one after another, so a full one holds up
the publisher until its reader drains it. ``send`` returns once every inbox it reaches holds
the message. Messages are delivered as the objects they are (no encoding in process);
receivers still verify their signatures and replay-check them, as they would bytes from a
socket. ``aclose()`` closes the inboxes registered on it, which releases any sender waiting
for room; their owners can still drain what was delivered.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from converge.core.message import Message
from converge.core.topic import Topic
from converge.errors import TransportClosed, TransportError, ValidationError

# ``Inbox`` lived here before it had its own module; ``converge.network.local.Inbox`` stays.
from converge.network.inbox import Inbox

__all__ = ["Inbox", "LocalNetwork"]


class LocalNetwork:
    """Delivers messages between agents of one process (a ``Transport``); ``async with`` closes
    it."""

    def __init__(self) -> None:
        self._inboxes: dict[str, Inbox] = {}
        self._subscriptions: dict[str, set[Topic]] = {}
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        """Whether ``aclose()`` was called."""
        return self._closed

    async def aclose(self) -> None:
        """Stop delivering: close and unregister every inbox (which releases senders waiting
        for room, with ``TransportClosed``) and drop every subscription; idempotent."""
        self._closed = True
        inboxes = list(self._inboxes.values())
        self._inboxes.clear()
        self._subscriptions.clear()
        for inbox in inboxes:
            inbox.close()

    def register(self, agent_id: str, inbox: Inbox) -> None:
        """Deliver messages for ``agent_id`` into ``inbox``.

        Raises:
            ValidationError: another inbox is registered for that did.
            TransportClosed: the network is closed.
        """
        self._check_open()
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
        """Deliver messages published on topics matching ``topic`` (``*`` and ``>`` allowed).

        Raises:
            ValidationError: ``topic`` is not a topic name or pattern.
            TransportClosed: the network is closed.
        """
        self._check_open()
        pattern = topic if isinstance(topic, Topic) else Topic(topic)
        self._subscriptions.setdefault(agent_id, set()).add(pattern)

    def unsubscribe(self, agent_id: str, topic: Topic | str) -> None:
        """Stop one subscription."""
        pattern = topic if isinstance(topic, Topic) else Topic(topic)
        self._subscriptions.get(agent_id, set()).discard(pattern)

    def queued(self) -> int:
        """Messages delivered into the inboxes registered here and not yet read."""
        return sum(len(inbox) for inbox in self._inboxes.values())

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
            TransportError: a direct message to an agent not on this network, or whose inbox
                closed while the send waited for room.
            TransportClosed: the network is closed, or closed while the send waited.
        """
        self._check_open()
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
            inbox = self._inboxes.get(agent)
            if inbox is None:  # it left while an earlier subscriber's full inbox held us up
                if self._closed:
                    raise TransportClosed("the network closed while the send waited")
                continue
            try:
                await inbox.put(message)
            except TransportError:
                if self._closed:
                    raise TransportClosed("the network closed while the send waited") from None
                if message.recipient is not None:
                    raise
                continue  # a subscriber that stopped meanwhile misses a broadcast
            delivered += 1
        return delivered

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosed("the network is closed")
