"""``SocketLimits``: what peers may make a socket network's listener do.

Signatures do not stop a flood: anyone can make an identity and sign messages as fast as they
like, and a listener would spend its time verifying and queueing them. So a listener bounds the
connections it holds (in all, and per remote host) and the rate at which it delivers each
host's messages. Over a connection limit, a new connection is closed at once (the dialer's
sends fail with ``TransportError``). Over the rate, the listener does not drop: it waits before
reading that host's next frame, so TCP flow control slows the flooder down to the rate, and
the transport's promise (nothing lost) holds.

``HostRate`` is the token bucket behind the rate: ``burst`` messages at once, refilled at
``messages_per_second``, shared by every connection from one host. It sleeps on an injected
clock, so tests move time instead of waiting.
"""

from __future__ import annotations

import math

import msgspec

from converge.core.clock import Clock
from converge.errors import ValidationError

__all__ = ["HostRate", "SocketLimits"]


class SocketLimits(msgspec.Struct, frozen=True):
    """Bounds on what peers may make a listener do (see the module)."""

    max_connections: int = 1024
    """Incoming connections held at once; one more is closed as soon as it is accepted."""
    max_connections_per_host: int = 64
    """Incoming connections held at once from one remote address."""
    messages_per_second: float | None = 10_000.0
    """Messages delivered per second from one remote address (None: no limit)."""
    burst: int = 1_000
    """Messages a host may send at once, above the rate, after a quiet spell."""

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_connections_per_host", "burst"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(f"{name} is an int >= 1, not {value!r}", field=name)
        rate = self.messages_per_second
        if rate is not None and (
            isinstance(rate, bool)
            or not isinstance(rate, int | float)
            or not math.isfinite(rate)
            or rate <= 0
        ):
            raise ValidationError(
                f"messages_per_second is a positive number or None, not {rate!r}",
                field="messages_per_second",
            )


class HostRate:
    """A token bucket for one remote host's messages.

    Args:
        rate: tokens added per second (None: no limit, ``take`` never waits).
        burst: the most tokens held (and the tokens at the start).
        clock: where time comes from, and what sleeps.
    """

    def __init__(self, rate: float | None, burst: int, clock: Clock) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock.now()
        self.connections = 0
        """Connections from this host currently held (the bucket is dropped at 0)."""

    def _refill(self) -> None:
        now = self._clock.now()
        if now > self._last and self._rate is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = max(self._last, now)

    async def take(self) -> bool:
        """Take one token, sleeping until there is one; returns whether it had to wait."""
        if self._rate is None:
            return False
        rate = self._rate
        waited = False
        self._refill()
        while self._tokens < 1.0:
            waited = True
            await self._clock.sleep((1.0 - self._tokens) / rate)
            self._refill()
        self._tokens -= 1.0
        return waited
