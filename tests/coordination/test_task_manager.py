"""The task board as agents use it: leases, fencing tokens, visibility, idempotent reports."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from converge.coordination import LeaseLost, TaskManager
from converge.core.capability import CapabilitySet
from converge.core.clock import ManualClock
from converge.core.task import Task, TaskState
from converge.errors import (
    InvalidTransition,
    PolicyViolation,
    StateError,
    TaskConflict,
    ValidationError,
)
from converge.store import Store

A, B = "did:key:z6MkAgentA", "did:key:z6MkAgentB"


@pytest.fixture
def board(store: Store, clock: ManualClock) -> TaskManager:
    return TaskManager(store, claim_ttl_sec=10.0, clock=clock)


async def kinds(store: Store, task_id: str) -> list[str]:
    return [e.kind for e in await store.read() if e.subject == task_id]


async def test_a_task_lives_submit_claim_start_heartbeat_report(
    board: TaskManager, store: Store, clock: ManualClock
) -> None:
    task = await board.submit(Task(objective="sum", inputs={"xs": [1, 2]}))
    assert task.trace_id == task.id
    token = await board.claim(A, task.id)
    assert token == 1
    held = await board.get(task.id)
    assert held is not None
    assert (held.state, held.assigned_to, held.lease_expires_at) == (
        TaskState.CLAIMED,
        A,
        clock.now() + 10.0,
    )
    assert (await board.start(A, task.id, token)).state is TaskState.RUNNING
    clock.advance(8)
    assert await board.heartbeat(A, task.id, token) == clock.now() + 10.0
    done = await board.report(A, task.id, {"sum": 3}, token)
    assert (done.state, done.result, done.lease_expires_at) == (
        TaskState.COMPLETED,
        {"sum": 3},
        None,
    )
    assert await kinds(store, task.id) == [
        "task.submitted",
        "task.claimed",
        "task.started",
        "task.heartbeat",
        "task.completed",
    ]
    events = await store.read(trace_id=task.id)
    assert {e.actor for e in events[1:]} == {A}


async def test_only_the_holder_with_the_current_token_may_act(
    board: TaskManager, clock: ManualClock
) -> None:
    task = await board.submit(Task(objective="x", max_attempts=5))
    old = await board.claim(A, task.id)
    with pytest.raises(LeaseLost) as other:
        await board.report(B, task.id, "forged", old)
    assert other.value.holder == A
    clock.advance(11)
    assert len(await board.release_expired_claims()) == 1
    new = await board.claim(A, task.id)  # the same agent, a new attempt
    assert new == old + 1
    for act in (
        lambda: board.report(A, task.id, "late", old),
        lambda: board.heartbeat(A, task.id, old),
        lambda: board.start(A, task.id, old),
    ):
        with pytest.raises(LeaseLost) as stale:
            await act()
        assert "stale" in str(stale.value)
    assert (await board.report(A, task.id, "ok", new)).result == "ok"


async def test_reports_are_idempotent_and_checked_against_state(board: TaskManager) -> None:
    task = await board.submit(Task(objective="x"))
    token = await board.claim(A, task.id)
    first = await board.report(A, task.id, {"v": 1}, token)
    assert await board.report(A, task.id, {"v": 1}, token) == first  # same report: no-op
    with pytest.raises(StateError, match="different report"):
        await board.report(A, task.id, {"v": 2}, token)
    failed = await board.submit(Task(objective="y"))
    token = await board.claim(A, failed.id)
    await board.fail_task(failed.id, "broke", agent_id=A, token=token)
    with pytest.raises(InvalidTransition) as info:
        await board.report(A, failed.id, "too late", token)
    assert "failed -> completed" in str(info.value)
    cancelled = await board.submit(Task(objective="z"))
    token = await board.claim(A, cancelled.id)
    await board.cancel_task(cancelled.id, "not needed")
    with pytest.raises(InvalidTransition):
        await board.report(A, cancelled.id, "x", token)
    assert (await board.cancel_task(cancelled.id)).state is TaskState.CANCELLED  # again: no-op


async def test_claims_check_pools_and_capabilities(board: TaskManager) -> None:
    pooled = await board.submit(Task(objective="p", pool_id="gpu"))
    needs = await board.submit(Task(objective="n", required_capabilities=("summarize>=2",)))
    with pytest.raises(PolicyViolation, match="not a member of pool gpu"):
        await board.claim(A, pooled.id)
    with pytest.raises(PolicyViolation, match="missing capabilities summarize>=2"):
        await board.claim(A, needs.id, capabilities=["summarize@1.5.0"])
    assert await board.claim(A, pooled.id, pool_ids=["gpu"]) == 1
    assert await board.claim(B, needs.id, capabilities=["summarize@2.1.0"]) == 1
    with pytest.raises(InvalidTransition) as info:
        await board.claim(B, pooled.id, pool_ids=["gpu"])  # already claimed
    assert str(info.value) == f"task {pooled.id} is claimed by {A} (attempt 1): not pending"
    with pytest.raises(ValidationError):
        await board.claim(A, "no-such-task")


class _Directory:
    def __init__(self, pools: dict[str, list[str]], caps: dict[str, CapabilitySet]) -> None:
        self.pools, self.caps = pools, caps

    async def get_pools_for_agent(self, agent_id: str) -> list[str]:
        return self.pools.get(agent_id, [])

    async def capabilities_of(self, agent_id: str) -> CapabilitySet | None:
        return self.caps.get(agent_id)


async def test_claims_consult_membership_and_directory(store: Store, clock: ManualClock) -> None:
    directory = _Directory({A: ["gpu"]}, {A: CapabilitySet(["render@1.0.0"])})
    board = TaskManager(store, clock=clock, membership=directory, directory=directory)
    task = await board.submit(Task(objective="r", pool_id="gpu", required_capabilities=("render",)))
    with pytest.raises(PolicyViolation):
        await board.claim(B, task.id)
    assert await board.claim(A, task.id) == 1


async def test_racing_claims_have_one_winner(board: TaskManager) -> None:
    task = await board.submit(Task(objective="x"))
    results = await asyncio.gather(
        *(board.claim(f"agent-{i}", task.id) for i in range(10)), return_exceptions=True
    )
    assert sum(1 for r in results if r == 1) == 1
    assert all(isinstance(r, (TaskConflict, InvalidTransition)) for r in results if r != 1)


async def test_expired_leases_return_to_pending_then_fail_past_max_attempts(
    board: TaskManager, store: Store, clock: ManualClock
) -> None:
    task = await board.submit(Task(objective="x", max_attempts=2))
    await board.claim(A, task.id)
    clock.advance(9.9)
    assert await board.release_expired_claims() == []  # not yet
    clock.advance(0.2)
    [released] = await board.release_expired_claims()
    assert (released.state, released.attempts, released.assigned_to) == (TaskState.PENDING, 1, None)
    await board.claim(B, task.id)
    clock.advance(11)
    [failed] = await board.release_expired_claims()
    assert failed.state is TaskState.FAILED
    assert failed.error == "lease expired on attempt 2 of 2"
    assert await kinds(store, task.id) == [
        "task.submitted",
        "task.claimed",
        "task.released",
        "task.claimed",
        "task.failed",
    ]


async def test_a_heartbeat_keeps_the_lease(board: TaskManager, clock: ManualClock) -> None:
    task = await board.submit(Task(objective="x"))
    token = await board.claim(A, task.id)
    for _ in range(5):
        clock.advance(8)
        await board.heartbeat(A, task.id, token)
        assert await board.release_expired_claims() == []
    assert (await board.report(A, task.id, "ok", token)).state is TaskState.COMPLETED


async def test_now_from_time_monotonic_is_translated_to_the_boards_clock(
    board: TaskManager, clock: ManualClock
) -> None:
    task = await board.submit(Task(objective="x"))
    await board.claim(A, task.id)  # the lease ends 10 s from now on the board's clock
    clock.advance(9.9)
    assert await board.release_expired_claims(time.monotonic()) == []  # seed 001's call
    clock.advance(0.2)
    # read 5 s ago on the monotonic clock: 4.9 s before the lease ended on the board's
    assert await board.release_expired_claims(time.monotonic() - 5) == []
    [released] = await board.release_expired_claims(time.monotonic())
    assert released.state is TaskState.PENDING
    assert released.updated_at == pytest.approx(clock.now(), abs=1.0)  # in the board's time


async def test_now_on_the_boards_clock_is_used_as_is(
    board: TaskManager, clock: ManualClock
) -> None:
    task = await board.submit(Task(objective="x"))
    await board.claim(A, task.id)
    assert await board.release_expired_claims(clock.now() + 9.9) == []
    [released] = await board.release_expired_claims(clock.now() + 10.1)
    assert released.updated_at == clock.now() + 10.1


@pytest.mark.parametrize("now", [12.5, 1e6, -3.0, float("nan"), float("inf"), True, "1"])
async def test_now_on_neither_clock_is_refused(board: TaskManager, now: object) -> None:
    with pytest.raises(ValidationError) as info:
        await board.release_expired_claims(now)  # type: ignore[arg-type]
    assert info.value.field == "now"
    assert "neither the board's clock" in str(info.value) or "finite number" in str(info.value)


class OffsetMonotonic:
    """A clock that reads ``time.monotonic() + offset`` (0: the monotonic clock itself)."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.monotonic() + self.offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def test_a_board_clock_close_to_time_monotonic_refuses_the_ambiguous_now(
    store: Store,
) -> None:
    # A board clock that started near 0 reads close to time.monotonic() (seconds since boot):
    # a `now` within both clocks' windows could be either, and the two readings differ.
    near = TaskManager(store, claim_ttl_sec=10.0, clock=OffsetMonotonic(-600.0))
    with pytest.raises(ValidationError, match="ambiguous") as info:
        await near.release_expired_claims(time.monotonic())
    assert info.value.field == "now"
    assert await near.release_expired_claims(None) == []
    assert await near.release_expired_claims(near.clock.now()) == []  # 600 s from monotonic
    # the board's clock is the monotonic clock: both readings agree, nothing to tell apart
    same = TaskManager(store, claim_ttl_sec=10.0, clock=OffsetMonotonic(0.0))
    task = await same.submit(Task(objective="x"))
    await same.claim(A, task.id)
    assert await same.release_expired_claims(time.monotonic()) == []
    [released] = await same.release_expired_claims(time.monotonic() + 11)
    assert released.id == task.id


