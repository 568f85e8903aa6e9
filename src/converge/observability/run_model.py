"""One model of a run's coordination, folded from the events of its trace.

``RunModel`` is what the trace page draws, and what a live view can keep current: give it the
events of a run's trace in log order (``add``, as often as they come) and the
``agent.registered`` events of the dids it shows (``unnamed`` lists them) to name them;
``view()`` returns a ``RunView`` of frozen structs:

- ``passes``: each node pass, the §8.1 row (``trace_of``) with what it read and returned:
  ``inputs`` (each reference the node reads, resolved from the log as the engine resolved it:
  the run's inputs, and the latest output of each node logged before the pass started; those
  that found nothing in ``missing_inputs``), ``output``, ``error``, and ``retries`` (each failed
  try's error, the first one kept);
- ``nodes``: every node of the graph — its shape is in the run's ``run.started`` — with its
  passes, its layer (``depth``: the longest path of forward edges to it; a subgraph's nodes one
  past the node that holds them) and, for a node that never ran, why: ``untaken`` (every edge
  into it was not taken; ``condition`` says which condition, or which node halted or was not
  taken itself), ``not_run`` (the run ended before it) or ``pending`` (the run goes on);
- ``edges``: every edge of the graph (a join's too), ``taken``, ``not_taken`` or ``pending``
  (its source has not finished). A condition is evaluated again on what the engine had when
  the source finished (the run's inputs and the latest output of each node, a skipped node's
  missing); one that cannot be (a run stored by another version) is taken if its target ran;
- ``auctions`` (intent → offers with price, score and rank → award → receipt → trust),
  ``ballots`` (question → votes → outcome) and board ``tasks``, each provider, voter and
  worker by the name it registered with (``names``), else by a shortened did;
- ``agents`` (usage per agent), ``runs`` (the child runs of subgraph nodes) and
  ``coordination`` (``coordination_objects``' rows, which ``auctions``, ``ballots`` and
  ``tasks`` arrange).

A run stored before ``run.started`` held the graph's shape has as edges the causes the log
records (the ``node.done`` that released each node: a join shows one edge in) and no node that
never ran; ``RunView.shaped`` says which.

``view()`` folds every event it holds (linear in the trace's length: 0.07 to 0.13 s for a
1,000-node fan-out on a busy 2-core machine), so a live view calls it when it redraws, not per
event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import msgspec

from converge.core.missing import MISSING
from converge.errors import ConvergeError
from converge.orchestration import Expression, parse_expression
from converge.orchestration.trace import trace_of
from converge.protocol.event import Event

__all__ = [
    "AgentUse",
    "AuctionView",
    "AwardView",
    "BallotView",
    "BoardTaskView",
    "ChildRun",
    "EdgeState",
    "EdgeView",
    "NodeView",
    "OfferView",
    "Pass",
    "ReceiptView",
    "RunModel",
    "RunView",
    "TrustView",
    "VoteView",
    "display_name",
]

EdgeState = Literal["taken", "not_taken", "pending"]
"""Whether an edge carried its source's output on (some pass), did not, or cannot tell yet."""

_ENDED = frozenset({"completed", "failed", "cancelled", "interrupted"})


class Pass(msgspec.Struct, frozen=True, kw_only=True):
    """One pass of one node, as its events tell it."""

    index: int
    """Its position in ``RunView.passes`` (start order: the timeline's row)."""
    node: str
    """The node's id (a subgraph's nodes by their path, ``write/x``)."""
    iteration: int
    """Which pass of the node (a loop's second is 2)."""
    agent: str
    """The agent that ran it."""
    status: str
    """Its trace status (``success``, ``failed``, ``skipped``, ``running``, …)."""
    run: str
    """The run it ran in (a subgraph's nodes: the child run)."""
    start_time: str
    """When its first try started (UTC ISO 8601)."""
    end_time: str | None
    """When it finished (None: it has not)."""
    latency_ms: float | None
    """From start to finish."""
    attempts: int
    """Tries started."""
    tokens_in: int
    """Tokens its agent read, retried tries' included."""
    tokens_out: int
    """Tokens its agent wrote."""
    tool_calls: int
    """Tools its agent called."""
    cost: float
    """What it cost."""
    inputs: dict[str, Any] | None
    """Each reference it read and its value; None when the log cannot tell."""
    missing_inputs: tuple[str, ...] = ()
    """The references that found nothing (a branch not taken, a key the output lacks)."""
    output: Any = None
    """What it returned (None: nothing yet, or nothing)."""
    error: str | None = None
    """Why it failed (or why its fallback ran)."""
    retries: tuple[str, ...] = ()
    """Each failed try's error, in order."""
    question: str | None = None
    """What it asks a person, while it waits."""


