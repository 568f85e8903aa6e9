"""SafeTools, the one path of tool calls: policy, limits, timeout, arguments, typed errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from converge.agents import SafeTools, ToolCallRefused, ToolError, ToolTimeout
from converge.agents.llm import ToolSpec
from converge.coordination import TaskManager
from converge.core import Agent, Decision, InvokeTool, Message, Task
from converge.core.clock import ManualClock
from converge.core.tools import ToolRegistry
from converge.errors import PolicyViolation, ValidationError
from converge.network import LocalNetwork
from converge.policy import ActionPolicy, AgentUsage, ResourceLimits
from converge.policy.safety import DecisionsRefused
from converge.runtime import AgentRuntime, StandardExecutor
from converge.store import Store
from tests.loop_clock import LoopClock, until


def make_registry(hanging: asyncio.Event | None = None) -> ToolRegistry:
    """Tools for the tests; ``hang`` sets ``hanging`` once it has started."""
    registry = ToolRegistry()

    @registry.register
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @registry.register
    async def hang() -> None:
        """Never answers."""
        if hanging is not None:
            hanging.set()
        await asyncio.Event().wait()

    @registry.register
    def divide(a: float, b: float) -> float:
        """Divide a by b."""
        return a / b

    @registry.register
    def rm(path: str) -> str:
        """Delete a path (pretend)."""
        return path

    return registry


async def test_a_call_runs_with_converted_arguments_and_is_counted() -> None:
    tools = SafeTools(make_registry())
    assert await tools.call("did:a", "add", {"a": 2, "b": "3"}) == 5
    assert tools.usage_for("did:a").tool_calls == 1
    assert tools.usage_for("did:b").tool_calls == 0


async def test_the_policy_refuses_denied_and_unlisted_tools_before_they_run() -> None:
    policy = ActionPolicy(allow_tools=frozenset({"add", "rm"}), deny_tools=frozenset({"rm"}))
    tools = SafeTools(make_registry(), policy=policy)
    with pytest.raises(ToolCallRefused) as denied:
        await tools.call("did:a", "rm", {"path": "/"})
    assert isinstance(denied.value, PolicyViolation)
    assert isinstance(denied.value, DecisionsRefused)
    assert (denied.value.tool, denied.value.agent_id, denied.value.rule) == (
        "rm",
        "did:a",
        "tool_denied",
    )
    with pytest.raises(ToolCallRefused) as unlisted:
        await tools.call("did:a", "divide", {"a": 1, "b": 2})
    assert unlisted.value.rule == "tool_not_allowed"
    assert tools.usage_for("did:a").tool_calls == 0  # refused calls use nothing


async def test_a_policy_denying_invoke_tool_refuses_every_tool() -> None:
    tools = SafeTools(make_registry(), policy=ActionPolicy(deny_decisions={"invoke_tool"}))  # type: ignore[arg-type]
    with pytest.raises(ToolCallRefused) as info:
        await tools.call("did:a", "add", {"a": 1, "b": 2})
    assert info.value.rule == "decision_denied"
    assert tools.specs() == []


async def test_the_tool_call_limit_is_per_agent_and_counts_failed_calls() -> None:
    tools = SafeTools(make_registry(), limits=ResourceLimits(max_tool_calls=2))
    with pytest.raises(ToolError):
        await tools.call("did:a", "divide", {"a": 1, "b": 0})
    assert await tools.call("did:a", "add", {"a": 1, "b": 1}) == 2
    with pytest.raises(ToolCallRefused) as info:
        await tools.call("did:a", "add", {"a": 1, "b": 1})
    assert info.value.rule == "max_tool_calls"
    assert "tool call 3 > max_tool_calls 2" in str(info.value)
    assert await tools.call("did:b", "add", {"a": 1, "b": 1}) == 2


async def test_shared_usage_and_exhausted_budgets_refuse_calls() -> None:
    clock = ManualClock(100.0)
    usage = {"did:a": AgentUsage(100.0)}
    tools = SafeTools(
        make_registry(), limits=ResourceLimits(max_wall_time_s=10), usage=usage, clock=clock
    )
    assert await tools.call("did:a", "add", {"a": 1, "b": 1}) == 2
    assert usage["did:a"].tool_calls == 1
    clock.advance(11)
    with pytest.raises(ToolCallRefused) as info:
        await tools.call("did:a", "add", {"a": 1, "b": 1})
    assert info.value.rule == "max_wall_time_s"


async def test_a_hanging_tool_times_out_with_a_typed_error() -> None:
    tools = SafeTools(make_registry(), timeout_s=0.05)
    with pytest.raises(ToolTimeout) as info:
        await tools.call("did:a", "hang")
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, ToolError)
    assert (info.value.tool, info.value.agent_id, info.value.killed) == ("hang", "did:a", False)
    assert info.value.retryable


async def test_a_tool_that_raises_ends_in_a_tool_error_naming_it() -> None:
    tools = SafeTools(make_registry())
    with pytest.raises(ToolError) as info:
        await tools.call("did:a", "divide", {"a": 1, "b": 0})
    err = info.value
    assert (err.tool, err.agent_id, err.error_type) == ("divide", "did:a", "ZeroDivisionError")
    assert isinstance(err.__cause__, ZeroDivisionError)
    assert str(err) == "tool 'divide' failed: ZeroDivisionError: float division by zero"


async def test_a_tool_raising_timeout_error_itself_is_not_a_timeout_of_ours() -> None:
    registry = ToolRegistry()

    @registry.register
    def flaky() -> None:
        raise TimeoutError("upstream slow")

    with pytest.raises(ToolError) as info:
        await SafeTools(registry, timeout_s=5).call("did:a", "flaky")
    assert not isinstance(info.value, ToolTimeout)
    assert info.value.error_type == "TimeoutError"


async def test_a_tool_that_exits_or_stops_fails_as_a_tool_error() -> None:
    """Whatever a tool raises is its failure, ``sys.exit()`` and ``KeyboardInterrupt`` too; a
    sync tool's ``StopIteration`` once left the call waiting for ever."""
    registry = ToolRegistry()

    @registry.register
    async def quit_async() -> None:
        raise SystemExit(2)

    @registry.register
    def interrupt() -> None:
        raise KeyboardInterrupt

    @registry.register
    def exhausted() -> int:
        return next(iter(()))

    tools = SafeTools(registry, timeout_s=30)
    expected = {
        "quit_async": ("SystemExit", "2"),
        "interrupt": ("KeyboardInterrupt", ""),
        "exhausted": ("RuntimeError", "coroutine raised StopIteration"),
    }
    for name, (error_type, text) in expected.items():
        with pytest.raises(ToolError) as info:
            await tools.call("did:a", name)
        assert (info.value.tool, info.value.error_type) == (name, error_type)
        assert str(info.value).endswith(f"{error_type}: {text}" if text else error_type)


