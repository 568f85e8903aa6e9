"""Coordination: the task board (and, as they land, pools, bidding, consensus, negotiation,
delegation and teams). Module paths named by the seeds are public:
``converge.coordination.task_manager``."""

from __future__ import annotations

from converge.coordination.pool_manager import PoolManager, TrustSource
from converge.coordination.task_manager import (
    CapabilityDirectory,
    LeaseLost,
    Membership,
    TaskManager,
)

__all__ = [
    "CapabilityDirectory",
    "LeaseLost",
    "Membership",
    "PoolManager",
    "TaskManager",
    "TrustSource",
]
