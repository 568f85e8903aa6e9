"""Consensus: every rule's winner, ties, quorum, one vote per agent, deadlines, early closing,
refusals as events, races, persistence, and properties of the pure tally."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converge.coordination import _ballot as core
from converge.coordination.consensus import (
    Ballot,
    BallotClosed,
    BallotRefused,
    BallotResult,
    BallotState,
    Consensus,
    VoteAfterDeadline,
    cast,
    is_settled,
    majority,
    plurality,
    tally,
)
from converge.core.clip import MAX_TEXT_CHARS, clip
from converge.core.clock import ManualClock
from converge.errors import (
    ConvergeError,
    InvalidTransition,
    PolicyViolation,
    StateError,
    ValidationError,
)
from converge.protocol.event import Event
from converge.store import SQLiteStore, Store

OPENER = "did:key:z6MkOpener"
V = tuple(f"did:key:z6MkV{i:02d}" for i in range(50))
A, B, C, D, E = V[:5]
OUTSIDER = "did:key:z6MkOutsider"


class FakeTrust:
    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores

    async def score(self, agent_id: str) -> float:
        return self.scores.get(agent_id, 0.5)


@pytest.fixture
def trust() -> FakeTrust:
    return FakeTrust({A: 0.9, B: 0.2, C: 0.3, D: 0.6})


@pytest.fixture
def consensus(store: Store, clock: ManualClock, trust: FakeTrust) -> Consensus:
    return Consensus(store, trust=trust, clock=clock)


async def events(store: Store, ballot: Ballot, kind: str | None = None) -> list[Event]:
    found = await store.read(trace_id=ballot.trace_id)
    return [e for e in found if kind is None or e.kind == kind]


def counts(result: BallotResult) -> dict[str, int]:
    return {option: t.count for option, t in result.tallies.items()}


# -- the rules -------------------------------------------------------------------------------------


async def test_majority_of_the_eligible_closes_the_ballot_when_reached(
    consensus: Consensus, store: Store
) -> None:
    ballot = await consensus.open(OPENER, "Ship it?", ["yes", "no"], V[:5], trace_id="t-1")
    await consensus.vote(A, ballot.id, "yes")
    await consensus.vote(B, ballot.id, "no")
    await consensus.vote(C, ballot.id, "yes")
    so_far = await consensus.result(ballot.id)
    assert (so_far.decided, so_far.final, counts(so_far)) == (False, False, {"yes": 2, "no": 1})
    assert so_far.threshold == 2.5 and so_far.voted == tuple(sorted((A, B, C)))
    assert so_far.reason.startswith("no majority: 'yes' has 2 votes")
    closed = await consensus.vote(D, ballot.id, "yes")  # 3 of 5 eligible: more than half
    assert (closed.state, closed.close_cause, closed.closed_by) == (
        BallotState.CLOSED,
        "settled",
        D,
    )
    result = await consensus.result(ballot.id)
    assert result == closed.result
    assert (result.decided, result.winner, result.final) == (True, "yes", True)
    assert (counts(result), result.eligible, len(result.voted)) == ({"yes": 3, "no": 1}, 5, 4)
    # A late vote on the ballot that closed itself: refused as BallotClosed, saying when and
    # how it closed (an InvalidTransition CLOSED -> OPEN still, for those who catch that).
    with pytest.raises(BallotClosed) as late:
        await consensus.vote(E, ballot.id, "no")
    assert isinstance(late.value, InvalidTransition)
    assert (late.value.from_state, late.value.to_state) == (BallotState.CLOSED, BallotState.OPEN)
    assert (late.value.ballot_id, late.value.agent_id) == (ballot.id, E)
    assert (late.value.closed_at, late.value.cause, late.value.outcome) == (
        closed.closed_at,
        "settled",
        "yes",
    )
    assert str(late.value) == (
        f"ballot {ballot.id} closed at 2027-01-15T08:00:00.000000Z (a vote settled it) with "
        f"outcome 'yes': {E}'s vote is not counted"
    )
    assert "closed -> open" not in str(late.value)
    kinds = [e.kind for e in await events(store, ballot)]
    assert kinds == ["ballot.opened"] + ["ballot.voted"] * 4 + ["ballot.closed", "ballot.refused"]
    [refusal] = await events(store, ballot, "ballot.refused")
    assert refusal.data["reason"] == str(late.value)
    assert (refusal.data["code"], refusal.data["error"]) == ("closed", "BallotClosed")
    [closed_event] = await events(store, ballot, "ballot.closed")
    assert closed_event.data["cause"] == "settled"
    assert closed_event.data["result"]["winner"] == "yes"
    assert closed_event.data["result"]["tallies"]["yes"] == {"count": 3}


async def test_majority_needs_the_eligible_where_plurality_needs_only_the_most(
    consensus: Consensus,
) -> None:
    votes = {A: "red", B: "red", C: "blue"}  # 5 eligible, 3 voted
    results = {}
    for rule in ("majority", "plurality"):
        ballot = await consensus.open(OPENER, "Colour?", ["red", "blue"], V[:5], rule=rule)
        for voter, option in votes.items():
            await consensus.vote(voter, ballot.id, option)
        assert not (await consensus.get(ballot.id) or ballot).is_closed  # nothing settled yet
        results[rule] = await consensus.close(ballot.id, actor=OPENER)
    assert counts(results["majority"]) == counts(results["plurality"]) == {"red": 2, "blue": 1}
    assert not results["majority"].decided
    assert "not more than half of 5 eligible voters" in results["majority"].reason
    assert (results["plurality"].decided, results["plurality"].winner) == (True, "red")
    assert results["plurality"].threshold is None


async def test_trust_weighted_counts_trust_not_heads(
    consensus: Consensus, trust: FakeTrust
) -> None:
    # A 0.9, B 0.2, C 0.3: total 1.4, so an option needs more than 0.7.
    ballot = await consensus.open(OPENER, "Who?", ["x", "y"], [A, B, C], rule="trust_weighted")
    await consensus.vote(B, ballot.id, "y")
    await consensus.vote(C, ballot.id, "y")
    so_far = await consensus.result(ballot.id)
    assert counts(so_far) == {"x": 0, "y": 2} and not so_far.decided  # 2 of 3 heads, 0.5 trust
    assert so_far.tallies["y"].weight == pytest.approx(0.5)
    closed = await consensus.vote(A, ballot.id, "x")
    result = closed.result
    assert result is not None and closed.close_cause == "settled"
    assert (result.decided, result.winner) == (True, "x")
    assert result.tallies["x"].weight == pytest.approx(0.9)
    assert result.total_trust == pytest.approx(1.4) and result.threshold == pytest.approx(0.7)
    assert result.trust == {A: 0.9, B: 0.2, C: 0.3}
    trust.scores[A] = 0.0  # the closed result froze the scores it was decided with
    assert await consensus.result(ballot.id) == result


async def test_trust_weighted_needs_a_trust_source(store: Store, clock: ManualClock) -> None:
    with pytest.raises(ValidationError) as info:
        await Consensus(store, clock=clock).open(OPENER, "?", ["x"], [A], rule="trust_weighted")
    assert info.value.field == "rule"


async def test_quorum_unmet_decides_nothing(consensus: Consensus, clock: ManualClock) -> None:
    short = await consensus.open(
        OPENER, "?", ["a", "b"], V[:5], rule="quorum", quorum=3, deadline=clock.now() + 60
    )
    met = await consensus.open(OPENER, "?", ["a", "b"], V[:5], rule="quorum", quorum=3)
    for voter in (A, B):
        await consensus.vote(voter, short.id, "a")
    for voter, option in ((A, "a"), (B, "a"), (C, "b")):
        await consensus.vote(voter, met.id, option)
    clock.advance(60)
    [unmet] = await consensus.close_due()
    assert (unmet.ballot_id, unmet.decided, unmet.quorum_met, unmet.quorum) == (
        short.id,
        False,
        False,
        3,
    )
    assert counts(unmet) == {"a": 2, "b": 0}
    assert unmet.reason == "quorum not met: 2 voted, 3 needed"
    carried = await consensus.close(met.id, actor=OPENER)
    assert (carried.decided, carried.winner, carried.quorum_met) == (True, "a", True)


async def test_unanimity_and_its_breaking(consensus: Consensus) -> None:
    agreed = await consensus.open(OPENER, "?", ["go", "stop"], [A, B, C], rule="unanimity")
    broken = await consensus.open(OPENER, "?", ["go", "stop"], [A, B, C], rule="unanimity")
    mind_changers = await consensus.open(
        OPENER, "?", ["go", "stop"], [A, B, C], rule="unanimity", revote="replace"
    )
    for voter in (A, B):
        await consensus.vote(voter, agreed.id, "go")
    assert not (await consensus.result(agreed.id)).decided  # C has not voted
    done = await consensus.vote(C, agreed.id, "go")
    assert done.result is not None
    assert (done.result.decided, done.result.winner) == (True, "go")
    await consensus.vote(A, broken.id, "go")
    ended = await consensus.vote(B, broken.id, "stop")  # can never be unanimous: closes
    assert ended.is_closed and ended.result is not None and not ended.result.decided
    assert ended.result.reason == "unanimity broken: votes for 'go' (1), 'stop' (1)"
    with pytest.raises(InvalidTransition):
        await consensus.vote(C, broken.id, "go")
    await consensus.vote(A, mind_changers.id, "go")
    still = await consensus.vote(B, mind_changers.id, "stop")
    assert not still.is_closed  # under "replace" B may still change its mind
    await consensus.vote(B, mind_changers.id, "go")
    await consensus.vote(C, mind_changers.id, "go")
    assert (await consensus.close(mind_changers.id, actor=OPENER)).winner == "go"


async def test_ties_never_decide_unless_the_ballot_breaks_them(consensus: Consensus) -> None:
    votes = ((A, "a"), (B, "b"), (C, "b"), (D, "a"))
    plain = await consensus.open(OPENER, "?", ["a", "b"], V[:4], rule="plurality")
    first_b = await consensus.open(
        OPENER, "?", ["b", "a"], V[:4], rule="plurality", tie_break="first_option"
    )
    first_a = await consensus.open(
        OPENER, "?", ["a", "b"], V[:4], rule="plurality", tie_break="first_option"
    )
    split = await consensus.open(
        OPENER, "?", ["a", "b"], V[:4], rule="majority", tie_break="first_option"
    )
    last: dict[str, Ballot] = {}
    for ballot in (plain, first_b, first_a, split):
        for voter, option in votes:
            last[ballot.id] = await consensus.vote(voter, ballot.id, option)
    results = {b: last[b.id].result for b in (plain, first_b, first_a, split)}
    assert all(r is not None and r.final for r in results.values())  # all voted: closed
    tie = results[plain]
    assert tie is not None and (tie.decided, tie.winner) == (False, None)
    assert tie.reason == "tie between 'a' and 'b' (2 votes each)"
    assert counts(tie) == {"a": 2, "b": 2}
    assert (r := results[first_b]) is not None and r.winner == "b"
    assert r.reason.startswith("tie between 'b' and 'a'") and r.reason.endswith("'b'")
    assert (r := results[first_a]) is not None and r.winner == "a"
    # Two options tied at the top can never both hold a majority: tie_break changes nothing.
    assert (r := results[split]) is not None and not r.decided
    assert r.reason.startswith("tie between 'a' and 'b' (2 votes each)")


# -- one vote per agent, refusals ------------------------------------------------------------------


async def test_a_second_vote_is_refused_or_replaces_by_configuration(
    consensus: Consensus, store: Store
) -> None:
    strict = await consensus.open(OPENER, "?", ["a", "b"], V[:5])
    lenient = await consensus.open(OPENER, "?", ["a", "b"], V[:5], revote="replace")
    await consensus.vote(A, strict.id, "a")
    with pytest.raises(BallotRefused) as info:
        await consensus.vote(A, strict.id, "b")
    assert (info.value.reason, info.value.agent_id, info.value.act) == ("already_voted", A, "vote")
    assert isinstance(info.value, PolicyViolation)
    assert (await consensus.get(strict.id) or strict).choices() == {A: "a"}
    [refused] = await events(store, strict, "ballot.refused")
    assert (refused.actor, refused.data["voter"], refused.data["code"]) == (A, A, "already_voted")
    assert refused.data["option"] == "b" and "already voted" in refused.data["reason"]

    await consensus.vote(A, lenient.id, "a")
    replaced = await consensus.vote(A, lenient.id, "b")
    assert len(replaced.votes) == 1 and replaced.votes[0].revision == 1
    assert counts(await consensus.result(lenient.id)) == {"a": 0, "b": 1}
    first, second = await events(store, lenient, "ballot.voted")
    assert (first.data["replaced"], second.data["replaced"]) == (False, True)
    assert (second.data["option"], second.data["previous"], second.data["revision"]) == (
        "b",
        "a",
        1,
    )
    assert await events(store, lenient, "ballot.refused") == []


async def test_every_refusal_is_an_event_with_a_reason_and_changes_nothing_else(
    consensus: Consensus, store: Store, clock: ManualClock
) -> None:
    ballot = await consensus.open(OPENER, "?", ["a", "b"], V[:5], deadline=clock.now() + 60)
    closed = await consensus.open(OPENER, "?", ["a", "b"], V[:5])
    await consensus.vote(A, ballot.id, "a")
    await consensus.close(closed.id, actor=OPENER)

    async def refused(
        call: Any, error: type[ConvergeError], code: str, ballot_id: str = ballot.id
    ) -> ConvergeError:
        before = await store.get(f"ballot/{ballot_id}")
        last = await store.last_seq()
        with pytest.raises(error) as info:
            await call
        assert await store.get(f"ballot/{ballot_id}") == before  # same bytes, same version
        [event] = await store.read(after_seq=last)
        assert (event.kind, event.subject, event.data["code"]) == (
            "ballot.refused",
            ballot_id,
            code,
        )
        assert event.data["reason"] == str(info.value) and event.data["error"] == error.__name__
        return info.value

    bad = await refused(consensus.vote(OUTSIDER, ballot.id, "a"), BallotRefused, "not_eligible")
    assert isinstance(bad, BallotRefused) and bad.agent_id == OUTSIDER
    await refused(consensus.vote(A, ballot.id, "b"), BallotRefused, "already_voted")
    unknown = await refused(consensus.vote(B, ballot.id, "c"), ValidationError, "unknown_option")
    assert isinstance(unknown, ValidationError) and unknown.field == "option"
    shut = await refused(consensus.vote(B, closed.id, "a"), BallotClosed, "closed", closed.id)
    assert isinstance(shut, InvalidTransition) and isinstance(shut, BallotClosed)
    assert (shut.ballot_id, shut.agent_id, shut.cause, shut.outcome) == (
        closed.id,
        B,
        "opener",
        None,
    )
    assert "its opener closed it) with outcome none (nothing was decided)" in str(shut)
    not_opener = await refused(consensus.close(ballot.id, actor=B), BallotRefused, "not_opener")
    assert isinstance(not_opener, BallotRefused) and not_opener.act == "close"
    clock.advance(60)
    late = await refused(consensus.vote(B, ballot.id, "a"), VoteAfterDeadline, "after_deadline")
    # The ballot's deadline has passed: a state error, not a replayed or stale message.
    assert isinstance(late, StateError) and isinstance(late, VoteAfterDeadline)
    assert (late.deadline, late.at, late.agent_id) == (clock.now(), clock.now(), B)
    # A ballot that does not exist records nothing.
    last = await store.last_seq()
    with pytest.raises(ValidationError):
        await consensus.vote(A, "no-such-ballot", "a")
    assert await store.last_seq() == last


async def test_a_vote_after_the_deadline_is_refused_and_close_due_closes(
    consensus: Consensus, store: Store, clock: ManualClock
) -> None:
    timed = await consensus.open(OPENER, "?", ["a", "b"], V[:5], deadline=clock.now() + 10)
    later = await consensus.open(OPENER, "?", ["a", "b"], V[:5], deadline=clock.now() + 20)
    endless = await consensus.open(OPENER, "?", ["a", "b"], V[:5])
    await consensus.vote(A, timed.id, "a")
    clock.advance(9.5)
    await consensus.vote(B, timed.id, "a")  # still in time
    clock.advance(0.5)
    with pytest.raises(VoteAfterDeadline):
        await consensus.vote(C, timed.id, "b")
    assert (await consensus.get(timed.id) or timed).state is BallotState.OPEN  # not yet closed
    assert await consensus.close_due(clock.now() - 1) == []
    [result] = await consensus.close_due()
    assert (result.ballot_id, result.final, counts(result)) == (timed.id, True, {"a": 2, "b": 0})
    assert not result.decided  # 2 of 5 eligible is no majority
    assert await consensus.close_due() == []  # closed once
    stored = await consensus.get(timed.id)
    assert stored is not None and (stored.close_cause, stored.closed_by) == ("deadline", "")
    [still_due] = await store.list("ballot-due/")  # the index forgets the closed ballot
    assert still_due.key.endswith(f"/{later.id}")
    assert not (await consensus.get(endless.id) or endless).is_closed
    with pytest.raises(ValidationError) as info:
        await consensus.close_due(12345.0)  # time.monotonic(), not the manager's clock
    assert info.value.field == "now"


async def test_only_the_opener_closes_and_closing_twice_records_once(
    consensus: Consensus, store: Store
) -> None:
    ballot = await consensus.open(OPENER, "?", ["a", "b"], V[:5])
    await consensus.vote(A, ballot.id, "b")
    with pytest.raises(BallotRefused):
        await consensus.close(ballot.id, actor=A)
    result = await consensus.close(ballot.id, actor=OPENER)
    assert (result.final, result.decided, counts(result)) == (True, False, {"a": 0, "b": 1})
    assert await consensus.close(ballot.id, actor=OPENER) == result
    assert len(await events(store, ballot, "ballot.closed")) == 1


async def test_open_refuses_bad_ballots_naming_the_field(
    consensus: Consensus, clock: ManualClock
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"options": []}, "options"),
        ({"options": ["a", "a"]}, "options"),
        ({"voters": [A, A]}, "voters"),
        ({"voters": "did:key:z6MkA"}, "voters"),
        ({"rule": "dictator"}, "rule"),
        ({"rule": "quorum"}, "quorum"),
        ({"quorum": 6}, "quorum"),
        ({"revote": "sometimes"}, "revote"),
        ({"tie_break": "coin"}, "tie_break"),
        ({"deadline": clock.now()}, "deadline"),
    ]
    for change, field in cases:
        args: dict[str, Any] = {"options": ["a", "b"], "voters": list(V[:5]), **change}
        options, voters = args.pop("options"), args.pop("voters")
        with pytest.raises(ValidationError) as info:
            await consensus.open(OPENER, "?", options, voters, **args)
        assert info.value.field == field, change


async def test_opened_event_describes_the_ballot(
    consensus: Consensus, store: Store, clock: ManualClock
) -> None:
    ballot = await consensus.open(
        OPENER, "Lunch?", ("pizza", "salad"), [A, B], rule="quorum", quorum=2,
        deadline=clock.now() + 5, revote="replace", tie_break="first_option",
        ballot_id="lunch", trace_id="day-1",
    )  # fmt: skip
    assert (ballot.id, ballot.trace_id, ballot.voters) == ("lunch", "day-1", (A, B))
    [opened] = await store.read(trace_id="day-1")
    assert (opened.kind, opened.actor, opened.subject) == ("ballot.opened", OPENER, "lunch")
    assert opened.data == {
        "question": "Lunch?",
        "options": ["pizza", "salad"],
        "voters": [A, B],
        "rule": "quorum",
        "deadline": clock.now() + 5,
        "quorum": 2,
        "revote": "replace",
        "tie_break": "first_option",
    }


# -- races and persistence -------------------------------------------------------------------------


async def test_fifty_concurrent_voters_are_all_counted(consensus: Consensus, store: Store) -> None:
    ballot = await consensus.open(OPENER, "?", ["yes", "no"], V, rule="unanimity")
    await asyncio.gather(*(consensus.vote(v, ballot.id, "yes") for v in V))
    final = await consensus.get(ballot.id)
    assert final is not None and final.result is not None
    assert (final.close_cause, final.result.winner, counts(final.result)["yes"]) == (
        "settled",
        "yes",
        50,
    )
    assert final.result.voted == tuple(sorted(V))
    assert len(await events(store, ballot, "ballot.voted")) == 50


async def test_two_concurrent_first_votes_of_one_voter_count_once(
    consensus: Consensus, store: Store
) -> None:
    ballot = await consensus.open(OPENER, "?", ["a", "b"], V[:5])
    outcomes = await asyncio.gather(
        consensus.vote(A, ballot.id, "a"), consensus.vote(A, ballot.id, "b"), return_exceptions=True
    )
    [won] = [o for o in outcomes if isinstance(o, Ballot)]
    [lost] = [o for o in outcomes if isinstance(o, BaseException)]
    assert isinstance(lost, BallotRefused) and lost.reason == "already_voted"
    stored = await consensus.get(ballot.id)
    assert stored == won and len(stored.votes) == 1
    assert sum(counts(await consensus.result(ballot.id)).values()) == 1
    assert len(await events(store, ballot, "ballot.voted")) == 1
    assert len(await events(store, ballot, "ballot.refused")) == 1


async def test_ballots_survive_a_sqlite_reopen(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "votes.db"
    async with await SQLiteStore.open(path) as store:
        consensus = Consensus(store, clock=clock)
        ballot = await consensus.open(
            OPENER, "?", ["a", "b"], V[:3], deadline=clock.now() + 30, revote="replace"
        )
        await consensus.vote(A, ballot.id, "a")
        await consensus.vote(B, ballot.id, "b")
        before = await consensus.get(ballot.id)
    async with await SQLiteStore.open(path) as store:
        consensus = Consensus(store, clock=clock)
        assert await consensus.get(ballot.id) == before
        await consensus.vote(B, ballot.id, "a")  # replaces B's vote from before the reopen
        with pytest.raises(BallotRefused):
            await consensus.vote(OUTSIDER, ballot.id, "a")
        clock.advance(30)
        [result] = await consensus.close_due()
        assert (result.decided, result.winner, counts(result)) == (True, "a", {"a": 2, "b": 0})
    async with await SQLiteStore.open(path) as store:
        consensus = Consensus(store, clock=clock)
        assert await consensus.result(ballot.id) == result
        assert await consensus.close_due() == []
        kinds = [e.kind for e in await store.read(trace_id=ballot.trace_id)]
        assert kinds == ["ballot.opened"] + ["ballot.voted"] * 3 + [
            "ballot.refused",
            "ballot.closed",
        ]


# -- the pure core ---------------------------------------------------------------------------------


def test_the_transition_table() -> None:
    assert core._BALLOT_TRANSITIONS == {
        BallotState.OPEN: frozenset({BallotState.OPEN, BallotState.CLOSED}),
        BallotState.CLOSED: frozenset(),
    }
    with pytest.raises(InvalidTransition) as info:
        core.check_ballot_transition(BallotState.CLOSED, BallotState.CLOSED, "b-1")
    assert str(info.value) == "invalid transition for b-1: closed -> closed"


def test_majority_and_plurality_helpers() -> None:
    votes = {A: "x", B: "x", C: "y"}
    assert majority(votes) == "x"  # 2 of 3 voters
    assert majority(votes, eligible=V[:5]) is None  # 2 of 5 eligible
    assert majority({**votes, OUTSIDER: "x"}, eligible=[A, B, C]) == "x"  # outsider ignored
    assert majority({A: "x", B: "y"}) is None and majority({}) is None
    assert plurality({A: "x", B: "y", C: "y"}) == "y"
    assert plurality({A: "x", B: "y"}) is None and plurality({}) is None
    assert plurality({A: "x", B: "y"}, tie_break="first_option", options=["y", "x"]) == "y"
    assert plurality({A: "x", B: "y"}, tie_break="first_option") == "x"  # first voted for


def test_tally_refuses_a_trust_weighted_ballot_without_scores() -> None:
    ballot = core.open_ballot(
        ballot_id="b", opener=OPENER, question="?", options=["a"], voters=[A], now=0.0,
        rule="trust_weighted",
    )  # fmt: skip
    with pytest.raises(ValidationError):
        tally(ballot)
    with pytest.raises(ValidationError) as info:
        tally(ballot, {A: float("nan")})
    assert info.value.field == f"trust_scores[{A}]"
    assert tally(ballot, {}).trust == {A: 0.5}  # a missing score weighs DEFAULT_TRUST


RULES = ("majority", "plurality", "trust_weighted", "quorum", "unanimity")


EITHER_REVOTE = st.sampled_from(("replace", "refuse"))


@st.composite
def ballots_and_votes(
    draw: st.DrawFn, revote: st.SearchStrategy[str] = EITHER_REVOTE
) -> tuple[Ballot, list[tuple[str, str]], dict[str, float]]:
    n = draw(st.integers(1, 7))
    options = draw(st.lists(st.sampled_from("abcd"), min_size=1, max_size=4, unique=True))
    rule = draw(st.sampled_from(RULES))
    quorum = draw(st.integers(1, n)) if rule == "quorum" else draw(st.none() | st.integers(1, n))
    ballot = core.open_ballot(
        ballot_id="b", opener=OPENER, question="?", options=options, voters=V[:n], now=0.0,
        rule=rule, quorum=quorum, revote=draw(revote),
        tie_break=draw(st.sampled_from((None, "first_option"))),
    )  # fmt: skip
    votes = draw(st.lists(st.tuples(st.sampled_from(V[:n]), st.sampled_from(options)), max_size=12))
    scores = {v: draw(st.sampled_from((0.0, 0.1, 0.25, 0.5, 0.7, 1.0))) for v in V[:n]}
    return ballot, votes, scores


def check_result(ballot: Ballot, result: BallotResult) -> None:
    assert sum(t.count for t in result.tallies.values()) == len(result.voted) == len(ballot.votes)
    assert result.voted == tuple(sorted(ballot.choices()))
    if result.decided:
        assert result.winner in ballot.options and result.quorum_met
        winning = result.tallies[result.winner or ""]
        if ballot.rule == "majority":
            assert 2 * winning.count > result.eligible
        if ballot.rule == "trust_weighted":
            assert winning.weight is not None and result.threshold is not None
            assert winning.weight > result.threshold
        if ballot.rule == "unanimity":
            assert winning.count == result.eligible
    else:
        assert result.winner is None


@settings(max_examples=300, deadline=None)
@given(ballots_and_votes())
def test_tallies_add_up_and_majorities_hold(
    case: tuple[Ballot, list[tuple[str, str]], dict[str, float]],
) -> None:
    ballot, votes, scores = case
    for voter, option in votes:
        had_voted = ballot.choice_of(voter) is not None
        try:
            after = cast(ballot, voter, option, 1.0)
        except BallotRefused as exc:
            assert had_voted and ballot.revote == "refuse" and exc.reason == "already_voted"
            continue
        # Replacing never increases the number of counted votes.
        assert len(after.votes) == len(ballot.votes) + (0 if had_voted else 1)
        assert after.choice_of(voter) == option
        ballot = after
        check_result(ballot, tally(ballot, scores))


@settings(max_examples=500, deadline=None)
@given(ballots_and_votes(revote=st.just("refuse")), st.data())
def test_a_settled_ballot_cannot_change(
    case: tuple[Ballot, list[tuple[str, str]], dict[str, float]], data: st.DataObject
) -> None:
    """The early close is sound: once ``is_settled``, every way the remaining voters could
    vote (or abstain) leaves the outcome as it is."""
    ballot, votes, scores = case
    for voter, option in votes:
        if ballot.choice_of(voter) is None or ballot.revote == "replace":
            ballot = cast(ballot, voter, option, 1.0)
        result = tally(ballot, scores)
        if not is_settled(ballot, result):
            continue
        remaining = [v for v in ballot.voters if ballot.choice_of(v) is None]
        # The extremes (everyone left abstains; everyone left joins one option) and one
        # random mix: the outcome must be the same for each.
        completions = [[None] * len(remaining)]
        completions += [[o] * len(remaining) for o in ballot.options]
        completions.append(
            [data.draw(st.none() | st.sampled_from(ballot.options)) for _ in remaining]
        )
        for completion in completions:
            later = ballot
            for rest, choice in zip(remaining, completion, strict=True):
                if choice is not None:
                    later = cast(later, rest, choice, 2.0)
            final = tally(later, scores)
            assert (final.decided, final.winner) == (result.decided, result.winner), completion
        closed = core.close(ballot, result, now=3.0, cause="settled")
        assert closed.result is not None and closed.result.final
        return


async def test_a_refused_vote_is_logged_with_the_callers_claims_clipped(
    consensus: Consensus, store: Store
) -> None:
    ballot = await consensus.open(OPENER, "?", ["a", "b"], V[:3])
    huge = "did:key:z6Mk" + "x" * 400_000
    with pytest.raises(ConvergeError):
        await consensus.vote(huge, ballot.id, "a")
    with pytest.raises(ConvergeError):
        await consensus.vote(A, ballot.id, "o" * 100_000)
    first, second = await events(store, ballot, "ballot.refused")
    assert first.actor == first.data["voter"] == clip(huge)
    assert second.data["option"] == clip("o" * 100_000)
    for event in (first, second):
        assert len(event.data["reason"]) <= MAX_TEXT_CHARS
        assert len(msgspec.json.encode(event)) < 2_000
