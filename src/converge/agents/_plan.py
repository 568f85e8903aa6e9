"""The goal planner's data and its checks.

``Plan``, ``PlanStep``, ``PlanConstraints``, ``AvailableAgent``, and the keyword rules of
rule-mode planning; a plan that does not fit is refused with ``PlanRejected``
(``converge.errors``, with a ``reason`` and the ``step``).

A plan is checked before anything runs (``check_plan``): at least one step; step ids are
unique identifiers (``goal`` and ``task`` are reserved); every step's agent is available; every
dependency names an earlier completed step or another step of the plan, without cycles; at most
``max_steps`` steps (completed steps of a re-plan count); and its critical path (the longest
chain of dependent steps, each step taking its agent's ``minutes``) fits
``time_budget_minutes``, which is also the graph's ``timeout_seconds``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from converge.core.agent import Agent
from converge.errors import PlanRejected, ValidationError

__all__ = [
    "AvailableAgent",
    "Plan",
    "PlanConstraints",
    "PlanStep",
    "as_available",
    "check_plan",
    "keywords",
]

_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class PlanConstraints(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a plan must fit."""

    max_steps: int | None = None
    """The most steps a run may take, completed ones included."""
    time_budget_minutes: float | None = None
    """The most minutes its critical path may take; also the run's timeout."""

    def __post_init__(self) -> None:
        if self.max_steps is not None and (isinstance(self.max_steps, bool) or self.max_steps < 1):
            raise ValidationError(
                f"max_steps must be >= 1, not {self.max_steps!r}", field="max_steps"
            )
        budget = self.time_budget_minutes
        if budget is not None and (isinstance(budget, bool) or budget <= 0):
            raise ValidationError(
                f"time_budget_minutes must be > 0, not {budget!r}", field="time_budget_minutes"
            )


class AvailableAgent(msgspec.Struct, frozen=True):
    """An agent a plan may use, with what the planner knows of it."""

    name: str
    """Its name in plans (a step's ``agent``)."""
    agent: Any
    """What does the work: an ``Agent``, a callable or a ``"module:attr"`` reference (None:
    the agent is only planned with; a graph of its plan cannot run it)."""
    description: str = ""
    """What it does (for matching, and shown to a model)."""
    capabilities: tuple[str, ...] = ()
    """Capability names it offers (an ``Agent``'s own are added)."""
    keywords: tuple[str, ...] = ()
    """Extra words of a goal that call for it."""
    minutes: float = 1.0
    """How long one of its steps is expected to take."""

    @classmethod
    def of(cls, name: str | None, value: Any) -> AvailableAgent:
        """``value`` as an ``AvailableAgent``: as is, or an agent named ``name`` (its own name
        if None), described by its ``description`` attribute and capabilities if it has them."""
        if isinstance(value, AvailableAgent):
            return value
        if isinstance(value, str) and name is not None and ":" not in value:
            return cls(name, None, value)  # {name: description}: plans, but runs nothing
        if name is None:
            name = getattr(value, "name", None) or getattr(value, "__name__", None)
        if not isinstance(name, str) or not _ID.match(name):
            raise ValidationError(
                f"an available agent needs a name that is an identifier, not {name!r}",
                field="available_agents",
            )
        caps: tuple[str, ...] = ()
        if isinstance(value, Agent):
            caps = tuple(sorted(c.name for c in value.capabilities))
        description = getattr(value, "description", "")
        return cls(name, value, str(description or ""), caps)

    def words(self) -> set[str]:
        """The keywords that call for it: from its name, capabilities, description and
        ``keywords``."""
        found = keywords(_split_name(self.name))
        for text in (*self.capabilities, self.description, *self.keywords):
            found |= keywords(text)
        return found


class PlanStep(msgspec.Struct, frozen=True, omit_defaults=True):
    """One step of a plan: an agent and its task."""

    id: str
    """Unique in the plan; its node id in the graph."""
    agent: str
    """The available agent that does it."""
    task: str
    """What it is asked to do (given to the agent as the input ``task``)."""
    depends_on: tuple[str, ...] = ()
    """Steps (or completed steps) whose outputs it needs and that must finish first."""
    replaces: str | None = None
    """In a re-plan: the failed step it stands in for."""


class Plan(msgspec.Struct, frozen=True):
    """A goal's steps, checked against the available agents and constraints."""

    goal: str
    """The goal."""
    steps: tuple[PlanStep, ...]
    """The steps, each after the steps it depends on."""
    completed: tuple[str, ...] = ()
    """In a re-plan: the steps already done, which dependencies may name."""

    def step(self, step_id: str) -> PlanStep:
        """The step with id ``step_id``.

        Raises:
            PlanRejected: no such step (reason ``unknown_step``).
        """
        for step in self.steps:
            if step.id == step_id:
                return step
        raise PlanRejected(f"the plan has no step {step_id!r}", reason="unknown_step", step=step_id)


