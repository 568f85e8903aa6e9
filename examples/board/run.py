"""Run the board example in one command: two worker processes, then the submitter.

    .venv/bin/python examples/board/run.py [--store PATH]

Starts ``converge agents run examples/board/agents.yaml`` twice (two worker processes on one
SQLite store), waits until both say their agent started, runs ``submit.py``'s ``main`` (four
tasks, their results printed with the process that did each), then stops both workers with
Ctrl-C (SIGINT), as a terminal would, and prints what they said. Run from the repository root;
each process is what the guide starts by hand in its own terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``examples`` importable
    sys.path.insert(0, str(ROOT))

from examples.board.submit import main as submit  # noqa: E402

DEFAULT_STORE = Path(".converge/board.db")
WORKERS = 2


def start_worker(store: Path) -> subprocess.Popen[str]:
    """One ``converge agents run`` of the example's agents file, from the repository root."""
    converge = Path(sys.executable).with_name("converge")
    if not converge.exists():
        raise SystemExit(f"no converge command beside {sys.executable}: install converge first")
    return subprocess.Popen(
        [str(converge), "agents", "run", str(HERE / "agents.yaml"), "--store", str(store)],
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def run(store: Path) -> list[str]:
    """Two workers, the submitter, then Ctrl-C: what the workers printed, pid first (their
    logs too if one failed)."""
    if not store.is_absolute():  # the workers run from the repository root: say it from there
        store = Path(os.path.relpath(store.resolve(), ROOT))
    (ROOT / store).parent.mkdir(parents=True, exist_ok=True)
    workers = [start_worker(store) for _ in range(WORKERS)]
    try:
        for w in workers:
            assert w.stdout is not None
            line = w.stdout.readline()  # "agent translator started (did:key:…)"
            if not line.startswith("agent translator started"):
                raise SystemExit(f"a worker did not start: {line}{w.communicate()[1]}")
        asyncio.run(submit(str(ROOT / store)))
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGINT)
    said = []
    for w in workers:
        out, err = w.communicate(timeout=30)
        # Its log (stderr) holds the claims it lost to the other worker: shown if it failed.
        text = out if w.returncode == 0 else out + err
        said += [f"worker {w.pid}: {line}" for line in text.splitlines()]
    return said


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help="the SQLite store")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    for line in run(args.store):
        sys.stdout.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
