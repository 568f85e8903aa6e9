"""The run-facing commands: run, resume, cancel, runs, show, validate.

Exit codes: 0 completed (or WAITING: the question is printed with how to answer it), 1 the run
failed or was cancelled (or the store is locked, or ``resume`` found the run running in a live
process), 2 bad input, 130 interrupted by Ctrl-C (the run is logged ``run.interrupted`` and
``converge resume`` finishes it). A node's own ``sys.exit()`` or ``KeyboardInterrupt`` fails
the node, so the run: 1. Results go to stdout, live progress and errors to stderr. Settings
(``--store``…) resolve as described in ``_config``.

A ``SystemExit`` out of a task an agent started itself (asyncio stops its loop for it) is exit
1, ``error: the run stopped: a task an agent started raised SystemExit(0) (converge show
RUN)``, the run logged; one a signal handler raised exits as it asks. Live progress (a rich
table on a terminal, else ``text`` or ``json`` lines per ``log_format``) covers ``resume`` too:
the passes that finished before (from the log), then the continuation's events
(``Engine.resume(..., listener=...)``). ``resume RUN`` of a run the store does not hold says
``no run RUN in STORE`` (exit 2) before anything else.

``validate`` imports the Python modules the graph (and an ``--agents`` file) names and calls a
role's ``provider:`` factory, as ``run`` does, so their top-level code runs; its ``--help``
says so. Reading the YAML before any import is bounded whatever the file holds
(``orchestration.yaml_reader``). For each node that coordinates it prints what the node needs
and who will provide it (``_services.explain``).

A completed run's output goes to stdout as it is when stdout is a pipe or a file (it is data for
another program); on a terminal its control characters are shown as escapes, its lines and tabs
kept, as are a question's. Everything else printed for people shows them as escapes
(``_config.say``), one line each (an error's newlines shown as ``\\n``); ``--json`` output is
JSON-escaped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from converge.cli._config import fail, guard, output, plain, run_async, say, settings

__all__ = ["register"]

StoreOpt = Annotated[
    Path | None,
    typer.Option(
        help="The SQLite store (default: $CONVERGE_STORE, converge.toml, .converge/converge.db).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
AgentsOpt = Annotated[
    Path | None,
    typer.Option(
        "--agents",
        help="An agents file (as for `converge agents run`) whose agents run in this process "
        "beside the run: tender providers, consensus voters, board workers, team members.",
        show_default=False,
    ),
]


def register(app: typer.Typer) -> None:
    """Add the run-facing commands to ``app``."""
    app.command("run")(run)
    app.command("resume")(resume)
    app.command("cancel")(cancel)
    app.command("runs")(runs)
    app.command("show")(show)
    app.command("validate")(validate)


def run(
    graph: Annotated[Path, typer.Argument(help="The graph's YAML file.")],
    input_: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="key=value (JSON if it parses) or key=@file (text)."),
    ] = None,
    store: StoreOpt = None,
    run_id: Annotated[str | None, typer.Option(help="The new run's id (default: new).")] = None,
    log_format: Annotated[
        str | None, typer.Option(help="Progress when not a terminal: text or json.")
    ] = None,
    as_json: JsonOpt = False,
    otel: Annotated[
        str | None,
        typer.Option(
            help="Export OpenTelemetry spans: console (stderr) or otlp "
            "($OTEL_EXPORTER_OTLP_ENDPOINT); needs the otel extra.",
            show_default=False,
        ),
    ] = None,
    agents: AgentsOpt = None,
) -> None:
    """Run a graph on the embedded store, with live progress; print its result and run id.

    Nodes that coordinate (board, tender, consensus, team) get the store's task board, pools,
    ballots and the engine's bidding; --agents starts an agents file's agents beside the run.
    The output goes to stdout as it is, or, on a terminal, with control characters escaped.

    Example: [bold]converge run review.yaml --input source_code=@app.py[/]
    """
    from converge.cli._progress import Progress
    from converge.cli._run import load, parse_inputs, start_run

    cfg = settings(store=store, log_format=log_format)
    graph = graph.resolve()
    inputs = parse_inputs(input_ or [])
    nodes = [n.id for n in guard(lambda: load(graph)).nodes]
    config = _agents_file(agents)
    provider = None
    if otel is not None:
        if otel not in ("console", "otlp"):
            fail(f"--otel is console or otlp, not {otel!r}", 2)
        from converge.observability.otel import tracer_provider

        provider = guard(lambda: tracer_provider(otel))
    try:
        with Progress(nodes, log_format=cfg.log_format) as progress:
            outcome = _interruptible(
                lambda: run_async(
                    start_run(cfg, graph, inputs, run_id, progress.event, provider, config, _err)
                ),
                run_id,
            )
    finally:
        if provider is not None:
            provider.shutdown()  # flush the spans
    tokens, cost = progress.totals()
    outcome.usage = {"tokens": tokens, "cost": round(cost, 10)}
    _report(outcome, as_json)


def resume(
    run_id: Annotated[str, typer.Argument(help="The run to continue.")],
    answer: Annotated[
        str | None, typer.Option(help="Answer to its open question (JSON if it parses).")
    ] = None,
    graph: Annotated[
        Path | None, typer.Option(help="The graph file (default: the one it was run with).")
    ] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
    agents: AgentsOpt = None,
) -> None:
    """Continue a run that paused for an answer, was interrupted or cancelled.

    Refused while the process that runs it is alive. --agents starts an agents file's agents
    beside the run, as for `converge run`.

    Example: [bold]converge resume 01J… --answer approved[/]
    """
    from converge.cli._progress import Progress
    from converge.cli._run import graph_of, load, parse_value, resume_run

    cfg = settings(store=store)
    value = None if answer is None else parse_value(answer)
    path = graph.resolve() if graph is not None else guard(lambda: run_async(graph_of(cfg, run_id)))
    nodes = [n.id for n in guard(lambda: load(path)).nodes]
    config = _agents_file(agents)
    with Progress(nodes, log_format=cfg.log_format) as progress:
        outcome, _ = _interruptible(
            lambda: run_async(resume_run(cfg, run_id, path, value, progress.event, config, _err)),
            run_id,
        )
    _report(outcome, as_json)


def cancel(
    run_id: Annotated[str, typer.Argument(help="The run to cancel.")],
    store: StoreOpt = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for a running run to stop.")] = 10.0,
) -> None:
    """Cancel a run: ask the process running it to stop, or mark it cancelled if none does.

    Example: [bold]converge cancel 01J…[/]
    """
    from converge.cli._run import open_store
    from converge.cli._runs import cancel_run

    cfg = settings(store=store)

    async def go() -> str:
        async with await open_store(cfg, create=False) as db:
            return await cancel_run(db, run_id, wait)

    say(guard(lambda: run_async(go())))


def runs(
    store: StoreOpt = None,
    limit: Annotated[int | None, typer.Option(help="At most this many (newest first).")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List the store's runs: id, graph, status, started, duration, cost.

    Example: [bold]converge runs --limit 10[/]
    """
    from converge.cli._run import open_store
    from converge.cli._runs import list_runs

    cfg = settings(store=store)

    async def go() -> list[dict[str, Any]]:
        async with await open_store(cfg, create=False, read_only=True) as db:
            return await list_runs(db, limit)

    found = guard(lambda: run_async(go()))
    if as_json:
        for item in found:
            typer.echo(json.dumps(item, default=str))
        return
    if not found:
        typer.echo("no runs")
        return
    _runs_table(found)


