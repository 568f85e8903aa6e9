"""How a ballot is decided, pure.

How a ballot is decided, pure: ``tally`` turns a ballot and trust scores into a
``BallotResult``; ``is_settled`` says whether any vote still allowed could change it.

Rules (``Ballot.rule``):

- ``majority``: an option needs votes from more than half of the **eligible** voters, not of
  the votes cast: an absent voter supports nothing, so a handful of voters cannot carry a large
  electorate (as pool governance decides disputes).
- ``plurality``: the option with the most votes cast wins.
- ``trust_weighted``: each vote weighs the voter's trust score (clamped to [0, 1]); an option
  needs more than half of the eligible voters' total trust.
- ``quorum``: plurality, but only when at least ``quorum`` voters voted.
- ``unanimity``: every eligible voter voted, all for the same option.

A ballot's ``quorum`` applies under every rule (``quorum`` requires one). Ties never decide,
except that ``tie_break="first_option"`` gives a tie at the top to the option listed first —
under plurality and quorum only: under majority and trust_weighted two options tied at the top
can never both hold more than half, and unanimity has no ties. ``majority`` and ``plurality``
are the same rules over a plain mapping of votes (seed 001: "majority and plurality voting").
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

from converge.coordination._ballot import Ballot, BallotResult, Tally, TieBreak
from converge.errors import ValidationError

__all__ = ["DEFAULT_TRUST", "is_settled", "majority", "plurality", "tally"]

DEFAULT_TRUST = 0.5
"""The weight of an eligible voter missing from the trust scores given to ``tally``."""


def is_settled(ballot: Ballot, result: BallotResult) -> bool:
    """Whether no vote still allowed can change ``result`` (the ballot's current tally).

    Under ``revote="replace"`` any vote may change, so only a CLOSED ballot is settled. Under
    ``"refuse"``: every eligible voter voted; or majority is decided (quorum met, more than half
    of the eligible voters) or out of reach even if every remaining voter joined the leader;
    trust_weighted is decided; plurality and quorum are decided with the quorum met and a lead
    larger than the voters still to vote; unanimity is broken (two options chosen). Sound, not
    complete: a ballot that is not settled may still be unable to change.
    """
    if ballot.is_closed:
        return True
    if ballot.revote == "replace":
        return False
    remaining = len(ballot.voters) - len(ballot.votes)
    if remaining == 0:
        return True
    counts = sorted((t.count for t in result.tallies.values()), reverse=True)
    if ballot.rule == "unanimity":
        return len({v.option for v in ballot.votes}) > 1
    if ballot.rule == "majority":
        # Integer counts: exact. "Out of reach" holds whatever the quorum does.
        return result.decided or 2 * (counts[0] + remaining) <= len(ballot.voters)
    if ballot.rule == "trust_weighted":
        # The winner's weight and the total do not move as others vote (scores as given).
        return result.decided
    second = counts[1] if len(counts) > 1 else 0
    return result.decided and result.quorum_met and counts[0] - second > remaining


# -- tally -------------------------------------------------------------------------------------


def tally(ballot: Ballot, trust_scores: Mapping[str, float] | None = None) -> BallotResult:
    """The result of the votes counted so far (``final`` when the ballot is CLOSED).

    A closed ballot's own ``result`` is authoritative: it froze the trust scores at closing.

    Args:
        ballot: the ballot.
        trust_scores: trust by did, in [0, 1], for ``trust_weighted`` (required there); an
            eligible voter missing from it weighs ``DEFAULT_TRUST``.

    Raises:
        ValidationError: ``trust_weighted`` without trust scores, or a score that is not a
            finite number.
    """
    n = len(ballot.voters)
    counts = dict.fromkeys(ballot.options, 0)
    for v in ballot.votes:
        counts[v.option] += 1
    voted = tuple(sorted(v.voter for v in ballot.votes))
    quorum_met = ballot.quorum is None or len(voted) >= ballot.quorum
    support: dict[str, float] = {o: float(c) for o, c in counts.items()}
    trust: dict[str, float] | None = None
    total: float | None = None
    threshold: float | None = None
    if ballot.rule == "trust_weighted":
        trust = _weights(ballot.voters, trust_scores)
        # fsum is exact then rounded once: the same voters give the same weight in any order,
        # so equal supports compare equal (a tie) whatever order the votes came in.
        support = {
            o: math.fsum(trust[v.voter] for v in ballot.votes if v.option == o)
            for o in ballot.options
        }
        total = math.fsum(trust.values())
        threshold = total / 2
    elif ballot.rule == "majority":
        threshold = n / 2
    winner, reason = _decide(ballot, counts, support, threshold, len(voted), quorum_met)
    tallies = {
        o: Tally(counts[o], support[o] if ballot.rule == "trust_weighted" else None)
        for o in ballot.options
    }
    return BallotResult(
        ballot_id=ballot.id,
        rule=ballot.rule,
        decided=winner is not None,
        winner=winner,
        reason=reason,
        tallies=tallies,
        eligible=n,
        voted=voted,
        quorum_met=quorum_met,
        quorum=ballot.quorum,
        threshold=threshold,
        total_trust=total,
        trust=trust,
        final=ballot.is_closed,
    )


def _decide(
    ballot: Ballot,
    counts: Mapping[str, int],
    support: Mapping[str, float],
    threshold: float | None,
    voted: int,
    quorum_met: bool,
) -> tuple[str | None, str]:
    n = len(ballot.voters)
    if voted == 0:
        return None, "no votes cast"
    if not quorum_met:
        return None, f"quorum not met: {voted} voted, {ballot.quorum} needed"
    weighted = ballot.rule == "trust_weighted"
    unit = "trust" if weighted else "votes"
    if ballot.rule == "unanimity":
        chosen = [o for o in ballot.options if counts[o]]
        if len(chosen) > 1:
            split = ", ".join(f"{o!r} ({counts[o]})" for o in chosen)
            return None, f"unanimity broken: votes for {split}"
        if voted < n:
            return None, f"not unanimous yet: {n - voted} of {n} eligible voters have not voted"
        return chosen[0], f"all {n} eligible voters chose {chosen[0]!r}"
    # Options by support, then by their order in the ballot (what first_option relies on).
    ranked = sorted(ballot.options, key=lambda o: -support[o])
    best = ranked[0]
    tied = [o for o in ranked if support[o] == support[best]]
    if len(tied) > 1:
        names = " and ".join(map(repr, tied))
        text = f"tie between {names} ({support[best]:g} {unit} each)"
        if ballot.tie_break == "first_option" and threshold is None:
            return best, f"{text}, broken in favour of the first listed, {best!r}"
        if threshold is not None:
            text += f"; an option needs more than {threshold:g}"
        return None, text
    if threshold is None:  # plurality, quorum
        runner_up = f", ahead of {support[ranked[1]]:g}" if len(ranked) > 1 else ""
        return best, f"{best!r} has the most votes: {support[best]:g}{runner_up}"
    whole = f"{threshold * 2:g} total trust" if weighted else f"{n} eligible voters"
    if support[best] > threshold:
        return best, f"{best!r} has {support[best]:g} {unit}, more than half of {whole}"
    return (
        None,
        f"no majority: {best!r} has {support[best]:g} {unit}, not more than half of {whole}",
    )


def _weights(voters: Sequence[str], scores: Mapping[str, float] | None) -> dict[str, float]:
    if scores is None:
        raise ValidationError(
            "a trust_weighted ballot is tallied with trust scores", field="trust_scores"
        )
    weights: dict[str, float] = {}
    for voter in voters:
        raw = scores.get(voter, DEFAULT_TRUST)
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise ValidationError(
                f"the trust score of {voter} is not a finite number: {raw!r}",
                field=f"trust_scores[{voter}]",
            )
        weights[voter] = min(1.0, max(0.0, float(raw)))
    return weights


# -- convenience (seed 001: "majority and plurality voting") ------------------------------------


def majority(votes: Mapping[str, str], *, eligible: Collection[str] | None = None) -> str | None:
    """The choice of more than half of the voters, or None.

    Args:
        votes: voter -> choice.
        eligible: the electorate; only their votes count, and the majority is of all of them
            (absent voters support nothing). None: the voters in ``votes``.
    """
    if eligible is not None:
        electorate = frozenset(eligible)
        votes = {v: c for v, c in votes.items() if v in electorate}
        n = len(electorate)
    else:
        n = len(votes)
    counts = _counts(votes)
    best = max(counts, key=counts.__getitem__, default=None)
    return best if best is not None and 2 * counts[best] > n else None


def plurality(
    votes: Mapping[str, str],
    *,
    tie_break: TieBreak | None = None,
    options: Sequence[str] = (),
) -> str | None:
    """The choice with the most votes, or None when there are none or a tie at the top.

    Args:
        votes: voter -> choice.
        tie_break: ``"first_option"``: a tie goes to the choice listed first in ``options``
            (choices not listed come after, in the order first voted for).
        options: the order ``tie_break`` uses.
    """
    counts = _counts(votes)
    if not counts:
        return None
    top = max(counts.values())
    tied = [c for c, n in counts.items() if n == top]
    if len(tied) == 1:
        return tied[0]
    if tie_break != "first_option":
        return None
    order = {o: i for i, o in enumerate(options)}
    # sorted() is stable: unlisted choices keep the order in which they were first voted for.
    return sorted(tied, key=lambda c: order.get(c, len(order)))[0]


def _counts(votes: Mapping[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for choice in votes.values():
        counts[choice] = counts.get(choice, 0) + 1
    return counts
