"""The run's and a pass's status: one table of moves each, and a refused move names both
statuses and what moved."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from converge.errors import InvalidTransition, StateError
from converge.orchestration import Engine, Graph, Halt, Replacement, RunStatus
from converge.orchestration._attempt import _PASS_TRANSITIONS, PassStatus, check_pass_transition
from converge.orchestration._results import _RUN_TRANSITIONS, check_run_transition
from converge.store import MemoryStore

R = RunStatus
P = PassStatus

# The lifecycles, written out independently of src's tables.
RUN_MOVES = {
    (R.RUNNING, R.WAITING),
    (R.RUNNING, R.COMPLETED),
    (R.RUNNING, R.FAILED),
    (R.RUNNING, R.CANCELLED),
    (R.RUNNING, R.INTERRUPTED),
    # resume
    (R.WAITING, R.RUNNING),
    (R.FAILED, R.RUNNING),
    (R.CANCELLED, R.RUNNING),
    (R.INTERRUPTED, R.RUNNING),
}
FINISHED = {P.COMPLETED, P.SKIPPED, P.FALLBACK, P.REPLANNED, P.ANSWERED, P.HALTED}
PASS_MOVES = {(P.RUNNING, s) for s in P if s is not P.RUNNING} | {
    (P.COMPLETED, P.HALTED),
    (P.COMPLETED, P.FAILED),
    (P.FALLBACK, P.HALTED),
    (P.FALLBACK, P.FAILED),
    (P.ANSWERED, P.FAILED),
    (P.HALTED, P.FAILED),
}


def test_a_run_has_the_six_statuses_and_the_documented_moves() -> None:
    assert [s.value for s in R] == [
        "running",
        "waiting",
        "completed",
        "failed",
        "cancelled",
        "interrupted",
    ]
    assert set(_RUN_TRANSITIONS) == set(R)
    assert {(a, b) for a, nxt in _RUN_TRANSITIONS.items() for b in nxt} == RUN_MOVES
    final = {s for s, nxt in _RUN_TRANSITIONS.items() if not nxt}
    assert final == {R.COMPLETED}  # every other end can be resumed


def test_a_pass_has_ten_statuses_and_the_documented_moves() -> None:
    assert [s.value for s in P] == [
        "running",
        "completed",
        "skipped",
        "fallback",
        "replanned",
        "answered",
        "halted",
        "paused",
        "failed",
        "fatal",
    ]
    assert set(_PASS_TRANSITIONS) == set(P)
    assert {(a, b) for a, nxt in _PASS_TRANSITIONS.items() for b in nxt} == PASS_MOVES


@given(st.sampled_from(list(R)), st.sampled_from(list(R)))
def test_a_run_moves_iff_the_table_allows_it(current: RunStatus, target: RunStatus) -> None:
    if (current, target) in RUN_MOVES:
        check_run_transition(current, target, "r-1")
        return
    with pytest.raises(InvalidTransition) as info:
        check_run_transition(current, target, "r-1")
    err = info.value
    assert isinstance(err, StateError)
    assert (err.from_state, err.to_state) == (current, target)
    assert str(err) == f"invalid transition for run r-1: {current.value} -> {target.value}"


@given(st.sampled_from(list(P)), st.sampled_from(list(P)))
def test_a_pass_moves_iff_the_table_allows_it(current: PassStatus, target: PassStatus) -> None:
    if (current, target) in PASS_MOVES:
        check_pass_transition(current, target, "write")
        return
    with pytest.raises(InvalidTransition) as info:
        check_pass_transition(current, target, "write")
    err = info.value
    assert (err.from_state, err.to_state) == (current, target)
    assert str(err) == (
        f"invalid transition for a pass of node 'write': {current.value} -> {target.value}"
    )


async def test_the_log_holds_each_finished_pass_status_as_a_word() -> None:
    # One pass ends each way a pass finishes; `node.done` says how, as plain text (what a
    # store, a listener and `stream` see alike).
    async def ok(inputs: dict[str, Any]) -> int:
        return 1

    async def boom(inputs: dict[str, Any]) -> int:
        raise RuntimeError("boom")

    async def gate(inputs: dict[str, Any]) -> Halt:
        return Halt(2)

    async def replace(failure: Any) -> list[Replacement]:
        return [Replacement("instead", ok)] if failure.node_id == "replanned" else []

    graph = (
        Graph("each")
        .add_node("completed", ok)
        .add_node("skipped", boom, on_error="skip")
        .add_node("fallback", boom, on_error="fallback", fallback=ok)
        .add_node("replanned", boom)
        .add_node("halted", gate)
        .add_node("answered", boom, on_error="human")
    )
    seen: list[Any] = []
    engine = Engine(MemoryStore(), on_node_failed=replace, listeners=[seen.append])
    waiting = await engine.execute(graph)
    assert waiting.status is RunStatus.WAITING
    result = await engine.resume(graph, waiting.run_id, answer=3)
    done = {e.data["node"]: e.data["status"] for e in seen if e.kind == "node.done"}
    assert done == {
        "completed": "completed",
        "skipped": "skipped",
        "fallback": "fallback",
        "replanned": "replanned",
        "halted": "halted",
        "answered": "answered",
    }
    assert {type(status) for status in done.values()} == {str}
    logged = await engine.store.read(trace_id=result.run_id, kinds=("node.done",))
    assert {e.data["node"]: e.data["status"] for e in logged} == done
