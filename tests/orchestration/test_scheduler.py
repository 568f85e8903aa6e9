"""The pure scheduler, driven directly: random graphs (joins, conditions, gates that halt,
loops bounded by ``max_iterations``) run in a random order, with passes in flight at once.

What a run relies on: a node is made ready only once every node before it has finished or
is known not to run, and only if one of its edges into it was taken; it runs exactly as often
as its graph says (never twice for one pass); and the run ends, with nothing left waiting.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from converge.orchestration import Graph, GraphConfig
from converge.orchestration._plan import ExecutionPlan
from converge.orchestration._scheduler import Scheduler


async def _noop(inputs: dict[str, Any]) -> int:
    return 0


class _Run:
    """Drives a ``Scheduler`` as a run does, the order of every choice drawn by hypothesis:
    which ready node starts next (a node whose pass is in flight waits), which pass in flight
    finishes next, and what it returns."""

    def __init__(
        self, plan: ExecutionPlan, data: st.DataObject, max_iterations: int | None
    ) -> None:
        self.plan = plan
        self.sched = Scheduler(plan)
        self.data = data
        self.limit = max_iterations
        self.ready: list[int] = []
        self.made: list[int] = [0] * len(plan.nodes)  # times each was made ready
        self.started: set[tuple[int, int]] = set()  # (node, iteration)
        self.values: dict[str, Any] = {}
        self.finished: set[int] = set()  # nodes that finished a pass
        self.fatal: int | None = None  # the node that would have run too often

    def accept(self, made: list[int], check: Any) -> None:
        for node in made:
            check(node)
            self.made[node] += 1
        self.ready.extend(made)

    def run(
        self, output: Any, halts: set[int] = frozenset(), check: Any = lambda node: None
    ) -> None:
        """Run to the end; ``output(node, iteration)`` is what a pass returns."""
        self.accept(self.sched.start(), check)
        running: list[int] = []
        for _ in range(10_000):  # a bound far above any drawn graph's number of passes
            startable = [i for i, n in enumerate(self.ready) if n not in running]
            if not startable and not running:
                made = self.sched.quiesce()
                if not made:
                    return
                self.accept(made, check)
                continue
            if startable and (not running or self.data.draw(st.booleans())):
                node = self.ready.pop(self.data.draw(st.sampled_from(startable)))
                iteration = self.sched.runs[node] + 1
                if self.limit is not None and iteration > self.limit:
                    self.fatal = node  # the engine fails the run here
                    return
                assert (node, iteration) not in self.started, "a pass ran twice"
                self.started.add((node, iteration))
                running.append(node)
                continue
            node = running.pop(self.data.draw(st.integers(0, len(running) - 1)))
            iteration = self.sched.runs[node] + 1
            self.values[self.plan.nodes[node].id] = {"output": output(node, iteration)}
            self.finished.add(node)
            self.accept(self.sched.finish(node, self.values, halt=node in halts), check)
        raise AssertionError("the run did not end")


@st.composite
def _dags(draw: st.DrawFn) -> tuple[int, dict[tuple[int, int], int | None], set[int], list[int]]:
    """A graph of ``n`` nodes with edges ``i -> j`` (i < j), each taken always (None) or when
    its source returned the value given; nodes that halt; what each node returns."""
    n = draw(st.integers(1, 8))
    pairs = [(i, j) for j in range(n) for i in range(j)]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True)) if pairs else []
    edges = {e: draw(st.sampled_from([None, 0, 1])) for e in chosen}
    halts = set(draw(st.lists(st.integers(0, n - 1), unique=True, max_size=2)))
    outputs = [draw(st.integers(0, 1)) for _ in range(n)]
    return n, edges, halts, outputs


def _connect(graph: Graph, edges: dict[tuple[int, int], int | None], name: str = "n") -> None:
    for (i, j), value in edges.items():
        when = None if value is None else f"{name}{i}.output == {value}"
        graph.connect(f"{name}{i}", f"{name}{j}", when=when)


def _taken(
    n: int, edges: dict[tuple[int, int], int | None], halts: set[int], outputs: list[int]
) -> list[bool]:
    """Which nodes run, by the rule written out: an entry node runs; another runs if an edge
    into it comes from a node that ran, did not halt, and returned what the edge asks."""
    ran: list[bool] = []
    for j in range(n):
        into = [(i, v) for (i, t), v in edges.items() if t == j]
        ran.append(
            not into or any(ran[i] and i not in halts and v in (None, outputs[i]) for i, v in into)
        )
    return ran


@settings(max_examples=150)
@given(_dags(), st.data())
def test_a_dag_runs_each_node_it_takes_once_after_all_its_inputs(
    dag: tuple[int, dict[tuple[int, int], int | None], set[int], list[int]], data: st.DataObject
) -> None:
    n, edges, halts, outputs = dag
    graph = Graph("dag")
    for j in range(n):
        graph.add_node(f"n{j}", _noop)
    _connect(graph, edges)
    plan = graph.compile()
    ran = _taken(n, edges, halts, outputs)
    run = _Run(plan, data, None)

    def resolved(i: int) -> bool:
        """Finished, or known not to run (every node before it resolved)."""
        if i in run.finished:
            return True
        into = [s for (s, t) in edges if t == i]
        return not ran[i] and all(resolved(s) for s in into)

    def check(node: int) -> None:
        assert ran[node], f"n{node} was made ready, but no edge into it was taken"
        into = [s for (s, t) in edges if t == node]
        assert all(resolved(s) for s in into), f"n{node} was made ready before its inputs"
        trigger = run.sched.trigger[node]
        if into:  # the node whose finishing made it ready: one that took an edge into it
            assert trigger in into and ran[trigger] and trigger not in halts
            assert edges[(trigger, node)] in (None, outputs[trigger])
        else:
            assert trigger is None

    run.run(lambda node, iteration: outputs[node], halts, check)
    assert run.fatal is None
    assert run.made == [1 if r else 0 for r in ran]  # never twice
    assert run.sched.runs == [1 if r else 0 for r in ran]
    assert run.sched.stuck() == {}


@st.composite
def _loops(draw: st.DrawFn) -> dict[str, Any]:
    """A DAG of ``p`` nodes before a loop ``l0 -> ... -> l{m-1} -> l0`` whose back edge is
    taken while its last node's output (its pass number) is below ``k``, with exits taken on
    the last pass; ``max_iterations`` bounds every node's passes."""
    p = draw(st.integers(0, 4))
    pairs = [(i, j) for j in range(p) for i in range(j)]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True)) if pairs else []
    m = draw(st.integers(1, 3))
    exits = draw(st.integers(0, 2))
    return {
        "p": p,
        "edges": {e: draw(st.sampled_from([None, 0, 1])) for e in chosen},
        "outputs": [draw(st.integers(0, 1)) for _ in range(p)],
        "m": m,
        # Extra edges inside the loop (l_i -> l_j, i + 1 < j), taken on its first pass only.
        "inner": draw(
            st.lists(
                st.sampled_from([(i, j) for j in range(m) for i in range(j - 1)] or [(0, 0)]),
                unique=True,
            )
            if m > 2
            else st.just([])
        ),
        "into_loop": {
            i: draw(st.sampled_from([None, 0, 1]))
            for i in draw(st.lists(st.integers(0, p - 1), unique=True) if p else st.just([]))
        },
        # Edges from before the loop into its later nodes: on its later passes they count as
        # taken (they will not be again).
        "into_inner": [
            (i, j, draw(st.sampled_from([None, 0, 1])))
            for i, j in draw(
                st.lists(st.tuples(st.integers(0, p - 1), st.integers(1, m - 1)), unique=True)
                if p and m > 1
                else st.just([])
            )
        ],
        "exits": [
            {
                i: draw(st.sampled_from([None, 0, 1]))
                for i in draw(st.lists(st.integers(0, p - 1), unique=True) if p else st.just([]))
            }
            for _ in range(exits)
        ],
        "k": draw(st.integers(1, 5)),
        "max_iterations": draw(st.integers(1, 4)),
    }


