"""``Endpoint``: where a transport listens, as peers reach it.

It is in core, beside ``Topic``, because both the socket transports (``converge.network``) and
agent descriptors (``converge.coordination.discovery``) read it.

Written as a URL: ``tcp://127.0.0.2:7400``, ``tls://host:7400``, ``ws://host:7401``,
``wss://host:7401``. A transport's *advertised* endpoint is the one it tells others (through a
resolver, or an agent's descriptor in discovery); it may differ from the address it binds
(behind NAT or a proxy), but it is never a wildcard address, which nobody can dial.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import msgspec

from converge.errors import ValidationError

__all__ = ["SCHEMES", "Endpoint"]

SCHEMES = ("tcp", "tls", "ws", "wss")
"""The schemes an endpoint may have: plain or TLS TCP, plain or TLS WebSocket."""


class Endpoint(msgspec.Struct, frozen=True):
    """A transport's address as peers dial it."""

    scheme: str
    """``tcp``, ``tls``, ``ws`` or ``wss``."""
    host: str
    """A host name or an IP address (IPv6 without brackets)."""
    port: int
    """The TCP port, 1-65535."""

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValidationError(
                f"an endpoint's scheme is one of {', '.join(SCHEMES)}, not {self.scheme!r}",
                field="scheme",
            )
        if not self.host or any(c in self.host for c in "/ @?#"):
            raise ValidationError(f"{self.host!r} is not a host", field="host")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ValidationError(f"a port is an int, not {self.port!r}", field="port")
        if not 1 <= self.port <= 65535:
            raise ValidationError(f"port {self.port} is not 1-65535", field="port")
        try:
            wildcard = ipaddress.ip_address(self.host).is_unspecified
        except ValueError:
            wildcard = False
        if wildcard:
            raise ValidationError(
                f"{self.host} is a wildcard address: advertise one peers can dial", field="host"
            )

    @classmethod
    def parse(cls, text: str | Endpoint) -> Endpoint:
        """The endpoint a URL names (an ``Endpoint`` is returned as it is).

        Raises:
            ValidationError: not ``scheme://host:port`` with a known scheme and a valid port.
        """
        if isinstance(text, Endpoint):
            return text
        if not isinstance(text, str):
            raise ValidationError(f"an endpoint is a URL str, not {type(text).__name__}")
        parts = urlsplit(text)
        try:
            port = parts.port
        except ValueError as exc:
            raise ValidationError(f"{text!r} has a bad port: {exc}", field="port") from exc
        if not parts.hostname or port is None or parts.path not in ("", "/") or parts.query:
            raise ValidationError(
                f"{text!r} is not an endpoint: expected scheme://host:port", field="endpoint"
            )
        return cls(parts.scheme, parts.hostname, port)

    @property
    def url(self) -> str:
        """``scheme://host:port`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def __str__(self) -> str:
        return self.url
