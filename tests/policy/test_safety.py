"""Safety: quotas and allowlists refuse exactly the decisions they should, and a runaway stops."""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converge.core.decisions import (
    DECISION_TYPES,
    AcceptProposal,
    CancelTask,
    ClaimTask,
    CreatePool,
    Decision,
    Delegate,
    FailTask,
    InvokeTool,
    JoinPool,
    LeavePool,
    Propose,
    RejectProposal,
    ReportTask,
    RevokeDelegation,
    SendMessage,
    SubmitBid,
    SubmitTask,
    Vote,
)
from converge.errors import PolicyViolation, ValidationError
from converge.policy.safety import (
    SAFETY_RULES,
    ActionPolicy,
    AgentUsage,
    DecisionsRefused,
    ResourceLimits,
    SafetyViolation,
    accepted,
    raise_for,
    validate_safety,
)

T0 = 1_700_000_000.0

ONE_OF_EACH: list[Decision] = [
    SendMessage(kind="chat", topic="room"),
    JoinPool(pool_id="p"),
    LeavePool(pool_id="p"),
    CreatePool(name="p"),
    SubmitTask(objective="o"),
    ClaimTask(task_id="t"),
    ReportTask(task_id="t"),
    CancelTask(task_id="t"),
    FailTask(task_id="t", reason="r"),
    SubmitBid(auction_id="a", amount=1.0),
    Vote(ballot_id="b", choice=1),
    Propose(session_id="s", terms={}),
    AcceptProposal(session_id="s"),
    RejectProposal(session_id="s"),
    Delegate(to="did:key:z", scope=("x",)),
    RevokeDelegation(delegation_id="d"),
    InvokeTool(tool="search"),
]


def tag(decision: Decision) -> str:
    return str(type(decision).__struct_config__.tag)


def msg() -> SendMessage:
    return SendMessage(kind="chat", topic="room")


def check(
    decisions: list[Any],
    *,
    limits: ResourceLimits | None = None,
    policy: ActionPolicy | None = None,
    usage: AgentUsage | None = None,
    now: float = T0,
) -> list[tuple[int, str]]:
    """(index, rule) of every violation."""
    violations = validate_safety(
        decisions,
        limits=limits or ResourceLimits(),
        policy=policy or ActionPolicy(),
        usage=usage or AgentUsage(started_at=T0),
        now=now,
    )
    return [(v.index, v.rule) for v in violations]


