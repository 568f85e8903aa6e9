"""Graphs in YAML and Python: the seed's schema, the builder, and every validation error located."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from converge.core.agent import Agent
from converge.errors import AgentModeError, ValidationError
from converge.orchestration import Graph, GraphConfig, RetryPolicy, load_graph, loads_graph

SEED_GRAPH = """\
name: code_review_pipeline
description: Multi-stage code review with specialists

nodes:
  - id: analyzer
    agent: code_analyzer
    inputs: [source_code]

  - id: security_reviewer
    agent: security_expert
    inputs: [analyzer.output]
    parallel_group: reviewers

  - id: performance_reviewer
    agent: performance_expert
    inputs: [analyzer.output]
    parallel_group: reviewers

  - id: style_reviewer
    agent: style_checker
    inputs: [analyzer.output]
    parallel_group: reviewers

  - id: aggregator
    agent: review_aggregator
    inputs:
      - security_reviewer.output
      - performance_reviewer.output
      - style_reviewer.output
    wait_for: [reviewers]

  - id: reporter
    agent: report_generator
    inputs: [aggregator.output]

edges:
  - from: analyzer
    to: [security_reviewer, performance_reviewer, style_reviewer]
  - from: [security_reviewer, performance_reviewer, style_reviewer]
    to: aggregator
  - from: aggregator
    to: reporter

config:
  max_iterations: 20
  timeout_seconds: 300
  checkpoint_enabled: true
"""


async def analyze(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"lines": inputs["source_code"].count("\n") + 1}


def reviewer(name: str) -> Any:
    async def review(inputs: dict[str, Any]) -> str:
        return f"{name}: {inputs['analyzer.output']['lines']} lines ok"

    return review


async def aggregate(inputs: dict[str, Any]) -> list[str]:
    return sorted(inputs.values())


def report(inputs: dict[str, Any]) -> str:  # sync: runs in the engine's thread pool
    return " | ".join(inputs["aggregator.output"])


SEED_AGENTS = {
    "code_analyzer": analyze,
    "security_expert": reviewer("security"),
    "performance_expert": reviewer("performance"),
    "style_checker": reviewer("style"),
    "review_aggregator": aggregate,
    "report_generator": report,
}


async def test_the_seed_graph_loads_and_runs(tmp_path: Path) -> None:
    path = tmp_path / "review.yaml"
    path.write_text(SEED_GRAPH)
    graph = load_graph(path, agents=SEED_AGENTS)
    assert graph.name == "code_review_pipeline"
    assert graph.config == GraphConfig(max_iterations=20, timeout_seconds=300)
    result = await graph.execute({"source_code": "a\nb\nc"})
    assert result.output == "performance: 3 lines ok | security: 3 lines ok | style: 3 lines ok"
    assert set(result.outputs) == {n.id for n in graph.nodes}


async def test_the_builder_makes_the_same_graph_as_yaml() -> None:
    from_yaml = loads_graph(
        """
name: p
nodes:
  - {id: a, agent: first, inputs: [topic]}
  - {id: b, agent: second, inputs: [a.output], timeout: 5, retry: 2, on_error: skip}
edges:
  - {from: a, to: b, when: "a.output != 'stop'"}
config: {max_iterations: 3}
""",
        agents={"first": analyze, "second": report},
    )
    built = (
        Graph(
            "p", config=GraphConfig(max_iterations=3), agents={"first": analyze, "second": report}
        )
        .add_node("a", "first", inputs=["topic"])
        .add_node("b", "second", inputs=["a.output"], timeout=5, retry=2, on_error="skip")
        .connect("a", "b", when="a.output != 'stop'")
    )
    assert built.compile().fingerprint == from_yaml.compile().fingerprint
    assert from_yaml.nodes[1].policy.retry == RetryPolicy(max_retries=2)


async def test_add_parallel_and_connect_by_group() -> None:
    async def split(inputs: dict[str, Any]) -> int:
        return int(inputs["n"])

    def member(k: int) -> Any:
        async def run(inputs: dict[str, Any]) -> int:
            return inputs["split.output"] * k

        return run

    async def total(inputs: dict[str, Any]) -> int:
        return sum(inputs.values())

    graph = (
        Graph("fan")
        .add_node("split", split, inputs=["n"])
        .add_parallel("work", [member(1), member(2), member(3)])
        .add_node("total", total)
        .connect("split", "work")
        .connect("work", "total")
    )
    result = await graph.execute({"n": 10})
    assert result.output == 60
    assert [n.id for n in graph.nodes] == ["split", "work_0", "work_1", "work_2", "total"]


class Upper(Agent):
    async def run(self, inputs: Any, ctx: Any) -> str:
        return str(inputs["text"]).upper()


async def test_agents_by_reference_class_and_instance(tmp_path: Path) -> None:
    graph = loads_graph(
        """
