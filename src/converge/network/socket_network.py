"""``SocketNetwork``: the ``Transport`` between processes over connections.

TCP (``converge.network.tcp``) and WebSocket (``converge.network.websocket``) are this class
over two wires; the wire only moves frames (``converge.network.framing``).

Each network listens on one endpoint and advertises one (``endpoint``): what its resolver
(``converge.network.resolver``) tells others. Bound to a loopback address, it also dials other
loopback endpoints from that address, so simulated hosts (127.0.0.2, 127.0.0.3) look like
hosts to each other's per-host limits (``converge.network.limits``). Its agents register on it
as on ``LocalNetwork``, which it keeps inside for them. ``send``:

- a direct message to an agent registered here is delivered in process; any other is sent to
  the endpoint the resolver names for its recipient. No endpoint, the endpoint refuses the
  connection, or the transport there has no such agent (or it stopped): ``TransportError``.
- a topic message goes to this network's own subscribers and to every endpoint the resolver
  names for the topic (but this one); each delivers to its own matching subscribers. An
  endpoint that cannot be reached misses the message, as a subscriber that stopped does.
- it returns once every inbox it reached holds the message: each ``Deliver`` frame is answered
  (``Delivered`` with a count, or ``Refused``), so a direct send that returned was delivered.

Order: one connection per (sender network, receiving endpoint), dialed on first use. Frames go
out in the order sends write them, and the receiving side delivers them one at a time in that
order, so sends awaited one after another arrive in order.

Backpressure: the receiving side reads the next frame only once the previous one is in its
inboxes. A full inbox stops it reading the connection, the socket buffers fill, and TCP flow
control slows the sender, whose sends wait for their answers. Nothing is dropped; the cost is
that one full inbox holds up everything that sender sends to that endpoint (as one slow
subscriber holds up a publisher on ``LocalNetwork``).

Frames that are not frames (truncated, over ``max_frame``, garbage) drop the connection they
came on; nothing of them is delivered, and the sender's waiting sends fail with
``TransportError``. A message whose frame would be over ``max_frame`` is refused by ``send``
with ``MessageTooLarge`` (as by every transport) before anything is sent.

Shutdown: ``aclose()`` closes the listener and every connection, fails waiting sends with
``TransportClosed`` and closes the inboxes registered here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Protocol, Self

import msgspec

from converge.core.clock import Clock, system_clock
from converge.core.endpoint import Endpoint
from converge.core.message import Message
from converge.core.topic import Topic
from converge.errors import (
    FrameError,
    TransportClosed,
    TransportError,
    ValidationError,
)
from converge.network.framing import (
    DEFAULT_MAX_FRAME,
    Deliver,
    Delivered,
    Frame,
    Refused,
    deliver_frame,
    encode_frame,
    encode_message,
)
from converge.network.inbox import Inbox
from converge.network.limits import HostRate, SocketLimits
from converge.network.local import LocalNetwork
from converge.network.reconnect import ReconnectPolicy
from converge.network.resolver import Resolver

__all__ = ["Link", "Listening", "ServerListening", "SocketNetwork", "SocketStats", "Wire"]

_log = logging.getLogger(__name__)


class Link(Protocol):
    """One connection, as a wire exposes it: frames out, frames in."""

    peer: str
    """Who is at the other end (an address, for errors and logs)."""
    host: str
    """The other end's address, without the port: what per-host limits count by."""

    async def send(self, data: bytes) -> None:
        """Write one frame's bytes (prefix included)."""
        ...

    async def receive(self) -> Frame | None:
        """The next frame, or None once the other end closed cleanly.

        Raises:
            FrameError: what came is not a frame (or is over the limit).
            TransportError: the connection broke.
        """
        ...

    async def aclose(self) -> None:
        """Close the connection; idempotent."""
        ...


