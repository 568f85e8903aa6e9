"""The decentralized runtime: ``AgentRuntime`` and its executor.

``AgentRuntime`` runs an agent's decide loop, and the
``StandardExecutor`` applies its decisions (seed 000).
"""

from __future__ import annotations

from converge.runtime.agent_runtime import (
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    AgentRuntime,
    TooManyFailedDecisions,
)
from converge.runtime.executor import StandardExecutor, sign_and_send

__all__ = [
    "DEFAULT_MAX_CONSECUTIVE_FAILURES",
    "AgentRuntime",
    "StandardExecutor",
    "TooManyFailedDecisions",
    "sign_and_send",
]
