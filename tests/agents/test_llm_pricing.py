"""Prices, prompt templates and the structured-output schema check."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from converge.agents.llm import LLMUsage, Price, PriceTable, render_prompt
from converge.agents.llm._schema import schema_error
from converge.errors import ValidationError


def test_cost_per_million_tokens_with_dated_snapshots_and_overrides() -> None:
    prices = PriceTable({"my-model": (1.0, 3.0), "gpt-4o": Price(5.0, 20.0)})
    usage = LLMUsage(tokens_in=2_000_000, tokens_out=1_000_000)
    assert prices.cost("my-model", usage) == 5.0
    assert prices.cost("gpt-4o-2024-08-06", usage) == 30.0  # the override, by prefix
    assert prices.price_for("gpt-4o-mini-2024-07-18") == Price(0.15, 0.60)  # longest prefix
    assert prices.cost("llama3.2", usage) == 0.0
    assert prices.price_for("llama3.2") is None
    assert "claude-haiku-4-5" in prices
    assert "gpt-4o" not in PriceTable(defaults=False)


def test_prompt_templates_fill_inputs_by_name() -> None:
    inputs = {"topic": "tides", "analyzer.output": {"score": 3}}
    assert render_prompt("On {topic}: {analyzer.output} {{raw}}", inputs) == (
        'On tides: {"score":3} {raw}'
    )
    assert render_prompt(None, {"q": "just this"}) == "just this"
    assert render_prompt(None, {"a": 1, "b": "x"}) == "a: 1\nb: x"
    with pytest.raises(ValidationError, match=r"\{missing\}"):
        render_prompt("{missing}", inputs)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({"n": 1, "tags": ["a"]}, None),
        ({"tags": []}, "$: missing required property 'n'"),
        ({"n": "1"}, "$.n: expected integer, got string"),
        ({"n": True}, "$.n: expected integer, got boolean"),
        ({"n": 1, "tags": [2]}, "$.tags[0]: expected string, got integer"),
        ({"n": 1, "extra": 0}, "$: unexpected property 'extra'"),
        ({"n": -1}, "$.n: -1 is below the minimum 0"),
        ([1], "$: expected object, got array"),
    ],
)
def test_schema_check_names_the_first_violation(value: object, error: str | None) -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 0},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["n"],
        "additionalProperties": False,
    }
    assert schema_error(value, schema) == error


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(), st.lists, max_leaves=8))
def test_the_empty_schema_accepts_any_json(value: object) -> None:
    assert schema_error(value, {}) is None
