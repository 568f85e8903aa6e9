"""The agents file's reference is what the code generates, names every key the loader takes,
and its example loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from converge.cli._agents_config import AGENT_KEYS, POOL_KEYS, TOP_KEYS, load_agents_config
from converge.cli.agents_reference import EXAMPLE, render
from converge.errors import ValidationError
from converge.policy.safety import ActionPolicy, ResourceLimits

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "agents-file-reference.md"


def test_the_checked_in_reference_is_up_to_date() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == render(), (
        "docs/guides/agents-file-reference.md is out of date: "
        "run python docs/gen_agents_reference.py"
    )


def test_the_reference_names_every_key_the_loader_takes() -> None:
    text = render()
    keys = [*TOP_KEYS, *POOL_KEYS, *AGENT_KEYS]
    keys += [*ResourceLimits.__struct_fields__, *ActionPolicy.__struct_fields__]
    for key in keys:
        assert f"| `{key}` |" in text, key


@pytest.mark.parametrize(
    ("section", "text"),
    [("", "colour: red\n"), ("agents.a", "colour: red\n"), ("pools.p", "colour: red\n")],
)
def test_a_key_the_reference_does_not_name_is_refused(
    tmp_path: Path, section: str, text: str
) -> None:
    body = {
        "": "agents:\n  a:\n    ref: a:b\n" + text,
        "agents.a": "agents:\n  a:\n    ref: a:b\n    " + text,
        "pools.p": "pools:\n  p:\n    " + text + "agents:\n  a:\n    ref: a:b\n",
    }[section]
    path = tmp_path / "agents.yaml"
    path.write_text(body)
    with pytest.raises(ValidationError, match="unknown key 'colour'"):
        load_agents_config(path)


def test_the_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSLATORS_TOKEN", "s3cret")
    path = tmp_path / "agents.yaml"
    path.write_text(EXAMPLE)
    config = load_agents_config(path)
    [pool] = config.pools
    [agent] = config.agents
    assert (pool.id, pool.admission, pool.token_env) == (
        "translators",
        "token",
        "TRANSLATORS_TOKEN",
    )
    assert agent.capabilities == ("translate@1.0",)
    assert agent.limits == ResourceLimits(max_wall_time_s=3600, max_claimed_tasks=1)
    assert agent.policy == ActionPolicy(deny_decisions=frozenset({"submit_task"}))
    assert agent.key == tmp_path / "keys" / "fr.pem"
