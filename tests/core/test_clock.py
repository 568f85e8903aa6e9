"""Injected time: the manual clock tests use instead of sleeping."""

from __future__ import annotations

import asyncio
import time

import pytest

from converge.core import Clock, ManualClock, SystemClock, system_clock


def test_clocks_satisfy_the_protocol() -> None:
    assert isinstance(system_clock, Clock)
    assert isinstance(SystemClock(), Clock)
    assert isinstance(ManualClock(), Clock)


def test_system_clock_reads_the_wall_clock() -> None:
    before = time.time()
    now = system_clock.now()
    assert before <= now <= time.time()


def test_manual_clock_moves_only_forward_and_only_when_told() -> None:
    clock = ManualClock(100.0)
    assert clock.now() == 100.0
    assert clock.now() == 100.0
    clock.advance(2.5)
    assert clock.now() == 102.5
    clock.set(200.0)
    assert clock.now() == 200.0
    with pytest.raises(ValueError):
        clock.set(199.0)
    with pytest.raises(ValueError):
        clock.advance(-1)
    assert clock.now() == 200.0


async def test_sleepers_wake_when_time_passes_their_deadline() -> None:
    clock = ManualClock(0.0)
    short = asyncio.ensure_future(clock.sleep(5))
    long = asyncio.ensure_future(clock.sleep(10))
    await asyncio.sleep(0)  # let both register
    assert clock.sleepers == 2
    clock.advance(4.999)
    await asyncio.sleep(0)
    assert not short.done()
    clock.advance(0.001)
    await short
    assert not long.done()
    assert clock.sleepers == 1
    clock.set(10.0)
    await long
    assert clock.sleepers == 0


async def test_cancelled_sleeper_is_forgotten() -> None:
    clock = ManualClock(0.0)
    sleeper = asyncio.ensure_future(clock.sleep(5))
    await asyncio.sleep(0)
    sleeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeper
    assert clock.sleepers == 0
    clock.advance(10)  # waking a cancelled future must not raise


async def test_non_positive_sleep_returns_at_once() -> None:
    clock = ManualClock(0.0)
    await clock.sleep(0)
    await clock.sleep(-1)
    assert clock.now() == 0.0
