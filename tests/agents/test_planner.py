"""The goal planner: plans are checked against the agents and constraints before they run, bad
plans are refused with a typed reason, a plan runs as an ordinary graph, and a failing step is
re-planned and its replacements spliced in so the run completes; in rule and LLM mode."""

from __future__ import annotations

from typing import Any

import pytest

from converge.agents import (
    AvailableAgent,
    GoalPlanner,
    Plan,
    PlanConstraints,
    PlanRejected,
    PlanStep,
    StructuredOutputError,
    Worker,
)
from converge.errors import ValidationError
from converge.orchestration import Engine, RunFailed
from converge.store import Store
from tests.agents._scripted import ScriptedProvider

GOAL = "Build and deploy a REST API for user management"


def doer(name: str, log: list[tuple[str, str]] | None = None) -> Worker:
    async def run(inputs: dict[str, Any]) -> str:
        if log is not None:
            log.append((name, inputs["task"]))
        before = [str(v) for k, v in inputs.items() if k.endswith(".output")]
        return f"{name}({'+'.join(before)})"

    return Worker(run, name=name)


def broken(name: str) -> Worker:
    async def run(inputs: dict[str, Any]) -> str:
        raise RuntimeError(f"{name} is down")

    return Worker(run, name=name)


def team(log: list[tuple[str, str]] | None = None, coder: Worker | None = None) -> list[Any]:
    return [
        AvailableAgent("architect", doer("architect", log), "Design the API schema", minutes=5),
        AvailableAgent(
            "code_writer",
            coder or doer("code_writer", log),
            "Implement the endpoints",
            capabilities=("code",),
            keywords=("build",),
            minutes=10,
        ),
        AvailableAgent("tester", doer("tester", log), "Write and run tests", keywords=("build",)),
        AvailableAgent("deployer", doer("deployer", log), "Deploy to staging", minutes=2),
        AvailableAgent("translator", doer("translator", log), "Translate documents"),
    ]


async def test_rule_plan_matches_agents_to_the_goal_in_the_order_given() -> None:
    planner = GoalPlanner(GOAL, team(), {"max_steps": 20, "time_budget_minutes": 30})
    plan = await planner.create_plan()
    assert [(s.id, s.agent, s.depends_on) for s in plan.steps] == [
        ("architect", "architect", ()),
        ("code_writer", "code_writer", ("architect",)),
        ("tester", "tester", ("code_writer",)),
        ("deployer", "deployer", ("tester",)),
    ]
    assert plan.steps[0].task == f"Design the API schema: {GOAL}"
    assert planner.plan is plan and planner.mode == "rule"


async def test_plans_that_do_not_fit_are_refused_before_running() -> None:
    with pytest.raises(PlanRejected) as info:
        await GoalPlanner(GOAL, team(), PlanConstraints(max_steps=3)).create_plan()
    assert info.value.reason == "too_many_steps"
    with pytest.raises(PlanRejected) as info:
        await GoalPlanner(GOAL, team(), {"time_budget_minutes": 15}).create_plan()
    assert info.value.reason == "over_budget"  # 5 + 10 + 1 + 2 minutes in a chain
    with pytest.raises(PlanRejected) as info:
        await GoalPlanner("bake a cake", team()).create_plan()
    assert info.value.reason == "no_match"

    planner = GoalPlanner(GOAL, team())
    bad = {
        "unknown_agent": [PlanStep("a", "wizard", "magic")],
        "unknown_dependency": [PlanStep("a", "tester", "t", ("ghost",))],
        "cycle": [PlanStep("a", "tester", "t", ("b",)), PlanStep("b", "tester", "t", ("a",))],
        "duplicate_step": [PlanStep("a", "tester", "t"), PlanStep("a", "deployer", "d")],
        "bad_step_id": [PlanStep("not an id", "tester", "t")],
        "empty": [],
    }
    for reason, steps in bad.items():
        with pytest.raises(PlanRejected) as info:
            planner.check(Plan(GOAL, tuple(steps)))
        assert info.value.reason == reason, reason
    assert isinstance(info.value, ValidationError)

    # parallel steps: the budget is checked on the critical path, not the sum
    parallel = Plan(
        GOAL,
        (
            PlanStep("design", "architect", "d"),
            PlanStep("code", "code_writer", "c", ("design",)),
            PlanStep("test", "tester", "t", ("design",)),
        ),
    )
    assert GoalPlanner(GOAL, team(), {"time_budget_minutes": 15}).check(parallel) is parallel


def test_planner_options_are_checked() -> None:
    with pytest.raises(ValidationError) as info:
        GoalPlanner(GOAL, team(), {"max_steps": 0})
    assert info.value.field == "max_steps"
    with pytest.raises(ValidationError):
        GoalPlanner("", team())
    with pytest.raises(ValidationError):
        GoalPlanner(GOAL, [])


