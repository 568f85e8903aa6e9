"""``PlanMaker``: goals made into checked plans, and re-planned.

A goal decomposed into steps for the available agents, checked before it
runs, and re-planned when a step fails.

```python
maker = PlanMaker(
    "Build and deploy a REST API for user management",
    [architect, code_writer, tester, deployer],
    PlanConstraints(max_steps=20, time_budget_minutes=30),
)
plan = await maker.create_plan()            # checked: agents known, steps and time in budget
```

``converge.orchestration.GoalPlanner`` is a ``PlanMaker`` that also runs its plans, as graphs
re-planned on failure (``planner.execute(plan)``). It lives in orchestration, above this
package, since it runs the engine; ``GoalPlanner`` and ``StepAgent`` stay importable from here,
their first home, resolved on first use so that importing ``converge.agents`` never imports
orchestration. The planner role (``roles.Planner``) makes plans with a ``PlanMaker``.

**Rule mode** (no provider). An agent is called for by the goal when one of its keywords
(from its name, capabilities, description and ``keywords``; see ``keywords``) occurs among the
goal's keywords. Every agent called for gets one step, in the order the agents were given
(that order is the pipeline's), each depending on the one before; the step's id is the
agent's name and its task ``"<description>: <goal>"`` (the goal alone without a
description). No agent called for: ``PlanRejected`` (``no_match``). **Re-planning** a failed
step gives it to another agent: the one sharing most capabilities with the failed agent, then
most keywords with the step's task, ties to the first given; none sharing any: ``PlanRejected``
(``no_alternative``).

**LLM mode** (a provider is given). The model is shown the goal, the agents (description,
minutes) and the constraints and answers ``{"steps": [{"id", "agent", "task",
"depends_on"}]}``; re-planning, it answers the steps that replace the failed one (a chain).
Its answer is checked like a rule plan; an invalid one is shown back and asked again, up to
``attempts`` calls, then ``StructuredOutputError``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from converge.agents._plan import (
    AvailableAgent,
    Plan,
    PlanConstraints,
    PlanStep,
    as_available,
    check_plan,
    keywords,
)
from converge.agents._structured import ask_structured, check_attempts
from converge.agents.llm.base import ChatMessage, LLMProvider
from converge.core.agent import RunContext
from converge.errors import PlanRejected, ValidationError

__all__ = ["PlanMaker"]

# Names that moved up to converge.orchestration.planner, still importable from here (on first
# use, by __getattr__: importing this module must not import orchestration).
_MOVED = frozenset({"GoalPlanner", "StepAgent"})


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("converge.orchestration.planner"), name)


class PlanMaker:
    """Plans how ``available_agents`` reach ``goal`` within ``constraints``.

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
        if not isinstance(goal, str) or not goal.strip():
            raise ValidationError(f"a goal is a non-empty text, not {goal!r}", field="goal")
        self.goal = goal
        self.agents = as_available(available_agents)
        if isinstance(constraints, Mapping):
            try:
                constraints = msgspec.convert(constraints, PlanConstraints)
            except msgspec.ValidationError as exc:
                if isinstance(exc.__cause__, ValidationError):  # raised by __post_init__
                    raise exc.__cause__ from None
                raise ValidationError(f"bad constraints: {exc}", field="constraints") from None
        self.constraints = constraints or PlanConstraints()
        self.provider = provider
        self.attempts = check_attempts(attempts)
        self.instructions = instructions
        self.plan: Plan | None = None

    @property
    def mode(self) -> str:
        """``"llm"`` when a provider is configured, else ``"rule"``."""
        return "llm" if self.provider is not None else "rule"

    def check(self, plan: Plan) -> Plan:
        """``plan`` if it fits the agents and constraints, else ``PlanRejected``."""
        return check_plan(plan, self.agents, self.constraints)

    # -- planning ----------------------------------------------------------------------------------

    async def create_plan(self, *, ctx: RunContext | None = None) -> Plan:
        """A checked plan for the goal (``ctx``: where LLM mode reports its usage).

        Raises:
            PlanRejected: the plan does not fit (rule mode), or no agent fits the goal.
            StructuredOutputError: LLM mode: no valid plan after ``attempts`` answers.
        """
        if self.provider is None:
            plan = self.check(self._rule_plan())
        else:
            plan = await ask_structured(
                self.provider,
                self._messages("Plan the steps that reach this goal."),
                self._schema(),
                lambda answer: self.check(Plan(self.goal, _steps_of(answer))),
                role="planner",
                attempts=self.attempts,
                ctx=ctx,
            )
        self.plan = plan
        return plan

    def _rule_plan(self) -> Plan:
        wanted = keywords(self.goal)
        steps: list[PlanStep] = []
        for agent in self.agents.values():
            if agent.words() & wanted:
                task = f"{agent.description}: {self.goal}" if agent.description else self.goal
                after = (steps[-1].id,) if steps else ()
                steps.append(PlanStep(agent.name, agent.name, task, after))
        if not steps:
            raise PlanRejected(
                f"no available agent fits the goal {self.goal!r}; agents: "
                f"{', '.join(self.agents)} (give them descriptions, capabilities or keywords)",
                reason="no_match",
            )
        return Plan(self.goal, tuple(steps))

    async def replan(
        self,
        from_node: str,
        error: str,
        completed: Mapping[str, Any] | Iterable[str],
        *,
        plan: Plan | None = None,
    ) -> Plan:
        """A checked plan for the remaining work after step ``from_node`` failed with
        ``error``: the steps replacing it (``replaces`` set), then the steps not yet done.

        Args:
            from_node: the failed step.
            error: why it failed.
            completed: the steps done (ids, or ``{id: output}``).
            plan: the plan that was running (default: the last one made).

        Raises:
            PlanRejected: no way to re-plan, or the new plan does not fit.
            StructuredOutputError: LLM mode: no valid answer.
        """
        plan = plan or self.plan
        if plan is None:
            raise PlanRejected("nothing to re-plan: no plan was made", reason="unknown_step")
        failed = plan.step(from_node)
        done = set(completed)
        finished = (*plan.completed, *(s.id for s in plan.steps if s.id in done))
        remaining = tuple(s for s in plan.steps if s.id not in done and s.id != failed.id)
        if self.provider is None:
            chain = (self._alternative(failed, {s.id for s in plan.steps}),)
            return self.check(Plan(plan.goal, (*chain, *remaining), finished))

        def check(answer: Any) -> Plan:
            chain = _as_chain(_steps_of(answer), failed)
            return self.check(Plan(plan.goal, (*chain, *remaining), finished))

        prompt = (
            f"Step {failed.id!r} (agent {failed.agent!r}, task {failed.task!r}) failed: {error}\n"
            f"Done: {', '.join(finished) or 'nothing'}. Still to run after it: "
            f"{', '.join(s.id for s in remaining) or 'nothing'}.\n"
            "Answer the steps that do the failed step's work instead; they run in a chain in "
            "its place and the last one's output stands for its output."
        )
        return await ask_structured(
            self.provider,
            self._messages(prompt),
            self._schema(),
            check,
            role="planner",
            attempts=self.attempts,
        )

    def _alternative(self, failed: PlanStep, taken: set[str]) -> PlanStep:
        agent = self.agents[failed.agent]
        caps, words = set(agent.capabilities), keywords(failed.task)
        best: tuple[int, int] = (0, 0)
        chosen: AvailableAgent | None = None
        for other in self.agents.values():
            if other.name == agent.name:
                continue
            score = (len(caps & set(other.capabilities)), len(words & other.words()))
            if score > best:
                best, chosen = score, other
        if chosen is None:
            raise PlanRejected(
                f"no other agent can take over step {failed.id!r} of {agent.name!r}",
                reason="no_alternative",
                step=failed.id,
            )
        step_id, n = f"{failed.id}_by_{chosen.name}", 1
        while step_id in taken:
            n += 1
            step_id = f"{failed.id}_by_{chosen.name}_{n}"
        return PlanStep(step_id, chosen.name, failed.task, failed.depends_on, failed.id)

    def _schema(self) -> dict[str, Any]:
        step = {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "agent": {"type": "string", "enum": list(self.agents)},
                "task": {"type": "string"},
                "depends_on": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["id", "agent", "task"],
            "additionalProperties": False,
        }
        return {
            "type": "object",
            "properties": {"steps": {"type": "array", "items": step, "minItems": 1}},
            "required": ["steps"],
            "additionalProperties": False,
        }

    def _messages(self, ask: str) -> list[ChatMessage]:
        listed = "\n".join(
            f"- {a.name}: {a.description or '(no description)'} (~{a.minutes:g} min)"
            for a in self.agents.values()
        )
        limits = [
            f"at most {self.constraints.max_steps} steps" if self.constraints.max_steps else "",
            f"the longest chain of dependent steps within {self.constraints.time_budget_minutes:g}"
            " minutes"
            if self.constraints.time_budget_minutes
            else "",
        ]
        system = (
            f"You plan work for these agents:\n{listed}\n"
            f"Constraints: {'; '.join(x for x in limits if x) or 'none'}.\n"
            'Answer as JSON: {"steps": [{"id": "<identifier>", "agent": "<agent>", '
            '"task": "<what to do>", "depends_on": ["<step id>", ...]}, ...]}.'
        )
        if self.instructions:
            system += "\n" + self.instructions
        return [
            ChatMessage("system", system),
            ChatMessage("user", f"Goal: {self.goal}\n{ask}"),
        ]


class _DraftStep(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    agent: str
    task: str
    depends_on: list[str] = msgspec.field(default_factory=list)


class _Draft(msgspec.Struct, forbid_unknown_fields=True):
    steps: list[_DraftStep]


def _steps_of(answer: Any) -> tuple[PlanStep, ...]:
    draft = msgspec.convert(answer, _Draft)  # msgspec.ValidationError: shown back, retried
    return tuple(PlanStep(s.id, s.agent, s.task, tuple(s.depends_on)) for s in draft.steps)


def _as_chain(steps: Sequence[PlanStep], failed: PlanStep) -> tuple[PlanStep, ...]:
    """Replacement steps as the engine runs them: a chain in the failed step's place."""
    if not steps:
        raise ValueError("give at least one step to replace the failed one")
    chain: list[PlanStep] = []
    for step in steps:
        after = (chain[-1].id,) if chain else failed.depends_on
        chain.append(PlanStep(step.id, step.agent, step.task, after, failed.id))
    return tuple(chain)
