"""``Transport``: what converge needs of a network.

A network moves signed messages between agents.

The runtime, the executor, the bidding and consensus services and the CLI use a network only
through this protocol, so a transport that crosses processes (TCP, WebSocket, NATS) slots in
where ``LocalNetwork`` (the in-process one, ``converge.network.local``) is used today. Every
transport passes one conformance suite (``tests/network/transport_conformance.py``).

What every transport guarantees:

- **Addressing.** A message has a ``recipient`` (one agent's did) or a ``topic``. A topic
  message reaches, once each, every agent with a subscription whose pattern matches the topic
  (NATS subject syntax, ``converge.core.topic``: ``*`` one token, a final ``>`` one or more),
  except its own sender.
- **Order.** Messages one sender sends one after another (each ``send`` awaited before the
  next) reach each of their recipients in that order. Nothing is promised between senders, or
  between sends a sender runs concurrently.
- **Backpressure.** An inbox never holds more than its ``maxsize``. A message for a full inbox
  is held back, never dropped, until its reader drains it: the sender is slowed down, not the
  receiver's memory grown. (``LocalNetwork``: ``send`` waits for room; a topic message waits for
  each full subscriber in turn, so one slow subscriber holds up its publisher.)
- **Reachability.** A direct message to an agent that is not on the transport, or that stops
  (closes its inbox) before the message got in, raises ``TransportError`` from ``send``; a
  topic subscriber that stops meanwhile only misses the message.
- **Receiving is the receiver's job.** A transport checks only what it needs to address a
  message; the receiver verifies its fields, signature and nonce, as it would bytes from a
  socket. A transport delivers a message as it was sent, signature included, so that check
  holds after any hop: one that crosses processes never re-signs, verifies or repairs what it
  carries (verifying there too would double the cost of the most expensive step for no
  protection the receiver does not already have; a transport that must stop floods limits
  rates instead).
- **Lifetime.** A transport is ready once built (or once its own ``connect``-style factory
  returns). ``aclose()`` is idempotent; after it ``send`` and ``register`` raise
  ``TransportClosed``, nothing is delivered any more, every inbox is unregistered, and a send
  that was waiting for room is released with ``TransportClosed``. ``unregister`` and
  ``unsubscribe`` stay harmless after it, so owners can clean up in any order.

``register``, ``subscribe`` and their inverses are plain calls, not coroutines: an owner is on
the transport as soon as ``register`` returns (a runtime's ``start()`` relies on it). A
transport that must tell a broker or peers does so from its own tasks, holding messages that
arrive meanwhile in its inboxes' order.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from converge.core.message import Message
from converge.core.topic import Topic
from converge.network.inbox import Inbox

__all__ = ["Transport"]


@runtime_checkable
class Transport(Protocol):
    """Delivers signed messages to agents' inboxes, by did or by topic (see the module)."""

    def register(self, agent_id: str, inbox: Inbox) -> None:
        """Deliver messages for ``agent_id`` into ``inbox`` from now on.

        Raises:
            ValidationError: another open inbox is registered for that did.
            TransportClosed: the transport is closed.
        """
        ...

    def unregister(self, agent_id: str) -> None:
        """Stop delivering to ``agent_id`` and drop its subscriptions (a no-op if it is not
        registered, or the transport is closed)."""
        ...

    def is_registered(self, agent_id: str) -> bool:
        """Whether messages for ``agent_id`` are delivered here (an open inbox is registered)."""
        ...

    def subscribe(self, agent_id: str, topic: Topic | str) -> None:
        """Deliver to ``agent_id`` the messages published on topics matching ``topic``.

        Raises:
            ValidationError: ``topic`` is not a topic name or pattern.
            TransportClosed: the transport is closed.
        """
        ...

    def unsubscribe(self, agent_id: str, topic: Topic | str) -> None:
        """Stop one subscription (a no-op if there is none)."""
        ...

    async def send(self, message: Message) -> int:
        """Deliver ``message`` to its recipient or its topic's subscribers; returns how many
        inboxes it reached.

        Raises:
            ValidationError: not a ``Message``, or a recipient or topic that is not a str.
            TransportError: a direct message whose recipient is not on the transport, or
                stopped before the message got into its inbox.
            TransportClosed: the transport is closed, or closed while the send waited.
        """
        ...

    async def aclose(self) -> None:
        """Stop delivering and unregister every inbox; idempotent."""
        ...
