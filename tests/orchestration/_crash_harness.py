"""Kill a run with SIGKILL mid-way in a child process, then resume it here.

A test names a *setup*: ``module:function``, an async context manager factory
``setup(store, log, crash) -> (graph, services, inputs)``. The child process (this module run
with ``-m``) opens the SQLite store, enters ``setup(..., crash=True)`` and executes the graph
under a fixed run id; the graph's nodes call ``append(log, ...)`` to record what ran and, at
the point where the test wants the crash, ``await hang(log)``, which writes ``<log>.ready`` and
waits to be killed. The parent kills the child as soon as that file exists, then enters
``setup(..., crash=False)`` itself — a new process as far as the run is concerned — and resumes.

Usage in a test::

    result, lines = await crash_and_resume(tmp_path, "tests.orchestration.test_x:setup")
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from converge.orchestration import Engine, Graph, RunResult, Services
from converge.store import SQLiteStore, Store

__all__ = ["append", "crash_and_resume", "crashing", "hang"]

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = "crash-run"
MAX_SECONDS = 60.0
Setup = Callable[
    [Store, Path, bool], AbstractAsyncContextManager[tuple[Graph, Services, dict[str, Any]]]
]


def append(log: Path, line: str) -> None:
    """Append ``line`` to ``log``, flushed and fsynced (it must survive the kill)."""
    with log.open("a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def crashing() -> bool:
    """Whether this process is the child that is to be killed."""
    return os.environ.get("CONVERGE_CRASH") == "1"


async def hang(log: Path) -> None:
    """Tell the parent this is the moment to kill, then wait for it (never returns)."""
    append(Path(f"{log}.ready"), "ready")
    await asyncio.sleep(MAX_SECONDS)
    raise RuntimeError("the parent never killed this child")


def _setup(ref: str) -> Setup:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def _exists(path: Path) -> bool:
    return path.exists()


async def crash_and_resume(tmp: Path, setup: str) -> tuple[RunResult, list[str]]:
    """Run ``setup``'s graph in a child until it hangs, SIGKILL it, resume here; returns the
    resumed run's result and the log's lines."""
    db, log = tmp / "runs.db", tmp / "nodes.log"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.orchestration._crash_harness",
        setup,
        str(db),
        str(log),
        cwd=ROOT,
        env={**os.environ, "CONVERGE_CRASH": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    ready = Path(f"{log}.ready")
    try:
        async with asyncio.timeout(30):
            while not _exists(ready):  # another process writes it; bounded by the timeout
                if proc.returncode is not None:
                    break
                await asyncio.sleep(0.01)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        _, err = await proc.communicate()
    if proc.returncode != -signal.SIGKILL:
        raise AssertionError(f"the child exited with {proc.returncode}:\n{err.decode()}")
    async with await SQLiteStore.open(db) as store:
        async with _setup(setup)(store, log, False) as (graph, services, _):
            result = await Engine(store, services=services).resume(graph, RUN_ID)
    return result, log.read_text(encoding="utf-8").splitlines()


async def _child(setup: str, db: str, log: str) -> None:
    async with await SQLiteStore.open(db) as store:
        async with _setup(setup)(store, Path(log), True) as (graph, services, inputs):
            engine = Engine(store, services=services, id_factory=lambda: RUN_ID)
            await engine.execute(graph, inputs)


if __name__ == "__main__":
    asyncio.run(_child(*sys.argv[1:4]))
