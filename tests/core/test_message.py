"""Messages, and the replay guard that rejects stale and replayed ones."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converge.core import ManualClock, Message, ReplayGuard
from converge.errors import ReplayedMessage, StaleMessage, ValidationError
from tests.strategies import DIDS, IDENTITIES

A, B, C, _ = IDENTITIES
WINDOW = 60.0


def guard(max_entries: int = 1000, start: float = 1_000_000.0) -> tuple[ReplayGuard, ManualClock]:
    clock = ManualClock(start)
    return ReplayGuard(window_s=WINDOW, max_entries=max_entries, clock=clock), clock


# -- Message ---------------------------------------------------------------------------------------


def test_message_needs_exactly_one_of_recipient_and_topic() -> None:
    Message(kind="k", topic="t")
    Message(kind="k", recipient=B.did)
    with pytest.raises(ValidationError) as info:
        Message(kind="k")
    assert info.value.field == "topic"
    with pytest.raises(ValidationError) as info:
        Message(kind="k", topic="t", recipient=B.did)
    assert info.value.field == "recipient"


def test_message_needs_a_kind() -> None:
    with pytest.raises(ValidationError) as info:
        Message(kind="", topic="t")
    assert info.value.field == "kind"


def test_new_messages_get_distinct_ids_and_nonces() -> None:
    msgs = [Message(kind="k", topic="t") for _ in range(100)]
    assert len({m.id for m in msgs}) == 100
    assert len({m.nonce for m in msgs}) == 100


def test_reply_goes_back_to_the_sender_in_the_same_trace() -> None:
    question = Message(kind="ask", topic="market", trace_id="trace-1").sign(A)
    answer = question.reply("answer", {"ok": True})
    assert answer.recipient == A.did
    assert answer.topic is None
    assert answer.trace_id == "trace-1"
    assert answer.parent_id == question.id
    assert answer.kind == "answer"
    assert answer.payload == {"ok": True}
    assert answer.signature is None
    answer.sign(B).verify()


# -- ReplayGuard -----------------------------------------------------------------------------------


def test_guard_accepts_a_message_once_and_rejects_its_replay() -> None:
    g, clock = guard()
    msg = Message(kind="k", topic="t", created_at=clock.now()).sign(A)
    g.check(msg)
    assert len(g) == 1
    with pytest.raises(ReplayedMessage) as info:
        g.check(msg)
    assert info.value.reason == "replayed"
    assert info.value.field == "nonce"
    assert msg.nonce in str(info.value)


def test_same_nonce_from_another_sender_is_not_a_replay() -> None:
    g, clock = guard()
    g.check_values(A.did, "n1", clock.now())
    g.check_values(B.did, "n1", clock.now())
    with pytest.raises(ReplayedMessage):
        g.check_values(B.did, "n1", clock.now())


@pytest.mark.parametrize("offset", [-WINDOW - 0.001, WINDOW + 0.001, -1e9, 1e9])
def test_guard_rejects_messages_outside_the_window(offset: float) -> None:
    g, clock = guard()
    msg = Message(kind="k", topic="t", created_at=clock.now() + offset).sign(A)
    with pytest.raises(StaleMessage) as info:
        g.check(msg)
    assert info.value.reason == "stale"
    assert info.value.field == "created_at"
    assert len(g) == 0


@pytest.mark.parametrize("offset", [-WINDOW, WINDOW, 0.0])
def test_guard_accepts_messages_at_the_edges_of_the_window(offset: float) -> None:
    g, clock = guard()
    g.check_values(A.did, "n", clock.now() + offset)


def test_guard_forgets_nonces_after_the_window_but_still_refuses_their_replay() -> None:
    g, clock = guard()
    sent_at = clock.now()
    g.check_values(A.did, "old", sent_at)
    clock.advance(WINDOW + 1)
    g.check_values(A.did, "new", clock.now())
    assert len(g) == 1  # "old" was forgotten
    with pytest.raises(StaleMessage):
        g.check_values(A.did, "old", sent_at)


def test_guard_keeps_a_future_dated_nonce_until_it_leaves_the_window() -> None:
    g, clock = guard()
    sent_at = clock.now() + WINDOW  # as far ahead as the window allows
    g.check_values(A.did, "ahead", sent_at)
    clock.advance(2 * WINDOW)  # the message is now exactly at the far edge of the window
    with pytest.raises(ReplayedMessage):
        g.check_values(A.did, "ahead", sent_at)
    clock.advance(0.001)
    with pytest.raises(StaleMessage):
        g.check_values(A.did, "ahead", sent_at)


def test_full_guard_stays_bounded_and_refuses_replays_of_what_it_forgot() -> None:
    g, clock = guard(max_entries=3)
    now = clock.now()
    times = [now - 50, now - 40, now - 30, now - 20, now - 10]
    for i, t in enumerate(times):
        g.check_values(A.did, f"n{i}", t)
        assert len(g) <= 3
    assert len(g) == 3
    # n0 and n1 were forgotten; their replays fall below the floor and are refused as stale.
    for i in (0, 1):
        with pytest.raises(StaleMessage, match="full"):
            g.check_values(A.did, f"n{i}", times[i])
    # Remembered ones are still replays.
    for i in (2, 3, 4):
        with pytest.raises(ReplayedMessage):
            g.check_values(A.did, f"n{i}", times[i])
    # A fresh message of A's older than its floor is refused too, one newer is accepted.
    with pytest.raises(StaleMessage):
        g.check_values(A.did, "fresh-old", now - 45)
    g.check_values(A.did, "fresh-new", now - 5)
    # A's floor is A's alone: another sender's message as old is accepted.
    g.check_values(B.did, "as-old", now - 45)
    assert len(g) == 3
    assert g.floor == float("-inf")


@pytest.mark.parametrize(("window_s", "max_entries"), [(0, 10), (-1, 10), (10, 0), (10, -5)])
def test_guard_needs_a_positive_window_and_size(window_s: float, max_entries: int) -> None:
    with pytest.raises(ValidationError):
        ReplayGuard(window_s=window_s, max_entries=max_entries, clock=ManualClock())


_senders = st.sampled_from([A.did, B.did, C.did])
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("new"), _senders, st.floats(-1.5 * WINDOW, 1.5 * WINDOW)),
        st.tuples(st.just("replay"), st.integers(0, 1000)),
        st.tuples(st.just("reuse_nonce"), st.integers(0, 1000), st.floats(-WINDOW, WINDOW)),
        st.tuples(st.just("advance"), st.floats(0, 2 * WINDOW)),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(_ops, st.integers(min_value=1, max_value=8))
def test_no_message_is_ever_accepted_twice(ops: list[tuple], max_entries: int) -> None:
    g, clock = guard(max_entries=max_entries)
    sent: list[tuple[str, str, float]] = []
    accepted: set[tuple[str, str, float]] = set()
    nonces = (f"n{i}" for i in itertools.count())
    for op in ops:
        if op[0] == "advance":
            clock.advance(op[1])
            continue
        if op[0] == "new":
            msg = (op[1], next(nonces), clock.now() + op[2])
        elif not sent:
            continue
        elif op[0] == "replay":
            msg = sent[op[1] % len(sent)]
        else:  # the sender reuses an old nonce in a new (differently timed) message
            old = sent[op[1] % len(sent)]
            msg = (old[0], old[1], clock.now() + op[2])
        sent.append(msg)
        try:
            g.check_values(*msg)
        except (StaleMessage, ReplayedMessage):
            pass
        else:
            assert msg not in accepted, f"{msg} accepted twice"
            accepted.add(msg)
        assert len(g) <= max_entries


@settings(max_examples=150, deadline=None)
@given(_ops)
def test_guard_that_never_fills_matches_a_reference_model(ops: list[tuple]) -> None:
    """Without evictions: accept iff inside the window and the nonce is not remembered, where a
    nonce is remembered while its message's timestamp is inside the window."""
    g, clock = guard(max_entries=10_000)
    sent: list[tuple[str, str, float]] = []
    remembered: dict[tuple[str, str], float] = {}
    nonces = (f"n{i}" for i in itertools.count())
    for op in ops:
        if op[0] == "advance":
            clock.advance(op[1])
            continue
        now = clock.now()
        if op[0] == "new":
            msg = (op[1], next(nonces), now + op[2])
        elif not sent:
            continue
        elif op[0] == "replay":
            msg = sent[op[1] % len(sent)]
        else:
            old = sent[op[1] % len(sent)]
            msg = (old[0], old[1], now + op[2])
        sent.append(msg)
        remembered = {k: t for k, t in remembered.items() if t >= now - WINDOW}
        sender, nonce, at = msg
        if not now - WINDOW <= at <= now + WINDOW:
            expected: type[Exception] | None = StaleMessage
        elif (sender, nonce) in remembered:
            expected = ReplayedMessage
        else:
            expected = None
            remembered[(sender, nonce)] = at
        if expected is None:
            g.check_values(*msg)
        else:
            with pytest.raises(expected):
                g.check_values(*msg)
        assert len(g) == len(remembered)


