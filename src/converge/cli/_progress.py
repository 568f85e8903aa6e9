"""Live progress of a run: a rich table, or plain or JSON lines.

The table on a terminal, the lines otherwise.

A row per node: ``waiting`` (not started), ``running``, ``done``, ``failed``, ``skipped`` or
``paused`` (asked a question), with its elapsed time, tokens and cost; a totals line below.
Progress goes to stderr, so stdout holds only the result. Node names and errors are shown with
their control characters as escapes, never as rich markup; JSON lines are ASCII.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from converge.observability.terminal import printable

__all__ = ["Progress", "format_cost"]

_DONE = {
    "completed": "done",
    "fallback": "done",
    "answered": "done",
    "replanned": "done",
    "halted": "done",
    "skipped": "skipped",
}


class _Row:
    __slots__ = ("cost", "ended", "started", "status", "tokens")

    def __init__(self) -> None:
        self.status = "waiting"
        self.started: float | None = None
        self.ended: float | None = None
        self.tokens = 0
        self.cost = 0.0

    def elapsed(self, now: float) -> float | None:
        if self.started is None:
            return None
        return (self.ended if self.ended is not None else now) - self.started


def format_cost(cost: float) -> str:
    """A cost for a table cell: ``-`` when nothing was spent."""
    return f"{cost:.4f}" if cost else "-"


class Progress:
    """Folds a run's streamed events into rows and shows them.

    Args:
        nodes: the graph's node ids, in order (each starts as ``waiting``).
        stream: where to show progress (stderr).
        live: a rich live table (on a terminal) rather than lines.
        log_format: ``text`` or ``json`` lines when not ``live``.
    """

    def __init__(
        self,
        nodes: Iterable[str],
        *,
        stream: TextIO | None = None,
        live: bool | None = None,
        log_format: str = "text",
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.rows: dict[str, _Row] = {node: _Row() for node in nodes}
        self.live = self.stream.isatty() if live is None else live
        self.log_format = log_format
        self._live: Any = None

    def __enter__(self) -> Progress:
        if self.live:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.stream, emoji=False, highlight=False)
            self._live = Live(self._table(), console=console, refresh_per_second=8, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.__exit__(None, None, None)
            self._live = None

    def event(self, kind: str, node: str | None, data: dict[str, Any]) -> None:
        """Take one streamed event."""
        now = time.monotonic()
        changed = self._fold(kind, node, data, now)
        if self._live is not None:
            self._live.update(self._table())
        elif changed is not None:
            self._line(kind, changed, data)

    def _fold(self, kind: str, node: str | None, data: dict[str, Any], now: float) -> str | None:
        if node is None or "/" in node or not kind.startswith("node."):
            return None
        row = self.rows.setdefault(node, _Row())
        if kind == "node.start":
            row.status, row.ended = "running", None
            row.started = row.started if row.started is not None else now
        elif kind == "node.done":
            row.status = _DONE.get(str(data.get("status")), "done")
            row.ended = now
            usage = data.get("usage") or {}
            row.tokens += int(usage.get("tokens_in", 0)) + int(usage.get("tokens_out", 0))
            row.cost += float(usage.get("cost", 0.0))
        elif kind == "node.failed":
            row.status, row.ended = "failed", now
        elif kind == "node.waiting":
            row.status = "paused"
        else:
            return None
        return node

    def totals(self) -> tuple[int, float]:
        """Tokens and cost of every node so far."""
        return sum(r.tokens for r in self.rows.values()), sum(r.cost for r in self.rows.values())

    def _line(self, kind: str, node: str, data: dict[str, Any]) -> None:
        row = self.rows[node]
        elapsed = row.elapsed(time.monotonic())
        if self.log_format == "json":
            record = {
                "event": kind,
                "node": node,
                "status": row.status,
                "tokens": row.tokens,
                "cost": row.cost,
                "elapsed_s": None if elapsed is None else round(elapsed, 3),
            }
            if kind == "node.failed":
                record["error"] = data.get("error")
            print(json.dumps(record), file=self.stream, flush=True)
            return
        parts = [f"{printable(node)}: {row.status}"]
        if row.status != "running" and elapsed is not None:
            parts.append(f"{elapsed:.2f}s")
        if row.tokens:
            parts.append(f"{row.tokens} tokens")
        if row.cost:
            parts.append(f"cost {row.cost:.4f}")
        if kind == "node.failed":
            parts.append(f"({printable(str(data.get('error')))})")
        print("  ".join(parts), file=self.stream, flush=True)

    def _table(self) -> Any:
        from rich.table import Table

        from converge.cli._config import plain

        now = time.monotonic()
        table = Table(box=None, pad_edge=False)
        for column in ("node", "status", "elapsed", "tokens", "cost"):
            table.add_column(column, justify="right" if column in ("tokens", "cost") else "left")
        style = {
            "running": "yellow",
            "done": "green",
            "failed": "red",
            "skipped": "dim",
            "paused": "magenta",
            "waiting": "dim",
        }
        for name, row in self.rows.items():
            elapsed = row.elapsed(now)
            table.add_row(
                plain(name),
                f"[{style[row.status]}]{row.status}[/]",
                "" if elapsed is None else f"{elapsed:.1f}s",
                str(row.tokens or "-"),
                format_cost(row.cost),
            )
        tokens, cost = self.totals()
        table.add_row("[bold]total[/]", "", "", str(tokens or "-"), format_cost(cost))
        return table
