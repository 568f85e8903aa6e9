"""Topics and NATS-style patterns: ``*`` is one token, a final ``>`` is one or more."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converge.core import Topic
from converge.errors import ValidationError

_tokens = st.sampled_from(["a", "b", "gpu", "x-1", "Z_9"])
names = st.lists(_tokens, min_size=1, max_size=5).map(".".join)
patterns = (
    st.lists(_tokens | st.just("*"), min_size=1, max_size=5)
    .flatmap(lambda toks: st.sampled_from([toks, [*toks[:-1], ">"]]))
    .map(".".join)
)


def reference_match(pattern: str, name: str) -> bool:
    """NATS subject matching, written as recursion over the two token lists."""

    def go(p: list[str], n: list[str]) -> bool:
        if not p:
            return not n
        if p[0] == ">":
            return len(n) >= 1
        if not n:
            return False
        return (p[0] == "*" or p[0] == n[0]) and go(p[1:], n[1:])

    return go(pattern.split("."), name.split("."))


@settings(max_examples=500)
@given(patterns, names)
def test_matches_agrees_with_a_reference_matcher(pattern: str, name: str) -> None:
    assert Topic(pattern).matches(name) == reference_match(pattern, name)
    assert Topic(pattern).matches(Topic(name)) == reference_match(pattern, name)


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("market.gpu", "market.gpu", True),
        ("market.gpu", "market.cpu", False),
        ("market.*", "market.gpu", True),
        ("market.*", "market.gpu.a100", False),
        ("market.*", "market", False),
        ("market.*.a100", "market.gpu.a100", True),
        ("market.>", "market.gpu", True),
        ("market.>", "market.gpu.a100.eu", True),
        ("market.>", "market", False),
        (">", "anything.at.all", True),
        ("*", "one", True),
        ("*", "one.two", False),
        ("*.>", "a.b", True),
        ("*.>", "a", False),
    ],
)
def test_documented_pattern_examples(pattern: str, name: str, expected: bool) -> None:
    assert Topic(pattern).matches(name) is expected


@pytest.mark.parametrize(
    "name",
    ["", ".", "a.", ".a", "a..b", "a.>.b", ">.a", "a b", "a/b", "a.b*", "a.>>", "ü", "a.#"],
)
def test_invalid_topic_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        Topic(name)
    assert info.value.field == "topic"


def test_invalid_topic_is_refused_when_decoded_too() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"name": "a..b"}', type=Topic)


def test_topics_are_hashable_ordered_values() -> None:
    subscribers = {Topic("a.b"): 1}
    assert subscribers[Topic("a.b")] == 1
    assert Topic("a.b") == Topic("a.b")
    assert Topic("a.b") != Topic("a.c")
    assert sorted([Topic("b"), Topic("a.c"), Topic("a.b")]) == [
        Topic("a.b"),
        Topic("a.c"),
        Topic("b"),
    ]
    assert str(Topic("a.b")) == "a.b"
    assert Topic("a.b.c").tokens == ("a", "b", "c")


def test_is_pattern() -> None:
    assert not Topic("a.b").is_pattern
    assert Topic("a.*").is_pattern
    assert Topic("a.>").is_pattern


@pytest.mark.parametrize(
    "name", ["a b" * 200_000, "ok." * 100_000 + "bad token", "x" * 300_000 + "!"]
)
def test_a_huge_invalid_topic_is_refused_with_a_short_message(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        Topic(name)
    assert info.value.field == "topic"
    assert len(str(info.value)) < 400  # the name and token are clipped, not copied
