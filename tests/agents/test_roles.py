"""The five roles: each in rule mode inside a real graph run by the engine (the router and
supervisor patterns, a writer/critic loop, YAML kinds), and in LLM mode with a scripted
provider (good structured output; bad output shown back, retried, then a typed error)."""

from __future__ import annotations

from typing import Any

import pytest

from converge.agents import (
    Criteria,
    Critic,
    NoMatchingRoute,
    Planner,
    Router,
    StructuredOutputError,
    Supervisor,
    Worker,
)
from converge.errors import ValidationError
from converge.orchestration import (
    Engine,
    Graph,
    GraphConfig,
    RunFailed,
    UnknownRoute,
    kind_names,
    loads_graph,
    router,
    supervisor,
)
from converge.store import Store
from tests.agents._scripted import ScriptedProvider

ROUTES = {"billing": "invoices, refunds, payments", "tech": "bugs, errors, outages"}


def desk(name: str) -> Worker:
    return Worker(template=name + " desk answers: {query}", name=name)


def triage(**options: Any) -> Router:
    rules = {"billing": ["invoice", r"refunds?"], "tech": [r"\berror\b", "crash"]}
    return Router(ROUTES, rules=rules, name="triage", **options)


# -- router ----------------------------------------------------------------------------------------


async def test_rule_router_in_the_router_pattern_takes_the_first_matching_route(
    store: Store,
) -> None:
    graph = router(triage(default="tech"), {"billing": desk("billing"), "tech": desk("tech")})
    engine = Engine(store)
    cases = {
        "Where is my INVOICE?": "billing desk answers: Where is my INVOICE?",
        "the app shows an error after a crash": "tech desk answers: the app shows an error "
        "after a crash",
        "hello there": "tech desk answers: hello there",  # no rule: the default
    }
    for query, answer in cases.items():
        assert (await engine.execute(graph, {"query": query})).output == answer


async def test_rule_router_without_a_match_or_default_fails_naming_the_choices() -> None:
    graph = router(triage(), {"billing": desk("billing"), "tech": desk("tech")})
    with pytest.raises(RunFailed) as info:
        await graph.execute({"query": "hello there"})
    assert info.value.result.failed_node == "triage"
    assert "NoMatchingRoute" in (info.value.result.error or "")
    assert "its choices: billing, tech" in (info.value.result.error or "")

    with pytest.raises(NoMatchingRoute) as direct:
        triage().choose("hello")
    assert isinstance(direct.value, UnknownRoute)
    assert (direct.value.chooser, direct.value.choice, direct.value.choices) == (
        "triage",
        "hello",
        ("billing", "tech"),
    )


def test_router_configuration_is_checked_up_front() -> None:
    with pytest.raises(ValidationError) as info:
        Router(ROUTES, default="sales")
    assert info.value.field == "default"
    with pytest.raises(ValidationError) as info:
        Router(ROUTES, rules={"sales": ["buy"]})
    assert info.value.field == "rules.sales"
    with pytest.raises(ValidationError) as info:
        Router(ROUTES, rules={"tech": ["(unclosed"]})
    assert info.value.field == "rules.tech.0"
    with pytest.raises(ValidationError):
        Router({})


async def test_llm_router_chooses_by_structured_output(store: Store) -> None:
    llm = ScriptedProvider([{"route": "tech", "reason": "an outage"}])
    graph = router(
        Router(ROUTES, provider=llm, name="triage"),
        {"billing": desk("billing"), "tech": desk("tech")},
    )
    result = await Engine(store).execute(graph, {"query": "nothing loads"})
    assert result.output == "tech desk answers: nothing loads"
    messages, schema = llm.calls[0]
    assert schema is not None and schema["properties"]["route"]["enum"] == ["billing", "tech"]
    assert "- billing: invoices, refunds, payments" in messages[0].content
    assert messages[-1].content == "nothing loads"
    assert result.usage.tokens_in == 10 and result.usage.tokens_out == 5