async def test_visible_tasks_with_no_pool_and_no_capability_filter(board: TaskManager) -> None:
    tasks = [
        await board.submit(Task(objective="open", priority=1)),
        await board.submit(Task(objective="pool-a", pool_id="a", priority=3)),
        await board.submit(Task(objective="needs-sum", required_capabilities=("sum",), priority=2)),
    ]
    everything = await board.list_pending_tasks_for_agent(A, None, None)  # seed 001's form
    assert [t.id for t in everything] == [tasks[1].id, tasks[2].id, tasks[0].id]
    any_pool = await board.list_pending_tasks_for_agent(A, None, [])
    assert [t.objective for t in any_pool] == ["pool-a", "open"]
    any_capability = await board.list_pending_tasks_for_agent(A, [], None)
    assert [t.objective for t in any_capability] == ["needs-sum", "open"]
    assert [t.objective for t in await board.list_pending_tasks_for_agent(A, None, None, 1)] == [
        "pool-a"
    ]


async def test_visible_tasks_respect_pools_capabilities_priority_and_limit(
    board: TaskManager,
) -> None:
    tasks = [
        await board.submit(Task(objective="open-low", priority=1)),
        await board.submit(Task(objective="open-high", priority=9)),
        await board.submit(Task(objective="pool-a", pool_id="a", priority=5)),
        await board.submit(Task(objective="pool-b", pool_id="b", priority=7)),
        await board.submit(
            Task(objective="needs-v2", required_capabilities=("sum>=2",), priority=8)
        ),
        await board.submit(
            Task(objective="needs-two", required_capabilities=("sum", "tr"), priority=6)
        ),
    ]
    visible = await board.list_pending_tasks_for_agent(A, ["a"], ["sum@1.0.0", "tr"])
    assert [t.objective for t in visible] == ["open-high", "needs-two", "pool-a", "open-low"]
    top = await board.list_pending_tasks_for_agent(A, ["a"], ["sum@1.0.0", "tr"], limit=2)
    assert [t.objective for t in top] == ["open-high", "needs-two"]
    assert [t.objective for t in await board.list_pending_tasks(limit=3)] == [
        "open-high",
        "needs-v2",
        "pool-b",
    ]
    assert len(await board.list_pending_tasks()) == len(tasks)


