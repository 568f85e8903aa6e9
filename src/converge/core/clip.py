"""Clipping what came from outside before it is logged or shown.

A peer chooses its did, its message ids, nonces and kinds, the ids it names and the text of the
errors its input causes; nothing bounds their length on the way in. Every such string that
converge writes into an event (above all a refusal: ``message.rejected``,
``bidding.offer_refused``, ``bidding.refused``, ``discovery.refused``, ``ballot.refused``,
``delegation.refused``, ``negotiation.refused``; and the trace id an agent runtime takes from
the messages it answers) or into an error message (a did, a topic, a capability, a version
range, an id it quotes) goes through ``clip`` first, so one hostile input cannot grow the log,
a trace or a terminal line without bound. Values converge itself chose (a round's trace, a
ballot's id) are written as they are.

The rule: a string of at most ``limit`` characters is kept as it is; a longer one keeps its
first characters and ends with a marker that says how many were cut, ``…[+399958 chars]``, the
whole at most ``limit`` characters. Identifiers are clipped at ``MAX_ID_CHARS`` (every id
converge makes is far shorter: a did has 56 characters, an id 26), texts such as error messages
at ``MAX_TEXT_CHARS``. A value that is not a ``str`` (a field of a message built in process
with the wrong type) is shown as its ``repr`` when it is a bool, a float or a small int, else as
its type in angle brackets (``<list>``) — never the value, which may be huge or not printable.
``shown`` is ``clip`` that keeps None as None, for optional fields of a refused message.
"""

from __future__ import annotations

__all__ = ["MAX_ID_CHARS", "MAX_TEXT_CHARS", "clip", "clip_text", "shown"]

MAX_ID_CHARS = 128
"""The most characters of an identifier (did, id, nonce, kind, trace id…) that are logged."""

MAX_TEXT_CHARS = 1000
"""The most characters of a text (an error message, a refusal's detail) that are logged."""


def clip(value: object, limit: int = MAX_ID_CHARS) -> str:
    """``value`` as a string of at most ``limit`` characters (see the module docstring).

    Costs O(``limit``) for a ``str`` of any length: the cut never copies more than it keeps.
    """
    text = value if isinstance(value, str) else _short(value)
    if len(text) <= limit:
        return text
    # The marker counts the characters cut, and its own length decides how many are cut: settle
    # it (two or three rounds, the count only gains digits).
    keep = limit
    while True:
        marker = f"…[+{len(text) - keep} chars]"
        fits = limit - len(marker)
        if fits < 0:  # too small a limit for any marker: a bare cut
            return text[:limit]
        if fits == keep:
            return text[:keep] + marker
        keep = fits


def _short(value: object) -> str:
    """A non-str value as a short text that costs nothing to make."""
    if isinstance(value, (bool, float)) or value is None:
        return repr(value)
    if isinstance(value, int) and -(10**18) < value < 10**18:
        return repr(value)
    return f"<{type(value).__name__}>"


def shown(value: object, limit: int = MAX_ID_CHARS) -> str | None:
    """``clip(value, limit)``, None kept as None."""
    return None if value is None else clip(value, limit)


def clip_text(value: object) -> str:
    """``clip(value, MAX_TEXT_CHARS)``: for messages and details rather than identifiers."""
    return clip(value, MAX_TEXT_CHARS)
