"""``Resolver``: where socket transports find agents and topic subscribers.

A socket transport (TCP, WebSocket) routes a direct message by asking its resolver for the
recipient's endpoint, and a topic message by asking which endpoints may hold subscribers of
the topic. This is what those transports need of discovery; ``StaticResolver``, a mapping kept
in memory, is one implementation, and ``converge.runtime.discovery_resolver.DiscoveryResolver``
(agents' descriptors carrying their endpoints, across hosts sharing a store) is another.

How subscriptions propagate: they do not travel. A subscription stays on the transport where
its agent subscribed; a publisher sends a topic message to every endpoint the resolver names
for that topic, and each receiving transport delivers it to its own matching subscribers. So a
``subscribe`` takes effect for every publisher the moment it returns (no announcement to race),
at the cost of a message to endpoints where nobody matches; a resolver that knows agents' topics
(from their descriptors) narrows the list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

from converge.core.endpoint import Endpoint
from converge.errors import ValidationError

__all__ = ["Resolver", "StaticResolver"]


@runtime_checkable
class Resolver(Protocol):
    """Answers where an agent is, and where a topic's subscribers may be."""

    async def resolve(self, did: str) -> Endpoint | None:
        """The endpoint of the transport ``did`` is on, or None if unknown."""
        ...

    async def topic_endpoints(self, topic: str) -> list[Endpoint]:
        """The endpoints that may hold subscribers of ``topic`` (each once)."""
        ...


class StaticResolver:
    """A did -> endpoint mapping in memory, plus endpoints that only subscribe.

    Topic messages go to every endpoint it knows: those of its agents and ``peers``.

    Args:
        agents: did -> endpoint (an ``Endpoint`` or its URL).
        peers: more endpoints to send topic messages to (transports whose agents are not
            listed, for example ones that only subscribe).

    Raises:
        ValidationError: an endpoint that does not parse, or a did that is not a str.
    """

    def __init__(
        self,
        agents: Mapping[str, Endpoint | str] | None = None,
        peers: Iterable[Endpoint | str] = (),
    ) -> None:
        self._agents: dict[str, Endpoint] = {}
        self._peers: dict[Endpoint, None] = {}
        for did, endpoint in (agents or {}).items():
            self.add(did, endpoint)
        for peer in peers:
            self.add_peer(peer)

    def add(self, did: str, endpoint: Endpoint | str) -> None:
        """Route ``did`` to ``endpoint`` (replacing what it had)."""
        if not isinstance(did, str) or not did:
            raise ValidationError(f"a did is a non-empty str, not {did!r}", field="did")
        self._agents[did] = Endpoint.parse(endpoint)

    def remove(self, did: str) -> None:
        """Forget ``did`` (a no-op if unknown)."""
        self._agents.pop(did, None)

    def add_peer(self, endpoint: Endpoint | str) -> None:
        """Send topic messages to ``endpoint`` too."""
        self._peers[Endpoint.parse(endpoint)] = None

    async def resolve(self, did: str) -> Endpoint | None:
        """The endpoint ``did`` was added with, or None."""
        return self._agents.get(did)

    async def topic_endpoints(self, topic: str) -> list[Endpoint]:
        """Every endpoint known (agents' and peers'), each once, in the order first added."""
        return list(dict.fromkeys([*self._agents.values(), *self._peers]))
