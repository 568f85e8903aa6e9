"""Trust: a beta reputation per agent that outcomes move, time fades, and the store keeps."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converge.core.clock import ManualClock
from converge.errors import ConflictError, StoreClosed, StoreError, ValidationError
from converge.policy.trust import (
    TRUST_KEY_PREFIX,
    TRUST_UPDATED,
    Outcome,
    TrustModel,
    TrustPolicy,
    TrustRecord,
    TrustWeights,
    decay_trust,
    prior_trust,
    update_trust,
)
from converge.store.base import Entry, Store, Transaction
from converge.store.memory import MemoryStore
from converge.store.sqlite import SQLiteStore

ALICE = "did:key:z6MkAlice"
BOB = "did:key:z6MkBob"
DAY = 24 * 3600.0
HALF_LIFE = 7 * DAY


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    async with MemoryStore() as s:
        yield s


class YieldingStore:
    """A MemoryStore that yields to the loop on every read and commit, as a store across a
    network does, so concurrent updates really interleave between read and write."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gets = 0
        self.transactions: list[Transaction] = []

    async def get(self, key: str) -> Entry | None:
        self.gets += 1
        await asyncio.sleep(0)
        entry: Entry | None = await self.inner.get(key)
        await asyncio.sleep(0)
        return entry

    def transaction(self) -> Transaction:
        tx: Transaction = self.inner.transaction()
        self.transactions.append(tx)
        return tx

    @property
    def store(self) -> Store:
        """This wrapper, typed as the store it stands in for (it has what TrustModel uses)."""
        return cast(Store, self)


# -- scores move with outcomes ---------------------------------------------------------------------


async def test_an_unknown_agent_has_the_prior_mean(store: MemoryStore, clock: ManualClock) -> None:
    model = TrustModel(store, clock=clock)
    assert await model.score(ALICE) == 0.5
    assert await model.record_of(ALICE) is None
    optimistic = TrustModel(store, TrustPolicy(prior_alpha=3.0, prior_beta=1.0), clock)
    assert await optimistic.score(ALICE) == 0.75
    assert await optimistic.scores([ALICE, BOB]) == {ALICE: 0.75, BOB: 0.75}
    assert await store.list(TRUST_KEY_PREFIX) == []  # reading writes nothing


async def test_successes_raise_and_failures_lower_the_score(
    store: MemoryStore, clock: ManualClock
) -> None:
    model = TrustModel(store, clock=clock)
    assert await model.record(ALICE, Outcome.SUCCESS) == pytest.approx(2 / 3)
    assert await model.record(ALICE, "success") == pytest.approx(3 / 4)
    assert await model.record(ALICE, Outcome.FAILURE) == pytest.approx(3 / 5)
    assert await model.score(ALICE) == pytest.approx(3 / 5)
    assert await model.record(BOB, "failure") == pytest.approx(1 / 3)
    record = await model.record_of(ALICE)
    assert record == TrustRecord(3.0, 2.0, clock.now(), successes=2, failures=1)


async def test_a_timeout_lowers_the_score_more_than_a_failure(
    store: MemoryStore, clock: ManualClock
) -> None:
    model = TrustModel(store, clock=clock)
    after_failure = await model.record(ALICE, Outcome.FAILURE)
    after_timeout = await model.record(BOB, Outcome.TIMEOUT)
    assert after_failure == pytest.approx(1 / 3)
    assert after_timeout == pytest.approx(1 / 3.5)
    assert after_timeout < after_failure
    bob = await model.record_of(BOB)
    assert bob is not None
    assert (bob.timeouts, bob.failures) == (1, 0)


async def test_weight_scales_the_evidence_of_one_outcome(
    store: MemoryStore, clock: ManualClock
) -> None:
    model = TrustModel(store, TrustPolicy(weights=TrustWeights(success=2.0)), clock)
    await model.record(ALICE, Outcome.SUCCESS, weight=3.0)  # alpha 1 + 3 * 2
    await model.record(ALICE, Outcome.TIMEOUT, weight=2.0)  # beta 1 + 2 * 1.5
    await model.record(ALICE, Outcome.FAILURE, weight=0.0)  # counted, moves nothing
    record = await model.record_of(ALICE)
    assert record is not None
    assert (record.alpha, record.beta) == (7.0, 4.0)
    assert (record.successes, record.failures, record.timeouts) == (1, 1, 1)


