"""Agents that do real work: functions, LLMs, roles, tools, memory.

Function agents, LLM agents and their providers, tools, memory,
the five roles of seed 002 (worker, router, critic, supervisor, planner) and goal planning.

``GoalPlanner`` runs its plans on the engine, so it lives in ``converge.orchestration``; it is
still importable from here, resolved on first use: importing this package never imports
orchestration. The safe tool path (``SafeTools``, the sandbox, ``ToolError`` and its kin) lives
in ``converge.runtime`` — the layer that executes decisions — and is re-exported here, so imports
still point down.
"""

import importlib
from typing import Any

# -- roles and the goal planner ----------------------------------------------------------------
from converge.agents._plan import (
    AvailableAgent,
    Plan,
    PlanConstraints,
    PlanStep,
)
from converge.agents.function import FunctionAgent
from converge.agents.planner import PlanMaker
from converge.agents.roles import (
    Criteria,
    Critic,
    Planner,
    Router,
    Supervisor,
    Worker,
)

# -- end roles and the goal planner ------------------------------------------------------------
# The errors they raise (``converge.errors``), function agents, safe tool calls and the sandbox.
from converge.errors import (
    NoMatchingRoute,
    PlanRejected,
    StructuredOutputError,
    ToolCallRefused,
    ToolError,
    ToolMemoryExceeded,
    ToolTimeout,
)
from converge.runtime.sandbox import DEFAULT_ENV_ALLOW, SandboxedTool, SandboxLimits, run_in_sandbox
from converge.runtime.tools import SafeTools

__all__ = [
    "DEFAULT_ENV_ALLOW",
    "AvailableAgent",
    "Criteria",
    "Critic",
    "FunctionAgent",
    "GoalPlanner",
    "NoMatchingRoute",
    "Plan",
    "PlanConstraints",
    "PlanMaker",
    "PlanRejected",
    "PlanStep",
    "Planner",
    "Router",
    "SafeTools",
    "SandboxLimits",
    "SandboxedTool",
    "StructuredOutputError",
    "Supervisor",
    "ToolCallRefused",
    "ToolError",
    "ToolMemoryExceeded",
    "ToolTimeout",
    "Worker",
    "run_in_sandbox",
]


def __getattr__(name: str) -> Any:
    if name != "GoalPlanner":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return importlib.import_module("converge.orchestration.planner").GoalPlanner
