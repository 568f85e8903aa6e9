"""A graph as a node: its own run inside the parent's trace, resumed where it stopped."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from converge.errors import ValidationError
from converge.orchestration import Engine, Graph, RunFailed, RunStatus, Services, loads_graph
from converge.orchestration.subgraph import Subgraph
from converge.store import Store
from tests.orchestration._crash_harness import append, crash_and_resume, crashing, hang


def child_graph(ran: list[str], *, fail_at: str | None = None) -> Graph:
    def step(name: str) -> Any:
        async def run(inputs: dict[str, Any]) -> str:
            ran.append(name)
            if name == fail_at:
                raise RuntimeError(f"{name} broke")
            return f"{name}({','.join(str(v) for _, v in sorted(inputs.items()))})"

        return run

    return (
        Graph("child")
        .add_node("x", step("x"), inputs=["topic"])
        .add_node("y", step("y"))
        .connect("x", "y")
    )


def parent_graph(child: Graph) -> Graph:
    async def outline(inputs: dict[str, Any]) -> str:
        return f"outline of {inputs['subject']}"

    async def publish(inputs: dict[str, Any]) -> str:
        return f"published {inputs['write.output']}"

    return (
        Graph("parent")
        .add_node("plan", outline, inputs=["subject"])
        .add_node("write", Subgraph(child, inputs={"topic": "plan.output"}), inputs=["plan.output"])
        .add_node("publish", publish, inputs=["write.output"])
        .connect("plan", "write")
        .connect("write", "publish")
    )


async def test_a_subgraph_runs_inside_the_parents_trace(store: Store) -> None:
    ran: list[str] = []
    engine = Engine(store)
    result = await engine.execute(parent_graph(child_graph(ran)), {"subject": "tides"})
    assert result.output == "published y(x(outline of tides))"
    trace = await engine.trace(result.run_id)
    assert [n["node_id"] for n in trace["nodes"]] == [
        "plan",
        "write",
        "write/x",
        "write/y",
        "publish",
    ]
    assert {e.trace_id for e in await store.read(trace_id=result.run_id)} == {result.run_id}
    child = await engine.trace(f"{result.run_id}/write/1")
    assert [n["node_id"] for n in child["nodes"]] == ["x", "y"]


async def test_a_resumed_subgraph_does_not_rerun_what_finished_inside(store: Store) -> None:
    ran: list[str] = []
    engine = Engine(store)
    broken = parent_graph(child_graph(ran, fail_at="y"))
    with pytest.raises(RunFailed) as info:
        await engine.execute(broken, {"subject": "tides"})
    assert "y broke" in (info.value.result.error or "")
    assert ran == ["x", "y"]
    ran.clear()
    fixed = parent_graph(child_graph(ran))
    result = await engine.resume(fixed, info.value.result.run_id)
    assert result.output == "published y(x(outline of tides))"
    assert ran == ["y"]  # x finished in the child run before: read, not run again


async def test_a_child_waiting_for_a_person_makes_the_parent_wait(store: Store) -> None:
    async def asks(inputs: dict[str, Any], ctx: Any) -> str:
        return str(await ctx.pause(f"approve {inputs['topic']}?"))

    child = Graph("approval").add_node("ask", asks, inputs=["topic"])
    parent = Graph("p").add_node("gate", Subgraph(child), inputs=["topic"])
    engine = Engine(store)
    waiting = await engine.execute(parent, {"topic": "launch"})
    assert waiting.status is RunStatus.WAITING
    assert waiting.questions == {"gate": "approve launch?"}
    done = await Engine(store).resume(parent, waiting.run_id, answer="approved")
    assert done.output == "approved"


async def test_subgraphs_in_yaml_by_relative_path(tmp_path: Path) -> None:
    (tmp_path / "inner.yaml").write_text(
        "name: inner\nnodes:\n  - {id: shout, agent: upper, inputs: [text]}\n"
    )

    async def upper(inputs: dict[str, Any]) -> str:
        return str(inputs["text"]).upper()

    outer = tmp_path / "outer.yaml"
    outer.write_text(
        "name: outer\n"
        "nodes:\n"
        "  - {id: loud, agent: inner, inputs: [words]}\n"
        "agents:\n"
        "  inner: {kind: subgraph, graph: inner.yaml, inputs: {text: words}}\n"
    )
    from converge.orchestration import load_graph

    graph = load_graph(outer, agents={"upper": upper})
    assert (await graph.execute({"words": "hello"})).output == "HELLO"
    with pytest.raises(ValidationError) as info:
        loads_graph(
            "name: o\nnodes:\n  - {id: a, agent: s}\nagents:\n  s: {kind: subgraph, grph: x}\n",
            source="o.yaml",
        )
    assert (info.value.field, info.value.line) == ("agents.s.grph", 5)


@contextlib.asynccontextmanager
async def crash_setup(
    store: Store, log: Path, crash: bool
) -> AsyncIterator[tuple[Graph, Services, dict[str, Any]]]:
    """The parent graph whose subgraph's second node hangs in the child process."""

    def step(name: str) -> Any:
        async def run(inputs: dict[str, Any]) -> str:
            append(log, f"{name} start")
            if name == "y" and crashing():
                await hang(log)
            append(log, f"{name} done")
            return f"{name}({','.join(str(v) for _, v in sorted(inputs.items()))})"

        return run

    child = (
        Graph("child")
        .add_node("x", step("x"), inputs=["topic"])
        .add_node("y", step("y"))
        .connect("x", "y")
    )
    graph = (
        Graph("parent")
        .add_node("plan", step("plan"), inputs=["subject"])
        .add_node("write", Subgraph(child, inputs={"topic": "plan.output"}), inputs=["plan.output"])
        .add_node("publish", step("publish"), inputs=["write.output"])
        .connect("plan", "write")
        .connect("write", "publish")
    )
    yield graph, Services(), {"subject": "tides"}


@pytest.mark.slow
async def test_a_subgraph_killed_mid_run_resumes_in_a_new_process(tmp_path: Path) -> None:
    result, lines = await crash_and_resume(
        tmp_path, "tests.orchestration.test_subgraph:crash_setup"
    )
    assert result.output == "publish(y(x(plan(tides))))"
    done = [line.split()[0] for line in lines if line.endswith(" done")]
    assert done == ["plan", "x", "y", "publish"]  # each finished once, across both processes
    assert [line for line in lines if line.startswith("y start")] == ["y start"] * 2