class NodeView(msgspec.Struct, frozen=True, kw_only=True):
    """A node of the graph, whether it ran or not."""

    id: str
    """Its id (a subgraph's nodes by their path)."""
    agent: str
    """Its agent's name."""
    run: str
    """The run it belongs to."""
    status: str
    """Its latest pass's status, or ``untaken``, ``not_run``, ``pending``."""
    depth: int
    """Its layer: the longest path of forward edges to it."""
    passes: tuple[int, ...]
    """Its passes, as indexes into ``RunView.passes``."""
    inputs: tuple[str, ...] | None
    """The references it reads as declared (None: the run's inputs, or unknown)."""
    condition: str | None = None
    """For an untaken node: why (the conditions that were false, the nodes that halted)."""


class EdgeView(msgspec.Struct, frozen=True, kw_only=True):
    """An edge of the graph."""

    source: str
    """The node it leaves."""
    target: str
    """The node it enters."""
    when: str | None
    """Its condition as written (None: always taken)."""
    back: bool
    """Whether it closes a loop."""
    state: EdgeState
    """Whether it was taken."""


class OfferView(msgspec.Struct, frozen=True, kw_only=True):
    """An offer made in an auction."""

    id: str
    """The offer's id."""
    provider: str
    """The provider's did."""
    name: str
    """The provider's name (a shortened did when none is known)."""
    price: float | None
    """What it asked."""
    score: float | None
    """Its score under the auction's strategy (None: not ranked)."""
    rank: int | None
    """Its place in the award's ranking, from 1 (None: not ranked)."""
    status: str
    """``accepted`` or ``refused``."""
    won: bool
    """Whether it won the auction."""
    reason: str | None = None
    """Why it was refused."""


class AwardView(msgspec.Struct, frozen=True, kw_only=True):
    """An auction's award."""

    winner: str
    """The winner's did."""
    name: str
    """The winner's name."""
    offer_id: str | None
    """The winning offer."""
    price: float | None
    """What the winner is paid (the second price under ``second_price``)."""
    currency: str | None
    """The price's currency."""
    score: float | None
    """The winner's score."""
    reason: str | None
    """Why it won, in words."""


class ReceiptView(msgspec.Struct, frozen=True, kw_only=True):
    """The receipt that settled (or disputed) an auction's work."""

    id: str
    """The receipt's id."""
    status: str
    """``completed``, ``failed``, ``disputed``, …"""
    cost: float | None
    """What the work cost."""
    currency: str | None
    """The cost's currency."""
    outcome: str | None
    """The trust outcome it recorded."""
    reason: str | None
    """Why it was disputed."""


class TrustView(msgspec.Struct, frozen=True, kw_only=True):
    """The winner's trust after the auction."""

    agent: str
    """Whose trust moved (a did)."""
    name: str
    """Its name."""
    outcome: str
    """``success``, ``failure``, ``timeout``, …"""
    score: float | None
    """The new score."""


class AuctionView(msgspec.Struct, frozen=True, kw_only=True):
    """One auction round of a tender: intent → offers → award → receipt → trust."""

    id: str
    """The round's (the intent's) id."""
    node: str | None
    """The node that opened it."""
    capability: str | None
    """What the intent asks for."""
    strategy: str | None
    """How offers are ranked."""
    status: str
    """``open``, ``awarded``, ``failed``."""
    reason: str | None
    """Why it failed, or why the winner won."""
    invited: tuple[str, ...]
    """The invited providers' names."""
    offers: tuple[OfferView, ...]
    """Its offers, best ranked first, then the rest as they came."""
    award: AwardView | None
    """The award (None: none yet, or the round failed)."""
    receipt: ReceiptView | None
    """The receipt (None: none yet)."""
    trust: TrustView | None
    """The winner's trust update (None: none)."""
    start_time: str
    """When it opened."""
    end_time: str | None
    """When it was decided."""


class VoteView(msgspec.Struct, frozen=True, kw_only=True):
    """A vote on a ballot."""

    voter: str
    """The voter's did."""
    name: str
    """The voter's name."""
    option: str | None
    """What it voted for."""
    status: str
    """``cast`` or ``refused``."""
    reason: str | None = None
    """Why it was refused."""