class Listening(Protocol):
    """A wire's listener."""

    port: int
    """The port it is bound to (the one chosen when asked for port 0)."""

    async def aclose(self) -> None:
        """Stop accepting and close the connections it accepted; idempotent."""
        ...


class _Server(Protocol):
    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


class ServerListening:
    """A ``Listening`` over a server that closes with ``close()`` then ``wait_closed()`` (an
    ``asyncio.Server``, a ``websockets`` server)."""

    def __init__(self, server: _Server, port: int) -> None:
        self._server = server
        self.port = port

    async def aclose(self) -> None:
        self._server.close()
        await self._server.wait_closed()


class Wire(Protocol):
    """How a ``SocketNetwork`` listens and dials: TCP streams, WebSocket…"""

    scheme: str
    """The scheme of the endpoints it dials (``tcp``, ``ws``…)."""

    async def listen(
        self, host: str, port: int, serve: Callable[[Link], Awaitable[None]]
    ) -> Listening:
        """Accept connections on ``host:port``, running ``serve`` on each until it returns."""
        ...

    async def dial(self, endpoint: Endpoint, source: str | None = None) -> Link:
        """Connect to ``endpoint``, from the address ``source`` if given.

        Raises:
            TransportError: it cannot be reached.
        """
        ...


class SocketStats(msgspec.Struct, frozen=True):
    """A ``SocketNetwork``'s metrics at one moment: counters since it started, then gauges.

    Nothing is ever dropped silently: a topic message a peer did not get counts in ``missed``,
    a connection cut for bad bytes in ``bad_frames``, a direct message refused in ``refused``
    (its sender got a ``TransportError``).
    """

    connections: int = 0
    """Connections dialed (each reconnection counts)."""
    reconnects: int = 0
    """Of those, dials to an endpoint already dialed before (the previous connection ended)."""
    bad_frames: int = 0
    """Incoming connections dropped for a frame that was not one (or over the limit)."""
    missed: int = 0
    """Topic messages an endpoint the resolver named did not get (unreachable, or its
    connection broke)."""
    refused: int = 0
    """Direct messages this network refused to deliver (no such agent here, or stopped)."""
    failed_dials: int = 0
    """Dials that failed (refused, unreachable, a failed handshake)."""
    rejected_connections: int = 0
    """Incoming connections closed at once: over a connection limit."""
    throttled: int = 0
    """Incoming messages held back to keep a host within its rate."""
    incoming: int = 0
    """Gauge: incoming connections held now."""
    outgoing: int = 0
    """Gauge: connections to peers open now."""
    waiting_sends: int = 0
    """Gauge: sends written and not yet answered (a receiver holding them back shows here)."""
    queued: int = 0
    """Gauge: messages delivered into the inboxes registered here and not yet read."""


class _Counts(msgspec.Struct):
    """The counters behind ``SocketStats``."""

    connections: int = 0
    reconnects: int = 0
    bad_frames: int = 0
    missed: int = 0
    refused: int = 0
    failed_dials: int = 0
    rejected_connections: int = 0
    throttled: int = 0


