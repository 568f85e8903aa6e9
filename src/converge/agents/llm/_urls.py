"""Endpoint URLs as providers show them, and as they accept them.

A ``base_url`` may carry a credential: ``http://user:key@gateway/v1`` (userinfo) or
``…/v1?api_key=…`` (a query parameter). Wherever a provider shows a URL — its ``repr``, an
``LLMError`` message (and so a node's error, an ``llm`` call event, a log line) — the
credential is replaced by ``***`` (``shown_url``, ``mask_urls``): the whole userinfo, since a
token is often the user name alone (``https://TOKEN@host``), and the value of every query or
fragment parameter whose name says it is a secret (``key``, ``token``, ``secret``, ``password``,
``pwd``, ``auth``, ``sig``, ``credential``, ``session``, in any case and as part of a longer
name: ``api_key``, ``X-Amz-Signature``). The URL itself is used as given.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from converge.errors import ValidationError

__all__ = ["check_url", "mask_urls", "shown_url"]

MASK = "***"
# A URL inside free text: a scheme, "://", its authority (credentials may hold any character
# but a delimiter or a space), then the rest up to a space or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s]*[^\s\"'<>`]*")
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
_SECRET_NAME = re.compile(r"key|token|secret|passw|pwd|auth|sig|credential|session", re.IGNORECASE)


def shown_url(url: str) -> str:
    """``url`` with its credentials masked (see the module): ``http://u:k@h/v1?api_key=k&v=1``
    is shown as ``http://***@h/v1?api_key=***&v=1``. Never raises, whatever ``url`` holds."""
    start = url.find("://")
    start = 0 if start < 0 else start + 3
    end = _first(url, "/?#", start)
    authority = url[start:end]
    if "@" in authority:
        authority = MASK + authority[authority.rindex("@") :]
    head, rest = url[:start] + authority, url[end:]
    path, _, fragment = rest.partition("#")
    path, mark, query = path.partition("?")
    shown = head + path + mark + _params(query)
    return shown + "#" + _params(fragment) if "#" in rest else shown


def mask_urls(text: str) -> str:
    """``text`` (an error message, say) with every URL in it shown by ``shown_url``."""
    return _URL_IN_TEXT.sub(lambda m: shown_url(m.group()), text)


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


def _first(text: str, chars: str, start: int) -> int:
    """The index of the first of ``chars`` in ``text`` from ``start``, else its length."""
    found = [i for i in (text.find(c, start) for c in chars) if i >= 0]
    return min(found, default=len(text))


def _params(query: str) -> str:
    """``name=value`` pairs (split on ``&`` and ``;``) with secret-named values masked."""
    if not query:
        return query
    return re.sub(
        r"([^&;=]*)=([^&;]*)",
        lambda m: f"{m.group(1)}={MASK}" if _SECRET_NAME.search(unquote(m.group(1))) else m[0],
        query,
    )
