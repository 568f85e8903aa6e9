"""``Graph``: a graph built in Python or read from YAML.

The builder, and the graph's ways to run.

```python
graph = (
    Graph("review")
    .add_node("analyze", analyze, inputs=["source_code"])
    .add_parallel("reviews", [security, performance, style])
    .add_node("aggregate", aggregate)
    .connect("analyze", "reviews")
    .connect("reviews", "aggregate")
)
result = await graph.execute({"source_code": code})
```

The builder and the YAML loader fill the same ``Graph``; ``compile()`` checks it as a whole
(``_plan``) and is run before anything executes. An agent given as an object is registered
under its node's id (or the ``Agent``'s name), so YAML and Python graphs look alike. A mapping
with a ``kind`` (``add_node("write", {"kind": "tender", "capability": "write"})``, or a value
of ``agents``) is read by that kind as YAML's ``agents:`` entries are, when it is added: a bad
option is refused at once, named ``agents.<node id>.<option>``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converge.errors import ValidationError
from converge.orchestration._model import (
    Edge,
    ExecutionConfig,
    GraphConfig,
    Node,
    NodePolicy,
    OnError,
    RetryPolicy,
)
from converge.orchestration._plan import ExecutionPlan, build_plan

if TYPE_CHECKING:
    from converge.orchestration.engine import Engine, RunEvent, RunHandle, RunResult

__all__ = ["Graph"]


class Graph:
    """A graph of nodes, each done by an agent.

    Args:
        name: the graph's name (its id in traces).
        description: what it does.
        config: ``max_iterations``, ``timeout_seconds``, ``checkpoint_enabled``.
        execution: resource limits and the default retry policy.
        agents: agents by name (objects, callables, ``"module:attr"``, ``AgentSpec``, or kind
            mappings as in YAML: ``{"kind": "team", ...}``).
        source: the file it was read from, for error messages.
    """

    def __init__(
        self,
        name: str,
        *,
        description: str = "",
        config: GraphConfig | None = None,
        execution: ExecutionConfig | None = None,
        agents: Mapping[str, Any] | None = None,
        source: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValidationError(f"a graph needs a non-empty name, not {name!r}", field="name")
        self.name = name
        self.description = description
        self.config = config or GraphConfig()
        self.execution = execution or ExecutionConfig()
        self.source = source
        self.agents: dict[str, Any] = {}
        for agent_name, agent in (agents or {}).items():
            self.agents[agent_name] = (
                self._kind(agent_name, agent) if isinstance(agent, Mapping) else agent
            )
        self.grants: dict[str, Any] = {}
        """What each agent may read and write in its context scopes (``ctx.context``), by agent
        name: ``{"writer": {"read": {"session": ["history"]}, "write": {...}}}``."""
        self._agent_lines: dict[str, tuple[int, Any]] = {}
        """Where ``source`` defines each agent: name -> (line, the value read there)."""
        self._nodes: list[Node] = []
        self._edges: list[Edge] = []
        self._plan: ExecutionPlan | None = None
        self._plan_key: tuple[Any, ...] = ()

    # -- building ----------------------------------------------------------------------------------

    @property
    def nodes(self) -> list[Node]:
        """The nodes, in the order they were added."""
        return list(self._nodes)

    @property
    def edges(self) -> list[Edge]:
        """The explicit edges, in the order they were added."""
        return list(self._edges)

    def add_node(
        self,
        node_id: str,
        agent: Any,
        *,
        inputs: Iterable[str] | None = None,
        parallel_group: str | None = None,
        wait_for: Iterable[str] = (),
        timeout: float | None = None,
        retry: RetryPolicy | int | None = None,
        on_error: OnError = "abort",
        fallback: Any = None,
    ) -> Graph:
        """Add a node done by ``agent``: a name in ``agents``, an agent, a callable, a
        ``"module:attr"`` reference, or a kind mapping as under YAML's ``agents:``
        (``{"kind": "tender", "capability": "translate>=1.0", "strategy": "lowest_cost"}``).

        Args:
            node_id: the node's id.
            agent: what does its work.
            inputs: input references (``"topic"``, ``"draft.output"``); None: the outputs of
                the nodes with edges into it (the graph's inputs for an entry node).
            parallel_group: a group name ``wait_for`` and ``connect`` can name.
            wait_for: groups or nodes that must finish first.
            timeout: seconds per try.
            retry: a ``RetryPolicy``, or a number of retries.
            on_error: ``retry``, ``skip``, ``fallback``, ``abort`` or ``human``.
            fallback: the agent that runs in its place with ``on_error="fallback"``.
        """
        if isinstance(retry, bool):
            raise ValidationError(f"retry is a RetryPolicy or a number of retries, not {retry!r}")
        if isinstance(retry, int):
            retry = RetryPolicy(max_retries=retry)
        policy = NodePolicy(
            timeout=timeout,
            retry=retry,
            on_error=on_error,
            fallback=None if fallback is None else self._register(f"{node_id}.fallback", fallback),
        )
        self._add(
            Node(
                id=node_id,
                agent=self._register(node_id, agent),
                inputs=None if inputs is None else tuple(inputs),
                parallel_group=parallel_group,
                wait_for=tuple(wait_for),
                policy=policy,
            )
        )
        return self

    def add_parallel(
        self, name: str, agents: Sequence[Any], *, inputs: Iterable[str] | None = None
    ) -> Graph:
        """Add one node per agent, ids ``<name>_0``, ``<name>_1``…, in the parallel group
        ``name``; ``connect`` and ``wait_for`` may name the group for all of them."""
        if not agents:
            raise ValidationError(f"parallel group {name!r} needs at least one agent", field=name)
        for i, agent in enumerate(agents):
            self.add_node(
                f"{name}_{i}",
                agent,
                inputs=None if inputs is None else list(inputs),
                parallel_group=name,
            )
        return self

    def connect(self, source: str, target: str, *, when: str | None = None) -> Graph:
        """Add an edge; with ``when`` it is taken only when the condition holds (an expression
        over references: ``"draft.output.words > 3"``)."""
        self._edges.append(Edge(source=source, target=target, when=when))
        return self

    def _add(self, node: Node) -> None:
        self._nodes.append(node)

    def _register(self, node_id: str, agent: Any) -> str:
        if isinstance(agent, str) and ":" not in agent:
            return agent  # a name, resolved against `agents` when compiled
        if isinstance(agent, Mapping):
            agent = self._kind(node_id, agent)
        core = sys.modules.get("converge.core.agent")  # an Agent implies its module is loaded
        name = agent.name if core is not None and isinstance(agent, core.Agent) else node_id
        if isinstance(agent, str):
            name = node_id
        known = self.agents.get(name)
        if known is not None and known is not agent:
            name = node_id if name != node_id else f"{node_id}.agent"
        self.agents[name] = agent
        return name

    def _kind(self, name: str, options: Mapping[Any, Any]) -> Any:
        """The agent a kind mapping (``{"kind": "tender", ...}``, as under YAML's ``agents:``)
        builds, registered as ``name``: read as the YAML loader reads it, so a bad option is
        refused here, at the builder's call, with ``agents.<name>.<option>``."""
        from converge.orchestration.kinds import KindContext, read_kind

        kind = options.get("kind", "python")
        if not isinstance(kind, str):
            raise ValidationError(
                f"kind is a kind's name, not {kind!r}", field=f"agents.{name}.kind"
            )
        ctx = KindContext(name, self.source, None, Path.cwd(), self.agents)
        return read_kind(kind, options, ctx)

    # -- checking ----------------------------------------------------------------------------------

    def compile(self) -> ExecutionPlan:
        """Check the graph as a whole and return its plan (cached until the graph changes).

        Raises:
            ValidationError: what is wrong and where (file, line and key for YAML).
        """
        key = (
            tuple(self._nodes),
            tuple(self._edges),
            tuple((k, id(v)) for k, v in self.agents.items()),
            self.config,
            self.execution,
        )
        if self._plan is None or key != self._plan_key:
            self._plan = build_plan(
                self.name,
                self._nodes,
                self._edges,
                self.agents,
                self.config,
                self.execution,
                source=self.source,
                agent_lines={
                    name: line
                    for name, (line, value) in self._agent_lines.items()
                    if self.agents.get(name) is value  # not replaced since it was read
                },
            )
            self._plan_key = key
        return self._plan

    # -- running (see converge.orchestration.engine) -----------------------------------------------

    async def execute(
        self, inputs: Mapping[str, Any] | None = None, *, engine: Engine | None = None
    ) -> RunResult:
        """Run the graph and wait for its result (``RunResult``; raises if it failed)."""
        return await _engine(engine).execute(self, inputs)

    def run_sync(
        self, inputs: Mapping[str, Any] | None = None, *, engine: Engine | None = None
    ) -> RunResult:
        """``execute`` for a script without an event loop of its own.

        The calls of one thread share one event loop (closed when the thread ends) and so the
        loop's default engine: a script calling ``run_sync`` in a loop costs what ``execute``
        on one engine costs, and ``engine=`` may be an engine made for that loop.

        Raises:
            StateError: called inside a running event loop (an ``async def``, a notebook):
                ``await graph.execute(...)`` there.
        """
        from converge.orchestration.engine import run_in_thread_loop

        return run_in_thread_loop(self.execute(inputs, engine=engine))

    async def submit(self, inputs: Mapping[str, Any] | None = None, *, engine: Engine) -> RunHandle:
        """Start a run and return its handle at once (``status``, ``wait``, ``cancel``)."""
        return await engine.submit(self, inputs)

    def stream(
        self, inputs: Mapping[str, Any] | None = None, *, engine: Engine | None = None
    ) -> AsyncIterator[RunEvent]:
        """Run the graph, yielding its events as they happen (node started, chunks, progress,
        node finished, run finished)."""
        return _engine(engine).stream(self, inputs)

    async def batch(
        self,
        inputs: Iterable[Mapping[str, Any]],
        *,
        concurrency: int = 10,
        engine: Engine | None = None,
    ) -> list[RunResult]:
        """Run the graph once per input, at most ``concurrency`` at a time; results in input
        order, a failed run's result says so without sinking the others."""
        return await _engine(engine).batch(self, inputs, concurrency=concurrency)

    async def resume(self, run_id: str, *, engine: Engine, answer: Any = None) -> RunResult:
        """Continue a run from its log (``answer`` answers a human pause)."""
        return await engine.resume(self, run_id, answer=answer)

    async def checkpoint(self, run_id: str, label: str, *, engine: Engine) -> None:
        """Name the current point of a run; ``fork`` starts from it."""
        await engine.checkpoint(run_id, label)

    async def list_checkpoints(self, run_id: str, *, engine: Engine) -> list[dict[str, Any]]:
        """The run's checkpoints in order: ``{label, seq, at}``."""
        return await engine.list_checkpoints(run_id)

    async def fork(
        self,
        run_id: str,
        label: str,
        *,
        engine: Engine,
        new_input: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """A new run from checkpoint ``label`` of ``run_id`` (see ``Engine.fork``)."""
        return await engine.fork(self, run_id, label, new_input=new_input)

    def describe(self) -> str:
        """The graph as text: one line per node (agent, inputs, group, waits) and per explicit
        edge (with its condition), then the config. Inputs also imply edges (see ``_plan``).

        ```text
        graph 'support': route a query to a specialist
          config: max_iterations=None
          nodes:
            triage        agent=triage  inputs=[query]
            billing       agent=billing inputs=[query, triage.output]
          edges:
            triage -> billing  when triage.output == 'billing'
        ```
        """
        head = f"graph {self.name!r}" + (f": {self.description}" if self.description else "")
        lines = [head, f"  config: max_iterations={self.config.max_iterations}", "  nodes:"]
        width = max((len(n.id) for n in self._nodes), default=0)
        for node in self._nodes:
            parts = [f"agent={node.agent}"]
            if node.inputs is not None:
                parts.append(f"inputs=[{', '.join(node.inputs)}]")
            if node.parallel_group:
                parts.append(f"group={node.parallel_group}")
            if node.wait_for:
                parts.append(f"wait_for=[{', '.join(node.wait_for)}]")
            lines.append(f"    {node.id:<{width}}  {' '.join(parts)}")
        if self._edges:
            lines.append("  edges:")
            for edge in self._edges:
                when = f"  when {edge.when}" if edge.when is not None else ""
                lines.append(f"    {edge.source} -> {edge.target}{when}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, nodes={len(self._nodes)}, edges={len(self._edges)})"


def _engine(engine: Engine | None) -> Engine:
    if engine is not None:
        return engine
    from converge.orchestration.engine import default_engine

    return default_engine()
