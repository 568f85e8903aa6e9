"""``printable`` and ``printable_json``: nothing a terminal acts on gets through, all else does."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from converge.observability import printable, printable_json
from tests.observability._hostile import HOSTILE, any_text, terminal_unsafe
from tests.strategies import json_values


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),
        ("\x1b[2J", "\\x1b[2J"),
        ("\x9b31m", "\\x9b31m"),  # the 8-bit CSI
        ("a\rb\x08\x7f\x00", "a\\rb\\x08\\x7f\\x00"),
        ("right\u202eleft\u2066\u200f", "right\\u202eleft\\u2066\\u200f"),
        ("a\nb\tc", "a\\nb\\tc"),
        ("line\u2028sep", "line\\u2028sep"),
        ("lone \ud800", "lone \\ud800"),
        ("naïve 日本語 👩‍💻 [bold]x[/] \\x1b", "naïve 日本語 👩‍💻 [bold]x[/] \\x1b"),
    ],
)
def test_printable_shows_each_control_as_an_escape(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_newlines_keeps_line_feeds_and_tabs_only() -> None:
    assert printable("a\nb\tc\r\x1b[2J", newlines=True) == "a\nb\tc\\r\\x1b[2J"
    assert terminal_unsafe(printable(HOSTILE, newlines=True), newlines=True) == []


@given(any_text)
def test_nothing_a_terminal_acts_on_gets_through(text: str) -> None:
    shown = printable(text)
    assert terminal_unsafe(shown) == []
    shown.encode("utf-8")  # a lone surrogate would not even print
    assert printable(shown) == shown
    if not terminal_unsafe(text):
        assert shown == text  # everything else, every script, is shown as it is
    lines = printable(text, newlines=True)
    assert terminal_unsafe(lines, newlines=True) == []
    assert lines.count("\n") == text.count("\n")


# What a JSON encoder writes: any text but lone surrogates, which are not valid UTF-8.
encodable = any_text.map(lambda t: "".join(c for c in t if not 0xD800 <= ord(c) <= 0xDFFF))


@given(json_values | st.dictionaries(encodable, st.lists(encodable, max_size=3), max_size=3))
def test_printable_json_keeps_the_value_and_escapes_the_rest(value: Any) -> None:
    for text in (
        json.dumps(value, ensure_ascii=False),
        json.dumps(value, ensure_ascii=False, indent=2),
        msgspec.json.encode(value).decode(),
    ):
        escaped = printable_json(text)
        assert json.loads(escaped) == json.loads(text)
        assert terminal_unsafe(escaped, newlines=True) == []
