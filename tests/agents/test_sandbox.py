"""Unsafe tools in a child process: results, wall time, memory, environment, errors."""

from __future__ import annotations

import os
import sys
import time

import pytest

from converge.agents import (
    SafeTools,
    SandboxedTool,
    SandboxLimits,
    ToolError,
    ToolMemoryExceeded,
    ToolTimeout,
)
from converge.core.tools import FunctionTool, ToolRegistry
from converge.errors import PolicyViolation, ValidationError
from tests.agents import _sandbox_tools as tools

pytestmark = [
    pytest.mark.slow,  # spawns child processes
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX process limits"),
]

# A tool that answers has all the time it needs, however busy the machine (starting a child
# Python takes a while there); the wall time here only guards against a hang.
FAST = SandboxLimits(wall_time_s=60.0, memory_bytes=512 * 2**20)


async def test_a_sandboxed_tool_answers_with_its_result() -> None:
    tool = SandboxedTool(tools.add, limits=FAST)
    assert tool.ref == "tests.agents._sandbox_tools:add"
    assert tool.parameters["required"] == ["a", "b"]
    assert await tool.invoke({"a": 2, "b": "3"}) == 5  # converted here, then sent as JSON


async def test_an_async_tool_that_prints_still_answers() -> None:
    tool = SandboxedTool("tests.agents._sandbox_tools:shout", limits=FAST)
    assert await tool.invoke({"text": "hi"}) == "HI"


async def test_a_tool_past_its_wall_time_is_killed() -> None:
    tool = SandboxedTool(tools.sleepy, limits=SandboxLimits(wall_time_s=0.5))
    started = time.perf_counter()
    with pytest.raises(ToolTimeout) as info:
        await tool.invoke({"seconds": 120})
    assert time.perf_counter() - started < 60  # killed at its wall time, long before its end
    assert info.value.killed and info.value.tool == "sleepy"
    assert info.value.timeout_s == 0.5
    assert "sleepy" in str(info.value) and "killed" in str(info.value)


async def test_a_tool_past_its_memory_limit_fails_clearly() -> None:
    tool = SandboxedTool(tools.hog, limits=SandboxLimits(memory_bytes=256 * 2**20))
    with pytest.raises(ToolMemoryExceeded) as info:
        await tool.invoke({"mib": 1024})
    assert info.value.tool == "hog"
    assert info.value.limit_bytes == 256 * 2**20
    assert isinstance(info.value, MemoryError)
    assert "256 MiB" in str(info.value)


async def test_the_child_does_not_see_the_parents_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-parent-secret")
    assert os.environ["OPENAI_API_KEY"] == "sk-parent-secret"
    names = await SandboxedTool(tools.env_names, limits=FAST).invoke({})
    assert "OPENAI_API_KEY" not in names
    assert set(names) <= set(FAST.env_allow)
    given = SandboxedTool(tools.env, limits=FAST, env={"SERVICE_TOKEN": "given"})
    assert await given.invoke({"name": "SERVICE_TOKEN"}) == "given"
    assert await given.invoke({"name": "OPENAI_API_KEY"}) is None


async def test_a_tool_that_raises_gives_a_typed_error_naming_it() -> None:
    with pytest.raises(ToolError) as info:
        await SandboxedTool(tools.broken, limits=FAST).invoke({"key": "missing"})
    err = info.value
    assert err.tool == "broken" and err.error_type == "KeyError"
    assert "'broken'" in str(err) and "missing" in str(err)
    assert err.remote_traceback is not None and "KeyError" in err.remote_traceback
    assert "Traceback" not in str(err)


async def test_a_result_that_is_not_json_and_a_crash_are_tool_errors() -> None:
    with pytest.raises(ToolError) as info:
        await SandboxedTool(tools.not_json, limits=FAST).invoke({})
    assert info.value.error_type == "bad_result"
    with pytest.raises(ToolError) as crashed:
        await SandboxedTool(tools.crash, limits=FAST).invoke({})
    assert crashed.value.error_type == "crashed" and "code 3" in str(crashed.value)


def test_only_importable_functions_can_be_sandboxed() -> None:
    def local(x: int) -> int:
        return x

    with pytest.raises(ValidationError, match="local to a function"):
        SandboxedTool(local)
    with pytest.raises(ValidationError, match="cannot import"):
        SandboxedTool("tests.agents._sandbox_tools:nope")


async def test_an_unsafe_function_tool_runs_only_in_the_sandbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unsafe = FunctionTool(tools.env_names, unsafe=True)
    with pytest.raises(PolicyViolation, match="unsafe"):
        await unsafe.invoke({})  # never in this process
    registry = ToolRegistry()
    registry.register(unsafe)
    registry.register(FunctionTool(tools.sleepy, unsafe=True))
    safe = SafeTools(registry, sandbox=FAST)
    monkeypatch.setenv("CONVERGE_TEST_SECRET", "x")
    assert "CONVERGE_TEST_SECRET" not in await safe.call("did:a", "env_names")
    hasty = SafeTools(registry, sandbox=FAST, timeout_s=0.5)  # well inside the sandbox's 60 s
    with pytest.raises(ToolTimeout) as info:  # SafeTools' own timeout kills the child too
        await hasty.call("did:a", "sleepy", {"seconds": 120})
    assert info.value.killed and info.value.agent_id == "did:a"
    assert info.value.timeout_s == 0.5
