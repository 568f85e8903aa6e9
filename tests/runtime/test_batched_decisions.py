"""Several claims (or reports) in a row go to the board as one unit, each decision still
succeeding or failing on its own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from converge.coordination import TaskManager
from converge.core import ClaimTask, Decision, Message, ReportTask, Task
from converge.core.clock import ManualClock
from converge.core.task import TaskState
from converge.network import LocalNetwork
from converge.runtime import AgentRuntime, StandardExecutor
from converge.store import Store
from tests.runtime.test_agent_runtime import WAIT, Scripted, eventually, kinds

OTHER = "did:key:z6MkSomeoneElse"


class Calls:
    """Counts the board calls a runtime makes, by name."""

    def __init__(self, board: TaskManager, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count: dict[str, int] = {}
        for name in ("claim", "claim_next", "report", "report_many"):
            monkeypatch.setattr(board, name, self._counting(name, getattr(board, name)))

    def _counting(self, name: str, fn: Any) -> Any:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.count[name] = self.count.get(name, 0) + 1
            return await fn(*args, **kwargs)

        return counted


def claim_all_then_report(messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
    """Claims every visible task, then reports each: two runs."""
    return [ClaimTask(task_id=t.id) for t in tasks] + [
        ReportTask(task_id=t.id, result=t.objective.upper()) for t in tasks
    ]


async def test_claims_and_reports_in_a_row_are_one_unit_each(
    store: Store, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = LocalNetwork()
    board = TaskManager(store, clock=clock)
    submitted = await board.submit_many([Task(objective=f"job {i}") for i in range(5)])
    calls = Calls(board, monkeypatch)
    agent = Scripted(claim_all_then_report)
    executor = StandardExecutor(network=net, tasks=board, clock=clock)
    async with AgentRuntime(agent, network=net, tasks=board, executor=executor, clock=clock) as rt:
        done = [await board.wait(t.id, timeout=WAIT) for t in submitted]
        assert rt.claims == {}
        assert rt.usage.claimed_tasks == 0
    assert [(t.state, t.result, t.assigned_to) for t in done] == [
        (TaskState.COMPLETED, f"JOB {i}", agent.did) for i in range(5)
    ]
    assert calls.count == {"claim_next": 1, "report_many": 1}
    assert await kinds(store, "decision.failed") == []


async def test_a_claim_or_report_refused_in_a_unit_fails_alone_with_its_reason(
    store: Store, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = LocalNetwork()
    board = TaskManager(store, clock=clock)
    free, taken, cancelled = await board.submit_many(
        [Task(objective="free"), Task(objective="taken"), Task(objective="cancelled")]
    )
    shown: list[Task] = []

    def decide(messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        if not tasks or shown:
            return []
        shown.extend(tasks)
        return [ClaimTask(task_id=t.id) for t in tasks]

    calls = Calls(board, monkeypatch)
    agent = Scripted(decide)
    executor = StandardExecutor(network=net, tasks=board, clock=clock)
    original = agent.decide

    async def racing(messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        decisions = await original(messages, tasks)
        if decisions:  # between the agent's choice and its claims, another agent takes one
            await board.claim(OTHER, taken.id)
        return decisions

    monkeypatch.setattr(agent, "decide", racing)
    async with AgentRuntime(agent, network=net, tasks=board, executor=executor, clock=clock) as rt:
        await eventually(lambda: len(rt.claims) == 2)
        assert set(rt.claims) == {free.id, cancelled.id}
        failed = await kinds(store, "decision.failed")
        assert [(f["decision"]["task_id"], f["error_type"]) for f in failed] == [
            (taken.id, "InvalidTransition")
        ]
        # The claims were one unit; the lost one was tried alone, which said why (the other
        # claim is the rival's).
        assert calls.count == {"claim_next": 1, "claim": 2}
        await board.cancel_task(cancelled.id, "withdrawn")
        reports = [
            ReportTask(task_id=free.id, result="ok"),
            ReportTask(task_id=cancelled.id, result="late"),
        ]
        await rt._apply(list(reports), None)
        failed = await kinds(store, "decision.failed")
        assert [(f["decision"]["task_id"], f["error_type"]) for f in failed[1:]] == [
            (cancelled.id, "InvalidTransition")
        ]
        assert calls.count["report_many"] == 1 and "report" not in calls.count
        assert rt.claims == {}  # one done, one refused because the task ended: both dropped
    done = await board.get(free.id)
    assert done is not None and (done.state, done.result) == (TaskState.COMPLETED, "ok")


async def test_a_run_the_board_refuses_as_a_whole_is_applied_one_at_a_time(
    store: Store, clock: ManualClock
) -> None:
    net = LocalNetwork()
    board = TaskManager(store, clock=clock)
    first, second = await board.submit_many([Task(objective="a"), Task(objective="b")])
    agent = Scripted(lambda m, t: [])
    executor = StandardExecutor(network=net, tasks=board, clock=clock)
    async with AgentRuntime(agent, network=net, tasks=board, executor=executor, clock=clock) as rt:
        await rt._apply([ClaimTask(task_id=first.id), ClaimTask(task_id=second.id)], None)
        assert set(rt.claims) == {first.id, second.id}
        # One task reported twice: report_many refuses the whole batch, so each report goes
        # alone, as it would without batches: the first completes the task and ends the
        # runtime's claim, so the second has no token to go with.
        await rt._apply(
            [
                ReportTask(task_id=first.id, result="fine"),
                ReportTask(task_id=first.id, result="other"),
                ReportTask(task_id=second.id, result="also fine"),
            ],
            None,
        )
        failed = await kinds(store, "decision.failed")
        assert [(f["decision"]["task_id"], f["error_type"]) for f in failed] == [
            (first.id, "PolicyViolation")
        ]
        assert rt.claims == {}
    for task, result in ((first, "fine"), (second, "also fine")):
        done = await board.get(task.id)
        assert done is not None and (done.state, done.result) == (TaskState.COMPLETED, result)
