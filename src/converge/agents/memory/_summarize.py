"""Counting tokens and folding old turns into a summary.

``ConversationMemory`` needs two things it cannot know by itself: how many tokens a text costs
(``TokenCounter``: a deterministic estimate by default, or a model's own tokenizer) and how to
shorten the oldest turns (``Summarizer``: ``RuleSummarizer`` offline and deterministic, or
``LLMSummarizer`` asking any object with ``LLMProvider.chat``; the ``ChatModel`` protocol is that
method's subset). ``estimate_tokens`` is about four characters a token; a message costs 4 more.
``RuleSummarizer`` writes ``role: first sentence`` per turn, cut to 160 characters, and drops the
oldest lines first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import msgspec

from converge.agents.llm.base import ChatMessage, ChatResponse
from converge.errors import ValidationError

__all__ = [
    "MESSAGE_OVERHEAD",
    "ChatModel",
    "LLMSummarizer",
    "RuleSummarizer",
    "Summarizer",
    "TokenCounter",
    "count_message",
    "estimate_tokens",
    "truncate_to_tokens",
]

TokenCounter = Callable[[str], int]
"""Tokens a text costs. Must be deterministic and grow with the text (a prefix never costs more
than the whole)."""

MESSAGE_OVERHEAD = 4
"""Tokens each message costs beyond its text (role and separators, as chat formats add)."""

_ELLIPSIS = "…"
_SENTENCE = re.compile(r"(.+?[.!?])(?=\s|$)", re.DOTALL)
_SPACES = re.compile(r"\s+")


def estimate_tokens(text: str) -> int:
    """About four characters per token, the usual rule of thumb for English with BPE tokenizers.

    Deterministic and dependency-free; pass a model's tokenizer as the counter where the budget
    must be exact.
    """
    return (len(text) + 3) // 4


def count_message(message: ChatMessage, counter: TokenCounter) -> int:
    """Tokens ``message`` costs in a prompt: its text, its tool calls and ``MESSAGE_OVERHEAD``."""
    n = MESSAGE_OVERHEAD + counter(message.content)
    for call in message.tool_calls:
        n += counter(call.name) + counter(msgspec.json.encode(call.arguments).decode())
    return n


def truncate_to_tokens(text: str, limit: int, counter: TokenCounter) -> str:
    """The longest prefix of ``text`` (with an ellipsis when cut) that costs at most ``limit``."""
    if counter(text) <= limit:
        return text
    lo, hi = 0, len(text)  # binary search on the prefix length: counters are monotonic
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if counter(text[:mid].rstrip() + _ELLIPSIS) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + _ELLIPSIS if lo else ""


@runtime_checkable
class Summarizer(Protocol):
    """Folds the oldest turns of a conversation into its running summary."""

    async def summarize(
        self, previous: str, messages: Sequence[ChatMessage], *, max_tokens: int
    ) -> str:
        """A summary of ``previous`` (the summary so far, maybe empty) followed by ``messages``.

        Aim for at most ``max_tokens``; ``ConversationMemory`` truncates a longer answer.
        """
        ...


class RuleSummarizer:
    """Deterministic, offline: one line per turn, ``role: first sentence`` cut to a length.

    When the lines exceed the budget the oldest ones go first, so the summary keeps the most
    recent of what was folded.

    Args:
        max_chars_per_turn: the longest line kept for one turn.
        counter: the token counter the budget is measured with.
    """

    def __init__(
        self, *, max_chars_per_turn: int = 160, counter: TokenCounter = estimate_tokens
    ) -> None:
        if max_chars_per_turn < 8:
            raise ValidationError(
                f"max_chars_per_turn must be >= 8, not {max_chars_per_turn}",
                field="max_chars_per_turn",
            )
        self.max_chars_per_turn = max_chars_per_turn
        self.counter = counter

    async def summarize(
        self, previous: str, messages: Sequence[ChatMessage], *, max_tokens: int
    ) -> str:
        """``previous``'s lines and one line per message, oldest dropped to fit ``max_tokens``."""
        lines = [line for line in previous.splitlines() if line]
        lines.extend(self._line(m) for m in messages)
        lines = [line for line in lines if line]
        while len(lines) > 1 and self.counter("\n".join(lines)) > max_tokens:
            lines.pop(0)
        return truncate_to_tokens("\n".join(lines), max_tokens, self.counter)

    def _line(self, message: ChatMessage) -> str:
        text = _SPACES.sub(" ", message.content).strip()
        match = _SENTENCE.match(text)
        if match is not None:
            text = match.group(1)
        if not text and message.tool_calls:
            text = "called " + ", ".join(c.name for c in message.tool_calls)
        if not text:
            return ""
        who = message.role if message.name is None else f"{message.role} ({message.name})"
        line = f"{who}: {text}"
        if len(line) > self.max_chars_per_turn:
            line = line[: self.max_chars_per_turn - 1].rstrip() + _ELLIPSIS
        return line


class ChatModel(Protocol):
    """The part of ``LLMProvider`` a summarizer uses: any provider satisfies it."""

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ChatResponse:
        """One call: ``messages`` in, the model's answer out."""
        ...


_INSTRUCTIONS = (
    "You maintain the running summary of a conversation. Merge the previous summary and the "
    "new turns into one concise summary that keeps facts, names, numbers, decisions and open "
    "questions. Answer with the summary only, in at most {max_tokens} tokens."
)


class LLMSummarizer:
    """Asks a chat model (any ``LLMProvider``) to merge the turns into the summary.

    Args:
        model: an object with ``LLMProvider.chat``.
        instructions: the system prompt; ``{max_tokens}`` is filled in.
        temperature: sampling temperature (0 for the steadiest summaries).
    """

    def __init__(
        self, model: ChatModel, *, instructions: str = _INSTRUCTIONS, temperature: float = 0.0
    ) -> None:
        self.model = model
        self.instructions = instructions
        self.temperature = temperature

    async def summarize(
        self, previous: str, messages: Sequence[ChatMessage], *, max_tokens: int
    ) -> str:
        """The model's summary of ``previous`` and ``messages``.

        Raises:
            LLMError: the call failed (the conversation is left as it was).
        """
        transcript = "\n".join(
            f"{m.role}: {m.content or ', '.join(c.name for c in m.tool_calls)}" for m in messages
        )
        prompt = f"Previous summary:\n{previous or '(none)'}\n\nNew turns:\n{transcript}"
        response = await self.model.chat(
            [
                ChatMessage("system", self.instructions.format(max_tokens=max_tokens)),
                ChatMessage("user", prompt),
            ],
            max_tokens=max_tokens,
            temperature=self.temperature,
        )
        return response.content.strip()
