"""A run's log, read back: what resume and fork need, and results.

Event kinds a run writes (all in the run's trace, ``subject`` = run id; ``data.node`` names the
node where there is one). A ``node.start``'s parent is the ``node.done`` that made its pass
ready (a retry's too; the run's ``run.started`` for entry nodes), so the trace is a causal
graph:

- ``run.started`` ``{graph, fingerprint, shape, inputs, owner[, forked_from, label]}``
  (``owner``: the engine executing it, see ``ownership``; ``shape``: the graph's nodes and
  edges, ``ExecutionPlan.shape``, for traces)
- ``node.start`` ``{node, agent, iteration, attempt, task_id, inputs}`` (seed 003
  ``TaskStart``; ``inputs``: the keys of the dict the pass is given, its values read back by
  ``pass_inputs``)
- ``node.progress`` ``{node, iteration, fraction, message}`` (``TaskProgress``)
- ``node.retry`` ``{node, iteration, attempt, max_retries, error, delay[, usage]}``
- ``node.done`` ``{node, iteration, status, output[, usage], started_at, finished_at[, error]}``
  (``TaskDone``); ``status`` is ``completed``, ``skipped`` (output ``null``, read as
  ``MISSING``), ``fallback``, ``answered`` (a person's answer stood in for it) or
  ``replanned`` (``on_node_failed``'s replacement nodes did), or ``halted`` (it returned
  ``Halt(output)``: finished, and none of its edges taken)
- ``node.replaced`` ``{node, iteration, replaces, output}``: a replacement node finished
- ``node.failed`` ``{node, iteration, error[, usage]}`` (the run fails with it)
- ``node.waiting`` ``{node, iteration, index, question[, usage]}``; ``node.answered`` ``{node,
  iteration, index, answer}``

``usage`` ``{tokens_in, tokens_out, tool_calls, cost}`` is what the pass reported since the
last event that carried it (the try that failed, paused or finished; with a fallback or
replacement nodes, theirs too); absent when nothing was reported.
- ``run.waiting`` / ``run.resumed`` ``{owner[, node, iteration, index, answer]}`` /
  ``run.checkpoint`` ``{label}`` / ``run.completed`` ``{output, usage, duration_ms}`` /
  ``run.failed`` ``{error, node}`` / ``run.cancelled`` (stopped on purpose: ``Engine.cancel``,
  ``converge cancel``) / ``run.interrupted`` (the task executing it was cancelled otherwise:
  Ctrl-C, a shutdown; resumable)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from converge.core.missing import MISSING
from converge.errors import ValidationError
from converge.orchestration._refs import parse_ref, resolve_path
from converge.protocol.event import Event

__all__ = ["ENDS", "DoneRecord", "RunRecords", "agent_usage", "pass_inputs", "read_records"]

ENDS = ("run.completed", "run.failed", "run.cancelled", "run.interrupted")
"""The events that end a run (``run.waiting`` pauses it)."""


class DoneRecord:
    """A node's pass that finished, as logged."""

    __slots__ = ("event_id", "output", "seq", "status")

    def __init__(self, status: str, output: Any, event_id: str, seq: int) -> None:
        self.status = status
        self.output = output
        self.event_id = event_id
        self.seq = seq


class RunRecords:
    """Everything ``resume`` reads from a run's events."""

    def __init__(self) -> None:
        self.started: Event | None = None
        self.done: dict[tuple[str, int], DoneRecord] = {}
        """Finished passes by (node id, iteration)."""
        self.answers: dict[tuple[str, int, int], Any] = {}
        """Answers by (node id, iteration, pause index; -1: the node's failure)."""
        self.waiting: list[tuple[str, int, int, str]] = []
        """Questions without an answer: (node, iteration, index, question)."""
        self.checkpoints: list[tuple[str, int, float]] = []
        """(label, seq, at) in log order."""
        self.ended: Event | None = None
        """The last ``run.completed``, ``run.failed``, ``run.cancelled`` or ``run.interrupted``
        (None: open)."""
        self.last_start: Event | None = None
        """The last ``run.started`` or ``run.resumed`` when nothing ended or paused the run
        after it: the run is being executed by the owner it names, if that owner lives."""
        self.spent: dict[str, list[int]] = {}
        """Tokens and tool calls used so far, by agent: ``{agent: [tokens, tool calls]}`` (its
        child runs' included; see ``agent_usage``)."""

    @property
    def inputs(self) -> dict[str, Any]:
        """The run's graph inputs."""
        return dict(self.started.data.get("inputs", {})) if self.started else {}


