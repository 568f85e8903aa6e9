"""The WebSocket transport: ``SocketNetwork`` over ``websockets``.

For agents behind HTTP infrastructure (proxies, load balancers that speak WebSocket). Each
binary WebSocket message carries exactly one frame of ``converge.network.framing``, its length
prefix included, so both socket transports share one encoding and one size limit. Needs the
``ws`` extra (``pip install "converge-agents[ws]"``).

``websocket_network`` listens on 127.0.0.1 unless told otherwise and advertises
``ws://host:port``; what it needs of discovery is a ``Resolver``. Backpressure: ``websockets``
buffers at most a few incoming messages per connection (``max_queue``) and stops reading the
socket beyond them, so TCP flow control reaches the sender as on the TCP transport. A message
over the size limit is refused by ``websockets`` itself before it is buffered (close code 1009),
reported here as ``FrameTooLarge``. Compression is off (signed messages hardly compress, and
it would make the size limit apply to inflated bytes) and so is the client's proxy lookup
(peers are dialed directly).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from converge.core.clock import Clock, system_clock
from converge.core.endpoint import Endpoint
from converge.errors import FrameError, FrameTooLarge, MissingExtra, TransportError
from converge.network.framing import DEFAULT_MAX_FRAME, HEADER_SIZE, Frame, unpack_frame
from converge.network.limits import SocketLimits
from converge.network.reconnect import ReconnectPolicy
from converge.network.resolver import Resolver
from converge.network.socket_network import Link, ServerListening, SocketNetwork
from converge.network.tls import TlsConfig

if TYPE_CHECKING:
    from websockets.asyncio.connection import Connection
    from websockets.asyncio.server import ServerConnection

__all__ = ["WebSocketWire", "websocket_network"]

_OPEN_TIMEOUT = 10.0
_MAX_QUEUE = 4
"""Incoming messages ``websockets`` buffers per connection before it stops reading."""
_MESSAGE_TOO_BIG = 1009


def _require() -> None:
    try:
        import websockets  # noqa: F401
    except ImportError as exc:
        raise MissingExtra("websockets", "ws", "the WebSocket transport") from exc


class _WebSocketLink:
    """One WebSocket connection as a ``Link``."""

    def __init__(self, connection: Connection, limit: int, peer: str, host: str) -> None:
        self._connection = connection
        self._limit = limit
        self.peer = peer
        self.host = host

    async def send(self, data: bytes) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self._connection.send(data)
        except ConnectionClosed as exc:
            raise TransportError(f"the connection to {self.peer} closed: {exc}") from exc

    async def receive(self) -> Frame | None:
        from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

        try:
            data = await self._connection.recv()
        except ConnectionClosedOK:
            return None
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == _MESSAGE_TOO_BIG:
                raise FrameTooLarge(None, self._limit, peer=self.peer) from exc
            raise TransportError(f"the connection to {self.peer} closed: {exc}") from exc
        if isinstance(data, str):
            raise FrameError(f"a text message from {self.peer}, not a frame", peer=self.peer)
        return unpack_frame(data, self._limit, peer=self.peer)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):  # closing an already broken connection
            await self._connection.close()


class WebSocketWire:
    """Frames over WebSocket binary messages (a ``Wire`` for ``SocketNetwork``).

    Args:
        max_frame: the largest frame body read; a larger message drops the connection.
        tls: listen with TLS (endpoints ``wss://``) and dial ``wss://`` endpoints with these
            certificates; None: listen in plain WebSocket (``ws://``), and dial ``wss://``
            endpoints checking them against the system's trusted CAs.

    Raises:
        MissingExtra: ``websockets`` is not installed (the ``ws`` extra).
        ValidationError: TLS certificates that do not load.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, tls: TlsConfig | None = None) -> None:
        _require()
        self.max_frame = max_frame
        self.scheme = "ws" if tls is None else "wss"
        self._server_tls = None if tls is None else tls.server_context()
        self._client_tls = None if tls is None else tls.client_context()

    def _options(self) -> dict[str, Any]:
        return {
            "max_size": self.max_frame + HEADER_SIZE,
            "max_queue": _MAX_QUEUE,
            "compression": None,
        }

    async def listen(
        self, host: str, port: int, serve: Callable[[Link], Awaitable[None]]
    ) -> ServerListening:
        """Accept WebSocket connections on ``host:port`` (any path).

        Raises:
            TransportError: the address cannot be bound.
        """
        from websockets.asyncio.server import serve as ws_serve

        async def accepted(connection: ServerConnection) -> None:
            address = connection.remote_address
            host = str(address[0]) if address else "?"
            peer = f"{host}:{address[1]}" if address else "a peer"
            await serve(_WebSocketLink(connection, self.max_frame, peer, host))

        try:
            server = await ws_serve(accepted, host, port, ssl=self._server_tls, **self._options())
        except OSError as exc:
            raise TransportError(f"cannot listen on {host}:{port}: {exc}") from exc
        bound = next(iter(server.sockets)).getsockname()[1]
        return ServerListening(server, bound)

    async def dial(self, endpoint: Endpoint, source: str | None = None) -> _WebSocketLink:
        """Connect to ``endpoint`` (from the address ``source`` if given).

        Raises:
            TransportError: refused, unreachable, a failed handshake (TLS or WebSocket), no
                answer within 10 s, or an endpoint that is not ``ws://`` or ``wss://``.
        """
        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException

        if endpoint.scheme not in ("ws", "wss"):
            raise TransportError(f"cannot dial {endpoint} over WebSocket")
        tls: dict[str, Any] = {}
        if endpoint.scheme == "wss":
            tls["ssl"] = self._client_tls or ssl.create_default_context()
        url = f"{endpoint.url}/"
        try:
            connection = await connect(
                url,
                open_timeout=_OPEN_TIMEOUT,
                proxy=None,
                local_addr=None if source is None else (source, 0),
                **tls,
                **self._options(),
            )
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise TransportError(f"cannot reach {endpoint}: {exc}") from exc
        return _WebSocketLink(connection, self.max_frame, str(endpoint), endpoint.host)


async def websocket_network(
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
    """A ``SocketNetwork`` over WebSocket, listening on ``host:port`` (see
    ``SocketNetwork.start``); with ``tls``, over TLS (``wss://`` endpoints: ``TlsConfig``).

    Raises:
        MissingExtra: ``websockets`` is not installed (the ``ws`` extra).
        ValidationError: a bad ``advertise``, ``port``, ``max_frame`` or TLS certificate.
        TransportError: the address cannot be bound.
    """
    return await SocketNetwork.start(
        WebSocketWire(max_frame, tls),
        resolver,
        host=host,
        port=port,
        advertise=advertise,
        max_frame=max_frame,
        limits=limits,
        clock=clock,
        reconnect=reconnect,
    )
