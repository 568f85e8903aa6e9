"""``TlsConfig``: TLS for socket transports, server-side or mutual.

One config serves both ends of a network: its listener presents ``certfile`` (with
``keyfile``), and its dialer checks a listener's certificate against ``cafile`` (the system's
trusted CAs when None) and the endpoint's host name or IP address. With ``mutual``, the
listener asks each dialer for a certificate signed by ``cafile`` and the dialer presents its own
``certfile``: only holders of a certificate from that CA can deliver anything. TLS proves which
*host* is at the other end; which *agent* sent a message is still its signature's job.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import msgspec

from converge.errors import ValidationError

__all__ = ["TlsConfig"]


class TlsConfig(msgspec.Struct, frozen=True):
    """Certificates for a socket network's TLS (see the module)."""

    certfile: str
    """PEM certificate (chain) this network presents, as a listener and, if mutual, a dialer."""
    keyfile: str | None = None
    """PEM private key of ``certfile`` (None: it is in ``certfile``)."""
    cafile: str | None = None
    """PEM CA certificates that sign peers' certificates (None: the system's trusted CAs)."""
    mutual: bool = False
    """Whether a listener requires dialers to present a certificate signed by ``cafile``."""

    def __post_init__(self) -> None:
        for name in ("certfile", "keyfile", "cafile"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise ValidationError(f"{name} {value!r} is not a file", field=name)
        if self.mutual and self.cafile is None:
            raise ValidationError("mutual TLS needs a `cafile` to check dialers by", field="cafile")

    def server_context(self) -> ssl.SSLContext:
        """The listener's context.

        Raises:
            ValidationError: a certificate or key that does not load.
        """
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._load(context, "server")
        if self.mutual:
            context.verify_mode = ssl.CERT_REQUIRED
            try:
                context.load_verify_locations(cafile=self.cafile)
            except (ssl.SSLError, OSError) as exc:
                raise ValidationError(
                    f"cafile {self.cafile!r} does not load: {exc}", field="cafile"
                ) from exc
        return context

    def client_context(self) -> ssl.SSLContext:
        """The dialer's context (checks the listener's certificate and host).

        Raises:
            ValidationError: a certificate or key that does not load.
        """
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.cafile)
        except (ssl.SSLError, OSError) as exc:
            raise ValidationError(
                f"cafile {self.cafile!r} does not load: {exc}", field="cafile"
            ) from exc
        if self.mutual:
            self._load(context, "client")
        return context

    def _load(self, context: ssl.SSLContext, side: str) -> None:
        try:
            context.load_cert_chain(self.certfile, self.keyfile)
        except (ssl.SSLError, OSError) as exc:
            raise ValidationError(
                f"the {side} certificate {self.certfile!r} does not load: {exc}", field="certfile"
            ) from exc
