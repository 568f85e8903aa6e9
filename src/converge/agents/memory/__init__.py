"""Memory and context scopes: what agents remember, and who may read it.

- ``ConversationMemory``: a session's messages under a token budget; the oldest turns are folded
  into a summary (``RuleSummarizer`` offline, ``LLMSummarizer`` with any ``LLMProvider``).
- ``StructuredMemory``: records checked against a msgspec ``Struct`` type or a JSON Schema,
  written with compare-and-set so concurrent writers never lose an update.
- ``VectorMemory``: texts with metadata and embeddings (``HashingEmbedder`` offline,
  ``SentenceTransformerEmbedder`` with the ``embed`` extra), top-k cosine search with filters.
- The five context scopes (request, session, agent, graph, global) and ``Context``, which shows
  an agent only the scopes and keys it is granted.

Everything persistent lives in the converge ``Store`` as MessagePack (no pickle, no second
database), so it survives a restart on ``SQLiteStore`` and each change is a unit of work with
one event (``memory.conversation.written``, ``memory.structured.written|deleted``,
``memory.vector.added|deleted``, ``context.written|deleted|cleared``) naming the key, the
version and the actor but never the content (see ``_persist``). Keys:
``memory/conversation/<session>``, ``memory/structured/<namespace>/<id>``,
``memory/vector/<namespace>/<id>``, ``context/<scope>/<owner>/<key>`` (``context/global/<key>``),
``context/expiry/session/<session>``. Owners and namespaces are one key segment (no ``/``), so
``s1`` and ``s1/x`` never share records; prefixes end in ``/``, so ``s1`` never lists ``s10``.
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
