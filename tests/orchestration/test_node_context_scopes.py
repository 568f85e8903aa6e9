"""A node's agent reaches the context scopes through ``ctx.context``, and sees only its grants."""

from __future__ import annotations

from typing import Any

import pytest

from converge.agents.memory import ContextAccessDenied, ContextScopes
from converge.errors import ValidationError
from converge.orchestration import Engine, Graph, RunFailed, Services, loads_graph
from converge.store import Store


async def remember(inputs: dict[str, Any], ctx: Any) -> str:
    await ctx.context.set("session", "history", ["asked about tides"])
    await ctx.context.set("request", "draft", "tides are tidal")
    return "noted"


async def recall(inputs: dict[str, Any], ctx: Any) -> Any:
    return {
        "history": await ctx.context.get("session", "history"),
        "draft": await ctx.context.get("request", "draft"),
    }


async def snoop(inputs: dict[str, Any], ctx: Any) -> Any:
    return await ctx.context.get("session", "history")


GRAPH = """
name: scoped
nodes:
  - {id: first, agent: writer, inputs: [session_id]}
  - {id: second, agent: reader, inputs: [first.output]}
edges:
  - {from: first, to: second}
grants:
  writer: {write: {session: [history], request: ["*"]}}
  reader: {read: {session: [history], request: [draft]}}
"""


async def test_nodes_share_scopes_through_their_grants(store: Store) -> None:
    graph = loads_graph(GRAPH, agents={"writer": remember, "reader": recall})
    engine = Engine(store, services=Services(memory=ContextScopes(store)))
    result = await engine.execute(graph, {"session_id": "s1"})
    assert result.output == {"history": ["asked about tides"], "draft": "tides are tidal"}
    # the session outlives the run: a later run in the same session reads it
    later = Graph("later").add_node("look", recall, inputs=["session_id"])
    later.grants["look"] = {"read": {"session": ["history"], "request": ["draft"]}}
    again = await engine.execute(later, {"session_id": "s1"})
    assert again.output == {
        "history": ["asked about tides"],
        "draft": None,
    }  # request scope is per run


async def test_an_agent_without_grants_sees_nothing(store: Store) -> None:
    graph = Graph("nosy").add_node("snoop", snoop, inputs=["session_id"])
    engine = Engine(store, services=Services(memory=ContextScopes(store)))
    with pytest.raises(RunFailed) as caught:
        await engine.execute(graph, {"session_id": "s1"})
    assert "ContextAccessDenied" in (caught.value.result.error or "")
    assert issubclass(ContextAccessDenied, Exception)


async def test_services_grants_apply_when_the_graph_has_none(store: Store) -> None:
    graph = (
        Graph("svc")
        .add_node("first", remember, inputs=["session_id"])
        .add_node("second", recall)
        .connect("first", "second")
    )
    grants = {
        "first": {"write": {"session": ["history"], "request": ["*"]}},
        "second": {"read": {"session": ["*"], "request": ["*"]}},
    }
    engine = Engine(store, services=Services(memory=ContextScopes(store), grants=grants))
    result = await engine.execute(graph, {"session_id": "s2"})
    assert result.output["history"] == ["asked about tides"]


async def test_a_context_needs_the_engines_memory() -> None:
    with pytest.raises(RunFailed, match="Services\\(memory="):
        await (
            Graph("none")
            .add_node("snoop", snoop, inputs=["session_id"])
            .execute({"session_id": "s"})
        )


def test_bad_grants_in_yaml_are_located() -> None:
    with pytest.raises(ValidationError) as caught:
        loads_graph(
            "name: g\nnodes:\n  - {id: a, agent: w}\ngrants:\n  w: {read: {galaxy: [x]}}\n",
            source="g.yaml",
            agents={"w": remember},
        )
    assert caught.value.line == 5 and caught.value.field == "grants.w.read.galaxy"
