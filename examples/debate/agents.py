"""Rule-based debaters and judges for the debate example.

Each side argues from a small knowledge list: points with a weight (how strong the evidence is)
and the opposing points they answer. In round ``r`` a debater makes its ``r`` strongest points
and rebuts every point of the other side's last argument that it has an answer for. A debater's
output is its whole case so far, so the judge reads both cases from the final round.

Judges score the cases differently, so a jury of three can disagree:

- ``judge`` and ``evidence_judge``: the weight of each side's unanswered points, plus half the
  weight of the points it answered;
- ``rebuttal_judge``: two points per rebuttal, one per unanswered point;
- ``cautious_judge``: like ``evidence_judge``, but the change (``for``) must win by 1.0 or more.
"""

from __future__ import annotations

from typing import Any

TOPIC = "Should we rewrite the billing service in Rust?"
"""The topic the knowledge below is about."""

KNOWLEDGE: dict[str, list[dict[str, Any]]] = {
    "for": [
        {"id": "F1", "weight": 3.0, "answers": ["A2"],
         "claim": "14 crashes last quarter were memory errors the type system rules out"},
        {"id": "F2", "weight": 2.0, "answers": ["A3"],
         "claim": "p99 latency would drop from 180 ms to about 40 ms on the same hardware"},
        {"id": "F3", "weight": 1.5, "answers": ["A1"],
         "claim": "it can go module by module behind the same API, so billing never stops"},
    ],
    "against": [
        {"id": "A1", "weight": 3.0, "answers": ["F2"],
         "claim": "a rewrite freezes billing features for two quarters; sales needs three"},
        {"id": "A2", "weight": 2.5, "answers": ["F1"],
         "claim": "only one of the five engineers on the team has shipped Rust to production"},
        {"id": "A3", "weight": 1.0, "answers": [],
         "claim": "the crashes came from one C extension that can be replaced in a week"},
    ],
}  # fmt: skip


def _debater(side: str) -> Any:
    points = sorted(KNOWLEDGE[side], key=lambda p: -p["weight"])

    async def argue(inputs: dict[str, Any]) -> dict[str, Any]:
        heard = [v for k, v in inputs.items() if k.endswith(".output")]
        round_ = 1 + max((h["round"] for h in heard), default=0)
        made = points[:round_]
        rebutted = sorted(
            {
                pid
                for other in heard
                for pid in other["point_ids"]
                for mine in KNOWLEDGE[side]
                if pid in mine["answers"]
            }
        )
        text = " ".join(f"{p['claim'][0].upper()}{p['claim'][1:]}." for p in made[-1:])
        if rebutted:
            text += f" And I answer {', '.join(rebutted)}."
        return {
            "side": side,
            "round": round_,
            "point_ids": [p["id"] for p in made],
            "rebutted": rebutted,
            "speech": text,
        }

    argue.__name__ = {"for": "proponent", "against": "opponent"}[side]
    return argue


proponent = _debater("for")
opponent = _debater("against")


def _weight(pid: str) -> float:
    return next(p["weight"] for side in KNOWLEDGE.values() for p in side if p["id"] == pid)


def _cases(inputs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    cases = {v["side"]: dict(v) for k, v in inputs.items() if k.endswith(".output")}
    answered = {pid for case in cases.values() for pid in case["rebutted"]}
    for case in cases.values():
        case["standing"] = [p for p in case["point_ids"] if p not in answered]
    return cases


def evidence_score(case: dict[str, Any]) -> float:
    """Unanswered evidence plus half the weight of what the side answered."""
    return sum(map(_weight, case["standing"])) + 0.5 * sum(map(_weight, case["rebutted"]))


def rebuttal_score(case: dict[str, Any]) -> float:
    """Two per rebuttal, one per unanswered point."""
    return 2.0 * len(case["rebutted"]) + len(case["standing"])


async def judge(inputs: dict[str, Any]) -> dict[str, Any]:
    """The single judge: the side with more unanswered evidence wins; a tie keeps the status quo."""
    cases = _cases(inputs)
    scores = {side: round(evidence_score(case), 2) for side, case in cases.items()}
    winner = "for" if scores["for"] > scores["against"] else "against"
    loser = "against" if winner == "for" else "for"
    return {
        "verdict": winner,
        "scores": scores,
        "reason": (
            f"{winner} scores {scores[winner]} to {scores[loser]}; "
            f"standing points: {', '.join(cases[winner]['standing']) or 'none'}"
        ),
    }


async def evidence_judge(inputs: dict[str, Any]) -> str:
    """Votes like ``judge``."""
    return str((await judge(inputs))["verdict"])


async def rebuttal_judge(inputs: dict[str, Any]) -> str:
    """Votes for the side that answered more and kept more points standing."""
    cases = _cases(inputs)
    return "for" if rebuttal_score(cases["for"]) > rebuttal_score(cases["against"]) else "against"


async def cautious_judge(inputs: dict[str, Any]) -> str:
    """Votes for the change only when its evidence wins by 1.0 or more."""
    cases = _cases(inputs)
    margin = evidence_score(cases["for"]) - evidence_score(cases["against"])
    return "for" if margin >= 1.0 else "against"
