"""Negotiation: sessions, turns, deadlines, round limits, refusals as events, races, persistence,
and a property over random sequences of acts on the pure state machine."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converge.coordination import _negotiation_session as core
from converge.coordination.negotiation import (
    NegotiationProtocol,
    NegotiationRefused,
    NegotiationSession,
    NegotiationState,
    ProposalSuperseded,
)
from converge.core.clip import MAX_TEXT_CHARS, clip
from converge.core.clock import ManualClock
from converge.errors import ConflictError, ConvergeError, InvalidTransition, ValidationError
from converge.protocol.event import Event
from converge.store import SQLiteStore, Store

A, B, C, X = "did:key:z6MkA", "did:key:z6MkB", "did:key:z6MkC", "did:key:z6MkX"
S = NegotiationState


@pytest.fixture
def negotiation(store: Store, clock: ManualClock) -> NegotiationProtocol:
    return NegotiationProtocol(store, clock=clock)


async def kinds(store: Store, session: NegotiationSession) -> list[str]:
    return [e.kind for e in await store.read(trace_id=session.trace_id)]


async def refusals(store: Store) -> list[Event]:
    return await store.read(kinds=["negotiation.refused"])


# -- agreeing ----------------------------------------------------------------------------------


async def test_propose_counter_accept_records_the_agreed_terms(
    negotiation: NegotiationProtocol, store: Store, clock: ManualClock
) -> None:
    terms = {"price": 10, "by": "friday"}
    opened = await negotiation.open(A, [B], terms, deadline=clock.now() + 60, trace_id="t-1")
    terms["price"] = 1  # the caller's dict is not the stored proposal
    assert opened.parties == (A, B) and opened.initiator == A and opened.state is S.OPEN
    assert opened.latest.terms == {"price": 10, "by": "friday"}
    clock.advance(1)
    offer = await negotiation.counter(B, opened.id, {"price": 8})
    clock.advance(1)
    final = await negotiation.counter(A, opened.id, {"price": 9})
    assert opened.waiting_for == (B,)
    clock.advance(1)
    done = await negotiation.accept(B, opened.id, final.id)

    assert done.state is S.AGREED and done.is_terminal
    assert (done.agreed_proposal_id, done.agreed_terms) == (final.id, {"price": 9})
    assert [p.id for p in done.proposals[1:]] == [offer.id, final.id] and done.rounds == 3
    assert (done.ended_by, done.updated_at) == (B, clock.now())
    assert await negotiation.get(opened.id) == done
    assert await negotiation.get("nope") is None
    assert await kinds(store, done) == [
        "negotiation.opened",
        "negotiation.proposed",
        "negotiation.proposed",
        "negotiation.proposed",
        "negotiation.accepted",
    ]
    [accepted] = await store.read(kinds=["negotiation.accepted"])
    assert (accepted.actor, accepted.subject, accepted.trace_id) == (B, opened.id, "t-1")
    assert accepted.data == {
        "proposal_id": final.id,
        "agreed": True,
        "terms": {"price": 9},
        "state": "agreed",
    }
    assert await store.list("negotiation-due/") == []  # the ended session left the index


async def test_every_other_party_must_accept_and_a_new_proposal_resets_acceptances(
    negotiation: NegotiationProtocol, store: Store
) -> None:
    s = await negotiation.open(A, [B, C], {"split": [1, 1, 1]})
    half = await negotiation.accept(B, s.id)
    assert (half.state, half.accepted_by, half.waiting_for) == (S.OPEN, (B,), (C,))
    with pytest.raises(NegotiationRefused) as info:
        await negotiation.accept(B, s.id)
    assert info.value.reason == "already_accepted"
    counter = await negotiation.counter(C, s.id, {"split": [1, 1, 2]})
    after = await negotiation.get(s.id)
    assert after is not None and after.accepted_by == () and after.waiting_for == (A, B)
    await negotiation.accept(A, s.id, counter.id)
    done = await negotiation.accept(B, s.id, counter.id)
    assert (done.state, done.agreed_terms) == (S.AGREED, {"split": [1, 1, 2]})
    partial = (await store.read(kinds=["negotiation.accepted"]))[0]
    assert partial.data == {
        "proposal_id": s.latest.id,
        "agreed": False,
        "waiting_for": [C],
        "state": "open",
    }


async def test_a_party_may_revise_its_own_proposal_but_not_counter_it(
    negotiation: NegotiationProtocol,
) -> None:
    s = await negotiation.open(A, [B], {"price": 10})
    with pytest.raises(NegotiationRefused) as info:
        await negotiation.counter(A, s.id, {"price": 11})
    assert (info.value.reason, info.value.act, info.value.agent_id) == (
        "own_proposal",
        "counter",
        A,
    )
    revised = await negotiation.propose(A, s.id, {"price": 9})
    done = await negotiation.accept(B, s.id)
    assert (done.agreed_proposal_id, done.agreed_terms) == (revised.id, {"price": 9})


# -- refusals ----------------------------------------------------------------------------------


async def test_only_a_counterparty_may_accept_or_reject(
    negotiation: NegotiationProtocol, store: Store
) -> None:
    s = await negotiation.open(A, [B], {"price": 10})
    for act in (negotiation.accept, negotiation.reject):
        with pytest.raises(NegotiationRefused) as info:
            await act(A, s.id)
        assert (info.value.reason, info.value.session_id) == ("own_proposal", s.id)
    counter = await negotiation.counter(B, s.id, {"price": 5})
    with pytest.raises(NegotiationRefused, match="is its own"):
        await negotiation.accept(B, s.id, counter.id)
    for act in (negotiation.accept, negotiation.reject):
        with pytest.raises(NegotiationRefused) as info:
            await act(X, s.id)
        assert (info.value.reason, info.value.agent_id) == ("not_a_party", X)
    with pytest.raises(NegotiationRefused, match="not a party"):
        await negotiation.propose(X, s.id, {"price": 0})
    assert [e.actor for e in await refusals(store)] == [A, A, B, X, X, X]
    after = await _session(negotiation, s.id)
    assert (after.state, after.latest) == (S.OPEN, counter)


async def test_accepting_after_rejection_is_refused(
    negotiation: NegotiationProtocol, store: Store
) -> None:
    s = await negotiation.open(A, [B, C], {"price": 10})
    rejected = await negotiation.reject(B, s.id, s.latest.id, reason="too dear")
    assert (rejected.state, rejected.ended_by, rejected.reason) == (S.REJECTED, B, "too dear")
    with pytest.raises(InvalidTransition) as info:
        await negotiation.accept(C, s.id)
    assert (info.value.from_state, info.value.to_state) == (S.REJECTED, S.AGREED)
    with pytest.raises(InvalidTransition) as info:
        await negotiation.counter(C, s.id, {"price": 9})
    assert (info.value.from_state, info.value.to_state) == (S.REJECTED, S.OPEN)
    with pytest.raises(InvalidTransition):
        await negotiation.reject(C, s.id)
    assert await _session(negotiation, s.id) == rejected
    [event] = await store.read(kinds=["negotiation.rejected"])
    assert event.data == {"proposal_id": s.latest.id, "reason": "too dear", "state": "rejected"}
    assert [e.data["act"] for e in await refusals(store)] == ["accept", "counter", "reject"]


async def test_accepting_a_superseded_proposal_is_refused(
    negotiation: NegotiationProtocol, store: Store
) -> None:
    s = await negotiation.open(A, [B], {"price": 10})
    first = s.latest
    counter = await negotiation.counter(B, s.id, {"price": 8})
    with pytest.raises(ProposalSuperseded) as info:
        await negotiation.accept(B, s.id, first.id)  # B cannot take A's old offer either
    assert (info.value.proposal_id, info.value.latest_id) == (first.id, counter.id)
    with pytest.raises(ProposalSuperseded):
        await negotiation.counter(A, s.id, {"price": 9}, replying_to=first.id)
    with pytest.raises(ValidationError) as bad:
        await negotiation.accept(A, s.id, "no-such-proposal")
    assert bad.value.field == "proposal_id"
    assert (await negotiation.accept(A, s.id, counter.id)).agreed_terms == {"price": 8}
    assert [e.data["proposal_id"] for e in await refusals(store)] == [
        first.id,
        first.id,
        "no-such-proposal",
    ]


async def test_acting_at_the_deadline_expires_the_session_and_refuses_the_act(
    negotiation: NegotiationProtocol, store: Store, clock: ManualClock
) -> None:
    s = await negotiation.open(A, [B], {"price": 10}, deadline=clock.now() + 60)
    assert len(await store.list("negotiation-due/")) == 1
    clock.advance(60)
    with pytest.raises(InvalidTransition) as info:
        await negotiation.accept(B, s.id)
    assert (info.value.from_state, info.value.to_state) == (S.EXPIRED, S.AGREED)
    expired = await _session(negotiation, s.id)
    assert (expired.state, expired.ended_by, expired.agreed_terms) == (S.EXPIRED, B, None)
    with pytest.raises(InvalidTransition) as info:
        await negotiation.counter(B, s.id, {"price": 1})
    assert info.value.from_state is S.EXPIRED
    assert await kinds(store, s) == [
        "negotiation.opened",
        "negotiation.proposed",
        "negotiation.expired",
        "negotiation.refused",
        "negotiation.refused",
    ]
    assert await store.list("negotiation-due/") == []
    assert await negotiation.expire_due() == []


async def test_expire_due_reads_only_the_due_sessions(
    negotiation: NegotiationProtocol, store: Store, clock: ManualClock
) -> None:
    t0 = clock.now()
    soon = await negotiation.open(A, [B], {}, deadline=t0 + 10)
    later = await negotiation.open(A, [B], {}, deadline=t0 + 20)
    forever = await negotiation.open(A, [B], {})
    agreed = await negotiation.open(A, [B], {}, deadline=t0 + 5)
    await negotiation.accept(B, agreed.id)
    clock.advance(15)
    assert await negotiation.expire_due() == [soon.id]
    assert (await _session(negotiation, later.id)).state is S.OPEN
    assert await negotiation.expire_due(t0 + 20) == [later.id]
    assert await negotiation.expire_due(t0 + 10_000) == []
    states = [(await _session(negotiation, x.id)).state for x in (soon, later, forever, agreed)]
    assert states == [S.EXPIRED, S.EXPIRED, S.OPEN, S.AGREED]
    [first, second] = await store.read(kinds=["negotiation.expired"])
    assert (first.actor, first.subject, first.data["deadline"]) == ("", soon.id, t0 + 10)
    assert second.subject == later.id
    assert await store.list("negotiation-due/") == []
    with pytest.raises(ValidationError):
        await negotiation.expire_due(now=1234.5)  # time.monotonic(), not the manager's clock


async def test_exceeding_max_rounds_fails_the_session(
    negotiation: NegotiationProtocol, store: Store
) -> None:
    s = await negotiation.open(A, [B], {"price": 10}, max_rounds=3)
    await negotiation.counter(B, s.id, {"price": 5})
    last = await negotiation.counter(A, s.id, {"price": 8})
    with pytest.raises(InvalidTransition) as info:
        await negotiation.counter(B, s.id, {"price": 6})
    assert (info.value.from_state, info.value.to_state) == (S.FAILED, S.OPEN)
    failed = await _session(negotiation, s.id)
    assert (failed.state, failed.rounds, failed.latest.id) == (S.FAILED, 3, last.id)
    assert "round 4" in failed.reason and failed.ended_by == B
    with pytest.raises(InvalidTransition) as info:
        await negotiation.accept(B, s.id, last.id)  # the last offer died with the session
    assert info.value.from_state is S.FAILED
    [event] = await store.read(kinds=["negotiation.failed"])
    assert (event.actor, event.data["max_rounds"], event.data["state"]) == (B, 3, "failed")
    take_it_or_leave_it = await negotiation.open(A, [B], {"price": 10}, max_rounds=1)
    with pytest.raises(InvalidTransition):
        await negotiation.counter(B, take_it_or_leave_it.id, {"price": 9})


async def test_every_refusal_is_an_event_with_a_reason_and_disturbs_nothing(
    negotiation: NegotiationProtocol, store: Store
) -> None:
    s = await negotiation.open(A, [B, C], {"price": 10})
    first = s.latest.id
    await negotiation.counter(B, s.id, {"price": 7})
    await negotiation.accept(A, s.id)
    hostile: list[tuple[str, Callable[[], Awaitable[Any]], type[ConvergeError]]] = [
        (X, lambda: negotiation.accept(X, s.id), NegotiationRefused),
        (X, lambda: negotiation.counter(X, s.id, {"price": 0}), NegotiationRefused),
        (B, lambda: negotiation.accept(B, s.id), NegotiationRefused),
        (A, lambda: negotiation.accept(A, s.id), NegotiationRefused),
        (B, lambda: negotiation.counter(B, s.id, {}), NegotiationRefused),
        (C, lambda: negotiation.accept(C, s.id, first), ProposalSuperseded),
        (C, lambda: negotiation.reject(C, s.id, "nope"), ValidationError),
        (C, lambda: negotiation.counter(C, s.id, ["not", "a", "dict"]), ValidationError),
        (C, lambda: negotiation.counter(C, s.id, {1: "int key"}), ValidationError),
        (C, lambda: negotiation.counter(C, s.id, {"x": object()}), ValidationError),
    ]
    for agent, act, error in hostile:
        before = await store.get(f"negotiation/{s.id}")
        seen = await store.last_seq()
        with pytest.raises(error) as info:
            await act()
        assert await store.get(f"negotiation/{s.id}") == before, agent
        [event] = await store.read(after_seq=seen)
        assert (event.kind, event.actor, event.subject) == ("negotiation.refused", agent, s.id)
        assert event.data["reason"] == str(info.value) and event.data["reason"]
        assert event.data["error"] == type(info.value).__name__
    # still open, and C can still close the deal A accepted
    assert (await negotiation.accept(C, s.id)).agreed_terms == {"price": 7}


async def test_bad_input_to_open_and_unknown_sessions(
    negotiation: NegotiationProtocol, store: Store, clock: ManualClock
) -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        ({"counterparties": []}, "counterparties"),
        ({"counterparties": [A]}, "counterparties"),
        ({"counterparties": [B, B]}, "counterparties"),
        ({"counterparties": B}, "counterparties"),
        ({"counterparties": [""]}, "counterparties[0]"),
        ({"terms": "cheap"}, "terms"),
        ({"deadline": clock.now()}, "deadline"),
        ({"deadline": float("inf")}, "deadline"),
        ({"max_rounds": 0}, "max_rounds"),
        ({"session_id": ""}, "session_id"),
    ]
    for changes, field in bad:
        args: dict[str, Any] = {"counterparties": [B], "terms": {}, **changes}
        with pytest.raises(ValidationError) as info:
            await negotiation.open(A, args.pop("counterparties"), args.pop("terms"), **args)
        assert info.value.field == field
    await negotiation.open(A, [B], {}, session_id="s-1")
    with pytest.raises(ConflictError):
        await negotiation.open(A, [C], {}, session_id="s-1")
    seen = await store.last_seq()
    with pytest.raises(ValidationError) as info:
        await negotiation.accept(B, "no-such-session")
    assert info.value.field == "session_id"
    assert await store.read(after_seq=seen) == []  # no session, nothing to record against
    with pytest.raises(ValidationError):
        NegotiationProtocol(store, max_rounds=0)


# -- races and persistence ---------------------------------------------------------------------


class _ReadTogether:
    """A store whose first ``n`` reads of one key wait for each other, so ``n`` concurrent acts
    all read the same version before any of them writes."""

    def __init__(self, store: Store, key: str, n: int) -> None:
        self._store = store
        self._key = key
        self._barrier = asyncio.Barrier(n)
        self._left = n

    async def get(self, key: str) -> Any:
        entry = await self._store.get(key)
        if key == self._key and self._left > 0:
            self._left -= 1
            await self._barrier.wait()
        return entry

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def _race(
    store: Store, clock: ManualClock, parties: list[str], *acts: Callable[..., Awaitable[Any]]
) -> tuple[NegotiationSession, list[Any]]:
    setup = NegotiationProtocol(store, clock=clock)
    s = await setup.open(A, parties, {"price": 10})
    racing = NegotiationProtocol(
        _ReadTogether(store, f"negotiation/{s.id}", len(acts)), clock=clock
    )
    results = await asyncio.gather(*(act(racing, s.id) for act in acts), return_exceptions=True)
    return await _session(setup, s.id), results


async def test_an_acceptance_and_a_revision_at_once_exactly_one_wins(
    store: Store, clock: ManualClock
) -> None:
    after, results = await _race(
        store,
        clock,
        [B],
        lambda n, sid: n.accept(B, sid),
        lambda n, sid: n.propose(A, sid, {"price": 12}),
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], (ProposalSuperseded, InvalidTransition))
    if isinstance(results[0], NegotiationSession):  # the acceptance won, on the terms B saw
        assert (after.state, after.agreed_terms, after.rounds) == (S.AGREED, {"price": 10}, 1)
    else:  # the revision won; B's acceptance was not moved onto terms it never saw
        assert (after.state, after.rounds) == (S.OPEN, 2)
    assert len(await refusals(store)) == 1


async def test_two_counters_at_once_exactly_one_wins(store: Store, clock: ManualClock) -> None:
    after, results = await _race(
        store,
        clock,
        [B, C],
        lambda n, sid: n.counter(B, sid, {"price": 8}),
        lambda n, sid: n.counter(C, sid, {"price": 7}),
    )
    [winner] = [r for r in results if isinstance(r, core.Proposal)]
    [loser] = [r for r in results if isinstance(r, BaseException)]
    assert isinstance(loser, ProposalSuperseded) and loser.latest_id == winner.id
    assert after.rounds == 2 and after.latest == winner


async def test_two_acceptances_of_one_proposal_at_once_both_count(
    store: Store, clock: ManualClock
) -> None:
    after, results = await _race(
        store,
        clock,
        [B, C],
        lambda n, sid: n.accept(B, sid),
        lambda n, sid: n.accept(C, sid),
    )
    assert all(isinstance(r, NegotiationSession) for r in results)
    assert (after.state, set(after.accepted_by), after.agreed_terms) == (
        S.AGREED,
        {B, C},
        {"price": 10},
    )


async def test_sessions_survive_a_sqlite_reopen(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "negotiation.db"
    async with await SQLiteStore.open(path) as store:
        first = NegotiationProtocol(store, clock=clock)
        s = await first.open(A, [B], {"price": 10}, deadline=clock.now() + 100)
        counter = await first.counter(B, s.id, {"price": 9})
        before = await first.get(s.id)
    async with await SQLiteStore.open(path) as store:
        second = NegotiationProtocol(store, clock=clock)
        assert await second.get(s.id) == before
        with pytest.raises(NegotiationRefused):
            await second.accept(B, s.id)
        done = await second.accept(A, s.id, counter.id)
        assert (done.state, done.agreed_terms) == (S.AGREED, {"price": 9})
        assert len(await store.read(trace_id=s.id)) == 5
    async with await SQLiteStore.open(path) as store:
        assert await NegotiationProtocol(store, clock=clock).get(s.id) == done
        assert await store.list("negotiation-due/") == []


async def _session(negotiation: NegotiationProtocol, session_id: str) -> NegotiationSession:
    session = await negotiation.get(session_id)
    assert session is not None
    return session


# -- the state machine, on random sequences of acts ----------------------------------------------

PARTIES = (A, B, C)
acts = st.lists(
    st.tuples(
        st.sampled_from(["propose", "counter", "accept", "reject"]),
        st.sampled_from((*PARTIES, X)),
        st.integers(0, 3),  # the terms' price
        st.none() | st.integers(0, 6),  # which proposal the act names (may be old or unknown)
        st.floats(0, 20),  # time passing before the act
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(2, 3),
    max_rounds=st.integers(1, 5),
    deadline=st.none() | st.floats(1, 150),
    steps=acts,
)
def test_random_acts_keep_the_invariants(
    n: int, max_rounds: int, deadline: float | None, steps: list[Any]
) -> None:
    now = 1_000.0
    parties = PARTIES[:n]
    ids = iter(f"p{i}" for i in range(1000))
    session = core.open_session(
        session_id="s",
        initiator=A,
        counterparties=parties[1:],
        terms={"price": 0},
        proposal_id=next(ids),
        now=now,
        max_rounds=max_rounds,
        deadline=None if deadline is None else now + deadline,
    ).session
    for act, agent, price, which, wait in steps:
        now += wait
        named = None if which is None else ([p.id for p in session.proposals] + ["?"] * 7)[which]
        if act in ("propose", "counter"):
            out = core.propose(
                session,
                agent,
                {"price": price},
                proposal_id=next(ids),
                now=now,
                replying_to=named,
                counter=act == "counter",
            )
        elif act == "accept":
            out = core.accept(session, agent, now=now, proposal_id=named)
        else:
            out = core.reject(session, agent, now=now, proposal_id=named, reason="no")
        new = out.session
        refused = [e for e in out.events if e.kind == "negotiation.refused"]
        assert len(refused) == (out.error is not None)
        assert all((e.subject, e.trace_id) == ("s", "s") for e in out.events)
        if session.is_terminal or agent == X:  # nothing moves a finished session, or a stranger
            assert not out.changed and new is session and out.error is not None
        if out.changed:
            assert new.state in core._NEGOTIATION_TRANSITIONS[session.state]
            assert len(out.events) >= 1
        else:
            assert new is session
        if out.error is None and act == "accept":
            assert agent != session.latest.proposer
        assert new.rounds <= max_rounds
        assert len({p.id for p in new.proposals}) == new.rounds
        if new.state is S.AGREED:
            [agreed] = [p for p in new.proposals if p.id == new.agreed_proposal_id]
            assert agreed is new.latest and new.agreed_terms == agreed.terms
            assert set(new.accepted_by) == set(parties) - {agreed.proposer}
        else:
            assert new.agreed_terms is None and new.agreed_proposal_id is None
        session = new


async def test_a_refusal_is_logged_with_the_callers_claims_clipped(
    negotiation: NegotiationProtocol, store: Store
) -> None:
    s = await negotiation.open(A, [B], {"price": 10})
    huge = "did:key:z6Mk" + "x" * 400_000
    with pytest.raises(ConvergeError):
        await negotiation.accept(huge, s.id)
    with pytest.raises(ConvergeError):
        await negotiation.accept(B, s.id, "p" * 100_000)
    first, second = await refusals(store)
    assert first.actor == clip(huge)
    assert second.data["proposal_id"] == clip("p" * 100_000)
    for event in (first, second):
        assert len(event.data["reason"]) <= MAX_TEXT_CHARS
        assert len(msgspec.json.encode(event)) < 2_000
