"""LLM access, bring your own key: a small ``LLMProvider`` protocol and its implementations
over the official SDKs (OpenAI, Anthropic) and any OpenAI-compatible endpoint (Ollama, vLLM,
LM Studio). The SDKs are the ``llm`` extra and are imported only by the providers that use them.
"""

from converge.agents.llm.base import (
    ChatMessage,
    ChatResponse,
    LLMError,
    LLMProvider,
    LLMUsage,
    ToolCall,
    ToolSpec,
)

__all__ = [
    "ChatMessage",
    "ChatResponse",
    "LLMError",
    "LLMProvider",
    "LLMUsage",
    "ToolCall",
    "ToolSpec",
]
