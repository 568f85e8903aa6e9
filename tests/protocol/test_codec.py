"""The protocol codec: JSON, MessagePack, sealed bytes and JSON Schema, strict on the way in."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converge.core import Message, Signed
from converge.errors import ConvergeError, ProtocolError, ValidationError
from converge.protocol import (
    OBJECT_TYPES,
    Attestation,
    Event,
    Intent,
    Offer,
    Receipt,
    TaskDone,
    TaskProgress,
    TaskStart,
    from_json,
    from_msgpack,
    json_schema,
    seal,
    to_json,
    to_msgpack,
    unseal,
)
from tests.refusal import converge_errors_only
from tests.strategies import (
    IDENTITIES,
    any_text,
    attestations,
    events,
    intents,
    json_objects,
    json_values,
    messages,
    msgpack_objects,
    msgpack_values,
    offers,
    receipts,
    task_dones,
    task_progresses,
    task_starts,
)

ROUND_TRIP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# (class, strategy for JSON-safe instances, strategy for MessagePack instances)
STRATEGIES: list[tuple[type[Any], Callable[[bool], st.SearchStrategy[Any]]]] = [
    (Intent, lambda j: intents(json_objects if j else msgpack_objects)),
    (Offer, lambda j: offers(json_objects if j else msgpack_objects)),
    (TaskStart, lambda j: task_starts(json_objects if j else msgpack_objects)),
    (TaskProgress, lambda j: task_progresses(json_objects if j else msgpack_objects)),
    (TaskDone, lambda j: task_dones(json_values if j else msgpack_values)),
    (Receipt, lambda j: receipts()),
    (Attestation, lambda j: attestations(json_objects if j else msgpack_objects)),
    (Event, lambda j: events(json_objects if j else msgpack_objects)),
    (Message, lambda j: messages(json_values if j else msgpack_values)),
]
BY_NAME = {cls.__name__: strategy for cls, strategy in STRATEGIES}


def test_object_types_are_every_protocol_object() -> None:
    assert set(OBJECT_TYPES) == {
        "intent",
        "offer",
        "task_start",
        "task_progress",
        "task_done",
        "receipt",
        "attestation",
        "event",
        "message",
    }
    assert {cls.__name__ for cls in OBJECT_TYPES.values()} == set(BY_NAME)


# -- round trips -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_json_round_trip(name: str) -> None:
    @ROUND_TRIP
    @given(BY_NAME[name](True))
    def check(obj: Any) -> None:
        data = to_json(obj)
        assert from_json(data, type(obj)) == obj
        assert from_json(data) == obj  # picked by its "type" tag
        assert from_json(data.decode()) == obj  # str is accepted too
        assert msgspec.json.decode(data)["type"] == type(obj).__struct_config__.tag

    check()


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_msgpack_round_trip(name: str) -> None:
    @ROUND_TRIP
    @given(BY_NAME[name](False))
    def check(obj: Any) -> None:
        data = to_msgpack(obj)
        assert from_msgpack(data, type(obj)) == obj
        assert from_msgpack(data) == obj

    check()


SIGNED = [cls for cls, _ in STRATEGIES if issubclass(cls, Signed)]


@pytest.mark.parametrize("cls", SIGNED, ids=lambda c: c.__name__)
def test_sealed_round_trip(cls: type[Any]) -> None:
    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(BY_NAME[cls.__name__](False), st.sampled_from(IDENTITIES), st.data())
    def check(obj: Any, signer: Any, data: st.DataObject) -> None:
        unsigned = msgspec.structs.replace(obj, **{f: None for f, _ in cls.__signers__})
        if len(cls.__signers__) == 1:
            signed = unsigned.sign(signer)
        else:  # a countersigned object: the second signer is named before anyone signs
            second = data.draw(st.sampled_from(IDENTITIES))
            unsigned = msgspec.structs.replace(unsigned, **{cls.__signers__[1][1]: second.did})
            signed = unsigned.sign(signer).sign(second, 1)
        assert signed.is_signed
        assert getattr(signed, cls.__signers__[0][1]) == signer.did
        assert unseal(seal(signed), cls) == signed

    check()


# -- strict decoding -------------------------------------------------------------------------------


EXAMPLES: dict[type[Any], Any] = {
    Intent: Intent(goal="summarize the report", capability="summarize>=1"),
    Offer: Offer(intent_id="i1", capability="summarize@1.2", cost=0.5, quality=0.9),
    TaskStart: TaskStart(task_id="t1", executor=IDENTITIES[1].did),
    TaskProgress: TaskProgress(task_id="t1", seq=0, progress=0.5),
    TaskDone: TaskDone(task_id="t1", status="completed", output="ok"),
    Receipt: Receipt(
        task_id="t1",
        executor=IDENTITIES[1].did,
        requester=IDENTITIES[2].did,
        status="completed",
        output_digest="0" * 64,
    ),
    Attestation: Attestation(subject="r1", claim="verified_output"),
    Event: Event(kind="task.claimed", trace_id="tr1"),
    Message: Message(kind="chat", topic="room"),
}


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=lambda c: c.__name__)
@pytest.mark.parametrize("untyped", [False, True])
def test_unknown_fields_are_refused(cls: type[Any], untyped: bool) -> None:
    data = msgspec.to_builtins(EXAMPLES[cls])
    data["colour"] = "red"
    target = None if untyped else cls
    for decode, encoded in (
        (from_json, msgspec.json.encode(data)),
        (from_msgpack, msgspec.msgpack.encode(data)),
    ):
        with pytest.raises(ValidationError) as info:
            decode(encoded, target)
        assert info.value.field == "colour"


def test_unknown_nested_field_is_named_with_its_path() -> None:
    data = msgspec.to_builtins(EXAMPLES[Intent])
    data["constraints"] = {"max_cost": 1.0, "colour": "red"}
    with pytest.raises(ValidationError) as info:
        from_json(msgspec.json.encode(data))
    assert info.value.field == "constraints.colour"


def test_decoding_picks_the_type_by_tag() -> None:
    for cls, obj in EXAMPLES.items():
        assert type(from_json(to_json(obj))) is cls
        assert type(from_msgpack(to_msgpack(obj))) is cls


@pytest.mark.parametrize(
    "data", [{"type": "bogus"}, {"type": 7}, {"type": "offer_v2", "intent_id": "i"}]
)
def test_unknown_type_tag_is_a_validation_error_naming_type(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        from_json(msgspec.json.encode(data))
    assert info.value.field == "type"


def test_object_of_another_type_is_refused_when_a_class_is_given() -> None:
    with pytest.raises(ValidationError, match="offer"):
        from_json(to_json(EXAMPLES[Offer]), Intent)


_OUT_OF_RANGE = [
    (Offer, {"cost": -0.01}, "cost"),
    (Offer, {"quality": 1.01}, "quality"),
    (Offer, {"quality": -0.5}, "quality"),
    (Offer, {"reliability": 2.0}, "reliability"),
    (Offer, {"latency_s": -1.0}, "latency_s"),
    (Offer, {"cost": "cheap"}, "cost"),
    (TaskProgress, {"progress": 1.5}, "progress"),
    (TaskProgress, {"progress": -0.1}, "progress"),
    (TaskProgress, {"seq": -1}, "seq"),
    (Intent, {"constraints": {"max_cost": -5}}, "constraints.max_cost"),
    (Intent, {"constraints": {"min_quality": 1.2}}, "constraints.min_quality"),
    (Intent, {"bid_window_s": 0}, "bid_window_s"),
    (TaskDone, {"usage": {"tokens_in": -1}}, "usage.tokens_in"),
    (TaskDone, {"usage": {"cost": -1.0}}, "usage.cost"),
    (TaskDone, {"status": "exploded"}, "status"),
    (Receipt, {"cost": -1}, "cost"),
    (Event, {"kind": "Task.Claimed"}, "kind"),
    (Event, {"kind": "claimed"}, "kind"),
    (Event, {"seq": "first"}, "seq"),
    (Message, {"signature": "not base64!"}, "signature"),
]


@pytest.mark.parametrize(
    ("cls", "change", "field"),
    _OUT_OF_RANGE,
    ids=[f"{c.__name__}-{f}" for c, _, f in _OUT_OF_RANGE],
)
def test_out_of_range_values_are_validation_errors_naming_the_field(
    cls: type[Any], change: dict[str, Any], field: str
) -> None:
    data = {**msgspec.to_builtins(EXAMPLES[cls]), **change}
    for decode, encoded in (
        (from_json, msgspec.json.encode(data)),
        (from_msgpack, msgspec.msgpack.encode(data)),
    ):
        for target in (cls, None):
            with pytest.raises(ValidationError) as info:
                decode(encoded, target)
            assert info.value.field == field


@pytest.mark.parametrize(
    ("cls", "kwargs", "field"),
    [
        (Offer, {"intent_id": "i", "capability": "c", "cost": -1.0}, "cost"),
        (Offer, {"intent_id": "i", "capability": "c", "cost": 1.0, "quality": 1.5}, "quality"),
        (Offer, {"intent_id": "i", "capability": "c", "cost": math.nan}, "cost"),
        (TaskProgress, {"task_id": "t", "seq": 0, "progress": 1.01}, "progress"),
        (TaskProgress, {"task_id": "t", "seq": -1, "progress": 0.1}, "seq"),
        (Intent, {"goal": "", "capability": "c"}, "goal"),
        (Intent, {"goal": "g", "capability": ""}, "capability"),
        (Intent, {"goal": "g", "capability": "c", "bid_window_s": 0.0}, "bid_window_s"),
        (TaskDone, {"task_id": "t", "status": "failed"}, "error"),
    ],
)
def test_constructing_an_out_of_range_object_names_the_field(
    cls: type[Any], kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        cls(**kwargs)
    assert info.value.field == field


def test_bad_value_inside_a_dict_field_names_the_field() -> None:
    data = {**msgspec.to_builtins(EXAMPLES[Intent]), "utility": {"cost": "high"}}
    with pytest.raises(ValidationError) as info:
        from_json(msgspec.json.encode(data))
    assert info.value.field is not None
    assert info.value.field.startswith("utility")


_POST_INIT_CHECKS = [
    (Receipt, {"output_digest": "abc"}, "output_digest"),
    (Receipt, {"output_digest": "A" * 64}, "output_digest"),
    (Intent, {"goal": ""}, "goal"),
    (TaskDone, {"status": "failed"}, "error"),
]


@pytest.mark.parametrize(
    ("cls", "change", "field"),
    _POST_INIT_CHECKS,
    ids=[f"{c.__name__}-{f}-{i}" for i, (c, _, f) in enumerate(_POST_INIT_CHECKS)],
)
def test_decoded_value_refused_by_a_post_init_check_is_named_in_the_message(
    cls: type[Any], change: dict[str, Any], field: str
) -> None:
    data = msgspec.json.encode({**msgspec.to_builtins(EXAMPLES[cls]), **change})
    with pytest.raises(ValidationError, match=f"`{field}`"):
        from_json(data, cls)


@pytest.mark.parametrize(
    ("cls", "change", "field"),
    _POST_INIT_CHECKS,
    ids=[f"{c.__name__}-{f}-{i}" for i, (c, _, f) in enumerate(_POST_INIT_CHECKS)],
)
def test_decoded_value_refused_by_a_post_init_check_is_named_in_the_error_attribute(
    cls: type[Any], change: dict[str, Any], field: str
) -> None:
    data = msgspec.json.encode({**msgspec.to_builtins(EXAMPLES[cls]), **change})
    with pytest.raises(ValidationError) as info:
        from_json(data, cls)
    assert info.value.field == field


def test_missing_required_field_is_named_in_the_message() -> None:
    with pytest.raises(ValidationError, match="`intent_id`"):
        from_json(b'{"type": "offer", "capability": "c", "cost": 1}')


def test_missing_required_field_is_named_in_the_error_attribute() -> None:
    with pytest.raises(ValidationError) as info:
        from_json(b'{"type": "offer", "capability": "c", "cost": 1}')
    assert info.value.field == "intent_id"


@pytest.mark.parametrize(
    "data", [b"", b"{", b"not json", b'{"type": "offer"', b"\x00\x01", b'{"type": "offer", }']
)
def test_malformed_json_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        from_json(data)
    with pytest.raises(ProtocolError):
        from_json(data, Offer)


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x81\xa4type", b"\x81"])
def test_malformed_msgpack_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        from_msgpack(data)
    with pytest.raises(ProtocolError):
        from_msgpack(data, Offer)


# Broken input whose valid prefix already has the wrong shape: the decoder may stop at either.
@pytest.mark.parametrize(
    "data", [b"[]", b"3", b'"offer"', b"null", b"{}", b"[1, 2", b'{"type": "offer"} x']
)
def test_json_of_the_wrong_shape_is_refused(data: bytes) -> None:
    for target in (None, Offer):
        with pytest.raises((ProtocolError, ValidationError)):
            from_json(data, target)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_converge_errors(data: bytes) -> None:
    converge_errors_only(lambda: from_json(data))
    converge_errors_only(lambda: from_json(data, Offer))
    converge_errors_only(lambda: from_msgpack(data))
    converge_errors_only(lambda: from_msgpack(data, Receipt))
    converge_errors_only(lambda: unseal(data, Intent))


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(sorted(OBJECT_TYPES)),
    st.dictionaries(
        st.sampled_from(sorted({f for c in OBJECT_TYPES.values() for f in c.__struct_fields__})),
        msgpack_values,
        max_size=6,
    ),
)
def test_arbitrary_objects_with_a_valid_tag_raise_only_converge_errors(
    tag: str, fields: dict[str, Any]
) -> None:
    data = {**fields, "type": tag}
    converge_errors_only(lambda: from_msgpack(msgspec.msgpack.encode(data)))
    json_data = {k: v for k, v in data.items() if not isinstance(v, bytes)}
    try:
        encoded = msgspec.json.encode(json_data)
    except TypeError:  # bytes nested inside a list or dict
        return
    converge_errors_only(lambda: from_json(encoded))


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_arbitrary_text_raises_only_converge_errors(text: str) -> None:
    converge_errors_only(lambda: from_json(text))
    converge_errors_only(lambda: from_json(text, Offer))
    converge_errors_only(
        lambda: from_json(f'{{"type": "event", "kind": "a.b", "trace_id": "{text}"}}')
    )


@pytest.mark.parametrize(
    "text",
    [
        "\ud800",
        '{"type": "event", "kind": "a.b", "trace_id": "\udfff"}',
        '{"type": "offer", "intent_id": "i", "capability": "c\ud83d", "cost": 1}',
    ],
    ids=["alone", "in-a-value", "half-a-pair"],
)
@pytest.mark.parametrize("target", [None, Event, Offer], ids=["any", "event", "offer"])
def test_a_str_with_a_lone_surrogate_is_a_protocol_error(text: str, target: Any) -> None:
    with pytest.raises(ProtocolError, match="surrogate"):
        from_json(text, target)


@pytest.mark.parametrize(
    "call",
    [
        lambda: from_json(5),
        lambda: from_json(None, Offer),
        lambda: from_msgpack("\x80"),
        lambda: from_msgpack(["not bytes"], Offer),
        lambda: unseal("\x91\xc4\x00", Message),
        lambda: unseal(None, Offer),
    ],
    ids=["json-int", "json-none", "msgpack-str", "msgpack-list", "unseal-str", "unseal-none"],
)
def test_input_that_is_not_bytes_is_a_protocol_error(call: Callable[[], Any]) -> None:
    with pytest.raises(ProtocolError):
        call()


@pytest.mark.parametrize(
    "number",
    [b"9" * 5000, b"-" + b"9" * 5000, b"1e999", b"-1e999"],
    ids=["5000-digits", "-5000-digits", "inf", "-inf"],
)
@pytest.mark.parametrize("field", ["seq", "at", "data"])
def test_numbers_out_of_range_are_validation_errors(number: bytes, field: str) -> None:
    value = b'{"x": %s}' % number if field == "data" else number
    data = b'{"type": "event", "kind": "a.b", "trace_id": "t", "%s": %s}' % (field.encode(), value)
    for text in (data, data.decode()):
        with pytest.raises(ValidationError):
            from_json(text)


@pytest.mark.parametrize("decode", [from_json, from_msgpack], ids=["json", "msgpack"])
def test_invalid_utf8_in_a_string_is_a_converge_error(decode: Any) -> None:
    if decode is from_json:
        data = b'{"type": "offer", "intent_id": "\xc3\x28", "capability": "c", "cost": 1}'
    else:
        data = msgspec.msgpack.encode(msgspec.to_builtins(EXAMPLES[Offer]))
        data = data.replace(b"\xa2i1", b"\xa2\xc3\x28")  # intent_id "i1" -> invalid UTF-8
        assert b"\xc3\x28" in data
    with pytest.raises(ConvergeError):
        decode(data)


@pytest.mark.parametrize("decode", [from_json, from_msgpack], ids=["json", "msgpack"])
def test_deeply_nested_data_is_a_converge_error(decode: Any) -> None:
    depth = 5000
    if decode is from_json:
        data = b'{"type": "event", "kind": "a.b", "trace_id": "t", "data": {"x": '
        data += b"[" * depth + b"]" * depth + b"}}"
    else:
        head = msgspec.msgpack.encode({"type": "event", "kind": "a.b", "trace_id": "t"})
        data = bytes([head[0] + 1]) + head[1:] + msgspec.msgpack.encode("data")
        data += b"\x81\xa1x" + b"\x91" * depth + b"\x01"
    with pytest.raises(ConvergeError):
        decode(data)
    if decode is from_json:  # the same as text
        with pytest.raises(ConvergeError):
            decode(data.decode())


# -- encoding --------------------------------------------------------------------------------------


def test_to_json_writes_bytes_as_base64_and_round_trips_them() -> None:
    signed = EXAMPLES[Message].sign(IDENTITIES[0])
    text = to_json(signed).decode()
    assert '"signature":"' in text
    assert from_json(text, Message).signature == signed.signature


def test_unencodable_values_are_validation_errors() -> None:
    with pytest.raises(ValidationError):
        to_json(Message(kind="k", topic="t", payload=object()))
    with pytest.raises(ValidationError):
        to_msgpack(Message(kind="k", topic="t", payload={1, object()}))


def test_to_msgpack_of_an_oversized_int_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        to_msgpack(Message(kind="k", topic="t", payload=2**70))


@pytest.mark.parametrize(
    "obj",
    [
        Message(kind="k", topic="t", payload={"x": math.inf}),
        Offer(intent_id="i", capability="c", cost=math.inf),
    ],
    ids=["payload-inf", "offer-cost-inf"],
)
def test_to_json_never_changes_an_object_silently(obj: Any) -> None:
    try:
        data = to_json(obj)
    except ValidationError:
        return  # refusing, as canonical encoding does, is fine
    assert from_json(data, type(obj)) == obj


# -- JSON Schema -----------------------------------------------------------------------------------


def _check(instance: Any, schema: dict[str, Any], defs: dict[str, Any], path: str = "$") -> None:
    """A small JSON Schema validator for the keywords msgspec emits for these objects."""
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    if "anyOf" in schema:
        errors = []
        for option in schema["anyOf"]:
            try:
                _check(instance, option, defs, path)
                return
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(f"{path}: no option matches: {errors}")
    kind = schema.get("type")
    types = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
        "null": type(None),
    }
    if kind is not None:
        assert isinstance(instance, types[kind]), f"{path}: expected {kind}, got {instance!r}"
        if kind in ("integer", "number"):
            assert not isinstance(instance, bool), f"{path}: expected {kind}, got a bool"
    if "enum" in schema:
        assert instance in schema["enum"], f"{path}: {instance!r} not in {schema['enum']}"
    if "minimum" in schema:
        assert instance >= schema["minimum"], f"{path}: {instance} < {schema['minimum']}"
    if "maximum" in schema:
        assert instance <= schema["maximum"], f"{path}: {instance} > {schema['maximum']}"
    if "exclusiveMinimum" in schema:
        assert instance > schema["exclusiveMinimum"], f"{path}: {instance} too small"
    if kind == "object":
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            assert name in instance, f"{path}: missing {name}"
        if schema.get("additionalProperties") is False:
            extra = set(instance) - set(props)
            assert not extra, f"{path}: unexpected {extra}"
        for name, value in instance.items():
            if name in props:
                _check(value, props[name], defs, f"{path}.{name}")
    if kind == "array" and "items" in schema:
        for i, item in enumerate(instance):
            _check(item, schema["items"], defs, f"{path}[{i}]")


def test_schema_of_all_objects_lists_every_one() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    names = {cls.__name__ for cls in OBJECT_TYPES.values()}
    assert names <= set(schema["$defs"])
    assert {ref["$ref"] for ref in schema["anyOf"]} == {f"#/$defs/{n}" for n in names}
    assert schema["discriminator"]["propertyName"] == "type"
    assert set(schema["discriminator"]["mapping"]) == set(OBJECT_TYPES)
    msgspec.json.encode(schema)  # serializable as it is printed by `converge schema`


def test_schema_of_offer() -> None:
    schema = json_schema("offer")
    assert json_schema("Offer") == schema
    assert json_schema(" offer ") == schema
    offer = schema["$defs"]["Offer"]
    assert offer["required"] == ["type", "intent_id", "capability", "cost"]
    assert set(offer["properties"]) == {"type", *Offer.__struct_fields__}
    assert offer["additionalProperties"] is False
    assert offer["properties"]["cost"]["minimum"] == 0


@pytest.mark.parametrize("tag", sorted(OBJECT_TYPES))
def test_encoded_objects_validate_against_their_schema(tag: str) -> None:
    cls = OBJECT_TYPES[tag]
    schema = json_schema(tag)
    defs = schema["$defs"]
    instance = msgspec.json.decode(to_json(EXAMPLES[cls]))
    _check(instance, schema, defs)
    # The schema refuses what the decoder refuses.
    with pytest.raises(AssertionError):
        _check({**instance, "colour": "red"}, schema, defs)
    for required in defs[cls.__name__]["required"]:
        with pytest.raises(AssertionError):
            _check({k: v for k, v in instance.items() if k != required}, schema, defs)


@pytest.mark.parametrize(
    ("change", "path"),
    [({"cost": -1}, "cost"), ({"quality": 1.5}, "quality"), ({"type": "intent"}, "type")],
)
def test_schema_refuses_out_of_range_offers(change: dict[str, Any], path: str) -> None:
    schema = json_schema("offer")
    instance = {**msgspec.json.decode(to_json(EXAMPLES[Offer])), **change}
    with pytest.raises(AssertionError, match=path):
        _check(instance, schema, schema["$defs"])


@pytest.mark.parametrize("name", ["bogus", "", "offers", "Constraints"])
def test_schema_of_an_unknown_name_lists_the_choices(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        json_schema(name)
    assert info.value.field == "name"
    for tag in OBJECT_TYPES:
        assert tag in str(info.value)