class BallotView(msgspec.Struct, frozen=True, kw_only=True):
    """A ballot: question → votes → outcome."""

    id: str
    """The ballot's id."""
    node: str | None
    """The node that opened it."""
    question: str | None
    """What is asked."""
    options: tuple[str, ...]
    """What can be voted for."""
    rule: str | None
    """How votes are counted."""
    status: str
    """``open`` or ``closed``."""
    votes: tuple[VoteView, ...]
    """The votes, as cast."""
    winner: str | None
    """The option that won (None: none, or not closed)."""
    cause: str | None
    """Why it closed (``settled``, ``deadline``, …)."""
    reason: str | None
    """The outcome, in words."""
    tallies: dict[str, int]
    """Votes per option, once closed."""


class BoardTaskView(msgspec.Struct, frozen=True, kw_only=True):
    """A task a node put on the board."""

    id: str
    """The task's id."""
    node: str | None
    """The node that put it there."""
    status: str
    """Its last state (``submitted``, ``claimed``, ``completed``, ``failed``, …)."""
    worker: str | None
    """The name of the worker that claimed it last."""
    attempt: int | None
    """Its last claim's attempt."""
    reason: str | None
    """Why it failed."""
    latency_ms: float | None
    """From submission to its end."""


class AgentUse(msgspec.Struct, frozen=True, kw_only=True):
    """What one agent did in the run."""

    agent: str
    """Its name."""
    nodes: int
    """Passes it ran."""
    tokens: int
    """Tokens in and out."""
    tool_calls: int
    """Tools called."""
    cost: float
    """What it cost."""


class ChildRun(msgspec.Struct, frozen=True, kw_only=True):
    """The child run of a subgraph node."""

    run_id: str
    """Its id (``<root>/<node>/<iteration>``)."""
    node: str
    """The subgraph node that holds it (its path)."""
    graph: str
    """Its graph's name."""
    status: str
    """``running``, ``completed``, ``failed``, …"""


class RunView(msgspec.Struct, frozen=True, kw_only=True):
    """A run's coordination, as of the events given (see the module doc)."""

    run_id: str
    """The run's id."""
    graph: str
    """Its graph's name."""
    status: str
    """``running``, ``completed``, ``failed``, ``waiting``, …"""
    start_time: str | None
    """When its first event was logged."""
    duration_ms: float
    """From its first event to its end (or its last event)."""
    total_tokens: int
    """Tokens of every pass."""
    total_cost: float
    """Cost of every pass."""
    shaped: bool
    """Whether the log holds the graph's shape (every node and edge), not only causes."""
    passes: tuple[Pass, ...]
    """Node passes in start order."""
    nodes: tuple[NodeView, ...]
    """The graph's nodes (a child run's after it)."""
    edges: tuple[EdgeView, ...]
    """The graph's edges."""
    auctions: tuple[AuctionView, ...]
    """Tender rounds, in the order they opened."""
    ballots: tuple[BallotView, ...]
    """Ballots, in the order they opened."""
    tasks: tuple[BoardTaskView, ...]
    """Board tasks, in the order they were submitted."""
    agents: tuple[AgentUse, ...]
    """Usage per agent."""
    runs: tuple[ChildRun, ...]
    """Child runs of subgraph nodes."""
    coordination: tuple[dict[str, Any], ...]
    """The coordination objects' rows (``coordination_objects``)."""
    names: dict[str, str]
    """Names of the dids shown, as they registered."""


def display_name(did: str, names: Mapping[str, str]) -> str:
    """``did``'s registered name, else the did shortened to its method and last 6 characters
    (``did:key:…Qx7Yq2``); a string that is not a did as it is."""
    name = names.get(did)
    if name:
        return name
    if did.startswith("did:") and len(did) > 24:
        method = did.split(":", 2)[1]
        return f"did:{method}:…{did[-6:]}"
    return did


