"""``did you mean``: the closest known name, or nothing."""

from __future__ import annotations

from converge.core.spelling import did_you_mean


def test_the_closest_name_is_offered_only_when_close() -> None:
    assert did_you_mean("trnd", ["trend", "alpha", "a"]) == " (did you mean 'trend'?)"
    assert did_you_mean("zzz", ["trend", "alpha"]) == ""
    assert did_you_mean("trend", ["trend"]) == ""  # a known name needs no suggestion
    assert did_you_mean("x", []) == ""
