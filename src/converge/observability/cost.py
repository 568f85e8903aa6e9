"""Costs for people: significant digits and the currency code.

``0.0000325 USD``. What a model call costs is recorded in US dollars (``agents.llm.pricing``;
a node's ``ctx.report_usage(cost=...)`` is taken as the same), and is often a few millionths
of one: a fixed number of decimals shows ``0.0000``. Every place converge prints a cost for people —
live progress, ``converge show``, ``runs``, ``metrics``, ``trace``'s tree — shows it with
three significant digits in plain decimal notation (a reader compares ``0.0000325`` and
``0.00041`` at a glance, not ``3.25e-05`` and ``4.1e-04``), at least two decimals, trailing
zeros dropped past those, and the currency code, as a tender's awards are (``0.3 USD``).
JSON keeps the number as it is.
"""

from __future__ import annotations

import math

__all__ = ["COST_CURRENCY", "format_cost"]

COST_CURRENCY = "USD"
"""The currency of recorded costs."""


def format_cost(cost: float, currency: str = COST_CURRENCY) -> str:
    """``cost`` for people: ``0.0000325 USD``, ``0.045 USD``, ``1.50 USD``, ``0 USD``."""
    if not math.isfinite(cost):
        return f"{cost} {currency}"
    if cost == 0:
        return f"0 {currency}"
    magnitude = math.floor(math.log10(abs(cost)))
    if magnitude < -12:  # past a trillionth: decimals would be all zeros
        return f"{cost:.3g} {currency}"
    decimals = max(2, 2 - magnitude)
    text = f"{cost:.{decimals}f}"
    if decimals > 2:  # 3 significant digits, without trailing zeros beyond the second decimal
        whole, _, frac = text.partition(".")
        frac = frac.rstrip("0").ljust(2, "0")
        text = f"{whole}.{frac}"
    return f"{text} {currency}"
