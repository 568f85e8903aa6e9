"""Coordination: the task board, pools and discovery (and, as they land, bidding, consensus,
negotiation, delegation and teams). Module paths named by the seeds are public:
``converge.coordination.task_manager``, ``converge.coordination.pool_manager``."""

from __future__ import annotations

from converge.coordination.discovery import REGISTER_KIND, AgentDescriptor, DiscoveryService
from converge.coordination.pool_manager import PoolManager, TrustSource
from converge.coordination.task_manager import (
    CapabilityDirectory,
    LeaseLost,
    Membership,
    TaskManager,
)

__all__ = [
    "REGISTER_KIND",
    "AgentDescriptor",
    "CapabilityDirectory",
    "DiscoveryService",
    "LeaseLost",
    "Membership",
    "PoolManager",
    "TaskManager",
    "TrustSource",
]
