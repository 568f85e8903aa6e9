"""Award selection, pure: which offer wins, and what it is paid.

``_round.close`` calls ``select`` with the offers still valid at close; the strategies, their
scores, the weighted score's normalisation, the tie-breaks and the payment rules are here.
Strategies: ``lowest_cost``, ``first_price``, ``second_price``, ``highest_quality``,
``weighted``. Closing 1,000 offers under ``weighted`` takes about 1.5 ms
(``bench/bench_auction.py``).

Rules a caller can rely on:

* **Weighted score.** Each criterion (cost, latency, quality, reliability, trust) is min-max
  normalised over the offers still valid at close: ``(v - lo) / (hi - lo)``, or
  ``(hi - v) / (hi - lo)`` for cost and latency where lower is better, so the best offer on a
  criterion gets 1 and the worst 0. When every stated value is equal the criterion gives each
  stating offer 1. A value an offer leaves out (latency, quality, reliability, or a provider
  missing from the trust map) scores 0 on that criterion — the worst, so silence never beats a
  stated figure. The score is ``sum(w * n) / sum(w)`` in [0, 1], with the weights of
  ``intent.utility`` (empty: 1 each; checked by ``weights_of`` when the auction opens).
* **Ties break deterministically**, independent of arrival order, on nothing a bidder picks:
  by the strategy's score (best first), then lower cost, then ``tie_key``, the sha256 of the
  intent id and the provider's did. Not the offer id: a provider chooses its offer's id (an
  id of ``"0"`` would win every tie), but not the intent's id, and its did is the one it was
  admitted under. One binding offer per provider makes ``tie_key`` unique in an auction.
* **Prices.** ``second_price`` pays the winner (the lowest cost) the second-lowest cost; with a
  single offer it pays the winner's own price — the requester never pays more than some bidder
  asked, and ``max_cost`` is a ceiling, not a bid. Every other strategy pays the winner's own
  price (``first_price`` and ``lowest_cost`` pick the same winner at the same price; the names
  say which payment rule the requester announced).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Literal, get_args

import msgspec

from converge.errors import ValidationError
from converge.protocol.objects import Offer

__all__ = [
    "CRITERIA",
    "STRATEGIES",
    "Award",
    "RankedOffer",
    "Strategy",
    "select",
    "tie_key",
    "weights_of",
]

Strategy = Literal["lowest_cost", "highest_quality", "weighted", "first_price", "second_price"]
"""How ``close`` picks the winner and what it pays."""
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)

CRITERIA = ("cost", "latency", "quality", "reliability", "trust")
"""The criteria of the weighted score, the keys ``intent.utility`` may weight."""
_LOWER_IS_BETTER = frozenset({"cost", "latency"})


class RankedOffer(msgspec.Struct, frozen=True, forbid_unknown_fields=True, array_like=True):
    """One row of an award's ranking."""

    offer_id: str
    """The offer."""
    score: float
    """Its score under the strategy (see ``Award.score``)."""


