"""Agents that do real work: function agents, LLM agents and their providers, tools, memory,
the five roles of seed 002 (worker, router, critic, supervisor, planner) and the goal planner.
"""

__all__: list[str] = []
