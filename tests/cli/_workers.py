"""Board workers the ``converge agents run`` tests name as ``tests.cli._workers:<name>``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from converge.core import Agent, Decision, Message, SubmitBid, Task


def shout(task: Task) -> dict[str, Any]:
    """Upper-cases the task's objective."""
    return {"shouted": task.objective.upper()}


async def refuse(task: Task) -> Any:
    raise RuntimeError(f"will not do {task.objective}")


class CannotStart(Agent):
    """An agent whose start fails: its runtime ends on its own."""

    async def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        return []

    async def on_start(self) -> None:
        raise RuntimeError("no licence to start")


class Bidder(Agent):
    """Bids on every task it sees, in auctions no protocol runs: each decision fails."""

    async def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        return [SubmitBid(auction_id=t.id, amount=1.0) for t in tasks for _ in range(3)]
