"""The decentralized core (issue 3): the task board, the runtime, visibility queries.

Cases, each one JSON line (the same code paths users get: events and stores on):

- ``lifecycle_memory``: submit, claim, report through ``TaskManager`` on ``MemoryStore``,
  one task after another. Target >= 300,000 tasks/s. ``interpreter_floor_tasks_per_s`` is the
  same loop against a board that only awaits three calls, copies the frozen task twice and keeps
  a dict (no events, no index, no lease, no check): no board can beat it in this interpreter.
- ``lifecycle_sqlite_concurrent``: the same with 100 concurrent workers on ``SQLiteStore``
  (each submits, claims and reports its own tasks). Target >= 25,000 tasks/s; the sequential
  figure is reported too.
- ``submit_to_claim_latency``: an idle ``AgentRuntime`` whose agent claims what it sees;
  time from ``submit`` returning to the claim committed. Target p50 <= 0.5 ms.
- ``batched_messages``: 100 messages to one agent whose ``decide()`` awaits 50 ms; time until
  all are handled. Target <= 0.2 s.
- ``visible_tasks_p99``: ``list_pending_tasks_for_agent(limit=100)`` for an agent in 10 pools
  with 5 capabilities, among 1,000,000 pending tasks over 1,000 pools and 50 capabilities, on
  ``MemoryStore``. Target p99 <= 1 ms.

Run: ``.venv/bin/python bench/bench_board.py [--only CASE ...] [--visible-tasks N]``
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec

from _common import emit, percentile
from converge.coordination import TaskManager
from converge.core import Agent, ClaimTask, Decision, Identity, Message, Task
from converge.network import LocalNetwork
from converge.runtime import AgentRuntime, StandardExecutor
from converge.store import MemoryStore, SQLiteStore

BENCH = "board"


async def lifecycle(board: TaskManager, n: int, agent: str) -> None:
    for i in range(n):
        task = await board.submit(Task(objective="job", inputs={"i": i}))
        token = await board.claim(agent, task.id)
        await board.report(agent, task.id, i, token)


class _Floor:
    """What any board pays per lifecycle in this interpreter before doing its work: three awaited
    calls, three copies of the task (it is frozen) and a dict. No event, no index, no lease."""

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}

    async def submit(self, task: Task) -> Task:
        self.tasks[task.id] = task
        return task

    async def claim(self, agent: str, task_id: str) -> int:
        task = self.tasks[task_id]
        self.tasks[task_id] = msgspec.structs.replace(task, assigned_to=agent, attempts=1)
        return 1

    async def report(self, agent: str, task_id: str, result: int, token: int) -> None:
        task = self.tasks[task_id]
        self.tasks[task_id] = msgspec.structs.replace(task, result=result)


async def floor(n: int) -> float:
    """Lifecycles per second of ``_Floor``, driven exactly like ``lifecycle``."""
    board = _Floor()
    start = time.perf_counter()
    for i in range(n):
        task = await board.submit(Task(objective="job", inputs={"i": i}))
        token = await board.claim("w", task.id)
        await board.report("w", task.id, i, token)
    return n / (time.perf_counter() - start)


async def case_lifecycle_memory(n: int) -> None:
    async with MemoryStore() as store:
        board = TaskManager(store)
        await lifecycle(board, 200, "w")  # warm-up
        start = time.perf_counter()
        await lifecycle(board, n, "w")
        seconds = time.perf_counter() - start
    bare = await floor(n)
    emit(
        bench=BENCH,
        case="lifecycle_memory",
        value=round(n / seconds),
        unit="tasks/s",
        target=300_000,
        tasks=n,
        seconds=round(seconds, 3),
        interpreter_floor_tasks_per_s=round(bare),
    )


async def case_lifecycle_sqlite(n: int, workers: int, tmp: Path) -> None:
    async with await SQLiteStore.open(tmp / "board_seq.db") as store:
        board = TaskManager(store)
        start = time.perf_counter()
        await lifecycle(board, n // 10, "w")
        sequential = (n // 10) / (time.perf_counter() - start)
    async with await SQLiteStore.open(tmp / "board_conc.db") as store:
        board = TaskManager(store)
        per = n // workers
        start = time.perf_counter()
        await asyncio.gather(*(lifecycle(board, per, f"w{i}") for i in range(workers)))
        seconds = time.perf_counter() - start
    emit(
        bench=BENCH,
        case="lifecycle_sqlite_concurrent",
        value=round(per * workers / seconds),
        unit="tasks/s",
        target=25_000,
        workers=workers,
        tasks=per * workers,
        sequential_tasks_per_s=round(sequential),
    )


class Claimer(Agent):
    """Claims the first task it sees."""

    async def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        return [ClaimTask(task_id=tasks[0].id)] if tasks else []


async def case_submit_to_claim(rounds: int) -> None:
    async with MemoryStore() as store:
        net = LocalNetwork()
        board = TaskManager(store)
        claimed = asyncio.Event()
        agent = Claimer()
        executor = StandardExecutor(network=net, tasks=board)
        original = board.claim

        async def claim_and_signal(*args: object, **kwargs: object) -> int:
            token = await original(*args, **kwargs)  # type: ignore[arg-type]
            claimed.set()
            return token

        board.claim = claim_and_signal  # type: ignore[method-assign]
        latencies: list[float] = []
        async with AgentRuntime(agent, network=net, tasks=board, executor=executor):
            for i in range(rounds + 20):
                claimed.clear()
                task = Task(objective="x")
                start = time.perf_counter()
                await board.submit(task)
                await claimed.wait()
                if i >= 20:  # warm-up rounds
                    latencies.append((time.perf_counter() - start) * 1e3)
    latencies.sort()
    emit(
        bench=BENCH,
        case="submit_to_claim_latency",
        value=round(percentile(latencies, 50), 3),
        unit="ms (p50)",
        target=0.5,
        ok=percentile(latencies, 50) <= 0.5,
        p99_ms=round(percentile(latencies, 99), 3),
        rounds=rounds,
    )


class Slow(Agent):
    """Awaits 50 ms per decide() call and counts what it handled."""

    def __init__(self) -> None:
        super().__init__()
        self.handled = 0
        self.calls = 0
        self.all_done = asyncio.Event()

    async def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        self.calls += 1
        await asyncio.sleep(0.05)
        self.handled += len(messages)
        if self.handled >= 100:
            self.all_done.set()
        return []


async def case_batched_messages() -> None:
    async with MemoryStore() as store:
        net = LocalNetwork()
        agent = Slow()
        sender = Identity.generate()
        messages = [
            Message(kind="ping", payload=i, recipient=agent.did).sign(sender) for i in range(100)
        ]
        async with AgentRuntime(agent, network=net, store=store):
            start = time.perf_counter()
            for msg in messages:
                await net.send(msg)
            await agent.all_done.wait()
            seconds = time.perf_counter() - start
    emit(
        bench=BENCH,
        case="batched_messages",
        value=round(seconds, 3),
        unit="s",
        target=0.2,
        ok=seconds <= 0.2,
        decide_calls=agent.calls,
    )


async def case_visible_tasks(total: int, queries: int) -> None:
    rng = random.Random(7)
    pools = [f"pool-{i}" for i in range(1000)]
    caps = [f"cap{i:02d}" for i in range(50)]
    async with MemoryStore() as store:
        start = time.perf_counter()
        batch = 10_000
        for first in range(0, total, batch):
            async with store.transaction() as tx:
                for _ in range(min(batch, total - first)):
                    tx.put_task(
                        Task(
                            objective="t",
                            pool_id=rng.choice(pools),
                            required_capabilities=(rng.choice(caps),),
                            priority=rng.randrange(10),
                        )
                    )
        load_s = time.perf_counter() - start
        board = TaskManager(store)
        agent_pools = rng.sample(pools, 10)
        agent_caps = [f"{c}@1.0.0" for c in rng.sample(caps, 5)]
        found = await board.list_pending_tasks_for_agent("a", agent_pools, agent_caps, limit=100)
        assert len(found) == 100
        timings: list[float] = []
        for _ in range(queries):
            start = time.perf_counter()
            await board.list_pending_tasks_for_agent("a", agent_pools, agent_caps, limit=100)
            timings.append((time.perf_counter() - start) * 1e3)
        timings.sort()
    emit(
        bench=BENCH,
        case="visible_tasks_p99",
        value=round(percentile(timings, 99), 3),
        unit="ms (p99)",
        target=1.0,
        ok=percentile(timings, 99) <= 1.0,
        p50_ms=round(percentile(timings, 50), 3),
        pending_tasks=total,
        queries=queries,
        load_seconds=round(load_s, 1),
    )


async def main(args: argparse.Namespace) -> None:
    only = set(args.only or [])

    def wanted(case: str) -> bool:
        return not only or case in only

    with tempfile.TemporaryDirectory() as tmp:
        if wanted("lifecycle_memory"):
            await case_lifecycle_memory(args.lifecycle_tasks)
        if wanted("lifecycle_sqlite_concurrent"):
            await case_lifecycle_sqlite(args.sqlite_tasks, 100, Path(tmp))
        if wanted("submit_to_claim_latency"):
            await case_submit_to_claim(500)
        if wanted("batched_messages"):
            await case_batched_messages()
        if wanted("visible_tasks_p99"):
            await case_visible_tasks(args.visible_tasks, 1000)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="run only these cases")
    parser.add_argument("--lifecycle-tasks", type=int, default=20_000)
    parser.add_argument("--sqlite-tasks", type=int, default=10_000)
    parser.add_argument("--visible-tasks", type=int, default=1_000_000)
    asyncio.run(main(parser.parse_args()))
