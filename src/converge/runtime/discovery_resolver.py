"""``DiscoveryResolver``: socket transports routed by agents' descriptors.

A ``Resolver`` (``converge.network.resolver``) that answers from a ``DiscoveryService``: the
endpoints an agent advertised in its descriptor (``AgentDescriptor.endpoints``, signed with the
rest when it registered from outside). By default it reads the store on every question (a
did's answer costs one store read, a topic's reads every descriptor), so an agent that
registers is reachable at once, and one that unregistered or whose descriptor lapsed (no
heartbeat for ``ttl_s``) is not: a direct message to it is a ``TransportError``. With
``max_age_s`` an answer is reused for that long (on the service's clock): cheaper sends, for
news up to ``max_age_s`` late (an agent that left still looks reachable, then its transport
refuses the message).

- ``resolve(did)``: the first of the agent's endpoints with one of ``schemes`` (the schemes the
  transport dials), or None when it is unknown, lapsed, or has none of them.
- ``topic_endpoints(topic)``: the endpoints (of ``schemes``) of live agents that may subscribe
  to the topic: those whose declared topic patterns match it, and those that declare none (they
  may subscribe to anything). Each once, in did order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TypeVar

from converge.coordination.discovery import AgentDescriptor, DiscoveryService
from converge.core.endpoint import SCHEMES, Endpoint
from converge.core.topic import Topic
from converge.errors import ValidationError

__all__ = ["DiscoveryResolver"]

_MAX_CACHED = 4096
"""The most dids (and, apart, topics) whose answers are kept when ``max_age_s`` is set."""
T = TypeVar("T")


class DiscoveryResolver:
    """Where agents are, as their live descriptors in ``discovery`` say.

    Args:
        discovery: the service agents register with (a store shared across hosts).
        schemes: the endpoint schemes the transport using this resolver dials (``("tcp",)``
            for a TCP network); an agent's other endpoints are passed over. Default: all.
        max_age_s: how long an answer is reused (0: never, every question reads the store).

    Raises:
        ValidationError: ``schemes`` is empty or names an unknown scheme, or ``max_age_s`` is
            not a finite number >= 0.
    """

    def __init__(
        self,
        discovery: DiscoveryService,
        *,
        schemes: Iterable[str] = SCHEMES,
        max_age_s: float = 0.0,
    ) -> None:
        wanted = tuple(schemes) if not isinstance(schemes, str) else (schemes,)
        if not wanted or any(s not in SCHEMES for s in wanted):
            raise ValidationError(
                f"schemes are some of {', '.join(SCHEMES)}, not {wanted!r}", field="schemes"
            )
        if (
            isinstance(max_age_s, bool)
            or not isinstance(max_age_s, (int, float))
            or not math.isfinite(max_age_s)
            or max_age_s < 0
        ):
            raise ValidationError(
                f"max_age_s is a finite number >= 0, not {max_age_s!r}", field="max_age_s"
            )
        self.discovery = discovery
        self.schemes = wanted
        self.max_age_s = float(max_age_s)
        self._dids: dict[str, tuple[float, Endpoint | None]] = {}
        self._topics: dict[str, tuple[float, list[Endpoint]]] = {}

    async def resolve(self, did: str) -> Endpoint | None:
        """The first endpoint of one of ``schemes`` that ``did``'s live descriptor lists."""
        now = self.discovery.clock.now()
        cached = self._dids.get(did)
        if cached is not None and now - cached[0] < self.max_age_s:
            return cached[1]
        descriptor = await self.discovery.get(did)
        found = None if descriptor is None else next(iter(self._endpoints(descriptor)), None)
        if self.max_age_s:
            _remember(self._dids, did, (now, found))
        return found

    async def topic_endpoints(self, topic: str) -> list[Endpoint]:
        """The endpoints of live agents that follow ``topic`` or declare no topics."""
        now = self.discovery.clock.now()
        cached = self._topics.get(topic)
        if cached is not None and now - cached[0] < self.max_age_s:
            return list(cached[1])
        found = await self._topic_endpoints(topic)
        if self.max_age_s:
            _remember(self._topics, topic, (now, list(found)))
        return found

    async def _topic_endpoints(self, topic: str) -> list[Endpoint]:
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


def _remember(cache: dict[str, T], key: str, value: T) -> None:
    """Keep ``value`` under ``key``, forgetting everything first once the cache is full."""
    if len(cache) >= _MAX_CACHED and key not in cache:
        cache.clear()  # answers expire within max_age_s anyway: a refill costs little
    cache[key] = value
