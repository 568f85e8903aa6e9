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


def by_pid(task: Task) -> dict[str, Any]:
    """The task's inputs, and which process did it."""
    import os

    return {"inputs": dict(task.inputs), "pid": os.getpid()}


class Writer(Agent):
    """A provider: bids on every intent it is invited to; awarded, writes on the inputs."""

    async def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        import time

        from converge.coordination.bidding import (
            INTENT_KIND,
            TASK_START_KIND,
            intent_of,
            report_done,
            task_start_of,
        )

        out: list[Decision] = []
        for m in messages:
            if m.kind == INTENT_KIND:
                cost = 5.0 if self.name == "cheap" else 9.0
                out.append(SubmitBid(auction_id=intent_of(m).id, amount=cost))
            elif m.kind == TASK_START_KIND:
                start = task_start_of(m)
                text = f"{self.name} wrote on {', '.join(map(str, start.inputs.values()))}"
                out += report_done(self.identity, start, output=text, now=time.time())
        return out


class Aye(Agent):
    """A voter: votes ``yes`` on every ballot it is asked about."""

    async def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        from converge.core import Vote

        return [
            Vote(ballot_id=m.payload["ballot_id"], choice="yes")
            for m in messages
            if m.kind == "ballot.request"
        ]