class RunModel:
    """A run's coordination, folded from its trace's events (see the module doc).

    Args:
        run_id: the run (a subgraph's child run by its id, ``<root>/<node>/<i>``).
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._events: list[Event] = []
        self._names: dict[str, str] = {}

    def add(self, events: Iterable[Event]) -> RunModel:
        """Take more events (in log order): the run's trace, and ``agent.registered`` events
        (any trace) that name dids. Returns the model."""
        for ev in events:
            if ev.kind == "agent.registered":
                name = ev.data.get("name")
                if isinstance(name, str) and name:
                    self._names[ev.subject] = name
            else:
                self._events.append(ev)
        return self

    def unnamed(self) -> set[str]:
        """The dids the view shows that no ``agent.registered`` event given has named."""
        found: set[str] = set()
        for obj in trace_of(self._events, self.run_id)["coordination"]:
            detail = obj["detail"]
            for key in ("provider", "winner", "voter", "agent", "worker"):
                value = detail.get(key)
                if isinstance(value, str):
                    found.add(value)
            invited = detail.get("invited")
            if isinstance(invited, list):
                found.update(d for d in invited if isinstance(d, str))
        return {d for d in found if d.startswith("did:") and d not in self._names}

    def view(self) -> RunView:
        """The run as of the events given so far."""
        return _Fold(self.run_id, self._events, self._names).view()


class _RunState:
    """One run's (the root's or a child's) part of the fold."""

    __slots__ = ("inputs", "out", "outputs", "prefix", "shape_nodes", "values")

    def __init__(self, prefix: str, data: Mapping[str, Any]) -> None:
        self.prefix = prefix
        raw = data.get("inputs")
        self.inputs: dict[str, Any] = dict(raw) if isinstance(raw, Mapping) else {}
        self.values: dict[str, Any] = dict(self.inputs)  # what conditions read
        self.outputs: dict[str, Any] = {}
        shape = data.get("shape")
        self.shape_nodes: dict[str, Mapping[str, Any]] = {}  # node id -> its shape
        self.out: dict[str, list[int]] = {}  # node id -> indexes into the fold's edges
        if isinstance(shape, Mapping):
            for n in shape.get("nodes", ()):
                if isinstance(n, Mapping):
                    self.shape_nodes.setdefault(str(n.get("id", "")), n)


