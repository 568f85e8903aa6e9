"""A run holds no NaN and no infinity: a node whose output holds one fails saying where (as an
output holding ``MISSING`` does), so does a person's answer or a replacement's, and graph
inputs holding one are refused. JSON has no such number, and a NaN equals nothing: a run's
output printed as JSON, its replay and its conditions could not agree with what ran."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converge.errors import ValidationError
from converge.observability import replay
from converge.orchestration import (
    Engine,
    Graph,
    Halt,
    NodeFailure,
    Replacement,
    RetryPolicy,
    RunFailed,
    RunStatus,
)
from converge.orchestration._missing import unstorable
from converge.protocol import Event
from converge.store import MemoryStore, Store

NAN, INF = float("nan"), float("inf")
WHY = ": a run holds no NaN or infinity (JSON has none, and a NaN equals nothing"


@dataclasses.dataclass
class Point:
    x: float


class Reading(msgspec.Struct):
    value: float


def const(value: Any) -> Any:
    async def run(inputs: dict[str, Any]) -> Any:
        return value

    return run


@pytest.mark.parametrize(
    ("output", "where"),
    [
        (NAN, "output is NaN"),
        (INF, "output is Infinity"),
        ({"score": NAN}, 'output["score"] is NaN'),
        ([1.0, -INF], "output[1] is -Infinity"),
        (
            {"a": [Point(NAN)], "b": Reading(INF), "c": (1, 2.5)},
            'output["a"][0].x is NaN, output["b"].value is Infinity',
        ),
        (Halt({"x": NAN}), 'output["x"] is NaN'),
    ],
)
async def test_a_node_whose_output_holds_a_nonfinite_number_fails_saying_where(
    store: Store, output: Any, where: str
) -> None:
    calls: list[int] = []

    async def returns(inputs: dict[str, Any]) -> Any:
        calls.append(1)
        return output

    retry = RetryPolicy(max_retries=2, backoff="none")
    graph = (
        Graph("g")
        .add_node("a", returns, retry=retry)
        .add_node("b", const("after"), inputs=["a.output"])
        .connect("a", "b")
    )
    with pytest.raises(RunFailed) as info:
        await Engine(store).execute(graph)
    result = info.value.result
    assert result.error is not None
    assert result.error.startswith("node 'a' returned an output that cannot be stored")
    assert f": {where}{WHY}" in result.error
    events = await store.read(trace_id=result.run_id)
    [failed] = [e.data for e in events if e.kind == "node.failed"]
    assert failed["error"].startswith(where + WHY)
    assert [e.data["node"] for e in events if e.kind == "node.start"] == ["a"]
    assert calls == [1]  # it would return the same again: no retry, as for any unstorable output


async def test_finite_numbers_and_bytes_that_look_like_a_nan_are_stored(store: Store) -> None:
    # 0xcb 0x7f is how a NaN starts in MessagePack; here it is inside an integer.
    output = {"x": 1.5, "tiny": 5e-324, "big": 0xCB7F000000000000, "neg": -0.0, "list": [0.1]}
    result = await Engine(store).execute(Graph("g").add_node("a", const(output)))
    assert result.output == output
    assert result.status is RunStatus.COMPLETED


async def test_graph_inputs_holding_a_nonfinite_number_are_refused(store: Store) -> None:
    graph = Graph("g").add_node("a", const(1), inputs=["x"])
    with pytest.raises(ValidationError) as info:
        await Engine(store).execute(graph, {"x": {"y": [NAN]}})
    assert info.value.field == "inputs"
    assert str(info.value).startswith('inputs["x"]["y"][0] is NaN' + WHY)
    assert await store.read() == []  # refused before anything ran


async def test_an_answer_or_a_replacement_holding_one_fails_the_node(store: Store) -> None:
    async def broken(inputs: dict[str, Any]) -> None:
        raise RuntimeError("needs a person")

    asked = Graph("h").add_node("a", broken, on_error="human")
    waiting = await Engine(store).execute(asked)
    with pytest.raises(RunFailed) as info:
        await Engine(store).resume(asked, waiting.run_id, answer={"value": NAN})
    assert f': output["value"] is NaN{WHY}' in (info.value.result.error or "")

    async def replace(failure: NodeFailure) -> Sequence[Replacement]:
        return [Replacement("r1", const([INF])), Replacement("r2", const(1))]

    replanned = Engine(store, on_node_failed=replace)
    with pytest.raises(RunFailed) as info:
        await replanned.execute(Graph("r").add_node("a", broken))
    error = info.value.result.error or ""
    assert "its replacement 'r1' returned an output that cannot be stored: " in error
    assert f"output[0] is Infinity{WHY}" in error


def test_replay_of_an_older_log_holding_a_nan_agrees() -> None:
    """Runs no longer store one, but a log written before may: a NaN read back is another
    object each time, and ``NaN != NaN`` made replay report a difference on a correct run."""

    def event(kind: str, data: dict[str, Any], seq: int) -> Event:
        return Event(kind=kind, trace_id="r", subject="r", data=data, seq=seq)

    events = [
        event("run.started", {"graph": "g"}, 1),
        event("node.start", {"node": "a", "iteration": 1}, 2),
        event(
            "node.done",
            {"node": "a", "iteration": 1, "status": "completed", "output": {"x": float("nan")}},
            3,
        ),
        event("node.start", {"node": "b", "iteration": 1}, 4),
        event(
            "node.done",
            {"node": "b", "iteration": 1, "status": "completed", "output": [float("nan")]},
            5,
        ),
        event("run.completed", {"output": {"a": {"x": float("nan")}, "b": [float("nan")]}}, 6),
    ]
    assert replay(events, "r").differences == []
    events[-1] = event("run.completed", {"output": {"x": float("nan")}}, 6)
    assert replay(events, "r").differences == []
    events[-1] = event("run.completed", {"output": {"x": 1.0}}, 6)
    assert replay(events, "r").differences == [
        "run.completed output {'x': 1.0} is no completed node's output"
    ]


# Any float (NaN and the infinities included), and integers whose bytes may look like one.
_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
)
data_with_any_float = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=16,
)


def nonfinite_in(value: Any) -> bool:
    if isinstance(value, float):
        return value != value or value in (INF, -INF)
    if isinstance(value, list):
        return any(nonfinite_in(v) for v in value)
    if isinstance(value, dict):
        return any(nonfinite_in(v) for v in value.values())
    return False


@settings(max_examples=150)
@given(data_with_any_float)
def test_the_byte_scan_misses_no_nonfinite_number_and_invents_none(value: Any) -> None:
    why = unstorable(value)
    assert (why is not None) == nonfinite_in(value), why
    if why is not None:
        assert WHY in why


@settings(max_examples=60)
@given(data_with_any_float)
async def test_a_node_stores_any_finite_output_and_refuses_any_other(value: Any) -> None:
    engine = Engine(MemoryStore())
    graph = Graph("g").add_node("a", const(value))
    if nonfinite_in(value):
        with pytest.raises(RunFailed) as info:
            await engine.execute(graph)
        assert WHY in (info.value.result.error or "")
    else:
        assert (await engine.execute(graph)).output == value
