"""Edge conditions (``when:``): literals, operators and precedence, references, functions,
errors with their columns, limits, and properties against a reference evaluator."""

from __future__ import annotations

import dataclasses
import math
import operator
import pickle
import time
from typing import Any, NamedTuple

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from converge.errors import (
    ExpressionError,
    ExpressionSyntaxError,
    OrchestrationError,
    ValidationError,
)
from converge.orchestration._expr import MAX_DEPTH, MAX_LENGTH, Expression, parse_expression


def ev(text: str, **values: Any) -> Any:
    return parse_expression(text).evaluate(values)


def fails(text: str, **values: Any) -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        ev(text, **values)
    return info.value


# -- literals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("42", 42),
        ("007", 7),
        ("1.5", 1.5),
        ("-2", -2),
        ("- 2.5", -2.5),
        ("1e3", 1000.0),
        ("2.5E-1", 0.25),
        ("1e+2", 100.0),
        ("'single'", "single"),
        ('"double"', "double"),
        ('""', ""),
        (r'"a\"b"', 'a"b'),
        (r"'a\'b'", "a'b"),
        (r'"back\\slash"', "back\\slash"),
        (r'"line\nbreak\ttab"', "line\nbreak\ttab"),
        ("true", True),
        ("false", False),
        ("null", None),
        ("True", True),
        ("False", False),
        ("None", None),
        ("[]", []),
        ("[1, 'a', [true, null]]", [1, "a", [True, None]]),
        ("[1, 2,]", [1, 2]),
    ],
)
def test_literals(text: str, expected: Any) -> None:
    value = ev(text)
    assert value == expected
    assert type(value) is type(expected)


def test_a_list_literal_is_a_fresh_list_each_time() -> None:
    expr = parse_expression("[1, [2]]")
    first = expr.evaluate({})
    first[1].append(3)
    first.append(4)
    assert expr.evaluate({}) == [1, [2]]


# -- operators and precedence ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),
        ("100 / 10 / 5", 2.0),
        ("7 / 2", 3.5),
        ("7 % 3", 1),
        ("-7 % 3", 2),
        ("2 * 3 % 4", 2),
        ("2 + 3 % 2", 3),
        ("-2 * 3", -6),
        ("- -2", 2),
        ("-(1 + 2)", -3),
        ("1.5 * 2", 3.0),
        ("1 + 1 == 2", True),
        ("1 < 2", True),
        ("2 <= 2", True),
        ("3 > 2", True),
        ("2 >= 3", False),
        ("1 != 2", True),
        ("1 == 1.0", True),
        ("1 < 1.5", True),
        ("'a' < 'b'", True),
        ("'b' >= 'b'", True),
        ("not true or true", True),
        ("not (true or true)", False),
        ("true or false and false", True),
        ("(true or false) and false", False),
        ("not 1 == 2", True),
        ("not not 1", True),
        ("false or false or true", True),
        ("true and true and false", False),
        ("1 == 1 and 2 == 2", True),
        ("'z' not in 'abc' and not 'z' in 'abc'", True),
        ("1 + 2 * 3 == 7 and not 2 > 3 or false", True),
        ("(1 < 2) == true", True),
    ],
)
def test_operators_and_precedence(text: str, expected: Any) -> None:
    value = ev(text)
    assert value == expected
    assert type(value) is type(expected)


def test_postfix_binds_tighter_than_unary_minus_and_arithmetic() -> None:
    a = {"x": {"y": 4}, "items": [10, 20]}
    assert ev("-a.x.y", a=a) == -4
    assert ev("a.x.y * 2 + a.items[1]", a=a) == 28
    assert ev("-a.items[0] % 3", a=a) == 2  # (-10) % 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1 and 'x'", True), ("0 or ''", False), ("[] or 0", False), ("[0] and 'x'", True)],
)
def test_and_or_give_booleans(text: str, expected: bool) -> None:
    assert ev(text) is expected


