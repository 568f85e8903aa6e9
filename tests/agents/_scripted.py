"""A scripted ``LLMProvider``: an in-test implementation of converge's own provider protocol
that answers each call with the next canned answer and records what it was asked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from converge.agents.llm import ChatMessage, ChatResponse, LLMUsage, ToolSpec


class ScriptedProvider:
    """Answers call ``i`` with ``answers[i]``: a dict or list is a structured answer (its JSON
    and ``parsed``), a string plain text."""

    name = "scripted"
    model = "scripted-1"

    def __init__(self, answers: Sequence[Any]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[list[ChatMessage], dict[str, Any] | None]] = []

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolSpec] = (),
        response_schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        on_chunk: Any = None,
    ) -> ChatResponse:
        self.calls.append((list(messages), response_schema))
        if not self.answers:
            raise AssertionError("the scripted provider ran out of answers")
        answer = self.answers.pop(0)
        usage = LLMUsage(tokens_in=10, tokens_out=5)
        if isinstance(answer, str):
            return ChatResponse(answer, self.model, usage)
        text = msgspec.json.encode(answer).decode()
        return ChatResponse(text, self.model, usage, parsed=answer)

    def said(self, call: int) -> str:
        """The last message of call ``call``."""
        return self.calls[call][0][-1].content
