"""Discovery: which agents are out there and what they can do.

It says what agents can do, which topics they follow and where to reach them.

An agent advertises an ``AgentDescriptor``; the ``DiscoveryService`` keeps it in the store while
the agent heartbeats, and answers queries by capability, topic, pool and minimum trust. Keys:

- ``agent/<did>``: the descriptor (MessagePack), including when it lapses;
- ``agent-cap/<capability name>/<did>``: one index key per capability offered, holding its version,
  written and deleted in the unit of work that writes the descriptor, so a query by capability
  reads one prefix instead of every agent.

A descriptor lapses ``ttl_s`` after its registration or last heartbeat: from then on ``get``,
``find`` and ``capabilities_of`` do not see it, and ``prune_expired`` deletes it. Events (trace id
and subject: the did; actor: the did, or empty when the service itself acts) and their ``data``:

- ``agent.registered``: ``name``, ``capabilities`` (``["name@version", …]``), ``topics``, ``pools``;
- ``agent.unregistered``: nothing; ``agent.expired``: ``expires_at``;
- ``discovery.refused``: ``reason``, ``message_id``, ``sender`` (as claimed: it may be forged).

Heartbeats write no event: they say only "still here", and at one every few seconds per agent they
would swamp a log that is never pruned; ``agent.expired`` records when the last one ran out.

In process (the runtime) one calls ``register``. From outside the process a request is a signed
``discovery.register`` message (``register_signed``) and the descriptor must name the message's
authenticated sender: a did typed into a payload is never believed on its own. The runtime
registers its agent on start, heartbeats three times per ``ttl_s`` (30 s by default) and
unregisters it on stop; a heartbeat on a lapsed descriptor is refused (register again).
Descriptors are self-declared: advertised pools are not checked (``PoolManager`` is
authoritative). A descriptor's did must be an Ed25519 ``did:key``, its capability names unique,
its topics valid NATS patterns, its ``endpoints`` URLs ``Endpoint.parse`` accepts; errors name
the field. A query by topic or pool only, and
``prune_expired``, read every descriptor; a query by capability reads the prefix
``agent-cap/<name>/did:`` (names may hold ``/`` but never ``:``), checks version ranges on the
index values, then reads the named descriptors in concurrent batches until ``limit``.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from converge.coordination.pool_manager import TrustSource
from converge.core.capability import Capability, CapabilitySet, Requirement
from converge.core.clip import clip, clip_text, shown
from converge.core.clock import Clock, on_clock, system_clock
from converge.core.codec_errors import validation_error
from converge.core.endpoint import Endpoint
from converge.core.identity import public_key_from_did
from converge.core.message import Message, ReplayGuard
from converge.core.topic import Topic
from converge.errors import (
    CapabilityError,
    ConflictError,
    IdentityError,
    PolicyViolation,
    ProtocolError,
    StoreError,
    ValidationError,
)
from converge.protocol.event import Event
from converge.store.base import Entry, Store, Transaction

__all__ = ["REGISTER_KIND", "AgentDescriptor", "DiscoveryService"]

REGISTER_KIND = "discovery.register"
"""The ``kind`` of a message asking ``register_signed`` to register its sender."""

_AGENTS = "agent/"
_MAX_RETRIES = 32
T = TypeVar("T")


class AgentDescriptor(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """What an agent advertises: who it is, what it can do, what it follows, where to reach it."""

    did: str
    """The agent's id: the Ed25519 ``did:key`` of its identity."""
    name: str
    """A display name for people and logs; not unique."""
    capabilities: tuple[Capability, ...] = ()
    """What it can do, at most one version per capability name."""
    topics: tuple[str, ...] = ()
    """Topic patterns it follows, NATS-style (``market.*.gpu``, ``market.>``)."""
    pools: tuple[str, ...] = ()
    """Ids of the pools it says it is in (advertised only: ``PoolManager`` is authoritative)."""
    endpoint: str | None = None
    """Where to reach it: ``local:`` for the in-process network, or a URL; None: by did only."""
    endpoints: tuple[str, ...] = ()
    """The endpoints socket transports dial to reach it (``tcp://127.0.0.2:7001``,
    ``ws://host:7002``), checked by ``Endpoint.parse`` and kept as written; signed with the rest."""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    """Details converge does not read; by convention ``description``, ``version``, ``owner``."""
    registered_at: float = 0.0
    """When the service accepted this registration (seconds since the epoch; set by the service)."""
    expires_at: float = 0.0
    """When it lapses unless heartbeated (seconds since the epoch; set by the service)."""

    def __post_init__(self) -> None:
        _check_did(self.did)
        seen: set[str] = set()
        for i, cap in enumerate(self.capabilities):
            if cap.name in seen:
                raise ValidationError(
                    f"capability {cap.name!r} is listed twice; an agent offers one version of each",
                    field=f"capabilities[{i}]",
                )
            seen.add(cap.name)
        for i, pattern in enumerate(self.topics):
            try:
                _pattern(pattern)
            except (ValidationError, TypeError):
                raise ValidationError(
                    f"invalid topic pattern {pattern!r}: dot-separated tokens of letters, digits, "
                    "_ or -, or a wildcard ('*' for one token, '>' last for the rest)",
                    field=f"topics[{i}]",
                ) from None
        for i, url in enumerate(self.endpoints):
            try:
                Endpoint.parse(url)
            except ValidationError as exc:
                why = str(exc).removesuffix(f" (field `{exc.field}`)")
                raise ValidationError(
                    f"invalid endpoint {clip(url)!r}: {why}", field=f"endpoints[{i}]"
                ) from None
        for i, pool in enumerate(self.pools):
            if not isinstance(pool, str) or not pool:
                raise ValidationError(
                    f"a pool id is a non-empty str: {pool!r}", field=f"pools[{i}]"
                )


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AgentDescriptor)
_version_decoder = msgspec.msgpack.Decoder(str)


