"""Helpers of the LLM tests: providers pointed at the local server, a recording context."""

from __future__ import annotations

from typing import Any

from converge.agents.llm import AnthropicProvider, CompatibleProvider, OpenAIProvider
from converge.agents.llm.testing import FakeLLMServer

PROVIDERS = ("openai", "anthropic", "compatible")
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "compatible": "llama3.2"}


def make_provider(name: str, server: FakeLLMServer, **options: Any) -> Any:
    if name == "openai":
        return OpenAIProvider(
            MODELS[name], api_key="sk-test", base_url=server.openai_url, **options
        )
    if name == "anthropic":
        return AnthropicProvider(MODELS[name], api_key="sk-test", base_url=server.url, **options)
    return CompatibleProvider(MODELS[name], base_url=server.openai_url, **options)


class Ctx:
    """A ``RunContext`` that records usage and chunks."""

    run_id = "run"
    node_id = "node"
    attempt = 1
    idempotency_key = "run/node/1"

    def __init__(self) -> None:
        self.usage = {"tokens_in": 0, "tokens_out": 0, "tool_calls": 0, "cost": 0.0}
        self.reports = 0
        self.chunks: list[Any] = []

    def report_usage(
        self, tokens_in: int = 0, tokens_out: int = 0, tool_calls: int = 0, cost: float = 0.0
    ) -> None:
        self.reports += 1
        self.usage["tokens_in"] += tokens_in
        self.usage["tokens_out"] += tokens_out
        self.usage["tool_calls"] += tool_calls
        self.usage["cost"] += cost

    async def emit(self, chunk: Any) -> None:
        self.chunks.append(chunk)

    async def progress(self, fraction: float, message: str = "") -> None:
        pass

    async def pause(self, question: str) -> Any:
        raise AssertionError("no pauses here")


class Sleeps:
    """An injected ``sleep`` that records the waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
