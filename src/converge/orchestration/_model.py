"""The parts of a graph as written: nodes, edges, policies, limits.

These are plain frozen records. ``Graph`` (``graph.py``) collects them, the YAML loader
(``yaml_loader.py``) reads them from a file, and ``_plan.py`` checks them together and turns
them into the plan the engine runs.
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

import msgspec

from converge.errors import ValidationError

__all__ = [
    "BACKOFFS",
    "MAX_COUNT",
    "MAX_SECONDS",
    "ON_ERROR",
    "Backoff",
    "Edge",
    "ExecutionConfig",
    "GraphConfig",
    "Node",
    "NodePolicy",
    "OnError",
    "RetryPolicy",
]

OnError = Literal["retry", "skip", "fallback", "abort", "human"]
"""What a node does once its retries are spent:

- ``retry`` / ``abort``: the run fails with the node's error (``retry`` says the retries are the
  point; both end the same way when they are spent);
- ``skip``: the node's output is ``MISSING`` and the run goes on;
- ``fallback``: the node's ``fallback`` agent runs once in its place;
- ``human``: the run pauses (WAITING) with a question; the answer becomes the node's output.
"""
ON_ERROR: tuple[OnError, ...] = get_args(OnError)

Backoff = Literal["exponential", "fixed", "none"]
"""How the wait between retries grows."""
BACKOFFS: tuple[Backoff, ...] = get_args(Backoff)


MAX_COUNT = 2**63 - 1
"""The largest count (iterations, retries, tokens…): a signed 64-bit integer, what the store
and the wire carry."""
MAX_SECONDS = 1e9
"""The longest duration (timeouts, delays), about 31 years: a longer one is no limit at all,
and is written by leaving the key out (or null) instead."""


def _check_seconds(value: float | None, field: str, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero) or value > MAX_SECONDS:
        low = ">= 0" if allow_zero else "> 0"
        raise ValidationError(
            f"{field} must be a number of seconds {low} and <= {MAX_SECONDS:,.0f}, "
            f"not {describe(value)}"
        )


def _check_count(value: int | None, field: str, *, minimum: int) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= MAX_COUNT:
        raise ValidationError(
            f"{field} must be an int from {minimum} to {MAX_COUNT:,} (64 bits), "
            f"not {describe(value)}"
        )


class RetryPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How often, and after how long, a failed node is tried again."""

    max_retries: int = 0
    """Tries after the first (0: none)."""
    backoff: Backoff = "exponential"
    """``exponential`` doubles the wait each time, ``fixed`` keeps it, ``none`` retries at once."""
    initial_delay: float = 0.1
    """Seconds before the first retry."""
    max_delay: float = 30.0
    """The longest wait between two tries."""

    def __post_init__(self) -> None:
        _check_count(self.max_retries, "retry.max_retries", minimum=0)
        if self.backoff not in BACKOFFS:
            raise ValidationError(
                f"retry.backoff must be one of {', '.join(BACKOFFS)}, not {self.backoff!r}"
            )
        _check_seconds(self.initial_delay, "retry.initial_delay", allow_zero=True)
        _check_seconds(self.max_delay, "retry.max_delay", allow_zero=True)

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        if self.backoff == "none":
            return 0.0
        if self.backoff == "fixed":
            return min(self.initial_delay, self.max_delay)
        # Past 2**1023 a float power overflows; the wait is max_delay long before that.
        return min(self.initial_delay * 2.0 ** min(retry - 1, 1023), self.max_delay)


class NodePolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A node's own timeout, retries and error handling; unset fields take the graph's."""

    timeout: float | None = None
    """Seconds one try may take (None: ``execution.timeout_per_agent_seconds``)."""
    retry: RetryPolicy | None = None
    """Retries (None: ``execution.retry_policy``)."""
    on_error: OnError = "abort"
    """What happens once retries are spent."""
    fallback: str | None = None
    """The agent that runs in the node's place with ``on_error: fallback``."""

    def __post_init__(self) -> None:
        _check_seconds(self.timeout, "timeout")
        if self.on_error not in ON_ERROR:
            raise ValidationError(
                f"on_error must be one of {', '.join(ON_ERROR)}, not {self.on_error!r}"
            )
        if self.on_error == "fallback" and not self.fallback:
            raise ValidationError("on_error: fallback needs a `fallback` agent")


class ExecutionConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The run's resource limits."""

    max_concurrent_agents: int = 10
    """Nodes running at once."""
    max_tokens_per_agent: int | None = None
    """Tokens (in + out) one agent may report over the run (all its nodes, passes, retries and
    subgraph runs); the report that goes past fails its node."""
    max_tool_calls_per_agent: int | None = None
    """Tool calls one agent may report over the run, counted like ``max_tokens_per_agent``."""
    timeout_per_agent_seconds: float | None = None
    """Seconds one try of a node may take, unless the node says otherwise."""
    total_timeout_seconds: float | None = None
    """Seconds the whole run may take."""
    retry_policy: RetryPolicy = RetryPolicy()
    """Retries of a node that has none of its own."""

    def __post_init__(self) -> None:
        _check_count(self.max_concurrent_agents, "execution.max_concurrent_agents", minimum=1)
        _check_count(self.max_tokens_per_agent, "execution.max_tokens_per_agent", minimum=0)
        _check_count(self.max_tool_calls_per_agent, "execution.max_tool_calls_per_agent", minimum=0)
        _check_seconds(self.timeout_per_agent_seconds, "execution.timeout_per_agent_seconds")
        _check_seconds(self.total_timeout_seconds, "execution.total_timeout_seconds")


class GraphConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The graph's ``config`` block."""

    max_iterations: int | None = None
    """How many times any one node may run in one run; a graph with a cycle needs it."""
    timeout_seconds: float | None = None
    """Seconds the whole run may take (the smaller of this and ``total_timeout_seconds``)."""
    checkpoint_enabled: bool = True
    """Whether a node's completion is durable before any node that depends on it starts."""

    def __post_init__(self) -> None:
        _check_count(self.max_iterations, "config.max_iterations", minimum=1)
        _check_seconds(self.timeout_seconds, "config.timeout_seconds")
        if not isinstance(self.checkpoint_enabled, bool):
            raise ValidationError(
                f"config.checkpoint_enabled must be true or false, not {self.checkpoint_enabled!r}"
            )


class Node(msgspec.Struct, frozen=True):
    """One node: which agent does its work, on which inputs, under which policy."""

    id: str
    """Unique in the graph; an identifier (letters, digits, ``_``, ``-``)."""
    agent: str
    """The name of its agent in the graph's agents."""
    inputs: tuple[str, ...] | None = None
    """Input references as written (None: the outputs of the nodes with edges into it, or the
    graph's inputs for an entry node)."""
    parallel_group: str | None = None
    """A group name that ``wait_for`` can name."""
    wait_for: tuple[str, ...] = ()
    """Groups or nodes that must finish before it starts."""
    policy: NodePolicy = NodePolicy()
    """Its timeout, retries and error handling."""
    line: int | None = None
    """Where it is defined in its YAML file."""
    field: str = ""
    """Where it is defined, as a path (``nodes[2]``) for error messages."""
    lines: tuple[tuple[str, int], ...] = ()
    """The YAML line of each of its keys and list items (``agent``, ``inputs[1]``,
    ``wait_for[0]``…), so an error about one reference points at that reference."""

    def line_of(self, key: str) -> int | None:
        """The YAML line of ``key`` (``inputs[1]``), else of the node itself."""
        for name, line in self.lines:
            if name == key:
                return line
        return self.line


class Edge(msgspec.Struct, frozen=True):
    """A directed edge; ``when`` makes it conditional."""

    source: str
    """The node (or parallel group) it leaves."""
    target: str
    """The node (or parallel group) it enters."""
    when: str | None = None
    """A condition over node outputs (the expression language of the graphs guide); the edge
    is taken only when it holds."""
    line: int | None = None
    """Where it is defined in its YAML file."""
    field: str = ""
    """Where it is defined, as a path (``edges[1]``) for error messages."""
    lines: tuple[tuple[str, int], ...] = ()
    """The YAML line of each of its keys (``from``, ``to``, ``when``)."""

    def line_of(self, key: str) -> int | None:
        """The YAML line of ``key``, else of the edge itself."""
        for name, line in self.lines:
            if name == key:
                return line
        return self.line


def describe(value: Any) -> str:
    """A short description of a value for an error message."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length():,} bits"  # repr could take long, or refuse
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
