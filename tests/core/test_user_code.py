"""Whose stop is it: a user's code's own BaseException is its failure; a cancellation, or what a
signal handler raised, is the process's (``converge.core.user_code``)."""

from __future__ import annotations

import asyncio
import contextvars
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest

from converge.core.user_code import call_in_thread, is_interruption


def caught(fn: Callable[[], Any]) -> BaseException:
    try:
        fn()
    except BaseException as exc:
        return exc
    raise AssertionError("nothing raised")


def sys_exit() -> None:
    sys.exit(0)


def keyboard_interrupt() -> None:
    raise KeyboardInterrupt


@contextmanager
def handler(signum: int, fn: Any) -> Iterator[None]:
    previous = signal.signal(signum, fn)
    try:
        yield
    finally:
        signal.signal(signum, previous)


def raising(exc: type[BaseException]) -> Callable[[int, Any], None]:
    def on_signal(signum: int, frame: Any) -> None:
        raise exc

    return on_signal


def test_what_code_raises_itself_is_its_failure() -> None:
    # A Python SIGINT handler is installed (as asyncio.run installs one): a KeyboardInterrupt
    # that no handler raised is the code's.
    with handler(signal.SIGINT, raising(KeyboardInterrupt)):
        for fn in (sys_exit, keyboard_interrupt):
            assert not is_interruption(caught(fn))
    assert not is_interruption(GeneratorExit())
    assert not is_interruption(ValueError("x"))
    assert not is_interruption(BaseExceptionGroup("own", [GeneratorExit(), SystemExit(1)]))
    assert not is_interruption(ExceptionGroup("own", [ValueError()]))


def test_a_cancellation_is_the_process_own() -> None:
    assert is_interruption(asyncio.CancelledError())
    assert is_interruption(BaseExceptionGroup("g", [ValueError(), asyncio.CancelledError()]))


def test_what_a_signal_handler_raised_is_the_process_own_wherever_it_lands() -> None:
    with handler(signal.SIGUSR1, raising(KeyboardInterrupt)):
        ctrl_c = caught(lambda: signal.raise_signal(signal.SIGUSR1))
    with handler(signal.SIGUSR2, raising(SystemExit)):
        term = caught(lambda: signal.raise_signal(signal.SIGUSR2))
        assert is_interruption(term)
        assert is_interruption(BaseExceptionGroup("g", [term]))
    # Judged by the handler installed now: asyncio.run's, say, once it is gone, is not.
    assert not is_interruption(term)
    with handler(signal.SIGUSR1, raising(KeyboardInterrupt)):
        assert is_interruption(ctrl_c)


def test_python_default_ctrl_c_handler_leaves_a_main_thread_keyboard_interrupt_ambiguous() -> None:
    with handler(signal.SIGINT, signal.default_int_handler):
        # Raised on the main thread: Ctrl-C raises exactly this, so it is taken for Ctrl-C.
        assert is_interruption(caught(keyboard_interrupt))
        assert not is_interruption(caught(sys_exit))

        # Raised in a worker thread: signals never land there, so it is the code's.
        async def in_thread() -> BaseException:
            try:
                await asyncio.to_thread(keyboard_interrupt)
            except KeyboardInterrupt as exc:
                return exc
            raise AssertionError("nothing raised")

        assert not is_interruption(asyncio.run(in_thread()))


async def test_call_in_thread_raises_stop_iteration_as_a_coroutine_would() -> None:
    def exhausted() -> Any:
        return next(iter(()))

    # A thread's StopIteration cannot be set on an asyncio future: the call used never to end.
    async with asyncio.timeout(10):
        with pytest.raises(RuntimeError, match="StopIteration") as info:
            await call_in_thread(exhausted)
    assert isinstance(info.value.__cause__, StopIteration)


async def test_call_in_thread_raises_generator_exit_in_the_frame_that_awaits() -> None:
    def close() -> None:
        raise GeneratorExit

    after: list[str] = []

    async def caller() -> str:
        try:
            await call_in_thread(close)
        except GeneratorExit:
            # Awaited directly, a future's GeneratorExit closes the whole task instead, and
            # a frame that goes on awaiting after it raises RuntimeError.
            await asyncio.sleep(0)
            after.append("went on")
            return "caught"
        return "nothing"

    assert await asyncio.create_task(caller()) == "caught"
    assert after == ["went on"]


async def test_call_in_thread_runs_in_the_executor_or_with_the_callers_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("caller")
    assert await call_in_thread(var.get) == "caller"
    assert await call_in_thread(lambda a, b=0: a + b, 2, b=3) == 5
    with ThreadPoolExecutor(1, thread_name_prefix="given") as pool:
        name = await call_in_thread(lambda: threading.current_thread().name, executor=pool)
    assert name.startswith("given")
