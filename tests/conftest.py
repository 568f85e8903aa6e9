"""Shared test configuration. The repository root is on ``sys.path`` (``pythonpath`` in
pyproject.toml), so helpers are imported as ``tests.<dir>.<module>``."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from converge.store import Store
from tests.loop_clock import LoopClock
from tests.store.conformance import BACKENDS

# No property test is timed: an example's deadline (200 ms by default) and the check that
# examples are generated quickly fail on a busy machine, and say nothing about converge. The
# per-test timeout (pyproject.toml) still ends a hang.
settings.register_profile("converge", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("converge")


@pytest.fixture(params=list(BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh, open store on each backend (``memory``, ``sqlite``), closed afterwards."""
    opened = await BACKENDS[request.param](tmp_path)
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
async def loop_clock(monkeypatch: pytest.MonkeyPatch) -> LoopClock:
    """The test's event loop reads its time from a ``LoopClock`` the test moves forward."""
    loop = asyncio.get_running_loop()
    clock = LoopClock(loop.time)
    monkeypatch.setattr(loop, "time", clock.time)
    return clock


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``browser`` need a ``chromium`` binary and Playwright (in ``dev``) to drive
    it: skipped, with the reason, where either is missing — unless
    ``CONVERGE_REQUIRE_BROWSER=1`` (CI sets it and installs chromium): then they run, and fail
    for want of them."""
    if os.environ.get("CONVERGE_REQUIRE_BROWSER") == "1":
        return
    missing = [
        why
        for why, absent in (
            ("no chromium binary on PATH", shutil.which("chromium") is None),
            ("Playwright is not installed", importlib.util.find_spec("playwright") is None),
        )
        if absent
    ]
    if not missing:
        return
    for item in items:
        if item.get_closest_marker("browser") is not None:
            item.add_marker(pytest.mark.skip(reason="; ".join(missing)))
