"""``GoalPlanner``: a ``PlanMaker`` that runs its plans as graphs.

A goal decomposed into steps for the available agents, checked before it
runs, run as an ordinary graph, and re-planned when a step fails.

```python
planner = GoalPlanner(
    "Build and deploy a REST API for user management",
    [architect, code_writer, tester, deployer],
    PlanConstraints(max_steps=20, time_budget_minutes=30),
)
plan = await planner.create_plan()          # checked: agents known, steps and time in budget
result = await planner.execute(plan)        # its graph, with re-planning on failure
```

Making and re-making plans, in rule or LLM mode, is ``converge.agents.planner.PlanMaker``'s
(the planner role uses it too); a ``GoalPlanner`` is a ``PlanMaker`` that runs its plans.

**Running.** ``to_graph`` makes one node per step (id = step id) reading the graph input
``goal`` and the outputs of the steps it depends on; its agent is called with those inputs
plus ``task``. ``on_node_failed()`` is the engine hook: on a failing step it re-plans and
splices the replacement steps in its place; the steps after it run as planned.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from converge.agents import Plan, PlanConstraints, PlanStep
from converge.agents.llm import LLMProvider
from converge.agents.planner import PlanMaker
from converge.errors import ValidationError
from converge.orchestration import (
    Engine,
    Graph,
    GraphConfig,
    NodeFailure,
    Replacement,
    RunResult,
)
from converge.orchestration._agents import resolve_agent
from converge.orchestration._attempt import FailureHook

__all__ = ["GoalPlanner", "StepAgent"]


class GoalPlanner(PlanMaker):
    """Plans how ``available_agents`` reach ``goal`` within ``constraints``, and runs the plan.

    Args:
        goal: what to achieve.
        available_agents: ``AvailableAgent``s, agents (named by their names), or a mapping
            ``{name: agent, AvailableAgent or description}``.
        constraints: a ``PlanConstraints`` or a mapping of its fields.
        provider: switches on LLM mode.
        attempts: LLM mode: calls before an invalid plan is an error.
        instructions: LLM mode: added to the system message.

    Attributes:
        plan: the last plan ``create_plan`` made.
        rejections: why re-plans asked for by ``on_node_failed`` were refused.
    """

    def __init__(
        self,
        goal: str,
        available_agents: Iterable[Any] | Mapping[str, Any],
        constraints: PlanConstraints | Mapping[str, Any] | None = None,
        *,
        provider: LLMProvider | None = None,
        attempts: int = 3,
        instructions: str = "",
    ) -> None:
        super().__init__(
            goal,
            available_agents,
            constraints,
            provider=provider,
            attempts=attempts,
            instructions=instructions,
        )
        self.rejections: list[ValidationError] = []

    def to_graph(self, plan: Plan | None = None, *, name: str = "plan") -> Graph:
        """``plan`` (default: the last one made) as a graph: one node per step.

        A step of a re-plan that depends on a completed step reads it as a graph input named
        by that step's id; a dependency on a replaced step reads its replacement.
        """
        plan = self._current(plan)
        budget = self.constraints.time_budget_minutes
        graph = Graph(
            name,
            description=f"plan for: {plan.goal}",
            config=GraphConfig(timeout_seconds=None if budget is None else budget * 60),
        )
        alias = {s.replaces: s.id for s in plan.steps if s.replaces}
        for step in plan.steps:
            deps = [alias.get(d, d) for d in step.depends_on]
            refs = [d if d in plan.completed else f"{d}.output" for d in deps]
            graph.add_node(step.id, self.step_agent(step), inputs=["goal", *refs])
            for dep in deps:
                if dep not in plan.completed:
                    graph.connect(dep, step.id)
        return graph

    def step_agent(self, step: PlanStep) -> StepAgent:
        """What runs ``step``: its agent, given the step's task."""
        available = self.agents[step.agent]
        if available.agent is None:
            raise ValidationError(
                f"agent {step.agent!r} was given as a description only, so step {step.id!r} "
                "cannot run: give the agent itself",
                field=f"available_agents.{step.agent}",
            )
        return StepAgent(step, available.agent)

    def on_node_failed(self, plan: Plan | None = None) -> FailureHook:
        """The engine's ``on_node_failed`` hook for ``plan``'s graph: re-plan the failed step
        and splice in its replacements. A refused re-plan (kept in ``rejections``) lets the
        failure stand."""

        async def hook(failure: NodeFailure) -> Sequence[Replacement] | None:
            try:
                new = await self.replan(
                    failure.node_id, failure.error, failure.completed, plan=self._current(plan)
                )
            except ValidationError as exc:  # PlanRejected, StructuredOutputError
                self.rejections.append(exc)
                return None
            return [
                Replacement(s.id, self.step_agent(s))
                for s in new.steps
                if s.replaces == failure.node_id
            ]

        return hook

    async def execute(
        self,
        plan: Plan | None = None,
        *,
        engine: Engine | None = None,
        completed: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """Run ``plan``'s graph on the goal.

        Args:
            plan: the plan (default: the last one made).
            engine: the engine to run it on (default: a new one re-planning with
                ``on_node_failed``).
            completed: outputs of the completed steps a re-plan depends on.
        """
        plan = self._current(plan)
        engine = engine or Engine(on_node_failed=self.on_node_failed(plan))
        inputs = {"goal": plan.goal, **(completed or {})}
        return await engine.execute(self.to_graph(plan), inputs)

    def _current(self, plan: Plan | None) -> Plan:
        plan = plan or self.plan
        if plan is None:
            raise ValidationError("no plan: call create_plan() first, or pass one", field="plan")
        return plan


class StepAgent:
    """A plan step's node: calls its agent with the node's inputs plus ``task``.

    A sync callable runs on the event loop; give blocking work as an ``Agent`` or an async
    function.
    """

    def __init__(self, step: PlanStep, agent: Any) -> None:
        self.step = step
        self.name = step.agent
        self._agent = resolve_agent(step.agent, agent)

    async def __call__(self, inputs: Mapping[str, Any], ctx: Any) -> Any:
        args = {**inputs, "task": self.step.task}
        fn = self._agent.fn
        result = fn(args, ctx) if self._agent.takes_ctx else fn(args)
        if inspect.isawaitable(result):
            result = await result
        return result

    def __repr__(self) -> str:
        return f"StepAgent({self.step.id!r}, agent={self.name!r})"
