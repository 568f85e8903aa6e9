"""Coordination: the task board, pools, discovery, negotiation, consensus, result resolution and
delegation (and, as they land, bidding and teams). Module paths named by the seeds are public:
``converge.coordination.{task_manager,pool_manager,negotiation,consensus,delegation}``."""

from __future__ import annotations

from converge.coordination.consensus import (
    Ballot,
    BallotRefused,
    BallotResult,
    BallotState,
    Consensus,
    VoteAfterDeadline,
    majority,
    plurality,
)
from converge.coordination.delegation import (
    DelegationCycle,
    DelegationGrant,
    DelegationProtocol,
    DelegationRefused,
    GrantRecord,
    OutOfScope,
    ScopeExceeded,
)
from converge.coordination.discovery import REGISTER_KIND, AgentDescriptor, DiscoveryService
from converge.coordination.negotiation import (
    NEGOTIATION_TRANSITIONS,
    NegotiationProtocol,
    NegotiationRefused,
    NegotiationSession,
    NegotiationState,
    Proposal,
    ProposalSuperseded,
)
from converge.coordination.pool_manager import PoolManager, TrustSource
from converge.coordination.resolution import (
    AgentResult,
    ConflictStrategy,
    Resolution,
    ResolutionFailed,
    normalize_text,
    resolve,
)
from converge.coordination.task_manager import (
    CapabilityDirectory,
    LeaseLost,
    Membership,
    TaskManager,
)

__all__ = [
    "NEGOTIATION_TRANSITIONS",
    "REGISTER_KIND",
    "AgentDescriptor",
    "AgentResult",
    "Ballot",
    "BallotRefused",
    "BallotResult",
    "BallotState",
    "CapabilityDirectory",
    "ConflictStrategy",
    "Consensus",
    "DelegationCycle",
    "DelegationGrant",
    "DelegationProtocol",
    "DelegationRefused",
    "DiscoveryService",
    "GrantRecord",
    "LeaseLost",
    "Membership",
    "NegotiationProtocol",
    "NegotiationRefused",
    "NegotiationSession",
    "NegotiationState",
    "OutOfScope",
    "PoolManager",
    "Proposal",
    "ProposalSuperseded",
    "Resolution",
    "ResolutionFailed",
    "ScopeExceeded",
    "TaskManager",
    "TrustSource",
    "VoteAfterDeadline",
    "majority",
    "normalize_text",
    "plurality",
    "resolve",
]