async def test_llm_router_retries_an_unknown_route_then_fails_clearly() -> None:
    llm = ScriptedProvider([{"route": "sales"}, {"route": "billing"}])
    graph = router(
        Router(ROUTES, provider=llm, name="triage"),
        {"billing": desk("billing"), "tech": desk("tech")},
    )
    assert (await graph.execute({"query": "q"})).output == "billing desk answers: q"
    assert "route 'sales' is not one of billing, tech" in llm.said(1)

    bad = ScriptedProvider(["not json", {"route": "sales"}, {"pick": "tech"}])
    with pytest.raises(StructuredOutputError) as info:
        await Router(ROUTES, provider=bad, attempts=3).run({"query": "q"}, _ctx())
    assert info.value.attempts == 3 and len(info.value.problems) == 3
    assert "route 'sales' is not one of billing, tech" in info.value.problems[1]
    assert info.value.output == {"pick": "tech"}


# -- worker ----------------------------------------------------------------------------------------


async def test_worker_rule_modes_function_template_and_context(store: Store) -> None:
    async def shout(inputs: dict[str, Any]) -> str:
        return str(inputs["topic"]).upper()

    def sign(inputs: dict[str, Any], ctx: Any) -> str:
        return f"{inputs['shout.output']} ({ctx.node_id})"

    graph = (
        Graph("work")
        .add_node("shout", Worker(shout), inputs=["topic"])
        .add_node("sign", Worker(sign), inputs=["shout.output"])
        .add_node("wrap", Worker(template="<<{sign}>> on {topic}"), inputs=["sign.output", "topic"])
        .connect("shout", "sign")
        .connect("sign", "wrap")
    )
    result = await Engine(store).execute(graph, {"topic": "tides"})
    assert result.output == "<<TIDES (sign)>> on tides"
    assert result.outputs["sign"] == "TIDES (sign)"

    with pytest.raises(ValidationError, match=r"names \{missing\}"):
        await Worker(template="{missing}").run({"topic": "t"}, _ctx())
    with pytest.raises(ValidationError, match="a function, a template, or a provider"):
        Worker()


async def test_worker_llm_mode_sends_the_prompt_and_returns_text_or_json() -> None:
    llm = ScriptedProvider(["a haiku about tides", {"title": "Tides"}])
    poet = Worker(provider=llm, prompt="Write a haiku about {topic}.", system="Be brief.")
    assert poet.mode == "llm"
    assert await poet.run({"topic": "tides"}, _ctx()) == "a haiku about tides"
    assert [(m.role, m.content) for m in llm.calls[0][0]] == [
        ("system", "Be brief."),
        ("user", "Write a haiku about tides."),
    ]
    schema = {"type": "object", "properties": {"title": {"type": "string"}}}
    titler = Worker(provider=llm, prompt="Title: {topic}", response_schema=schema)
    assert await titler.run({"topic": "tides"}, _ctx()) == {"title": "Tides"}
    assert llm.calls[1][1] == schema


# -- critic ----------------------------------------------------------------------------------------


async def test_critic_in_a_writer_critic_loop_sends_drafts_back_until_they_pass(
    store: Store,
) -> None:
    async def write(inputs: dict[str, Any]) -> str:
        verdict = inputs["review.output"]
        if not verdict:  # MISSING on the first pass
            return f"draft on {inputs['topic']} TODO"
        fixes = " ".join(verdict["reasons"])
        return f"better draft on {inputs['topic']}, with a conclusion ({len(fixes)})"

    review = Critic(Criteria(min_length=10, required=["conclusion"], forbidden=["TODO"]))
    graph = (
        Graph("loop", config=GraphConfig(max_iterations=4))
        .add_node("writer", Worker(write), inputs=["topic", "review.output"])
        .add_node("review", review, inputs=["writer.output"])
        .add_node(
            "publish",
            Worker(template="published at {score}", name="p"),
            inputs=["review.output.score"],
        )
        .connect("writer", "review")
        .connect("review", "writer", when="not review.output.passed")
        .connect("review", "publish", when="review.output.passed")
    )
    result = await Engine(store).execute(graph, {"topic": "tides"})
    assert result.output == "published at 1.0"
    assert result.outputs["writer"].startswith("better draft on tides, with a conclusion")
    assert result.outputs["review"] == {
        "score": 1.0,
        "passed": True,
        "reasons": ["meets all 3 criteria"],
    }
    first = review.judge("draft on tides TODO")
    assert first["passed"] is False and first["score"] == pytest.approx(1 / 3)
    assert first["reasons"] == ["missing required 'conclusion'", "contains forbidden 'TODO'"]