class DiscoveryService:
    """Agent descriptors over a ``Store``, kept alive by heartbeats and queried through indexes.

    It is a ``CapabilityDirectory``: ``TaskManager(store, directory=service)`` checks claims
    against what live agents registered.

    Args:
        store: where descriptors, index keys and events live.
        ttl_s: how long a registration or a heartbeat keeps a descriptor alive.
        clock: the time source for expiry and events (wall clock by default, so expiry means the
            same after a restart).
        trust: trust scores, for ``find(min_trust=…)``.
        replay_guard: refuses stale and replayed signed registrations (a captured one must not
            revive an agent that left); by default a new ``ReplayGuard`` on ``clock``.
    """

    def __init__(
        self,
        store: Store,
        *,
        ttl_s: float = 30.0,
        clock: Clock = system_clock,
        trust: TrustSource | None = None,
        replay_guard: ReplayGuard | None = None,
    ) -> None:
        if not _is_number(ttl_s) or not ttl_s > 0:
            raise ValidationError(f"ttl_s must be a finite number > 0: {ttl_s!r}", field="ttl_s")
        self.store = store
        self.ttl_s = float(ttl_s)
        self.clock = clock
        self.trust = trust
        self.replay_guard = replay_guard if replay_guard is not None else ReplayGuard(clock=clock)

    # -- registration ------------------------------------------------------------------------------

    async def register(self, descriptor: AgentDescriptor) -> AgentDescriptor:
        """Register an agent, replacing its earlier registration; returns the descriptor as stored.

        For in-process callers. ``registered_at`` and ``expires_at`` are set here (the caller's
        are ignored); index keys of capabilities the agent no longer offers are deleted.
        """
        if not isinstance(descriptor, AgentDescriptor):
            raise ValidationError(
                f"expected an AgentDescriptor, not {type(descriptor).__name__}", field="descriptor"
            )
        return await _retry(lambda: self._register_once(descriptor))

    async def _register_once(self, descriptor: AgentDescriptor) -> AgentDescriptor:
        did = descriptor.did
        old = await self.store.get(_agent_key(did))
        now = self.clock.now()
        stored = msgspec.structs.replace(descriptor, registered_at=now, expires_at=now + self.ttl_s)
        names = {cap.name for cap in stored.capabilities}
        async with self.store.transaction() as tx:
            tx.compare_and_set(_agent_key(did), old.version if old else 0, _encoder.encode(stored))
            for cap in _decode(old).capabilities if old else ():
                if cap.name not in names:
                    tx.delete(_cap_key(cap.name, did))
            for cap in stored.capabilities:
                tx.put(_cap_key(cap.name, did), _encoder.encode(cap.version))
            tx.append(
                self._event(
                    "agent.registered",
                    did,
                    did,
                    name=stored.name,
                    capabilities=[f"{c.name}@{c.version}" for c in stored.capabilities],
                    topics=list(stored.topics),
                    pools=list(stored.pools),
                )
            )
        return stored

    async def register_signed(self, message: Message) -> AgentDescriptor:
        """Register the sender of a signed ``discovery.register`` message from outside the process.

        The payload is the descriptor as plain data (``msgspec.to_builtins``). A refusal is
        recorded as a ``discovery.refused`` event, then raised; nothing is stored.

        Raises:
            SignatureError: the message does not verify (its sender is not authenticated).
            StaleMessage, ReplayedMessage: outside the replay window, or seen before.
            ValidationError: the kind is not ``discovery.register``, or the payload is not a
                descriptor (the field is named).
            PolicyViolation: the descriptor's did is not the message's sender.
        """
        if not isinstance(message, Message):
            raise ValidationError(f"expected a Message, not {message!r}", field="message")
        try:
            message.verify()
        except (ProtocolError, ValidationError) as exc:
            await self._refuse(message, exc, actor="")  # nobody is authenticated
            raise
        try:
            descriptor = self._accept(message)
        except (ProtocolError, PolicyViolation, ValidationError) as exc:
            await self._refuse(message, exc, actor=message.sender)
            raise
        return await self.register(descriptor)

    async def heartbeat(self, did: str) -> float:
        """Keep ``did`` alive for another ``ttl_s``; returns the new ``expires_at``.

        Raises:
            ValidationError: ``did`` is not registered, or has lapsed (it must register again: it
                may have missed what happened meanwhile).
        """
        return await _retry(lambda: self._heartbeat_once(did))

    async def _heartbeat_once(self, did: str) -> float:
        entry = await self.store.get(_agent_key(did))
        now = self.clock.now()
        current = None if entry is None else _decode(entry)
        if entry is None or current is None or current.expires_at <= now:
            state = "registered" if current is None else "alive (its registration lapsed)"
            raise ValidationError(f"{did} is not {state}; register it again", field="did")
        renewed = msgspec.structs.replace(current, expires_at=now + self.ttl_s)
        async with self.store.transaction() as tx:
            tx.compare_and_set(entry.key, entry.version, _encoder.encode(renewed))
        return renewed.expires_at

    async def unregister(self, did: str) -> bool:
        """Remove ``did``'s descriptor and index keys; returns whether there was one (live, or
        lapsed and not yet pruned)."""
        return await _retry(lambda: self._unregister_once(did))

    async def _unregister_once(self, did: str) -> bool:
        entry = await self.store.get(_agent_key(did))
        if entry is None:
            return False
        async with self.store.transaction() as tx:
            _remove(tx, entry, _decode(entry))
            tx.append(self._event("agent.unregistered", did, did))
        return True

    async def prune_expired(self, now: float | None = None) -> list[str]:
        """Delete every lapsed descriptor, with an ``agent.expired`` event each; returns the dids.

        One heartbeated or re-registered meanwhile is left alone. This reads every descriptor: it
        runs about once per ``ttl_s``, not per query.

        Raises:
            ValidationError: ``now`` is more than 30 days from this service's clock (a value from
                another clock, such as ``time.monotonic()``, would silently prune nothing).
        """
        at = self._check_now(now)
        pruned: list[str] = []
        for entry in await self.store.list(_AGENTS):
            gone = _decode(entry)
            if gone.expires_at > at:
                continue
            try:
                async with self.store.transaction() as tx:
                    _remove(tx, entry, gone)
                    tx.append(
                        self._event("agent.expired", gone.did, "", expires_at=gone.expires_at)
                    )
            except ConflictError:
                continue  # heartbeated, re-registered or removed meanwhile: not ours to prune
            pruned.append(gone.did)
        return pruned

    # -- queries -----------------------------------------------------------------------------------

    async def get(self, did: str) -> AgentDescriptor | None:
        """``did``'s live descriptor, or None if it is unknown or has lapsed."""
        entry = await self.store.get(_agent_key(did))
        descriptor = None if entry is None else _decode(entry)
        return descriptor if descriptor and descriptor.expires_at > self.clock.now() else None

    async def live(self) -> list[AgentDescriptor]:
        """Every live descriptor, by did (this reads every descriptor)."""
        now = self.clock.now()
        return await self._matching(None, lambda d: d.expires_at > now, None)

    async def capabilities_of(self, agent_id: str) -> CapabilitySet | None:
        """The capabilities a live agent registered, or None (``CapabilityDirectory``)."""
        descriptor = await self.get(agent_id)
        return None if descriptor is None else CapabilitySet(descriptor.capabilities)

    async def find(
        self,
        *,
        capability: str | None = None,
        topic: str | None = None,
        min_trust: float | None = None,
        pool: str | None = None,
        limit: int = 100,
    ) -> list[AgentDescriptor]:
        """Live agents that pass every filter given, at most ``limit``.

        Sorted by did; with ``min_trust``, by trust score (highest first), then did. A query by
        capability reads that capability's index keys and the descriptors they name; any other
        reads every descriptor.

        Args:
            capability: a requirement, optionally with a PEP 440 range (``"summarize>=1.2,<2"``).
            topic: a concrete topic (no wildcards) that one of the agent's patterns must match.
            min_trust: the lowest trust score accepted, in [0, 1]; needs a trust source.
            pool: a pool id the agent advertises.
            limit: the most results (>= 1).

        Raises:
            ValidationError: a malformed filter, or ``min_trust`` without a trust source.
        """
        requirement = None if capability is None else _requirement(capability)
        concrete = None if topic is None else _concrete_topic(topic)
        _check_filters(pool, limit, min_trust, has_trust=self.trust is not None)
        now = self.clock.now()

        def wanted(d: AgentDescriptor) -> bool:
            return (
                d.expires_at > now
                and (requirement is None or any(c.satisfies(requirement) for c in d.capabilities))
                and (concrete is None or any(_pattern(p).matches(concrete) for p in d.topics))
                and (pool is None or pool in d.pools)
            )

        if min_trust is None or self.trust is None:
            return await self._matching(requirement, wanted, limit)
        found = await self._matching(requirement, wanted, None)  # all scored before the cut
        scores = await asyncio.gather(*(self.trust.score(d.did) for d in found))
        ranked = sorted(
            ((s, d) for s, d in zip(scores, found, strict=True) if s >= min_trust),
            key=lambda pair: (-pair[0], pair[1].did),
        )
        return [d for _, d in ranked[:limit]]

    # -- internals ---------------------------------------------------------------------------------

    async def _matching(
        self,
        requirement: Requirement | None,
        wanted: Callable[[AgentDescriptor], bool],
        limit: int | None,
    ) -> list[AgentDescriptor]:
        """Descriptors ``wanted`` accepts, by did, at most ``limit`` (None: all)."""
        if requirement is None:
            return [d for d in map(_decode, await self.store.list(_AGENTS)) if wanted(d)][:limit]
        head = f"agent-cap/{requirement.name}/"
        # Names may hold '/' ("gpu" beside "gpu/a100") but never ':', and every did starts with
        # "did:", so this prefix holds exactly one capability's keys.
        dids = [
            e.key[len(head) :]
            for e in await self.store.list(head + "did:")
            if requirement.matches(Capability(requirement.name, _version_decoder.decode(e.value)))
        ]
        found: list[AgentDescriptor] = []
        step = max(limit or 0, 32)  # descriptors are read in concurrent batches until full
        for start in range(0, len(dids), step):
            batch = [self.store.get(_agent_key(d)) for d in dids[start : start + step]]
            entries = [e for e in await asyncio.gather(*batch) if e is not None]
            found.extend(d for d in map(_decode, entries) if wanted(d))
            if limit is not None and len(found) >= limit:
                return found[:limit]
        return found

    def _accept(self, message: Message) -> AgentDescriptor:
        """The descriptor a verified message asks to register, or raise."""
        if message.kind != REGISTER_KIND:
            raise ValidationError(
                f"expected a {REGISTER_KIND!r} message, not {clip(message.kind)!r}", field="kind"
            )
        self.replay_guard.check(message)
        try:
            descriptor = msgspec.convert(message.payload, AgentDescriptor)
        except msgspec.ValidationError as exc:
            raise validation_error(exc, "agent descriptor") from exc
        if descriptor.did != message.sender:
            raise PolicyViolation(
                f"{clip(message.sender)} may not register {clip(descriptor.did)}: "
                "agents register themselves"
            )
        return descriptor

    async def _refuse(self, message: Message, exc: Exception, *, actor: str) -> None:
        # The message may hold anything of any size (it was refused): the event shows it capped.
        payload = message.payload
        claimed = payload.get("did") if isinstance(payload, dict) else None
        sender, message_id = shown(message.sender), shown(message.id)
        named = shown(claimed) if isinstance(claimed, str) else None
        subject = named or sender or message_id or ""
        data = {"reason": clip_text(str(exc)), "message_id": message_id, "sender": sender}
        event = self._event("discovery.refused", subject, clip(actor), **data)
        await self.store.append([event])

    def _event(self, kind: str, did: str, actor: str, **data: Any) -> Event:
        at = self.clock.now()
        return Event(kind=kind, trace_id=did, actor=actor, subject=did, data=data, at=at)

    def _check_now(self, now: float | None) -> float:
        return on_clock(now, self.clock, what="expiries")


