"""Signed objects: canonical bytes, signatures, countersignatures and the sealed wire form."""

from __future__ import annotations

import math
import string
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converge.core import Identity, ManualClock, Message, ReplayGuard, new_id, signing, unseal
from converge.core import identity as identity_module
from converge.core.signing import canonical_encode
from converge.errors import ConvergeError, ProtocolError, SignatureError, ValidationError
from converge.protocol import Intent, Offer, Receipt, TaskDone
from tests.refusal import converge_errors_only, refused
from tests.strategies import (
    IDENTITIES,
    finite_floats,
    messages,
    msgpack_values,
    non_finite,
    odd_dids,
)

A, B, C, _ = IDENTITIES
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def sealed_message(**payload: Any) -> tuple[Message, bytes]:
    msg = Message(kind="chat", topic="room.a", payload=payload or {"n": 1}).sign(A)
    return msg, msg.seal()


def signed_receipt() -> Receipt:
    done = TaskDone(task_id=new_id(), status="completed", output={"answer": 42}, executor=B.did)
    return Receipt.for_done(done, requester=C.did, cost=1.5).sign_as_executor(B).countersign(C)


# -- round trips -----------------------------------------------------------------------------------


@FAST
@given(messages(), st.sampled_from(IDENTITIES))
def test_signed_message_survives_seal_and_unseal(msg: Message, ident: Identity) -> None:
    signed = msg.sign(ident)
    assert signed.sender == ident.did
    assert signed.is_signed
    signed.verify()
    assert unseal(signed.seal(), Message) == signed


def test_signing_bytes_do_not_depend_on_dict_insertion_order() -> None:
    common = {"kind": "k", "topic": "t", "id": new_id(), "nonce": "n", "created_at": 1.0}
    one = Message(payload={"a": 1, "b": {"x": 1, "y": 2}}, **common).sign(A)
    two = Message(payload={"b": {"y": 2, "x": 1}, "a": 1}, **common).sign(A)
    assert one.body() == two.body()
    assert one.signature == two.signature


def test_body_leaves_signatures_out() -> None:
    msg = Message(kind="k", topic="t", sender=A.did)
    signed = msg.sign(A)
    assert signed.body() == msg.body()
    assert signed.signature is not None
    assert signed.signature not in signed.body()


def test_sign_sets_the_sender_to_the_signer() -> None:
    msg = Message(kind="k", topic="t", sender=B.did).sign(A)
    assert msg.sender == A.did
    msg.verify()


# -- tampering -------------------------------------------------------------------------------------


@FAST
@given(messages(), st.data())
def test_any_single_byte_change_to_sealed_bytes_is_refused(
    msg: Message, data: st.DataObject
) -> None:
    sealed = msg.sign(A).seal()
    index = data.draw(st.integers(min_value=0, max_value=len(sealed) - 1), label="index")
    mask = data.draw(st.integers(min_value=1, max_value=255), label="xor")
    tampered = bytearray(sealed)
    tampered[index] ^= mask
    refused(lambda: unseal(bytes(tampered), Message))


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_every_byte_of_a_sealed_message_and_receipt_is_covered(mask: int) -> None:
    _, sealed_msg = sealed_message(text="hello", values=[1, 2.5, None, True, b"\x00"])
    for cls, sealed in ((Message, sealed_msg), (Receipt, signed_receipt().seal())):
        for index in range(len(sealed)):
            tampered = bytearray(sealed)
            tampered[index] ^= mask
            refused(lambda t=bytes(tampered), c=cls: unseal(t, c))


def test_truncated_or_extended_sealed_bytes_are_refused() -> None:
    _, sealed = sealed_message()
    for end in range(len(sealed)):
        refused(lambda e=end: unseal(sealed[:e], Message))
    refused(lambda: unseal(sealed + b"\x00", Message))


def _other_value(msg: Message, field: str) -> Any:
    current = getattr(msg, field)
    if field == "created_at":
        return current + 0.001
    if field == "signature":
        return bytes([current[0] ^ 1]) + current[1:]
    return {
        "kind": "other",
        "payload": {"n": 2},
        "recipient": C.did,
        "topic": "room.b",
        "sender": B.did,
        "id": new_id(),
        "trace_id": "trace-2",
        "parent_id": "parent-2",
        "nonce": "0" * 24,
    }[field]


