"""Render events as a timeline people can read (a table) or as JSON lines.

Dids are shown by name where the trace's ``agent.registered`` events (``data.name``) give one.
Whatever an event holds is shown as plain text (never rich markup) with its control characters
as escapes; a JSON line has them escaped as ``\\uXXXX`` (``printable_json``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table
from rich.text import Text

from converge.errors import ValidationError
from converge.observability.terminal import printable, printable_json
from converge.protocol import Event, to_json

__all__ = ["event_json", "names_from", "render_timeline"]

_KIND_STYLE = {
    "rejected": "bold red",
    "failed": "red",
    "accepted": "green",
    "completed": "green",
    "verified": "green",
}


def names_from(events: Iterable[Event]) -> dict[str, str]:
    """Display names for dids, from ``agent.registered`` events (``data.name``)."""
    names: dict[str, str] = {}
    for ev in events:
        if ev.kind == "agent.registered" and isinstance(ev.data.get("name"), str):
            names[ev.actor] = ev.data["name"]
    return names


def _who(did: str, names: Mapping[str, str]) -> str:
    if not did:
        return "-"
    if did in names:
        return names[did]
    return did if len(did) <= 24 else f"{did[:16]}…{did[-6:]}"


def _details(data: Mapping[str, Any], names: Mapping[str, str]) -> str:
    parts = []
    for key, value in data.items():
        if key == "name":
            continue
        if isinstance(value, str):
            value = _who(value, names) if value.startswith("did:key:") else value
            for did, name in names.items():  # dids inside free text read better as names
                value = value.replace(did, name)
        elif isinstance(value, float):
            value = f"{value:g}"
        parts.append(f"{key}={value}")
    return ", ".join(parts)


def render_timeline(events: list[Event], console: Console, *, title: str | None = None) -> None:
    """Print ``events`` as a table: time since the first, seq, actor, kind, subject, details."""
    names = names_from(events)
    table = Table(
        title=None if title is None else Text(printable(title)),
        show_lines=False,
        header_style="bold",
    )
    table.add_column("+ms", justify="right", style="dim")
    table.add_column("seq", justify="right", style="dim")
    table.add_column("actor")
    table.add_column("event")
    table.add_column("subject", style="dim")
    table.add_column("details", overflow="fold")
    start = events[0].at if events else 0.0
    for ev in events:
        style = next((s for suffix, s in _KIND_STYLE.items() if ev.kind.endswith(suffix)), "")
        table.add_row(
            f"{(ev.at - start) * 1000:.1f}",
            str(ev.seq),
            Text(printable(_who(ev.actor, names))),
            Text(printable(ev.kind), style=style),
            Text(printable(ev.subject[-8:] if len(ev.subject) > 8 else ev.subject)),
            Text(printable(_details(ev.data, names))),
        )
    console.print(table)
    if events:
        first = dt.datetime.fromtimestamp(events[0].at, tz=dt.UTC).isoformat(timespec="seconds")
        trace = printable(events[0].trace_id)
        console.print(Text(f"{len(events)} events from {first}, trace {trace}", style="dim"))


def event_json(ev: Event) -> str:
    """One event as a line of JSON; a NaN or an infinity in its data (which MessagePack stores
    but JSON cannot hold) is written as the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``."""
    try:
        return printable_json(to_json(ev).decode())
    except ValidationError:
        return printable_json(json.dumps(_finite(msgspec.to_builtins(ev)), ensure_ascii=False))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
