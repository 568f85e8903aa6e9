"""The board example's submitter: puts four tasks on the board, prints the workers' results."""

import asyncio
import sys

from converge.coordination import TaskManager
from converge.core import Task
from converge.store import SQLiteStore

TEXTS = ("hello", "cat", "thank you", "good night")


async def main(db: str) -> None:
    async with await SQLiteStore.open(db) as store:
        board = TaskManager(store)
        need = ("translate>=1.0",)  # what a task asks for: a requirement (a name and a range)
        tasks = [
            Task(objective="translate", inputs={"text": t}, required_capabilities=need)
            for t in TEXTS
        ]
        for task in tasks:
            await board.submit(task)
        for task in tasks:
            done = await board.wait(task.id, timeout=30)
            text, result = done.inputs["text"], done.result
            sys.stdout.write(f"{text!r} -> {result['text']!r} by worker {result['worker']}\n")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "board.db"))
