"""``ConversationMemory``: a session's messages under a token budget.

The session is persisted in the store.

The prompt it gives back (``prompt()``) is the running summary (one system message) followed by
the recent messages, and never costs more than ``max_tokens``. When an append goes over, the
oldest messages are folded into the summary until the recent ones fit in ``max_tokens -
summary_tokens`` (leaving room for the next turns, so the summarizer is not called on every
append), and the summary is held to ``summary_tokens`` (default a quarter of ``max_tokens``)
whatever the summarizer returns. A tool result is never left at the head of the window without
the call it answers.

State is one record per session (``memory/conversation/<session_id>``), written by
compare-and-set: two writers on one session never drop each other's messages; the loser reloads
and applies its append again.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from converge.agents.llm.base import ChatMessage, Role
from converge.agents.memory._persist import MAX_ATTEMPTS, check_name, decode, encode, write
from converge.agents.memory._summarize import (
    RuleSummarizer,
    Summarizer,
    TokenCounter,
    count_message,
    estimate_tokens,
    truncate_to_tokens,
)
from converge.errors import ConflictError, ValidationError
from converge.store.base import Store

__all__ = ["ConversationMemory", "ConversationState"]

PREFIX = "memory/conversation/"
SUMMARY_HEADER = "Summary of the earlier conversation:\n"


_Change = Callable[["ConversationState"], "ConversationState"]


class ConversationState(msgspec.Struct, frozen=True):
    """A conversation as stored."""

    summary: str = ""
    """The running summary of every folded message ("" until the first fold)."""
    messages: tuple[ChatMessage, ...] = ()
    """The recent messages, oldest first."""
    folded: int = 0
    """How many messages have been folded into the summary so far."""


class ConversationMemory:
    """A session's conversation, bounded by a token budget and kept in the store.

    Open it with ``await ConversationMemory.open(store, session_id)``; opening again (in this
    process or another, on the same store) gives the same state.

    Args:
        store: where the conversation is kept.
        session_id: the session (one segment of a key: no ``/``).
        max_tokens: the most tokens ``prompt()`` may cost.
        summary_tokens: the most tokens the summary message may cost (``max_tokens // 4``).
        summarizer: folds old turns (``RuleSummarizer`` by default: offline, deterministic).
        counter: counts tokens (``estimate_tokens`` by default).
        actor: who writes, recorded on the events (an agent's did).
    """

    def __init__(
        self,
        store: Store,
        session_id: str,
        *,
        max_tokens: int = 8000,
        summary_tokens: int | None = None,
        summarizer: Summarizer | None = None,
        counter: TokenCounter = estimate_tokens,
        actor: str = "",
    ) -> None:
        self.session_id = check_name(session_id, "session_id")
        if summary_tokens is None:
            summary_tokens = max_tokens // 4
        header = count_message(ChatMessage("system", SUMMARY_HEADER), counter)
        if not header < summary_tokens < max_tokens:
            raise ValidationError(
                f"summary_tokens must lie between {header} (the summary message's own cost) and "
                f"max_tokens ({max_tokens}), not {summary_tokens}",
                field="summary_tokens",
            )
        self.store = store
        self.max_tokens = max_tokens
        self.summary_tokens = summary_tokens
        self.summarizer: Summarizer = summarizer or RuleSummarizer(counter=counter)
        self.counter = counter
        self.actor = actor
        self.key = PREFIX + session_id
        self._state = ConversationState()
        self._version = 0

    @classmethod
    async def open(
        cls,
        store: Store,
        session_id: str,
        *,
        max_tokens: int = 8000,
        summary_tokens: int | None = None,
        summarizer: Summarizer | None = None,
        counter: TokenCounter = estimate_tokens,
        actor: str = "",
    ) -> ConversationMemory:
        """The session's conversation as stored (empty if new)."""
        memory = cls(
            store,
            session_id,
            max_tokens=max_tokens,
            summary_tokens=summary_tokens,
            summarizer=summarizer,
            counter=counter,
            actor=actor,
        )
        await memory.reload()
        return memory

    # -- reading ---------------------------------------------------------------------------------

    @property
    def state(self) -> ConversationState:
        """The conversation as last read or written."""
        return self._state

    @property
    def summary(self) -> str:
        """The running summary ("" if nothing was folded yet)."""
        return self._state.summary

    @property
    def messages(self) -> tuple[ChatMessage, ...]:
        """The recent, unsummarised messages, oldest first."""
        return self._state.messages

    @property
    def version(self) -> int:
        """The stored record's version (0: nothing stored yet)."""
        return self._version

    def prompt(self) -> list[ChatMessage]:
        """What to send a model: the summary as a system message (if any), then the messages."""
        return self._prompt(self._state)

    def tokens(self) -> int:
        """What ``prompt()`` costs, by this memory's counter; never more than ``max_tokens``."""
        return self._cost(self._state)

    async def reload(self) -> None:
        """Read the stored state again (another writer may have appended)."""
        entry = await self.store.get(self.key)
        if entry is None:
            self._state, self._version = ConversationState(), 0
        else:
            self._state = decode(entry.value, ConversationState, "stored conversation")
            self._version = entry.version

    # -- writing ---------------------------------------------------------------------------------

    async def add(self, role: Role, content: str) -> None:
        """Append one message with ``role`` and ``content``."""
        await self.append(ChatMessage(role, content))

    async def append(self, *messages: ChatMessage) -> None:
        """Append ``messages``, fold the oldest turns if over budget, and persist.

        Raises:
            ValidationError: an item is not a ``ChatMessage``.
            ConflictError: other writers kept winning for ``MAX_ATTEMPTS`` tries.
        """
        for i, m in enumerate(messages):
            if not isinstance(m, ChatMessage):
                raise ValidationError(
                    f"messages[{i}] is a {type(m).__name__}, not a ChatMessage",
                    field=f"messages[{i}]",
                )
        await self._modify(lambda s: msgspec.structs.replace(s, messages=s.messages + messages))

    async def clear(self) -> None:
        """Forget the messages and the summary."""
        await self._modify(lambda s: ConversationState())

    async def _modify(self, change: _Change) -> None:
        for _ in range(MAX_ATTEMPTS):
            state = await self._fit(change(self._state))
            try:
                self._version = await write(
                    self.store,
                    self.key,
                    self._version,
                    encode(state, "conversation"),
                    kind="memory.conversation.written",
                    trace_id=self.session_id,
                    actor=self.actor,
                    data={"messages": len(state.messages), "folded": state.folded},
                )
            except ConflictError:
                await self.reload()
                continue
            self._state = state
            return
        raise ConflictError(self.key, self._version, -1)

    async def _fit(self, state: ConversationState) -> ConversationState:
        if self._cost(state) <= self.max_tokens:
            return state
        messages = state.messages
        costs = [count_message(m, self.counter) for m in messages]
        room = self.max_tokens - self.summary_tokens
        recent = sum(costs)
        cut = 0
        while cut < len(messages) and recent > room:
            recent -= costs[cut]
            cut += 1
        # A tool result must not open the window without the assistant call it answers.
        while cut < len(messages) and messages[cut].role == "tool":
            recent -= costs[cut]
            cut += 1
        header = count_message(ChatMessage("system", SUMMARY_HEADER), self.counter)
        budget = self.summary_tokens - header
        summary = await self.summarizer.summarize(state.summary, messages[:cut], max_tokens=budget)
        summary = truncate_to_tokens(summary.strip(), budget, self.counter)
        # A counter need not be additive: cut until the summary message itself fits.
        while budget > 0 and self._summary_cost(summary) > self.summary_tokens:
            budget -= 1
            summary = truncate_to_tokens(summary, budget, self.counter)
        return ConversationState(summary, messages[cut:], state.folded + cut)

    def _prompt(self, state: ConversationState) -> list[ChatMessage]:
        head = [ChatMessage("system", SUMMARY_HEADER + state.summary)] if state.summary else []
        return [*head, *state.messages]

    def _summary_cost(self, summary: str) -> int:
        return count_message(ChatMessage("system", SUMMARY_HEADER + summary), self.counter)

    def _cost(self, state: ConversationState) -> int:
        return sum(count_message(m, self.counter) for m in self._prompt(state))