class SocketNetwork:
    """A ``Transport`` whose agents reach others over connections (see the module).

    Build one with ``start`` (or ``converge.network.tcp.tcp_network``, ``websocket_network``).
    """

    def __init__(
        self,
        wire: Wire,
        endpoint: Endpoint,
        resolver: Resolver,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        limits: SocketLimits | None = None,
        clock: Clock = system_clock,
        source: str | None = None,
        reconnect: ReconnectPolicy | None = None,
    ) -> None:
        if isinstance(max_frame, bool) or not isinstance(max_frame, int) or max_frame < 64:
            raise ValidationError(
                f"max_frame is an int >= 64, not {max_frame!r}", field="max_frame"
            )
        self._wire = wire
        self.endpoint = endpoint
        """Where peers reach this network (what its resolver should tell them)."""
        self.resolver = resolver
        """Where agents and topic subscribers elsewhere are."""
        self.max_frame = max_frame
        """The largest frame body sent or accepted, in bytes."""
        self.limits = SocketLimits() if limits is None else limits
        """Bounds on incoming connections and each host's message rate."""
        self._clock = clock
        self._hosts: dict[str, HostRate] = {}
        self.source = source
        """The address its connections to loopback endpoints come from (None: the system's
        choice; connections elsewhere always leave that to the system's routing)."""
        self.reconnect = ReconnectPolicy() if reconnect is None else reconnect
        """When a peer that could not be dialed is dialed again."""
        self._counts = _Counts()
        self._local = LocalNetwork()
        self._listening: Listening | None = None
        self._peers: dict[Endpoint, _Peer] = {}
        self._dialed: set[Endpoint] = set()
        self._serving: set[asyncio.Task[None]] = set()
        self._incoming: set[Link] = set()
        self._closed = False

    @classmethod
    async def start(
        cls,
        wire: Wire,
        resolver: Resolver,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        advertise: Endpoint | str | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        limits: SocketLimits | None = None,
        clock: Clock = system_clock,
        reconnect: ReconnectPolicy | None = None,
    ) -> SocketNetwork:
        """Listen on ``host:port`` (port 0: any free one) and return the open network.

        Args:
            wire: TCP, WebSocket…
            resolver: where agents and topic subscribers elsewhere are.
            host: the address to bind (loopback unless told otherwise).
            port: the port to bind; 0 picks a free one.
            advertise: the endpoint others dial (default: ``wire.scheme://host:port``); needed
                when binding a wildcard address.
            max_frame: the largest frame body sent or accepted, in bytes.
            limits: bounds on incoming connections and each host's rate (``SocketLimits()``).
            clock: what the rate limit and reconnection wait on (injected in tests).
            reconnect: when a peer that could not be dialed is dialed again
                (``ReconnectPolicy()``).

        Raises:
            ValidationError: a bad ``advertise`` (or one of another scheme than the wire's)
                or ``max_frame``, or a wildcard ``host`` with nothing to advertise.
            TransportError: the address cannot be bound.
        """
        if advertise is not None:
            advertise = Endpoint.parse(advertise)
            if advertise.scheme != wire.scheme:
                raise ValidationError(
                    f"advertising {advertise} on a {wire.scheme}:// listener: peers would dial "
                    "it with the wrong protocol",
                    field="advertise",
                )
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValidationError(f"port is an int 0-65535, not {port!r}", field="port")
        placeholder = advertise or Endpoint(wire.scheme, host, port or 1)
        network = cls(
            wire,
            placeholder,
            resolver,
            max_frame=max_frame,
            limits=limits,
            clock=clock,
            source=_loopback(host),
            reconnect=reconnect,
        )
        network._listening = await wire.listen(host, port, network.serve)
        if advertise is None:
            network.endpoint = Endpoint(wire.scheme, host, network._listening.port)
        return network

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"SocketNetwork({self.endpoint.url!r})"

    @property
    def closed(self) -> bool:
        """Whether ``aclose()`` was called."""
        return self._closed

    @property
    def stats(self) -> SocketStats:
        """Its metrics now: reconnects, drops (bad frames, missed, refused), queue depths."""
        return SocketStats(
            **msgspec.structs.asdict(self._counts),
            incoming=len(self._incoming),
            outgoing=sum(1 for peer in self._peers.values() if peer.connected),
            waiting_sends=self.waiting_sends,
            queued=self._local.queued(),
        )

    @property
    def incoming(self) -> int:
        """Incoming connections held now."""
        return len(self._incoming)

    def is_connected(self, endpoint: Endpoint | str) -> bool:
        """Whether this network holds an open connection to ``endpoint`` now."""
        peer = self._peers.get(Endpoint.parse(endpoint))
        return peer is not None and peer.connected

    @property
    def waiting_sends(self) -> int:
        """Sends written to a connection and not yet answered: the depth of the outgoing
        queue (a receiver holding them back shows here)."""
        return sum(len(peer.pending) for peer in self._peers.values())

    # -- agents here -------------------------------------------------------------------------------

    def register(self, agent_id: str, inbox: Inbox) -> None:
        """Deliver messages for ``agent_id`` into ``inbox`` (see ``Transport.register``)."""
        self._check_open()
        self._local.register(agent_id, inbox)

    def unregister(self, agent_id: str) -> None:
        """Stop delivering to ``agent_id`` and drop its subscriptions."""
        self._local.unregister(agent_id)

    def is_registered(self, agent_id: str) -> bool:
        """Whether ``agent_id`` has an open inbox on this network."""
        return self._local.is_registered(agent_id)

    def subscribe(self, agent_id: str, topic: Topic | str) -> None:
        """Deliver to ``agent_id`` the topic messages matching ``topic`` that reach here."""
        self._check_open()
        self._local.subscribe(agent_id, topic)

    def unsubscribe(self, agent_id: str, topic: Topic | str) -> None:
        """Stop one subscription."""
        self._local.unsubscribe(agent_id, topic)

    # -- sending -----------------------------------------------------------------------------------

    async def send(self, message: Message) -> int:
        """Deliver ``message`` here or over connections; returns how many inboxes it reached.

        Raises:
            ValidationError: not a ``Message``, or a recipient or topic that is not a str.
            MessageTooLarge: its frame would be over ``max_frame`` (nothing was sent).
            TransportError: a direct message whose recipient the resolver does not know, whose
                endpoint cannot be reached, or whose transport has no such agent (or it
                stopped before the message got in).
            TransportClosed: this network is closed, or closed while the send waited.
        """
        self._check_open()
        if not isinstance(message, Message):
            raise ValidationError(f"expected a Message, not {type(message).__name__}")
        for name in ("recipient", "topic"):
            value = getattr(message, name)
            if value is not None and not isinstance(value, str):
                raise ValidationError(
                    f"a message's `{name}` is a str, not {type(value).__name__}", field=name
                )
        if message.recipient is not None:
            if self._local.is_registered(message.recipient):
                return await self._send_here(message)
            endpoint = await self.resolver.resolve(message.recipient)
            self._check_open()
            if endpoint is None:
                raise TransportError(f"no endpoint known for {message.recipient}")
            if endpoint == self.endpoint:
                raise TransportError(f"no agent {message.recipient} on {self.endpoint}")
            raw = encode_message(message, self.max_frame)
            return await self._peer(endpoint).deliver(raw)
        assert message.topic is not None
        raw = encode_message(message, self.max_frame)
        endpoints = await self.resolver.topic_endpoints(message.topic)
        self._check_open()
        delivered = await self._send_here(message)
        remote = [e for e in dict.fromkeys(endpoints) if e != self.endpoint]
        if not remote:
            return delivered
        async with asyncio.TaskGroup() as group:
            counts = [group.create_task(self._publish_to(e, raw)) for e in remote]
        self._check_open()  # a network closed meanwhile: TransportClosed, not a partial count
        return delivered + sum(c.result() for c in counts)

    async def _send_here(self, message: Message) -> int:
        try:
            return await self._local.send(message)
        except TransportClosed:
            raise TransportClosed("the network closed while the send waited") from None

    async def _publish_to(self, endpoint: Endpoint, raw: msgspec.Raw) -> int:
        """Deliver a topic message to one endpoint; 0 if it cannot (``send`` then checks
        whether this network closed meanwhile)."""
        try:
            return await self._peer(endpoint).deliver(raw)
        except TransportClosed:
            return 0
        except TransportError as exc:
            self._counts.missed += 1
            _log.debug("topic message missed %s: %s", endpoint, exc)
            return 0

    def _peer(self, endpoint: Endpoint) -> _Peer:
        self._check_open()  # aclose() may have run while the resolver answered
        peer = self._peers.get(endpoint)
        if peer is None:
            peer = self._peers[endpoint] = _Peer(self, endpoint)
        return peer

    async def _dial(self, endpoint: Endpoint) -> Link:
        source = self.source if _loopback(endpoint.host) is not None else None
        link = await self._wire.dial(endpoint, source)
        self._counts.connections += 1
        if endpoint in self._dialed:
            self._counts.reconnects += 1
        self._dialed.add(endpoint)
        return link

    # -- receiving ---------------------------------------------------------------------------------

    async def serve(self, link: Link) -> None:
        """Deliver the messages of one incoming connection until it ends (a wire calls this)."""
        task = asyncio.current_task()
        if self._closed:
            await link.aclose()
            return
        host = self._admit(link)
        if host is None:
            self._counts.rejected_connections += 1
            _log.warning("refused a connection from %s: over the connection limits", link.peer)
            await link.aclose()
            return
        if task is not None:
            self._serving.add(task)
        self._incoming.add(link)
        try:
            await self._serve(link, host)
        finally:
            self._incoming.discard(link)
            if task is not None:
                self._serving.discard(task)
            host.connections -= 1
            if host.connections == 0 and self._hosts.get(link.host) is host:
                del self._hosts[link.host]
            await link.aclose()

    def _admit(self, link: Link) -> HostRate | None:
        """The rate of ``link``'s host, counting the connection; None when over a limit."""
        limits = self.limits
        if len(self._incoming) >= limits.max_connections:
            return None
        host = self._hosts.get(link.host)
        if host is None:
            host = self._hosts[link.host] = HostRate(
                limits.messages_per_second, limits.burst, self._clock
            )
        if host.connections >= limits.max_connections_per_host:
            return None
        host.connections += 1
        return host

    async def _serve(self, link: Link, host: HostRate) -> None:
        while True:
            try:
                frame = await link.receive()
            except FrameError as exc:
                self._counts.bad_frames += 1
                _log.warning("dropped a connection from %s: %s", link.peer, exc)
                return
            except TransportError:
                return
            if frame is None:
                return
            if not isinstance(frame, Deliver):
                self._counts.bad_frames += 1
                _log.warning("dropped a connection from %s: a %s frame", link.peer, frame)
                return
            if await host.take():
                self._counts.throttled += 1
            reply: Frame
            try:
                reply = Delivered(frame.seq, await self._local.send(frame.message))
            except TransportClosed:
                return  # closing: the sender's waiting sends fail when the connection drops
            except (TransportError, ValidationError) as exc:
                self._counts.refused += 1
                reply = Refused(frame.seq, f"{self.endpoint}: {exc}")
            try:
                await link.send(encode_frame(reply, self.max_frame))
            except TransportError:
                return

    # -- lifetime ----------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop listening, close every connection, release waiting sends with
        ``TransportClosed`` and close the inboxes registered here; idempotent."""
        if self._closed:
            return
        self._closed = True
        peers = list(self._peers.values())
        self._peers.clear()
        for peer in peers:
            await peer.aclose()
        await self._local.aclose()
        if self._listening is not None:
            await self._listening.aclose()
        for link in list(self._incoming):
            await link.aclose()
        serving = list(self._serving)
        for task in serving:
            task.cancel()
        # Their CancelledErrors are collected, not raised; a cancellation of aclose() itself
        # still propagates.
        await asyncio.gather(*serving, return_exceptions=True)

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosed("the network is closed")


def _loopback(host: str) -> str | None:
    """``host`` if it is a loopback address: a network bound to 127.0.0.3 dials other loopback
    endpoints from there, so listeners tell "hosts" on one machine apart (the system would pick
    127.0.0.1 for all). Other addresses, and dials to other addresses (a loopback network may
    still send to remote hosts), leave the choice to the system's routing."""
    try:
        return host if ipaddress.ip_address(host).is_loopback else None
    except ValueError:
        return None


