"""Stores on each backend and a manual clock near the real time (messages carry timestamps)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from converge.core.clock import ManualClock
from converge.store import Store
from tests.store.conformance import BACKENDS


@pytest.fixture(params=list(BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened = await BACKENDS[request.param](tmp_path)
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(time.time())
