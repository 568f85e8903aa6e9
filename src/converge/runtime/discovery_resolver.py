"""``DiscoveryResolver``: socket transports routed by agents' descriptors.

A ``Resolver`` (``converge.network.resolver``) that answers from a ``DiscoveryService``: the
endpoints an agent advertised in its descriptor (``AgentDescriptor.endpoints``, signed with the
rest when it registered from outside). It reads the store on every question, so an agent that
registers is reachable at once, and one that unregistered or whose descriptor lapsed (no
heartbeat for ``ttl_s``) is not: a direct message to it is a ``TransportError``.

- ``resolve(did)``: the first of the agent's endpoints with one of ``schemes`` (the schemes the
  transport dials), or None when it is unknown, lapsed, or has none of them.
- ``topic_endpoints(topic)``: the endpoints (of ``schemes``) of live agents that may subscribe
  to the topic: those whose declared topic patterns match it, and those that declare none (they
  may subscribe to anything). Each once, in did order.
"""

from __future__ import annotations

from collections.abc import Iterable

from converge.coordination.discovery import AgentDescriptor, DiscoveryService
from converge.core.endpoint import SCHEMES, Endpoint
from converge.core.topic import Topic
from converge.errors import ValidationError

__all__ = ["DiscoveryResolver"]


class DiscoveryResolver:
    """Where agents are, as their live descriptors in ``discovery`` say.

    Args:
        discovery: the service agents register with (a store shared across hosts).
        schemes: the endpoint schemes the transport using this resolver dials (``("tcp",)``
            for a TCP network); an agent's other endpoints are passed over. Default: all.

    Raises:
        ValidationError: ``schemes`` is empty or names an unknown scheme.
    """

    def __init__(self, discovery: DiscoveryService, *, schemes: Iterable[str] = SCHEMES) -> None:
        wanted = tuple(schemes) if not isinstance(schemes, str) else (schemes,)
        if not wanted or any(s not in SCHEMES for s in wanted):
            raise ValidationError(
                f"schemes are some of {', '.join(SCHEMES)}, not {wanted!r}", field="schemes"
            )
        self.discovery = discovery
        self.schemes = wanted

    async def resolve(self, did: str) -> Endpoint | None:
        """The first endpoint of one of ``schemes`` that ``did``'s live descriptor lists."""
        descriptor = await self.discovery.get(did)
        if descriptor is None:
            return None
        return next(iter(self._endpoints(descriptor)), None)

    async def topic_endpoints(self, topic: str) -> list[Endpoint]:
        """The endpoints of live agents that follow ``topic`` or declare no topics."""
        concrete = Topic(topic)
        found: dict[Endpoint, None] = {}
        for descriptor in await self.discovery.live():
            if descriptor.topics and not any(Topic(p).matches(concrete) for p in descriptor.topics):
                continue
            found.update(dict.fromkeys(self._endpoints(descriptor)))
        return list(found)

    def _endpoints(self, descriptor: AgentDescriptor) -> list[Endpoint]:
        parsed = (Endpoint.parse(url) for url in descriptor.endpoints)
        return [e for e in parsed if e.scheme in self.schemes]
