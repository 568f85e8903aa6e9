"""A run is owned by the engine executing it: ``resume`` of a run whose owner is alive is
refused, in this process, on this host and across hosts; a dead owner's run is taken over by
exactly one resumer; runs stopped on purpose end CANCELLED, runs stopped otherwise INTERRUPTED.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from converge.core.clock import ManualClock
from converge.errors import StateError, ValidationError
from converge.orchestration import Engine, Graph, RunFailed, RunStatus
from converge.orchestration.ownership import (
    LeasePolicy,
    Owner,
    RunOwned,
    judge,
    read_owner,
    run_verdict,
)
from converge.store import MemoryStore, SQLiteStore
from converge.store.base import Store


def held(gate: asyncio.Event, started: list[str]) -> Graph:
    """a -> b -> c, where b waits for ``gate`` (and counts its starts in ``started``)."""

    async def quick(inputs: dict[str, Any]) -> str:
        return "ok"

    async def waits(inputs: dict[str, Any]) -> str:
        started.append("b")
        await gate.wait()
        return "b done"

    return (
        Graph("held")
        .add_node("a", quick)
        .add_node("b", waits)
        .add_node("c", quick)
        .connect("a", "b")
        .connect("b", "c")
    )


async def until(check: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 - polls what runs on other tasks, bounded
            await asyncio.sleep(0.01)


async def started(store: Store, run_id: str) -> bool:
    return bool(await store.read(trace_id=run_id, kinds=("run.started",)))


async def run_kinds(store: Store, run_id: str) -> list[str]:
    return [e.kind for e in await store.read(trace_id=run_id) if e.kind.startswith("run.")]


async def test_resuming_a_run_this_engine_executes_is_refused() -> None:
    gate, starts = asyncio.Event(), []
    graph = held(gate, starts)
    async with Engine(id_factory=lambda: "r1") as engine:
        handle = await engine.submit(graph)
        await until(lambda: _true(starts))
        with pytest.raises(RunOwned) as info:
            await engine.resume(graph, "r1")
        assert info.value.run_id == "r1"
        assert info.value.owner is not None and info.value.owner.id == engine.owner.id
        assert f"pid {os.getpid()}" in str(info.value)
        assert isinstance(info.value, StateError)
        gate.set()
        assert (await handle.wait()).status is RunStatus.COMPLETED
    assert starts == ["b"]  # the refused resume ran nothing


async def _true(items: list[str]) -> bool:
    return bool(items)


async def test_another_engine_on_the_same_store_is_refused_while_the_owner_lives(
    tmp_path: Path,
) -> None:
    gate, starts = asyncio.Event(), []
    graph = held(gate, starts)
    path = tmp_path / "runs.db"
    async with await SQLiteStore.open(path) as store, await SQLiteStore.open(path) as other:
        async with Engine(store, id_factory=lambda: "r2") as engine:
            handle = await engine.submit(graph)
            await until(lambda: started(other, "r2"))
            with pytest.raises(RunOwned, match="run r2 is running in pid"):
                await Engine(other).resume(graph, "r2")
            verdict = await run_verdict(other, "r2", 0.0)
            assert verdict is not None and verdict.alive
            gate.set()
            assert (await handle.wait()).status is RunStatus.COMPLETED
        assert await run_verdict(other, "r2", 0.0) is None  # ended: nobody executes it
    assert starts == ["b"]


async def test_interrupted_run_is_taken_over_by_exactly_one_of_two_resumers() -> None:
    store = MemoryStore()
    gate, starts = asyncio.Event(), []
    graph = held(gate, starts)
    first = asyncio.ensure_future(Engine(store, id_factory=lambda: "r3").execute(graph))
    await until(lambda: _true(starts))
    first.cancel()  # not on purpose: the run is INTERRUPTED
    with pytest.raises(asyncio.CancelledError):
        await first
    assert (await run_kinds(store, "r3"))[-1] == "run.interrupted"

    async def resume(engine: Engine) -> Any:
        try:
            return await engine.resume(graph, "r3")
        except RunOwned as exc:
            return exc

    async with Engine(store) as one, Engine(store) as two:
        tries = [asyncio.ensure_future(resume(one)), asyncio.ensure_future(resume(two))]
        await until(lambda: _count(starts, 2))
        refused = [t.result() for t in tries if t.done()]
        assert len(refused) == 1 and isinstance(refused[0], RunOwned), refused
        gate.set()
        results = await asyncio.gather(*tries)
    completed = [r for r in results if not isinstance(r, RunOwned)]
    assert len(completed) == 1 and completed[0].status is RunStatus.COMPLETED
    assert starts == ["b", "b"]  # once before the interruption, once after: never in parallel
    assert (await run_kinds(store, "r3")).count("run.resumed") == 1


async def _count(items: list[str], n: int) -> bool:
    return len(items) >= n


class _Meeting(MemoryStore):
    """A store where, once armed, two resumers both read a run's log before either goes on:
    both see its owner dead, so the compare-and-set alone decides which takes it over."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.arrived = 0
        self.met = asyncio.Event()

    async def read(self, *args: Any, **kwargs: Any) -> Any:
        found = await super().read(*args, **kwargs)
        if self.armed and kwargs.get("trace_id") and not kwargs.get("kinds"):
            self.arrived += 1
            if self.arrived == 2:
                self.met.set()
            await self.met.wait()
        return found


