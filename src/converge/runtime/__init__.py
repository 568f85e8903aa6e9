"""The decentralized runtime: ``AgentRuntime`` and its executor.

``AgentRuntime`` runs an agent's decide loop, and the
``StandardExecutor`` applies its decisions (seed 000). ``Market`` runs contract-net among
providers' runtimes in a few lines; ``Provider`` (from ``converge.coordination``) is
re-exported here so one import gives both.
"""

from __future__ import annotations

from converge.coordination.bidding import Provider
from converge.runtime.agent_runtime import (
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    AgentRuntime,
    TooManyFailedDecisions,
)
from converge.runtime.executor import StandardExecutor, sign_and_send
from converge.runtime.market import Contract, Market

__all__ = [
    "DEFAULT_MAX_CONSECUTIVE_FAILURES",
    "AgentRuntime",
    "Contract",
    "Market",
    "Provider",
    "StandardExecutor",
    "TooManyFailedDecisions",
    "sign_and_send",
]
