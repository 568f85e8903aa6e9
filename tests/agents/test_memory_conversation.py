"""Conversation memory: a token budget, summaries of the oldest turns, persistence per session."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from converge.agents.llm.base import ChatMessage, ChatResponse, ToolCall
from converge.agents.memory import (
    ConversationMemory,
    LLMSummarizer,
    RuleSummarizer,
    count_message,
    estimate_tokens,
)
from converge.errors import ValidationError
from converge.store import SQLiteStore, Store


def turn(i: int) -> ChatMessage:
    role = "user" if i % 2 == 0 else "assistant"
    return ChatMessage(role, f"Turn number {i} says something. Then it rambles on about item {i}.")


class FakeModel:
    """Stands in for an LLMProvider: answers every chat with a fixed text, records the calls."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.calls: list[tuple[list[ChatMessage], int | None]] = []

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ChatResponse:
        self.calls.append((list(messages), max_tokens))
        return ChatResponse(content=self.answer, model="fake")


async def test_messages_within_budget_are_kept_verbatim(store: Store) -> None:
    memory = await ConversationMemory.open(store, "s1", max_tokens=1000)
    await memory.add("user", "Hello.")
    await memory.add("assistant", "Hi, how can I help?")
    assert memory.prompt() == [
        ChatMessage("user", "Hello."),
        ChatMessage("assistant", "Hi, how can I help?"),
    ]
    assert memory.summary == ""
    assert memory.tokens() == sum(count_message(m, estimate_tokens) for m in memory.prompt())


async def test_over_budget_the_oldest_turns_are_summarised(store: Store) -> None:
    memory = await ConversationMemory.open(store, "s1", max_tokens=120, summary_tokens=40)
    for i in range(12):
        await memory.append(turn(i))
        assert memory.tokens() <= 120
    state = memory.state
    assert state.folded > 0
    assert state.folded + len(state.messages) == 12
    assert state.messages[-1] == turn(11)  # the newest turn is kept verbatim
    assert memory.prompt()[0].role == "system"
    # The rule summarizer keeps each folded turn's first sentence, most recent last.
    assert f"Turn number {state.folded - 1} says something." in memory.summary
    assert "rambles" not in memory.summary


async def test_rule_summarizer_keeps_first_sentences_and_drops_oldest_to_fit() -> None:
    rule = RuleSummarizer(max_chars_per_turn=30)
    text = await rule.summarize(
        "user: earlier.", [ChatMessage("assistant", "First one. Second one.")], max_tokens=100
    )
    assert text == "user: earlier.\nassistant: First one."
    long = await rule.summarize("", [ChatMessage("user", "x" * 100)], max_tokens=100)
    assert len(long) == 30 and long.endswith("…")
    tight = await rule.summarize(
        "user: old line.", [ChatMessage("user", "New line.")], max_tokens=4
    )
    assert tight == "user: New line."  # the oldest line went first


async def test_llm_summarizer_asks_the_model_and_its_answer_becomes_the_summary(
    store: Store,
) -> None:
    model = FakeModel("The user asked about items 0 to 3.")
    memory = await ConversationMemory.open(
        store, "s1", max_tokens=120, summary_tokens=40, summarizer=LLMSummarizer(model)
    )
    for i in range(8):
        await memory.append(turn(i))
    assert model.calls, "the model was never asked"
    sent, max_tokens = model.calls[0]
    assert "Turn number 0 says something" in sent[-1].content
    assert max_tokens is not None and max_tokens < 40
    assert memory.summary == "The user asked about items 0 to 3."
    assert memory.tokens() <= 120


async def test_an_overlong_model_summary_is_cut_to_the_summary_budget(store: Store) -> None:
    model = FakeModel("word " * 500)
    memory = await ConversationMemory.open(
        store, "s1", max_tokens=120, summary_tokens=40, summarizer=LLMSummarizer(model)
    )
    for i in range(8):
        await memory.append(turn(i))
    assert count_message(memory.prompt()[0], estimate_tokens) <= 40
    assert memory.tokens() <= 120


async def test_a_tool_result_never_opens_the_window_without_its_call(store: Store) -> None:
    memory = await ConversationMemory.open(store, "s1", max_tokens=60, summary_tokens=20)
    call = ChatMessage("assistant", tool_calls=(ToolCall("c1", "search", {"q": "x" * 40}),))
    await memory.append(ChatMessage("user", "Find x."), call)
    await memory.append(ChatMessage("tool", "result " * 10, tool_call_id="c1", name="search"))
    await memory.append(ChatMessage("user", "Thanks."))
    assert memory.messages[0].role != "tool"
    assert memory.tokens() <= 60


async def test_a_pluggable_counter_sets_the_budget(store: Store) -> None:
    def words(text: str) -> int:
        return len(text.split())

    memory = await ConversationMemory.open(
        store, "s1", max_tokens=50, summary_tokens=20, counter=words
    )
    for i in range(10):
        await memory.append(turn(i))
    assert sum(count_message(m, words) for m in memory.prompt()) <= 50
    assert memory.state.folded > 0


async def test_reopening_the_sqlite_file_gives_the_same_conversation(tmp_path: Path) -> None:
    path = tmp_path / "conv.db"
    async with await SQLiteStore.open(path) as store:
        memory = await ConversationMemory.open(store, "s1", max_tokens=120, summary_tokens=40)
        for i in range(10):
            await memory.append(turn(i))
        before = memory.state
    async with await SQLiteStore.open(path) as store:
        again = await ConversationMemory.open(store, "s1", max_tokens=120, summary_tokens=40)
        assert again.state == before
        assert again.prompt() == memory.prompt()
        other = await ConversationMemory.open(store, "s2")
        assert other.messages == ()


async def test_concurrent_writers_on_one_session_lose_no_message(store: Store) -> None:
    a = await ConversationMemory.open(store, "s1", max_tokens=100_000)
    b = await ConversationMemory.open(store, "s1", max_tokens=100_000)
    await asyncio.gather(
        *(a.add("user", f"a{i}") for i in range(15)),
        *(b.add("assistant", f"b{i}") for i in range(15)),
    )
    await a.reload()
    contents = sorted(m.content for m in a.messages)
    assert contents == sorted([f"a{i}" for i in range(15)] + [f"b{i}" for i in range(15)])


async def test_clear_forgets_messages_and_summary(store: Store) -> None:
    memory = await ConversationMemory.open(store, "s1", max_tokens=120, summary_tokens=40)
    for i in range(10):
        await memory.append(turn(i))
    await memory.clear()
    again = await ConversationMemory.open(store, "s1")
    assert again.prompt() == []


def test_a_summary_budget_outside_the_total_budget_is_refused(store: Store) -> None:
    with pytest.raises(ValidationError) as err:
        ConversationMemory(store, "s1", max_tokens=100, summary_tokens=100)
    assert err.value.field == "summary_tokens"
    with pytest.raises(ValidationError) as err:
        ConversationMemory(store, "a/b")
    assert err.value.field == "session_id"


async def test_appending_something_else_than_a_message_is_refused(store: Store) -> None:
    memory = await ConversationMemory.open(store, "s1")
    with pytest.raises(ValidationError) as err:
        await memory.append("hello")  # type: ignore[arg-type]
    assert err.value.field == "messages[0]"
    assert await store.get(memory.key) is None
