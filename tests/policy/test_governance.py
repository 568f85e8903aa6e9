"""Governance models decide disputes among a pool's members."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from converge.errors import ValidationError
from converge.policy.governance import (
    Democratic,
    Dictatorial,
    Threshold,
    TrustWeighted,
    decide,
    governance_spec,
    parse_governance,
)

MEMBERS = ["a", "b", "c", "d"]


def test_democratic_needs_more_than_half_of_the_members_not_of_the_votes() -> None:
    model = parse_governance({})
    assert model == Democratic()
    # 2 of 4 members is not a majority, even though it is 2 of 3 votes cast
    half = decide(model, "deploy?", {"a": "yes", "b": "yes", "c": "no"}, MEMBERS)
    assert not half.decided
    assert half.tallies == {"yes": 2.0, "no": 1.0}
    carried = decide(model, "deploy?", {"a": "yes", "b": "yes", "d": "yes"}, MEMBERS)
    assert carried.decided
    assert carried.decision == "yes"
    assert carried.question == "deploy?"


def test_votes_of_non_members_are_ignored_and_listed() -> None:
    out = decide(Democratic(), "q", {"a": "x", "mallory": "y", "eve": "y"}, ["a", "b"])
    assert out.tallies == {"x": 1.0}
    assert out.ignored == ("eve", "mallory")
    assert not out.decided


def test_ties_never_decide() -> None:
    out = decide(Democratic(), "q", {"a": "x", "b": "y"}, ["a", "b"])
    assert not out.decided
    assert "tie" in out.reason


def test_dictatorial_follows_the_leader_only() -> None:
    model = parse_governance({"kind": "dictatorial", "leader": "c"})
    assert decide(model, "q", {"a": "x", "b": "x", "c": "y"}, MEMBERS).decision == "y"
    silent = decide(model, "q", {"a": "x", "b": "x", "d": "x"}, MEMBERS)
    assert not silent.decided
    assert "not voted" in silent.reason
    outsider = decide(Dictatorial(leader="zed"), "q", {"zed": "x"}, MEMBERS)
    assert not outsider.decided
    assert "not a member" in outsider.reason


def test_trust_weighted_counts_trust_against_the_members_total() -> None:
    model = parse_governance({"kind": "trust_weighted"})
    trust = {"a": 0.9, "b": 0.2, "c": 0.3, "d": 0.1}  # total 1.5, so more than 0.75 carries
    out = decide(model, "q", {"a": "x", "b": "y", "c": "y"}, MEMBERS, trust)
    assert out.decision == "x"
    assert out.tallies == pytest.approx({"x": 0.9, "y": 0.5})
    assert out.needed == pytest.approx(0.75)
    # two low-trust voters cannot outvote the members' trust
    weak = decide(model, "q", {"b": "y", "c": "y"}, MEMBERS, trust)
    assert not weak.decided
    # unknown scores weigh default_trust
    default = decide(TrustWeighted(default_trust=0.5), "q", {"a": "x", "b": "x"}, ["a", "b", "c"])
    assert default.tallies == {"x": 1.0}
    assert default.decided


def test_threshold_needs_at_least_the_fraction_of_members() -> None:
    model = parse_governance({"kind": "threshold", "fraction": 0.66})
    assert decide(model, "q", {"a": "x", "b": "x"}, ["a", "b", "c"]).decided
    assert not decide(model, "q", {"a": "x"}, ["a", "b", "c"]).decided
    unanimous = Threshold(fraction=1.0)
    assert not decide(unanimous, "q", {"a": "x", "b": "x"}, ["a", "b", "c"]).decided
    assert decide(unanimous, "q", {"a": "x", "b": "x", "c": "x"}, ["a", "b", "c"]).decided


def test_no_votes_decides_nothing() -> None:
    out = decide(Democratic(), "q", {}, MEMBERS)
    assert not out.decided
    assert out.reason == "no member voted"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"kind": "monarchy"}, "kind"),
        ({"kind": "dictatorial"}, "leader"),
        ({"kind": "threshold", "fraction": 0}, "fraction"),
        ({"kind": "threshold", "fraction": 1.5}, "fraction"),
        ({"kind": "trust_weighted", "default_trust": 2}, "default_trust"),
    ],
)
def test_bad_specs_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_governance(spec)
    assert info.value.field == field


def test_specs_round_trip() -> None:
    for model in (Democratic(), Dictatorial(leader="a"), TrustWeighted(), Threshold(fraction=0.5)):
        assert parse_governance(governance_spec(model)) == model


voters = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d", "e", "x1", "x2"]), st.sampled_from("pqr")
)


@given(voters, st.sampled_from([Democratic(), Threshold(fraction=0.5), Threshold(fraction=0.75)]))
def test_a_decision_always_has_the_support_it_needs(votes: dict[str, str], model: Any) -> None:
    members = ["a", "b", "c", "d", "e"]
    out = decide(model, "q", votes, members)
    member_votes = {v: c for v, c in votes.items() if v in members}
    if out.decided:
        support = sum(1 for c in member_votes.values() if c == out.decision)
        if isinstance(model, Democratic):
            assert support > len(members) / 2
        else:
            assert support >= model.fraction * len(members) - 1e-9
        assert all(s < support for c, s in out.tallies.items() if c != out.decision)
    # votes of non-members never change the outcome
    assert decide(model, "q", member_votes, members) == out.__class__(
        **{**{f: getattr(out, f) for f in out.__struct_fields__}, "ignored": ()}
    )
