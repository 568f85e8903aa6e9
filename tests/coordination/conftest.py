"""A manual clock at a fixed time (the ``store`` fixture comes from tests/conftest.py)."""

from __future__ import annotations

import pytest

from converge.core.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_800_000_000.0)