@settings(max_examples=150)
@given(_loops(), st.data())
def test_a_loop_runs_until_its_back_edge_is_not_taken_or_max_iterations_stops_it(
    shape: dict[str, Any], data: st.DataObject
) -> None:
    p, m, k, limit = shape["p"], shape["m"], shape["k"], shape["max_iterations"]
    graph = Graph("loop", config=GraphConfig(max_iterations=limit))
    for i in range(p):
        graph.add_node(f"n{i}", _noop)
    for i in range(m):
        graph.add_node(f"l{i}", _noop)
    for x in range(len(shape["exits"])):
        graph.add_node(f"x{x}", _noop)
    _connect(graph, shape["edges"])
    for i, value in shape["into_loop"].items():
        graph.connect(f"n{i}", "l0", when=None if value is None else f"n{i}.output == {value}")
    for i in range(m - 1):
        graph.connect(f"l{i}", f"l{i + 1}")
    for i, j in shape["inner"]:
        graph.connect(f"l{i}", f"l{j}", when=f"l{i}.output == 1")
    last = f"l{m - 1}"
    graph.connect(last, "l0", when=f"{last}.output < {k}")
    for x, sources in enumerate(shape["exits"]):
        graph.connect(last, f"x{x}", when=f"{last}.output >= {k}")
        for i, value in sources.items():
            when = None if value is None else f"n{i}.output == {value}"
            graph.connect(f"n{i}", f"x{x}", when=when)
    outputs = shape["outputs"]
    ran = _taken(p, shape["edges"], set(), outputs)
    entered = not shape["into_loop"] or any(
        ran[i] and v in (None, outputs[i]) for i, v in shape["into_loop"].items()
    )
    # Only where the loop starts at l0: an edge from a node that has none into l0 could start
    # it halfway, making another of its edges the back edge (not this test's oracle).
    if entered:
        for i, j, value in [e for e in shape["into_inner"] if e[0] in shape["into_loop"]]:
            when = None if value is None else f"n{i}.output == {value}"
            graph.connect(f"n{i}", f"l{j}", when=when)
    plan = graph.compile()
    index = {node.id: node.index for node in plan.nodes}

    def output(node: int, iteration: int) -> int:
        return outputs[node] if node < p else iteration  # a loop node returns its pass number

    run = _Run(plan, data, limit)
    run.run(output)
    loop = [index[f"l{i}"] for i in range(m)]
    if entered and k > limit:  # l0 would have run a pass too many: the run fails there
        assert run.fatal == index["l0"]
        assert [run.sched.runs[i] for i in loop] == [limit] * m
        return
    assert run.fatal is None
    passes = k if entered else 0
    assert [run.sched.runs[i] for i in loop] == [passes] * m
    for x, sources in enumerate(shape["exits"]):
        taken = entered or any(ran[i] and v in (None, outputs[i]) for i, v in sources.items())
        assert run.sched.runs[index[f"x{x}"]] == (1 if taken else 0)
    assert [run.sched.runs[i] for i in range(p)] == [1 if r else 0 for r in ran]
    assert run.made == run.sched.runs  # every node made ready ran, once per pass
    assert run.sched.stuck() == {}
