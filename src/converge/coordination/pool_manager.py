"""Pools: admission, membership, and disputes settled by governance.

Create them, join and leave them under their admission policy, and settle disputes
under their governance model.

Everything lives in the store's key-value map, and every change commits with its event:

- ``pool/<pool id>``: the ``Pool`` (MessagePack);
- ``pool-member/<pool id>/<agent id>`` and ``agent-pool/<agent id>/<pool id>``: a membership, kept
  from both sides so members of a pool and pools of an agent are each one prefix read;
- ``pool-size/<pool id>``: the member count, updated by compare-and-set in the same unit of work
  as the membership, so concurrent joins never exceed ``max_members``.

A refused join is a ``pool.join_refused`` event, then a ``PolicyViolation`` carrying the reason.
The acting agent is whoever the caller authenticated (a verified message's sender); the manager
never takes an agent's word for who it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NoReturn, Protocol

import msgspec

from converge.core.capability import Capability, CapabilitySet
from converge.core.clock import Clock, system_clock
from converge.core.pool import Pool
from converge.errors import ConflictError, PolicyViolation, ValidationError
from converge.policy.admission import AdmissionRequest, AdmissionResult, admit, parse_admission
from converge.policy.governance import DisputeOutcome, TrustWeighted, decide, parse_governance
from converge.protocol.event import Event
from converge.store.base import Store

__all__ = ["PoolManager", "TrustSource"]

_encoder = msgspec.msgpack.Encoder()
_pool_decoder = msgspec.msgpack.Decoder(Pool)
_MAX_RETRIES = 32


class TrustSource(Protocol):
    """Where trust scores come from (``converge.policy.trust.TrustModel`` is one)."""

    async def score(self, agent_id: str) -> float:
        """The agent's trust score in [0, 1]."""
        ...


