"""Per-agent limits count per agent over the whole run: every node, loop pass, retry and
subgraph run of it, and what its log holds when it is resumed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from converge.orchestration import (
    MISSING,
    Engine,
    ExecutionConfig,
    Graph,
    GraphConfig,
    RetryPolicy,
    RunFailed,
    RunStatus,
    Services,
    Subgraph,
    UsageExceeded,
)
from converge.store import Store
from tests.orchestration._crash_harness import append, crash_and_resume, crashing, hang

LIMIT = ExecutionConfig(max_tokens_per_agent=1_000)


def spends(tokens: int, *, ran: list[str] | None = None) -> Any:
    async def run(inputs: dict[str, Any], ctx: Any) -> str:
        if ran is not None:
            ran.append(ctx.node_id)
        ctx.report_usage(tokens_in=tokens // 2, tokens_out=tokens - tokens // 2)
        return ctx.node_id

    return run


def chain(graph: Graph, agents: list[tuple[str, str]]) -> Graph:
    """Nodes ``(id, agent name)`` in a chain."""
    for i, (node, agent) in enumerate(agents):
        graph.add_node(node, agent)
        if i:
            graph.connect(agents[i - 1][0], node)
    return graph


async def test_one_agent_over_three_nodes_fails_at_the_node_that_crosses() -> None:
    ran: list[str] = []
    graph = chain(
        Graph("three", execution=LIMIT, agents={"writer": spends(600, ran=ran)}),
        [("a", "writer"), ("b", "writer"), ("c", "writer")],
    )
    with pytest.raises(RunFailed) as info:
        await graph.execute()
    result = info.value.result
    assert result.failed_node == "b"
    assert ran == ["a", "b"]  # c never started
    assert "agent 'writer' (at node 'b') used 1200 tokens in this run" in (result.error or "")
    assert "the limit per agent is 1000" in (result.error or "")


async def test_agents_have_a_budget_each() -> None:
    graph = chain(
        Graph("two", execution=LIMIT, agents={"writer": spends(600), "editor": spends(600)}),
        [("a", "writer"), ("b", "editor")],
    )
    result = await graph.execute()
    assert result.status is RunStatus.COMPLETED


async def test_tool_calls_are_counted_per_agent_too() -> None:
    async def calls(inputs: dict[str, Any], ctx: Any) -> str:
        ctx.report_usage(tool_calls=2)
        return "ok"

    graph = chain(
        Graph("tools", execution=ExecutionConfig(max_tool_calls_per_agent=3), agents={"t": calls}),
        [("a", "t"), ("b", "t")],
    )
    with pytest.raises(RunFailed) as info:
        await graph.execute()
    assert info.value.result.failed_node == "b"
    assert "used 4 tool calls in this run; the limit per agent is 3" in (
        info.value.result.error or ""
    )


async def test_the_error_is_typed_and_carries_the_agent_its_usage_and_the_limit() -> None:
    caught: list[UsageExceeded] = []

    async def careful(inputs: dict[str, Any], ctx: Any) -> str:
        try:
            ctx.report_usage(tokens_in=700)
        except UsageExceeded as exc:
            caught.append(exc)
            return "stopped"
        return "spent"

    graph = chain(Graph("typed", execution=LIMIT, agents={"w": careful}), [("a", "w"), ("b", "w")])
    result = await graph.execute()
    assert result.outputs == {"a": "spent", "b": "stopped"}
    (exc,) = caught
    assert (exc.agent, exc.node, exc.what, exc.used, exc.limit) == ("w", "b", "tokens", 1400, 1000)


async def test_retries_count_every_try(store: Store) -> None:
    tries = 0

    async def flaky(inputs: dict[str, Any], ctx: Any) -> str:
        nonlocal tries
        tries += 1
        ctx.report_usage(tokens_in=400)
        if tries < 3:
            raise RuntimeError("try again")
        return "done"

    graph = Graph("retries", execution=LIMIT).add_node(
        "a", flaky, retry=RetryPolicy(max_retries=2, backoff="none")
    )
    engine = Engine(store)
    with pytest.raises(RunFailed) as info:
        await engine.execute(graph)
    assert tries == 3
    assert "used 1200 tokens" in (info.value.result.error or "")
    # The log holds every try's usage: the trace and metrics agree with the limit's count.
    metrics = await engine.metrics(info.value.result.run_id)
    assert metrics["tokens_per_agent"] == {"a": 1200}


async def test_a_fallback_is_charged_to_its_nodes_agent_with_the_failed_try(
    store: Store,
) -> None:
    async def primary(inputs: dict[str, Any], ctx: Any) -> str:
        ctx.report_usage(tokens_in=300)
        raise RuntimeError("down")

    graph = Graph("fb", execution=LIMIT, agents={"writer": primary, "backup": spends(300)})
    graph.add_node("a", "writer", on_error="fallback", fallback="backup")
    engine = Engine(store)
    result = await engine.execute(graph)
    assert result.outputs == {"a": "a"}
    assert result.usage.tokens_in + result.usage.tokens_out == 600  # both tries, logged
    metrics = await engine.metrics(result.run_id)
    assert metrics["tokens_per_agent"] == {"writer": 600}
    # Over the limit, the fallback fails too, naming the node's agent.
    graph.execution = ExecutionConfig(max_tokens_per_agent=500)
    with pytest.raises(
        RunFailed, match="its fallback 'backup' failed too: UsageExceeded: agent 'writer'"
    ):
        await engine.execute(graph)


async def test_a_loop_counts_every_pass() -> None:
    async def writer(inputs: dict[str, Any], ctx: Any) -> int:
        ctx.report_usage(tokens_out=300)
        previous = inputs["critic.output"]
        return 1 if previous is MISSING else previous + 1

    async def critic(inputs: dict[str, Any]) -> int:
        return int(inputs["writer.output"])

    graph = (
        Graph("loop", execution=LIMIT, config=GraphConfig(max_iterations=10))
        .add_node("writer", writer, inputs=["critic.output"])
        .add_node("critic", critic, inputs=["writer.output"])
        .connect("writer", "critic")
        .connect("critic", "writer", when="critic.output < 9")
    )
    with pytest.raises(RunFailed) as info:
        await graph.execute()
    result = info.value.result
    assert result.failed_node == "writer"
    assert result.outputs["writer"] == 3  # its 4th pass crossed 1000
    assert "used 1200 tokens" in (result.error or "")


def child(agents: dict[str, Any]) -> Graph:
    return Graph("child", agents=agents).add_node("inner", "writer", inputs=["topic"])


async def test_a_subgraph_counts_in_its_parents_budget_and_limits() -> None:
    # The child graph sets no limit of its own: the parent's holds inside it.
    graph = (
        Graph("parent", execution=LIMIT, agents={"writer": spends(600)})
        .add_node("a", "writer", inputs=["topic"])
        .add_node("sub", Subgraph(child({"writer": spends(600)}), inputs={"topic": "a.output"}))
        .connect("a", "sub")
    )
    with pytest.raises(RunFailed) as info:
        await graph.execute({"topic": "t"})
    result = info.value.result
    assert result.failed_node == "sub"
    assert "agent 'writer' (at node 'inner') used 1200 tokens" in (result.error or "")


async def test_a_resumed_run_continues_the_count_from_its_log(store: Store) -> None:
    async def asks(inputs: dict[str, Any], ctx: Any) -> str:
        return str(await ctx.pause("go on?"))

    graph = chain(
        Graph("pause", execution=LIMIT, agents={"writer": spends(600), "asker": asks}),
        [("a", "writer"), ("b", "asker"), ("c", "writer")],
    )
    waiting = await Engine(store).execute(graph)
    assert waiting.status is RunStatus.WAITING
    # A new engine (a new process, as far as the run knows): a's 600 are read from the log.
    with pytest.raises(RunFailed) as info:
        await Engine(store).resume(graph, waiting.run_id, answer="yes")
    result = info.value.result
    assert result.failed_node == "c"
    assert "agent 'writer' (at node 'c') used 1200 tokens" in (result.error or "")


async def test_a_paused_try_counts_and_so_does_its_run_after_the_answer(store: Store) -> None:
    async def asks(inputs: dict[str, Any], ctx: Any) -> str:
        ctx.report_usage(tokens_in=300)  # each time it runs: before and after the answer
        return str(await ctx.pause("go on?"))

    graph = Graph("pause", execution=ExecutionConfig(max_tokens_per_agent=500))
    graph.add_node("b", asks)
    waiting = await Engine(store).execute(graph)
    assert waiting.status is RunStatus.WAITING
    with pytest.raises(RunFailed) as info:
        await Engine(store).resume(graph, waiting.run_id, answer="yes")
    assert "agent 'b' (at node 'b') used 600 tokens" in (info.value.result.error or "")


async def test_a_resumed_run_counts_its_subgraph_runs_usage(store: Store) -> None:
    async def asks(inputs: dict[str, Any], ctx: Any) -> str:
        answer = await ctx.pause("go on?")
        ctx.report_usage(tokens_in=300)
        return str(answer)

    inner = (
        Graph("child", agents={"writer": spends(500), "asker": asks})
        .add_node("x", "writer", inputs=["topic"])
        .add_node("y", "asker")
        .connect("x", "y")
    )
    graph = (
        Graph("parent", execution=LIMIT, agents={"writer": spends(300), "asker": asks})
        .add_node("a", "writer", inputs=["topic"])
        .add_node("sub", Subgraph(inner, inputs={"topic": "a.output"}))
        .add_node("b", "writer")
        .connect("a", "sub")
        .connect("sub", "b")
    )
    waiting = await Engine(store).execute(graph, {"topic": "t"})
    assert waiting.status is RunStatus.WAITING
    # writer: 300 (a) + 500 (the child's x), both read back from the log; b brings it to 1100.
    with pytest.raises(RunFailed) as info:
        await Engine(store).resume(graph, waiting.run_id, answer="yes")
    result = info.value.result
    assert result.failed_node == "b"
    assert "agent 'writer' (at node 'b') used 1100 tokens" in (result.error or "")


@contextlib.asynccontextmanager
async def crash_setup(
    store: Store, log: Path, crash: bool
) -> AsyncIterator[tuple[Graph, Services, dict[str, Any]]]:
    """Three nodes of one agent, 400 tokens each; the process dies inside the third."""

    async def writer(inputs: dict[str, Any], ctx: Any) -> str:
        append(log, f"{ctx.node_id} start")
        if ctx.node_id == "c" and crashing():
            await hang(log)
        ctx.report_usage(tokens_in=400)
        append(log, f"{ctx.node_id} done")
        return ctx.node_id

    graph = chain(
        Graph("crash", execution=LIMIT, agents={"writer": writer}),
        [("a", "writer"), ("b", "writer"), ("c", "writer")],
    )
    yield graph, Services(), {}


@pytest.mark.slow
async def test_a_run_resumed_after_a_crash_continues_the_count(tmp_path: Path) -> None:
    with pytest.raises(RunFailed) as info:
        await crash_and_resume(tmp_path, "tests.orchestration.test_budget:crash_setup")
    result = info.value.result
    assert result.failed_node == "c"
    # a and b (400 each) finished before the crash and are read from the log.
    assert "agent 'writer' (at node 'c') used 1200 tokens" in (result.error or "")
    lines = (tmp_path / "nodes.log").read_text(encoding="utf-8").splitlines()
    assert lines.count("a done") == lines.count("b done") == 1
    assert lines.count("c start") == 2
