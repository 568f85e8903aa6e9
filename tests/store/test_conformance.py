"""Runs the store conformance suite against every backend in ``BACKENDS``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from converge.store import Store
from tests.store.board_conformance import BoardConformance
from tests.store.conformance import BACKENDS, StoreConformance


@pytest.fixture(params=list(BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened = await BACKENDS[request.param](tmp_path)
    try:
        yield opened
    finally:
        await opened.aclose()


def test_memory_and_sqlite_are_in_the_suite() -> None:
    assert {"memory", "sqlite"} <= set(BACKENDS)


class TestStoreConformance(StoreConformance):
    """The suite, once per backend."""


class TestBoardConformance(BoardConformance):
    """The task-board part of the suite, once per backend."""
