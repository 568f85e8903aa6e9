"""``Planner``: the role that decomposes a goal into steps.

A graph node; ``GoalPlanner`` runs plans.

```python
plan_it = Planner({"architect": "designs APIs", "coder": "writes code"}, {"max_steps": 5})
plan = await plan_it.run({"goal": "design and code a REST API"}, ctx)
# {"goal": ..., "steps": [{"id": "architect", "agent": "architect", "task": ...}, ...]}
```

It makes a plan (``PlanMaker``, the goal planner's planning) for its input ``goal`` (or its
only input) and returns the checked plan as plain data, which later nodes read
(``planner.output.steps``). Its modes are the goal planner's: rule mode by keywords, LLM mode
when a provider is given. A plan that does not
fit is a ``PlanRejected`` error of the node.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from converge.agents._plan import PlanConstraints, as_available
from converge.agents.llm.base import LLMProvider
from converge.agents.planner import PlanMaker
from converge.core.agent import Agent, RunContext
from converge.core.capability import Capability
from converge.errors import ValidationError

__all__ = ["Planner"]


class Planner(Agent):
    """Decomposes the goal it is given into a checked plan.

    Args:
        available_agents: what the goal planner takes (agents, ``AvailableAgent``s, or
            ``{name: description}`` to plan without running).
        constraints: ``max_steps``, ``time_budget_minutes``.
        provider: switches on LLM mode.
        attempts: LLM mode: calls before an invalid plan is an error.
        instructions: LLM mode: added to the system message.
        name: the agent's name.
        capabilities: what it can do.
    """

    def __init__(
        self,
        available_agents: Iterable[Any] | Mapping[str, Any],
        constraints: PlanConstraints | Mapping[str, Any] | None = None,
        *,
        provider: LLMProvider | None = None,
        attempts: int = 3,
        instructions: str = "",
        name: str | None = None,
        capabilities: Iterable[Capability | str] = (),
    ) -> None:
        super().__init__(name=name or "planner", capabilities=capabilities)
        self.available_agents = as_available(available_agents)
        self._template = PlanMaker(  # checks the options now, not at the first run
            "(goal)",
            self.available_agents,
            constraints,
            provider=provider,
            attempts=attempts,
            instructions=instructions,
        )
        self.constraints = self._template.constraints
        self.provider = provider

    @property
    def mode(self) -> str:
        """``"llm"`` when a provider is configured, else ``"rule"``."""
        return "llm" if self.provider is not None else "rule"

    def goal_planner(self, goal: str) -> PlanMaker:
        """A ``PlanMaker`` for ``goal`` with this planner's agents and options."""
        t = self._template
        return PlanMaker(
            goal,
            self.available_agents,
            self.constraints,
            provider=self.provider,
            attempts=t.attempts,
            instructions=t.instructions,
        )

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        """The plan for the goal in ``inputs``, as plain data."""
        if "goal" in inputs:
            goal = inputs["goal"]
        elif len(inputs) == 1:
            goal = next(iter(inputs.values()))
        else:
            raise ValidationError(
                f"planner {self.name!r} reads the input `goal` or its only input; it has "
                f"{', '.join(inputs) or 'none'}",
                field="goal",
            )
        plan = await self.goal_planner(goal).create_plan(ctx=ctx)
        out: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(plan))  # JSON-like data
        return out
