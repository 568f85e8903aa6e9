"""What every LLM provider speaks: messages in, a response out.

A response holds text, tool calls and usage.

The types are provider-neutral msgspec structs; each provider translates them to and from its
SDK's wire format at its boundary, and translates the SDK's errors into ``LLMError`` (with
``retryable`` set for rate limits, timeouts and 5xx answers). Streaming is a callback that gets
each text chunk as it arrives (an LLM agent hands it to ``ctx.emit``), so a streamed call and a
plain one return the same ``ChatResponse``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

from converge.core.tools import ToolSpec
from converge.errors import LLMError

__all__ = [
    "ChatMessage",
    "ChatResponse",
    "ChunkCallback",
    "LLMError",
    "LLMProvider",
    "LLMUsage",
    "Role",
    "ToolCall",
    "ToolSpec",
]

Role = Literal["system", "user", "assistant", "tool"]
ChunkCallback = Callable[[str], Awaitable[None]]
"""Called with each text chunk of a streamed answer, in order."""


class ToolCall(msgspec.Struct, frozen=True):
    """A tool call the model asked for."""

    id: str
    """The call's id (answer it with a ``tool`` message carrying this ``tool_call_id``)."""
    name: str
    """The tool's name."""
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)
    """Its arguments, decoded from the model's JSON."""


class ChatMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    """One message of a conversation."""

    role: Role
    """Who speaks: ``system``, ``user``, ``assistant`` or ``tool`` (a tool's result)."""
    content: str = ""
    """The text."""
    tool_calls: tuple[ToolCall, ...] = ()
    """For an assistant message: the tool calls it made."""
    tool_call_id: str | None = None
    """For a tool message: the call it answers."""
    name: str | None = None
    """For a tool message: the tool's name."""


class LLMUsage(msgspec.Struct, frozen=True):
    """Tokens a call used."""

    tokens_in: int = 0
    """Prompt tokens."""
    tokens_out: int = 0
    """Completion tokens."""


class ChatResponse(msgspec.Struct, frozen=True):
    """What a call returned."""

    content: str
    """The answer's text (empty if it only called tools)."""
    model: str
    """The model that answered."""
    usage: LLMUsage = LLMUsage()
    """Tokens used."""
    tool_calls: tuple[ToolCall, ...] = ()
    """Tool calls the model asked for."""
    finish_reason: str | None = None
    """Why it stopped (``stop``, ``length``, ``tool_calls``…), as the provider says."""
    parsed: Any = None
    """With a ``response_schema``: the answer decoded as JSON (checked by the caller)."""


@runtime_checkable
class LLMProvider(Protocol):
    """A chat model behind an API."""

    @property
    def name(self) -> str:
        """The provider's name (``openai``, ``anthropic``, ``compatible``)."""
        ...

    @property
    def model(self) -> str:
        """The model it calls."""
        ...

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
        """One call: ``messages`` in, the model's answer out.

        Args:
            messages: the conversation.
            tools: tools the model may call.
            response_schema: a JSON Schema the answer must follow (structured output).
            max_tokens: the most tokens to generate.
            temperature: sampling temperature.
            on_chunk: stream the answer: called with each text chunk as it arrives.

        Raises:
            LLMError: the call failed (``retryable`` says whether to try again).
        """
        ...
