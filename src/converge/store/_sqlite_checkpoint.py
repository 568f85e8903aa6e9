"""A thread that checkpoints the WAL off the commit path.

SQLite's automatic checkpoint runs inside the commit that crosses the threshold, so one unlucky
caller waits for the whole WAL to be copied into the database and synced (100+ ms). Here the
writer connection's automatic checkpoint is off; after each commit the writer pokes this thread,
which runs a ``PASSIVE`` checkpoint on its own connection (it never blocks writers or readers)
at most every ``interval`` seconds while writes keep coming.

A ``PASSIVE`` checkpoint copies the frames committed before it began; if commits arrive while
it runs, the next writer cannot start the WAL over, so under a steady stream of commits the
WAL would grow without end (hundreds of MB in a few seconds of a durable pipeline). Once the
WAL holds more than ``max_wal_bytes`` of frames (as the last checkpoint counted them) the
thread runs a ``RESTART`` checkpoint instead: it takes the write lock (writers wait for it
meanwhile, up to their busy timeout; ~30 ms here), copies everything, and the next commit
starts the WAL over; the writer's ``journal_size_limit`` then trims the file.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable

__all__ = ["Checkpointer"]


class Checkpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` after ``poke()``, at most every ``interval`` s;
    ``RESTART`` once the WAL holds more than ``max_wal_bytes`` of frames."""

    def __init__(
        self,
        name: str,
        connect: Callable[[], sqlite3.Connection],
        *,
        interval: float = 0.2,
        max_wal_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._connect = connect
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
            page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        except Exception:
            return  # the writer reports open errors; its auto-checkpoint-free WAL stays valid
        frames = 0
        try:
            while True:
                self._wanted.wait()
                self._wanted.clear()
                mode = "RESTART" if frames * page_size > self._max_wal_bytes else "PASSIVE"
                with self.lock:
                    try:
                        row = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
                    except sqlite3.Error:
                        row = None  # busy or locked: the next poke tries again; nothing is lost
                    complete = row is not None and row[0] == 0 and row[1] == row[2]
                    if complete:  # all copied: the next commit may start the WAL over
                        self.completed += 1
                if complete and mode == "RESTART":
                    frames = 0  # it will start over
                elif row is not None and row[1] >= 0:
                    frames = row[1]  # the WAL's length when the checkpoint began
                if self._stopping.is_set():
                    return
                # Let writes accumulate: fewer, larger checkpoints write each page once.
                self._stopping.wait(self._interval)
        finally:
            conn.close()
