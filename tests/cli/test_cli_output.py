"""What the commands print when a graph's name, an agent's name, a node's error or output try
to drive the terminal: people see escapes, JSON keeps the exact values, pipes get the data."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from converge.cli import app
from converge.observability import printable
from tests.cli._processes import reaped, spawn
from tests.observability._hostile import HOSTILE, MARKUP, terminal_unsafe

runner = CliRunner()
A = "tests.cli._agents"
W = "tests.cli._workers"
NAME = f"{MARKUP}\x1b]0;owned\x07\x1b[2J\x9b31m\u202e\nclick n_up"
"""A graph's or an agent's name: short enough that a table shows it on one row."""


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def graph_file(tmp_path: Path, agent: str) -> Path:
    """A graph named ``NAME`` whose one node is done by the agent named ``NAME``."""
    path = tmp_path / f"{agent}.yaml"
    path.write_text(
        f"name: {json.dumps(NAME)}\n"
        "nodes:\n"
        f"  - id: up\n    agent: {json.dumps(NAME)}\n    inputs: [text]\n"
        f"agents:\n  {json.dumps(NAME)}: {A}:{agent}\n"
    )
    return path


def shown(text: str) -> None:
    """``text`` was printed for people: nothing a terminal acts on but line feeds and tabs,
    which it shows as escapes (read across the lines a table wraps a cell into)."""
    assert terminal_unsafe(text, newlines=True) == []
    assert "\\x1b]0;owned\\x07\\x1b[2J\\x9b31m\\u202e" in _unwrapped(text)


def _unwrapped(text: str) -> str:
    """``text`` without white space and table borders."""
    return re.sub(r"[\s\u2500-\u257f]+", "", text)


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A store holding run ``bad`` (failed with a hostile error) and ``good`` (completed with
    a hostile output), both of a hostile graph done by a hostile agent."""
    db = str(tmp_path / "c.db")
    bad = str(graph_file(tmp_path, "hostile"))
    code, _, err = invoke("run", bad, "-i", "text=x", "--store", db, "--run-id", "bad")
    assert code == 1, err
    shown(err)  # the progress lines and the error line
    assert err.splitlines()[-1].startswith("error: run bad failed at node up: ")
    assert printable(HOSTILE) in err.splitlines()[-1]
    code, out, err = invoke(
        "run", str(graph_file(tmp_path, "hostile_output")), "-i", "text=x", "--store", db,
        "--run-id", "good",
    )  # fmt: skip
    assert code == 0, err
    assert out == f"first line\n{HOSTILE}\n"  # stdout is not a terminal: the data as it is
    return db


def test_tables_trees_and_timelines_show_names_and_errors_as_text(store: str) -> None:
    for args in (
        ["runs"],
        ["show", "bad"],
        ["show", "good"],
        ["trace", "bad"],
        ["events"],
        ["metrics", "bad"],
    ):
        code, out, err = invoke(*args, "--store", store)
        assert code == 0, (args, err)
        shown(out)
        assert MARKUP in _unwrapped(out), args  # shown, not read as rich markup
    code, out, _ = invoke("show", "bad", "--store", store)
    assert printable(HOSTILE)[:40] in _unwrapped(out)  # the node's error, cut to its column
    code, out, _ = invoke("replay", "good", "--store", store)
    assert code == 0 and terminal_unsafe(out, newlines=True) == []  # outputs shown as JSON


def test_json_output_is_escaped_and_keeps_every_value(store: str) -> None:
    code, out, _ = invoke("runs", "--json", "--store", store)
    assert {json.loads(line)["graph"] for line in out.splitlines()} == {NAME}
    code, out, _ = invoke("show", "bad", "--json", "--store", store)
    assert HOSTILE in json.loads(out)["nodes"][0]["error"]
    code, out, _ = invoke("events", "--json", "--store", store)
    events = [json.loads(line) for line in out.splitlines()]
    assert {e["data"]["graph"] for e in events if e["kind"] == "run.started"} == {NAME}
    for args in (["trace", "bad", "-f", "json"], ["metrics", "bad", "--json"]):
        code, out, _ = invoke(*args, "--store", store)
        assert code == 0
        assert json.loads(out)["graph_id"] == NAME
        assert terminal_unsafe(out, newlines=True) == []
    for args in (["events", "--json"], ["replay", "good", "--json"]):
        code, out, _ = invoke(*args, "--store", store)
        assert code == 0 and terminal_unsafe(out, newlines=True) == []


def test_a_run_s_output_on_a_terminal_shows_escapes_and_keeps_its_lines(
    tmp_path: Path,
) -> None:
    primary, secondary = os.openpty()
    try:
        with reaped(
            spawn(
                tmp_path,
                "run", str(graph_file(tmp_path, "hostile_output")), "-i", "text=x",
                "--store", str(tmp_path / "c.db"),
                stdout=secondary,
            )
        ) as proc:  # fmt: skip
            os.close(secondary)
            secondary = -1
            seen = b""
            while True:
                try:
                    chunk = os.read(primary, 65536)
                except OSError:  # EIO: the command ended and closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            _, err = proc.communicate(timeout=60)
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)
    assert proc.returncode == 0, err
    text = seen.decode().replace("\r\n", "\n")  # the terminal's line discipline adds the CRs
    assert text == f"first line\n{printable(HOSTILE, newlines=True)}\n"


def test_agents_run_prints_agent_names_as_text(tmp_path: Path) -> None:
    config = tmp_path / "agents.yaml"
    config.write_text(f"agents:\n  {json.dumps(NAME)}:\n    ref: {W}:CannotStart\n")
    code, out, err = invoke("agents", "run", str(config), "--store", str(tmp_path / "b.db"))
    assert code == 1, err
    shown(out)
    shown(err)
    assert f"agent {printable(NAME)} stopped on its own" in out
    assert err.startswith(f"error: every agent stopped on its own: {printable(NAME)} failed")


def test_text_log_lines_show_escapes() -> None:
    from converge.observability import configure_logging

    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        handler = configure_logging("text")
        try:
            raise RuntimeError(HOSTILE)
        except RuntimeError:
            record = logging.LogRecord(
                "converge.engine", logging.ERROR, __file__, 1, "node %s", (HOSTILE,), None
            )
            record.exc_info = sys.exc_info()
        line = handler.format(record)
        assert terminal_unsafe(line, newlines=True) == []
        first, *traceback = line.splitlines()
        assert first.endswith(f"node {printable(HOSTILE)}")
        assert traceback[0] == "Traceback (most recent call last):"
        assert f"RuntimeError: {printable(HOSTILE, newlines=True)}" in line  # its lines kept
    finally:
        for h in list(root.handlers):
            if h not in before[0]:
                root.removeHandler(h)
        root.setLevel(before[1])
