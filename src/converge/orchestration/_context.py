"""``NodeContext``: what a node's agent gets from the engine.

What a node's agent gets from the engine while it runs (``RunContext``), and ``NodeHost``: what
a context reports to (the run, ``_loop.RunLoop``).

The idempotency key is ``run/node/iteration``: the same for every try of one pass and for a try
that runs again after a crash, so an agent deduplicates a side effect across retries and
resumes alike (an attempt number in the key would make each retry repeat it). ``trace_id`` is
the run's trace, a subgraph's child run's being its root run's: every coordination object a node
causes (a tender's rounds, offers, awards, receipts and trust update; a gate's ballot and votes;
a board node's task) is logged under it, with the object's own id as the events' ``subject``,
so ``Engine.trace`` and ``converge trace`` read one trace. ``pause(question)`` raises inside the
node; on resume with an answer the node runs again from its start and ``pause`` returns the
answer. ``checkpoint(label)`` logs ``run.checkpoint``; ``record_call`` logs a ``node.call``
(an LLM call, a tool call, an auction round) that the OTel listener draws as a span.
"""

from __future__ import annotations

from typing import Any, Protocol

from converge.core.clock import Clock
from converge.errors import OrchestrationError
from converge.orchestration._budget import AgentBudget
from converge.orchestration.services import Services
from converge.protocol.objects import Usage

__all__ = ["NodeContext", "NodeHost", "Paused"]

_NO_USAGE = Usage()


class Paused(Exception):
    """Raised inside a node by ``ctx.pause`` when the question has no answer yet; the engine
    records the question and the run waits (``WAITING``)."""

    def __init__(self, question: str, index: int) -> None:
        super().__init__(question)
        self.question = question
        self.index = index


class NodeHost(Protocol):
    """What a node's context reports to: the run it belongs to (``_loop.RunLoop``)."""

    def chunk(self, node_id: str, chunk: Any) -> None:
        """Stream a node's partial output to the run's listener (never logged)."""

    def progress(self, node_id: str, iteration: int, fraction: float, message: str) -> None:
        """Log a node's progress (``fraction`` in [0, 1], else ``ValidationError``)."""

    async def checkpoint(self, node_id: str, label: str) -> None:
        """Log a checkpoint named by a node, and write it at once."""

    async def subrun(
        self, node_id: str, iteration: int, graph: Any, inputs: dict[str, Any], answer: Any
    ) -> Any:
        """Run (or continue) the child run of a node's pass (``NodeContext.run_graph``)."""

    @property
    def services(self) -> Services:
        """What the engine lends to nodes."""

    def memory_context(self, node_id: str) -> Any:
        """A node's agent's view of the context scopes (``NodeContext.context``)."""

    def log(
        self,
        kind: str,
        data: dict[str, Any],
        *,
        parent: str | None = None,
        at: float | None = None,
    ) -> Any:
        """Log an event of the run (a node's ``node.call``)."""