@pytest.mark.parametrize("field", Message.__struct_fields__)
def test_changing_any_field_of_a_signed_message_breaks_verify(field: str) -> None:
    common: dict[str, Any] = {"kind": "k", "payload": {"n": 1}, "trace_id": "t"}
    common.update(parent_id="p", nonce="a" * 24)
    if field == "recipient":
        msg = Message(recipient=B.did, **common).sign(A)
    else:
        msg = Message(topic="room.a", **common).sign(A)
    msg.verify()
    tampered = msgspec.structs.replace(msg, **{field: _other_value(msg, field)})
    assert tampered != msg
    with pytest.raises(SignatureError):
        tampered.verify()
    if field != "signature":
        # The same change on the wire: the tampered body with the original signature.
        wire = msgspec.msgpack.encode([tampered.body(), msg.signature])
        with pytest.raises(SignatureError):
            unseal(wire, Message)


def test_message_signed_by_a_but_claiming_sender_b_is_refused() -> None:
    signed = Message(kind="k", topic="t").sign(A)
    forged = msgspec.structs.replace(signed, sender=B.did)
    with pytest.raises(SignatureError) as info:
        forged.verify()
    assert info.value.field == "signature"
    assert info.value.reason == "bad_signature"
    with pytest.raises(SignatureError):
        unseal(msgspec.msgpack.encode([forged.body(), signed.signature]), Message)


def test_unsigned_message_does_not_verify_or_seal() -> None:
    msg = Message(kind="k", topic="t", sender=A.did)
    assert not msg.is_signed
    with pytest.raises(SignatureError) as info:
        msg.verify()
    assert info.value.reason == "unsigned"
    with pytest.raises(SignatureError):
        msg.seal()


def test_a_sender_that_is_not_a_did_is_a_signature_error() -> None:
    signed = Message(kind="k", topic="t").sign(A)
    for sender in ("", "did:web:example.com", "did:key:zzzz"):
        bad = msgspec.structs.replace(signed, sender=sender)
        with pytest.raises(SignatureError):
            bad.verify()
        with pytest.raises(SignatureError):
            unseal(msgspec.msgpack.encode([bad.body(), signed.signature]), Message)


def sealed_as(sender: str, payload: Any = 1) -> bytes:
    """A message naming ``sender``, signed by A over exactly the bytes sent (which need not be
    canonical): what a hostile peer can put on the wire."""
    raw = sender.encode("utf-8", "surrogatepass")  # a lone surrogate: bytes that are not UTF-8
    has_surrogate = any("\ud800" <= c <= "\udfff" for c in sender)
    stand_in = "\x01" * len(raw) if has_surrogate else sender  # the same length on the wire
    fields = {"type": "message", "kind": "k", "topic": "t", "sender": stand_in, "payload": payload}
    fields.update(id=new_id(), nonce="n", created_at=1.0)
    body = msgspec.msgpack.encode(fields)
    if stand_in != sender:
        body = body.replace(stand_in.encode(), raw, 1)
    return msgspec.msgpack.encode([body, A.sign(body)])


