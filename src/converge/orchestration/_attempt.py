"""One attempt of one node's pass: its tries, then its ``on_error``.

Its tries — each within the node's timeout, retried with backoff on the run's clock — then its
``on_error`` (skip it, ask a person, run its fallback, or run the replacement nodes
``on_node_failed`` gives), to a ``PassResult``; the statuses a pass moves through (``PassStatus``,
``_PASS_TRANSITIONS``); and calling an agent.

An attempt needs of its run only what ``AttemptHost`` names (``_loop.RunLoop`` is one): its
log, its clock, the pool for sync agents, a context for each try, and the failure hook. What
comes before (a pass read back from the log, an answer standing in for it, ``max_iterations``)
and after (storing the output, following edges) is the run's.

**Policies.** Each try has the node's ``timeout``, else ``timeout_per_agent_seconds``; retries
back off on the injected clock (the node's ``retry``, else ``execution.retry_policy``); then
``on_error``: ``abort`` (the default: in-flight nodes are cancelled and the run FAILS naming the
node and the cause), ``retry`` (the same, named for intent), ``skip`` (output ``MISSING``),
``fallback`` (its agent runs once in the node's place), ``human`` (the run WAITS with a question;
the answer becomes the output). Async callables run on the loop, sync ones in the engine's
bounded thread pool (``AgentSpec(fn, inline=True)`` keeps a quick one on the loop; a timed-out
sync call's thread runs on, as threads cannot be killed).

**What an agent raises fails its node**, whatever its type (``core.user_code``):
``sys.exit()``, its own ``KeyboardInterrupt``, ``GeneratorExit``, a ``BaseExceptionGroup``, a
thread's ``StopIteration`` (reported as Python reports one leaving a coroutine:
``RuntimeError: coroutine raised StopIteration``) — sync in the pool or inline, async, alone or
as a task of the run's group; so do a fallback's and a replacement's. It is logged
``node.failed`` with ``Type: message`` (``SystemExit: 0``) and the node's retry and ``on_error``
apply as to any error. The process's own stop (a cancellation, a signal handler's exception)
goes on; one that leaves the run logs ``run.interrupted`` first, as a cancellation does.

**Statuses.** A pass moves through ``_PASS_TRANSITIONS``: RUNNING to how it ended, then, as it is
settled, a ``Halt`` output halts it and an output that cannot be stored fails it. A refused move
is ``InvalidTransition`` naming both statuses and the node; ``node.done`` logs the status as its
word (a ``str``, not the enum).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from converge.core.clock import Clock
from converge.core.user_code import WorkerThreads, is_interruption
from converge.errors import InvalidTransition, ValidationError
from converge.orchestration._agents import NodeAgent, resolve_agent
from converge.orchestration._context import NodeContext, Paused
from converge.orchestration._missing import unstorable
from converge.orchestration._plan import PlanNode
from converge.orchestration._refs import MISSING
from converge.orchestration._run_log import NO_USAGE, RunLog, add_usage
from converge.protocol.objects import Usage

__all__ = [
    "AttemptHost",
    "FailureHook",
    "NodeFailure",
    "PassResult",
    "PassStatus",
    "Replacement",
    "attempt",
    "call",
    "check_pass_transition",
    "describe_error",
    "invoke",
    "nth",
]


class PassStatus(enum.StrEnum):
    """Where one pass of a node is: RUNNING while it runs, then how it ended. The six that
    finish it are logged as ``node.done``'s ``status``."""

    RUNNING = "running"
    """Its tries (its fallback, its replacement nodes) are under way."""
    COMPLETED = "completed"
    """Its agent returned its output."""
    SKIPPED = "skipped"
    """It failed with ``on_error: skip``: its output is ``MISSING``."""
    FALLBACK = "fallback"
    """It failed; its fallback agent's output stands in."""
    REPLANNED = "replanned"
    """It failed; the replacement nodes of ``on_node_failed`` gave its output."""
    ANSWERED = "answered"
    """It had failed with ``on_error: human``; a person's answer is its output."""
    HALTED = "halted"
    """It returned ``Halt(output)``: finished, none of its edges taken."""
    PAUSED = "paused"
    """It asks a person (``ctx.pause``, ``on_error: human``): the run waits."""
    FAILED = "failed"
    """It failed for good (or its output cannot be stored): the run fails."""
    FATAL = "fatal"
    """It would run more often than ``max_iterations`` allows: the run fails."""


_P = PassStatus