def test_critic_checks_patterns_json_schema_and_threshold() -> None:
    schema = {"type": "object", "required": ["name"], "properties": {"age": {"type": "integer"}}}
    critic = Critic({"json_schema": schema, "forbidden_patterns": [r"\d{3}-\d{4}"]}, threshold=0.5)
    assert critic.judge('{"name": "Ada", "age": 36}')["passed"] is True
    verdict = critic.judge({"age": "old"})
    assert verdict["score"] == 0.5 and verdict["passed"] is True
    assert verdict["reasons"] == [
        "does not meet the JSON schema at (root): 'name' is a required property (and 1 more)"
    ]
    assert critic.judge("call 555-1234")["reasons"] == [
        "matches forbidden pattern '\\\\d{3}-\\\\d{4}'",
        "is not JSON, so it cannot meet the JSON schema",
    ]
    assert Critic({"required_patterns": ["^#"]}).judge("# Title")["passed"] is True

    with pytest.raises(ValidationError) as info:
        Critic({"json_schema": {"type": "nonsense"}})
    assert info.value.field == "json_schema"
    with pytest.raises(ValidationError, match="at least one criterion"):
        Critic()
    with pytest.raises(ValidationError, match="bad criteria"):
        Critic({"min_lenght": 3})


async def test_critic_names_which_input_it_judges() -> None:
    critic = Critic({"min_length": 1}, subject="draft.output")
    verdict = await critic.run({"draft.output": "x", "topic": "t"}, _ctx())
    assert verdict["passed"] is True
    with pytest.raises(ValidationError, match="name the one to judge"):
        await Critic({"min_length": 1}).run({"a": 1, "b": 2}, _ctx())


async def test_llm_critic_returns_the_models_checked_verdict_and_applies_hard_criteria() -> None:
    good = {"score": 0.9, "passed": True, "reasons": ["clear"]}
    llm = ScriptedProvider([{"score": 2, "passed": True, "reasons": []}, good, good])
    critic = Critic(provider=llm, rubric=["is clear", "is correct"], threshold=0.8)
    assert await critic.run({"draft.output": "text"}, _ctx()) == good
    assert "score must be in [0, 1]" in llm.said(1)
    assert "- is clear\n- is correct" in llm.calls[0][0][0].content

    strict = Critic({"forbidden": ["TODO"]}, provider=llm)
    verdict = await strict.run({"draft.output": "text TODO"}, _ctx())
    assert verdict == {
        "score": 0.0,
        "passed": False,
        "reasons": ["clear", "contains forbidden 'TODO'"],
    }

    bad = ScriptedProvider([{"score": "high"}] * 2)
    with pytest.raises(StructuredOutputError) as info:
        await Critic(provider=bad, attempts=2).run({"x": "y"}, _ctx())
    assert info.value.role == "critic" and info.value.attempts == 2


# -- supervisor ------------------------------------------------------------------------------------


def echo(tag: str) -> Worker:
    async def run(inputs: dict[str, Any]) -> Any:
        (part,) = inputs.values()
        return f"{tag}[{part}]" if isinstance(part, str) else [f"{tag}[{p}]" for p in part]

    return Worker(run, name=tag)


async def test_rule_supervisor_splits_round_robin_then_aggregates(store: Store) -> None:
    graph = supervisor(Supervisor(["a", "b"], name="boss"), [echo("a"), echo("b")])
    result = await Engine(store).execute(graph, {"task": "one\ntwo\nthree\n"})
    assert result.outputs["assign"] == {"a": "one\nthree", "b": "two"}
    assert result.output == "a[one\nthree]\nb[two]"

    listed = await Engine(store).execute(graph, {"task": ["x", "y", "z"]})
    assert listed.outputs["assign"] == {"a": ["x", "z"], "b": ["y"]}
    assert listed.output == [["a[x]", "a[z]"], ["b[y]"]]

    one = await Engine(store).execute(graph, {"task": "only"})
    assert one.outputs["assign"] == {"a": "only"} and one.output == "a[only]"
    assert (await Engine(store).execute(graph, {"task": ""})).output == ""


