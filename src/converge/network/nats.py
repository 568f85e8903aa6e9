"""``NatsNetwork``: the ``Transport`` over a NATS server (``nats-py``).

Agents in many processes and on many hosts meet through one NATS server (or cluster).

**Subjects.** Everything lives under a ``prefix`` (``converge`` unless told; one prefix is one
network, so tests and tenants keep apart). An agent's direct messages go to
``<prefix>.agent.<h>``, ``h`` the first 32 hex digits of the SHA-256 of its did: a did may
hold any character, a hash is always one safe subject token, and 128 bits do not collide.
Topics are NATS subjects already (``converge.core.topic``), so a topic ``market.gpu`` is the
subject ``<prefix>.topic.market.gpu`` and a pattern subscribes unchanged (``*``, ``>``).

**Acknowledged delivery.** Every message travels with a reply subject. The receiving network
answers once the message is in the inbox (``ok``), or that it could not get there (``err``:
no such agent, or it stopped while the message waited), and, while a full inbox holds the
message back, says ``held`` every third of ``ack_timeout`` so the sender keeps waiting. A direct
``send`` returns once its recipient's inbox holds the message; NATS answers a request nobody
listens to with "no responders", which ``send`` raises as ``TransportError`` (reachability);
silence for ``ack_timeout`` (the receiving process died, the connection is down) is a
``TransportError`` too. A topic ``send`` waits for the ``ok`` of every network known to have a
matching subscription (below), and returns how many inboxes they reported.

**Backpressure: held back, never dropped.** A message for a full inbox waits in the receiving
network, in a queue of its agent, and is not answered until it got in: its sender, waiting for
the answer, is held back, as on ``LocalNetwork``. Nothing is dropped for want of room. What
waits in a receiving network is at most the sends in flight towards it (each waits for its
answer), however fast their senders are, so a slow reader never pushes the connection to the
NATS server's slow-consumer limit. (A topic message from a publisher that has not yet heard of
this network's interest, below, is the exception: it is queued without holding its sender.)

**Who is interested.** A publisher cannot ask NATS how many subscribers a subject has, so
networks tell each other: each publishes the set of patterns its agents subscribe to on
``<prefix>.interest`` when it changes, asks for the others' on start and on reconnect, and says
it is gone on ``aclose``. A topic ``send`` waits for the networks whose patterns match; one
that falls silent for ``ack_timeout`` is taken for gone. A subscription announced while a
message is on its way still gets the message (the server routes by subscription), only without
holding its publisher back.

**Order.** One network is one NATS connection; the server delivers one connection's messages to
another in the order they were published, on whatever subjects. ``nats-py`` hands each
subscription's messages to its own task, which can reorder messages of different subscriptions
(a topic message and a direct one), so this network takes its own subscriptions' messages
straight from the client's read loop (``_OrderedClient``), in arrival order, into one queue per
agent. A message that matches several of a network's subscriptions arrives once per
subscription; it is delivered once.

**Receiving is the receiver's job.** Bytes that do not decode as a ``Message``, or a topic
message whose topic is not the subject it came on, are dropped and counted (``stats``);
signatures, timestamps and nonces are the receiving agent's to check. ``stats`` also counts
reconnects, disconnects and connection errors; ``held`` is the depth of the agents' queues.

**Reconnect.** ``nats-py`` reconnects with backoff (``reconnect_time_wait`` between attempts,
``max_reconnect_attempts``, -1 for ever) and re-sends the subscriptions; publishes made while
it is away are buffered by the client. A message acknowledged before a server restart is in its
inbox; one whose answer was lost in the restart makes its ``send`` raise ``TransportError``
after ``ack_timeout`` (it may have arrived: at most once, never silently lost).

**Durable topics (JetStream).** ``await subscribe_durable(agent, pattern, name=...)`` keeps
what is published on matching topics in a JetStream stream of this prefix (``stream``, interest
retention: a message stays until every durable consumer took it) read by a durable consumer
called ``name``; an agent that stops and comes back with the same name — in this process or
another — gets what was published meanwhile, then the rest. A message leaves the stream once it
is in the inbox (acknowledged to JetStream after the put): a full inbox leaves it in the stream,
and a publisher is never held back by a durable subscriber. Its messages come by their own path,
so their order against the agent's other messages is not kept (each sender's durable messages
keep their order); an agent should not subscribe to one topic both ways (it would get it twice).

**Limits.** A message whose encoding is over the server's ``max_payload`` is refused with
``MessageTooLarge`` before anything is sent.

**Discovery.** Nothing: a did is its own address, and the server routes topics. Discovery
across hosts (which agents exist, their capabilities) is a separate concern.

``NatsNetwork.connect(...)`` returns an open network; options for credentials (``user`` and
``password``, ``token``, ``user_credentials`` file, ``nkeys_seed``) and TLS (an
``ssl.SSLContext``) are passed to ``nats-py``. ``aclose()`` answers ``err`` for what still
waits, says it is gone, and drains the connection (pending publishes are flushed).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import ssl
from collections import deque
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

import msgspec

from converge.core.message import Message
from converge.core.topic import Topic
from converge.errors import (
    ConvergeError,
    MessageTooLarge,
    MissingExtra,
    TransportClosed,
    TransportError,
    ValidationError,
    shown_url,
)
from converge.network.inbox import Inbox
from converge.protocol.codec import from_msgpack, to_msgpack

try:
    from nats.aio.client import Client
    from nats.aio.subscription import Subscription
    from nats.errors import Error as NatsError
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy
    from nats.js.errors import NotFoundError
except ImportError as exc:  # pragma: no cover - the nats extra is part of dev
    raise MissingExtra("nats-py", "nats", "NatsNetwork") from exc

__all__ = ["NatsNetwork", "agent_subject", "topic_subject"]

_NO_RESPONDERS = b"NATS/1.0 503"
_SEEN_LIMIT = 10_000
"""Message ids remembered to deliver a message that came on several subscriptions once."""


def agent_subject(prefix: str, did: str) -> str:
    """The subject ``did``'s direct messages go to under ``prefix``."""
    digest = hashlib.sha256(did.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{prefix}.agent.{digest[:32]}"


def topic_subject(prefix: str, topic: Topic | str) -> str:
    """The subject a topic (or pattern) maps to under ``prefix``."""
    return f"{prefix}.topic.{topic}"


class _Answer(msgspec.Struct, array_like=True, frozen=True):
    """A receiving network's answer to one message."""

    state: str
    """``ok``, ``held`` or ``err``."""
    network: str
    """The answering network's id."""
    delivered: int = 0
    """How many inboxes took the message (``ok``)."""
    reason: str = ""
    """Why not (``err``)."""


class _Interest(msgspec.Struct, frozen=True):
    """What one network's agents subscribe to, told to the others."""

    network: str
    patterns: list[str]
    ask: bool = False
    """The others should tell theirs (a network starting or back from a reconnect)."""
    gone: bool = False
    """The network closed."""


class _Waiter:
    """A send waiting for answers."""

    def __init__(self, expected: set[str] | None, now: float, topic: str = "") -> None:
        self.expected = expected  # None: a direct message, the first answer settles it
        self.topic = topic
        self.answered: set[str] = set()
        self.delivered = 0
        self.error: str | None = None
        self.closed = False
        self.heard = now
        self.changed = asyncio.Event()

    def done(self) -> bool:
        if self.closed or self.error is not None:
            return True
        if self.expected is None:
            return bool(self.answered)
        return self.expected <= self.answered


class _Delivery:
    """One received message on its way into one or more inboxes, and its answer."""

    def __init__(self, reply: str, targets: int, direct: bool) -> None:
        self.reply = reply
        self.remaining = targets
        self.delivered = 0
        self.direct = direct
        self.reason = ""


class _AgentQueue:
    """Messages held for one agent's inbox, in arrival order, and the task that moves them."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.items: deque[tuple[Message, _Delivery]] = deque()
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class _OrderedClient(Client):
    """A ``nats-py`` client that hands the messages of its owner's subscriptions to the owner
    from its read loop, in the order they arrive (see the module)."""

    owner: NatsNetwork | None = None

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        owner = self.owner
        if owner is not None and not owner._owns(sid):
            sub = self._subs.get(sid)  # one the owner is still subscribing, maybe
            if sub is not None:
                owner._adopt(sid, sub.subject)
        if owner is not None and owner._owns(sid):
            self.stats["in_msgs"] += 1
            self.stats["in_bytes"] += len(data)
            await owner._arrived(sid, subject.decode(), reply.decode(), data, headers)
            return
        await super()._process_msg(sid, subject, reply, data, headers)


class NatsNetwork:
    """Delivers signed messages between agents over a NATS server (a ``Transport``; see the
    module). Build it with ``await NatsNetwork.connect(url, ...)``; ``async with`` closes it."""

    def __init__(self, client: _OrderedClient, *, prefix: str, ack_timeout: float) -> None:
        self._client = client
        self.prefix = prefix
        self.ack_timeout = ack_timeout
        self.id = os.urandom(8).hex()
        self._closed = False
        self._inboxes: dict[str, Inbox] = {}
        self._patterns: dict[str, set[Topic]] = {}
        self._queues: dict[str, _AgentQueue] = {}
        # What is subscribed at the server, by sid and by what it is for.
        self._agent_subs: dict[str, Subscription] = {}
        self._topic_subs: dict[Topic, Subscription] = {}
        self._agent_sids: dict[int, str] = {}
        self._topic_sids: dict[int, Topic] = {}
        self._subscribing: dict[str, str | Topic] = {}  # subject -> agent or pattern
        self._reply_sid = -1
        self._interest_sid = -1
        self._reply_prefix = ""
        self._announced: frozenset[Topic] | None = None
        self._announce_ask = False
        self._peers: dict[str, frozenset[Topic]] = {}
        self._waiters: dict[str, _Waiter] = {}
        self._tokens = itertools.count()
        self._held: dict[int, _Delivery] = {}
        self._posts: deque[tuple[str, bytes]] = deque()
        self._seen: dict[str, int] = {}
        self._dirty = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._durables: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.stats: dict[str, int] = {"dropped": 0, "reconnects": 0, "disconnects": 0, "errors": 0}
        """Counters: ``dropped`` (received bytes that were not a deliverable message),
        ``reconnects``, ``disconnects`` and ``errors`` (as ``nats-py`` reported them) of the
        connection."""

    @classmethod
    async def connect(
        cls,
        servers: str | list[str] = "nats://127.0.0.1:4222",
        *,
        prefix: str = "converge",
        ack_timeout: float = 30.0,
        name: str | None = None,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        user_credentials: str | None = None,
        nkeys_seed: str | None = None,
        tls: ssl.SSLContext | None = None,
        tls_hostname: str | None = None,
        connect_timeout: float = 5.0,
        reconnect_time_wait: float = 2.0,
        max_reconnect_attempts: int = -1,
    ) -> NatsNetwork:
        """Connect to ``servers`` and return an open network.

        Args:
            servers: one NATS URL or several (of one cluster).
            prefix: the subjects' first tokens; networks meet only under the same prefix.
            ack_timeout: seconds of silence from a receiving network before a send gives up.
            name: the connection's name, shown by the server's monitoring.
            user, password, token, user_credentials, nkeys_seed: credentials (a ``.creds``
                file path for ``user_credentials``), as ``nats-py`` takes them.
            tls, tls_hostname: TLS, when the URL is ``tls://`` or the server requires it.
            connect_timeout, reconnect_time_wait, max_reconnect_attempts: as in ``nats-py``
                (-1 attempts: for ever), once connected; the first connection tries each
                server twice, then raises.

        Raises:
            ValidationError: a ``prefix`` that is not a dotted name, or a non-positive
                ``ack_timeout``.
            TransportError: the server could not be reached or refused the connection.
        """
        try:
            checked = Topic(prefix)
        except ValidationError as exc:
            raise ValidationError(f"invalid prefix: {exc}", field="prefix") from None
        if checked.is_pattern:
            raise ValidationError(f"a prefix has no wildcards: {prefix!r}", field="prefix")
        if not ack_timeout > 0:
            raise ValidationError(
                f"ack_timeout must be > 0 seconds, not {ack_timeout!r}", field="ack_timeout"
            )
        client = _OrderedClient()
        network = cls(client, prefix=prefix, ack_timeout=ack_timeout)
        client.owner = network
        urls = [servers] if isinstance(servers, str) else list(servers)
        options: dict[str, Any] = {
            "name": name,
            "user": user,
            "password": password,
            "token": token,
            "user_credentials": user_credentials,
            "nkeys_seed": nkeys_seed,
            "tls": tls,
            "tls_hostname": tls_hostname,
        }
        # Each server twice (a TCP connect and a TLS handshake each), a wait between: a bound
        # for the cases nats-py would not give up on (a TLS server met without a context).
        first_bound = 2 * len(urls) * (2 * connect_timeout + reconnect_time_wait)
        try:
            async with asyncio.timeout(first_bound):
                await client.connect(
                    urls,
                    error_cb=network._on_error,
                    disconnected_cb=network._on_disconnected,
                    reconnected_cb=network._on_reconnected,
                    connect_timeout=connect_timeout,  # type: ignore[arg-type]
                    reconnect_time_wait=reconnect_time_wait,  # type: ignore[arg-type]
                    # The first connection fails after two tries of each server (nats-py would
                    # try for ever); reconnecting later follows the caller's settings.
                    max_reconnect_attempts=1,
                    allow_reconnect=False,
                    **{k: v for k, v in options.items() if v is not None},
                )
            client.options["allow_reconnect"] = True
            client.options["max_reconnect_attempts"] = max_reconnect_attempts
            network._reply_prefix = client.new_inbox()
            reply_sub = await client.subscribe(f"{network._reply_prefix}.*")
            interest_sub = await client.subscribe(f"{prefix}.interest")
            network._reply_sid = reply_sub._id
            network._interest_sid = interest_sub._id
            await network._announce(ask=True)
            await client.flush()
        except (NatsError, OSError, TimeoutError) as exc:
            await _close_quietly(client, connect_timeout)
            shown = ", ".join(shown_url(u) for u in urls)
            raise TransportError(f"could not connect to NATS at {shown}: {exc!r}") from exc
        network._spawn(network._control())
        network._spawn(network._keepalive())
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

    @property
    def closed(self) -> bool:
        """Whether ``aclose()`` was called."""
        return self._closed

    @property
    def held(self) -> int:
        """How many received messages wait for room in their agents' inboxes (queue depth)."""
        return sum(len(queue.items) for queue in self._queues.values())

    @property
    def stream(self) -> str:
        """The JetStream stream durable subscriptions under this prefix read from."""
        return "converge_" + self.prefix.replace(".", "_").replace("-", "_")

    async def subscribe_durable(self, agent_id: str, topic: Topic | str, *, name: str) -> None:
        """Deliver to ``agent_id`` what is published on topics matching ``topic``, kept in
        JetStream while it is away, under the durable consumer ``name`` (see the module).

        Raises:
            ValidationError: ``topic`` or ``name`` is not valid (a name is one topic token),
                or ``agent_id`` is not registered here.
            TransportError: JetStream refused (not enabled on the server, say).
            TransportClosed: the network is closed.
        """
        self._check_open()
        pattern = topic if isinstance(topic, Topic) else Topic(topic)
        if not isinstance(name, str) or len(Topic(name).tokens) != 1 or "*" in name or name == ">":
            raise ValidationError(f"a durable name is one token, not {name!r}", field="name")
        if agent_id not in self._inboxes:
            raise ValidationError(f"{agent_id} is not registered on this network", field="agent")
        if (agent_id, name) in self._durables:
            return
        subject = topic_subject(self.prefix, pattern)
        js = self._client.jetstream()
        try:
            try:
                info = await js.stream_info(self.stream)
                subjects = list(info.config.subjects or [])
                if subject not in subjects:
                    info.config.subjects = [*subjects, subject]
                    await js.update_stream(info.config)
            except NotFoundError:
                await js.add_stream(
                    name=self.stream, subjects=[subject], retention=RetentionPolicy.INTEREST
                )
            reader = await js.pull_subscribe(
                subject,
                durable=name,
                stream=self.stream,
                config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT),
            )
        except NatsError as exc:
            raise TransportError(f"JetStream refused the durable {name!r}: {exc!r}") from exc
        self._durables[agent_id, name] = self._spawn(self._read_durable(agent_id, reader))

    async def _read_durable(self, agent_id: str, reader: Any) -> None:
        """Move a durable consumer's messages into ``agent_id``'s inbox, acknowledging each
        once it is in (a full inbox leaves the rest in the stream)."""
        try:
            while True:
                inbox = self._inboxes.get(agent_id)
                if inbox is None or inbox.closed:
                    return
                try:
                    batch = await reader.fetch(batch=16, timeout=1.0)
                except (NatsTimeout, TimeoutError):
                    continue
                except NatsError:
                    await asyncio.sleep(min(1.0, self.ack_timeout / 3))  # reconnecting
                    continue
                for received in batch:
                    message = self._decode(received.data)
                    if message is not None and message.sender != agent_id:
                        try:
                            await inbox.put(message)
                        except TransportError:
                            return  # stopped: unacknowledged, it stays in the stream
                    await received.ack()
        finally:
            for key in [k for k in self._durables if k[0] == agent_id]:
                if self._durables[key] is asyncio.current_task():
                    del self._durables[key]
            try:
                await reader.unsubscribe()
            except NatsError:
                pass

    @property
    def interest(self) -> dict[str, frozenset[Topic]]:
        """The other networks' topic patterns as they last told them, by network id."""
        return dict(self._peers)

    @property
    def max_payload(self) -> int:
        """The largest encoded message the server takes, in bytes."""
        return self._client.max_payload

    # -- the Transport protocol --------------------------------------------------------------------

    def register(self, agent_id: str, inbox: Inbox) -> None:
        """Deliver messages for ``agent_id`` into ``inbox`` (its subject is subscribed before
        this network's next send goes out).

        Raises:
            ValidationError: another open inbox is registered here for that did.
            TransportClosed: the network is closed.
        """
        self._check_open()
        current = self._inboxes.get(agent_id)
        if current is not None and current is not inbox and not current.closed:
            raise ValidationError(f"{agent_id} is already registered on this network")
        if current is not None and current is not inbox:
            self._drop_queue(agent_id, "the recipient stopped")
        self._inboxes[agent_id] = inbox
        if agent_id not in self._queues:
            queue = _AgentQueue(inbox)
            queue.task = self._spawn(self._deliver(queue))
            self._queues[agent_id] = queue
        self._changed()

    def unregister(self, agent_id: str) -> None:
        """Stop delivering to ``agent_id``; what waited for its inbox is answered ``err``."""
        if self._inboxes.pop(agent_id, None) is None:
            return
        self._patterns.pop(agent_id, None)
        self._drop_queue(agent_id, "the recipient stopped")
        for key in [k for k in self._durables if k[0] == agent_id]:
            self._durables.pop(key).cancel()
        self._changed()

    def is_registered(self, agent_id: str) -> bool:
        """Whether messages for ``agent_id`` are delivered here (an open inbox is registered)."""
        inbox = self._inboxes.get(agent_id)
        return inbox is not None and not inbox.closed

    def subscribe(self, agent_id: str, topic: Topic | str) -> None:
        """Deliver to ``agent_id`` the messages on topics matching ``topic``.

        Raises:
            ValidationError: ``topic`` is not a topic name or pattern.
            TransportClosed: the network is closed.
        """
        self._check_open()
        pattern = topic if isinstance(topic, Topic) else Topic(topic)
        self._patterns.setdefault(agent_id, set()).add(pattern)
        self._changed()

    def unsubscribe(self, agent_id: str, topic: Topic | str) -> None:
        """Stop one subscription (a no-op if there is none)."""
        pattern = topic if isinstance(topic, Topic) else Topic(topic)
        patterns = self._patterns.get(agent_id)
        if patterns is not None and pattern in patterns:
            patterns.discard(pattern)
            self._changed()

    async def send(self, message: Message) -> int:
        """Deliver ``message`` and wait for its answers; returns how many inboxes took it.

        Raises:
            ValidationError: not a ``Message``, a recipient or topic that is not a str, or
                a message that does not encode.
            MessageTooLarge: its encoding is over the server's ``max_payload``.
            TransportError: a direct message nobody receives (no agent with that did, or it
                stopped before the message got in), or no answer for ``ack_timeout``.
            TransportClosed: the network is closed, or closed while the send waited.
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
        data = to_msgpack(message)
        limit = self._client.max_payload
        if len(data) > limit:
            raise MessageTooLarge(len(data), limit, "the NATS server (max_payload)")
        # Subscriptions registered before this send reach the server before it.
        if not self._idle.is_set():
            try:
                async with asyncio.timeout(self.ack_timeout):
                    await self._idle.wait()
            except TimeoutError:
                raise TransportError(
                    f"the NATS server took no subscription for {self.ack_timeout} s"
                ) from None
            self._check_open()
        token = str(next(self._tokens))
        reply = f"{self._reply_prefix}.{token}"
        loop = asyncio.get_running_loop()
        if message.recipient is not None:
            subject = agent_subject(self.prefix, message.recipient)
            waiter = _Waiter(None, loop.time())
        else:
            assert message.topic is not None
            subject = topic_subject(self.prefix, message.topic)
            waiter = _Waiter(self._interested(message.topic), loop.time(), message.topic)
            if not waiter.expected:
                await self._publish(subject, data)
                return 0
        self._waiters[token] = waiter
        try:
            await self._publish(subject, data, reply)
            return await self._wait(waiter, message)
        finally:
            self._waiters.pop(token, None)

    async def aclose(self) -> None:
        """Stop delivering: close and unregister every inbox, answer ``err`` for what still
        waited, release waiting sends with ``TransportClosed``, tell the other networks and
        drain the connection; idempotent."""
        if self._closed:
            return
        self._closed = True
        for waiter in self._waiters.values():
            waiter.closed = True
            waiter.changed.set()
        inboxes = list(self._inboxes.values())
        for agent_id in list(self._queues):
            self._drop_queue(agent_id, "the recipient's network closed")
        self._inboxes.clear()
        self._patterns.clear()
        for inbox in inboxes:
            inbox.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            if self._client.is_connected:
                await self._flush_posts()
                await self._client.publish(
                    f"{self.prefix}.interest",
                    msgspec.msgpack.encode(_Interest(self.id, [], gone=True)),
                )
                await self._client.drain()
        except (NatsError, OSError, TimeoutError):
            pass  # closing anyway: the server drops what it still had of ours
        finally:
            await _close_quietly(self._client)

    # -- sending -----------------------------------------------------------------------------------

    def _interested(self, topic: str) -> set[str]:
        """The networks (this one included) with a subscription matching ``topic``."""
        out = {net for net, patterns in self._peers.items() if _any_match(patterns, topic)}
        if any(_any_match(p, topic) for p in self._patterns.values()):
            out.add(self.id)
        return out

    async def _wait(self, waiter: _Waiter, message: Message) -> int:
        loop = asyncio.get_running_loop()
        while not waiter.done():
            left = waiter.heard + self.ack_timeout - loop.time()
            if left <= 0:
                if waiter.expected is None:
                    raise TransportError(
                        f"no answer from {message.recipient} within {self.ack_timeout} s"
                    )
                for net in waiter.expected - waiter.answered:  # silent: taken for gone
                    self._peers.pop(net, None)
                break
            waiter.changed.clear()
            try:
                async with asyncio.timeout(left):
                    await waiter.changed.wait()
            except TimeoutError:
                continue
        if waiter.closed:
            raise TransportClosed("the network closed while the send waited")
        if waiter.error is not None:
            raise TransportError(f"{message.recipient}: {waiter.error}")
        return waiter.delivered

    async def _publish(self, subject: str, data: bytes, reply: str = "") -> None:
        try:
            await self._client.publish(subject, data, reply=reply)
        except NatsError as exc:
            if self._closed:
                raise TransportClosed("the network is closed") from exc
            raise TransportError(f"NATS refused a publish on {subject}: {exc!r}") from exc

    # -- receiving ---------------------------------------------------------------------------------

    def _adopt(self, sid: int, subject: str) -> None:
        """A message came on ``sid`` before ``subscribe`` returned it: take it if it is the
        subscription being made for an agent or a pattern."""
        key = self._subscribing.get(subject)
        if isinstance(key, Topic):
            self._topic_sids[sid] = key
        elif key is not None:
            self._agent_sids[sid] = key

    def _owns(self, sid: int) -> bool:
        return (
            sid == self._reply_sid
            or sid == self._interest_sid
            or sid in self._agent_sids
            or sid in self._topic_sids
        )

    async def _arrived(
        self, sid: int, subject: str, reply: str, data: bytes, headers: bytes
    ) -> None:
        """One message of this network's subscriptions, in arrival order (the read loop)."""
        if sid == self._reply_sid:
            self._answered(subject, data, headers)
        elif sid == self._interest_sid:
            self._interest(data)
        elif self._closed:  # draining: what still comes is not delivered
            direct = sid in self._agent_sids
            reason = "the recipient's network closed"
            await self._answer(reply, _Answer("err" if direct else "ok", self.id, reason=reason))
        elif sid in self._agent_sids:
            await self._direct(self._agent_sids[sid], reply, data)
        else:
            await self._published(subject, reply, data)

    def _answered(self, subject: str, data: bytes, headers: bytes) -> None:
        waiter = self._waiters.get(subject.rpartition(".")[2])
        if waiter is None:
            return
        waiter.heard = asyncio.get_running_loop().time()
        if headers and headers.startswith(_NO_RESPONDERS):
            if waiter.expected is None:
                waiter.error = "no agent with that did on the network"
            else:
                waiter.expected = set()  # none of the subscribers is there any more
            waiter.changed.set()
            return
        if data.startswith(b"{"):
            return  # JetStream's acknowledgement of a topic message a stream keeps
        try:
            answer = msgspec.msgpack.decode(data, type=_Answer)
        except msgspec.DecodeError:
            self.stats["dropped"] += 1
            return
        if answer.state == "ok":
            waiter.answered.add(answer.network)
            waiter.delivered += answer.delivered
        elif answer.state == "err":
            waiter.answered.add(answer.network)
            if waiter.expected is None:
                waiter.error = answer.reason or "not delivered"
        waiter.changed.set()

    def _interest(self, data: bytes) -> None:
        try:
            told = msgspec.msgpack.decode(data, type=_Interest)
            patterns = frozenset(Topic(p) for p in told.patterns)
        except (msgspec.DecodeError, ValidationError):
            self.stats["dropped"] += 1
            return
        if told.network == self.id:
            return
        if told.gone:
            self._peers.pop(told.network, None)
        else:
            self._peers[told.network] = patterns
        for waiter in self._waiters.values():  # no longer interested: not waited for
            if (
                waiter.expected is not None
                and told.network in waiter.expected
                and (told.gone or not _any_match(patterns, waiter.topic))
            ):
                waiter.expected.discard(told.network)
                waiter.changed.set()
        if told.ask and not self._closed:
            self._announced = None  # tell ours again
            self._changed()

    def _decode(self, data: bytes) -> Message | None:
        try:
            return from_msgpack(data, Message)
        except ConvergeError:
            self.stats["dropped"] += 1
            return None

    async def _direct(self, agent_id: str, reply: str, data: bytes) -> None:
        message = self._decode(data)
        queue = self._queues.get(agent_id)
        if message is None or message.recipient != agent_id:
            if message is not None:
                self.stats["dropped"] += 1
            await self._answer(reply, _Answer("err", self.id, reason="not a message for it"))
            return
        if queue is None or queue.inbox.closed:
            await self._answer(reply, _Answer("err", self.id, reason="the recipient stopped"))
            return
        self._hold(queue, message, _Delivery(reply, 1, direct=True))

    async def _published(self, subject: str, reply: str, data: bytes) -> None:
        message = self._decode(data)
        if (
            message is None
            or message.topic is None
            or subject != topic_subject(self.prefix, message.topic)
        ):
            if message is not None:  # not a topic message, or not the topic of its subject
                self.stats["dropped"] += 1
            await self._answer(reply, _Answer("ok", self.id, 0))
            return
        copies = self._seen.pop(message.id, None)
        if copies is not None:  # a further copy, from another matching subscription
            if copies > 1:
                self._seen[message.id] = copies - 1
            return
        topic = message.topic
        copies = sum(1 for p in self._topic_sids.values() if p.matches(topic))
        if copies > 1:
            self._seen[message.id] = copies - 1
            while len(self._seen) > _SEEN_LIMIT:
                del self._seen[next(iter(self._seen))]
        targets = [
            self._queues[agent]
            for agent, patterns in self._patterns.items()
            if agent != message.sender
            and agent in self._queues
            and not self._queues[agent].inbox.closed
            and _any_match(patterns, topic)
        ]
        delivery = _Delivery(reply, len(targets), direct=False)
        if not targets:
            await self._answer(reply, _Answer("ok", self.id, 0))
            return
        for queue in targets:
            self._hold(queue, message, delivery)

    def _hold(self, queue: _AgentQueue, message: Message, delivery: _Delivery) -> None:
        queue.items.append((message, delivery))
        queue.ready.set()
        if delivery.reply:
            self._held[id(delivery)] = delivery

    async def _deliver(self, queue: _AgentQueue) -> None:
        """Move one agent's held messages into its inbox, waiting for room (backpressure)."""
        while True:
            while not queue.items:
                queue.ready.clear()
                await queue.ready.wait()
            message, delivery = queue.items[0]
            try:
                await queue.inbox.put(message)
                ok = True
            except TransportError:
                ok = False
            queue.items.popleft()
            answer = self._settle(delivery, ok, "the recipient stopped")
            if answer is None:
                continue
            try:
                await self._answer(delivery.reply, answer)
            except asyncio.CancelledError:  # unregistered meanwhile: the answer still goes
                self._posts.append((delivery.reply, msgspec.msgpack.encode(answer)))
                self._changed()
                raise

    def _settle(self, delivery: _Delivery, ok: bool, reason: str) -> _Answer | None:
        """Count one target of ``delivery`` done; its answer once all are."""
        delivery.remaining -= 1
        if ok:
            delivery.delivered += 1
        else:
            delivery.reason = reason
        if delivery.remaining > 0:
            return None
        self._held.pop(id(delivery), None)
        if not delivery.reply:
            return None
        if delivery.direct and not delivery.delivered:
            return _Answer("err", self.id, reason=delivery.reason)
        return _Answer("ok", self.id, delivery.delivered)

    def _drop_queue(self, agent_id: str, reason: str) -> None:
        """Stop moving messages into ``agent_id``'s inbox; what waited is answered."""
        queue = self._queues.pop(agent_id, None)
        if queue is None:
            return
        if queue.task is not None:
            queue.task.cancel()
        while queue.items:
            _, delivery = queue.items.popleft()
            answer = self._settle(delivery, False, reason)
            if answer is not None:
                self._posts.append((delivery.reply, msgspec.msgpack.encode(answer)))
        self._changed()

    async def _answer(self, reply: str, answer: _Answer) -> None:
        if not reply:
            return
        try:
            await self._client.publish(reply, msgspec.msgpack.encode(answer))
        except NatsError:
            pass  # the connection is gone: the sender hears nothing and gives up in time

    # -- the connection ----------------------------------------------------------------------------

    def _changed(self) -> None:
        """Agents, subscriptions or answers to send changed: the control task catches up."""
        self._idle.clear()
        self._dirty.set()

    async def _control(self) -> None:
        """Bring the server's subscriptions in line with the agents' (in the order they
        changed), tell the others what this network subscribes to, send queued answers."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._reconcile()
            except (NatsError, OSError, TimeoutError):
                self._dirty.set()  # try again once the connection is back
                await asyncio.sleep(min(1.0, self.ack_timeout / 3))
                continue
            if not self._dirty.is_set():
                self._idle.set()

    async def _reconcile(self) -> None:
        client = self._client
        # A message the server routed before it had an unsubscription still comes, on the old
        # sid: it is answered (``err``, or ``ok`` for none) until a round trip shows the server
        # has the unsubscription, so its sender does not wait in vain.
        retired: list[int] = []
        for agent_id in [a for a in self._agent_subs if a not in self._inboxes]:
            sub = self._agent_subs.pop(agent_id)
            await sub.unsubscribe()
            retired.append(sub._id)
        for agent_id in [a for a in self._inboxes if a not in self._agent_subs]:
            subject = agent_subject(self.prefix, agent_id)
            self._subscribing[subject] = agent_id
            try:
                sub = await client.subscribe(subject)
            finally:
                del self._subscribing[subject]
            self._agent_subs[agent_id] = sub
            self._agent_sids[sub._id] = agent_id
        wanted = frozenset(p for patterns in self._patterns.values() for p in patterns)
        for pattern in [p for p in self._topic_subs if p not in wanted]:
            sub = self._topic_subs.pop(pattern)
            await sub.unsubscribe()
            retired.append(sub._id)
        for pattern in sorted(wanted - self._topic_subs.keys()):
            subject = topic_subject(self.prefix, pattern)
            self._subscribing[subject] = pattern
            try:
                sub = await client.subscribe(subject)
            finally:
                del self._subscribing[subject]
            self._topic_subs[pattern] = sub
            self._topic_sids[sub._id] = pattern
        if wanted != self._announced or self._announce_ask:
            await self._announce(ask=self._announce_ask)
        await self._flush_posts()
        if retired:
            await client.flush(timeout=max(1, round(self.ack_timeout)))
            for sid in retired:
                self._agent_sids.pop(sid, None)
                self._topic_sids.pop(sid, None)

    async def _announce(self, *, ask: bool) -> None:
        wanted = frozenset(p for patterns in self._patterns.values() for p in patterns)
        told = _Interest(self.id, sorted(str(p) for p in wanted), ask=ask)
        await self._client.publish(f"{self.prefix}.interest", msgspec.msgpack.encode(told))
        self._announced = wanted
        self._announce_ask = False

    async def _flush_posts(self) -> None:
        while self._posts:
            reply, data = self._posts[0]
            await self._client.publish(reply, data)
            self._posts.popleft()

    async def _keepalive(self) -> None:
        """Tell the senders of held messages, every third of ``ack_timeout``, to keep waiting."""
        while True:
            await asyncio.sleep(self.ack_timeout / 3)
            for delivery in list(self._held.values()):
                await self._answer(delivery.reply, _Answer("held", self.id))

    async def _on_error(self, exc: Exception) -> None:
        """``nats-py`` reports connection errors here (it reconnects on its own): counted."""
        self.stats["errors"] += 1

    async def _on_disconnected(self) -> None:
        self.stats["disconnects"] += 1

    async def _on_reconnected(self) -> None:
        self.stats["reconnects"] += 1
        if not self._closed:
            self._announce_ask = True  # others may have come or gone meanwhile
            self._changed()

    def _spawn(self, work: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosed("the network is closed")


def _any_match(patterns: Iterable[Topic], topic: str) -> bool:
    return any(p.matches(topic) for p in patterns)


async def _close_quietly(client: Client, within: float = 5.0) -> None:
    """Close ``client``, giving up after ``within`` seconds (a connection that failed half-way
    through a TLS handshake may never finish closing)."""
    try:
        async with asyncio.timeout(within):
            await client.close()
    except (NatsError, OSError, TimeoutError):
        pass
