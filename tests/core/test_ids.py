"""Ids: 26-character, time-ordered, unique."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converge.core import IdFactory, new_id
from converge.core.ids import id_timestamp, is_id, new_ids
from converge.errors import ValidationError

MAX_MS = 2**48 - 1


def test_default_ids_have_the_documented_shape() -> None:
    value = new_id()
    assert len(value) == 26
    assert is_id(value)
    assert set(value) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def test_ids_are_unique_and_sorted_in_creation_order() -> None:
    ids = [new_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_ids_within_one_millisecond_still_sort_in_creation_order() -> None:
    make = IdFactory(time_ms=lambda: 1_700_000_000_000, rng=random.Random(7))
    ids = [make() for _ in range(10_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert {id_timestamp(i) for i in ids} == {1_700_000_000.0}


@settings(max_examples=100)
@given(st.lists(st.integers(min_value=0, max_value=MAX_MS), min_size=1, max_size=50))
def test_ids_increase_even_if_the_clock_stalls_or_goes_back(times: list[int]) -> None:
    clock = iter(times)
    make = IdFactory(time_ms=lambda: next(clock), rng=random.Random(0))
    ids = [make() for _ in times]
    assert all(a < b for a, b in pairwise(ids))
    assert all(is_id(i) for i in ids)


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=MAX_MS), st.integers(min_value=0, max_value=MAX_MS))
def test_id_order_follows_timestamp_order(t1: int, t2: int) -> None:
    a = IdFactory(time_ms=lambda: t1)()
    b = IdFactory(time_ms=lambda: t2)()
    assert id_timestamp(a) == t1 / 1000
    assert id_timestamp(b) == t2 / 1000
    if t1 < t2:
        assert a < b
    elif t1 > t2:
        assert a > b


def test_id_timestamp_of_a_fresh_id_is_now() -> None:
    make = IdFactory(time_ms=lambda: 1_234_567_890_123)
    assert id_timestamp(make()) == 1_234_567_890.123


def test_seeded_factories_are_reproducible() -> None:
    first = IdFactory(time_ms=lambda: 42, rng=random.Random(1))
    second = IdFactory(time_ms=lambda: 42, rng=random.Random(1))
    assert [first() for _ in range(5)] == [second() for _ in range(5)]


@pytest.mark.parametrize(
    "value",
    [
        "",
        "01ARZ3NDEKTSV4RRFFQ69G5FA",  # 25 characters
        "01ARZ3NDEKTSV4RRFFQ69G5FAVV",  # 27 characters
        "01arz3ndektsv4rrffq69g5fav",  # lower case
        "01ARZ3NDEKTSV4RRFFQ69G5FAI",  # I is not Crockford base32
        "01ARZ3NDEKTSV4RRFFQ69G5FAL",
        "01ARZ3NDEKTSV4RRFFQ69G5FAO",
        "01ARZ3NDEKTSV4RRFFQ69G5FAU",
        "81ARZ3NDEKTSV4RRFFQ69G5FAV",  # more than 48 bits of milliseconds
        "01ARZ3NDEKTSV4RRFFQ69G5FA-",
    ],
)
def test_is_id_rejects_other_strings(value: str) -> None:
    assert not is_id(value)
    with pytest.raises(ValueError):
        id_timestamp(value)


def test_is_id_accepts_a_ulid() -> None:
    assert is_id("01ARYZ6S41TSV4RRFFQ69G5FAV")
    # The example of the ULID spec: ulid(1469918176385) starts with 01ARYZ6S41.
    assert id_timestamp("01ARYZ6S41TSV4RRFFQ69G5FAV") == 1469918176.385


def test_the_timestamp_of_a_huge_non_id_is_refused_with_a_short_message() -> None:
    with pytest.raises(ValidationError) as info:
        id_timestamp("0" * 400_000)
    assert info.value.field == "id"
    assert len(str(info.value)) < 200


def test_take_makes_the_ids_as_many_calls_would() -> None:
    one = IdFactory(time_ms=lambda: 1_700_000_000_000, rng=random.Random(3))
    other = IdFactory(time_ms=lambda: 1_700_000_000_000, rng=random.Random(3))
    # Past several carries of the last ten bits, within one millisecond.
    assert one.take(3000) == [other() for _ in range(3000)]
    assert one.take(0) == []


def test_taken_ids_stay_unique_and_in_order_with_calls_between() -> None:
    ids = [new_id(), *new_ids(2500), new_id(), *new_ids(7), new_id()]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(is_id(i) for i in ids)


@pytest.mark.parametrize("n", [-1, 1.5, "3", True])
def test_take_refuses_a_bad_count(n: object) -> None:
    with pytest.raises(ValidationError):
        IdFactory().take(n)  # type: ignore[arg-type]
