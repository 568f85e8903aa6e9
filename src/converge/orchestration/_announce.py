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
    """Calls ``write_soon`` on runs that have written nothing ``after`` seconds after ``add``."""

    def __init__(self, after: float) -> None:
        self.after = after
        self._runs: dict[Announced, tuple[asyncio.AbstractEventLoop, float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, run: Announced) -> None:
        """Watch ``run`` (call on its event loop, as it starts)."""
        loop = asyncio.get_running_loop()
        self._runs[run] = (loop, loop.time())
        if self._timer is None or self._loop is not loop:
            self._schedule(loop)

    def discard(self, run: Announced) -> None:
        """Stop watching ``run`` (it ended)."""
        self._runs.pop(run, None)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._loop = loop
        self._timer = loop.call_later(self.after, self._tick)

    def _tick(self) -> None:
        self._timer = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        for run, (run_loop, since) in list(self._runs.items()):
            if run_loop is not loop:
                if run_loop.is_closed():  # its loop ended without it: nothing will end it
                    del self._runs[run]
            elif run.wrote:
                del self._runs[run]
            elif now - since >= self.after:
                del self._runs[run]
                run.write_soon()
        if any(run_loop is loop for run_loop, _ in self._runs.values()):
            self._schedule(loop)
