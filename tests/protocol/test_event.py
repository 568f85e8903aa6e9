"""Events: the entries of the log."""

from __future__ import annotations

import re

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converge.errors import ValidationError
from converge.protocol import Event, from_json, from_msgpack, to_json, to_msgpack
from converge.protocol.event import EVENT_KIND_PATTERN


def test_event_defaults() -> None:
    event = Event(kind="task.claimed", trace_id="t1", subject="task-1", data={"lease_s": 30})
    assert event.seq == 0
    assert event.id
    assert event.parent_id is None
    assert event.actor == ""
    assert from_msgpack(to_msgpack(event)) == event
    assert msgspec.json.decode(to_json(event))["type"] == "event"


@pytest.mark.parametrize(
    "kind", ["task.claimed", "intent.published", "offer.rejected", "a.b.c", "run_1.node_2"]
)
def test_dotted_lower_case_kinds_are_accepted(kind: str) -> None:
    data = to_json(Event(kind=kind, trace_id="t"))
    assert from_json(data, Event).kind == kind


@pytest.mark.parametrize(
    "kind", ["", "task", "Task.claimed", "task.", ".task", "task..claimed", "task.1st", "a-b.c"]
)
def test_other_kinds_are_refused_when_decoded(kind: str) -> None:
    with pytest.raises(ValidationError) as info:
        from_json(msgspec.json.encode({"type": "event", "kind": kind, "trace_id": "t"}))
    assert info.value.field == "kind"


@settings(max_examples=300)
@given(st.text(alphabet="ab1_.-A", max_size=10))
def test_kind_check_agrees_with_the_documented_rule(kind: str) -> None:
    parts = kind.split(".")
    documented = len(parts) >= 2 and all(
        p and p[0].islower() and all(c.islower() or c.isdigit() or c == "_" for c in p)
        for p in parts
    )
    assert bool(re.match(EVENT_KIND_PATTERN, kind)) == documented
    data = msgspec.json.encode({"type": "event", "kind": kind, "trace_id": "t"})
    if documented:
        assert from_json(data, Event).kind == kind
    else:
        with pytest.raises(ValidationError):
            from_json(data, Event)


def test_trace_id_is_required() -> None:
    with pytest.raises(ValidationError, match="trace_id"):
        from_json(b'{"type": "event", "kind": "a.b"}')
