"""The negotiation session, pure: its data and its state machine.

Its data (the session, its proposals, its states and their one
transition table, what an act did, the two refusals particular to negotiation) and the state
machine that changes it: a session, the acting did, the input and ``now`` in; the new session,
the events to record and (for a refused act) the error out. No I/O, no clock.

A session is opened with a first proposal; every later proposal supersedes the one before. Only
the latest proposal can be answered, and only by a party other than its proposer. A proposal is
agreed when **every** party other than its proposer has accepted it (in a two-party session: the
other party); one rejection ends the session. ``NegotiationProtocol`` drives this over a store.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from converge.core.clip import clip, clip_text
from converge.errors import (
    ConvergeError,
    InvalidTransition,
    NegotiationRefused,
    ProposalSuperseded,
    ValidationError,
)
from converge.protocol.event import Event

__all__ = [
    "TERMINAL_NEGOTIATION_STATES",
    "Act",
    "ActResult",
    "NegotiationSession",
    "NegotiationState",
    "Proposal",
    "accept",
    "expire",
    "open_session",
    "propose",
    "reject",
]

# -- data -----------------------------------------------------------------------------------------

Act = Literal["propose", "counter", "accept", "reject"]
"""What a party does to a session (the ``act`` of a ``negotiation.refused`` event)."""


class NegotiationState(enum.StrEnum):
    """Where a negotiation session is in its life."""

    OPEN = "open"
    """A proposal is on the table, waiting for the other parties' answers."""
    AGREED = "agreed"
    """Every party other than its proposer accepted the latest proposal. Terminal."""
    REJECTED = "rejected"
    """A party rejected the latest proposal. Terminal."""
    EXPIRED = "expired"
    """The deadline passed before an agreement. Terminal."""
    FAILED = "failed"
    """A party tried to make more than ``max_rounds`` proposals. Terminal."""


_S = NegotiationState
_NEGOTIATION_TRANSITIONS: dict[NegotiationState, frozenset[NegotiationState]] = {
    # OPEN -> OPEN: a counter-proposal, a revision, or one acceptance of several still needed.
    _S.OPEN: frozenset({_S.OPEN, _S.AGREED, _S.REJECTED, _S.EXPIRED, _S.FAILED}),
    _S.AGREED: frozenset(),
    _S.REJECTED: frozenset(),
    _S.EXPIRED: frozenset(),
    _S.FAILED: frozenset(),
}
"""Every allowed move: ``_NEGOTIATION_TRANSITIONS[a]`` is the set of states ``a`` may move to."""

TERMINAL_NEGOTIATION_STATES = frozenset(s for s, nxt in _NEGOTIATION_TRANSITIONS.items() if not nxt)
"""States a session never leaves."""


