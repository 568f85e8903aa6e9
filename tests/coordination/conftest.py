"""A fresh store per test, on each backend, and a manual clock."""

from __future__ import annotations

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
    return ManualClock(1_800_000_000.0)
