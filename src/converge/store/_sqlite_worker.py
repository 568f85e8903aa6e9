"""A thread that owns one ``sqlite3`` connection, running batches.

A thread that owns one ``sqlite3`` connection and runs jobs for an event loop, in batches.

The loop side puts jobs on a ``queue.SimpleQueue`` (no lock, no wake-up call per job). The thread
takes every job waiting, runs the whole batch, and hands all the results back to the loop with a
single ``call_soon_threadsafe``: one thread hop per batch in each direction, never one per job.
While a batch runs, new jobs queue up and form the next batch — that is the group commit.

``idle_connection()`` lends the thread's connection to the loop while nothing is queued or
running on the thread (the loop counts the jobs it has submitted and not yet seen resolved), so
an owner may run a small job inline where two thread wake-ups would cost more than the job.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["BatchWorker", "Job", "resolve"]

JobResult = tuple[asyncio.Future[Any], BaseException | None, Any]


class Job:
    """Work for the thread: ``payload`` is interpreted by the worker's ``run_batch``."""

    __slots__ = ("future", "payload")

    def __init__(self, future: asyncio.Future[Any], payload: Any) -> None:
        self.future = future
        self.payload = payload


_STOP = object()


class BatchWorker:
    """Runs ``run_batch(conn, jobs) -> outcomes`` on a dedicated thread.

    Args:
        name: the thread's name.
        connect: opens the thread's connection (called on the thread).
        run_batch: runs a list of jobs and returns one (future, error, result) per job.
        loop: the event loop whose futures the jobs resolve.
    """

    def __init__(
        self,
        name: str,
        connect: Callable[[], sqlite3.Connection],
        run_batch: Callable[[sqlite3.Connection, list[Job]], list[JobResult]],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._connect = connect
        self._run_batch = run_batch
        self._loop = loop
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stopped: asyncio.Future[None] = loop.create_future()
        self._conn: sqlite3.Connection | None = None
        self._outstanding = 0  # jobs submitted and not yet resolved (touched on the loop only)
        self._stopping = False
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def submit(self, payload: Any) -> asyncio.Future[Any]:
        """Queue a job; the returned future resolves on the loop when its batch is done."""
        fut = self._loop.create_future()
        self._outstanding += 1
        self._queue.put(Job(fut, payload))
        return fut

    def submit_jobs(self, jobs: list[Job]) -> None:
        """Queue jobs made by the caller, in order (their futures resolve as ``submit``'s do)."""
        self._outstanding += len(jobs)
        for job in jobs:
            self._queue.put(job)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop whose futures the jobs resolve."""
        return self._loop

    @property
    def busy(self) -> bool:
        """Whether jobs are queued or running on the thread, or it is stopping."""
        return bool(self._outstanding) or self._stopping

    def idle_connection(self) -> sqlite3.Connection | None:
        """The thread's connection if the thread has nothing to do and will not touch it until
        the next ``submit`` (call on the loop; use it before yielding to the loop), else None."""
        if self._outstanding or self._stopping:
            return None
        return self._conn

    async def stop(self) -> None:
        """Finish every queued job, close the connection and end the thread."""
        self._stopping = True
        self._queue.put(_STOP)
        await asyncio.shield(self._stopped)
        self._thread.join()

    def _main(self) -> None:
        conn: sqlite3.Connection | None = None
        connect_error: BaseException | None = None
        try:
            conn = self._connect()
        except BaseException as exc:  # delivered to every job below
            connect_error = exc
        # Published to the loop by the first batch's call_soon_threadsafe, before any
        # idle_connection() can see no job outstanding.
        self._conn = conn
        try:
            while True:
                item = self._queue.get()
                stop = item is _STOP
                batch: list[Job] = [] if stop else [item]
                while not stop:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                    else:
                        batch.append(item)
                if batch:
                    if conn is None:
                        assert connect_error is not None
                        outcomes: list[JobResult] = [(j.future, connect_error, None) for j in batch]
                    else:
                        try:
                            outcomes = self._run_batch(conn, batch)
                        except Exception as exc:  # a bug must fail its batch, not the thread
                            outcomes = [(j.future, exc, None) for j in batch]
                    self._deliver(outcomes)
                if stop:
                    break
        finally:
            if conn is not None:
                conn.close()
            self._call(self._resolve_stopped)

    def _deliver(self, outcomes: list[JobResult]) -> None:
        self._call(self._resolve, outcomes)

    def _resolve(self, outcomes: list[JobResult]) -> None:
        self._outstanding -= len(outcomes)
        resolve(outcomes)

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            # The loop is closed: nobody is waiting for these results any more.
            pass

    def _resolve_stopped(self) -> None:
        if not self._stopped.done():
            self._stopped.set_result(None)


def resolve(outcomes: list[JobResult]) -> None:
    """Settle each future with its error or result (one already cancelled is skipped)."""
    for fut, error, result in outcomes:
        if fut.done():  # the caller was cancelled; the work itself still happened
            continue
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result)
