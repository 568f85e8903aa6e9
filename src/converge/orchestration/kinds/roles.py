"""The agent roles as YAML kinds.

The agent roles (``converge.agents.roles``) as YAML kinds: ``kind: worker``, ``router``,
``critic``, ``supervisor``, ``planner``.

```yaml
agents:
  triage:
    kind: router
    routes: {billing: "invoices, refunds", tech: "bugs, outages"}
    rules: {billing: [invoice, refund]}
    default: tech
    # provider: mypackage.llm:provider      # LLM mode: an LLMProvider (or a factory of one)
  review: {kind: critic, criteria: {min_length: 20, forbidden: [TODO]}}
  boss: {kind: supervisor, workers: [en, fr]}
  shout: {kind: worker, template: "{input}!"}          # or fn: "mypackage.work:shout"
  plan: {kind: planner, agents: {coder: "writes code", tester: "tests code"}}
```

Every option is the role class's keyword argument of the same name (``agents`` is the
planner's ``available_agents``); the agent's name is its key under ``agents:``. ``provider``,
``fn`` and ``aggregate`` are ``"module:attr"`` references; ``provider`` names an
``LLMProvider`` or a factory of one (``load_provider``). A configured instance can be
referenced as ``module:attr`` (``kind: python``) instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from converge.agents.llm import LLMProvider
from converge.agents.roles import Critic, Planner, Router, Supervisor, Worker
from converge.errors import ValidationError
from converge.orchestration.kinds import Kind, KindContext
from converge.orchestration.object_refs import import_object_ref

__all__ = ["CRITIC", "PLANNER", "ROUTER", "SUPERVISOR", "WORKER", "load_provider"]

_LLM = {
    "provider": "LLM mode: ``module:attr`` of an ``LLMProvider`` or a factory of one "
    "(unset: rule mode).",
    "attempts": "LLM mode: calls before an invalid answer is an error (default 3).",
}


def load_provider(
    ref: Any, field: str = "provider", *, source: str | None = None, line: int | None = None
) -> LLMProvider:
    """A provider given as an object, or as ``"module:attr"`` naming one (or a factory of one
    that takes no arguments), as YAML gives it.

    Raises:
        ValidationError: a malformed reference, one that cannot be imported, a factory that
            fails, or something that is not an ``LLMProvider`` (at ``source``:``line``).
    """
    target = ref
    if isinstance(ref, str):
        target = import_object_ref(ref, field=field, source=source, line=line, what="provider")
    if isinstance(target, type) or (not isinstance(target, LLMProvider) and callable(target)):
        try:
            target = target()
        except Exception as exc:  # the factory's own failure, named rather than raised raw
            raise ValidationError(
                f"provider {ref!r}: calling it with no arguments failed: "
                f"{type(exc).__name__}: {exc}",
                field=field,
                source=source,
                line=line,
            ) from exc
    if not isinstance(target, LLMProvider):
        raise ValidationError(
            f"{ref!r} is a {type(target).__name__}, not an LLMProvider",
            field=field,
            source=source,
            line=line,
        )
    return target


def _reference(ctx: KindContext, found: dict[str, Any], key: str) -> None:
    """Replace ``found[key]`` (a ``"module:attr"``) by what it names."""
    if found.get(key) is not None:
        found[key] = ctx.reference(key, found[key])


def _builder(
    role: Callable[..., Any],
    allowed: Mapping[str, str],
    required: tuple[str, ...] = (),
    positional: str | None = None,
    references: tuple[str, ...] = (),
) -> Callable[[Mapping[str, Any], KindContext], Any]:
    def build(options: Mapping[str, Any], ctx: KindContext) -> Any:
        found = ctx.options(options, allowed, required)
        if found.get("provider") is not None:
            field = f"agents.{ctx.name}.provider"
            found["provider"] = load_provider(
                found["provider"], field, source=ctx.source, line=ctx.line
            )
        for key in references:
            _reference(ctx, found, key)
        args = [found.pop(positional)] if positional and positional in found else []
        if positional == "available_agents" and "agents" in found:
            args = [found.pop("agents")]
        try:
            return role(*args, name=ctx.name, **found)
        except ValidationError as exc:
            raise ctx.fail(exc.message, exc.field) from None

    return build


def _kind(
    name: str,
    doc: str,
    role: Callable[..., Any],
    options: Mapping[str, str],
    required: tuple[str, ...] = (),
    positional: str | None = None,
    references: tuple[str, ...] = (),
) -> Kind:
    allowed = {**options, **_LLM}
    builder = _builder(role, allowed, required, positional, references)
    return Kind(name, builder, options=allowed, required=required, doc=doc)


WORKER = _kind(
    "worker",
    "Does one step: a function, a template over its inputs, or (LLM mode) a prompt.",
    Worker,
    {
        "fn": "Rule mode: ``module:attr`` of ``fn(inputs)`` or ``fn(inputs, ctx)``.",
        "template": "Rule mode: a ``str.format`` template over the inputs (``{input}``, "
        "``{draft}``).",
        "prompt": "LLM mode: the user message, a template over the inputs.",
        "system": "LLM mode: the system message.",
        "response_schema": "LLM mode: a JSON Schema the answer must follow.",
        "description": "What the worker does (read by supervisors and planners).",
    },
    references=("fn",),
)
ROUTER = _kind(
    "router",
    "Returns the name of a route (the router pattern's contract).",
    Router,
    {
        "routes": "``{name: description}``, in the order rules are tried.",
        "rules": "Rule mode: ``{route: [regex, ...]}``, matched case-insensitively.",
        "default": "Rule mode: the route taken when no rule matches.",
        "instructions": "LLM mode: added to the system message.",
    },
    ("routes",),
    positional="routes",
)
CRITIC = _kind(
    "critic",
    "Judges its input: ``{score, passed, reasons}``.",
    Critic,
    {
        "criteria": "Checkable criteria: lengths, required/forbidden words and regexes, "
        "``json_schema``.",
        "rubric": "LLM mode: what the model judges against.",
        "threshold": "The score at or above which the verdict passes.",
        "subject": "The input reference to judge when the critic has several inputs.",
    },
    positional="criteria",
)
SUPERVISOR = _kind(
    "supervisor",
    "Splits work among workers and aggregates it (the supervisor pattern's contract).",
    Supervisor,
    {
        "workers": "The worker node ids, or ``{id: description}``.",
        "separator": "Rule mode: what splits a text task and joins parts and results.",
        "aggregate": "Rule mode: ``module:attr`` of ``aggregate([output, ...]) -> result``.",
        "instructions": "LLM mode: added to the system message.",
    },
    ("workers",),
    positional="workers",
    references=("aggregate",),
)
PLANNER = _kind(
    "planner",
    "Turns a goal into a checked plan of steps (returned as data).",
    Planner,
    {
        "agents": "The agents it may plan with: ``{name: description}``.",
        "constraints": "``max_steps`` and ``time_budget_minutes``.",
        "instructions": "LLM mode: added to the system message.",
    },
    ("agents",),
    positional="available_agents",
)
