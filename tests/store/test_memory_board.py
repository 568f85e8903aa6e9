"""The memory board's indexes: the lease heap's lazy deletion and the pending index's kept
empty lists stay correct and bounded."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from converge.core.task import Task, TaskState
from converge.protocol.event import Event
from converge.store._memory_board import MemoryBoard, _PendingList
from converge.store._memory_log import MemoryLog
from converge.store.base import TaskOp, task_op


def _write(board: MemoryBoard, op: TaskOp) -> Task:
    return board.write(op.task, op.body, op.expected_state, op.expected_attempts)


def _claim(board: MemoryBoard, task: Task, lease: float) -> Task:
    held = task.transition(
        TaskState.CLAIMED,
        at=0.0,
        attempts=task.attempts + 1,
        assigned_to="a",
        lease_expires_at=lease,
    )
    return _write(board, task_op(held, task.state, task.attempts))


def test_finished_leases_leave_the_heap_bounded_and_unseen() -> None:
    board = MemoryBoard()
    kept: list[Task] = []
    for i in range(5000):
        task = _write(board, task_op(Task(objective=f"t{i}"), None, 0))
        held = _claim(board, task, lease=100.0 + i)
        if i % 2000 == 0:
            kept.append(held)
            continue
        done = held.transition(TaskState.COMPLETED, at=1.0, lease_expires_at=None)
        _write(board, task_op(done, held.state, held.attempts))
    assert len(board._leases) <= 2 * len(kept) + 1024 + 1
    assert [t.id for t in board.expiring(1e9, limit=100)] == [t.id for t in kept]
    assert [t.id for t in board.expiring(100.0, limit=100)] == [kept[0].id]


def test_a_lease_renewed_or_retaken_at_the_same_time_is_listed_once() -> None:
    board = MemoryBoard()
    task = _write(board, task_op(Task(objective="t"), None, 0))
    held = _claim(board, task, lease=50.0)
    renewed = held.transition(TaskState.RUNNING, at=1.0)  # same lease, new state
    renewed = _write(board, task_op(renewed, held.state, held.attempts))
    released = renewed.transition(
        TaskState.PENDING, at=2.0, assigned_to=None, lease_expires_at=None
    )
    released = _write(board, task_op(released, renewed.state, renewed.attempts))
    again = _claim(board, released, lease=50.0)  # the same expiry as the first lease
    found = board.expiring(60.0, limit=10)
    assert [(t.id, t.attempts) for t in found] == [(again.id, 2)]
    assert board.expiring(60.0, limit=10) == found  # reading does not consume


def test_emptied_pending_lists_are_reused_then_swept_and_never_listed() -> None:
    board = MemoryBoard()
    waiting: list[Task] = []
    for i in range(3000):
        task = _write(board, task_op(Task(objective=f"t{i}", pool_id=f"pool-{i}"), None, 0))
        if i % 1000 == 0:
            waiting.append(task)  # stays pending: its list is never empty
            continue
        _claim(board, task, lease=100.0)
        again = _write(board, task_op(Task(objective=f"u{i}", pool_id=f"pool-{i}"), None, 0))
        _claim(board, again, lease=100.0)  # the emptied list was taken again, then emptied
    assert len(board._pending) <= len(waiting) + 1024 + 1
    assert [t.id for t in board.pending(None, None, 100, None)] == [t.id for t in waiting]
    pools = [f"pool-{i}" for i in range(3000)]
    assert [t.id for t in board.pending(pools, [None], 100, None)] == [t.id for t in waiting]
    late = _write(board, task_op(Task(objective="late", pool_id="pool-1"), None, 0))
    assert [t.id for t in board.pending(["pool-1"], [None], 100, None)] == [late.id]


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "remove", "read"]),
            st.integers(min_value=-2, max_value=2),  # priority
            st.integers(min_value=0, max_value=40),  # id
        ),
        max_size=300,
    )
)
def test_a_pending_list_reads_as_a_sorted_set_of_its_live_entries(
    steps: list[tuple[str, int, int]],
) -> None:
    # Adds in and out of order, removals from the front and the middle, entries that come back,
    # reads from any point: the list always reads as the sorted set it stands for.
    pending = _PendingList()
    model: set[tuple[int, str]] = set()
    for action, priority, number in steps:
        key = (-priority, f"{number:03d}")
        if action == "add" and key not in model:
            pending.add(key)
            model.add(key)
        elif action == "remove" and model:
            victim = key if key in model else min(model)  # often the first, as a board takes
            pending.remove(victim)
            model.discard(victim)
        start = None if action != "read" else key
        expected = sorted(k for k in model if start is None or k > start)
        assert list(pending.after(start)) == expected
        assert pending.size == len(model)


def test_a_pending_list_compacts_what_it_dropped() -> None:
    pending = _PendingList()
    keys = [(0, f"{i:05d}") for i in range(5000)]
    for key in keys:
        pending.add(key)
    for key in keys[:3000]:  # taken from the front
        pending.remove(key)
    for key in keys[3001:4999:2]:  # taken from the middle
        pending.remove(key)
    live = [keys[3000], *keys[3002:4999:2], keys[4999]]
    assert list(pending.after(None)) == live
    assert len(pending.items) - pending.start <= 2 * len(live) + 1024
    assert len(pending.dead) <= 1024 or 2 * len(pending.dead) <= len(pending.items)


@settings(max_examples=100)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3)), max_size=40))
def test_the_event_log_keeps_exactly_what_it_commits(steps: list[tuple[bool, int]]) -> None:
    log = MemoryLog()
    model: list[Event] = []
    made = 0
    for commit, count in steps:
        events = [Event(kind="task.x", trace_id=f"t{made + i}") for i in range(count)]
        made += count
        ends = log.stage(events)
        if commit:
            wanted = [i % 2 == 0 for i in range(count)]  # keep some, drop others
            kept = [e for e, w in zip(events, wanted, strict=True) if w]
            log.commit(kept, log.keep(ends, wanted))
            model.extend(kept)
        else:
            log.discard()
    assert len(log) == len(model)
    for seq, event in enumerate(model, start=1):
        assert log.event(seq) == msgspec.structs.replace(event, seq=seq)
        assert log.kind(seq) == event.kind
    for seq, event in enumerate(model, start=1):
        assert log.by_trace(event.trace_id) == [seq]
