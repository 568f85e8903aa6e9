"""The ``converge`` command.

Commands: ``--version``, ``--log-format``, ``schema``, ``keys new|show``, ``events``, ``demo``
(here); ``run``, ``resume``, ``cancel``, ``runs``, ``show``, ``validate`` (``_commands``);
``trace``, ``replay``, ``metrics`` (``_trace_cmd``); ``agents run`` (``_agents_run``).

Exit codes: 0 success, 1 the operation failed, 2 bad input (arguments, files, keys, a file that
is not a converge store or is one from a newer converge). Errors print one line on stderr, never
a traceback. Heavy modules are imported inside the commands that need them, so ``converge
--help`` imports only typer, and the CLI modules do not import asyncio (``_config.run_async``
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
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer

from converge._version import __version__
from converge.cli import _commands, _trace_cmd
from converge.cli._config import fail, run_async, say

__all__ = ["app", "main"]

T = TypeVar("T")

app = typer.Typer(
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
    trace: Annotated[str | None, typer.Option(help="Only this trace.")] = None,
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
        async with await open_store(cfg, create=False, read_only=True) as db:
            found = await db.read(after_seq=after, trace_id=trace, kinds=kind, limit=limit)
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
