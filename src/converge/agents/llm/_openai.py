"""``OpenAIProvider`` and ``CompatibleProvider``, on the OpenAI SDK.

``OpenAIProvider`` (``openai.AsyncOpenAI``) and ``CompatibleProvider`` (the same SDK pointed
at any OpenAI-compatible endpoint: Ollama, vLLM, LM Studio).

The SDK's own retries are off (``max_retries=0``): retrying is the caller's policy (an
``LLMAgent`` retries with backoff on its injected clock), and two layers of retries would
multiply. The client is created, and the SDK imported, on the first call. Structured output is
``response_format: json_schema`` (``strict`` optional); a stream asks for ``include_usage`` so
a streamed call reports its usage too. ``OpenAIProvider`` sends ``max_completion_tokens`` (what
OpenAI's newer models require), ``CompatibleProvider`` ``max_tokens`` (what local servers read).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import msgspec

from converge.agents.llm._common import (
    decode_arguments,
    openai_client,
    parse_json,
    resolve_key,
    translate_error,
)
from converge.agents.llm._urls import check_url
from converge.agents.llm.base import (
    ChatMessage,
    ChatResponse,
    ChunkCallback,
    LLMUsage,
    ToolCall,
    ToolSpec,
)
from converge.errors import LLMError, shown_url

__all__ = ["CompatibleProvider", "OpenAIProvider"]


class OpenAIProvider:
    """OpenAI's chat completions API through the official SDK.

    Args:
        model: the model to call (``gpt-4o-mini``…).
        api_key: the key; by default read from ``api_key_env``. Never shown by ``repr``.
        api_key_env: the environment variable holding the key.
        base_url: another endpoint speaking the same API (a proxy, Azure-style gateways): an
            http(s) URL; credentials in it are masked wherever it is shown.
        timeout: the SDK's HTTP timeout, seconds.
        strict_schema: ask for ``strict`` structured output (the schema must then close every
            object with ``additionalProperties: false``, as OpenAI requires).

    Raises:
        MissingAPIKey: no key given and ``api_key_env`` is not set.
        ValidationError: ``base_url`` is not an http(s) URL with a host.
    """

    _provider_name = "openai"
    # OpenAI's newer models refuse ``max_tokens``; most compatible servers only know it.
    _max_tokens_field = "max_completion_tokens"

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        base_url: str | None = None,
        timeout: float = 60.0,
        strict_schema: bool = False,
    ) -> None:
        if base_url is not None:
            check_url(base_url)
        self._model = model
        self._key = resolve_key(self._provider_name, api_key, api_key_env)
        self.base_url = base_url
        self.timeout = timeout
        self.strict_schema = strict_schema
        self._sdk: ModuleType | None = None
        self._client: Any = None

    @property
    def name(self) -> str:
        return self._provider_name

    @property
    def model(self) -> str:
        return self._model

    def _connect(self) -> tuple[ModuleType, Any]:
        if self._client is None:
            self._sdk, self._client = openai_client(
                self._provider_name, self._key, self.base_url, self.timeout
            )
        assert self._sdk is not None
        return self._sdk, self._client

    async def aclose(self) -> None:
        """Close the SDK client's connections (idempotent)."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolSpec] = (),
        response_schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        on_chunk: ChunkCallback | None = None,
    ) -> ChatResponse:
        sdk, client = self._connect()
        request: dict[str, Any] = {
            "model": self._model,
            "messages": [_message(m) for m in messages],
        }
        if tools:
            request["tools"] = [_tool(t) for t in tools]
        if response_schema is not None:
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": "response",
                    "schema": response_schema,
                    "strict": self.strict_schema,
                },
            }
        if max_tokens is not None:
            request[self._max_tokens_field] = max_tokens
        if temperature is not None:
            request["temperature"] = temperature
        try:
            if on_chunk is None:
                response = await client.chat.completions.create(**request)
                result = self._read(response)
            else:
                stream = await client.chat.completions.create(
                    **request, stream=True, stream_options={"include_usage": True}
                )
                result = await self._read_stream(stream, on_chunk)
        except LLMError:
            raise
        except (sdk.OpenAIError, ValueError) as exc:
            raise translate_error(sdk, self._provider_name, exc) from exc
        if response_schema is not None:
            result = _with_parsed(result)
        return result

    def _read(self, response: Any) -> ChatResponse:
        choices = getattr(response, "choices", None)
        if not choices:
            raise LLMError("malformed answer: no choices", provider=self._provider_name)
        choice = choices[0]
        message = choice.message
        calls = tuple(
            ToolCall(
                id=tc.id,
                name=tc.function.name,
                arguments=decode_arguments(
                    self._provider_name, tc.function.name, tc.function.arguments
                ),
            )
            for tc in message.tool_calls or ()
        )
        return ChatResponse(
            content=message.content or "",
            model=response.model or self._model,
            usage=_usage(response.usage),
            tool_calls=calls,
            finish_reason=choice.finish_reason,
        )

    async def _read_stream(self, stream: Any, on_chunk: ChunkCallback) -> ChatResponse:
        parts: list[str] = []
        calls: dict[int, list[str]] = {}  # index -> [id, name, arguments so far]
        usage = LLMUsage()
        model = self._model
        finish: str | None = None
        async for chunk in stream:
            model = chunk.model or model
            if chunk.usage is not None:
                usage = _usage(chunk.usage)
            for choice in chunk.choices:
                delta = choice.delta
                if delta.content:
                    parts.append(delta.content)
                    await on_chunk(delta.content)
                for tc in delta.tool_calls or ():
                    slot = calls.setdefault(tc.index, ["", "", ""])
                    slot[0] = tc.id or slot[0]
                    if tc.function is not None:
                        slot[1] += tc.function.name or ""
                        slot[2] += tc.function.arguments or ""
                finish = choice.finish_reason or finish
        tool_calls = tuple(
            ToolCall(id=cid, name=name, arguments=decode_arguments(self._provider_name, name, args))
            for cid, name, args in (calls[i] for i in sorted(calls))
        )
        return ChatResponse(
            content="".join(parts),
            model=model,
            usage=usage,
            tool_calls=tool_calls,
            finish_reason=finish,
        )

    def __repr__(self) -> str:
        where = f", base_url={shown_url(self.base_url)!r}" if self.base_url else ""
        return f"{type(self).__name__}(model={self._model!r}{where})"


