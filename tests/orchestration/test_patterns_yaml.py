"""The pattern examples in ``examples/patterns/``: each loads, runs, and has the shape its
helper builds; a supervisor killed mid-run resumes in a new process with the same outcome."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from converge.orchestration import (
    MISSING,
    Engine,
    Graph,
    RunFailed,
    Services,
    debate,
    fan_out,
    load_graph,
    pipeline,
    router,
    supervisor,
)
from converge.store import Store
from examples.patterns import agents
from tests.orchestration._crash_harness import append, crash_and_resume, crashing, hang

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "patterns"

RUNS: dict[str, tuple[dict[str, Any], Any]] = {
    "pipeline": ({"topic": "tides"}, "polished reviewed draft on tides"),
    "fan_out": (
        {"topic": "tides"},
        {
            "web": "web results for tides",
            "papers": "papers results for tides",
            "code": "code results for tides",
        },
    ),
    "supervisor": (
        {"task": "essay"},
        "writer: writer did (essay / part 1); fact_checker: fact_checker did (essay / part 2)",
    ),
    "debate": ({"topic": "tides"}, "heard optimist, skeptic on tides: for wins"),
    "hierarchy": (
        {"task": "launch"},
        "research: searcher: searcher did (launch / part 1 / part 1); "
        "reader: reader did (launch / part 1 / part 2); "
        "engineering: coder: coder did (launch / part 2 / part 1); "
        "tester: tester did (launch / part 2 / part 2)",
    ),
    "router": ({"query": "Where is my invoice?"}, "billing desk answers: Where is my invoice?"),
}


def test_every_pattern_has_an_example() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.yaml")) == sorted(RUNS)


@pytest.mark.parametrize("name", list(RUNS))
async def test_each_example_loads_and_runs(name: str, store: Store) -> None:
    graph = load_graph(EXAMPLES / f"{name}.yaml")
    inputs, expected = RUNS[name]
    result = await Engine(store).execute(graph, inputs)
    assert result.output == expected


async def test_the_router_example_refuses_an_unknown_route() -> None:
    async def lost(inputs: dict[str, Any]) -> str:
        return "sales"

    graph = load_graph(EXAMPLES / "router.yaml", agents={"triage": lost})
    with pytest.raises(RunFailed, match="not one of its choices: billing, technical, general"):
        await graph.execute({"query": "hello"})


def shape(graph: Graph) -> tuple[list[Any], set[Any]]:
    nodes = [(n.id, n.inputs, n.parallel_group, n.wait_for) for n in graph.nodes]
    return nodes, {(e.source, e.target, e.when) for e in graph.edges}


HELPERS = {
    "pipeline": lambda: pipeline(agents.draft, agents.review, agents.polish, inputs=["topic"]),
    "fan_out": lambda: fan_out(
        {"web": agents.web, "papers": agents.papers, "code": agents.code}, inputs=["topic"]
    ),
    "supervisor": lambda: supervisor(
        {"editor": agents.editor}, {"writer": agents.writer, "fact_checker": agents.fact_checker}
    ),
    "debate": lambda: debate(
        {"optimist": agents.optimist, "skeptic": agents.skeptic}, agents.judge, rounds=2
    ),
    "router": lambda: router(
        agents.triage,
        {"billing": agents.billing, "technical": agents.technical, "general": agents.general},
    ),
}


@pytest.mark.parametrize("name", list(HELPERS))
def test_each_example_is_the_graph_its_helper_builds(name: str) -> None:
    loaded, built = load_graph(EXAMPLES / f"{name}.yaml"), HELPERS[name]()
    loaded_nodes, loaded_edges = shape(loaded)
    built_nodes, built_edges = shape(built)
    assert loaded_nodes == built_nodes
    assert loaded_edges == built_edges
    assert (loaded.name, loaded.description) == (built.name, built.description)
    assert loaded.config.max_iterations == built.config.max_iterations


# -- a supervisor killed with SIGKILL in its second round, resumed in a new process -------------


@contextlib.asynccontextmanager
async def crash_setup(
    store: Store, log: Path, crash: bool
) -> AsyncIterator[tuple[Graph, Services, dict[str, Any]]]:
    """Two rounds: both workers, then ``b`` alone; ``b`` hangs in round two in the child."""

    async def boss(inputs: dict[str, Any], ctx: Any) -> dict[str, Any]:
        append(log, f"boss start {ctx.iteration}")
        results = inputs["gather.output"]
        if results is MISSING:
            out: dict[str, Any] = {"assign": {"a": "a1", "b": "b1"}}
        elif ctx.iteration == 2:
            out = {"assign": {"b": f"b2 after {results['a']}"}}
        else:
            out = {"done": results["b"]}
        append(log, f"boss done {ctx.iteration}")
        return out

    def worker(name: str) -> Any:
        async def work(inputs: dict[str, Any], ctx: Any) -> str:
            append(log, f"{name} start {ctx.iteration}")
            if name == "b" and ctx.iteration == 2 and crashing():
                await hang(log)
            append(log, f"{name} done {ctx.iteration}")
            (part,) = inputs.values()
            return f"{name}({part})"

        return work

    yield supervisor(boss, {"a": worker("a"), "b": worker("b")}), Services(), {"task": "t"}


@pytest.mark.slow
async def test_a_supervisor_killed_mid_run_resumes_in_a_new_process(tmp_path: Path) -> None:
    result, lines = await crash_and_resume(
        tmp_path, "tests.orchestration.test_patterns_yaml:crash_setup"
    )
    assert result.output == "b(b2 after a(a1))"
    done = [line.replace(" done", "") for line in lines if " done " in line]
    # every pass finished once across both processes; only b's interrupted pass ran twice
    assert done == ["boss 1", "a 1", "b 1", "boss 2", "b 2", "boss 3"]
    assert [line for line in lines if line.startswith("b start 2")] == ["b start 2"] * 2
