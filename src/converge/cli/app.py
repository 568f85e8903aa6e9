"""The ``converge`` command.

Commands: ``--version``, ``--log-format``, ``schema``, ``keys new|show``, ``events``, ``demo``
(here); ``run``, ``resume``, ``cancel``, ``runs``, ``show``, ``validate`` (``_commands``);
``trace``, ``replay``, ``metrics`` (``_trace_cmd``); ``agents run`` (``_agents_run``).

Exit codes: 0 success, 1 the operation failed, 2 bad input (arguments, files, keys, a file that
is not a converge store or is one from a newer converge). Errors print one line on stderr, never
a traceback: a bad flag or argument too (``error: no such option: --ouput (did you mean
--output?); see converge trace --help``), where typer would draw its usage and a boxed panel
(``_OneLineErrors``: click's usage errors are caught around the whole command).

Heavy modules are imported inside the commands that need them, so ``converge --help`` imports
only typer, and the CLI modules do not import asyncio (``_config.run_async``
imports it for the commands that run something: it was a third of ``--help``'s start-up).
Measured (``bench/bench_cli.py``): ``--help`` takes 143 ms on a fast machine (target 200 ms);
on a ~3x slower one ~400 ms, ~160 ms of it typer's help renderer importing rich (and rich's
markdown) — the price of the rich help layout; ``validate`` (~450 ms there) also imports the
graph loader.

Read-only commands never write: ``runs``, ``show``, ``trace``, ``replay``, ``metrics`` and
``events`` open the store read-only (``_run.open_store(..., read_only=True)``), so an unrelated
SQLite file given as ``--store`` is refused (exit 2) and left as it was. Every command resolves
the store with the same settings (flag, ``CONVERGE_STORE``, ``converge.toml``, default: see
``_config``).

``--log-format`` before the command (``converge --log-format json run …``) is the same setting
as the command's own flag (which wins when both are given): it makes a run's progress and its
last line JSON lines, and sends the process's log records to stderr as JSON lines carrying the
run's ids (``observability.log_format``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from typer.core import TyperGroup

from converge._version import __version__
from converge.cli import _commands, _trace_cmd
from converge.cli._config import fail, run_async, say

__all__ = ["app", "main"]

T = TypeVar("T")


class _OneLineErrors(TyperGroup):
    """The root command: a usage error (an unknown flag, a missing argument, a bad choice) is
    one ``error:`` line, exit 2, like every other error, not typer's usage and boxed panel."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except _click_exception() as exc:
            if type(exc).__name__ != "NoArgsIsHelpError":  # the help was printed already
                typer.echo(f"error: {_usage_message(exc)}", err=True)
            sys.exit(getattr(exc, "exit_code", 2))
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _click_exception() -> type[Exception]:
    """click's ``ClickException``, a base of typer's ``BadParameter`` (typer vendors click from
    0.2x on, and used click itself before: either way it is found there)."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _usage_message(exc: Any) -> str:
    """``No such option: --foo`` as ``no such option: --foo; see converge run --help``."""
    from converge.observability.terminal import printable

    name, possible = getattr(exc, "option_name", None), getattr(exc, "possibilities", None)
    if isinstance(name, str) and possible:  # click's NoSuchOption: "did you mean", as elsewhere
        from converge.core.spelling import did_you_mean

        message = f"no such option: {name}{did_you_mean(name, possible)}"
    else:
        import re

        message = " ".join(str(exc.format_message()).split()).rstrip(".")
        message = message[:1].lower() + message[1:]
        message = re.sub(r"\. Did you mean (.+)\?$", r" (did you mean \1?)", message)
    ctx = getattr(exc, "ctx", None)
    where = f"; see {ctx.command_path} --help" if ctx is not None else ""
    return printable(message + where)


app = typer.Typer(
    cls=_OneLineErrors,
    name="converge",
    help="Coordinate many agents: signed identities, protocol objects and one event log.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
keys_app = typer.Typer(help="Create and inspect agent key files.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
agents_app = typer.Typer(help="Run decentralized agents over the store.", no_args_is_help=True)
app.add_typer(agents_app, name="agents")


def _fail(message: str, code: int) -> NoReturn:
    fail(message, code)


def _guard(fn: Callable[[], T]) -> T:
    """Run a command body, turning converge's errors into one line and an exit code."""
    from converge.cli._config import bad_input
    from converge.errors import ConvergeError

    try:
        return fn()
    except bad_input() as exc:
        _fail(str(exc), 2)
    except ConvergeError as exc:
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"converge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format",
            envvar="CONVERGE_LOG_FORMAT",
            help="Log to stderr as 'text' or 'json' lines (with run, trace and node ids).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Coordinate many agents: signed identities, protocol objects and one event log."""
    from converge.cli._config import use_log_format

    use_log_format(log_format)
    if log_format is not None:
        from converge.observability.log_format import configure_logging

        _guard(lambda: configure_logging(log_format))


@app.command()
def schema(
    name: Annotated[
        str | None,
        typer.Argument(help="intent, offer, task_start, task_progress, task_done, receipt, …"),
    ] = None,
) -> None:
    """Print the JSON Schema of a protocol object, or of all of them.

    Example: [bold]converge schema offer[/]
    """
    from converge.protocol import json_schema

    result = _guard(lambda: json_schema(name))
    typer.echo(json.dumps(result, indent=2))


