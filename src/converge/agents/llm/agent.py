"""``LLMAgent``: a graph node's agent that asks a model.

One ``run(inputs, ctx)``:

1. renders the prompt: ``system`` (as is) and ``prompt`` (a template filled from the inputs,
   see ``render_prompt``);
2. calls the provider under ``CallPolicy``: each call has a timeout, and a retryable failure
   (rate limit, 5xx, timeout, lost connection, empty answer) is tried again after an
   exponential backoff slept on the injected ``sleep``;
3. if the model calls tools, runs them from the agent's ``ToolRegistry`` (in the order asked,
   a failing tool's error going back to the model as its result) and calls again, at most
   ``max_tool_rounds`` rounds;
4. with a ``response_schema``, decodes and checks the answer; one that does not fit is sent
   back once with what was wrong, and a second miss raises ``ResponseSchemaError``;
5. returns the text, or the decoded value with a schema.

Every call's tokens and cost (from the ``PriceTable``), and every tool call, go to
``ctx.report_usage``, so they land in the run's trace; with ``stream=True`` the answer's chunks
go to ``ctx.emit`` as they arrive (a retried call streams again from its start). Each call is
also recorded as a ``node.call`` (model, tokens, cost, attempt, error), and each tool call.

Tool calls go through ``SafeTools`` (the runtime's safe path): given a ``SafeTools``, its policy,
limits, per-call timeout and sandbox apply; given a registry or functions, they are wrapped in
an allow-all ``SafeTools`` with the default timeout. Only tools the policy allows are offered to
the model; a refused or failed call goes back to the model as the tool's result (``error:
ToolCallRefused: …``), so it may correct itself. A ``response_schema`` is a JSON Schema dict
(checked by ``_schema``, a small validator of the common subset) or a type (converted by
msgspec); ``ResponseSchemaError`` is an ``LLMError`` (the roles' own checked calls raise
``StructuredOutputError``). An empty answer is retryable. ``CallPolicy``'s backoff is
exponential, capped at ``max_backoff``, slept on the injected ``sleep``, each call under
``asyncio.timeout``. With ``max_prompt_tokens``, the conversation (tool results included) is
estimated before each call (about four characters a token, as memory's counter); over the
budget nothing is sent and ``PromptTooLong`` (a ``ValidationError`` with ``tokens`` and
``budget``) fails the node.

Measured (``bench/bench_llm.py``): a call costs ~0.03 ms of CPU over a bare SDK call (~0.9 ms)
against a zero-latency local server (target 0.5 ms); 200 LLM nodes at ``max_concurrent_agents:
50`` with 100 ms of server latency take 1.01-1.10x the wall time of the bare SDK making the same
200 calls 50 at a time (target 1.2x).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from converge.agents.llm._common import parse_json
from converge.agents.llm._prompt import render_prompt
from converge.agents.llm._schema import schema_error
from converge.agents.llm.base import ChatMessage, ChatResponse, LLMProvider
from converge.agents.llm.pricing import PriceTable
from converge.agents.memory._summarize import count_message, estimate_tokens
from converge.core.agent import Agent, RunContext
from converge.core.tools import Tool, ToolRegistry
from converge.errors import (
    LLMError,
    PromptTooLong,
    ResponseSchemaError,
    ToolRoundsExceeded,
    ValidationError,
)
from converge.runtime.tools import SafeTools

__all__ = ["CallPolicy", "LLMAgent"]

_FIX = (
    "Your answer does not follow the required JSON schema: {reason}. "
    "Answer again with only a JSON value that follows the schema."
)


class CallPolicy(msgspec.Struct, frozen=True):
    """How an ``LLMAgent`` calls its provider: timeout and retries."""

    attempts: int = 3
    """Tries per call (1: no retry)."""
    backoff: float = 1.0
    """Seconds before the first retry."""
    multiplier: float = 2.0
    """Each retry waits this much longer than the one before."""
    max_backoff: float = 30.0
    """The longest wait between tries."""
    timeout: float | None = 60.0
    """Seconds one call may take (``None``: no limit)."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValidationError("attempts must be at least 1", field="attempts")
        if self.timeout is not None and self.timeout <= 0:
            raise ValidationError("timeout must be positive", field="timeout")

    def delay(self, attempt: int) -> float:
        """The wait after failed try ``attempt`` (1-based)."""
        return float(min(self.max_backoff, self.backoff * self.multiplier ** (attempt - 1)))


