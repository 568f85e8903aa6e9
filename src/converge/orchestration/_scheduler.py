"""Which nodes run next, as a pure state machine.

A finished node (and the outputs its edges' conditions read) in, newly ready nodes out. No I/O, no
clock, no agents.

Each edge carries a token when its source finishes: *live* if the edge is taken (no condition,
or its condition holds), *dead* if not. A node is resolved once every forward edge into it has
carried a token since it last ran: it is ready if any token was live, and otherwise *not
taken* — it does not run, and sends dead tokens on (so a join after a branch that was not
taken still runs, on the branches that were). A live token on a back edge makes its target
ready again at once (the next pass of a loop). On a node's later passes, forward edges from
outside its loop count as already carried: they fired once, before the loop, and will not again.

A loop exit that is not taken on one pass may be taken on the next, so its dead token is held
back until the run is quiescent (nothing running, nothing ready): only then is "not taken"
final. If, at that point, some node has received tokens on some of its edges but can never
receive the rest, the run cannot progress, and ``stuck`` names those nodes.

The scheduler says which nodes became ready; the run keeps them in its queue and decides when
each starts (``_loop``). ``tests/orchestration/test_scheduler.py`` drives it directly
(hypothesis: random DAGs with joins, conditions and halts, and loops under ``max_iterations``,
finished in random orders).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from converge.orchestration._plan import ExecutionPlan, PlanEdge

__all__ = ["Scheduler"]


class Scheduler:
    """The token state of one run over ``plan``.

    Attributes:
        runs: how many times each node has run (finished, skipped or failed over).
        trigger: for each node, the node whose finishing last made it ready (None: the start).
    """

    __slots__ = ("_arrived", "_base", "_held", "_live", "_made", "_plan", "runs", "trigger")

    def __init__(self, plan: ExecutionPlan) -> None:
        self._plan = plan
        count = len(plan.nodes)
        self._arrived = [0] * count
        self._base = [0] * count  # tokens counted as carried at the start of this pass
        self._live = [False] * count
        self._held: dict[int, PlanEdge] = {}  # loop exits not taken (yet), by edge index
        self._made: list[int] = []  # nodes made ready by the step under way
        self.runs = [0] * count
        self.trigger: list[int | None] = [None] * count

    def start(self) -> list[int]:
        """The entry nodes (no forward edge in): ready at the start, in declaration order."""
        return [n.index for n in self._plan.nodes if n.forward_in == 0]

    def finish(self, node: int, values: Mapping[str, Any], *, halt: bool = False) -> list[int]:
        """Record that ``node`` ran and follow its edges; returns the nodes made ready, in
        order (a node twice if it is made ready for two passes).

        ``values`` is what conditions read (node id -> ``{"output": ...}``, input name ->
        value). A condition that fails to evaluate raises its ``ExpressionError``. With
        ``halt`` none of its edges is taken (a gate that did not open): what follows it runs
        only on account of other nodes.
        """
        self.runs[node] += 1
        planned = self._plan.nodes[node]
        if planned.cyclic:
            self._base[node] = self._arrived[node] = planned.outside_in
            self._live[node] = False
        made: list[int] = []
        self._made = made
        for edge in planned.out:
            taken = not halt and (edge.when is None or edge.when.matches(values))
            if taken:
                self._held.pop(edge.index, None)
                self._deliver(edge, live=True)
            elif edge.leaves_loop:
                self._held[edge.index] = edge
            else:
                self._deliver(edge, live=False)
        return made

    def quiesce(self) -> list[int]:
        """The run has nothing running or ready: make held loop exits final (dead); returns
        the nodes that made ready."""
        made: list[int] = []
        self._made = made
        held, self._held = self._held, {}
        for edge in held.values():
            self._deliver(edge, live=False)
        return made

    def stuck(self) -> dict[str, list[str]]:
        """Nodes that have tokens on some forward edges but not all, with the nodes whose edges
        they still wait for (call after ``quiesce`` when nothing is ready)."""
        out: dict[str, list[str]] = {}
        for node in self._plan.nodes:
            i = node.index
            if self._base[i] < self._arrived[i] < node.forward_in:
                out[node.id] = sorted(
                    {self._plan.nodes[e.source].id for e in node.in_edges if not e.back}
                )
        return out

    def _deliver(self, edge: PlanEdge, *, live: bool) -> None:
        target = edge.target
        if edge.back:
            if live:
                self._make_ready(target, edge.source)
            return
        self._arrived[target] += 1
        if live:
            self._live[target] = True
            self.trigger[target] = edge.source
        if self._arrived[target] < self._plan.nodes[target].forward_in:
            return
        was_live = self._live[target]
        self._arrived[target] = self._base[target]
        self._live[target] = False
        if was_live:
            self._make_ready(target, self.trigger[target])
            return
        # Not taken: it does not run, and nothing after it runs on its account.
        for out in self._plan.nodes[target].out:
            if out.back:
                continue
            if out.leaves_loop:
                self._held.setdefault(out.index, out)
            else:
                self._deliver(out, live=False)

    def _make_ready(self, node: int, source: int | None) -> None:
        self.trigger[node] = source
        self._made.append(node)