def test_every_decision_type_is_covered_by_the_examples() -> None:
    assert sorted(tag(d) for d in ONE_OF_EACH) == sorted(DECISION_TYPES)


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_claimed_tasks", -1),
        ("max_claimed_tasks", 1.5),
        ("max_claimed_tasks", True),
        ("max_messages_per_second", "10"),
        ("max_tool_calls", -5),
        ("max_tokens", 10.0),
        ("max_cost", -0.01),
        ("max_cost", math.nan),
        ("max_cost", math.inf),
        ("max_cost", False),
        ("max_wall_time_s", "1h"),
        ("max_wall_time_s", -1),
        ("max_decisions_per_call", -1),
    ],
)
def test_bad_limits_name_their_field(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        ResourceLimits(**{field: value})
    assert info.value.field == field
    assert field in str(info.value)


def test_limits_accept_zero_and_ints_for_amounts_and_round_trip() -> None:
    limits = ResourceLimits(max_claimed_tasks=0, max_cost=2, max_wall_time_s=0, max_tokens=10**20)
    assert msgspec.json.decode(msgspec.json.encode(limits), type=ResourceLimits) == limits
    assert ResourceLimits() == msgspec.json.decode(b"{}", type=ResourceLimits)
    with pytest.raises(msgspec.ValidationError):  # a typo in a config file is not ignored
        msgspec.json.decode(b'{"max_token": 5}', type=ResourceLimits)


@pytest.mark.parametrize("field", ["allow_decisions", "deny_decisions"])
def test_unknown_decision_types_are_refused_with_the_known_tags(field: str) -> None:
    with pytest.raises(ValidationError) as info:
        ActionPolicy(**{field: frozenset({"claim_task", "claim_tasks"})})
    assert info.value.field == field
    assert "claim_tasks" in str(info.value)
    assert all(known in str(info.value) for known in DECISION_TYPES)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("allow_decisions", "claim_task"),  # a bare string is not a set of one name
        ("deny_decisions", None),
        ("allow_tools", 3),
        ("deny_tools", ["ok", ""]),
        ("allow_tools", ["ok", 7]),
    ],
)
def test_bad_name_lists_name_their_field(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        ActionPolicy(**{field: value})
    assert info.value.field == field


def test_policy_keeps_any_iterable_as_a_frozenset_and_round_trips() -> None:
    policy = ActionPolicy(allow_decisions=["vote", "invoke_tool"], deny_tools={"rm"})  # type: ignore[arg-type]
    assert policy.allow_decisions == frozenset({"vote", "invoke_tool"})
    assert isinstance(policy.deny_tools, frozenset)
    assert msgspec.json.decode(msgspec.json.encode(policy), type=ActionPolicy) == policy
    assert ActionPolicy.allow_all() == ActionPolicy()


# --- allow and deny lists ----------------------------------------------------------------------


def test_none_allows_every_decision_and_tool() -> None:
    assert check(ONE_OF_EACH, policy=ActionPolicy.allow_all()) == []


@pytest.mark.parametrize(
    "policy",
    [ActionPolicy(allow_decisions=frozenset()), ActionPolicy.deny_all()],
    ids=["empty-allowlist", "deny_all"],
)
def test_an_empty_allowlist_allows_nothing(policy: ActionPolicy) -> None:
    assert check(ONE_OF_EACH, policy=policy) == [
        (i, "decision_not_allowed") for i in range(len(ONE_OF_EACH))
    ]


@pytest.mark.parametrize(
    ("allow", "deny", "rule"),
    [
        (None, set(), None),
        ({"vote"}, set(), None),
        ({"claim_task"}, set(), "decision_not_allowed"),
        (None, {"vote"}, "decision_denied"),
        ({"vote"}, {"vote"}, "decision_denied"),  # deny wins over allow
        (set(), {"vote"}, "decision_denied"),
    ],
)
def test_decision_allow_and_deny(allow: set[str] | None, deny: set[str], rule: str | None) -> None:
    policy = ActionPolicy(
        allow_decisions=None if allow is None else frozenset(allow),
        deny_decisions=frozenset(deny),
    )
    got = check([ClaimTask(task_id="t"), Vote(ballot_id="b", choice="x")], policy=policy)
    vote = [(1, rule)] if rule else []
    claim = [] if allow is None or "claim_task" in allow else [(0, "decision_not_allowed")]
    assert got == claim + vote


@pytest.mark.parametrize(
    ("allow", "deny", "rule"),
    [
        (None, set(), None),
        ({"search"}, set(), None),
        ({"fetch"}, set(), "tool_not_allowed"),
        (set(), set(), "tool_not_allowed"),
        (None, {"search"}, "tool_denied"),
        ({"search"}, {"search"}, "tool_denied"),  # deny wins over allow
    ],
)
def test_tool_lists_apply_to_invoke_tool_only(
    allow: set[str] | None, deny: set[str], rule: str | None
) -> None:
    policy = ActionPolicy(
        allow_tools=None if allow is None else frozenset(allow), deny_tools=frozenset(deny)
    )
    others = [d for d in ONE_OF_EACH if not isinstance(d, InvokeTool)]
    got = check([*others, InvokeTool(tool="search")], policy=policy)
    assert got == ([(len(others), rule)] if rule else [])


def test_denying_the_decision_type_outranks_the_tool_lists() -> None:
    policy = ActionPolicy(deny_decisions=frozenset({"invoke_tool"}), allow_tools=None)
    assert check([InvokeTool(tool="search")], policy=policy) == [(0, "decision_denied")]


def test_something_that_is_not_a_decision_is_refused_not_raised() -> None:
    class Sneaky(ClaimTask, frozen=True):
        pass

    got = check(["claim_task", Sneaky(task_id="t"), msg()])
    assert got == [(0, "decision_not_allowed"), (1, "decision_not_allowed")]


# --- quotas, counted cumulatively within one call ----------------------------------------------


def test_claims_beyond_the_limit_are_refused_counting_the_ones_before() -> None:
    usage = AgentUsage(started_at=T0, claimed=["held"])
    claims = [ClaimTask(task_id=f"t{i}") for i in range(5)]
    got = check(claims, limits=ResourceLimits(max_claimed_tasks=3), usage=usage)
    assert got == [(2, "max_claimed_tasks"), (3, "max_claimed_tasks"), (4, "max_claimed_tasks")]


def test_reporting_or_failing_a_held_task_frees_its_slot_within_the_call() -> None:
    usage = AgentUsage(started_at=T0, claimed=["a", "b"])
    decisions: list[Decision] = [
        ClaimTask(task_id="x"),  # refused: two held, limit two
        ReportTask(task_id="a"),
        ClaimTask(task_id="y"),  # takes a's slot
        ReportTask(task_id="nobody-holds-this"),  # frees nothing
        ClaimTask(task_id="z"),  # refused
        FailTask(task_id="b", reason="gave up"),
        ClaimTask(task_id="y"),  # already held: takes no new slot
        ClaimTask(task_id="z"),  # takes b's slot
    ]
    limits = ResourceLimits(max_claimed_tasks=2)
    assert check(decisions, limits=limits, usage=usage) == [
        (0, "max_claimed_tasks"),
        (4, "max_claimed_tasks"),
    ]


def test_messages_count_toward_the_window_cumulatively() -> None:
    usage = AgentUsage(started_at=T0)
    usage.apply(msg(), T0)
    got = check([msg()] * 5, limits=ResourceLimits(max_messages_per_second=3), usage=usage)
    assert got == [(2, "max_messages_per_second"), (3, "max_messages_per_second"),
                   (4, "max_messages_per_second")]  # fmt: skip


def test_the_message_window_slides_with_now() -> None:
    limits = ResourceLimits(max_messages_per_second=3)
    usage = AgentUsage(started_at=T0)
    for at in (T0, T0 + 0.25, T0 + 0.5):
        usage.apply(msg(), at)
    rate = "max_messages_per_second"
    assert check([msg()], limits=limits, usage=usage, now=T0 + 0.75) == [(0, rate)]
    assert check([msg()], limits=limits, usage=usage, now=T0 + 0.999) == [(0, rate)]
    # At T0 + 1 the first message leaves the window (it covers (now - 1, now]).
    assert check([msg(), msg()], limits=limits, usage=usage, now=T0 + 1.0) == [(1, rate)]
    assert check([msg()] * 3, limits=limits, usage=usage, now=T0 + 1.25) == [(2, rate)]
    assert check([msg()] * 4, limits=limits, usage=usage, now=T0 + 1.5) == [(3, rate)]
    assert usage.messages_in_window(T0 + 0.5) == 3
    assert usage.messages_in_window(T0 + 1.3) == 1
    assert usage.messages_in_window(T0 + 10) == 0


def test_tool_calls_are_counted_over_the_lifetime_and_refused_tools_use_none() -> None:
    usage = AgentUsage(started_at=T0)
    for _ in range(8):
        usage.apply(InvokeTool(tool="search"), T0)
    policy = ActionPolicy(deny_tools=frozenset({"rm"}))
    calls = [InvokeTool(tool="rm"), *[InvokeTool(tool="search")] * 4]
    got = check(calls, limits=ResourceLimits(max_tool_calls=10), policy=policy, usage=usage)
    assert got == [(0, "tool_denied"), (3, "max_tool_calls"), (4, "max_tool_calls")]


def test_a_result_longer_than_max_decisions_per_call_is_refused_whole() -> None:
    limits = ResourceLimits(max_decisions_per_call=3)
    assert check([msg()] * 3, limits=limits) == []
    decisions: list[Decision] = [msg()] * 4
    violations = validate_safety(
        decisions, limits=limits, policy=ActionPolicy(), usage=AgentUsage(T0), now=T0
    )
    assert [(v.index, v.decision_type, v.rule) for v in violations] == [
        (-1, "", "max_decisions_per_call")
    ]
    assert "4" in violations[0].detail and "3" in violations[0].detail
    assert accepted(decisions, violations) == []


# --- exhausted budgets -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "tokens", "cost", "now", "rule"),
    [
        (ResourceLimits(max_tokens=100), 100, 0.0, T0, None),  # at the limit: not exceeded
        (ResourceLimits(max_tokens=100), 101, 0.0, T0, "max_tokens"),
        (ResourceLimits(max_cost=1.5), 0, 1.5, T0, None),
        (ResourceLimits(max_cost=1.5), 0, 1.75, T0, "max_cost"),
        (ResourceLimits(max_wall_time_s=60), 0, 0.0, T0 + 60, None),
        (ResourceLimits(max_wall_time_s=60), 0, 0.0, T0 + 60.5, "max_wall_time_s"),
    ],
)
def test_an_exceeded_budget_refuses_every_decision(
    limits: ResourceLimits, tokens: int, cost: float, now: float, rule: str | None
) -> None:
    usage = AgentUsage(started_at=T0)
    usage.add_usage(tokens=tokens, cost=cost)
    got = check(ONE_OF_EACH, limits=limits, usage=usage, now=now)
    assert got == ([(i, rule) for i in range(len(ONE_OF_EACH))] if rule else [])
    assert check([], limits=limits, usage=usage, now=now) == []