# -- decay ---------------------------------------------------------------------------------------


async def test_after_one_half_life_the_evidence_has_halved(
    store: MemoryStore, clock: ManualClock
) -> None:
    model = TrustModel(store, clock=clock)
    for _ in range(4):
        await model.record(ALICE, Outcome.SUCCESS)  # alpha 5, beta 1
    start = clock.now()
    clock.advance(HALF_LIFE)
    assert await model.score(ALICE) == 3 / 4  # alpha 1 + 4 / 2
    assert await model.score(ALICE, at=start + 2 * HALF_LIFE) == 2 / 3  # alpha 1 + 4 / 4
    stored = await model.record_of(ALICE)
    assert stored is not None
    assert (stored.alpha, stored.updated_at) == (5.0, start)  # reading decays nothing stored
    # an update first decays to now, then adds
    assert await model.record(ALICE, Outcome.FAILURE) == 3 / 5
    assert await model.record_of(ALICE) == TrustRecord(3.0, 2.0, clock.now(), 4, 1, 0)


async def test_after_many_half_lives_the_score_is_the_prior_mean_again(
    store: MemoryStore, clock: ManualClock
) -> None:
    policy = TrustPolicy(prior_alpha=2.0, prior_beta=6.0, half_life_s=DAY)
    model = TrustModel(store, policy, clock)
    for _ in range(20):
        await model.record(ALICE, Outcome.SUCCESS)
    await model.record(BOB, Outcome.TIMEOUT, weight=50.0)
    assert await model.score(ALICE) == 22 / 28
    assert await model.score(BOB) == 2 / 83
    clock.advance(60 * DAY)
    assert await model.score(ALICE) == pytest.approx(0.25, abs=1e-12)
    assert await model.score(BOB) == pytest.approx(0.25, abs=1e-12)


async def test_without_a_half_life_evidence_never_fades(
    store: MemoryStore, clock: ManualClock
) -> None:
    model = TrustModel(store, TrustPolicy(half_life_s=None), clock)
    await model.record(ALICE, Outcome.SUCCESS)
    clock.advance(10_000 * DAY)
    assert await model.score(ALICE) == 2 / 3
    await model.record(ALICE, Outcome.SUCCESS)
    assert await model.record_of(ALICE) == TrustRecord(3.0, 1.0, clock.now(), successes=2)


async def test_a_time_before_the_last_update_does_not_undo_decay(
    store: MemoryStore, clock: ManualClock
) -> None:
    # Another process's clock may run ahead of ours: evidence must not grow by going back.
    model = TrustModel(store, clock=clock)
    await model.record(ALICE, Outcome.SUCCESS)
    assert await model.score(ALICE, at=clock.now() - 30 * DAY) == 2 / 3
    record = await model.record_of(ALICE)
    assert record is not None
    policy = TrustPolicy()
    assert decay_trust(record, policy, record.updated_at - DAY) == record
    later = update_trust(record, "success", policy, record.updated_at - DAY)
    assert (later.alpha, later.updated_at) == (3.0, record.updated_at)


# -- persistence ---------------------------------------------------------------------------------


async def test_a_new_model_on_the_same_store_sees_the_same_scores(
    store: MemoryStore, clock: ManualClock
) -> None:
    first = TrustModel(store, clock=clock)
    await first.record(ALICE, Outcome.SUCCESS)
    await first.record(BOB, Outcome.TIMEOUT)
    second = TrustModel(store, clock=clock)
    assert await second.scores([ALICE, BOB]) == await first.scores([ALICE, BOB])
    assert await second.record_of(ALICE) == await first.record_of(ALICE)
    entry = await store.get(TRUST_KEY_PREFIX + ALICE)
    assert entry is not None
    assert msgspec.msgpack.decode(entry.value, type=TrustRecord) == await first.record_of(ALICE)


