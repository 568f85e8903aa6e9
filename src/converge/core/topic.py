"""Topics: dotted names with NATS-style wildcards.

Agents publish to them and subscribe on them.
"""

from __future__ import annotations

import re

import msgspec

from converge.core.clip import clip
from converge.errors import ValidationError

__all__ = ["Topic"]

_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")


class Topic(msgspec.Struct, frozen=True, order=True):
    """A topic name such as ``market.compute.gpu``; hashable and ordered.

    A *pattern* may use ``*`` for exactly one token and a final ``>`` for one or more tokens,
    as NATS subjects do, so topics map onto NATS unchanged: ``market.*.gpu``, ``market.>``.
    """

    name: str
    """Dot-separated tokens of letters, digits, ``_`` and ``-`` (and wildcards in patterns)."""

    def __post_init__(self) -> None:
        tokens = self.name.split(".") if isinstance(self.name, str) else [""]
        for i, tok in enumerate(tokens):
            if tok == "*" or (tok == ">" and i == len(tokens) - 1) or _TOKEN.match(tok):
                continue
            raise ValidationError(
                f"invalid topic {clip(self.name)!r}: token {clip(tok)!r} must be letters, "
                "digits, _ or -, "
                "or a wildcard ('*' anywhere, '>' last)",
                field="topic",
            )

    @property
    def tokens(self) -> tuple[str, ...]:
        """The dot-separated parts."""
        return tuple(self.name.split("."))

    @property
    def is_pattern(self) -> bool:
        """Whether the name holds a wildcard."""
        return any(t in ("*", ">") for t in self.tokens)

    def matches(self, topic: Topic | str) -> bool:
        """Whether ``topic`` (a concrete name) is matched by this topic used as a pattern."""
        other = topic.name if isinstance(topic, Topic) else topic
        want = self.name.split(".")
        have = other.split(".")
        for i, tok in enumerate(want):
            if tok == ">":
                return len(have) > i
            if i >= len(have) or (tok != "*" and tok != have[i]):
                return False
        return len(have) == len(want)

    def __str__(self) -> str:
        return self.name
