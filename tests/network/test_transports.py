"""Runs the transport conformance suite against every transport in ``TRANSPORTS``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from converge.network import Transport
from tests.network.transport_conformance import TRANSPORTS, TransportConformance


@pytest.fixture(params=list(TRANSPORTS))
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[Transport]:
    """A fresh, open transport of each kind, closed afterwards."""
    opened = await TRANSPORTS[request.param]()
    try:
        yield opened
    finally:
        await opened.aclose()


def test_the_local_network_is_in_the_suite() -> None:
    assert "local" in TRANSPORTS


class TestTransportConformance(TransportConformance):
    """The suite, once per transport."""
