"""The board example: one submitter and two ``converge agents run`` worker processes on one
SQLite store, as the guide runs them."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from converge.store import SQLiteStore
from examples.board import run as board_script
from examples.board.workers import WORDS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_worker_processes_do_the_submitters_tasks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The workers import this checkout's converge and its examples, as from its root.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    store = tmp_path / "board.db"
    said = board_script.run(store)
    results = capsys.readouterr().out.splitlines()

    done = [re.fullmatch(r"'(.+)' -> '(.+)' by worker (\d+)", line) for line in results]
    assert all(done), results
    assert [(m[1], m[2]) for m in done if m] == list(WORDS.items())
    workers = {int(line.split(":")[0].split()[1]) for line in said}
    assert len(workers) == 2  # two processes, each stopped by Ctrl-C...
    assert {int(m[3]) for m in done if m} <= workers  # ...and only they did the work
    for pid in workers:
        assert [line for line in said if line.startswith(f"worker {pid}:")] == [
            f"worker {pid}: agent translator stopped (signal)",
            f"worker {pid}: stopped 1 agent(s); store {store} closed",
        ]
    started = asyncio.run(_started(store))
    assert len(started) == 2 and len({e.actor for e in started}) == 2  # two identities


async def _started(store: Path) -> list[object]:
    async with await SQLiteStore.open(store, read_only=True) as opened:
        return list(await opened.read(kinds=["runtime.started"]))
