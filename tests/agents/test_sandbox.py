"""Unsafe tools in a child process: results, wall time, memory, environment, errors, output,
the processes a tool leaves behind, and what it can see of other processes."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

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


# -- What a tool writes: its output is noise, read and dropped; its answer is capped. --


async def test_a_tool_flooding_its_output_does_not_grow_the_parent() -> None:
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        flood = SandboxedTool(tools.flood, limits=FAST)
        assert await flood.invoke({"mib": 32}) == "done"  # 64 MiB of output, then the answer
        _, peak = tracemalloc.get_traced_memory()
        with pytest.raises(ToolError) as info:
            await flood.invoke({"mib": 1, "exit_code": 3})
    finally:
        if not was_tracing:
            tracemalloc.stop()
    # Only the tail of the output is kept, plus one read's worth in flight.
    assert peak - before < 4 * 2**20
    err = info.value
    assert err.error_type == "crashed" and "code 3" in str(err)
    assert f"the last 2000 characters of {2 * 2**20 + 7} bytes" in str(err)
    assert str(err).endswith("the end") and len(err.detail) < 2200


async def test_an_answer_past_result_bytes_is_refused_and_the_tool_killed() -> None:
    small = SandboxLimits(wall_time_s=60.0, result_bytes=2**20)
    with pytest.raises(ToolError) as info:
        await SandboxedTool(tools.big, limits=small).invoke({"mib": 8})
    assert info.value.error_type == "result_too_large"
    assert "1 MiB limit (result_bytes)" in str(info.value) and "killed" in str(info.value)
    enough = SandboxLimits(wall_time_s=60.0, result_bytes=2**20 + 64)  # and the JSON around it
    assert await SandboxedTool(tools.big, limits=enough).invoke({"mib": 1}) == "z" * 2**20


# -- How a call ended: from the child's exit and its answer, never from what it printed. --


async def test_printing_memoryerror_is_a_crash_not_a_memory_limit() -> None:
    with pytest.raises(ToolError) as info:
        await SandboxedTool(tools.fake_memory_error, limits=FAST).invoke({})
    assert not isinstance(info.value, ToolMemoryExceeded)
    assert info.value.error_type == "crashed" and "exited with code 3" in str(info.value)
    assert "MemoryError" in info.value.detail  # shown, as the tool's output, not believed
    with pytest.raises(ToolError) as killed:
        await SandboxedTool(tools.kill_self, limits=FAST).invoke({"signal_name": "SIGKILL"})
    assert type(killed.value) is ToolError and killed.value.error_type == "crashed"
    assert "killed by signal SIGKILL" in str(killed.value)


# -- What a tool leaves running: killed when the call ends, however it ends. --


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A named pipe the helper a tool starts holds open for writing, and its read end: it reads
    end-of-file once every process holding it has ended."""
    path = tmp_path / "helper.fifo"
    os.mkfifo(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    yield str(path), fd
    os.close(fd)


class _Held:
    """What the read end of ``fifo`` has shown: the helper's byte, then end-of-file."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.started = False
        self.ended = False

    def poll(self) -> bool:
        while not self.ended:
            try:
                data = os.read(self.fd, 64)
            except BlockingIOError:  # a writer still holds it
                return False
            self.started |= b"s" in data
            self.ended = data == b""
        return True


async def _eventually(check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` until it holds; fail after 30 s (a hang guard, not a timing)."""
    deadline = time.monotonic() + 30.0
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        await asyncio.sleep(0.02)


async def _has_own_pid_namespace() -> bool:
    theirs = await SandboxedTool(tools.pid_namespace, limits=FAST).invoke({})
    return bool(theirs != os.readlink("/proc/self/ns/pid"))


async def test_a_helper_left_running_by_a_tool_that_answered_is_killed(
    fifo: tuple[str, int],
) -> None:
    path, fd = fifo
    tool = SandboxedTool(tools.start_helper, limits=FAST)
    held = _Held(fd)
    await tool.invoke({"fifo": path, "new_session": False, "then_sleep": 0})
    await _eventually(held.poll, "the helper in the tool's process group ended")
    assert held.started
    if not await _has_own_pid_namespace():
        pytest.skip("no PID namespaces here: a helper in a new session may outlive the call")
    held = _Held(fd)
    await tool.invoke({"fifo": path, "new_session": True, "then_sleep": 0})
    await _eventually(held.poll, "the helper in a session of its own ended")
    assert held.started


async def test_the_helpers_of_a_cancelled_call_are_killed(fifo: tuple[str, int]) -> None:
    if not await _has_own_pid_namespace():
        pytest.skip("no PID namespaces here: a helper in a new session may outlive the call")
    path, fd = fifo
    held = _Held(fd)
    tool = SandboxedTool(tools.start_helper, limits=FAST)
    call = asyncio.create_task(tool.invoke({"fifo": path, "new_session": True, "then_sleep": 300}))
    await _eventually(lambda: held.poll() or held.started, "the tool started its helper")
    call.cancel()  # as SafeTools' timeout does
    with pytest.raises(asyncio.CancelledError):
        await call
    await _eventually(held.poll, "the helper in a session of its own ended")


# -- What a tool can see of other processes. --

_SNOOPING = """
import asyncio, json, os, sys
from converge.runtime import sandbox
from tests.agents import _sandbox_tools as tools

secret = os.environ["CONVERGE_TEST_SECRET"]
parts = [secret[:10], secret[10:]]
# Before falling back: a non-dumpable process's /proc files belong to root.
report = {"pid": os.getpid(), "control": tools.snoop(parts, [os.getpid()])}
if sys.argv[1] == "none":
    sandbox._fall_back("the test asks for no namespaces")
report["sandboxed"] = asyncio.run(
    sandbox.run_in_sandbox(
        "tests.agents._sandbox_tools:snoop",
        {"secret": parts, "pids": [os.getpid()]},
        tool="snoop",
        limits=sandbox.SandboxLimits(wall_time_s=60.0),
    )
)
report["unisolated"] = getattr(sandbox, "_unisolated", None)
print(json.dumps(report))
"""


# Runs a command where mounting a /proc is refused, as under some container runtimes: a procfs
# mount in a user namespace must not reveal more than the /proc it can already see, and this
# one has a file system locked over /proc/sys.
_NO_PROC_MOUNTS = [
    "unshare",
    "--user",
    "--map-root-user",
    "--mount",
    "sh",
    "-c",
    'mount -t tmpfs none /proc/sys && exec unshare --user --map-root-user --mount "$@"',
    "sh",
]


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc, which only Linux has")
@pytest.mark.parametrize("namespaces", ["own", "refused", "none"])
def test_a_tool_cannot_read_the_parents_environment_or_memory(namespaces: str) -> None:
    """Whoever runs converge (root here, and in CI and containers): the secret in its
    environment is readable by converge itself, not by a tool it runs in the sandbox — in
    namespaces of its own, or without them (refused by the system, or by choice: ``none``)."""
    secret = "sk-converge-" + secrets.token_hex(16)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        "CONVERGE_TEST_SECRET": secret,
    }
    command = [sys.executable, "-c", _SNOOPING, namespaces]
    if namespaces == "refused":
        try:
            subprocess.run([*_NO_PROC_MOUNTS, "true"], capture_output=True, check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            pytest.skip(f"cannot make a user namespace that refuses /proc mounts here: {exc}")
        command = [*_NO_PROC_MOUNTS, *command]
    done = subprocess.run(
        command,
        env=env,
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    parent = f"/proc/{report['pid']}"
    assert report["control"][f"{parent}/environ"] == "found"  # there to be found, by converge
    if namespaces == "own" and report["unisolated"]:
        pytest.skip(f"no namespaces here ({report['unisolated']})")
    sandboxed = report["sandboxed"]
    assert not [path for path, what in sandboxed.items() if what == "found"]
    if namespaces == "own":  # converge is not even in the tool's /proc
        assert sandboxed[f"{parent}/environ"] == "FileNotFoundError"
        assert sandboxed[f"{parent}/mem"] == "FileNotFoundError"
        assert {path.split("/")[2] for path in sandboxed} <= {"1", str(report["pid"])}
        return
    if namespaces == "refused":  # found out by the first call, said once
        assert "mount /proc" in report["unisolated"]
        assert done.stderr.count("run without their own PID and mount namespaces") == 1
    assert sandboxed[f"{parent}/environ"] == "PermissionError"
    assert sandboxed[f"{parent}/mem"] == "PermissionError"
    assert sandboxed[f"{parent}/cmdline"] == "read"
