"""The board example's worker: ``converge agents run`` calls it with each task it takes."""

import os

from converge.core import Task

WORDS = {"hello": "bonjour", "cat": "chat", "thank you": "merci", "good night": "bonne nuit"}


def translate(task: Task) -> dict[str, object]:
    """Gets the task it is about to claim; returns the task's result (a raise fails it)."""
    text = task.inputs["text"]
    return {"text": WORDS.get(text, f"[{text}]"), "worker": os.getpid()}
