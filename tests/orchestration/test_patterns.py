"""The orchestration patterns: each builds an ordinary graph that runs, prints, validates and
extends; the supervisor's loop, the debate's rounds, the hierarchy's levels, the router's guard."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from converge.errors import ValidationError
from converge.orchestration import (
    MISSING,
    Engine,
    Graph,
    RunFailed,
    UnknownRoute,
    debate,
    fan_out,
    hierarchy,
    pipeline,
    router,
    supervisor,
)
from converge.orchestration.patterns import forward, unanimous
from converge.store import Store


def tagged(tag: str) -> Any:
    """An agent that wraps its only input: ``tag(value)``."""

    async def run(inputs: dict[str, Any]) -> str:
        (value,) = inputs.values()
        return f"{tag}({value})"

    run.__name__ = tag
    return run


def rounds_supervisor(plan: list[dict[str, str]], seen: list[Any]) -> Any:
    """A supervisor that hands out ``plan[i]`` in round i, then returns what it gathered."""

    async def boss(inputs: dict[str, Any]) -> dict[str, Any]:
        results = inputs["gather.output"]
        seen.append(None if results is MISSING else results)
        if len(seen) <= len(plan):
            return {"assign": plan[len(seen) - 1]}
        return {"done": {"task": inputs["task"], "last": results}}

    return boss


async def test_pipeline_runs_each_step_on_the_previous_output(store: Store) -> None:
    graph = pipeline(tagged("a"), tagged("b"), tagged("c"), inputs=["text"])
    result = await Engine(store).execute(graph, {"text": "x"})
    assert result.output == "c(b(a(x)))"
    assert [n.id for n in graph.nodes] == ["a", "b", "c"]


async def test_fan_out_runs_every_branch_and_merges(store: Store) -> None:
    graph = fan_out([tagged("web"), tagged("papers")], inputs=["topic"])
    result = await Engine(store).execute(graph, {"topic": "t"})
    assert result.output == {"web": "web(t)", "papers": "papers(t)"}

    async def count(inputs: dict[str, Any]) -> list[str]:
        return sorted(inputs)

    custom = fan_out({"x": tagged("x"), "y": tagged("y")}, merge=count, inputs=["topic"])
    assert (await Engine(store).execute(custom, {"topic": "t"})).output == ["x.output", "y.output"]


async def test_supervisor_assigns_reads_and_loops_until_done(store: Store) -> None:
    seen: list[Any] = []
    plan = [{"up": "p1", "low": "p2"}, {"low": "p3"}]
    graph = supervisor(rounds_supervisor(plan, seen), [tagged("up"), tagged("low")])
    result = await Engine(store).execute(graph, {"task": "essay"})
    # each round's results hold the workers assigned that round only
    assert seen == [None, {"up": "up(p1)", "low": "low(p2)"}, {"low": "low(p3)"}]
    assert result.output == {"task": "essay", "last": {"low": "low(p3)"}}


async def test_supervisor_rounds_are_bounded_by_max_iterations() -> None:
    forever = [{"w": "again"}] * 50
    graph = supervisor(rounds_supervisor(forever, []), [tagged("w")], max_iterations=3)
    with pytest.raises(RunFailed, match="would run a 4th time"):
        await graph.execute({"task": "t"})


async def test_supervisor_assigning_an_unknown_worker_fails_naming_the_workers() -> None:
    graph = supervisor(rounds_supervisor([{"ghost": "x"}], []), [tagged("a"), tagged("b")])
    with pytest.raises(RunFailed) as info:
        await graph.execute({"task": "t"})
    result = info.value.result
    assert result.failed_node == "assign"
    assert "UnknownRoute: 'boss' chose 'ghost', which is not one of its choices: a, b" in (
        result.error or ""
    )

    async def vague(inputs: dict[str, Any]) -> str:
        return "no idea"

    with pytest.raises(RunFailed, match=r"must return \{'assign'"):
        await supervisor(vague, [tagged("a")]).execute({"task": "t"})


async def test_debate_rounds_show_each_debater_the_others_last_arguments(store: Store) -> None:
    heard: dict[str, list[str]] = {}

    def debater(name: str) -> Any:
        async def argue(inputs: dict[str, Any], ctx: Any) -> str:
            heard[ctx.node_id] = sorted(k for k in inputs if k != "topic")
            return f"{ctx.node_id} on {inputs['topic']}"

        return argue

    async def judge(inputs: dict[str, Any]) -> list[str]:
        return sorted(str(v) for v in inputs.values())

    graph = debate({n: debater(n) for n in ("a", "b", "c")}, judge, rounds=2)
    result = await Engine(store).execute(graph, {"topic": "tides"})
    assert heard == {
        "a_1": [],
        "b_1": [],
        "c_1": [],
        "a_2": ["b_1.output", "c_1.output"],
        "b_2": ["a_1.output", "c_1.output"],
        "c_2": ["a_1.output", "b_1.output"],
    }
    assert result.output == ["a_2 on tides", "b_2 on tides", "c_2 on tides", "tides"]


def voter(vote: str) -> Any:
    async def run(inputs: dict[str, Any]) -> str:
        assert set(inputs) == {"topic", "pro_1.output", "con_1.output"}
        return vote

    return run


async def test_a_jury_decides_a_debate_by_its_rule(store: Store) -> None:
    jury = {"j1": voter("pro"), "j2": voter("con"), "j3": voter("pro")}
    graph = debate([tagged("pro"), tagged("con")], jury=jury, rounds=1, inputs=["topic"])
    result = await Engine(store).execute(graph, {"topic": "t"})
    assert result.output == {
        "verdict": "pro",
        "votes": {"j1": "pro", "j2": "con", "j3": "pro"},
        "count": 2,
    }
    split = debate([tagged("pro"), tagged("con")], jury=jury, rounds=1, rule=unanimous)
    assert (await split.execute({"topic": "t"})).output["verdict"] is None


def splitting_manager(*members: str) -> Any:
    """Gives every member ``<task>.<member>`` in round one, then returns their results."""

    async def manage(inputs: dict[str, Any]) -> dict[str, Any]:
        results = inputs["gather.output"]
        if results is MISSING:
            return {"assign": {m: f"{inputs['task']}.{m}" for m in members}}
        return {"done": results}

    return manage


async def test_hierarchy_nests_managers_to_any_depth(store: Store) -> None:
    graph = hierarchy(
        splitting_manager("eng", "ops"),
        {
            "eng": (
                splitting_manager("backend", "frontend"),
                {
                    "backend": (splitting_manager("db", "api"), [tagged("db"), tagged("api")]),
                    "frontend": tagged("frontend"),
                },
            ),
            "ops": (splitting_manager("oncall"), [tagged("oncall")]),
        },
    )
    engine = Engine(store)
    result = await engine.execute(graph, {"task": "ship"})
    assert result.output == {
        "eng": {
            "backend": {"db": "db(ship.eng.backend.db)", "api": "api(ship.eng.backend.api)"},
            "frontend": "frontend(ship.eng.frontend)",
        },
        "ops": {"oncall": "oncall(ship.ops.oncall)"},
    }
    trace = [n["node_id"] for n in (await engine.trace(result.run_id))["nodes"]]
    assert "eng/backend/db" in trace and "ops/oncall" in trace


async def test_router_runs_only_the_chosen_route(store: Store) -> None:
    ran: list[str] = []

    def desk(name: str) -> Any:
        async def answer(inputs: dict[str, Any]) -> str:
            ran.append(name)
            return f"{name}: {inputs['query']}"

        return answer

    async def triage(inputs: dict[str, Any]) -> str:
        return str(inputs["query"]).split()[0]

    graph = router(triage, {"billing": desk("billing"), "tech": desk("tech")})
    result = await Engine(store).execute(graph, {"query": "tech it crashed"})
    assert (result.output, ran) == ("tech: tech it crashed", ["tech"])

    with pytest.raises(RunFailed) as info:
        await Engine(store).execute(graph, {"query": "weather today"})
    failed = info.value.result
    assert failed.failed_node == "unknown_route"
    assert "'triage' chose 'weather', which is not one of its choices: billing, tech" in (
        failed.error or ""
    )
    assert ran == ["tech"]


async def test_unknown_route_carries_the_choices() -> None:
    error = UnknownRoute("triage", "weather", ["billing", "tech"])
    assert (error.chooser, error.choice, error.choices) == (
        "triage",
        "weather",
        ("billing", "tech"),
    )
    assert isinstance(error, LookupError)


def once(worker: str) -> Any:
    """A supervisor that gives the task to ``worker`` and returns its result."""

    async def boss(inputs: dict[str, Any]) -> dict[str, Any]:
        if inputs["gather.output"] is MISSING:
            return {"assign": {worker: inputs["task"]}}
        return {"done": inputs["gather.output"][worker]}

    return boss


boss_once = once("w")


async def count(inputs: dict[str, Any]) -> int:
    return len(inputs)


BUILDERS: dict[str, tuple[Callable[[], Graph], dict[str, Any], str, Any]] = {
    # name: (build, inputs, the sink to extend from, the extended run's output)
    "pipeline": (lambda: pipeline(tagged("a"), tagged("b")), {"x": 1}, "b", "after(b(a(1)))"),
    "fan_out": (
        lambda: fan_out([tagged("a")], inputs=["x"]),
        {"x": 1},
        "merge",
        "after({'a': 'a(1)'})",
    ),
    "supervisor": (
        lambda: supervisor(boss_once, [tagged("w")]),
        {"task": 1},
        "done",
        "after(w(1))",
    ),
    "debate": (
        lambda: debate([tagged("p"), tagged("q")], count, rounds=1),
        {"topic": 1},
        "count",
        "after(3)",
    ),
    "hierarchy": (
        lambda: hierarchy(once("m"), {"m": (boss_once, [tagged("w")])}),
        {"task": 1},
        "done",
        "after(w(1))",
    ),
    "router": (
        lambda: router({"pick": forward}, {"go": tagged("go")}),
        {"query": "go"},
        "routed",
        "after(go(go))",
    ),
}


@pytest.mark.parametrize("pattern", list(BUILDERS))
async def test_every_pattern_prints_validates_and_extends(pattern: str) -> None:
    build, inputs, sink, extended = BUILDERS[pattern]
    graph = build()
    text = graph.describe()
    assert text.startswith(f"graph {pattern!r}: ")
    for node in graph.nodes:
        assert f"    {node.id} " in text
    plan = graph.compile()
    assert [n.id for n in plan.sinks] == [sink]
    graph.add_node("after", tagged("after"), inputs=[f"{sink}.output"])
    assert [n.id for n in graph.compile().sinks] == ["after"]
    result = await graph.execute(inputs)
    assert result.output == extended


async def test_agents_may_be_given_by_name() -> None:
    registry = {"a": tagged("a"), "b": tagged("b")}
    graph = pipeline("a", "b", agents=registry, inputs=["x"])
    assert (await graph.execute({"x": 0})).output == "b(a(0))"
    assert "a -> b" in graph.describe()


def test_bad_arguments_are_refused_before_anything_runs() -> None:
    with pytest.raises(ValidationError, match="two steps have the id 'a'"):
        pipeline(tagged("a"), tagged("a"))
    with pytest.raises(ValidationError, match="the pattern adds itself"):
        supervisor(boss_once, {"gather": tagged("g")})
    with pytest.raises(ValidationError, match="at least two debaters"):
        debate([tagged("a")], tagged("j"))
    with pytest.raises(ValidationError, match="a judge or a jury"):
        debate([tagged("a"), tagged("b")], tagged("j"), jury=[tagged("k")])
    with pytest.raises(ValidationError, match="rounds must be"):
        debate([tagged("a"), tagged("b")], tagged("j"), rounds=0)
    with pytest.raises(ValidationError, match=r"\(manager agent, members\)"):
        hierarchy(boss_once, {"m": boss_once})
    with pytest.raises(ValidationError, match="the pattern adds itself"):
        router(tagged("r"), {"routed": tagged("x")})
