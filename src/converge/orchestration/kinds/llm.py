"""``kind: llm``: an ``LLMAgent`` declared in YAML.

```yaml
agents:
  reviewer:
    kind: llm
    provider: openai            # openai | anthropic | compatible
    model: gpt-4o-mini
    # base_url: http://localhost:11434/v1   (compatible: required; others: a gateway)
    # api_key_env: OPENAI_API_KEY           (the variable holding the key)
    system: You review Python code.
    prompt: "Review this code:\n{source_code}"
    temperature: 0.2
    max_tokens: 800
    response_schema: {type: object, properties: {verdict: {type: string}}, required: [verdict]}
    tools: [mypackage.tools:lint]            # each 'module:attr': a Tool, function or ToolRegistry
    stream: true
    max_tool_rounds: 4
    timeout: 30                 # seconds per call
    attempts: 3                 # tries per call
    prices: {my-model: [0.3, 1.2]}           # US dollars per million tokens in, out
```

The provider's SDK (the ``llm`` extra) is needed only when a graph declares ``kind: llm``; its
absence, like a missing API key, is a ``ValidationError`` at load time naming the agent's line.
This module imports ``agents.llm``, which never imports an SDK.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from converge.agents.llm import (
    AnthropicProvider,
    CallPolicy,
    CompatibleProvider,
    LLMAgent,
    LLMError,
    OpenAIProvider,
    PriceTable,
)
from converge.core.tools import ToolRegistry
from converge.errors import ValidationError
from converge.orchestration.kinds import Kind, KindContext
from converge.orchestration.object_refs import import_object_ref

__all__ = ["KIND"]

_OPTIONS = {
    "provider": "``openai``, ``anthropic`` or ``compatible`` (any OpenAI-compatible server).",
    "model": "The model's name.",
    "base_url": "The API's URL (required for ``compatible``; a gateway for the others).",
    "api_key_env": "The environment variable holding the key (default ``OPENAI_API_KEY`` / "
    "``ANTHROPIC_API_KEY``; none for ``compatible``).",
    "system": "The system message.",
    "prompt": "The user message: a template over the node's inputs (``{source_code}``).",
    "temperature": "Sampling temperature.",
    "max_tokens": "The most tokens an answer may have.",
    "response_schema": "A JSON Schema the answer must follow; the output is the decoded answer.",
    "tools": "Tools the model may call: ``module:attr`` each (a Tool, function or ToolRegistry).",
    "stream": "Stream the answer as ``node.chunk`` events (default false).",
    "max_tool_rounds": "The most rounds of tool calls in one run (default 8).",
    "max_prompt_tokens": "The most tokens a prompt may have (estimated); over it, nothing is "
    "sent and the node fails with ``PromptTooLong``.",
    "timeout": "Seconds per call (default 60).",
    "attempts": "Tries per call on retryable errors (default 3).",
    "prices": "US dollars per million tokens in and out, by model: ``{my-model: [0.3, 1.2]}``.",
}
_SDK = {"openai": "openai", "compatible": "openai", "anthropic": "anthropic"}
_TYPES: dict[str, tuple[type, ...]] = {
    "base_url": (str,),
    "api_key_env": (str,),
    "system": (str,),
    "prompt": (str,),
    "temperature": (int, float),
    "max_tokens": (int,),
    "response_schema": (dict,),
    "stream": (bool,),
    "max_tool_rounds": (int,),
    "max_prompt_tokens": (int,),
    "timeout": (int, float),
    "attempts": (int,),
    "prices": (dict,),
}


def _read(options: Mapping[str, Any], ctx: KindContext) -> LLMAgent:
    found = ctx.options(options, _OPTIONS, required=("provider", "model"))
    provider_name, model = found["provider"], found["model"]
    if provider_name not in _SDK:
        raise ctx.fail(
            f"provider is one of {', '.join(sorted(_SDK))}, not {provider_name!r}", "provider"
        )
    if not isinstance(model, str) or not model:
        raise ctx.fail(f"model is a model's name, not {model!r}", "model")
    for key, types in _TYPES.items():
        if key in found and (
            not isinstance(found[key], types) or isinstance(found[key], bool) is not (bool in types)
        ):
            raise ctx.fail(f"{key} cannot be {found[key]!r}", key)
    if importlib.util.find_spec(_SDK[provider_name]) is None:
        raise ctx.fail(
            f"kind: llm with provider {provider_name} needs the {_SDK[provider_name]!r} "
            "package: pip install 'converge-agents[llm]'",
            "provider",
        )
    try:
        provider = _provider(provider_name, model, found, ctx)
        policy = CallPolicy(
            attempts=found.get("attempts", 3), timeout=float(found.get("timeout", 60.0))
        )
        prices = found.get("prices")
        return LLMAgent(
            provider,
            system=found.get("system"),
            prompt=found.get("prompt"),
            tools=_tools(found.get("tools", []), ctx),
            response_schema=found.get("response_schema"),
            temperature=found.get("temperature"),
            max_tokens=found.get("max_tokens"),
            stream=found.get("stream", False),
            policy=policy,
            max_tool_rounds=found.get("max_tool_rounds", 8),
            max_prompt_tokens=found.get("max_prompt_tokens"),
            prices=PriceTable({k: tuple(v) for k, v in prices.items()}) if prices else None,
            name=ctx.name,
        )
    except LLMError as exc:  # MissingAPIKey: say where in the YAML
        raise ctx.fail(exc.message, "api_key_env") from exc
    except (ValidationError, TypeError) as exc:
        raise ctx.fail(str(exc)) from exc


def _provider(name: str, model: str, found: dict[str, Any], ctx: KindContext) -> Any:
    key_env = found.get("api_key_env")
    base_url = found.get("base_url")
    if name == "compatible":
        if base_url is None:
            raise ctx.fail("a compatible provider needs `base_url`", "base_url")
        return CompatibleProvider(model, base_url=base_url, api_key_env=key_env)
    if name == "anthropic":
        return AnthropicProvider(
            model, base_url=base_url, api_key_env=key_env or "ANTHROPIC_API_KEY"
        )
    return OpenAIProvider(model, base_url=base_url, api_key_env=key_env or "OPENAI_API_KEY")


def _tools(refs: Any, ctx: KindContext) -> ToolRegistry:
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise ctx.fail("tools is a list of 'module:attr' references", "tools")
    registry = ToolRegistry()
    for ref in refs:
        target = import_object_ref(
            ref, field=f"agents.{ctx.name}.tools", source=ctx.source, line=ctx.line
        )
        for tool in target if isinstance(target, ToolRegistry) else (target,):
            registry.register(tool)
    return registry


KIND = Kind(
    "llm",
    _read,
    options=_OPTIONS,
    required=("provider", "model"),
    doc="A model-backed agent (``LLMAgent``): prompt, tools, structured output, usage and cost.",
)