def read_records(events: Sequence[Event]) -> RunRecords:
    """Fold a run's events (in log order) into ``RunRecords``."""
    records = RunRecords()
    asked: dict[tuple[str, int, int], str] = {}
    for ev in events:
        kind, data = ev.kind, ev.data
        if kind == "run.started":
            records.started = records.last_start = ev
        elif kind == "node.done":
            key = (data["node"], int(data["iteration"]))
            records.done[key] = DoneRecord(data["status"], data.get("output"), ev.id, ev.seq)
        elif kind == "node.waiting":
            asked[(data["node"], int(data["iteration"]), int(data["index"]))] = data["question"]
        elif kind == "node.answered":
            records.answers[(data["node"], int(data["iteration"]), int(data["index"]))] = data.get(
                "answer"
            )
        elif kind == "run.checkpoint":
            records.checkpoints.append((data["label"], ev.seq, ev.at))
        elif kind in ENDS:
            records.ended = ev
            records.last_start = None
        elif kind == "run.resumed":
            records.ended = None
            records.last_start = ev
        elif kind == "run.waiting":
            records.ended = records.last_start = None
    records.waiting = [
        (node, iteration, index, question)
        for (node, iteration, index), question in asked.items()
        if (node, iteration, index) not in records.answers and (node, iteration) not in records.done
    ]
    return records


_USAGE_KINDS = frozenset({"node.done", "node.retry", "node.failed", "node.waiting"})


def agent_usage(events: Sequence[Event], run_id: str) -> dict[str, list[int]]:
    """Tokens (in + out) and tool calls each agent used in run ``run_id`` and the runs of its
    subgraph nodes, as its events (in log order) recorded them: ``{agent: [tokens, tool
    calls]}``. An event's usage is charged to the agent its node's ``node.start`` names (the
    node's own: a replacement node's start does not change it)."""
    family = run_id + "/"
    agents: dict[tuple[str, str], str] = {}  # (run, node) -> agent
    spent: dict[str, list[int]] = {}
    for ev in events:
        if ev.subject != run_id and not ev.subject.startswith(family):
            continue
        kind, data = ev.kind, ev.data
        if kind == "node.start":
            if "replaces" not in data:
                agents[(ev.subject, data["node"])] = data.get("agent", "")
        elif kind in _USAGE_KINDS:
            usage = data.get("usage")
            agent = agents.get((ev.subject, data["node"]))
            if usage and agent is not None:
                tally = spent.setdefault(agent, [0, 0])
                tally[0] += int(usage.get("tokens_in", 0)) + int(usage.get("tokens_out", 0))
                tally[1] += int(usage.get("tool_calls", 0))
    return spent


def pass_inputs(events: Sequence[Event]) -> dict[tuple[str, int], dict[str, Any]]:
    """The inputs each pass of a run was given, by (node id, iteration), read back from its
    events (in log order) as the engine made them: each key its ``node.start`` lists, resolved
    against the graph's inputs and the latest output logged before it of the node it reads
    (``MISSING`` when that node has none: skipped, or not run yet). Passes logged before
    ``node.start`` listed its inputs are absent."""
    graph_inputs: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for ev in events:
        kind, data = ev.kind, ev.data
        if kind == "run.started":
            graph_inputs = dict(data.get("inputs") or {})
        elif kind == "node.done":
            skipped = data.get("status") == "skipped"
            outputs[data["node"]] = MISSING if skipped else data.get("output")
        elif kind == "node.start" and "replaces" not in data:
            key = (data["node"], int(data.get("iteration", 1)))
            keys = data.get("inputs")
            if key not in found and isinstance(keys, list):
                found[key] = {k: _input(k, graph_inputs, outputs) for k in keys}
    return found


def _input(key: str, graph_inputs: dict[str, Any], outputs: dict[str, Any]) -> Any:
    """The value of input ``key`` (a reference as written) given what the log holds so far."""
    try:
        ref = parse_ref(key)
    except ValidationError:  # an entry node's inputs are the graph's, under any name
        return graph_inputs.get(key, MISSING)
    if ref.node is not None and ref.node not in outputs and key in graph_inputs:
        return graph_inputs[key]  # an entry node given a graph input named like a reference
    if ref.node is None:
        value = graph_inputs.get(ref.name, MISSING)
    else:
        value = outputs.get(ref.node, MISSING)
    return resolve_path(value, ref.path) if ref.path else value
