"""What an agent decides to do: one tagged union of decisions.

The runtime validates and executes them.

An agent's ``decide()`` returns a list of these; ``validate_safety`` checks them against policy;
the ``StandardExecutor`` applies them. They are plain data (tagged by ``type``), so they can be
logged, sent, and checked by an allowlist of decision types (an allowlist names a decision by
its tag: ``claim_task``, ``submit_bid``…). ``SubmitBid`` carries ``amount`` and ``terms``
rather than an ``Offer`` because ``core`` may not import ``protocol``.
"""

from __future__ import annotations

import typing
from typing import Any

import msgspec

from converge.core.codec_errors import validation_error
from converge.errors import ValidationError

__all__ = [
    "DECISION_TYPES",
    "AcceptProposal",
    "CancelTask",
    "ClaimTask",
    "CreatePool",
    "Decision",
    "Delegate",
    "FailTask",
    "InvokeTool",
    "JoinPool",
    "LeavePool",
    "Propose",
    "RejectProposal",
    "ReportTask",
    "RevokeDelegation",
    "SendMessage",
    "SubmitBid",
    "SubmitTask",
    "Vote",
    "decision_from_builtins",
]


class _Decision(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, tag_field="type"
):
    pass


class SendMessage(_Decision, frozen=True, tag="send_message"):
    """Send a message to one agent or publish it on a topic (exactly one of the two)."""

    kind: str
    """The message kind."""
    payload: Any = None
    """The content."""
    recipient: str | None = None
    """The receiving agent's did."""
    topic: str | None = None
    """The topic to publish on."""
    trace_id: str | None = None
    """The trace it belongs to (the runtime fills in the current one when unset)."""
    parent_id: str | None = None
    """The message it answers."""

    def __post_init__(self) -> None:
        if (self.recipient is None) == (self.topic is None):
            raise ValidationError(
                "SendMessage needs exactly one of `recipient` and `topic`",
                field="recipient" if self.recipient is not None else "topic",
            )


class JoinPool(_Decision, frozen=True, tag="join_pool"):
    """Ask to join a pool; admission decides."""

    pool_id: str
    """The pool."""
    credentials: dict[str, Any] = msgspec.field(default_factory=dict)
    """What admission asks for (a token, an attestation…)."""


class LeavePool(_Decision, frozen=True, tag="leave_pool"):
    """Leave a pool."""

    pool_id: str
    """The pool."""


class CreatePool(_Decision, frozen=True, tag="create_pool"):
    """Create a pool with the given spec (see ``converge.core.Pool``)."""

    name: str
    """Human-readable name."""
    pool_id: str | None = None
    """The id to use; None: a new one."""
    description: str = ""
    """What the pool is for."""
    admission: dict[str, Any] = msgspec.field(default_factory=dict)
    """Admission policy spec."""
    governance: dict[str, Any] = msgspec.field(default_factory=dict)
    """Governance model spec."""
    required_capabilities: tuple[str, ...] = ()
    """What every member must be able to do."""


class SubmitTask(_Decision, frozen=True, tag="submit_task"):
    """Put a task on the board."""

    objective: str
    """What should be done."""
    inputs: dict[str, Any] = msgspec.field(default_factory=dict)
    """Data for the work."""
    pool_id: str | None = None
    """Restrict it to a pool's members."""
    required_capabilities: tuple[str, ...] = ()
    """What the claimer must be able to do."""
    priority: int = 0
    """Higher runs first."""
    max_attempts: int = 3
    """Claims allowed before it fails."""


class ClaimTask(_Decision, frozen=True, tag="claim_task"):
    """Claim a visible pending task, taking a lease."""

    task_id: str
    """The task."""


class ReportTask(_Decision, frozen=True, tag="report_task"):
    """Report the result of a held task (completing it)."""

    task_id: str
    """The task."""
    result: Any = None
    """The output."""
    token: int | None = None
    """The fencing token from the claim; None: the runtime's record of it."""


class CancelTask(_Decision, frozen=True, tag="cancel_task"):
    """Withdraw a task (its submitter or a pool authority)."""

    task_id: str
    """The task."""
    reason: str = ""
    """Why."""


class FailTask(_Decision, frozen=True, tag="fail_task"):
    """Give up on a held task, with a reason."""

    task_id: str
    """The task."""
    reason: str
    """Why it failed."""


class SubmitBid(_Decision, frozen=True, tag="submit_bid"):
    """Bid in an auction (a contract-net round)."""

    auction_id: str
    """The auction (or intent) id."""
    amount: float
    """The price asked."""
    terms: dict[str, Any] = msgspec.field(default_factory=dict)
    """Everything else offered: latency, quality, reliability, resource limits…"""


class Vote(_Decision, frozen=True, tag="vote"):
    """Cast a vote on an open ballot."""

    ballot_id: str
    """The ballot (proposal, dispute) being voted on."""
    choice: Any
    """The option chosen."""


class Propose(_Decision, frozen=True, tag="propose"):
    """Open or continue a negotiation with a proposal (a counter-proposal if one is open)."""

    session_id: str
    """The negotiation session."""
    terms: dict[str, Any]
    """What is proposed."""
    parties: tuple[str, ...] = ()
    """Dids of the counterparties when opening a session."""


class AcceptProposal(_Decision, frozen=True, tag="accept_proposal"):
    """Accept the open proposal of a negotiation."""

    session_id: str
    """The negotiation session."""
    proposal_id: str | None = None
    """The proposal accepted; None: the latest."""


class RejectProposal(_Decision, frozen=True, tag="reject_proposal"):
    """Reject the open proposal of a negotiation."""

    session_id: str
    """The negotiation session."""
    proposal_id: str | None = None
    """The proposal rejected; None: the latest."""
    reason: str = ""
    """Why."""


class Delegate(_Decision, frozen=True, tag="delegate"):
    """Grant another agent part of one's own scope."""

    to: str
    """The delegate's did."""
    scope: tuple[str, ...]
    """The actions granted (a subset of the delegator's own)."""
    expires_at: float | None = None
    """When the grant lapses (seconds since the epoch); None: when revoked."""


class RevokeDelegation(_Decision, frozen=True, tag="revoke_delegation"):
    """Revoke a grant and everything derived from it."""

    delegation_id: str
    """The grant."""


class InvokeTool(_Decision, frozen=True, tag="invoke_tool"):
    """Call a registered tool."""

    tool: str
    """The tool's name."""
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)
    """Its arguments, checked against its schema."""


Decision = (
    SendMessage
    | JoinPool
    | LeavePool
    | CreatePool
    | SubmitTask
    | ClaimTask
    | ReportTask
    | CancelTask
    | FailTask
    | SubmitBid
    | Vote
    | Propose
    | AcceptProposal
    | RejectProposal
    | Delegate
    | RevokeDelegation
    | InvokeTool
)
"""Any decision an agent can return."""

DECISION_TYPES: dict[str, type[_Decision]] = {
    str(cls.__struct_config__.tag): cls for cls in typing.get_args(Decision)
}
"""Each decision class by its tag (``"claim_task"`` …), for allowlists and decoding."""


def decision_from_builtins(data: Any) -> Decision:
    """Build a decision from plain data (``{"type": "claim_task", "task_id": …}``).

    Raises:
        ValidationError: an unknown ``type`` or a bad field, named.
    """
    try:
        decision: Decision = msgspec.convert(data, Decision)
        return decision
    except msgspec.ValidationError as exc:
        raise validation_error(exc, "decision") from exc
