"""Run the debate twice: once a judge decides, once a jury of three votes.

    .venv/bin/python examples/debate/run.py [--rounds N] [--store PATH]

Offline and rule-based (see ``agents.py``). Both runs are logged in the embedded SQLite store,
``.converge/converge.db`` by default.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE.parents[1]) not in sys.path:  # run as a script: make ``examples`` importable
    sys.path.insert(0, str(HERE.parents[1]))

from converge.orchestration import Engine, Graph, RunResult, debate, load_graph  # noqa: E402
from converge.store import SQLiteStore  # noqa: E402
from examples.debate import agents  # noqa: E402

DEFAULT_STORE = Path(".converge/converge.db")
JURY = (agents.evidence_judge, agents.rebuttal_judge, agents.cautious_judge)


@dataclass
class Debate:
    """Both runs: the judge's and the jury's."""

    judged: RunResult
    voted: RunResult


def graphs(rounds: int) -> tuple[Graph, Graph]:
    """The judge variant (``graph.yaml`` for 2 rounds) and the jury variant."""
    debaters = [agents.proponent, agents.opponent]
    judged = (
        load_graph(HERE / "graph.yaml")
        if rounds == 2
        else debate(debaters, agents.judge, rounds=rounds)
    )
    voted = debate(debaters, jury=list(JURY), rounds=rounds, name="debate_jury")
    return judged, voted


async def run_debate(
    topic: str = agents.TOPIC, *, rounds: int = 2, store_path: Path = DEFAULT_STORE
) -> Debate:
    """Debate ``topic`` for ``rounds`` rounds, judged and voted, on the SQLite store."""
    judged, voted = graphs(rounds)
    store_path.parent.mkdir(parents=True, exist_ok=True)
    async with await SQLiteStore.open(store_path) as store, Engine(store) as engine:
        return Debate(
            judged=await engine.execute(judged, {"topic": topic}),
            voted=await engine.execute(voted, {"topic": topic}),
        )


def transcript(result: RunResult, rounds: int) -> list[str]:
    lines: list[str] = []
    for r in range(1, rounds + 1):
        for who in ("proponent", "opponent"):
            case: dict[str, Any] = result.outputs[f"{who}_{r}"]
            lines.append(f"  round {r} · {who} ({case['side']}): {case['speech']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A debate, judged and voted, with converge.")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of arguments (>= 1)")
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help="the SQLite store")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    result = asyncio.run(run_debate(rounds=args.rounds, store_path=args.store))
    out = [f"Topic: {agents.TOPIC}", "", *transcript(result.judged, args.rounds), ""]
    verdict = result.judged.output
    out.append(f"Judge: {verdict['verdict']} — {verdict['reason']}")
    vote = result.voted.output
    votes = ", ".join(f"{juror} {v}" for juror, v in vote["votes"].items())
    out.append(f"Jury:  {vote['verdict']} ({vote['count']} of {len(vote['votes'])}: {votes})")
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
