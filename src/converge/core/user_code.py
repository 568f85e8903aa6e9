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

Under ``asyncio.run`` (the CLI, ``Graph.run_sync``) the first Ctrl-C is a cancellation, so the
rule is exact there. Known limit: a ``SystemExit`` or ``KeyboardInterrupt`` raised in a task an
agent started itself stops asyncio's event loop (asyncio's own rule for those two in any task).
The run is still logged (``asyncio.run``'s shutdown cancels it), and ``converge run`` exits 1
naming it (a ``KeyboardInterrupt`` there reads as Ctrl-C: 130).
"""

from __future__ import annotations

import asyncio
import concurrent.futures.thread
import contextvars
import functools
import signal
from collections.abc import Callable
from concurrent.futures import Executor
from types import CodeType, TracebackType
from typing import Any, TypeVar

__all__ = ["call_in_thread", "is_interruption"]

T = TypeVar("T")

# The frame a thread pool's worker runs a call in (``run_in_executor``, ``asyncio.to_thread``).
_WORKER = concurrent.futures.thread._WorkItem.run.__code__


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
