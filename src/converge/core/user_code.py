"""Users' code: what it raises is its failure, not the process's stop.

converge runs other people's code — a node's agent, a team member, a fallback, a replacement
node, a tool, an agent's ``decide()``, a board worker's function — and what that code raises is
that code's failure, whatever its type (an agent must not be able to end the process or leave
its run unrecorded):
``sys.exit()``, ``raise KeyboardInterrupt``, ``GeneratorExit`` or a ``BaseExceptionGroup`` from
its own task group fail it like any ``Exception``, and never stop the process or the run.
``is_interruption`` tells apart what is *not* the code's but the process's own stop, which must
go on:

- a cancellation (``asyncio.CancelledError``): the task running the code is being stopped
  (``asyncio.run``'s first Ctrl-C cancels the main task this way);
- what a signal handler raised: Ctrl-C pressed again under ``asyncio.run`` (its handler raises
  ``KeyboardInterrupt``), a ``SIGTERM`` handler calling ``sys.exit``. Told by the handler's
  frame in the traceback, which is there whatever code the signal interrupted;
- a ``KeyboardInterrupt`` raised on the main thread while Python's default ``SIGINT`` handler
  is installed (no ``asyncio.run``: a notebook, ``loop.run_until_complete``): that handler is
  C code and leaves no frame, so Ctrl-C cannot be told from the code's own ``raise`` and is
  taken for Ctrl-C. One raised in a worker thread is always the code's: signals are handled on
  the main thread only.

A group is an interruption if any exception in it is. An ``Exception`` never is: a signal
handler that raises one (an alarm raising ``TimeoutError``) fails the code, as before.

``call_in_thread`` runs a sync callable in a worker thread and raises what it raised in the
caller. A thread's ``StopIteration`` would otherwise never reach the caller (an asyncio future
refuses it, so the call never ends), and its ``GeneratorExit`` would close the caller's whole
task instead of reaching the frame that awaited it.

Under ``asyncio.run`` or an ``asyncio.Runner`` (the CLI, ``Graph.run_sync``) the first Ctrl-C
is a cancellation, so the rule is exact there. Known limit: a ``SystemExit`` or
``KeyboardInterrupt`` raised in a task an agent started itself stops asyncio's event loop
(asyncio's own rule for those two in any task). The run is still logged (``asyncio.run``'s
shutdown cancels it), and ``converge run`` exits 1 naming it (a ``KeyboardInterrupt`` there
reads as Ctrl-C: 130).

``WorkerThreads`` is the pool an engine runs plain ``def`` nodes in. ``loop.run_in_executor``
pays per call for a ``concurrent`` future chained to an asyncio one, a work item, a semaphore,
a thread woken long after it went to sleep, and the loop's own wake-up through its self-pipe
(``bench/bench_orchestration.py`` prints it as ``before``: 2-3x the cost of a step). What no
hand-off avoids is two thread wake-ups (the bench prints that floor beside its figures). So:
threads that stay, each with an inbox; a call goes to the thread that went idle last (still
warm), else a new thread up to ``max_threads``, else a backlog; its result comes back with
one ``call_soon_threadsafe``, or, when the loop had nothing else to do, straight to the
loop's thread waiting for it for at most ``window`` seconds with the GIL released. The code
never runs on the loop, and the loop is held at most ``window`` per call, only while idle;
calls that block overlap up to ``max_threads``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures.thread
import contextlib
import contextvars
import functools
import queue
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from types import CodeType, TracebackType
from typing import Any, TypeVar, cast

__all__ = ["WorkerThreads", "call_in_thread", "is_interruption"]

T = TypeVar("T")

# The frame a thread pool's worker runs a call in (``run_in_executor``, ``asyncio.to_thread``).
_EXECUTOR_WORKER = concurrent.futures.thread._WorkItem.run.__code__


def is_interruption(exc: BaseException) -> bool:
    """Whether ``exc`` is the process's own stop (a cancellation, or raised by a signal
    handler) rather than a failure of the code it came out of (see the module doc)."""
    if isinstance(exc, Exception):
        return False
    if isinstance(exc, asyncio.CancelledError):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(is_interruption(inner) for inner in exc.exceptions)
    codes = _frames(exc.__traceback__)
    if not _handler_codes().isdisjoint(codes):
        return True
    return (
        isinstance(exc, KeyboardInterrupt)
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        and _EXECUTOR_WORKER not in codes
        and _WORKER not in codes
    )


def _frames(tb: TracebackType | None) -> set[CodeType]:
    codes = set()
    while tb is not None:
        codes.add(tb.tb_frame.f_code)
        tb = tb.tb_next
    return codes


def _handler_codes() -> set[CodeType]:
    """The code of every signal handler installed now that is written in Python."""
    codes = set()
    for signum in signal.valid_signals():
        try:
            handler = signal.getsignal(signum)
        except (OSError, ValueError):  # pragma: no cover - a number the platform refuses
            continue
        while isinstance(handler, functools.partial):
            handler = handler.func
        handler = getattr(handler, "__func__", handler)  # a bound method's function
        code = getattr(handler, "__code__", None)
        if isinstance(code, CodeType):
            codes.add(code)
    return codes


async def call_in_thread(
    fn: Callable[..., T], /, *args: Any, executor: Executor | None = None, **kwargs: Any
) -> T:
    """``fn(*args, **kwargs)`` in a worker thread; what it raises is raised here.

    With ``executor``, the call runs there as ``loop.run_in_executor`` runs it; without, in the
    loop's default executor with the caller's context variables, as ``asyncio.to_thread``. A
    ``StopIteration`` comes out as Python turns one leaving a coroutine: a ``RuntimeError``
    whose cause it is.
    """
    loop = asyncio.get_running_loop()
    if executor is None:
        call = functools.partial(contextvars.copy_context().run, _carried, fn, args, kwargs)
    else:
        call = functools.partial(_carried, fn, args, kwargs)
    result = await loop.run_in_executor(executor, call)
    if type(result) is _Raised:
        raise result.error
    return result  # type: ignore[no-any-return]


class _Raised:
    """What a call in a thread raised that a future cannot carry to a coroutine."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _carried(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return fn(*args, **kwargs)
    except (StopIteration, GeneratorExit) as exc:
        return _Raised(exc)


