"""The decentralized core (issues 3 and 16): the task board, the runtime, visibility queries.

Cases, each one JSON line (the same code paths users get: events and stores on):

- ``lifecycle_memory``: submit, claim, report through ``TaskManager`` on ``MemoryStore``,
  one task after another. Target >= 300,000 tasks/s (issue 3). ``interpreter_floor_tasks_per_s``
  is the same loop against a board that only awaits three calls, copies the frozen task twice
  and keeps a dict (no events, no index, no lease, no check): no board can beat it in this
  interpreter.
- ``lifecycle_memory_vs_peer``: the same loop's tasks/s over gsbm/converge's ``TaskManager``
  doing the same (``Task``, ``submit``, ``claim``, ``report``, one after another) in its own
  venv and process, the two taking turns for ``--rounds`` rounds; best round of each. Target
  >= 1.0 (issue 16).
- ``batched_memory_vs_peer``: ``submit_many`` of 100 new tasks, ``claim_next(limit=100)``,
  ``report_many`` of their 100 results, per task, over the same peer figure. Target >= 3.0.
- ``lifecycle_sqlite_concurrent``: the same lifecycle with 100 concurrent workers on
  ``SQLiteStore`` (each submits, claims and reports its own tasks). Target >= 25,000 tasks/s;
  the sequential figure is reported too.
- ``batched_sqlite_concurrent``: 100 concurrent workers on ``SQLiteStore``, each submitting
  batches of 100 tasks to its own pool, claiming them with ``claim_next`` and reporting them
  with ``report_many``, over ``lifecycle_sqlite_concurrent``'s unbatched figure, the two taking
  turns. Target >= 2.0.
- ``submit_to_claim_latency``: an idle ``AgentRuntime`` whose agent claims what it sees;
  time from ``submit`` returning to the claim committed. Target p50 <= 0.5 ms.
- ``batched_messages``: 100 messages to one agent whose ``decide()`` awaits 50 ms; time until
  all are handled. Target <= 0.2 s.
- ``visible_tasks_p99``: ``list_pending_tasks_for_agent(limit=100)`` for an agent in 10 pools
  with 5 capabilities, among 1,000,000 pending tasks over 1,000 pools and 50 capabilities, on
  ``MemoryStore``. Target p99 <= 1 ms.

Before and after: ``--baseline REF`` also runs the unbatched cases on the source of git ref
``REF`` (``git archive`` of its ``src/``, this very script run on it in a subprocess, taking
turns with the current source), and adds ``before_tasks_per_s`` and ``speedup_vs_before``.

The peer: gsbm/converge is GPL-3.0 and never imported here; ``bench/peers/gsbm_env.py`` makes
its venv and ``bench/peers/run_gsbm.py`` drives it. ``--no-peer`` skips the peer cases.

Run: ``.venv/bin/python bench/bench_board.py [--only CASE ...] [--rounds R] [--baseline REF]
[--no-peer] [--visible-tasks N]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from _common import emit, percentile
from converge.coordination import TaskManager
from converge.core import Agent, ClaimTask, Decision, Identity, Message, Task
from converge.network import LocalNetwork
from converge.runtime import AgentRuntime, StandardExecutor
from converge.store import MemoryStore, SQLiteStore

BENCH = "board"
CASES = (
    "lifecycle_memory",
    "lifecycle_memory_vs_peer",
    "batched_memory_vs_peer",
    "lifecycle_sqlite_concurrent",
    "batched_sqlite_concurrent",
    "submit_to_claim_latency",
    "batched_messages",
    "visible_tasks_p99",
)
BATCH = 100
WORKERS = 100


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


async def batched(board: TaskManager, n: int, agent: str, pool: str | None = None) -> None:
    """``n`` tasks through the board in batches of ``BATCH``: ``submit_many``,
    ``claim_next``, ``report_many``."""
    from converge.coordination.task_manager import Report  # not in a baseline's source

    pools = None if pool is None else [pool]
    for first in range(0, n, BATCH):
        size = min(BATCH, n - first)
        await board.submit_many(
            [Task(objective="job", inputs={"i": i}, pool_id=pool) for i in range(size)]
        )
        claimed = await board.claim_next(agent, limit=size, pool_ids=pools)
        if len(claimed) != size:
            raise RuntimeError(f"{agent} claimed {len(claimed)} of its {size} tasks")
        await board.report_many(agent, [Report(t.id, t.inputs["i"], t.attempts) for t in claimed])


async def memory_rate(run: Callable[[TaskManager, int, str], Awaitable[None]], n: int) -> float:
    """Tasks/s of ``run(board, n, "w")`` on a fresh ``MemoryStore``, after a warm-up."""
    async with MemoryStore() as store:
        board = TaskManager(store)
        await run(board, 200, "w")  # warm-up
        start = time.perf_counter()
        await run(board, n, "w")
        return n / (time.perf_counter() - start)


async def sqlite_rate(path: Path, n: int, *, batches: bool) -> float:
    """Tasks/s of ``WORKERS`` concurrent workers on a new ``SQLiteStore`` at ``path``, each with
    its own ``n // WORKERS`` tasks: one call at a time, or in batches (each in its own pool)."""
    async with await SQLiteStore.open(path) as store:
        board = TaskManager(store)
        per = n // WORKERS
        start = time.perf_counter()
        if batches:
            await asyncio.gather(
                *(batched(board, per, f"w{i}", pool=f"pool-{i}") for i in range(WORKERS))
            )
        else:
            await asyncio.gather(*(lifecycle(board, per, f"w{i}") for i in range(WORKERS)))
        return per * WORKERS / (time.perf_counter() - start)


