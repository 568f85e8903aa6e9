"""Logs as JSON lines, or as text safe to print.

``converge --log-format json`` (or ``CONVERGE_LOG_FORMAT=json``).

```python
configure_logging("json")
logging.getLogger("converge.engine").info("node done", extra={"run_id": r, "node_id": "a"})
# {"ts": "2025-12-26T10:00:00.123456Z", "level": "INFO", "logger": "converge.engine",
#  "message": "node done", "run_id": "01J…", "node_id": "a"}
```

``run_id``, ``trace_id``, ``node_id`` (and ``agent``, ``seq``) are copied from a record's
extras when present; an exception is written as ``exc_info`` text. ``configure_logging(fmt,
context={"run_id": r, "trace_id": t})`` adds those ids to every record that lacks them: a
process that runs one run (``converge run``) has every line of its log carry the run's ids,
the engine's own included. ``json_line`` writes a line of the same shape for what is not a log
record: ``converge run``'s progress, one line per event, and its last line.

The handler writes to whatever ``sys.stderr`` is when a record comes (as ``logging``'s own
last-resort handler does), so a test harness that swaps stderr, or closes the one it swapped
in, never gets a write to a closed file.

A message may quote anything (a node's error, a name from a graph file): a JSON line has the
characters a terminal acts on escaped (``printable_json``), and a ``text`` line shows them as
escapes (``printable``), one line per record plus the lines of its traceback. Configuring again
replaces converge's own handler only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

from converge.errors import ValidationError
from converge.observability.terminal import printable, printable_json

__all__ = ["LOG_FIELDS", "JsonFormatter", "configure_logging", "json_line"]

LOG_FIELDS = ("run_id", "trace_id", "node_id", "agent", "seq")
"""Extras a ``JsonFormatter`` copies into the line when a record has them."""

_HANDLER_NAME = "converge-cli"


def json_line(
    message: str, *, at: float, level: str = "INFO", logger: str = "converge", **fields: Any
) -> str:
    """One log line as JSON: ``{ts, level, logger, message}`` (``at``: seconds since the epoch)
    and ``fields`` that are not None, in that order; characters a terminal acts on escaped."""
    line: dict[str, Any] = {
        "ts": dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "level": level,
        "logger": logger,
        "message": message,
    }
    line.update((key, value) for key, value in fields.items() if value is not None)
    return printable_json(json.dumps(line, ensure_ascii=False, default=str))


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON with its time, level, logger, message and ids."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {field: record.__dict__.get(field) for field in LOG_FIELDS}
        if record.exc_info:
            fields["exc_info"] = self.formatException(record.exc_info)
        return json_line(
            record.getMessage(),
            at=record.created,
            level=record.levelname,
            logger=record.name,
            **fields,
        )


class _Context(logging.Filter):
    """Adds ids (``run_id``, ``trace_id``…) to the records that lack them."""

    def __init__(self, context: Mapping[str, Any]) -> None:
        super().__init__()
        self.context = dict(context)

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self.context.items():
            if record.__dict__.get(key) is None:
                setattr(record, key, value)
        return True


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A ``StreamHandler`` on the ``sys.stderr`` of the moment."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class _TextFormatter(logging.Formatter):
    """A ``logging.Formatter`` whose record line shows control characters as escapes (one line
    per record) and whose traceback keeps its lines but escapes the rest."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return printable(super().formatException(ei), newlines=True)

    def formatStack(self, stack_info: str) -> str:
        return printable(super().formatStack(stack_info), newlines=True)


def configure_logging(
    fmt: str = "text", level: int = logging.WARNING, *, context: Mapping[str, Any] | None = None
) -> logging.Handler:
    """Send the root logger's records to stderr as ``text`` or ``json`` lines; ``context``
    (``{"run_id": …, "trace_id": …}``) is added to every record that lacks those fields.

    Calling it again replaces the handler it installed before (never anyone else's).

    Raises:
        ValidationError: ``fmt`` is neither ``text`` nor ``json``.
    """
    if fmt not in ("text", "json"):
        raise ValidationError(f"unknown log format {fmt!r}: use text or json", field="log_format")
    handler = _Stderr()
    handler.set_name(_HANDLER_NAME)
    if context:
        handler.addFilter(_Context(context))
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else _TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
