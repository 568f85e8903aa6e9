"""Decisions: one tagged union, built from plain data with errors that name the field."""

from __future__ import annotations

import typing
from typing import Any

import msgspec
import pytest

from converge.core import (
    DECISION_TYPES,
    AcceptProposal,
    CancelTask,
    ClaimTask,
    CreatePool,
    Decision,
    Delegate,
    FailTask,
    InvokeTool,
    JoinPool,
    LeavePool,
    Propose,
    RejectProposal,
    ReportTask,
    RevokeDelegation,
    SendMessage,
    SubmitBid,
    SubmitTask,
    Vote,
    decision_from_builtins,
)
from converge.errors import ValidationError

EXAMPLES: list[Any] = [
    SendMessage(kind="chat", payload={"text": "hi", "n": [1, 2.5]}, topic="room"),
    SendMessage(kind="chat", recipient="did:key:z6Mkx", trace_id="t", parent_id="p"),
    JoinPool(pool_id="p1", credentials={"token": "abc"}),
    LeavePool(pool_id="p1"),
    CreatePool(
        name="gpu",
        pool_id="gpu-1",
        description="d",
        admission={"kind": "allowlist", "members": ["a"]},
        governance={"kind": "democratic"},
        required_capabilities=("gpu>=1",),
    ),
    SubmitTask(
        objective="o",
        inputs={"x": 1},
        pool_id="p",
        required_capabilities=("a", "b"),
        priority=5,
        max_attempts=2,
    ),
    ClaimTask(task_id="t1"),
    ReportTask(task_id="t1", result={"answer": 42}, token=3),
    CancelTask(task_id="t1", reason="no longer needed"),
    FailTask(task_id="t1", reason="broke"),
    SubmitBid(auction_id="a1", amount=2.5, terms={"latency_s": 3}),
    Vote(ballot_id="b1", choice="yes"),
    Propose(session_id="s1", terms={"price": 10}, parties=("did:a", "did:b")),
    AcceptProposal(session_id="s1", proposal_id="p2"),
    RejectProposal(session_id="s1", reason="too expensive"),
    Delegate(to="did:key:z6Mkd", scope=("claim_task", "report_task"), expires_at=100.0),
    RevokeDelegation(delegation_id="d1"),
    InvokeTool(tool="search", arguments={"q": "converge"}),
]

SEED_NAMES = {
    "SendMessage",
    "JoinPool",
    "LeavePool",
    "CreatePool",
    "SubmitTask",
    "ClaimTask",
    "ReportTask",
    "SubmitBid",
    "Vote",
    "Propose",
    "AcceptProposal",
    "RejectProposal",
    "Delegate",
    "RevokeDelegation",
    "InvokeTool",
    "CancelTask",
    "FailTask",
}


def test_every_decision_of_the_issue_is_in_the_union() -> None:
    classes = set(typing.get_args(Decision))
    assert {c.__name__ for c in classes} == SEED_NAMES
    assert set(DECISION_TYPES.values()) == classes
    assert {type(e) for e in EXAMPLES} == classes


@pytest.mark.parametrize("decision", EXAMPLES, ids=lambda d: type(d).__name__)
def test_decision_round_trips_through_builtins(decision: Any) -> None:
    data = msgspec.to_builtins(decision)
    assert DECISION_TYPES[data["type"]] is type(decision)
    assert decision_from_builtins(data) == decision
    # And through JSON, as a decision logged or sent would travel.
    assert decision_from_builtins(msgspec.json.decode(msgspec.json.encode(decision))) == decision


def test_tags_are_snake_case_class_names() -> None:
    for tag, cls in DECISION_TYPES.items():
        snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in cls.__name__).lstrip("_")
        assert tag == snake


@pytest.mark.parametrize("data", [{"type": "launch_missiles"}, {"type": 3}])
def test_unknown_type_is_a_validation_error_naming_type(data: Any) -> None:
    with pytest.raises(ValidationError) as info:
        decision_from_builtins(data)
    assert info.value.field == "type"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"type": "claim_task", "task_id": 3}, "task_id"),
        ({"type": "submit_bid", "auction_id": "a", "amount": "cheap"}, "amount"),
        ({"type": "submit_task", "objective": "o", "priority": "high"}, "priority"),
        ({"type": "delegate", "to": "d", "scope": "all"}, "scope"),
        ({"type": "invoke_tool", "tool": "t", "arguments": []}, "arguments"),
        ({"type": "claim_task", "task_id": "t", "extra": 1}, "extra"),
    ],
)
def test_wrong_field_is_a_validation_error_naming_it(data: Any, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        decision_from_builtins(data)
    assert info.value.field == field
    assert f"`{field}`" in str(info.value)


def test_missing_field_is_named_in_the_error_attribute() -> None:
    with pytest.raises(ValidationError) as info:
        decision_from_builtins({"type": "claim_task"})
    assert info.value.field == "task_id"


@pytest.mark.parametrize(
    ("data", "field"), [({"type": "claim_task"}, "task_id"), ({"task_id": "t"}, "type")]
)
def test_missing_field_is_named_in_the_message(data: Any, field: str) -> None:
    with pytest.raises(ValidationError, match=f"`{field}`"):
        decision_from_builtins(data)


@pytest.mark.parametrize("data", [None, 3, "claim_task", [], [{"type": "claim_task"}]])
def test_non_object_input_is_a_validation_error(data: Any) -> None:
    with pytest.raises(ValidationError):
        decision_from_builtins(data)


def test_send_message_needs_exactly_one_destination() -> None:
    with pytest.raises(ValidationError, match="recipient"):
        SendMessage(kind="k")
    with pytest.raises(ValidationError):
        decision_from_builtins(
            {"type": "send_message", "kind": "k", "topic": "t", "recipient": "r"}
        )


def test_decisions_are_frozen() -> None:
    decision = ClaimTask(task_id="t")
    with pytest.raises(AttributeError):
        decision.task_id = "other"  # type: ignore[misc]