class _Fold:
    """One pass over a run's events that builds its ``RunView``."""

    def __init__(self, run_id: str, events: list[Event], names: dict[str, str]) -> None:
        self.run_id = run_id
        self.events = events
        self.names = names
        self.runs: dict[str, _RunState] = {}
        self.child_runs: dict[str, dict[str, Any]] = {}
        self.edges: list[dict[str, Any]] = []  # {source, target, when, back, taken, done, unknown}
        self.node_run: dict[str, str] = {}  # node path -> its run id (shaped nodes)
        self.node_agent: dict[str, str] = {}
        self.declared: dict[str, tuple[str, ...] | None] = {}
        self.order: list[str] = []  # shaped nodes, in declaration order
        self.inputs: dict[tuple[str, int], tuple[dict[str, Any] | None, tuple[str, ...]]] = {}
        self.outputs: dict[tuple[str, int], Any] = {}
        self.retries: dict[tuple[str, int], list[str]] = {}
        self.errors: dict[tuple[str, int], str] = {}  # a fallback's cause, a failure
        self.causes: dict[str, str] = {}  # node path -> the node whose done started it
        self.compiled: dict[str, Expression | None] = {}
        self.shapes: dict[str, dict[str, list[int]]] = {}  # path prefix -> its runs' edges out

    def view(self) -> RunView:
        trace = trace_of(self.events, self.run_id)
        self._walk()
        rows: list[dict[str, Any]] = trace["nodes"]
        passes = tuple(self._pass(i, row) for i, row in enumerate(rows))
        by_node: dict[str, list[int]] = {}
        for p in passes:
            by_node.setdefault(p.node, []).append(p.index)
        shaped = bool(self.order)
        ids = list(self.order) + [n for n in by_node if n not in self.node_run]
        edges = self._edge_views(by_node) if shaped else self._cause_edges(set(by_node))
        depths = _depths(ids, edges)
        nodes = tuple(self._node(n, by_node, passes, edges, depths, trace) for n in ids)
        coordination: list[dict[str, Any]] = trace["coordination"]
        shown = _dids(coordination)
        return RunView(
            run_id=self.run_id,
            graph=trace["graph_id"],
            status=trace["status"],
            start_time=rows[0]["start_time"] if rows else None,
            duration_ms=trace["duration_ms"],
            total_tokens=trace["total_tokens"],
            total_cost=trace["total_cost"],
            shaped=shaped,
            passes=passes,
            nodes=nodes,
            edges=tuple(edges),
            auctions=self._auctions(coordination),
            ballots=self._ballots(coordination),
            tasks=self._tasks(coordination),
            agents=_agents(passes),
            runs=tuple(ChildRun(**r) for r in self.child_runs.values()),
            coordination=tuple(coordination),
            names={d: n for d, n in self.names.items() if d in shown},
        )

    # -- the walk over the run's events ------------------------------------------------------------

    def _walk(self) -> None:
        root = self.run_id
        done_by_event: dict[str, str] = {}
        for ev in self.events:
            subject = ev.subject
            if subject != root and not subject.startswith(root + "/"):
                continue
            kind, data = ev.kind, ev.data
            if kind == "run.started":
                self._started(subject, data)
                continue
            if kind.startswith("run."):
                if subject in self.child_runs and kind != "run.checkpoint":
                    self.child_runs[subject]["status"] = kind.removeprefix("run.")
                continue
            state = self.runs.get(subject)
            if not kind.startswith("node.") or state is None:
                continue
            local = str(data.get("node", ""))
            node = state.prefix + local
            key = (node, int(data.get("iteration", 0)))
            if kind == "node.start":
                if key not in self.inputs:
                    self.inputs[key] = self._resolve(state, local)
                if ev.parent_id is not None and node not in self.causes:
                    trigger = done_by_event.get(ev.parent_id)
                    if trigger is not None and trigger != node:
                        self.causes[node] = trigger
            elif kind == "node.retry":
                self.retries.setdefault(key, []).append(str(data.get("error", "")))
            elif kind == "node.failed" and data.get("error") is not None:
                self.errors[key] = str(data["error"])
            elif kind == "node.done":
                if data.get("error") is not None:
                    self.errors[key] = str(data["error"])
                done_by_event[ev.id] = node
                status = str(data.get("status", ""))
                output = data.get("output")
                self.outputs[key] = output
                state.outputs[local] = MISSING if status == "skipped" else output
                state.values[local] = {"output": state.outputs[local]}
                self._follow(state, local, halted=status == "halted")

    def _started(self, subject: str, data: Mapping[str, Any]) -> None:
        prefix = _path(subject, self.run_id)
        state = self.runs[subject] = _RunState(prefix, data)
        if subject != self.run_id:
            self.child_runs[subject] = {
                "run_id": subject,
                "node": prefix.rstrip("/"),
                "graph": str(data.get("graph", "")),
                "status": "running",
            }
        shape = data.get("shape")
        if not isinstance(shape, Mapping):
            return
        known = self.shapes.get(prefix)
        if known is not None:  # another pass of the same subgraph node: the same graph
            state.out = known
            return
        self.shapes[prefix] = state.out
        for local, n in state.shape_nodes.items():
            node = prefix + local
            self.node_run[node] = subject
            self.node_agent[node] = str(n.get("agent", ""))
            refs = n.get("inputs")
            self.declared[node] = (
                None if not isinstance(refs, list) else tuple(str(r.get("ref")) for r in refs)
            )
            self.order.append(node)
        for e in shape.get("edges", ()):
            source, target = str(e.get("from", "")), str(e.get("to", ""))
            state.out.setdefault(source, []).append(len(self.edges))
            when = e.get("when")
            self.edges.append(
                {
                    "source": prefix + source,
                    "target": prefix + target,
                    "when": when if isinstance(when, str) else None,
                    "back": bool(e.get("back")),
                    "taken": 0,
                    "done": 0,
                    "unknown": False,
                }
            )

    def _resolve(
        self, state: _RunState, local: str
    ) -> tuple[dict[str, Any] | None, tuple[str, ...]]:
        """What node ``local`` of ``state``'s run reads now: as the engine's ``_inputs``."""
        spec = state.shape_nodes.get(local)
        if spec is None:
            return None, ()
        refs = spec.get("inputs")
        if not isinstance(refs, list):
            return dict(state.inputs), ()
        values: dict[str, Any] = {}
        missing: list[str] = []
        for ref in refs:
            text = str(ref.get("ref", ""))
            if "input" in ref:
                value = state.inputs.get(str(ref["input"]), MISSING)
            else:
                value = state.outputs.get(str(ref.get("node", "")), MISSING)
            value = _walk_path(value, ref.get("path") or ())
            if value is MISSING:
                missing.append(text)
            else:
                values[text] = value
        return values, tuple(missing)

    def _follow(self, state: _RunState, local: str, *, halted: bool) -> None:
        """Count which of ``local``'s edges its finishing took, as the scheduler does."""
        for i in state.out.get(local, ()):
            edge = self.edges[i]
            edge["done"] += 1
            if halted:
                continue
            when = edge["when"]
            if when is None:
                edge["taken"] += 1
                continue
            if when not in self.compiled:
                try:
                    self.compiled[when] = parse_expression(when)
                except ConvergeError:
                    self.compiled[when] = None
            expression = self.compiled[when]
            try:
                if expression is None:
                    raise ConvergeError(when)
                if expression.matches(state.values):
                    edge["taken"] += 1
            except ConvergeError:
                edge["unknown"] = True

    # -- the view's parts --------------------------------------------------------------------------

    def _pass(self, index: int, row: dict[str, Any]) -> Pass:
        key = (row["node_id"], row["iteration"])
        inputs, missing = self.inputs.get(key, (None, ()))
        retries = tuple(self.retries.get(key, ()))
        return Pass(
            index=index,
            node=row["node_id"],
            iteration=row["iteration"],
            agent=row["agent"],
            status=row["status"],
            run=self._run_of(row["node_id"]),
            start_time=row["start_time"],
            end_time=row["end_time"],
            latency_ms=row["latency_ms"],
            attempts=row["attempts"],
            tokens_in=row["tokens_in"],
            tokens_out=row["tokens_out"],
            tool_calls=row["tool_calls"],
            cost=row["cost"],
            inputs=inputs,
            missing_inputs=missing,
            output=self.outputs.get(key),
            error=row.get("error") or self.errors.get(key),
            retries=retries,
            question=row.get("question"),
        )

    def _run_of(self, node: str) -> str:
        if node in self.node_run:
            return self.node_run[node]
        owner = node.rpartition("/")[0]
        for run in self.child_runs.values():
            if run["node"] == owner:
                return str(run["run_id"])
        return self.run_id

    def _edge_views(self, by_node: dict[str, list[int]]) -> list[EdgeView]:
        """Each edge's state; a node that never ran and whose every forward edge in was not
        taken is not taken itself, and sends "not taken" on (as the scheduler's dead tokens)."""
        states: list[EdgeState] = []
        for e in self.edges:
            if e["taken"] or (e["unknown"] and e["target"] in by_node):
                states.append("taken")
            else:
                states.append("not_taken" if e["done"] else "pending")
        into: dict[str, list[int]] = {}
        out: dict[str, list[int]] = {}
        for i, e in enumerate(self.edges):
            if not e["back"]:
                into.setdefault(e["target"], []).append(i)
                out.setdefault(e["source"], []).append(i)
        work = [self.edges[i]["target"] for i, s in enumerate(states) if s == "not_taken"]
        untaken: set[str] = set()
        while work:
            node = work.pop()
            if node in by_node or node in untaken:
                continue
            if all(states[i] == "not_taken" for i in into.get(node, ())):
                untaken.add(node)
                for i in out.get(node, ()):
                    if states[i] == "pending":
                        states[i] = "not_taken"
                        work.append(self.edges[i]["target"])
        return [
            EdgeView(
                source=e["source"],
                target=e["target"],
                when=e["when"],
                back=e["back"],
                state=state,
            )
            for e, state in zip(self.edges, states, strict=True)
        ]

    def _cause_edges(self, ran: set[str]) -> list[EdgeView]:
        return [
            EdgeView(source=p, target=n, when=None, back=False, state="taken")
            for n, p in self.causes.items()
            if n in ran and p in ran
        ]

    def _node(
        self,
        node: str,
        by_node: dict[str, list[int]],
        passes: tuple[Pass, ...],
        edges: list[EdgeView],
        depths: dict[str, int],
        trace: dict[str, Any],
    ) -> NodeView:
        mine = tuple(by_node.get(node, ()))
        condition = None
        if mine:
            status = passes[mine[-1]].status
            agent = passes[mine[0]].agent
        else:
            agent = self.node_agent.get(node, "")
            into = [e for e in edges if e.target == node and not e.back]
            if into and all(e.state == "not_taken" for e in into):
                status = "untaken"
                condition = "; ".join(_why_not(e, by_node, passes) for e in into)
            elif trace["status"] in _ENDED:
                status = "not_run"
            else:
                status = "pending"
        return NodeView(
            id=node,
            agent=agent,
            run=self._run_of(node),
            status=status,
            depth=depths.get(node, 0),
            passes=mine,
            inputs=self.declared.get(node),
            condition=condition,
        )

    def _name(self, did: object) -> str:
        return display_name(did, self.names) if isinstance(did, str) else ""

    def _auctions(self, objects: list[dict[str, Any]]) -> tuple[AuctionView, ...]:
        offers: dict[str, list[dict[str, Any]]] = {}
        receipts: dict[str, dict[str, Any]] = {}
        awards: dict[str, dict[str, Any]] = {}
        trust: dict[str, dict[str, Any]] = {}
        for obj in objects:
            detail, kind = obj["detail"], obj["type"]
            if kind == "offer":
                offers.setdefault(str(detail.get("auction")), []).append(obj)
            elif kind == "receipt":
                receipts[str(detail.get("auction"))] = obj
            elif kind == "award":
                awards[obj["id"].removesuffix(":award")] = obj
            elif kind == "trust":
                agent = str(detail.get("agent", ""))
                trust[obj["id"].removesuffix(":" + agent)] = obj
        out = []
        for intent in (o for o in objects if o["type"] == "intent"):
            rid, detail = intent["id"], intent["detail"]
            award = awards.get(rid)
            a = award["detail"] if award else {}
            ranking = [str(x) for x in a.get("ranking") or ()]
            scores = list(a.get("scores") or ())
            rank = {oid: i for i, oid in enumerate(ranking)}
            views = [
                OfferView(
                    id=o["id"],
                    provider=str(o["detail"].get("provider", "")),
                    name=self._name(o["detail"].get("provider", "")),
                    price=o["detail"].get("cost"),
                    score=scores[rank[o["id"]]]
                    if o["id"] in rank and rank[o["id"]] < len(scores)
                    else None,
                    rank=rank[o["id"]] + 1 if o["id"] in rank else None,
                    status=o["status"],
                    won=award is not None and o["id"] == a.get("offer_id"),
                    reason=o["detail"].get("reason"),
                )
                for o in offers.get(rid, ())
            ]
            views.sort(key=lambda v: (v.rank is None, v.rank or 0))
            receipt = receipts.get(rid)
            moved = trust.get(rid)
            invited = detail.get("invited")
            out.append(
                AuctionView(
                    id=rid,
                    node=intent["node"],
                    capability=detail.get("capability"),
                    strategy=detail.get("strategy") or a.get("strategy"),
                    status=intent["status"],
                    reason=detail.get("reason"),
                    invited=tuple(self._name(d) for d in invited)
                    if isinstance(invited, list)
                    else (),
                    offers=tuple(views),
                    award=None
                    if award is None
                    else AwardView(
                        winner=str(a.get("winner", "")),
                        name=self._name(a.get("winner", "")),
                        offer_id=a.get("offer_id"),
                        price=a.get("price"),
                        currency=a.get("currency"),
                        score=a.get("score"),
                        reason=a.get("reason"),
                    ),
                    receipt=None
                    if receipt is None
                    else ReceiptView(
                        id=receipt["id"],
                        status=receipt["status"],
                        cost=receipt["detail"].get("cost"),
                        currency=receipt["detail"].get("currency"),
                        outcome=receipt["detail"].get("outcome"),
                        reason=receipt["detail"].get("reason"),
                    ),
                    trust=None
                    if moved is None
                    else TrustView(
                        agent=str(moved["detail"].get("agent", "")),
                        name=self._name(moved["detail"].get("agent", "")),
                        outcome=moved["status"],
                        score=moved["detail"].get("score"),
                    ),
                    start_time=intent["start_time"],
                    end_time=intent["end_time"],
                )
            )
        return tuple(out)

    def _ballots(self, objects: list[dict[str, Any]]) -> tuple[BallotView, ...]:
        votes: dict[str, list[VoteView]] = {}
        for obj in objects:
            if obj["type"] == "vote":
                d = obj["detail"]
                votes.setdefault(str(d.get("ballot")), []).append(
                    VoteView(
                        voter=str(d.get("voter", "")),
                        name=self._name(d.get("voter", "")),
                        option=d.get("option"),
                        status=obj["status"],
                        reason=d.get("reason"),
                    )
                )
        out = []
        for obj in (o for o in objects if o["type"] == "ballot"):
            d = obj["detail"]
            tallies = d.get("tallies")
            out.append(
                BallotView(
                    id=obj["id"],
                    node=obj["node"],
                    question=d.get("question"),
                    options=tuple(str(o) for o in d.get("options") or ()),
                    rule=d.get("rule"),
                    status=obj["status"],
                    votes=tuple(votes.get(obj["id"], ())),
                    winner=d.get("winner"),
                    cause=d.get("cause"),
                    reason=d.get("reason"),
                    tallies={
                        str(k): int(v.get("count", 0)) if isinstance(v, Mapping) else int(v)
                        for k, v in tallies.items()
                    }
                    if isinstance(tallies, Mapping)
                    else {},
                )
            )
        return tuple(out)

    def _tasks(self, objects: list[dict[str, Any]]) -> tuple[BoardTaskView, ...]:
        return tuple(
            BoardTaskView(
                id=o["id"],
                node=o["node"],
                status=o["status"],
                worker=self._name(o["detail"]["worker"]) if "worker" in o["detail"] else None,
                attempt=o["detail"].get("attempt"),
                reason=o["detail"].get("reason"),
                latency_ms=o["latency_ms"],
            )
            for o in objects
            if o["type"] == "task"
        )