def test_and_or_short_circuit() -> None:
    assert ev("false and a.missing") is False
    assert ev("true or a.missing") is True
    assert ev("false or false or true or a.missing") is True
    fails("true and a.missing")
    fails("false or a.missing")


def test_equality_never_raises_and_booleans_are_not_numbers() -> None:
    class Touchy:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no")

        __hash__ = object.__hash__

    assert ev("1 == '1'") is False
    assert ev("null == 0") is False
    assert ev("[1, 2] == [1, 2]") is True
    assert ev("[1, 2] != [2, 1]") is True
    assert ev("true == 1") is False
    assert ev("false != 0") is True
    assert ev("[true] == [1]") is False
    assert ev("a == [1, [true]]", a=(1, [True])) is True
    assert ev("a == b", a={"k": [1, {"j": True}]}, b={"k": [1, {"j": True}]}) is True
    assert ev("a == b", a={"k": 1}, b={"k": True}) is False
    assert ev("a == b", a={"k": 1}, b={"j": 1}) is False
    assert ev("a == 1", a=Touchy()) is False
    nested: list[Any] = []
    for _ in range(100_000):  # deeper than any recursion limit: equality is iterative
        nested = [nested]
    assert ev("a == b", a=nested, b=nested) is True


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("'a' < 1", "cannot compare string with number using '<'"),
        ("null < 1", "cannot compare null with number"),
        ("true > 0", "cannot compare boolean with number using '>'"),
        ("[1] <= [2]", "cannot compare list with list"),
        ("'a' + 'b'", "'+' needs two numbers, not string and string"),
        ("'ab' * 3", "'*' needs two numbers"),
        ("[1] * 99999999999", "'*' needs two numbers, not list and number"),
        ("true + 1", "'+' needs two numbers, not boolean and number"),
        ("1 / 0", "division by zero in '/'"),
        ("1 % 0", "division by zero in '%'"),
        ("1.0 / 0.0", "division by zero"),
        ("-'a'", "unary '-' needs a number, not string"),
        ("-true", "unary '-' needs a number, not boolean"),
        ("len(1)", "len() needs a string, list or mapping, not number"),
        ("lower(1)", "lower() needs a string, not number"),
        ("upper(null)", "upper() needs a string, not null"),
        ("1 in 'abc'", "'in' a string needs a string on the left, not number"),
        ("'a' in 5", "'in' needs a list, string or mapping on the right, not number"),
        ("'a' in null", "not null"),
    ],
)
def test_type_errors_are_expression_errors(text: str, reason: str) -> None:
    err = fails(text)
    assert reason in err.reason
    assert err.expression == text
    assert err.path is None
    assert isinstance(err, OrchestrationError)


def test_huge_numbers_are_refused_not_computed() -> None:
    big = "9" * 1000
    start = time.thread_time()  # CPU time of this thread: other processes' load does not count
    err = fails(" * ".join([big] * 4))
    assert "integer product too large" in err.reason
    err = fails("a * a", a=2**3000)
    assert "too large" in err.reason
    assert ev("a * 2", a=2**3000) == 2**3001
    err = fails("a / 3", a=10**400)  # no float that large
    assert "number too large in '/'" in err.reason
    fails("a + 1.5", a=10**400)
    assert time.thread_time() - start < 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("'spam' in ['spam', 'noise']", True),
        ("'ham' in ['spam', 'noise']", False),
        ("'ham' not in ['spam', 'noise']", True),
        ("'bc' in 'abcd'", True),
        ("'x' not in 'abcd'", True),
        ("'' in ''", True),
        ("1 in [1.0]", True),
        ("1 in [true]", False),
        ("true in [1]", False),
        ("[1] in [[1], 2]", True),
        ("'k' in a.d", True),
        ("'v' in a.d", False),
        ("1 in a.d", True),
        ("true in a.d", False),
        ("[1] in a.d", False),
        ("'x' in a.s", True),
    ],
)
def test_in_and_not_in(text: str, expected: bool) -> None:
    a = {"d": {"k": "v", 1: "one"}, "s": frozenset({"x"})}
    assert ev(text, a=a) is expected


