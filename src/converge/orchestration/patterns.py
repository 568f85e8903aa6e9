"""The orchestration patterns, as graph builders.

Each is a helper that builds an ordinary ``Graph``.

```python
from converge.orchestration import pipeline, router

graph = pipeline(write, review, test)                  # write -> review -> test
graph.add_node("deploy", deploy).connect("test", "deploy")   # a graph like any other
print(graph.describe())
result = await graph.execute({"spec": "..."})
```

Nothing here is a new kind of run: each helper adds nodes and edges through the builder, so
the graph prints (``describe()``), validates (``compile()``), extends, runs, resumes and reads
back from YAML like a hand-written one (``examples/patterns/`` has one YAML file per pattern).

Agents are given as objects, callables, ``"module:attr"`` references or names of entries in
``agents=``. A node's id is the agent's name when it has one that is an identifier (an
``Agent``'s ``name``, a function's ``__name__``, the attribute of a reference, the name
itself), else ``<role>_<i>``; a mapping ``{id: agent}`` names them explicitly (one single
agent may be given as ``{id: agent}`` too).

Every node receives a dict keyed by its input references as written (see ``_refs``); the
docstring of each helper lists which. The steps the helpers add themselves (``merge``,
``assign``, ``gather``, ``done``, ``unknown_route``, ``routed``, ``verdict``) live in
``_patterns_steps`` and are referenced from YAML as ``converge.orchestration.patterns:<name>``,
or, for the two checks, by kind (``assign``, ``unknown_route``: ``kinds.pattern_checks``),
since they must know the names they accept. ``hierarchy`` runs each manager's supervisor graph
as a ``Subgraph`` node of the level above rather than nesting loops in one flat graph: nested
loops would share one strongly connected component, where a manager's "not done yet" would
reach the level above as "not taken".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

from converge.errors import UnknownRoute, ValidationError
from converge.orchestration._agents import AgentSpec
from converge.orchestration._model import ExecutionConfig, GraphConfig
from converge.orchestration._patterns_steps import (
    collect,
    first_present,
    forward,
    gather,
    majority,
    unanimous,
)
from converge.orchestration.graph import Graph
from converge.orchestration.kinds.pattern_checks import Assign, UnknownRouteGuard
from converge.orchestration.kinds.subgraph import Subgraph

__all__ = [
    "Assign",
    "UnknownRoute",
    "UnknownRouteGuard",
    "collect",
    "debate",
    "fan_out",
    "first_present",
    "forward",
    "gather",
    "hierarchy",
    "majority",
    "pipeline",
    "router",
    "supervisor",
    "unanimous",
]

_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
Members: TypeAlias = Sequence[Any] | Mapping[str, Any]
"""Agents as a sequence (ids from their names) or a mapping ``{id: agent}``."""
ManagedTeam: TypeAlias = tuple[Any, Members]
"""A manager and its members, for ``hierarchy``: ``(manager agent, members)``."""


def pipeline(
    *steps: Any,
    name: str = "pipeline",
    inputs: Sequence[str] | None = None,
    agents: Mapping[str, Any] | None = None,
    execution: ExecutionConfig | None = None,
) -> Graph:
    """A sequential pipeline: ``a -> b -> c``; the run's output is the last step's.

    Nodes: one per step, in order. The first receives ``inputs`` (references; None: all the
    graph's inputs as given); each next one ``{"<previous>.output": value}``.

    Args:
        steps: the agents, or a single mapping ``{id: agent}``.
        name: the graph's name.
        inputs: what the first step reads.
        agents: agents by name, for steps given as names.
        execution: resource limits.
    """
    named = _named(steps[0] if len(steps) == 1 and isinstance(steps[0], Mapping) else steps, "step")
    description = "pipeline: " + " -> ".join(n for n, _ in named)
    graph = Graph(name, description=description, agents=agents, execution=execution)
    previous: str | None = None
    for node_id, agent in named:
        graph.add_node(node_id, agent, inputs=inputs if previous is None else None)
        if previous is not None:
            graph.connect(previous, node_id)
        previous = node_id
    return graph


def fan_out(
    agents: Members,
    merge: Any = None,
    *,
    name: str = "fan_out",
    inputs: Sequence[str] | None = None,
    group: str = "branches",
    registry: Mapping[str, Any] | None = None,
    execution: ExecutionConfig | None = None,
) -> Graph:
    """A parallel fan-out: every branch runs on the same input at once, ``merge``
    combines their outputs.

    Nodes: one per branch, in the parallel group ``group`` (``connect`` and ``wait_for`` may
    name it), each receiving ``inputs`` (None: all the graph's inputs); then ``merge``, which
    receives ``{"<branch>.output": value, ...}`` and whose output is the run's. The default
    merge (``collect``) returns ``{branch: output}``.

    Args:
        agents: the branches.
        merge: the merging agent (default ``collect``).
        name: the graph's name.
        inputs: what each branch reads.
        group: the branches' parallel group.
        registry: agents by name, for agents given as names.
        execution: resource limits (``max_concurrent_agents`` bounds the fan-out).
    """
    named = _named(agents, "branch")
    _reserve(named, {"merge", group})
    description = f"fan-out to {', '.join(b for b, _ in named)}, then merge"
    graph = Graph(name, description=description, agents=registry, execution=execution)
    for node_id, agent in named:
        graph.add_node(node_id, agent, inputs=inputs, parallel_group=group)
    graph.add_node(
        "merge", collect if merge is None else merge, inputs=[f"{b}.output" for b, _ in named]
    )
    return graph


def supervisor(
    supervisor: Any,
    workers: Members,
    *,
    name: str = "supervisor",
    inputs: Sequence[str] = ("task",),
    max_iterations: int = 10,
    agents: Mapping[str, Any] | None = None,
    execution: ExecutionConfig | None = None,
) -> Graph:
    """Supervisor and workers: the supervisor splits the work, assigns parts to workers,
    reads what they did, and loops until it declares done.

    Nodes (``S`` is the supervisor's id; ``assign``, ``gather``, ``done`` are reserved)::

        S      receives inputs + {"gather.output": {worker: output} of the last round, or
               MISSING on the first pass}; returns {"assign": {worker: part, ...}} or
               {"done": result}
        assign (only when S is not done) checks the assignment: at least one worker, every
               one known (else ``UnknownRoute`` naming the workers); returns it
        <w>    (only when assigned) receives {"assign.output.<w>": part}
        gather receives the assignment and the workers' outputs; returns {worker: output}
               of the workers assigned this round, and loops back to S
        done   (when S returns done) returns the result: the run's output

    Args:
        supervisor: the supervisor agent.
        workers: the workers.
        name: the graph's name.
        inputs: what the supervisor reads besides the last round's results.
        max_iterations: how many times any node may run: bounds the rounds (S runs once more
            than there are rounds).
        agents: agents by name, for agents given as names.
        execution: resource limits.
    """
    sid, agent = _single(supervisor, "supervisor")
    named = _named(workers, "worker")
    _reserve([(sid, agent), *named], {"assign", "gather", "done"})
    ids = [w for w, _ in named]
    graph = Graph(
        name,
        description=f"supervisor {sid} over {', '.join(ids)}",
        config=GraphConfig(max_iterations=max_iterations),
        agents=agents,
        execution=execution,
    )
    graph.add_node(sid, agent, inputs=[*inputs, "gather.output"])
    graph.add_node("assign", Assign(ids), inputs=[f"{sid}.output"])
    graph.connect(sid, "assign", when=f"not exists({sid}.output.done)")
    for worker, worker_agent in named:
        graph.add_node(worker, worker_agent, inputs=[f"assign.output.{worker}"])
        graph.connect("assign", worker, when=f"exists(assign.output.{worker})")
    graph.add_node("gather", gather, inputs=["assign.output", *(f"{w}.output" for w in ids)])
    graph.connect("assign", "gather")
    for worker in ids:
        graph.connect(worker, "gather")
    graph.connect("gather", sid)
    graph.add_node("done", forward, inputs=[f"{sid}.output.done"])
    graph.connect(sid, "done", when=f"exists({sid}.output.done)")
    return graph


def hierarchy(
    top: Any,
    managers: Mapping[str, ManagedTeam],
    *,
    name: str = "hierarchy",
    inputs: Sequence[str] = ("task",),
    max_iterations: int = 10,
    agents: Mapping[str, Any] | None = None,
    execution: ExecutionConfig | None = None,
) -> Graph:
    """A hierarchy: a top supervisor over managers, each a supervisor over its members,
    nested to any depth.

    ``managers`` maps each manager's id to ``(manager agent, members)``; members are agents
    (workers) or, in a mapping, ``{id: agent or (manager agent, members)}`` for a level below.
    Every level is a ``supervisor`` graph (see its contract); a manager is a ``Subgraph`` node
    of the level above, whose graph (named by the manager's id) receives the part assigned to
    it as its input ``task`` and returns its ``done`` result. So each manager's rounds are a
    child run in the parent's trace (``<manager>/<node>``), resumed where it stopped.

    Args:
        top: the top supervisor.
        managers: the managers and their members.
        name: the top graph's name.
        inputs: what the top supervisor reads.
        max_iterations: bounds the rounds at every level.
        agents: agents by name, for agents given as names (reaching every level).
        execution: resource limits (every level).
    """
    if not isinstance(managers, Mapping) or not managers:
        raise ValidationError("a hierarchy needs managers: {id: (manager, members)}")

    def team(manager_id: str, spec: Any) -> Subgraph:
        if not (isinstance(spec, tuple) and len(spec) == 2):
            raise ValidationError(
                f"manager {manager_id!r} is (manager agent, members), not {spec!r}",
                field=manager_id,
            )
        agent, members = spec
        level = _named(members, "worker")
        nested = {
            member: team(member, sub) if isinstance(sub, tuple) else sub for member, sub in level
        }
        graph = supervisor(
            {manager_id: agent},
            nested,
            name=manager_id,
            max_iterations=max_iterations,
            agents=agents,
            execution=execution,
        )
        return Subgraph(graph, inputs={"task": f"assign.output.{manager_id}"})

    return supervisor(
        top,
        {manager_id: team(manager_id, spec) for manager_id, spec in managers.items()},
        name=name,
        inputs=inputs,
        max_iterations=max_iterations,
        agents=agents,
        execution=execution,
    )


def router(
    router: Any,
    routes: Members,
    *,
    name: str = "router",
    inputs: Sequence[str] = ("query",),
    agents: Mapping[str, Any] | None = None,
    execution: ExecutionConfig | None = None,
) -> Graph:
    """Dynamic routing: the router's output names the route that runs.

    Nodes (``R`` is the router's id; ``unknown_route`` and ``routed`` are reserved)::

        R             receives inputs; returns a route name
        <route>       (only the chosen one) receives inputs
        unknown_route (only when R's output is no route name) fails the run with
                      ``UnknownRoute``, naming the routes
        routed        returns the chosen route's output: the run's output

    Args:
        router: the router agent.
        routes: the routes; a route's name is its node's id.
        name: the graph's name.
        inputs: what the router and the routes read.
        agents: agents by name, for agents given as names.
        execution: resource limits.
    """
    rid, agent = _single(router, "router")
    named = _named(routes, "route")
    _reserve([(rid, agent), *named], {"unknown_route", "routed"})
    names = [r for r, _ in named]
    description = f"router {rid} choosing {' | '.join(names)}"
    graph = Graph(name, description=description, agents=agents, execution=execution)
    graph.add_node(rid, agent, inputs=inputs)
    for route, route_agent in named:
        graph.add_node(route, route_agent, inputs=inputs)
        graph.connect(rid, route, when=f"{rid}.output == '{route}'")
    graph.add_node("unknown_route", UnknownRouteGuard(names), inputs=[f"{rid}.output"])
    quoted = ", ".join(f"'{r}'" for r in names)
    graph.connect(rid, "unknown_route", when=f"{rid}.output not in [{quoted}]")
    graph.add_node("routed", first_present, inputs=[f"{r}.output" for r in names])
    for route in [*names, "unknown_route"]:
        graph.connect(route, "routed")
    return graph


def debate(
    debaters: Members,
    judge: Any = None,
    rounds: int = 2,
    *,
    jury: Members | None = None,
    rule: Callable[..., Any] | str = majority,
    name: str = "debate",
    inputs: Sequence[str] = ("topic",),
    agents: Mapping[str, Any] | None = None,
    execution: ExecutionConfig | None = None,
) -> Graph:
    """Debate: debaters argue for ``rounds`` rounds, then a judge (or a jury) decides.

    Nodes (``D`` a debater's id, ``r`` the round from 1)::

        D_r      (group round_r) receives inputs, and from round 2 the others' last
                 arguments {"<other>_<r-1>.output": argument, ...}; returns its argument
        judge    receives inputs + {"<D>_<rounds>.output": argument, ...} of every debater;
                 its output is the run's
      or, with a jury:
        <juror>  each receives what the judge would; returns a vote
        verdict  runs ``rule`` over {"<juror>.output": vote}: ``majority`` (default) or
                 ``unanimous`` give {"verdict", "votes", "count"}; its output is the run's

    Args:
        debaters: at least two.
        judge: the judge agent (or give ``jury``).
        rounds: rounds of arguments (>= 1).
        jury: the jurors, instead of a judge.
        rule: the jury's rule: an agent over the jurors' votes.
        name: the graph's name.
        inputs: what every debater and the judge read.
        agents: agents by name, for agents given as names.
        execution: resource limits.
    """
    named = _named(debaters, "debater")
    if len(named) < 2:
        raise ValidationError("a debate needs at least two debaters", field="debaters")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValidationError(f"rounds must be an int >= 1, not {rounds!r}", field="rounds")
    if (judge is None) == (jury is None):
        raise ValidationError("a debate needs a judge or a jury (one of them)", field="judge")
    who = "a judge" if jury is None else "a jury"
    description = f"debate of {', '.join(d for d, _ in named)}, {rounds} rounds, then {who}"
    graph = Graph(name, description=description, agents=agents, execution=execution)
    for r in range(1, rounds + 1):
        for debater, agent in named:
            others = [f"{o}_{r - 1}.output" for o, _ in named if o != debater and r > 1]
            graph.add_node(
                f"{debater}_{r}", agent, inputs=[*inputs, *others], parallel_group=f"round_{r}"
            )
    final = [*inputs, *(f"{d}_{rounds}.output" for d, _ in named)]
    if jury is None:
        jid, agent = _single(judge, "judge")
        graph.add_node(jid, agent, inputs=final)
        return graph
    jurors = _named(jury, "juror")
    _reserve(jurors, {"verdict"})
    for juror, agent in jurors:
        graph.add_node(juror, agent, inputs=final)
    graph.add_node("verdict", rule, inputs=[f"{j}.output" for j, _ in jurors])
    return graph


# -- naming ----------------------------------------------------------------------------------------


def _id_of(agent: Any, fallback: str) -> str:
    if isinstance(agent, AgentSpec):
        return _id_of(agent.target, fallback)
    if isinstance(agent, str):
        name: Any = agent.rpartition(":")[2].rpartition(".")[2]
    else:
        name = getattr(agent, "name", None)
        if not isinstance(name, str):
            name = getattr(agent, "__name__", None)
    return name if isinstance(name, str) and _ID.match(name) else fallback


def _single(agent: Any, role: str) -> tuple[str, Any]:
    """One agent: ``{id: agent}`` or an agent whose id comes from its name (else ``role``)."""
    if isinstance(agent, Mapping):
        if len(agent) != 1:
            raise ValidationError(f"the {role} is one agent, or {{id: agent}}", field=role)
        return next(iter(agent.items()))
    return _id_of(agent, role), agent


def _named(agents: Any, role: str) -> list[tuple[str, Any]]:
    """``[(id, agent)]`` from a sequence or mapping; ids unique."""
    roles = role + ("es" if role.endswith("ch") else "s")
    if isinstance(agents, Mapping):
        named = list(agents.items())
    elif isinstance(agents, Sequence) and not isinstance(agents, str):
        named = [(_id_of(a, f"{role}_{i}"), a) for i, a in enumerate(agents)]
    else:
        raise ValidationError(f"{roles} are a list or a mapping {{id: agent}}, not {agents!r}")
    if not named:
        raise ValidationError(f"at least one {role} is needed", field=roles)
    seen: set[str] = set()
    for node_id, _ in named:
        if node_id in seen:
            raise ValidationError(
                f"two {roles} have the id {node_id!r}: name them with a mapping {{id: agent}}",
                field=roles,
            )
        seen.add(node_id)
    return named


def _reserve(named: Sequence[tuple[str, Any]], reserved: set[str]) -> None:
    for node_id, _ in named:
        if node_id in reserved:
            raise ValidationError(
                f"{node_id!r} is the id of a node the pattern adds itself "
                f"({', '.join(sorted(reserved))}); name the agent otherwise",
                field=node_id,
            )
