"""``Worker``: the role that does one task, by rule or by a model.

```python
upper = Worker(lambda inputs: inputs["text"].upper())         # a function
greet = Worker(template="Dear {name},\\n{body}")                 # a template over the inputs
draft = Worker(provider=llm, prompt="Write a haiku about {topic}.")   # LLM mode
```

Rule mode (no provider): ``fn(inputs)`` (sync or async, or ``fn(inputs, ctx)``), or
``template`` filled with the inputs (see ``render``: ``{topic}``, ``{draft}`` for
``draft.output``, ``{input}`` for a single input). LLM mode (a provider is given): ``prompt``
(a template, default ``{inputs}``) is sent after the optional ``system`` message; the answer's
text is the output, or with ``response_schema`` its decoded JSON (retried while invalid).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from converge.agents._structured import ask_structured, check_attempts, render
from converge.agents.llm.base import ChatMessage, LLMProvider
from converge.core.agent import Agent, RunContext
from converge.core.capability import Capability
from converge.errors import ValidationError

__all__ = ["Worker"]


class Worker(Agent):
    """Does a task: a function, a template, or (with a provider) a prompt.

    Args:
        fn: rule mode: the function doing the work, ``fn(inputs)`` or ``fn(inputs, ctx)``.
        template: rule mode: a ``str.format`` template filled from the inputs.
        provider: switches on LLM mode.
        prompt: LLM mode: the user message, a template over the inputs.
        system: LLM mode: the system message.
        response_schema: LLM mode: a JSON schema the answer must follow; the output is then
            the decoded answer.
        attempts: LLM mode with a schema: calls before an invalid answer is an error.
        description: what the worker does (read by supervisors and planners).
        name: the agent's name.
        capabilities: what it can do.

    Raises:
        ValidationError: neither ``fn``, ``template`` nor ``provider``, or both rule modes.
    """

    def __init__(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        template: str | None = None,
        provider: LLMProvider | None = None,
        prompt: str = "{inputs}",
        system: str | None = None,
        response_schema: dict[str, Any] | None = None,
        attempts: int = 3,
        description: str = "",
        name: str | None = None,
        capabilities: Iterable[Capability | str] = (),
    ) -> None:
        super().__init__(name=name or "worker", capabilities=capabilities)
        if fn is not None and template is not None:
            raise ValidationError("a worker has a function or a template, not both", field="fn")
        if fn is None and template is None and provider is None:
            raise ValidationError(
                "a worker needs a function, a template, or a provider (LLM mode)", field="fn"
            )
        if fn is not None and not callable(fn):
            raise ValidationError(f"fn must be callable, not {fn!r}", field="fn")
        self.fn = fn
        self.template = template
        self.provider = provider
        self.prompt = prompt
        self.system = system
        self.response_schema = response_schema
        self.attempts = check_attempts(attempts)
        self.description = description
        self._takes_ctx = fn is not None and _takes_ctx(fn)

    @property
    def mode(self) -> str:
        """``"llm"`` when a provider is configured, else ``"rule"``."""
        return "llm" if self.provider is not None else "rule"

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Any:
        """Do the task on ``inputs``."""
        if self.provider is not None:
            return await self._ask(self.provider, inputs, ctx)
        if self.fn is None:
            assert self.template is not None
            return render(self.template, inputs)
        result = self.fn(inputs, ctx) if self._takes_ctx else self.fn(inputs)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _ask(self, provider: LLMProvider, inputs: Mapping[str, Any], ctx: RunContext) -> Any:
        messages = [ChatMessage("system", self.system)] if self.system else []
        messages.append(ChatMessage("user", render(self.prompt, inputs)))
        if self.response_schema is not None:
            return await ask_structured(
                provider,
                messages,
                self.response_schema,
                lambda answer: answer,
                role=self.name,
                attempts=self.attempts,
                ctx=ctx,
            )
        response = await provider.chat(messages)
        ctx.report_usage(response.usage.tokens_in, response.usage.tokens_out)
        return response.content


def _takes_ctx(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    required = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(required) >= 2