async def test_two_resumers_that_both_saw_the_dead_owner_cannot_both_take_the_run() -> None:
    store = _Meeting()
    gate, starts = asyncio.Event(), []
    graph = held(gate, starts)
    first = asyncio.ensure_future(Engine(store, id_factory=lambda: "r4").execute(graph))
    await until(lambda: _true(starts))
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    store.armed = True
    async with Engine(store) as one, Engine(store) as two:
        tries = [
            asyncio.ensure_future(one.resume(graph, "r4")),
            asyncio.ensure_future(two.resume(graph, "r4")),
        ]
        await until(lambda: _count(starts, 2))
        [loser] = [t for t in tries if t.done()]
        with pytest.raises(RunOwned, match="run r4 is running in pid"):
            loser.result()
        gate.set()
        [winner] = [t for t in tries if t is not loser]
        assert (await winner).status is RunStatus.COMPLETED
    assert starts == ["b", "b"]
    kinds = await run_kinds(store, "r4")
    assert kinds.count("run.resumed") == 1 and kinds[-1] == "run.completed"


async def test_cancel_on_purpose_ends_cancelled_other_cancellation_interrupted() -> None:
    gate, starts = asyncio.Event(), []
    graph = held(gate, starts)
    ids = iter(["c1", "c2", "c3"])
    async with Engine(id_factory=lambda: next(ids)) as engine:
        run = asyncio.ensure_future(engine.execute(graph))
        await until(lambda: _true(starts))
        assert engine.cancel("c1") and not engine.cancel("nope")
        with pytest.raises(RunFailed) as info:
            await run
        assert info.value.result.status is RunStatus.CANCELLED
        assert (await run_kinds(engine.store, "c1"))[-1] == "run.cancelled"

        other = asyncio.ensure_future(engine.execute(graph))
        await until(lambda: _count(starts, 2))
        other.cancel()
        with pytest.raises(asyncio.CancelledError):
            await other
        assert (await run_kinds(engine.store, "c2"))[-1] == "run.interrupted"

        # Cancelled on purpose *and* by its caller: the caller's cancellation wins.
        third = asyncio.ensure_future(engine.execute(graph))
        await until(lambda: _count(starts, 3))
        engine.cancel("c3")
        third.cancel()
        with pytest.raises(asyncio.CancelledError):
            await third
        gate.set()
        result = await engine.resume(graph, "c1")  # a cancelled run is resumed on purpose
        assert result.status is RunStatus.COMPLETED


async def test_an_owner_on_another_host_holds_its_runs_until_its_lease_lapses() -> None:
    clock = ManualClock(1_000.0)
    store = MemoryStore()
    graph = Graph("g").add_node("a", _ok)
    async with Engine(store, clock=clock, id_factory=lambda: "h1") as engine:
        await engine.execute(graph)
    # Make the finished run look like one executed right now by an engine on another host.
    far = Owner(
        id="far",
        host="another-host",
        pid=4242,
        started_at=clock.now(),
        renewed_at=clock.now(),
        expires_at=clock.now() + 30,
    )
    await _forge(store, "h1", far)
    with pytest.raises(RunOwned, match=r"pid 4242 on another-host \(since .*, lease renewed 0 s"):
        await Engine(store, clock=clock).resume(graph, "h1")
    clock.advance(29.5)
    with pytest.raises(RunOwned):
        await Engine(store, clock=clock).resume(graph, "h1")
    clock.advance(1)  # lapsed: the run is taken over
    result = await Engine(store, clock=clock).resume(graph, "h1")
    assert result.status is RunStatus.COMPLETED


async def _ok(inputs: dict[str, Any]) -> str:
    return "ok"


async def _forge(store: Store, run_id: str, owner: Owner) -> None:
    """Rewrite the run's log as if ``owner`` had started it and were executing it now."""
    from converge.protocol.event import Event

    await store.put(f"owner/{owner.id}", msgspec.msgpack.encode(owner))
    start = (await store.read(trace_id=run_id, kinds=("run.started",)))[0]
    data = {**start.data, "owner": owner.id}
    await store.append(
        [Event(kind="run.resumed", trace_id=run_id, subject=run_id, data=data, at=start.at)]
    )


