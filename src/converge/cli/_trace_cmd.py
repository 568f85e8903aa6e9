"""``converge trace``, ``replay`` and ``metrics``: a run read back.

Each reads the event log of a SQLite store.

The store resolves as for every command (``--store``, ``CONVERGE_STORE``, ``converge.toml``,
the default: see ``_config``) and is opened read-only. An unknown store or run, or a file that
is not a converge store, is bad input (exit 2); a replay that finds differences exits 1.
Renderers are imported inside each command. Names and values from the log are printed with
their control characters shown as escapes (``_config.say``, ``plain``), JSON with them escaped.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from converge.cli._config import output as write_out
from converge.cli._config import plain, run_async, say

__all__ = ["register"]

StoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="The SQLite store holding the run (default: $CONVERGE_STORE, converge.toml, "
        ".converge/converge.db).",
        show_default=False,
    ),
]
RunArg = Annotated[
    str, typer.Argument(help="The run's id, a prefix of it, or 'last'.", metavar="RUN")
]


class TraceFormat(StrEnum):
    """What ``converge trace`` writes."""

    tree = "tree"
    json = "json"
    mermaid = "mermaid"
    dot = "dot"
    html = "html"


def _events(store: Path | None, run_id: str, *, names: bool = False) -> tuple[list[Any], str]:
    """The events of the trace of the run ``run_id`` names (an id, a prefix, ``last``), and
    its id (with ``names``, then the ``agent.registered`` events of the dids its coordination
    shows, which name them); exits 2 when the store does not hold the run."""
    from converge.cli._config import settings
    from converge.cli._run import open_store
    from converge.cli._runs import resolve_run_id
    from converge.cli.app import _fail, _guard

    cfg = settings(store=store)

    async def read() -> tuple[list[Any], str]:
        async with await open_store(cfg, create=False, read_only=True) as db:
            found = await resolve_run_id(db, run_id)
            events = list(await db.read(trace_id=found.split("/", 1)[0]))
            if names:
                from converge.observability import RunModel

                for did in sorted(RunModel(found).add(events).unnamed()):
                    events += await db.read(trace_id=did, kinds=("agent.registered",))
            return events, found

    events, found = _guard(lambda: run_async(read()))
    if not any(e.kind == "run.started" and e.subject == found for e in events):
        _fail(f"no run {found} in {cfg.store}", 2)
    return events, found


def trace(
    run_id: RunArg,
    store: StoreOption = None,
    fmt: Annotated[
        TraceFormat, typer.Option("--format", "-f", help="How to write the trace.")
    ] = TraceFormat.tree,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")
    ] = None,
) -> None:
    """Show a run's coordination graph as a tree, JSON, Mermaid, DOT or an HTML page.

    Nodes (a subgraph's nested), agents, and the intents, offers, awards, receipts, trust
    updates, ballots, votes and board tasks of the run's trace under their nodes, with timings.

    Example: [bold]converge trace 01J… --format html -o run.html[/]
    """
    from converge.observability import RunModel, render_html, run_graph

    if fmt is TraceFormat.html:
        events, run_id = _events(store, run_id, names=True)
        _write(render_html(RunModel(run_id).add(events).view()), output)
        return
    events, run_id = _events(store, run_id)
    graph = run_graph(events, run_id)
    if fmt is TraceFormat.tree:
        from rich.console import Console

        if output is None:
            Console(emoji=False, highlight=False).print(_tree(graph))
            return
        with output.open("w", encoding="utf-8") as fh:
            Console(file=fh, emoji=False, highlight=False, width=120).print(_tree(graph))
        return
    _write(_text(graph, fmt), output)


def _write(text: str, output: Path | None) -> None:
    if output is None:
        write_out(text)
    else:
        output.write_text(text, encoding="utf-8")
        say(f"wrote {output}", err=True)


def _tree(graph: dict[str, Any]) -> Any:
    from converge.observability import render_tree

    return render_tree(graph)


def _text(graph: dict[str, Any], fmt: TraceFormat) -> str:
    from converge.observability import render_dot, render_mermaid

    if fmt is TraceFormat.json:
        from converge.observability.terminal import printable_json

        return printable_json(json.dumps(graph, indent=2, ensure_ascii=False, default=str)) + "\n"
    if fmt is TraceFormat.mermaid:
        return render_mermaid(graph)
    return render_dot(graph)


def replay(
    run_id: RunArg,
    store: StoreOption = None,
    until: Annotated[
        int | None, typer.Option("--until", help="Show the state at this seq of the log.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Re-derive a run's state from its events; exit 1 if the engine's records differ.

    Example: [bold]converge replay 01J… --until 42[/]
    """
    import msgspec

    from converge.observability import replay as replay_run

    events, run_id = _events(store, run_id)
    report = replay_run(events, run_id, until=until)
    if as_json:
        from converge.observability.terminal import printable_json

        typer.echo(printable_json(msgspec.json.encode(report).decode()))
    else:
        at = "end of log" if until is None else f"seq {until}"
        say(f"run {run_id} at {at} (last event seq {report.last_seq}): {report.status}")
        for key, status in report.nodes.items():
            node = key.split("#", 1)[0]
            shown = json.dumps(report.outputs.get(node), default=str)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            say(f"  {key:<24} {status:<10} {shown if node in report.outputs else ''}")
        if until is None:
            if report.differences:
                typer.echo(f"{len(report.differences)} difference(s):")
                for diff in report.differences:
                    say(f"  - {diff}")
            else:
                typer.echo("the log agrees with the engine's records")
    if report.differences:
        raise typer.Exit(1)


def metrics(
    run_id: RunArg,
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    prometheus: Annotated[
        bool,
        typer.Option("--prometheus", help="Print the Prometheus text exposition (extra: metrics)."),
    ] = False,
) -> None:
    """Print a run's metrics, as a table, JSON or the Prometheus text exposition.

    Agents, tokens, tool calls and cost per agent, latency per node, success and failure,
    retries and checkpoints.

    Example: [bold]converge metrics 01J… --prometheus[/]
    """
    from converge.cli.app import _guard
    from converge.orchestration.trace import metrics_of, trace_of

    events, run_id = _events(store, run_id)
    found = metrics_of(events, run_id)
    if prometheus:
        from converge.observability import prometheus_text

        trace = trace_of(events, run_id)
        write_out(_guard(lambda: prometheus_text(found, trace)))
    elif as_json:
        from converge.observability.terminal import printable_json

        typer.echo(printable_json(json.dumps(found, indent=2, ensure_ascii=False)))
    else:
        _print_metrics(found)


def _print_metrics(found: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from converge.cli._progress import cost_cell, duration
    from converge.observability.cost import format_cost

    console = Console(emoji=False, highlight=False)
    rate = found["success_rate"]
    console.print(
        plain(
            f"run {found['trace_id']} ({found['graph_id']}): {found['node_executions']} node "
            f"pass(es), {found['agents_spawned']} agent(s), {found['succeeded']} succeeded, "
            f"{found['failed']} failed"
            + (f" ({rate:.0%})" if rate is not None else "")
            + f", {found['retries']} retries, {found['checkpoints']} checkpoint(s), "
            f"cost {format_cost(found['total_cost'])}"
        )
    )
    agents = Table("agent", "tokens", "tool calls", "cost", header_style="bold")
    for agent, tokens in found["tokens_per_agent"].items():
        agents.add_row(
            plain(agent),
            str(tokens),
            str(found["tool_calls_per_agent"].get(agent, 0)),
            cost_cell(found["cost_per_agent"].get(agent, 0.0)),
        )
    console.print(agents)
    nodes = Table("node", "latency", header_style="bold")
    for node, ms in found["latency_ms_per_node"].items():
        nodes.add_row(plain(node), duration(ms / 1000))
    console.print(nodes)


def register(app: typer.Typer) -> None:
    """Add ``trace``, ``replay`` and ``metrics`` to the ``converge`` command."""
    app.command("trace")(trace)
    app.command("replay")(replay)
    app.command("metrics")(metrics)