async def _retry(once: Callable[[], Awaitable[T]]) -> T:
    """Run a read-then-write step again while other writers change what it read."""
    for _ in range(_MAX_RETRIES - 1):
        try:
            return await once()
        except ConflictError:
            continue
    return await once()


def _remove(tx: Transaction, entry: Entry, descriptor: AgentDescriptor) -> None:
    """Buffer the removal of the descriptor read as ``entry``, and of its index keys."""
    tx.compare_and_set(entry.key, entry.version, b"")  # still the one we read, then gone
    tx.delete(entry.key)
    for cap in descriptor.capabilities:
        tx.delete(_cap_key(cap.name, descriptor.did))


def _decode(entry: Entry) -> AgentDescriptor:
    try:
        return _decoder.decode(entry.value)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise StoreError(f"{entry.key} does not hold a readable agent descriptor: {exc}") from exc


def _check_did(did: object) -> None:
    _agent_key(did)  # a non-empty str first
    try:
        public_key_from_did(str(did))
    except IdentityError:
        raise ValidationError(
            f"{clip(did)!r} is not an Ed25519 did:key (an agent's id is the did of its identity)",
            field="did",
        ) from None


def _agent_key(did: object) -> str:
    if not isinstance(did, str) or not did:
        raise ValidationError(f"an agent's did is a non-empty str, not {did!r}", field="did")
    return _AGENTS + did


