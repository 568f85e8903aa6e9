"""Embeddings through a provider: ``OpenAIEmbedder``.

``OpenAIEmbedder`` turns texts into vectors with the OpenAI
embeddings API or any endpoint that speaks it (Ollama, vLLM, LM Studio by ``base_url``). It is
an ``Embedder`` for ``VectorMemory``; ``HashingEmbedder`` (offline) and the local
``SentenceTransformerEmbedder`` (the ``embed`` extra) are the others. Texts are sent in batches,
errors are translated as for chat calls, and tokens are counted; with ``api_key_env=None`` no
key is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

from converge.agents.llm._common import openai_client, resolve_key, translate_error
from converge.agents.llm._urls import check_url
from converge.errors import LLMError, ValidationError, shown_url

__all__ = ["OpenAIEmbedder"]


class OpenAIEmbedder:
    """Vectors from an OpenAI-compatible ``/embeddings`` endpoint, in batches.

    Args:
        model: the embedding model (``text-embedding-3-small``, or a local one's name).
        api_key: the key; by default read from ``api_key_env``. Never shown by ``repr``.
        api_key_env: the variable holding the key (None: no key, for a local endpoint).
        base_url: another endpoint speaking the API (``http://127.0.0.1:11434/v1`` for Ollama);
            credentials in it are masked wherever it is shown.
        timeout: seconds per request.
        batch: texts per request.

    Raises:
        MissingAPIKey: no key given and ``api_key_env`` is not set.
        ValidationError: ``batch`` is not an int >= 1, or ``base_url`` is not an http(s) URL
            with a host.
    """

    _provider = "openai"

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        api_key: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        base_url: str | None = None,
        timeout: float = 60.0,
        batch: int = 256,
    ) -> None:
        if not isinstance(batch, int) or batch < 1:
            raise ValidationError(f"batch must be an int >= 1, not {batch!r}", field="batch")
        self.model = model
        if base_url is not None:
            check_url(base_url)
        self.base_url = base_url
        self.timeout = timeout
        self.batch = batch
        self._key = resolve_key(self._provider, api_key, api_key_env)
        self._sdk: ModuleType | None = None
        self._client: Any = None
        self.tokens = 0
        """Tokens used by every call so far."""

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order.

        Raises:
            LLMError: the endpoint failed (``retryable`` for rate limits, timeouts, 5xx), or
                answered with vectors that do not match the texts.
        """
        if isinstance(texts, str):
            raise ValidationError("embed() takes a sequence of texts, not one str", field="texts")
        sdk, client = self._connect()
        out: list[list[float]] = []
        for start in range(0, len(texts), self.batch):
            part = list(texts[start : start + self.batch])
            try:
                response = await client.embeddings.create(model=self.model, input=part)
            except Exception as exc:
                raise translate_error(sdk, self._provider, exc) from exc
            data = sorted(response.data, key=lambda d: d.index)
            if len(data) != len(part):
                raise LLMError(
                    f"malformed answer: {len(data)} vectors for {len(part)} texts",
                    provider=self._provider,
                )
            out.extend([float(x) for x in d.embedding] for d in data)
            usage = getattr(response, "usage", None)
            self.tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
        return out

    def _connect(self) -> tuple[ModuleType, Any]:
        if self._client is None:
            self._sdk, self._client = openai_client(
                self._provider, self._key, self.base_url, self.timeout
            )
        assert self._sdk is not None
        return self._sdk, self._client

    async def aclose(self) -> None:
        """Close the SDK client's connections (idempotent)."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def __repr__(self) -> str:
        where = shown_url(self.base_url) if self.base_url is not None else None
        return f"OpenAIEmbedder({self.model!r}, base_url={where!r})"
