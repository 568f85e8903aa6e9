"""The TCP transport: ``SocketNetwork`` over asyncio streams.

Frames (``converge.network.framing``) go back to back on a TCP stream. ``tcp_network`` listens
on 127.0.0.1 unless told otherwise and advertises ``tcp://host:port``; what it needs of
discovery is a ``Resolver`` (did -> endpoint, and the endpoints a topic goes to). Backpressure
is TCP's own: a receiver that stops reading lets the socket buffers fill, and the sender's
``drain()`` waits.

A send waits for its answer as long as the receiver holds it back, so a peer that vanished
without closing its connections (a host powered off, a cable pulled) must be noticed some
other way: connections use TCP keepalive (probes after 30 s idle, every 10 s, 3 unanswered
ones end it), so such a peer fails its waiting sends with ``TransportError`` within about a
minute. (WebSocket has its own pings for this.)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable

from converge.core.clock import Clock, system_clock
from converge.core.endpoint import Endpoint
from converge.errors import TransportError
from converge.network.framing import DEFAULT_MAX_FRAME, Frame, read_frame
from converge.network.limits import SocketLimits
from converge.network.reconnect import ReconnectPolicy
from converge.network.resolver import Resolver
from converge.network.socket_network import Link, ServerListening, SocketNetwork
from converge.network.tls import TlsConfig

__all__ = ["TcpWire", "tcp_network"]

_CONNECT_TIMEOUT = 10.0
_KEEPALIVE = (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))
"""Seconds idle before the first probe, seconds between probes, unanswered probes to give up."""


def _keep_alive(writer: asyncio.StreamWriter) -> None:
    """Turn TCP keepalive on for the connection (the options a platform lacks are skipped)."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in _KEEPALIVE:
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)


class _StreamLink:
    """One TCP connection as a ``Link``."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        limit: int,
        peer: str,
        host: str,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._limit = limit
        self.peer = peer
        self.host = host
        self._closed = False

    async def send(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (ConnectionError, OSError, RuntimeError) as exc:
            raise TransportError(f"the connection to {self.peer} broke: {exc}") from exc

    async def receive(self) -> Frame | None:
        try:
            return await read_frame(self._reader, self._limit, peer=self.peer)
        except TransportError:  # a FrameError, which is a ConnectionError too: as it is
            raise
        except (ConnectionError, OSError) as exc:
            raise TransportError(f"the connection to {self.peer} broke: {exc}") from exc

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()


class TcpWire:
    """Frames over TCP streams, or TLS over TCP (a ``Wire`` for ``SocketNetwork``).

    Args:
        max_frame: the largest frame body read; a larger one drops the connection.
        tls: listen with TLS (endpoints ``tls://``) and dial ``tls://`` endpoints with these
            certificates; None: listen in plain TCP (``tcp://``), and dial ``tls://``
            endpoints checking them against the system's trusted CAs.

    Raises:
        ValidationError: TLS certificates that do not load.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, tls: TlsConfig | None = None) -> None:
        self.max_frame = max_frame
        self.scheme = "tcp" if tls is None else "tls"
        self._server_tls = None if tls is None else tls.server_context()
        self._client_tls = None if tls is None else tls.client_context()

    async def listen(
        self, host: str, port: int, serve: Callable[[Link], Awaitable[None]]
    ) -> ServerListening:
        """Accept TCP connections on ``host:port``.

        Raises:
            TransportError: the address cannot be bound.
        """

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            _keep_alive(writer)
            address = writer.get_extra_info("peername")
            host = str(address[0]) if address else "?"
            peer = f"{host}:{address[1]}" if address else "a peer"
            await serve(_StreamLink(reader, writer, self.max_frame, peer, host))

        try:
            server = await asyncio.start_server(accepted, host, port, ssl=self._server_tls)
        except OSError as exc:
            raise TransportError(f"cannot listen on {host}:{port}: {exc}") from exc
        bound = server.sockets[0].getsockname()[1]
        return ServerListening(server, bound)

    async def dial(self, endpoint: Endpoint, source: str | None = None) -> _StreamLink:
        """Connect to ``endpoint`` (from the address ``source`` if given).

        Raises:
            TransportError: refused, unreachable, a failed TLS handshake, no answer within 10 s,
                or an endpoint that is not ``tcp://`` or ``tls://``.
        """
        if endpoint.scheme not in ("tcp", "tls"):
            raise TransportError(f"cannot dial {endpoint} over TCP")
        context: ssl.SSLContext | None = None
        if endpoint.scheme == "tls":
            context = self._client_tls or ssl.create_default_context()
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_connection(
                    endpoint.host,
                    endpoint.port,
                    local_addr=None if source is None else (source, 0),
                    ssl=context,
                )
        except (OSError, TimeoutError) as exc:
            raise TransportError(f"cannot reach {endpoint}: {exc}") from exc
        _keep_alive(writer)
        return _StreamLink(reader, writer, self.max_frame, str(endpoint), endpoint.host)


async def tcp_network(
    resolver: Resolver,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    advertise: Endpoint | str | None = None,
    max_frame: int = DEFAULT_MAX_FRAME,
    limits: SocketLimits | None = None,
    clock: Clock = system_clock,
    tls: TlsConfig | None = None,
    reconnect: ReconnectPolicy | None = None,
) -> SocketNetwork:
    """A ``SocketNetwork`` over TCP, listening on ``host:port`` (see ``SocketNetwork.start``);
    with ``tls``, over TLS (``tls://`` endpoints, server-side or mutual: ``TlsConfig``).

    Raises:
        ValidationError: a bad ``advertise``, ``port``, ``max_frame`` or TLS certificate.
        TransportError: the address cannot be bound.
    """
    return await SocketNetwork.start(
        TcpWire(max_frame, tls),
        resolver,
        host=host,
        port=port,
        advertise=advertise,
        max_frame=max_frame,
        limits=limits,
        clock=clock,
        reconnect=reconnect,
    )
