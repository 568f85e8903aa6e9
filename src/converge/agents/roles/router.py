"""``Router``: the role that picks one route from a described set.

```python
triage = Router(
    {"billing": "invoices, refunds, payments", "tech": "bugs, errors, outages"},
    rules={"billing": ["invoice", "refund"], "tech": [r"\\berror\\b", "crash"]},
    default="tech",
)
graph = router(triage, {"billing": billing_desk, "tech": tech_desk})   # the router pattern
```

Its output is the chosen route's name, which is what the ``router`` pattern reads.

Rule mode (no provider): the inputs as text (a single input's value; several: their string
values, one per line) are searched with each route's ``rules`` — regular expressions, matched
case-insensitively, so a plain word matches where it occurs — routes tried in the order
``routes`` lists them; the first route with a match wins; else ``default``; else
``NoMatchingRoute`` naming the choices. LLM mode (a provider is given): the model is shown the
routes and their descriptions and answers ``{"route": name, "reason": ...}``; a name that is
not a route is shown back to it and asked again, up to ``attempts`` calls, then
``StructuredOutputError``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from converge.agents._structured import ask_structured, check_attempts, text_of
from converge.agents.llm.base import ChatMessage, LLMProvider
from converge.core.agent import Agent, RunContext
from converge.core.capability import Capability
from converge.errors import NoMatchingRoute, ValidationError

__all__ = ["NoMatchingRoute", "Router"]


class Router(Agent):
    """Picks one of ``routes`` for its input.

    Args:
        routes: ``{name: description}``, in the order rules are tried.
        rules: rule mode: ``{route: [regex, ...]}``, matched case-insensitively.
        default: rule mode: the route taken when no rule matches.
        provider: switches on LLM mode.
        instructions: LLM mode: added to the system message.
        attempts: LLM mode: calls before an answer naming no route is an error.
        name: the agent's name.
        capabilities: what it can do.

    Raises:
        ValidationError: no routes, rules or a default naming an unknown route, or a rule that
            is not a regular expression.
    """

    def __init__(
        self,
        routes: Mapping[str, str] | Sequence[str],
        *,
        rules: Mapping[str, Sequence[str]] | None = None,
        default: str | None = None,
        provider: LLMProvider | None = None,
        instructions: str = "",
        attempts: int = 3,
        name: str | None = None,
        capabilities: Iterable[Capability | str] = (),
    ) -> None:
        super().__init__(name=name or "router", capabilities=capabilities)
        if isinstance(routes, str) or not isinstance(routes, Mapping | Sequence):
            raise ValidationError(
                f"routes are {{name: description}}, not {routes!r}", field="routes"
            )
        described = dict(routes) if isinstance(routes, Mapping) else dict.fromkeys(routes, "")
        if not described or not all(isinstance(r, str) and r for r in described):
            raise ValidationError("a router needs at least one named route", field="routes")
        self.routes: dict[str, str] = {r: str(d or "") for r, d in described.items()}
        if default is not None and default not in self.routes:
            raise ValidationError(
                f"default {default!r} is not a route; routes: {', '.join(self.routes)}",
                field="default",
            )
        self.default = default
        self.rules = _compile(rules or {}, self.routes)
        self.provider = provider
        self.instructions = instructions
        self.attempts = check_attempts(attempts)

    @property
    def mode(self) -> str:
        """``"llm"`` when a provider is configured, else ``"rule"``."""
        return "llm" if self.provider is not None else "rule"

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> str:
        """The name of the route for ``inputs``."""
        text = _text(inputs)
        if self.provider is None:
            return self.choose(text)
        return await ask_structured(
            self.provider,
            self._messages(text),
            self.schema(),
            self._check,
            role=self.name,
            attempts=self.attempts,
            ctx=ctx,
        )

    def choose(self, text: str) -> str:
        """Rule mode: the first route whose rules match ``text``, else the default.

        Raises:
            NoMatchingRoute: nothing matched and there is no default.
        """
        for route, patterns in self.rules.items():
            if any(p.search(text) for p in patterns):
                return route
        if self.default is not None:
            return self.default
        raise NoMatchingRoute(self.name, text, self.routes)

    def schema(self) -> dict[str, Any]:
        """The JSON schema of the model's answer."""
        return {
            "type": "object",
            "properties": {
                "route": {"type": "string", "enum": list(self.routes)},
                "reason": {"type": "string"},
            },
            "required": ["route"],
            "additionalProperties": False,
        }

    def _messages(self, text: str) -> list[ChatMessage]:
        listed = "\n".join(f"- {r}: {d}" if d else f"- {r}" for r, d in self.routes.items())
        system = (
            "You route a request to exactly one of these routes:\n"
            f"{listed}\n"
            'Answer as JSON: {"route": "<one of the names above>", "reason": "<why>"}.'
        )
        if self.instructions:
            system += "\n" + self.instructions
        return [ChatMessage("system", system), ChatMessage("user", text)]

    def _check(self, answer: Any) -> str:
        route = answer.get("route") if isinstance(answer, Mapping) else None
        if route not in self.routes:
            raise ValueError(
                f"route {route!r} is not one of {', '.join(self.routes)}"
                if isinstance(answer, Mapping)
                else f'expected {{"route": name}}, got {answer!r}'
            )
        return str(route)


def _compile(
    rules: Mapping[str, Sequence[str]], routes: Mapping[str, str]
) -> dict[str, list[re.Pattern[str]]]:
    if not isinstance(rules, Mapping):
        raise ValidationError(f"rules are {{route: [regex, ...]}}, not {rules!r}", field="rules")
    compiled: dict[str, list[re.Pattern[str]]] = {}
    for route in routes:  # the order of the routes is the order rules are tried
        patterns = rules.get(route, ())
        if isinstance(patterns, str):
            patterns = [patterns]
        out = []
        for i, pattern in enumerate(patterns):
            try:
                out.append(re.compile(pattern, re.IGNORECASE))
            except (re.error, TypeError) as exc:
                raise ValidationError(
                    f"rule {pattern!r} of route {route!r} is not a regular expression: {exc}",
                    field=f"rules.{route}.{i}",
                ) from None
        if out:
            compiled[route] = out
    for route in rules:
        if route not in routes:
            raise ValidationError(
                f"rules name {route!r}, which is not a route; routes: {', '.join(routes)}",
                field=f"rules.{route}",
            )
    return compiled


def _text(inputs: Mapping[str, Any]) -> str:
    if len(inputs) == 1:
        return text_of(next(iter(inputs.values())))
    return "\n".join(text_of(v) for v in inputs.values() if isinstance(v, str))