name: refs
nodes:
  - {id: a, agent: upper, inputs: [text]}
  - {id: b, agent: length, inputs: [a.output]}
agents:
  upper: tests.orchestration.test_graph_yaml:Upper
  length: {ref: "tests.orchestration.test_graph_yaml:length", inline: true}
"""
    )
    assert (await graph.execute({"text": "abc"})).output == 3


def length(inputs: dict[str, Any]) -> int:
    return len(inputs["a.output"])


def located(text: str, agents: dict[str, Any] | None = None) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        loads_graph(text, source="g.yaml", agents=SEED_AGENTS if agents is None else agents)
    assert info.value.source == "g.yaml"
    return info.value


BASE = "name: g\nnodes:\n  - {id: a, agent: code_analyzer, inputs: [source_code]}\n"


@pytest.mark.parametrize(
    ("extra", "line", "field", "words"),
    [
        ("  - {id: a, agent: code_analyzer}\n", 4, "nodes[1].id", "duplicate node id"),
        ("  - {id: b, agent: nobody}\n", 4, "nodes[1].agent", "does not define"),
        ("  - {id: b, agent: code_analyzer, inputs: [ghost.output]}\n", 4, "nodes[1].inputs[0]",
         "no node 'ghost'"),
        ("  - {id: b, agent: code_analyzer, inputs: [a.result]}\n", 4, "nodes[1].inputs[0]",
         "'a.output'"),
        ("  - {id: b, agent: code_analyzer, on_eror: skip}\n", 4, "nodes[1].on_eror",
         "unknown key"),
        ("  - {id: b, agent: code_analyzer, on_error: explode}\n", 4, "nodes[1]", "on_error"),
        ("  - {id: b, agent: code_analyzer, wait_for: [nope]}\n", 4, "nodes[1].wait_for[0]",
         "neither a node nor a parallel group"),
        ("  - {id: 'b c', agent: code_analyzer}\n", 4, "nodes[1].id", "not a name"),
        ("  - {id: b, agent: code_analyzer, retry: {max_retries: -1}}\n", 4, "nodes[1].retry",
         "max_retries"),
        ("  - {id: b, agent: code_analyzer}\nedges:\n  - {from: a, to: zz}\n", 6, "edges[0].to",
         "neither a node"),
        ("  - {id: b, agent: code_analyzer}\nedges:\n  - {from: a, to: b, when: 'a.output >'}\n",
         6, "edges[0].when", "col"),
        ("  - {id: b, agent: code_analyzer}\nedges:\n  - {from: a, to: b, when: 'q.output'}\n",
         6, "edges[0].when", "no node 'q'"),
        ("  - {id: b, agent: code_analyzer}\nedges:\n  - {from: a, to: b}\n  - {from: b, to: a}\n",
         7, "config.max_iterations", "the edge b -> a (edges[1]) closes a cycle"),
        ("  - {id: b, agent: code_analyzer, inputs: [a.output]}\n"
         "  - {id: c, agent: code_analyzer}\nedges:\n  - {from: c, to: b}\n",
         4, "nodes[1].inputs[0]", "contradict"),
        ("config: {max_iterations: 0}\n", 4, "config", "max_iterations"),
        ("execution: {max_concurrent_agents: 0}\n", 4, "execution", "max_concurrent_agents"),
        ("agents: {x: {ref: 'no_such_module_x:f'}}\n", 4, "agents.x",
         "no module named 'no_such_module_x'"),
        ("agents: {x: {ref: 'os:path', kind: psi}}\n", 4, "agents.x.kind", "unknown agent kind"),
    ],
)  # fmt: skip
def test_mistakes_are_located(extra: str, line: int | None, field: str, words: str) -> None:
    text = BASE + extra
    if "agents:" in extra:
        text = text.replace("agent: code_analyzer", "agent: x")
    error = located(text, agents={} if "agents:" in extra else None)
    assert words in str(error)
    assert error.field is not None and error.field.startswith(field)
    if line is not None:
        assert error.line == line


def test_yaml_syntax_errors_and_missing_parts_are_located() -> None:
    assert located("name: g\nnodes: [\n").line is not None
    assert "needs `nodes`" in str(located("name: g\n"))
    assert "needs a `name`" in str(located("nodes: []\n"))
    assert "has no nodes" in str(located("name: g\nnodes: []\n"))
    assert "empty" in str(located(""))
    error = located("name: g\nnodes:\n  - {agent: code_analyzer}\n")
    assert (error.line, error.field) == (3, "nodes[0].id")


def test_an_agent_without_run_is_refused() -> None:
    class OnlyDecides(Agent):
        pass

    with pytest.raises(AgentModeError):
        Graph("g").add_node("a", OnlyDecides()).compile()


def test_a_callable_with_three_required_arguments_is_refused() -> None:
    def three(a: Any, b: Any, c: Any) -> None:
        return None

    with pytest.raises(ValidationError, match="takes \\(inputs\\) or \\(inputs, ctx\\)"):
        Graph("g").add_node("a", three).compile()


def test_a_missing_file_is_a_validation_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        load_graph(tmp_path / "nope.yaml")
    assert info.value.source is not None and info.value.source.endswith("nope.yaml")


async def test_missing_graph_inputs_are_refused_before_running() -> None:
    graph = loads_graph(BASE, agents=SEED_AGENTS)
    with pytest.raises(ValidationError, match="source_code"):
        await graph.execute({})


AGENT_GRAPH = """\
name: g
nodes:
  - id: a
    agent: worker
