"""What a node's agent raises is its node's failure, whatever its type — ``sys.exit()``, its own
``KeyboardInterrupt``, ``GeneratorExit``, a ``BaseExceptionGroup``, a thread's ``StopIteration``
— logged (``node.failed``) under the node's policies; the process's own stop (a signal's) goes
on, and the run is logged INTERRUPTED.

The scenarios run under ``asyncio.run`` with Python's default Ctrl-C handler in place, as in a
script or ``converge run`` (``asyncio.run`` then installs its own).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

from converge.orchestration import (
    AgentSpec,
    Engine,
    Graph,
    NodeFailure,
    Replacement,
    RetryPolicy,
    RunFailed,
    RunStatus,
    Services,
    Team,
)
from converge.protocol import Event
from converge.store import MemoryStore

T = TypeVar("T")
HANG_GUARD = 30  # seconds: a thread's StopIteration used to leave its node waiting for ever


@contextmanager
def sigint(handler: Any) -> Iterator[None]:
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_as_a_script(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    with sigint(signal.default_int_handler):
        return asyncio.run(main())


def sys_exit() -> None:
    sys.exit(0)


def keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def generator_exit() -> None:
    raise GeneratorExit


def stop_iteration() -> Any:
    return next(iter(()))


def base_group() -> None:
    raise BaseExceptionGroup("own", [SystemExit(3)])


RAISERS: dict[str, tuple[Callable[[], Any], str]] = {
    "sys.exit": (sys_exit, "SystemExit: 0"),
    "KeyboardInterrupt": (keyboard_interrupt, "KeyboardInterrupt"),
    "GeneratorExit": (generator_exit, "GeneratorExit"),
    "StopIteration": (stop_iteration, "RuntimeError: coroutine raised StopIteration"),
    "BaseExceptionGroup": (base_group, "BaseExceptionGroup: own (1 sub-exception)"),
}


def agent_of(how: str, fn: Callable[[], Any]) -> Any:
    """``fn`` as a node's agent: in the engine's thread pool, inline on the loop, or async."""

    def sync(inputs: dict[str, Any]) -> Any:
        return fn()

    async def run(inputs: dict[str, Any]) -> Any:
        await asyncio.sleep(0)
        return fn()

    if how == "thread":
        return sync
    if how == "inline":
        return AgentSpec(sync, inline=True)
    return run


async def failed_run(engine: Engine, graph: Graph) -> tuple[str | None, list[Event]]:
    async with asyncio.timeout(HANG_GUARD):
        with pytest.raises(RunFailed) as info:
            await engine.execute(graph)
    result = info.value.result
    assert result.status is RunStatus.FAILED
    return result.error, await engine.store.read(trace_id=result.run_id)


def data(events: Sequence[Event], kind: str) -> list[dict[str, Any]]:
    return [e.data for e in events if e.kind == kind]


@pytest.mark.parametrize("how", ["thread", "inline", "async"])
@pytest.mark.parametrize("what", list(RAISERS))
def test_whatever_a_node_raises_fails_it_and_is_logged(how: str, what: str) -> None:
    fn, expected = RAISERS[what]

    async def main() -> tuple[str | None, list[Event]]:
        graph = Graph("g").add_node("a", agent_of(how, fn))
        return await failed_run(Engine(MemoryStore()), graph)

    error, events = run_as_a_script(main)
    assert error == f"node 'a' failed: {expected}"
    [failed] = data(events, "node.failed")
    assert (failed["node"], failed["error"]) == ("a", expected)
    assert events[-1].kind == "run.failed"


@pytest.mark.parametrize("how", ["thread", "async"])
def test_a_node_running_beside_others_fails_alone_and_stops_them(how: str) -> None:
    async def main() -> tuple[str | None, list[Event]]:
        started = asyncio.Event()

        async def other(inputs: dict[str, Any]) -> str:
            started.set()
            await asyncio.Event().wait()  # cancelled when the run aborts
            return "never"

        async def exits(inputs: dict[str, Any]) -> None:
            await started.wait()  # both run as tasks of the run's task group
            await call(sys_exit)

        call = agent_call(how)
        graph = Graph("g").add_node("a", exits).add_node("b", other)
        return await failed_run(Engine(MemoryStore()), graph)

    error, events = run_as_a_script(main)
    assert error == "node 'a' failed: SystemExit: 0"
    assert [d["node"] for d in data(events, "node.start")] == ["a", "b"]
    assert [d["node"] for d in data(events, "node.failed")] == ["a"]


def agent_call(how: str) -> Callable[[Callable[[], Any]], Awaitable[Any]]:
    async def in_thread(fn: Callable[[], Any]) -> Any:
        return await asyncio.to_thread(fn)

    async def here(fn: Callable[[], Any]) -> Any:
        return fn()

    return in_thread if how == "thread" else here


def test_the_node_policies_apply_to_what_it_raises() -> None:
    calls: list[str] = []

    def exits(inputs: dict[str, Any]) -> None:
        calls.append("a")
        sys.exit(0)

    async def main() -> tuple[list[Event], list[Event], str | None, str | None]:
        engine = Engine(MemoryStore())
        once = RetryPolicy(max_retries=1, backoff="none")
        retried = await engine.execute(
            Graph("retry").add_node("a", exits, retry=once, on_error="skip")
        )
        skipped = await engine.store.read(trace_id=retried.run_id)
        fallback = Graph("fb").add_node(
            "a", exits, on_error="fallback", fallback=agent_of("async", keyboard_interrupt)
        )
        fell, fell_events = await failed_run(engine, fallback)

        async def replace(failure: NodeFailure) -> Sequence[Replacement]:
            return [Replacement("r", agent_of("thread", generator_exit))]

        hooked = Engine(MemoryStore(), on_node_failed=replace)
        replaced, _ = await failed_run(hooked, Graph("re").add_node("a", exits))
        return skipped, fell_events, fell, replaced

    skipped, fell_events, fell, replaced = run_as_a_script(main)
    assert [(d["attempt"], d["error"]) for d in data(skipped, "node.retry")] == [
        (1, "SystemExit: 0")
    ]
    [done] = data(skipped, "node.done")
    assert (done["status"], done["error"]) == ("skipped", "SystemExit: 0")
    assert skipped[-1].kind == "run.completed"
    assert fell == (
        "node 'a' failed: SystemExit: 0; its fallback 'a.fallback' failed too: KeyboardInterrupt"
    )
    assert fell_events[-1].kind == "run.failed"
    assert (
        replaced == "node 'a' failed: SystemExit: 0; its replacement 'r' failed too: GeneratorExit"
    )
    assert calls == ["a"] * 4


def test_a_team_member_that_exits_is_a_failed_member() -> None:
    members = {
        "exits": agent_of("async", sys_exit),
        "interrupts": agent_of("thread", keyboard_interrupt),
        "stops": agent_of("thread", stop_iteration),
        "answers": agent_of("async", lambda: 4),
    }

    async def main() -> Any:
        engine = Engine(MemoryStore(), services=Services(agents=members))
        graph = Graph("t").add_node("team", Team(sorted(members), output="resolution"))
        async with asyncio.timeout(HANG_GUARD):
            return (await engine.execute(graph)).output

    resolution = run_as_a_script(main)
    assert resolution["output"] == 4
    assert sorted(resolution["failed"]) == ["exits", "interrupts", "stops"]


def test_a_signal_that_lands_in_a_node_stops_the_run_as_interrupted() -> None:
    """A signal handler's exception is the process's, wherever it lands (here in the node's
    own frame, as Ctrl-C pressed twice under asyncio.run would): it goes on, and the run is
    logged INTERRUPTED rather than left looking as if it ran."""

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(143)

    async def node(inputs: dict[str, Any]) -> str:
        signal.raise_signal(signal.SIGUSR1)  # its handler runs here, in this frame
        return "never"

    async def main() -> list[str]:
        engine = Engine(MemoryStore())
        with pytest.raises(SystemExit) as info:
            await engine.execute(Graph("g").add_node("a", node))
        assert info.value.code == 143
        return [e.kind for e in await engine.store.read()]

    previous = signal.signal(signal.SIGUSR1, terminate)
    try:
        kinds = run_as_a_script(main)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert kinds == ["run.started", "node.start", "run.interrupted"]


def test_without_asyncio_run_a_keyboard_interrupt_on_the_loop_is_taken_for_ctrl_c() -> None:
    """Python's own Ctrl-C handler raises ``KeyboardInterrupt`` wherever the main thread is and
    leaves no trace of itself: on the loop's thread it is Ctrl-C; in a worker thread, where
    signals never land, it is the agent's."""

    async def main(how: str) -> list[str]:
        engine = Engine(MemoryStore())
        graph = Graph("g").add_node("a", agent_of(how, keyboard_interrupt))
        try:
            await engine.execute(graph)
        except (KeyboardInterrupt, RunFailed):
            pass
        return [e.kind for e in await engine.store.read()]

    loop = asyncio.new_event_loop()
    try:
        with sigint(signal.default_int_handler):
            on_loop = loop.run_until_complete(main("async"))
            in_thread = loop.run_until_complete(main("thread"))
    finally:
        loop.close()
    assert on_loop == ["run.started", "node.start", "run.interrupted"]
    assert in_thread == ["run.started", "node.start", "node.failed", "run.failed"]
