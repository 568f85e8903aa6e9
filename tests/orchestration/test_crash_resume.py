"""A run killed with SIGKILL mid-way and resumed in another process ends as an uninterrupted
run would, and no node that had finished runs again."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest

from converge.orchestration import Engine
from converge.store import SQLiteStore
from tests.orchestration._crash_graph import build

ROOT = Path(__file__).resolve().parents[2]


def _exists(path: Path) -> bool:
    return path.exists()


async def _wait_for(path: Path, proc: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(30):
        while not _exists(path):  # another process writes it; bounded by the timeout
            if proc.returncode is not None:
                break
            await asyncio.sleep(0.01)


@pytest.mark.slow
async def test_sigkill_mid_run_then_resume_in_a_new_process(tmp_path: Path) -> None:
    db, log, run_id = tmp_path / "runs.db", tmp_path / "nodes.log", "crash-run-1"
    env = {**os.environ, "CONVERGE_CRASH": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.orchestration._crash_graph",
        str(db),
        str(log),
        run_id,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await _wait_for(Path(f"{log}.ready"), proc)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        _, err = await proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()
    before = log.read_text().splitlines()
    assert "c start crash-run-1/c/1" in before and "c done" not in before

    # This process plays the restarted one: a new engine on the same file.
    async with await SQLiteStore.open(db) as store:
        resumed = await Engine(store).resume(build(log), run_id)
    async with await SQLiteStore.open(tmp_path / "clean.db") as store:
        clean = await Engine(store).execute(build(tmp_path / "clean.log"), {"seed": "s"})
    assert resumed.output == clean.output == "d(c(b1(a(s)),b2(a(s))))"
    assert resumed.outputs == clean.outputs

    lines = log.read_text().splitlines()
    done = Counter(line.split()[0] for line in lines if line.endswith(" done"))
    assert done == {"a": 1, "b1": 1, "b2": 1, "c": 1, "d": 1}  # nothing finished ran twice
    starts = [line for line in lines if line.startswith("c start")]
    assert starts == ["c start crash-run-1/c/1"] * 2  # the interrupted pass, same key