agents:
  spare: {module}:fn
  worker:
    ref: {module}:fn
"""


@pytest.mark.parametrize(
    ("module", "body", "raised"),
    [
        ("env_agent_q", "import os\n\nKEY = os.environ['CONVERGE_TEST_UNSET_KEY']\n",
         "KeyError: 'CONVERGE_TEST_UNSET_KEY' ({file}:3)"),
        ("syntax_agent_q", "def fn(inputs):\n    return (1\n",
         "SyntaxError: '(' was never closed ({file}:2)"),
        ("dependent_agent_q", "import json\nimport no_such_dependency_q\n",
         "ModuleNotFoundError: No module named 'no_such_dependency_q' ({file}:2)"),
    ],
)  # fmt: skip
def test_an_agent_module_that_fails_to_import_is_located(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, body: str, raised: str
) -> None:
    (tmp_path / f"{module}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONVERGE_TEST_UNSET_KEY", raising=False)
    graph = tmp_path / "g.yaml"
    graph.write_text(AGENT_GRAPH.format(module=module))
    with pytest.raises(ValidationError) as info:
        load_graph(graph)
    error = info.value
    assert (error.source, error.line, error.field) == (str(graph), 8, "agents.worker")
    assert f"agent 'worker' ({module}:fn): importing {module} failed: " in str(error)
    assert raised.format(file=f"{module}.py") in str(error)
    assert error.__cause__ is not None  # the original error, for a debugger


def test_an_agent_module_not_found_says_where_modules_are_looked_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".")])
    monkeypatch.setenv("PYTHONPATH", "/nowhere")
    with pytest.raises(ValidationError) as info:
        loads_graph(AGENT_GRAPH.format(module="no_such_agent_module_q"), source="g.yaml")
    text = str(info.value)
    assert info.value.line == 8
    assert "no module named 'no_such_agent_module_q'" in text
    assert "PYTHONPATH (/nowhere)" in text
    assert f"not in the current directory ({tmp_path})" in text
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValidationError) as info:
        loads_graph(AGENT_GRAPH.format(module="no_such_agent_module_q"), source="g.yaml")
    assert f"looked up in the current directory ({tmp_path}), PYTHONPATH" in str(info.value)
