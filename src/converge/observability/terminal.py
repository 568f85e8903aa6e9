r"""Text made safe to show on a terminal.

Every control character becomes a visible escape.

Whatever converge prints for people — live progress, ``error:`` lines, the ``runs`` and
``show`` tables, the trace tree, the event timeline, ``agents run`` lines, log lines — may
hold text that came from outside: a graph's or an agent's name, a node's error or output, a
model's answer, an event read back from the log. A terminal obeys the control characters in
that text: ``ESC ] 0 ; … BEL`` retitles the window, ``ESC [ 2 J`` clears the screen, a
carriage return or a backspace overwrites what was printed, U+202E shows what follows
reversed. ``printable`` writes each of them as Python's ``repr`` would (``\x1b``, ``\r``,
``\x9b``, ``\u202e``): ``printable("done\x1b[2J")`` is the 12 characters ``done\x1b[2J``, and
``printable("a\nb")`` is one line, ``a\nb``, unless ``newlines=True`` keeps its line feed.

The characters escaped: the C0 controls (U+0000 to U+001F), DEL and the C1 controls
(U+007F to U+009F), the line and paragraph separators (U+2028, U+2029), the bidirectional
controls (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to U+2069) and lone surrogates (which
cannot even be encoded for the terminal). Other characters, in every script, pass as they are
(zero-width joiners included: emoji sequences need them). A backslash is not escaped, so a
literal ``\x1b`` and an escaped ESC look alike: the escape is for showing, not for parsing
back.

``printable_json`` does the same for JSON text without changing its value (JSON encoders
escape the C0 controls but pass DEL, C1 and the others through).
"""

from __future__ import annotations

import re

__all__ = ["printable", "printable_json"]

# Everything a terminal may act on; less, where lines are kept or JSON's whitespace is.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_UNSAFE_EXCEPT_LINES = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff]"
)
_UNSAFE_IN_JSON = re.compile(  # JSON's own whitespace (tab, LF, CR) may stand between tokens
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
    "\u2066-\u2069\ud800-\udfff]"
)
_SHOWN_AS = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    shown = _SHOWN_AS.get(char)
    if shown is not None:
        return shown
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def printable(text: str, *, newlines: bool = False) -> str:
    """``text`` with every control character shown as a visible escape (see the module).

    Args:
        text: what is about to be printed.
        newlines: keep line feeds and tabs, for text meant to span lines (a run's output, a
            traceback); by default the result is one line.
    """
    return (_UNSAFE_EXCEPT_LINES if newlines else _UNSAFE).sub(_escape, text)


def printable_json(text: str) -> str:
    r"""JSON ``text`` with the characters a terminal acts on written as ``\uXXXX`` escapes.

    The value is unchanged: outside strings valid JSON holds none of them but its whitespace
    (space, tab, line feed, carriage return, which are kept), and inside a string ``\uXXXX``
    means the character itself.
    """
    return _UNSAFE_IN_JSON.sub(_json_escape, text)
