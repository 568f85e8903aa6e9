"""The ballot state machine, pure.

A ballot, the voter, the option and ``now`` in; the new ballot (or a typed refusal) out. No
I/O, no clock. How a ballot is decided lives in ``_tally``; ``close`` takes the final tally from
there.

A ballot is OPEN until it is closed (by its opener, at its deadline, or when a vote settles
it), then CLOSED for good with its final ``BallotResult``. While OPEN each eligible voter has at
most one counted vote: a second one replaces the first or is refused, as the ballot says. One
table, ``_BALLOT_TRANSITIONS``: OPEN -> OPEN (a vote) or CLOSED.

``cast`` checks a closed ballot before the deadline: a vote on a ballot closed at its deadline is
``BallotClosed`` too (when, how and with what outcome it closed: the common case is a vote that
comes after another settled the ballot); one past the deadline of a ballot not yet closed is
``VoteAfterDeadline``; one for an unknown option a ``ValidationError``. A voter's runtime records
either refusal as ``decision.failed`` (``error_type`` the class), in the trace of the request
it answered.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import Literal

import msgspec

from converge.coordination._due import due_key
from converge.errors import (
    BallotClosed,
    BallotRefused,
    ConvergeError,
    InvalidTransition,
    ValidationError,
    VoteAfterDeadline,
)

__all__ = [
    "DUE_PREFIX",
    "REVOTE_POLICIES",
    "RULES",
    "Ballot",
    "BallotResult",
    "BallotState",
    "CastVote",
    "CloseCause",
    "Revote",
    "Rule",
    "Tally",
    "TieBreak",
    "ballot_key",
    "cast",
    "check_ballot_id",
    "check_ballot_transition",
    "close",
    "due_ballot_key",
    "open_ballot",
    "refusal_code",
]

Rule = Literal["majority", "plurality", "trust_weighted", "quorum", "unanimity"]
"""How a ballot is decided."""
Revote = Literal["replace", "refuse"]
"""What a voter's second vote does."""
TieBreak = Literal["first_option"]
"""How a tie at the top is broken (None: it is not, and nothing is decided)."""
CloseCause = Literal["opener", "deadline", "settled"]
"""Why a ballot closed: its opener closed it, its deadline passed, or its outcome could no
longer change."""

RULES: frozenset[str] = frozenset(
    ("majority", "plurality", "trust_weighted", "quorum", "unanimity")
)
"""Every rule."""
REVOTE_POLICIES: frozenset[str] = frozenset(("replace", "refuse"))
"""Every revote policy."""
DUE_PREFIX = "ballot-due/"
"""The prefix of the deadline index (``ballot-due/<deadline>/<ballot id>``)."""


class BallotState(enum.StrEnum):
    """Where a ballot is in its life."""

    OPEN = "open"
    """Taking votes."""
    CLOSED = "closed"
    """Its result is final. Terminal."""


_S = BallotState
_BALLOT_TRANSITIONS: dict[BallotState, frozenset[BallotState]] = {
    _S.OPEN: frozenset({_S.OPEN, _S.CLOSED}),  # OPEN -> OPEN: a vote
    _S.CLOSED: frozenset(),
}
"""Every allowed move: ``_BALLOT_TRANSITIONS[a]`` is the set of states ``a`` may move to."""


def check_ballot_transition(
    current: BallotState, target: BallotState, subject: str | None = None
) -> None:
    """Raise ``InvalidTransition`` unless ``current -> target`` is in ``_BALLOT_TRANSITIONS``."""
    if target not in _BALLOT_TRANSITIONS[current]:
        raise InvalidTransition(current, target, subject=subject)


# -- refusals ----------------------------------------------------------------------------------


def refusal_code(exc: ConvergeError) -> str:
    """The machine-readable code of a refusal."""
    if isinstance(exc, (BallotRefused, VoteAfterDeadline, BallotClosed)):
        return exc.reason
    if isinstance(exc, InvalidTransition):
        return "closed"
    if isinstance(exc, ValidationError):
        return "unknown_option" if exc.field == "option" else f"invalid_{exc.field or 'input'}"
    return "refused"  # pragma: no cover - cast raises only the errors above


# -- data --------------------------------------------------------------------------------------


