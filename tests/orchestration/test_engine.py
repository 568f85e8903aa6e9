"""The engine: concurrency, policies, loops, routing, pauses, resume, checkpoints, modes, events."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from converge.errors import OrchestrationError, ValidationError
from converge.orchestration import (
    MISSING,
    AgentSpec,
    Engine,
    ExecutionConfig,
    Graph,
    GraphConfig,
    RetryPolicy,
    RunFailed,
    RunStatus,
)
from converge.store import Store

NO_WAIT = RetryPolicy(max_retries=2, backoff="none")


def const(value: Any) -> Any:
    async def run(inputs: dict[str, Any]) -> Any:
        return value

    return run


async def test_ready_nodes_run_concurrently_within_the_limit() -> None:
    running = 0
    peak = 0
    release = asyncio.Event()

    async def work(inputs: dict[str, Any]) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if peak >= 2:
            release.set()
        await release.wait()
        running -= 1
        return 1

    graph = Graph("wide", execution=ExecutionConfig(max_concurrent_agents=2))
    graph.add_node("start", const(0))
    for i in range(5):
        graph.add_node(f"w{i}", work).connect("start", f"w{i}")
    result = await graph.execute()
    assert peak == 2
    assert result.output == {f"w{i}": 1 for i in range(5)}


async def test_sync_callables_run_in_the_pool_unless_inline() -> None:
    loop_thread = threading.get_ident()
    seen: dict[str, int] = {}

    def pooled(inputs: dict[str, Any]) -> str:
        seen["pooled"] = threading.get_ident()
        return "p"

    def inline(inputs: dict[str, Any]) -> str:
        seen["inline"] = threading.get_ident()
        return "i"

    graph = Graph("threads").add_node("a", pooled).add_node("b", AgentSpec(inline, inline=True))
    await graph.execute()
    assert seen["pooled"] != loop_thread
    assert seen["inline"] == loop_thread


async def test_retries_then_success_are_logged(store: Store) -> None:
    calls = 0

    async def flaky(inputs: dict[str, Any]) -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError(f"try {calls}")
        return "ok"

    engine = Engine(store)
    result = await engine.execute(Graph("r").add_node("a", flaky, retry=NO_WAIT))
    assert (result.output, calls) == ("ok", 3)
    events = await store.read(trace_id=result.run_id)
    retries = [e.data for e in events if e.kind == "node.retry"]
    assert [(r["attempt"], r["error"]) for r in retries] == [
        (1, "ConnectionError: try 1"),
        (2, "ConnectionError: try 2"),
    ]
    starts = [e.data["attempt"] for e in events if e.kind == "node.start"]
    assert starts == [1, 2, 3]


async def test_backoff_waits_on_the_injected_clock() -> None:
    from converge.core.clock import ManualClock

    clock = ManualClock()
    tries: list[float] = []

    async def failing(inputs: dict[str, Any]) -> None:
        tries.append(clock.now())
        raise ValueError("no")

    policy = RetryPolicy(max_retries=2, backoff="exponential", initial_delay=1.0)
    graph = Graph("b").add_node("a", failing, retry=policy, on_error="skip")
    async with asyncio.TaskGroup() as group:
        run = group.create_task(Engine(clock=clock).execute(graph))
        for _ in range(2):
            async with asyncio.timeout(5):
                while clock.sleepers == 0:  # noqa: ASYNC110 - a bounded wait for the retry's sleep
                    await asyncio.sleep(0.001)
            clock.advance(10)
    result = run.result()
    assert [t - tries[0] for t in tries] == [0, 10, 20]
    assert result.outputs == {"a": None}


async def test_a_node_timeout_fails_the_try() -> None:
    never = asyncio.Event()

    async def hangs(inputs: dict[str, Any]) -> None:
        await never.wait()

    graph = Graph("t").add_node("a", hangs, timeout=0.01, retry=NO_WAIT)
    with pytest.raises(RunFailed) as info:
        await graph.execute()
    result = info.value.result
    assert result.status is RunStatus.FAILED
    assert result.failed_node == "a"
    assert "timed out after 0.01 s" in (result.error or "")


async def test_skip_gives_dependents_missing() -> None:
    got: dict[str, Any] = {}

    async def broken(inputs: dict[str, Any]) -> None:
        raise RuntimeError("down")

    async def after(inputs: dict[str, Any]) -> str:
        got.update(inputs)
        return "went on"

    graph = (
        Graph("s")
        .add_node("a", broken, on_error="skip")
        .add_node("b", after, inputs=["a.output", "a.output.x"])
        .connect("a", "b")
    )
    result = await graph.execute()
    assert got == {"a.output": MISSING, "a.output.x": MISSING}
    assert result.output == "went on"
    assert result.outputs["a"] is None


async def test_fallback_runs_in_place_of_the_failed_agent(store: Store) -> None:
    async def broken(inputs: dict[str, Any]) -> None:
        raise RuntimeError("primary down")

    engine = Engine(store)
    graph = Graph("f").add_node("a", broken, on_error="fallback", fallback=const("backup"))
    result = await engine.execute(graph)
    assert result.output == "backup"
    done = [e.data for e in await store.read(trace_id=result.run_id) if e.kind == "node.done"]
    assert done[0]["status"] == "fallback"
    assert "primary down" in done[0]["error"]


async def test_abort_cancels_what_is_in_flight_and_names_the_cause() -> None:
    cancelled = asyncio.Event()
    started = asyncio.Event()

    async def slow(inputs: dict[str, Any]) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def broken(inputs: dict[str, Any]) -> None:
        await started.wait()
        raise KeyError("boom")

    graph = Graph("a").add_node("slow", slow).add_node("broken", broken)
    with pytest.raises(RunFailed) as info:
        await graph.execute()
    assert cancelled.is_set()
    assert info.value.result.failed_node == "broken"
    assert "KeyError" in (info.value.result.error or "")


async def test_conditional_routing_runs_only_the_taken_branch_and_joins() -> None:
    ran: list[str] = []

    def branch(name: str) -> Any:
        async def run(inputs: dict[str, Any]) -> str:
            ran.append(name)
            return name

        return run

    async def join(inputs: dict[str, Any]) -> dict[str, Any]:
        return {key: (None if value is MISSING else value) for key, value in inputs.items()}

    graph = (
        Graph("route")
        .add_node("router", const({"kind": "bug"}))
        .add_node("bug", branch("bug"))
        .add_node("feature", branch("feature"))
        .add_node("join", join, inputs=["bug.output", "feature.output"])
        .connect("router", "bug", when="router.output.kind == 'bug'")
        .connect("router", "feature", when="router.output.kind == 'feature'")
        .connect("bug", "join")
        .connect("feature", "join")
    )
    result = await graph.execute()
    assert ran == ["bug"]
    assert result.output == {"bug.output": "bug", "feature.output": None}


def writer_critic(approve_at: int, max_iterations: int = 10) -> Graph:
    async def write(inputs: dict[str, Any]) -> int:
        previous = inputs["critic.output"]
        return 1 if previous is MISSING else previous["draft"] + 1

    async def critic(inputs: dict[str, Any]) -> dict[str, Any]:
        draft = inputs["writer.output"]
        return {"draft": draft, "approved": draft >= approve_at}

    async def publish(inputs: dict[str, Any]) -> str:
        return f"published draft {inputs['critic.output']['draft']}"

    return (
        Graph("loop", config=GraphConfig(max_iterations=max_iterations))
        .add_node("writer", write, inputs=["critic.output"])
        .add_node("critic", critic, inputs=["writer.output"])
        .add_node("publish", publish, inputs=["critic.output"])
        .connect("writer", "critic")
        .connect("critic", "writer", when="not critic.output.approved")
        .connect("critic", "publish", when="critic.output.approved")
    )


async def test_a_loop_runs_until_its_exit_is_taken() -> None:
    result = await writer_critic(approve_at=3).execute()
    assert result.output == "published draft 3"
    assert result.outputs["writer"] == 3


async def test_max_iterations_bounds_a_loop() -> None:
    with pytest.raises(RunFailed) as info:
        await writer_critic(approve_at=100, max_iterations=4).execute()
    assert "would run a 5th time" in (info.value.result.error or "")


async def test_a_condition_that_cannot_be_evaluated_fails_the_run() -> None:
    graph = (
        Graph("c")
        .add_node("a", const("text"))
        .add_node("b", const(1))
        .connect("a", "b", when="a.output > 3")
    )
    with pytest.raises(RunFailed) as info:
        await graph.execute()
    assert info.value.result.failed_node == "a"


async def test_usage_is_accounted_and_limited() -> None:
    async def spends(inputs: dict[str, Any], ctx: Any) -> str:
        ctx.report_usage(tokens_in=100, tokens_out=20, tool_calls=1, cost=0.01)
        return "ok"

    async def greedy(inputs: dict[str, Any], ctx: Any) -> str:
        ctx.report_usage(tokens_in=5_000)
        return "too much"

    ok = await Graph("u").add_node("a", spends).add_node("b", spends).execute()
    assert (ok.usage.tokens_in, ok.usage.tokens_out, ok.usage.tool_calls) == (200, 40, 2)
    limited = Graph("u2", execution=ExecutionConfig(max_tokens_per_agent=1_000))
    with pytest.raises(RunFailed, match="used 5000 tokens"):
        await limited.add_node("a", greedy).execute()


async def test_total_timeout_is_the_smaller_of_the_two() -> None:
    async def hangs(inputs: dict[str, Any]) -> None:
        await asyncio.Event().wait()

    graph = Graph(
        "t",
        config=GraphConfig(timeout_seconds=5),
        execution=ExecutionConfig(total_timeout_seconds=0.02),
    ).add_node("a", hangs)
    with pytest.raises(RunFailed, match=r"timed out after 0\.02 s"):
        await graph.execute()


async def test_an_unstorable_output_fails_its_node() -> None:
    with pytest.raises(RunFailed, match="cannot be stored"):
        await Graph("o").add_node("a", const(object())).execute()


async def test_a_human_answers_a_failed_node_and_the_run_resumes(store: Store) -> None:
    async def broken(inputs: dict[str, Any]) -> None:
        raise RuntimeError("needs a person")

    async def after(inputs: dict[str, Any]) -> str:
        return f"used {inputs['a.output']}"

    graph = (
        Graph("h")
        .add_node("a", broken, on_error="human")
        .add_node("b", after, inputs=["a.output"])
        .connect("a", "b")
    )
    engine = Engine(store)
    waiting = await engine.execute(graph)
    assert waiting.status is RunStatus.WAITING
    assert "needs a person" in waiting.questions["a"]
    # a new engine on the same store: the answer survives a restart of the process
    done = await Engine(store).resume(graph, waiting.run_id, answer="a person's answer")
    assert done.status is RunStatus.COMPLETED
    assert done.output == "used a person's answer"


async def test_pause_inside_a_node_waits_for_the_answer(store: Store) -> None:
    runs = 0

    async def asks(inputs: dict[str, Any], ctx: Any) -> str:
        nonlocal runs
        runs += 1
        answer = await ctx.pause("ship it?")
        return f"answer was {answer}"

    graph = Graph("p").add_node("a", asks)
    engine = Engine(store)
    first = await engine.execute(graph)
    assert first.questions == {"a": "ship it?"}
    second = await engine.resume(graph, first.run_id, answer="yes")
    assert second.output == "answer was yes"
    assert runs == 2


async def test_resume_never_runs_a_finished_node_again(store: Store) -> None:
    ran: list[str] = []
    crash = True

    def node(name: str) -> Any:
        async def run(inputs: dict[str, Any]) -> str:
            ran.append(name)
            if name == "c" and crash:
                raise RuntimeError("crash")
            return name

        return run

    graph = Graph("r")
    for name in "abcd":
        graph.add_node(name, node(name))
    graph.connect("a", "b").connect("b", "c").connect("c", "d")
    engine = Engine(store)
    with pytest.raises(RunFailed) as info:
        await engine.execute(graph)
    crash = False
    result = await engine.resume(graph, info.value.result.run_id)
    assert result.output == "d"
    assert ran == ["a", "b", "c", "c", "d"]


async def test_resume_refuses_another_graph_and_unknown_runs(store: Store) -> None:
    engine = Engine(store)
    result = await engine.execute(Graph("x").add_node("a", const(1)))
    with pytest.raises(Exception, match="different version"):
        await engine.resume(Graph("x").add_node("b", const(1)), result.run_id)
    with pytest.raises(Exception, match="no run"):
        await engine.resume(Graph("x").add_node("a", const(1)), "missing-run")
    again = await engine.resume(Graph("x").add_node("a", const(1)), result.run_id)
    assert again.output == 1


async def test_checkpoints_and_fork_start_a_new_run_from_a_point(store: Store) -> None:
    ran: list[str] = []

    async def first(inputs: dict[str, Any], ctx: Any) -> int:
        ran.append("first")
        await ctx.checkpoint("after-first")
        return int(inputs["n"])

    async def second(inputs: dict[str, Any]) -> int:
        ran.append("second")
        return int(inputs["first.output"]) + int(inputs["bonus"])

    graph = (
        Graph("fork")
        .add_node("first", first, inputs=["n"])
        .add_node("second", second, inputs=["first.output", "bonus"])
        .connect("first", "second")
    )
    engine = Engine(store)
    original = await engine.execute(graph, {"n": 1, "bonus": 10})
    await engine.checkpoint(original.run_id, "at-end")
    labels = [c["label"] for c in await engine.list_checkpoints(original.run_id)]
    assert labels == ["after-first", "at-end"]
    ran.clear()
    forked = await engine.fork(graph, original.run_id, "at-end", new_input={"bonus": 100})
    assert ran == [] and forked.output == 11  # everything finished before "at-end"
    ran.clear()
    await engine.checkpoint(original.run_id, "later")
    # a checkpoint taken inside `first` precedes its completion: fork re-runs it
    forked = await engine.fork(graph, original.run_id, "after-first", new_input={"bonus": 100})
    assert forked.output == 101
    assert ran == ["first", "second"]
    assert forked.run_id != original.run_id
    assert (await engine.resume(graph, original.run_id)).output == 11  # untouched


async def test_events_form_the_runs_trace(store: Store) -> None:
    graph = Graph("ev").add_node("a", const(1)).add_node("b", const(2)).connect("a", "b")
    engine = Engine(store)
    result = await engine.execute(graph)
    events = await store.read(trace_id=result.run_id)
    kinds = [e.kind for e in events]
    assert kinds == [
        "run.started",
        "node.start",
        "node.done",
        "node.start",
        "node.done",
        "run.completed",
    ]
    by_kind = {(e.kind, e.data.get("node")): e for e in events}
    assert by_kind[("node.start", "b")].parent_id == by_kind[("node.done", "a")].id
    assert by_kind[("node.start", "a")].parent_id == events[0].id
    assert by_kind[("node.start", "a")].data["task_id"] == f"{result.run_id}/a/1"


async def test_submit_status_wait_and_cancel() -> None:
    gate = asyncio.Event()

    async def waits(inputs: dict[str, Any]) -> str:
        await gate.wait()
        return "done"

    graph = Graph("s").add_node("a", waits)
    async with Engine() as engine:
        handle = await engine.submit(graph)
        assert await handle.status() is RunStatus.RUNNING
        gate.set()
        assert (await handle.wait()).output == "done"
        assert await handle.status() is RunStatus.COMPLETED
        gate.clear()
        stopped = await engine.submit(graph)
        await asyncio.sleep(0)
        result = await stopped.cancel()
        assert result.status is RunStatus.CANCELLED
        kinds = [e.kind for e in await engine.store.read(trace_id=stopped.run_id)]
        assert kinds[-1] == "run.cancelled"
    with pytest.raises(Exception, match="async with"):
        await Engine().submit(graph)


async def test_stream_yields_the_runs_events_in_order() -> None:
    async def chatty(inputs: dict[str, Any], ctx: Any) -> str:
        await ctx.emit("partial ")
        await ctx.progress(0.5, "half way")
        await ctx.emit("answer")
        return "partial answer"

    graph = Graph("st").add_node("a", chatty)
    events = [e async for e in graph.stream()]
    assert [e.kind for e in events] == [
        "run.started",
        "node.start",
        "node.chunk",
        "node.progress",
        "node.chunk",
        "node.done",
        "run.completed",
    ]
    assert events[-1].data["output"] == "partial answer"


async def test_stream_runs_under_the_id_it_is_given(store: Store) -> None:
    def no_ids() -> str:
        raise AssertionError("the engine made a run id of its own")

    engine = Engine(store, id_factory=no_ids)
    graph = Graph("st").add_node("a", const(1))
    events = [e async for e in engine.stream(graph, run_id="chosen")]
    assert {e.run_id for e in events} == {"chosen"}
    assert events[-1].kind == "run.completed"
    started = await store.read(trace_id="chosen", kinds=("run.started",))
    assert [e.subject for e in started] == ["chosen"]
    # An id that names a run already there, or no run of its own, is refused before anything
    # runs.
    for bad in ["chosen", "", " ", "chosen/a/1", 7]:
        with pytest.raises(ValidationError) as info:
            _ = [e async for e in engine.stream(graph, run_id=bad)]  # type: ignore[arg-type]
        assert info.value.field == "run_id"
    assert len(await store.read(trace_id="chosen", kinds=("run.started",))) == 1


async def test_aclose_releases_the_engine_and_may_be_called_again(store: Store) -> None:
    graph = Graph("c").add_node("a", const(1))
    engine = Engine(store)  # used without `async with`
    await engine.execute(graph)
    lease = f"owner/{engine.owner.id}"
    assert await store.get(lease) is not None  # written before its first run
    await engine.aclose()
    assert await store.get(lease) is None
    await engine.aclose()
    async with Engine(store) as other:
        await other.execute(graph)
        lease = f"owner/{other.owner.id}"
    assert await store.get(lease) is None  # `async with` closed it
    await other.aclose()


async def test_batch_keeps_input_order_and_survives_a_failure() -> None:
    async def invert(inputs: dict[str, Any]) -> float:
        return 1 / inputs["x"]

    graph = Graph("b").add_node("a", invert, inputs=["x"])
    results = await graph.batch([{"x": 1}, {"x": 0}, {"x": 4}], concurrency=2)
    assert [r.status for r in results] == [
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.COMPLETED,
    ]
    assert [r.output for r in results] == [1.0, None, 0.25]
    assert "ZeroDivisionError" in (results[1].error or "")


async def test_orchestration_errors_are_converge_errors() -> None:
    assert issubclass(RunFailed, OrchestrationError)


async def test_the_trace_and_metrics_come_from_the_log(store: Store) -> None:
    from converge.core.clock import ManualClock

    clock = ManualClock(1_766_743_200.0)  # 2025-12-26T10:00:00Z

    async def analyze(inputs: dict[str, Any], ctx: Any) -> str:
        clock.advance(5)
        ctx.report_usage(tokens_in=1500, tokens_out=800, tool_calls=3, cost=0.03)
        return "analysis"

    calls = 0

    async def flaky(inputs: dict[str, Any], ctx: Any) -> str:
        nonlocal calls
        calls += 1
        clock.advance(1)
        if calls == 1:
            raise RuntimeError("once")
        ctx.report_usage(tokens_in=10, tokens_out=5, cost=0.015)
        return "report"

    graph = (
        Graph("code_review", agents={"code_analyzer": analyze, "reporter": flaky})
        .add_node("analyzer", "code_analyzer")
        .add_node("report", "reporter", retry=RetryPolicy(max_retries=1, backoff="none"))
        .connect("analyzer", "report")
    )
    engine = Engine(store, clock=clock)
    result = await engine.execute(graph)
    trace = await engine.trace(result.run_id)
    assert trace["trace_id"] == result.run_id
    assert trace["graph_id"] == "code_review"
    first = trace["nodes"][0]
    assert first == {
        "node_id": "analyzer",
        "agent": "code_analyzer",
        "iteration": 1,
        "start_time": "2025-12-26T10:00:00.000000Z",
        "end_time": "2025-12-26T10:00:05.000000Z",
        "latency_ms": 5000.0,
        "tokens_in": 1500,
        "tokens_out": 800,
        "tool_calls": 3,
        "cost": 0.03,
        "attempts": 1,
        "status": "success",
    }
    assert trace["nodes"][1]["attempts"] == 2
    assert trace["total_tokens"] == 2315
    assert trace["total_cost"] == pytest.approx(0.045)
    assert trace["duration_ms"] == 7000.0
    metrics = await engine.metrics(result.run_id)
    assert metrics["agents_spawned"] == 2
    assert metrics["tokens_per_agent"] == {"code_analyzer": 2300, "reporter": 15}
    assert metrics["latency_ms_per_node"] == {"analyzer": 5000.0, "report": 2000.0}
    assert (metrics["succeeded"], metrics["failed"], metrics["retries"]) == (2, 0, 1)


async def test_on_node_failed_splices_replacement_nodes(store: Store) -> None:
    from converge.orchestration import NodeFailure, Replacement

    seen: list[NodeFailure] = []

    async def broken(inputs: dict[str, Any]) -> None:
        raise RuntimeError("the model is down")

    async def draft(inputs: dict[str, Any]) -> str:
        return f"draft of {inputs['topic']}"

    async def polish(inputs: dict[str, Any]) -> str:
        return inputs["draft.output"].upper()

    async def replan(failure: NodeFailure) -> list[Replacement]:
        seen.append(failure)
        return [Replacement("draft", draft), Replacement("polish", polish)]

    async def publish(inputs: dict[str, Any]) -> str:
        return f"published {inputs['write.output']}"

    graph = (
        Graph("replan")
        .add_node("write", broken, inputs=["topic"])
        .add_node("publish", publish, inputs=["write.output"])
        .connect("write", "publish")
    )
    engine = Engine(store, on_node_failed=replan)
    result = await engine.execute(graph, {"topic": "tides"})
    assert result.output == "published DRAFT OF TIDES"
    assert [(f.node_id, f.error, f.inputs) for f in seen] == [
        ("write", "RuntimeError: the model is down", {"topic": "tides"})
    ]
    trace = await engine.trace(result.run_id)
    assert [(n["node_id"], n["status"]) for n in trace["nodes"]] == [
        ("write", "replanned"),
        ("draft", "success"),
        ("polish", "success"),
        ("publish", "success"),
    ]

    # without replacements the failure stands
    async def give_up(failure: NodeFailure) -> None:
        return None

    with pytest.raises(RunFailed, match="the model is down"):
        await Engine(store, on_node_failed=give_up).execute(graph, {"topic": "tides"})


async def test_concurrent_nodes_keep_their_own_context() -> None:
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: dict[str, str] = {}
    gate = asyncio.Event()

    async def quick(inputs: dict[str, Any]) -> str:  # finishes without suspending
        var.set("quick")
        return "q"

    async def waits(inputs: dict[str, Any]) -> str:  # suspends, resumes in its own context
        var.set("waits")
        await gate.wait()
        seen["waits"] = var.get()
        return "w"

    async def opener(inputs: dict[str, Any]) -> str:
        seen["opener"] = var.get()
        gate.set()
        return "o"

    graph = Graph("eager").add_node("quick", quick).add_node("waits", waits).add_node("o", opener)
    result = await graph.execute()
    assert result.outputs == {"quick": "q", "waits": "w", "o": "o"}
    assert seen == {"opener": "unset", "waits": "waits"}  # no node saw another's context
    assert var.get() == "unset"


async def test_a_run_that_cannot_progress_fails_naming_the_stuck_node() -> None:
    # `report` needs `setup` and each pass of the loop; setup ran once, so the second pass
    # leaves `report` waiting for it forever: the run says so instead of hanging.
    async def step(inputs: dict[str, Any]) -> int:
        previous = inputs.get("loop.output", MISSING)
        return 1 if previous is MISSING else previous + 1

    graph = (
        Graph("stuck", config=GraphConfig(max_iterations=5))
        .add_node("setup", const("ready"))
        .add_node("loop", step, inputs=["loop.output"])
        .add_node("report", const("report"), inputs=["setup.output", "loop.output"])
        .connect("setup", "report")
        .connect("loop", "loop", when="loop.output < 2")
        .connect("loop", "report")
    )
    with pytest.raises(RunFailed) as info:
        await graph.execute()
    assert "cannot progress: report waits for loop, setup" in (info.value.result.error or "")
    assert info.value.result.failed_node == "report"


@pytest.mark.parametrize("checkpoint", [True, False])
async def test_checkpoints_decide_whether_completions_are_written_before_dependents(
    store: Store, checkpoint: bool
) -> None:
    seen: list[list[str]] = []

    async def reads_the_log(inputs: dict[str, Any], ctx: Any) -> str:
        events = await store.read(trace_id=ctx.run_id)
        seen.append([e.data.get("node", e.kind) for e in events if e.kind == "node.done"])
        return "read"

    graph = (
        Graph("durable", config=GraphConfig(checkpoint_enabled=checkpoint))
        .add_node("first", const(1))
        .add_node("second", reads_the_log)
        .connect("first", "second")
    )
    result = await Engine(store).execute(graph)
    assert seen == ([["first"]] if checkpoint else [[]])
    kinds = [e.kind for e in await store.read(trace_id=result.run_id)]
    assert kinds.count("node.done") == 2 and kinds[-1] == "run.completed"  # all logged in the end


async def test_a_node_that_halts_takes_none_of_its_edges(store: Store) -> None:
    from converge.orchestration import Halt

    async def gate(inputs: dict[str, Any]) -> Halt:
        return Halt({"passed": False, "yes": 1, "no": 2})

    ran: list[str] = []

    async def after(inputs: dict[str, Any]) -> str:
        ran.append("after")
        return "ran"

    async def join(inputs: dict[str, Any]) -> str:
        return "joined"

    graph = (
        Graph("halt")
        .add_node("gate", gate)
        .add_node("after", after)
        .add_node("other", const("other"))
        .add_node("join", join, inputs=["gate.output", "other.output"])
        .connect("gate", "after")
        .connect("gate", "join")
        .connect("other", "join")
    )
    engine = Engine(store)
    result = await engine.execute(graph)
    assert ran == []
    assert result.outputs["gate"] == {"passed": False, "yes": 1, "no": 2}
    assert result.output == {"join": "joined"}  # the sinks that ran: `after` did not
    again = await engine.resume(graph, result.run_id)
    assert again.output == {"join": "joined"}


async def test_a_timeout_entered_by_a_concurrent_node_cancels_only_that_node() -> None:
    # Several nodes run at once; each enters asyncio.timeout on its very first step. The one
    # that overruns must be cancelled alone — never the run's own loop.
    release = asyncio.Event()

    def bounded(limit: float, hangs: bool) -> Any:
        async def run(inputs: dict[str, Any]) -> str:
            try:
                async with asyncio.timeout(limit):
                    if hangs:
                        await asyncio.Event().wait()
                    await release.wait()
            except TimeoutError:
                return "timed out"
            return "released"

        return run

    async def opener(inputs: dict[str, Any]) -> str:
        await asyncio.sleep(0.05)
        release.set()
        return "opened"

    graph = (
        Graph("timeouts")
        .add_node("slow", bounded(0.01, hangs=True))
        .add_node("fine", bounded(60.0, hangs=False))  # released long before (a hang guard)
        .add_node("opener", opener)
    )
    result = await graph.execute()
    assert result.outputs == {"slow": "timed out", "fine": "released", "opener": "opened"}


async def test_a_node_timeout_under_concurrency_fails_that_node_only() -> None:
    async def hangs(inputs: dict[str, Any]) -> None:
        await asyncio.Event().wait()

    graph = (
        Graph("t2")
        .add_node("a", hangs, timeout=0.01, on_error="skip")
        .add_node("b", const("b"))
        .add_node("c", const("c"))
    )
    result = await graph.execute()
    assert result.outputs == {"a": None, "b": "b", "c": "c"}