def test_an_owner_on_this_host_is_alive_while_its_pid_runs_the_same_process() -> None:
    from converge.orchestration.ownership import this_process

    me = this_process()
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        start = _start_of(child.pid)
        base = {
            "id": "o",
            "host": me.host,
            "boot_id": me.boot_id,
            "pid_ns": me.pid_ns,
            "started_at": 0.0,
            "renewed_at": 0.0,
            "expires_at": 0.0,  # long lapsed: on this host the pid decides
        }
        alive = judge(Owner(pid=child.pid, pid_start=start, **base), "r", 1e9)
        assert alive.alive, alive.reason
        if start is not None:  # where start times are known, a reused pid is not the owner
            reused = judge(Owner(pid=child.pid, pid_start=start + 1, **base), "r", 1e9)
            assert not reused.alive
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
    gone = judge(Owner(pid=child.pid, pid_start=start, **base), "r", 1e9)
    assert not gone.alive and f"pid {child.pid}" in gone.reason
    if me.boot_id is not None:  # a record from an earlier boot of this host is dead
        rebooted = {**base, "boot_id": "another-boot"}
        assert not judge(Owner(pid=os.getpid(), **rebooted), "r", 0.0).alive
    assert not judge(None, "r", 0.0).alive


def _start_of(pid: int) -> int | None:
    from converge.orchestration import ownership

    return ownership._pid_start(pid)


async def test_the_lease_is_renewed_while_a_run_is_in_flight_and_removed_after() -> None:
    store = MemoryStore()
    gate, starts = asyncio.Event(), []
    graph = held(gate, starts)
    lease = LeasePolicy(ttl=0.5, renew_every=0.02)
    async with Engine(store, lease=lease, id_factory=lambda: "n1") as engine:
        handle = await engine.submit(graph)
        await until(lambda: _true(starts))
        first = await read_owner(store, engine.owner.id)
        assert first is not None and first.expires_at == first.renewed_at + 0.5

        async def renewed() -> bool:
            now = await read_owner(store, engine.owner.id)
            return now is not None and now.renewed_at > first.renewed_at

        await until(renewed)
        gate.set()
        await handle.wait()
    assert await read_owner(store, engine.owner.id) is None  # closed with no run in flight


def test_lease_policy_is_checked() -> None:
    assert LeasePolicy().ttl == 30 and LeasePolicy().renew_every == 10
    for bad in ({"ttl": 0}, {"ttl": -1}, {"renew_every": float("nan")}, {"ttl": True}):
        with pytest.raises(ValidationError):
            LeasePolicy(**bad)
    with pytest.raises(ValidationError, match=r"renew_every .* must be less than ttl"):
        LeasePolicy(ttl=5, renew_every=5)
    with pytest.raises(ValidationError, match="lease is a LeasePolicy"):
        Engine(lease=30)  # type: ignore[arg-type]


async def test_one_engine_resuming_a_run_twice_at_once_runs_it_once(tmp_path: Path) -> None:
    gate, starts = asyncio.Event(), []
    graph = held(gate, starts)
    async with await SQLiteStore.open(tmp_path / "runs.db") as store:
        first = asyncio.ensure_future(Engine(store, id_factory=lambda: "s1").execute(graph))
        await until(lambda: _true(starts))
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        async with Engine(store) as engine:
            tries = [asyncio.ensure_future(engine.resume(graph, "s1")) for _ in range(3)]
            await until(lambda: _count(starts, 2))
            refused = [t for t in tries if t.done()]
            assert len(refused) == 2
            for t in refused:
                assert isinstance(t.exception(), RunOwned)
            verdict = await run_verdict(store, "s1", 0.0)
            assert verdict is not None and verdict.alive  # the winner is still known to run it
            gate.set()
            [winner] = [t for t in tries if t not in refused]
            assert (await winner).status is RunStatus.COMPLETED
    assert starts == ["b", "b"]


