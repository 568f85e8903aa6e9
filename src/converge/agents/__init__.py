"""Agents that do real work: function agents, LLM agents and their providers, tools, memory,
the five roles of seed 002 (worker, router, critic, supervisor, planner) and the goal planner.
"""

# -- roles and the goal planner ----------------------------------------------------------------
from converge.agents._plan import (
    AvailableAgent,
    Plan,
    PlanConstraints,
    PlanRejected,
    PlanStep,
)
from converge.agents.function import FunctionAgent
from converge.agents.planner import GoalPlanner
from converge.agents.roles import (
    Criteria,
    Critic,
    NoMatchingRoute,
    Planner,
    Router,
    StructuredOutputError,
    Supervisor,
    Worker,
)

# -- end roles and the goal planner ------------------------------------------------------------
# Function agents, safe tool calls and the sandbox.
from converge.runtime._tool_errors import (
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