async def test_scores_survive_reopening_a_sqlite_store(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "trust.db"
    async with await SQLiteStore.open(path) as db:
        model = TrustModel(db, clock=clock)
        for outcome in ("success", "success", "failure", "timeout"):
            await model.record(ALICE, outcome, actor=BOB)
        before = await model.scores([ALICE, BOB])
        record = await model.record_of(ALICE)
    async with await SQLiteStore.open(path, create=False) as db:
        reopened = TrustModel(db, clock=clock)
        assert await reopened.scores([ALICE, BOB]) == before
        assert await reopened.record_of(ALICE) == record
        assert len(await db.read(kinds=[TRUST_UPDATED])) == 4
        clock.advance(HALF_LIFE)  # decay goes on from the stored time
        assert await reopened.score(ALICE) == (1 + 1) / (2 + 1 + 1.25)


# -- events --------------------------------------------------------------------------------------


async def test_every_update_appends_a_trust_updated_event(
    store: MemoryStore, clock: ManualClock
) -> None:
    ids = (f"trace-{i}" for i in itertools.count())
    model = TrustModel(store, clock=clock, id_factory=lambda: next(ids))
    score = await model.record(
        ALICE, "timeout", weight=2.0, trace_id="run-1", actor=BOB, reason="lease expired"
    )
    await model.record(ALICE, Outcome.SUCCESS)
    await model.record(BOB, Outcome.SUCCESS, cause="tender:run-1/write/1:1")
    first, second, third = await store.read(kinds=[TRUST_UPDATED])
    assert (first.trace_id, first.actor, first.subject, first.at) == (
        "run-1",
        BOB,
        ALICE,
        clock.now(),
    )
    assert first.data == {
        "outcome": "timeout",
        "weight": 2.0,
        "score": score,
        "alpha": 1.0,
        "beta": 4.0,
        "reason": "lease expired",
    }
    assert (second.trace_id, second.actor, second.data["outcome"]) == ("trace-0", "", "success")
    assert (third.trace_id, third.subject) == ("trace-1", BOB)
    assert "cause" not in second.data  # only when the caller names one
    assert third.data["cause"] == "tender:run-1/write/1:1"


async def test_the_record_and_its_event_commit_in_one_transaction(
    store: MemoryStore, clock: ManualClock
) -> None:
    spy = YieldingStore(store)
    await TrustModel(spy.store, clock=clock).record(ALICE, Outcome.SUCCESS)
    [tx] = spy.transactions
    assert [(op.kind, op.key, getattr(op, "expected", None)) for op in tx.ops] == [
        ("cas", TRUST_KEY_PREFIX + ALICE, 0)
    ]
    assert [ev.kind for ev in tx.events] == [TRUST_UPDATED]
    assert tx.seqs == [await store.last_seq()]


async def test_a_lost_race_writes_no_event_and_is_redone_on_the_new_record(
    store: MemoryStore, clock: ManualClock
) -> None:
    rival = TrustModel(store, clock=clock)

    class Interrupted(YieldingStore):
        async def get(self, key: str) -> Entry | None:
            entry = await super().get(key)
            if self.gets == 1:  # someone else writes between our read and our commit
                await rival.record(ALICE, Outcome.FAILURE)
            return entry

    spy = Interrupted(store)
    score = await TrustModel(spy.store, clock=clock).record(ALICE, Outcome.SUCCESS)
    assert score == 2 / 4
    assert spy.gets == 2
    record = await rival.record_of(ALICE)
    assert record is not None
    assert (record.successes, record.failures) == (1, 1)
    events = await store.read(kinds=[TRUST_UPDATED])
    assert [e.data["outcome"] for e in events] == ["failure", "success"]


# -- concurrency ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_concurrent_updates_from_two_models_all_count(
    backend: str, tmp_path: Path, clock: ManualClock
) -> None:
    inner: Any = MemoryStore() if backend == "memory" else await SQLiteStore.open(tmp_path / "t.db")
    async with inner:
        shared = YieldingStore(inner)
        models = [TrustModel(shared.store, clock=clock), TrustModel(shared.store, clock=clock)]
        async with asyncio.TaskGroup() as tg:
            for i in range(50):
                tg.create_task(models[i % 2].record(ALICE, Outcome.SUCCESS))
        record = await models[0].record_of(ALICE)
        assert record is not None
        assert (record.successes, record.alpha) == (50, 51.0)
        assert len(await inner.read(kinds=[TRUST_UPDATED])) == 50
        assert shared.gets > 50  # the two models did race, and the losers retried


