"""Trust: a Bayesian beta reputation per agent, kept in a store.

Each agent (by did) has a ``TrustRecord``: evidence for it (``alpha``) and against it (``beta``),
starting from the policy's prior and fading back to it with a half-life. Outcomes of the agent's
work move it: a success adds to ``alpha``, a failure or a timeout (heavier by default) to ``beta``.
The score is the mean of ``Beta(alpha, beta)``, in [0, 1]; ``TrustRecord.lower_bound(k)`` is a
cautious score for agents with little evidence.

The arithmetic is pure and lives in ``converge.policy._beta`` (re-exported here):
``update_trust``, ``decay_trust`` and ``prior_trust`` take the time and return a new record.
``TrustModel`` drives them against any ``Store``::

    model = TrustModel(store)
    await model.record(agent.did, Outcome.SUCCESS, weight=job_size, trace_id=run_id)
    if await model.score(agent.did) < 0.6: ...

Storage: one key per agent, ``trust/<did>``, holding the MessagePack of its ``TrustRecord``. Every
update appends a ``trust.updated`` event in the same transaction, with ``data``:

- ``outcome``: ``"success"``, ``"failure"`` or ``"timeout"``;
- ``weight``: the call's weight (the evidence added is this times the policy's outcome weight);
- ``score``, ``alpha``, ``beta``: the agent's standing after the update;
- ``reason``: the caller's words, possibly empty;
- ``cause``: the id of the object whose outcome it is (a contract round…), when the caller
  named one.

With the event's ``at`` (the model's clock) the log is enough to recompute every record. By
default the prior is Beta(1, 1), a success adds 1 to ``alpha``, a failure 1 and a timeout 1.5 to
``beta`` (each times the call's weight), and the evidence beyond the prior halves every 7 days.
An update is a compare-and-set retried on conflict; updates to one agent within a process queue
on a per-agent lock. There is no cache of records: validating one would cost the same store
read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager

import msgspec

from converge.core.clock import Clock, system_clock
from converge.core.ids import new_id
from converge.errors import ConflictError, StoreError, ValidationError
from converge.policy._beta import (
    Outcome,
    TrustPolicy,
    TrustRecord,
    TrustWeights,
    check_number,
    decay_trust,
    parse_outcome,
    prior_trust,
    update_trust,
)
from converge.protocol.event import Event
from converge.store.base import Entry, Store

__all__ = [
    "TRUST_KEY_PREFIX",
    "TRUST_UPDATED",
    "Outcome",
    "TrustModel",
    "TrustPolicy",
    "TrustRecord",
    "TrustWeights",
    "decay_trust",
    "prior_trust",
    "update_trust",
]

TRUST_KEY_PREFIX = "trust/"
"""Store keys of trust records are this followed by the agent's did."""

TRUST_UPDATED = "trust.updated"
"""The kind of the event every update appends."""

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(TrustRecord)


