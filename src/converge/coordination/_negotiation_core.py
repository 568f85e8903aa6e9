"""The negotiation state machine, pure: a session, the acting did, the input and ``now`` in; the
new session, the events to record and (for a refused act) the error out. No I/O, no clock.

A session is opened with a first proposal; every later proposal supersedes the one before. Only
the latest proposal can be answered, and only by a party other than its proposer. A proposal is
agreed when **every** party other than its proposer has accepted it (in a two-party session: the
other party); one rejection ends the session. ``NegotiationProtocol`` drives this over a store.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from converge.coordination._negotiation_types import (
    NEGOTIATION_TRANSITIONS,
    Act,
    NegotiationRefused,
    NegotiationSession,
    NegotiationState,
    Outcome,
    Proposal,
    ProposalSuperseded,
)
from converge.core.clip import clip, clip_text
from converge.errors import ConvergeError, InvalidTransition, ValidationError
from converge.protocol.event import Event

# ``Proposal`` is re-exported: callers compare what ``propose`` returns with ``core.Proposal``.
__all__ = [
    "Proposal",
    "accept",
    "expire",
    "open_session",
    "propose",
    "reject",
]

_S = NegotiationState

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
) -> Outcome:
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
    return Outcome(session, events, changed=True, proposal=first)


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
) -> Outcome:
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
) -> Outcome:
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
) -> Outcome:
    """A party rejects the latest proposal (``proposal_id`` must name it, if given), which ends
    the session: REJECTED is terminal, so nothing can be accepted afterwards."""
    return _run(_Turn(session, agent_id, "reject", now, proposal_id), lambda t: _reject(t, reason))


def expire(session: NegotiationSession, *, now: float, actor: str = "") -> Outcome:
    """Expire an open session whose deadline is at or before ``now``; otherwise nothing changes
    (a terminal session, or one not yet due, is left as it is, without events)."""
    if session.is_terminal or not _due(session, now):
        return Outcome(session, (), changed=False)
    return _expired(session, now, actor)


def _propose(t: _Turn, terms: dict[str, Any], proposal_id: str) -> Outcome:
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
        moved = Outcome(failed, (event,), changed=True)
        raise _Moved(moved, InvalidTransition(_S.FAILED, _S.OPEN, subject=session.id))
    proposals = (*session.proposals, proposal)
    new = _move(session, _S.OPEN, t.now, proposals=proposals, accepted_by=())
    event = _proposed_event(new, proposal, counter=t.act == "counter", replying_to=latest.id)
    return Outcome(new, (event,), changed=True, proposal=proposal)


def _accept(t: _Turn) -> Outcome:
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
    return Outcome(new, (event,), changed=True)


def _reject(t: _Turn, reason: str) -> Outcome:
    latest = t.session.latest
    if not isinstance(reason, str):
        raise ValidationError(f"a rejection's reason is a str, not {reason!r}", field="reason")
    if latest.proposer == t.agent_id:
        raise t.not_allowed("own_proposal", f"proposal {latest.id} is its own")
    new = _move(t.session, _S.REJECTED, t.now, ended_by=t.agent_id, reason=reason)
    event = t.event(new, "negotiation.rejected", proposal_id=latest.id, reason=reason)
    return Outcome(new, (event,), changed=True)


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

    def __init__(self, outcome: Outcome, error: ConvergeError) -> None:
        self.outcome = outcome
        self.error = error


def _run(t: _Turn, body: Callable[[_Turn], Outcome]) -> Outcome:
    """Check what every act checks, in order (who acts, the state, the deadline, the proposal
    named), then run ``body``; turn any refusal into an ``Outcome`` with its events."""
    session = t.session
    try:
        if not isinstance(t.agent_id, str) or not t.agent_id:
            raise ValidationError(f"invalid agent id {t.agent_id!r}", field="agent_id")
        if t.agent_id not in session.parties:
            raise t.not_allowed("not_a_party", "it is not a party")
        target = _TARGET[t.act]
        if target not in NEGOTIATION_TRANSITIONS[session.state]:
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
) -> Outcome:
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
    return Outcome(session, (*before, event), changed=bool(before), error=exc)


def _expired(session: NegotiationSession, now: float, actor: str) -> Outcome:
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
    return Outcome(new, (event,), changed=True)


def _due(session: NegotiationSession, now: float) -> bool:
    return session.deadline is not None and now >= session.deadline


def _move(
    session: NegotiationSession, target: NegotiationState, now: float, **changes: Any
) -> NegotiationSession:
    """``session`` moved to ``target``; the one place a state changes, checked by the table."""
    if target not in NEGOTIATION_TRANSITIONS[session.state]:
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
