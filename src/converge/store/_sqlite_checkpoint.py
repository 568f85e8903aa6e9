"""Checkpoints of the WAL: off the commit path on a thread, and a bound the writer enforces.

SQLite's automatic checkpoint runs inside the commit that crosses the threshold, so one unlucky
caller waits for the whole WAL to be copied into the database and synced (100+ ms). Here the
writer connection's automatic checkpoint is off; after each commit the writer pokes this thread,
which runs a ``PASSIVE`` checkpoint on its own connection (it never blocks writers or readers)
at most every ``interval`` seconds while writes keep coming.

A ``PASSIVE`` checkpoint copies the frames committed before it began; if commits arrive while
it runs, the next writer cannot start the WAL over, so under a steady stream of commits the
WAL would grow without end (hundreds of MB in a few seconds of a durable pipeline). And a
thread that gets little CPU (a busy machine) falls behind any rate of commits. So the bound is
the writer's: before it appends, it asks ``over_bound()`` (one ``stat`` of the WAL file); past
``max_wal_bytes`` it runs ``restart()`` itself, a ``RESTART`` checkpoint on its own connection
that copies what the thread has not copied yet, and its commit starts the WAL over (the
writer's ``journal_size_limit``, at most ``max_wal_bytes``, trims the file). The WAL so never
holds more than ``max_wal_bytes`` plus one batch of this process's commits, however the
threads are scheduled — unless a reader keeps an older snapshot, which SQLite will not start
the WAL over under.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable

__all__ = ["Checkpointer"]


class Checkpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` after ``poke()``, at most every ``interval`` s;
    the writer calls ``restart()`` when ``over_bound()`` says the WAL holds more than
    ``max_wal_bytes``."""

    def __init__(
        self,
        name: str,
        connect: Callable[[], sqlite3.Connection],
        wal_path: str,
        *,
        interval: float = 0.2,
        max_wal_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._connect = connect
        self._wal_path = wal_path
        self.max_wal_bytes = max_wal_bytes
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

    def over_bound(self) -> bool:
        """Whether the WAL holds more than ``max_wal_bytes`` (one ``stat``, ~2 µs).

        The file's size measures what the WAL holds: a WAL that starts over is written from its
        beginning, and its first commit cuts a file longer than the writer's
        ``journal_size_limit`` (at most ``max_wal_bytes``) back to that limit.
        """
        try:
            return os.stat(self._wal_path).st_size > self.max_wal_bytes
        except OSError:
            return False  # no WAL yet: nothing to bound

    def restart(self, conn: sqlite3.Connection) -> None:
        """Run ``PRAGMA wal_checkpoint(RESTART)`` on the writer's ``conn`` (on its thread, between
        its transactions), so that its next commit starts the WAL over.

        It waits for a checkpoint the thread is running. With the writer's busy timeout of 0 it
        never waits for another process or a reader: if one is in the way, the WAL is not
        started over this time and the writer tries again before its next commit.
        """
        with self.lock:
            try:
                row = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            except sqlite3.Error:
                return  # locked: the next commit tries again; nothing is lost
            if row[0] == 0 and row[1] == row[2]:
                self.completed += 1

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
                with self.lock:
                    try:
                        row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    except sqlite3.Error:
                        row = None  # busy or locked: the next poke tries again; nothing is lost
                    if row is not None and row[0] == 0 and row[1] == row[2]:
                        self.completed += 1  # all copied: the next commit may start the WAL over
                if self._stopping.is_set():
                    return
                # Let writes accumulate: fewer, larger checkpoints write each page once.
                self._stopping.wait(self._interval)
        finally:
            conn.close()