class CompatibleProvider(OpenAIProvider):
    """Any endpoint that speaks OpenAI's chat completions API (Ollama, vLLM, LM Studio, a
    gateway), through the official ``openai`` SDK. Local and offline.

    Args:
        model: the model as the server names it (``llama3.2``…).
        base_url: the API root, e.g. ``http://localhost:11434/v1`` for Ollama.
        api_key: the key, if the server wants one.
        api_key_env: an environment variable to read the key from; ``None`` (the default)
            means the server needs no key.
        timeout: the HTTP timeout, seconds (local models can be slow to load).
        strict_schema: ask for ``strict`` structured output.

    Raises:
        MissingAPIKey: ``api_key_env`` is given but not set.
        ValidationError: ``base_url`` is not an http(s) URL with a host.
    """

    _provider_name = "compatible"
    _max_tokens_field = "max_tokens"

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str | None = None,
        api_key_env: str | None = None,
        timeout: float = 120.0,
        strict_schema: bool = False,
    ) -> None:
        super().__init__(
            model,
            api_key=api_key,
            api_key_env=api_key_env,
            base_url=base_url,
            timeout=timeout,
            strict_schema=strict_schema,
        )


def _message(m: ChatMessage) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content}
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["content"] = m.content or None
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in m.tool_calls
        ]
    return out


def _tool(t: ToolSpec) -> dict[str, Any]:
    parameters = t.parameters or {"type": "object", "properties": {}}
    return {
        "type": "function",
        "function": {"name": t.name, "description": t.description, "parameters": parameters},
    }


def _usage(usage: Any) -> LLMUsage:
    if usage is None:
        return LLMUsage()
    return LLMUsage(
        tokens_in=int(usage.prompt_tokens or 0), tokens_out=int(usage.completion_tokens or 0)
    )


def _with_parsed(result: ChatResponse) -> ChatResponse:
    return msgspec.structs.replace(result, parsed=parse_json(result.content))
