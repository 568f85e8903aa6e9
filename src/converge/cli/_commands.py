"""The run-facing commands: run, resume, cancel, runs, show, validate.

Exit codes: 0 completed (or WAITING: the question is printed with how to answer it), 1 the run
failed or was cancelled (or the store is locked, or ``resume`` found the run running in a live
process), 2 bad input, 130 interrupted by Ctrl-C (the run is logged ``run.interrupted`` and
``converge resume`` finishes it). A node's own ``sys.exit()`` or ``KeyboardInterrupt`` fails
the node, so the run: 1. Results go to stdout, live progress and errors to stderr. Settings
(``--store``…) resolve as described in ``_config``.

``run`` makes the new run's id before the run starts, so Ctrl-C always prints the exact
``converge resume ID`` to type (or, pressed before anything of the run was written, says there
is nothing to resume). A finished run's last line names the command that opens its trace
(``converge trace ID --format html -o trace.html``); with ``--log-format json`` that last line
is a JSON line too (``event``, ``status``, ``run_id``, ``trace_id``, ``trace_command``; level
``ERROR`` for a run that failed, exit 1 as ever).

``run --interactive`` asks a pausing node's question on the terminal (stderr; the answer read
from stdin, JSON if it parses, as ``--answer``) and continues the run in the same process,
until it ends or stdin does (then it waits, and ``converge resume ID --answer`` answers it, as
without the flag). The live display stops while it asks.

Every command that takes a run id takes ``last`` or a prefix of one too
(``_runs.resolve_run_id``). ``runs`` where no store was ever made says ``no runs yet``, exit 0:
a new project has no runs, which is not an error.

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
from typing import Annotated, Any, NoReturn

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
    interactive: Annotated[
        bool,
        typer.Option(
            "--interactive",
            help="Ask a pausing node's question here and continue with the answer (without "
            "it, the run waits for `converge resume ID --answer ...`).",
        ),
    ] = False,
    input_: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="key=value (JSON if it parses) or key=@file (text)."),
    ] = None,
    store: StoreOpt = None,
    run_id: Annotated[str | None, typer.Option(help="The new run's id (default: new).")] = None,
    log_format: Annotated[
        str | None,
        typer.Option(help="Progress as text (a live table on a terminal) or json lines."),
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
    from converge.cli._run import load, parse_inputs, resume_run, start_run
    from converge.core.ids import new_id

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
    the_id = run_id if run_id is not None else new_id()
    _log_ids(cfg, the_id)
    try:
        with _progress(nodes, the_id, cfg) as progress:
            outcome = _interruptible(
                lambda: run_async(
                    start_run(
                        cfg,
                        graph,
                        inputs,
                        the_id,
                        chosen=run_id is not None,
                        observe=progress.observe,
                        listener=progress.event,
                        tracer_provider=provider,
                        agents=config,
                        echo=_err,
                    )
                ),
                the_id,
                cfg,
            )
            while interactive and outcome.status == "waiting":
                answer = _ask(outcome, progress)
                if answer is _NO_ANSWER:
                    break
                outcome, _ = _interruptible(
                    lambda answer=answer: run_async(
                        resume_run(
                            cfg,
                            the_id,
                            graph,
                            answer,
                            observe=progress.observe,
                            listener=progress.event,
                            agents=config,
                            echo=_err,
                        )
                    ),
                    the_id,
                    cfg,
                )
    finally:
        if provider is not None:
            provider.shutdown()  # flush the spans
    tokens, cost = progress.totals()
    outcome.usage = {"tokens": tokens, "cost": round(cost, 10)}
    _report(outcome, as_json, cfg)


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
    from converge.cli._run import graph_of, load, parse_value, resume_run

    cfg = settings(store=store)
    value = None if answer is None else parse_value(answer)
    if graph is not None:  # a bad graph file is said first, as for `run`
        path = graph.resolve()
        nodes = [n.id for n in guard(lambda: load(path)).nodes]
        run_id = _run_id(cfg, run_id)
    else:
        run_id = _run_id(cfg, run_id)
        path = guard(lambda: run_async(graph_of(cfg, run_id)))
        nodes = [n.id for n in guard(lambda: load(path)).nodes]
    config = _agents_file(agents)
    _log_ids(cfg, run_id)
    with _progress(nodes, run_id, cfg) as progress:
        outcome, _ = _interruptible(
            lambda: run_async(
                resume_run(
                    cfg,
                    run_id,
                    path,
                    value,
                    observe=progress.observe,
                    listener=progress.event,
                    history=progress.history,
                    agents=config,
                    echo=_err,
                )
            ),
            run_id,
            cfg,
        )
    _report(outcome, as_json, cfg)


def cancel(
    run_id: Annotated[str, typer.Argument(help="The run to cancel.")],
    store: StoreOpt = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for a running run to stop.")] = 10.0,
) -> None:
    """Cancel a run: ask the process running it to stop, or mark it cancelled if none does.

    Example: [bold]converge cancel 01J…[/]
    """
    from converge.cli._run import open_store
    from converge.cli._runs import cancel_run, resolve_run_id

    cfg = settings(store=store)

    async def go() -> str:
        async with await open_store(cfg, create=False) as db:
            return await cancel_run(db, await resolve_run_id(db, run_id), wait)

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
    if not cfg.store.exists():
        if not as_json:
            typer.echo(f"no runs yet (no store at {cfg.store})")
        return

    async def go() -> list[dict[str, Any]]:
        async with await open_store(cfg, create=False, read_only=True) as db:
            return await list_runs(db, limit)

    found = guard(lambda: run_async(go()))
    if as_json:
        for item in found:
            typer.echo(json.dumps(item, default=str))
        return
    if not found:
        typer.echo("no runs yet")
        return
    _runs_table(found)


def show(
    run_id: Annotated[str, typer.Argument(help="The run to show.")],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a run: its result, and each node's status, attempts, inputs, output and errors.

    RUN is an id, a prefix of one, or [bold]last[/].

    Example: [bold]converge show last[/]
    """
    from converge.cli._run import open_store
    from converge.cli._runs import resolve_run_id, show_run

    cfg = settings(store=store)

    async def go() -> dict[str, Any]:
        async with await open_store(cfg, create=False, read_only=True) as db:
            return await show_run(db, await resolve_run_id(db, run_id))

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


