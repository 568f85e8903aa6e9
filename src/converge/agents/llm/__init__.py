"""LLM access, bring your own key: a small ``LLMProvider`` protocol and its implementations
over the official SDKs (OpenAI, Anthropic) and any OpenAI-compatible endpoint (Ollama, vLLM,
LM Studio), the ``LLMAgent`` that runs one as a graph node, and the prices that turn tokens
into cost. The SDKs are the ``llm`` extra and are imported only by the providers that use
them, on their first call. ``converge.agents.llm.testing`` has a local server that speaks
both APIs, to test agents offline.
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
