"""An output holding ``MISSING`` (a value from a branch not taken) fails its node with an error
that says where it sits, which node did not run and why, and how to give a value instead."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import pytest

from converge.orchestration import (
    MISSING,
    Engine,
    Graph,
    RunFailed,
    RunStatus,
    Subgraph,
    loads_graph,
)
from converge.orchestration._missing import missing_paths
from converge.store import Store

ROUTED = """
name: routed
nodes:
  - {id: route, agent: route}
  - {id: upper, agent: upper, inputs: [route.output]}
  - {id: lower, agent: lower, inputs: [route.output]}
  - {id: join, agent: join, inputs: [upper.output, lower.output]}
edges:
  - {from: route, to: upper, when: "route.output == 'upper'"}
  - {from: route, to: lower, when: "route.output == 'lower'"}
  - {from: [upper, lower], to: join}
"""


async def route(inputs: dict[str, Any]) -> str:
    return "lower"


async def upper(inputs: dict[str, Any]) -> str:
    return "UP"


async def lower(inputs: dict[str, Any]) -> str:
    return "low"


def routed(join: Any) -> Graph:
    return loads_graph(
        ROUTED, agents={"route": route, "upper": upper, "lower": lower, "join": join}
    )


async def failure(graph: Graph, store: Store | None = None) -> tuple[str, list[Any]]:
    """The run's error and its ``node.failed`` events."""
    engine = Engine(store)
    with pytest.raises(RunFailed) as info:
        await engine.execute(graph)
    result = info.value.result
    assert result.failed_node == "join"
    events = await engine.store.read(trace_id=result.run_id, kinds=("node.failed",))
    return result.error or "", events


async def test_a_value_from_a_branch_not_taken_is_explained(store: Store) -> None:
    async def join(inputs: dict[str, Any]) -> dict[str, Any]:
        return {"x": inputs["upper.output"], "y": inputs["lower.output"]}

    error, events = await failure(routed(join), store)
    assert "Encoding objects" not in error
    assert error.startswith("node 'join' returned an output that cannot be stored: ")
    assert 'output["x"] is MISSING' in error
    assert "The node's input 'upper.output' is MISSING: node 'upper' did not run" in error
    assert "the condition on its edge from 'route' did not hold: route.output == 'upper'" in error
    assert 'inputs.get("upper.output") or None, or a default' in error
    (failed,) = events
    assert failed.data["node"] == "join"
    assert 'output["x"] is MISSING' in failed.data["error"]


async def test_the_suggested_fix_runs() -> None:
    async def join(inputs: dict[str, Any]) -> dict[str, Any]:
        return {"x": inputs.get("upper.output") or None, "y": inputs["lower.output"]}

    result = await routed(join).execute()
    assert result.output == {"x": None, "y": "low"}


async def test_missing_returned_as_the_output_itself_fails_its_node(store: Store) -> None:
    async def join(inputs: dict[str, Any]) -> Any:
        return inputs["upper.output"]

    error, _ = await failure(routed(join), store)
    assert "its output is MISSING" in error
    assert "node 'upper' did not run" in error


async def test_missing_nested_in_lists_is_found_by_its_path() -> None:
    async def join(inputs: dict[str, Any]) -> Any:
        return {"items": [1, {"b": inputs["upper.output"]}], "pair": ("a", inputs["upper.output"])}

    error, _ = await failure(routed(join))
    assert 'output["items"][1]["b"], output["pair"][1] are MISSING' in error


async def test_a_node_skipped_after_failing_is_named_as_such() -> None:
    async def broken(inputs: dict[str, Any]) -> str:
        raise RuntimeError("down")

    async def join(inputs: dict[str, Any]) -> list[Any]:
        return [inputs["a.output"]]

    graph = (
        Graph("skip")
        .add_node("a", broken, on_error="skip")
        .add_node("join", join, inputs=["a.output"])
        .connect("a", "join")
    )
    error, _ = await failure(graph)
    assert "output[0] is MISSING" in error
    assert "node 'a' failed and was skipped (on_error: skip)" in error