def test_a_huge_sender_did_is_refused_without_decoding_it(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[str] = []
    monkeypatch.setattr(identity_module, "_b58decode", decoded.append)
    wire = sealed_as("did:key:z6Mk" + "x" * 400_000)
    with pytest.raises(SignatureError) as info:
        unseal(wire, Message)
    assert decoded == []  # refused on its shape: the cost does not grow with its length
    assert info.value.field == "sender"
    assert len(str(info.value)) < 300


@FAST
@given(odd_dids)
def test_unseal_refuses_any_odd_sender_did_decoding_only_the_ed25519_shape(did: str) -> None:
    decoded: list[int] = []
    real = identity_module._b58decode

    def counting(text: str) -> bytes:
        decoded.append(len(text))
        return real(text)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(identity_module, "_b58decode", counting)
        with pytest.raises(ConvergeError) as info:  # a bad did, or A's key for another did
            unseal(sealed_as(did), Message)
    # A signature error; or, for a did that is not UTF-8, malformed bytes.
    assert isinstance(info.value, (ProtocolError, ValidationError)), repr(info.value)
    assert all(n == 47 for n in decoded)
    assert len(str(info.value)) < 300


# -- envelopes -------------------------------------------------------------------------------------


def test_envelope_with_more_signatures_than_signers_is_refused() -> None:
    msg, _ = sealed_message()
    assert msg.signature is not None
    wire = msgspec.msgpack.encode([msg.body(), msg.signature, msg.signature])
    with pytest.raises(SignatureError, match="2 signatures"):
        unseal(wire, Message)


def test_body_that_carries_a_signature_field_is_refused() -> None:
    msg, _ = sealed_message()
    assert msg.signature is not None
    body_with_sig = canonical_encode(msg)  # the whole struct, signature included
    wire = msgspec.msgpack.encode([body_with_sig, msg.signature])
    with pytest.raises(SignatureError) as info:
        unseal(wire, Message)
    assert info.value.field == "signature"


@pytest.mark.parametrize(
    "wire",
    [
        msgspec.msgpack.encode([]),
        msgspec.msgpack.encode({"body": b""}),
        msgspec.msgpack.encode(["text", b"sig"]),
        b"",
        b"\xc1",
    ],
)
def test_malformed_envelopes_are_protocol_errors(wire: bytes) -> None:
    with pytest.raises(ProtocolError):
        unseal(wire, Message)


def test_envelope_without_signature_is_refused() -> None:
    msg, _ = sealed_message()
    with pytest.raises(SignatureError) as info:
        unseal(msgspec.msgpack.encode([msg.body()]), Message)
    assert info.value.reason == "unsigned"


def test_envelope_body_of_another_type_is_refused() -> None:
    intent = Intent(goal="g", capability="c").sign(A)
    with pytest.raises(ValidationError):
        unseal(intent.seal(), Message)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_unseal_of_arbitrary_bytes_raises_only_converge_errors(data: bytes) -> None:
    converge_errors_only(lambda: unseal(data, Message))


@settings(max_examples=80, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([*Message.__struct_fields__, "type", "extra"]), msgpack_values, max_size=8
    ),
    st.lists(st.binary(max_size=70), max_size=3),
)
def test_unseal_of_near_valid_envelopes_raises_only_converge_errors(
    fields: dict[str, Any], sigs: list[bytes]
) -> None:
    fields.setdefault("type", "message")
    wire = msgspec.msgpack.encode([canonical_encode(fields), *sigs])
    converge_errors_only(lambda: unseal(wire, Message))


def test_invalid_utf8_in_a_sealed_body_is_a_converge_error() -> None:
    _, sealed = sealed_message(text="\u00e9")
    tampered = sealed.replace("\u00e9".encode(), b"\xc3\x28")  # an invalid two-byte sequence
    assert tampered != sealed
    with pytest.raises(ConvergeError):
        unseal(tampered, Message)


def test_unseal_of_a_deeply_nested_body_is_a_converge_error() -> None:
    head = msgspec.msgpack.encode({"type": "message", "kind": "k", "topic": "t", "sender": A.did})
    # Re-open the map with one more key, "payload", holding 5000 nested one-element arrays.
    body = bytes([head[0] + 1]) + head[1:] + msgspec.msgpack.encode("payload")
    body += b"\x91" * 5000 + b"\x01"
    with pytest.raises(ConvergeError):
        unseal(msgspec.msgpack.encode([body, b"\x00" * 64]), Message)


# -- non-finite numbers ----------------------------------------------------------------------------

_keys = st.text(alphabet=string.ascii_letters, min_size=1, max_size=5)
_finite = st.none() | st.booleans() | st.integers(-1000, 1000) | finite_floats | st.text(max_size=4)


@st.composite
def poisoned(draw: st.DrawFn, depth: int = 0) -> tuple[Any, str]:
    """A nested value with exactly one NaN or infinity, and the path converge should name."""
    if depth >= 4 or draw(st.booleans()):
        return draw(st.sampled_from([math.nan, math.inf, -math.inf])), ""
    inner, path = draw(poisoned(depth + 1))
    if draw(st.booleans()):
        key = draw(_keys)
        others = draw(st.dictionaries(_keys, _finite, max_size=3))
        others.pop(key, None)
        return {**others, key: inner}, f".{key}{path}"
    before = draw(st.lists(_finite, max_size=3))
    after = draw(st.lists(_finite, max_size=3))
    return [*before, inner, *after], f"[{len(before)}]{path}"


@FAST
@given(poisoned())
def test_non_finite_float_anywhere_in_a_payload_is_named(case: tuple[Any, str]) -> None:
    payload, path = case
    msg = Message(kind="k", topic="t", payload=payload)
    with pytest.raises(ValidationError) as info:
        msg.sign(A)
    assert info.value.field == f"payload{path}"
    assert f"payload{path}" in str(info.value)


