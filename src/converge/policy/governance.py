"""Governance models: how a pool decides a dispute among its members.

A pool's ``governance`` spec is plain data naming a model by ``kind``::

    {"kind": "democratic"}                       # a choice backed by more than half the members
    {"kind": "dictatorial", "leader": "did:…"}   # the leader's vote decides
    {"kind": "trust_weighted"}                   # more than half the members' total trust
    {"kind": "threshold", "fraction": 0.66}      # at least that fraction of the members

An empty spec means democratic. The majority is of the **members**, not of the votes cast: a
member who does not vote does not support any choice, so a dispute cannot be carried by a
handful of voters in a large pool. Votes from non-members are ignored (and listed). Ties never
decide. Under ``trust_weighted`` a member whose score is unknown weighs ``default_trust`` (0.5).
``decide(model, question, votes, members, trust)`` is pure: the pool manager supplies the
members and their trust scores and records the outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Annotated, Any

import msgspec

from converge.core.codec_errors import validation_error

__all__ = [
    "Democratic",
    "Dictatorial",
    "DisputeOutcome",
    "GovernanceModel",
    "Threshold",
    "TrustWeighted",
    "decide",
    "governance_spec",
    "parse_governance",
]


class _Spec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind"):
    pass


class Democratic(_Spec, frozen=True, tag="democratic"):
    """A choice wins with votes from more than half of the members."""


class Dictatorial(_Spec, frozen=True, tag="dictatorial"):
    """The leader's vote decides; without it, nothing is decided."""

    leader: str
    """The did of the leader."""


class TrustWeighted(_Spec, frozen=True, tag="trust_weighted"):
    """Each vote weighs the voter's trust; a choice wins with more than half of the members'
    total trust."""

    default_trust: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.5
    """The weight of a member whose trust score is not known."""


class Threshold(_Spec, frozen=True, tag="threshold"):
    """A choice wins with votes from at least ``fraction`` of the members."""

    fraction: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)]
    """The share of members needed, in (0, 1]."""


GovernanceModel = Democratic | Dictatorial | TrustWeighted | Threshold
"""Any governance model."""


class DisputeOutcome(msgspec.Struct, frozen=True):
    """What a dispute came to."""

    question: str
    """What was asked."""
    decided: bool
    """Whether a choice carried."""
    decision: str | None
    """The winning choice, when decided."""
    tallies: dict[str, float]
    """Support per choice: member votes, or trust for ``trust_weighted``."""
    needed: float
    """The support a choice needed to carry (strictly more than this for majorities)."""
    reason: str
    """Why it was (or was not) decided, in words."""
    ignored: tuple[str, ...] = ()
    """Voters who are not members, whose votes were not counted."""


def parse_governance(spec: Mapping[str, Any] | GovernanceModel | None) -> GovernanceModel:
    """The model a spec describes (an empty or None spec is democratic).

    Raises:
        ValidationError: an unknown ``kind`` or a bad field, named.
    """
    if spec is None or (isinstance(spec, Mapping) and not spec):
        return Democratic()
    if isinstance(spec, _Spec):
        return spec
    try:
        model: GovernanceModel = msgspec.convert(spec, GovernanceModel)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, "governance model") from exc
    return model


def governance_spec(model: GovernanceModel) -> dict[str, Any]:
    """The plain-data spec of ``model`` (what a pool stores)."""
    spec: dict[str, Any] = msgspec.to_builtins(model)
    return spec


def decide(
    model: GovernanceModel,
    question: str,
    votes: Mapping[str, str],
    members: Collection[str],
    trust: Mapping[str, float] | None = None,
) -> DisputeOutcome:
    """Apply ``model`` to ``votes`` (voter did -> choice) among ``members``.

    Args:
        model: the pool's governance model.
        question: what is being decided (recorded in the outcome).
        votes: each voter's choice; non-members' votes are ignored.
        members: the pool's members at the time of the dispute.
        trust: trust scores by did, for ``trust_weighted``.
    """
    member_set = frozenset(members)
    counted = {voter: choice for voter, choice in votes.items() if voter in member_set}
    ignored = tuple(sorted(v for v in votes if v not in member_set))
    decision, tallies, needed, reason = _apply(model, counted, member_set, trust or {})
    return DisputeOutcome(
        question=question,
        decided=decision is not None,
        decision=decision,
        tallies=tallies,
        needed=needed,
        reason=reason,
        ignored=ignored,
    )


_Verdict = tuple[str | None, dict[str, float], float, str]


def _apply(
    model: GovernanceModel,
    votes: Mapping[str, str],
    members: frozenset[str],
    trust: Mapping[str, float],
) -> _Verdict:
    if isinstance(model, Dictatorial):
        tallies = _count(votes, lambda _voter: 1.0)
        if model.leader not in members:
            return None, tallies, 1.0, f"the leader {model.leader} is not a member"
        choice = votes.get(model.leader)
        if choice is None:
            return None, tallies, 1.0, "the leader has not voted"
        return choice, tallies, 1.0, "the leader decided"
    if isinstance(model, TrustWeighted):

        def weight(voter: str) -> float:
            return max(0.0, min(1.0, trust.get(voter, model.default_trust)))

        total = sum(weight(m) for m in members)
        return _majority(_count(votes, weight), total / 2, strict=True, unit="trust")
    tallies = _count(votes, lambda _voter: 1.0)
    if isinstance(model, Threshold):
        return _majority(tallies, model.fraction * len(members), strict=False, unit="votes")
    return _majority(tallies, len(members) / 2, strict=True, unit="votes")


def _count(votes: Mapping[str, str], weight: Callable[[str], float]) -> dict[str, float]:
    tallies: dict[str, float] = {}
    for voter, choice in votes.items():
        tallies[choice] = tallies.get(choice, 0.0) + weight(voter)
    return dict(sorted(tallies.items(), key=lambda kv: (-kv[1], kv[0])))


def _majority(tallies: dict[str, float], needed: float, *, strict: bool, unit: str) -> _Verdict:
    if not tallies:
        return None, tallies, needed, "no member voted"
    ranked = list(tallies.items())
    best, support = ranked[0]
    if len(ranked) > 1 and ranked[1][1] == support:
        tied = ", ".join(c for c, s in ranked if s == support)
        return None, tallies, needed, f"tie between {tied}"
    # Threshold compares with a tolerance: 0.66 * 3 members must be met by 2 votes (1.98).
    carried = support > needed if strict else support >= needed - 1e-9
    word = "more than" if strict else "at least"
    if carried:
        return best, tallies, needed, f"{best!r} has {support:g} {unit}, {word} {needed:g}"
    return None, tallies, needed, f"{best!r} has {support:g} {unit}; it needs {word} {needed:g}"
