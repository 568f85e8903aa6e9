"""What a call costs: per-model prices per million tokens.

Prices are in US dollars per million tokens in and out.

```python
prices = PriceTable({"my-finetune": Price(0.30, 1.20)})   # added to (and overriding) the defaults
cost = prices.cost("gpt-4o-mini-2024-07-18", LLMUsage(tokens_in=1200, tokens_out=300))
```

A model is found by its exact name, else by the longest known name it starts with, so dated
snapshots (``gpt-4o-2024-08-06``) take their family's price. A model the table does not know
(a local model, a new one) costs 0.0: ``price_for`` returns ``None`` for it, so a caller can
tell "free" from "unknown". The default prices are the providers' published list prices when
this table was written; prices change — override them for accounting that matters.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from converge.agents.llm.base import LLMUsage

__all__ = ["DEFAULT_PRICES", "Price", "PriceTable"]


class Price(msgspec.Struct, frozen=True):
    """A model's price in US dollars per million tokens."""

    input: float
    """Per million prompt tokens."""
    output: float
    """Per million completion tokens."""


DEFAULT_PRICES: Mapping[str, Price] = {
    # OpenAI (standard tier)
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-5": Price(1.25, 10.00),
    "gpt-5-mini": Price(0.25, 2.00),
    "gpt-5-nano": Price(0.05, 0.40),
    "o3": Price(2.00, 8.00),
    "o4-mini": Price(1.10, 4.40),
    # Anthropic
    "claude-opus-4": Price(15.00, 75.00),
    "claude-opus-4-1": Price(15.00, 75.00),
    "claude-opus-4-5": Price(5.00, 25.00),
    "claude-sonnet-4": Price(3.00, 15.00),
    "claude-sonnet-4-5": Price(3.00, 15.00),
    "claude-haiku-4-5": Price(1.00, 5.00),
    "claude-3-5-haiku": Price(0.80, 4.00),
}
"""List prices per million tokens, as published when this table was written."""


class PriceTable:
    """Prices by model name: ``DEFAULT_PRICES`` with ``overrides`` on top.

    Args:
        overrides: prices to add or replace (``Price`` or an ``(input, output)`` pair).
        defaults: whether to start from ``DEFAULT_PRICES`` (else only ``overrides``).
    """

    def __init__(
        self,
        overrides: Mapping[str, Price | tuple[float, float]] | None = None,
        *,
        defaults: bool = True,
    ) -> None:
        self._prices: dict[str, Price] = dict(DEFAULT_PRICES) if defaults else {}
        for model, price in (overrides or {}).items():
            self._prices[model] = price if isinstance(price, Price) else Price(*price)
        # Longest first, so "gpt-4o-mini-…" matches gpt-4o-mini before gpt-4o.
        self._by_length = sorted(self._prices, key=len, reverse=True)
        self._cache: dict[str, Price | None] = {}

    def price_for(self, model: str) -> Price | None:
        """The price of ``model``, or ``None`` if the table does not know it."""
        try:
            return self._cache[model]
        except KeyError:
            pass
        price = self._prices.get(model)
        if price is None:
            price = next(
                (self._prices[k] for k in self._by_length if model.startswith(k + "-")), None
            )
        self._cache[model] = price
        return price

    def cost(self, model: str, usage: LLMUsage) -> float:
        """What ``usage`` of ``model`` costs in US dollars (0.0 for an unknown model)."""
        price = self.price_for(model)
        if price is None:
            return 0.0
        return (usage.tokens_in * price.input + usage.tokens_out * price.output) / 1_000_000

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.price_for(model) is not None

    def __repr__(self) -> str:
        return f"PriceTable({len(self._prices)} models)"