class WorkerThreads:
    """Reused threads that run sync callables for event loops (see the module doc).

    ``await threads.run(fn, *args)`` is ``fn(*args)`` on one of at most ``max_threads``
    threads; what it raises is raised in the caller (``StopIteration`` as ``call_in_thread``
    carries it). A call never runs on the caller's loop. While its loop has nothing else to
    do (no callback ready, no timer due within ``window`` seconds), ``run`` waits for the
    result on the loop's thread for up to ``window`` (a thread's lock, the GIL released),
    which spares the loop's own wake-up; a call that takes longer is awaited as usual, and
    its callable is awaited from then on until a call of it returns within the window
    again. So the loop is held at most ``window`` per hand-off, and only when it was idle.
    ``run_timed`` always awaits: for a call under a deadline, which must fire on time.

    Cancelling the caller does not stop a call already running (no thread can be stopped):
    its result is dropped. ``close()`` lets running calls finish, cancels the calls still
    waiting for a thread and ends the idle threads; a closed pool refuses new calls with
    ``RuntimeError``, as a shut-down executor does.
    """

    def __init__(
        self, max_threads: int, *, name: str = "converge-worker", window: float = 0.0003
    ) -> None:
        if not isinstance(max_threads, int) or isinstance(max_threads, bool) or max_threads < 1:
            raise ValueError(f"max_threads must be an int >= 1, not {max_threads!r}")
        if not isinstance(window, int | float) or not 0 <= window <= 0.01:
            raise ValueError(f"window must be between 0 and 0.01 seconds, not {window!r}")
        self.max_threads = max_threads
        self.name = name
        self.window = float(window)
        self._lock = threading.Lock()
        # The inboxes of the threads waiting for a call, the most recently idle last: a call
        # goes to the thread that ran the previous one, still warm, not to one long asleep.
        self._idle: list[queue.SimpleQueue[_Job | None]] = []
        self._backlog: collections.deque[_Job] = collections.deque()  # calls no thread took yet
        self._threads: list[threading.Thread] = []
        self._slow: set[Any] = set()  # callables whose last call outlasted the window
        self._closed = False

    @property
    def threads(self) -> int:
        """How many threads the pool has now (started on demand, up to ``max_threads``)."""
        return sum(thread.is_alive() for thread in self._threads)

    async def run(self, fn: Callable[..., T], /, *args: Any) -> T:
        """``fn(*args)`` on a worker thread; its result, or what it raised, here."""
        loop = asyncio.get_running_loop()
        if self.window and _idle(loop, self.window) and self._fast(fn):
            waiter = _Waiter()
            future = self._put(loop, fn, args, waiter)
            if waiter.wait(self.window):
                result, error = waiter.result, waiter.error
                if error is not None:
                    raise error
                return cast(T, _unwrap(result))
            if len(self._slow) >= _MAX_SLOW:
                self._slow.clear()
            self._slow.add(fn)
        else:
            future = self._put(loop, fn, args, None)
        return cast(T, _unwrap(await future))

    def _fast(self, fn: Callable[..., Any]) -> bool:
        """Whether a call of ``fn`` is worth waiting for on the loop's thread: its last call
        returned within the window (an unhashable callable is never waited for)."""
        try:
            return fn not in self._slow
        except TypeError:
            return False

    async def run_timed(self, fn: Callable[..., T], /, *args: Any) -> T:
        """``run`` for a call under a deadline: always awaited, so the deadline fires on time."""
        return cast(T, _unwrap(await self._put(asyncio.get_running_loop(), fn, args, None)))

    def _put(
        self,
        loop: asyncio.AbstractEventLoop,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        waiter: _Waiter | None,
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = loop.create_future()
        job = (loop, future, fn, args, waiter)
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot run new calls after close()")
            if self._idle:
                self._idle.pop().put(job)
            elif len(self._threads) < self.max_threads:
                inbox: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
                inbox.put(job)
                thread = threading.Thread(
                    target=self._work,
                    args=(inbox,),
                    name=f"{self.name}-{len(self._threads)}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)
            else:
                self._backlog.append(job)
        return future

    def _work(self, inbox: queue.SimpleQueue[_Job | None]) -> None:
        lock, backlog, slow, window = self._lock, self._backlog, self._slow, self.window
        clock = time.perf_counter
        job = inbox.get()
        while job is not None:
            loop, future, fn, args, waiter = job
            began = clock()
            try:
                result, error = fn(*args), None
            except (StopIteration, GeneratorExit) as exc:  # a future refuses these
                result, error = _Raised(exc), None
            except BaseException as exc:  # the caller's to judge (is_interruption)
                result, error = None, exc
            if slow and clock() - began < window:
                with contextlib.suppress(TypeError):
                    slow.discard(fn)
            del fn, args
            with lock:  # idle before the caller wakes: its next call finds this thread
                if backlog:
                    job = backlog.popleft()
                elif self._closed:
                    job = None
                else:
                    self._idle.append(inbox)
                    job = _WAIT
            # The last thing before waiting: the woken loop then finds the GIL free.
            if waiter is None or not waiter.give(result, error):
                _settle_soon(loop, future, result, error)
            del loop, future, result, error, waiter  # nothing of the call outlives it
            if job is _WAIT:
                job = inbox.get()

    def close(self) -> None:
        """Stop taking calls; cancel those waiting for a thread; end the threads once their
        running call returns. Idempotent; does not wait."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            while self._backlog:
                loop, future, *_ = self._backlog.popleft()
                _cancel_soon(loop, future)
            while self._idle:
                self._idle.pop().put(None)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.threads}/{self.max_threads} threads"
        return f"WorkerThreads({self.name!r}, {state})"


_WAIT: Any = object()
"""What a thread that went idle takes next: whatever its inbox is given."""

_MAX_SLOW = 1024
"""Callables remembered as slow; past that the memory starts over."""


def _idle(loop: asyncio.AbstractEventLoop, window: float) -> bool:
    """Whether ``loop`` has nothing to do for ``window`` seconds: no callback ready, no timer
    due. Read from the standard loop's own queues; a loop without them (uvloop) never is."""
    ready = getattr(loop, "_ready", None)
    if ready is None or ready:
        return False
    scheduled = getattr(loop, "_scheduled", None)
    if scheduled is None:
        return False
    return not scheduled or scheduled[0].when() - loop.time() > window


def _unwrap(result: Any) -> Any:
    if type(result) is _Raised:
        raise result.error
    return result


class _Waiter:
    """A call's result handed to a caller waiting on its thread, or, once the caller stopped
    waiting, to its future instead: whichever of ``wait`` giving up and ``give`` comes first
    decides, under ``_state``."""

    __slots__ = ("_done", "_state", "_taken", "error", "result")

    def __init__(self) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        self._state = threading.Lock()
        self._taken = False
        self.result: Any = None
        self.error: BaseException | None = None

    def wait(self, timeout: float) -> bool:
        """Whether the result came within ``timeout`` (else it will go to the future)."""
        if self._done.acquire(timeout=timeout):
            return True
        with self._state:
            if self._taken:  # given just now
                return True
            self._taken = True
            return False

    def give(self, result: Any, error: BaseException | None) -> bool:
        """Hand the result over; False if the caller stopped waiting (use the future)."""
        with self._state:
            if self._taken:
                return False
            self._taken = True
            self.result, self.error = result, error
        self._done.release()
        return True


_Job = tuple[
    asyncio.AbstractEventLoop,
    "asyncio.Future[Any]",
    Callable[..., Any],
    tuple[Any, ...],
    _Waiter | None,
]


def _settle_soon(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: Any,
    error: BaseException | None,
) -> None:
    try:
        loop.call_soon_threadsafe(_settle, future, result, error)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled meanwhile
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def _cancel_soon(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:
    try:
        loop.call_soon_threadsafe(future.cancel)
    except RuntimeError:  # the loop is closed
        pass


# The frame a ``WorkerThreads`` thread runs a call in.
_WORKER = WorkerThreads._work.__code__
