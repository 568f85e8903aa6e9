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

__all__ = [
    # roles and the goal planner
    "AvailableAgent",
    "Criteria",
    "Critic",
    "GoalPlanner",
    "NoMatchingRoute",
    "Plan",
    "PlanConstraints",
    "PlanRejected",
    "PlanStep",
    "Planner",
    "Router",
    "StructuredOutputError",
    "Supervisor",
    "Worker",
]
