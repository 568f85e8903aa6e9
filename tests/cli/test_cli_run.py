"""``converge run`` and the commands around it, as a user runs them."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from converge.cli import app
from tests.cli._processes import reaped, spawn

runner = CliRunner()
A = "tests.cli._agents"

PIPELINE = f"""\
name: shout
nodes:
  - id: up
    agent: up
    inputs: [text]
  - id: count
    agent: count
    inputs: [up.output]
edges:
  - from: up
    to: count
agents:
  up: {A}:upper
  count: {A}:count
"""


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def graph_file(tmp_path: Path, text: str = PIPELINE, name: str = "g.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_validate_ok_and_bad_graph_names_file_and_line(tmp_path: Path) -> None:
    assert invoke("validate", str(graph_file(tmp_path))) == (0, "ok\n", "")
    bad = graph_file(
        tmp_path, PIPELINE.replace("    inputs: [text]", "    inputz: [text]"), "b.yaml"
    )
    code, out, err = invoke("validate", str(bad))
    assert code == 2
    assert out == ""
    assert err.startswith(f"error: {bad}:5: unknown key 'inputz'")
    assert "Traceback" not in err
    code, _, err = invoke("validate", str(tmp_path / "missing.yaml"))
    assert code == 2
    assert "cannot read graph file" in err


def _laughs(levels: int) -> str:
    """Anchors whose aliases nest ``levels`` deep: ``9 ** levels`` values in a few lines."""
    lines = ["      l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"      l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines)


HOSTILE = "name: g\n{top}nodes:\n  - {{id: a, agent: x{node}}}\nagents:\n  x: {agent}\n"


@pytest.mark.parametrize(
    ("top", "node", "agent", "line", "words"),
    [
        ("", "", "\n    kind: worker\n    template: hi\n    routes:\n" + _laughs(9), 14,
         "aliases stand for more than 100,000 nodes"),
        ("edges: " + "[" * 10_000 + "\n", "", f"{A}:upper", 2, "nested deeper than 100"),
        ("", ", timeout: " + "9" * 5000, f"{A}:upper", 3, "out of range"),
        ("config: {max_iterations: 100000000000000000000000000000}\n", "", f"{A}:upper", 2,
         "fits in 64 bits"),
        ("", "", ".os:system", 5, "a reference is 'module:attr'"),
        ("", "", "{kind: subgraph, graph: g.yaml}", 5, "in a cycle: g.yaml -> g.yaml"),
    ],
)  # fmt: skip
def test_a_hostile_graph_file_exits_2_with_file_and_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    top: str,
    node: str,
    agent: str,
    line: int,
    words: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    path = graph_file(tmp_path, HOSTILE.format(top=top, node=node, agent=agent))
    store = str(tmp_path / "s.db")
    for args in (("validate", str(path)), ("run", str(path), "-i", "text=a", "--store", store)):
        code, out, err = invoke(*args)
        assert (code, out) == (2, ""), (args, err)
        [message] = err.strip().splitlines()
        assert message.startswith(f"error: {path}:{line}: "), message
        assert words in message


def test_validate_says_it_runs_the_modules_the_file_names() -> None:
    code, out, _ = invoke("validate", "--help")
    assert code == 0
    assert "top-level code runs" in " ".join(out.split())


def test_run_prints_result_and_run_id_and_runs_show_list_it(tmp_path: Path) -> None:
    store = str(tmp_path / "c.db")
    code, out, err = invoke(
        "run", str(graph_file(tmp_path)), "-i", "text=hello", "--store", store, "--run-id", "r1"
    )
    assert code == 0, err
    assert json.loads(out) == {"chars": 5}
    assert "run r1 completed" in err
    assert "up: done" in err  # plain progress lines: not a terminal
    code, out, _ = invoke("runs", "--store", store, "--json")
    assert code == 0
    [row] = [json.loads(line) for line in out.splitlines()]
    assert (row["run_id"], row["graph"], row["status"]) == ("r1", "shout", "completed")
    code, out, _ = invoke("runs", "--store", store)
    assert "r1" in out and "completed" in out
    code, out, _ = invoke("show", "r1", "--store", store, "--json")
    shown = json.loads(out)
    assert shown["inputs"] == {"text": "hello"}
    assert [(n["node"], n["status"], n["output"]) for n in shown["nodes"]] == [
        ("up", "success", "HELLO"),
        ("count", "success", {"chars": 5}),
    ]
    assert shown["nodes"][1]["inputs"] == {"up.output": "HELLO"}
    code, out, _ = invoke("show", "r1", "--store", store)
    assert code == 0 and "HELLO" in out
    # the same id again is bad input, not a second run
    code, _, err = invoke(
        "run", str(graph_file(tmp_path)), "-i", "text=x", "--store", store, "--run-id", "r1"
    )
    assert code == 2 and "already exists" in err


def test_inputs_decode_json_and_read_files(tmp_path: Path) -> None:
    store = str(tmp_path / "c.db")
    (tmp_path / "in.txt").write_text("from a file")
    g = str(graph_file(tmp_path))
    code, out, _ = invoke(
        "run", g, "-i", "text=@" + str(tmp_path / "in.txt"), "--store", store, "--json"
    )
    assert code == 0
    assert json.loads(out)["outputs"]["up"] == "FROM A FILE"
    code, out, _ = invoke("run", g, "-i", 'text="12"', "--store", store, "--json")
    assert json.loads(out)["output"] == {"chars": 2}
    for bad, message in [("text", "expected key=value"), ("text=@/no/such", "cannot read")]:
        code, _, err = invoke("run", g, "-i", bad, "--store", store)
        assert code == 2 and message in err
    code, _, err = invoke("run", g, "--store", store)
    assert code == 2 and "--input text=" in err


def test_failed_run_exits_1_with_one_line(tmp_path: Path) -> None:
    text = PIPELINE.replace(f"{A}:upper", f"{A}:boom")
    code, _, err = invoke(
        "run",
        str(graph_file(tmp_path, text)),
        "-i",
        "text=x",
        "--store",
        str(tmp_path / "c.db"),
        "--run-id",
        "f1",
    )
    assert code == 1
    assert err.splitlines()[-1].startswith("error: run f1 failed at node up:")
    assert "the agent broke" in err and "Traceback" not in err
    code, out, _ = invoke("show", "f1", "--store", str(tmp_path / "c.db"), "--json")
    assert json.loads(out)["nodes"][0]["status"] == "failed"


@pytest.mark.parametrize(
    ("agent", "error"),
    [
        ("exits", "SystemExit: 0"),
        ("exits_async", "SystemExit: 0"),
        ("interrupts", "KeyboardInterrupt"),
        ("interrupts_async", "KeyboardInterrupt"),
    ],
)
def test_a_node_that_exits_or_raises_keyboard_interrupt_fails_with_one_line(
    tmp_path: Path, agent: str, error: str
) -> None:
    """Its ``sys.exit(0)`` once made `converge run` exit 0, its ``KeyboardInterrupt`` exit 130
    as if Ctrl-C was pressed, both with no record of the run."""
    store = str(tmp_path / "c.db")
    text = PIPELINE.replace(f"{A}:upper", f"{A}:{agent}")
    code, out, err = invoke(
        "run", str(graph_file(tmp_path, text)), "-i", "text=x", "--store", store, "--run-id", "e1"
    )
    assert code == 1, err
    assert err.splitlines()[-1] == f"error: run e1 failed at node up: node 'up' failed: {error}"
    assert "Traceback" not in err and out == ""
    code, out, _ = invoke("show", "e1", "--store", store, "--json")
    shown = json.loads(out)
    assert (shown["status"], shown["nodes"][0]["status"]) == ("failed", "failed")
    assert shown["nodes"][0]["error"] == error


def test_an_exit_from_a_task_an_agent_started_is_one_line_and_logged(tmp_path: Path) -> None:
    """asyncio stops its event loop for a ``SystemExit`` out of a task: the run is logged all
    the same, and the command exits 1 saying so, not 0."""
    store = str(tmp_path / "c.db")
    text = PIPELINE.replace(f"{A}:upper", f"{A}:exits_in_a_task")
    code, _, err = invoke(
        "run", str(graph_file(tmp_path, text)), "-i", "text=x", "--store", store, "--run-id", "t1"
    )
    assert code == 1, err
    assert err.splitlines()[-1] == (
        "error: the run stopped: a task an agent started raised SystemExit(0) (converge show t1)"
    )
    assert "Traceback" not in err
    code, out, _ = invoke("show", "t1", "--store", store, "--json")
    assert json.loads(out)["nodes"][0]["error"] == "SystemExit: 0"


def strict_json(text: str) -> Any:
    """``text`` read as JSON, which has no NaN or Infinity (Python's reader takes them)."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_nan_output_fails_its_node_and_json_and_replay_stay_true(tmp_path: Path) -> None:
    """``run --json`` once printed ``NaN`` (not JSON) and ``replay`` then reported a
    difference on the run: the node now fails, saying where the NaN is."""
    store = str(tmp_path / "c.db")
    text = PIPELINE.replace(f"{A}:upper", f"{A}:scores")
    g = str(graph_file(tmp_path, text))
    code, out, err = invoke("run", g, "-i", "text=x", "--store", store, "--run-id", "n1", "--json")
    assert code == 1
    record = strict_json(out)
    assert (record["status"], record["outputs"]) == ("failed", {})
    assert 'output["score"] is NaN: a run holds no NaN or infinity' in record["error"]
    assert "Traceback" not in err
    code, out, _ = invoke("replay", "n1", "--store", store)
    assert code == 0, out
    assert "the log agrees" in out
    code, out, _ = invoke("show", "n1", "--store", store, "--json")
    assert strict_json(out)["nodes"][0]["status"] == "failed"


def test_nan_and_infinity_given_as_input_stay_strings(tmp_path: Path) -> None:
    store = str(tmp_path / "c.db")
    g = str(graph_file(tmp_path))
    for i, value in enumerate(["NaN", "-Infinity", "1e999"]):
        run_id = f"i{i}"
        code, out, err = invoke(
            "run", g, "-i", f"text={value}", "--store", store, "--run-id", run_id, "--json"
        )
        assert code == 0, err
        assert strict_json(out)["outputs"]["up"] == value.upper()
        code, out, _ = invoke("show", run_id, "--store", store, "--json")
        assert strict_json(out)["inputs"] == {"text": value}


def test_waiting_run_prints_question_and_resume_answers_it(tmp_path: Path) -> None:
    store = str(tmp_path / "c.db")
    text = PIPELINE.replace(f"{A}:count", f"{A}:approve")
    code, out, err = invoke(
        "run", str(graph_file(tmp_path, text)), "-i", "text=hi", "--store", store, "--run-id", "w1"
    )
    assert code == 0, err
    assert "count asks: publish HI?" in out
    assert "converge resume w1 --answer" in out
    # the graph file's path was recorded: resume finds it from another directory
    code, out, err = invoke("resume", "w1", "--answer", "yes", "--store", store)
    assert code == 0, err
    assert out.strip() == "HI: yes"
    # progress on resume: the pass finished before, then the one that ran now
    assert "up: done" in err and "count: running" in err and "count: done" in err
    code, out, _ = invoke("runs", "--store", store, "--json")
    assert json.loads(out)["status"] == "completed"


def test_cancel_a_waiting_run_and_unknown_runs(tmp_path: Path) -> None:
    store = str(tmp_path / "c.db")
    text = PIPELINE.replace(f"{A}:count", f"{A}:approve")
    assert (
        invoke(
            "run",
            str(graph_file(tmp_path, text)),
            "-i",
            "text=hi",
            "--store",
            store,
            "--run-id",
            "w2",
        )[0]
        == 0
    )
    code, out, _ = invoke("cancel", "w2", "--store", store)
    assert (code, out.strip()) == (0, "run w2 cancelled (waiting for an answer)")
    code, _, err = invoke("cancel", "w2", "--store", store)
    assert code == 1 and "already ended" in err
    for command in ("cancel", "show", "resume", "trace", "metrics", "replay"):
        code, _, err = invoke(command, "nope", "--store", store)
        assert (code, err) == (2, f"error: no run nope in {store} (field `run_id`)\n"), command


def test_store_from_newer_version_and_locked_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "c.db"
    g = str(graph_file(tmp_path))
    assert invoke("run", g, "-i", "text=a", "--store", str(store))[0] == 0
    with sqlite3.connect(store) as conn:
        conn.execute(
            "INSERT INTO schema_version (version, applied_at, description) VALUES (999, 0, 'x')"
        )
    code, _, err = invoke("run", g, "-i", "text=a", "--store", str(store))
    assert code == 2 and "schema version 999" in err
    locked = tmp_path / "l.db"
    assert invoke("run", g, "-i", "text=a", "--store", str(locked))[0] == 0
    monkeypatch.setenv("CONVERGE_BUSY_TIMEOUT", "0.1")
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        code, _, err = invoke("run", g, "-i", "text=a", "--store", str(locked))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 1 and "locked" in err and "Traceback" not in err


def test_settings_flag_over_env_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONVERGE_STORE", raising=False)
    monkeypatch.setenv("CONVERGE_HOME", str(tmp_path / "home"))
    g = str(graph_file(tmp_path))
    assert invoke("run", g, "-i", "text=a")[0] == 0
    assert (tmp_path / "home" / "converge.db").exists()  # default under $CONVERGE_HOME
    (tmp_path / "converge.toml").write_text('store = "from-file.db"\nlog_format = "json"\n')
    code, _, err = invoke("run", g, "-i", "text=a")
    assert code == 0 and (tmp_path / "from-file.db").exists()
    assert json.loads(err.splitlines()[0])["node"] == "up"  # log_format from the file
    monkeypatch.setenv("CONVERGE_STORE", str(tmp_path / "from-env.db"))
    assert invoke("run", g, "-i", "text=a")[0] == 0 and (tmp_path / "from-env.db").exists()
    assert invoke("run", g, "-i", "text=a", "--store", "flag.db")[0] == 0
    assert (tmp_path / "flag.db").exists()
    (tmp_path / "converge.toml").write_text('stor = "x"\n')
    code, _, err = invoke("runs")
    assert code == 2 and "unknown key 'stor'" in err


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never reached its holding node"
        time.sleep(0.02)


HOLD = f"""\
name: hold
nodes:
  - id: wait
    agent: hold
    inputs: [gate]
  - id: after
    agent: echo
    inputs: [wait.output]
edges:
  - from: wait
    to: after
agents:
  hold: {A}:hold
  echo: {A}:echo
"""


def test_ctrl_c_names_the_run_and_the_command_that_resumes_it(tmp_path: Path) -> None:
    g = graph_file(tmp_path, HOLD)
    gate = tmp_path / "gate"
    run = spawn(tmp_path, "run", str(g), "-i", f"gate={gate}", "--store", "c.db")  # no --run-id
    with reaped(run) as proc:
        _wait_for(tmp_path / "holding", proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    prefix = "error: interrupted: the run is stopped and resumable (converge resume "
    assert last.startswith(prefix) and last.endswith(")"), last
    run_id = last[len(prefix) : -1]
    assert "Traceback" not in err
    assert _kinds(tmp_path / "c.db", run_id)[-1] == "run.interrupted"
    _, out, _ = invoke("runs", "--store", str(tmp_path / "c.db"), "--json")
    assert json.loads(out)["status"] == "interrupted"
    gate.write_text("open")
    # the command as printed, but with the id's first characters only: a prefix will do
    with reaped(spawn(tmp_path, "resume", run_id[:10], "--store", "c.db", "--json")) as resumed:
        out, err = resumed.communicate(timeout=30)
    assert resumed.returncode == 0, err
    assert json.loads(out)["status"] == "completed"


def test_ctrl_c_twice_in_a_node_that_holds_the_loop_logs_the_run_interrupted(
    tmp_path: Path,
) -> None:
    """The first Ctrl-C cancels the main task, which a node that never awaits does not see;
    the second raises ``KeyboardInterrupt`` in the node's own frame. That one is Ctrl-C, not the
    node's failure: exit 130, the run logged interrupted (it once was left with no record)."""
    g = graph_file(tmp_path, HOLD.replace(f"{A}:hold", f"{A}:spin"))
    gate = tmp_path / "gate"
    run = spawn(tmp_path, "run", str(g), "-i", f"gate={gate}", "--store", "c.db", "--run-id", "s1")
    with reaped(run) as proc:
        _wait_for(tmp_path / "holding", proc)
        proc.send_signal(signal.SIGINT)
        _wait_for(tmp_path / "cancelled", proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == (
        "error: interrupted: the run is stopped and resumable (converge resume s1)"
    )
    assert _kinds(tmp_path / "c.db", "s1") == ["run.started", "node.start", "run.interrupted"]


def _listed(store: str, run_id: str, proc: subprocess.Popen[str]) -> dict[str, object]:
    """Run ``run_id``'s row in ``converge runs --json`` once it is listed (its start is written
    within a moment of it starting)."""
    deadline = time.monotonic() + 30
    while True:
        code, out, err = invoke("runs", "--store", store, "--json")
        assert code == 0, err
        rows = [json.loads(line) for line in out.splitlines()]
        found = [r for r in rows if r["run_id"] == run_id]
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run was never listed"
        time.sleep(0.05)


def _kinds(db: Path, run_id: str) -> list[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT kind FROM events WHERE trace_id = ? ORDER BY seq", (run_id,))
        return [kind for (kind,) in rows]


def test_resume_of_a_live_run_is_refused_and_works_once_its_process_is_killed(
    tmp_path: Path,
) -> None:
    g = graph_file(tmp_path, HOLD)
    gate, db = tmp_path / "gate", tmp_path / "c.db"
    proc = spawn(tmp_path, "run", str(g), "-i", f"gate={gate}", "--store", "c.db", "--run-id", "l1")
    try:
        _wait_for(tmp_path / "holding", proc)
        row = _listed(str(db), "l1", proc)
        owner = row["owner"]
        assert row["status"] == "running" and isinstance(owner, dict)
        assert (owner["pid"], owner["host"]) == (proc.pid, socket.gethostname())
        code, out, _ = invoke("runs", "--store", str(db))
        assert f"running (pid {proc.pid} on {socket.gethostname()}, lease renewed" in out
        code, out, _ = invoke("show", "l1", "--store", str(db))
        assert code == 0 and f"status running (pid {proc.pid} on" in out

        # From another process while it runs: refused, naming the owner; nothing ran twice.
        code, out, err = invoke("resume", "l1", "--store", str(db))
        assert code == 1, (out, err)
        assert f"run l1 is running in pid {proc.pid} on {socket.gethostname()} (since " in err
        assert "Traceback" not in err
        assert _kinds(db, "l1").count("node.start") == 1
        assert _kinds(db, "l1").count("run.resumed") == 0
    finally:
        proc.kill()  # kill -9: its lease is left behind, its pid gone
        proc.communicate(timeout=30)
    row = _listed(str(db), "l1", proc)
    assert row["status"] == "interrupted"
    assert f"pid {proc.pid} on {socket.gethostname()} is gone" in str(row["interrupted_because"])
    gate.write_text("open")
    code, out, err = invoke("resume", "l1", "--store", str(db), "--json")
    assert code == 0, err
    assert json.loads(out)["status"] == "completed"


def test_cancel_stops_a_run_in_another_process(tmp_path: Path) -> None:
    g = graph_file(tmp_path, HOLD)
    gate = tmp_path / "gate"
    run = spawn(tmp_path, "run", str(g), "-i", f"gate={gate}", "--store", "c.db", "--run-id", "k1")
    with reaped(run) as proc:
        _wait_for(tmp_path / "holding", proc)
        code, out, err = invoke("cancel", "k1", "--store", str(tmp_path / "c.db"))
        assert (code, out.strip()) == (0, "run k1 cancelled"), err
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "run k1 was cancelled" in err
    assert _kinds(tmp_path / "c.db", "k1")[-1] == "run.cancelled"  # on purpose, not interrupted
    _, out, _ = invoke("runs", "--store", str(tmp_path / "c.db"), "--json")
    assert json.loads(out)["status"] == "cancelled"


def test_run_with_otel_console_prints_the_runs_spans(tmp_path: Path) -> None:
    code, out, err = invoke(
        "run", str(graph_file(tmp_path)), "-i", "text=hi", "--store", str(tmp_path / "c.db"),
        "--run-id", "o1", "--otel", "console",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out) == {"chars": 2}
    for name in ("converge.run shout", "converge.node up", "converge.node count"):
        assert f'"name": "{name}"' in err
    code, _, err = invoke("run", str(graph_file(tmp_path)), "-i", "text=hi", "--otel", "zipkin")
    assert code == 2 and "--otel is console or otlp" in err


def test_an_agent_module_that_fails_to_import_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = list(sys.path)
    monkeypatch.setattr(sys, "path", list(saved))  # the commands put the cwd on it
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONVERGE_TEST_UNSET_KEY", raising=False)
    (tmp_path / "keyed_agent_q.py").write_text(
        "import os\n\nKEY = os.environ['CONVERGE_TEST_UNSET_KEY']\n\n\ndef fn(inputs):\n"
        "    return KEY\n"
    )
    g = graph_file(tmp_path, PIPELINE.replace(f"{A}:count", "keyed_agent_q:fn"))
    store = str(tmp_path / "s.db")
    expected = (
        f"error: {g}:14: agent 'count' (keyed_agent_q:fn): importing keyed_agent_q failed: "
        "KeyError: 'CONVERGE_TEST_UNSET_KEY' (keyed_agent_q.py:3)"
    )
    for args in (
        ("validate", str(g)),
        ("run", str(g), "-i", "text=a", "--store", store),
        ("resume", "r1", "--graph", str(g), "--store", store),
    ):
        code, out, err = invoke(*args)
        assert (code, out) == (2, ""), args
        assert err.startswith(expected) and err.count("\n") == 1, err
    code, _, err = invoke("validate", "g.yaml")
    assert err.startswith(expected.replace(str(g), "g.yaml"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    sys.path[:] = saved
    code, _, err = invoke("validate", str(g))
    assert code == 2 and err.count("\n") == 1
    assert "no module named 'keyed_agent_q'" in err
    assert f"looked up in the current directory ({elsewhere}), PYTHONPATH" in err


READ_ONLY_COMMANDS = (
    ("runs",),
    ("show", "r1"),
    ("trace", "r1"),
    ("replay", "r1"),
    ("metrics", "r1"),
    ("events",),
)


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_read_only_commands_never_write_and_refuse_other_files(tmp_path: Path) -> None:
    store = tmp_path / "s.db"
    g = str(graph_file(tmp_path))
    assert invoke("run", g, "-i", "text=a", "--store", str(store), "--run-id", "r1")[0] == 0
    other = tmp_path / "app.db"
    conn = sqlite3.connect(other)
    with conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    conn.close()
    before = _snapshot(tmp_path)
    for args in READ_ONLY_COMMANDS:
        code, out, err = invoke(*args, "--store", str(other))
        assert (code, out) == (2, ""), args
        assert err == (
            f"error: {other} is not a converge store: a SQLite database of other tables, "
            "without converge's schema_version table (it was not modified)\n"
        ), args
        code, _, err = invoke(*args, "--store", str(store))
        assert code == 0, (args, err)
    # `cancel` writes, but it too opens only a store that exists
    code, _, err = invoke("cancel", "r1", "--store", str(other))
    assert code == 2 and "is not a converge store" in err
    after = _snapshot(tmp_path)
    assert after.pop("s.db-wal", b"") == b"" and after.pop("s.db-shm", None) is not None
    assert after == before
    assert _sqlite_tables(other) == ["users"]


def _sqlite_tables(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    finally:
        conn.close()


def test_read_only_commands_resolve_the_store_like_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONVERGE_STORE", raising=False)
    monkeypatch.delenv("CONVERGE_HOME", raising=False)
    g = str(graph_file(tmp_path))
    assert invoke("run", g, "-i", "text=a", "--run-id", "r1")[0] == 0  # the default store
    for args in READ_ONLY_COMMANDS:
        code, out, err = invoke(*args)
        assert code == 0 and "r1" in out, (args, err)
    Path(".converge/converge.db").rename("elsewhere.db")
    for how in ("env", "file"):
        if how == "env":
            monkeypatch.setenv("CONVERGE_STORE", "elsewhere.db")
        else:
            monkeypatch.delenv("CONVERGE_STORE")
            Path("converge.toml").write_text('store = "elsewhere.db"\n')
        for args in READ_ONLY_COMMANDS:
            code, out, err = invoke(*args)
            assert code == 0 and "r1" in out, (how, args, err)
    code, _, err = invoke("events", "--store", "missing.db")
    assert (code, err) == (2, "error: no store at missing.db\n")
