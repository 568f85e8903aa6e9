"""The core model: identity, messages, topics, capabilities, pools, tasks, decisions, agents, tools.

Everything else in converge is built from these. ``converge.core`` imports nothing of converge
but ``converge.errors``.
"""

from __future__ import annotations

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
from converge.core.pool import Pool
from converge.core.signing import Signed, unseal
from converge.core.task import TERMINAL_STATES, TRANSITIONS, Task, TaskState, check_transition
from converge.core.tools import FunctionTool, Tool, ToolRegistry
from converge.core.topic import Topic

__all__ = [
    "DECISION_TYPES",
    "TERMINAL_STATES",
    "TRANSITIONS",
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