def _run_id(cfg: Any, text: str) -> str:
    """The run ``text`` names in the configured store (an id, a prefix, ``last``)."""
    from converge.cli._run import open_store
    from converge.cli._runs import resolve_run_id

    async def go() -> str:
        async with await open_store(cfg, create=False, read_only=True) as db:
            return await resolve_run_id(db, text)

    return guard(lambda: run_async(go()))


def _progress(nodes: list[str], run_id: str, cfg: Any) -> Any:
    """Live progress for ``run_id``: a table on a terminal unless JSON lines were asked for."""
    import sys

    from converge.cli._progress import Progress

    live = sys.stderr.isatty() and cfg.log_format == "text"
    return Progress(nodes, run_id=run_id, live=live, log_format=cfg.log_format)


def _log_ids(cfg: Any, run_id: str) -> None:
    """With JSON logs, every log record of this process carries the run's ids."""
    if cfg.log_format == "json":
        from converge.observability.log_format import configure_logging

        configure_logging("json", context={"run_id": run_id, "trace_id": run_id.split("/")[0]})


_NO_ANSWER = object()


def _ask(outcome: Any, progress: Any) -> Any:
    """Ask the run's oldest open question on the terminal; the answer (JSON if it parses), or
    ``_NO_ANSWER`` once stdin has ended."""
    import sys

    from converge.cli._run import parse_value

    node, question = next(iter(dict(outcome.data.get("questions") or {}).items()))
    with progress.held():
        say(f"{node} asks: {question}", err=True, newlines=True)
        # Not typer.prompt: it writes a space to stdout, which holds only the run's result.
        sys.stderr.write("answer: ")
        sys.stderr.flush()
        line = sys.stdin.readline()
        if not line:  # end of input (Ctrl-D): the run waits for `resume --answer`
            sys.stderr.write("\n")
            return _NO_ANSWER
    return parse_value(line.rstrip("\r\n"))


def _interruptible(fn: Any, run_id: str, cfg: Any) -> Any:
    try:
        return guard(fn)
    except KeyboardInterrupt:
        if _exists(cfg, run_id):
            how = f"converge resume {run_id}"
            _end(cfg, f"interrupted: the run is stopped and resumable ({how})", 130, run_id)
        _end(cfg, f"interrupted before run {run_id} started: nothing to resume", 130, run_id)
    except SystemExit as exc:
        from converge.core.user_code import is_interruption

        if is_interruption(exc):  # a signal handler's: the process is asked to exit
            raise
        # An agent's own ``sys.exit()`` fails its node; this one came out of a task the agent
        # started, for which asyncio stops its event loop. The run is logged all the same.
        fail(f"the run stopped: a task an agent started raised {exc!r} (converge show {run_id})", 1)


def _exists(cfg: Any, run_id: str) -> bool:
    """Whether the store holds run ``run_id`` (what a Ctrl-C left: read again, read-only)."""
    from converge.cli._run import open_store

    if not cfg.store.exists():
        return False

    async def go() -> bool:
        async with await open_store(cfg, create=False, read_only=True) as db:
            found = await db.read(trace_id=run_id, kinds=("run.started",), limit=1)
            return bool(found)

    try:
        return run_async(go())
    except Exception:  # the question is asked on the way out: a doubt reads as "it may"
        return True


def _end(cfg: Any, message: str, code: int, run_id: str, **fields: Any) -> NoReturn:
    """The run command's last line, an error: ``error: message``, or a JSON line."""
    if cfg.log_format == "json":
        _json_last(message, run_id, level="ERROR", **fields)
        raise typer.Exit(code)
    fail(message, code)


def _json_last(message: str, run_id: str, *, level: str = "INFO", **fields: Any) -> None:
    import time

    from converge.observability.log_format import json_line

    line = json_line(
        message,
        at=time.time(),
        level=level,
        logger="converge.run",
        run_id=run_id,
        trace_id=run_id.split("/", 1)[0],
        **fields,
    )
    typer.echo(line, err=True)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=2, default=str)


