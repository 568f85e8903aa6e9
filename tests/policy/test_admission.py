"""Admission policies decide who may join a pool, with a reason either way."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from converge.errors import ValidationError
from converge.policy.admission import (
    AdmissionRequest,
    AllOf,
    Allowlist,
    AnyOf,
    MinTrust,
    OpenAdmission,
    admission_spec,
    admit,
    parse_admission,
    token_admission,
)

ALICE = "did:key:z6MkAlice"
BOB = "did:key:z6MkBob"


def test_empty_or_missing_spec_is_open() -> None:
    for spec in (None, {}, {"kind": "open"}):
        policy = parse_admission(spec)
        assert policy == OpenAdmission()
        assert admit(policy, AdmissionRequest(BOB)).admitted


def test_allowlist_admits_members_only() -> None:
    policy = parse_admission({"kind": "allowlist", "members": [ALICE]})
    assert admit(policy, AdmissionRequest(ALICE)).admitted
    refused = admit(policy, AdmissionRequest(BOB))
    assert not refused.admitted
    assert "allowlist" in refused.reason


def test_token_policy_stores_only_a_digest_and_checks_the_token() -> None:
    policy = token_admission("s3cret-token")
    assert "s3cret-token" not in str(admission_spec(policy))
    assert admit(policy, AdmissionRequest(BOB, {"token": "s3cret-token"})).admitted
    wrong = admit(policy, AdmissionRequest(BOB, {"token": "guess"}))
    missing = admit(policy, AdmissionRequest(BOB))
    assert not wrong.admitted
    assert "not the pool's token" in wrong.reason
    assert not missing.admitted
    assert "none was presented" in missing.reason
    # a spec round trip keeps working (what a stored pool goes through)
    assert admit(
        parse_admission(admission_spec(policy)), AdmissionRequest(BOB, {"token": "s3cret-token"})
    ).admitted


def test_min_trust_needs_a_known_score_at_least_the_minimum() -> None:
    policy = parse_admission({"kind": "min_trust", "score": 0.6})
    assert admit(policy, AdmissionRequest(BOB, trust_score=0.6)).admitted
    assert not admit(policy, AdmissionRequest(BOB, trust_score=0.59)).admitted
    unknown = admit(policy, AdmissionRequest(BOB))
    assert not unknown.admitted
    assert "unknown" in unknown.reason


def test_combinations_nest() -> None:
    spec = {
        "kind": "any_of",
        "policies": [
            {"kind": "allowlist", "members": [ALICE]},
            {
                "kind": "all_of",
                "policies": [
                    {"kind": "min_trust", "score": 0.5},
                    admission_spec(token_admission("t")),
                ],
            },
        ],
    }
    policy = parse_admission(spec)
    assert admit(policy, AdmissionRequest(ALICE)).admitted
    assert admit(policy, AdmissionRequest(BOB, {"token": "t"}, 0.9)).admitted
    refused = admit(policy, AdmissionRequest(BOB, {"token": "t"}, 0.1))
    assert not refused.admitted
    assert "allowlist" in refused.reason
    assert "below" in refused.reason
    assert not admit(policy, AdmissionRequest(BOB, {"token": "x"}, 0.9)).admitted


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"kind": "nope"}, "kind"),
        ({"kind": "min_trust", "score": 1.5}, "score"),
        ({"kind": "min_trust"}, "score"),
        ({"kind": "token", "sha256": "not-hex"}, "sha256"),
        ({"kind": "allowlist", "members": [ALICE], "extra": 1}, "extra"),
        ({"kind": "all_of", "policies": []}, "policies"),
        ({"kind": "any_of", "policies": [{"kind": "min_trust", "score": -1}]}, "policies[0].score"),
        (
            {"kind": "any_of", "policies": [{"kind": "all_of", "policies": []}]},
            "policies[0].policies",
        ),
    ],
)
def test_bad_specs_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_admission(spec)
    assert info.value.field == field


leaf = st.one_of(
    st.just(OpenAdmission()),
    st.builds(Allowlist, members=st.frozensets(st.sampled_from([ALICE, BOB]), max_size=2)),
    st.builds(MinTrust, score=st.floats(0, 1)),
)
policies = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.builds(AllOf, policies=st.lists(inner, min_size=1, max_size=3).map(tuple)),
        st.builds(AnyOf, policies=st.lists(inner, min_size=1, max_size=3).map(tuple)),
    ),
    max_leaves=8,
)


@given(policies, st.sampled_from([ALICE, BOB]), st.one_of(st.none(), st.floats(0, 1)))
def test_combinations_mean_all_and_any_and_survive_a_spec_round_trip(
    policy: Any, agent: str, trust: float | None
) -> None:
    request = AdmissionRequest(agent, trust_score=trust)

    def expected(p: Any) -> bool:
        if isinstance(p, AllOf):
            return all(expected(q) for q in p.policies)
        if isinstance(p, AnyOf):
            return any(expected(q) for q in p.policies)
        if isinstance(p, Allowlist):
            return agent in p.members
        if isinstance(p, MinTrust):
            return trust is not None and trust >= p.score
        return True

    result = admit(policy, request)
    assert result.admitted == expected(policy)
    assert result.reason
    assert admit(parse_admission(admission_spec(policy)), request) == result