class _SlowCommits(MemoryStore):
    """A store whose units of work wait for ``release`` once ``hold`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()

    def transaction(self) -> Any:
        unit = super().transaction()
        if not self.hold:
            return unit
        store = self

        class Slow:
            def compare_and_set(self, *args: Any) -> None:
                unit.compare_and_set(*args)

            def append(self, *events: Any) -> None:
                unit.append(*events)

            async def commit(self) -> list[int]:
                store.waiting.set()
                await store.release.wait()
                return await unit.commit()

        return Slow()


async def test_a_resume_cancelled_while_it_takes_the_run_over_logs_its_end() -> None:
    store = _SlowCommits()
    gate, starts = asyncio.Event(), []
    graph = held(gate, starts)
    first = asyncio.ensure_future(Engine(store, id_factory=lambda: "t1").execute(graph))
    await until(lambda: _true(starts))
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    store.hold = True
    resume = asyncio.ensure_future(Engine(store).resume(graph, "t1"))
    await asyncio.wait_for(store.waiting.wait(), 10)
    resume.cancel()  # while its run.resumed is being written
    await asyncio.sleep(0)
    store.release.set()
    with pytest.raises(asyncio.CancelledError):
        await resume
    kinds = await run_kinds(store, "t1")
    assert kinds[-2:] == ["run.resumed", "run.interrupted"]  # not left looking owned
    store.hold = False
    gate.set()
    assert (await Engine(store).resume(graph, "t1")).status is RunStatus.COMPLETED


async def test_a_subgraphs_child_run_is_not_cancelled_alone_and_an_unstarted_handle_is() -> None:
    gate, starts = asyncio.Event(), []
    inner = held(gate, starts)
    from converge.orchestration import Subgraph

    outer = Graph("outer").add_node("sub", Subgraph(inner))
    async with Engine(id_factory=lambda: "p1") as engine:
        handle = await engine.submit(outer)
        await until(lambda: _true(starts))
        assert not engine.cancel("p1/sub/1")  # it stops with its parent
        assert (await handle.cancel()).status is RunStatus.CANCELLED
        unstarted = await engine.submit(outer)
        result = await unstarted.cancel()  # before its task ever ran
        assert result.status is RunStatus.CANCELLED and result.run_id == unstarted.run_id


def test_liveness_is_judged_by_the_lease_where_pids_cannot_be_compared() -> None:
    from converge.orchestration.ownership import this_process

    me = this_process()
    fresh = {"started_at": 0.0, "renewed_at": 90.0, "expires_at": 120.0}
    # Another machine with this host name (and the same first PID namespace): another boot.
    twin = Owner(id="t", host=me.host, pid=1, boot_id="another-boot", pid_ns=me.pid_ns, **fresh)
    assert judge(twin, "r", 100.0).alive
    assert not judge(twin, "r", 121.0).alive
    # This host, a live pid whose start time cannot be checked: the lease decides.
    unknown = Owner(
        id="u", host=me.host, pid=os.getppid(), boot_id=me.boot_id, pid_ns=me.pid_ns, **fresh
    )
    assert judge(unknown, "r", 100.0).alive
    assert not judge(unknown, "r", 121.0).alive


def test_a_killed_owner_not_yet_reaped_is_dead() -> None:
    from converge.orchestration.ownership import this_process

    me = this_process()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = _start_of(child.pid)
        if start is None:
            pytest.skip("process start times cannot be read here (no /proc)")
        owner = Owner(
            id="z",
            host=me.host,
            pid=child.pid,
            pid_start=start,
            boot_id=me.boot_id,
            pid_ns=me.pid_ns,
            started_at=0.0,
            renewed_at=0.0,
            expires_at=1e12,
        )
        assert judge(owner, "r", 0.0).alive
        child.kill()
        deadline = time.monotonic() + 30
        while _state_of(child.pid) not in ("Z", "X", None):  # a zombie until reaped
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not judge(owner, "r", 0.0).alive
    finally:
        child.kill()
        child.wait(timeout=30)


def _state_of(pid: int) -> str | None:
    from converge.orchestration import ownership

    found = ownership._stat(pid)
    return None if found is None else found[0]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_process_is_an_owner_of_its_own() -> None:
    engine = Engine()
    engine.owner.active["x"] = object()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its owner id and what it has in flight, then leave
        try:
            os.write(write, f"{engine.owner.id} {len(engine.owner.active)}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_id, in_flight = pipe.read().split()
    os.waitpid(pid, 0)
    assert child_id != engine.owner.id and in_flight == "0"
    assert engine.owner.active  # the parent's is untouched


async def test_a_write_guarded_by_an_old_version_fails_once_the_run_was_taken_over() -> None:
    from converge.orchestration.ownership import append_unowned, claim_version, reserve
    from converge.protocol.event import Event

    store = MemoryStore()
    assert await reserve(store, "g1") and not await reserve(store, "g1")
    version = await claim_version(store, "g1")
    event = Event(kind="run.cancelled", trace_id="g1", subject="g1", data={})
    assert await append_unowned(store, "g1", version, [event])
    assert not await append_unowned(store, "g1", version, [event])  # taken since it was read
    assert len(await store.read(trace_id="g1")) == 1
