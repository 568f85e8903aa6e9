"""Replay: a run's state re-derived from its events, then checked.

The state is checked against what the engine recorded.

``replay(events, run_id, until=seq)`` folds the run's own events (those whose subject is the
run id; a subgraph's child run is replayed on its own id) up to ``seq`` into the state the run
had at that point: the run's status, each node pass's status and each node's latest output.
On the whole log it also checks the engine's records against each other and reports every
difference:

- ``run.completed``'s ``output`` against the node outputs the ``node.done`` events hold (the
  run's output is its sole sink's output, or ``{sink id: output}``: a dict keyed by node ids is
  checked key by key, any other value must equal the output of some node that completed);
- each ``node.done`` / ``node.failed`` against the pass the §8.1 trace reports for it;
- a run that ended ``completed`` with a pass still ``running`` or ``failed``.

The log holds no graph, so replay cannot tell which nodes are sinks. Values that differ by ``==``
are compared again by their MessagePack bytes: runs store no NaN now, but a log written before
may hold one, and a NaN read back equals nothing. ``converge replay RUN [--until SEQ]`` exits 1
on any difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from converge.orchestration.trace import trace_of
from converge.protocol.event import Event

__all__ = ["ReplayReport", "replay"]

_RUN_STATUS = {
    "run.started": "running",
    "run.resumed": "running",
    "run.waiting": "waiting",
    "run.completed": "completed",
    "run.failed": "failed",
    "run.cancelled": "cancelled",
    "run.interrupted": "interrupted",
}
_TRACE_STATUS = {"completed": "success"}


class ReplayReport(msgspec.Struct, frozen=True, kw_only=True):
    """A run's state as re-derived from its log, and how it compares with the records."""

    run_id: str
    """The run replayed."""
    until: int | None
    """The last seq taken (None: the whole log)."""
    last_seq: int
    """The seq of the last event of the run that was folded (0: none)."""
    status: str
    """The run's status at that point: running, waiting, completed, failed, cancelled or
    interrupted."""
    nodes: dict[str, str]
    """Each node pass's status by ``node#iteration`` (``node.done`` status, ``failed``,
    ``waiting`` or ``running``)."""
    outputs: dict[str, Any]
    """Each node's latest output by node id (from ``node.done`` / ``node.replaced``)."""
    output: Any = None
    """The output ``run.completed`` recorded (None before or without it)."""
    differences: list[str] = msgspec.field(default_factory=list)
    """Where the re-derived state and the engine's records disagree (empty: they agree)."""

    @property
    def ok(self) -> bool:
        """Whether nothing disagrees."""
        return not self.differences


def replay(events: Sequence[Event], run_id: str, *, until: int | None = None) -> ReplayReport:
    """Re-derive run ``run_id``'s state from the events of its trace (log order)."""
    own = [e for e in events if e.subject == run_id and (until is None or e.seq <= until)]
    status = "unknown"
    nodes: dict[str, str] = {}
    outputs: dict[str, Any] = {}
    done_status: dict[str, str] = {}
    output: Any = None
    completed = False
    for ev in own:
        kind, data = ev.kind, ev.data
        if kind in _RUN_STATUS:
            status = _RUN_STATUS[kind]
            if kind == "run.completed":
                output, completed = data.get("output"), True
            continue
        if not kind.startswith("node."):
            continue
        key = f"{data.get('node', '')}#{int(data.get('iteration', 0))}"
        if kind == "node.start":
            nodes[key] = "running"
        elif kind == "node.done":
            nodes[key] = done_status[key] = str(data.get("status", ""))
            outputs[str(data.get("node", ""))] = data.get("output")
        elif kind == "node.replaced":
            nodes[key] = "completed"
            outputs[str(data.get("node", ""))] = data.get("output")
        elif kind == "node.failed":
            nodes[key] = done_status[key] = "failed"
        elif kind == "node.waiting":
            nodes[key] = "waiting"
    differences: list[str] = []
    if until is None:
        differences += _check_trace(own, run_id, done_status)
        if completed:
            differences += _check_output(output, outputs)
            stuck = sorted(k for k, s in nodes.items() if s in ("running", "failed"))
            if stuck:
                differences.append(f"the run completed with passes {', '.join(stuck)} unfinished")
    return ReplayReport(
        run_id=run_id,
        until=until,
        last_seq=own[-1].seq if own else 0,
        status=status,
        nodes=nodes,
        outputs=outputs,
        output=output,
        differences=differences,
    )


def _check_output(output: Any, outputs: dict[str, Any]) -> list[str]:
    if isinstance(output, dict) and output and set(output) <= set(outputs):
        return [
            f"run.completed output[{node!r}] = {value!r}, but node.done recorded {outputs[node]!r}"
            for node, value in output.items()
            if not _same(outputs[node], value)
        ]
    if any(_same(value, output) for value in outputs.values()):
        return []
    return [f"run.completed output {output!r} is no completed node's output"]


def _same(a: Any, b: Any) -> bool:
    """Whether two recorded values are the same data. A NaN (which runs no longer store, but
    older logs may hold) equals nothing, not even itself: compared by its bytes."""
    return bool(a == b) or _canonical.encode(a) == _canonical.encode(b)


_canonical = msgspec.msgpack.Encoder(order="sorted")


def _check_trace(own: list[Event], run_id: str, done_status: dict[str, str]) -> list[str]:
    trace = trace_of(own, run_id)
    listed = {f"{n['node_id']}#{n['iteration']}": n["status"] for n in trace["nodes"]}
    out = []
    for key, status in sorted(done_status.items()):
        expected = _TRACE_STATUS.get(status, status)
        if key not in listed:
            out.append(f"node.done for {key} ({status}) is missing from the trace")
        elif listed[key] != expected:
            out.append(f"{key}: node.done says {status}, the trace says {listed[key]}")
    return out