def check_plan(
    plan: Plan, agents: Mapping[str, AvailableAgent], constraints: PlanConstraints
) -> Plan:
    """``plan`` if it fits ``agents`` and ``constraints``, else ``PlanRejected``."""
    if not plan.steps:
        raise PlanRejected(f"the plan for {plan.goal!r} has no steps", reason="empty")
    seen: dict[str, PlanStep] = {}
    for step in plan.steps:
        if not _ID.match(step.id) or step.id in ("goal", "task"):
            raise PlanRejected(
                f"step id {step.id!r} is not an identifier (or is reserved)",
                reason="bad_step_id",
                step=step.id,
            )
        if step.id in seen or step.id in plan.completed:
            raise PlanRejected(
                f"two steps are called {step.id!r}", reason="duplicate_step", step=step.id
            )
        if step.agent not in agents:
            raise PlanRejected(
                f"step {step.id!r} names agent {step.agent!r}, which is not available; "
                f"available: {', '.join(agents)}",
                reason="unknown_agent",
                step=step.id,
            )
        seen[step.id] = step
    stands_for = {s.replaces for s in plan.steps if s.replaces}
    for step in plan.steps:
        for dep in step.depends_on:
            if dep not in seen and dep not in plan.completed and dep not in stands_for:
                raise PlanRejected(
                    f"step {step.id!r} depends on {dep!r}, which is no step of the plan",
                    reason="unknown_dependency",
                    step=step.id,
                )
    finish = _critical_path(plan, seen, agents)
    total = len(plan.steps) + len(plan.completed)
    if constraints.max_steps is not None and total > constraints.max_steps:
        raise PlanRejected(
            f"the plan takes {total} steps, more than max_steps={constraints.max_steps}",
            reason="too_many_steps",
        )
    budget = constraints.time_budget_minutes
    if budget is not None and finish > budget:
        raise PlanRejected(
            f"the plan's critical path takes {finish:g} minutes, more than the "
            f"time budget of {budget:g}",
            reason="over_budget",
        )
    return plan


def _critical_path(
    plan: Plan, steps: Mapping[str, PlanStep], agents: Mapping[str, AvailableAgent]
) -> float:
    """Minutes of the longest chain of dependent steps; ``PlanRejected`` on a cycle."""
    finish: dict[str, float] = {}
    visiting: set[str] = set()
    alias = {s.replaces: s.id for s in plan.steps if s.replaces}  # the last of a chain

    def end(step_id: str) -> float:
        step_id = alias.get(step_id, step_id) if step_id not in steps else step_id
        if step_id in finish:
            return finish[step_id]
        if step_id not in steps:
            return 0.0  # a completed step
        if step_id in visiting:
            raise PlanRejected(
                f"step {step_id!r} depends on itself through {', '.join(sorted(visiting))}",
                reason="cycle",
                step=step_id,
            )
        visiting.add(step_id)
        step = steps[step_id]
        start = max((end(d) for d in step.depends_on), default=0.0)
        visiting.discard(step_id)
        finish[step_id] = start + agents[step.agent].minutes
        return finish[step_id]

    return max(end(s.id) for s in plan.steps)


_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an and are as at be by do for from has have in into is it its of on or so that the then "
    "this to up was we with our your you all any can will must should".split()
)
_SUFFIXES = ("ation", "ment", "ing", "ers", "er", "ed", "es", "s", "e")


def keywords(text: str) -> set[str]:
    """The keywords of ``text``: lower-cased words, stop words left out, each stemmed by
    stripping suffixes (``ation ment ing ers er ed es s e``, again and again) while 3 letters
    or more stay, so ``tests``, ``tester`` and ``testing`` are all ``test``, and
    ``implementation`` and ``implement`` one stem."""
    out: set[str] = set()
    for word in _WORD.findall(text.lower()):
        if word in _STOP:
            continue
        stripped = True
        while stripped:
            stripped = False
            for suffix in _SUFFIXES:
                if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                    word, stripped = word[: -len(suffix)], True
                    break
        out.add(word)
    return out


def _split_name(name: str) -> str:
    """``code_writer`` / ``codeWriter`` -> ``code writer``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|[_\-.@]", " ", name)


def as_available(agents: Iterable[Any] | Mapping[str, Any]) -> dict[str, AvailableAgent]:
    """``{name: AvailableAgent}`` from a sequence (names from the agents) or a mapping."""
    pairs = agents.items() if isinstance(agents, Mapping) else ((None, a) for a in agents)
    out: dict[str, AvailableAgent] = {}
    for name, value in pairs:
        available = AvailableAgent.of(name, value)
        if available.name in out:
            raise ValidationError(
                f"two available agents are called {available.name!r}", field="available_agents"
            )
        out[available.name] = available
    if not out:
        raise ValidationError(
            "a planner needs at least one available agent", field="available_agents"
        )
    return out