def trace_command(run_id: str) -> str:
    """The command that writes run ``run_id``'s trace page."""
    return f"converge trace {run_id} --format html -o trace.html"


def _report(outcome: Any, as_json: bool, cfg: Any) -> None:
    status, data, run_id = outcome.status, outcome.data, outcome.run_id
    hint = trace_command(run_id)
    if cfg.log_format == "json" and not as_json:
        _report_json(outcome, cfg, hint)
        return
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
        say(f"run {run_id} completed; its trace: {hint}", err=True)
    elif status == "waiting":
        for node, question in dict(data.get("questions") or {}).items():
            say(f"{node} asks: {question}", newlines=True)
        say(f"run {run_id} is waiting; answer with:")
        say(f"  converge resume {run_id} --answer ANSWER")
    if status in ("completed", "waiting"):
        return
    if status == "failed":
        where = f" at node {data['node']}" if data.get("node") else ""
        if not as_json:
            say(f"its trace: {hint}; the node's errors: converge show {run_id}", err=True)
        fail(f"run {run_id} failed{where}: {data.get('error')}", 1)
    if status == "interrupted":
        fail(f"run {run_id} was interrupted; continue it with `converge resume {run_id}`", 1)
    fail(f"run {run_id} was cancelled; continue it with `converge resume {run_id}`", 1)


def _report_json(outcome: Any, cfg: Any, hint: str) -> None:
    """``_report`` with ``--log-format json``: the result on stdout, the last line JSON."""
    status, data, run_id = outcome.status, outcome.data, outcome.run_id
    fields: dict[str, Any] = {"event": f"run.{status}", "status": status, "trace_command": hint}
    if status == "completed":
        output(_text(data.get("output")) + "\n")
        _json_last(f"run {run_id} completed", run_id, usage=outcome.usage, **fields)
    elif status == "waiting":
        questions = dict(data.get("questions") or {})
        how = f"converge resume {run_id} --answer ANSWER"
        _json_last(
            f"run {run_id} is waiting; answer with: {how}",
            run_id,
            level="WARNING",
            questions=questions,
            resume_command=how,
            **fields,
        )
    elif status == "failed":
        where = f" at node {data['node']}" if data.get("node") else ""
        message = f"run {run_id} failed{where}: {data.get('error')}"
        _end(cfg, message, 1, run_id, error=data.get("error"), node_id=data.get("node"), **fields)
    else:
        how = f"converge resume {run_id}"
        _end(cfg, f"run {run_id} was {status}; continue it with `{how}`", 1, run_id, **fields)


def _when(at: float | None) -> str:
    import datetime as dt

    if at is None:
        return ""
    return dt.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


def _duration(ms: float | None) -> str:
    from converge.cli._progress import duration

    return "" if ms is None else duration(ms / 1000)


def _runs_table(found: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    from converge.cli._progress import cost_cell
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
            cost_cell(r["cost"]),
        )
    Console(emoji=False, highlight=False, width=160).print(table)


def _show_table(found: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from converge.cli._progress import cost_cell
    from converge.cli._runs import status_text
    from converge.observability.cost import format_cost

    console = Console(emoji=False, highlight=False, width=160)
    console.print(
        plain(
            f"run {found['run_id']}  graph {found['graph']}  status {status_text(found)}  "
            f"duration {_duration(found['duration_ms'])}  tokens {found['total_tokens']}  "
            f"cost {format_cost(found['total_cost'])}"
        )
    )
    inputs = json.dumps(found["inputs"], default=str)  # cut as the output is: --json has all
    console.print(plain("inputs: ").append_text(_cut(inputs, 400)))
    table = Table(box=None, pad_edge=False)
    for column in ("node", "status", "attempts", "inputs", "output / error", "tokens", "cost"):
        table.add_column(column, justify="right" if column in ("attempts", "tokens") else "left")
    for n in found["nodes"]:
        name = n["node"] if n["iteration"] <= 1 else f"{n['node']}#{n['iteration']}"
        shown = n["error"] or n["question"] or json.dumps(n["output"], default=str)
        cell = _cut(shown)
        first = n["errors"][0] if n["errors"] else None
        if first is not None and first != n["error"]:  # a retried try's error, kept
            cell.append_text(Text("\n"))
            cell.append_text(Text.assemble(("first error: ", "dim"), _cut(first)))
        table.add_row(
            plain(name),
            plain(n["status"]),
            str(n["attempts"]),
            _inputs_cell(n["inputs"]),
            cell,
            str(n["tokens"] or "-"),
            cost_cell(n["cost"]),
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


def _inputs_cell(inputs: dict[str, Any] | None) -> Any:
    """A pass's inputs for a table cell: ``text="hello", up.output={"n": 3}``, cut short."""
    if not inputs:
        return plain("")
    return _cut(", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in inputs.items()), 40)


def _cut(text: str, width: int = 60) -> Any:
    """``text`` on one line, cut to ``width`` characters, as a rich ``Text`` (``plain``)."""
    text = text.replace("\n", " ")
    return plain(text if len(text) <= width else text[: width - 1] + "…")
