"""The decentralized runtime: wake-ups without polling, batching, safety, hostile input."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from converge.coordination import PoolManager, TaskManager
from converge.core import (
    Agent,
    ClaimTask,
    Decision,
    Identity,
    InvokeTool,
    JoinPool,
    Message,
    ReplayGuard,
    ReportTask,
    SendMessage,
    SubmitBid,
    SubmitTask,
    Task,
    TaskState,
    Vote,
)
from converge.core import identity as identity_module
from converge.core.clip import MAX_ID_CHARS, MAX_TEXT_CHARS
from converge.core.clock import ManualClock
from converge.core.pool import Pool
from converge.errors import StateError
from converge.network import LocalNetwork
from converge.policy import ActionPolicy, ResourceLimits
from converge.runtime import AgentRuntime, StandardExecutor
from converge.store import Store

WAIT = 10.0


class Scripted(Agent):
    """An agent whose decide() is a function of what it is shown."""

    def __init__(
        self, decide: Callable[[Sequence[Message], Sequence[Task]], list[Decision]], **kw: Any
    ):
        super().__init__(**kw)
        self._decide = decide
        self.seen: list[Message] = []
        self.batches: list[int] = []

    async def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        self.seen.extend(messages)
        self.batches.append(len(messages))
        return self._decide(messages, tasks)


def worker(messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
    """Claims the first visible task and reports it done in the same call."""
    if not tasks:
        return []
    task = tasks[0]
    return [
        ClaimTask(task_id=task.id),
        ReportTask(task_id=task.id, result={"done": task.objective}),
    ]


def quiet(messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
    return []


async def eventually(check: Callable[[], Any], timeout: float = WAIT) -> None:
    """Wait until ``check()`` holds (STYLE rule 19's assert_eventually), failing on timeout."""
    async with asyncio.timeout(timeout):
        while not await _call(check):  # noqa: ASYNC110 - a test's bounded wait for a condition
            await asyncio.sleep(0.005)


async def _call(check: Callable[[], Any]) -> Any:
    result = check()
    return await result if asyncio.iscoroutine(result) else result


async def kinds(store: Store, kind: str) -> list[dict[str, Any]]:
    return [e.data for e in await store.read(kinds=[kind])]


async def test_an_idle_runtime_claims_a_submitted_task(store: Store, clock: ManualClock) -> None:
    net = LocalNetwork()
    board = TaskManager(store, clock=clock)
    agent = Scripted(worker)
    executor = StandardExecutor(network=net, tasks=board, clock=clock)
    async with AgentRuntime(agent, network=net, tasks=board, executor=executor, clock=clock) as rt:
        await eventually(lambda: rt.decide_calls == 0 and agent.batches == [])
        task = await board.submit(Task(objective="hello"))
        done = await board.wait(task.id, timeout=WAIT)
    assert (done.state, done.result, done.assigned_to) == (
        TaskState.COMPLETED,
        {"done": "hello"},
        agent.did,
    )
    assert [e.kind for e in await store.read(trace_id=agent.did)] == [
        "runtime.started",
        "runtime.stopped",
    ]


async def test_messages_are_batched_and_decide_never_overlaps(
    store: Store, clock: ManualClock
) -> None:
    net = LocalNetwork()
    running = 0
    peak = 0
    release = asyncio.Event()

    class Slow(Agent):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[int] = []

        async def decide(
            self, messages: Sequence[Message], tasks: Sequence[Task]
        ) -> list[Decision]:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            self.calls.append(len(messages))
            await release.wait()
            running -= 1
            return []

    slow = Slow()
    sender = Identity.generate()
    async with AgentRuntime(slow, network=net, store=store, clock=clock) as rt:
        for i in range(100):
            msg = Message(kind="ping", payload=i, recipient=slow.did, created_at=clock.now())
            await net.send(msg.sign(sender))
        await eventually(lambda: sum(slow.calls) >= 1)
        release.set()
        await eventually(lambda: sum(slow.calls) == 100)
        assert rt.decide_calls == len(slow.calls)
    assert peak == 1
    assert len(slow.calls) <= 3  # 100 messages in a handful of calls, not 100


async def test_forged_and_replayed_messages_are_rejected_with_a_reason(
    store: Store, clock: ManualClock
) -> None:
    net = LocalNetwork()
    agent = Scripted(quiet)
    alice, mallory = Identity.generate(), Identity.generate()
    async with AgentRuntime(agent, network=net, store=store, clock=clock):
        genuine = Message(kind="hi", recipient=agent.did, created_at=clock.now()).sign(alice)
        forged = msgspec.structs.replace(
            Message(kind="hi", recipient=agent.did, created_at=clock.now()).sign(mallory),
            sender=alice.did,
        )
        stale = Message(kind="hi", recipient=agent.did, created_at=clock.now() - 3600).sign(alice)
        for msg in (genuine, forged, genuine, stale):
            await net.send(msg)
        await eventually(lambda: kinds(store, "message.rejected"), WAIT)
        await eventually(lambda: _count(store, "message.rejected", 3))
    assert [m.id for m in agent.seen] == [genuine.id]
    reasons = [d["reason"] for d in await kinds(store, "message.rejected")]
    assert sorted(reasons) == ["bad_signature", "replayed", "stale"]


async def test_a_message_with_a_huge_sender_did_is_rejected_cheaply_and_logged_clipped(
    store: Store, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[str] = []
    monkeypatch.setattr(identity_module, "_b58decode", decoded.append)
    net = LocalNetwork()
    agent = Scripted(quiet)
    mallory = Identity.generate()
    huge = "did:key:z6Mk" + "x" * 400_000
    async with AgentRuntime(agent, network=net, store=store, clock=clock):
        signed = Message(
            kind="k" * 50_000,
            recipient=agent.did,
            created_at=clock.now(),
            id="i" * 100_000,
            trace_id="t" * 100_000,
        ).sign(mallory)
        await net.send(msgspec.structs.replace(signed, sender=huge))
        await eventually(lambda: kinds(store, "message.rejected"), WAIT)
    assert decoded == []  # refused on its shape, before any base58
    [event] = await store.read(kinds=["message.rejected"])
    assert event.data["reason"] == "bad_signature"
    assert event.data["sender"].startswith("did:key:z6Mkxxx")
    assert len(event.data["sender"]) <= MAX_ID_CHARS
    assert len(event.data["message_id"]) <= MAX_ID_CHARS
    assert len(event.trace_id) <= MAX_ID_CHARS
    assert len(event.data["error"]) <= MAX_TEXT_CHARS
    assert len(msgspec.json.encode(event)) < 2_000


async def _count(store: Store, kind: str, n: int) -> bool:
    return len(await store.read(kinds=[kind])) >= n


async def test_agents_talk_over_topics_and_reply(store: Store, clock: ManualClock) -> None:
    net = LocalNetwork()

    def answer(messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        return [
            SendMessage(kind="pong", payload=m.payload, recipient=m.sender, parent_id=m.id)
            for m in messages
            if m.kind == "ping"
        ]

    responder = Scripted(answer, topics=["market.*"])
    asker = Scripted(quiet)
    executor = StandardExecutor(network=net, clock=clock)
    async with (
        AgentRuntime(responder, network=net, store=store, executor=executor, clock=clock),
        AgentRuntime(asker, network=net, store=store, executor=executor, clock=clock) as a,
    ):
        await eventually(
            lambda: (
                net.recipients(Message(kind="x", topic="market.gpu", sender=asker.did))
                == [responder.did]
            )
        )
        await executor.execute(asker, SendMessage(kind="ping", payload=7, topic="market.gpu"))
        await eventually(lambda: len(asker.seen) == 1)
        assert a.stop_reason is None
    [pong] = asker.seen
    assert (pong.kind, pong.payload, pong.sender) == ("pong", 7, responder.did)
    pong.verify()


async def test_a_runaway_agent_is_stopped_by_its_limits(store: Store, clock: ManualClock) -> None:
    net = LocalNetwork()

    def chatter(messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        # answers every message (and the start) with two more messages to itself
        return [SendMessage(kind="again", recipient=me.did) for _ in range(2)]

    me = Scripted(chatter)
    limits = ResourceLimits(max_messages_per_second=20)
    executor = StandardExecutor(network=net, clock=clock)
    async with AgentRuntime(
        me, network=net, store=store, executor=executor, limits=limits, clock=clock
    ) as rt:
        me._decide = chatter
        await executor.execute(me, SendMessage(kind="start", recipient=me.did))
        await eventually(lambda: _count(store, "decision.refused", 1))
        await asyncio.sleep(0.05)  # give a runaway every chance to keep going
    # 20 messages a second on a clock that stands still: it sends 20 and is refused the rest,
    # so it sees those and the start, and it decides only on something new — however long the
    # runtime ran (on a busy machine the last refused round may come after any pause).
    assert len(me.seen) <= 21
    assert rt.decide_calls <= len(me.seen)
    assert {d["rule"] for d in await kinds(store, "decision.refused")} == {
        "max_messages_per_second"
    }


async def test_an_exhausted_budget_stops_the_runtime(store: Store, clock: ManualClock) -> None:
    net = LocalNetwork()
    me = Scripted(lambda m, t: [SendMessage(kind="x", recipient=me.did)])
    rt = AgentRuntime(
        me,
        network=net,
        store=store,
        executor=StandardExecutor(network=net, clock=clock),
        limits=ResourceLimits(max_wall_time_s=60),
        clock=clock,
    )
    async with rt:
        await rt.executor.execute(me, SendMessage(kind="start", recipient=me.did))  # type: ignore[union-attr]
        await eventually(lambda: rt.decide_calls >= 3)
        clock.advance(61)
        await eventually(lambda: rt.stop_reason is not None)
    assert rt.stop_reason == "budget exhausted: max_wall_time_s"
    [stopped] = await kinds(store, "runtime.stopped")
    assert stopped["reason"] == "budget exhausted: max_wall_time_s"


async def test_without_an_executor_only_messages_are_sent(store: Store, clock: ManualClock) -> None:
    net = LocalNetwork()
    board = TaskManager(store, clock=clock)
    other = Scripted(quiet)

    def both(messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        if not tasks:
            return []
        return [ClaimTask(task_id=tasks[0].id), SendMessage(kind="note", recipient=other.did)]

    agent = Scripted(both)
    async with (
        AgentRuntime(other, network=net, store=store, clock=clock),
        AgentRuntime(agent, network=net, tasks=board, clock=clock),
    ):
        task = await board.submit(Task(objective="x"))
        # The refused claim leaves the task pending, so a second wake-up (the one at start, if
        # it saw the task, then the submit's) decides again: one note and one refusal each.
        await eventually(lambda: len(other.seen) >= 1)
        await eventually(lambda: _count(store, "decision.refused", 1))
    refused = await kinds(store, "decision.refused")
    assert {(r["type"], r["rule"]) for r in refused} == {("claim_task", "no_executor")}
    assert all(m.kind == "note" for m in other.seen)
    assert (await board.get(task.id)).state is TaskState.PENDING  # type: ignore[union-attr]


async def test_refused_and_failed_decisions_are_events_and_the_loop_goes_on(
    store: Store, clock: ManualClock
) -> None:
    net = LocalNetwork()
    board = TaskManager(store, clock=clock)
    pools = PoolManager(store, clock=clock)
    await pools.create_pool(
        Pool(name="gpu", id="gpu", admission={"kind": "allowlist", "members": []})
    )
    outside = await board.submit(Task(objective="gpu job", pool_id="gpu"))
    tried: list[str] = []

    def hostile(messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        if tried:
            return []
        tried.append("x")
        return [
            JoinPool(pool_id="gpu"),  # not on the allowlist
            ClaimTask(task_id=outside.id),  # outside its pools
            ReportTask(task_id=outside.id, result="forged", token=1),  # holds nothing
            SubmitBid(auction_id="a", amount=1.0),  # no protocol configured
        ]

    agent = Scripted(hostile)
    executor = StandardExecutor(network=net, tasks=board, pools=pools, clock=clock)
    policy = ActionPolicy(deny_decisions=frozenset({"invoke_tool"}))
    async with AgentRuntime(
        agent, network=net, tasks=board, pools=pools, executor=executor, policy=policy, clock=clock
    ):
        await board.submit(Task(objective="visible, to wake it"))
        await eventually(lambda: _count(store, "decision.failed", 4))
    failures = await kinds(store, "decision.failed")
    assert [f["type"] for f in failures] == ["join_pool", "claim_task", "report_task", "submit_bid"]
    assert [f["error_type"] for f in failures] == [
        "PolicyViolation",
        "PolicyViolation",
        "LeaseLost",
        "PolicyViolation",
    ]
    assert (await board.get(outside.id)).state is TaskState.PENDING  # type: ignore[union-attr]
    assert await pools.members("gpu") == []


async def test_a_decide_that_exits_is_a_failed_decide_and_the_loop_goes_on(
    store: Store, clock: ManualClock
) -> None:
    net = LocalNetwork()
    listener = Scripted(quiet)

    def exits_once(messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        if [m.payload for m in messages] == [1]:
            raise SystemExit(0)  # the agent's own: not a stop of the process
        return [
            SendMessage(kind="after", payload=m.payload, recipient=listener.did) for m in messages
        ]

    agent = Scripted(exits_once)
    executor = StandardExecutor(network=net, clock=clock)
    async with (
        AgentRuntime(listener, network=net, store=store, clock=clock),
        AgentRuntime(agent, network=net, store=store, executor=executor, clock=clock) as rt,
    ):
        await executor.execute(listener, SendMessage(kind="go", payload=1, recipient=agent.did))
        await eventually(lambda: _count(store, "decide.failed", 1))
        await executor.execute(listener, SendMessage(kind="go", payload=2, recipient=agent.did))
        await eventually(lambda: len(listener.seen) == 1)
        assert rt.stop_reason is None
    assert [m.payload for m in listener.seen] == [2]
    [failed] = await kinds(store, "decide.failed")
    assert failed["error"] == "SystemExit: 0"


async def test_the_runtime_returns_expired_leases(store: Store, clock: ManualClock) -> None:
    net = LocalNetwork()
    board = TaskManager(store, claim_ttl_sec=30, clock=clock)
    grabbed: list[str] = []

    def grab_and_vanish(messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        fresh = [t for t in tasks if t.id not in grabbed]
        if not fresh:
            return []
        grabbed.append(fresh[0].id)
        return [ClaimTask(task_id=fresh[0].id)]  # and never reports

    flaky = Scripted(grab_and_vanish)
    executor = StandardExecutor(network=net, tasks=board, clock=clock)
    async with AgentRuntime(flaky, network=net, tasks=board, executor=executor, clock=clock):
        task = await board.submit(Task(objective="x", max_attempts=3))
        await eventually(lambda: _state(board, task.id, TaskState.CLAIMED))
        await eventually(lambda: clock.sleepers >= 1)  # the reaper sleeps until the lease ends
        clock.advance(31)
        await eventually(lambda: _count(store, "task.released", 1))
    released = await kinds(store, "task.released")
    assert released[0]["holder"] == flaky.did


async def _state(board: TaskManager, task_id: str, state: TaskState) -> bool:
    task = await board.get(task_id)
    return task is not None and task.state is state


async def test_an_agent_without_decide_is_refused(store: Store) -> None:
    class Node(Agent):
        async def run(self, inputs: Any, ctx: Any) -> Any:
            return None

    with pytest.raises(Exception, match="decide"):
        AgentRuntime(Node(), network=LocalNetwork(), store=store)


async def test_a_task_put_on_the_board_by_another_process_wakes_the_runtime(
    tmp_path: Path, clock: ManualClock
) -> None:
    """Two stores on one file stand for two processes: one submits, the other's agent works."""
    from converge.store import SQLiteStore

    path = tmp_path / "shared.db"
    async with await SQLiteStore.open(path) as here, await SQLiteStore.open(path) as there:
        net = LocalNetwork()
        board_here = TaskManager(here, clock=clock)
        board_there = TaskManager(there, clock=clock)
        agent = Scripted(worker)
        executor = StandardExecutor(network=net, tasks=board_here, clock=clock)
        async with AgentRuntime(
            agent, network=net, tasks=board_here, executor=executor, clock=clock
        ):
            await eventually(lambda: agent.batches == [] and board_here._follow_task is not None)
            task = await board_there.submit(Task(objective="from afar"))
            done = await board_there.wait(task.id, timeout=WAIT)
        assert (done.state, done.assigned_to) == (TaskState.COMPLETED, agent.did)
        assert board_here._follow_task is None  # the last runtime out stopped the follower


async def test_the_runtime_registers_heartbeats_and_unregisters(
    store: Store, clock: ManualClock
) -> None:
    from converge.coordination import DiscoveryService

    discovery = DiscoveryService(store, ttl_s=30, clock=clock)
    agent = Scripted(quiet, capabilities=["summarize@1.2.0"], topics=["market.*"])
    async with AgentRuntime(
        agent, network=LocalNetwork(), store=store, discovery=discovery, clock=clock
    ):
        await eventually(lambda: discovery.get(agent.did))
        [found] = await discovery.find(capability="summarize>=1")
        assert (found.did, found.topics, found.endpoint) == (agent.did, ("market.*",), "local:")
        for _ in range(6):  # three minutes of heartbeats keep it alive past its 30 s ttl
            await eventually(lambda: clock.sleepers >= 1)
            clock.advance(10)
            await eventually(lambda: _expires_after(discovery, agent.did, clock.now()))
        assert await discovery.get(agent.did) is not None
    assert await discovery.get(agent.did) is None


async def _expires_after(discovery: Any, did: str, now: float) -> bool:
    found = await discovery.get(did)
    return found is not None and found.expires_at > now + 20


async def test_wait_returns_when_the_runtime_ends_and_raises_its_failure(store: Store) -> None:
    idle = AgentRuntime(Scripted(quiet), network=LocalNetwork(), store=store)
    with pytest.raises(StateError):
        await idle.wait()
    idle.start()
    waiter = asyncio.ensure_future(idle.wait())
    await asyncio.sleep(0.01)
    assert not waiter.done()  # running: nothing to wait for yet
    await idle.shutdown("done here")
    await asyncio.wait_for(waiter, WAIT)
    assert idle.stop_reason == "done here"

    class CannotStart(Agent):
        async def decide(self, m: Sequence[Message], t: Sequence[Task]) -> list[Decision]:
            return []

        async def on_start(self) -> None:
            raise RuntimeError("no licence to start")

    broken = AgentRuntime(CannotStart(), network=LocalNetwork(), store=store)
    broken.start()
    with pytest.raises(RuntimeError, match="no licence"):
        await asyncio.wait_for(broken.wait(), WAIT)


async def test_an_idle_runtime_stops_when_its_wall_time_budget_is_spent(store: Store) -> None:
    limits = ResourceLimits(max_wall_time_s=0.1)
    runtime = AgentRuntime(Scripted(quiet), network=LocalNetwork(), store=store, limits=limits)
    runtime.start()
    await asyncio.wait_for(runtime.wait(), WAIT)
    assert runtime.stop_reason == "budget exhausted: max_wall_time_s"
    assert runtime.decide_calls == 0


class _BuggyExecutor(StandardExecutor):
    """An executor with a bug: a ``SubmitTask`` raises something that is no ConvergeError."""

    async def execute(
        self, agent: Agent, decision: Decision, *, trace_id: str | None = None
    ) -> Any:
        if isinstance(decision, SubmitTask):
            raise ZeroDivisionError("a bug in the executor")
        return await super().execute(agent, decision, trace_id=trace_id)


async def test_any_exception_from_one_decision_is_a_failed_event_and_the_loop_goes_on(
    store: Store, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    net = LocalNetwork()
    listener = Scripted(quiet)

    def submit_then_tell(messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        decisions: list[Decision] = []
        for m in messages:  # each message: a decision that fails, then one that must still run
            decisions.append(SubmitTask(objective="boom", inputs={"n": m.payload}))
            decisions.append(SendMessage(kind="after", payload=m.payload, recipient=listener.did))
        return decisions

    agent = Scripted(submit_then_tell, name="worker")
    executor = _BuggyExecutor(network=net, clock=clock)
    caplog.set_level("WARNING", logger="converge.runtime")
    async with (
        AgentRuntime(listener, network=net, store=store, clock=clock),
        AgentRuntime(agent, network=net, store=store, executor=executor, clock=clock) as rt,
    ):
        await executor.execute(listener, SendMessage(kind="go", payload=1, recipient=agent.did))
        await eventually(lambda: len(listener.seen) == 1)  # the decision after the failed one ran
        await executor.execute(listener, SendMessage(kind="go", payload=2, recipient=agent.did))
        await eventually(lambda: len(listener.seen) == 2)  # and the runtime goes on
        assert (rt.stop_reason, rt.failed_in_a_row) == (None, 0)
    assert [m.payload for m in listener.seen] == [1, 2]
    failures = await kinds(store, "decision.failed")
    assert len(failures) == 2
    assert failures[0] == {
        "type": "submit_task",
        "error": "a bug in the executor",
        "error_type": "ZeroDivisionError",
        "decision": {"type": "submit_task", "objective": "boom", "inputs": {"n": 1}},
        "agent": agent.did,
    }
    [first, _] = [r for r in caplog.records if "decision submit_task failed" in r.getMessage()]
    assert first.levelname == "ERROR" and first.exc_info is not None  # a bug: its traceback
    assert first.__dict__["agent"] == agent.did
    ends = await kinds(store, "runtime.stopped")  # both ended by leaving `async with`
    assert [e["reason"] for e in ends] == ["shutdown", "shutdown"]


async def test_seed_000_runtime_casts_votes_on_a_plain_votes_store_and_goes_on(
    store: Store, clock: ManualClock
) -> None:
    """``StandardExecutor(votes_store={})``: once an AttributeError that ended the runtime."""
    from converge.coordination import majority

    net = LocalNetwork()
    listener = Scripted(quiet)

    def vote_then_tell(messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        return [
            Vote(ballot_id="ship", choice="yes"),
            Vote(ballot_id="ship", choice="no"),  # a second vote: refused, and it goes on
            SendMessage(kind="voted", recipient=listener.did),
        ]

    agent = Scripted(vote_then_tell)
    votes: dict[str, list[tuple[str, str]]] = {}
    executor = StandardExecutor(network=net, votes_store=votes, clock=clock)
    async with (
        AgentRuntime(listener, network=net, store=store, clock=clock),
        AgentRuntime(agent, network=net, store=store, executor=executor, clock=clock),
    ):
        await executor.execute(listener, SendMessage(kind="go", recipient=agent.did))
        await eventually(lambda: len(listener.seen) == 1)
    assert votes == {"ship": [(agent.did, "yes")]}
    assert majority(dict(votes["ship"])) == "yes"
    [refused] = await kinds(store, "decision.failed")
    assert (refused["type"], refused["error_type"]) == ("vote", "BallotRefused")


async def test_failed_decisions_in_a_row_stop_the_runtime_at_its_limit(
    store: Store, clock: ManualClock
) -> None:
    from converge.errors import PolicyViolation
    from converge.network import Inbox
    from converge.runtime import TooManyFailedDecisions

    net = LocalNetwork()
    observer = Identity.generate()
    seen_by_observer = Inbox()
    net.register(observer.did, seen_by_observer)
    bid = SubmitBid(auction_id="a", amount=1.0)  # no bidding protocol: each one fails

    def failing(messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        if any(m.kind == "start" for m in messages):
            # Four failures, never three in a row: the message between resets the count.
            return [bid, bid, SendMessage(kind="again", recipient=me.did), bid, bid]
        return [bid, SendMessage(kind="never", recipient=observer.did)]

    me = Scripted(failing)
    executor = StandardExecutor(network=net, clock=clock)
    rt = AgentRuntime(
        me, network=net, store=store, executor=executor, clock=clock, max_consecutive_failures=3
    )
    rt.start()
    await executor.execute(me, SendMessage(kind="start", recipient=me.did))
    with pytest.raises(TooManyFailedDecisions) as stopped:
        await asyncio.wait_for(rt.wait(), WAIT)
    assert (stopped.value.agent_id, stopped.value.failures) == (me.did, 3)
    assert stopped.value.last_error.startswith(
        "PolicyViolation: this executor runs no coordination"
    )
    assert isinstance(stopped.value.__cause__, PolicyViolation)
    assert rt.stop_reason == "3 decisions failed in a row"
    assert [m.kind for m in me.seen] == ["start", "again"]
    assert rt.decide_calls == 2
    assert len(seen_by_observer) == 0  # the decision after the limit was not executed
    assert len(await kinds(store, "decision.failed")) == 5
    [ended] = await kinds(store, "runtime.stopped")
    assert ended == {"reason": "3 decisions failed in a row"}
    with pytest.raises(TooManyFailedDecisions):  # shutdown() and async with report it too
        await rt.shutdown()


def test_the_failure_limit_defaults_to_100(store: Store) -> None:
    from converge.runtime import DEFAULT_MAX_CONSECUTIVE_FAILURES

    runtime = AgentRuntime(Scripted(quiet), network=LocalNetwork(), store=store)
    assert runtime.max_consecutive_failures == DEFAULT_MAX_CONSECUTIVE_FAILURES == 100


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("network", "local"),
        ("store", {}),
        ("tasks", LocalNetwork()),
        ("pools", "pools"),
        ("discovery", object()),
        ("executor", object()),
        ("limits", {"max_cost": 1.0}),
        ("policy", ["send_message"]),
        ("replay_guard", True),
        ("clock", 0.0),
        ("reap_leases", "no"),
        ("max_batch", "10"),
        ("max_batch", 0),
        ("inbox_size", 0),
        ("max_consecutive_failures", 0),
        ("max_consecutive_failures", True),
        ("max_consecutive_failures", 2.5),
        ("max_consecutive_failures", None),
    ],
)
def test_wrong_arguments_are_refused_at_construction_naming_them(
    store: Store, name: str, value: object
) -> None:
    from converge.errors import ValidationError

    arguments: dict[str, Any] = {"network": LocalNetwork(), "store": store, name: value}
    with pytest.raises(ValidationError) as refused:
        AgentRuntime(Scripted(quiet), **arguments)
    assert refused.value.field == name
    assert name in str(refused.value)


def test_an_agent_that_is_not_an_agent_is_refused(store: Store) -> None:
    from converge.errors import ValidationError

    with pytest.raises(ValidationError) as refused:
        AgentRuntime(quiet, network=LocalNetwork(), store=store)  # type: ignore[arg-type]
    assert refused.value.field == "agent"


# -- hostile input: replay-guard floor poisoning, malformed messages and decisions ------------


async def test_a_sender_flooding_messages_dated_ahead_does_not_silence_the_others(
    store: Store, clock: ManualClock
) -> None:
    """Once, ``max_entries + 1`` authentic messages dated just inside the future edge of the
    window raised the guard's floor past the clock: every honest sender was refused as stale
    for five minutes."""
    net = LocalNetwork()
    agent = Scripted(quiet)
    guard = ReplayGuard(max_entries=20, clock=clock)  # the default holds 100,000
    guard.check_values("did:key:earlier", "n", clock.now() - 10)  # in use already
    mallory, alice = Identity.generate(), Identity.generate()
    async with AgentRuntime(agent, network=net, store=store, clock=clock, replay_guard=guard) as rt:
        assert rt.guard is guard
        for _ in range(3 * guard.max_entries):
            ahead = Message(kind="spam", recipient=agent.did, created_at=clock.now() + 299)
            await net.send(ahead.sign(mallory))
        hello = Message(kind="hi", recipient=agent.did, created_at=clock.now() - 5).sign(alice)
        await net.send(hello)
        await eventually(lambda: hello.id in {m.id for m in agent.seen})
    assert guard.floor <= clock.now()


def _hostile_messages(to: str, sender: Identity, clock: ManualClock) -> list[Any]:
    """Messages of every kind of malformation an in-process sender can put on the network
    (a struct built in process has its types checked by no one), each signed when it can be."""

    def made(**fields: Any) -> Message:
        return Message(**{"kind": "x", "recipient": to, "created_at": clock.now(), **fields})

    wrong_types = [
        {"created_at": "yesterday"},
        {"created_at": None},
        {"created_at": True},
        {"created_at": 10**30},  # no 64-bit integer: not encodable
        {"created_at": float("nan")},
        {"nonce": ["a", "list"]},
        {"nonce": None},
        {"nonce": 7},
        {"kind": 5},
        {"kind": b"bytes"},
        {"id": None},
        {"id": "x" * 100_000 + "\n", "created_at": "now"},  # huge, and shown capped
        {"trace_id": ["victim"], "created_at": "now"},
        {"parent_id": 1.5},
        {"payload": {"x": float("inf")}},
    ]
    out: list[Any] = [made(**fields).sign(sender) for fields in wrong_types if _signable(fields)]
    out += [  # not even signable: an unencodable value, or a signature of the wrong type
        msgspec.structs.replace(made(payload=object()), sender=sender.did, signature=b"s" * 64),
        msgspec.structs.replace(made(created_at=10**30), sender=sender.did, signature=b"s" * 64),
        msgspec.structs.replace(made(created_at=float("nan")), sender=sender.did, signature=b"s"),
        msgspec.structs.replace(made(payload={"x": float("inf")}), sender=sender.did),
        msgspec.structs.replace(made(), signature="not bytes"),
        msgspec.structs.replace(made(), sender=["not", "a", "did"]),
    ]
    return out


def _signable(fields: dict[str, Any]) -> bool:
    value = next(iter(fields.values()))
    return not (
        (isinstance(value, int) and value > 2**64) or value != value or fields.get("payload")
    )


async def test_a_malformed_message_is_rejected_and_the_runtime_goes_on(
    store: Store, clock: ManualClock
) -> None:
    """Once, a validly signed message with ``created_at="yesterday"`` raised TypeError in the
    replay guard and ended the runtime: later messages got "no agent on this network"."""
    net = LocalNetwork()
    agent = Scripted(quiet)
    mallory, alice = Identity.generate(), Identity.generate()
    async with AgentRuntime(agent, network=net, store=store, clock=clock) as rt:
        hostile = _hostile_messages(agent.did, mallory, clock)
        for message in hostile:
            await net.send(message)
        await rt.inbox.put("not a message at all")  # type: ignore[arg-type]
        hello = Message(kind="hi", recipient=agent.did, created_at=clock.now()).sign(alice)
        await net.send(hello)
        await eventually(lambda: [m.id for m in agent.seen] == [hello.id])
        await eventually(lambda: _count(store, "message.rejected", len(hostile) + 1))
    rejected = await store.read(kinds=["message.rejected"])
    assert len(rejected) == len(hostile) + 1
    assert {e.trace_id for e in rejected} == {agent.did}  # a claimed trace is not believed
    reasons = {e.data["reason"] for e in rejected}
    assert reasons <= {"malformed", "bad_signature"}, reasons
    for event in rejected:  # every field shown is a short str, whatever the message held
        assert all(isinstance(v, str) and len(v) <= 1000 for v in event.data.values())
    assert any(e.data.get("field") == "created_at" for e in rejected)
    assert any(e.data.get("field") == "nonce" for e in rejected)


class _BrokenGuard(ReplayGuard):
    """A replay guard with a bug: one kind of message makes it raise something unexpected."""

    def check(self, message: Message) -> None:
        if message.kind == "boom":
            raise ZeroDivisionError("a bug in the guard")
        super().check(message)


async def test_any_exception_while_taking_a_message_is_a_rejection_and_the_runtime_goes_on(
    store: Store, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    net = LocalNetwork()
    agent = Scripted(quiet)
    alice = Identity.generate()
    guard = _BrokenGuard(clock=clock)
    guard.check_values("did:key:earlier", "n", clock.now() - 10)  # in use already
    async with AgentRuntime(agent, network=net, store=store, clock=clock, replay_guard=guard) as rt:
        assert rt.guard is guard
        boom = Message(kind="boom", recipient=agent.did, created_at=clock.now()).sign(alice)
        hello = Message(kind="hi", recipient=agent.did, created_at=clock.now()).sign(alice)
        await net.send(boom)
        await net.send(hello)
        await eventually(lambda: [m.id for m in agent.seen] == [hello.id])
    [rejected] = await kinds(store, "message.rejected")
    assert (rejected["reason"], rejected["message_id"]) == ("ZeroDivisionError", boom.id)
    [logged] = [r for r in caplog.records if "message rejected" in r.getMessage()]
    assert logged.levelname == "ERROR" and logged.exc_info is not None  # a bug: its traceback


async def test_malformed_decisions_are_refused_and_the_runtime_goes_on(
    store: Store, clock: ManualClock
) -> None:
    """Decisions built in process are not type-checked either: one with an unhashable field
    once raised TypeError inside ``validate_safety`` and ended the runtime."""
    net = LocalNetwork()
    listener = Scripted(quiet)
    board = TaskManager(store, clock=clock)
    bad: list[Any] = [
        ClaimTask(task_id=["not", "an", "id"]),  # type: ignore[arg-type]
        InvokeTool(tool=["t"]),  # type: ignore[arg-type]
        ReportTask(task_id={"x": 1}, result=None),  # type: ignore[arg-type]
        SendMessage(kind=5, recipient=listener.did),  # type: ignore[arg-type]
        SendMessage(kind="x", recipient=listener.did, payload=object()),
        Vote(ballot_id=1, choice=None),  # type: ignore[arg-type]
        SubmitTask(objective="o", priority="high"),  # type: ignore[arg-type]
    ]

    def hostile(messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        return [*bad, SendMessage(kind="after", recipient=listener.did)] if messages else []

    agent = Scripted(hostile)
    executor = StandardExecutor(network=net, tasks=board, clock=clock)
    # Limits and lists that make the safety check look at every decision's fields.
    limits = ResourceLimits(max_claimed_tasks=3, max_tool_calls=3)
    policy = ActionPolicy(deny_tools=frozenset({"rm"}))
    async with (
        AgentRuntime(listener, network=net, store=store, clock=clock),
        AgentRuntime(
            agent,
            network=net,
            tasks=board,
            executor=executor,
            limits=limits,
            policy=policy,
            clock=clock,
        ),
    ):
        await executor.execute(listener, SendMessage(kind="go", recipient=agent.did))
        await eventually(lambda: [m.kind for m in listener.seen] == ["after"])
        await executor.execute(listener, SendMessage(kind="again", recipient=agent.did))
        await eventually(lambda: [m.kind for m in listener.seen] == ["after", "after"])
    refused = await kinds(store, "decision.refused")
    assert [r["rule"] for r in refused] == ["decision_malformed"] * 2 * len(bad)
    assert await board.list_pending_tasks_for_agent(agent.did, [], []) == []


async def test_a_runaway_agent_is_throttled_by_the_default_limits(
    store: Store, clock: ManualClock
) -> None:
    """An agent that messages itself on every call: without limits it looped thousands of
    times a second. By default ``decide()`` runs at most 1,000 times in any second."""
    net = LocalNetwork()
    me = Scripted(lambda m, t: [SendMessage(kind="again", recipient=me.did)])
    executor = StandardExecutor(network=net, clock=clock)
    limit = ResourceLimits().max_decide_calls_per_second
    assert limit == 1000 and ResourceLimits().max_messages_per_second == 10_000
    async with AgentRuntime(me, network=net, store=store, executor=executor, clock=clock) as rt:
        await executor.execute(me, SendMessage(kind="start", recipient=me.did))
        await eventually(lambda: rt.throttled == 1)  # on a clock that stands still: waiting
        assert rt.decide_calls == limit
        clock.advance(1.0)
        await eventually(lambda: rt.throttled == 2)
        assert rt.decide_calls == 2 * limit
    assert await kinds(store, "decision.refused") == []  # nothing refused: it only waited


async def test_the_decide_rate_is_overridable_and_none_is_unlimited(
    store: Store, clock: ManualClock
) -> None:
    net = LocalNetwork()
    me = Scripted(lambda m, t: [SendMessage(kind="again", recipient=me.did)])
    executor = StandardExecutor(network=net, clock=clock)
    three = ResourceLimits(max_decide_calls_per_second=3)
    async with AgentRuntime(
        me, network=net, store=store, executor=executor, clock=clock, limits=three
    ) as rt:
        await executor.execute(me, SendMessage(kind="start", recipient=me.did))
        await eventually(lambda: rt.throttled == 1)
        assert rt.decide_calls == 3
    unlimited = ResourceLimits(max_decide_calls_per_second=None, max_messages_per_second=None)
    async with AgentRuntime(
        me, network=net, store=store, executor=executor, clock=clock, limits=unlimited
    ) as rt:
        await executor.execute(me, SendMessage(kind="start", recipient=me.did))
        await eventually(lambda: rt.decide_calls > 1500)  # past the default, never waiting
        assert rt.throttled == 0


def test_an_injected_replay_guard_is_used_even_while_empty(store: Store) -> None:
    """``replay_guard or ReplayGuard()`` once dropped the guard given: a guard has a length, so
    one that holds no nonce yet is falsy."""
    guard = ReplayGuard(max_entries=10)
    runtime = AgentRuntime(Scripted(quiet), network=LocalNetwork(), store=store, replay_guard=guard)
    assert runtime.guard is guard


# -- ready -----------------------------------------------------------------------------------------


class SlowStart(Scripted):
    """An agent whose ``on_start`` waits for a gate (or raises), to see what ``ready`` waits on."""

    def __init__(self, gate: asyncio.Event, fail: bool = False) -> None:
        super().__init__(lambda m, t: [], name="slow", capabilities=["translate@1.0"])
        self.gate = gate
        self.fail = fail

    async def on_start(self) -> None:
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("no licence to start")


async def test_async_with_enters_once_the_agent_is_registered(store: Store) -> None:
    from converge.coordination import DiscoveryService

    discovery = DiscoveryService(store)
    gate = asyncio.Event()
    runtime = AgentRuntime(
        SlowStart(gate), network=LocalNetwork(), store=store, discovery=discovery
    )
    with pytest.raises(StateError, match="never started"):
        await runtime.ready()
    entering = asyncio.ensure_future(runtime.__aenter__())
    await asyncio.sleep(0)
    assert not entering.done()  # on_start has not returned: not ready
    gate.set()
    async with asyncio.timeout(WAIT):
        await entering
    try:
        [found] = await discovery.find(capability="translate>=1.0")
        assert found.did == runtime.did
        await runtime.ready()  # ready stays ready
    finally:
        await runtime.__aexit__(None, None, None)


async def test_an_agent_that_cannot_start_fails_async_with_with_its_error(store: Store) -> None:
    gate = asyncio.Event()
    gate.set()
    runtime = AgentRuntime(SlowStart(gate, fail=True), network=LocalNetwork(), store=store)
    with pytest.raises(RuntimeError, match="no licence"):
        async with asyncio.timeout(WAIT), runtime:
            pytest.fail("entered a runtime that did not start")
    with pytest.raises(RuntimeError, match="no licence"):
        await runtime.ready()  # ended before ready: its error again
