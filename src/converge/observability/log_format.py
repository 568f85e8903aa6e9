"""Logs as JSON lines, or as text safe to print.

``converge --log-format json`` (or ``CONVERGE_LOG_FORMAT=json``).

```python
configure_logging("json")
logging.getLogger("converge.engine").info("node done", extra={"run_id": r, "node_id": "a"})
# {"ts": "2025-12-26T10:00:00.123456Z", "level": "INFO", "logger": "converge.engine",
#  "message": "node done", "run_id": "01J…", "node_id": "a"}
```

``run_id``, ``trace_id``, ``node_id`` (and ``agent``, ``seq``) are copied from a record's
extras when present; an exception is written as ``exc_info`` text.

A message may quote anything (a node's error, a name from a graph file): a JSON line has the
characters a terminal acts on escaped (``printable_json``), and a ``text`` line shows them as
escapes (``printable``), one line per record plus the lines of its traceback. Configuring again
replaces converge's own handler only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from converge.errors import ValidationError
from converge.observability.terminal import printable, printable_json

__all__ = ["LOG_FIELDS", "JsonFormatter", "configure_logging"]

LOG_FIELDS = ("run_id", "trace_id", "node_id", "agent", "seq")
"""Extras a ``JsonFormatter`` copies into the line when a record has them."""

_HANDLER_NAME = "converge-cli"


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON with its time, level, logger, message and ids."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in LOG_FIELDS:
            value = record.__dict__.get(field)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return printable_json(json.dumps(line, ensure_ascii=False, default=str))


class _TextFormatter(logging.Formatter):
    """A ``logging.Formatter`` whose record line shows control characters as escapes (one line
    per record) and whose traceback keeps its lines but escapes the rest."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return printable(super().formatException(ei), newlines=True)

    def formatStack(self, stack_info: str) -> str:
        return printable(super().formatStack(stack_info), newlines=True)


def configure_logging(fmt: str = "text", level: int = logging.WARNING) -> logging.Handler:
    """Send the root logger's records to stderr as ``text`` or ``json`` lines.

    Calling it again replaces the handler it installed before (never anyone else's).

    Raises:
        ValidationError: ``fmt`` is neither ``text`` nor ``json``.
    """
    if fmt not in ("text", "json"):
        raise ValidationError(f"unknown log format {fmt!r}: use text or json", field="log_format")
    handler = logging.StreamHandler()
    handler.set_name(_HANDLER_NAME)
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
