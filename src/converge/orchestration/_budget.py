"""Per-agent limits on tokens and tool calls, counted over a run.

The ``execution`` block's ``max_tokens_per_agent`` and ``max_tool_calls_per_agent``: what each
agent of a run has used, counted over the whole run.

An agent is a node's agent by its name in the graph (``node.start``'s ``agent``, what
``metrics`` groups ``tokens_per_agent`` by): nodes that run the same agent share one count. A
node's pass — every try, its fallback, its replacement nodes — is charged to the node's agent.
The builder names a bare callable after its node, so two ``add_node`` calls with one function
count apart unless they name one agent of ``agents``.
Counts cover every node, loop pass and retry of the run, and the runs of its subgraph nodes:
a child run shares its parent's counts and is held to the parent's limits as well as its own.

Usage is counted as nodes report it (``ctx.report_usage``, under a lock: sync agents report from
worker threads); the report that takes an agent past a limit raises ``UsageExceeded`` (agent,
node, what, used, limit) in that node, which fails its try like any error, and concurrent passes
of one agent see each other's usage. Counting is always on (a run without limits may start a
child that has some): ~0.3 µs per report, nothing for a node that reports nothing. A resumed run
starts from the counts its log holds (``records.agent_usage``, over the run and its child runs):
every event that ends a try carries the usage it accounts for — ``node.retry``,
``node.failed``, ``node.waiting`` and ``node.done`` (with a fallback or replacements, theirs
added to the failed try's) — so the trace, metrics and the run's total count retried, failed and
paused tries too. Usage a try reported before it was cancelled (the run aborted, the process
died) is not in the log, and a resumed run does not count it.
"""

from __future__ import annotations

import threading

from converge.errors import UsageExceeded

__all__ = ["AgentBudget"]


class AgentBudget:
    """What each agent of a run (and of its child runs) has used, and the limits it is held to.

    Args:
        counts: agent name -> ``[tokens, tool calls]`` used so far (a resumed run's, from its
            log); kept and updated in place.
    """

    __slots__ = ("_lock", "counts", "max_tokens", "max_tool_calls")

    def __init__(self, counts: dict[str, list[int]] | None = None) -> None:
        self.counts: dict[str, list[int]] = {} if counts is None else counts
        self.max_tokens: int | None = None
        self.max_tool_calls: int | None = None
        # Sync agents report from the engine's worker threads: an update must not be lost.
        self._lock = threading.Lock()

    def within(self, max_tokens: int | None, max_tool_calls: int | None) -> AgentBudget:
        """The same counts, held to these limits too (the tighter of each): a run's own."""
        child = AgentBudget(self.counts)
        child._lock = self._lock
        child.max_tokens = _tighter(self.max_tokens, max_tokens)
        child.max_tool_calls = _tighter(self.max_tool_calls, max_tool_calls)
        return child

    def charge(self, agent: str, node: str, tokens: int, tool_calls: int) -> None:
        """Count what ``node`` reported for ``agent``.

        Raises:
            UsageExceeded: the agent is now past a limit.
        """
        with self._lock:
            spent = self.counts.get(agent)
            if spent is None:
                spent = self.counts[agent] = [0, 0]
            spent[0] += tokens
            spent[1] += tool_calls
            used_tokens, used_tools = spent
        if self.max_tokens is not None and used_tokens > self.max_tokens:
            raise UsageExceeded(node, "tokens", used_tokens, self.max_tokens, agent=agent)
        if self.max_tool_calls is not None and used_tools > self.max_tool_calls:
            raise UsageExceeded(node, "tool calls", used_tools, self.max_tool_calls, agent=agent)


def _tighter(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else min(a, b)
