"""The CLI's settings, and what its commands share.

They share one-line errors and text printed for people.

Settings come from one precedence, highest first: a command-line flag, then an environment
variable ``CONVERGE_<KEY>``, then ``converge.toml`` (in the current directory, else in
``$CONVERGE_HOME``), then the default:

- ``store`` (``CONVERGE_STORE``): the SQLite store; default ``$CONVERGE_HOME/converge.db``,
  else ``.converge/converge.db``.
- ``log_format`` (``CONVERGE_LOG_FORMAT``; the flag is ``converge --log-format`` before the
  command or ``--log-format`` after ``run``): ``text`` (the default) shows live progress as a
  table on a terminal and as text lines elsewhere; ``json`` writes JSON lines everywhere.
- ``busy_timeout`` (``CONVERGE_BUSY_TIMEOUT``): seconds to wait for a store another process holds
  locked (default 5).
- ``lease_ttl`` (``CONVERGE_LEASE_TTL``) and ``lease_renew`` (``CONVERGE_LEASE_RENEW``): how long
  the lease of a process running a run holds (default 30 s) and how often it is renewed
  (default 10 s): a process on another host may resume the run only once the lease lapsed.

A relative ``store`` in ``converge.toml`` is relative to that file's directory. Only typer and
the standard library are imported here at module level: ``converge --help`` stays fast.

Everything printed for people goes through ``fail``, ``say`` or (for rich tables and trees)
``plain``, which show control characters as escapes (``converge.observability.terminal``): a
name or an error from a graph file, an agent or the log cannot drive the terminal. JSON output
is escaped by its encoder (``printable_json`` for the characters encoders pass through, as
``\\uXXXX``: the same value, and a raw U+2028 would also split a JSON line for
``splitlines``). Data another program may read — a run's output, ``trace --format
mermaid|dot|html``, the Prometheus text — goes through ``output``: written as it is, directly
(click's ``echo`` would strip ANSI sequences from it), to a pipe or a file, and with
``printable(..., newlines=True)`` on a terminal.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer

__all__ = [
    "Settings",
    "bad_input",
    "fail",
    "guard",
    "output",
    "plain",
    "say",
    "settings",
    "use_log_format",
]

T = TypeVar("T")
LOG_FORMATS = ("text", "json")
_KEYS = ("store", "log_format", "busy_timeout", "lease_ttl", "lease_renew")
_GLOBAL: dict[str, str | None] = {"log_format": None}  # ``converge --log-format`` of this call


def use_log_format(fmt: str | None) -> None:
    """Take ``converge --log-format FMT`` (None: not given) as this call's flag."""
    _GLOBAL["log_format"] = fmt