# -- ReplayGuard against hostile senders (floor poisoning, sybils) ------------------------------


def test_one_sender_flooding_messages_dated_ahead_refuses_no_other_sender() -> None:
    """The floor-poisoning attack: one fresh identity sends more than ``max_entries`` authentic
    messages dated just inside the future edge of the window; once evictions raised the shared
    floor to those dates, every honest sender was refused as stale for the whole window."""
    g, clock = guard(max_entries=50)
    mallory = "did:key:mallory"
    for i in range(3 * g.max_entries):
        try:
            g.check_values(mallory, f"m{i}", clock.now() + WINDOW - 1)
        except StaleMessage:
            pass  # dated ahead while the guard holds its share of those: refused, as it should
    for i in range(20):
        g.check_values(f"did:key:honest{i}", "n", clock.now() - i)  # made up to 20 s ago
    assert g.floor <= clock.now()
    assert len(g) <= g.max_entries


def test_one_sender_flooding_at_any_date_refuses_no_other_sender() -> None:
    g, clock = guard(max_entries=50)
    honest = [f"did:key:honest{i}" for i in range(10)]
    for i, who in enumerate(honest):
        g.check_values(who, "first", clock.now() - 30 + i)
    for i in range(500):  # one sender, dates all over the window, and its own replays
        with contextlib.suppress(StaleMessage, ReplayedMessage):
            g.check_values("did:key:mallory", f"m{i % 200}", clock.now() + (i * 7919 % 119) - 59)
        if i % 50 == 0:
            clock.advance(1)
            for who in honest:  # each honest sender's next message, in order
                g.check_values(who, f"n{i}", clock.now() - 2)
    assert g.floor == float("-inf")  # one sender never raises the shared floor
    for who in honest:
        with pytest.raises(ReplayedMessage):  # and its flood evicted none of theirs
            g.check_values(who, "n450", clock.now() - 3)