async def test_updates_give_up_after_max_attempts(store: MemoryStore, clock: ManualClock) -> None:
    shared = YieldingStore(store)
    eager = TrustModel(shared.store, clock=clock)
    impatient = TrustModel(shared.store, clock=clock, max_attempts=1)
    results = await asyncio.gather(
        eager.record(ALICE, Outcome.SUCCESS),
        impatient.record(ALICE, Outcome.FAILURE),
        return_exceptions=True,
    )
    assert results[0] == 2 / 3
    assert isinstance(results[1], ConflictError)
    assert results[1].key == TRUST_KEY_PREFIX + ALICE
    assert len(await store.read(kinds=[TRUST_UPDATED])) == 1


# -- the pure core -------------------------------------------------------------------------------

outcomes = st.sampled_from(list(Outcome))
steps = st.lists(
    st.tuples(
        outcomes,
        st.floats(min_value=0, max_value=1e6),  # weight
        st.floats(min_value=0, max_value=1e9),  # seconds since the previous step
    ),
    max_size=40,
)
policies = st.builds(
    TrustPolicy,
    prior_alpha=st.floats(min_value=1e-3, max_value=1e3),
    prior_beta=st.floats(min_value=1e-3, max_value=1e3),
    half_life_s=st.none() | st.floats(min_value=1.0, max_value=1e8),
    weights=st.builds(
        TrustWeights,
        success=st.floats(min_value=0, max_value=10),
        failure=st.floats(min_value=0, max_value=10),
        timeout=st.floats(min_value=0, max_value=10),
    ),
)


@settings(max_examples=300, deadline=None)
@given(policy=policies, steps=steps, k=st.floats(min_value=0, max_value=10))
def test_any_history_keeps_the_score_in_range_and_the_bound_below_it(
    policy: TrustPolicy, steps: list[tuple[Outcome, float, float]], k: float
) -> None:
    at = 1_700_000_000.0
    record = prior_trust(policy, at)
    for outcome, weight, gap in steps:
        at += gap
        record = update_trust(record, outcome, policy, at, weight=weight)
        assert 0.0 <= record.score <= 1.0
        assert 0.0 <= record.lower_bound(k) <= record.score
    counts = (record.successes, record.failures, record.timeouts)
    assert counts == tuple(sum(1 for o, _, _ in steps if o is kind) for kind in Outcome)


@settings(max_examples=200, deadline=None)
@given(
    policy=policies,
    alpha=st.floats(min_value=1e-3, max_value=1e6),
    beta=st.floats(min_value=1e-3, max_value=1e6),
    first=st.floats(min_value=0, max_value=1e8),
    second=st.floats(min_value=0, max_value=1e8),
)
def test_decaying_in_two_steps_equals_decaying_once(
    policy: TrustPolicy, alpha: float, beta: float, first: float, second: float
) -> None:
    start = 1_700_000_000.0
    record = TrustRecord(alpha, beta, start)
    stepwise = decay_trust(
        decay_trust(record, policy, start + first), policy, start + first + second
    )
    at_once = decay_trust(record, policy, start + first + second)
    assert stepwise.alpha == pytest.approx(at_once.alpha, rel=1e-9)
    assert stepwise.beta == pytest.approx(at_once.beta, rel=1e-9)


def test_the_lower_bound_is_cautious_with_little_evidence() -> None:
    policy = TrustPolicy()
    newcomer = prior_trust(policy, 0.0)
    veteran = TrustRecord(91.0, 11.0, 0.0)  # 90 successes, 10 failures
    assert newcomer.lower_bound(k=2.0) == 0.0
    assert newcomer.lower_bound(k=0.0) == newcomer.score
    assert veteran.lower_bound() == pytest.approx(
        91 / 102 - 2 * math.sqrt(91 * 11 / (102**2 * 103))
    )
    assert veteran.lower_bound() > 0.8


