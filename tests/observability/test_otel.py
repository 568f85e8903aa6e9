"""OpenTelemetry spans from a run's events, exported through the SDK's in-memory exporter."""

from __future__ import annotations

import builtins
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from converge.agents.llm import LLMAgent, OpenAIProvider
from converge.agents.llm.testing import FakeLLMServer, Reply
from converge.observability import MissingExtra
from converge.observability.otel import OTelListener, trace_id_of, tracer_provider
from converge.orchestration import Engine, Graph
from converge.store import MemoryStore

RUN = "01J9ZQ4B5C6D7E8F9G0H1J2K3M"


@pytest.fixture
def spans() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter, provider
    provider.shutdown()


def _upper(inputs: dict[str, Any]) -> str:
    return str(inputs["text"]).upper()


def _count(inputs: dict[str, Any]) -> int:
    return len(inputs["up.output"])


def _boom(inputs: dict[str, Any]) -> int:
    raise RuntimeError("broke")


async def test_a_run_is_a_root_span_with_one_child_per_node_pass(spans: Any) -> None:
    exporter, provider = spans
    graph = (
        Graph("shout", agents={"up": _upper, "count": _count})
        .add_node("up", "up", inputs=["text"])
        .add_node("count", "count", inputs=["up.output"])
        .connect("up", "count")
    )
    async with MemoryStore() as store:
        engine = Engine(store, id_factory=lambda: RUN, listeners=[OTelListener(provider)])
        result = await engine.execute(graph, {"text": "hi"})
        started = (await store.read(trace_id=RUN, kinds=["run.started"]))[0]
    assert result.output == 2
    found = {s.name: s for s in exporter.get_finished_spans()}
    assert set(found) == {"converge.run shout", "converge.node up", "converge.node count"}
    run = found["converge.run shout"]
    # the trace id is the run id's 128 bits; the root's parent is derived from run.started
    assert run.context.trace_id == trace_id_of(RUN) == int.from_bytes(_ulid_bytes(RUN), "big")
    assert run.parent is not None and run.parent.is_remote
    assert run.parent.span_id == trace_id_of(started.id) & (2**64 - 1)
    assert run.attributes["converge.run_id"] == RUN
    assert run.attributes["converge.status"] == "completed"
    for name in ("up", "count"):
        node = found[f"converge.node {name}"]
        assert node.context.trace_id == run.context.trace_id
        assert node.parent is not None and node.parent.span_id == run.context.span_id
        assert node.attributes["converge.node"] == name
        assert node.attributes["converge.agent"] == name
        assert node.attributes["converge.status"] == "completed"
        assert node.start_time <= node.end_time
    assert found["converge.node up"].end_time <= found["converge.node count"].start_time


async def test_a_failed_node_and_run_carry_an_error_status(spans: Any) -> None:
    exporter, provider = spans
    graph = Graph("bad", agents={"boom": _boom}).add_node("boom", "boom")
    async with MemoryStore() as store:
        engine = Engine(store, listeners=[OTelListener(provider)])
        with pytest.raises(Exception, match="broke"):
            await engine.execute(graph, {})
    found = {s.name: s for s in exporter.get_finished_spans()}
    assert found["converge.node boom"].status.status_code is StatusCode.ERROR
    assert found["converge.run bad"].status.status_code is StatusCode.ERROR
    assert found["converge.run bad"].attributes["converge.status"] == "failed"


async def test_an_llm_node_span_has_the_calls_tokens_and_cost(spans: Any) -> None:
    exporter, provider = spans
    with FakeLLMServer() as server:
        server.script(Reply(text="a haiku", tokens_in=2000, tokens_out=1000))
        llm = OpenAIProvider("gpt-4o-mini", api_key="k", base_url=server.openai_url)
        writer = LLMAgent(llm, prompt="Write about {topic}")
        graph = Graph("poem", agents={"writer": writer}).add_node(
            "write", "writer", inputs=["topic"]
        )
        async with MemoryStore() as store:
            engine = Engine(store, listeners=[OTelListener(provider)])
            result = await engine.execute(graph, {"topic": "tides"})
        await llm.aclose()
    assert result.output == "a haiku"
    [node] = [s for s in exporter.get_finished_spans() if s.name == "converge.node write"]
    assert node.attributes["gen_ai.usage.input_tokens"] == 2000
    assert node.attributes["gen_ai.usage.output_tokens"] == 1000
    assert node.attributes["converge.tokens_in"] == 2000
    assert node.attributes["converge.cost"] == pytest.approx(0.0009)


async def test_llm_and_tool_calls_are_spans_inside_their_node(spans: Any) -> None:
    from converge.agents.llm import ToolCall

    exporter, provider = spans

    def lookup(key: str) -> str:
        "Look a key up."
        return key.upper()

    with FakeLLMServer() as server:
        server.script(
            Reply(
                text="",
                tool_calls=(ToolCall(id="c1", name="lookup", arguments={"key": "tide"}),),
                tokens_in=10,
                tokens_out=3,
            ),
            Reply(text="TIDE", tokens_in=20, tokens_out=2),
        )
        llm = OpenAIProvider("gpt-4o-mini", api_key="k", base_url=server.openai_url)
        writer = LLMAgent(llm, prompt="Look up {topic}", tools=[lookup])
        graph = Graph("look", agents={"writer": writer}).add_node(
            "look", "writer", inputs=["topic"]
        )
        async with MemoryStore() as store:
            engine = Engine(store, listeners=[OTelListener(provider)])
            result = await engine.execute(graph, {"topic": "tide"})
            calls = [
                e.data for e in await store.read(trace_id=result.run_id) if e.kind == "node.call"
            ]
        await llm.aclose()
    assert result.output == "TIDE"
    assert [(c["call"], c["name"]) for c in calls] == [
        ("llm", "gpt-4o-mini"),
        ("tool", "lookup"),
        ("llm", "gpt-4o-mini"),
    ]
    finished = exporter.get_finished_spans()
    [node] = [s for s in finished if s.name == "converge.node look"]
    children = [
        s for s in finished if s.parent is not None and s.parent.span_id == node.context.span_id
    ]
    assert sorted(s.name for s in children) == [
        "converge.llm gpt-4o-mini",
        "converge.llm gpt-4o-mini",
        "converge.tool lookup",
    ]
    first = min(
        (s for s in children if s.name.startswith("converge.llm")), key=lambda s: s.start_time
    )
    assert first.attributes["gen_ai.usage.input_tokens"] == 10
    assert all(node.start_time <= s.start_time <= s.end_time <= node.end_time for s in children)


def test_a_trace_id_that_is_not_an_id_is_hashed_stably() -> None:
    assert trace_id_of("my-trace") == trace_id_of("my-trace") != trace_id_of("other")
    assert 0 < trace_id_of("my-trace") < 2**128


def test_a_missing_sdk_names_the_otel_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = builtins.__import__

    def no_sdk(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("opentelemetry.sdk"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    for mod in [m for m in sys.modules if m.startswith("opentelemetry.sdk")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", no_sdk)
    with pytest.raises(MissingExtra, match=r"converge-agents\[otel\]") as caught:
        tracer_provider("console")
    assert caught.value.extra == "otel"


def _ulid_bytes(value: str) -> bytes:
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    n = 0
    for ch in value:
        n = n * 32 + alphabet.index(ch)
    return n.to_bytes(17, "big")[1:]