class TrustModel:
    """Trust scores of agents, persisted in a store and safe to update from many processes.

    Updates are optimistic: read the record and its version, compute, then write with
    ``compare_and_set`` on that version together with the event. If another writer got there
    first the commit raises ``ConflictError`` and nothing is written; the update is recomputed
    from the new record, up to ``max_attempts`` times. Within one model, updates of the same
    agent also take turns on a lock, so concurrent callers in one process queue instead of
    racing (and retrying) against each other; different agents never wait for each other.

    There is no cache: every read asks the store, so a score never misses what another process
    wrote. A cache would have to check the stored version anyway, which is the same read; what it
    could save is only decoding a few floats.

    Args:
        store: where records and events are kept.
        policy: the prior, half-life and weights.
        clock: the time of updates and of ``score`` when no ``at`` is given (wall clock by
            default, since records are persisted).
        id_factory: makes a trace id for updates recorded without one.
        max_attempts: how many times ``record`` tries before giving up on contention.

    Raises:
        ValidationError: ``policy`` is not a ``TrustPolicy``, or ``max_attempts`` is not an int
            >= 1.
    """

    def __init__(
        self,
        store: Store,
        policy: TrustPolicy | None = None,
        clock: Clock = system_clock,
        *,
        id_factory: Callable[[], str] = new_id,
        max_attempts: int = 100,
    ) -> None:
        if policy is None:
            policy = TrustPolicy()
        elif not isinstance(policy, TrustPolicy):
            raise ValidationError(
                f"policy must be a TrustPolicy, not {type(policy).__name__}", field="policy"
            )
        if type(max_attempts) is not int or max_attempts < 1:
            raise ValidationError(
                f"max_attempts must be an int >= 1, not {max_attempts!r}", field="max_attempts"
            )
        self._store = store
        self._policy = policy
        self._clock = clock
        self._new_id = id_factory
        self._max_attempts = max_attempts
        self._locks: dict[str, _KeyLock] = {}

    @property
    def policy(self) -> TrustPolicy:
        """The policy scores are computed with."""
        return self._policy

    async def record(
        self,
        agent_id: str,
        outcome: Outcome | str,
        *,
        weight: float = 1.0,
        trace_id: str | None = None,
        actor: str = "",
        reason: str = "",
        cause: str = "",
    ) -> float:
        """Record an outcome of ``agent_id``'s work and return its new score.

        The record is decayed to now, the outcome added, and the record written with a
        ``trust.updated`` event in one transaction; the call returns after both are committed.

        Args:
            agent_id: the agent's did.
            outcome: an ``Outcome`` or its value (``"success"``, ``"failure"``, ``"timeout"``).
            weight: scales the evidence this outcome adds (for example the size of the job);
                >= 0.
            trace_id: the trace the event belongs to; a new id when None.
            actor: who reports the outcome (a did, or empty for the system).
            reason: why, in words, for the event.
            cause: the id of the object whose outcome this is (a contract round, a task), for
                the event; empty: none.

        Raises:
            ValidationError: a bad ``agent_id``, ``outcome`` or ``weight`` (``field`` names it).
            ConflictError: other writers won the race ``max_attempts`` times in a row.
            StoreError: the store failed, or holds a record it cannot decode.
        """
        key = _key(agent_id)
        kind = parse_outcome(outcome)
        amount = check_number(weight, "weight", minimum=0.0)
        trace = self._new_id() if trace_id is None else trace_id
        async with self._turn(key):
            conflict: ConflictError | None = None
            for _ in range(self._max_attempts):
                entry = await self._store.get(key)
                now = self._clock.now()
                current = prior_trust(self._policy, now) if entry is None else _decode(entry)
                new = update_trust(current, kind, self._policy, now, weight=amount)
                score = new.score
                event = Event(
                    kind=TRUST_UPDATED,
                    trace_id=trace,
                    actor=actor,
                    subject=agent_id,
                    data={
                        "outcome": kind.value,
                        "weight": amount,
                        "score": score,
                        "alpha": new.alpha,
                        "beta": new.beta,
                        "reason": reason,
                        **({"cause": cause} if cause else {}),
                    },
                    at=now,
                )
                try:
                    async with self._store.transaction() as tx:
                        tx.compare_and_set(key, 0 if entry is None else entry.version, _encode(new))
                        tx.append(event)
                except ConflictError as exc:
                    conflict = exc
                    continue
                return score
            assert conflict is not None
            raise conflict

    async def record_of(self, agent_id: str) -> TrustRecord | None:
        """The stored record of ``agent_id`` as last written (not decayed), or None if unknown.

        Raises:
            ValidationError: ``agent_id`` is not a non-empty str.
            StoreError: the store failed, or holds a record it cannot decode.
        """
        entry = await self._store.get(_key(agent_id))
        return None if entry is None else _decode(entry)

    async def score(self, agent_id: str, at: float | None = None) -> float:
        """The score of ``agent_id`` at ``at`` (default: now), in [0, 1]; writes nothing.

        An unknown agent has the prior mean. A time before the last update gives the score as of
        that update (evidence is never un-decayed).

        Raises:
            ValidationError: ``agent_id`` is not a non-empty str, or ``at`` is not finite.
            StoreError: the store failed, or holds a record it cannot decode.
        """
        return (await self._current(agent_id, at)).score

    async def lower_bound(self, agent_id: str, *, k: float = 2.0, at: float | None = None) -> float:
        """A cautious score of ``agent_id`` (see ``TrustRecord.lower_bound``), for minimum-trust
        checks that should not admit agents on little evidence.

        Raises:
            ValidationError: a bad ``agent_id``, ``k`` or ``at``.
            StoreError: the store failed, or holds a record it cannot decode.
        """
        check_number(k, "k", minimum=0.0)
        return (await self._current(agent_id, at)).lower_bound(k)

    async def scores(self, agent_ids: Iterable[str], at: float | None = None) -> dict[str, float]:
        """The scores of several agents at ``at`` (default: now), keyed by agent id.

        The reads run concurrently, so a store that batches them (SQLite) makes one round trip.

        Raises:
            ValidationError: a bad agent id or ``at``.
            StoreError: the store failed, or holds a record it cannot decode.
        """
        ids = list(dict.fromkeys(agent_ids))
        when = self._clock.now() if at is None else check_number(at, "at")
        for agent_id in ids:
            _key(agent_id)
        if len(ids) <= 1:
            return {a: await self.score(a, when) for a in ids}
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._current(a, when)) for a in ids]
        except ExceptionGroup as group:
            # One failed read usually means they all did (a closed or broken store): raise the
            # first as itself, as the other methods would, not a group to unpack.
            raise group.exceptions[0] from None
        return {a: t.result().score for a, t in zip(ids, tasks, strict=True)}

    async def _current(self, agent_id: str, at: float | None) -> TrustRecord:
        key = _key(agent_id)
        when = self._clock.now() if at is None else check_number(at, "at")
        entry = await self._store.get(key)
        if entry is None:
            return prior_trust(self._policy, when)
        return decay_trust(_decode(entry), self._policy, when)

    @asynccontextmanager
    async def _turn(self, key: str) -> AsyncIterator[None]:
        # One lock per agent while anyone uses it; dropped after, so the map stays small.
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = _KeyLock()
        lock.users += 1
        try:
            async with lock.lock:
                yield
        finally:
            lock.users -= 1
            if not lock.users:
                del self._locks[key]

    def __repr__(self) -> str:
        return f"TrustModel(store={self._store!r}, policy={self._policy!r})"


class _KeyLock:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


def _key(agent_id: object) -> str:
    if not isinstance(agent_id, str) or not agent_id:
        raise ValidationError(
            f"agent_id must be a non-empty str (the agent's did), not {agent_id!r}",
            field="agent_id",
        )
    return TRUST_KEY_PREFIX + agent_id


def _encode(record: TrustRecord) -> bytes:
    return _encoder.encode(record)


def _decode(entry: Entry) -> TrustRecord:
    try:
        return _decoder.decode(entry.value)
    except (msgspec.DecodeError, ValidationError) as exc:
        raise StoreError(f"the trust record under {entry.key!r} cannot be decoded: {exc}") from exc
