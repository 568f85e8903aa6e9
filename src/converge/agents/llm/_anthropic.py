"""``AnthropicProvider``: Anthropic's messages API through its SDK.

The SDK is the official one (``anthropic.AsyncAnthropic``).

Translation to the messages API: ``system`` messages become the ``system`` parameter; a
``tool`` message becomes a ``tool_result`` block of a user turn, and consecutive turns of one
role are merged (the API wants user and assistant to alternate, with every result of a round of
tool calls in one user turn). Structured output is ``output_config.format`` (a JSON schema).
As for OpenAI, the SDK's own retries are off: retrying is the caller's policy. The SDK no longer
takes ``temperature`` as a keyword, so it goes in ``extra_body``. A stream's usage comes from
``message_delta``, which is cumulative and replaces ``message_start``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import msgspec

from converge.agents.llm._common import (
    decode_arguments,
    import_sdk,
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

__all__ = ["AnthropicProvider"]

_NAME = "anthropic"


class AnthropicProvider:
    """Claude models through the official ``anthropic`` SDK.

    Args:
        model: the model to call (``claude-sonnet-4-5``…).
        api_key: the key; by default read from ``api_key_env``. Never shown by ``repr``.
        api_key_env: the environment variable holding the key.
        base_url: another endpoint speaking the same API: an http(s) URL; credentials in it
            are masked wherever it is shown.
        timeout: the SDK's HTTP timeout, seconds.
        default_max_tokens: ``max_tokens`` when a call gives none (the API requires one).

    Raises:
        MissingAPIKey: no key given and ``api_key_env`` is not set.
        ValidationError: ``base_url`` is not an http(s) URL with a host.
    """

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        api_key_env: str = "ANTHROPIC_API_KEY",
        base_url: str | None = None,
        timeout: float = 60.0,
        default_max_tokens: int = 4096,
    ) -> None:
        if base_url is not None:
            check_url(base_url)
        self._model = model
        self._key = resolve_key(_NAME, api_key, api_key_env)
        self.base_url = base_url
        self.timeout = timeout
        self.default_max_tokens = default_max_tokens
        self._sdk: ModuleType | None = None
        self._client: Any = None

    @property
    def name(self) -> str:
        return _NAME

    @property
    def model(self) -> str:
        return self._model

    def _connect(self) -> tuple[ModuleType, Any]:
        if self._client is None:
            sdk = import_sdk(_NAME, "anthropic")
            self._client = sdk.AsyncAnthropic(
                api_key=self._key, base_url=self.base_url, timeout=self.timeout, max_retries=0
            )
            self._sdk = sdk
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
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        request: dict[str, Any] = {
            "model": self._model,
            "messages": _turns(messages),
            "max_tokens": max_tokens if max_tokens is not None else self.default_max_tokens,
        }
        if system:
            request["system"] = system
        if tools:
            request["tools"] = [
                {
                    "name": t.name,
                    "description": t.description,
                    "input_schema": t.parameters or {"type": "object", "properties": {}},
                }
                for t in tools
            ]
        if response_schema is not None:
            request["output_config"] = {
                "format": {"type": "json_schema", "schema": response_schema}
            }
        if temperature is not None:
            # Recent SDKs dropped the keyword; the API still reads the field.
            request["extra_body"] = {"temperature": temperature}
        try:
            if on_chunk is None:
                result = self._read(await client.messages.create(**request))
            else:
                stream = await client.messages.create(**request, stream=True)
                result = await self._read_stream(stream, on_chunk)
        except LLMError:
            raise
        except (sdk.AnthropicError, ValueError) as exc:
            raise translate_error(sdk, _NAME, exc) from exc
        if response_schema is not None:
            result = msgspec.structs.replace(result, parsed=parse_json(result.content))
        return result

    def _read(self, message: Any) -> ChatResponse:
        blocks = getattr(message, "content", None)
        if blocks is None:
            raise LLMError("malformed answer: no content", provider=_NAME)
        text: list[str] = []
        calls: list[ToolCall] = []
        for block in blocks:
            if block.type == "text":
                text.append(block.text)
            elif block.type == "tool_use":
                calls.append(ToolCall(id=block.id, name=block.name, arguments=dict(block.input)))
        usage = message.usage
        return ChatResponse(
            content="".join(text),
            model=message.model or self._model,
            usage=LLMUsage(
                tokens_in=int(usage.input_tokens or 0), tokens_out=int(usage.output_tokens or 0)
            ),
            tool_calls=tuple(calls),
            finish_reason=message.stop_reason,
        )

    async def _read_stream(self, stream: Any, on_chunk: ChunkCallback) -> ChatResponse:
        text: list[str] = []
        tools: dict[int, list[str]] = {}  # block index -> [id, name, partial JSON]
        tokens_in = tokens_out = 0
        model = self._model
        finish: str | None = None
        async for event in stream:
            kind = event.type
            if kind == "content_block_delta":
                delta = event.delta
                if delta.type == "text_delta":
                    text.append(delta.text)
                    await on_chunk(delta.text)
                elif delta.type == "input_json_delta" and event.index in tools:
                    tools[event.index][2] += delta.partial_json
            elif kind == "content_block_start":
                block = event.content_block
                if block.type == "tool_use":
                    tools[event.index] = [block.id, block.name, ""]
            elif kind == "message_start":
                model = event.message.model or model
                tokens_in = int(event.message.usage.input_tokens or 0)
                tokens_out = int(event.message.usage.output_tokens or 0)
            elif kind == "message_delta":
                finish = event.delta.stop_reason or finish
                # The usage of message_delta is cumulative: it replaces the start's.
                tokens_out = int(event.usage.output_tokens or 0)
                if getattr(event.usage, "input_tokens", None):
                    tokens_in = int(event.usage.input_tokens)
        calls = tuple(
            ToolCall(id=cid, name=name, arguments=decode_arguments(_NAME, name, args))
            for cid, name, args in (tools[i] for i in sorted(tools))
        )
        return ChatResponse(
            content="".join(text),
            model=model,
            usage=LLMUsage(tokens_in=tokens_in, tokens_out=tokens_out),
            tool_calls=calls,
            finish_reason=finish,
        )

    def __repr__(self) -> str:
        where = f", base_url={shown_url(self.base_url)!r}" if self.base_url else ""
        return f"AnthropicProvider(model={self._model!r}{where})"


def _turns(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        role = "assistant" if m.role == "assistant" else "user"
        blocks: list[dict[str, Any]] = []
        if m.role == "tool":
            blocks.append(
                {"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": m.content}
            )
        elif m.content:
            blocks.append({"type": "text", "text": m.content})
        blocks += [
            {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
            for c in m.tool_calls
        ]
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return turns
