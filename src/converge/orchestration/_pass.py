"""One pass of a node, the parts that do not need the run's state: how a pass ended
(``Outcome``), what ``on_node_failed`` gets and gives (``NodeFailure``, ``Replacement``),
running replacement nodes, eager starts, and calling an agent.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from converge.errors import ValidationError
from converge.orchestration._agents import NodeAgent, resolve_agent
from converge.orchestration._plan import PlanNode
from converge.protocol.objects import Usage

if TYPE_CHECKING:
    from converge.orchestration._run import RunState

__all__ = [
    "NO_USAGE",
    "FailureHook",
    "NodeFailure",
    "Outcome",
    "Replacement",
    "add_usage",
    "describe_error",
    "invoke",
    "nth",
    "run_replacements",
    "start_eagerly",
]


class Outcome:
    """How one pass of a node ended."""

    __slots__ = (
        "error",
        "event_id",
        "index",
        "output",
        "question",
        "replayed",
        "started_at",
        "status",
        "usage",
    )

    def __init__(
        self,
        status: str,
        output: Any = None,
        *,
        error: str | None = None,
        usage: Usage | None = None,
        question: str | None = None,
        index: int = 0,
        replayed: bool = False,
        started_at: float = 0.0,
    ) -> None:
        self.status = status  # completed, skipped, fallback, answered, paused, failed, fatal
        self.output = output
        self.error = error
        self.usage = usage
        self.question = question
        self.index = index
        self.replayed = replayed
        self.started_at = started_at
        self.event_id: str | None = None


class NodeFailure:
    """What ``on_node_failed`` is told: a node ran out of retries and would fail the run.

    Attributes:
        node_id: the node.
        iteration: its pass.
        error: why it failed.
        inputs: what it was given.
        completed: the latest output of every node that has finished so far.
        run_id: the run.
    """

    __slots__ = ("completed", "error", "inputs", "iteration", "node_id", "run_id")

    def __init__(
        self,
        node_id: str,
        iteration: int,
        error: str,
        inputs: dict[str, Any],
        completed: dict[str, Any],
        run_id: str,
    ) -> None:
        self.node_id = node_id
        self.iteration = iteration
        self.error = error
        self.inputs = inputs
        self.completed = completed
        self.run_id = run_id


class Replacement:
    """A node ``on_node_failed`` splices in place of the failed one (seed 002 §9.2).

    Args:
        id: its id in the log (unique among the replacements).
        agent: what does its work (an agent, a callable or a ``"module:attr"`` reference).
    """

    __slots__ = ("agent", "id")

    def __init__(self, id: str, agent: Any) -> None:
        self.id = id
        self.agent = agent


FailureHook = Callable[[NodeFailure], Awaitable[Sequence[Replacement] | None]]


async def run_replacements(
    run: RunState,
    node: PlanNode,
    iteration: int,
    inputs: dict[str, Any],
    error: str,
    replacements: Sequence[Replacement],
    started: float,
) -> Outcome:
    """Run the hook's replacement nodes in a chain in place of ``node``: the first gets its
    inputs, each next one ``{"<previous id>.output": ...}``; the last one's output is the
    node's. Each is logged as a node of its own (``replaces`` names the failed one)."""
    usage = Usage()
    value: dict[str, Any] = inputs
    output: Any = None
    for i, spec in enumerate(replacements):
        if not isinstance(spec, Replacement):
            raise ValidationError(
                f"on_node_failed returned {type(spec).__name__}, not a Replacement",
                field=f"replacements[{i}]",
            )
        agent = resolve_agent(spec.id, spec.agent)
        data = {"node": spec.id, "agent": agent.name, "iteration": iteration, "attempt": 1}
        run.log("node.start", {**data, "replaces": node.id})
        ctx = run._context(node, iteration, 1)
        try:
            output = await run._call(agent, value, ctx, node.timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = describe_error(exc, node.timeout)
            return Outcome(
                "failed",
                error=f"{error}; its replacement {spec.id!r} failed too: {reason}",
                usage=usage,
            )
        usage = add_usage(usage, ctx.usage)
        run.log(
            "node.replaced",
            {"node": spec.id, "iteration": iteration, "replaces": node.id, "output": output},
        )
        value = {f"{spec.id}.output": output}
    return Outcome("replanned", output, error=error, usage=usage, started_at=started)


def start_eagerly(
    group: asyncio.TaskGroup, coro: Coroutine[Any, Any, Outcome]
) -> asyncio.Task[Outcome] | None:
    """Run ``coro`` up to its first suspension now; if it finished, no task is needed (None),
    else its rest runs as a task of ``group``.

    A node that does not suspend (a cached answer, a quick computation) then costs no task, no
    trip through the event loop and no context switch — what ``asyncio.eager_task_factory``
    does for every task from Python 3.12. The first step runs in a copy of the context, as a
    task's would, and the task goes on in that same context.
    """
    context = contextvars.copy_context()
    try:
        pending = context.run(coro.send, None)
    except StopIteration:
        return None
    return group.create_task(_Rest(coro, pending), context=context)


class _Rest(Coroutine[Any, Any, Outcome]):
    """The rest of a coroutine that already took its first step (see ``_start_eagerly``).

    The task's first ``send`` gets what the coroutine is already waiting on; everything after
    — sends, and a cancellation thrown in even before the task's first step — goes straight to
    the coroutine, as if the task had run it from the start.
    """

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Coroutine[Any, Any, Outcome], pending: Any) -> None:
        self._coro = coro
        self._pending: Any = pending

    def send(self, value: Any) -> Any:
        pending, self._pending = self._pending, _NOTHING
        if pending is not _NOTHING:
            return pending
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self._pending = _NOTHING
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)  # the old three-argument form

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, Any, Outcome]:
        raise TypeError("_Rest is driven by its task only")


_NOTHING = object()


NO_USAGE = Usage()
"""No usage reported."""


async def invoke(agent: NodeAgent, args: tuple[Any, ...], pool: Executor) -> Any:
    if agent.is_async:
        return await agent.fn(*args)
    if agent.inline:
        result = agent.fn(*args)
    else:
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(pool, functools.partial(agent.fn, *args))
    if isinstance(result, Awaitable):
        return await result
    return result


def describe_error(exc: BaseException, timeout: float | None) -> str:
    if isinstance(exc, TimeoutError) and timeout is not None:
        return f"timed out after {timeout:g} s"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def add_usage(a: Usage, b: Usage) -> Usage:
    if b == NO_USAGE:
        return a
    return Usage(
        tokens_in=a.tokens_in + b.tokens_in,
        tokens_out=a.tokens_out + b.tokens_out,
        tool_calls=a.tool_calls + b.tool_calls,
        cost=a.cost + b.cost,
    )


def nth(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
