"""The negotiation's data, pure: the session, its proposals, its states and their one transition
table, what an act did (``Outcome``), and the two refusals particular to negotiation. The
functions that change a session are in ``_negotiation_core``; ``NegotiationProtocol`` drives
them over a store.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from converge.errors import ConvergeError, PolicyViolation, StateError
from converge.protocol.event import Event

__all__ = [
    "NEGOTIATION_TRANSITIONS",
    "TERMINAL_NEGOTIATION_STATES",
    "Act",
    "NegotiationRefused",
    "NegotiationSession",
    "NegotiationState",
    "Outcome",
    "Proposal",
    "ProposalSuperseded",
]

Act = Literal["propose", "counter", "accept", "reject"]
"""What a party does to a session (the ``act`` of a ``negotiation.refused`` event)."""


class NegotiationState(enum.StrEnum):
    """Where a negotiation session is in its life."""

    OPEN = "open"
    """A proposal is on the table, waiting for the other parties' answers."""
    AGREED = "agreed"
    """Every party other than its proposer accepted the latest proposal. Terminal."""
    REJECTED = "rejected"
    """A party rejected the latest proposal. Terminal."""
    EXPIRED = "expired"
    """The deadline passed before an agreement. Terminal."""
    FAILED = "failed"
    """A party tried to make more than ``max_rounds`` proposals. Terminal."""


_S = NegotiationState
NEGOTIATION_TRANSITIONS: dict[NegotiationState, frozenset[NegotiationState]] = {
    # OPEN -> OPEN: a counter-proposal, a revision, or one acceptance of several still needed.
    _S.OPEN: frozenset({_S.OPEN, _S.AGREED, _S.REJECTED, _S.EXPIRED, _S.FAILED}),
    _S.AGREED: frozenset(),
    _S.REJECTED: frozenset(),
    _S.EXPIRED: frozenset(),
    _S.FAILED: frozenset(),
}
"""Every allowed move: ``NEGOTIATION_TRANSITIONS[a]`` is the set of states ``a`` may move to."""

TERMINAL_NEGOTIATION_STATES = frozenset(s for s, nxt in NEGOTIATION_TRANSITIONS.items() if not nxt)
"""States a session never leaves."""


class NegotiationRefused(PolicyViolation):
    """A party acted out of turn, or someone who is not a party acted.

    Attributes:
        session_id: the session.
        agent_id: who acted.
        act: ``"propose"``, ``"counter"``, ``"accept"`` or ``"reject"``.
        reason: ``"not_a_party"``, ``"own_proposal"`` (answering or countering one's own
            proposal) or ``"already_accepted"``.
    """

    def __init__(self, session_id: str, agent_id: str, act: str, reason: str, detail: str) -> None:
        super().__init__(f"{agent_id} may not {act} in negotiation {session_id}: {detail}")
        self.session_id = session_id
        self.agent_id = agent_id
        self.act = act
        self.reason = reason


class ProposalSuperseded(StateError):
    """An act named a proposal that a later one has replaced (or was based on one that has).

    Attributes:
        session_id: the session.
        proposal_id: the proposal the act named.
        latest_id: the session's latest proposal.
    """

    def __init__(self, session_id: str, proposal_id: str, latest_id: str) -> None:
        super().__init__(
            f"proposal {proposal_id} of negotiation {session_id} was superseded by {latest_id}; "
            "only the latest proposal can be answered"
        )
        self.session_id = session_id
        self.proposal_id = proposal_id
        self.latest_id = latest_id


class Proposal(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One proposal of a session: the opening one, a counter-proposal or a revision."""

    id: str
    """Unique id (the manager's ``id_factory``)."""
    proposer: str
    """The did of the party that made it."""
    terms: dict[str, Any]
    """What is proposed (MessagePack-encodable; copied on the way in)."""
    at: float
    """When it was made (seconds since the epoch)."""


class NegotiationSession(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True
):
    """A negotiation among named parties. Change it only through ``_negotiation_core``."""

    id: str
    """Unique id; the store key is ``negotiation/<id>``."""
    parties: tuple[str, ...]
    """The dids taking part, the initiator first, then its counterparties; no repeats."""
    max_rounds: int
    """The most proposals the session may hold (the opening one included)."""
    trace_id: str
    """The trace its events belong to (the session id unless the opener named one)."""
    created_at: float
    """When it was opened."""
    updated_at: float
    """When it last changed."""
    state: NegotiationState = NegotiationState.OPEN
    """Where it is in its life."""
    proposals: tuple[Proposal, ...] = ()
    """Every proposal, oldest first; the last one is the only one that can be answered."""
    accepted_by: tuple[str, ...] = ()
    """The parties that accepted the latest proposal so far (reset by every new proposal)."""
    deadline: float | None = None
    """Acting at or after this time expires the session; None: no deadline."""
    agreed_proposal_id: str | None = None
    """The proposal agreed on, once AGREED."""
    agreed_terms: dict[str, Any] | None = None
    """Its terms, once AGREED."""
    ended_by: str | None = None
    """The did whose act ended the session (the rejecter, the last acceptor…); None: still open,
    or expired by the system."""
    reason: str = ""
    """Why it ended when it did not agree: the rejection's reason, the deadline, the round limit."""

    @property
    def initiator(self) -> str:
        """The did that opened the session."""
        return self.parties[0]

    @property
    def latest(self) -> Proposal:
        """The latest proposal (a session always has one)."""
        return self.proposals[-1]

    @property
    def rounds(self) -> int:
        """How many proposals were made."""
        return len(self.proposals)

    @property
    def is_terminal(self) -> bool:
        """Whether the session is AGREED, REJECTED, EXPIRED or FAILED."""
        return self.state in TERMINAL_NEGOTIATION_STATES

    @property
    def waiting_for(self) -> tuple[str, ...]:
        """The parties whose acceptance the latest proposal still needs (empty once terminal)."""
        if self.is_terminal:
            return ()
        proposer = self.latest.proposer
        return tuple(p for p in self.parties if p != proposer and p not in self.accepted_by)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an act did: the session after it, the events to record with it, and the refusal.

    A refused act still has events (``negotiation.refused``) and may still have moved the session
    (acting after the deadline expires it; proposing past ``max_rounds`` fails it), so a driver
    writes ``session`` when ``changed`` and records ``events`` before it raises ``error``.
    """

    session: NegotiationSession
    """The session after the act (the same object when nothing changed)."""
    events: tuple[Event, ...]
    """Events to record in the same unit of work as the session."""
    changed: bool
    """Whether ``session`` differs from the one the act was applied to."""
    error: ConvergeError | None = None
    """The refusal, to raise once the events are recorded; None: the act was done."""
    proposal: Proposal | None = None
    """The proposal a successful ``propose`` made."""

    def check(self) -> NegotiationSession:
        """The new session, or raise the refusal."""
        if self.error is not None:
            raise self.error
        return self.session
