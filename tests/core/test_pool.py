"""Pools: named groups of agents."""

from __future__ import annotations

import msgspec
import pytest

from converge.core import Pool, Task
from converge.errors import ValidationError


def test_pool_defaults_and_round_trip() -> None:
    pool = Pool(
        name="gpu workers",
        topics=("market.gpu",),
        required_capabilities=("gpu>=1",),
        admission={"kind": "allowlist", "members": ["did:key:z6Mka"]},
        governance={"kind": "dictatorial", "leader": "did:key:z6Mka"},
        max_members=10,
    )
    assert pool.id
    assert Pool(name="x").id != Pool(name="x").id
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(pool), type=Pool) == pool
    assert Task(objective="o", pool_id=pool.id).pool_id == pool.id


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "p", "id": ""}, "id"),
        ({"name": "p", "id": "has space"}, "id"),
        ({"name": "p", "id": "-leading"}, "id"),
        ({"name": "p", "max_members": 0}, "max_members"),
    ],
)
def test_invalid_pool(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Pool(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_unknown_fields_are_refused_when_decoding() -> None:
    with pytest.raises(msgspec.ValidationError, match="owner"):
        msgspec.json.decode(b'{"name": "p", "owner": "me"}', type=Pool)
