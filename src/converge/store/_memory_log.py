"""The event log of ``MemoryStore``: each event end to end in one buffer.

An event is kept as the bytes a persistent store would keep (so what is read back is a copy,
and data no store could encode is refused when it is written), but not as one ``bytes``
object per event: the bodies are encoded straight into the end of one ``bytearray`` and found
by their end offsets. A log of millions of events is then a few large blocks of memory instead
of millions of small objects, which is what writing an event costs most when each is kept.

Writing is two steps, so that a unit of work can refuse its events after encoding them:
``stage`` encodes events after the last committed one (which also checks them), and ``commit``
makes staged ones part of the log (``discard`` drops them). Sequence numbers are positions:
the first event is 1.

Reads by trace use an index of sequence numbers per trace that is built on the first such read
and caught up on each one after: a log nobody reads by trace pays nothing for it.

``forget(trace_id)`` drops a trace's events (an engine bounding the runs it keeps): their kind
and trace become None (read as absent, a gap in the seqs), and their bytes are reclaimed once
they are half the buffer. Forgotten events at the start of the log go entirely: ``base`` is the
last seq no longer kept, and every index is ``seq - base - 1``. A log whose oldest traces are
forgotten first (an engine's ``keep_runs``) so stays bounded.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import msgspec

from converge.core.codec_errors import ENCODE_ERRORS, encode_error
from converge.protocol.event import Event
from converge.store._shared import decode_event

__all__ = ["MemoryLog"]


class MemoryLog:
    """Events by sequence number; see the module docstring."""

    __slots__ = (
        "_buf",
        "_by_trace",
        "_dead",
        "_encode_into",
        "_ends",
        "_kinds",
        "_traced",
        "_traces",
        "base",
    )

    def __init__(self) -> None:
        self._buf = bytearray()
        self._ends = array("q")  # the end offset in ``_buf`` of each committed event
        self._kinds: list[str | None] = []  # None: forgotten
        self._traces: list[str | None] = []
        self._by_trace: dict[str, list[int]] = {}
        self._traced = 0  # the last seq already in ``_by_trace``
        self._encode_into = msgspec.msgpack.Encoder().encode_into
        self._dead = 0  # bytes of forgotten events still in ``_buf``
        self.base = 0
        """The last seq no longer kept at all (forgotten, at the start of the log)."""

    def __len__(self) -> int:
        """The last sequence number (0 if empty)."""
        return self.base + len(self._ends)

    # -- writes ------------------------------------------------------------------------------------

    def stage(self, events: Sequence[Event], where: str = "events[{}]") -> list[int]:
        """Encode ``events`` after the last committed one (and after any staged before);
        returns the end offset of each.

        Raises:
            ValidationError: an event holds data no store can encode (``field`` names
                ``where.format(i) + ".data"``: ``events[i].data`` by default); nothing stays
                staged.
        """
        buf = self._buf
        encode_into = self._encode_into
        ends: list[int] = []
        for i, event in enumerate(events):
            try:
                encode_into(event, buf, -1)
            except ENCODE_ERRORS as exc:
                self.discard()
                name = where.format(i)
                raise encode_error(exc, name, field=f"{name}.data") from exc
            ends.append(len(buf))
        return ends

    def stage_one(self, event: Event) -> int:
        """``stage`` of one event: the board's everyday write; returns its end."""
        buf = self._buf
        try:
            self._encode_into(event, buf, -1)
        except ENCODE_ERRORS as exc:
            self.discard()
            raise encode_error(exc, "events[0]", field="events[0].data") from exc
        return len(buf)

    def commit(self, events: Sequence[Event], ends: Sequence[int]) -> int:
        """Make staged ``events`` (with the ends ``stage`` gave, in order) part of the log,
        and drop whatever else was staged after the last of them; returns the last seq."""
        self._ends.extend(ends)
        kinds = self._kinds
        traces = self._traces
        for event in events:
            kinds.append(event.kind)
            traces.append(event.trace_id)
        if ends:
            del self._buf[ends[-1] :]
        else:
            self.discard()
        return self.base + len(self._ends)

    def commit_one(self, event: Event, end: int) -> int:
        """``commit`` of one staged event: the board's everyday write."""
        self._ends.append(end)
        self._kinds.append(event.kind)
        self._traces.append(event.trace_id)
        return self.base + len(self._ends)

    def discard(self) -> None:
        """Drop every staged event."""
        ends = self._ends
        del self._buf[ends[-1] if ends else 0 :]

    def keep(self, ends: Sequence[int], wanted: Sequence[bool]) -> list[int]:
        """Keep only the staged events whose ``wanted`` is true (``ends`` as ``stage`` gave
        them); returns their new ends, for ``commit``."""
        buf = self._buf
        start = self._ends[-1] if self._ends else 0
        kept = bytearray()
        new_ends: list[int] = []
        begin = start
        for end, keep in zip(ends, wanted, strict=True):
            if keep:
                kept += buf[begin:end]
                new_ends.append(start + len(kept))
            begin = end
        del buf[start:]
        buf += kept
        return new_ends

    # -- reads -------------------------------------------------------------------------------------

    def kind(self, seq: int) -> str | None:
        """The kind of the event at ``seq`` (None if it was forgotten)."""
        i = seq - self.base - 1
        return self._kinds[i] if i >= 0 else None

    def event(self, seq: int) -> Event:
        """The event at ``seq``, decoded (a copy); it must be kept (``kind`` is not None)."""
        ends = self._ends
        i = seq - self.base - 1
        start = ends[i - 1] if i > 0 else 0
        return decode_event(bytes(self._buf[start : ends[i]]), seq)

    def by_trace(self, trace_id: str) -> list[int]:
        """The seqs of ``trace_id``'s events, in order (the list is the index's: do not change
        it)."""
        index = self._by_trace
        traces = self._traces
        base = self.base
        for seq in range(max(self._traced, base) + 1, base + len(traces) + 1):
            trace = traces[seq - base - 1]
            if trace is None:
                continue
            seqs = index.get(trace)
            if seqs is None:
                index[trace] = [seq]
            else:
                seqs.append(seq)
        self._traced = base + len(traces)
        return index.get(trace_id, [])

    # -- forgetting --------------------------------------------------------------------------------

    def forget(self, trace_id: str) -> int:
        """Drop the events of ``trace_id``; how many there were (none staged may be pending)."""
        self.by_trace(trace_id)  # the index caught up
        seqs = self._by_trace.pop(trace_id, [])
        ends, kinds, traces, base = self._ends, self._kinds, self._traces, self.base
        for seq in seqs:
            i = seq - base - 1
            self._dead += ends[i] - (ends[i - 1] if i > 0 else 0)
            kinds[i] = traces[i] = None
        if seqs:
            self._compact()
        return len(seqs)

    def _compact(self) -> None:
        """Drop forgotten events at the start entirely; reclaim the bytes of the others once
        they are half the buffer."""
        kinds = self._kinds
        first = next((i for i, kind in enumerate(kinds) if kind is not None), len(kinds))
        if first:
            cut = self._ends[first - 1]
            del self._buf[:cut]
            self._ends = array("q", (end - cut for end in self._ends[first:]))
            del kinds[:first], self._traces[:first]
            self.base += first
            self._dead -= cut
        if self._dead * 2 <= len(self._buf):
            return
        buf, ends = self._buf, self._ends
        kept = bytearray()
        new_ends = array("q")
        start = 0
        for i, end in enumerate(ends):
            if kinds[i] is not None:
                kept += buf[start:end]
            new_ends.append(len(kept))
            start = end
        self._buf, self._ends, self._dead = kept, new_ends, 0
