"""A thread that checkpoints the WAL off the commit path.

SQLite's automatic checkpoint runs inside the commit that crosses the threshold, so one unlucky
caller waits for the whole WAL to be copied into the database and synced (100+ ms). Here the
writer connection's automatic checkpoint is off; after each commit the writer pokes this thread,
which runs a ``PASSIVE`` checkpoint on its own connection (it never blocks writers or readers)
at most every ``interval`` seconds while writes keep coming.

A ``PASSIVE`` checkpoint copies the frames committed before it began; one that writes arrive
during never copies the whole WAL, and only a whole copy lets the next writer start the WAL
over. Under a steady stream of commits the WAL would so grow without end (hundreds of MB in a
few seconds of a durable pipeline). Once the WAL file is larger than ``max_wal_bytes`` the
thread runs a ``TRUNCATE`` checkpoint instead: it waits for the write lock (writers wait for
it meanwhile, up to their busy timeout), copies everything and empties the file.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["Checkpointer"]


class Checkpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` after ``poke()``, at most every ``interval`` s;
    ``TRUNCATE`` when the WAL file (``wal_path``) is over ``max_wal_bytes``."""

    def __init__(
        self,
        name: str,
        connect: Callable[[], sqlite3.Connection],
        wal_path: Path,
        *,
        interval: float = 0.2,
        max_wal_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._connect = connect
        self._wal_path = wal_path
        self._max_wal_bytes = max_wal_bytes
        self._interval = interval
        self._wanted = threading.Event()
        self._stopping = threading.Event()
        # After a checkpoint that copied the whole WAL, the next commit restarts the WAL and
        # syncs its header, even with synchronous=NORMAL. ``completed`` counts such checkpoints;
        # ``lock`` is held while one runs, so a commit made under it cannot race one's end.
        self.lock = threading.Lock()
        self.completed = 0
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _wal_bytes(self) -> int:
        try:
            return self._wal_path.stat().st_size
        except OSError:
            return 0

    def poke(self) -> None:
        """Ask for a checkpoint soon (cheap; called after every commit)."""
        if not self._wanted.is_set():  # set() takes a lock and wakes the thread: once is enough
            self._wanted.set()

    def stop(self) -> None:
        """End the thread after a last checkpoint (blocks briefly; call off the event loop)."""
        self._stopping.set()
        self._wanted.set()
        self._thread.join()

    def _main(self) -> None:
        try:
            conn = self._connect()
        except Exception:
            return  # the writer reports open errors; its auto-checkpoint-free WAL stays valid
        try:
            while True:
                self._wanted.wait()
                self._wanted.clear()
                mode = "TRUNCATE" if self._wal_bytes() > self._max_wal_bytes else "PASSIVE"
                with self.lock:
                    try:
                        row = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
                    except sqlite3.Error:
                        row = None  # busy or locked: the next poke tries again; nothing is lost
                    if row is not None and row[0] == 0 and row[1] == row[2]:  # all copied
                        self.completed += 1
                if self._stopping.is_set():
                    return
                # Let writes accumulate: fewer, larger checkpoints write each page once.
                self._stopping.wait(self._interval)
        finally:
            conn.close()
