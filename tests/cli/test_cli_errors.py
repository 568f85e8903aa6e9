"""Mistakes a new user makes on the command line, and the one line that says what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from converge.cli import app

runner = CliRunner()
A = "tests.cli._agents"


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("run", "--foo", "g.yaml"), "error: no such option: --foo; see converge run --help"),
        (
            ("trace", "r1", "--ouput", "x.html"),
            "error: no such option: --ouput (did you mean '--output'?); see converge trace --help",
        ),
        (("shw", "r1"), "error: no such command 'shw' (did you mean 'show'?); see converge --help"),
        (("run",), "error: missing argument 'graph'; see converge run --help"),
    ],
)
def test_a_bad_flag_or_command_is_one_error_line(args: tuple[str, ...], expected: str) -> None:
    code, out, err = invoke(*args)
    assert (code, out, err) == (2, "", expected + "\n")


GRAPH = f"""\
name: g
nodes:
  - id: a
    agent: up
    inputs: [text]
  - id: trend
    agent: up
    inputs: [a.output]
  - id: c
    agent: join
    inputs: [a.output, trnd.output]
agents:
  up: {A}:upper
  join: {A}:echo
"""


@pytest.mark.parametrize(
    ("change", "line", "words"),
    [
        # the reference's own line (11), not its node's `- id:` line (9)
        ((), 11, "input 'trnd.output' of node 'c': no node 'trnd' produces it "
         "(did you mean 'trend'?)"),
        (("agent: join", "agent: jion"), 10, "node 'c' names agent 'jion', which the graph does "
         "not define (did you mean 'join'?)"),
        (("\nagents:", "\nedges:\n  - from: a\n    to: trnd\nagents:"), 14, "'trnd' is neither a "
         "node nor a parallel group (did you mean 'trend'?)"),
        # a cycle is reported at the edge that closes it
        (("inputs: [text]", "inputs: [text, c.output]"), 5, "the edge c -> a "
         "(nodes[0].inputs[1]) closes a cycle"),
    ],
)  # fmt: skip
def test_a_bad_graph_points_at_the_line_of_the_mistake(
    tmp_path: Path, change: tuple[str, str], line: int, words: str
) -> None:
    text = GRAPH.replace("trnd.output", "trend.output") if change else GRAPH
    if change:
        text = text.replace(*change)
    path = tmp_path / "g.yaml"
    path.write_text(text)
    code, out, err = invoke("validate", str(path))
    assert (code, out) == (2, "")
    [message] = err.splitlines()
    assert message.startswith(f"error: {path}:{line}: {words}"), message


def test_run_ids_by_prefix_or_last_and_a_near_miss_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no store here yet
    assert invoke("runs") == (0, "no runs yet (no store at .converge/converge.db)\n", "")
    graph = tmp_path / "g.yaml"
    graph.write_text(f"name: g\nnodes:\n  - {{id: up, agent: up, inputs: [text]}}\nagents:\n"
                     f"  up: {A}:upper\n")  # fmt: skip
    for run_id in ("alpha-1", "alpha-2", "beta-1"):
        assert invoke("run", str(graph), "-i", f"text={run_id}", "--run-id", run_id)[0] == 0
    store = tmp_path / ".converge" / "converge.db"
    code, out, _ = invoke("show", "bet", "--json")
    assert code == 0 and '"run_id": "beta-1"' in out
    for command in ("trace", "metrics", "replay", "events --trace"):
        code, out, err = invoke(*command.split(), "last")
        assert code == 0 and "beta-1" in out, (command, err)
    code, _, err = invoke("show", "alpha")
    assert (code, err) == (
        2,
        "error: run id 'alpha' fits 2 runs (alpha-1, alpha-2): give more of it (field `run_id`)\n",
    )
    code, _, err = invoke("trace", "alpah-2")
    assert (code, err) == (
        2,
        f"error: no run alpah-2 in {store.relative_to(tmp_path)} (did you mean 'alpha-2'?) "
        "(field `run_id`)\n",
    )
    code, out, _ = invoke("resume", "alpha-1")  # an ended run: its result again
    assert (code, out) == (0, "ALPHA-1\n")