def test_non_finite_floats_in_other_objects_are_named() -> None:
    intent = Intent(goal="g", capability="c", utility={"cost": math.inf})
    with pytest.raises(ValidationError) as info:
        intent.sign(A)
    assert info.value.field == "utility.cost"
    offer = Offer(intent_id="i", capability="c", cost=1.0, terms={"sla": [1.0, math.nan]})
    with pytest.raises(ValidationError) as info:
        offer.sign(A)
    assert info.value.field == "terms.sla[1]"


@FAST
@given(poisoned())
def test_unseal_refuses_a_signed_body_holding_a_non_finite_float(case: tuple[Any, str]) -> None:
    payload, path = case
    with pytest.raises(ValidationError) as info:  # the signature is valid: the body is not
        unseal(sealed_as(A.did, payload), Message)
    assert info.value.field == f"payload{path}"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("field", ["cost", "quality", "latency_s", "terms"])
def test_unseal_refuses_a_non_finite_float_in_any_field(value: float, field: str) -> None:
    offer = Offer(intent_id="i", capability="c", cost=1.0, provider=A.did)
    fields = msgspec.to_builtins(offer)
    fields[field] = {"x": [value]} if field == "terms" else value
    body = msgspec.msgpack.encode(fields)
    with pytest.raises(ValidationError) as info:
        unseal(msgspec.msgpack.encode([body, A.sign(body)]), Offer)
    assert info.value.field == ("terms.x[0]" if field == "terms" else field)


@FAST
@given(non_finite, st.sampled_from(["created_at", "payload"]))
def test_a_signed_non_finite_float_never_gets_past_unseal(value: float, field: str) -> None:
    fields = {"type": "message", "kind": "k", "topic": "t", "sender": A.did, field: value}
    body = msgspec.msgpack.encode(fields)
    with pytest.raises(ValidationError):
        unseal(msgspec.msgpack.encode([body, A.sign(body)]), Message)


def test_a_body_too_deep_to_walk_for_non_finite_floats_is_a_protocol_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The decoder and the walk share Python's recursion limit: near it, the walk can fail where
    # decoding just succeeded.
    def too_deep(value: Any, path: str = "$") -> None:
        raise RecursionError

    monkeypatch.setattr(signing, "check_finite", too_deep)
    with pytest.raises(ProtocolError, match="nested too deeply"):
        unseal(sealed_as(A.did, [[math.nan]]), Message)


def test_large_finite_floats_are_not_mistaken_for_non_finite() -> None:
    # 1e308 and -1e308 start with the same bytes as inf and -inf in MessagePack float64.
    msg = Message(kind="k", topic="t", payload=[1e308, -1e308, "\xcb\x7f"]).sign(A)
    assert unseal(msg.seal(), Message).payload == [1e308, -1e308, "\xcb\x7f"]


@pytest.mark.parametrize(
    "payload",
    [{"n": 2**70}, {1: "non-str key"}, {"x": object()}],
    ids=["int-beyond-64-bits", "non-str-key", "object"],
)
def test_unencodable_payload_is_a_validation_error(payload: Any) -> None:
    with pytest.raises(ValidationError):
        Message(kind="k", topic="t", payload=payload).sign(A)


# -- receipts: a signature and a countersignature --------------------------------------------------


def test_receipt_signed_by_executor_then_requester_verifies() -> None:
    receipt = signed_receipt()
    assert receipt.executor == B.did
    assert receipt.requester == C.did
    receipt.verify()
    assert unseal(receipt.seal(), Receipt) == receipt


def test_requester_signature_covers_the_executor_signature() -> None:
    receipt = signed_receipt()
    assert receipt.executor_signature is not None
    assert receipt.requester_signature is not None
    body = receipt.body()
    assert Identity.verify(C.did, body + receipt.executor_signature, receipt.requester_signature)
    assert not Identity.verify(C.did, body, receipt.requester_signature)


def test_swapping_or_removing_the_executor_signature_breaks_the_receipt() -> None:
    receipt = signed_receipt()
    exec_sig, req_sig = receipt.executor_signature, receipt.requester_signature
    assert exec_sig is not None and req_sig is not None
    body = receipt.body()
    other_exec_sig = B.sign(body + b"something else")
    for wire in (
        [body, req_sig, exec_sig],  # swapped
        [body, req_sig],  # executor's removed
        [body, other_exec_sig, req_sig],  # another executor signature
        [body, exec_sig, exec_sig],
    ):
        with pytest.raises(SignatureError):
            unseal(msgspec.msgpack.encode(wire), Receipt, require_all=False)
    with pytest.raises(SignatureError):
        msgspec.structs.replace(receipt, executor_signature=None).verify()
    with pytest.raises(SignatureError):
        msgspec.structs.replace(receipt, executor_signature=other_exec_sig).verify()