def show(
    run_id: Annotated[str, typer.Argument(help="The run to show.")],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a run: its status and result, and each node's status, inputs, output and error.

    Example: [bold]converge show 01J…[/]
    """
    from converge.cli._run import open_store
    from converge.cli._runs import show_run

    cfg = settings(store=store)

    async def go() -> dict[str, Any]:
        async with await open_store(cfg, create=False, read_only=True) as db:
            return await show_run(db, run_id)

    found = guard(lambda: run_async(go()))
    if as_json:
        typer.echo(json.dumps(found, indent=2, default=str))
        return
    _show_table(found)


def validate(
    graph: Annotated[Path, typer.Argument(help="The graph's YAML file.")],
    agents: AgentsOpt = None,
) -> None:
    """Check a graph file: print [bold]ok[/], or [bold]file:line: message[/] and exit 2.

    Then, for each node that coordinates (board, tender, consensus, team), which services it
    needs and whether `converge run` (with --agents, if given) provides them and who does its
    work.

    Like `converge run`, it imports the Python modules the files name (agents, tools,
    providers) and calls a role's provider factory, so [bold]their top-level code runs[/]:
    validate only files you would run.

    Example: [bold]converge validate review.yaml --agents agents.yaml[/]
    """
    from converge.cli._run import load
    from converge.cli._services import explain

    loaded = guard(lambda: load(graph))
    config = _agents_file(agents)
    if config is not None:
        from converge.cli._agents_run import build_agents

        guard(lambda: build_agents(config, create_keys=False))  # references import, keys load
    typer.echo("ok")
    for line in explain(loaded, config):
        say(line)


# -- helpers --------------------------------------------------------------------------------------


def _agents_file(path: Path | None) -> Any:
    """The agents file at ``path``, read and checked (exit 2 with file and line), or None."""
    if path is None:
        return None
    from converge.cli._agents_config import load_agents_config

    return guard(lambda: load_agents_config(path.resolve()))


def _err(line: str) -> None:
    say(line, err=True)


def _interruptible(fn: Any, run_id: str | None) -> Any:
    try:
        return guard(fn)
    except KeyboardInterrupt:
        how = f"converge resume {run_id}" if run_id else "converge runs, then converge resume ID"
        fail(f"interrupted: the run is stopped and resumable ({how})", 130)
    except SystemExit as exc:
        from converge.core.user_code import is_interruption

        if is_interruption(exc):  # a signal handler's: the process is asked to exit
            raise
        # An agent's own ``sys.exit()`` fails its node; this one came out of a task the agent
        # started, for which asyncio stops its event loop. The run is logged all the same.
        how = f"converge show {run_id}" if run_id else "converge runs"
        fail(f"the run stopped: a task an agent started raised {exc!r} ({how})", 1)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=2, default=str)


def _report(outcome: Any, as_json: bool) -> None:
    status, data, run_id = outcome.status, outcome.data, outcome.run_id
    if as_json:
        record = {
            "run_id": run_id,
            "status": status,
            "output": data.get("output"),
            "outputs": outcome.outputs,
            "error": data.get("error"),
            "questions": data.get("questions") or {},
            "usage": outcome.usage,
        }
        typer.echo(json.dumps(record, default=str))
    elif status == "completed":
        output(_text(data.get("output")) + "\n")
        say(f"run {run_id} completed", err=True)
    elif status == "waiting":
        for node, question in dict(data.get("questions") or {}).items():
            say(f"{node} asks: {question}", newlines=True)
        say(f"run {run_id} is waiting; answer with:")
        say(f"  converge resume {run_id} --answer ANSWER")
    if status in ("completed", "waiting"):
        return
    if status == "failed":
        where = f" at node {data['node']}" if data.get("node") else ""
        fail(f"run {run_id} failed{where}: {data.get('error')}", 1)
    if status == "interrupted":
        fail(f"run {run_id} was interrupted; continue it with `converge resume {run_id}`", 1)
    fail(f"run {run_id} was cancelled; continue it with `converge resume {run_id}`", 1)


def _when(at: float | None) -> str:
    import datetime as dt

    if at is None:
        return ""
    return dt.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


def _duration(ms: float | None) -> str:
    return "" if ms is None else f"{ms / 1000:.2f}s"


def _runs_table(found: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    from converge.cli._progress import format_cost
    from converge.cli._runs import status_text

    table = Table(box=None, pad_edge=False)
    for column in ("run id", "graph", "status", "started", "duration", "cost"):
        table.add_column(column, justify="right" if column in ("duration", "cost") else "left")
    for r in found:
        table.add_row(
            plain(r["run_id"]),
            plain(r["graph"]),
            plain(status_text(r)),
            _when(r["started_at"]),
            _duration(r["duration_ms"]),
            format_cost(r["cost"]),
        )
    Console(emoji=False, highlight=False, width=160).print(table)


def _show_table(found: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from converge.cli._progress import format_cost
    from converge.cli._runs import status_text

    console = Console(emoji=False, highlight=False, width=160)
    console.print(
        plain(
            f"run {found['run_id']}  graph {found['graph']}  status {status_text(found)}  "
            f"duration {_duration(found['duration_ms'])}  tokens {found['total_tokens']}  "
            f"cost {format_cost(found['total_cost'])}"
        )
    )
    console.print(plain(f"inputs: {json.dumps(found['inputs'], default=str)}"))
    table = Table(box=None, pad_edge=False)
    for column in ("node", "status", "inputs", "output / error", "tokens", "cost"):
        table.add_column(column)
    for n in found["nodes"]:
        shown = n["error"] or n["question"] or json.dumps(n["output"], default=str)
        table.add_row(
            plain(n["node"]),
            plain(n["status"]),
            plain(", ".join(n["inputs"] or [])),
            _cut(shown),
            str(n["tokens"] or "-"),
            format_cost(n["cost"]),
        )
    console.print(table)
    if found["status"] == "completed":
        console.print(plain("output: ").append_text(_cut(_text(found["output"]), 400)))
    elif found["status"] == "interrupted":
        why = found.get("interrupted_because") or "its process stopped before it ended"
        console.print(
            plain(f"interrupted: {why}; continue it with `converge resume {found['run_id']}`")
        )
    elif found["error"]:
        console.print(plain(f"error: {found['error']}"))
    for question in found["questions"]:
        console.print(plain(f"waiting: {question}"))


def _cut(text: str, width: int = 60) -> Any:
    """``text`` on one line, cut to ``width`` characters, as a rich ``Text`` (``plain``)."""
    text = text.replace("\n", " ")
    return plain(text if len(text) <= width else text[: width - 1] + "…")
