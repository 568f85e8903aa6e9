"""The ``converge`` command as a user runs it."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from converge import __version__
from converge.cli import app

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_version() -> None:
    code, out, _ = invoke("--version")
    assert code == 0
    assert out.strip() == f"converge {__version__}"


def test_schema_of_one_object_and_of_all() -> None:
    code, out, _ = invoke("schema", "offer")
    assert code == 0
    schema = json.loads(out)
    offer = schema["$defs"]["Offer"]
    assert {"intent_id", "capability", "cost"} <= set(offer["required"])
    code, out, _ = invoke("schema")
    assert code == 0
    assert {"Intent", "Offer", "Receipt", "Event", "Message"} <= set(json.loads(out)["$defs"])


def test_schema_of_unknown_object_is_bad_input() -> None:
    code, out, err = invoke("schema", "bogus")
    assert code == 2
    assert out == ""
    assert err.startswith("error: unknown protocol object 'bogus'")
    assert "offer" in err
    assert "Traceback" not in err


def test_keys_new_and_show(tmp_path: Path) -> None:
    path = tmp_path / "agent.pem"
    code, out, _ = invoke("keys", "new", str(path))
    assert code == 0
    did = out.strip()
    assert did.startswith("did:key:z6Mk")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert did not in path.read_text()  # the file holds the private key, not the did
    code, out, _ = invoke("keys", "show", str(path))
    assert code == 0
    assert did in out
    # never overwrites an existing key
    code, _, err = invoke("keys", "new", str(path))
    assert code == 2
    assert "already exists" in err


def test_keys_show_refuses_a_key_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "agent.pem"
    assert invoke("keys", "new", str(path))[0] == 0
    path.chmod(0o644)
    code, _, err = invoke("keys", "show", str(path))
    assert code == 2
    assert "chmod 600" in err


def test_keys_with_password_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "agent.pem"
    monkeypatch.setenv("AGENT_KEY_PASSWORD", "correct horse")
    code, out, _ = invoke("keys", "new", str(path), "--password-env", "AGENT_KEY_PASSWORD")
    assert code == 0
    assert "ENCRYPTED" in path.read_text()
    code, shown, _ = invoke("keys", "show", str(path), "--password-env", "AGENT_KEY_PASSWORD")
    assert code == 0
    assert out.strip() in shown
    code, _, err = invoke("keys", "show", str(path))
    assert code == 2
    assert "password" in err.lower()
    code, _, err = invoke("keys", "show", str(path), "--password-env", "UNSET_VARIABLE_X")
    assert code == 2
    assert "UNSET_VARIABLE_X" in err


def test_demo_records_the_exchange_and_events_reads_it_back(tmp_path: Path) -> None:
    store = tmp_path / "demo.db"
    code, out, err = invoke("demo", "--store", str(store), "--json")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    kinds = [e["kind"] for e in events]
    assert kinds == [
        "agent.registered",
        "agent.registered",
        "intent.published",
        "intent.verified",
        "offer.sent",
        "offer.accepted",
        "offer.rejected",
        "offer.rejected",
    ]
    assert [e["data"]["reason"] for e in events if e["kind"] == "offer.rejected"] == [
        "bad_signature",
        "replayed",
    ]
    assert len({e["trace_id"] for e in events}) == 1
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    # the same events, read back from the file by another command
    trace = events[0]["trace_id"]
    code, out, _ = invoke("events", "--store", str(store), "--trace", trace, "--json")
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == events
    code, out, _ = invoke(
        "events", "--store", str(store), "--kind", "offer.rejected", "--json", "--limit", "1"
    )
    assert [json.loads(line)["data"]["reason"] for line in out.splitlines()] == ["bad_signature"]
    # a second run adds a second trace to the same store
    assert invoke("demo", "--store", str(store), "--json")[0] == 0
    code, out, _ = invoke("events", "--store", str(store), "--json")
    assert len({json.loads(line)["trace_id"] for line in out.splitlines()}) == 2


def test_events_timeline_names_agents(tmp_path: Path) -> None:
    store = tmp_path / "demo.db"
    assert invoke("demo", "--store", str(store), "--json")[0] == 0
    code, out, _ = invoke("events", "--store", str(store))
    assert code == 0
    assert "requester" in out
    assert "provider" in out
    assert "offer.rejected" in out


def test_events_on_a_missing_store_is_bad_input(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    code, _, err = invoke("events", "--store", str(missing))
    assert code == 2
    assert "no store" in err
    assert not missing.exists()


def test_events_on_a_store_from_a_newer_converge_is_bad_input(tmp_path: Path) -> None:
    store = tmp_path / "demo.db"
    assert invoke("demo", "--store", str(store), "--json")[0] == 0
    with sqlite3.connect(store) as conn:
        conn.execute(
            "INSERT INTO schema_version (version, applied_at, description) VALUES (999, 0, 'x')"
        )
    code, _, err = invoke("events", "--store", str(store))
    assert code == 2
    assert "schema version 999" in err


def test_events_on_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    store = tmp_path / "notes.db"
    store.write_text("these are not the bytes of a database\n" * 100)
    code, _, err = invoke("events", "--store", str(store))
    assert code == 2  # bad input: a file that is not a converge store
    assert "not a SQLite database" in err
    assert "Traceback" not in err


def test_the_installed_command_runs_the_demo(tmp_path: Path) -> None:
    """`make run` runs this: the console script, in a fresh process."""
    exe = Path(sys.executable).with_name("converge")
    assert exe.exists(), "the converge console script is not installed in this environment"
    env = {**os.environ, "COLUMNS": "160"}
    proc = subprocess.run(
        [str(exe), "demo", "--store", str(tmp_path / "demo.db")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "offer.accepted" in proc.stdout
    assert proc.stdout.count("offer.rejected") == 2
    assert "converge events --store" in proc.stdout
