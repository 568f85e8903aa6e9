"""Helpers the benchmark scripts share: timing and one JSON line per case.

Every script prints one JSON object per line, one line per case, with at least ``bench``,
``case``, ``value`` and ``unit``; a case the issue gives a target for also carries ``target``
and ``ok``. Nothing here asserts: a figure below its target is reported, not raised.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["best_of", "emit", "interleaved", "percentile", "rate"]


def emit(**fields: Any) -> None:
    """Print one case as a single JSON line (``bench``, ``case``, ``value``, ``unit``, …).

    If ``target`` is given and ``ok`` is not, ``ok`` is ``value >= target``. ``load_1m`` (the
    machine's one-minute load average) is added, to tell a slow figure from a busy machine.
    """
    for key in ("bench", "case", "value", "unit"):
        if key not in fields:
            raise TypeError(f"emit() needs `{key}`")
    if fields.get("target") is not None and "ok" not in fields:
        fields["ok"] = bool(fields["value"] >= fields["target"])
    # Other work on the machine skews every figure; the load says how much there was.
    fields.setdefault("load_1m", round(os.getloadavg()[0], 2))
    print(json.dumps(fields, separators=(", ", ": ")), flush=True)


def best_of(fn: Callable[[], object], repeat: int = 5) -> float:
    """The shortest of ``repeat`` wall-clock times (seconds) of ``fn()``.

    The minimum is the figure least disturbed by other work on the machine.
    """
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def interleaved(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """The best time (seconds) of each of ``fns``, run in alternation for ``rounds`` rounds.

    Alternating the contenders, instead of timing one then the other, lets a noisy stretch of
    the machine hit both alike, so their ratio is fair even when their absolute figures wobble.
    """
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = min(best[name], best_of(fn, 1))
    return best


def rate(count: int, seconds: float) -> float:
    """``count`` per second, rounded to a whole number."""
    return round(count / seconds) if seconds > 0 else float("inf")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, nearest rank."""
    if not sorted_values:
        raise ValueError("no values")
    rank = min(len(sorted_values), max(1, math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]
