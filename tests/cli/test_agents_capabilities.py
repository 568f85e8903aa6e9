"""Capabilities in the agents file: a requirement written in their place is refused at its own
line, with the capability meant; a bad one names its item."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from converge.cli import app
from converge.cli._agents_config import load_agents_config
from converge.errors import CapabilityError, ValidationError

FILE = """\
agents:
  fr:
    ref: examples.board.workers:translate
    capabilities:
      - summarize@2.1
      - {cap}
"""


def _write(tmp_path: Path, cap: str) -> Path:
    path = tmp_path / "agents.yaml"
    path.write_text(FILE.format(cap=cap))
    return path


def test_a_requirement_in_capabilities_is_refused_at_its_line_with_the_capability_meant(
    tmp_path: Path,
) -> None:
    path = _write(tmp_path, "translate>=1.0")
    with pytest.raises(CapabilityError) as info:
        load_agents_config(path)
    error = info.value
    assert (error.source, error.line, error.field) == (str(path), 6, "agents.fr.capabilities[1]")
    assert (error.text, error.expected, error.hint) == (
        "translate>=1.0",
        "capability",
        "translate@1.0",
    )
    assert "is a requirement" in str(error) and "write 'translate@1.0'" in str(error)


def test_the_command_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    path = _write(tmp_path, "'translate >= 1.2, < 2'")
    result = CliRunner().invoke(
        app, ["agents", "run", str(path), "--store", str(tmp_path / "x.db")]
    )
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}:6: 'translate >= 1.2, < 2' is a requirement")
    assert "write 'translate@1.2'" in line
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("cap", ["Translate", "translate@x", "translate@1..2"])
def test_a_capability_that_is_not_one_names_its_item(tmp_path: Path, cap: str) -> None:
    with pytest.raises(ValidationError) as info:
        load_agents_config(_write(tmp_path, cap))
    assert (info.value.line, info.value.field) == (6, "agents.fr.capabilities[1]")


def test_capabilities_as_a_single_string_are_one_capability(tmp_path: Path) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text("agents:\n  fr:\n    ref: a:b\n    capabilities: translate@1.0\n")
    assert load_agents_config(path).agents[0].capabilities == ("translate@1.0",)
