"""The coordination objects: their fields, checks, signatures and receipts."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
import pytest

from converge.core import Signed
from converge.errors import SignatureError, ValidationError
from converge.protocol import (
    Attestation,
    Constraints,
    Intent,
    Offer,
    Receipt,
    TaskDone,
    TaskProgress,
    TaskStart,
    Usage,
    output_digest,
    unseal,
)
from tests.strategies import IDENTITIES

REQUESTER, EXECUTOR, OTHER, _ = IDENTITIES

# Fields the issue names for each object; src may add more, never fewer.
ISSUE_FIELDS: dict[type[Any], set[str]] = {
    Intent: {
        "id",
        "trace_id",
        "issuer",
        "goal",
        "capability",
        "inputs",
        "constraints",
        "utility",
        "bid_window_s",
        "created_at",
        "signature",
    },
    Offer: {
        "id",
        "intent_id",
        "trace_id",
        "provider",
        "capability",
        "cost",
        "currency",
        "latency_s",
        "quality",
        "reliability",
        "resource_limits",
        "terms",
        "expires_at",
        "signature",
    },
    TaskStart: {"task_id", "trace_id", "signature"},
    TaskProgress: {"task_id", "trace_id", "signature", "seq", "progress", "message", "data"},
    TaskDone: {
        "task_id",
        "trace_id",
        "signature",
        "status",
        "output",
        "error",
        "usage",
        "started_at",
        "finished_at",
    },
    Receipt: {
        "task_id",
        "intent_id",
        "trace_id",
        "executor",
        "requester",
        "status",
        "output_digest",
        "usage",
        "cost",
        "issued_at",
        "executor_signature",
        "requester_signature",
    },
    Constraints: {"max_cost", "deadline", "min_quality", "required_capabilities"},
    Usage: {"tokens_in", "tokens_out", "tool_calls", "cost"},
    Attestation: {"signature"},
}


@pytest.mark.parametrize("cls", list(ISSUE_FIELDS), ids=lambda c: c.__name__)
def test_objects_have_the_fields_of_the_issue(cls: type[Any]) -> None:
    assert ISSUE_FIELDS[cls] <= set(cls.__struct_fields__)


@pytest.mark.parametrize("cls", [c for c in ISSUE_FIELDS if issubclass(c, Signed)])
def test_objects_are_frozen(cls: type[Any]) -> None:
    assert cls.__struct_config__.frozen
    assert cls.__struct_config__.forbid_unknown_fields


def test_contract_net_round_is_signed_by_the_right_agents() -> None:
    intent = Intent(goal="summarize", capability="summarize>=1", bid_window_s=2.0).sign(REQUESTER)
    assert intent.issuer == REQUESTER.did
    assert intent.closes_at == intent.created_at + 2.0
    offer = Offer(
        intent_id=intent.id, trace_id=intent.trace_id, capability="summarize@1.3", cost=0.2
    ).sign(EXECUTOR)
    assert offer.provider == EXECUTOR.did
    start = TaskStart(
        task_id="t1", executor=EXECUTOR.did, intent_id=intent.id, offer_id=offer.id
    ).sign(REQUESTER)
    assert start.requester == REQUESTER.did
    progress = TaskProgress(task_id="t1", seq=0, progress=0.5).sign(EXECUTOR)
    done = TaskDone(
        task_id="t1", status="completed", output={"summary": "short"}, trace_id=intent.trace_id
    ).sign(EXECUTOR)
    receipt = (
        Receipt.for_done(done, requester=REQUESTER.did, intent_id=intent.id, cost=offer.cost)
        .sign_as_executor(EXECUTOR)
        .countersign(REQUESTER)
    )
    attestation = Attestation(subject=receipt.id, claim="verified_output").sign(OTHER)
    for obj in (intent, offer, start, progress, done, receipt, attestation):
        obj.verify()
        assert unseal(obj.seal(), type(obj)) == obj


def test_a_tampered_offer_is_rejected() -> None:
    offer = Offer(intent_id="i1", capability="summarize", cost=1.0).sign(EXECUTOR)
    cheaper = msgspec.structs.replace(offer, cost=0.5)
    with pytest.raises(SignatureError):
        cheaper.verify()
    with pytest.raises(SignatureError):
        unseal(msgspec.msgpack.encode([cheaper.body(), offer.signature]), Offer)


def test_task_done_needs_an_error_unless_completed() -> None:
    TaskDone(task_id="t", status="completed")
    TaskDone(task_id="t", status="failed", error="boom")
    TaskDone(task_id="t", status="cancelled", error="withdrawn")
    for status in ("failed", "cancelled"):
        with pytest.raises(ValidationError) as info:
            TaskDone(task_id="t", status=status, error="")  # type: ignore[arg-type]
        assert info.value.field == "error"


@pytest.mark.parametrize(
    ("cls", "kwargs", "field"),
    [
        (Constraints, {"max_cost": -1.0}, "max_cost"),
        (Constraints, {"min_quality": 1.5}, "min_quality"),
        (Usage, {"tokens_in": -1}, "tokens_in"),
        (Usage, {"cost": -0.5}, "cost"),
        (
            Offer,
            {"intent_id": "i", "capability": "c", "cost": 1.0, "reliability": -0.1},
            "reliability",
        ),
        (Offer, {"intent_id": "i", "capability": "c", "cost": 1.0, "latency_s": -3.0}, "latency_s"),
    ],
)
def test_out_of_range_values_are_refused_at_construction(
    cls: type[Any], kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        cls(**kwargs)
    assert info.value.field == field


@pytest.mark.parametrize("value", [0.0, 1.0, 0.5])
def test_fraction_bounds_are_inclusive(value: float) -> None:
    Offer(intent_id="i", capability="c", cost=0.0, quality=value, reliability=value)
    TaskProgress(task_id="t", seq=0, progress=value)
    Constraints(min_quality=value)


# -- receipts and output digests -------------------------------------------------------------------


def test_output_digest_is_sha256_of_canonical_msgpack() -> None:
    # {"a": 1} in MessagePack: fixmap of one, fixstr "a", positive fixint 1.
    assert output_digest({"a": 1}) == hashlib.sha256(b"\x81\xa1a\x01").hexdigest()
    assert output_digest(None) == hashlib.sha256(b"\xc0").hexdigest()


def test_output_digest_ignores_dict_order_but_not_content() -> None:
    assert output_digest({"a": 1, "b": [1, 2]}) == output_digest({"b": [1, 2], "a": 1})
    assert output_digest({"a": 1}) != output_digest({"a": 2})
    assert output_digest([1, 2]) != output_digest([2, 1])
    assert output_digest("1") != output_digest(1)
    assert output_digest(1) != output_digest(1.0)


def test_output_digest_refuses_non_finite_numbers() -> None:
    with pytest.raises(ValidationError):
        output_digest({"score": float("nan")})


def test_receipt_for_done_copies_the_work_and_digests_the_output() -> None:
    usage = Usage(tokens_in=10, tokens_out=5, tool_calls=1, cost=0.01)
    done = TaskDone(
        task_id="t1",
        status="completed",
        output={"summary": "s", "n": [1, 2]},
        usage=usage,
        trace_id="trace-1",
    ).sign(EXECUTOR)
    receipt = Receipt.for_done(done, requester=REQUESTER.did, intent_id="i1", cost=0.25)
    assert receipt.task_id == "t1"
    assert receipt.executor == EXECUTOR.did
    assert receipt.requester == REQUESTER.did
    assert receipt.status == "completed"
    assert receipt.intent_id == "i1"
    assert receipt.usage == usage
    assert receipt.cost == 0.25
    assert receipt.trace_id == "trace-1"
    assert receipt.output_digest == output_digest(done.output)
    assert not receipt.is_signed
    assert receipt.matches_output({"n": [1, 2], "summary": "s"})
    assert not receipt.matches_output({"summary": "s", "n": [1, 2, 3]})
    assert not receipt.matches_output(None)


def test_receipt_for_a_failed_task() -> None:
    done = TaskDone(task_id="t1", status="failed", error="timeout", executor=EXECUTOR.did)
    receipt = Receipt.for_done(done, requester=REQUESTER.did)
    assert receipt.status == "failed"
    assert receipt.matches_output(None)


@pytest.mark.parametrize("digest", ["", "0" * 63, "0" * 65, "g" * 64, "A" * 64])
def test_receipt_digest_must_be_a_lower_case_sha256(digest: str) -> None:
    with pytest.raises(ValidationError) as info:
        Receipt(
            task_id="t",
            executor=EXECUTOR.did,
            requester=REQUESTER.did,
            status="completed",
            output_digest=digest,
        )
    assert info.value.field == "output_digest"