async def test_a_plan_runs_as_a_graph_with_each_step_given_its_task(store: Store) -> None:
    log: list[tuple[str, str]] = []
    planner = GoalPlanner(GOAL, team(log))
    plan = await planner.create_plan()
    graph = planner.to_graph(plan)
    assert [n.id for n in graph.nodes] == ["architect", "code_writer", "tester", "deployer"]
    result = await Engine(store).execute(graph, {"goal": GOAL})
    assert result.output == "deployer(tester(code_writer(architect())))"
    assert log[1] == ("code_writer", f"Implement the endpoints: {GOAL}")

    again = await planner.execute()  # seed 002 §9.1: planner.execute(plan)
    assert again.output == result.output


async def test_a_failing_step_is_replanned_and_the_run_completes(store: Store) -> None:
    agents = [
        *team(coder=broken("code_writer")),
        AvailableAgent("backup_coder", doer("backup_coder"), "Writes code", capabilities=("code",)),
    ]
    planner = GoalPlanner(GOAL, agents)
    plan = await planner.create_plan()
    engine = Engine(store, on_node_failed=planner.on_node_failed(plan))
    result = await engine.execute(planner.to_graph(plan), {"goal": GOAL})
    assert result.output == "deployer(tester(backup_coder(architect())))"
    trace = await engine.trace(result.run_id)
    assert [(n["node_id"], n["status"]) for n in trace["nodes"]] == [
        ("architect", "success"),
        ("code_writer", "replanned"),
        ("code_writer_by_backup_coder", "success"),
        ("tester", "success"),
        ("deployer", "success"),
    ]

    new = await planner.replan("code_writer", "down", {"architect": "x"})
    assert [(s.id, s.agent, s.replaces) for s in new.steps] == [
        ("code_writer_by_backup_coder", "backup_coder", "code_writer"),
        ("tester", "tester", None),
        ("deployer", "deployer", None),
    ]
    assert new.completed == ("architect",)


async def test_a_refused_replan_lets_the_failure_stand(store: Store) -> None:
    planner = GoalPlanner("deploy it", [AvailableAgent("deployer", broken("deployer"), "deploy")])
    plan = await planner.create_plan()
    engine = Engine(store, on_node_failed=planner.on_node_failed(plan))
    with pytest.raises(RunFailed, match="deployer is down"):
        await engine.execute(planner.to_graph(plan), {"goal": "deploy it"})
    assert [getattr(e, "reason", None) for e in planner.rejections] == ["no_alternative"]


async def test_llm_planner_validates_the_models_plan_and_retries() -> None:
    good = {
        "steps": [
            {"id": "design", "agent": "architect", "task": "Design API schema"},
            {"id": "ship", "agent": "deployer", "task": "Deploy", "depends_on": ["design"]},
        ]
    }
    llm = ScriptedProvider([{"steps": [{"id": "x", "agent": "wizard", "task": "t"}]}, good])
    planner = GoalPlanner(GOAL, team(), {"max_steps": 5}, provider=llm)
    plan = await planner.create_plan()
    assert [(s.id, s.depends_on) for s in plan.steps] == [("design", ()), ("ship", ("design",))]
    assert "'wizard', which is not available" in llm.said(1)
    schema = llm.calls[0][1]
    assert schema is not None
    assert "architect" in schema["properties"]["steps"]["items"]["properties"]["agent"]["enum"]
    assert "at most 5 steps" in llm.calls[0][0][0].content

    too_long = {"steps": [{"id": f"s{i}", "agent": "tester", "task": "t"} for i in range(9)]}
    bad = ScriptedProvider([too_long, {"plan": []}])
    with pytest.raises(StructuredOutputError) as info:
        await GoalPlanner(GOAL, team(), {"max_steps": 5}, provider=bad, attempts=2).create_plan()
    assert "more than max_steps=5" in info.value.problems[0]


async def test_llm_replan_splices_the_models_replacement_chain(store: Store) -> None:
    llm = ScriptedProvider(
        [
            {
                "steps": [
                    {"id": "design", "agent": "architect", "task": "Design"},
                    {
                        "id": "code",
                        "agent": "code_writer",
                        "task": "Code",
                        "depends_on": ["design"],
                    },
                    {"id": "ship", "agent": "deployer", "task": "Ship", "depends_on": ["code"]},
                ]
            },
            {
                "steps": [
                    {"id": "spec", "agent": "architect", "task": "Write a tighter spec"},
                    {"id": "recode", "agent": "tester", "task": "Code it test-first"},
                ]
            },
        ]
    )
    planner = GoalPlanner(GOAL, team(coder=broken("code_writer")), provider=llm)
    plan = await planner.create_plan()
    result = await planner.execute(plan)
    assert result.output == "deployer(tester(architect(architect())))"
    assert "Step 'code' (agent 'code_writer', task 'Code') failed" in llm.said(1)
    assert "RuntimeError: code_writer is down" in llm.said(1)