class Award(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The outcome of a closed auction with a winner."""

    auction_id: str
    """The auction."""
    intent_id: str
    """The intent awarded."""
    offer: Offer
    """The winning offer (as verified on arrival, signature included)."""
    provider: str
    """The winner's did."""
    price: float
    """What the requester pays (the second-lowest cost under ``second_price``)."""
    currency: str
    """The currency of ``price``."""
    strategy: Strategy
    """The strategy that picked it."""
    score: float
    """The winner's score: its cost for the cost strategies (lower is better), its quality for
    ``highest_quality``, its weighted score in [0, 1] for ``weighted``."""
    ranking: tuple[RankedOffer, ...]
    """Every valid offer, best first."""
    reason: str
    """Why it won, for people."""


def select(
    live: Sequence[Offer],
    *,
    auction_id: str,
    intent_id: str,
    strategy: Strategy,
    weights: Mapping[str, float],
    currency: str,
    trust: Mapping[str, float] | None,
) -> Award:
    """The award of an auction whose valid offers at close are ``live`` (at least one).

    Args:
        live: the offers still valid at close, in arrival order (which decides nothing).
        auction_id: the auction.
        intent_id: its intent (the last tie-break hashes it).
        strategy: how the winner is picked and paid.
        weights: the weighted strategy's weights by criterion (``weights_of``).
        currency: the currency of every offer's cost.
        trust: trust by provider did, for the weighted score (missing: scores 0 on trust).

    Raises:
        ValidationError: a trust value is not finite (under a weighted strategy that weighs it).
    """
    ranked, scores = _rank(strategy, weights, intent_id, live, trust)
    winner = ranked[0]
    price = _price_of(strategy, ranked)
    return Award(
        auction_id=auction_id,
        intent_id=intent_id,
        offer=winner,
        provider=winner.provider,
        price=price,
        currency=currency,
        strategy=strategy,
        score=scores[0],
        ranking=tuple(RankedOffer(o.id, s) for o, s in zip(ranked, scores, strict=True)),
        reason=_award_reason(strategy, scores[0], price, len(ranked)),
    )


def weights_of(utility: Mapping[str, float]) -> dict[str, float]:
    """The weighted strategy's weights: ``utility`` checked, or 1 for every criterion.

    Raises:
        ValidationError: an unknown criterion, a weight that is not a finite number >= 0, or
            every weight 0 (``field`` names the utility key).
    """
    if not utility:
        return dict.fromkeys(CRITERIA, 1.0)
    unknown = sorted(set(utility) - set(CRITERIA))
    if unknown:
        raise ValidationError(
            f"unknown utility criteria {unknown}; use {', '.join(CRITERIA)}", field="utility"
        )
    weights: dict[str, float] = {}
    for name in CRITERIA:
        w = utility.get(name, 0.0)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValidationError(
                f"utility weight {name!r} must be a finite number >= 0, not {w!r}",
                field=f"utility.{name}",
            )
        weights[name] = float(w)
    if not any(weights.values()):
        raise ValidationError("utility weights are all 0: nothing to score", field="utility")
    return weights


def _rank(
    strategy: Strategy,
    weights: Mapping[str, float],
    intent_id: str,
    live: Sequence[Offer],
    trust: Mapping[str, float] | None,
) -> tuple[list[Offer], list[float]]:
    """``live`` best first under ``strategy``, and each one's score."""
    costs = [o.cost for o in live]
    ties = [tie_key(intent_id, o.provider) for o in live]
    if strategy == "weighted":
        scores = _weighted(weights, live, costs, trust)
        keys = [(-s, c, t) for s, c, t in zip(scores, costs, ties, strict=True)]
    elif strategy == "highest_quality":
        # A missing quality ranks below a stated 0 (key -1), and reports as score 0.
        qs = [-1.0 if o.quality is None else o.quality for o in live]
        scores = [max(q, 0.0) for q in qs]
        keys = [(-q, c, t) for q, c, t in zip(qs, costs, ties, strict=True)]
    else:  # lowest_cost, first_price, second_price: the cheapest wins
        scores = costs
        keys = [(c, 0.0, t) for c, t in zip(costs, ties, strict=True)]
    order = sorted(range(len(live)), key=keys.__getitem__)
    return [live[i] for i in order], [scores[i] for i in order]


def tie_key(intent_id: str, provider: str) -> bytes:
    """The last tie-break of a provider's offer on an intent (see the module docstring)."""
    return hashlib.sha256(f"{intent_id}\0{provider}".encode()).digest()


def _weighted(
    weights: Mapping[str, float],
    live: Sequence[Offer],
    costs: list[float],
    trust: Mapping[str, float] | None,
) -> list[float]:
    """Each offer's weighted score in [0, 1] (see the module docstring)."""
    total = sum(weights.values())
    scores = [0.0] * len(live)
    for name in CRITERIA:  # a fixed order, so the float sums do not depend on arrival order
        w = weights.get(name, 0.0)
        if not w:
            continue
        if name == "cost":
            values: list[float | None] = list(costs)
        elif name == "latency":
            values = [o.latency_s for o in live]
        elif name == "quality":
            values = [o.quality for o in live]
        elif name == "reliability":
            values = [o.reliability for o in live]
        else:
            tmap = trust or {}
            values = [tmap.get(o.provider) for o in live]
            if not all(v is None or math.isfinite(v) for v in values):
                raise ValidationError("trust values must be finite numbers", field="trust")
        norm = _normalise(values, lower_is_better=name in _LOWER_IS_BETTER)
        scores = [s + w * n for s, n in zip(scores, norm, strict=True)]
    return [s / total for s in scores]


def _normalise(values: list[float | None], *, lower_is_better: bool) -> list[float]:
    """Min-max over the stated values: best 1, worst 0; a missing value 0."""
    stated = [v for v in values if v is not None]
    if not stated:
        return [0.0] * len(values)
    lo, hi = min(stated), max(stated)
    span = hi - lo
    if span <= 0:
        return [0.0 if v is None else 1.0 for v in values]
    if lower_is_better:
        return [0.0 if v is None else (hi - v) / span for v in values]
    return [0.0 if v is None else (v - lo) / span for v in values]


def _price_of(strategy: Strategy, ranked: list[Offer]) -> float:
    """What the winner, ``ranked[0]``, is paid (see the module docstring)."""
    if strategy == "second_price" and len(ranked) > 1:
        return ranked[1].cost
    return ranked[0].cost


def _award_reason(strategy: Strategy, score: float, price: float, n: int) -> str:
    of = f"of {n} valid offer{'s' if n != 1 else ''}"
    if strategy == "weighted":
        return f"best weighted score {score:.4g} {of}"
    if strategy == "highest_quality":
        return f"highest quality {score:.4g} {of}"
    if strategy == "second_price":
        paid = "the second-lowest cost" if n > 1 else "its own price (the only offer)"
        return f"lowest cost {score:.6g} {of}, paid {paid}: {price:.6g}"
    return f"lowest cost {score:.6g} {of}, paid its own price"
