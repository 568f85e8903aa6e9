"""FunctionAgent: callables as agents, with inputs and output checked at the boundary."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, TypedDict

import msgspec
import pytest

from converge.agents import FunctionAgent
from converge.core import Agent, RunContext
from converge.errors import AgentModeError, ValidationError
from converge.orchestration import Graph, loads_graph


class Ctx:
    """The little of RunContext the tests' functions use."""

    run_id = "run-1"
    node_id = "n"
    attempt = 1
    idempotency_key = "run-1/n/0"


CTX: Any = Ctx()


class Order(msgspec.Struct):
    sku: str
    qty: int


class Point(TypedDict):
    x: int
    y: int


@dataclass
class Pair:
    left: str
    right: str


def total(order: Order) -> float:
    return order.qty * 2.5


def add(a: int, b: int = 10) -> int:
    return a + b


async def add_async(a: int, b: int, ctx: RunContext) -> str:
    return f"{ctx.node_id}:{a + b}"


def whole(inputs):  # type: ignore[no-untyped-def]
    return sorted(inputs)


def thread_name(x: int) -> str:
    return threading.current_thread().name


def liar(x: int) -> str:
    return x  # type: ignore[return-value]


async def test_spread_inputs_are_converted_per_parameter_and_extras_ignored() -> None:
    agent = FunctionAgent(add)
    assert isinstance(agent, Agent) and agent.name == "add"
    assert agent.supports_run and not agent.supports_decide
    assert await agent.run({"a": "2", "b": 3, "other.output": "x"}, CTX) == 5
    assert await agent.run({"a": 1}, CTX) == 11  # default used


async def test_async_function_gets_the_context() -> None:
    assert await FunctionAgent(add_async).run({"a": 1, "b": 2}, CTX) == "n:3"


async def test_whole_inputs_as_a_struct_typeddict_dataclass_or_mapping() -> None:
    assert await FunctionAgent(total).run({"sku": "x", "qty": "4"}, CTX) == 10.0

    def norm(p: Point) -> int:
        return p["x"] ** 2 + p["y"] ** 2

    assert await FunctionAgent(norm).run({"x": 3, "y": 4}, CTX) == 25

    def join(pair: Pair) -> str:
        return pair.left + pair.right

    assert await FunctionAgent(join).run({"left": "a", "right": "b"}, CTX) == "ab"
    assert await FunctionAgent(whole).run({"b": 1, "a": 2}, CTX) == ["a", "b"]


async def test_an_explicit_input_type_wins_over_the_annotation() -> None:
    def count(data: Any) -> int:
        return data.qty

    agent = FunctionAgent(count, input_type=Order, name="counter")
    assert await agent.run({"sku": "s", "qty": 7}, CTX) == 7
    with pytest.raises(ValidationError) as info:
        await agent.run({"sku": "s"}, CTX)
    assert info.value.field == "qty" and "'counter'" in str(info.value)


async def test_a_bad_input_names_the_field_and_the_agent() -> None:
    with pytest.raises(ValidationError) as info:
        await FunctionAgent(add).run({"a": "two"}, CTX)
    assert info.value.field == "a" and "agent 'add'" in str(info.value)
    with pytest.raises(ValidationError) as missing:
        await FunctionAgent(total).run({"sku": "x"}, CTX)
    assert missing.value.field == "qty" and "agent 'total'" in str(missing.value)
    with pytest.raises(ValidationError, match="must be a mapping"):
        await FunctionAgent(add).run([1], CTX)  # type: ignore[arg-type]


async def test_the_output_is_checked_against_the_return_annotation() -> None:
    with pytest.raises(ValidationError) as info:
        await FunctionAgent(liar).run({"x": 1}, CTX)
    assert "output of agent 'liar'" in str(info.value)
    agent = FunctionAgent(lambda inputs: inputs["v"], name="pick", output_type=list[int])
    assert await agent.run({"v": [1, 2]}, CTX) == [1, 2]
    with pytest.raises(ValidationError) as bad:
        await agent.run({"v": [1, "x"]}, CTX)
    assert bad.value.field == "[1]" and "'pick'" in str(bad.value)


async def test_sync_functions_run_off_the_event_loop() -> None:
    name = await FunctionAgent(thread_name).run({"x": 1}, CTX)
    assert name != threading.current_thread().name


def test_unusable_functions_are_refused_when_built() -> None:
    def star(*args: int) -> int:
        return 0

    with pytest.raises(ValidationError, match="no \\*args"):
        FunctionAgent(star)
    with pytest.raises(ValidationError, match="one input parameter"):
        FunctionAgent(add, input_type=Order)
    with pytest.raises(ValidationError, match="callable"):
        FunctionAgent(42)  # type: ignore[arg-type]


async def test_not_an_agent_for_the_decentralized_runtime() -> None:
    with pytest.raises(AgentModeError):
        await FunctionAgent(add).decide([], [])


async def test_a_function_agent_is_a_graph_node_in_python_and_yaml() -> None:
    graph = Graph("sum")
    graph.add_node("add", FunctionAgent(add), inputs=["a", "b"])
    assert (await graph.execute({"a": 1, "b": "2"})).output == 3
    yaml_graph = loads_graph(
        """
name: priced
nodes:
  - {id: price, agent: pricer, inputs: [sku, qty]}
agents:
  pricer: tests.agents.test_function_agent:PRICER
"""
    )
    assert (await yaml_graph.execute({"sku": "a", "qty": 2})).output == 5.0


PRICER = FunctionAgent(total, name="pricer")