async def test_visibility_pages_past_tasks_filtered_out(board: TaskManager) -> None:
    # 30 tasks indexed under `sum` need v2; the agent has v1, so it must page past them.
    for i in range(30):
        await board.submit(Task(objective=f"v2-{i}", required_capabilities=("sum>=2",), priority=5))
    for i in range(3):
        await board.submit(Task(objective=f"v1-{i}", required_capabilities=("sum",), priority=1))
    got = await board.list_pending_tasks_for_agent(A, [], ["sum@1.0.0"], limit=2)
    assert [t.objective for t in got] == ["v1-0", "v1-1"]


async def test_wait_returns_when_the_task_ends(board: TaskManager) -> None:
    task = await board.submit(Task(objective="x"))
    waiter = asyncio.ensure_future(board.wait(task.id, timeout=10))
    token = await board.claim(A, task.id)
    await board.report(A, task.id, 42, token)
    assert (await waiter).result == 42
    other = await board.submit(Task(objective="y"))
    with pytest.raises(TimeoutError):
        await board.wait(other.id, timeout=0.05)


async def test_bad_submissions_are_refused(board: TaskManager) -> None:
    with pytest.raises(ValidationError):
        await board.submit(Task(objective="x", required_capabilities=("Not A Name!",)))
    with pytest.raises(ValidationError):
        await board.submit(Task(objective="x", state=TaskState.CLAIMED))
    task = await board.submit(Task(objective="x"))
    with pytest.raises(TaskConflict):
        await board.submit(Task(objective="again", id=task.id))
    with pytest.raises(ValidationError):
        TaskManager(board.store, claim_ttl_sec=0)


