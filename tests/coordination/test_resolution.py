"""Result resolution: majority, trust-weighted, leader, fail-on-conflict and fastest."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converge.coordination.resolution import (
    AgentResult,
    ConflictStrategy,
    Resolution,
    ResolutionFailed,
    fail_on_conflict,
    fastest,
    leader_decides,
    majority_vote,
    normalize_text,
    resolve,
    trust_weighted,
)
from converge.errors import ConvergeError, ValidationError
from converge.protocol import output_digest

AGENTS = tuple(f"did:key:z6Mk{c}" for c in "ABCDEFGHIJ")
A, B, C, D, E, F, G = AGENTS[:7]
TRUTH = {"capital": "Paris", "population_m": 2.1, "sources": ["insee", "wiki"]}
LIE = {"capital": "Lyon", "population_m": 0.5, "sources": ["made-up"]}


class Trust:
    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores

    async def score(self, agent_id: str) -> float:
        return self.scores.get(agent_id, 0.5)


def ok(agent: str, output: Any, finished_at: float | None = None) -> AgentResult:
    return AgentResult(agent=agent, output=output, started_at=0.0, finished_at=finished_at)


def failed(agent: str, finished_at: float | None = None) -> AgentResult:
    return AgentResult(agent=agent, error="timed out", finished_at=finished_at)


def reordered(d: dict[str, Any]) -> dict[str, Any]:
    return dict(reversed(d.items()))


def seven_with_two_liars() -> list[AgentResult]:
    honest = [ok(a, TRUTH if i % 2 else reordered(TRUTH)) for i, a in enumerate((A, B, D, E, G))]
    return [*honest[:2], ok(C, LIE), *honest[2:4], ok(F, LIE), honest[4]]


# -- seven agents, two liars ----------------------------------------------------------------------


async def test_majority_vote_picks_the_honest_answer_of_five_in_seven() -> None:
    res = await majority_vote(seven_with_two_liars())
    assert res.output == TRUTH
    assert (res.support, res.winners, res.dissent) == (5, (A, B, D, E, G), (C, F))
    assert res.strategy is ConflictStrategy.MAJORITY_VOTE
    assert [(t.support, t.agents) for t in res.tallies] == [(5, (A, B, D, E, G)), (2, (C, F))]
    assert res.tallies[0].digest == output_digest(TRUTH)
    assert "5 of 7" in res.reason


async def test_trust_weighted_picks_the_honest_answer_when_liars_have_low_trust() -> None:
    trust = Trust({C: 0.05, F: 0.1} | dict.fromkeys((A, B, D, E, G), 0.8))
    res = await trust_weighted(seven_with_two_liars(), trust=trust)
    assert res.output == TRUTH
    assert res.winners == (A, B, D, E, G)
    assert res.support == pytest.approx(4.0)
    assert res.tallies[1].support == pytest.approx(0.15)


async def test_trust_weighted_weighs_trust_not_heads() -> None:
    # Five low-trust liars agree; two trusted agents outweigh them (majority_vote would not).
    results = [ok(a, LIE) for a in (A, B, C, D, E)] + [ok(F, TRUTH), ok(G, TRUTH)]
    trust = Trust(dict.fromkeys((A, B, C, D, E), 0.1) | {F: 0.9, G: 0.95})
    res = await trust_weighted(results, trust=trust)
    assert (res.output, res.winners, res.dissent) == (TRUTH, (F, G), (A, B, C, D, E))
    assert (await majority_vote(results)).output == LIE


async def test_fail_on_conflict_names_both_answers_and_who_gave_each() -> None:
    with pytest.raises(ResolutionFailed) as info:
        await fail_on_conflict(seven_with_two_liars())
    err = info.value
    assert err.strategy is ConflictStrategy.FAIL_ON_CONFLICT
    assert [t.agents for t in err.answers] == [(A, B, D, E, G), (C, F)]
    assert [t.digest for t in err.answers] == [output_digest(TRUTH), output_digest(LIE)]
    assert '"Paris"' in err.answers[0].label and '"Lyon"' in err.answers[1].label
    for text in ("Paris", "Lyon", *AGENTS[:7]):
        assert text in str(err)


@pytest.mark.parametrize("strategy", ["majority_vote", ConflictStrategy.TRUST_WEIGHTED])
async def test_resolve_takes_the_enum_or_its_value(strategy: str) -> None:
    trust = Trust({C: 0.1, F: 0.1})
    res = await resolve(seven_with_two_liars(), strategy, trust=trust, leader=A)
    assert res.output == TRUTH
    assert res.strategy == strategy


# -- comparing answers ----------------------------------------------------------------------------


async def test_answers_compare_by_canonical_bytes_not_dict_order() -> None:
    res = await fail_on_conflict([ok(A, {"a": 1, "b": 2}), ok(B, {"b": 2, "a": 1})])
    assert res.winners == (A, B)
    assert res.tallies[0].digest == output_digest({"a": 1, "b": 2})
    assert res.tallies[0].label == '{"a":1,"b":2}'


@pytest.mark.parametrize(("x", "y"), [(0.1 + 0.2, 0.3), (1, 1.0), (True, 1), (0.0, -0.0)])
async def test_floats_and_types_compare_exactly(x: Any, y: Any) -> None:
    with pytest.raises(ResolutionFailed) as info:
        await fail_on_conflict([ok(A, {"v": x}), ok(B, {"v": y})])
    assert len(info.value.answers) == 2


@pytest.mark.parametrize(
    ("output", "field"),
    [
        ({"x": [float("nan")]}, "results[1].output.x[0]"),
        ({1: "a"}, "results[1].output"),  # canonical maps have text keys only
        (2**64, "results[1].output"),
    ],
)
async def test_an_output_that_cannot_be_compared_is_refused_naming_it(
    output: Any, field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        await majority_vote([ok(A, 1), ok(B, output)])
    assert info.value.field == field


async def test_labels_are_short_and_every_answer_gets_one() -> None:
    long_text, ext = "x" * 100, msgspec.msgpack.Ext(1, b"\x01")
    res = await majority_vote([ok(A, long_text), ok(B, long_text), ok(C, ext)])
    assert res.tallies[0].label == '"' + "x" * 38 + "…"
    assert res.tallies[1].label == "<msgpack d40101>"


async def test_normalize_text_makes_case_and_whitespace_the_same_answer() -> None:
    results = [ok(A, "  Paris\n"), ok(B, "PARIS"), ok(C, "Lyon"), ok(D, "paris  ")]
    res = await majority_vote(results, key=normalize_text)
    assert (res.output, res.chosen, res.support, res.dissent) == ("  Paris\n", A, 3, (C,))
    assert res.tallies[0].label == '"paris"'
    assert normalize_text("Stra\u00dfe  \t Caf\u0065\u0301") == "strasse café"
    assert normalize_text({"a": "B"}) == {"a": "B"}
    with pytest.raises(ResolutionFailed):
        await majority_vote(results)  # without the key, four different answers


async def test_an_async_critic_as_key_groups_free_text_by_its_verdict() -> None:
    async def verdict(text: str) -> str:
        await asyncio.sleep(0)
        return "yes" if "paris" in text.lower() else "no"

    results = [ok(A, "It is Paris."), ok(B, "Paris, of course"), ok(C, "Lyon")]
    res = await resolve(results, "majority_vote", key=verdict)
    assert (res.winners, res.output, res.tallies[0].label) == ((A, B), "It is Paris.", '"yes"')


async def test_a_failing_key_raises_its_own_error() -> None:
    async def critic(text: str) -> str:
        raise RuntimeError("critic is down")

    with pytest.raises(RuntimeError, match="critic is down"):
        await majority_vote([ok(A, "x"), ok(B, "y")], key=critic)


# -- majority and trust: ties, no majority, failures ----------------------------------------------


async def test_failed_results_do_not_count_in_the_majority() -> None:
    results = [ok(A, 1), ok(B, 1), ok(C, 2), failed(D), failed(E), failed(F)]
    res = await majority_vote(results)
    assert (res.output, res.support, res.failed, res.dissent) == (1, 2, (D, E, F), (C,))
    assert "2 of 3" in res.reason


async def test_a_tie_and_no_majority_fail_with_the_tallies() -> None:
    with pytest.raises(ResolutionFailed, match="tie") as info:
        await majority_vote([ok(A, "x"), ok(B, "y"), ok(C, "x"), ok(D, "y")])
    assert [t.support for t in info.value.answers] == [2, 2]
    with pytest.raises(ResolutionFailed, match="no majority"):
        await majority_vote([ok(A, "x"), ok(B, "y"), ok(C, "x"), ok(D, "z")])


async def test_trust_weighted_fails_on_a_tie_or_without_any_trust() -> None:
    results = [ok(A, "x"), ok(B, "x"), ok(C, "y")]
    with pytest.raises(ResolutionFailed, match="tie"):
        await trust_weighted(results, trust=Trust({A: 0.25, B: 0.75, C: 1.0}))
    with pytest.raises(ResolutionFailed, match="no answer carries any trust"):
        await trust_weighted(results, trust=Trust({A: 0.0, B: 0.0, C: -3.0}))
    res = await trust_weighted(results, trust=Trust({A: 7.0, B: 0.0, C: 0.9}))
    assert (res.output, res.support) == ("x", 1.0)  # scores are clamped to [0, 1]


@pytest.mark.parametrize("strategy", list(ConflictStrategy))
async def test_no_successful_result_fails_every_strategy(strategy: ConflictStrategy) -> None:
    with pytest.raises(ResolutionFailed) as info:
        await resolve([failed(A, 1.0), failed(B, 2.0)], strategy, trust=Trust({}), leader=A)
    assert (info.value.failed, info.value.answers) == ((A, B), ())
    with pytest.raises(ResolutionFailed, match="no result succeeded"):
        await resolve([], strategy, trust=Trust({}), choose=lambda rs: None)


# -- leader_decides -------------------------------------------------------------------------------


async def test_the_leader_s_own_result_is_the_default_even_in_a_minority() -> None:
    res = await leader_decides(seven_with_two_liars(), leader=C)
    assert (res.output, res.chosen, res.winners, res.support) == (LIE, C, (C, F), 2)
    assert "its own" in res.reason


async def test_a_critic_chooses_for_the_leader() -> None:
    results = [ok(A, "short"), ok(B, "a much longer, better answer"), failed(C), ok(D, "mid one")]
    seen: list[tuple[AgentResult, ...]] = []

    async def critic(candidates: tuple[AgentResult, ...]) -> AgentResult | None:
        seen.append(candidates)
        return max((r for r in candidates if r.error is None), key=lambda r: len(r.output))

    res = await leader_decides(results, leader=D, choose=critic)
    assert (res.output, res.chosen, res.dissent, res.failed) == (results[1].output, B, (A, D), (C,))
    assert [r.agent for r in seen[0]] == [A, B, C, D]  # every result, sorted by agent
    assert f"`choose` for the leader {D} chose {B}'s result" == res.reason
    sync = await resolve(results, "leader_decides", choose=lambda rs: rs[0])
    assert sync.chosen == A


async def test_leader_choices_that_cannot_stand() -> None:
    results = [ok(A, 1), failed(B), ok(C, 2)]
    with pytest.raises(ResolutionFailed, match="failed attempt: timed out"):
        await leader_decides(results, leader=B)
    with pytest.raises(ResolutionFailed, match="chose none"):
        await leader_decides(results, choose=lambda rs: None)
    with pytest.raises(ValidationError) as info:
        await leader_decides(results, choose=lambda rs: ok(A, 99))
    assert info.value.field == "choose"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"leader": "did:key:z6MkNobody"}, "leader"), ({}, "leader")],
)
async def test_a_leader_must_be_named_and_have_a_result(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        await leader_decides([ok(A, 1), ok(B, 1)], **kwargs)
    assert info.value.field == field


# -- fastest --------------------------------------------------------------------------------------


async def test_fastest_skips_failures_that_finished_earlier() -> None:
    results = [failed(A, 1.0), ok(B, "slow", 9.0), ok(C, "quick", 3.0), failed(D, 2.0)]
    results.append(ok(E, "quick", 5.0))
    res = await fastest(results)
    assert (res.output, res.chosen, res.winners, res.dissent) == ("quick", C, (C, E), (B,))
    assert res.failed == (A, D)


async def test_fastest_breaks_a_tie_by_did_and_needs_finish_times() -> None:
    res = await fastest([ok(B, "b", 3.0), ok(A, "a", 3.0)])
    assert res.chosen == A
    with pytest.raises(ValidationError) as info:
        await fastest([ok(A, "a", 3.0), failed(C), ok(B, "b")])
    assert info.value.field == "results[2].finished_at"


# -- bad input ------------------------------------------------------------------------------------


async def test_bad_input_names_the_field() -> None:
    cases: list[tuple[Any, str]] = [
        (resolve([ok(A, 1)], "best_of_three"), "strategy"),
        (majority_vote([ok(A, 1), ok(A, 2)]), "results[1].agent"),
        (majority_vote([ok(A, 1), {"agent": B}]), "results[1]"),  # type: ignore[list-item]
        (trust_weighted([ok(A, 1)]), "trust"),
        (resolve([ok(A, 1)], "trust_weighted"), "trust"),
        (trust_weighted([ok(A, 1)], trust=Trust({A: float("nan")})), "trust"),
    ]
    for call, field in cases:
        with pytest.raises(ValidationError) as info:
            await call
        assert info.value.field == field
    bad_results: list[tuple[dict[str, Any], str]] = [
        ({"agent": ""}, "agent"),
        ({"agent": A, "error": ""}, "error"),
        ({"agent": A, "started_at": 5.0, "finished_at": 4.0}, "finished_at"),
        ({"agent": A, "finished_at": float("inf")}, "finished_at"),
    ]
    for kwargs, field in bad_results:
        with pytest.raises(ValidationError) as info:
            AgentResult(**kwargs)
        assert info.value.field == field


async def test_a_resolution_round_trips_through_msgpack() -> None:
    res = await majority_vote(seven_with_two_liars())
    back = msgspec.msgpack.decode(msgspec.msgpack.encode(res), type=Resolution)
    assert back == res
    assert issubclass(ResolutionFailed, ConvergeError)


# -- properties -----------------------------------------------------------------------------------

OUTPUTS = ({"a": 1, "b": 2}, {"b": 2, "a": 1}, "x", 1, 1.0, [1, 2], (1, 2), None)
SCORES = {a: (0.1, 0.2, 0.3, 0.5)[i % 4] for i, a in enumerate(AGENTS)}


@st.composite
def result_sets(draw: st.DrawFn) -> list[AgentResult]:
    agents = draw(st.lists(st.sampled_from(AGENTS), unique=True, max_size=len(AGENTS)))
    return [
        AgentResult(
            agent=a,
            output=draw(st.sampled_from(OUTPUTS)),
            error=draw(st.sampled_from([None, None, "boom"])),
            finished_at=draw(st.sampled_from([1.0, 2.0, 3.0])),
        )
        for a in agents
    ]


def run(strategy: str, results: list[AgentResult], leader: str | None) -> Any:
    async def go() -> Resolution:
        return await resolve(results, strategy, trust=Trust(SCORES), leader=leader)

    try:
        return asyncio.run(go())
    except ResolutionFailed as exc:
        return (exc.strategy, exc.reason, exc.answers, exc.failed)
    except ValidationError as exc:  # leader_decides without a leader: no results at all
        return exc.field


@settings(max_examples=150, deadline=None)
@given(result_sets())
def test_majority_vote_returns_only_an_answer_of_more_than_half(results: list[AgentResult]) -> None:
    good = [r for r in results if r.error is None]
    groups: dict[str, list[str]] = {}
    for r in good:
        groups.setdefault(output_digest(r.output), []).append(r.agent)
    outcome = run("majority_vote", results, None)
    if not isinstance(outcome, Resolution):
        assert all(2 * len(g) <= len(good) for g in groups.values())
        return
    group = groups[output_digest(outcome.output)]
    assert 2 * outcome.support > len(good)
    assert outcome.support == len(group)
    assert outcome.winners == tuple(sorted(group))


@settings(max_examples=60, deadline=None)
@given(result_sets(), st.randoms(use_true_random=False))
def test_the_order_of_the_results_never_changes_the_outcome(
    results: list[AgentResult], rnd: Any
) -> None:
    shuffled = rnd.sample(results, len(results))
    leader = results[0].agent if results else None
    for strategy in ConflictStrategy:
        assert run(strategy, results, leader) == run(strategy, shuffled, leader)