@dataclass(frozen=True)
class Settings:
    """The resolved settings of one command."""

    store: Path
    """The SQLite store file."""
    log_format: str
    """``text`` or ``json``: how live progress is printed when stderr is not a terminal."""
    busy_timeout: float
    """Seconds to wait for a store another process holds locked."""
    lease_ttl: float = 30.0
    """Seconds the lease on a running run holds after its last renewal."""
    lease_renew: float = 10.0
    """Seconds between renewals of that lease."""


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: message`` on stderr, on one line, and exit with ``code``.

    The message may quote anything (a node's error, a file's name, a value read): its control
    characters are shown as escapes (``converge.observability.terminal``)."""
    from converge.observability.terminal import printable

    typer.echo(f"error: {printable(message)}", err=True)
    raise typer.Exit(code)


def say(line: str, *, err: bool = False, newlines: bool = False) -> None:
    """Print ``line`` for people on stdout (stderr with ``err``), its control characters shown
    as escapes; ``newlines`` keeps the line feeds and tabs of text meant to span lines."""
    from converge.observability.terminal import printable

    typer.echo(printable(line, newlines=newlines), err=err)


def output(text: str) -> None:
    """Write ``text``, data another program may read, to stdout: as it is to a pipe or a file;
    on a terminal with its control characters shown as escapes, its lines and tabs kept."""
    if sys.stdout.isatty():
        from converge.observability.terminal import printable

        text = printable(text, newlines=True)
    sys.stdout.write(text)
    sys.stdout.flush()


def plain(text: object) -> Any:
    """``str(text)`` as a rich ``Text``: never read as rich markup (``[bold]`` stays as it is),
    its control characters shown as escapes. What a rich table cell or tree label holds."""
    from rich.text import Text

    from converge.observability.terminal import printable

    return Text(printable(str(text)))


def settings(*, store: Path | None = None, log_format: str | None = None) -> Settings:
    """Resolve the settings: ``store`` and ``log_format`` are the command's flags (None: unset)."""
    env = os.environ
    home = env.get("CONVERGE_HOME")
    file_values, base = _read_file(home)
    values: dict[str, object] = {}
    for key in _KEYS:
        env_value = env.get(f"CONVERGE_{key.upper()}")
        if env_value:
            values[key] = env_value
        elif key in file_values:
            # a relative path in converge.toml is relative to the file, not to the cwd
            values[key] = (
                base / str(file_values[key]) if key == "store" and base else file_values[key]
            )
    if store is None:
        if "store" in values:
            store = Path(str(values["store"])).expanduser()
        else:
            store = Path(home) / "converge.db" if home else Path(".converge") / "converge.db"
    if log_format is None:
        log_format = _GLOBAL["log_format"]
    fmt = log_format if log_format is not None else str(values.get("log_format", "text"))
    if fmt not in LOG_FORMATS:
        fail(f"log_format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}", 2)
    raw_timeout = values.get("busy_timeout", 5.0)
    try:
        busy = float(raw_timeout)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        fail(f"busy_timeout must be a number of seconds, not {raw_timeout!r}", 2)
    if busy < 0:
        fail(f"busy_timeout must be >= 0, not {busy!r}", 2)
    ttl = _seconds(values, "lease_ttl", 30.0)
    renew = _seconds(values, "lease_renew", 10.0)
    if renew >= ttl:
        fail(f"lease_renew ({renew:g} s) must be less than lease_ttl ({ttl:g} s)", 2)
    return Settings(
        store=store, log_format=fmt, busy_timeout=busy, lease_ttl=ttl, lease_renew=renew
    )


def _seconds(values: dict[str, object], key: str, default: float) -> float:
    raw = values.get(key, default)
    try:
        seconds = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        fail(f"{key} must be a number of seconds, not {raw!r}", 2)
    if not 0 < seconds < float("inf"):
        fail(f"{key} must be a number of seconds > 0, not {raw!r}", 2)
    return seconds


def _read_file(home: str | None) -> tuple[dict[str, object], Path | None]:
    candidates = [Path("converge.toml")]
    if home:
        candidates.append(Path(home) / "converge.toml")
    for path in candidates:
        if not path.is_file():
            continue
        import tomllib

        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            fail(f"{path}: cannot read the configuration: {exc}", 2)
        unknown = sorted(set(data) - set(_KEYS))
        if unknown:
            fail(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(_KEYS)})", 2)
        return data, path.resolve().parent
    return {}, None


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)``, with asyncio imported only by the commands that run something
    (importing it costs ``--help`` a third of its start-up)."""
    import asyncio

    return asyncio.run(coro)


def guard(fn: Callable[[], T]) -> T:
    """Run a command body: converge's errors become one line and an exit code (0/1/2).

    An ``ExceptionGroup`` holding one error (a task group's) is unwrapped first.
    """
    from converge.errors import ConvergeError

    try:
        return fn()
    except BaseExceptionGroup as group:
        inner = _sole(group)
        if isinstance(inner, bad_input()):
            fail(str(inner), 2)
        if isinstance(inner, ConvergeError):
            fail(str(inner), 1)
        raise
    except bad_input() as exc:
        fail(str(exc), 2)
    except ConvergeError as exc:
        fail(str(exc), 1)


def bad_input() -> tuple[type[Exception], ...]:
    """The errors that are bad input (exit 2): a bad argument or file, an unusable key, a
    file that is not a converge store or is one from a newer converge."""
    from converge.errors import IdentityError, NotAStore, SchemaVersionError, ValidationError

    return (ValidationError, IdentityError, NotAStore, SchemaVersionError)


def _sole(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