_PASS_TRANSITIONS: dict[PassStatus, frozenset[PassStatus]] = {
    # A pass read back from the log (resume) ends at once as it was logged.
    _P.RUNNING: frozenset(set(_P) - {_P.RUNNING}),
    # Settling it: an output that is a ``Halt`` halts it; one that cannot be stored fails it
    # (a fallback's output and a person's answer are checked there too; a replacement's is
    # checked as it returns, so a replanned pass is final).
    _P.COMPLETED: frozenset({_P.HALTED, _P.FAILED}),
    _P.FALLBACK: frozenset({_P.HALTED, _P.FAILED}),
    _P.ANSWERED: frozenset({_P.FAILED}),
    _P.HALTED: frozenset({_P.FAILED}),
    _P.REPLANNED: frozenset(),
    _P.SKIPPED: frozenset(),
    _P.PAUSED: frozenset(),
    _P.FAILED: frozenset(),
    _P.FATAL: frozenset(),
}
"""Every move of a pass's status: ``_PASS_TRANSITIONS[a]`` is the set of statuses ``a`` may
move to."""


def check_pass_transition(current: PassStatus, target: PassStatus, node_id: str) -> None:
    """Raise ``InvalidTransition`` (naming both statuses and the node) unless ``current ->
    target`` is in ``_PASS_TRANSITIONS``."""
    if target not in _PASS_TRANSITIONS[current]:
        raise InvalidTransition(current, target, subject=f"a pass of node {node_id!r}")


class PassResult:
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
        status: PassStatus,
        output: Any = None,
        *,
        error: str | None = None,
        usage: Usage | None = None,
        question: str | None = None,
        index: int = 0,
        replayed: bool = False,
        started_at: float = 0.0,
    ) -> None:
        self.status = status
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
    """A node ``on_node_failed`` splices in place of the failed one (re-planning).

    Args:
        id: its id in the log (unique among the replacements).
        agent: what does its work (an agent, a callable or a ``"module:attr"`` reference).
    """

    __slots__ = ("agent", "id")

    def __init__(self, id: str, agent: Any) -> None:
        self.id = id
        self.agent = agent


FailureHook = Callable[[NodeFailure], Awaitable[Sequence[Replacement] | None]]


class AttemptHost(Protocol):
    """What attempting a node needs of its run."""

    events: RunLog
    """Where the tries are logged (``node.start``, ``node.retry``, ``node.replaced``)."""
    clock: Clock
    """The run's clock: backoff between tries waits on it."""
    pool: WorkerThreads
    """Where sync agents run."""
    on_node_failed: FailureHook | None
    """Asked for replacement nodes once a node has failed for good."""

    def context(self, node: PlanNode, iteration: int, attempt: int) -> NodeContext:
        """The context of try ``attempt`` (0: the fallback's) of ``node``'s pass."""

    def node_outputs(self) -> dict[str, Any]:
        """Every node's latest output, by node id (what ``NodeFailure.completed`` holds)."""


_COMPLETED = _P.COMPLETED
_PAUSED = _P.PAUSED
_FAILED = _P.FAILED


async def attempt(
    host: AttemptHost,
    node: PlanNode,
    iteration: int,
    inputs: dict[str, Any],
    parent: str | None,
) -> PassResult:
    """Attempt pass ``iteration`` of ``node`` with ``inputs``: try it, retry it, then apply
    its ``on_error``. ``parent`` is the event that made it ready (its ``node.start``'s parent).

    What the agent raises is its failure (``sys.exit()`` and its own ``KeyboardInterrupt``
    too); a cancellation and the process's stop (a signal's) go on.
    """
    events = host.events
    clock = host.clock
    agent = node.agent
    timeout = node.timeout
    retry = node.retry
    attempt = 1
    while True:
        started = clock.now()
        events.add(
            "node.start",
            {
                "node": node.id,
                "agent": agent.name,
                "iteration": iteration,
                "attempt": attempt,
                "task_id": f"{events.run_id}/{node.id}/{iteration}",
                "inputs": list(inputs),
            },
            parent=parent,
            at=started,
        )
        # An agent that takes no context needs none made (it cannot report usage or pause).
        if agent.takes_ctx:
            ctx: NodeContext | None = host.context(node, iteration, attempt)
            args: tuple[Any, ...] = (inputs, ctx)
        else:
            ctx = None
            args = (inputs,)
        try:
            if timeout is None and agent.is_async:  # the common case, without a frame more
                output = await agent.fn(*args)
            else:
                output = await _call(agent, args, timeout, host.pool)
            usage = NO_USAGE if ctx is None else ctx.usage
            return PassResult(_COMPLETED, output, usage=usage, started_at=started)
        except Paused as paused:
            usage = NO_USAGE if ctx is None else ctx.usage
            return PassResult(_PAUSED, question=paused.question, index=paused.index, usage=usage)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if is_interruption(exc):
                raise
            error = describe_error(exc, timeout)
            usage = NO_USAGE if ctx is None else ctx.usage
        if attempt <= retry.max_retries:
            delay = retry.delay(attempt)
            data = {
                "node": node.id,
                "iteration": iteration,
                "attempt": attempt,
                "max_retries": retry.max_retries,
                "error": error,
                "delay": delay,
            }
            events.add("node.retry", events.spend(data, usage))
            if delay > 0:
                await clock.sleep(delay)
            attempt += 1
            continue
        return await _after_failure(host, node, iteration, inputs, error, usage, started)


