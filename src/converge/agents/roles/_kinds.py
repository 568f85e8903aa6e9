"""The roles as YAML kinds: ``kind: worker``, ``router``, ``critic``, ``supervisor``,
``planner``.

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
``fn`` and ``aggregate`` are ``"module:attr"`` references. A configured instance can be
referenced as ``module:attr`` (``kind: python``) instead.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from converge.agents._structured import load_provider
from converge.agents.roles.critic import Critic
from converge.agents.roles.planner import Planner
from converge.agents.roles.router import Router
from converge.agents.roles.supervisor import Supervisor
from converge.agents.roles.worker import Worker
from converge.errors import ValidationError
from converge.orchestration.kinds import KindContext, register_kind

__all__: list[str] = []

_LLM = ("provider", "attempts")


def _reference(ctx: KindContext, found: dict[str, Any], key: str) -> None:
    """Replace ``found[key]`` (a ``"module:attr"``) by what it names."""
    ref = found.get(key)
    if ref is None:
        return
    if not isinstance(ref, str) or ":" not in ref:
        raise ctx.fail(f"{key} is 'module:attr', not {ref!r}", key)
    module_name, _, attr = ref.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ctx.fail(f"cannot load {key} {ref!r}: {exc}", key) from None
    found[key] = target


def _builder(
    role: Callable[..., Any],
    allowed: tuple[str, ...],
    required: tuple[str, ...] = (),
    positional: str | None = None,
    references: tuple[str, ...] = (),
) -> Callable[[Mapping[str, Any], KindContext], Any]:
    def build(options: Mapping[str, Any], ctx: KindContext) -> Any:
        found = ctx.options(options, allowed, required)
        if found.get("provider") is not None:
            try:
                found["provider"] = load_provider(found["provider"])
            except ValidationError as exc:
                raise ctx.fail(exc.message, "provider") from None
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


register_kind(
    "worker",
    _builder(
        Worker,
        ("fn", "template", "prompt", "system", "response_schema", "description", *_LLM),
        references=("fn",),
    ),
)
register_kind(
    "router",
    _builder(
        Router,
        ("routes", "rules", "default", "instructions", *_LLM),
        ("routes",),
        positional="routes",
    ),
)
register_kind(
    "critic",
    _builder(
        Critic,
        ("criteria", "rubric", "threshold", "subject", *_LLM),
        positional="criteria",
    ),
)
register_kind(
    "supervisor",
    _builder(
        Supervisor,
        ("workers", "separator", "aggregate", "instructions", *_LLM),
        ("workers",),
        positional="workers",
        references=("aggregate",),
    ),
)
register_kind(
    "planner",
    _builder(
        Planner,
        ("agents", "constraints", "instructions", *_LLM),
        ("agents",),
        positional="available_agents",
    ),
)
