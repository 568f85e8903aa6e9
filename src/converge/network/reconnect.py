"""``ReconnectPolicy``: how a socket network dials a peer again.

A connection that was up and ends (the peer restarted, a proxy cut it) is dialed again at once
by the next send to that peer. A dial that fails is retried only after a delay that doubles
with each failure in a row (``initial_delay`` up to ``max_delay``), and a success resets it.
Meanwhile a send to that peer waits for the next attempt if it comes within ``patience``
seconds, and otherwise fails at once with ``TransportError``: a dead peer never holds a
publisher up longer than that, and never makes the network dial it in a tight loop.

Nothing is resent: a frame written to a connection that then broke, unanswered, fails its send
with ``TransportError`` (it may or may not have been delivered). The sender decides whether to
send again; the receiver's replay guard refuses a copy of a message it already accepted.
"""

from __future__ import annotations

import math

import msgspec

from converge.errors import ValidationError

__all__ = ["ReconnectPolicy"]


class ReconnectPolicy(msgspec.Struct, frozen=True):
    """When a socket network dials a peer again after failing to (see the module)."""

    initial_delay: float = 0.05
    """Seconds before the first retry after a failed dial."""
    max_delay: float = 5.0
    """The longest wait between two attempts."""
    factor: float = 2.0
    """How much the wait grows after each failure in a row."""
    patience: float = 0.0
    """Seconds a send waits for later attempts before it fails (0: it fails with the first)."""

    def __post_init__(self) -> None:
        if not _number(self.initial_delay) or self.initial_delay <= 0:
            raise ValidationError(
                f"initial_delay must be a number > 0, not {self.initial_delay!r}",
                field="initial_delay",
            )
        if not _number(self.factor) or self.factor < 1:
            raise ValidationError(
                f"factor must be a number >= 1, not {self.factor!r}", field="factor"
            )
        if not _number(self.max_delay) or self.max_delay < self.initial_delay:
            raise ValidationError(
                f"max_delay must be a number >= initial_delay ({self.initial_delay}), "
                f"not {self.max_delay!r}",
                field="max_delay",
            )
        if not _number(self.patience) or self.patience < 0:
            raise ValidationError(
                f"patience must be a number >= 0, not {self.patience!r}", field="patience"
            )

    def next_delay(self, delay: float) -> float:
        """The wait after ``delay`` when the attempt after it fails too."""
        return min(delay * self.factor, self.max_delay)


def _number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
