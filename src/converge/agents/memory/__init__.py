"""Memory and context scopes (seed 002 §6.1, §6.3, §10).

- ``ConversationMemory``: a session's messages under a token budget; the oldest turns are folded
  into a summary (``RuleSummarizer`` offline, ``LLMSummarizer`` with any ``LLMProvider``).
- ``StructuredMemory``: records checked against a msgspec ``Struct`` type or a JSON Schema,
  written with compare-and-set so concurrent writers never lose an update.
- ``VectorMemory``: texts with metadata and embeddings (``HashingEmbedder`` offline,
  ``SentenceTransformerEmbedder`` with the ``embed`` extra), top-k cosine search with filters.
- The five context scopes (request, session, agent, graph, global) and ``Context``, which shows
  an agent only the scopes and keys it is granted.

Everything persistent lives in the converge ``Store`` as MessagePack, so it survives a restart
on ``SQLiteStore`` and each change is an event in the log.
"""

from converge.agents.memory._context import (
    Context,
    ContextScopes,
    Grants,
)
from converge.agents.memory._conversation import ConversationMemory, ConversationState
from converge.agents.memory._embed import (
    Embedder,
    HashingEmbedder,
    MissingExtra,
    SentenceTransformerEmbedder,
)
from converge.agents.memory._scopes import SCOPES, RequestScope, Scope, StoredScope
from converge.agents.memory._structured import StructuredMemory
from converge.agents.memory._summarize import (
    ChatModel,
    LLMSummarizer,
    RuleSummarizer,
    Summarizer,
    TokenCounter,
    count_message,
    estimate_tokens,
)
from converge.agents.memory._vector import Hit, VectorMemory, VectorRecord
from converge.errors import ContextAccessDenied

__all__ = [
    "SCOPES",
    "ChatModel",
    "Context",
    "ContextAccessDenied",
    "ContextScopes",
    "ConversationMemory",
    "ConversationState",
    "Embedder",
    "Grants",
    "HashingEmbedder",
    "Hit",
    "LLMSummarizer",
    "MissingExtra",
    "RequestScope",
    "RuleSummarizer",
    "Scope",
    "SentenceTransformerEmbedder",
    "StoredScope",
    "StructuredMemory",
    "Summarizer",
    "TokenCounter",
    "VectorMemory",
    "VectorRecord",
    "count_message",
    "estimate_tokens",
]