def test_executor_only_receipt_needs_require_all_false() -> None:
    receipt = signed_receipt()
    half = msgspec.structs.replace(receipt, requester_signature=None)
    sealed = half.seal()
    with pytest.raises(SignatureError) as info:
        unseal(sealed, Receipt)
    assert info.value.field == "requester_signature"
    assert info.value.reason == "unsigned"
    got = unseal(sealed, Receipt, require_all=False)
    assert got == half
    assert not got.is_signed
    got.verify(require_all=False)
    with pytest.raises(SignatureError):
        got.verify()


def test_countersignature_needs_the_executor_signature_and_the_named_requester() -> None:
    done = TaskDone(task_id="t1", status="completed", output=1, executor=B.did)
    unsigned = Receipt.for_done(done, requester=C.did)
    with pytest.raises(SignatureError) as info:
        unsigned.countersign(C)
    assert info.value.field == "executor_signature"
    executor_signed = unsigned.sign_as_executor(B)
    with pytest.raises(SignatureError) as info:
        executor_signed.countersign(A)
    assert info.value.field == "requester"
    executor_signed.countersign(C).verify()


# -- objects built in process: checked as if decoded -------------------------------------------

_any_value = msgpack_values | st.builds(object) | st.sets(st.integers(), max_size=3)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"created_at": "yesterday"}, "created_at"),
        ({"created_at": True}, "created_at"),
        ({"nonce": ["a", "list"]}, "nonce"),
        ({"kind": 5}, "kind"),
        ({"trace_id": {"a": 1}}, "trace_id"),
        ({"parent_id": 1.5}, "parent_id"),
        ({"id": None}, "id"),
    ],
)
def test_verify_checks_the_types_of_a_message_built_in_process(
    fields: dict[str, Any], field: str
) -> None:
    """A struct built in process has no type checked; ``verify()`` checks what ``unseal``
    checks of the same object's bytes, so a receiver never meets a wrong type behind a valid
    signature."""
    msg = Message(**{"kind": "k", "topic": "t", **fields}).sign(A)
    with pytest.raises(ValidationError) as info:
        msg.verify()
    assert info.value.field == field
    with pytest.raises(ValidationError):
        unseal(msg.seal(), Message)  # the same verdict over the wire


def test_verify_checks_the_types_of_other_signed_objects() -> None:
    offer = Offer(intent_id="i", trace_id="t", capability=["c@1.0"], cost=1.0, provider=A.did).sign(
        A
    )  # type: ignore[arg-type]
    with pytest.raises(ValidationError) as info:
        offer.verify()
    assert info.value.field == "capability"


def test_a_signature_that_is_not_bytes_is_a_signature_error() -> None:
    msg = msgspec.structs.replace(Message(kind="k", topic="t").sign(A), signature="ab" * 32)
    with pytest.raises(SignatureError) as info:
        msg.verify()
    assert info.value.field == "signature"


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([f for f in Message.__struct_fields__ if f != "signature"]),
        _any_value,
        max_size=5,
    ),
    st.booleans(),
)
def test_a_message_built_in_process_with_any_fields_raises_only_converge_errors(
    fields: dict[str, Any], resign: bool
) -> None:
    """What a receiver does with an in-process message — verify, then replay-check — raises
    converge's errors whatever its fields hold, signed over them or not."""
    clock = ManualClock(1_000_000.0)
    guard = ReplayGuard(clock=clock)
    base = Message(kind="k", recipient=B.did, created_at=clock.now()).sign(A)

    def receive() -> None:
        msg = msgspec.structs.replace(base, **fields)
        if resign:
            msg = msg.sign(A)
        msg.verify()
        guard.check(msg)

    converge_errors_only(receive)


@settings(max_examples=200, deadline=None)
@given(_any_value, _any_value, _any_value)
def test_the_replay_guard_raises_only_converge_errors(
    sender: Any, nonce: Any, created_at: Any
) -> None:
    guard = ReplayGuard(clock=ManualClock(1_000_000.0))
    converge_errors_only(lambda: guard.check_values(sender, nonce, created_at))