# -- references ------------------------------------------------------------------------------------


class Output(msgspec.Struct):
    score: int
    tags: list[str]
    note: str | msgspec.UnsetType = msgspec.UNSET
    _hidden: int = 7


@dataclasses.dataclass
class Report:
    verdict: str
    _secret: str = "s"

    @property
    def shouted(self) -> str:
        raise AssertionError("a property must never run")

    def method(self) -> str:
        raise AssertionError("a method must never run")


class Point(NamedTuple):
    x: int
    y: int


class Plain:
    kind = "class attribute"

    def __init__(self) -> None:
        self.size = 3
        self._private = "p"


VALUES: dict[str, Any] = {
    "n": {
        "output": {
            "severity": 4,
            "items": ["a", "b", "c"],
            "some key": {"deep": [1, {"x": 2}]},
            "_k": "mapping keys are data",
            "none": None,
        }
    },
    "s": Output(score=9, tags=["t"]),
    "r": Report("ok"),
    "p": Point(1, 2),
    "o": Plain(),
    "topic": "gpus",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n.output.severity", 4),
        ("n.output.items[0]", "a"),
        ("n.output.items[-1]", "c"),
        ("n.output.items[1 + 1]", "c"),
        ("n.output.items[n.output.severity - 3]", "b"),
        ('n.output["some key"].deep[1].x', 2),
        ("n.output['some key']['deep'][0]", 1),
        ("n.output._k", "mapping keys are data"),
        ("n.output.none", None),
        ("n['output'].severity", 4),
        ("n.output.items[0][0]", "a"),
        ("topic", "gpus"),
        ("topic[0]", "g"),
        ("s.score", 9),
        ("s.tags[0]", "t"),
        ("s['score']", 9),
        ("r.verdict", "ok"),
        ("p.x + p[1]", 3),
        ("o.size", 3),
        ("(n.output).severity", 4),
        ("[10, 20][1]", 20),
        ("default(n.output.missing, [5])[0]", 5),
    ],
)
def test_references_through_mappings_sequences_structs_and_objects(
    text: str, expected: Any
) -> None:
    assert parse_expression(text).evaluate(VALUES) == expected


def test_keywords_may_follow_a_dot() -> None:
    assert ev("a.in + a.not + a.true", a={"in": 1, "not": 2, "true": 3}) == 6


@pytest.mark.parametrize(
    "text",
    [
        "s._hidden",
        "s.__class__",
        "r._secret",
        "r.shouted",
        "r.method",
        "r.__dict__",
        "o._private",
        "o.kind",
        "o.__class__",
        "o.__init__",
        "p._fields",
        "s.note",  # UNSET: not there
        "o['_private']",
    ],
)
def test_private_names_methods_properties_and_class_attributes_are_not_readable(
    text: str,
) -> None:
    expr = parse_expression(text)
    with pytest.raises(ExpressionError):
        expr.evaluate(VALUES)
    assert parse_expression(f"exists({text})").evaluate(VALUES) is False


def test_a_private_name_says_why() -> None:
    with pytest.raises(ExpressionError) as info:
        parse_expression("r._secret").evaluate(VALUES)
    assert "starts with '_'" in info.value.reason


