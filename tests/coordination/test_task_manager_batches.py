"""The task board in batches: submit_many, claim_next and report_many, on every store."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from converge.coordination import Report, ReportsRefused, TaskManager
from converge.coordination.task_manager import MAX_BATCH
from converge.core.capability import CapabilitySet
from converge.core.clock import ManualClock
from converge.core.task import Task, TaskState
from converge.errors import (
    InvalidTransition,
    LeaseLost,
    StateError,
    TaskConflict,
    ValidationError,
)
from converge.store import Store

A, B = "did:key:z6MkAgentA", "did:key:z6MkAgentB"


@pytest.fixture
def board(store: Store, clock: ManualClock) -> TaskManager:
    return TaskManager(store, claim_ttl_sec=10.0, clock=clock)


def tasks(n: int, **fields: Any) -> list[Task]:
    return [Task(objective=f"t{i}", inputs={"i": i}, **fields) for i in range(n)]


async def kinds(store: Store) -> list[tuple[str, str]]:
    return [(e.kind, e.subject) for e in await store.read()]


# -- submit_many ----------------------------------------------------------------------------------


async def test_submit_many_puts_every_task_with_its_event(
    board: TaskManager, store: Store, clock: ManualClock
) -> None:
    woken: list[str] = []
    board.watch(lambda t: woken.append(t.id))
    batch = tasks(3)
    stored = await board.submit_many(batch, actor=A)
    assert [t.id for t in stored] == [t.id for t in batch]
    for task in stored:
        assert (task.trace_id, task.submitted_by, task.created_at) == (task.id, A, clock.now())
        assert await board.get(task.id) == task
    assert [t.id for t in await board.list_pending_tasks()] == [t.id for t in batch]
    assert await kinds(store) == [("task.submitted", t.id) for t in batch]
    assert woken == [t.id for t in batch]


async def test_submit_many_is_all_or_nothing(board: TaskManager, store: Store) -> None:
    (taken,) = await board.submit_many(tasks(1))
    fresh = tasks(3)
    with pytest.raises(TaskConflict) as info:
        await board.submit_many([*fresh, Task(objective="again", id=taken.id)])
    assert info.value.task_id == taken.id
    assert [await board.get(t.id) for t in fresh] == [None, None, None]
    assert await store.last_seq() == 1


@pytest.mark.parametrize(
    ("batch", "field"),
    [
        ([], "tasks"),
        ("not a list", "tasks"),
        ([Task(objective="ok"), "not a task"], "tasks[1]"),
        ([Task(objective="ok"), Task(objective="held", state=TaskState.CLAIMED)], "tasks[1].state"),
        ([Task(objective="ok"), Task(objective="tried", attempts=1)], "tasks[1].state"),
        ([Task(objective="ok", id="01ARZ3NDEKTSV4RRFFQ69G5FAV")] * 2, "tasks[1].id"),
        ([Task(objective="bad", required_capabilities=("not a requirement!",))], None),
    ],
)
async def test_submit_many_refuses_bad_batches_before_writing(
    board: TaskManager, store: Store, batch: Any, field: str | None
) -> None:
    with pytest.raises(ValidationError) as info:
        await board.submit_many(batch)
    if field is not None:
        assert info.value.field == field
    assert await store.last_seq() == 0


async def test_batches_are_bounded(board: TaskManager, store: Store) -> None:
    with pytest.raises(ValidationError, match=f"at most {MAX_BATCH}") as info:
        await board.submit_many(tasks(MAX_BATCH + 1))
    assert info.value.field == "tasks"
    with pytest.raises(ValidationError) as info:
        await board.report_many(A, [Report(f"t{i}", None, 1) for i in range(MAX_BATCH + 1)])
    assert info.value.field == "reports"
    assert await store.last_seq() == 0


# -- claim_next -----------------------------------------------------------------------------------


async def test_claim_next_takes_visible_tasks_in_board_order_each_with_its_token(
    board: TaskManager, store: Store, clock: ManualClock
) -> None:
    low = await board.submit(Task(objective="low"))
    high = await board.submit(Task(objective="high", priority=5))
    gpu = await board.submit(Task(objective="gpu", pool_id="gpu"))
    render = await board.submit(Task(objective="render", required_capabilities=("render>=2",)))
    claimed = await board.claim_next(A, limit=10)
    # Not the pool's task nor the one needing a capability: A has neither.
    assert [t.id for t in claimed] == [high.id, low.id]
    for task in claimed:
        assert (task.state, task.assigned_to, task.attempts) == (TaskState.CLAIMED, A, 1)
        assert task.lease_expires_at == clock.now() + 10.0
        assert await board.get(task.id) == task
    events = [e for e in await store.read() if e.kind == "task.claimed"]
    assert [(e.subject, e.actor, e.data["attempt"]) for e in events] == [
        (high.id, A, 1),
        (low.id, A, 1),
    ]
    more = await board.claim_next(
        B, limit=10, pool_ids=["gpu"], capabilities=CapabilitySet(["render@2.1.0"])
    )
    assert [t.id for t in more] == [gpu.id, render.id]
    assert await board.claim_next(B, limit=10) == []


async def test_claim_next_stops_at_its_limit(board: TaskManager) -> None:
    submitted = await board.submit_many(tasks(5))
    first = await board.claim_next(A, limit=2)
    second = await board.claim_next(B, limit=2)
    assert [t.id for t in first + second] == [t.id for t in submitted[:4]]
    (last,) = await board.claim_next(A)
    assert last.id == submitted[4].id


async def test_a_claimed_task_is_reported_with_its_own_token(
    board: TaskManager, clock: ManualClock
) -> None:
    (task,) = await board.submit_many(tasks(1))
    (first,) = await board.claim_next(A)
    clock.advance(11)  # the lease runs out; the task is offered again
    await board.release_expired_claims()
    (second,) = await board.claim_next(B)
    assert (first.attempts, second.attempts) == (1, 2)
    with pytest.raises(LeaseLost):
        await board.report(A, task.id, "late", first.attempts)
    done = await board.report(B, task.id, "ok", second.attempts)
    assert done.state is TaskState.COMPLETED


@pytest.mark.parametrize("limit", [0, -1, MAX_BATCH + 1, 1.5, True, "3", None])
async def test_claim_next_refuses_a_bad_limit(board: TaskManager, limit: Any) -> None:
    await board.submit(Task(objective="x"))
    with pytest.raises(ValidationError) as info:
        await board.claim_next(A, limit=limit)
    assert info.value.field == "limit"
    assert len(await board.list_pending_tasks()) == 1


async def test_concurrent_claimers_never_share_a_task(store: Store, clock: ManualClock) -> None:
    # Two managers over one store (two processes, say) and several claimers on each: a task
    # taken by another between the read and the claim is skipped, and every task is taken once.
    boards = [TaskManager(store, clock=clock) for _ in range(2)]
    submitted = await boards[0].submit_many(tasks(60))

    async def claimer(board: TaskManager, agent: str) -> list[str]:
        taken: list[str] = []
        while got := await board.claim_next(agent, limit=7):
            taken.extend(t.id for t in got)
        return taken

    runs = await asyncio.gather(
        *(claimer(boards[i % 2], f"did:key:agent{i}") for i in range(6)),
    )
    taken = [task_id for run in runs for task_id in run]
    assert sorted(taken) == sorted(t.id for t in submitted)
    for i, run in enumerate(runs):
        for task_id in run:
            stored = await store.get_task(task_id)
            assert stored is not None
            assert (stored.assigned_to, stored.attempts) == (f"did:key:agent{i}", 1)


# -- report_many ----------------------------------------------------------------------------------


async def test_report_many_completes_each_task_with_its_result(
    board: TaskManager, store: Store
) -> None:
    await board.submit_many(tasks(3))
    held = await board.claim_next(A, limit=3)
    done = await board.report_many(
        A, [Report(t.id, {"out": t.inputs["i"]}, t.attempts) for t in held]
    )
    assert [(t.id, t.state, t.result) for t in done] == [
        (t.id, TaskState.COMPLETED, {"out": t.inputs["i"]}) for t in held
    ]
    for task in done:
        assert await board.get(task.id) == task
    completed = [e for e in await store.read() if e.kind == "task.completed"]
    assert [(e.subject, e.actor) for e in completed] == [(t.id, A) for t in held]
    # The same reports again are no-ops that return the tasks.
    again = await board.report_many(A, [Report(t.id, t.result, t.attempts) for t in done])
    assert again == done
    assert await store.last_seq() == 9


async def test_refused_reports_are_named_and_the_others_still_completed(
    board: TaskManager, store: Store, clock: ManualClock
) -> None:
    await board.submit_many(tasks(5))
    held = await board.claim_next(A, limit=5)
    ok, stale, lost, cancelled, other = held
    await board.cancel_task(cancelled.id, "withdrawn")
    clock.advance(11)  # every lease runs out; `lost` is retaken by B before A reports
    await board.release_expired_claims()
    await board.claim(B, lost.id)
    # ok, stale and other were released too: A claims them back (attempt 2) ...
    again = {t.id: t for t in await board.claim_next(A, limit=5)}
    assert set(again) == {ok.id, stale.id, other.id}
    await board.report(A, other.id, "first", again[other.id].attempts)
    reports = [
        Report(ok.id, "fine", again[ok.id].attempts),
        Report(stale.id, "old", stale.attempts),  # the token of its first claim
        Report(lost.id, "mine", lost.attempts),
        Report(cancelled.id, "too late", cancelled.attempts),
        Report(other.id, "second", again[other.id].attempts),  # a different result
        Report("no-such-task", "?", 1),
    ]
    with pytest.raises(ReportsRefused) as info:
        await board.report_many(A, reports)
    refused = info.value.refused
    assert [t.id for t in info.value.completed] == [ok.id]
    assert isinstance(refused[stale.id], LeaseLost)
    assert isinstance(refused[lost.id], LeaseLost)
    assert refused[lost.id].holder == B  # type: ignore[attr-defined]
    assert isinstance(refused[cancelled.id], InvalidTransition)
    assert type(refused[other.id]) is StateError
    assert isinstance(refused["no-such-task"], ValidationError)
    assert set(refused) == {stale.id, lost.id, cancelled.id, other.id, "no-such-task"}
    assert f"5 of 6 reports refused (1 completed): {stale.id}:" in str(info.value)
    done = await board.get(ok.id)
    assert done is not None and (done.state, done.result) == (TaskState.COMPLETED, "fine")
    still = await board.get(stale.id)
    assert still is not None and still.state is TaskState.CLAIMED  # its new claim holds


async def test_a_report_judged_by_a_stale_copy_is_judged_again_by_the_store(
    store: Store, clock: ManualClock
) -> None:
    mine, theirs = TaskManager(store, clock=clock), TaskManager(store, clock=clock)
    await mine.submit_many(tasks(2))
    first, second = await mine.claim_next(A, limit=2)
    await theirs.heartbeat(A, first.id, first.attempts)  # mine's copy of `first` is now stale
    done = await mine.report_many(
        A, [Report(first.id, 1, first.attempts), Report(second.id, 2, second.attempts)]
    )
    assert [(t.id, t.result) for t in done] == [(first.id, 1), (second.id, 2)]
    assert [e.kind for e in await store.read() if e.subject == first.id] == [
        "task.submitted",
        "task.claimed",
        "task.heartbeat",
        "task.completed",
    ]


@pytest.mark.parametrize(
    ("reports", "field"),
    [
        ([], "reports"),
        ("not a list", "reports"),
        ({"t": 1}, "reports"),
        ([("task", "result", 1)], "reports[0]"),
        ([Report("", 1, 1)], "reports[0].task_id"),
        ([Report(7, 1, 1)], "reports[0].task_id"),  # type: ignore[arg-type]
        ([Report("t", 1, 0)], "reports[0].token"),
        ([Report("t", 1, True)], "reports[0].token"),
        ([Report("t", 1, "1")], "reports[0].token"),  # type: ignore[arg-type]
        ([Report("t", 1, 1), Report("t", 2, 1)], "reports[1].task_id"),
    ],
)
async def test_report_many_refuses_bad_batches_before_writing(
    board: TaskManager, store: Store, reports: Any, field: str
) -> None:
    (task,) = await board.submit_many(tasks(1))
    await board.claim(A, task.id)
    seen = await store.last_seq()
    with pytest.raises(ValidationError) as info:
        await board.report_many(A, reports)
    assert info.value.field == field
    assert await store.last_seq() == seen


async def test_an_unencodable_result_fails_the_batch_and_writes_nothing(
    board: TaskManager, store: Store
) -> None:
    await board.submit_many(tasks(2))
    first, second = await board.claim_next(A, limit=2)
    seen = await store.last_seq()
    with pytest.raises(ValidationError):
        await board.report_many(
            A, [Report(first.id, 1, first.attempts), Report(second.id, object(), 1)]
        )
    assert await store.last_seq() == seen
    assert (await board.report_many(A, [Report(first.id, 1, first.attempts)]))[0].result == 1


async def test_claim_next_among_chosen_tasks_takes_only_those_it_may(board: TaskManager) -> None:
    first, second, third = await board.submit_many(tasks(3))
    pooled = await board.submit(Task(objective="pooled", pool_id="gpu"))
    await board.claim(B, second.id)
    claimed = await board.claim_next(
        A, limit=5, among=[third.id, second.id, pooled.id, "no-such-task", first.id, third.id]
    )
    # In the order given; the held, the invisible and the unknown ones left out.
    assert [t.id for t in claimed] == [third.id, first.id]
    assert [t.id for t in await board.list_pending_tasks()] == [pooled.id]


@pytest.mark.parametrize(("among", "field"), [("abc", "among"), ([1], "among[0]"), (5, "among")])
async def test_claim_next_refuses_a_bad_among(board: TaskManager, among: Any, field: str) -> None:
    await board.submit(Task(objective="x"))
    with pytest.raises(ValidationError) as info:
        await board.claim_next(A, limit=2, among=among)
    assert info.value.field == field