class Baseline:
    """This script run on the ``src/`` of another git ref, for before/after figures."""

    def __init__(self, ref: str, tmp: Path) -> None:
        self.ref = ref
        root = Path(__file__).resolve().parents[1]
        archive = tmp / "baseline.tar"
        with open(archive, "wb") as out:
            subprocess.run(["git", "-C", str(root), "archive", ref, "src"], stdout=out, check=True)
        self.src = tmp / "baseline"
        with tarfile.open(archive) as tar:
            tar.extractall(self.src, filter="data")

    def run(self, case: str, args: list[str]) -> dict[str, Any]:
        """One round of ``case`` on the baseline source; its JSON line."""
        env = {**os.environ, "PYTHONPATH": f"{self.src / 'src'}{os.pathsep}{Path(__file__).parent}"}
        done = subprocess.run(
            [sys.executable, __file__, "--only", case, "--rounds", "1", "--no-peer", *args],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"baseline {self.ref} failed on {case}: {done.stderr[-2000:]}")
        result: dict[str, Any] = lines[0]
        return result


async def case_lifecycle_memory(n: int, rounds: int, peer: Any, baseline: Baseline | None) -> None:
    ours: list[float] = []
    theirs: list[float] = []
    before: list[float] = []
    batched_rates: list[float] = []
    for _ in range(rounds):  # taking turns: a busy stretch of the machine hits all alike
        if peer is not None:
            theirs.append(peer.lifecycle(n)["value"])
        ours.append(await memory_rate(lifecycle, n))
        if peer is not None:
            batched_rates.append(await memory_rate(batched, n))
        if baseline is not None:
            before.append(baseline.run("lifecycle_memory", ["--lifecycle-tasks", str(n)])["value"])
    bare = await floor(n)
    best = max(ours)
    extra: dict[str, Any] = {}
    if before:
        extra = {
            "before_ref": baseline.ref if baseline else None,
            "before_tasks_per_s": round(max(before)),
            "speedup_vs_before": round(best / max(before), 2),
        }
    emit(
        bench=BENCH,
        case="lifecycle_memory",
        value=round(best),
        unit="tasks/s",
        target=300_000,
        tasks=n,
        rounds=rounds,
        us_per_task=round(1e6 / best, 2),
        interpreter_floor_tasks_per_s=round(bare),
        **extra,
    )
    if peer is None:
        return
    peer_best = max(theirs)
    emit(
        bench=BENCH,
        case="lifecycle_memory_vs_peer",
        value=round(best / peer_best, 2),
        unit="x gsbm/converge",
        target=1.0,
        tasks_per_s=round(best),
        peer_tasks_per_s=round(peer_best),
        peer="gsbm/converge",
        rounds=rounds,
        ratio_by_round=[round(a / b, 2) for a, b in zip(ours, theirs, strict=True)],
        interpreter_floor_tasks_per_s=round(bare),
        **extra,
    )
    batched_best = max(batched_rates)
    emit(
        bench=BENCH,
        case="batched_memory_vs_peer",
        value=round(batched_best / peer_best, 2),
        unit="x gsbm/converge",
        target=3.0,
        batch=BATCH,
        tasks_per_s=round(batched_best),
        peer_tasks_per_s=round(peer_best),
        unbatched_tasks_per_s=round(best),
        peer="gsbm/converge",
        rounds=rounds,
        ratio_by_round=[round(a / b, 2) for a, b in zip(batched_rates, theirs, strict=True)],
        interpreter_floor_tasks_per_s=round(bare),
    )


