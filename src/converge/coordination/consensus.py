"""Consensus: ballots on which named agents vote, over a store.

Ballots on which named agents vote, decided by majority, plurality, trust,
quorum or unanimity.

``Consensus`` drives pure functions over a store: the ballot state machine of
``_ballot`` (``cast``, closing) and the rules of ``_tally`` (``tally``,
``is_settled``). Keys:

- ``ballot/<ballot id>``: the ``Ballot`` (MessagePack) with its counted votes and, once CLOSED,
  its final ``BallotResult``; changed only by a compare-and-set on the version read, in one unit
  of work with its events;
- ``ballot-due/<deadline>/<ballot id>``: one index key per open ballot with a deadline (the
  deadline as the hex of its big-endian IEEE 754 double, whose text order is the numeric order
  for times >= 0), deleted in the unit of work that closes the ballot, so ``close_due`` reads
  only the ballots that are due, plus one key.

Semantics:

- **Majority is of the eligible voters**, not of the votes cast: an absent voter supports
  nothing (as pool governance decides disputes). ``trust_weighted`` likewise needs more than
  half of the eligible voters' total trust; the scores are read from the trust source at each
  vote (to know whether it settles the ballot), on ``result`` and at closing, and the final
  result records the weights it used. A ballot's ``quorum`` applies under every rule.
- **One vote per agent**: a second vote replaces the first (``revote="replace"``) or is refused
  (``"refuse"``, the default); either way it is recorded (``ballot.voted`` with
  ``replaced=true``, or ``ballot.refused``).
- **Ties never decide** unless ``tie_break="first_option"`` (plurality and quorum rules: the
  option listed first wins).
- **Deadlines**: a vote at or after the deadline is refused (``VoteAfterDeadline``);
  ``close_due`` closes due ballots; the opener may ``close`` at any time.
- **Early close**: under ``revote="refuse"`` a ballot closes itself, in the unit of work of
  the vote that settles it, once no vote still allowed can change its outcome (every eligible
  voter voted, a majority reached or out of reach, a plurality lead larger than the voters
  left, unanimity broken: see ``is_settled``). Under ``"replace"`` any voter may still change
  its mind, so a ballot closes only by its deadline or its opener.

Events (trace id: the ballot's; actor: the acting did, empty for ``close_due``; subject: the
ballot id) and their ``data``:

- ``ballot.opened``: ``question``, ``options``, ``voters``, ``rule``, ``deadline``, ``quorum``,
  ``revote``, ``tie_break``;
- ``ballot.voted``: ``voter``, ``option``, ``replaced`` (bool), ``previous`` (the replaced
  option), ``revision``;
- ``ballot.refused``: ``voter`` (who acted), ``act`` (``vote``/``close``), ``option``,
  ``reason`` (the error's message), ``code`` (``not_eligible``, ``already_voted``,
  ``not_opener``, ``closed``, ``after_deadline``, ``unknown_option``, ``invalid_<field>``),
  ``error`` (its class);
- ``ballot.closed``: ``cause`` (``opener``/``deadline``/``settled``), ``result`` (the
  ``BallotResult`` as plain data).

Every refused act on an existing ballot is recorded as ``ballot.refused`` and raised; nothing
else changes. A refusal is appended without a precondition: every reason for one (not
eligible, already voted under "refuse", closed, past the deadline, an unknown option) is a fact
that never reverts. An act on a ballot that does not exist is a ``ValidationError`` and records
nothing. The acting agent is whoever the caller authenticated; the manager never takes an
agent's word for who it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import msgspec

from converge.coordination import _ballot as core
from converge.coordination._ballot import (
    DUE_PREFIX,
    Ballot,
    BallotResult,
    BallotState,
    CastVote,
    Rule,
    Tally,
    ballot_key,
    cast,
    check_ballot_id,
    due_ballot_key,
    refusal_code,
)
from converge.coordination._due import due_entries
from converge.coordination._tally import (
    DEFAULT_TRUST,
    is_settled,
    majority,
    plurality,
    tally,
)
from converge.coordination.pool_manager import TrustSource
from converge.core.clip import clip, clip_text
from converge.core.clock import Clock, on_clock, system_clock
from converge.core.ids import new_id
from converge.errors import (
    BallotClosed,
    BallotRefused,
    ConflictError,
    ConvergeError,
    ValidationError,
    VoteAfterDeadline,
)
from converge.protocol.event import Event
from converge.store.base import Store

__all__ = [
    "DEFAULT_TRUST",
    "Ballot",
    "BallotClosed",
    "BallotRefused",
    "BallotResult",
    "BallotState",
    "CastVote",
    "Consensus",
    "Rule",
    "Tally",
    "VoteAfterDeadline",
    "cast",
    "is_settled",
    "majority",
    "plurality",
    "tally",
]

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Ballot)
_MAX_RETRIES = 32


class Consensus:
    """Ballots over a ``Store``.

    Args:
        store: where ballots and their events live.
        trust: trust scores, for ``trust_weighted`` ballots (which cannot be opened without).
        clock: the time source for deadlines and timestamps (wall-clock by default).
        id_factory: makes ballot ids.
    """

    def __init__(
        self,
        store: Store,
        *,
        trust: TrustSource | None = None,
        clock: Clock = system_clock,
        id_factory: Callable[[], str] = new_id,
    ) -> None:
        self.store = store
        self.trust = trust
        self.clock = clock
        self.id_factory = id_factory

    # -- opening -----------------------------------------------------------------------------------

    async def open(
        self,
        opener: str,
        question: str,
        options: Sequence[str],
        voters: Collection[str],
        *,
        rule: str = "majority",
        deadline: float | None = None,
        quorum: int | None = None,
        revote: str = "refuse",
        tie_break: str | None = None,
        ballot_id: str | None = None,
        trace_id: str | None = None,
    ) -> Ballot:
        """Open a ballot that ``opener`` puts to ``voters``.

        Args:
            opener: the opening agent's (authenticated) did; only it may ``close`` the ballot.
            question: what is asked.
            options: the options, distinct (their order breaks ties under ``first_option``).
            voters: the eligible voters' dids, distinct.
            rule: ``majority`` (of the eligible voters), ``plurality``, ``trust_weighted``,
                ``quorum`` or ``unanimity``.
            deadline: votes at or after this time (seconds since the epoch, the manager's
                clock) are refused, and ``close_due`` closes the ballot; None: no deadline.
            quorum: the fewest voters for a result to count, under every rule (required by
                ``quorum``); None: no quorum.
            revote: a second vote ``"replace"``s the first or is ``"refuse"``d.
            tie_break: ``"first_option"``: a tie at the top goes to the option listed first;
                None: a tie decides nothing.
            ballot_id: the id to use; None: a new one.
            trace_id: the trace its events join; None: the ballot id.

        Raises:
            ValidationError: a bad argument (the field is named), or ``trust_weighted``
                without a trust source.
            ConflictError: a ballot with this id exists.
        """
        if rule == "trust_weighted" and self.trust is None:
            raise ValidationError(
                "a trust_weighted ballot needs a trust source (Consensus(trust=...))", field="rule"
            )
        ballot = core.open_ballot(
            ballot_id=self.id_factory() if ballot_id is None else ballot_id,
            opener=opener,
            question=question,
            options=list(options) if not isinstance(options, (str, tuple)) else options,
            voters=list(voters) if not isinstance(voters, (str, tuple)) else voters,
            now=self.clock.now(),
            rule=rule,
            deadline=deadline,
            quorum=quorum,
            revote=revote,
            tie_break=tie_break,
            trace_id=trace_id,
        )
        event = _event(
            ballot,
            "ballot.opened",
            opener,
            ballot.created_at,
            question=ballot.question,
            options=list(ballot.options),
            voters=list(ballot.voters),
            rule=ballot.rule,
            deadline=ballot.deadline,
            quorum=ballot.quorum,
            revote=ballot.revote,
            tie_break=ballot.tie_break,
        )
        async with self.store.transaction() as tx:
            tx.put_if_absent(ballot_key(ballot.id), _encoder.encode(ballot))
            if ballot.deadline is not None:
                tx.put(due_ballot_key(ballot), ballot.id.encode())
            tx.append(event)
        return ballot

    # -- voting ------------------------------------------------------------------------------------

    async def vote(self, voter: str, ballot_id: str, option: str) -> Ballot:
        """``voter`` votes for ``option``; returns the ballot with the vote counted (CLOSED if
        this vote settled it).

        Args:
            voter: the voting agent's (authenticated) did.
            ballot_id: the ballot.
            option: one of the ballot's options.

        Raises:
            ValidationError: no such ballot, or ``option`` is not one of its options.
            BallotRefused: the voter is not eligible, or voted already on a ballot that refuses
                second votes (``reason`` says which).
            BallotClosed: the ballot is closed (the message says when, why and with what
                outcome; an ``InvalidTransition``).
            VoteAfterDeadline: the deadline has passed.
        """
        key = ballot_key(check_ballot_id(ballot_id))
        scores: dict[str, float] | None = None
        conflicts = 0
        while True:
            entry = await self.store.get(key)
            if entry is None:
                raise ValidationError(f"no ballot {ballot_id!r}", field="ballot_id")
            ballot = _decoder.decode(entry.value)
            now = self.clock.now()
            previous = ballot.choice_of(voter) if isinstance(voter, str) else None
            try:
                new = cast(ballot, voter, option, now)
            except ConvergeError as exc:
                await self._refuse(ballot, voter, "vote", exc, now, option=option)
                raise
            events = [
                _event(
                    new,
                    "ballot.voted",
                    voter,
                    now,
                    voter=voter,
                    option=option,
                    replaced=previous is not None,
                    previous=previous,
                    revision=next(v.revision for v in new.votes if v.voter == voter),
                )
            ]
            if new.revote == "refuse":
                if scores is None and new.rule == "trust_weighted":
                    scores = await self._scores(new)
                current = tally(new, scores)
                if is_settled(new, current):
                    new = core.close(new, current, now=now, cause="settled", actor=voter)
                    events.append(_closed_event(new, voter))
            try:
                await self._write(new, entry.version, events)
            except ConflictError:
                conflicts += 1
                # Under "refuse" a ballot changes at most once per voter plus its closing, and
                # every conflict means one of those changes committed: this bound is never hit.
                if conflicts > _MAX_RETRIES + len(ballot.voters):
                    raise
                continue
            return new

    # -- results and closing -----------------------------------------------------------------------

    async def get(self, ballot_id: str) -> Ballot | None:
        """The ballot, or None."""
        entry = await self.store.get(ballot_key(check_ballot_id(ballot_id)))
        return None if entry is None else _decoder.decode(entry.value)

    async def result(self, ballot_id: str) -> BallotResult:
        """The final result of a closed ballot, or the current tally of an open one (``final``
        False; nothing is closed or written).

        Raises:
            ValidationError: no such ballot.
        """
        ballot = await self._get(ballot_id)
        if ballot.result is not None:
            return ballot.result
        return tally(ballot, await self._scores(ballot))

    async def close(self, ballot_id: str, *, actor: str) -> BallotResult:
        """Close the ballot now; only its opener may. Closing a closed ballot returns its
        result and records nothing.

        Args:
            ballot_id: the ballot.
            actor: the closing agent's (authenticated) did.

        Raises:
            ValidationError: no such ballot.
            BallotRefused: ``actor`` is not the opener (``reason="not_opener"``).
        """
        key = ballot_key(check_ballot_id(ballot_id))
        conflicts = 0
        while True:
            entry = await self.store.get(key)
            if entry is None:
                raise ValidationError(f"no ballot {ballot_id!r}", field="ballot_id")
            ballot = _decoder.decode(entry.value)
            now = self.clock.now()
            if actor != ballot.opener:
                exc = BallotRefused(
                    f"{actor or 'an anonymous agent'} may not close ballot {ballot.id}; only its "
                    f"opener {ballot.opener} may",
                    ballot_id=ballot.id,
                    agent_id=actor if isinstance(actor, str) else repr(actor),
                    act="close",
                    reason="not_opener",
                )
                await self._refuse(ballot, actor, "close", exc, now)
                raise exc
            if ballot.result is not None:
                return ballot.result
            final = tally(ballot, await self._scores(ballot))
            closed = core.close(ballot, final, now=now, cause="opener", actor=actor)
            try:
                await self._write(closed, entry.version, [_closed_event(closed, actor)])
            except ConflictError:
                # A vote landed (or settled it) first: close what is there now. Bounded as in
                # ``vote``: each conflict is one of the ballot's few possible changes.
                conflicts += 1
                if conflicts > _MAX_RETRIES + len(ballot.voters):
                    raise
                continue
            assert closed.result is not None
            return closed.result

    async def close_due(self, now: float | None = None) -> list[BallotResult]:
        """Close every open ballot whose deadline is at or before ``now``.

        Reads the deadline index, not every ballot: the cost is the due ballots plus one key.

        Args:
            now: the time to judge deadlines by; the manager's clock by default. A value from
                another clock (``time.monotonic()`` for a wall-clock manager) is refused.

        Returns:
            The results of the ballots this call closed, earliest deadline first.
        """
        now = self._check_now(now)
        closed: list[BallotResult] = []
        async for _, ballot_id in due_entries(self.store, DUE_PREFIX, now):
            result = await self._close_due(ballot_id, now)
            if result is not None:
                closed.append(result)
        return closed

    # -- internals ---------------------------------------------------------------------------------

    async def _close_due(self, ballot_id: str, now: float) -> BallotResult | None:
        for _ in range(_MAX_RETRIES):
            entry = await self.store.get(ballot_key(ballot_id))
            if entry is None:  # pragma: no cover - the index is written and deleted with it
                return None
            ballot = _decoder.decode(entry.value)
            if ballot.is_closed or not ballot.due(now):
                return None
            final = tally(ballot, await self._scores(ballot))
            closed = core.close(ballot, final, now=now, cause="deadline")
            try:
                await self._write(closed, entry.version, [_closed_event(closed, "")])
            except ConflictError:
                continue
            return closed.result
        return None

    async def _get(self, ballot_id: str) -> Ballot:
        ballot = await self.get(ballot_id)
        if ballot is None:
            raise ValidationError(f"no ballot {ballot_id!r}", field="ballot_id")
        return ballot

    async def _scores(self, ballot: Ballot) -> dict[str, float] | None:
        """The eligible voters' trust scores, for a trust_weighted ballot; None otherwise."""
        if ballot.rule != "trust_weighted":
            return None
        if self.trust is None:
            raise ValidationError(
                f"ballot {ballot.id} is trust_weighted; this manager has no trust source",
                field="trust",
            )
        trust = self.trust
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(trust.score(v)) for v in ballot.voters]
        except ExceptionGroup as group:
            raise group.exceptions[0] from None  # one failed read: raise it as itself
        return {v: t.result() for v, t in zip(ballot.voters, tasks, strict=True)}

    async def _write(self, ballot: Ballot, version: int, events: Sequence[Event]) -> None:
        async with self.store.transaction() as tx:
            tx.compare_and_set(ballot_key(ballot.id), version, _encoder.encode(ballot))
            if ballot.is_closed and ballot.deadline is not None:
                tx.delete(due_ballot_key(ballot))
            tx.append(*events)

    async def _refuse(
        self,
        ballot: Ballot,
        actor: object,
        act: str,
        exc: ConvergeError,
        now: float,
        *,
        option: object = None,
    ) -> None:
        who = clip(actor)  # the caller's claim, whatever it is: clipped (a repr if not a str)
        await self.store.append(
            [
                _event(
                    ballot,
                    "ballot.refused",
                    who,
                    now,
                    voter=who,
                    act=act,
                    option=None if option is None else clip(option),
                    reason=clip_text(str(exc)),
                    code=refusal_code(exc),
                    error=type(exc).__name__,
                )
            ]
        )

    def _check_now(self, now: float | None) -> float:
        return on_clock(now, self.clock, what="deadlines")


def _event(ballot: Ballot, kind: str, actor: str, now: float, **data: Any) -> Event:
    return Event(
        kind=kind,
        trace_id=ballot.trace_id,
        actor=actor,
        subject=ballot.id,
        data={k: v for k, v in data.items() if v is not None},
        at=now,
    )


def _closed_event(ballot: Ballot, actor: str) -> Event:
    assert ballot.closed_at is not None
    result: Mapping[str, Any] = msgspec.to_builtins(ballot.result)
    return _event(
        ballot, "ballot.closed", actor, ballot.closed_at, cause=ballot.close_cause, result=result
    )
