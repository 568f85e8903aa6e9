"""A manual clock starting at the real time, since messages carry timestamps that replay guards
check (the ``store`` fixture comes from tests/conftest.py)."""

from __future__ import annotations

import time

import pytest

from converge.core.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(time.time())
