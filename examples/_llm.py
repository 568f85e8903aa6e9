"""The examples' LLM switch: rule-based agents unless a run asks for a model *and* has a key.

``--llm`` on an example's ``run.py`` asks for a model. It is used only when ``OPENAI_API_KEY``
or ``ANTHROPIC_API_KEY`` is set and converge's providers (``converge.agents.llm``, the ``llm``
extra) are installed; otherwise the example says why and runs its rule-based agents. Tests never
ask, so they always run offline. ``CONVERGE_LLM_MODEL`` picks the model.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

__all__ = ["ask", "provider_from_env"]

_PROVIDERS = (
    ("OPENAI_API_KEY", "OpenAIProvider", "gpt-4o-mini"),
    ("ANTHROPIC_API_KEY", "AnthropicProvider", "claude-3-5-haiku-latest"),
)


def provider_from_env(use_llm: bool) -> tuple[Any | None, str]:
    """The provider to use (or None) and a line saying which mode runs and why."""
    if not use_llm:
        return None, "rule-based agents (pass --llm with an API key set to use a model)"
    for env, cls_name, model in _PROVIDERS:
        if not os.environ.get(env):
            continue
        try:
            module = importlib.import_module("converge.agents.llm")
        except ImportError as exc:  # pragma: no cover - depends on the install
            return None, f"rule-based agents (cannot import converge.agents.llm: {exc})"
        cls = getattr(module, cls_name, None)
        if cls is None:
            return None, f"rule-based agents (this converge has no {cls_name} yet)"
        chosen = os.environ.get("CONVERGE_LLM_MODEL", model)
        return cls(chosen), f"LLM agents ({cls_name}, {chosen})"
    return None, "rule-based agents (--llm given, but neither OPENAI_API_KEY nor ANTHROPIC_API_KEY)"


async def ask(provider: Any, system: str, user: str, *, max_tokens: int = 400) -> str:
    """One chat call: the model's answer to ``user`` under ``system``."""
    llm = importlib.import_module("converge.agents.llm")
    messages = [llm.ChatMessage(role="system", content=system),
                llm.ChatMessage(role="user", content=user)]  # fmt: skip
    response = await provider.chat(messages, max_tokens=max_tokens)
    return str(response.content).strip()