def test_many_senders_keep_the_shared_floor_behind_the_clock() -> None:
    """Sybils: identities are cheap, so an attacker can hold the guard full of one nonce per
    identity. The shared floor then rises, but never past the receiver's clock, and memory
    stays bounded by ``max_entries`` whatever the number of senders."""
    g, clock = guard(max_entries=50)
    for i in range(2000):
        offset = (i * 7919 % 121) - 60  # anywhere in the window, ahead of the clock too
        with contextlib.suppress(StaleMessage):
            g.check_values(f"did:key:sybil{i}", "n", clock.now() + offset)
        assert g.floor <= clock.now()
        assert len(g) <= g.max_entries and g.senders <= g.max_entries
        if i % 100 == 99:
            clock.advance(0.5)
    clock.advance(0.001)
    g.check_values("did:key:honest", "n", clock.now())  # a message made after the flood passes


def test_a_full_guard_keeps_its_internal_queues_bounded() -> None:
    clock = ManualClock(1_000_000.0)
    g = ReplayGuard(window_s=WINDOW, max_entries=10, clock=clock, max_ahead=10)
    for i in range(5):
        g.check_values(B.did, f"b{i}", clock.now())
    for i in range(5000):  # A holds the most: each message evicts its own oldest, dated ahead
        g.check_values(A.did, f"n{i}", clock.now() + 30)
        clock.advance(0.001)
    assert len(g) == 10
    # Forgotten nonces leave the heaps lazily, but never pile up beyond twice the live ones.
    assert len(g._queue) <= 2 * g.max_entries + 1024
    assert len(g._ahead) <= 2 * g.max_ahead + 1024


@pytest.mark.parametrize(
    ("sender", "nonce", "created_at", "field"),
    [
        (A.did, ["a", "list"], 1_000_000.0, "nonce"),
        (A.did, {"a": 1}, 1_000_000.0, "nonce"),
        (A.did, "n", "yesterday", "created_at"),
        (A.did, "n", None, "created_at"),
        (A.did, "n", True, "created_at"),
        (["x"], "n", 1_000_000.0, "sender"),
        (b"did", "n", 1_000_000.0, "sender"),
    ],
)
def test_the_guard_refuses_fields_of_the_wrong_type(
    sender: object, nonce: object, created_at: object, field: str
) -> None:
    g, _ = guard()
    with pytest.raises(ValidationError) as info:
        g.check_values(sender, nonce, created_at)  # type: ignore[arg-type]
    assert info.value.field == field
    assert len(g) == 0


