"""Board workers the ``converge agents run`` tests name as ``tests.cli._workers:<name>``."""

from __future__ import annotations

from typing import Any

from converge.core import Task


def shout(task: Task) -> dict[str, Any]:
    """Upper-cases the task's objective."""
    return {"shouted": task.objective.upper()}


async def refuse(task: Task) -> Any:
    raise RuntimeError(f"will not do {task.objective}")
