"""What a run looks like from outside.

Its status, its result, its streamed events, and the handle of a submitted run.

A run's ``RunStatus`` moves only through ``_RUN_TRANSITIONS``: RUNNING to WAITING, COMPLETED,
FAILED, CANCELLED or INTERRUPTED; ``resume`` back to RUNNING from any of them but COMPLETED (a
run whose owner died reads as INTERRUPTED). A node's failure is noted and the loop winds down;
the run moves to FAILED once it stops, so a cancellation or the run's timeout that comes before
that is one move from RUNNING, and decides how the run ends. A refused move is
``InvalidTransition`` naming both statuses and the run.
"""

from __future__ import annotations

import asyncio
import enum
from typing import TYPE_CHECKING, Any

import msgspec

from converge.errors import InvalidTransition
from converge.protocol.objects import Usage

if TYPE_CHECKING:
    from converge.orchestration.engine import Engine

__all__ = [
    "RunEvent",
    "RunHandle",
    "RunResult",
    "RunStatus",
    "check_run_transition",
]


class RunStatus(enum.StrEnum):
    """Where a run is."""

    RUNNING = "running"
    """Nodes are running, or will."""
    WAITING = "waiting"
    """Paused for a person's answer (``resume(run_id, answer=...)``)."""
    COMPLETED = "completed"
    """Every node that could run has run."""
    FAILED = "failed"
    """A node failed with ``abort`` (or its policy ran out), or the run timed out."""
    CANCELLED = "cancelled"
    """Stopped on purpose (``Engine.cancel``, ``RunHandle.cancel``, ``converge cancel``); final
    unless resumed on purpose."""
    INTERRUPTED = "interrupted"
    """Stopped without finishing: the task executing it was cancelled otherwise (Ctrl-C, a
    shutdown, a caller's timeout), or its process died. Resumable."""


_R = RunStatus

_RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    # An execution of a run (``execute``, ``resume``…) is RUNNING until it ends one way.
    _R.RUNNING: frozenset({_R.WAITING, _R.COMPLETED, _R.FAILED, _R.CANCELLED, _R.INTERRUPTED}),
    # ``resume`` continues any run that did not complete (a run whose process died reads as
    # INTERRUPTED); a COMPLETED run's result is returned as it is.
    _R.WAITING: frozenset({_R.RUNNING}),
    _R.FAILED: frozenset({_R.RUNNING}),
    _R.CANCELLED: frozenset({_R.RUNNING}),
    _R.INTERRUPTED: frozenset({_R.RUNNING}),
    _R.COMPLETED: frozenset(),
}
"""Every move of a run's status: ``_RUN_TRANSITIONS[a]`` is the set of statuses ``a`` may move
to."""


def check_run_transition(current: RunStatus, target: RunStatus, run_id: str) -> None:
    """Raise ``InvalidTransition`` (naming both statuses and the run) unless ``current ->
    target`` is in ``_RUN_TRANSITIONS``."""
    if target not in _RUN_TRANSITIONS[current]:
        raise InvalidTransition(current, target, subject=f"run {run_id}")


class RunResult(msgspec.Struct, frozen=True):
    """How a run ended (or where it stands)."""

    run_id: str
    """The run (also its trace id)."""
    graph: str
    """The graph's name."""
    status: RunStatus
    """COMPLETED, FAILED, WAITING, CANCELLED, INTERRUPTED (or RUNNING, from ``status``)."""
    output: Any = None
    """The sole sink node's output, or ``{sink id: output}`` of the sinks that ran."""
    outputs: dict[str, Any] = msgspec.field(default_factory=dict)
    """Every node's latest output, by node id."""
    error: str | None = None
    """Why it FAILED."""
    failed_node: str | None = None
    """The node it failed at, if any."""
    questions: dict[str, str] = msgspec.field(default_factory=dict)
    """While WAITING: the open question of each paused node."""
    usage: Usage = Usage()
    """Tokens, tool calls and cost reported by its nodes in this process."""
    duration_ms: float = 0.0
    """Wall time of this execution (or continuation) of the run."""


class RunEvent(msgspec.Struct, frozen=True):
    """What ``stream`` yields: ``node.start``, ``node.chunk``, ``node.progress``, ``node.done``,
    ``node.failed``, ``node.waiting``, … and last ``run.completed`` / ``run.failed`` /
    ``run.waiting`` / ``run.cancelled`` / ``run.interrupted``."""

    kind: str
    """The event kind (as logged; ``node.chunk`` is streamed only, never logged)."""
    run_id: str
    """The run."""
    node: str | None = None
    """The node it is about, if any."""
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    """Its details (as in the log)."""


class RunHandle:
    """A run started by ``submit``."""

    def __init__(self, engine: Engine, run_id: str, graph: str = "") -> None:
        self._engine = engine
        self.run_id = run_id
        self.graph = graph
        """The graph's name."""
        self._task: asyncio.Task[RunResult] | None = None
        self._results: list[RunResult] = []  # the run's result, also when it was cancelled

    def _bind(self, task: asyncio.Task[RunResult]) -> None:
        self._task = task

    async def status(self) -> RunStatus:
        """RUNNING while it runs, then how it ended."""
        assert self._task is not None
        if not self._task.done():
            return RunStatus.RUNNING
        return (await self.wait()).status

    async def wait(self, timeout: float | None = None) -> RunResult:
        """The run's result once it ends (FAILED and CANCELLED included: nothing is raised)."""
        assert self._task is not None
        async with asyncio.timeout(timeout):
            await asyncio.wait([self._task])
        if not self._results:  # stopped before its run began: nothing of it was written
            error = self._task.exception() if not self._task.cancelled() else None
            return RunResult(
                run_id=self.run_id,
                graph=self.graph,
                status=RunStatus.FAILED if error is not None else RunStatus.CANCELLED,
                error=f"{type(error).__name__}: {error}" if error else "cancelled before it began",
            )
        return self._results[-1]

    async def cancel(self) -> RunResult:
        """Stop the run on purpose (its in-flight nodes are cancelled; it ends CANCELLED) and
        return its result."""
        assert self._task is not None
        if not self._engine.cancel(self.run_id):
            self._task.cancel()  # not started yet, or already ending
        return await self.wait()