@pytest.mark.parametrize(
    ("text", "path", "reason"),
    [
        ("ghost.output", "ghost.output", "there is no node or input named 'ghost'"),
        ("n.output.x", "n.output.x", "n.output has no key 'x'"),
        ("n.output.items[3]", "n.output.items[3]", "n.output.items has no index 3 (it is a list"),
        ("n.output.items['a']", "n.output.items['a']", "index it with an integer, not string"),
        ("n.output.items.x", "n.output.items.x", "n.output.items (list) has no field 'x'"),
        ("n.output.none.x", "n.output.none.x", "n.output.none is null, so it has no 'x'"),
        ("n.output.severity.x", "n.output.severity.x", "(number) has no field 'x'"),
        ("s.nope", "s.nope", "s (Output) has no field 'nope'"),
        ("n.output.items[1 + 5].y", "n.output.items[1 + 5].y", "has no index 6"),
        ("[1][5]", "[1][5]", "[1] has no index 5"),
    ],
)
def test_a_missing_reference_names_the_path_and_the_missing_part(
    text: str, path: str, reason: str
) -> None:
    with pytest.raises(ExpressionError) as info:
        parse_expression(text).evaluate(VALUES)
    assert info.value.path == path
    assert reason in info.value.reason
    assert reason in str(info.value)


def test_exists_and_default_do_not_fail_on_a_missing_segment() -> None:
    assert ev("exists(n.output.severity)", **VALUES) is True
    assert ev("exists(n.output.none)", **VALUES) is True  # null is a value
    assert ev("exists(n.output.x)", **VALUES) is False
    assert ev("exists(ghost)", **VALUES) is False
    assert ev("exists(n.output.items[9])", **VALUES) is False
    assert ev("not exists(n.output.none.deeper)", **VALUES) is True
    assert ev("default(n.output.severity, 0)", **VALUES) == 4
    assert ev("default(n.output.x, 0)", **VALUES) == 0
    assert ev("default(n.output.none, 0)", **VALUES) is None
    assert ev("default(n.output.x, default(n.output.y, 'z'))", **VALUES) == "z"
    # The fallback is evaluated only when needed, so its own failures stay hidden otherwise.
    assert ev("default(n.output.severity, 1 / 0)", **VALUES) == 4
    with pytest.raises(ExpressionError, match="division by zero"):
        ev("default(n.output.x, 1 / 0)", **VALUES)
    # Only a missing segment is forgiven: a type error inside is not.
    with pytest.raises(ExpressionError, match="needs two numbers"):
        ev("exists(n.output.items['a' + 1])", **VALUES)


def test_references_and_paths() -> None:
    expr = parse_expression(
        "a.output.x >= b.output.y[0].z and exists(c.v) and d "
        "or len(e.output['k'].w) == 0 and f.items[g.i].j == h"
    )
    assert expr.references == frozenset("abcdefgh")
    assert expr.paths == frozenset(
        {"a.output.x", "b.output.y", "c.v", "d", "e.output", "f.items", "g.i", "h"}
    )
    assert parse_expression("len(x) > 1").references == {"x"}
    assert parse_expression("1 + 2").references == frozenset()
    assert parse_expression("len.output == lower").references == {"len", "lower"}


# -- functions -------------------------------------------------------------------------------------


def test_functions() -> None:
    a = {"s": "MiXed", "items": [1, 2], "d": {"k": 1}}
    assert ev("len(a.s) + len(a.items) + len(a.d) + len([])", a=a) == 8
    assert ev("lower(a.s) == 'mixed' and upper(a.s) == 'MIXED'", a=a) is True
    assert ev("len(a.tags)", a={"tags": frozenset({"x", "y"})}) == 2