async def test_a_key_an_output_lacks_is_named() -> None:
    async def report(inputs: dict[str, Any]) -> dict[str, Any]:
        return {"title": "t"}

    async def join(inputs: dict[str, Any]) -> dict[str, Any]:
        return {"summary": inputs["a.output.summary"]}

    graph = (
        Graph("lacks")
        .add_node("a", report)
        .add_node("join", join, inputs=["a.output.summary"])
        .connect("a", "join")
    )
    error, _ = await failure(graph)
    assert "node 'a' ran, but its output has nothing at 'summary'" in error


async def test_a_branch_not_taken_further_back_is_followed_to_its_condition() -> None:
    async def join(inputs: dict[str, Any]) -> dict[str, Any]:
        return {"x": inputs["deep.output"]}

    async def gate(inputs: dict[str, Any]) -> bool:
        return False

    graph = (
        Graph("deep")
        .add_node("gate", gate)
        .add_node("mid", upper)
        .add_node("deep", upper)
        .add_node("other", lower)
        .add_node("join", join, inputs=["deep.output", "other.output"])
        .connect("gate", "mid", when="gate.output")
        .connect("gate", "other")
        .connect("mid", "deep")
        .connect("deep", "join")
        .connect("other", "join")
    )
    error, _ = await failure(graph)
    assert (
        "node 'deep' did not run (node 'mid' did not run "
        "(the condition on its edge from 'gate' did not hold: gate.output))"
    ) in error


async def test_missing_the_agent_made_itself_is_said_to_be_its_own() -> None:
    async def join(inputs: dict[str, Any]) -> dict[str, Any]:
        return {"x": inputs.get("absent", MISSING)}

    graph = Graph("own").add_node("up", upper).add_node("join", join).connect("up", "join")
    error, _ = await failure(graph)
    assert "None of the node's inputs is MISSING: its agent put it there" in error


async def test_a_skipped_nodes_own_missing_output_still_completes_the_run() -> None:
    async def broken(inputs: dict[str, Any]) -> str:
        raise RuntimeError("down")

    result = await Graph("s").add_node("a", broken, on_error="skip").execute()
    assert result.status is RunStatus.COMPLETED
    assert result.output is None


async def test_other_unstorable_outputs_keep_the_encoders_reason() -> None:
    with pytest.raises(RunFailed, match=r"cannot be stored \(dict\): .*object"):
        await Graph("o").add_node("a", lambda inputs: {"x": object()}).execute()


class Point(msgspec.Struct):
    x: Any
    y: Any


@dataclasses.dataclass
class Pair:
    left: Any
    right: Any


def test_missing_paths_walks_what_msgspec_encodes() -> None:
    assert missing_paths({"a": 1, "b": [1, 2.0, "s", None]}) == []
    assert missing_paths(MISSING) == ["output"]
    cyclic: list[Any] = [MISSING]
    cyclic.append(cyclic)
    assert missing_paths(cyclic) == ["output[0]"]
    value = {
        "p": Point(1, MISSING),
        "d": Pair(MISSING, 2),
        3: (MISSING,),
        's"q': [MISSING],
        "set": frozenset({MISSING}),
    }
    assert missing_paths(value) == [
        'output["p"].y',
        'output["d"].left',
        "output[3][0]",
        'output["s\\"q"][0]',
        'output["set"] (a member)',
    ]


async def test_a_subgraph_given_missing_says_which_input_it_is() -> None:
    async def gate(inputs: dict[str, Any]) -> bool:
        return False

    child = Graph("child").add_node("e", upper, inputs=["v"])
    graph = (
        Graph("p")
        .add_node("gate", gate)
        .add_node("up", upper)
        .add_node("other", lower)
        .add_node("sub", Subgraph(child, inputs={"v": "up.output"}), inputs=["up.output"])
        .connect("gate", "up", when="gate.output")
        .connect("gate", "other")
        .connect("up", "sub")
        .connect("other", "sub")
    )
    with pytest.raises(RunFailed) as info:
        await graph.execute()
    error = info.value.result.error or ""
    assert info.value.result.failed_node == "sub"
    assert "cannot be encoded" not in error
    assert "subgraph 'child' would get MISSING as its input 'v'" in error
    assert "the node's input 'up.output' is not there" in error
