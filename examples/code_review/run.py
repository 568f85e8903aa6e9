"""Review a Python file with the code review graph and print the review as Markdown.

    .venv/bin/python examples/code_review/run.py [FILE] [--store PATH] [--llm]

FILE defaults to ``sample.py`` beside this script. The run is logged in the embedded SQLite
store (``.converge/converge.db`` unless ``--store`` says otherwise), so ``converge`` can show
its trace afterwards. ``--llm`` adds a model-written summary when an API key is set (see
``examples/_llm.py``); without it every agent is rule-based and the run is offline.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GRAPH = HERE / "graph.yaml"
SAMPLE = HERE / "sample.py"
DEFAULT_STORE = Path(".converge/converge.db")

# The graph names its agents as ``examples.code_review.agents:...``; run as a script, the
# repository root is not on the path yet.
if str(HERE.parents[1]) not in sys.path:
    sys.path.insert(0, str(HERE.parents[1]))

from converge.orchestration import Engine, RunResult, load_graph  # noqa: E402
from converge.store import SQLiteStore  # noqa: E402
from examples import _llm  # noqa: E402
from examples.code_review import agents  # noqa: E402


async def review(
    source_code: str, *, store_path: Path = DEFAULT_STORE, provider: Any = None
) -> RunResult:
    """Run the review graph on ``source_code``; the result's output is the Markdown review.

    Args:
        source_code: the Python text to review.
        store_path: the SQLite store the run is logged in (created if missing).
        provider: an LLM provider that adds a summary to the report; None: rules only.
    """
    overrides: dict[str, Any] = {}
    if provider is not None:

        async def report_with_summary(inputs: dict[str, Any]) -> str:
            report = await agents.report_generator(inputs)
            summary = await _llm.ask(
                provider,
                "You are a senior Python reviewer. Summarize this review in three sentences.",
                report,
            )
            return report + "\n## Summary\n\n" + summary + "\n"

        overrides["report_generator"] = report_with_summary
    graph = load_graph(GRAPH, agents=overrides)
    store_path.parent.mkdir(parents=True, exist_ok=True)
    async with await SQLiteStore.open(store_path) as store, Engine(store) as engine:
        return await engine.execute(graph, {"source_code": source_code})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Review a Python file with converge.")
    parser.add_argument("file", nargs="?", type=Path, default=SAMPLE, help="the file to review")
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help="the SQLite store")
    parser.add_argument("--llm", action="store_true", help="use a model if an API key is set")
    args = parser.parse_args(argv)
    try:
        source = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        sys.stderr.write(f"cannot read {args.file}: {exc}\n")
        return 2
    provider, mode = _llm.provider_from_env(args.llm)
    sys.stderr.write(f"reviewing {args.file} with {mode}\n")
    result = asyncio.run(review(source, store_path=args.store, provider=provider))
    sys.stdout.write(result.output)
    sys.stderr.write(f"run {result.run_id} logged in {args.store}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