class Proposal(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One proposal of a session: the opening one, a counter-proposal or a revision."""

    id: str
    """Unique id (the manager's ``id_factory``)."""
    proposer: str
    """The did of the party that made it."""
    terms: dict[str, Any]
    """What is proposed (MessagePack-encodable; copied on the way in)."""
    at: float
    """When it was made (seconds since the epoch)."""


class NegotiationSession(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True
):
    """A negotiation among named parties. Change it only through this module's acts."""

    id: str
    """Unique id; the store key is ``negotiation/<id>``."""
    parties: tuple[str, ...]
    """The dids taking part, the initiator first, then its counterparties; no repeats."""
    max_rounds: int
    """The most proposals the session may hold (the opening one included)."""
    trace_id: str
    """The trace its events belong to (the session id unless the opener named one)."""
    created_at: float
    """When it was opened."""
    updated_at: float
    """When it last changed."""
    state: NegotiationState = NegotiationState.OPEN
    """Where it is in its life."""
    proposals: tuple[Proposal, ...] = ()
    """Every proposal, oldest first; the last one is the only one that can be answered."""
    accepted_by: tuple[str, ...] = ()
    """The parties that accepted the latest proposal so far (reset by every new proposal)."""
    deadline: float | None = None
    """Acting at or after this time expires the session; None: no deadline."""
    agreed_proposal_id: str | None = None
    """The proposal agreed on, once AGREED."""
    agreed_terms: dict[str, Any] | None = None
    """Its terms, once AGREED."""
    ended_by: str | None = None
    """The did whose act ended the session (the rejecter, the last acceptor…); None: still open,
    or expired by the system."""
    reason: str = ""
    """Why it ended when it did not agree: the rejection's reason, the deadline, the round limit."""

    @property
    def initiator(self) -> str:
        """The did that opened the session."""
        return self.parties[0]

    @property
    def latest(self) -> Proposal:
        """The latest proposal (a session always has one)."""
        return self.proposals[-1]

    @property
    def rounds(self) -> int:
        """How many proposals were made."""
        return len(self.proposals)

    @property
    def is_terminal(self) -> bool:
        """Whether the session is AGREED, REJECTED, EXPIRED or FAILED."""
        return self.state in TERMINAL_NEGOTIATION_STATES

    @property
    def waiting_for(self) -> tuple[str, ...]:
        """The parties whose acceptance the latest proposal still needs (empty once terminal)."""
        if self.is_terminal:
            return ()
        proposer = self.latest.proposer
        return tuple(p for p in self.parties if p != proposer and p not in self.accepted_by)


@dataclass(frozen=True, slots=True)
class ActResult:
    """What an act did: the session after it, the events to record with it, and the refusal.

    A refused act still has events (``negotiation.refused``) and may still have moved the session
    (acting after the deadline expires it; proposing past ``max_rounds`` fails it), so a driver
    writes ``session`` when ``changed`` and records ``events`` before it raises ``error``.
    """

    session: NegotiationSession
    """The session after the act (the same object when nothing changed)."""
    events: tuple[Event, ...]
    """Events to record in the same unit of work as the session."""
    changed: bool
    """Whether ``session`` differs from the one the act was applied to."""
    error: ConvergeError | None = None
    """The refusal, to raise once the events are recorded; None: the act was done."""
    proposal: Proposal | None = None
    """The proposal a successful ``propose`` made."""

    def check(self) -> NegotiationSession:
        """The new session, or raise the refusal."""
        if self.error is not None:
            raise self.error
        return self.session


# -- the state machine ----------------------------------------------------------------------------

# The state each act moves an open session to (accept: AGREED when it is the last one needed).
_TARGET: dict[Act, NegotiationState] = {
    "propose": _S.OPEN,
    "counter": _S.OPEN,
    "accept": _S.AGREED,
    "reject": _S.REJECTED,
}


# -- opening -----------------------------------------------------------------------------------


def open_session(
    *,
    session_id: str,
    initiator: str,
    counterparties: Sequence[str],
    terms: dict[str, Any],
    proposal_id: str,
    now: float,
    max_rounds: int,
    deadline: float | None = None,
    trace_id: str | None = None,
) -> ActResult:
    """A new OPEN session holding the initiator's first proposal.

    Raises:
        ValidationError: a bad id, party list (empty, repeated, the initiator among its own
            counterparties), terms, ``max_rounds`` (< 1) or deadline (not after ``now``).
    """
    _check_str(session_id, "session_id")
    parties = _check_parties(initiator, counterparties)
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
        raise ValidationError(
            f"max_rounds must be an int >= 1, not {max_rounds!r}", field="max_rounds"
        )
    if deadline is not None:
        deadline = _check_deadline(deadline, now)
    first = Proposal(_check_str(proposal_id, "proposal_id"), initiator, _copy_terms(terms), now)
    session = NegotiationSession(
        id=session_id,
        parties=parties,
        max_rounds=max_rounds,
        trace_id=session_id if trace_id is None else _check_str(trace_id, "trace_id"),
        created_at=now,
        updated_at=now,
        proposals=(first,),
        deadline=deadline,
    )
    events = (
        _event(
            session,
            "negotiation.opened",
            initiator,
            now,
            parties=list(parties),
            deadline=deadline,
            max_rounds=max_rounds,
        ),
        _proposed_event(session, first, counter=False, replying_to=None),
    )
    return ActResult(session, events, changed=True, proposal=first)


# -- acts --------------------------------------------------------------------------------------


def propose(
    session: NegotiationSession,
    agent_id: str,
    terms: dict[str, Any],
    *,
    proposal_id: str,
    now: float,
    replying_to: str | None = None,
    counter: bool = False,
) -> ActResult:
    """A party proposes ``terms``, superseding the latest proposal.

    ``counter=True`` requires the latest proposal to be someone else's; without it a party may
    also revise its own. ``replying_to`` names the proposal the party saw as the latest (default:
    the current latest); if another has replaced it, the act is refused. A proposal beyond
    ``max_rounds`` fails the session (and is refused).
    """
    turn = _Turn(session, agent_id, "counter" if counter else "propose", now, replying_to)
    return _run(turn, lambda t: _propose(t, terms, proposal_id))


def accept(
    session: NegotiationSession, agent_id: str, *, now: float, proposal_id: str | None = None
) -> ActResult:
    """A party accepts the latest proposal (``proposal_id`` must name it, if given).

    The session is AGREED, with the proposal's terms, once every party other than the proposer
    has accepted; until then it stays OPEN and records who accepted.
    """
    return _run(_Turn(session, agent_id, "accept", now, proposal_id), _accept)


def reject(
    session: NegotiationSession,
    agent_id: str,
    *,
    now: float,
    proposal_id: str | None = None,
    reason: str = "",
) -> ActResult:
    """A party rejects the latest proposal (``proposal_id`` must name it, if given), which ends
    the session: REJECTED is terminal, so nothing can be accepted afterwards."""
    return _run(_Turn(session, agent_id, "reject", now, proposal_id), lambda t: _reject(t, reason))


def expire(session: NegotiationSession, *, now: float, actor: str = "") -> ActResult:
    """Expire an open session whose deadline is at or before ``now``; otherwise nothing changes
    (a terminal session, or one not yet due, is left as it is, without events)."""
    if session.is_terminal or not _due(session, now):
        return ActResult(session, (), changed=False)
    return _expired(session, now, actor)


def _propose(t: _Turn, terms: dict[str, Any], proposal_id: str) -> ActResult:
    session, latest = t.session, t.session.latest
    proposal = Proposal(
        _check_str(proposal_id, "proposal_id"), t.agent_id, _copy_terms(terms), t.now
    )
    if t.act == "counter" and latest.proposer == t.agent_id:
        raise t.not_allowed(
            "own_proposal", f"proposal {latest.id} is its own; propose to revise it"
        )
    if session.rounds >= session.max_rounds:
        reason = (
            f"{t.agent_id} proposed round {session.rounds + 1} of a negotiation limited to "
            f"{session.max_rounds}"
        )
        failed = _move(session, _S.FAILED, t.now, ended_by=t.agent_id, reason=reason)
        event = t.event(
            failed,
            "negotiation.failed",
            reason=reason,
            proposal_id=latest.id,
            max_rounds=session.max_rounds,
        )
        moved = ActResult(failed, (event,), changed=True)
        raise _Moved(moved, InvalidTransition(_S.FAILED, _S.OPEN, subject=session.id))
    proposals = (*session.proposals, proposal)
    new = _move(session, _S.OPEN, t.now, proposals=proposals, accepted_by=())
    event = _proposed_event(new, proposal, counter=t.act == "counter", replying_to=latest.id)
    return ActResult(new, (event,), changed=True, proposal=proposal)


def _accept(t: _Turn) -> ActResult:
    session, latest = t.session, t.session.latest
    if latest.proposer == t.agent_id:
        raise t.not_allowed("own_proposal", f"proposal {latest.id} is its own")
    if t.agent_id in session.accepted_by:
        raise t.not_allowed("already_accepted", f"it already accepted proposal {latest.id}")
    accepted_by = (*session.accepted_by, t.agent_id)
    waiting = [p for p in session.parties if p != latest.proposer and p not in accepted_by]
    if waiting:
        new = _move(session, _S.OPEN, t.now, accepted_by=accepted_by)
        data: dict[str, Any] = {"agreed": False, "waiting_for": waiting}
    else:
        new = _move(
            session,
            _S.AGREED,
            t.now,
            accepted_by=accepted_by,
            agreed_proposal_id=latest.id,
            agreed_terms=latest.terms,
            ended_by=t.agent_id,
        )
        data = {"agreed": True, "terms": latest.terms}
    event = t.event(new, "negotiation.accepted", proposal_id=latest.id, **data)
    return ActResult(new, (event,), changed=True)


def _reject(t: _Turn, reason: str) -> ActResult:
    latest = t.session.latest
    if not isinstance(reason, str):
        raise ValidationError(f"a rejection's reason is a str, not {reason!r}", field="reason")
    if latest.proposer == t.agent_id:
        raise t.not_allowed("own_proposal", f"proposal {latest.id} is its own")
    new = _move(t.session, _S.REJECTED, t.now, ended_by=t.agent_id, reason=reason)
    event = t.event(new, "negotiation.rejected", proposal_id=latest.id, reason=reason)
    return ActResult(new, (event,), changed=True)


# -- internals ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Turn:
    """One act: who does what to which session, when, answering which proposal (None: the
    latest)."""

    session: NegotiationSession
    agent_id: str
    act: Act
    now: float
    proposal_id: str | None

    def not_allowed(self, reason: str, detail: str) -> NegotiationRefused:
        return NegotiationRefused(self.session.id, self.agent_id, self.act, reason, detail)

    def event(self, session: NegotiationSession, kind: str, **data: Any) -> Event:
        return _event(session, kind, self.agent_id, self.now, **data)


class _Moved(Exception):  # control flow inside this module, never raised out of it
    """A refusal that itself moved the session (expired or failed it)."""

    def __init__(self, outcome: ActResult, error: ConvergeError) -> None:
        self.outcome = outcome
        self.error = error


def _run(t: _Turn, body: Callable[[_Turn], ActResult]) -> ActResult:
    """Check what every act checks, in order (who acts, the state, the deadline, the proposal
    named), then run ``body``; turn any refusal into an ``ActResult`` with its events."""
    session = t.session
    try:
        if not isinstance(t.agent_id, str) or not t.agent_id:
            raise ValidationError(f"invalid agent id {t.agent_id!r}", field="agent_id")
        if t.agent_id not in session.parties:
            raise t.not_allowed("not_a_party", "it is not a party")
        target = _TARGET[t.act]
        if target not in _NEGOTIATION_TRANSITIONS[session.state]:
            raise InvalidTransition(session.state, target, subject=session.id)
        if _due(session, t.now):
            expired = _expired(session, t.now, t.agent_id)
            raise _Moved(expired, InvalidTransition(_S.EXPIRED, target, subject=session.id))
        named = t.proposal_id
        if named is not None and named != session.latest.id:
            if any(p.id == named for p in session.proposals):
                raise ProposalSuperseded(session.id, named, session.latest.id)
            field = "proposal_id" if t.act in ("accept", "reject") else "replying_to"
            raise ValidationError(
                f"negotiation {session.id} has no proposal {named!r}", field=field
            )
        return body(t)
    except _Moved as moved:
        return _refuse(t, moved.outcome.session, moved.error, moved.outcome.events)
    except ConvergeError as exc:
        return _refuse(t, session, exc, ())


def _refuse(
    t: _Turn, session: NegotiationSession, exc: ConvergeError, before: tuple[Event, ...]
) -> ActResult:
    """``exc`` as an outcome: ``before`` (what the refusal itself moved), then a
    ``negotiation.refused`` event; ``session`` is the session after those moves."""
    # Who acts and the proposal named are the caller's claims: clipped for the log.
    actor = clip(t.agent_id) if isinstance(t.agent_id, str) else ""
    event = _event(
        session,
        "negotiation.refused",
        actor,
        t.now,
        act=t.act,
        reason=clip_text(str(exc)),
        error=type(exc).__name__,
        proposal_id=clip(t.proposal_id) if isinstance(t.proposal_id, str) else None,
    )
    return ActResult(session, (*before, event), changed=bool(before), error=exc)


def _expired(session: NegotiationSession, now: float, actor: str) -> ActResult:
    reason = f"the deadline {session.deadline} passed"
    new = _move(session, _S.EXPIRED, now, ended_by=actor or None, reason=reason)
    event = _event(
        new,
        "negotiation.expired",
        actor,
        now,
        deadline=session.deadline,
        proposal_id=session.latest.id,
    )
    return ActResult(new, (event,), changed=True)


def _due(session: NegotiationSession, now: float) -> bool:
    return session.deadline is not None and now >= session.deadline


def _move(
    session: NegotiationSession, target: NegotiationState, now: float, **changes: Any
) -> NegotiationSession:
    """``session`` moved to ``target``; the one place a state changes, checked by the table."""
    if target not in _NEGOTIATION_TRANSITIONS[session.state]:
        raise InvalidTransition(session.state, target, subject=session.id)
    return msgspec.structs.replace(session, state=target, updated_at=now, **changes)


def _proposed_event(
    session: NegotiationSession, proposal: Proposal, *, counter: bool, replying_to: str | None
) -> Event:
    return _event(
        session,
        "negotiation.proposed",
        proposal.proposer,
        proposal.at,
        proposal_id=proposal.id,
        terms=proposal.terms,
        round=session.rounds,
        counter=counter,
        replying_to=replying_to,
    )


def _event(session: NegotiationSession, kind: str, actor: str, now: float, **data: Any) -> Event:
    data["state"] = session.state.value
    return Event(
        kind=kind,
        trace_id=session.trace_id,
        actor=actor,
        subject=session.id,
        data={k: v for k, v in data.items() if v is not None},
        at=now,
    )


_terms_encoder = msgspec.msgpack.Encoder()


def _copy_terms(terms: object) -> dict[str, Any]:
    """A deep copy of ``terms`` through MessagePack: what is stored is what was proposed, and a
    caller mutating its dict afterwards changes nothing."""
    if not isinstance(terms, dict):
        raise ValidationError(f"terms are a dict, not {type(terms).__name__}", field="terms")
    bad = next((k for k in terms if not isinstance(k, str)), None)
    if bad is not None:
        raise ValidationError(f"terms keys are str, not {bad!r}", field="terms")
    try:
        copied: dict[str, Any] = msgspec.msgpack.decode(_terms_encoder.encode(terms))
    except (TypeError, ValueError, OverflowError, msgspec.MsgspecError) as exc:
        raise ValidationError(f"terms cannot be encoded: {exc}", field="terms") from exc
    return copied


def _check_str(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{field} must be a non-empty str, not {value!r}", field=field)
    return value


def _check_parties(initiator: str, counterparties: Sequence[str]) -> tuple[str, ...]:
    if isinstance(counterparties, str) or not isinstance(counterparties, (tuple, list)):
        raise ValidationError(
            f"counterparties is a list of dids, not {counterparties!r}", field="counterparties"
        )
    if not counterparties:
        raise ValidationError("a negotiation needs a counterparty", field="counterparties")
    parties = (_check_str(initiator, "initiator"), *counterparties)
    for i, did in enumerate(counterparties):
        _check_str(did, f"counterparties[{i}]")
    if len(set(parties)) != len(parties):
        raise ValidationError(
            "the parties must be distinct, the initiator among them", field="counterparties"
        )
    return parties


def _check_deadline(deadline: object, now: float) -> float:
    if isinstance(deadline, bool) or not isinstance(deadline, (int, float)):
        raise ValidationError(f"deadline is a time, not {deadline!r}", field="deadline")
    value = float(deadline) + 0.0  # -0.0 -> 0.0, so the index key orders it right
    if not math.isfinite(value) or value < 0:
        raise ValidationError(
            f"deadline must be seconds since the epoch, not {deadline!r}", field="deadline"
        )
    if value <= now:
        raise ValidationError(f"deadline {value} is not after now ({now})", field="deadline")
    return value
