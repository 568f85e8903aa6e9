"""A clock for the running event loop that the test moves forward.

A timeout under test (``asyncio.timeout``, ``call_later``) then passes when the test says — once
what must time out is known to be waiting — and not when a busy machine gets round to it; what
must finish in time has all the real time it needs. The ``loop_clock`` fixture (``conftest.py``)
puts one on the test's loop.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


class LoopClock:
    """The loop's own time plus what the test has added with ``advance``."""

    def __init__(self, real: Callable[[], float]) -> None:
        self._real = real
        self._added = 0.0

    def time(self) -> float:
        """What the loop reads as its time (it replaces ``loop.time``)."""
        return self._real() + self._added

    def advance(self, seconds: float) -> None:
        """Move the loop's time forward: every deadline it reaches is due at the next turn."""
        self._added += seconds


async def until(check: Callable[[], bool | Awaitable[bool]], within: float = 30.0) -> None:
    """Wait until ``check()`` (or what it returns, awaited) holds, polling; fail after ``within``
    seconds of real time (a hang guard on ``time.monotonic``, not the loop's clock, which the
    test moves)."""
    deadline = time.monotonic() + within
    while not await _holds(check):
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.005)


async def _holds(check: Callable[[], bool | Awaitable[bool]]) -> bool:
    result = check()
    return bool(await result) if inspect.isawaitable(result) else bool(result)
