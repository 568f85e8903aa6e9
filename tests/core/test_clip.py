"""Clipping untrusted text before it is logged: at most the limit, and says how much was cut."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converge.core.clip import MAX_ID_CHARS, MAX_TEXT_CHARS, clip, clip_text, shown
from tests.strategies import any_text

_MARKER = re.compile(r"…\[\+(\d+) chars\]\Z")


@settings(max_examples=300)
@given(st.one_of(any_text, st.integers(0, 5000).map(lambda n: "y" * n)), st.integers(1, 300))
def test_a_clipped_text_fits_its_limit_and_counts_what_was_cut(text: str, limit: int) -> None:
    out = clip(text, limit)
    assert len(out) <= limit
    if len(text) <= limit:
        assert out == text
        return
    marker = _MARKER.search(out)
    if marker is None:  # a limit too small for any marker: a bare cut
        assert out == text[:limit]
        return
    kept = out[: marker.start()]
    assert text.startswith(kept)
    assert len(kept) + int(marker.group(1)) == len(text)
    assert len(out) == limit


def test_the_default_limits() -> None:
    did = "did:key:z6Mk" + "x" * 400_000
    assert clip(did) == did[:112] + "…[+399900 chars]"  # 400,012 characters in all
    assert len(clip(did)) == MAX_ID_CHARS
    assert len(clip_text("e" * 10**6)) == MAX_TEXT_CHARS
    assert clip("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK").endswith("doK")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (["a"] * 100, "<list>"),
        ({"k": "v" * 500}, "<dict>"),
        (10**300, "<int>"),  # its repr alone is work; one of 10**5000 digits cannot be made
        (None, "None"),
        (True, "True"),
        (-12, "-12"),
        (1.5, "1.5"),
    ],
)
def test_a_value_that_is_not_a_str_is_shown_without_being_printed_whole(
    value: object, text: str
) -> None:
    assert clip(value) == text
    assert shown(value) == (None if value is None else text)
