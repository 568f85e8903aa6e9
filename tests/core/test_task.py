"""Tasks and the one table of moves between their states."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converge.core import TERMINAL_STATES, Task, TaskState, check_transition
from converge.core.task import _TRANSITIONS
from converge.errors import InvalidTransition, StateError, ValidationError

S = TaskState

# The lifecycle the issue describes, written out independently of src's table.
EXPECTED_MOVES = {
    (S.PENDING, S.CLAIMED),
    (S.PENDING, S.CANCELLED),
    (S.PENDING, S.FAILED),
    (S.CLAIMED, S.RUNNING),
    (S.CLAIMED, S.COMPLETED),
    (S.CLAIMED, S.FAILED),
    (S.CLAIMED, S.PENDING),
    (S.CLAIMED, S.CANCELLED),
    (S.RUNNING, S.COMPLETED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.PENDING),
    (S.RUNNING, S.CANCELLED),
}


def test_states_are_the_six_of_the_issue() -> None:
    assert [s.value for s in S] == [
        "pending",
        "claimed",
        "running",
        "completed",
        "failed",
        "cancelled",
    ]


def test_transition_table_is_the_documented_lifecycle() -> None:
    assert set(_TRANSITIONS) == set(S)
    assert {(a, b) for a, nxt in _TRANSITIONS.items() for b in nxt} == EXPECTED_MOVES


def test_terminal_states_have_no_moves() -> None:
    assert frozenset({S.COMPLETED, S.FAILED, S.CANCELLED}) == TERMINAL_STATES
    for state in TERMINAL_STATES:
        assert not _TRANSITIONS[state]
        for target in S:
            with pytest.raises(InvalidTransition):
                check_transition(state, target)


@settings(max_examples=300)
@given(st.lists(st.sampled_from(list(S)), max_size=20), st.floats(0, 1e9))
def test_transition_succeeds_iff_the_table_allows_it(targets: list[TaskState], t0: float) -> None:
    task = Task(objective="summarize", created_at=t0, updated_at=t0)
    for step, target in enumerate(targets, start=1):
        at = t0 + step
        before = task
        if target in _TRANSITIONS[task.state]:
            task = task.transition(target, at=at)
            assert task.state is target
            assert task.updated_at == at
            assert task.id == before.id
            assert task.created_at == before.created_at
            assert task.is_terminal == (target in TERMINAL_STATES)
        else:
            with pytest.raises(InvalidTransition) as info:
                task.transition(target, at=at)
            err = info.value
            assert isinstance(err, StateError)
            assert err.from_state is before.state
            assert err.to_state is target
            assert err.subject == task.id
            assert f"{before.state.value} -> {target.value}" in str(err)
            assert task.id in str(err)
            assert task == before  # a refused move changes nothing


def test_transition_applies_changes() -> None:
    task = Task(objective="o", created_at=1.0, updated_at=1.0)
    claimed = task.transition(
        S.CLAIMED, at=2.0, assigned_to="did:key:x", attempts=1, lease_expires_at=32.0
    )
    assert claimed.assigned_to == "did:key:x"
    assert claimed.attempts == 1
    assert claimed.lease_expires_at == 32.0
    done = claimed.transition(S.COMPLETED, at=3.0, result={"ok": True})
    assert done.result == {"ok": True}
    assert done.is_terminal
    assert task.state is S.PENDING  # frozen: the original is unchanged


def test_invalid_transition_message_names_both_states() -> None:
    with pytest.raises(InvalidTransition) as info:
        check_transition(S.PENDING, S.RUNNING, "task-1")
    assert str(info.value) == "invalid transition for task-1: pending -> running"


def test_task_fields_of_the_issue() -> None:
    assert set(Task.__struct_fields__) >= {
        "id",
        "objective",
        "inputs",
        "pool_id",
        "required_capabilities",
        "priority",
        "state",
        "assigned_to",
        "attempts",
        "max_attempts",
        "lease_expires_at",
        "result",
        "error",
        "created_at",
        "updated_at",
    }


def test_task_round_trips_through_msgpack() -> None:
    task = Task(objective="o", inputs={"a": [1, 2]}, required_capabilities=("x>=1",), priority=3)
    task = task.transition(S.CLAIMED, at=5.0, assigned_to="did:key:z", attempts=1)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(task), type=Task) == task


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"objective": ""}, "objective"),
        ({"objective": "o", "max_attempts": 0}, "max_attempts"),
        ({"objective": "o", "max_attempts": -1}, "max_attempts"),
    ],
)
def test_invalid_task(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Task(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
