"""Hostile text for the tests of what converge shows: terminal control sequences, rich markup,
Mermaid and DOT statements, HTML, and how to find what a terminal would act on."""

from __future__ import annotations

import unicodedata

from hypothesis import strategies as st

__all__ = ["HOSTILE", "MARKUP", "any_text", "terminal_unsafe"]

TITLE = "\x1b]0;owned\x07"
"""OSC 0: sets the terminal window's title."""
CLEAR = "\x1b[2J"
"""CSI 2 J: clears the screen."""
MARKUP = "[bold]x[/]"
"""rich markup: printed through a console with markup on, it would be bold ``x``."""
HOSTILE = (
    f"evil{TITLE}{CLEAR}\x9b31m\u202e{MARKUP}\r\x08\x7f\u2028\x00"
    '"]\n  click n_up href "javascript:alert(1)"\n%%{init: {"securityLevel": "loose"}}%%'
    "<img src=x onerror=alert(1)>`**md**`#quot;end;\\"
)
"""A name or an error that tries every trick at once: controls (C0, DEL, C1, a bidi override,
a line separator, NUL), markup, a Mermaid statement after a newline, a Mermaid directive, HTML,
markdown, an entity code and a trailing backslash."""

_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_CONTROLS = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]] + sorted(_BIDI)

any_text = st.text(
    st.characters(blacklist_categories=()) | st.sampled_from([*_CONTROLS, "\u2028", "\ud800"]),
    max_size=40,
)
"""Any text at all, lone surrogates included, with control characters drawn often."""


def terminal_unsafe(text: str, *, newlines: bool = False) -> list[str]:
    """The characters of ``text`` a terminal may act on (control, surrogate, line or paragraph
    separator, bidirectional control); with ``newlines``, line feeds and tabs are allowed."""
    allowed = "\n\t" if newlines else ""
    return [
        c
        for c in text
        if c not in allowed and (unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") or c in _BIDI)
    ]