async def case_lifecycle_sqlite(
    n: int, rounds: int, tmp: Path, baseline: Baseline | None, with_batches: bool
) -> None:
    async with await SQLiteStore.open(tmp / "board_seq.db") as store:
        board = TaskManager(store)
        start = time.perf_counter()
        await lifecycle(board, n // 10, "w")
        sequential = (n // 10) / (time.perf_counter() - start)
    unbatched: list[float] = []
    batches: list[float] = []
    before: list[float] = []
    for r in range(rounds):
        unbatched.append(await sqlite_rate(tmp / f"board_conc_{r}.db", n, batches=False))
        if with_batches:
            batches.append(await sqlite_rate(tmp / f"board_batch_{r}.db", n, batches=True))
        if baseline is not None:
            line = baseline.run("lifecycle_sqlite_concurrent", ["--sqlite-tasks", str(n)])
            before.append(line["value"])
    best = max(unbatched)
    extra: dict[str, Any] = {}
    if before:
        extra = {
            "before_ref": baseline.ref if baseline else None,
            "before_tasks_per_s": round(max(before)),
            "speedup_vs_before": round(best / max(before), 2),
        }
    emit(
        bench=BENCH,
        case="lifecycle_sqlite_concurrent",
        value=round(best),
        unit="tasks/s",
        target=25_000,
        workers=WORKERS,
        tasks=n // WORKERS * WORKERS,
        rounds=rounds,
        sequential_tasks_per_s=round(sequential),
        **extra,
    )
    if not with_batches:
        return
    batched_best = max(batches)
    emit(
        bench=BENCH,
        case="batched_sqlite_concurrent",
        value=round(batched_best / best, 2),
        unit="x unbatched",
        target=2.0,
        tasks_per_s=round(batched_best),
        unbatched_tasks_per_s=round(best),
        workers=WORKERS,
        batch=BATCH,
        tasks=n // WORKERS * WORKERS,
        rounds=rounds,
        ratio_by_round=[round(a / b, 2) for a, b in zip(batches, unbatched, strict=True)],
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
    only = set(args.only or CASES)

    def wanted(*cases: str) -> bool:
        return bool(only.intersection(cases))

    with tempfile.TemporaryDirectory() as tmp:
        baseline = Baseline(args.baseline, Path(tmp)) if args.baseline else None
        peer = None
        if wanted("lifecycle_memory_vs_peer", "batched_memory_vs_peer") and not args.no_peer:
            from peers.run_gsbm import GsbmPeer

            peer = GsbmPeer()
        try:
            if wanted("lifecycle_memory", "lifecycle_memory_vs_peer", "batched_memory_vs_peer"):
                await case_lifecycle_memory(args.lifecycle_tasks, args.rounds, peer, baseline)
        finally:
            if peer is not None:
                peer.close()
        if wanted("lifecycle_sqlite_concurrent", "batched_sqlite_concurrent"):
            await case_lifecycle_sqlite(
                args.sqlite_tasks,
                args.rounds,
                Path(tmp),
                baseline,
                with_batches=wanted("batched_sqlite_concurrent"),
            )
        if wanted("submit_to_claim_latency"):
            await case_submit_to_claim(500)
        if wanted("batched_messages"):
            await case_batched_messages()
        if wanted("visible_tasks_p99"):
            await case_visible_tasks(args.visible_tasks, 1000)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=CASES, help="run only these cases")
    parser.add_argument("--lifecycle-tasks", type=int, default=20_000)
    parser.add_argument("--sqlite-tasks", type=int, default=10_000)
    parser.add_argument("--visible-tasks", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="turns taken with the peer")
    parser.add_argument("--baseline", metavar="REF", help="git ref to measure 'before' on")
    parser.add_argument("--no-peer", action="store_true", help="skip gsbm/converge (no ratios)")
    asyncio.run(main(parser.parse_args()))