def test_violations_say_what_happened_with_the_numbers() -> None:
    usage = AgentUsage(started_at=T0)
    usage.add_usage(tokens=1_234)
    violations = validate_safety(
        [msg()], limits=ResourceLimits(max_tokens=1_000), policy=ActionPolicy(), usage=usage, now=T0
    )
    assert violations == [
        SafetyViolation(
            index=0,
            decision_type="send_message",
            rule="max_tokens",
            detail="1234 tokens used > max_tokens 1000",
        )
    ]


# --- usage accounting --------------------------------------------------------------------------


def test_apply_records_what_each_decision_consumes() -> None:
    usage = AgentUsage(started_at=T0)
    for d in ONE_OF_EACH:  # claim t, report t (frees it), send one message, call one tool
        usage.apply(d, T0)
    assert (usage.claimed_tasks, usage.tool_calls, usage.messages_in_window(T0)) == (0, 1, 1)
    usage.apply(ClaimTask(task_id="a"), T0)
    usage.apply(ClaimTask(task_id="b"), T0)
    usage.apply(FailTask(task_id="a", reason="r"), T0)
    assert usage.claimed_task_ids == frozenset({"b"})
    usage.apply(ReportTask(task_id="b"), T0)
    usage.apply(ReportTask(task_id="b"), T0)  # never below zero
    assert usage.claimed_tasks == 0
    usage.apply(ClaimTask(task_id="c"), T0)
    usage.release_task("c")  # e.g. its lease expired
    assert usage.claimed_tasks == 0
    usage.add_usage(tokens=10, cost=0.25)
    usage.add_usage(tokens=5)
    assert (usage.tokens, usage.cost) == (15, 0.25)
    assert "tool_calls=1" in repr(usage)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"tokens": -1}, "tokens"), ({"tokens": 1.5}, "tokens"), ({"cost": -1.0}, "cost"),
     ({"cost": math.nan}, "cost"), ({"cost": True}, "cost")],
)  # fmt: skip
def test_add_usage_refuses_bad_amounts(kwargs: dict[str, Any], field: str) -> None:
    usage = AgentUsage(started_at=T0)
    with pytest.raises(ValidationError) as info:
        usage.add_usage(**kwargs)
    assert info.value.field == field
    assert (usage.tokens, usage.cost) == (0, 0.0)


