r"""Edge conditions (``when:``): a small, safe expression language.

Parsed once, run often.

::

    classifier.output.severity >= 3 and not classifier.output.spam
    classifier.output.label in ["spam", "noise"] or len(classifier.output.items) == 0

Grammar, loosest first (``_expr_lex`` makes the tokens, ``_expr_eval`` runs the result)::

    expr    := or
    or      := and ("or" and)*                      -- n-ary, short-circuits, gives a bool
    and     := not ("and" not)*
    not     := "not" not | cmp
    cmp     := sum (CMPOP sum)?                     -- no chaining: a < b < c is an error
    CMPOP   := "==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in"
    sum     := product (("+" | "-") product)*       -- left-associative
    product := unary (("*" | "/" | "%") unary)*     -- left-associative
    unary   := "-" unary | postfix
    postfix := primary ("." NAME | "[" expr "]")*   -- NAME may be a keyword after "."
    primary := NUMBER | STRING | true | false | null | True | False | None
             | "[" args? "]" | "(" expr ")" | FUNC "(" args? ")" | NAME
    args    := expr ("," expr)* ","?
    NUMBER  := [0-9]+ ("." [0-9]+)? ([eE] [+-]? [0-9]+)?   -- finite; no letter, digit or "."
                                                           -- right after it
    STRING  := '...' | "..."                        -- escapes \\ \" \' \n \t only
    NAME    := [A-Za-z_][A-Za-z0-9_]*               -- not a keyword (and or not in true...)

``FUNC`` is ``len``, ``lower``, ``upper``, ``exists`` or ``default`` (any other NAME before
``(`` is an error, as is ``(`` after anything else); ``exists`` and ``default`` take a
reference first: a NAME and its postfix steps, perhaps in parentheses. ``not`` stands only
where a ``not`` expression may (``a == not b`` and ``-not a`` ask for parentheses). A NAME
not followed by ``(`` is a reference: its first segment is looked up in the values given to
``evaluate``. Whitespace is spaces, tabs and newlines, anywhere between tokens.

Values: ``and``/``or``/``not`` give booleans from Python truthiness. ``==`` never raises and
is strict about booleans (``true == 1`` is false, in lists too; lists equal tuples). Ordering
needs two numbers or two strings; arithmetic needs two numbers (booleans are not numbers, and
``+`` does not concatenate); ``/`` is true division; an integer product is refused past 4,096
bits. ``in`` looks in lists and tuples (by ``==``), strings (substrings) and mappings and sets
(keys). A step ``.name`` reads a mapping key (any key, ``_k`` too: mappings are data), or a
public data attribute: a msgspec Struct field (not one left UNSET), a dataclass or namedtuple
field, or an instance ``__dict__`` entry; never a property, method, class attribute or name
starting with ``_``, and nothing is called. ``[i]`` indexes lists, tuples and strings by
integer (negative from the end), mappings by key, and reads other objects as ``.i`` does. A
step that finds nothing raises ``ExpressionError``, except under ``exists`` (false) and
``default`` (the fallback, evaluated only then); a null found is a value, not a miss.

Limits: 4,096 characters, and 64 levels of nesting, counted both while parsing (brackets,
operands) and in the compiled tree, so neither parsing nor evaluation recurses deeper; long
flat chains (``a or b or ...``, ``1 + 2 + ...``, ``a.b.c...``) are loops, not nesting.

Cost: the tree is compiled to closures. Measured with ``timeit`` on CPython 3.11 (one AMD EPYC
core), per ``matches``: ``a.output.x >= 3 and not a.output.y`` 0.7 µs over dicts, 1.0 µs over
a msgspec Struct; ``a.output.label in ["spam", "noise"] or len(a.output.items) == 0`` 1.2 µs
when both sides run; a missing reference under ``default`` 1.3 µs. Parsing the first condition
takes about 23 µs. Why this is not CEL, with figures from ``bench/bench_expr.py``:
``docs/architecture.md`` (Orchestration, Conditions).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from converge.errors import ExpressionError, ExpressionSyntaxError, ValidationError
from converge.orchestration._expr_eval import (
    FUNCTIONS,
    NOTHING,
    Fail,
    Fn,
    PathStep,
    access,
    chain,
    compare,
    constant,
    is_number,
    kind,
    minus,
    negate,
    refer,
    thaw,
    truth,
)
from converge.orchestration._expr_lex import LITERALS, ExprSyntaxError, Token, tokenize

__all__ = ["MAX_DEPTH", "MAX_LENGTH", "Expression", "parse_expression"]

MAX_LENGTH = 4096
"""Longest condition text, in characters."""
MAX_DEPTH = 64
"""Deepest nesting of a condition."""

_FUNCTIONS = {"default": 2, "exists": 1, "len": 1, "lower": 1, "upper": 1}
_FUNCTION_NAMES = ", ".join(_FUNCTIONS)
_NOT_POWER = 3
_POWER = {"or": 1, "and": 2, "in": 4, "not in": 4, "+": 5, "-": 5, "*": 6, "/": 6, "%": 6}
_POWER.update(dict.fromkeys(("==", "!=", "<", "<=", ">", ">="), 4))
_CMP_POWER = 4


class Expression:
    """A parsed condition: immutable, and cheap to evaluate many times.

    Made by ``parse_expression``. Equal when the text is equal; pickles as its text.

    Attributes:
        source: the condition's text.
        references: first segments of every reference (node ids or graph input names).
        paths: every reference's dotted path as written, up to its first ``[...]``.
    """

    __slots__ = ("_fn", "paths", "references", "source")
    source: str
    references: frozenset[str]
    paths: frozenset[str]
    _fn: Fn

    def __init__(self, source: str, references: frozenset[str], paths: frozenset[str], fn: Fn):
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "references", references)
        object.__setattr__(self, "paths", paths)
        object.__setattr__(self, "_fn", fn)

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        """The condition's value, with references looked up in ``values``.

        Args:
            values: by first segment (node id or graph input name), the value to step into.

        Raises:
            ExpressionError: a reference step found nothing (outside ``exists``/``default``),
                operand types do not fit an operator or function, or arithmetic failed.
        """
        try:
            return self._fn(values)
        except Fail as exc:
            raise ExpressionError(self.source, exc.reason, path=exc.path) from None

    def matches(self, values: Mapping[str, Any]) -> bool:
        """Whether the condition holds: the truthiness of ``evaluate(values)``.

        Raises:
            ExpressionError: as ``evaluate`` does, or the value has no truthiness.
        """
        try:
            return truth(self._fn(values))
        except Fail as exc:
            raise ExpressionError(self.source, exc.reason, path=exc.path) from None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Expression is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Expression is immutable; cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expression) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"

    def __reduce__(self) -> tuple[Callable[[str], Expression], tuple[str]]:
        return parse_expression, (self.source,)


def parse_expression(
    text: str, *, source: str | None = None, line: int | None = None, field: str | None = None
) -> Expression:
    """Parse and compile a condition.

    Args:
        text: the condition, e.g. ``a.output.score >= 3 and not a.output.spam``.
        source: the file it came from, for the error.
        line: its line in ``source``, for the error.
        field: its dotted field (``edges[2].when``), for the error.

    Raises:
        ExpressionSyntaxError: (a ``ValidationError``) the text is not a condition; the message
            says at which column and what was expected there.
    """
    where: dict[str, Any] = {"source": source, "line": line, "field": field}
    if not isinstance(text, str):
        raise ValidationError(f"a condition is a string, not {kind(text)}", **where)
    if len(text) > MAX_LENGTH:
        raise ExpressionSyntaxError(
            text,
            MAX_LENGTH + 1,
            f"a condition is at most {MAX_LENGTH} characters; this one has {len(text)}",
            **where,
        )
    try:
        parser = _Parser(text)
        fn = parser.parse()
    except ExprSyntaxError as exc:
        raise ExpressionSyntaxError(text, exc.offset + 1, exc.message, **where) from None
    return Expression(text, frozenset(parser.roots), frozenset(parser.paths), fn)


# -- parsing: a Pratt parser that compiles as it goes ------------------------------------------


class _Node(NamedTuple):
    fn: Fn
    depth: int
    ref: str | None = None  # the reference as written, when the node is one
    const: Any = NOTHING  # the value, when known at parse time


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.pos = 0
        self.roots: set[str] = set()
        self.paths: set[str] = set()

    def parse(self) -> Fn:
        if self.tokens[0].kind == "end":
            raise ExprSyntaxError(0, "the condition is empty")
        node = self.expr(0, 1)
        tok = self.tokens[self.pos]
        if tok.kind != "end":
            if tok.kind == "op" and tok.text == ")":
                raise ExprSyntaxError(tok.start, "unmatched ')'")
            raise ExprSyntaxError(tok.start, f"expected an operator or the end, found {_say(tok)}")
        return node.fn

    def take(self) -> Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def at(self, text: str) -> bool:
        tok = self.tokens[self.pos]
        return tok.kind in ("op", "keyword") and tok.text == text

    def expect(self, text: str, opener: Token) -> None:
        if not self.at(text):
            tok = self.tokens[self.pos]
            where = f"{opener.text!r} at col {opener.start + 1}"
            raise ExprSyntaxError(
                tok.start, f"expected {text!r} to close {where}, found {_say(tok)}"
            )
        self.pos += 1

    def node(self, fn: Fn, children: Sequence[_Node], at: Token, **extra: Any) -> _Node:
        depth = 1 + max((c.depth for c in children), default=0)
        if depth > MAX_DEPTH:
            raise ExprSyntaxError(at.start, f"the condition nests deeper than {MAX_DEPTH} levels")
        return _Node(fn, depth, **extra)

    def binary_op(self) -> str | None:
        tok = self.tokens[self.pos]
        if tok.kind == "keyword" and tok.text == "not":
            if self.tokens[self.pos + 1].text == "in":
                return "not in"
            raise ExprSyntaxError(tok.start, "expected 'in' after 'not' (or an operator before it)")
        if tok.kind in ("op", "keyword") and tok.text in _POWER:
            return tok.text
        return None

    def expr(self, min_power: int, depth: int) -> _Node:
        if depth > MAX_DEPTH:
            raise ExprSyntaxError(
                self.tokens[self.pos].start, f"the condition nests deeper than {MAX_DEPTH} levels"
            )
        left = self.prefix(min_power, depth)
        while (op := self.binary_op()) is not None and _POWER[op] > min_power:
            power = _POWER[op]
            at = self.take()
            if op == "not in":
                self.pos += 1
            if power == _CMP_POWER:
                right = self.operand(power, depth, at)
                left = self.node(compare(op, left.fn, right.const, right.fn), (left, right), at)
                if (second := self.binary_op()) is not None and _POWER[second] == _CMP_POWER:
                    raise ExprSyntaxError(
                        self.tokens[self.pos].start,
                        f"comparisons do not chain: write 'a {op} b and b {second} c'",
                    )
                continue
            operands, ops = [left, self.operand(power, depth, at)], [op]
            while (op := self.binary_op()) is not None and _POWER[op] == power:
                op_tok = self.take()
                operands.append(self.operand(power, depth, op_tok))
                ops.append(op)
            left = self.node(chain(ops, [o.fn for o in operands]), operands, at)
        return left

    def operand(self, power: int, depth: int, after: Token) -> _Node:
        tok = self.tokens[self.pos]
        if tok.kind == "end" or (tok.kind == "op" and tok.text in ")],"):
            found = "" if tok.kind == "end" else f", found {_say(tok)}"
            raise ExprSyntaxError(tok.start, f"expected an operand after {after.text!r}{found}")
        return self.expr(power, depth + 1)

    def prefix(self, min_power: int, depth: int) -> _Node:
        tok = self.tokens[self.pos]
        if tok.kind == "keyword" and tok.text == "not":
            if min_power > _NOT_POWER:
                raise ExprSyntaxError(tok.start, "put 'not ...' in parentheses here")
            self.pos += 1
            inner = self.operand(_NOT_POWER, depth, tok)
            return self.node(negate(inner.fn), (inner,), tok)
        if tok.kind == "op" and tok.text == "-":
            self.pos += 1
            inner = self.operand(7, depth, tok)
            if is_number(inner.const):
                return self.node(constant(-inner.const), (), tok, const=-inner.const)
            return self.node(minus(inner.fn), (inner,), tok)
        is_reference = tok.kind == "name" and not self.tokens[self.pos + 1].text == "("
        node = self.primary(depth) if not is_reference else None
        if is_reference:
            self.pos += 1
        steps, children = self.steps(depth)
        if self.at("("):
            raise ExprSyntaxError(
                self.tokens[self.pos].start, f"only these can be called: {_FUNCTION_NAMES}"
            )
        if node is None:  # a reference: its first segment is looked up in the values
            text, path, indexed = tok.text, tok.text, False
            for name, _, piece in steps:
                indexed = indexed or name is None
                text += piece
                path += "" if indexed else piece
            self.roots.add(tok.text)
            self.paths.add(path)
            return self.node(refer(tok.text, steps, text), children, tok, ref=text)
        if not steps:
            return node
        # Steps on a computed value: ``(a.b).c``, ``[1, 2][0]``, ``default(a.x, [])[0]``.
        text = self.text[tok.start : self.tokens[self.pos - 1].end]
        return self.node(access(node.fn, steps, text), [node, *children], tok, ref=node.ref)

    def steps(self, depth: int) -> tuple[list[PathStep], list[_Node]]:
        steps: list[PathStep] = []
        children: list[_Node] = []
        while self.at(".") or self.at("["):
            opener = self.take()
            if opener.text == ".":
                name = self.take()
                if name.kind not in ("name", "keyword"):
                    raise ExprSyntaxError(
                        name.start, f"expected a name after '.', found {_say(name)}"
                    )
                steps.append((name.text, None, f".{name.text}"))
                continue
            start = self.tokens[self.pos].start
            index = self.operand(0, depth, opener)
            self.expect("]", opener)
            shown = self.text[start : self.tokens[self.pos - 2].end].strip()
            steps.append((None, index.fn, f"[{shown}]"))
            children.append(index)
        return steps, children

    def primary(self, depth: int) -> _Node:
        tok = self.take()
        if tok.kind in ("number", "string") or (tok.kind == "keyword" and tok.text in LITERALS):
            value = LITERALS[tok.text] if tok.kind == "keyword" else tok.value
            return _Node(constant(value), 1, const=value)
        if tok.kind == "name":
            return self.call(tok, depth)
        if tok.kind == "op" and tok.text == "(":
            inner = self.operand(0, depth, tok)
            self.expect(")", tok)
            return inner
        if tok.kind == "op" and tok.text == "[":
            items = self.items("]", tok, depth)
            if all(i.const is not NOTHING for i in items):
                # Kept as nested tuples; each evaluation hands out fresh lists.
                value = tuple(i.const for i in items)
                return self.node(lambda _: thaw(value), items, tok, const=value)
            fns = tuple(i.fn for i in items)
            return self.node(lambda v: [f(v) for f in fns], items, tok)
        before = self.tokens[self.pos - 2] if self.pos >= 2 else None
        after = f"after {before.text!r}" if before else "at the start"
        if tok.kind == "end":
            raise ExprSyntaxError(tok.start, f"expected an operand {after}")
        raise ExprSyntaxError(tok.start, f"expected an operand {after}, found {_say(tok)}")

    def items(self, close: str, opener: Token, depth: int) -> list[_Node]:
        items: list[_Node] = []
        while not self.at(close):
            items.append(self.operand(0, depth, self.tokens[self.pos - 1]))
            if not self.at(","):
                break
            self.pos += 1
        self.expect(close, opener)
        return items

    def call(self, name: Token, depth: int) -> _Node:
        arity = _FUNCTIONS.get(name.text)
        if arity is None:
            raise ExprSyntaxError(
                name.start, f"{name.text!r} is not a function; the functions are {_FUNCTION_NAMES}"
            )
        args = self.items(")", self.take(), depth)
        if len(args) != arity:
            plural = "s" if arity > 1 else ""
            raise ExprSyntaxError(
                name.start, f"{name.text}() takes {arity} argument{plural}, got {len(args)}"
            )
        if name.text in ("exists", "default") and args[0].ref is None:
            raise ExprSyntaxError(
                name.start, f"{name.text}() takes a reference first, such as node.output.field"
            )
        return self.node(FUNCTIONS[name.text](*(a.fn for a in args)), args, name)


def _say(tok: Token) -> str:
    if tok.kind == "end":
        return "the end"
    return "a string" if tok.kind == "string" else repr(tok.text)
