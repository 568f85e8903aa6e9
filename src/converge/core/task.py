"""Tasks on the board and the one table of moves between their states.

A ``Task`` is frozen: ``transition(target, at=…, **changes)`` returns the moved copy after
checking ``_TRANSITIONS`` (private, like every transition table: the state enum and its
``check_transition`` are a state machine's public face). PENDING may become CLAIMED, CANCELLED
or FAILED; CLAIMED may become RUNNING, COMPLETED, FAILED, PENDING or CANCELLED; RUNNING any of
those but CLAIMED; the three terminal states have no moves. ``attempts`` counts claims and
doubles as the lease's fencing token.

``Task`` (like ``Event``) is a struct with ``gc=False``: the cyclic collector never walks it (a
board of a million tasks made every full collection walk a million objects; 45k -> 54k
lifecycles/s over 300k tasks). It cannot be part of a cycle that matters: a struct that
contains itself cannot be encoded, so no store would hold it.
"""

from __future__ import annotations

import enum
import time
from typing import Any, Self

import msgspec

from converge.core.ids import new_id
from converge.errors import InvalidTransition, ValidationError

__all__ = ["TERMINAL_STATES", "Task", "TaskState", "check_transition"]

_replace = msgspec.structs.replace


class TaskState(enum.StrEnum):
    """Where a task is in its life."""

    PENDING = "pending"
    """Waiting on the board for an agent to claim it."""
    CLAIMED = "claimed"
    """Held by one agent under a lease that expires."""
    RUNNING = "running"
    """The holder started work (or reported progress)."""
    COMPLETED = "completed"
    """Done, with a result. Terminal."""
    FAILED = "failed"
    """Given up, with an error. Terminal."""
    CANCELLED = "cancelled"
    """Withdrawn by its submitter. Terminal."""


_S = TaskState
_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    _S.PENDING: frozenset({_S.CLAIMED, _S.CANCELLED, _S.FAILED}),
    # A lease that expires, or a holder that releases, returns the task to PENDING.
    _S.CLAIMED: frozenset({_S.RUNNING, _S.COMPLETED, _S.FAILED, _S.PENDING, _S.CANCELLED}),
    _S.RUNNING: frozenset({_S.COMPLETED, _S.FAILED, _S.PENDING, _S.CANCELLED}),
    _S.COMPLETED: frozenset(),
    _S.FAILED: frozenset(),
    _S.CANCELLED: frozenset(),
}
"""Every allowed move: ``_TRANSITIONS[a]`` is the set of states ``a`` may move to."""

TERMINAL_STATES = frozenset(s for s, nxt in _TRANSITIONS.items() if not nxt)
"""States a task never leaves."""


def check_transition(current: TaskState, target: TaskState, subject: str | None = None) -> None:
    """Raise ``InvalidTransition`` unless ``current -> target`` is in ``_TRANSITIONS``."""
    if target not in _TRANSITIONS[current]:
        raise InvalidTransition(current, target, subject=subject)


class Task(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """A unit of work on the board. Change it with ``transition``, which enforces the table."""

    objective: str
    """What should be done, in words an agent (or a person) understands."""
    inputs: dict[str, Any] = msgspec.field(default_factory=dict)
    """The data the work needs."""
    id: str = msgspec.field(default_factory=new_id)
    """Unique, time-ordered id."""
    pool_id: str | None = None
    """Only members of this pool may see and claim it; None: any agent."""
    required_capabilities: tuple[str, ...] = ()
    """Capability requirements (``"summarize>=1.2"``) a claimer must meet, all of them."""
    priority: int = 0
    """Higher runs first."""
    state: TaskState = TaskState.PENDING
    """Where it is in its life."""
    assigned_to: str | None = None
    """The did of the current (or last) holder."""
    attempts: int = 0
    """How many times it has been claimed; also the fencing token of the current lease."""
    max_attempts: int = 3
    """Claims allowed before an expired lease fails the task."""
    lease_expires_at: float | None = None
    """When the current holder's lease runs out (seconds since the epoch)."""
    result: Any = None
    """The output, once COMPLETED."""
    error: str | None = None
    """Why it FAILED or was CANCELLED."""
    trace_id: str | None = None
    """The trace this task belongs to."""
    submitted_by: str | None = None
    """The did of the agent that submitted it (None: submitted by the system)."""
    created_at: float = msgspec.field(default_factory=time.time)
    """When it was submitted."""
    updated_at: float = msgspec.field(default_factory=time.time)
    """When it last changed."""

    def __post_init__(self) -> None:
        if not isinstance(self.objective, str) or not self.objective:
            raise ValidationError("a task needs a non-empty `objective`", field="objective")
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValidationError(
                f"max_attempts must be an int >= 1, not {self.max_attempts!r}",
                field="max_attempts",
            )

    @property
    def is_terminal(self) -> bool:
        """Whether the task is COMPLETED, FAILED or CANCELLED."""
        return self.state in TERMINAL_STATES

    def transition(self, target: TaskState, *, at: float, **changes: Any) -> Self:
        """A copy moved to ``target`` with ``changes`` applied and ``updated_at=at``.

        Raises:
            InvalidTransition: the table does not allow ``self.state -> target``.
        """
        if target not in _TRANSITIONS[self.state]:
            raise InvalidTransition(self.state, target, subject=self.id)
        return _replace(self, state=target, updated_at=at, **changes)
