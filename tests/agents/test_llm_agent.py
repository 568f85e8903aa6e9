"""``LLMAgent`` against the local server through each provider's SDK: prompts, streaming to
``ctx.emit``, tool rounds, structured output, retries, timeouts, and usage in the trace."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from converge.agents.llm import (
    CallPolicy,
    LLMAgent,
    LLMError,
    OpenAIProvider,
    PriceTable,
    ResponseSchemaError,
    ToolCall,
    ToolRoundsExceeded,
)
from converge.agents.llm.testing import FakeLLMServer, Reply
from converge.core.tools import FunctionTool, ToolRegistry
from converge.errors import ValidationError
from converge.orchestration import Engine, Graph, loads_graph
from converge.store import MemoryStore
from tests.agents._llm_helpers import Ctx, Sleeps
from tests.loop_clock import LoopClock, until

SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"enum": ["ok", "bad"]}, "score": {"type": "integer"}},
    "required": ["verdict", "score"],
}


def agent(provider: Any, sleeps: Sleeps | None = None, **options: Any) -> LLMAgent:
    return LLMAgent(provider, sleep=sleeps or Sleeps(), **options)


async def test_run_renders_the_prompt_and_reports_tokens_and_cost(
    provider: Any, server: FakeLLMServer, ctx: Ctx
) -> None:
    server.script(Reply(text="Looks fine.", tokens_in=1000, tokens_out=200))
    prices = PriceTable({provider.model: (1.0, 2.0)})
    reviewer = agent(
        provider, system="You review code.", prompt="Review {code.output}", prices=prices
    )
    out = await reviewer.run({"code.output": "x = 1"}, ctx)
    assert out == "Looks fine."
    assert ctx.usage == {"tokens_in": 1000, "tokens_out": 200, "tool_calls": 0, "cost": 0.0014}
    body = server.requests[-1].body
    text = str(body["messages"])
    assert "Review x = 1" in text
    assert "You review code." in str(body.get("system", "")) + text


async def test_streamed_chunks_reach_ctx_emit_in_order(
    provider: Any, server: FakeLLMServer, ctx: Ctx
) -> None:
    server.script(Reply(text="alpha beta gamma delta epsilon"))
    out = await agent(provider, stream=True).run({"q": "go"}, ctx)
    assert ctx.chunks == ["alpha ", "beta ", "gamma ", "delta ", "epsilon"]
    assert out == "alpha beta gamma delta epsilon"


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_calls_run_and_their_results_go_back_to_the_model(
    provider: Any, server: FakeLLMServer, ctx: Ctx, stream: bool
) -> None:
    tools = ToolRegistry()
    seen: list[tuple[int, int]] = []

    @tools.register
    def add(a: int, b: int) -> int:
        "Add two integers."
        seen.append((a, b))
        return a + b

    server.script(
        Reply(
            text="",
            tool_calls=(
                ToolCall(id="c1", name="add", arguments={"a": 2, "b": 3}),
                ToolCall(id="c2", name="add", arguments={"a": "x"}),  # bad: reported back
            ),
            tokens_in=20,
            tokens_out=8,
        ),
        Reply(text="2 + 3 = 5", tokens_in=40, tokens_out=6),
    )
    out = await agent(provider, tools=tools, stream=stream).run({"q": "2+3?"}, ctx)
    assert out == "2 + 3 = 5"
    assert seen == [(2, 3)]
    assert ctx.usage["tool_calls"] == 2
    assert (ctx.usage["tokens_in"], ctx.usage["tokens_out"]) == (60, 14)
    last = str(server.requests[-1].body["messages"])
    assert "'5'" in last
    assert "error: ValidationError" in last
    assert len(server.requests) == 2


async def test_tool_rounds_are_bounded(provider: Any, server: FakeLLMServer, ctx: Ctx) -> None:
    call = Reply(text="", tool_calls=(ToolCall(id="c", name="now", arguments={}),))
    server.default = call

    def now() -> str:
        "The time."
        return "noon"

    with pytest.raises(ToolRoundsExceeded) as caught:
        await agent(provider, tools=[now], max_tool_rounds=2).run({"q": "?"}, ctx)
    assert caught.value.rounds == 2
    assert len(server.requests) == 3
    assert ctx.usage["tool_calls"] == 2


async def test_structured_output_is_decoded_and_checked(
    provider: Any, server: FakeLLMServer, ctx: Ctx
) -> None:
    server.script(Reply(text='{"verdict": "ok", "score": 9}'))
    out = await agent(provider, response_schema=SCHEMA).run({"q": "rate"}, ctx)
    assert out == {"verdict": "ok", "score": 9}
    assert len(server.requests) == 1


async def test_a_bad_structured_answer_is_retried_once_with_the_reason(
    provider: Any, server: FakeLLMServer, ctx: Ctx
) -> None:
    server.script(
        Reply(text='{"verdict": "meh", "score": 9}', tokens_in=10, tokens_out=5),
        Reply(text='{"verdict": "bad", "score": 2}', tokens_in=30, tokens_out=5),
    )
    out = await agent(provider, response_schema=SCHEMA).run({"q": "rate"}, ctx)
    assert out == {"verdict": "bad", "score": 2}
    retry = str(server.requests[-1].body["messages"])
    assert "'meh' is not one of" in retry
    assert "does not follow the required JSON schema" in retry
    assert ctx.usage["tokens_in"] == 40  # both calls counted


async def test_a_structured_answer_bad_twice_is_a_typed_error(
    provider: Any, server: FakeLLMServer, ctx: Ctx
) -> None:
    server.script(Reply(text="Sure! Here it is"), Reply(text='{"verdict": "ok"}'))
    with pytest.raises(ResponseSchemaError) as caught:
        await agent(provider, response_schema=SCHEMA).run({"q": "rate"}, ctx)
    assert caught.value.reason == "$: missing required property 'score'"
    assert caught.value.content == '{"verdict": "ok"}'
    assert isinstance(caught.value, LLMError)
    assert "not JSON" in str(server.requests[-1].body["messages"])


async def test_a_struct_type_as_response_schema(server: FakeLLMServer, ctx: Ctx) -> None:
    class Verdict(msgspec.Struct):
        verdict: str
        score: int

    provider = OpenAIProvider("gpt-4o-mini", api_key="k", base_url=server.openai_url)
    server.script(
        Reply(text='{"verdict": "ok", "score": "x"}'), Reply(text='{"verdict": "ok", "score": 3}')
    )
    out = await agent(provider, response_schema=Verdict).run({"q": "rate"}, ctx)
    assert out == Verdict("ok", 3)
    assert "Expected `int`" in str(server.requests[-1].body["messages"])
    sent = server.requests[0].body["response_format"]["json_schema"]["schema"]
    assert "$ref" in sent or sent.get("type") == "object"
    await provider.aclose()


async def test_a_rate_limit_is_retried_after_a_backoff(
    provider: Any, server: FakeLLMServer, ctx: Ctx, sleeps: Sleeps
) -> None:
    server.script(Reply(status=429), Reply(status=503), Reply(text="done"))
    policy = CallPolicy(attempts=3, backoff=0.5, multiplier=3.0)
    out = await agent(provider, sleeps, policy=policy).run({"q": "go"}, ctx)
    assert out == "done"
    assert sleeps.waits == [0.5, 1.5]
    assert len(server.requests) == 3


async def test_5xx_until_the_attempts_run_out_is_an_llm_error(
    provider: Any, server: FakeLLMServer, ctx: Ctx, sleeps: Sleeps
) -> None:
    server.default = Reply(status=500)
    with pytest.raises(LLMError) as caught:
        await agent(provider, sleeps, policy=CallPolicy(attempts=4, max_backoff=2.0)).run({}, ctx)
    assert caught.value.status == 500
    assert caught.value.retryable is True
    assert sleeps.waits == [1.0, 2.0, 2.0]
    assert len(server.requests) == 4


async def test_a_client_error_is_not_retried(
    provider: Any, server: FakeLLMServer, ctx: Ctx, sleeps: Sleeps
) -> None:
    server.script(Reply(status=400))
    with pytest.raises(LLMError, match="HTTP 400"):
        await agent(provider, sleeps).run({}, ctx)
    assert sleeps.waits == []


async def test_a_call_past_its_timeout_is_retried_then_fails(
    provider: Any, server: FakeLLMServer, ctx: Ctx, sleeps: Sleeps, loop_clock: LoopClock
) -> None:
    # A call's time runs out when the test moves the loop's clock, once the server holds that
    # call (its answer would take 10 minutes): an answer in time has all the time it needs.
    policy = CallPolicy(attempts=2, timeout=60.0)

    async def time_out_call(n: int) -> None:
        await until(lambda: len(server.requests) == n)
        loop_clock.advance(60)

    server.script(Reply(delay=600), Reply(text="in time"))
    run = asyncio.ensure_future(agent(provider, sleeps, policy=policy).run({}, ctx))
    await time_out_call(1)
    assert await run == "in time"
    assert len(server.requests) == 2
    server.script(Reply(delay=600), Reply(delay=600))
    run = asyncio.ensure_future(agent(provider, sleeps, policy=policy).run({}, ctx))
    await time_out_call(3)
    await time_out_call(4)
    with pytest.raises(LLMError, match=r"no answer within 60\.0 s") as caught:
        await run
    assert isinstance(caught.value.__cause__, TimeoutError)


async def test_an_empty_answer_is_retried_then_a_typed_error(
    provider: Any, server: FakeLLMServer, ctx: Ctx, sleeps: Sleeps
) -> None:
    server.script(Reply(text=""), Reply(text="second try"))
    assert await agent(provider, sleeps).run({}, ctx) == "second try"
    server.default = Reply(text="")
    with pytest.raises(LLMError, match="empty answer"):
        await agent(provider, sleeps, policy=CallPolicy(attempts=2)).run({}, ctx)


async def test_a_malformed_body_fails_the_run(
    provider: Any, server: FakeLLMServer, ctx: Ctx
) -> None:
    server.script(Reply(raw="<html>bad gateway</html>"))
    with pytest.raises(LLMError, match="malformed"):
        await agent(provider).run({}, ctx)


async def test_a_prompt_naming_a_missing_input_says_which(provider: Any, ctx: Ctx) -> None:
    with pytest.raises(ValidationError, match=r"\{topic\}.*inputs: subject"):
        await agent(provider, prompt="Write about {topic}").run({"subject": "tides"}, ctx)


async def test_cost_and_tokens_land_in_the_runs_trace(server: FakeLLMServer) -> None:
    provider = OpenAIProvider("gpt-4o-mini", api_key="k", base_url=server.openai_url)
    server.script(Reply(text="draft", tokens_in=2000, tokens_out=1000))
    server.script(Reply(text="FINAL", tokens_in=3000, tokens_out=500))
    writer = LLMAgent(provider, prompt="Write about {topic}")
    editor = LLMAgent(provider, prompt="Edit: {write.output}")
    graph = (
        Graph("article", agents={"writer": writer, "editor": editor})
        .add_node("write", "writer", inputs=["topic"])
        .add_node("edit", "editor", inputs=["write.output"])
        .connect("write", "edit")
    )
    async with MemoryStore() as store:
        engine = Engine(store)
        result = await engine.execute(graph, {"topic": "tides"})
        assert result.output == "FINAL"
        trace = await engine.trace(result.run_id)
    rows = {n["node_id"]: n for n in trace["nodes"]}
    # gpt-4o-mini: $0.15 in, $0.60 out per million tokens
    assert (rows["write"]["tokens_in"], rows["write"]["tokens_out"]) == (2000, 1000)
    assert rows["write"]["cost"] == pytest.approx(0.0009)
    assert rows["edit"]["cost"] == pytest.approx(0.00075)
    assert trace["total_tokens"] == 6500
    assert trace["total_cost"] == pytest.approx(0.00165)
    assert "Edit: draft" in str(server.requests[-1].body["messages"])
    await provider.aclose()


async def test_kind_llm_in_yaml(server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_LLM_KEY", "sk-local")
    graph = loads_graph(
        f"""
