"""The core model: identity, messages, tasks, decisions, agents, tools.

Identity, messages, topics, capabilities, pools, tasks, decisions, agents, tools,
and ``MISSING`` (a value that is not there).

Everything else in converge is built from these. ``converge.core`` imports nothing of converge
but ``converge.errors``. Its names are exported on first use (PEP 562, like
``converge.orchestration``): importing one module of core (``core.missing``, which
orchestration's references import) does not import the rest (``identity`` loads
``cryptography``), so ``converge validate`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from converge.core.agent import Agent, RunContext
    from converge.core.capability import Capability, CapabilitySet, Requirement
    from converge.core.clock import Clock, ManualClock, SystemClock, system_clock
    from converge.core.decisions import (
        DECISION_TYPES,
        AcceptProposal,
        CancelTask,
        ClaimTask,
        CreatePool,
        Decision,
        Delegate,
        FailTask,
        InvokeTool,
        JoinPool,
        LeavePool,
        Propose,
        RejectProposal,
        ReportTask,
        RevokeDelegation,
        SendMessage,
        SubmitBid,
        SubmitTask,
        Vote,
        decision_from_builtins,
    )
    from converge.core.identity import Identity
    from converge.core.ids import IdFactory, new_id
    from converge.core.message import Message, ReplayGuard
    from converge.core.missing import MISSING, Missing
    from converge.core.pool import Pool
    from converge.core.signing import Signed, unseal
    from converge.core.task import TERMINAL_STATES, Task, TaskState, check_transition
    from converge.core.tools import FunctionTool, Tool, ToolRegistry
    from converge.core.topic import Topic

# Names are imported on first use (PEP 562): importing one module of core (``core.missing``, say)
# runs this package first, and must not import the others (``identity`` loads ``cryptography``).
_EXPORTS: dict[str, str] = {
    "AcceptProposal": "converge.core.decisions",
    "Agent": "converge.core.agent",
    "CancelTask": "converge.core.decisions",
    "Capability": "converge.core.capability",
    "CapabilitySet": "converge.core.capability",
    "ClaimTask": "converge.core.decisions",
    "Clock": "converge.core.clock",
    "CreatePool": "converge.core.decisions",
    "DECISION_TYPES": "converge.core.decisions",
    "Decision": "converge.core.decisions",
    "Delegate": "converge.core.decisions",
    "FailTask": "converge.core.decisions",
    "FunctionTool": "converge.core.tools",
    "IdFactory": "converge.core.ids",
    "Identity": "converge.core.identity",
    "InvokeTool": "converge.core.decisions",
    "JoinPool": "converge.core.decisions",
    "LeavePool": "converge.core.decisions",
    "MISSING": "converge.core.missing",
    "ManualClock": "converge.core.clock",
    "Message": "converge.core.message",
    "Missing": "converge.core.missing",
    "Pool": "converge.core.pool",
    "Propose": "converge.core.decisions",
    "RejectProposal": "converge.core.decisions",
    "ReplayGuard": "converge.core.message",
    "ReportTask": "converge.core.decisions",
    "Requirement": "converge.core.capability",
    "RevokeDelegation": "converge.core.decisions",
    "RunContext": "converge.core.agent",
    "SendMessage": "converge.core.decisions",
    "Signed": "converge.core.signing",
    "SubmitBid": "converge.core.decisions",
    "SubmitTask": "converge.core.decisions",
    "SystemClock": "converge.core.clock",
    "TERMINAL_STATES": "converge.core.task",
    "Task": "converge.core.task",
    "TaskState": "converge.core.task",
    "Tool": "converge.core.tools",
    "ToolRegistry": "converge.core.tools",
    "Topic": "converge.core.topic",
    "Vote": "converge.core.decisions",
    "check_transition": "converge.core.task",
    "decision_from_builtins": "converge.core.decisions",
    "new_id": "converge.core.ids",
    "system_clock": "converge.core.clock",
    "unseal": "converge.core.signing",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "DECISION_TYPES",
    "MISSING",
    "TERMINAL_STATES",
    "AcceptProposal",
    "Agent",
    "CancelTask",
    "Capability",
    "CapabilitySet",
    "ClaimTask",
    "Clock",
    "CreatePool",
    "Decision",
    "Delegate",
    "FailTask",
    "FunctionTool",
    "IdFactory",
    "Identity",
    "InvokeTool",
    "JoinPool",
    "LeavePool",
    "ManualClock",
    "Message",
    "Missing",
    "Pool",
    "Propose",
    "RejectProposal",
    "ReplayGuard",
    "ReportTask",
    "Requirement",
    "RevokeDelegation",
    "RunContext",
    "SendMessage",
    "Signed",
    "SubmitBid",
    "SubmitTask",
    "SystemClock",
    "Task",
    "TaskState",
    "Tool",
    "ToolRegistry",
    "Topic",
    "Vote",
    "check_transition",
    "decision_from_builtins",
    "new_id",
    "system_clock",
    "unseal",
]
