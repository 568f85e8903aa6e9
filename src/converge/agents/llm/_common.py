"""What the providers share: keys, lazy SDK imports, SDK errors.

API keys from the environment, lazy SDK imports, and the
translation of SDK exceptions into ``LLMError`` (the typed errors are in ``converge.errors``).

SDK exceptions are read by duck typing (``status_code``, the class names of the SDKs' timeout
and connection errors), because both official SDKs come from one generator and share that
shape; a provider passes its SDK module so the classes are looked up there.
"""

from __future__ import annotations

import importlib
import json
import os
from types import ModuleType
from typing import Any

from converge.errors import LLMError, MissingAPIKey

__all__ = [
    "import_sdk",
    "resolve_key",
    "translate_error",
]

_RETRYABLE_STATUS = frozenset({408, 409, 425, 429})


def resolve_key(provider: str, api_key: str | None, variable: str | None) -> str | None:
    """The key given, else the one in ``variable``.

    Raises:
        MissingAPIKey: neither is set (only when ``variable`` names one to read).
    """
    if api_key:
        return api_key
    if variable is None:
        return None
    key = os.environ.get(variable)
    if not key:
        raise MissingAPIKey(provider, variable)
    return key


def import_sdk(provider: str, module: str) -> ModuleType:
    """Import an official SDK on first use, so ``import converge`` never pays for it.

    Raises:
        LLMError: the SDK is not installed (the ``llm`` extra).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise LLMError(
            f"the {module!r} package is not installed: pip install 'converge-agents[llm]'",
            provider=provider,
        ) from exc


def openai_client(
    provider: str, key: str | None, base_url: str | None, timeout: float
) -> tuple[ModuleType, Any]:
    """The ``openai`` SDK and an ``AsyncOpenAI`` client with converge's settings: the SDK's own
    retries off (callers retry), and a placeholder key for local servers that need none (the
    SDK insists on one)."""
    sdk = import_sdk(provider, "openai")
    client = sdk.AsyncOpenAI(
        api_key=key or "unused", base_url=base_url, timeout=timeout, max_retries=0
    )
    return sdk, client


def translate_error(sdk: ModuleType, provider: str, exc: BaseException) -> LLMError:
    """``exc`` (raised by ``sdk``) as an ``LLMError``, retryable for rate limits, timeouts,
    lost connections and 5xx answers."""
    if isinstance(exc, sdk.APIStatusError):
        status = int(exc.status_code)
        retryable = status in _RETRYABLE_STATUS or status >= 500
        return LLMError(
            f"HTTP {status}: {_status_message(exc)}",
            provider=provider,
            status=status,
            retryable=retryable,
        )
    if isinstance(exc, sdk.APITimeoutError):
        return LLMError(f"the request to {_url(exc)} timed out", provider=provider, retryable=True)
    if isinstance(exc, sdk.APIConnectionError):
        cause = exc.__cause__
        why = f"{cause}" if cause is not None and str(cause) else f"{exc}"
        return LLMError(f"cannot reach {_url(exc)}: {why}", provider=provider, retryable=True)
    if isinstance(exc, sdk.APIResponseValidationError):
        return LLMError(f"malformed answer: {exc}", provider=provider, status=exc.status_code)
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return LLMError(f"malformed answer: not JSON ({exc})", provider=provider)
    return LLMError(f"{type(exc).__name__}: {exc}", provider=provider)


def _url(exc: Any) -> str:
    """The URL a failed request went to (the SDKs keep it on the error), or "the endpoint"."""
    url = getattr(getattr(exc, "request", None), "url", None)
    return str(url) if url is not None else "the endpoint"


def _status_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return str(getattr(exc, "message", exc))


def decode_arguments(provider: str, name: str, raw: str | None) -> dict[str, Any]:
    """A tool call's JSON arguments as a dict.

    Raises:
        LLMError: not a JSON object (retryable: the model may do better next time).
    """
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise LLMError(
            f"the arguments of tool call {name!r} are not JSON: {exc}",
            provider=provider,
            retryable=True,
        ) from exc
    if not isinstance(value, dict):
        raise LLMError(
            f"the arguments of tool call {name!r} are not a JSON object",
            provider=provider,
            retryable=True,
        )
    return value


def parse_json(content: str) -> Any:
    """``content`` decoded as JSON, or ``None`` if it is not JSON."""
    try:
        return json.loads(content)
    except (json.JSONDecodeError, TypeError):
        return None
