"""The error tree drawn in ``converge/errors.py``, and the data errors carry.

The drawing is read from the module's docstring and compared with the classes themselves: every
module of converge is imported, then ``ConvergeError``'s subclasses are walked, so an error
defined anywhere, moved under another parent, or dropped from the drawing fails here.
"""

from __future__ import annotations

import ast
import builtins
import datetime as dt
import importlib
import inspect
import pkgutil
import re
import time
from pathlib import Path

import pytest

import converge
from converge import errors as e

_BRANCH = re.compile(r"[├└]── ")
_BUILTINS = re.compile(r"\(([A-Za-z]+(?:, [A-Za-z]+)*)\)")


def _drawing(doc: str) -> dict[str, tuple[str | None, frozenset[str]]]:
    """The tree drawn in ``doc``: each name's drawn parent (None for the root) and the builtins
    drawn in parentheses after it."""
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "ConvergeError")
    root_column = lines[start].index("ConvergeError")
    drawn: dict[str, tuple[str | None, frozenset[str]]] = {"ConvergeError": (None, frozenset())}
    path = ["ConvergeError"]
    for line in lines[start + 1 :]:
        branch = _BRANCH.search(line)
        if branch is None:
            break
        depth = (branch.start() - root_column) // 4 + 1
        name, _, rest = line[branch.end() :].partition(" ")
        assert name not in drawn, f"{name} is drawn twice"
        del path[depth:]
        bases = _BUILTINS.match(rest.strip())
        drawn[name] = (path[-1], frozenset(bases.group(1).split(", ") if bases else ()))
        path.append(name)
    return drawn


def _every_converge_error() -> set[type[BaseException]]:
    """Every subclass of ``ConvergeError`` that converge defines, with every module imported."""
    for module in pkgutil.walk_packages(converge.__path__, "converge."):
        importlib.import_module(module.name)
    found: set[type[BaseException]] = set()
    stack: list[type[BaseException]] = [e.ConvergeError]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub.__module__.split(".")[0] == "converge" and sub not in found:
                found.add(sub)
                stack.append(sub)
    return found


def _drift(
    drawn: dict[str, tuple[str | None, frozenset[str]]], classes: set[type[BaseException]]
) -> list[str]:
    """How the drawing and the classes disagree (nothing when they agree)."""
    problems = []
    public = {cls for cls in classes if not cls.__name__.startswith("_")}
    for cls in sorted(public, key=lambda c: c.__name__):
        name = cls.__name__
        if cls.__module__ != "converge.errors":
            problems.append(f"{name} is defined in {cls.__module__}, not converge.errors")
        parents = [b for b in cls.__bases__ if issubclass(b, e.ConvergeError)]
        builtin_bases = frozenset(b.__name__ for b in cls.__bases__ if b not in parents)
        if len(parents) != 1:
            problems.append(f"{name} has {len(parents)} converge parents")
        elif name not in drawn:
            problems.append(f"{name} (under {parents[0].__name__}) is not drawn")
        elif drawn[name] != (parents[0].__name__, builtin_bases):
            problems.append(
                f"{name} is drawn under {drawn[name][0]} {sorted(drawn[name][1])}, but it "
                f"subclasses {parents[0].__name__} {sorted(builtin_bases)}"
            )
    public_names = {cls.__name__ for cls in public} | {"ConvergeError"}
    for name, (_, bases) in drawn.items():
        if name.startswith("_"):
            problems.append(f"{name} is private: it is not drawn")
        elif name not in public_names:
            problems.append(f"{name} is drawn, but converge defines no such error")
        problems.extend(
            f"{name} is drawn with {base}, which is no builtin"
            for base in sorted(bases)
            if not inspect.isclass(getattr(builtins, base, None))
        )
    return problems


def test_the_drawing_is_the_tree() -> None:
    assert e.__doc__ is not None
    assert _drift(_drawing(e.__doc__), _every_converge_error()) == []


def test_the_drawing_names_what_errors_exports() -> None:
    assert e.__doc__ is not None
    exported = {n for n in e.__all__ if inspect.isclass(getattr(e, n))}
    assert exported == set(_drawing(e.__doc__))
    assert all(issubclass(getattr(e, n), e.ConvergeError) for n in exported)


DOC = """
    ConvergeError
    ├── StateError                            an operation the current state does not allow
    │   └── InvalidTransition                 a move between two states the table forbids
    └── PolicyViolation        (PermissionError) refused by policy
"""