async def test_bad_arguments_and_unknown_tools_are_validation_errors() -> None:
    tools = SafeTools(make_registry())
    with pytest.raises(ValidationError) as info:
        await tools.call("did:a", "add", {"a": 1, "b": "many"})
    assert info.value.field == "b" and "'add'" in str(info.value)
    with pytest.raises(ValidationError) as missing:
        await tools.call("did:a", "add", {"a": 1})
    assert missing.value.field == "b"
    with pytest.raises(ValidationError, match="unknown tool 'nope'"):
        await tools.call("did:a", "nope", {})
    with pytest.raises(ValidationError, match="must be an object"):
        await tools.call("did:a", "add", [1, 2])  # type: ignore[arg-type]
    assert tools.usage_for("did:a").tool_calls == 0


class SchemaTool:
    """A Tool that is not a function tool: only its JSON Schema describes its arguments."""

    name = "lookup"
    description = "Look a key up."
    parameters: dict[str, Any] = {  # noqa: RUF012
        "type": "object",
        "properties": {"key": {"type": "string"}, "limit": {"type": "integer"}},
        "required": ["key"],
        "additionalProperties": False,
    }

    async def invoke(self, arguments: Mapping[str, Any]) -> Any:
        return {"key": arguments["key"]}


@pytest.mark.parametrize(
    ("arguments", "field", "words"),
    [
        ({}, "key", "missing required argument"),
        ({"key": "k", "extra": 1}, "extra", "unknown argument"),
        ({"key": 3}, "key", "must be string"),
        ({"key": "k", "limit": True}, "limit", "must be integer"),
    ],
)
async def test_other_tools_are_checked_against_their_schema(
    arguments: dict[str, Any], field: str, words: str
) -> None:
    tools = SafeTools([SchemaTool()])
    with pytest.raises(ValidationError, match=words) as info:
        await tools.call("did:a", "lookup", arguments)
    assert info.value.field == field
    assert await tools.call("did:a", "lookup", {"key": "k", "limit": 2}) == {"key": "k"}


