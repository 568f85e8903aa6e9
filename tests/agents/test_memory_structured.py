"""Structured memory: schema-checked records, persisted, with no lost update under concurrency."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pytest

from converge.agents.memory import StructuredMemory
from converge.errors import ConflictError, ValidationError
from converge.store import SQLiteStore, Store


class Profile(msgspec.Struct, frozen=True):
    name: str
    age: Annotated[int, msgspec.Meta(ge=0)]
    visits: int = 0
    tags: list[str] = msgspec.field(default_factory=list)


PROFILE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "age": {"type": "integer", "minimum": 0},
        "visits": {"type": "integer"},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "plan": {"enum": ["free", "pro"]},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


async def test_struct_records_round_trip(store: Store) -> None:
    profiles = StructuredMemory(store, "profiles", Profile)
    version = await profiles.put("u1", Profile("Ada", 36, tags=["math"]))
    assert version == 1
    assert await profiles.get("u1") == Profile("Ada", 36, tags=["math"])
    await profiles.put("u2", {"name": "Alan", "age": 41})  # a dict of the fields also does
    assert await profiles.items() == [
        ("u1", Profile("Ada", 36, tags=["math"])),
        ("u2", Profile("Alan", 41)),
    ]
    assert await profiles.get("nobody") is None


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"name": "Ada", "age": "old"}, "age"),
        ({"name": "Ada", "age": -1}, "age"),
        ({"age": 3}, "name"),
        ({"name": "Ada", "age": 3, "tags": ["ok", 7]}, "tags[1]"),
    ],
)
async def test_a_bad_struct_record_is_refused_naming_the_field(
    store: Store, bad: dict[str, Any], field: str
) -> None:
    profiles = StructuredMemory(store, "profiles", Profile)
    with pytest.raises(ValidationError) as err:
        await profiles.put("u1", bad)
    assert err.value.field == field
    assert await profiles.get("u1") is None  # nothing was written


async def test_a_struct_instance_built_with_wrong_types_is_refused(store: Store) -> None:
    profiles = StructuredMemory(store, "profiles", Profile)
    with pytest.raises(ValidationError) as err:
        await profiles.put("u1", Profile("Ada", "old"))  # type: ignore[arg-type]
    assert err.value.field == "age"


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"name": "Ada"}, "age"),
        ({"name": "Ada", "age": 2.5}, "age"),
        ({"name": "", "age": 2}, "name"),
        ({"name": "Ada", "age": -3}, "age"),
        ({"name": "Ada", "age": 3, "address": {}}, "address.city"),
        ({"name": "Ada", "age": 3, "address": {"city": 5}}, "address.city"),
        ({"name": "Ada", "age": 3, "tags": ["a", 1]}, "tags[1]"),
        ({"name": "Ada", "age": 3, "tags": ["a", "b", "c", "d"]}, "tags"),
        ({"name": "Ada", "age": 3, "plan": "gold"}, "plan"),
        ({"name": "Ada", "age": 3, "nick": "A"}, "nick"),
        ({"name": "Ada", "age": True}, "age"),
    ],
)
async def test_a_json_schema_refusal_names_the_field(
    store: Store, bad: dict[str, Any], field: str
) -> None:
    profiles = StructuredMemory(store, "profiles", PROFILE_SCHEMA)
    with pytest.raises(ValidationError) as err:
        await profiles.put("u1", bad)
    assert err.value.field == field
    assert field in str(err.value)
    assert await profiles.get("u1") is None


async def test_json_schema_records_are_dicts(store: Store) -> None:
    profiles = StructuredMemory(store, "profiles", PROFILE_SCHEMA)
    record = {"name": "Ada", "age": 36, "address": {"city": "London"}, "plan": "pro"}
    await profiles.put("u1", record)
    assert await profiles.get("u1") == record


def test_an_unsupported_json_schema_keyword_is_refused_up_front(store: Store) -> None:
    with pytest.raises(ValidationError) as err:
        StructuredMemory(store, "p", {"type": "object", "properties": {"a": {"oneOf": []}}})
    assert err.value.field == "schema.properties.a.oneOf"
    with pytest.raises(ValidationError):
        StructuredMemory(store, "p", {"type": "thing"})
    with pytest.raises(ValidationError) as err:
        StructuredMemory(store, "p", int)  # type: ignore[call-overload]
    assert err.value.field == "schema"


async def test_concurrent_updates_lose_no_update(store: Store) -> None:
    profiles = StructuredMemory(store, "profiles", Profile)
    await profiles.put("u1", Profile("Ada", 36))
    n = 20
    # Every writer reads the same version before any of them writes: all but one must conflict
    # on their first try, so a lost update would show.
    all_read = asyncio.Barrier(n)
    first_tries: set[int] = set()

    def writer(i: int) -> Any:
        async def visit(p: Profile | None) -> Profile:
            assert p is not None
            if i not in first_tries:
                first_tries.add(i)
                await all_read.wait()
            return msgspec.structs.replace(p, visits=p.visits + 1)

        return visit

    # Separate objects, as separate agents would have.
    await asyncio.gather(
        *(StructuredMemory(store, "profiles", Profile).update("u1", writer(i)) for i in range(n))
    )
    record, version = await profiles.get_versioned("u1")
    assert record is not None and record.visits == n
    assert version == n + 1


async def test_update_of_an_absent_record_and_async_changes(store: Store) -> None:
    profiles = StructuredMemory(store, "profiles", PROFILE_SCHEMA)

    async def create(current: dict[str, Any] | None) -> dict[str, Any]:
        return current or {"name": "New", "age": 0}

    assert await profiles.update("u9", create) == {"name": "New", "age": 0}
    with pytest.raises(ValidationError):
        await profiles.update("u9", lambda p: {**(p or {}), "age": -1})
    assert await profiles.get("u9") == {"name": "New", "age": 0}


async def test_expected_version_guards_a_write_and_a_delete(store: Store) -> None:
    profiles = StructuredMemory(store, "profiles", Profile)
    await profiles.put("u1", Profile("Ada", 36), expected_version=0)
    with pytest.raises(ConflictError):
        await profiles.put("u1", Profile("Eve", 1), expected_version=0)
    with pytest.raises(ConflictError):
        await profiles.delete("u1", expected_version=7)
    assert await profiles.delete("u1", expected_version=1)
    assert await profiles.get("u1") is None
    assert not await profiles.delete("u1")


async def test_records_survive_reopening_the_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "structured.db"
    async with await SQLiteStore.open(path) as store:
        await StructuredMemory(store, "profiles", Profile).put("u1", Profile("Ada", 36))
    async with await SQLiteStore.open(path) as store:
        profiles = StructuredMemory(store, "profiles", Profile)
        assert await profiles.get_versioned("u1") == (Profile("Ada", 36), 1)
        assert await profiles.ids() == ["u1"]
        assert await StructuredMemory(store, "other", Profile).ids() == []


async def test_writes_are_events_without_the_content(store: Store) -> None:
    profiles = StructuredMemory(store, "profiles", Profile, actor="did:key:z6Mk")
    await profiles.put("u1", Profile("Secret Name", 36))
    events = await store.read(kinds=["memory.structured.written"])
    assert [(e.subject, e.actor, e.data["version"]) for e in events] == [
        ("memory/structured/profiles/u1", "did:key:z6Mk", 1)
    ]
    assert "Secret Name" not in repr(events)
