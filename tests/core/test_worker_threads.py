"""``WorkerThreads`` (``converge.core.user_code``): the threads plain ``def`` nodes run in."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from converge.core.user_code import WorkerThreads, is_interruption


def double(x: int) -> int:
    return 2 * x


class Unhashable:
    __hash__ = None  # type: ignore[assignment]

    def __call__(self) -> int:
        return 1


async def test_a_call_runs_on_a_worker_thread_and_returns_its_result() -> None:
    threads = WorkerThreads(2)
    loop_thread = threading.get_ident()
    try:
        assert await threads.run(double, 21) == 42
        assert await threads.run(threading.get_ident) != loop_thread
        assert await threads.run_timed(double, 4) == 8
    finally:
        threads.close()


async def test_what_a_call_raises_is_raised_in_the_caller() -> None:
    def fail() -> None:
        raise ValueError("bad input")

    def stop() -> None:
        raise StopIteration

    def interrupt() -> None:
        raise KeyboardInterrupt

    threads = WorkerThreads(1)
    try:
        with pytest.raises(ValueError, match="bad input"):
            await threads.run(fail)
        with pytest.raises(ValueError, match="bad input"):
            await threads.run_timed(fail)
        # A future refuses StopIteration: it comes out as Python turns one leaving a coroutine.
        with pytest.raises(RuntimeError) as stopped:
            await threads.run(stop)
        assert isinstance(stopped.value.__cause__, StopIteration)
        # Raised by the code in a worker thread: the code's failure, not a Ctrl-C.
        with pytest.raises(KeyboardInterrupt) as raised:
            await threads.run(interrupt)
        assert not is_interruption(raised.value)
    finally:
        threads.close()


async def test_threads_are_reused_and_bounded() -> None:
    threads = WorkerThreads(3)
    try:
        for i in range(200):
            assert await threads.run(double, i) == 2 * i
        assert threads.threads == 1  # one call at a time: one thread, reused
        release = threading.Event()
        started = threading.Semaphore(0)

        def block() -> int:
            started.release()
            release.wait(10)
            return 1

        calls = [asyncio.create_task(threads.run_timed(block)) for _ in range(5)]
        for _ in range(3):  # three run at once (the bound), the others wait for a thread
            assert await asyncio.to_thread(started.acquire, True, 10)
        assert not started.acquire(timeout=0.05)
        assert threads.threads == 3
        release.set()
        assert await asyncio.gather(*calls) == [1] * 5
        assert threads.threads == 3
    finally:
        threads.close()


async def test_blocking_calls_overlap_and_the_loop_keeps_running() -> None:
    threads = WorkerThreads(4)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    ticker = asyncio.create_task(tick())
    try:
        began = time.monotonic()
        await asyncio.gather(*(threads.run(time.sleep, 0.3) for _ in range(4)))
        # Four 0.3 s sleeps at once: far less than their 1.2 s in a row, however slow the box.
        assert time.monotonic() - began < 1.1
        assert ticks >= 5  # the loop went on while they slept
    finally:
        ticker.cancel()
        threads.close()


async def test_a_slow_callable_is_awaited_not_waited_for() -> None:
    threads = WorkerThreads(1, window=0.001)
    try:
        await threads.run(time.sleep, 0.05)  # outlasts the window: remembered as slow
        assert not threads._fast(time.sleep)
        await threads.run(time.sleep, 0)  # returns within the window: fast again
        assert threads._fast(time.sleep)
        unhashable = Unhashable()
        assert await threads.run(unhashable) == 1  # runs, never waited for on the loop
        assert not threads._fast(unhashable)
    finally:
        threads.close()


async def test_a_cancelled_caller_leaves_the_call_to_finish_and_drops_its_result() -> None:
    threads = WorkerThreads(1)
    done = threading.Event()

    def slow() -> int:
        time.sleep(0.2)
        done.set()
        return 1

    try:
        call = asyncio.create_task(threads.run_timed(slow))
        await asyncio.sleep(0.02)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert await asyncio.to_thread(done.wait, 10)
        assert await threads.run(double, 1) == 2  # the thread is free again
    finally:
        threads.close()


async def test_close_cancels_waiting_calls_ends_threads_and_refuses_new_calls() -> None:
    threads = WorkerThreads(1)
    release = threading.Event()
    running = asyncio.create_task(threads.run_timed(release.wait, 10))
    await asyncio.sleep(0.05)
    waiting = asyncio.create_task(threads.run_timed(double, 1))
    await asyncio.sleep(0.01)
    threads.close()
    threads.close()  # idempotent
    with pytest.raises(asyncio.CancelledError):
        await waiting
    release.set()
    assert await running is True  # a running call finishes
    with pytest.raises(RuntimeError, match="after close"):
        await threads.run(double, 1)
    for _ in range(200):
        if threads.threads == 0:
            break
        await asyncio.sleep(0.01)
    assert threads.threads == 0
    assert "closed" in repr(threads)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="max_threads"):
        WorkerThreads(0)
    with pytest.raises(ValueError, match="max_threads"):
        WorkerThreads(True)
    with pytest.raises(ValueError, match="window"):
        WorkerThreads(1, window=1.0)
