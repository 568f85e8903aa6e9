"""The error tree drawn in ``converge/errors.py``, and the data errors carry."""

from __future__ import annotations

import pytest

from converge import errors as e

# (error, its converge parent, the builtin it also is, if any) as the docstring draws them.
TREE = [
    (e.ValidationError, e.ConvergeError, ValueError),
    (e.AgentModeError, e.ValidationError, NotImplementedError),
    (e.StateError, e.ConvergeError, None),
    (e.InvalidTransition, e.StateError, None),
    (e.ProtocolError, e.ConvergeError, None),
    (e.SignatureError, e.ProtocolError, None),
    (e.StaleMessage, e.ProtocolError, None),
    (e.ReplayedMessage, e.ProtocolError, None),
    (e.IdentityError, e.ConvergeError, None),
    (e.PolicyViolation, e.ConvergeError, PermissionError),
    (e.StoreError, e.ConvergeError, None),
    (e.ConflictError, e.StoreError, None),
    (e.TaskConflict, e.ConflictError, None),
    (e.SchemaVersionError, e.StoreError, None),
    (e.NotAStore, e.StoreError, None),
    (e.StoreReadOnly, e.StoreError, None),
    (e.StoreClosed, e.StoreError, None),
    (e.MissingExtra, e.ConvergeError, ImportError),
    (e.TransportError, e.ConvergeError, ConnectionError),
    (e.OrchestrationError, e.ConvergeError, None),
]


def test_tree_covers_every_exported_error() -> None:
    assert {cls.__name__ for cls, _, _ in TREE} | {"ConvergeError"} == set(e.__all__)


@pytest.mark.parametrize(
    ("cls", "parent", "builtin"), TREE, ids=lambda v: getattr(v, "__name__", "")
)
def test_error_tree(cls: type[Exception], parent: type[Exception], builtin: type | None) -> None:
    assert issubclass(cls, parent)
    assert issubclass(cls, e.ConvergeError)
    if builtin is not None:
        assert issubclass(cls, builtin)


def test_validation_error_carries_field_source_and_line() -> None:
    err = e.ValidationError("bad value", field="constraints.max_cost", source="a.yaml", line=3)
    assert err.field == "constraints.max_cost"
    assert err.source == "a.yaml"
    assert err.line == 3
    assert str(err) == "a.yaml:3: bad value (field `constraints.max_cost`)"
    assert err.message == str(err)
    assert not err.retryable


def test_protocol_errors_carry_a_reason() -> None:
    assert e.ProtocolError("x").reason == "malformed"
    assert e.SignatureError("x").reason == "bad_signature"
    assert e.StaleMessage("x").reason == "stale"
    assert e.ReplayedMessage("x", field="nonce").reason == "replayed"
    assert e.SignatureError("x", reason="unsigned").reason == "unsigned"


def test_store_errors_carry_their_data() -> None:
    conflict = e.ConflictError("k", 1, 2)
    assert (conflict.key, conflict.expected_version, conflict.actual_version) == ("k", 1, 2)
    schema = e.SchemaVersionError("db.sqlite", found=9, supported=2)
    assert (schema.found, schema.supported) == (9, 2)
    assert e.ConvergeError("busy", retryable=True).retryable
