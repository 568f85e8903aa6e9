"""gsbm/converge's task board on the board benchmark's lifecycle: the peer half of the comparison.

Runs INSIDE the peer venv (``gsbm_env``): the ``converge`` it imports is gsbm's, never ours.
It serves the converge bench, which drives it over stdin so that the two take turns on the
machine in one invocation: each line ``lifecycle N`` runs N lifecycles — ``Task(objective=...)``,
``submit``, ``claim``, ``report``, one task after another, on ``TaskManager(MemoryStore())``, as
the peer's README shows — after a warm-up, and answers one JSON line (``case``, ``value`` in
tasks/s, ``tasks``, ``seconds``, ``peer``, ``peer_version``). ``quit`` (or end of input) ends it.

Run by hand: ``.venv-peers/gsbm/bin/python bench/peers/gsbm_cases.py`` then type
``lifecycle 20000``.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from importlib.metadata import version
from typing import Any

from converge.coordination.task_manager import TaskManager
from converge.core.task import Task
from converge.extensions.storage.memory import MemoryStore

PEER = "gsbm/converge"
_WARM_UP = 500


def lifecycles(manager: Any, n: int) -> None:
    """``n`` tasks submitted, claimed and reported, one after another."""
    for i in range(n):
        task = Task(objective={"job": i})
        manager.submit(task)
        if not manager.claim("a1", task.id):
            raise RuntimeError(f"the peer refused to claim task {task.id}")
        manager.report("a1", task.id, i)


def case_lifecycle(n: int) -> dict[str, Any]:
    manager = TaskManager(store=MemoryStore())
    lifecycles(manager, _WARM_UP)
    start = time.perf_counter()
    lifecycles(manager, n)
    seconds = time.perf_counter() - start
    return {
        "case": "lifecycle_memory",
        "value": round(n / seconds),
        "unit": "tasks/s",
        "tasks": n,
        "seconds": round(seconds, 4),
        "peer": PEER,
        "peer_version": version("converge"),
    }


def main() -> None:
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            return
        try:
            if words[0] != "lifecycle" or len(words) != 2:
                raise ValueError(f"unknown request {line.strip()!r}")
            result = case_lifecycle(int(words[1]))
        except Exception as exc:  # the bench shows the peer's failure, then stops it
            traceback.print_exc(file=sys.stderr)
            result = {"case": words[0], "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
