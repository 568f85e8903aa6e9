"""Endpoint URLs as providers accept them and as they show them.

``check_url`` says which URLs a provider accepts.

A ``base_url`` may carry a credential: ``http://user:key@gateway/v1`` (userinfo) or
``…/v1?api_key=…`` (a query parameter). Wherever a provider shows a URL — its ``repr``, an
``LLMError`` message (and so a node's error, an ``llm`` call event, a log line) — the
credential is replaced by ``***`` (``shown_url``, ``mask_urls``, which live in
``converge.errors`` since every ``LLMError`` message goes through them). ``shown_url`` masks the
whole userinfo (``http://***@host/v1``: a token is often the user name alone) and the value of
every query or fragment parameter whose name contains ``key``, ``token``, ``secret``,
``passw``, ``pwd``, ``auth``, ``sig``, ``credential`` or ``session`` (``?api_key=***``,
``X-Amz-Signature=***``); the providers' and ``OpenAIEmbedder``'s ``repr`` (and so
``LLMAgent``'s) use it. The URL itself is used as given. A ``base_url`` that is not an
``http(s)`` URL with a host and a valid port, or holds white space or a control character, is
a ``ValidationError`` (``field="base_url"``, the URL masked) when the provider is built, not the
HTTP library's own exception at the first call. (The OTLP exporter's endpoint is never printed
by converge: the exporter reads it from the environment itself.)
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from converge.errors import ValidationError, mask_urls, shown_url

__all__ = ["check_url"]

_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")


def check_url(url: object, field: str = "base_url") -> None:
    """Refuse what is not an ``http`` or ``https`` URL with a host (and a valid port), or holds
    white space or a control character (which would end it inside an error message).

    Raises:
        ValidationError: naming ``field``; the message shows the URL masked.
    """
    if not isinstance(url, str):
        raise ValidationError(f"{field} must be a URL (str), not {type(url).__name__}", field=field)
    if _SPACE_OR_CONTROL.search(url):
        raise ValidationError(
            f"{field} must not hold spaces or control characters (percent-encode them): "
            f"{shown_url(url)!r}",
            field=field,
        )
    try:
        parts = urlsplit(url)
        _ = parts.port  # reading it checks the port
    except ValueError as exc:
        raise ValidationError(
            f"{field} {shown_url(url)!r} is not a valid URL: {mask_urls(str(exc))}", field=field
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(
            f"{field} must be an http:// or https:// URL with a host, not {shown_url(url)!r}",
            field=field,
        )