def test_the_message_record_stays_bounded_and_only_over_counts() -> None:
    usage = AgentUsage(started_at=T0)
    for i in range(5_000):  # 5,000 distinct send times within one second
        usage.apply(msg(), T0 + i * 0.0002)
    now = T0 + 1.2  # messages sent after T0 + 0.2 are in the window: 3,999 of them
    assert usage.messages_in_window(now) >= sum(1 for i in range(5_000) if i * 0.0002 > 0.2)
    assert len(usage._sent._times) <= 1024  # memory is bounded, whatever the send pattern
    assert usage.messages_in_window(T0 + 3) == 0


def test_validate_safety_does_not_change_usage() -> None:
    usage = AgentUsage(started_at=T0, claimed=["a"])
    usage.apply(msg(), T0)
    before = copy.deepcopy(usage)
    limits = ResourceLimits(max_claimed_tasks=5, max_messages_per_second=5, max_tool_calls=5)
    check([*ONE_OF_EACH, ClaimTask(task_id="z")] * 3, limits=limits, usage=usage, now=T0 + 0.1)
    assert repr(usage) == repr(before)
    assert usage.claimed_task_ids == before.claimed_task_ids
    assert usage.messages_in_window(T0 + 0.1) == before.messages_in_window(T0 + 0.1)


# --- accepted, raise_for -----------------------------------------------------------------------


