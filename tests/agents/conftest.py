"""Fixtures for the LLM tests: a local server speaking the providers' APIs, each provider
pointed at it through its real SDK, and a context that records what an agent reports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from converge.agents.llm.testing import FakeLLMServer
from tests.agents._llm_helpers import PROVIDERS, Ctx, Sleeps, make_provider


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as running:
        yield running


@pytest.fixture(params=PROVIDERS)
async def provider(request: pytest.FixtureRequest, server: FakeLLMServer) -> AsyncIterator[Any]:
    made = make_provider(request.param, server)
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture
def ctx() -> Ctx:
    return Ctx()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()
