"""One pass of a node, the parts that do not need the run's state: how a pass ended
(``Outcome``), what ``on_node_failed`` gets and gives (``NodeFailure``, ``Replacement``),
running replacement nodes, and calling an agent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from converge.core.user_code import call_in_thread, is_interruption
from converge.errors import ValidationError
from converge.orchestration._agents import NodeAgent, resolve_agent
from converge.orchestration._missing import unstorable
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
    usage: Usage,
) -> Outcome:
    """Run the hook's replacement nodes in a chain in place of ``node``: the first gets its
    inputs, each next one ``{"<previous id>.output": ...}``; the last one's output is the
    node's. Each is logged as a node of its own (``replaces`` names the failed one). ``usage``
    is the failed try's; the replacements' is added to it."""
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
        except BaseException as exc:
            if is_interruption(exc):
                raise
            reason = describe_error(exc, node.timeout)
            return Outcome(
                "failed",
                error=f"{error}; its replacement {spec.id!r} failed too: {reason}",
                usage=add_usage(usage, ctx.usage),
            )
        usage = add_usage(usage, ctx.usage)
        problem = unstorable(output)
        if problem is not None:
            return Outcome(
                "failed",
                error=f"{error}; its replacement {spec.id!r} returned an output that cannot "
                f"be stored: {problem}",
                usage=usage,
            )
        run.log(
            "node.replaced",
            {"node": spec.id, "iteration": iteration, "replaces": node.id, "output": output},
        )
        value = {f"{spec.id}.output": output}
    return Outcome("replanned", output, error=error, usage=usage, started_at=started)


NO_USAGE = Usage()
"""No usage reported."""


async def invoke(agent: NodeAgent, args: tuple[Any, ...], pool: Executor) -> Any:
    if agent.is_async:
        return await agent.fn(*args)
    if agent.inline:
        result = agent.fn(*args)
    else:
        result = await call_in_thread(agent.fn, *args, executor=pool)
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