def test_accepted_keeps_the_decisions_without_violations_in_order() -> None:
    decisions: list[Decision] = [ClaimTask(task_id=f"t{i}") for i in range(4)]
    violations = validate_safety(
        decisions,
        limits=ResourceLimits(max_claimed_tasks=2),
        policy=ActionPolicy(),
        usage=AgentUsage(T0),
        now=T0,
    )
    assert accepted(decisions, violations) == decisions[:2]
    assert accepted(decisions, []) == decisions


def test_raise_for_raises_a_policy_violation_that_carries_the_violations() -> None:
    raise_for([])  # nothing to refuse: no error
    violations = [
        SafetyViolation(index=i, decision_type="vote", rule="decision_denied", detail="no")
        for i in range(12)
    ]
    with pytest.raises(PolicyViolation) as info:
        raise_for(violations)
    assert isinstance(info.value, DecisionsRefused)
    assert isinstance(info.value, PermissionError)
    assert info.value.violations == tuple(violations)
    assert "12 safety violations" in str(info.value)
    assert "[0] vote: decision_denied: no" in str(info.value)
    assert "and 2 more" in str(info.value)


# --- a runaway agent ---------------------------------------------------------------------------


def run_rounds(
    decide: Any, limits: ResourceLimits, *, rounds: int, step: float, tokens_per_call: int = 0
) -> list[int]:
    """Drive an agent like the runtime does; return how many decisions each round ran."""
    usage = AgentUsage(started_at=T0)
    now, ran = T0, []
    for _ in range(rounds):
        decisions = decide()
        violations = validate_safety(
            decisions, limits=limits, policy=ActionPolicy(), usage=usage, now=now
        )
        ok = accepted(decisions, violations)
        for d in ok:
            usage.apply(d, now)
            if isinstance(d, InvokeTool):
                usage.add_usage(tokens=tokens_per_call)
        assert limits.max_decisions_per_call is None or len(ok) <= limits.max_decisions_per_call
        assert limits.max_claimed_tasks is None or usage.claimed_tasks <= limits.max_claimed_tasks
        assert limits.max_tool_calls is None or usage.tool_calls <= limits.max_tool_calls
        rate = limits.max_messages_per_second
        assert rate is None or usage.messages_in_window(now) <= rate
        ran.append(len(ok))
        now += step
    return ran


def test_a_runaway_agent_is_stopped_by_its_wall_time_and_held_to_its_quotas() -> None:
    ids = itertools.count()

    def decide() -> list[Decision]:  # claims, chats and calls tools forever; never reports
        n = next(ids)
        return [ClaimTask(task_id=f"t{n}"), msg(), msg(), InvokeTool(tool="search")]

    limits = ResourceLimits(
        max_claimed_tasks=3, max_messages_per_second=5, max_tool_calls=20, max_wall_time_s=30
    )
    ran = run_rounds(decide, limits, rounds=1_000, step=0.05)
    last_active = max(i for i, n in enumerate(ran) if n)
    assert last_active <= 600  # 30 s at 0.05 s a round: stopped once the wall time is past
    assert ran[last_active + 1 :] == [0] * (len(ran) - last_active - 1)
    # It ran 3 claims + 20 tool calls + at most 5 messages a second for 30 s, nothing more.
    assert sum(ran) <= 3 + 20 + 5 * 31


def test_a_runaway_agent_is_stopped_once_its_tokens_run_out() -> None:
    def decide() -> list[Decision]:
        return [InvokeTool(tool="llm"), msg()]

    limits = ResourceLimits(max_tokens=1_000)
    ran = run_rounds(decide, limits, rounds=100, step=0.01, tokens_per_call=400)
    # 400, 800, 1200 tokens: the third call overshoots (usage is reported afterwards), then nothing.
    assert ran[:3] == [2, 2, 2]
    assert ran[3:] == [0] * 97


def test_a_runaway_result_is_refused_whole() -> None:
    def decide() -> list[Decision]:
        return [msg()] * 10_000

    assert run_rounds(decide, ResourceLimits(max_decisions_per_call=100), rounds=3, step=1) == [
        0,
        0,
        0,
    ]


# --- properties --------------------------------------------------------------------------------