class NodeContext:
    """The context of one try of one node.

    Attributes:
        run_id: the run.
        node_id: the node.
        iteration: 1 on the node's first pass in this run, +1 per pass of a loop.
        attempt: 1 on the first try of this pass, +1 per retry.
        idempotency_key: ``run/node/iteration``: the same for every try of this pass, and for a
            try that runs again after a crash and ``resume``, so an agent with side effects can
            deduplicate them across retries and resumes.
        trace_id: the run's trace (a subgraph's child run shares its root run's): what the
            node logs beyond the run's own events — a ballot, an auction, a board task — is
            logged under it, so the run's trace shows it.
        clock: the engine's clock.
    """

    __slots__ = (
        "_agent",
        "_answers",
        "_budget",
        "_host",
        "_pauses",
        "attempt",
        "clock",
        "idempotency_key",
        "iteration",
        "node_id",
        "run_id",
        "trace_id",
        "usage",
    )

    def __init__(
        self,
        run_id: str,
        node_id: str,
        iteration: int,
        attempt: int,
        clock: Clock,
        *,
        answers: dict[int, Any],
        agent: str,
        budget: AgentBudget,
        host: NodeHost,
        trace_id: str | None = None,
    ) -> None:
        self.run_id = run_id
        self.trace_id = trace_id if trace_id is not None else run_id.split("/", 1)[0]
        self.node_id = node_id
        self.iteration = iteration
        self.attempt = attempt
        self.idempotency_key = f"{run_id}/{node_id}/{iteration}"
        self.clock = clock
        self.usage = _NO_USAGE
        self._answers = answers
        self._agent = agent
        self._budget = budget
        self._host = host
        self._pauses = 0

    def report_usage(
        self, tokens_in: int = 0, tokens_out: int = 0, tool_calls: int = 0, cost: float = 0.0
    ) -> None:
        """Add to this try's resource accounting, and to its agent's over the run.

        Raises:
            UsageExceeded: the agent has now used more than ``max_tokens_per_agent`` or
                ``max_tool_calls_per_agent`` in the run (every node, pass and try of it).
        """
        u = self.usage
        self.usage = Usage(
            tokens_in=u.tokens_in + tokens_in,
            tokens_out=u.tokens_out + tokens_out,
            tool_calls=u.tool_calls + tool_calls,
            cost=u.cost + cost,
        )
        self._budget.charge(self._agent, self.node_id, tokens_in + tokens_out, tool_calls)

    async def emit(self, chunk: Any) -> None:
        """Stream a piece of partial output to the run's ``stream`` listeners."""
        self._host.chunk(self.node_id, chunk)

    async def progress(self, fraction: float, message: str = "") -> None:
        """Report progress between 0 and 1 (recorded as a ``node.progress`` event)."""
        self._host.progress(self.node_id, self.iteration, fraction, message)

    async def checkpoint(self, label: str) -> None:
        """Name the run's current point, for ``fork``."""
        await self._host.checkpoint(self.node_id, label)

    @property
    def services(self) -> Services:
        """The coordination services the engine lends to nodes (see ``Services``)."""
        return self._host.services

    def record_call(
        self, kind: str, name: str, started: float, ended: float, **details: Any
    ) -> None:
        """Log one call this node made — an LLM call, a tool call, an auction round — as a
        ``node.call`` event (traces draw it as a span inside the node's).

        Args:
            kind: ``llm``, ``tool``, ``auction`` or any short word.
            name: what was called (the model, the tool, the auction id).
            started: when it started (the engine's clock).
            ended: when it ended.
            details: plain values to keep (tokens, cost, status, error…).
        """
        data: dict[str, Any] = {
            "node": self.node_id,
            "iteration": self.iteration,
            "call": kind,
            "name": name,
            "started_at": started,
            "finished_at": ended,
        }
        data.update({k: v for k, v in details.items() if v is not None})
        self._host.log("node.call", data, at=ended)

    @property
    def context(self) -> Any:
        """This node's agent's view of the context scopes (request, session, agent, graph,
        global): only the scopes and keys its grants allow (``agents.memory.Context``).

        Raises:
            ValidationError: the engine has no ``Services(memory=...)``.
        """
        return self._host.memory_context(self.node_id)

    async def run_graph(self, graph: Any, inputs: dict[str, Any]) -> Any:
        """Run ``graph`` as a part of this node: its run's id is this node's
        ``idempotency_key``, its events go in this run's trace, and its output is returned.

        Run again (a retry, a resume), it continues the same child run: what finished there is
        not run again. A child run that waits for a person makes this node wait with the same
        question; the answer goes to the child when the parent is resumed.

        Raises:
            OrchestrationError: the child run failed or was cancelled.
        """
        index = self._pauses
        self._pauses += 1
        result = await self._host.subrun(
            self.node_id, self.iteration, graph, inputs, self._answers.get(index)
        )
        if result.status == "waiting":
            raise Paused(next(iter(result.questions.values())), index)
        if result.status != "completed":
            raise OrchestrationError(
                f"subgraph {result.graph!r} of node {self.node_id!r} {result.status}: "
                f"{result.error}"
            )
        return result.output

    async def pause(self, question: str) -> Any:
        """Ask a person; the run waits (``WAITING``) until ``resume(run_id, answer=...)``.

        The node then runs again from its start (its earlier work is not kept), and this call
        returns the answer at once: write a node that pauses so that running it twice is
        harmless (the ``idempotency_key`` helps).
        """
        index = self._pauses
        self._pauses += 1
        if index in self._answers:
            return self._answers[index]
        raise Paused(question, index)