def test_drift_is_found() -> None:
    classes = {e.StateError, e.InvalidTransition, e.PolicyViolation}
    assert _drift(_drawing(DOC), classes) == []
    moved = DOC.replace("│   └── InvalidTransition", "├── InvalidTransition      ")
    assert _drift(_drawing(moved), classes) == [
        "InvalidTransition is drawn under ConvergeError [], but it subclasses StateError []"
    ]
    assert _drift(_drawing(DOC.replace("(PermissionError)", "                 ")), classes) == [
        "PolicyViolation is drawn under ConvergeError [], but it subclasses ConvergeError "
        "['PermissionError']"
    ]
    assert _drift(_drawing(DOC), {*classes, e.StoreError}) == [
        "StoreError (under ConvergeError) is not drawn"
    ]
    assert _drift(_drawing(DOC), {e.StateError, e.PolicyViolation}) == [
        "InvalidTransition is drawn, but converge defines no such error"
    ]
    ghost = DOC.replace(
        "PolicyViolation        (PermissionError)", "PolicyRefusal          (Permission)"
    )
    assert _drift(_drawing(ghost), classes) == [
        "PolicyViolation (under ConvergeError) is not drawn",
        "PolicyRefusal is drawn, but converge defines no such error",
        "PolicyRefusal is drawn with Permission, which is no builtin",
    ]
    private = DOC.replace("InvalidTransition ", "_Internal        ")
    assert "_Internal is private: it is not drawn" in _drift(_drawing(private), classes)

    class Elsewhere(e.StateError):
        pass

    assert _drift(_drawing(DOC), {*classes, Elsewhere}) == [
        f"Elsewhere is defined in {__name__}, not converge.errors",
        "Elsewhere (under StateError) is not drawn",
    ]


def test_errors_import_nothing_from_converge() -> None:
    # The bottom layer: any converge import here, even under TYPE_CHECKING, is a cycle.
    tree = ast.parse(Path(e.__file__).read_text(encoding="utf-8"))
    imported = [
        node.module or "" if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    assert [m for m in imported if m.split(".")[0] == "converge"] == []


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


def test_a_late_vote_is_a_state_error_with_its_code() -> None:
    late = e.VoteAfterDeadline("b1", "did:a", deadline=10.0, at=12.0)
    assert isinstance(late, e.StateError) and not isinstance(late, e.ProtocolError)
    assert (late.ballot_id, late.agent_id, late.deadline, late.at) == ("b1", "did:a", 10.0, 12.0)
    assert (late.reason, late.field) == ("after_deadline", "deadline")
    assert str(late) == "did:a voted on ballot b1 at 12.0, not before its deadline 10.0"


def test_errors_of_higher_layers_show_their_data() -> None:
    closed = e.BallotClosed("b1", "did:a", 0.0, "deadline", None)
    assert (closed.from_state, closed.to_state, closed.subject) == ("closed", "open", "b1")
    assert str(closed) == (
        "ballot b1 closed at 1970-01-01T00:00:00.000000Z (its deadline passed) with outcome "
        "none (nothing was decided): did:a's vote is not counted"
    )
    assert str(e.AuctionClosed("a1", "closed_awarded")) == "auction a1 is already closed_awarded"

    class Owner:
        pid, host, renewed_at = 42, "box", 100.0

    owned = e.RunOwned("r1", Owner(), 50.0, "alive", now=130.0)
    when = dt.datetime.fromtimestamp(50.0).strftime("%Y-%m-%d %H:%M:%S")
    assert str(owned) == (
        f"run r1 is running in pid 42 on box (since {when}, lease renewed 30 s ago); wait for "
        "it to end, or stop it with `converge cancel r1`"
    )
    assert (owned.run_id, owned.since) == ("r1", 50.0) and isinstance(owned.owner, Owner)


def test_messages_never_show_a_credential() -> None:
    err = e.LLMError("gave up on https://user:sk-1@host/v1?api_key=sk-2&v=1", provider="p")
    assert str(err) == "p: gave up on https://***@host/v1?api_key=***&v=1"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(-1, "just now"), (12.4, "12 s ago"), (240, "4 min ago"), (9000, "2.5 h ago")],
)
def test_ages_are_shown_in_the_unit_that_reads(seconds: float, shown: str) -> None:
    assert e.shown_age(seconds) == shown


def test_a_time_out_of_range_is_shown_as_a_number() -> None:
    assert e.shown_time(1e300) == "1e+300"
    assert e.shown_time(0.0) == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(0.0))