async def test_model_lower_bound_reads_the_decayed_record(
    store: MemoryStore, clock: ManualClock
) -> None:
    model = TrustModel(store, clock=clock)
    assert await model.lower_bound(ALICE) == 0.0
    for _ in range(30):
        await model.record(ALICE, Outcome.SUCCESS)
    fresh = await model.lower_bound(ALICE, k=1.0)
    clock.advance(3 * HALF_LIFE)
    assert 0.0 < await model.lower_bound(ALICE, k=1.0) < fresh


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["win", "SUCCESS", "", 1, None])
async def test_an_unknown_outcome_is_refused(
    outcome: Any, store: MemoryStore, clock: ManualClock
) -> None:
    with pytest.raises(ValidationError) as info:
        await TrustModel(store, clock=clock).record(ALICE, outcome)
    assert info.value.field == "outcome"
    assert await store.last_seq() == 0


@pytest.mark.parametrize("weight", [-1.0, math.nan, math.inf, True, "1", 10**400])
async def test_a_bad_weight_is_refused(weight: Any, store: MemoryStore, clock: ManualClock) -> None:
    with pytest.raises(ValidationError) as info:
        await TrustModel(store, clock=clock).record(ALICE, Outcome.SUCCESS, weight=weight)
    assert info.value.field == "weight"
    assert await store.last_seq() == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"prior_alpha": 0.0}, "prior_alpha"),
        ({"prior_beta": -1.0}, "prior_beta"),
        ({"prior_alpha": math.nan}, "prior_alpha"),
        ({"half_life_s": 0.0}, "half_life_s"),
        ({"half_life_s": -DAY}, "half_life_s"),
        ({"half_life_s": math.inf}, "half_life_s"),
        ({"weights": {"timeout": 2.0}}, "weights"),
    ],
)
def test_a_bad_policy_is_refused(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        TrustPolicy(**kwargs)
    assert info.value.field == field


@pytest.mark.parametrize("name", ["success", "failure", "timeout"])
def test_a_negative_outcome_weight_is_refused(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        TrustWeights(**{name: -0.5})
    assert info.value.field == f"weights.{name}"


async def test_other_bad_arguments_name_their_field(store: MemoryStore, clock: ManualClock) -> None:
    model = TrustModel(store, clock=clock)
    cases: list[tuple[Any, str]] = [
        (lambda: model.record("", Outcome.SUCCESS), "agent_id"),
        (lambda: model.score(42), "agent_id"),
        (lambda: model.score(ALICE, at=math.nan), "at"),
        (lambda: model.lower_bound(ALICE, k=-1.0), "k"),
        (lambda: model.scores([ALICE, ""]), "agent_id"),
    ]
    for call, field in cases:
        with pytest.raises(ValidationError) as info:
            await call()
        assert info.value.field == field
    for bad, field in [
        ({"policy": {"prior_alpha": 2}}, "policy"),
        ({"max_attempts": 0}, "max_attempts"),
    ]:
        with pytest.raises(ValidationError) as info:
            TrustModel(store, **bad)
        assert info.value.field == field


async def test_an_unreadable_stored_record_is_a_store_error(
    store: MemoryStore, clock: ManualClock
) -> None:
    await store.put(TRUST_KEY_PREFIX + ALICE, msgspec.msgpack.encode({"alpha": -1.0}))
    model = TrustModel(store, clock=clock)
    with pytest.raises(StoreError, match="cannot be decoded"):
        await model.score(ALICE)
    with pytest.raises(StoreError, match="cannot be decoded"):
        await model.record(ALICE, Outcome.SUCCESS)


async def test_scores_raises_the_store_error_itself(clock: ManualClock) -> None:
    store = MemoryStore()
    model = TrustModel(store, clock=clock)
    await store.aclose()
    with pytest.raises(StoreClosed):
        await model.scores([ALICE, BOB])