TASK_IDS = [f"t{i}" for i in range(5)]
TOOLS = ["a", "b", "c"]
decisions_st = st.lists(
    st.one_of(
        st.builds(ClaimTask, task_id=st.sampled_from(TASK_IDS)),
        st.builds(ReportTask, task_id=st.sampled_from(TASK_IDS)),
        st.builds(FailTask, task_id=st.sampled_from(TASK_IDS), reason=st.just("r")),
        st.just(msg()),
        st.builds(InvokeTool, tool=st.sampled_from(TOOLS)),
        st.sampled_from(ONE_OF_EACH),
    ),
    max_size=12,
)
small = st.none() | st.integers(0, 6)
limits_st = st.builds(
    ResourceLimits,
    max_claimed_tasks=small,
    max_messages_per_second=small,
    max_tool_calls=small,
    max_tokens=st.none() | st.integers(0, 200),
    max_cost=st.none() | st.floats(0, 5),
    max_wall_time_s=st.none() | st.floats(0, 4),
    max_decisions_per_call=st.none() | st.integers(0, 12),
)
tag_sets = st.frozensets(st.sampled_from(sorted(DECISION_TYPES)))
tool_sets = st.frozensets(st.sampled_from(TOOLS))
policies_st = st.builds(
    ActionPolicy,
    allow_decisions=st.none() | tag_sets,
    deny_decisions=tag_sets,
    allow_tools=st.none() | tool_sets,
    deny_tools=tool_sets,
)
rounds_st = st.lists(
    st.tuples(decisions_st, st.floats(0, 0.7), st.integers(0, 60), st.floats(0, 1.5)),
    max_size=8,
)


def allowed(d: Decision, policy: ActionPolicy) -> bool:
    t = tag(d)
    if t in policy.deny_decisions or (
        policy.allow_decisions is not None and t not in policy.allow_decisions
    ):
        return False
    if isinstance(d, InvokeTool):
        tools = policy.allow_tools
        return d.tool not in policy.deny_tools and (tools is None or d.tool in tools)
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(limits_st, policies_st, rounds_st)
def test_accepted_decisions_never_exceed_any_limit(
    limits: ResourceLimits, policy: ActionPolicy, rounds: list[Any]
) -> None:
    usage = AgentUsage(started_at=T0)
    now = T0
    one_at_a_time = msgspec.structs.replace(limits, max_decisions_per_call=None)
    for decisions, step, tokens, cost in rounds:
        over_before = (
            (limits.max_tokens is not None and usage.tokens > limits.max_tokens)
            or (limits.max_cost is not None and usage.cost > limits.max_cost)
            or (limits.max_wall_time_s is not None and now - T0 > limits.max_wall_time_s)
        )
        before = repr(usage), usage.claimed_task_ids, usage.messages_in_window(now)
        violations = validate_safety(decisions, limits=limits, policy=policy, usage=usage, now=now)
        assert (repr(usage), usage.claimed_task_ids, usage.messages_in_window(now)) == before
        assert all(v.rule in SAFETY_RULES for v in violations)
        indexes = [v.index for v in violations]
        assert indexes == sorted(set(indexes))  # one violation per decision, in order
        ok = accepted(decisions, violations)

        # The same verdicts as checking each decision alone after applying the accepted ones.
        if indexes != [-1]:
            shadow, expected = copy.deepcopy(usage), []
            for i, d in enumerate(decisions):
                alone = validate_safety(
                    [d], limits=one_at_a_time, policy=policy, usage=shadow, now=now
                )
                if alone:
                    expected.append((i, alone[0].rule))
                else:
                    shadow.apply(d, now)
            assert [(v.index, v.rule) for v in violations] == expected

        assert all(allowed(d, policy) for d in ok)
        if over_before:
            assert ok == []
        if limits.max_decisions_per_call is not None:
            assert len(ok) <= limits.max_decisions_per_call
        for d in ok:
            usage.apply(d, now)
        assert limits.max_claimed_tasks is None or usage.claimed_tasks <= limits.max_claimed_tasks
        assert limits.max_tool_calls is None or usage.tool_calls <= limits.max_tool_calls
        rate = limits.max_messages_per_second
        assert rate is None or usage.messages_in_window(now) <= rate
        usage.add_usage(tokens=tokens, cost=cost)
        now += step


# --- decisions built in process with fields of the wrong type ------------------------------------