# -- parse errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("a.x >= 3 and", 13, "expected an operand after 'and'"),
        ("a.x >= 3 and )", 14, "expected an operand after 'and', found ')'"),
        ("a <", 4, "expected an operand after '<'"),
        ("and b", 1, "expected an operand at the start, found 'and'"),
        ("a + * b", 5, "expected an operand after '+', found '*'"),
        ("(a", 3, "expected ')' to close '(' at col 1, found the end"),
        ("[1, 2", 6, "expected ']' to close '[' at col 1"),
        ("a[1", 4, "expected ']' to close '[' at col 2"),
        ("[1 2]", 4, "expected ']' to close '[' at col 1, found '2'"),
        ("a)", 2, "unmatched ')'"),
        ("a b", 3, "expected an operator or the end, found 'b'"),
        ("'it''s'", 5, "expected an operator or the end, found a string"),
        ("a < b < c", 7, "comparisons do not chain: write 'a < b and b < c'"),
        ("a == b != c", 8, "comparisons do not chain"),
        ("a in b not in c", 8, "comparisons do not chain: write 'a in b and b not in c'"),
        ("foo(1)", 1, "'foo' is not a function; the functions are default, exists, len, lower"),
        ("a.b(1)", 4, "only these can be called: default, exists, len, lower, upper"),
        ("(len)(a)", 6, "only these can be called"),
        ("len()", 1, "len() takes 1 argument, got 0"),
        ("default(a)", 1, "default() takes 2 arguments, got 1"),
        ("exists(1)", 1, "exists() takes a reference first, such as node.output.field"),
        ("default(a or b, 1)", 1, "default() takes a reference first"),
        ("'abc", 1, "unterminated string"),
        ('a == "x', 6, "unterminated string"),
        (r'"a\qb"', 3, "unknown escape '\\q'"),
        ("a = 1", 3, "unexpected '='; use '=='"),
        ("a && b", 3, "use 'and'"),
        ("a || b", 3, "use 'or'"),
        ("!a", 1, "use 'not'"),
        ("a # b", 3, "unexpected '#'"),
        ("2 ** 3", 3, "there is no '**' operator"),
        ("1e999", 1, "number out of range"),
        ("12abc", 1, "malformed number"),
        ("3.x", 1, "malformed number"),
        ("a.", 3, "expected a name after '.', found the end"),
        ("a.1", 3, "expected a name after '.', found '1'"),
        ("a == not b", 6, "put 'not ...' in parentheses here"),
        ("1 + not b", 5, "put 'not ...' in parentheses"),
        ("a not b", 3, "expected 'in' after 'not'"),
        ("", 1, "the condition is empty"),
        ("  \n ", 1, "the condition is empty"),
        ("a\n and", 7, "expected an operand after 'and'"),
        ("ünïcode", 1, "unexpected 'ü'"),
    ],
)
def test_parse_errors_name_the_column_and_what_was_expected(
    text: str, column: int, message: str
) -> None:
    with pytest.raises(ExpressionSyntaxError) as info:
        parse_expression(text)
    err = info.value
    assert str(err).startswith(f"col {column}: ")
    assert message in str(err)
    assert err.column == column
    assert err.expression == text


def test_parse_errors_carry_source_line_and_field() -> None:
    with pytest.raises(ValidationError) as info:
        parse_expression("a.x >= 3 and", source="graph.yaml", line=7, field="edges[0].when")
    err = info.value
    assert (err.source, err.line, err.field) == ("graph.yaml", 7, "edges[0].when")
    assert str(err) == (
        "graph.yaml:7: col 13: expected an operand after 'and' (field `edges[0].when`)"
    )


@pytest.mark.parametrize("text", [3, True, None, ["a"]])
def test_a_condition_that_is_not_a_string_is_refused(text: Any) -> None:
    with pytest.raises(ValidationError, match="a condition is a string"):
        parse_expression(text, field="edges[0].when")


# -- limits ----------------------------------------------------------------------------------------


