"""OpenTelemetry spans from a run's events, as an engine listener.

It is a listener, not code inside the engine.

```python
from converge.observability.otel import OTelListener

async with Engine(store, listeners=[OTelListener()]) as engine:   # the global tracer provider
    await engine.execute(graph, inputs)
```

The engine calls each of its ``listeners`` with every event a run logs, as it logs it
(``Engine(listeners=[...])``). ``OTelListener`` turns them into spans with
``opentelemetry-api`` only; exporting them needs an SDK (the ``otel`` extra:
``opentelemetry-sdk`` and ``opentelemetry-exporter-otlp``), set up by the application or by
``converge run --otel console|otlp`` (``tracer_provider`` below).

- ``run.started`` (or ``run.resumed``) opens the run's span ``converge.run``; ``run.completed``,
  ``run.failed``, ``run.waiting``, ``run.cancelled`` and ``run.interrupted`` end it (an error
  status on failure).
- ``node.start`` opens a child span ``converge.node`` per node pass (attributes
  ``converge.node``, ``converge.agent``, ``converge.iteration``, ``converge.attempt``);
  ``node.call`` (an LLM call, a tool call, an auction round the node recorded with
  ``ctx.record_call``) is a span inside the node's, with the times it recorded;
  ``node.done`` ends it with ``converge.status`` and the pass's usage — ``converge.tokens_in``,
  ``converge.tokens_out``, ``converge.tool_calls``, ``converge.cost``, and the GenAI
  conventions' ``gen_ai.usage.input_tokens``/``output_tokens`` when a model was called (an
  ``LLMAgent`` reports every call's tokens to its node). ``node.failed`` ends it with an error.
- ``bidding.*`` events (an auction's phases) and other events of the run are span events on
  the node span they name, else on the run span.
- Spans start and end at the events' own times (``at``).

**Ids.** The span's trace id is derived from the event log's trace id: the 128 bits of the ULID
when it is a converge id, else the first 128 bits of its sha256. The run span's parent is a
remote span context with that trace id and a span id made of the low 64 bits of the
``run.started`` event's id, so every process that traces the same run lands in the same trace.
Span ids of converge's own spans are the SDK's (the API cannot set them); each span carries the
id of the event that opened it as ``converge.event_id``, and ``converge.run_id`` and
``converge.trace_id``.

``converge run --otel console|otlp`` builds an SDK provider (``tracer_provider``: console to
stderr through a simple processor; OTLP over HTTP/protobuf, batched) and shuts it down (flushes)
when the run ends; without the extra that is ``MissingExtra`` naming it (exit 1). The OTel
spans of calls inside a node: ``converge.llm <model>`` with the GenAI token attributes,
``converge.tool <name>``, ``converge.auction <id>``.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags

from converge.core.ids import _VALUE, is_id
from converge.observability.prometheus import MissingExtra
from converge.protocol.event import Event

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = ["OTelListener", "span_id_of", "trace_id_of", "tracer_provider"]

_log = logging.getLogger(__name__)
_ENDS = {"run.completed": "completed", "run.failed": "failed", "run.waiting": "waiting"}
_ENDS["run.cancelled"] = "cancelled"
_ENDS["run.interrupted"] = "interrupted"
_USAGE = ("tokens_in", "tokens_out", "tool_calls", "cost")


def _bits(value: str) -> int:
    """The 128 bits of a converge id (a ULID), else the first 128 bits of its sha256."""
    if is_id(value):
        n = 0
        for ch in value:
            n = (n << 5) | _VALUE[ch]
        if n:
            return n & ((1 << 128) - 1)
    return int.from_bytes(hashlib.sha256(value.encode()).digest()[:16], "big") or 1


def trace_id_of(trace_id: str) -> int:
    """The OpenTelemetry trace id (128 bits) of a converge trace or run id."""
    return _bits(trace_id)


def span_id_of(event_id: str) -> int:
    """A 64-bit span id derived from an event id (its low 64 bits; never 0)."""
    return (_bits(event_id) & ((1 << 64) - 1)) or 1


class OTelListener:
    """Turns a run's events into OpenTelemetry spans (see the module doc).

    Args:
        tracer_provider: where spans go (default: the global provider).
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self.tracer: Tracer = trace.get_tracer("converge", tracer_provider=tracer_provider)
        self._runs: dict[str, Span] = {}
        self._nodes: dict[tuple[str, str, Any], Span] = {}

    def __call__(self, event: Event) -> None:
        """Handle one event (the engine's listener signature)."""
        run_id = event.subject or event.trace_id
        kind = event.kind
        at = _ns(event.at)
        if kind in ("run.started", "run.resumed"):
            self._open_run(event, run_id, at)
        elif kind == "node.start":
            self._open_node(event, run_id, at)
        elif kind in ("node.done", "node.failed", "node.waiting"):
            self._close_node(event, run_id, at)
        elif kind == "node.call":
            self._call(event, run_id)
        elif kind in _ENDS:
            self._close_run(event, run_id, at)
        else:
            span = self._nodes.get(_key(run_id, event.data)) or self._runs.get(run_id)
            if span is not None:
                span.add_event(kind, _scalars(event.data), timestamp=at)

    def _open_run(self, event: Event, run_id: str, at: int) -> None:
        parent = SpanContext(
            trace_id=trace_id_of(event.trace_id),
            span_id=span_id_of(event.parent_id or event.id),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
        context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
        graph = event.data.get("graph")
        attributes: dict[str, Any] = {
            "converge.run_id": run_id,
            "converge.trace_id": event.trace_id,
            "converge.event_id": event.id,
            "converge.resumed": event.kind == "run.resumed",
        }
        if graph is not None:
            attributes["converge.graph"] = str(graph)
        self._runs[run_id] = self.tracer.start_span(
            f"converge.run {graph}" if graph else "converge.run",
            context=context,
            attributes=attributes,
            start_time=at,
        )

    def _open_node(self, event: Event, run_id: str, at: int) -> None:
        run = self._runs.get(run_id)
        if run is None:
            return
        data = event.data
        attributes = {
            "converge.run_id": run_id,
            "converge.event_id": event.id,
            **_scalars({k: data.get(k) for k in ("node", "agent", "iteration", "attempt")}),
        }
        key = _key(run_id, data)
        earlier = self._nodes.pop(key, None)
        if earlier is not None:  # a retry: the attempt before it ended without a node.done
            earlier.set_status(Status(StatusCode.ERROR, "retried"))
            earlier.end(end_time=at)
        self._nodes[key] = self.tracer.start_span(
            f"converge.node {data.get('node')}",
            context=trace.set_span_in_context(run),
            attributes={k: v for k, v in attributes.items() if v is not None},
            start_time=at,
        )

    def _close_node(self, event: Event, run_id: str, at: int) -> None:
        span = self._nodes.pop(_key(run_id, event.data), None)
        if span is None:
            return
        data = event.data
        status = data.get("status") or event.kind.removeprefix("node.")
        span.set_attribute("converge.status", str(status))
        usage = data.get("usage") or {}
        for name in _USAGE:
            if usage.get(name):
                span.set_attribute(f"converge.{name}", usage[name])
        if usage.get("tokens_in") or usage.get("tokens_out"):
            span.set_attribute("gen_ai.usage.input_tokens", int(usage.get("tokens_in") or 0))
            span.set_attribute("gen_ai.usage.output_tokens", int(usage.get("tokens_out") or 0))
        if event.kind == "node.failed" or data.get("error"):
            span.set_status(Status(StatusCode.ERROR, str(data.get("error"))))
        elif event.kind == "node.waiting":
            span.add_event("node.waiting", _scalars(data), timestamp=at)
        span.end(end_time=at)

    def _call(self, event: Event, run_id: str) -> None:
        """A call the node made (LLM, tool, auction): a span inside the node's, with the times
        the node recorded."""
        data = event.data
        parent = self._nodes.get(_key(run_id, data)) or self._runs.get(run_id)
        if parent is None:
            return
        call, name = str(data.get("call", "call")), str(data.get("name", ""))
        attributes = {f"converge.{k}": v for k, v in _scalars(data).items()}
        if call == "llm":
            attributes["gen_ai.request.model"] = name
            for ours, theirs in (("tokens_in", "input"), ("tokens_out", "output")):
                if data.get(ours) is not None:
                    attributes[f"gen_ai.usage.{theirs}_tokens"] = int(data[ours])
        span = self.tracer.start_span(
            f"converge.{call} {name}",
            context=trace.set_span_in_context(parent),
            attributes=attributes,
            start_time=_ns(float(data.get("started_at", event.at))),
        )
        if data.get("error"):
            span.set_status(Status(StatusCode.ERROR, str(data["error"])))
        span.end(end_time=_ns(float(data.get("finished_at", event.at))))

    def _close_run(self, event: Event, run_id: str, at: int) -> None:
        for key in [k for k in self._nodes if k[0] == run_id]:
            self._nodes.pop(key).end(end_time=at)
        span = self._runs.pop(run_id, None)
        if span is None:
            return
        span.set_attribute("converge.status", _ENDS[event.kind])
        if event.kind == "run.failed":
            span.set_status(Status(StatusCode.ERROR, str(event.data.get("error"))))
        span.end(end_time=at)


def tracer_provider(exporter: str) -> Any:
    """An SDK ``TracerProvider`` exporting to ``console`` (stderr) or ``otlp``.

    OTLP goes over HTTP/protobuf to ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; default ``http://localhost:4318``). Call
    ``shutdown()`` on it to flush.

    Raises:
        MissingExtra: the SDK or the exporter is not installed (the ``otel`` extra).
        ValueError: an exporter other than ``console`` or ``otlp``.
    """
    if exporter not in ("console", "otlp"):
        raise ValueError(f"the exporter is console or otlp, not {exporter!r}")
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
    except ImportError as exc:
        raise MissingExtra("opentelemetry-sdk", "otel", "OpenTelemetry export") from exc
    provider = SDKTracerProvider(resource=Resource.create({"service.name": "converge"}))
    if exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        return provider
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise MissingExtra("opentelemetry-exporter-otlp", "otel", "OTLP export") from exc
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def _key(run_id: str, data: dict[str, Any]) -> tuple[str, str, Any]:
    return (run_id, str(data.get("node")), data.get("iteration"))


def _ns(at: float) -> int:
    return int(at * 1_000_000_000)


def _scalars(data: dict[str, Any]) -> dict[str, Any]:
    """The attribute-safe part of an event's data (scalars; the rest is in the log)."""
    return {
        f"converge.{k}": v
        for k, v in data.items()
        if isinstance(v, (str, bool, int, float)) and not isinstance(v, bytes)
    }