async def _after_failure(
    host: AttemptHost,
    node: PlanNode,
    iteration: int,
    inputs: dict[str, Any],
    error: str,
    usage: Usage,
    started: float,
) -> PassResult:
    """Apply ``node``'s ``on_error`` once its tries have failed (``usage``: the last one's)."""
    if node.on_error == "skip":
        return PassResult(_P.SKIPPED, MISSING, error=error, usage=usage, started_at=started)
    if node.on_error == "human":
        question = f"node {node.id!r} failed: {error}. Answer with the output to use in its place."
        return PassResult(_PAUSED, question=question, index=-1, error=error, usage=usage)
    if node.on_error == "fallback" and node.fallback is not None:
        ctx = host.context(node, iteration, 0)
        try:
            output = await call(node.fallback, inputs, ctx, node.timeout, host.pool)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if is_interruption(exc):
                raise
            error = f"{error}; its fallback {node.fallback.name!r} failed too: " + describe_error(
                exc, node.timeout
            )
            return PassResult(_FAILED, error=error, usage=add_usage(usage, ctx.usage))
        usage = add_usage(usage, ctx.usage)
        return PassResult(_P.FALLBACK, output, error=error, usage=usage, started_at=started)
    if host.on_node_failed is not None:
        failure = NodeFailure(
            node.id, iteration, error, dict(inputs), host.node_outputs(), host.events.run_id
        )
        replacements = await host.on_node_failed(failure)
        if replacements:
            return await _replace(
                host, node, iteration, inputs, error, replacements, started, usage
            )
    return PassResult(_FAILED, error=error, usage=usage)


async def _replace(
    host: AttemptHost,
    node: PlanNode,
    iteration: int,
    inputs: dict[str, Any],
    error: str,
    replacements: Sequence[Replacement],
    started: float,
    usage: Usage,
) -> PassResult:
    """Run the hook's replacement nodes in a chain in place of ``node``: the first gets its
    inputs, each next one ``{"<previous id>.output": ...}``; the last one's output is the
    node's. Each is logged as a node of its own (``replaces`` names the failed one). ``usage``
    is the failed try's; the replacements' is added to it."""
    events = host.events
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
        events.add("node.start", {**data, "replaces": node.id})
        ctx = host.context(node, iteration, 1)
        try:
            output = await call(agent, value, ctx, node.timeout, host.pool)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if is_interruption(exc):
                raise
            reason = describe_error(exc, node.timeout)
            return PassResult(
                _FAILED,
                error=f"{error}; its replacement {spec.id!r} failed too: {reason}",
                usage=add_usage(usage, ctx.usage),
            )
        usage = add_usage(usage, ctx.usage)
        problem = unstorable(output)
        if problem is not None:
            return PassResult(
                _FAILED,
                error=f"{error}; its replacement {spec.id!r} returned an output that cannot "
                f"be stored: {problem}",
                usage=usage,
            )
        events.add(
            "node.replaced",
            {"node": spec.id, "iteration": iteration, "replaces": node.id, "output": output},
        )
        value = {f"{spec.id}.output": output}
    return PassResult(_P.REPLANNED, output, error=error, usage=usage, started_at=started)


async def call(
    agent: NodeAgent,
    inputs: dict[str, Any],
    ctx: NodeContext | None,
    timeout: float | None,
    pool: WorkerThreads,
) -> Any:
    """Call ``agent`` with ``inputs`` (and ``ctx`` if it takes one) within ``timeout``."""
    args = (inputs, ctx) if agent.takes_ctx else (inputs,)
    if timeout is None and agent.is_async:
        return await agent.fn(*args)
    return await _call(agent, args, timeout, pool)


async def _call(
    agent: NodeAgent, args: tuple[Any, ...], timeout: float | None, pool: WorkerThreads
) -> Any:
    if timeout is None:
        return await invoke(agent, args, pool)
    async with asyncio.timeout(timeout):
        return await invoke(agent, args, pool, timed=True)


async def invoke(
    agent: NodeAgent, args: tuple[Any, ...], pool: WorkerThreads, *, timed: bool = False
) -> Any:
    """Call ``agent``: on the loop if it is async (or ``inline``), else in ``pool`` (``timed``:
    under a deadline, so never waited for on the loop's thread); await what it returns if
    that is awaitable."""
    if agent.is_async:
        return await agent.fn(*args)
    if agent.inline:
        result = agent.fn(*args)
    elif timed:
        result = await pool.run_timed(agent.fn, *args)
    else:
        result = await pool.run(agent.fn, *args)
    if isinstance(result, Awaitable):
        return await result
    return result


def describe_error(exc: BaseException, timeout: float | None) -> str:
    """``Type: message`` of what a try raised (``timed out after N s`` for its timeout)."""
    if isinstance(exc, TimeoutError) and timeout is not None:
        return f"timed out after {timeout:g} s"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def nth(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``… ``11th``, ``21st``."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