class LLMAgent(Agent):
    """An agent whose work is a conversation with a model.

    Args:
        provider: the model behind an API (``OpenAIProvider``, ``AnthropicProvider``…).
        system: the system prompt.
        prompt: the user prompt's template, filled from the inputs (``"Review {code}"``);
            without one, the inputs themselves.
        tools: tools the model may call: a ``SafeTools`` (its policy, limits, timeout and
            sandbox apply), or a ``ToolRegistry`` or tools and functions (wrapped in a
            ``SafeTools`` that allows them all, with its default per-call timeout).
        response_schema: the answer must be JSON following this JSON Schema (a dict), or
            convertible to this type (a msgspec ``Struct``, dataclass, ``TypedDict``…).
        temperature: sampling temperature.
        max_tokens: the most tokens per answer.
        stream: stream the answer's chunks to ``ctx.emit``.
        policy: timeout and retries of each call.
        max_tool_rounds: the most rounds of tool calls in one run.
        prices: prices that turn tokens into cost (``PriceTable()`` by default).
        sleep: what waits between retries (inject a fake one in tests).
        name: the agent's name (default ``llm:<model>``).
        **kwargs: passed to ``Agent`` (``identity``, ``capabilities``, ``topics``).
    """

    def __init__(
        self,
        provider: LLMProvider,
        *,
        system: str | None = None,
        prompt: str | None = None,
        tools: SafeTools | ToolRegistry | Iterable[Tool | Callable[..., Any]] | None = None,
        response_schema: dict[str, Any] | type | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stream: bool = False,
        policy: CallPolicy | None = None,
        max_tool_rounds: int = 8,
        max_prompt_tokens: int | None = None,
        prices: PriceTable | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name or f"llm:{provider.model}", **kwargs)
        self.provider = provider
        self.system = system
        self.prompt = prompt
        # Every tool call goes through the safe path (allow/deny lists, the agent's tool-call
        # limit, a per-call timeout, the sandbox for unsafe tools), as the runtime's do.
        self.tools = tools if isinstance(tools, SafeTools) else SafeTools(_registry(tools))
        self._specs = tuple(self.tools.specs())
        self._schema_type: type | None = None
        self.response_schema: dict[str, Any] | None
        if isinstance(response_schema, type):
            self._schema_type = response_schema
            self.response_schema = msgspec.json.schema(response_schema)
        else:
            self.response_schema = response_schema
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.stream = stream
        self.policy = policy if policy is not None else CallPolicy()
        self.max_tool_rounds = max_tool_rounds
        if max_prompt_tokens is not None and (
            not isinstance(max_prompt_tokens, int) or max_prompt_tokens < 1
        ):
            raise ValidationError(
                f"max_prompt_tokens must be an int >= 1, not {max_prompt_tokens!r}",
                field="max_prompt_tokens",
            )
        self.max_prompt_tokens = max_prompt_tokens
        self.prices = prices if prices is not None else PriceTable()
        self._sleep = sleep

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Any:
        """Ask the model about ``inputs``: the text of its answer, or with a
        ``response_schema`` the decoded value.

        Raises:
            LLMError: the provider failed (after retries, if retryable).
            ResponseSchemaError: the answer broke the schema twice.
            ToolRoundsExceeded: the model kept calling tools.
            ValidationError: the prompt names an input the node does not have.
        """
        messages = [ChatMessage(role="user", content=render_prompt(self.prompt, inputs))]
        if self.system:
            messages.insert(0, ChatMessage(role="system", content=self.system))
        return await self.complete(messages, ctx)

    async def complete(self, messages: Sequence[ChatMessage], ctx: RunContext | None = None) -> Any:
        """Carry on the conversation ``messages`` to an answer (tools, schema and retries as
        for ``run``); usage goes to ``ctx`` when there is one."""
        history = list(messages)
        fixes_left = 1
        rounds = 0
        while True:
            response = await self._call(history, ctx)
            if response.tool_calls:
                if rounds >= self.max_tool_rounds:
                    raise ToolRoundsExceeded(self.provider.name, self.max_tool_rounds)
                rounds += 1
                history.append(
                    ChatMessage(
                        role="assistant",
                        content=response.content,
                        tool_calls=response.tool_calls,
                    )
                )
                history += await self._run_tools(response, ctx)
                continue
            if self.response_schema is None:
                return response.content
            value, reason = self._check(response.content)
            if reason is None:
                return value
            if fixes_left == 0:
                raise ResponseSchemaError(self.provider.name, response.content, reason)
            fixes_left -= 1
            history.append(ChatMessage(role="assistant", content=response.content))
            history.append(ChatMessage(role="user", content=_FIX.format(reason=reason)))

    async def _call(self, messages: Sequence[ChatMessage], ctx: RunContext | None) -> ChatResponse:
        if self.max_prompt_tokens is not None:
            tokens = sum(count_message(m, estimate_tokens) for m in messages)
            if tokens > self.max_prompt_tokens:
                raise PromptTooLong(self.name, tokens, self.max_prompt_tokens)
        policy = self.policy
        on_chunk = ctx.emit if (self.stream and ctx is not None) else None
        attempt = 0
        while True:
            attempt += 1
            started = _now(ctx)
            try:
                async with asyncio.timeout(policy.timeout):
                    response = await self.provider.chat(
                        messages,
                        tools=self._specs,
                        response_schema=self.response_schema,
                        max_tokens=self.max_tokens,
                        temperature=self.temperature,
                        on_chunk=on_chunk,
                    )
            except TimeoutError as exc:
                error = LLMError(
                    f"no answer within {policy.timeout} s",
                    provider=self.provider.name,
                    retryable=True,
                )
                error.__cause__ = exc
                _record(ctx, "llm", self.provider.model, started, attempt=attempt, error=str(error))
            except LLMError as exc:
                error = exc
                _record(ctx, "llm", self.provider.model, started, attempt=attempt, error=str(exc))
            else:
                if ctx is not None:
                    usage = response.usage
                    cost = self.prices.cost(response.model or self.provider.model, usage)
                    ctx.report_usage(
                        tokens_in=usage.tokens_in, tokens_out=usage.tokens_out, cost=cost
                    )
                    _record(
                        ctx,
                        "llm",
                        response.model or self.provider.model,
                        started,
                        attempt=attempt,
                        provider=self.provider.name,
                        tokens_in=usage.tokens_in,
                        tokens_out=usage.tokens_out,
                        cost=cost,
                        tool_calls=len(response.tool_calls) or None,
                    )
                if response.content or response.tool_calls:
                    return response
                error = LLMError(
                    "the model returned an empty answer",
                    provider=self.provider.name,
                    retryable=True,
                )
            if not error.retryable or attempt >= policy.attempts:
                raise error
            await self._sleep(policy.delay(attempt))

    async def _run_tools(self, response: ChatResponse, ctx: RunContext | None) -> list[ChatMessage]:
        results = []
        for call in response.tool_calls:
            started = _now(ctx)
            failure = None
            try:
                output = await self.tools.call(self.did, call.name, call.arguments)
                content = _text(output)
            except Exception as exc:
                # The model gets the failure as the tool's result and may correct itself.
                content = failure = f"error: {type(exc).__name__}: {exc}"
            _record(ctx, "tool", call.name, started, error=failure)
            results.append(
                ChatMessage(role="tool", content=content, tool_call_id=call.id, name=call.name)
            )
        if ctx is not None:
            ctx.report_usage(tool_calls=len(results))
        return results

    def _check(self, content: str) -> tuple[Any, str | None]:
        value = parse_json(content.strip())
        if value is None and content.strip() != "null":
            return None, "the answer is not JSON"
        if self._schema_type is not None:
            try:
                return msgspec.convert(value, self._schema_type, strict=False), None
            except msgspec.ValidationError as exc:
                return None, str(exc)
        assert self.response_schema is not None
        return value, schema_error(value, self.response_schema)

    async def aclose(self) -> None:
        """Close the provider's connections, if it holds any (idempotent)."""
        close = getattr(self.provider, "aclose", None)
        if close is not None:
            await close()

    async def on_stop(self) -> None:
        await self.aclose()

    async def __aenter__(self) -> LLMAgent:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"LLMAgent(name={self.name!r}, provider={self.provider!r})"


def _registry(tools: ToolRegistry | Iterable[Tool | Callable[..., Any]] | None) -> ToolRegistry:
    if isinstance(tools, ToolRegistry):
        return tools
    registry = ToolRegistry()
    for tool in tools or ():
        registry.register(tool)
    return registry


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return str(value)


def _now(ctx: RunContext | None) -> float:
    clock = getattr(ctx, "clock", None)
    return float(clock.now()) if clock is not None else time.time()


def _record(ctx: RunContext | None, kind: str, name: str, started: float, **details: Any) -> None:
    """Log the call on the node, when the context can (an engine's ``NodeContext`` can)."""
    record = getattr(ctx, "record_call", None)
    if record is not None:
        record(kind, name, started, _now(ctx), **details)