name: yaml_llm
agents:
  rater:
    kind: llm
    provider: compatible
    model: llama3.2
    base_url: {server.openai_url}
    api_key_env: LOCAL_LLM_KEY
    system: You rate things.
    prompt: "Rate {{thing}}"
    temperature: 0
    max_tokens: 100
    response_schema: {{type: object, required: [score], properties: {{score: {{type: integer}}}}}}
    stream: true
    prices: {{llama3.2: [1.0, 1.0]}}
nodes:
  - {{id: rate, agent: rater, inputs: [thing]}}
"""
    )
    server.script(Reply(text='{"score": 7}', tokens_in=500_000, tokens_out=500_000))
    async with MemoryStore() as store:
        engine = Engine(store)
        result = await engine.execute(graph, {"thing": "tea"})
        trace = await engine.trace(result.run_id)
    rater = graph.agents["rater"]
    assert isinstance(rater, LLMAgent)
    await rater.aclose()
    assert result.output == {"score": 7}
    assert trace["total_cost"] == pytest.approx(1.0)
    sent = server.requests[-1]
    assert sent.headers["authorization"] == "Bearer sk-local"
    assert sent.body["max_tokens"] == 100
    assert "Rate tea" in str(sent.body["messages"])


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ("provider: gemini\n    model: x", "provider is one of"),
        ("provider: openai", "needs `model`"),
        ("provider: compatible\n    model: m", "needs `base_url`"),
        ("provider: openai\n    model: m\n    api_key_env: NO_SUCH_KEY_X", "NO_SUCH_KEY_X"),
        ("provider: openai\n    model: m\n    temperature: hot", "temperature cannot be"),
        ("provider: openai\n    model: m\n    colour: red", "unknown option 'colour'"),
    ],
)
def test_kind_llm_mistakes_are_located(options: str, words: str) -> None:
    text = f"name: g\nagents:\n  x:\n    kind: llm\n    {options}\nnodes: [{{id: n, agent: x}}]\n"
    with pytest.raises(ValidationError, match=words) as caught:
        loads_graph(text)
    assert caught.value.line == 4
    assert (caught.value.field or "").startswith("agents.x")


def test_call_policy_backoff_grows_and_is_capped() -> None:
    policy = CallPolicy(backoff=1.0, multiplier=2.0, max_backoff=5.0)
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    with pytest.raises(ValidationError):
        CallPolicy(attempts=0)


async def test_cancellation_is_not_swallowed(
    provider: Any, server: FakeLLMServer, ctx: Ctx
) -> None:
    server.script(Reply(delay=600))
    task = asyncio.create_task(agent(provider).run({}, ctx))
    await until(lambda: len(server.requests) == 1)  # cancelled while the call is under way
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_many_llm_nodes_run_concurrently_in_a_graph() -> None:
    # The engine may take a node's first step in its own task (an eager start); the SDK's
    # cancel scopes and the call timeout must still live in the node's task.
    from converge.orchestration import ExecutionConfig

    with FakeLLMServer(latency=0.05) as server:
        provider = OpenAIProvider("gpt-4o-mini", api_key="k", base_url=server.openai_url)
        llm = LLMAgent(provider, prompt="{text}", policy=CallPolicy(timeout=10.0))
        graph = Graph(
            "fan", agents={"llm": llm}, execution=ExecutionConfig(max_concurrent_agents=10)
        )
        for i in range(30):
            graph.add_node(f"n{i}", "llm", inputs=["text"])
        async with MemoryStore() as store:
            engine = Engine(store)
            result = await engine.execute(graph, {"text": "hi"})
            trace = await engine.trace(result.run_id)
        await llm.aclose()
    assert [n["status"] for n in trace["nodes"]] == ["success"] * 30
    assert trace["total_tokens"] == 30 * 15


async def test_tool_calls_go_through_the_safe_path(
    provider: Any, server: FakeLLMServer, ctx: Ctx
) -> None:
    from converge.policy.safety import ActionPolicy, ResourceLimits
    from converge.runtime.tools import SafeTools

    ran: list[str] = []

    def lookup(key: str) -> str:
        "Look a key up."
        ran.append(key)
        return key.upper()

    def wipe() -> str:
        "Delete everything."
        ran.append("wipe")
        return "gone"

    safe = SafeTools(
        [FunctionTool(lookup), FunctionTool(wipe)],
        policy=ActionPolicy(deny_tools=frozenset({"wipe"})),
        limits=ResourceLimits(max_tool_calls=1),
    )
    server.script(
        Reply(
            text="",
            tool_calls=(
                ToolCall(id="c1", name="wipe", arguments={}),  # denied by the policy
                ToolCall(id="c2", name="lookup", arguments={"key": "a"}),
                ToolCall(id="c3", name="lookup", arguments={"key": "b"}),  # over the limit
            ),
        ),
        Reply(text="done"),
    )
    assert await agent(provider, tools=safe).run({"q": "?"}, ctx) == "done"
    assert ran == ["a"]
    offered = [
        t["function"]["name"] if "function" in t else t["name"]
        for t in server.requests[0].body.get("tools", [])
    ]
    assert offered == ["lookup"]  # a denied tool is not even offered
    last = str(server.requests[-1].body["messages"])
    assert last.count("error: ToolCallRefused") == 2


async def test_a_prompt_over_its_token_budget_is_refused_before_any_call(
    provider: Any, server: FakeLLMServer, ctx: Ctx
) -> None:
    from converge.agents.llm import PromptTooLong

    long_question = "word " * 400  # about 500 tokens
    with pytest.raises(PromptTooLong) as caught:
        await agent(provider, max_prompt_tokens=100).run({"q": long_question}, ctx)
    assert caught.value.budget == 100 and caught.value.tokens > 100
    assert server.requests == []  # nothing was sent
    with pytest.raises(ValidationError, match="max_prompt_tokens"):
        agent(provider, max_prompt_tokens=0)
