"""LLM access, bring your own key: providers, ``LLMAgent``, prices.

A small ``LLMProvider`` protocol and its implementations
over the official SDKs (OpenAI, Anthropic) and any OpenAI-compatible endpoint (Ollama, vLLM,
LM Studio), the ``LLMAgent`` that runs one as a graph node, and the prices that turn tokens
into cost. The SDKs are the ``llm`` extra and are imported only by the providers that use
them, on their first call, never at ``import converge`` (a subprocess test checks it); a missing
SDK is an ``LLMError`` naming the extra. ``converge.agents.llm.testing`` has a local server that
speaks both APIs, to test agents offline: tests drive the real SDK clients against it, never
mocks of them. Tested against openai 3.57 and anthropic 2.14, the ``llm`` extra's lower bounds.

Every provider implements ``LLMProvider.chat``: messages, tools, a JSON-schema
``response_schema``, streaming through ``on_chunk``, and ``LLMUsage`` on every call, streamed or
not. Keys come from ``api_key=`` or the environment (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``,
``api_key_env`` for a compatible endpoint — none by default: local servers want none), are
resolved when the provider is built, kept in a private attribute and never shown by ``repr``; a
missing one is ``MissingAPIKey`` (an ``LLMError``, with ``.variable``). SDK exceptions become
``LLMError`` at the provider's boundary, ``retryable`` for 408, 409, 425, 429, 5xx, timeouts and
lost connections; a body that is not the API's shape is a ``malformed answer`` (not
retryable). The SDKs' own retries are off (``max_retries=0``): retrying is ``LLMAgent``'s
``CallPolicy``, so two layers never multiply. The client is created on the first call and
closed by ``aclose()`` (``LLMAgent.aclose``, its ``on_stop``).
"""

from converge.agents.llm._anthropic import AnthropicProvider
from converge.agents.llm._openai import CompatibleProvider, OpenAIProvider
from converge.agents.llm._prompt import render_prompt
from converge.agents.llm.agent import CallPolicy, LLMAgent
from converge.agents.llm.base import (
    ChatMessage,
    ChatResponse,
    LLMProvider,
    LLMUsage,
    ToolCall,
    ToolSpec,
)
from converge.agents.llm.embeddings import OpenAIEmbedder
from converge.agents.llm.pricing import DEFAULT_PRICES, Price, PriceTable
from converge.errors import (
    LLMError,
    MissingAPIKey,
    PromptTooLong,
    ResponseSchemaError,
    ToolRoundsExceeded,
)

__all__ = [
    "DEFAULT_PRICES",
    "AnthropicProvider",
    "CallPolicy",
    "ChatMessage",
    "ChatResponse",
    "CompatibleProvider",
    "LLMAgent",
    "LLMError",
    "LLMProvider",
    "LLMUsage",
    "MissingAPIKey",
    "OpenAIEmbedder",
    "OpenAIProvider",
    "Price",
    "PriceTable",
    "PromptTooLong",
    "ResponseSchemaError",
    "ToolCall",
    "ToolRoundsExceeded",
    "ToolSpec",
    "render_prompt",
]