async def test_lease_chaos_every_task_completes_exactly_once(
    board: TaskManager, store: Store, clock: ManualClock
) -> None:
    """2,000 tasks, 10 workers, 3 of which stop mid-task without a word."""
    total = 2000
    for i in range(total):
        await board.submit(Task(objective=f"job-{i}", inputs={"i": i}, max_attempts=3))
    workers = [f"did:key:z6MkWorker{i}" for i in range(10)]
    crashers = set(workers[:3])
    stale: list[tuple[str, str, int]] = []  # (worker, task, token) a stopped worker still holds

    async def work(worker: str) -> None:
        done = 0
        for _ in range(total):  # bounded
            visible = await board.list_pending_tasks_for_agent(worker, [], [], limit=5)
            if not visible:
                return
            for task in visible:
                try:
                    token = await board.claim(worker, task.id)
                except (TaskConflict, InvalidTransition):
                    continue
                if worker in crashers and done >= 20:
                    stale.append((worker, task.id, token))
                    return  # stops mid-task, holding the lease
                await board.report(worker, task.id, {"by": worker, "i": task.inputs["i"]}, token)
                done += 1
                break

    for _ in range(10):  # rounds: run the live workers, then let expired leases go back
        await asyncio.gather(*(work(w) for w in workers if w not in {s[0] for s in stale}))
        if not await board.list_pending_tasks(limit=1) and not await store.expiring_tasks(
            clock.now() + 1e6, limit=1
        ):
            break
        clock.advance(11)
        await board.release_expired_claims()
    assert len(stale) == 3
    completions = Counter(e.subject for e in await store.read(kinds=["task.completed"]))
    assert len(completions) == total
    assert set(completions.values()) == {1}
    for worker, task_id, token in stale:
        task = await board.get(task_id)
        assert task is not None
        assert task.state is TaskState.COMPLETED
        assert task.attempts == 2  # the stopped worker's attempt was counted
        assert task.assigned_to != worker or task.attempts != token
        with pytest.raises(LeaseLost):  # its late report is refused
            await board.report(worker, task_id, "late", token)
        assert (await board.get(task_id)) == task


async def test_the_board_survives_a_reopen_from_disk(tmp_path: object, clock: ManualClock) -> None:
    from pathlib import Path

    from converge.store import SQLiteStore

    path = Path(str(tmp_path)) / "board.db"
    async with await SQLiteStore.open(path) as store:
        board = TaskManager(store, claim_ttl_sec=10.0, clock=clock)
        done = await board.submit(Task(objective="done"))
        await board.report(A, done.id, "ok", await board.claim(A, done.id))
        held = await board.submit(Task(objective="held", pool_id="p"))
        token = await board.claim(B, held.id, pool_ids=["p"])
        waiting = await board.submit(Task(objective="waiting", priority=3))
        before = {t.id: await board.get(t.id) for t in (done, held, waiting)}
        events = await store.read()
    async with await SQLiteStore.open(path) as store:
        board = TaskManager(store, claim_ttl_sec=10.0, clock=clock)
        assert {t: await board.get(t) for t in before} == before
        assert await store.read() == events
        assert [t.id for t in await board.list_pending_tasks()] == [waiting.id]
        # the lease taken before the restart still expires, and still fences the old holder
        clock.advance(11)
        [released] = await board.release_expired_claims()
        assert released.id == held.id
        with pytest.raises(LeaseLost):
            await board.report(B, held.id, "late", token)


