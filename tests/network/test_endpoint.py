"""Endpoints and the static resolver: what parses, what is refused, what is found."""

from __future__ import annotations

import pytest

from converge.errors import ValidationError
from converge.network import Endpoint, Resolver, StaticResolver


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("tcp://127.0.0.2:7400", ("tcp", "127.0.0.2", 7400)),
        ("ws://agents.example.org:80/", ("ws", "agents.example.org", 80)),
        ("wss://[::1]:443", ("wss", "::1", 443)),
        ("tls://host:1", ("tls", "host", 1)),
    ],
)
def test_an_endpoint_parses_from_its_url_and_prints_back(
    url: str, parts: tuple[str, str, int]
) -> None:
    endpoint = Endpoint.parse(url)
    assert (endpoint.scheme, endpoint.host, endpoint.port) == parts
    assert Endpoint.parse(endpoint.url) == endpoint
    assert Endpoint.parse(endpoint) is endpoint


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("http://127.0.0.1:80", "scheme"),
        ("tcp://127.0.0.1", "endpoint"),  # no port
        ("tcp://127.0.0.1:99999", "port"),
        ("tcp://127.0.0.1:0", "port"),
        ("tcp://127.0.0.1:80/path", "endpoint"),
        ("tcp://0.0.0.0:80", "host"),  # nobody can dial a wildcard
        ("tcp://[::]:80", "host"),
        ("127.0.0.1:80", "endpoint"),
    ],
)
def test_what_is_not_an_endpoint_is_a_validation_error(url: str, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Endpoint.parse(url)
    assert caught.value.field == field


async def test_the_static_resolver_finds_agents_and_lists_each_endpoint_once() -> None:
    here, there, listener = "tcp://127.0.0.2:1000", "tcp://127.0.0.3:1000", "tcp://127.0.0.4:9"
    resolver = StaticResolver({"did:key:a": here, "did:key:b": there}, peers=[listener, here])
    assert isinstance(resolver, Resolver)
    assert await resolver.resolve("did:key:a") == Endpoint.parse(here)
    assert await resolver.resolve("did:key:c") is None
    assert [e.url for e in await resolver.topic_endpoints("any")] == [here, there, listener]
    resolver.add("did:key:c", there)
    resolver.remove("did:key:a")
    resolver.remove("did:key:never")
    assert await resolver.resolve("did:key:a") is None
    assert await resolver.resolve("did:key:c") == Endpoint.parse(there)
    with pytest.raises(ValidationError):
        resolver.add("", here)
    with pytest.raises(ValidationError):
        resolver.add("did:key:d", "not an endpoint")
