"""The ``Agent`` base class: an identity and two entry points.

An agent also has capabilities and topics. The entry points:

- ``decide(messages, tasks) -> decisions`` for the decentralized runtime, which hands the agent
  its inbox and the tasks it can see and executes what it decides;
- ``run(inputs, ctx) -> output`` for a node of a graph, called by the orchestration engine.

An agent implements one or both. Using it where its entry point is missing raises
``AgentModeError`` (a ``ValidationError`` and a ``NotImplementedError``) naming the missing
method. ``RunContext`` is the protocol the engine's node context implements.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from converge.core.capability import Capability, CapabilitySet
from converge.core.decisions import Decision
from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.task import Task
from converge.core.topic import Topic
from converge.errors import AgentModeError

__all__ = ["Agent", "RunContext"]


class RunContext(Protocol):
    """What a graph node's agent gets from the engine while it runs."""

    @property
    def run_id(self) -> str:
        """The run."""
        ...

    @property
    def node_id(self) -> str:
        """The node being executed."""
        ...

    @property
    def attempt(self) -> int:
        """1 on the first try, +1 per retry."""
        ...

    @property
    def idempotency_key(self) -> str:
        """The same for every try of one pass of a node (``run/node/iteration``), and for a try
        that runs again after a crash: deduplicates side effects across retries and resumes."""
        ...

    def report_usage(
        self, tokens_in: int = 0, tokens_out: int = 0, tool_calls: int = 0, cost: float = 0.0
    ) -> None:
        """Add to the node's resource accounting."""
        ...

    async def emit(self, chunk: Any) -> None:
        """Stream a piece of partial output."""
        ...

    async def progress(self, fraction: float, message: str = "") -> None:
        """Report progress between 0 and 1."""
        ...

    async def pause(self, question: str) -> Any:
        """Wait for a human's answer to ``question``."""
        ...


class Agent:
    """Base class for agents. Subclass it and implement ``decide``, ``run``, or both.

    Args:
        identity: the agent's key pair; a new one if omitted.
        name: a human-readable name; the class name if omitted.
        capabilities: what it can do (``Capability`` or ``"name@version"``).
        topics: topics it follows.
    """

    def __init__(
        self,
        identity: Identity | None = None,
        *,
        name: str | None = None,
        capabilities: Iterable[Capability | str] = (),
        topics: Iterable[Topic | str] = (),
    ) -> None:
        self.identity = identity if identity is not None else Identity.generate()
        self.name = name or type(self).__name__
        self.capabilities = CapabilitySet(capabilities)
        self.topics = tuple(t if isinstance(t, Topic) else Topic(t) for t in topics)

    @property
    def did(self) -> str:
        """The agent's id: the did of its identity."""
        return self.identity.did

    @property
    def supports_decide(self) -> bool:
        """Whether this agent implements ``decide`` (the decentralized runtime's entry point)."""
        return type(self).decide is not Agent.decide

    @property
    def supports_run(self) -> bool:
        """Whether this agent implements ``run`` (a graph node's entry point)."""
        return type(self).run is not Agent.run

    # -- lifecycle hooks -------------------------------------------------------------------------

    async def on_start(self) -> None:
        """Called once before the agent receives work."""

    async def on_stop(self) -> None:
        """Called once after its last work, also when stopping because of an error."""

    async def on_error(self, error: BaseException) -> None:
        """Called when one of its calls raised; the runtime or engine goes on per its policy."""

    # -- entry points ----------------------------------------------------------------------------

    async def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        """Decide what to do about new ``messages`` and the ``tasks`` visible to this agent."""
        raise AgentModeError(self.name, "decide", "in the decentralized runtime")

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Any:
        """Do the work of a graph node with ``inputs`` and return its output."""
        raise AgentModeError(self.name, "run", "as a graph node")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, did={self.did!r})"
