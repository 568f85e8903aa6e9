"""The graph of the SIGKILL test, and the child process that runs it until it is killed.

Usage: ``python -m tests.orchestration._crash_child DB LOG RUN_ID`` (from the repository root).
Every node appends ``<node> start <idempotency key>`` to LOG before its work and ``<node> done``
after it, each line flushed and fsynced, so the parent can see exactly what ran. With
``CONVERGE_CRASH=1`` node ``c`` writes ``LOG.ready`` and then hangs, waiting to be killed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from converge.orchestration import Engine, Graph
from converge.store import SQLiteStore

__all__ = ["build"]

MAX_SECONDS = 60.0


def _append(log: Path, line: str) -> None:
    with log.open("a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def build(log: Path) -> Graph:
    """a -> (b1, b2) -> c -> d; each node's output names the path that led to it."""

    def step(name: str) -> Any:
        async def run(inputs: dict[str, Any], ctx: Any) -> str:
            _append(log, f"{name} start {ctx.idempotency_key}")
            if name == "c" and os.environ.get("CONVERGE_CRASH") == "1":
                _append(Path(f"{log}.ready"), "c is running")
                await asyncio.sleep(MAX_SECONDS)  # killed long before this ends
                raise RuntimeError("the parent never killed this child")
            _append(log, f"{name} done")
            return name + "(" + ",".join(str(v) for _, v in sorted(inputs.items())) + ")"

        return run

    return (
        Graph("crash")
        .add_node("a", step("a"), inputs=["seed"])
        .add_node("b1", step("b1"))
        .add_node("b2", step("b2"))
        .add_node("c", step("c"))
        .add_node("d", step("d"))
        .connect("a", "b1")
        .connect("a", "b2")
        .connect("b1", "c")
        .connect("b2", "c")
        .connect("c", "d")
    )


async def _main(db: str, log: str, run_id: str) -> None:
    async with await SQLiteStore.open(db) as store:
        engine = Engine(store, id_factory=lambda: run_id)
        await engine.execute(build(Path(log)), {"seed": "s"})


if __name__ == "__main__":
    asyncio.run(_main(*sys.argv[1:4]))