@keys_app.command("new")
def keys_new(
    path: Annotated[Path, typer.Argument(help="Where to write the key (PEM, mode 0600).")],
    password_env: Annotated[
        str | None,
        typer.Option(help="Encrypt the key with the password in this environment variable."),
    ] = None,
) -> None:
    """Create a new Ed25519 identity and print its did.

    Example: [bold]converge keys new agent.pem[/]
    """
    from converge.core import Identity

    password = _password(password_env)
    identity = Identity.generate()
    _guard(lambda: identity.save(path, password=password))
    typer.echo(identity.did)


@keys_app.command("show")
def keys_show(
    path: Annotated[Path, typer.Argument(help="A key file written by 'converge keys new'.")],
    password_env: Annotated[
        str | None, typer.Option(help="The environment variable holding the key's password.")
    ] = None,
) -> None:
    """Print the did and fingerprint of a key file (never the key).

    Example: [bold]converge keys show agent.pem[/]
    """
    from converge.core import Identity

    password = _password(password_env)
    identity = _guard(lambda: Identity.load(path, password=password))
    typer.echo(f"did:         {identity.did}\nfingerprint: {identity.fingerprint}")


def _password(env: str | None) -> bytes | None:
    if env is None:
        return None
    value = os.environ.get(env)
    if not value:
        _fail(f"environment variable {env} is not set or empty", 2)
    return value.encode()


@app.command()
def events(
    store: Annotated[
        Path | None,
        typer.Option(
            help="The SQLite store to read (default: $CONVERGE_STORE, converge.toml, "
            ".converge/converge.db).",
            show_default=False,
        ),
    ] = None,
    trace: Annotated[
        str | None,
        typer.Option(help="Only this trace (a run's: its id, a prefix of it, or 'last')."),
    ] = None,
    kind: Annotated[list[str] | None, typer.Option(help="Only these kinds (repeatable).")] = None,
    after: Annotated[int, typer.Option(help="Only events after this seq.")] = 0,
    limit: Annotated[int | None, typer.Option(help="At most this many events.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Print a store's event log as a timeline, or as JSON lines.

    Example: [bold]converge events --store .converge/demo.db --trace 01J…[/]
    """
    from converge.cli._config import settings
    from converge.cli._run import open_store

    cfg = settings(store=store)

    async def read() -> list[object]:
        from converge.cli._runs import resolve_run_id
        from converge.errors import ValidationError

        async with await open_store(cfg, create=False, read_only=True) as db:
            trace_id = trace
            if trace is not None:
                try:  # a run's trace by its id's prefix or `last`; any other trace as given
                    trace_id = (await resolve_run_id(db, trace)).split("/", 1)[0]
                except ValidationError:
                    trace_id = trace
            found = await db.read(after_seq=after, trace_id=trace_id, kinds=kind, limit=limit)
        return list(found)

    found = _guard(lambda: run_async(read()))
    _print_events(found, as_json, title=f"events in {cfg.store}")


def _print_events(found: list[object], as_json: bool, *, title: str) -> None:
    from converge.cli._timeline import event_json, render_timeline
    from converge.protocol import Event

    evs = [e for e in found if isinstance(e, Event)]
    if as_json:
        for ev in evs:
            typer.echo(event_json(ev))
        return
    from rich.console import Console

    if not evs:
        typer.echo("no events")
        return
    render_timeline(evs, Console(emoji=False, highlight=False), title=title)


@app.command()
def demo(
    store: Annotated[Path, typer.Option(help="The SQLite store to record into.")] = Path(
        ".converge/demo.db"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print events as JSON lines.")] = False,
) -> None:
    """Two agents exchange a signed intent and offer; forged copies are rejected; all logged.

    Example: [bold]converge demo --store .converge/demo.db[/]
    """
    from converge.cli._demo import run_demo

    result = _guard(lambda: run_async(run_demo(store)))
    _print_events(
        list(result.events), as_json, title="intent -> offer, with a tampered and a replayed copy"
    )
    if not as_json:
        typer.echo()
        say(f"The log is in {result.store_path}; read it again with:")
        say(f"  converge events --store {result.store_path} --trace {result.trace_id}")


@agents_app.command("run")
def agents_run(
    config: Annotated[Path, typer.Argument(help="The agents file (YAML).")],
    store: Annotated[
        Path | None,
        typer.Option(
            help="The SQLite store (default: $CONVERGE_STORE, converge.toml, "
            ".converge/converge.db).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the file's agents on the store's board until Ctrl-C, then stop them cleanly.

    Prints a line per agent started and stopped; exits 0 after a shutdown by SIGINT or SIGTERM
    or once every agent's budget ran out, 1 once every agent has stopped on its own and one
    failed, 2 on a bad file ([bold]file:line: message[/]).

    Example: [bold]converge agents run agents.yaml --store .converge/board.db[/]
    """
    from converge.cli._agents_config import load_agents_config
    from converge.cli._agents_run import run_agents
    from converge.cli._config import guard, settings

    cfg = settings(store=store)
    parsed = guard(lambda: load_agents_config(config))
    guard(lambda: run_async(run_agents(cfg, parsed, say)))


# run, resume, cancel, runs, show, validate (their modules import heavy code lazily too)
_commands.register(app)
_trace_cmd.register(app)


def main() -> None:
    """Entry point of the ``converge`` script."""
    try:
        app()
    except BrokenPipeError:  # e.g. `converge events … | head`
        sys.stderr.close()
        sys.exit(0)