# -- a manager's own copies never outvote the store ------------------------------------------------


async def test_a_stale_copy_never_wins_over_another_managers_writes(
    store: Store, clock: ManualClock
) -> None:
    # Two managers on one store (two processes, in effect): `here` remembers the task as it
    # last wrote it; `there` moves it on behind its back.
    here = TaskManager(store, claim_ttl_sec=10.0, clock=clock)
    there = TaskManager(store, claim_ttl_sec=10.0, clock=clock)
    task = await here.submit(Task(objective="x"))
    token = await here.claim(A, task.id)
    await here.start(A, task.id, token)
    clock.advance(11)
    assert [t.id for t in await there.release_expired_claims()] == [task.id]
    assert await there.claim(B, task.id) == 2
    # A's old lease: every act through `here` is judged by the store, not by its copy
    with pytest.raises(LeaseLost) as lost:
        await here.report(A, task.id, "late", token)
    assert lost.value.holder == B
    with pytest.raises(LeaseLost):
        await here.heartbeat(A, task.id, token)
    with pytest.raises(LeaseLost):
        await here.start(A, task.id, token)
    # and the rightful holder reports through `here`, which has never seen its claim
    done = await here.report(B, task.id, "on time", 2)
    assert (done.state, done.result, done.assigned_to) == (TaskState.COMPLETED, "on time", B)
    assert await here.report(B, task.id, "on time", 2) == done  # idempotent, from the store
    stored = await store.get_task(task.id)
    assert stored is not None and stored.result == "on time"


async def test_a_claim_from_a_stale_copy_gets_the_stores_answer(
    store: Store, clock: ManualClock
) -> None:
    here = TaskManager(store, clock=clock)
    there = TaskManager(store, clock=clock)
    cancelled = await here.submit(Task(objective="withdrawn"))
    await there.cancel_task(cancelled.id, "no longer needed")
    with pytest.raises(InvalidTransition) as info:
        await here.claim(A, cancelled.id)
    assert info.value.from_state == TaskState.CANCELLED
    taken = await here.submit(Task(objective="contested"))
    await there.claim(B, taken.id)
    with pytest.raises(InvalidTransition):
        await here.claim(A, taken.id)
    # a task released elsewhere is claimable again through a manager whose copy says CLAIMED
    mine = await here.submit(Task(objective="mine"))
    assert await here.claim(A, mine.id) == 1
    clock.advance(3600)
    await there.release_expired_claims()
    assert await here.claim(B, mine.id) == 2


async def test_start_on_a_remembered_running_task_asks_the_store(
    store: Store, clock: ManualClock
) -> None:
    here = TaskManager(store, claim_ttl_sec=10.0, clock=clock)
    there = TaskManager(store, claim_ttl_sec=10.0, clock=clock)
    task = await here.submit(Task(objective="x"))
    token = await here.claim(A, task.id)
    await here.start(A, task.id, token)
    assert (await here.start(A, task.id, token)).state is TaskState.RUNNING
    clock.advance(11)
    await there.release_expired_claims()
    with pytest.raises(InvalidTransition) as info:  # the store's answer: it is PENDING again
        await here.start(A, task.id, token)
    assert info.value.from_state == TaskState.PENDING


async def test_a_follower_ends_quietly_when_its_store_closes(tmp_path: object) -> None:
    from pathlib import Path

    from converge.store import SQLiteStore

    store = await SQLiteStore.open(Path(str(tmp_path)) / "f.db")
    board = TaskManager(store)
    async with board.following():
        follower = board._follow_task
        assert follower is not None
        await store.aclose()  # the store goes first, as in a hurried shutdown
        await asyncio.wait([follower], timeout=5)
        assert follower.done() and not follower.cancelled()
        assert follower.exception() is None
