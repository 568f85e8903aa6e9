"""Coordination: the board, pools, bidding, voting, delegation.

The task board, pools, discovery, contract-net bidding, negotiation, consensus,
result resolution and delegation (and, as they land, teams). Module paths named by the seeds are
public: ``converge.coordination.{task_manager,pool_manager,bidding,negotiation,consensus,
delegation}``.
"""

from __future__ import annotations

from converge.coordination.bidding import (
    AuctionClosed,
    Award,
    BiddingProtocol,
    BidWindowOpen,
    ContractRound,
    Provider,
    Rejection,
    RoundStage,
    intent_of,
    report_done,
    report_progress,
    task_start_of,
)
from converge.coordination.consensus import (
    Ballot,
    BallotClosed,
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
    Report,
    ReportsRefused,
    TaskManager,
)

__all__ = [
    "REGISTER_KIND",
    "AgentDescriptor",
    "AgentResult",
    "AuctionClosed",
    "Award",
    "Ballot",
    "BallotClosed",
    "BallotRefused",
    "BallotResult",
    "BallotState",
    "BidWindowOpen",
    "BiddingProtocol",
    "CapabilityDirectory",
    "ConflictStrategy",
    "Consensus",
    "ContractRound",
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
    "Provider",
    "Rejection",
    "Report",
    "ReportsRefused",
    "Resolution",
    "ResolutionFailed",
    "RoundStage",
    "ScopeExceeded",
    "TaskManager",
    "TrustSource",
    "VoteAfterDeadline",
    "intent_of",
    "majority",
    "normalize_text",
    "plurality",
    "report_done",
    "report_progress",
    "resolve",
    "task_start_of",
]
