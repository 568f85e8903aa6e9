"""Making a new run visible in the store while its first node is still running.

A new run's ``run.started`` is buffered and written with its first completion: one commit the
fewer for every run. A run whose first node is slow would then be missing from the store (from
``converge runs`` in another process) until that node ends; the announcer writes what such a
run has buffered once it has written nothing for ``after`` seconds. One timer serves every run
of an engine, so a quick run costs a dict entry, not a timer.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

__all__ = ["Announcer"]


class Announced(Protocol):
    """What the announcer needs of a run."""

    wrote: bool
    """Whether the run has written anything to the store (its start goes first)."""

    def write_soon(self) -> None:
        """Start writing what the run has buffered, without waiting for it."""


class Announcer:
    """Calls ``write_soon`` on runs that have written nothing ``after`` seconds after ``add``.

    One timer per event loop with runs to watch (an engine may serve several loops).
    """

    def __init__(self, after: float) -> None:
        self.after = after
        self._runs: dict[Announced, tuple[asyncio.AbstractEventLoop, float]] = {}
        self._timers: dict[asyncio.AbstractEventLoop, asyncio.TimerHandle] = {}

    def add(self, run: Announced) -> None:
        """Watch ``run`` (call on its event loop, as it starts)."""
        loop = asyncio.get_running_loop()
        self._runs[run] = (loop, loop.time())
        if loop not in self._timers:
            self._timers[loop] = loop.call_later(self.after, self._tick, loop)

    def discard(self, run: Announced) -> None:
        """Stop watching ``run`` (it ended)."""
        self._runs.pop(run, None)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timers.pop(loop, None)
        now = loop.time()
        mine = False
        for run, (run_loop, since) in list(self._runs.items()):
            if run_loop is not loop:
                if run_loop.is_closed():  # its loop ended without it: nothing will end it
                    self._runs.pop(run, None)
            elif run.wrote:
                self._runs.pop(run, None)
            elif now - since >= self.after:
                self._runs.pop(run, None)
                run.write_soon()
            else:
                mine = True
        if mine:
            self._timers[loop] = loop.call_later(self.after, self._tick, loop)
        for closed in [other for other in self._timers if other.is_closed()]:
            self._timers.pop(closed, None)
