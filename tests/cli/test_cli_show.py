"""A run read back with ``show``, ``runs``, ``metrics`` and ``trace``; a pause answered live."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from converge.cli import app

runner = CliRunner()
A = "tests.cli._agents"

GRAPH = f"""\
name: priced
nodes:
  - id: up
    agent: flaky
    inputs: [text, counter]
    retry: {{max_retries: 2, backoff: none}}
  - id: priced
    agent: priced
    inputs: [up.output]
agents:
  flaky: {A}:flaky
  priced: {A}:priced
"""
COST = "0.0000325 USD"  # 3.25e-05 dollars, as the run recorded it


def invoke(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


def test_show_runs_metrics_and_trace_tell_inputs_attempts_errors_and_cost(
    tmp_path: Path,
) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(GRAPH)
    store = str(tmp_path / "s.db")
    code, out, err = invoke(
        "run", str(graph), "-i", "text=hi", "-i", f"counter={tmp_path / 'n'}", "--store", store
    )
    assert (code, out) == (0, "HI!\n"), err
    run_id = err.splitlines()[-1].split()[1]
    assert "priced: done" in err and f"150 tokens  cost {COST}" in err  # live progress
    # the hint names the command that writes the trace page, and the command works
    assert err.splitlines()[-1] == (
        f"run {run_id} completed; its trace: converge trace {run_id} --format html -o trace.html"
    )

    code, out, _ = invoke("show", run_id, "--store", store, "--json")
    up, priced = json.loads(out)["nodes"]
    assert up["inputs"] == {"text": "hi", "counter": str(tmp_path / "n")}
    assert priced["inputs"] == {"up.output": "HI"}
    assert (up["attempts"], up["errors"]) == (
        3,
        ["ValueError: try 1 went wrong", "ValueError: try 2 went wrong"],
    )
    code, out, _ = invoke("show", run_id, "--store", store)
    rows = out.splitlines()
    up_row = next(r for r in rows if r.startswith("up "))
    assert ' 3  text="hi", counter=' in up_row and '"HI"' in up_row
    assert "first error: ValueError: try 1 went wrong" in rows[rows.index(up_row) + 1]
    assert next(r for r in rows if r.startswith("priced ")).endswith(COST)
    assert f"cost {COST}" in rows[0]

    for args in (("runs",), ("metrics", run_id), ("trace", run_id)):
        code, out, _ = invoke(*args, "--store", store)
        assert code == 0 and COST in out, (args, out)
    page = str(tmp_path / "trace.html")
    code, out, _ = invoke("trace", run_id, "--store", store, "--format", "html", "-o", page)
    assert code == 0 and Path(page).read_text().startswith("<!")


def test_run_interactive_asks_the_question_and_continues(tmp_path: Path) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(
        "name: ask\nnodes:\n  - {id: up, agent: up, inputs: [text]}\n"
        "  - {id: approve, agent: approve, inputs: [up.output]}\n"
        f"agents:\n  up: {A}:upper\n  approve: {A}:approve\n"
    )
    args = ("run", str(graph), "-i", "text=note", "--store", str(tmp_path / "s.db"))
    code, out, err = invoke(*args, "--interactive", input='"yes"\n')
    assert (code, out) == (0, "NOTE: yes\n"), err
    assert "approve asks: publish NOTE?\nanswer: " in err
    # Input ends before an answer: the run waits, and says how to answer it later.
    code, out, err = invoke(*args, "--interactive", input="")
    assert code == 0, err
    run_id = out.splitlines()[-1].split()[2]
    assert out.splitlines()[-2:] == [
        f"run {run_id} is waiting; answer with:",
        f"  converge resume {run_id} --answer ANSWER",
    ]
    # Without the flag, nothing is asked: the durable way stays.
    code, out, err = invoke(*args, input="yes\n")
    assert code == 0 and "answer: " not in err and "is waiting; answer with:" in out


def test_show_cuts_long_run_inputs_as_it_cuts_the_output(tmp_path: Path) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(GRAPH)
    store = str(tmp_path / "s.db")
    text = "word " * 400  # 2,000 characters: `show --json` keeps them all
    code, _, err = invoke(
        "run", str(graph), "-i", f"text={text}", "-i", f"counter={tmp_path / 'n'}", "--store", store
    )
    assert code == 0, err
    code, out, _ = invoke("show", "last", "--store", store)
    shown = out[out.index("inputs: ") : out.index("\nnode")].replace("\n", "")  # rich wraps it
    assert len(shown) <= len("inputs: ") + 400 and shown.endswith("…")
    code, out, _ = invoke("show", "last", "--store", store, "--json")
    assert json.loads(out)["inputs"]["text"] == text