class CastVote(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One voter's counted vote."""

    voter: str
    """The voter's did."""
    option: str
    """The option chosen."""
    at: float
    """When it was cast (the latest replacement's time)."""
    revision: int = 0
    """0 for a first vote, +1 for each replacement (``revote="replace"``)."""


class Tally(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The support of one option."""

    count: int
    """Votes for it."""
    weight: float | None = None
    """The voters' total trust (``trust_weighted`` only)."""


class BallotResult(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """What a ballot came to (or comes to so far, when not ``final``)."""

    ballot_id: str
    """The ballot."""
    rule: Rule
    """The rule applied."""
    decided: bool
    """Whether an option carried."""
    winner: str | None
    """The option that carried, when decided."""
    reason: str
    """Why it was (or was not) decided, in words."""
    tallies: dict[str, Tally]
    """Support per option, every option in the ballot's order."""
    eligible: int
    """How many voters were eligible."""
    voted: tuple[str, ...]
    """The voters whose votes were counted, sorted."""
    quorum_met: bool
    """Whether at least ``quorum`` voters voted (True without a quorum)."""
    quorum: int | None = None
    """The ballot's quorum."""
    threshold: float | None = None
    """An option needs strictly more support than this: half the eligible voters (majority) or
    half their total trust (trust_weighted); None for the other rules."""
    total_trust: float | None = None
    """The eligible voters' total trust (``trust_weighted`` only)."""
    trust: dict[str, float] | None = None
    """Each eligible voter's weight as used (``trust_weighted`` only), so the result can be
    checked later whatever the scores have become."""
    final: bool = False
    """True for the result of a closed ballot."""


class Ballot(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A question put to named voters. Change it only through this module's functions."""

    id: str
    """Unique id; the store key is ``ballot/<id>``."""
    question: str
    """What is asked."""
    options: tuple[str, ...]
    """The options, distinct; a vote for anything else is refused. Their order breaks ties
    under ``tie_break="first_option"``."""
    voters: tuple[str, ...]
    """The eligible voters' dids, distinct; anyone else's vote is refused."""
    rule: Rule
    """How the ballot is decided."""
    opener: str
    """The did that opened it, the only one that may close it before its deadline."""
    trace_id: str
    """The trace its events belong to (the ballot id unless the opener named one)."""
    created_at: float
    """When it was opened."""
    updated_at: float
    """When it last changed."""
    deadline: float | None = None
    """Votes at or after this time are refused and the ballot is due to close; None: none."""
    quorum: int | None = None
    """The fewest voters for a result to count (every rule); None: no quorum."""
    revote: Revote = "refuse"
    """What a second vote by the same voter does: replace the first, or be refused."""
    tie_break: TieBreak | None = None
    """``"first_option"``: a tie at the top goes to the option listed first; None: no decision."""
    state: BallotState = BallotState.OPEN
    """Where it is in its life."""
    votes: tuple[CastVote, ...] = ()
    """The counted votes, one per voter, in the order first cast."""
    closed_at: float | None = None
    """When it closed."""
    closed_by: str | None = None
    """Who closed it: the opener, the voter whose vote settled it, or "" for the deadline."""
    close_cause: CloseCause | None = None
    """Why it closed."""
    result: BallotResult | None = None
    """The final result, once CLOSED."""

    @property
    def is_closed(self) -> bool:
        """Whether the ballot is CLOSED."""
        return self.state is BallotState.CLOSED

    def choice_of(self, voter: str) -> str | None:
        """The option ``voter`` chose, or None."""
        return next((v.option for v in self.votes if v.voter == voter), None)

    def choices(self) -> dict[str, str]:
        """Voter -> option for every counted vote."""
        return {v.voter: v.option for v in self.votes}

    def due(self, now: float) -> bool:
        """Whether the deadline is at or before ``now``."""
        return self.deadline is not None and now >= self.deadline


# -- opening, voting, closing ------------------------------------------------------------------


def open_ballot(
    *,
    ballot_id: str,
    opener: str,
    question: str,
    options: Sequence[str],
    voters: Sequence[str],
    now: float,
    rule: str = "majority",
    deadline: float | None = None,
    quorum: int | None = None,
    revote: str = "refuse",
    tie_break: str | None = None,
    trace_id: str | None = None,
) -> Ballot:
    """A new OPEN ballot.

    Raises:
        ValidationError: a bad id, question, option or voter list (empty, repeated, not
            strings), rule, revote policy, tie rule, quorum (not in 1..number of voters, or
            missing under the ``quorum`` rule) or deadline (not after ``now``); the field is
            named.
    """
    _text(ballot_id, "ballot_id")
    _text(opener, "opener")
    if not isinstance(question, str):
        raise ValidationError(f"question is a str, not {question!r}", field="question")
    opts = _distinct(options, "options")
    electorate = _distinct(voters, "voters")
    if rule not in RULES:
        raise ValidationError(
            f"unknown rule {rule!r}; one of {', '.join(sorted(RULES))}", field="rule"
        )
    if revote not in REVOTE_POLICIES:
        raise ValidationError(f"revote is 'replace' or 'refuse', not {revote!r}", field="revote")
    if tie_break not in (None, "first_option"):
        raise ValidationError(
            f"tie_break is None or 'first_option', not {tie_break!r}", field="tie_break"
        )
    if quorum is not None and (
        isinstance(quorum, bool)
        or not isinstance(quorum, int)
        or not 1 <= quorum <= len(electorate)
    ):
        raise ValidationError(
            f"quorum is an int from 1 to the {len(electorate)} eligible voters, not {quorum!r}",
            field="quorum",
        )
    if rule == "quorum" and quorum is None:
        raise ValidationError("the quorum rule needs a quorum", field="quorum")
    if deadline is not None:
        deadline = _deadline(deadline, now)
    return msgspec.convert(
        {
            "id": ballot_id,
            "question": question,
            "options": opts,
            "voters": electorate,
            "rule": rule,
            "opener": opener,
            "trace_id": _text(trace_id, "trace_id") if trace_id is not None else ballot_id,
            "created_at": now,
            "updated_at": now,
            "deadline": deadline,
            "quorum": quorum,
            "revote": revote,
            "tie_break": tie_break,
        },
        Ballot,
    )


def cast(ballot: Ballot, voter: str, option: str, now: float) -> Ballot:
    """``voter`` votes for ``option``; returns the ballot with the vote counted.

    Checks, in order: who votes, the state, the deadline, the option, a previous vote.

    Raises:
        ValidationError: ``voter`` is not a non-empty str (``field="voter"``), or ``option`` is
            not one of the ballot's options (``field="option"``).
        BallotRefused: the voter is not eligible (``reason="not_eligible"``), or voted already
            and the ballot refuses second votes (``"already_voted"``).
        BallotClosed: the ballot is CLOSED (when, why and with what outcome).
        VoteAfterDeadline: ``now`` is at or after the deadline.
    """
    _text(voter, "voter")
    if voter not in ballot.voters:
        raise BallotRefused(
            f"{voter} is not an eligible voter of ballot {ballot.id}",
            ballot_id=ballot.id,
            agent_id=voter,
            act="vote",
            reason="not_eligible",
        )
    if ballot.is_closed:
        assert ballot.closed_at is not None and ballot.close_cause is not None
        final = ballot.result
        winner = final.winner if final is not None and final.decided else None
        raise BallotClosed(ballot.id, voter, ballot.closed_at, ballot.close_cause, winner)
    check_ballot_transition(ballot.state, _S.OPEN, ballot.id)
    if ballot.due(now):
        assert ballot.deadline is not None
        raise VoteAfterDeadline(ballot.id, voter, ballot.deadline, now)
    if not isinstance(option, str) or option not in ballot.options:
        raise ValidationError(
            f"{option!r} is not an option of ballot {ballot.id} "
            f"({', '.join(map(repr, ballot.options))})",
            field="option",
        )
    index = next((i for i, v in enumerate(ballot.votes) if v.voter == voter), None)
    if index is None:
        votes = (*ballot.votes, CastVote(voter, option, now))
    elif ballot.revote == "refuse":
        raise BallotRefused(
            f"{voter} already voted on ballot {ballot.id} "
            f"({ballot.votes[index].option!r}), which refuses second votes",
            ballot_id=ballot.id,
            agent_id=voter,
            act="vote",
            reason="already_voted",
        )
    else:
        before = ballot.votes[index]
        replaced = CastVote(voter, option, now, before.revision + 1)
        votes = (*ballot.votes[:index], replaced, *ballot.votes[index + 1 :])
    return msgspec.structs.replace(ballot, votes=votes, updated_at=now)


def close(
    ballot: Ballot, result: BallotResult, *, now: float, cause: CloseCause, actor: str = ""
) -> Ballot:
    """The ballot CLOSED with ``result`` (its tally, ``tally(ballot, …)``) as its final result.

    Raises:
        InvalidTransition: the ballot is already CLOSED.
        ValidationError: ``result`` is not a tally of this ballot's votes.
    """
    check_ballot_transition(ballot.state, _S.CLOSED, ballot.id)
    if result.ballot_id != ballot.id or result.voted != tuple(
        sorted(v.voter for v in ballot.votes)
    ):
        raise ValidationError(
            f"the result given is not a tally of ballot {ballot.id}'s votes", field="result"
        )
    return msgspec.structs.replace(
        ballot,
        state=_S.CLOSED,
        updated_at=now,
        closed_at=now,
        closed_by=actor,
        close_cause=cause,
        result=msgspec.structs.replace(result, final=True),
    )


# -- checks ------------------------------------------------------------------------------------


def _text(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{field} must be a non-empty str, not {value!r}", field=field)
    return value


def _distinct(values: object, field: str) -> tuple[str, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (tuple, list)):
        raise ValidationError(f"{field} is a list of str, not {values!r}", field=field)
    if not values:
        raise ValidationError(f"{field} must not be empty", field=field)
    for i, value in enumerate(values):
        _text(value, f"{field}[{i}]")
    if len(set(values)) != len(values):
        raise ValidationError(f"{field} must be distinct", field=field)
    return tuple(values)


def _deadline(deadline: object, now: float) -> float:
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


def check_ballot_id(ballot_id: object) -> str:
    """``ballot_id`` if it is a non-empty str, else raise ``ValidationError``."""
    if not isinstance(ballot_id, str) or not ballot_id:
        raise ValidationError(f"invalid ballot id {ballot_id!r}", field="ballot_id")
    return ballot_id


# -- keys --------------------------------------------------------------------------------------


def ballot_key(ballot_id: str) -> str:
    """Where a ballot is stored."""
    return f"ballot/{ballot_id}"


def due_ballot_key(ballot: Ballot) -> str:
    """The deadline index key of a ballot that has a deadline."""
    assert ballot.deadline is not None
    return due_key(DUE_PREFIX, ballot.deadline, ballot.id)
