"""The tokenizer of edge conditions (``when:``).

``_expr`` parses what it returns.

Tokens are numbers, strings, names, keywords and operators. Offsets are 0-based; errors give
them to ``_expr``, which reports a 1-based column. Nothing here evaluates anything.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

__all__ = ["KEYWORDS", "LITERALS", "ExprSyntaxError", "Token", "tokenize"]

LITERALS: dict[str, Any] = {
    "true": True,
    "false": False,
    "null": None,
    "True": True,
    "False": False,
    "None": None,
}
"""The keywords that are constants (the Python spellings are accepted too)."""

KEYWORDS = frozenset({"and", "or", "not", "in", *LITERALS})
"""Names that are not references (though they may follow a ``.``)."""

_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\n]+)
    | (?P<number>[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<op>==|!=|<=|>=|[<>+\-*/%()\[\],.])
    """,
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t"}
_NUMBER_TAIL = re.compile(r"[A-Za-z0-9_.]")
# Characters people bring from other languages, and what to write instead.
_HINTS = {
    "=": "use '==' to compare",
    "!": "use 'not', or '!=' to compare",
    "&": "use 'and'",
    "|": "use 'or'",
}


class ExprSyntaxError(Exception):
    """A malformed condition: ``offset`` is where (0-based), ``message`` what was wrong."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message


class Token(NamedTuple):
    """One token of a condition."""

    kind: str
    """``number``, ``string``, ``name``, ``keyword``, ``op`` or ``end``."""
    text: str
    """The token as written (``end``: empty)."""
    value: Any
    """The number, the unescaped string, or the text for the other kinds."""
    start: int
    """Offset of the first character."""
    end: int
    """Offset just past the last character."""


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``, ending with an ``end`` token.

    Raises:
        ExprSyntaxError: an unexpected character, an unterminated string, an unknown escape or
            a malformed number.
    """
    tokens: list[Token] = []
    pos, n = 0, len(text)
    while pos < n:
        m = _TOKEN.match(text, pos)
        if m is None:
            raise _unexpected(text, pos)
        kind, word, end = m.lastgroup or "", m.group(), m.end()
        if kind == "number":
            if end < n and _NUMBER_TAIL.match(text, end):
                raise ExprSyntaxError(pos, f"malformed number {text[pos : end + 1]!r}")
            tokens.append(Token(kind, word, _number(word, pos), pos, end))
        elif kind == "string":
            tokens.append(Token(kind, word, _unescape(word, pos), pos, end))
        elif kind == "name":
            tokens.append(Token("keyword" if word in KEYWORDS else kind, word, word, pos, end))
        elif kind == "op":
            if word == "*" and text.startswith("*", end):
                raise ExprSyntaxError(pos, "there is no '**' operator")
            tokens.append(Token(kind, word, word, pos, end))
        pos = end
    tokens.append(Token("end", "", None, n, n))
    return tokens


def _unexpected(text: str, pos: int) -> ExprSyntaxError:
    char = text[pos]
    if char in "\"'":
        return ExprSyntaxError(pos, f"unterminated string: no closing {char} for the one here")
    hint = _HINTS.get(char)
    return ExprSyntaxError(pos, f"unexpected {char!r}" + (f"; {hint}" if hint else ""))


def _number(word: str, pos: int) -> int | float:
    try:
        if word.isdigit():
            return int(word)
        value = float(word)
    except ValueError:  # more digits than int() accepts (sys.set_int_max_str_digits)
        raise ExprSyntaxError(pos, "number too large") from None
    if not math.isfinite(value):
        raise ExprSyntaxError(pos, f"number out of range: {word}")
    return value


def _unescape(word: str, pos: int) -> str:
    body = word[1:-1]
    if "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\":
            escaped = _ESCAPES.get(body[i + 1])
            if escaped is None:
                raise ExprSyntaxError(
                    pos + 1 + i,
                    f"unknown escape '\\{body[i + 1]}' (known: \\\\ \\\" \\' \\n \\t)",
                )
            out.append(escaped)
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)
