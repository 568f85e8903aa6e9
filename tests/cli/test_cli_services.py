"""``converge run`` runs every node kind: board nodes done by ``converge agents run`` workers in
other processes on the same store, tender and consensus nodes by the agents of ``--agents``."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from converge.cli import app
from tests.cli._processes import spawn

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
A = "tests.cli._agents"
W = "tests.cli._workers"

BOARD = f"""\
name: labels
nodes:
  - id: first
    agent: board
    inputs: [a]
  - id: second
    agent: board
    inputs: [b]
  - id: third
    agent: board
    inputs: [c]
  - id: join
    agent: echo
    inputs: [first.output, second.output, third.output]
agents:
  board: {{kind: board, objective: label}}
  echo: {A}:echo
"""

WORKERS = f"""\
agents:
  worker:
    ref: {W}:by_pid
"""

MARKET = f"""\
name: market
nodes:
  - id: write
    agent: writer
    inputs: [topic]
  - id: vote
    agent: council
    inputs: [write.output]
  - id: publish
    agent: publish
    inputs: [vote.output.proposal]
agents:
  writer: {{kind: tender, capability: write, strategy: lowest_cost, bid_window: 20}}
  council: {{kind: consensus, pool: council, rule: unanimity}}
  publish: {A}:echo
"""

PEOPLE = f"""\
pools:
  council: {{}}
agents:
  cheap:  {{ref: "{W}:Writer", capabilities: [write@1.0]}}
  dear:   {{ref: "{W}:Writer", capabilities: [write@1.0]}}
  ann:    {{ref: "{W}:Aye", pools: [council]}}
  bob:    {{ref: "{W}:Aye", pools: [council]}}
  cyd:    {{ref: "{W}:Aye", pools: [council]}}
"""


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.slow
def test_board_nodes_are_done_by_agents_run_workers_in_other_processes(tmp_path: Path) -> None:
    graph, agents, db = tmp_path / "labels.yaml", tmp_path / "workers.yaml", tmp_path / "s.db"
    graph.write_text(BOARD)
    agents.write_text(WORKERS)
    code, out, err = invoke("validate", str(graph))
    assert code == 0, err
    assert out.splitlines()[1].startswith("node first (board): needs tasks: `converge run`")
    assert "`converge agents run` processes on the same store" in out
    workers = [spawn(tmp_path, "agents", "run", str(agents), "--store", str(db)) for _ in "ab"]
    try:
        for proc in workers:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("agent worker started"), proc.communicate()
        code, out, err = invoke(
            "run", str(graph), "-i", "a=1", "-i", "b=2", "-i", "c=3", "--store", str(db),
            "--json",
        )  # fmt: skip
        assert code == 0, err
        result = json.loads(out)
        assert result["status"] == "completed"
        labels = [result["outputs"][n] for n in ("first", "second", "third")]
        assert [label["inputs"] for label in labels] == [{"a": 1}, {"b": 2}, {"c": 3}]
        pids = {label["pid"] for label in labels}
        assert pids <= {p.pid for p in workers} and os.getpid() not in pids
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in workers:
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err
    with sqlite3.connect(db) as conn:
        done = conn.execute("SELECT count(*) FROM tasks WHERE state = 'completed'").fetchone()
    assert done == (3,)


def test_tender_and_consensus_nodes_get_their_agents_from_an_agents_file(tmp_path: Path) -> None:
    graph, agents, db = tmp_path / "market.yaml", tmp_path / "people.yaml", tmp_path / "m.db"
    graph.write_text(MARKET)
    agents.write_text(PEOPLE)
    code, out, err = invoke("validate", str(graph))
    assert code == 0, err
    assert "node write (tender): needs bidding, identity" in out
    assert "its providers must run in the run's process: pass --agents AGENTS.yaml" in out
    assert "node vote (consensus): needs consensus, identity, network, pools" in out
    code, out, err = invoke("validate", str(graph), "--agents", str(agents))
    assert code == 0, err
    assert f"its voters among the agents of {agents} (cheap, dear, ann, bob, cyd)" in out

    code, out, err = invoke("run", str(graph), "-i", "topic=tides", "--store", str(db), "--json")
    assert code == 1, out  # no providers: nobody bid
    assert "no_offers" in err

    code, out, err = invoke(
        "run", str(graph), "-i", "topic=tides", "--store", str(db), "--agents", str(agents),
        "--json", "--run-id", "m1",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["outputs"]["write"] == "cheap wrote on tides"
    assert result["outputs"]["vote"]["passed"] is True
    assert result["output"] == "cheap wrote on tides: after"
    assert "agent cheap started" in err and "agent cyd stopped" in err
    assert (tmp_path / "engine.pem").exists()  # the engine's identity, beside the store
    code, out, err = invoke("trace", "m1", "--store", str(db), "--format", "json")
    assert code == 0, err
    kinds = {obj["type"] for obj in json.loads(out)["coordination"]}
    assert {"intent", "offer", "award", "receipt", "ballot", "vote"} <= kinds