def test_max_ahead_is_checked() -> None:
    for bad in (0, -1, 11, 2.5, True):
        with pytest.raises(ValidationError) as info:
            ReplayGuard(max_entries=10, max_ahead=bad)  # type: ignore[arg-type]
        assert info.value.field == "max_ahead"
    assert ReplayGuard(max_entries=10).max_ahead == 1
    assert ReplayGuard().max_ahead == 10_000


_crowd = st.sampled_from([*DIDS, *(f"did:key:sybil{i}" for i in range(12))])
_crowd_ops = st.lists(
    st.one_of(
        st.tuples(st.just("new"), _crowd, st.floats(-1.5 * WINDOW, 1.5 * WINDOW)),
        st.tuples(st.just("replay"), st.integers(0, 1000)),
        st.tuples(st.just("reuse_nonce"), st.integers(0, 1000), st.floats(-WINDOW, WINDOW)),
        st.tuples(st.just("advance"), st.floats(0, 2 * WINDOW)),
    ),
    max_size=120,
)


@settings(max_examples=200, deadline=None)
@given(_crowd_ops, st.integers(min_value=1, max_value=8), st.data())
def test_under_many_senders_the_guard_stays_safe_bounded_and_behind_the_clock(
    ops: list[tuple], max_entries: int, data: st.DataObject
) -> None:
    max_ahead = data.draw(st.integers(1, max_entries))
    clock = ManualClock(1_000_000.0)
    g = ReplayGuard(window_s=WINDOW, max_entries=max_entries, clock=clock, max_ahead=max_ahead)
    sent: list[tuple[str, str, float]] = []
    accepted: set[tuple[str, str, float]] = set()
    nonces = (f"n{i}" for i in itertools.count())
    for op in ops:
        if op[0] == "advance":
            clock.advance(op[1])
            continue
        if op[0] == "new":
            msg = (op[1], next(nonces), clock.now() + op[2])
        elif not sent:
            continue
        elif op[0] == "replay":
            msg = sent[op[1] % len(sent)]
        else:
            old = sent[op[1] % len(sent)]
            msg = (old[0], old[1], clock.now() + op[2])
        sent.append(msg)
        try:
            g.check_values(*msg)
        except (StaleMessage, ReplayedMessage):
            pass
        else:
            assert msg not in accepted, f"{msg} accepted twice"
            accepted.add(msg)
        assert len(g) <= max_entries and g.senders <= max_entries
        assert g.floor <= clock.now()
        assert g._ahead_count <= max_ahead


_honest = [f"did:key:honest{i}" for i in range(4)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("mallory"), st.floats(-WINDOW, WINDOW), st.integers(0, 30)),
            st.tuples(st.just("honest"), st.sampled_from(_honest), st.floats(0, WINDOW / 2)),
            st.tuples(st.just("advance"), st.floats(0, WINDOW / 4)),
        ),
        max_size=150,
    ),
    st.integers(min_value=len(_honest) + 1, max_value=12),
)
def test_one_sender_cannot_make_an_honest_senders_in_order_message_refused(
    ops: list[tuple], max_entries: int
) -> None:
    """Whatever one sender sends (any date in the window, its own replays, far more than the
    guard holds), each honest message — dated after its sender's previous one, not ahead of
    the clock, delivered within half the window — is accepted."""
    g, clock = guard(max_entries=max_entries)
    last = dict.fromkeys(_honest, float("-inf"))
    counter = itertools.count()
    for op in ops:
        if op[0] == "advance":
            clock.advance(op[1])
        elif op[0] == "mallory":
            with contextlib.suppress(StaleMessage, ReplayedMessage):
                g.check_values("did:key:mallory", f"m{op[2]}", clock.now() + op[1])
        else:
            who, delay = op[1], op[2]
            at = max(clock.now() - delay, last[who] + 0.001)
            if at > clock.now():
                continue
            g.check_values(who, f"h{next(counter)}", at)  # never raises
            last[who] = at
