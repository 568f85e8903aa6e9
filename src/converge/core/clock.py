"""Injected time.

Everything that is persisted (leases, deadlines, bid windows, message timestamps) reads a
``Clock``, wall-clock seconds since the epoch by default, so a value written before a restart means
the same after it. Tests pass a ``ManualClock`` and move time by hand instead of sleeping.
Durations that are only measured, never stored, use ``time.perf_counter()`` directly.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Protocol, runtime_checkable

from converge.errors import ValidationError

__all__ = ["CLOCK_SKEW_LIMIT_S", "Clock", "ManualClock", "SystemClock", "on_clock", "system_clock"]

CLOCK_SKEW_LIMIT_S = 30 * 86400.0
"""A ``now`` further than this from a component's clock is taken to come from another clock."""


@runtime_checkable
class Clock(Protocol):
    """A source of wall-clock time in seconds since the Unix epoch."""

    def now(self) -> float:
        """Return the current time in seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real wall clock (``time.time()``) and ``asyncio.sleep``."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


system_clock = SystemClock()
"""The shared default clock."""


class ManualClock:
    """A clock that moves only when told to; sleepers wake when time passes their deadline.

    Args:
        start: the initial time in seconds since the epoch.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._now

    def set(self, value: float) -> None:
        """Jump to ``value``; time never moves backwards."""
        if value < self._now:
            raise ValidationError(f"ManualClock cannot move backwards ({value} < {self._now})")
        self._now = float(value)
        self._wake()

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake every sleeper whose deadline has passed."""
        if seconds < 0:
            raise ValidationError(f"ManualClock cannot move backwards (advance by {seconds})")
        self.set(self._now + seconds)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._now + seconds, fut))
        await fut

    @property
    def sleepers(self) -> int:
        """How many coroutines are sleeping on this clock."""
        return sum(1 for _, f in self._sleepers if not f.done())

    def _wake(self) -> None:
        keep: list[tuple[float, asyncio.Future[None]]] = []
        for deadline, fut in self._sleepers:
            if fut.done():
                continue
            if deadline <= self._now:
                fut.set_result(None)
            else:
                keep.append((deadline, fut))
        self._sleepers = keep

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now!r})"


def on_clock(now: float | None, clock: Clock, *, what: str = "times") -> float:
    """``now`` checked against ``clock`` (``clock.now()`` when None).

    Leases, deadlines and expiries are stored in the clock's time (wall-clock seconds by
    default). A caller passing ``time.monotonic()`` instead would silently expire nothing, so a
    value more than ``CLOCK_SKEW_LIMIT_S`` away from the clock is refused.

    Raises:
        ValidationError: ``now`` is not a finite number, or comes from another clock.
    """
    clock_now = clock.now()
    if now is None:
        return clock_now
    if (
        isinstance(now, bool)
        or not isinstance(now, (int, float))
        or not math.isfinite(now)
        or abs(now - clock_now) > CLOCK_SKEW_LIMIT_S
    ):
        raise ValidationError(
            f"now={now!r} is not a time on this clock (it reads {clock_now!r}); it looks like a "
            f"value from another clock (time.monotonic()?). The {what} are in this clock's "
            "time: omit `now` or use the clock.",
            field="now",
        )
    return float(now)