class PoolManager:
    """Pools and their members over a ``Store``.

    Args:
        store: where pools and memberships live.
        trust: trust scores, for ``min_trust`` admission and ``trust_weighted`` governance.
        clock: the time source for event timestamps.
    """

    def __init__(
        self, store: Store, *, trust: TrustSource | None = None, clock: Clock = system_clock
    ) -> None:
        self.store = store
        self.trust = trust
        self.clock = clock

    # -- pools -------------------------------------------------------------------------------------

    async def create_pool(self, spec: Pool, *, actor: str = "") -> Pool:
        """Create a pool; its admission and governance specs are checked first.

        Raises:
            ValidationError: a bad admission or governance spec (the field is named).
            ConflictError: a pool with this id exists.
        """
        try:
            parse_admission(spec.admission)
        except ValidationError as exc:
            raise ValidationError(str(exc), field=_prefix("admission", exc.field)) from exc
        try:
            parse_governance(spec.governance)
        except ValidationError as exc:
            raise ValidationError(str(exc), field=_prefix("governance", exc.field)) from exc
        pool = msgspec.structs.replace(spec, created_by=spec.created_by or actor)
        async with self.store.transaction() as tx:
            tx.put_if_absent(_pool_key(pool.id), _encoder.encode(pool))
            tx.put_if_absent(_size_key(pool.id), _count(0))
            tx.append(
                self._event(
                    "pool.created",
                    pool.id,
                    actor,
                    name=pool.name,
                    admission=pool.admission.get("kind", "open"),
                    governance=pool.governance.get("kind", "democratic"),
                )
            )
        return pool

    async def get_pool(self, pool_id: str) -> Pool | None:
        """The pool, or None."""
        entry = await self.store.get(_pool_key(pool_id))
        return None if entry is None else _pool_decoder.decode(entry.value)

    async def list_pools(self) -> list[Pool]:
        """Every pool, by id."""
        return [_pool_decoder.decode(e.value) for e in await self.store.list("pool/")]

    # -- membership --------------------------------------------------------------------------------

    async def join_pool(
        self,
        agent_id: str,
        pool_id: str,
        credentials: Mapping[str, Any] | None = None,
        *,
        capabilities: CapabilitySet | Iterable[Capability | str] | None = None,
    ) -> AdmissionResult:
        """Admit ``agent_id`` to the pool if its admission policy says so.

        A refusal is recorded as a ``pool.join_refused`` event and raised. Joining a pool one is
        already in is a no-op.

        Raises:
            ValidationError: no such pool.
            PolicyViolation: admission refused, the pool is full, or a required capability is
                missing (the reason is in the message and the event).
        """
        _check_agent(agent_id)
        pool = await self._pool(pool_id)
        if await self.store.get(_member_key(pool_id, agent_id)) is not None:
            return AdmissionResult(True, "already a member")
        result = await self._admission(pool, agent_id, credentials or {}, capabilities)
        if not result.admitted:
            await self._refuse(pool, agent_id, result.reason)
        for _ in range(_MAX_RETRIES):
            size = await self.store.get(_size_key(pool_id))
            count = 0 if size is None else _decode_count(size.value)
            if pool.max_members is not None and count >= pool.max_members:
                await self._refuse(pool, agent_id, f"the pool is full ({pool.max_members})")
            try:
                async with self.store.transaction() as tx:
                    tx.compare_and_set(
                        _size_key(pool_id), 0 if size is None else size.version, _count(count + 1)
                    )
                    joined = _encoder.encode(self.clock.now())  # when, for people reading it
                    tx.put_if_absent(_member_key(pool_id, agent_id), joined)
                    tx.put(_agent_key(agent_id, pool_id), joined)
                    tx.append(self._event("pool.joined", pool_id, agent_id, reason=result.reason))
            except ConflictError as exc:
                if exc.key == _member_key(pool_id, agent_id):
                    return AdmissionResult(True, "already a member")
                continue  # another join or leave changed the count: read it again
            return result
        raise ConflictError(_size_key(pool_id), 0, 0)

    async def leave_pool(self, agent_id: str, pool_id: str) -> bool:
        """Remove ``agent_id`` from the pool; returns whether it was a member."""
        _check_agent(agent_id)
        for _ in range(_MAX_RETRIES):
            member = await self.store.get(_member_key(pool_id, agent_id))
            if member is None:
                return False
            size = await self.store.get(_size_key(pool_id))
            if size is None:  # pragma: no cover - written with the pool
                raise ValidationError(f"pool {pool_id!r} has no member count", field="pool_id")
            try:
                async with self.store.transaction() as tx:
                    tx.compare_and_set(
                        _size_key(pool_id),
                        size.version,
                        _count(max(_decode_count(size.value) - 1, 0)),
                    )
                    # still the membership we read (no concurrent leave), then gone
                    tx.compare_and_set(_member_key(pool_id, agent_id), member.version, b"")
                    tx.delete(_member_key(pool_id, agent_id))
                    tx.delete(_agent_key(agent_id, pool_id))
                    tx.append(self._event("pool.left", pool_id, agent_id))
            except ConflictError:
                continue
            return True
        raise ConflictError(_size_key(pool_id), 0, 0)

    async def members(self, pool_id: str) -> list[str]:
        """The dids of the pool's members, sorted."""
        prefix = _member_key(pool_id, "")
        return [e.key[len(prefix) :] for e in await self.store.list(prefix)]

    async def get_pools_for_agent(self, agent_id: str) -> list[str]:
        """The ids of the pools ``agent_id`` has joined, sorted."""
        prefix = _agent_key(agent_id, "")
        return [e.key[len(prefix) :] for e in await self.store.list(prefix)]

    # -- governance --------------------------------------------------------------------------------

    async def decide_dispute(
        self, pool_id: str, question: str, votes: Mapping[str, str], *, actor: str = ""
    ) -> DisputeOutcome:
        """Apply the pool's governance model to ``votes`` among its current members.

        The outcome (decided or not, with tallies) is recorded as ``pool.dispute_decided``.
        """
        pool = await self._pool(pool_id)
        members = await self.members(pool_id)
        model = parse_governance(pool.governance)
        trust: dict[str, float] = {}
        if self.trust is not None and isinstance(model, TrustWeighted):
            trust = {m: await self.trust.score(m) for m in members}
        outcome = decide(model, question, votes, members, trust)
        await self.store.append(
            [
                self._event(
                    "pool.dispute_decided",
                    pool_id,
                    actor,
                    question=question,
                    decided=outcome.decided,
                    decision=outcome.decision,
                    tallies=outcome.tallies,
                    reason=outcome.reason,
                )
            ]
        )
        return outcome

    # -- internals ---------------------------------------------------------------------------------

    async def _pool(self, pool_id: str) -> Pool:
        pool = await self.get_pool(pool_id)
        if pool is None:
            raise ValidationError(f"no pool {pool_id!r}", field="pool_id")
        return pool

    async def _admission(
        self,
        pool: Pool,
        agent_id: str,
        credentials: Mapping[str, Any],
        capabilities: CapabilitySet | Iterable[Capability | str] | None,
    ) -> AdmissionResult:
        if pool.required_capabilities:
            caps = (
                capabilities
                if isinstance(capabilities, CapabilitySet)
                else CapabilitySet(capabilities or ())
            )
            missing = caps.missing(pool.required_capabilities)
            if missing:
                return AdmissionResult(False, f"missing capabilities {', '.join(missing)}")
        score = await self.trust.score(agent_id) if self.trust is not None else None
        request = AdmissionRequest(agent_id, credentials, score)
        return admit(parse_admission(pool.admission), request)

    async def _refuse(self, pool: Pool, agent_id: str, reason: str) -> NoReturn:
        await self.store.append(
            [self._event("pool.join_refused", pool.id, agent_id, reason=reason)]
        )
        raise PolicyViolation(f"{agent_id} may not join pool {pool.id}: {reason}")

    def _event(self, kind: str, pool_id: str, actor: str, **data: Any) -> Event:
        return Event(
            kind=kind,
            trace_id=pool_id,
            actor=actor,
            subject=pool_id,
            data={k: v for k, v in data.items() if v is not None},
            at=self.clock.now(),
        )


def _check_agent(agent_id: str) -> None:
    if not isinstance(agent_id, str) or not agent_id or "/" in agent_id:
        raise ValidationError(f"invalid agent id {agent_id!r}", field="agent_id")


def _pool_key(pool_id: str) -> str:
    return f"pool/{pool_id}"


def _member_key(pool_id: str, agent_id: str) -> str:
    return f"pool-member/{pool_id}/{agent_id}"


def _agent_key(agent_id: str, pool_id: str) -> str:
    return f"agent-pool/{agent_id}/{pool_id}"


def _size_key(pool_id: str) -> str:
    return f"pool-size/{pool_id}"


def _count(n: int) -> bytes:
    return _encoder.encode(n)


def _decode_count(data: bytes) -> int:
    return int(msgspec.msgpack.decode(data, type=int))


def _prefix(head: str, field: str | None) -> str:
    return head if not field else f"{head}.{field}"
