"""Live progress of a run: a rich table, or plain or JSON lines.

The table on a terminal (stderr), the lines otherwise; stdout holds only the result.

**Rows.** A row per node: ``waiting`` (not started), ``running``, ``retrying`` (a try failed,
the next waits its backoff), ``done``, ``failed``, ``skipped`` or ``paused`` (asked a
question), with its elapsed time, tokens and cost; a totals line below. Events are shown in
the order the run streams them (``event``: so a node's streamed chunks come before its end),
but their times are the events' own timestamps (``Event.at``, which an engine listener,
``observe``, sees as each event is logged, just before the stream gets it), as the trace's are:
a node's time here is the trace's latency — never when this display happened to hear of it (a
node that holds the event loop, an SDK's first import say, would otherwise look instant). A
pass starts at its first ``node.start``; its tries and their backoff are in its time. The
elapsed time of a running node ticks: the table is redrawn 8 times a second from a thread
(rich's ``Live`` with ``get_renderable``), so it moves even while a node holds the event loop;
a lock keeps the redraw from reading a row half-updated. Only text is shown live: ``--log-format
json`` asks for lines, on a terminal too.

**Retries** print a line (above the table on a terminal): ``upper: failed (ValueError: boom),
retry 1/3 in 0.1 s`` — the try that failed, the retry about to come out of the node's
``max_retries``, and the wait before it.

**Streamed answers** (an LLM agent's ``stream: true``, any node's ``ctx.emit``): on a terminal,
the last lines a running node streamed show under the table as they come, until the node ends
(its answer is then its output); in ``text`` lines they are written as they come, on a line
that starts with the node's name (a line per node when several stream at once); in ``json``
lines each chunk is a line of its own (``event: node.chunk``, ``text``).

**JSON lines** have the shape of converge's JSON logs (``observability.log_format``):
``ts``, ``level``, ``logger`` (``converge.run``), ``message`` (the text line), ``run_id``,
``trace_id``, ``node_id``, then ``event``, ``node``, ``status``, ``attempt``, ``elapsed_s``,
``tokens``, ``cost`` (a number, US dollars) and, where they apply, ``error``, ``max_retries``,
``delay``, ``text``. Node names and errors are shown with their control characters as escapes,
never as rich markup; JSON lines are ASCII-safe.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from converge.observability.cost import format_cost
from converge.observability.log_format import json_line
from converge.observability.terminal import printable

if TYPE_CHECKING:
    from converge.protocol import Event

__all__ = ["Progress", "cost_cell", "duration"]

_DONE = {
    "completed": "done",
    "fallback": "done",
    "answered": "done",
    "replanned": "done",
    "halted": "done",
    "skipped": "skipped",
}
_STYLE = {
    "running": "yellow",
    "retrying": "yellow",
    "done": "green",
    "failed": "red",
    "skipped": "dim",
    "paused": "magenta",
    "waiting": "dim",
}
_USAGE_KINDS = frozenset({"node.done", "node.retry", "node.failed", "node.waiting"})
_TAIL_LINES = 6  # lines of a streamed answer shown under the table


def duration(seconds: float) -> str:
    """A finished duration for people: ``3.2 ms``, ``589 ms``, ``2.00 s``."""
    ms = seconds * 1000
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    return f"{seconds:.2f} s"


def cost_cell(cost: float) -> str:
    """A cost for a table cell: ``-`` when nothing was spent, else ``0.0000325 USD``."""
    return format_cost(cost) if cost else "-"


class _Row:
    __slots__ = (
        "attempt",
        "cost",
        "ended",
        "iteration",
        "started",
        "status",
        "streamed",
        "tokens",
    )

    def __init__(self) -> None:
        self.status = "waiting"
        self.started: float | None = None
        self.ended: float | None = None
        self.iteration = 0
        self.attempt = 0
        self.tokens = 0
        self.cost = 0.0
        self.streamed = ""

    def elapsed(self, now: float) -> float | None:
        if self.started is None:
            return None
        return max(0.0, (self.ended if self.ended is not None else now) - self.started)


class Progress:
    """Folds a run's events into rows and shows them.

    Args:
        nodes: the graph's node ids, in order (each starts as ``waiting``).
        run_id: the run shown (events of other runs, a subgraph's child runs, are not).
        stream: where to show progress (stderr).
        live: a rich live table (on a terminal) rather than lines.
        log_format: ``text`` or ``json`` lines when not ``live``.
        clock: the time now, in seconds since the epoch (events' ``at`` are on it).
    """

    def __init__(
        self,
        nodes: Iterable[str],
        *,
        run_id: str,
        stream: TextIO | None = None,
        live: bool | None = None,
        log_format: str = "text",
        clock: Any = time.time,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.run_id = run_id
        self.rows: dict[str, _Row] = {node: _Row() for node in nodes}
        self.live = self.stream.isatty() if live is None else live
        self.log_format = log_format
        self.clock = clock
        self._live: Any = None
        self._lock = threading.Lock()
        self._open_line: str | None = None  # the node whose streamed text ends the last line
        # Each logged event's time, by its data (the very dict the stream hands on next).
        self._times: dict[int, tuple[dict[str, Any], float]] = {}

    # -- the display's lifetime ------------------------------------------------------------------

    def __enter__(self) -> Progress:
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _start(self) -> None:
        if self.live and self._live is None:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.stream, emoji=False, highlight=False)
            self._live = Live(
                console=console,
                refresh_per_second=8,
                transient=False,
                get_renderable=self._renderable,
            )
            self._live.start(refresh=True)

    def _stop(self) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None
        self._end_line()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Stop the live display for a while (to ask a question on the terminal)."""
        self._stop()
        try:
            yield
        finally:
            self._start()

    # -- what it hears -----------------------------------------------------------------------------

    def observe(self, event: Event) -> None:
        """Note when an event of the run was logged (an engine listener: it sees the event
        just before the run's stream, ``event``, gets its data)."""
        if event.subject == self.run_id and event.kind.startswith("node."):
            self._times[id(event.data)] = (event.data, event.at)

    def event(self, kind: str, node: str | None, data: dict[str, Any]) -> None:
        """Take one event the run streams (``node.chunk`` included), at the time it was
        logged."""
        if kind == "node.chunk":
            self.chunk(node, data)
            return
        noted = self._times.pop(id(data), None)
        at = noted[1] if noted is not None and noted[0] is data else self.clock()
        with self._lock:
            shown = self._fold(kind, data, at)
        if shown is not None:
            self._announce(kind, shown, data)

    def history(self, events: Sequence[Event]) -> None:
        """Take the events of the passes logged before (a resumed run); each finished pass
        shows as a line, as it would have then."""
        for event in events:
            if event.subject != self.run_id:
                continue
            with self._lock:
                node = self._fold(event.kind, event.data, event.at)
            if node is not None and event.kind in ("node.done", "node.failed"):
                self._announce(event.kind, node, event.data)

    def chunk(self, node: str | None, data: dict[str, Any]) -> None:
        """Take a chunk a node streamed (``node.chunk``: never logged, so not an event)."""
        if node is None or "/" in node:
            return
        value = data.get("chunk")
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        with self._lock:
            row = self.rows.setdefault(node, _Row())
            row.streamed = (row.streamed + text)[-4000:]  # the tail is all that is shown
        if self._live is not None:
            return
        if self.log_format == "json":
            self._json("node.chunk", node, f"{node}: streamed", text=text)
            return
        if self._open_line != node:
            self._end_line()
            self.stream.write(f"{printable(node)}: ")
            self._open_line = node
        self.stream.write(printable(text, newlines=True))
        if text.endswith("\n"):
            self._open_line = None
        self.stream.flush()

    def totals(self) -> tuple[int, float]:
        """Tokens and cost of every node so far."""
        with self._lock:
            rows = list(self.rows.values())
        return sum(r.tokens for r in rows), sum(r.cost for r in rows)

    # -- folding -----------------------------------------------------------------------------------

    def _fold(self, kind: str, data: dict[str, Any], at: float) -> str | None:
        node = data.get("node")
        if not isinstance(node, str) or "/" in node or not kind.startswith("node."):
            return None
        row = self.rows.setdefault(node, _Row())
        if kind in _USAGE_KINDS:
            usage = data.get("usage") or {}
            row.tokens += int(usage.get("tokens_in", 0)) + int(usage.get("tokens_out", 0))
            row.cost += float(usage.get("cost", 0.0))
        iteration = int(data.get("iteration", 1) or 1)
        if kind == "node.start":
            if iteration != row.iteration or row.started is None:
                row.started, row.iteration = at, iteration
            row.status, row.ended = "running", None
            row.attempt = int(data.get("attempt", 1) or 1)
            row.streamed = ""
        elif kind == "node.retry":
            row.status = "retrying"
            row.streamed = ""
        elif kind == "node.done":
            row.status = _DONE.get(str(data.get("status")), "done")
            row.ended = at
            if row.started is None:  # a pass read back without its start
                started = data.get("started_at")
                row.started = float(started) if isinstance(started, (int, float)) else at
            row.streamed = ""
        elif kind == "node.failed":
            row.status, row.ended = "failed", at
            row.streamed = ""
        elif kind == "node.waiting":
            row.status, row.ended = "paused", at  # its time stops while it waits
        else:
            return None
        return node

    # -- lines -------------------------------------------------------------------------------------

    def _announce(self, kind: str, node: str, data: dict[str, Any]) -> None:
        """Show what ``kind`` did to ``node``: a line (above the table on a terminal)."""
        row = self.rows[node]
        if kind == "node.start" and row.attempt > 1:
            return  # the retry line said it
        if kind == "node.retry":
            message = (
                f"{node}: failed ({data.get('error')}), retry {data.get('attempt')}/"
                f"{data.get('max_retries', '?')} in {float(data.get('delay') or 0):g} s"
            )
        else:
            message = self._summary(kind, node, data)
        if self._live is not None:
            if kind == "node.retry":
                from converge.cli._config import plain

                self._live.console.print(plain(message))
            return
        if self.log_format == "json":
            extra: dict[str, Any] = {}
            if kind in ("node.failed", "node.retry"):
                extra["error"] = data.get("error")
            if kind == "node.retry":
                extra["max_retries"] = data.get("max_retries")
                extra["delay"] = data.get("delay")
            self._json(kind, node, message, **extra)
            return
        self._end_line()
        print(printable(message), file=self.stream, flush=True)

    def _summary(self, kind: str, node: str, data: dict[str, Any]) -> str:
        row = self.rows[node]
        parts = [f"{node}: {row.status}"]
        elapsed = row.elapsed(self.clock())
        if row.status != "running" and row.ended is not None and elapsed is not None:
            parts.append(duration(elapsed))
        if row.attempt > 1 and row.status != "running":
            parts.append(f"{row.attempt} attempts")
        if row.tokens:
            parts.append(f"{row.tokens} tokens")
        if row.cost:
            parts.append(f"cost {format_cost(row.cost)}")
        if kind == "node.failed":
            parts.append(f"({data.get('error')})")
        return "  ".join(parts)

    def _json(self, kind: str, node: str, message: str, **extra: Any) -> None:
        row = self.rows[node]
        elapsed = row.elapsed(self.clock())
        line = json_line(
            message,
            at=time.time(),
            logger="converge.run",
            run_id=self.run_id,
            trace_id=self.run_id.split("/", 1)[0],
            node_id=node,
            event=kind,
            node=node,
            status=row.status,
            attempt=row.attempt or None,
            elapsed_s=None if elapsed is None else round(elapsed, 3),
            tokens=row.tokens,
            cost=row.cost,
            **extra,
        )
        self._end_line()
        print(line, file=self.stream, flush=True)

    def _end_line(self) -> None:
        """End a line of streamed text before anything else is written."""
        if self._open_line is not None:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = None

    # -- the table ---------------------------------------------------------------------------------

    def _renderable(self) -> Any:
        with self._lock:
            return self._table()

    def _table(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        from converge.cli._config import plain

        now = self.clock()
        table = Table(box=None, pad_edge=False)
        for column in ("node", "status", "elapsed", "tokens", "cost"):
            table.add_column(column, justify="left" if column in ("node", "status") else "right")
        streaming: list[tuple[str, str]] = []
        for name, row in self.rows.items():
            elapsed = row.elapsed(now)
            if elapsed is None:
                shown = ""
            elif row.ended is None:
                shown = f"{elapsed:.1f} s"  # ticking
            else:
                shown = duration(elapsed)
            status = row.status
            if row.attempt > 1:
                running = row.status in ("running", "retrying")
                status += f" (try {row.attempt})" if running else f" ({row.attempt} tries)"
            if row.iteration > 1:
                status += f" (pass {row.iteration})"
            table.add_row(
                plain(name),
                Text(status, style=_STYLE.get(row.status, "")),
                shown,
                str(row.tokens or "-"),
                cost_cell(row.cost),
            )
            if row.streamed and row.status in ("running", "retrying"):
                streaming.append((name, row.streamed))
        tokens = sum(r.tokens for r in self.rows.values())
        cost = sum(r.cost for r in self.rows.values())
        table.add_row(Text("total", style="bold"), "", "", str(tokens or "-"), cost_cell(cost))
        if not streaming:
            return table
        parts: list[Any] = [table]
        for name, text in streaming:
            tail = "\n".join(text.splitlines()[-_TAIL_LINES:])
            parts.append(
                Text.assemble((f"{printable(name)} ▸ ", "bold"), printable(tail, newlines=True))
            )
        return Group(*parts)
