"""A board worker (a function named by ``converge agents run``): what it returns is the task's
result, as the board stores it; a result the board cannot store fails the task at once rather
than leaving it claimed until its lease runs out."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from converge.cli._agents_run import _BoardWorker
from converge.coordination import TaskManager
from converge.core import ClaimTask, FailTask, ReportTask, Task
from converge.store import MemoryStore


@dataclasses.dataclass
class Point:
    x: int
    y: int


@pytest.mark.parametrize(
    ("result", "stored"),
    [
        ({"text": "chat"}, {"text": "chat"}),
        ((1, 2), [1, 2]),
        (Point(1, 2), {"x": 1, "y": 2}),
        (None, None),
        (b"\x00", b"\x00"),
    ],
)
async def test_what_the_function_returns_is_the_tasks_result(result: Any, stored: Any) -> None:
    task = Task(objective="x")
    decisions = await _BoardWorker(lambda t: result, "w").decide([], [task])
    assert decisions == [ClaimTask(task_id=task.id), ReportTask(task_id=task.id, result=result)]
    board = TaskManager(MemoryStore())
    await board.submit(task)
    token = await board.claim("did:w", task.id)
    await board.report("did:w", task.id, result, token)
    assert (await TaskManager(board.store).get(task.id)).result == stored  # as read back


async def test_a_result_the_board_cannot_store_fails_the_task() -> None:
    task = Task(objective="x")
    [claim, failed] = await _BoardWorker(lambda t: object(), "w").decide([], [task])
    assert claim == ClaimTask(task_id=task.id)
    assert isinstance(failed, FailTask) and failed.task_id == task.id
    assert failed.reason.startswith("the result cannot be stored: TypeError")


async def test_a_result_holding_a_nan_fails_the_task_at_once() -> None:
    task = Task(objective="x")
    [claim, failed] = await _BoardWorker(lambda t: {"score": float("nan")}, "w").decide([], [task])
    assert claim == ClaimTask(task_id=task.id)
    assert isinstance(failed, FailTask)
    assert failed.reason.startswith("the result cannot be stored: ValidationError")
    assert "result.score" in failed.reason
