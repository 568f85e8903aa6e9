"""Provider embeddings: the real OpenAI SDK against a local server, feeding VectorMemory."""

from __future__ import annotations

import pytest

from converge.agents.llm import LLMError, MissingAPIKey, OpenAIEmbedder
from converge.agents.llm.testing import FakeLLMServer, Reply
from converge.agents.memory import VectorMemory
from converge.errors import ValidationError
from converge.store import Store


async def test_vector_memory_with_provider_embeddings(store: Store) -> None:
    with FakeLLMServer() as server:
        embedder = OpenAIEmbedder(
            "local-embed", api_key_env=None, base_url=server.openai_url, batch=2
        )
        try:
            memory = await VectorMemory.open(store, "docs", embedder)
            await memory.add("aaaa aaaa", id="a")
            await memory.add("bbbb bbbb", id="b")
            await memory.add("abab abab", id="c")
            hits = await memory.search("aaa", k=2)
        finally:
            await embedder.aclose()
        assert hits[0].id == "a"
        paths = {r.path for r in server.requests}
        assert paths == {"/v1/embeddings"}
        assert all(r.body["model"] == "local-embed" for r in server.requests)
        assert embedder.tokens > 0


async def test_embedding_failures_are_llm_errors() -> None:
    with FakeLLMServer() as server:
        server.script(Reply(status=503))
        embedder = OpenAIEmbedder("m", api_key_env=None, base_url=server.openai_url)
        try:
            with pytest.raises(LLMError) as caught:
                await embedder.embed(["x"])
        finally:
            await embedder.aclose()
        assert caught.value.retryable and caught.value.status == 503


def test_embedder_options_and_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(MissingAPIKey, match="OPENAI_API_KEY"):
        OpenAIEmbedder()
    with pytest.raises(ValidationError):
        OpenAIEmbedder(api_key_env=None, batch=0)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    assert "sk-secret" not in repr(OpenAIEmbedder())
