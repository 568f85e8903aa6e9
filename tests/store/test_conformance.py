"""Runs the store conformance suite against every backend in ``BACKENDS`` (through the ``store``
fixture of tests/conftest.py)."""

from __future__ import annotations

from tests.store.board_conformance import BoardConformance
from tests.store.conformance import BACKENDS, StoreConformance


def test_memory_and_sqlite_are_in_the_suite() -> None:
    assert {"memory", "sqlite"} <= set(BACKENDS)


class TestStoreConformance(StoreConformance):
    """The suite, once per backend."""


class TestBoardConformance(BoardConformance):
    """The task-board part of the suite, once per backend."""
