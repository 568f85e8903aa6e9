"""Costs for people: significant digits and the currency, whatever the magnitude."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from converge.observability.cost import format_cost


def test_a_small_cost_keeps_its_significant_digits() -> None:
    assert format_cost(3.25e-05) == "0.0000325 USD"  # once shown as 0.0000
    assert format_cost(0.045) == "0.045 USD"
    assert format_cost(1.5) == "1.50 USD"
    assert format_cost(0) == "0 USD"
    assert format_cost(0.3, "EUR") == "0.30 EUR"


@given(st.floats(min_value=1e-12, max_value=1e6, allow_nan=False))
def test_a_cost_reads_back_within_three_significant_digits(cost: float) -> None:
    text, currency = format_cost(cost).split(" ")
    assert currency == "USD"
    assert "e" not in text and len(text.partition(".")[2]) >= 2
    assert math.isclose(float(text), cost, rel_tol=5e-3)
