"""What the runtime keeps for its agent between decisions: the fencing token of each claim (held
per claimed task, dropped when the task ends or its lease is lost), and the agent's pools (read
once a round)."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Sequence

from converge.coordination import PoolManager, TaskManager
from converge.core import Agent, ClaimTask, Decision, Message, ReportTask, SendMessage, Task
from converge.core.capability import Capability, CapabilitySet
from converge.core.clock import ManualClock
from converge.core.pool import Pool
from converge.core.task import TaskState
from converge.network import LocalNetwork
from converge.policy import ResourceLimits
from converge.runtime import AgentRuntime, StandardExecutor
from converge.store import Store
from tests.runtime.test_agent_runtime import Scripted, eventually, kinds


def grab(messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
    """Claims the first task it sees, and never reports it."""
    return [ClaimTask(task_id=t.id) for t in tasks[:1]]


async def held(board: TaskManager, task_id: str, agent: str, attempt: int) -> bool:
    task = await board.get(task_id)
    return (
        task is not None
        and task.state is TaskState.CLAIMED
        and (task.assigned_to, task.attempts) == (agent, attempt)
    )


async def test_a_claim_whose_lease_is_lost_is_dropped_and_frees_its_place(
    store: Store, clock: ManualClock
) -> None:
    """Once, the claim stayed counted for ever: an agent with ``max_claimed_tasks=1`` whose
    lease ran out could never claim another task."""
    net = LocalNetwork()
    board = TaskManager(store, claim_ttl_sec=30, clock=clock)
    grabbed: list[str] = []

    def grab_new(messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        fresh = [t.id for t in tasks if t.id not in grabbed][:1]
        grabbed.extend(fresh)
        return [ClaimTask(task_id=task_id) for task_id in fresh]  # and never reports

    agent = Scripted(grab_new)
    executor = StandardExecutor(network=net, tasks=board, clock=clock)
    limits = ResourceLimits(max_claimed_tasks=1)
    async with AgentRuntime(
        agent, network=net, tasks=board, executor=executor, limits=limits, clock=clock
    ) as rt:
        lost = await board.submit(Task(objective="lost", max_attempts=3))
        await eventually(lambda: held(board, lost.id, agent.did, 1))
        assert rt.claims == {lost.id: 1}
        await eventually(lambda: clock.sleepers >= 1)  # the reaper, until the lease ends
        clock.advance(31)
        await eventually(lambda: rt.claims == {})  # the task was released: offered again
        after = await board.submit(Task(objective="after"))
        await eventually(
            lambda: _either(held(board, after.id, agent.did, 1), _any(store, "decision.refused"))
        )
        assert await kinds(store, "decision.refused") == []
        assert rt.claims == {after.id: 1}
        assert rt.usage.claimed_task_ids == {after.id}


async def test_a_task_that_ends_while_held_is_dropped_once_its_lease_would_have_run_out(
    store: Store, clock: ManualClock
) -> None:
    net = LocalNetwork()
    board = TaskManager(store, claim_ttl_sec=30, clock=clock)
    agent = Scripted(grab)
    executor = StandardExecutor(network=net, tasks=board, clock=clock)
    limits = ResourceLimits(max_claimed_tasks=1)
    async with AgentRuntime(
        agent, network=net, tasks=board, executor=executor, limits=limits, clock=clock
    ) as rt:
        first = await board.submit(Task(objective="withdrawn"))
        await eventually(lambda: held(board, first.id, agent.did, 1))
        await board.cancel_task(first.id, "not needed")
        clock.advance(31)
        second = await board.submit(Task(objective="next"))  # wakes the agent
        await eventually(
            lambda: _either(held(board, second.id, agent.did, 1), _any(store, "decision.refused"))
        )
        assert await kinds(store, "decision.refused") == []
        assert rt.claims == {second.id: 1}


async def test_reports_use_the_token_the_runtime_kept_and_leave_nothing_behind(
    store: Store, clock: ManualClock
) -> None:
    """Several runtimes share one executor (as ``converge agents run`` does); each keeps its own
    agent's claims, and a finished task leaves none."""
    net = LocalNetwork()
    board = TaskManager(store, clock=clock)

    def worker(share: int) -> Scripted:
        def work(messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
            mine = [t for t in tasks if t.inputs["n"] % 3 == share]  # no race for a task
            return [
                d
                for t in mine
                for d in (ClaimTask(task_id=t.id), ReportTask(task_id=t.id, result=t.objective))
            ]

        return Scripted(work, name=f"worker-{share}")

    agents = [worker(share) for share in range(3)]
    executor = StandardExecutor(network=net, tasks=board, clock=clock)
    runtimes = [
        AgentRuntime(a, network=net, tasks=board, executor=executor, clock=clock) for a in agents
    ]
    for rt in runtimes:
        rt.start()
    try:
        submitted = [
            await board.submit(Task(objective=f"job {i}", inputs={"n": i})) for i in range(12)
        ]
        done = [await board.wait(t.id, timeout=10) for t in submitted]
    finally:
        for rt in runtimes:
            await rt.shutdown()
    assert {(t.state, t.result) for t in done} == {
        (TaskState.COMPLETED, f"job {i}") for i in range(12)
    }
    assert [rt.claims for rt in runtimes] == [{}, {}, {}]
    assert all(rt.usage.claimed_tasks == 0 for rt in runtimes)
    assert await kinds(store, "decision.failed") == []


async def test_a_restarted_runtime_does_not_inherit_its_predecessors_claims(
    store: Store, clock: ManualClock
) -> None:
    """Claims belong to the runtime that made them: a new runtime of the same agent, even on the
    same executor, cannot report one (its lease is left to expire, as after a crash)."""
    net = LocalNetwork()
    board = TaskManager(store, clock=clock)
    task = await board.submit(Task(objective="x"))

    def claim_then_report(messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        if any(m.kind == "report" for m in messages):
            return [ReportTask(task_id=task.id, result="late")]
        return [ClaimTask(task_id=t.id) for t in tasks[:1]]

    agent = Scripted(claim_then_report)
    listener = Agent(name="listener")
    executor = StandardExecutor(network=net, tasks=board, clock=clock)
    async with AgentRuntime(agent, network=net, tasks=board, executor=executor, clock=clock):
        await eventually(lambda: held(board, task.id, agent.did, 1))
    async with AgentRuntime(
        agent, network=net, tasks=board, executor=executor, clock=clock
    ) as again:
        await executor.execute(listener, SendMessage(kind="report", recipient=agent.did))
        await eventually(lambda: _any(store, "decision.failed"))
        assert again.claims == {}
    [failed] = await kinds(store, "decision.failed")
    assert (failed["type"], failed["error_type"]) == ("report_task", "PolicyViolation")
    assert await held(board, task.id, agent.did, 1)


class CountingPools(PoolManager):
    """A pool manager that counts the lookups of an agent's pools."""

    lookups = 0

    async def get_pools_for_agent(self, agent_id: str) -> list[str]:
        self.lookups += 1
        return await super().get_pools_for_agent(agent_id)


class CountingBoard(TaskManager):
    """A board that counts visibility queries: the runtime makes one a round."""

    queries = 0

    async def list_pending_tasks_for_agent(
        self,
        agent_id: str,
        pool_ids: Iterable[str] | None,
        capabilities: CapabilitySet | Iterable[Capability | str] | None,
        limit: int = 100,
    ) -> list[Task]:
        self.queries += 1
        return await super().list_pending_tasks_for_agent(
            agent_id, pool_ids, capabilities, limit=limit
        )


async def test_an_agents_pools_are_read_once_a_round_and_changes_are_seen(
    store: Store, clock: ManualClock
) -> None:
    """Once, they were read for the visible tasks, again for each claim, and a membership
    changed by anyone but the agent itself was never seen (nor, for an agent in no pool, was
    the first read ever kept)."""
    net = LocalNetwork()
    board = CountingBoard(store, clock=clock)
    pools = CountingPools(store, clock=clock)
    for pool_id in ("cpu", "gpu"):
        await pools.create_pool(Pool(name=pool_id, id=pool_id))
    agent = Scripted(
        lambda messages, tasks: [
            d for t in tasks[:1] for d in (ClaimTask(task_id=t.id), ReportTask(task_id=t.id))
        ]
    )
    executor = StandardExecutor(network=net, tasks=board, pools=pools, clock=clock)
    async with AgentRuntime(
        agent, network=net, tasks=board, pools=pools, executor=executor, clock=clock
    ):
        loose = await board.submit(Task(objective="any agent"))
        assert (await board.wait(loose.id, timeout=10)).state is TaskState.COMPLETED
        await pools.join_pool(agent.did, "cpu")  # joined from outside the agent's decisions
        on_cpu = await board.submit(Task(objective="cpu job", pool_id="cpu"))
        assert (await board.wait(on_cpu.id, timeout=10)).state is TaskState.COMPLETED
        await pools.join_pool(agent.did, "gpu")
        on_gpu = await board.submit(Task(objective="gpu job", pool_id="gpu"))
        # Its wake-up is filtered by the pools it last read (gpu was not among them): anything
        # else that wakes it, a message here, starts a round that reads them again.
        await executor.execute(Agent(name="peer"), SendMessage(kind="hi", recipient=agent.did))
        assert (await board.wait(on_gpu.id, timeout=10)).state is TaskState.COMPLETED
    assert pools.lookups == board.queries


async def _either(*checks: Awaitable[bool]) -> bool:
    return any([await check for check in checks])


async def _any(store: Store, kind: str) -> bool:
    return bool(await kinds(store, kind))