def test_length_limit() -> None:
    at_limit = " + ".join(["1"] * ((MAX_LENGTH + 3) // 4))
    assert len(at_limit) == MAX_LENGTH - 1 or len(at_limit) <= MAX_LENGTH
    assert ev(at_limit) == (MAX_LENGTH + 3) // 4
    with pytest.raises(ValidationError, match=f"at most {MAX_LENGTH} characters"):
        parse_expression("1" + " " * MAX_LENGTH)


@pytest.mark.parametrize(
    "text",
    [
        "(" * 10_000,
        "(" * 10_000 + "a" + ")" * 10_000,
        "[" * 10_000,
        "not " * 1000 + "a",
        "-" * 4000 + "1",
        "a" + "[a" * 2000,
        "len(" * 1000,
    ],
)
def test_deep_nesting_fails_fast_with_a_validation_error(text: str) -> None:
    text = text[:MAX_LENGTH]
    start = time.thread_time()  # CPU time of this thread: other processes' load does not count
    with pytest.raises(ValidationError, match=f"nests deeper than {MAX_DEPTH} levels"):
        parse_expression(text)
    assert time.thread_time() - start < 0.5


def test_the_depth_limit_is_exact_for_parentheses() -> None:
    deepest = "(" * (MAX_DEPTH - 1) + "1" + ")" * (MAX_DEPTH - 1)
    assert ev(deepest) == 1
    with pytest.raises(ValidationError, match="nests deeper"):
        parse_expression("(" + deepest + ")")


def test_the_compiled_tree_is_bounded_too() -> None:
    # Each group adds five levels to the tree but one to the parse: or(and(==(+(*(...))))).
    def nest(times: int) -> str:
        text = "x"
        for _ in range(times):
            text = f"({text} * 1 + 1 == 1 and 1 or 1)"
        return text

    parse_expression(nest((MAX_DEPTH - 1) // 5))
    with pytest.raises(ValidationError, match="nests deeper"):
        parse_expression(nest((MAX_DEPTH - 1) // 5 + 1))


def test_long_flat_chains_evaluate_without_recursion() -> None:
    assert ev(" + ".join(["1"] * 1000)) == 1000
    assert ev(" or ".join(["false"] * 400) + " or true") is True
    assert ev(" and ".join(["true"] * 400)) is True
    assert ev("a" + ".b" * 1500, a=_chain_of(1500)) == "end"


def _chain_of(n: int) -> Any:
    value: Any = "end"
    for _ in range(n):
        value = {"b": value}
    return value


# -- the Expression object -------------------------------------------------------------------------


def test_expression_is_immutable_comparable_and_picklable() -> None:
    expr = parse_expression("a.x >= 3 and not a.y")
    with pytest.raises(AttributeError):
        expr.source = "true"
    with pytest.raises(AttributeError):
        del expr.references
    assert expr == parse_expression("a.x >= 3 and not a.y")
    assert expr != parse_expression("a.x >= 3")
    assert len({expr, parse_expression("a.x >= 3 and not a.y")}) == 1
    copy = pickle.loads(pickle.dumps(expr))
    assert isinstance(copy, Expression)
    assert copy.matches({"a": {"x": 3, "y": 0}}) is True
    assert repr(expr) == "Expression('a.x >= 3 and not a.y')"


def test_matches_is_truthiness_of_the_value() -> None:
    class NoTruth:
        def __bool__(self) -> bool:
            raise ValueError("ambiguous")

    assert parse_expression("a.items").matches({"a": {"items": []}}) is False
    assert parse_expression("a.items").matches({"a": {"items": [0]}}) is True
    assert parse_expression("a.n").matches({"a": {"n": 0.0}}) is False
    assert parse_expression("a.s").matches({"a": {"s": "x"}}) is True
    with pytest.raises(ExpressionError, match="no truth value"):
        parse_expression("a").matches({"a": NoTruth()})
    with pytest.raises(ExpressionError, match="no truth value"):
        parse_expression("not a").evaluate({"a": NoTruth()})


def test_the_brief_examples() -> None:
    escalate = parse_expression("classifier.output.severity >= 3 and not classifier.output.spam")
    archive = parse_expression(
        'classifier.output.label in ["spam", "noise"] or len(classifier.output.items) == 0'
    )
    out = {"severity": 4, "spam": False, "label": "bug", "items": [1]}
    assert escalate.matches({"classifier": {"output": out}}) is True
    assert archive.matches({"classifier": {"output": out}}) is False
    out = {"severity": 1, "spam": True, "label": "spam", "items": [1]}
    assert escalate.matches({"classifier": {"output": out}}) is False
    assert archive.matches({"classifier": {"output": out}}) is True
    assert archive.paths == {"classifier.output.label", "classifier.output.items"}


# -- properties ------------------------------------------------------------------------------------

# (1) Integer arithmetic and comparison trees, rendered with as few parentheses as the grammar
# allows, evaluate as a direct reading of the same tree does.

_ARITH = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "%": operator.mod,
}
_CMP = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_PRECEDENCE = {"or": 1, "and": 2, "not": 3, **dict.fromkeys(_CMP, 4), "neg": 7}
_PRECEDENCE.update({"+": 5, "-": 5, "*": 6, "/": 6, "%": 6})

numbers = st.recursive(
    st.tuples(st.just("lit"), st.integers(-1000, 1000) | st.integers(-(2**2100), 2**2100)),
    lambda inner: (
        st.tuples(st.just("neg"), inner) | st.tuples(st.sampled_from(list(_ARITH)), inner, inner)
    ),
    max_leaves=12,
)
conditions = st.recursive(
    st.tuples(st.sampled_from(list(_CMP)), numbers, numbers),
    lambda inner: (
        st.tuples(st.just("not"), inner) | st.tuples(st.sampled_from(["and", "or"]), inner, inner)
    ),
    max_leaves=5,
)


def _precedence(tree: tuple[Any, ...]) -> int:
    if tree[0] == "lit":
        return 9 if tree[1] >= 0 else 7  # -5 is unary minus on 5
    return _PRECEDENCE[tree[0]]


def render(tree: tuple[Any, ...]) -> str:
    def wrap(child: tuple[Any, ...], parens: bool) -> str:
        return f"({render(child)})" if parens else render(child)

    op = tree[0]
    if op == "lit":
        return str(tree[1])
    if op in ("neg", "not"):
        child = tree[1]
        prefix = "-" if op == "neg" else "not "
        return prefix + wrap(child, _precedence(child) < _PRECEDENCE[op])
    left, right, power = tree[1], tree[2], _PRECEDENCE[op]
    # Left-associative: a left operand of the same level needs no parentheses, except under a
    # comparison, which does not associate.
    needs = power + 1 if op in _CMP else power
    left_text = wrap(left, _precedence(left) < needs)
    return f"{left_text} {op} {wrap(right, _precedence(right) <= power)}"


class Refused(Exception):
    pass


def reference(tree: tuple[Any, ...]) -> Any:
    op = tree[0]
    if op == "lit":
        return tree[1]
    if op == "neg":
        return -reference(tree[1])
    if op == "not":
        return not reference(tree[1])
    if op == "and":
        return bool(reference(tree[1])) and bool(reference(tree[2]))
    if op == "or":
        return bool(reference(tree[1])) or bool(reference(tree[2]))
    a, b = reference(tree[1]), reference(tree[2])
    if op in _CMP:
        return _CMP[op](a, b)
    if op == "*" and isinstance(a, int) and isinstance(b, int):
        if a.bit_length() + b.bit_length() > 4096:
            raise Refused
    try:
        return _ARITH[op](a, b)
    except ArithmeticError:
        raise Refused from None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(numbers | conditions)
def test_evaluation_agrees_with_a_reference_reading_of_the_tree(tree: tuple[Any, ...]) -> None:
    text = render(tree)
    assume(len(text) <= MAX_LENGTH)
    expr = parse_expression(text)
    try:
        expected = reference(tree)
    except Refused:
        with pytest.raises(ExpressionError):
            expr.evaluate({})
        return
    got = expr.evaluate({})
    assert type(got) is type(expected), text
    assert got == expected or (math.isnan(got) and math.isnan(expected)), text


# (2) Parsing arbitrary text raises nothing but ValidationError.

_pieces = st.sampled_from(
    [
        "a", "b.c", ".", "x", "(", ")", "[", "]", ",", "1", "2.5", "1e3", "'s'", '"t\\n"', "'",
        "and", "or", "not", "in", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%",
        "len", "exists", "default", "lower", "true", "null", " ", "\\", "=", "!", "_",
    ]
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.text() | st.lists(_pieces, max_size=30).map("".join))
def test_parsing_arbitrary_text_raises_only_validation_errors(text: str) -> None:
    try:
        expr = parse_expression(text)
    except ValidationError:
        return
    assert expr.source == text


# (3) Evaluating well-formed conditions over JSON-like values raises nothing but ExpressionError.

_refs = st.sampled_from(
    ["a.x", "a.y.z", 'a["k"]', "a.k", "a.x[0]", "a.x[-1]", "b[0].x", "b[-1].x", "a", "b", "c.d"]
)
_literals = st.sampled_from(
    ["-3", "2.5", "1e3", '"x"', "''", "true", "false", "null", "[]", '[1, "x"]']
) | st.sampled_from(["0", "1", "0.0", "2", "-1"])  # small numbers half the time: 1 / 0, 2 % 0.0
_binary = st.sampled_from(
    ["or", "and", "==", "!=", "<", "<=", ">", ">=", "in", "not in", "+", "-", "*", "/", "%"]
)


@st.composite
def conditions_text(draw: st.DrawFn, depth: int = 0) -> str:
    """A well-formed condition: mostly binary operators, with every other form mixed in."""
    if depth == 4 or (depth and draw(st.integers(0, 3)) == 0):
        return draw(_refs | _literals)
    form = draw(st.integers(0, 11))
    inner = conditions_text(depth + 1)
    if form < 5:
        return f"({draw(inner)} {draw(_binary)} {draw(inner)})"
    if form == 5:
        return f"(not {draw(inner)})"
    if form == 6:
        return f"-({draw(inner)})"
    if form == 7:
        return f"{draw(st.sampled_from(['len', 'lower', 'upper']))}({draw(inner)})"
    if form == 8:
        return f"exists({draw(_refs)})"
    if form == 9:
        return f"default({draw(_refs)}, {draw(inner)})"
    if form == 10:
        return "[" + ", ".join(draw(st.lists(inner, max_size=3))) + "]"
    return f"({draw(inner)})[{draw(inner)}]"


_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 2), st.integers(), st.floats(), st.text(max_size=5)
)
json_values = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["x", "y", "z", "k"]) | st.text(max_size=3), inner)
    ),
    max_leaves=12,
)
# Mostly the shapes the references expect, so that evaluation gets deep, not only to a miss.
_a = st.fixed_dictionaries(
    {"x": _leaves | st.lists(_leaves, max_size=3), "y": st.fixed_dictionaries({"z": _leaves})},
    optional={"k": _leaves},
)
_b = st.lists(st.fixed_dictionaries({"x": _leaves}), min_size=1, max_size=3)
condition_values = st.fixed_dictionaries({"a": _a | json_values, "b": _b | json_values})


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conditions_text(), condition_values)
def test_evaluation_raises_only_expression_errors(text: str, values: dict[str, Any]) -> None:
    expr = parse_expression(text)
    try:
        expr.evaluate(values)
    except ExpressionError:
        pass
    try:
        expr.matches(values)
    except ExpressionError:
        pass


_operand_values = (
    _leaves | st.sampled_from([0, 0.0, -0.0, 2**5000, math.inf, math.nan]) | json_values
)
_forms = st.sampled_from(
    [f"a {op} b" for op in ("or", "and", "==", "!=", "<", "<=", ">", ">=", "in", "not in")]
    + [f"a {op} b" for op in ("+", "-", "*", "/", "%")]
    + ["-a", "not a", "len(a)", "lower(a)", "upper(a)", "a[b]", "default(a[b], b)", "a"]
)


@settings(max_examples=1000, deadline=None)
@given(_forms, _operand_values, _operand_values)
def test_every_operator_over_any_two_values_raises_only_expression_errors(
    form: str, a: Any, b: Any
) -> None:
    expr = parse_expression(form)
    try:
        expr.matches({"a": a, "b": b})
    except ExpressionError:
        pass
