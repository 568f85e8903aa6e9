"""Run the marketplace and print its awards, receipts and the providers' trust over time.

    .venv/bin/python examples/marketplace/run.py [--rounds N] [--seed S] [--store PATH]

Offline and deterministic for a seed (the providers' prices and failures come from seeded
RNGs). The rounds are logged in the embedded SQLite store, ``.converge/converge.db`` by default.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parents[1]) not in sys.path:  # run as a script: make ``examples`` importable
    sys.path.insert(0, str(HERE.parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from converge.store import SQLiteStore  # noqa: E402
from examples.marketplace.market import PROVIDERS, MarketReport, run_market  # noqa: E402

DEFAULT_STORE = Path(".converge/converge.db")


def awards_table(report: MarketReport) -> Table:
    """One row per round: strategy, offers, winner, price, and the receipt."""
    table = Table(title="Awards and receipts")
    for column in ("#", "strategy", "invited", "offers", "winner", "price", "work", "receipt"):
        table.add_column(column, justify="right" if column in ("#", "price") else "left")
    for r in report.rounds:
        receipt = r.receipt
        if receipt is None:
            work, seal = r.stage, r.reason or "-"
        else:
            work = receipt["status"]
            check = "verified" if receipt["verified"] else "NOT verified"
            seal = f"{check}, paid {receipt['cost']:.2f}"
        style = "red" if work != "completed" else None
        table.add_row(
            str(r.number),
            r.strategy,
            str(r.invited),
            str(r.offers),
            r.winner or "-",
            "-" if r.price is None else f"{r.price:.2f}",
            f"[{style}]{work}[/]" if style else work,
            seal,
        )
    return table


def trust_table(report: MarketReport, *, max_columns: int = 10) -> Table:
    """Every provider's trust before round 1 and after rounds (at most ``max_columns``)."""
    total = len(report.rounds)
    step = max(1, -(-total // max_columns))
    shown = sorted({*range(step, total + 1, step), total})
    table = Table(title="Trust after each round (green: up, red: down)")
    table.add_column("provider")
    table.add_column("reliability", justify="right")
    table.add_column("start", justify="right")
    for n in shown:
        table.add_column(f"r{n}", justify="right")
    for profile in PROVIDERS:
        scores = report.trust[profile.name]
        cells = [f"{scores[0]:.2f}"]
        for n in shown:
            before, after = scores[n - 1], scores[n]
            colour = "green" if after > before else "red" if after < before else None
            cells.append(f"[{colour}]{after:.2f}[/]" if colour else f"{after:.2f}")
        table.add_row(profile.name, f"{profile.reliability:.2f}", *cells)
    return table


async def market(rounds: int, seed: int, store_path: Path) -> MarketReport:
    """Run the market on the SQLite store at ``store_path``."""
    store_path.parent.mkdir(parents=True, exist_ok=True)
    async with await SQLiteStore.open(store_path) as store:
        return await run_market(store, rounds, seed=seed)


def main(argv: list[str] | None = None, console: Console | None = None) -> int:
    parser = argparse.ArgumentParser(description="A contract-net marketplace with converge.")
    parser.add_argument("--rounds", type=int, default=10, help="rounds of auctions (>= 1)")
    parser.add_argument("--seed", type=int, default=7, help="the providers' RNG seed")
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help="the SQLite store")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    console = console or Console(width=max(Console().width, 100))
    report = asyncio.run(market(args.rounds, args.seed, args.store))
    console.print(awards_table(report))
    console.print(trust_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