def _why_not(edge: EdgeView, by_node: dict[str, list[int]], passes: tuple[Pass, ...]) -> str:
    """Why ``edge`` carried nothing: its condition, or its source halted or never ran."""
    if edge.when is not None:
        return f"when {edge.when}"
    ran = by_node.get(edge.source)
    if ran and passes[ran[-1]].status == "halted":
        return f"{edge.source} halted"
    return f"{edge.source} not taken"


def _walk_path(value: Any, path: Iterable[Any]) -> Any:
    """``value`` followed down ``path`` (keys, list indexes as digits), as the engine reads a
    reference into the plain data the log holds; ``MISSING`` where it ends."""
    for key in path:
        if value is MISSING:
            return MISSING
        key = str(key)
        if isinstance(value, Mapping):
            value = value.get(key, MISSING)
        elif isinstance(value, list) and key.isdigit():
            index = int(key)
            value = value[index] if index < len(value) else MISSING
        else:
            return MISSING
    return value


def _depths(ids: list[str], edges: list[EdgeView]) -> dict[str, int]:
    """Each node's layer: the longest path of forward edges to it (Kahn's order), a
    subgraph's nodes at least one past the node that holds them."""
    known = set(ids)
    into: dict[str, list[str]] = {n: [] for n in ids}
    for e in edges:
        if not e.back and e.source in known and e.target in known and e.source != e.target:
            into[e.target].append(e.source)
    for n in ids:
        owner = n.rpartition("/")[0]
        if owner in known and not into[n]:
            into[n].append(owner)  # a child run's entry node, after its holder
    outs: dict[str, list[str]] = {n: [] for n in ids}
    waiting = {n: len(into[n]) for n in ids}
    for n, sources in into.items():
        for s in sources:
            outs[s].append(n)
    depth = dict.fromkeys(ids, 0)
    ready = [n for n in ids if waiting[n] == 0]
    while ready:
        n = ready.pop()
        for m in outs[n]:
            depth[m] = max(depth[m], depth[n] + 1)
            waiting[m] -= 1
            if waiting[m] == 0:
                ready.append(m)
    return depth  # a node on a cycle of causes keeps the depth its other sources gave it


def _agents(passes: tuple[Pass, ...]) -> tuple[AgentUse, ...]:
    tally: dict[str, list[Any]] = {}
    for p in passes:
        t = tally.setdefault(p.agent, [0, 0, 0, 0.0])
        t[0] += 1
        t[1] += p.tokens_in + p.tokens_out
        t[2] += p.tool_calls
        t[3] = round(t[3] + p.cost, 10)
    return tuple(
        AgentUse(agent=a, nodes=t[0], tokens=t[1], tool_calls=t[2], cost=t[3])
        for a, t in tally.items()
    )


def _dids(objects: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for obj in objects:
        for value in obj["detail"].values():
            if isinstance(value, str):
                found.add(value)
            elif isinstance(value, list):
                found.update(v for v in value if isinstance(v, str))
    return found


def _path(subject: str, root: str) -> str:
    """``"write/"`` for a child run ``root/write/1``, ``""`` for the root run."""
    if subject == root or not subject.startswith(root + "/"):
        return ""
    return "".join(f"{n}/" for n in subject[len(root) + 1 :].split("/")[0::2])