def _cap_key(name: str, did: str) -> str:
    return f"agent-cap/{name}/{did}"


@functools.lru_cache(maxsize=4096)
def _pattern(text: str) -> Topic:
    """A parsed topic pattern (cached: agents' patterns are matched on every topic query)."""
    return Topic(text)


def _requirement(text: object) -> Requirement:
    try:
        if isinstance(text, str):
            return Requirement.parse(text)
    except CapabilityError as exc:
        if exc.hint is not None:  # a capability (`translate@1.0`) given for a requirement
            raise CapabilityError(
                exc.detail, text=exc.text, expected=exc.expected, hint=exc.hint, field="capability"
            ) from None
    except ValidationError:
        pass
    raise ValidationError(
        f"invalid capability requirement {text!r} (such as 'summarize' or 'summarize>=1.2')",
        field="capability",
    )


def _concrete_topic(text: str) -> Topic:
    topic = Topic(text)  # refuses a non-str or a malformed name, naming the field "topic"
    if topic.is_pattern:
        raise ValidationError(f"find(topic=…) takes a concrete topic, not {text!r}", field="topic")
    return topic


def _check_filters(pool: object, limit: object, min_trust: object, *, has_trust: bool) -> None:
    if pool is not None and (not isinstance(pool, str) or not pool):
        raise ValidationError(f"pool must be a non-empty str, not {pool!r}", field="pool")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValidationError(f"limit must be an int >= 1, not {limit!r}", field="limit")
    if min_trust is None:
        return
    if not (isinstance(min_trust, (int, float)) and _is_number(min_trust) and 0 <= min_trust <= 1):
        raise ValidationError(f"min_trust must be in [0, 1], not {min_trust!r}", field="min_trust")
    if not has_trust:
        raise ValidationError(
            "find(min_trust=…) needs a trust source: DiscoveryService(store, trust=…)",
            field="min_trust",
        )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