async def test_llm_supervisor_assigns_reads_results_and_declares_done(store: Store) -> None:
    llm = ScriptedProvider(
        [
            {"assign": {"ghost": "x"}},  # unknown worker: shown back, retried
            {"assign": {"a": "intro", "b": "body"}},
            {"done": "intro and body, merged"},
        ]
    )
    boss = Supervisor({"a": "writes intros", "b": "writes bodies"}, provider=llm, name="boss")
    graph = supervisor(boss, [echo("a"), echo("b")])
    result = await Engine(store).execute(graph, {"task": "an essay"})
    assert result.output == "intro and body, merged"
    assert "unknown worker(s) 'ghost'; the workers are a, b" in llm.said(1)
    assert "Results of the last round:" in llm.said(2) and "a[intro]" in llm.said(2)


# -- planner role and YAML -------------------------------------------------------------------------


async def test_planner_role_returns_a_checked_plan_as_data() -> None:
    planner = Planner({"coder": "writes code", "tester": "tests code"}, {"max_steps": 3})
    plan = await planner.run({"goal": "write and test the parser"}, _ctx())
    assert [(s["id"], s.get("depends_on", [])) for s in plan["steps"]] == [
        ("coder", []),
        ("tester", ["coder"]),
    ]
    assert plan["steps"][0]["task"] == "writes code: write and test the parser"


YAML = """
name: roles
nodes:
  - {id: triage, agent: triage, inputs: [query]}
  - {id: shout, agent: shout, inputs: [query]}
  - {id: review, agent: review, inputs: [shout.output]}
  - {id: plan, agent: plan, inputs: [query]}
edges:
  - {from: triage, to: shout, when: "triage.output == 'loud'"}
  - {from: shout, to: review}
  - {from: triage, to: plan}
agents:
  triage: {kind: router, routes: {loud: "shouting", calm: "calm"}, rules: {loud: ["!"]},
           default: calm}
  shout: {kind: worker, template: "{input}!!"}
  review: {kind: critic, criteria: {max_length: 10}}
  plan: {kind: planner, agents: {coder: "writes code"}, constraints: {max_steps: 2}}
"""


async def test_roles_are_yaml_kinds(store: Store) -> None:
    assert {"worker", "router", "critic", "supervisor", "planner"} <= set(kind_names())
    result = await Engine(store).execute(loads_graph(YAML), {"query": "code it now!"})
    assert result.outputs["triage"] == "loud"
    assert result.outputs["shout"] == "code it now!!!"
    assert result.outputs["review"]["reasons"] == ["too long: 14 > 10 characters"]
    assert result.outputs["plan"]["steps"][0]["agent"] == "coder"

    with pytest.raises(ValidationError) as info:
        loads_graph(YAML.replace("default: calm", "default: loud, colour: red"))
    assert "unknown option 'colour'" in str(info.value)
    with pytest.raises(ValidationError) as info:
        loads_graph(YAML.replace("default: calm", "default: angry"))
    assert info.value.field == "agents.triage.default"
    assert info.value.line is not None


def test_yaml_provider_switches_on_llm_mode() -> None:
    graph = loads_graph(
        YAML.replace("default: calm", "provider: tests.agents.test_roles:make_provider")
    )
    node = graph.agents["triage"]
    assert isinstance(node, Router) and node.mode == "llm"
    with pytest.raises(ValidationError, match="not an LLMProvider"):
        loads_graph(YAML.replace("default: calm", "provider: tests.agents.test_roles:ROUTES"))


def make_provider() -> ScriptedProvider:
    return ScriptedProvider([])


class _Ctx:
    run_id, node_id, attempt, idempotency_key = "run", "node", 1, "run/node/1"

    def report_usage(self, *args: Any, **kwargs: Any) -> None:
        pass


def _ctx() -> Any:
    return _Ctx()
