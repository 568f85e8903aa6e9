"""Negotiation: parties propose, counter, accept and reject terms.

A session names its parties; only they act in it.

``NegotiationProtocol`` drives the pure state machine of ``_negotiation_session`` (its one
table ``_NEGOTIATION_TRANSITIONS``: OPEN -> OPEN, AGREED, REJECTED, EXPIRED or FAILED; the four
terminal states have no moves) over a store. Each act is one unit of work: a compare-and-set on
the version read plus its events, recomputed on conflict (at most 32 times). Keys:

- ``negotiation/<session id>``: the ``NegotiationSession`` (MessagePack), changed only by a
  compare-and-set on the version read, in one unit of work with its events;
- ``negotiation-due/<deadline>/<session id>``: one index key per open session with a deadline
  (the deadline as the hex of its big-endian IEEE 754 double, whose text order is the numeric
  order for times >= 0), written when the session opens and deleted in the unit of work that
  ends it, so ``expire_due`` reads only the sessions that are due, plus one.

Semantics: the initiator opens a session with a first proposal to one or more counterparties;
every later proposal (a counter, or a party revising its own) supersedes the one before, and
only the latest can be answered, by a party other than its proposer. A proposal is AGREED when
every party other than its proposer has accepted it; one rejection ends the session (REJECTED
is terminal: whoever wants to go on counters instead of rejecting). Acting at or after the
deadline expires the session and refuses the act; a proposal beyond ``max_rounds`` (counting the
opening one; 10 by default) fails it. Both moves are recorded before the refusal. Checks run in a
fixed order: who acts (a non-party is refused first, so it can never expire or fail a session),
the state, the deadline, the proposal named, the act's own rules, the round limit.

An act is relative to the latest proposal the caller saw: ``proposal_id`` (accept, reject) or
``replying_to`` (propose, counter) names it, and when omitted it is pinned to the latest one at
the manager's first read. If another act replaces that proposal before this one commits, this
one is refused (``ProposalSuperseded``), never silently applied to terms its agent did not see:
of two acts on the same proposal at once, exactly one wins (two acceptances of one proposal in a
session of three or more parties both count).

Events (trace id: the session's; actor: the acting did, empty for ``expire_due``; subject: the
session id; ``data.state``: the session's state after the event) and their other ``data``:

- ``negotiation.opened``: ``parties``, ``deadline``, ``max_rounds``;
- ``negotiation.proposed``: ``proposal_id``, ``terms``, ``round``, ``counter``, ``replying_to``;
- ``negotiation.accepted``: ``proposal_id``, ``agreed``, and ``terms`` (agreed) or
  ``waiting_for`` (the parties whose acceptance is still needed);
- ``negotiation.rejected``: ``proposal_id``, ``reason``;
- ``negotiation.expired``: ``deadline``, ``proposal_id``;
- ``negotiation.failed``: ``reason``, ``max_rounds``, ``proposal_id``;
- ``negotiation.refused``: ``act``, ``reason`` (the error's message), ``error`` (its class).

Refusals raise ``NegotiationRefused`` (a ``PolicyViolation``; ``not_a_party``,
``own_proposal``, ``already_accepted``), ``ProposalSuperseded`` (a ``StateError``),
``InvalidTransition`` or ``ValidationError``. The ``StandardExecutor`` runs ``Propose`` (opening
the session when it names parties and does not exist yet), ``AcceptProposal`` and
``RejectProposal`` through its ``negotiation_protocol``.

Every refused act on an existing session is recorded as ``negotiation.refused`` and raised;
nothing else changes, except a refusal that itself expired or failed the session. An act on a
session that does not exist is a ``ValidationError`` and records nothing. The acting agent is
whoever the caller authenticated; the manager never takes an agent's word for who it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from converge.coordination import _negotiation_session as core
from converge.coordination._due import due_entries, due_key
from converge.coordination._negotiation_session import (
    TERMINAL_NEGOTIATION_STATES,
    ActResult,
    NegotiationSession,
    NegotiationState,
    Proposal,
)
from converge.core.clock import Clock, on_clock, system_clock
from converge.core.ids import new_id
from converge.errors import ConflictError, NegotiationRefused, ProposalSuperseded, ValidationError
from converge.store.base import Store

__all__ = [
    "TERMINAL_NEGOTIATION_STATES",
    "NegotiationProtocol",
    "NegotiationRefused",
    "NegotiationSession",
    "NegotiationState",
    "Proposal",
    "ProposalSuperseded",
]

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(NegotiationSession)
_MAX_RETRIES = 32
_DUE = "negotiation-due/"


class NegotiationProtocol:
    """Negotiation sessions over a ``Store``.

    Args:
        store: where sessions and their events live.
        clock: the time source for deadlines and timestamps (wall-clock by default).
        max_rounds: the proposals a session may hold when ``open`` does not say.
        id_factory: makes session and proposal ids.
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock = system_clock,
        max_rounds: int = 10,
        id_factory: Callable[[], str] = new_id,
    ) -> None:
        if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
            raise ValidationError(
                f"max_rounds must be an int >= 1, not {max_rounds!r}", field="max_rounds"
            )
        self.store = store
        self.clock = clock
        self.max_rounds = max_rounds
        self.id_factory = id_factory

    # -- opening -----------------------------------------------------------------------------------

    async def open(
        self,
        initiator: str,
        counterparties: Sequence[str],
        terms: dict[str, Any],
        *,
        deadline: float | None = None,
        max_rounds: int | None = None,
        session_id: str | None = None,
        trace_id: str | None = None,
    ) -> NegotiationSession:
        """Open a session in which ``initiator`` proposes ``terms`` to ``counterparties``.

        Args:
            initiator: the opening party's (authenticated) did.
            counterparties: the other parties' dids.
            terms: the first proposal.
            deadline: acting at or after this time (seconds since the epoch, the manager's
                clock) expires the session; None: no deadline.
            max_rounds: the most proposals, the first included; None: the manager's default.
            session_id: the id to use; None: a new one.
            trace_id: the trace its events join; None: the session id.

        Raises:
            ValidationError: bad parties, terms, deadline or ``max_rounds`` (the field is named).
            ConflictError: a session with this id exists.
        """
        outcome = core.open_session(
            session_id=self.id_factory() if session_id is None else session_id,
            initiator=initiator,
            counterparties=counterparties,
            terms=terms,
            proposal_id=self.id_factory(),
            now=self.clock.now(),
            max_rounds=self.max_rounds if max_rounds is None else max_rounds,
            deadline=deadline,
            trace_id=trace_id,
        )
        session = outcome.session
        async with self.store.transaction() as tx:
            tx.put_if_absent(_key(session.id), _encoder.encode(session))
            if session.deadline is not None:
                tx.put(_due_key(session), session.id.encode())
            tx.append(*outcome.events)
        return session

    # -- acts --------------------------------------------------------------------------------------

    async def propose(
        self,
        agent_id: str,
        session_id: str,
        terms: dict[str, Any],
        *,
        replying_to: str | None = None,
    ) -> Proposal:
        """Propose ``terms``: a counter to someone else's proposal, or a revision of one's own.

        Args:
            agent_id: the proposing party's (authenticated) did.
            session_id: the session.
            terms: what is proposed.
            replying_to: the proposal the agent saw as the latest; None: the latest at the
                manager's read. If another replaced it first, the proposal is refused.

        Raises:
            ValidationError: no such session, or bad terms.
            NegotiationRefused: the agent is not a party.
            InvalidTransition: the session has ended (``from_state``), or this proposal ended it
                (past its deadline: EXPIRED; past ``max_rounds``: FAILED).
            ProposalSuperseded: ``replying_to`` is no longer the latest proposal.
        """
        outcome = await self._act(
            session_id,
            replying_to,
            lambda s, pinned, now: core.propose(
                s, agent_id, terms, proposal_id=self.id_factory(), now=now, replying_to=pinned
            ),
        )
        assert outcome.proposal is not None
        return outcome.proposal

    async def counter(
        self,
        agent_id: str,
        session_id: str,
        terms: dict[str, Any],
        *,
        replying_to: str | None = None,
    ) -> Proposal:
        """``propose``, for an agent answering someone else's open proposal: countering one's
        own latest proposal is refused (``NegotiationRefused``, reason ``own_proposal``)."""
        outcome = await self._act(
            session_id,
            replying_to,
            lambda s, pinned, now: core.propose(
                s,
                agent_id,
                terms,
                proposal_id=self.id_factory(),
                now=now,
                replying_to=pinned,
                counter=True,
            ),
        )
        assert outcome.proposal is not None
        return outcome.proposal

    async def accept(
        self, agent_id: str, session_id: str, proposal_id: str | None = None
    ) -> NegotiationSession:
        """Accept the latest proposal; the session is AGREED once every party other than the
        proposer has accepted it, with ``agreed_terms`` its terms.

        Args:
            agent_id: the accepting party's (authenticated) did.
            session_id: the session.
            proposal_id: the proposal accepted; None: the latest at the manager's read.

        Raises:
            ValidationError: no such session or proposal.
            NegotiationRefused: not a party, one's own proposal, or accepted already.
            InvalidTransition: the session has ended (rejected, agreed, expired now or before,
                failed): ``from_state`` says how.
            ProposalSuperseded: ``proposal_id`` is not the latest proposal.
        """
        outcome = await self._act(
            session_id,
            proposal_id,
            lambda s, pinned, now: core.accept(s, agent_id, now=now, proposal_id=pinned),
        )
        return outcome.session

    async def reject(
        self,
        agent_id: str,
        session_id: str,
        proposal_id: str | None = None,
        reason: str = "",
    ) -> NegotiationSession:
        """Reject the latest proposal, which ends the session (REJECTED).

        Raises the same errors as ``accept`` (but rejecting twice is an ``InvalidTransition``).
        """
        outcome = await self._act(
            session_id,
            proposal_id,
            lambda s, pinned, now: core.reject(
                s, agent_id, now=now, proposal_id=pinned, reason=reason
            ),
        )
        return outcome.session

    # -- reading and expiry ------------------------------------------------------------------------

    async def get(self, session_id: str) -> NegotiationSession | None:
        """The session, or None."""
        entry = await self.store.get(_key(session_id))
        return None if entry is None else _decoder.decode(entry.value)

    async def expire_due(self, now: float | None = None) -> list[str]:
        """Move every open session whose deadline is at or before ``now`` to EXPIRED.

        Reads the deadline index, not every session: the cost is the due sessions plus one
        index key.

        Args:
            now: the time to judge deadlines by; the manager's clock by default. A value from
                another clock (``time.monotonic()`` for a wall-clock manager) is refused.

        Returns:
            The ids of the sessions this call expired, earliest deadline first.
        """
        now = self._check_now(now)
        expired: list[str] = []
        async for key, session_id in due_entries(self.store, _DUE, now):
            if await self._expire(session_id, key, now):
                expired.append(session_id)
        return expired

    # -- internals ---------------------------------------------------------------------------------

    async def _act(
        self,
        session_id: str,
        proposal_id: str | None,
        act: Callable[[NegotiationSession, str, float], ActResult],
    ) -> ActResult:
        """Read, apply ``act`` (pure), write with a compare-and-set; on a conflict read again
        and recompute. The proposal the act answers is pinned at the first read, so a retry
        never applies it to a proposal its agent did not see."""
        if not isinstance(session_id, str) or not session_id:
            raise ValidationError(f"invalid session id {session_id!r}", field="session_id")
        key = _key(session_id)
        pinned = proposal_id
        conflict: ConflictError | None = None
        for _ in range(_MAX_RETRIES):
            entry = await self.store.get(key)
            if entry is None:
                raise ValidationError(f"no negotiation session {session_id!r}", field="session_id")
            session = _decoder.decode(entry.value)
            if pinned is None:
                pinned = session.latest.id
            outcome = act(session, pinned, self.clock.now())
            try:
                await self._write(outcome, entry.version)
            except ConflictError as exc:
                conflict = exc
                continue  # another act changed the session: read it again
            outcome.check()
            return outcome
        assert conflict is not None
        raise conflict

    async def _expire(self, session_id: str, due_key: str, now: float) -> bool:
        for _ in range(_MAX_RETRIES):
            entry = await self.store.get(_key(session_id))
            if entry is None:  # pragma: no cover - the index is written and deleted with it
                await self.store.delete(due_key)
                return False
            session = _decoder.decode(entry.value)
            if session.is_terminal:  # pragma: no cover - its index key went with its last move
                await self.store.delete(due_key)
                return False
            outcome = core.expire(session, now=now)
            if not outcome.changed:
                return False
            try:
                await self._write(outcome, entry.version)
            except ConflictError:
                continue
            return True
        return False

    async def _write(self, outcome: ActResult, version: int) -> None:
        session = outcome.session
        if not outcome.changed:
            if outcome.events:
                await self.store.append(outcome.events)
            return
        async with self.store.transaction() as tx:
            tx.compare_and_set(_key(session.id), version, _encoder.encode(session))
            if session.is_terminal and session.deadline is not None:
                tx.delete(_due_key(session))
            tx.append(*outcome.events)

    def _check_now(self, now: float | None) -> float:
        return on_clock(now, self.clock, what="deadlines")


def _key(session_id: str) -> str:
    return f"negotiation/{session_id}"


def _due_key(session: NegotiationSession) -> str:
    assert session.deadline is not None
    return due_key(_DUE, session.deadline, session.id)
