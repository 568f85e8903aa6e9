"""Shared test configuration. The repository root is on ``sys.path`` (``pythonpath`` in
pyproject.toml), so helpers are imported as ``tests.<dir>.<module>``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from converge.store import Store
from tests.store.conformance import BACKENDS


@pytest.fixture(params=list(BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh, open store on each backend (``memory``, ``sqlite``), closed afterwards."""
    opened = await BACKENDS[request.param](tmp_path)
    try:
        yield opened
    finally:
        await opened.aclose()