def test_specs_offer_the_model_only_allowed_tools() -> None:
    tools = SafeTools(make_registry(), policy=ActionPolicy(deny_tools=frozenset({"rm", "hang"})))
    specs = tools.specs()
    assert [s.name for s in specs] == ["add", "divide"]
    assert specs[0] == ToolSpec(
        name="add",
        description="Add two integers.",
        parameters=make_registry().get("add").parameters,
    )


class User(Agent):
    pass


async def test_the_executor_calls_tools_through_the_safe_path(loop_clock: LoopClock) -> None:
    agent = User()
    policy = ActionPolicy(deny_tools=frozenset({"rm"}))
    hanging = asyncio.Event()
    tools = SafeTools(make_registry(hanging), policy=policy, timeout_s=60)
    executor = StandardExecutor(tools=tools)
    assert await executor.execute(agent, InvokeTool(tool="add", arguments={"a": 1, "b": 2})) == 3
    with pytest.raises(ToolCallRefused):
        await executor.execute(agent, InvokeTool(tool="rm", arguments={"path": "/"}))
    call = asyncio.ensure_future(executor.execute(agent, InvokeTool(tool="hang")))
    await until(hanging.is_set)
    loop_clock.advance(60)  # the call's time is up
    with pytest.raises(ToolTimeout) as info:
        await call
    assert info.value.agent_id == agent.did


async def test_an_executor_given_a_registry_wraps_it_in_safe_tools() -> None:
    executor = StandardExecutor(tools=make_registry())
    assert isinstance(executor.tools, SafeTools)
    with pytest.raises(ToolError) as info:
        await executor.execute(User(), InvokeTool(tool="divide", arguments={"a": 1, "b": 0}))
    assert info.value.error_type == "ZeroDivisionError"


async def test_in_the_runtime_a_failing_tool_is_a_recorded_decision_failure(
    store: Store, loop_clock: LoopClock
) -> None:
    clock = ManualClock(time.time())
    net, board = LocalNetwork(), TaskManager(store, clock=clock)
    decided: list[int] = []

    class Caller(Agent):
        async def decide(
            self, messages: Sequence[Message], tasks: Sequence[Task]
        ) -> list[Decision]:
            decided.append(1)
            if len(decided) > 1:
                return []
            return [
                InvokeTool(tool="divide", arguments={"a": 1, "b": 0}),
                InvokeTool(tool="hang"),
                InvokeTool(tool="add", arguments={"a": 1, "b": 2}),
            ]

    hanging = asyncio.Event()
    tools = SafeTools(make_registry(hanging), timeout_s=60, clock=clock)
    executor = StandardExecutor(network=net, tasks=board, tools=tools, clock=clock)
    agent = Caller()
    async with AgentRuntime(agent, network=net, tasks=board, executor=executor, clock=clock) as rt:
        await board.submit(Task(objective="wake up"))
        await until(hanging.is_set)
        loop_clock.advance(60)  # the hanging call's time is up; the others had all they needed
        async with asyncio.timeout(10):
            while rt.usage.tool_calls < 1:  # noqa: ASYNC110 - bounded wait for the third call
                await asyncio.sleep(0.005)
    failed = [e.data for e in await store.read(kinds=["decision.failed"])]
    assert [f["error_type"] for f in failed] == ["ToolError", "ToolTimeout"]
    assert "tool 'divide' failed: ZeroDivisionError" in failed[0]["error"]
    assert tools.usage_for(agent.did).tool_calls == 3  # the runtime counted only the success
