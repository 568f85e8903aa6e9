"""The event: one entry of the log everything is derived from.

Traces, replay and recovery are derived from the log.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec

from converge.core.ids import new_id

__all__ = ["EVENT_KIND_PATTERN", "Event"]

EVENT_KIND_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
"""Event kinds are dotted lower-case names with at least two parts: ``task.claimed``."""

EventKind = Annotated[str, msgspec.Meta(pattern=EVENT_KIND_PATTERN)]


class Event(
    msgspec.Struct,
    frozen=True,
    omit_defaults=True,
    forbid_unknown_fields=True,
    tag_field="type",
    tag="event",
    gc=False,
):
    """Something that happened, as recorded in a store's event log.

    Events are appended with ``seq=0``; the store assigns the sequence number, strictly increasing
    and never reused, and returns it.
    """

    kind: EventKind
    """What happened, dotted: ``intent.published``, ``task.claimed``, ``offer.rejected``."""
    trace_id: str
    """The trace (run, auction, task flow) the event belongs to."""
    actor: str = ""
    """The did (or name) of whoever caused it; empty for the system."""
    subject: str = ""
    """The id of the object it is about (task, intent, offer, run, node)."""
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    """Details of the event; keys are documented per kind."""
    parent_id: str | None = None
    """The id of the event that caused this one, if any."""
    id: str = msgspec.field(default_factory=new_id)
    """Unique, time-ordered id."""
    at: float = msgspec.field(default_factory=time.time)
    """Seconds since the epoch when it happened."""
    seq: int = 0
    """Position in the log, assigned by the store on append (0 before)."""