MALFORMED: list[Any] = [
    ClaimTask(task_id=["not", "an", "id"]),
    ReportTask(task_id={"t": 1}),
    FailTask(task_id="t", reason=None),
    InvokeTool(tool=["search"]),
    SendMessage(kind=5, topic="room"),
    SendMessage(kind="chat", topic="room", payload=object()),
    SendMessage(kind="chat", topic="room", payload={"x": 2**70}),
    SubmitTask(objective="o", priority="high"),
    SubmitBid(auction_id="a", amount="cheap"),
    JoinPool(pool_id=3),
]


def test_a_decision_with_a_field_of_the_wrong_type_is_refused_not_raised() -> None:
    """Building a struct checks no type: ``InvokeTool(tool=[...])`` once raised TypeError (an
    unhashable list) from the tool lists, ``ClaimTask(task_id=[...])`` from the claim count."""
    limits = ResourceLimits(max_claimed_tasks=3, max_tool_calls=3, max_messages_per_second=3)
    policy = ActionPolicy(deny_tools=frozenset({"rm"}), allow_tools=frozenset({"search"}))
    for kwargs in ({}, {"limits": limits, "policy": policy}):
        got = check([*MALFORMED, ClaimTask(task_id="ok")], **kwargs)  # type: ignore[arg-type]
        assert got == [(i, "decision_malformed") for i in range(len(MALFORMED))]
    [violation] = validate_safety(
        [MALFORMED[0]], limits=limits, policy=policy, usage=AgentUsage(T0), now=T0
    )
    assert "task_id" in violation.detail


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(ONE_OF_EACH),
            st.dictionaries(
                st.text(max_size=12),
                st.none()
                | st.integers()
                | st.text(max_size=3)
                | st.lists(st.integers())
                | st.builds(object),
                max_size=2,
            ),
        ),
        max_size=6,
    ),
    limits_st,
    policies_st,
)
def test_validate_safety_never_raises_whatever_a_decision_holds(
    cases: list[tuple[Decision, dict[str, Any]]], limits: ResourceLimits, policy: ActionPolicy
) -> None:
    decisions = []
    for decision, changes in cases:
        fields = {k: v for k, v in changes.items() if k in decision.__struct_fields__}
        try:
            decisions.append(msgspec.structs.replace(decision, **fields))
        except ValidationError:
            continue  # refused when built (a SendMessage's addressing)
    usage = AgentUsage(started_at=T0)
    violations = validate_safety(decisions, limits=limits, policy=policy, usage=usage, now=T0)
    for d in accepted(decisions, violations):
        msgspec.msgpack.decode(msgspec.msgpack.encode(d), type=type(d))  # each one is well-typed
        usage.apply(d, T0)


# --- default rates -------------------------------------------------------------------------------


def test_the_default_limits_bound_the_rates_and_none_is_unlimited() -> None:
    limits = ResourceLimits()
    assert (limits.max_messages_per_second, limits.max_decide_calls_per_second) == (10_000, 1_000)
    assert check([msg()] * 10_000) == []  # one call may message 10,000 agents
    assert check([msg()] * 10_001) == [(10_000, "max_messages_per_second")]
    unlimited = ResourceLimits(max_messages_per_second=None, max_decide_calls_per_second=None)
    assert check([msg()] * 20_000, limits=unlimited) == []


def test_decide_delay_waits_for_the_oldest_call_to_leave_the_window() -> None:
    usage = AgentUsage(started_at=T0)
    for i in range(3):
        assert usage.decide_delay(3, T0 + i * 0.25) == 0.0
        usage.record_decide(T0 + i * 0.25)
    assert usage.decide_calls_in_window(T0 + 0.5) == 3
    assert usage.decide_delay(3, T0 + 0.5) == pytest.approx(0.5)  # the first leaves at T0 + 1
    assert usage.decide_delay(3, T0 + 1.0) == 0.0
    assert usage.decide_delay(None, T0 + 0.5) == 0.0
    assert usage.decide_delay(0, T0) == math.inf


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 0.3), max_size=60), st.integers(1, 8))
def test_calls_made_when_decide_delay_allows_never_exceed_the_rate(
    steps: list[float], limit: int
) -> None:
    usage = AgentUsage(started_at=T0)
    now, made = T0, []
    for step in steps:
        now += step
        now += usage.decide_delay(limit, now)  # wait as the runtime does, then call
        usage.record_decide(now)
        made.append(now)
        assert sum(1 for t in made if now - 1.0 < t <= now) <= limit