class _Peer:
    """This network's one connection to an endpoint: dialed on first use, redialed after it
    ends; sends numbered frames and matches the answers to the waiting sends."""

    def __init__(self, network: SocketNetwork, endpoint: Endpoint) -> None:
        self._network = network
        self.endpoint = endpoint
        self._link: Link | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()
        self._writing = asyncio.Lock()
        self.pending: dict[int, asyncio.Future[int]] = {}
        """Futures of the sends waiting for an answer, by seq."""
        self._seq = 0
        self._closed = False
        self._retry_at: float | None = None
        self._delay = network.reconnect.initial_delay

    @property
    def connected(self) -> bool:
        """Whether the connection is up (as far as this side has seen)."""
        return self._link is not None

    async def deliver(self, raw: msgspec.Raw) -> int:
        """Send one encoded message; returns how many inboxes it reached there."""
        link = await self._connected()
        self._seq += 1
        seq = self._seq
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending[seq] = future
        try:
            async with self._writing:
                if self._link is not link:
                    raise TransportError(f"the connection to {self.endpoint} was lost")
                await link.send(deliver_frame(seq, raw))
            return await future
        finally:
            self.pending.pop(seq, None)
            if future.done() and not future.cancelled():
                # The write failed after the reader had failed this future too: its error
                # is the one raised, so this one is read here, not reported as lost.
                future.exception()

    async def _connected(self) -> Link:
        network = self._network
        policy, clock = network.reconnect, network._clock
        async with self._connecting:
            deadline = clock.now() + policy.patience
            while True:
                if self._closed:
                    raise TransportClosed("the network is closed")
                if self._link is not None:
                    return self._link
                now = clock.now()
                if self._retry_at is not None and now < self._retry_at:
                    if self._retry_at > deadline:
                        raise TransportError(
                            f"cannot reach {self.endpoint}: the next attempt is in "
                            f"{self._retry_at - now:.3g}s"
                        )
                    await clock.sleep(self._retry_at - now)
                    continue
                try:
                    link = await network._dial(self.endpoint)
                except TransportError:
                    network._counts.failed_dials += 1
                    self._retry_at = clock.now() + self._delay
                    self._delay = policy.next_delay(self._delay)
                    if self._retry_at > deadline:
                        raise
                    continue
                self._retry_at = None
                self._delay = policy.initial_delay
                if self._closed:
                    await link.aclose()
                    raise TransportClosed("the network is closed")
                self._link = link
                self._reader = asyncio.get_running_loop().create_task(self._read(link))

    async def _read(self, link: Link) -> None:
        error: TransportError = TransportError(f"the connection to {self.endpoint} was lost")
        try:
            while True:
                try:
                    frame = await link.receive()
                except TransportError as exc:  # FrameError too
                    error = TransportError(f"the connection to {self.endpoint} failed: {exc}")
                    return
                if frame is None:
                    return
                if isinstance(frame, Deliver):
                    error = TransportError(f"{self.endpoint} sent a deliver frame back")
                    return
                future = self.pending.get(frame.seq)
                if future is None or future.done():
                    continue  # its send was cancelled
                if isinstance(frame, Delivered):
                    future.set_result(frame.count)
                else:
                    future.set_exception(TransportError(frame.reason))
        finally:
            if self._link is link:
                self._link = None
            self._fail(TransportClosed("the network closed") if self._closed else error)
            await link.aclose()

    def _fail(self, error: TransportError) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_exception(error)

    async def aclose(self) -> None:
        """Close the connection and fail every waiting send with ``TransportClosed``."""
        self._closed = True
        self._fail(TransportClosed("the network closed while the send waited"))
        link, self._link = self._link, None
        if link is not None:
            await link.aclose()
        reader = self._reader
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
