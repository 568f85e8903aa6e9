"""``converge run``'s live progress, as a user watches it: on a terminal, in lines, as JSON."""

from __future__ import annotations

import json
import logging
import os
import pty
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from converge.agents.llm.testing import FakeLLMServer, Reply
from converge.cli import app
from tests.cli._processes import reaped, spawn

runner = CliRunner()
A = "tests.cli._agents"

RETRIED = f"""\
name: retried
nodes:
  - id: upper
    agent: flaky
    inputs: [text, counter]
    retry: {{max_retries: 3, backoff: fixed, initial_delay: 0.01}}
  - id: held
    agent: held
    inputs: [text]
agents:
  flaky: {A}:flaky
  held: {A}:holds_the_loop
"""


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Leave the root logger as it was (``--log-format`` configures it)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def test_a_retry_prints_a_line_and_node_times_are_the_traces(
    tmp_path: Path, root_logging: None
) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(RETRIED)
    store = str(tmp_path / "s.db")
    args = ("run", str(graph), "-i", "text=hi", "-i", f"counter={tmp_path / 'n'}", "--store", store)
    code, out, err = invoke(*args, "--run-id", "r1")
    assert code == 0, err
    assert json.loads(out) == {"upper": "HI", "held": "hi"}
    lines = err.splitlines()
    assert "upper: failed (ValueError: try 1 went wrong), retry 1/3 in 0.01 s" in lines
    assert "upper: failed (ValueError: try 2 went wrong), retry 2/3 in 0.01 s" in lines
    assert any(re.fullmatch(r"upper: done  \S+ m?s  3 attempts", line) for line in lines), err

    # The same run as JSON lines (the global flag), held against the trace's latencies: the
    # node that holds the event loop must not look instant.
    (tmp_path / "n").unlink()
    code, _, err = invoke("--log-format", "json", *args, "--run-id", "r2")
    assert code == 0, err
    records = [json.loads(line) for line in err.splitlines()]
    done = {r["node"]: r["elapsed_s"] for r in records if r.get("event") == "node.done"}
    code, out, _ = invoke("trace", "r2", "--store", store, "--format", "json")
    latency = {n["node_id"]: n["latency_ms"] for n in json.loads(out)["nodes"]}
    assert done.keys() == latency.keys() == {"upper", "held"}
    for node, elapsed in done.items():
        assert abs(elapsed * 1000 - latency[node]) <= 1, (node, elapsed, latency[node])
    assert latency["held"] >= 200  # it held the loop for 0.2 s: its time says so


def test_json_log_lines_carry_the_run_and_trace_ids_to_the_last_line(
    tmp_path: Path, root_logging: None
) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(
        f"name: w\nnodes:\n  - {{id: w, agent: w, inputs: [text]}}\nagents:\n  w: {A}:warns\n"
    )
    code, out, err = invoke(
        "--log-format", "json", "run", str(graph), "-i", "text=x", "--store", str(tmp_path / "s.db")
    )
    assert (code, out) == (0, "x\n"), err
    records = [json.loads(line) for line in err.splitlines()]  # every line is JSON
    run_id = records[-1]["run_id"]
    assert all(r["run_id"] == run_id and r["trace_id"] == run_id for r in records)
    warning = next(r for r in records if r["logger"] == "tests.cli.agent")
    assert (warning["level"], warning["message"]) == ("WARNING", "careful with x")
    last = records[-1]
    assert (last["event"], last["status"], last["message"]) == (
        "run.completed",
        "completed",
        f"run {run_id} completed",
    )
    assert last["trace_command"] == f"converge trace {run_id} --format html -o trace.html"


LLM = """\
name: llm
nodes:
  - {{id: writer, agent: writer, inputs: [topic]}}
agents:
  writer:
    kind: llm
    provider: compatible
    model: m
    base_url: {url}
    prompt: 'About {{topic}}'
    stream: true
    attempts: 1
    prices: {{m: [0.15, 0.6]}}
"""


def test_streamed_llm_tokens_reach_the_terminal_and_a_dead_endpoint_is_named(
    tmp_path: Path,
) -> None:
    graph = tmp_path / "llm.yaml"
    args = ("run", str(graph), "-i", "topic=cats", "--store", str(tmp_path / "s.db"))
    with FakeLLMServer() as server:
        server.default = Reply(text="Cats sleep most of the day.", tokens_in=12, tokens_out=7)
        graph.write_text(LLM.format(url=server.openai_url))
        code, out, err = invoke(*args)
    assert (code, out) == (0, "Cats sleep most of the day.\n"), err
    lines = err.splitlines()
    streamed = lines.index("writer: Cats sleep most of the day.")
    done = next(i for i, line in enumerate(lines) if line.startswith("writer: done"))
    assert streamed < done
    assert lines[done].endswith("  19 tokens  cost 0.000006 USD"), lines[done]

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
    graph.write_text(LLM.format(url=url))
    code, _, err = invoke(*args)
    assert code == 1
    assert err.splitlines()[-1].startswith("error: run ")
    assert f"cannot reach {url}/chat/completions: " in err.splitlines()[-1]


def test_on_a_terminal_a_running_node_s_time_ticks(tmp_path: Path) -> None:
    """The live table, drawn on a pseudo-terminal: while a node waits on a gate, its elapsed
    time takes new values (it once stayed at ``0.0s`` for every frame); the gate opens once
    two have been seen, so nothing here depends on how fast the machine is."""
    graph = tmp_path / "g.yaml"
    graph.write_text(
        f"name: t\nnodes:\n  - {{id: wait, agent: hold, inputs: [gate]}}\nagents:\n"
        f"  hold: {A}:hold\n"
    )
    gate = tmp_path / "gate"
    main, terminal = pty.openpty()
    env = {"COLUMNS": "100", "TERM": "xterm"}
    proc = spawn(
        tmp_path,
        "run",
        str(graph),
        "-i",
        f"gate={gate}",
        "--store",
        "s.db",
        env=env,
        stderr=terminal,
    )
    os.close(terminal)
    seen: set[str] = set()
    screen = b""
    with reaped(proc):
        deadline = time.monotonic() + 30
        while len(seen) < 2:
            assert time.monotonic() < deadline, screen[-2000:]
            screen += os.read(main, 65536)
            text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", screen).decode(errors="replace")
            seen = set(re.findall(r"wait\s+running\s+(\d+\.\d) s", text))
        gate.write_text("open")
        out, _ = proc.communicate(timeout=30)
        try:
            while os.read(main, 65536):
                pass
        except OSError:
            pass
    os.close(main)
    assert proc.returncode == 0
    assert out == "released\n"
