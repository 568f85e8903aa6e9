"""``converge trace``, ``replay`` and ``metrics`` on runs recorded in a SQLite store."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from converge.cli import app
from converge.observability.log_format import JsonFormatter
from converge.orchestration import ConsensusGate, Engine
from converge.protocol import Event
from converge.store import SQLiteStore
from tests.observability._runs import add_coordination, failing_run, subgraph_run
from tests.orchestration.test_consensus_gate import POOL, council, gated, votes

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
async def run(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "runs.db"
    run_id = await subgraph_run(path)
    await add_coordination(path, run_id)
    return path, run_id


def test_trace_json_is_the_trace_plus_the_coordination_graph(run: tuple[Path, str]) -> None:
    path, run_id = run
    code, out, _ = invoke("trace", run_id, "--store", str(path), "--format", "json")
    assert code == 0
    trace = json.loads(out)
    assert {"trace_id", "graph_id", "nodes", "total_tokens", "total_cost", "duration_ms"} <= set(
        trace
    )
    assert trace["trace_id"] == run_id
    assert trace["total_tokens"] == 2300
    assert {o["type"] for o in trace["coordination"]} == {
        "intent",
        "offer",
        "award",
        "receipt",
        "task",
        "ballot",
        "vote",
    }
    edges = {(e["from"], e["to"]): e for e in trace["edges"]}
    assert edges[("review", "write")]["state"] == "taken"
    assert {("analyze", "review"), ("lint", "review")} <= set(edges)  # both edges into the join


def test_trace_tree_mermaid_dot_and_html(run: tuple[Path, str], tmp_path: Path) -> None:
    path, run_id = run
    code, out, _ = invoke("trace", run_id, "--store", str(path))
    assert code == 0
    assert f"run {run_id}" in out and "write [write]" in out and "award" in out
    code, out, _ = invoke("trace", run_id, "--store", str(path), "-f", "mermaid")
    assert code == 0 and out.startswith("flowchart LR") and "n_review --> n_write" in out
    code, out, _ = invoke("trace", run_id, "--store", str(path), "-f", "dot")
    assert code == 0 and out.startswith("digraph run {") and "cluster_n_write" in out
    page = tmp_path / "run.html"
    code, _, err = invoke("trace", run_id, "--store", str(path), "-f", "html", "-o", str(page))
    assert code == 0
    assert f"wrote {page}" in err
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.count("class='node'") == 6


@pytest.fixture
async def gate_run(tmp_path: Path) -> tuple[Path, str, list[str]]:
    """A run whose node ``vote`` is a consensus gate three voters pass unanimously."""
    path = tmp_path / "gate.db"
    voters = votes("yes", "yes", "yes")
    async with await SQLiteStore.open(path) as store, council(store, voters) as services:
        gate = ConsensusGate(POOL, rule="unanimity")
        result = await Engine(store, services=services).execute(gated(gate, []), {"amount": 4})
    return path, result.run_id, [v.did for v in voters]


def test_every_format_shows_the_gate_s_ballot_and_each_vote(
    gate_run: tuple[Path, str, list[str]], tmp_path: Path
) -> None:
    path, run_id, voters = gate_run
    ballot_id = f"gate/{run_id}/vote/1"
    code, out, _ = invoke("trace", run_id, "--store", str(path), "--format", "json")
    assert code == 0
    objects = json.loads(out)["coordination"]
    assert [(o["type"], o["id"], o["node"]) for o in objects if o["type"] == "ballot"] == [
        ("ballot", ballot_id, "vote")
    ]
    assert sorted((o["detail"]["voter"], o["node"]) for o in objects if o["type"] == "vote") == [
        (did, "vote") for did in sorted(voters)
    ]
    code, out, _ = invoke("trace", run_id, "--store", str(path))  # the tree
    assert code == 0
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if "vote [" in line)  # the gate's node
    under = lines[at + 1 : at + 5]
    assert sum("ballot " in line and "(winner yes)" in line for line in under) == 1
    assert sum("vote " in line and "(option yes)" in line for line in under) == 3
    code, out, _ = invoke("trace", run_id, "--store", str(path), "-f", "mermaid")
    assert code == 0 and out.count("n_vote -.- c_") == 4
    code, out, _ = invoke("trace", run_id, "--store", str(path), "-f", "dot")
    assert code == 0 and out.count("n_vote -> c_") == 4
    page = tmp_path / "gate.html"
    code, _, _ = invoke("trace", run_id, "--store", str(path), "-f", "html", "-o", str(page))
    assert code == 0
    text = page.read_text(encoding="utf-8")
    data = text.split("id='trace-data'>", 1)[1].split("</script>", 1)[0]
    embedded = json.loads(data)["coordination"]
    assert sorted(o["type"] for o in embedded if o["node"] == "vote") == ["ballot", *["vote"] * 3]


def test_trace_of_unknown_run_or_store_is_bad_input(run: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = run
    code, out, err = invoke("trace", "nope", "--store", str(path))
    assert (code, out) == (2, "")
    assert err.startswith("error: no run nope in")
    code, _, err = invoke("trace", "nope", "--store", str(tmp_path / "missing.db"))
    assert code == 2 and "no store at" in err
    code, _, _ = invoke("trace", "x", "--store", str(path), "--format", "png")
    assert code == 2


def test_store_from_the_environment(run: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    path, run_id = run
    monkeypatch.setenv("CONVERGE_STORE", str(path))
    code, out, _ = invoke("metrics", run_id, "--json")
    assert code == 0 and json.loads(out)["trace_id"] == run_id


def test_replay_agrees_with_the_records_and_shows_a_past_state(run: tuple[Path, str]) -> None:
    path, run_id = run
    code, out, _ = invoke("replay", run_id, "--store", str(path))
    assert code == 0, out
    assert "completed" in out and "the log agrees" in out
    code, out, _ = invoke("replay", run_id, "--store", str(path), "--json")
    report = json.loads(out)
    assert report["status"] == "completed" and report["differences"] == []
    first = min(report["nodes"])
    # the state at the seq of run.started + the first node.start: running
    code, out, _ = invoke("replay", run_id, "--store", str(path), "--until", "2", "--json")
    early = json.loads(out)
    assert code == 0
    assert early["status"] == "running"
    assert early["last_seq"] <= 2
    assert "completed" not in early["nodes"].values()
    assert first in report["nodes"]


async def forge_completion(path: Path, run_id: str) -> None:
    async with await SQLiteStore.open(path) as store:
        await store.append(
            [
                Event(
                    kind="run.completed",
                    trace_id=run_id,
                    subject=run_id,
                    data={"output": "forged", "usage": {}, "duration_ms": 1.0},
                )
            ]
        )


def test_replay_reports_a_difference_and_exits_1(run: tuple[Path, str]) -> None:
    path, run_id = run
    asyncio.run(forge_completion(path, run_id))
    code, out, _ = invoke("replay", run_id, "--store", str(path))
    assert code == 1
    assert "1 difference(s)" in out and "'forged' is no completed node's output" in out


async def older_log_with_a_nan(path: Path) -> None:
    """A completed run as a converge that still stored NaN outputs logged it."""

    def event(kind: str, data: dict[str, object]) -> Event:
        return Event(kind=kind, trace_id="old", subject="old", data=data)

    async with await SQLiteStore.open(path, create=True) as store:
        await store.append(
            [
                event("run.started", {"graph": "g", "inputs": {}}),
                event("node.start", {"node": "a", "iteration": 1}),
                event(
                    "node.done",
                    {"node": "a", "iteration": 1, "status": "completed", "output": [float("nan")]},
                ),
                event("run.completed", {"output": [float("nan")], "usage": {}}),
            ]
        )


def test_replay_of_an_older_log_holding_a_nan_agrees(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    asyncio.run(older_log_with_a_nan(path))
    code, out, _ = invoke("replay", "old", "--store", str(path))
    assert code == 0, out
    assert "the log agrees" in out
    code, out, _ = invoke("replay", "old", "--store", str(path), "--json")
    assert code == 0 and json.loads(out)["differences"] == []


def test_replay_of_a_failed_run_agrees(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    run_id = asyncio.run(failing_run(path))
    code, out, _ = invoke("replay", run_id, "--store", str(path), "--json")
    report = json.loads(out)
    assert code == 0
    assert report["status"] == "failed"
    assert report["nodes"] == {"ok#1": "completed", "bad#1": "failed"}


def test_metrics_table_json_and_prometheus(run: tuple[Path, str]) -> None:
    path, run_id = run
    code, out, _ = invoke("metrics", run_id, "--store", str(path))
    assert code == 0 and "6 node pass(es)" in out and "analyze" in out
    code, out, _ = invoke("metrics", run_id, "--store", str(path), "--json")
    found = json.loads(out)
    assert found["tokens_per_agent"]["analyze"] == 2300
    assert found["succeeded"] == 6 and found["failed"] == 0
    code, out, _ = invoke("metrics", run_id, "--store", str(path), "--prometheus")
    assert code == 0
    samples = {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("run", "graph")))): (
            s.value,
            s.labels["run"],
            s.labels["graph"],
        )
        for family in text_string_to_metric_families(out)
        for s in family.samples
    }
    assert {(run_id, "code_review")} == {v[1:] for v in samples.values()}
    assert samples[("converge_tokens_total", (("agent", "analyze"),))][0] == 2300
    assert samples[("converge_tool_calls_total", (("agent", "analyze"),))][0] == 3
    assert samples[("converge_node_executions_total", (("status", "success"),))][0] == 6
    assert samples[("converge_checkpoints_total", ())][0] == 0
    assert samples[("converge_node_latency_seconds", (("node", "write/x"),))][0] > 0
    assert "# TYPE converge_tokens_total counter" in out.splitlines()


def test_prometheus_without_the_extra_names_it(
    run: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, run_id = run
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    code, out, err = invoke("metrics", run_id, "--store", str(path), "--prometheus")
    assert (code, out) == (1, "")
    assert "prometheus-client" in err and "converge-agents[metrics]" in err


def test_log_format_json_writes_lines_with_ids(run: tuple[Path, str]) -> None:
    path, run_id = run
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        code, _, _ = invoke("--log-format", "json", "metrics", run_id, "--store", str(path))
        assert code == 0
        handler = next(h for h in root.handlers if h.get_name() == "converge-cli")
        assert isinstance(handler.formatter, JsonFormatter)
        record = logging.LogRecord(
            "converge.engine", logging.INFO, __file__, 1, "node %s", ("a",), None
        )
        record.run_id, record.node_id = run_id, "a"
        line = json.loads(handler.format(record))
        assert line["message"] == "node a" and line["run_id"] == run_id and line["node_id"] == "a"
        assert line["level"] == "INFO" and "trace_id" not in line
        code, _, err = invoke("--log-format", "xml", "metrics", run_id, "--store", str(path))
        assert code == 2 and "unknown log format 'xml'" in err
    finally:
        for h in list(root.handlers):
            if h not in before[0]:
                root.removeHandler(h)
        root.setLevel(before[1])
