"""Agents that do real work: function agents, LLM agents and their providers, tools, memory,
the five roles of seed 002 (worker, router, critic, supervisor, planner) and the goal planner.
"""

# Function agents, safe tool calls and the sandbox.
from converge.agents._tool_errors import (
    ToolCallRefused,
    ToolError,
    ToolMemoryExceeded,
    ToolTimeout,
)
from converge.agents.function import FunctionAgent
from converge.agents.sandbox import DEFAULT_ENV_ALLOW, SandboxedTool, SandboxLimits, run_in_sandbox
from converge.agents.tools import SafeTools

__all__: list[str] = [
    # Function agents, safe tool calls and the sandbox.
    "DEFAULT_ENV_ALLOW",
    "FunctionAgent",
    "SafeTools",
    "SandboxLimits",
    "SandboxedTool",
    "ToolCallRefused",
    "ToolError",
    "ToolMemoryExceeded",
    "ToolTimeout",
    "run_in_sandbox",
]
