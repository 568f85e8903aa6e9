"""The child side of the sandbox: one tool call in a fresh interpreter, then exit.

Run by path (``python -I .../_sandbox_child.py``), never imported by the child itself, so it uses
the standard library only and starts without importing converge. It reads one JSON request from
stdin::

    {"ref": "module:attr", "arguments": {...}, "path": [...sys.path of the parent...],
     "memory_bytes": 268435456 | null, "cpu_s": 3 | null}

limits its own address space (``RLIMIT_AS``) and CPU time before importing anything of the
tool's, calls the function (awaiting it if it is async), and writes one JSON answer to the
stdout it was given: ``{"ok": true, "result": ...}`` or ``{"ok": false, "kind": ..., "type": ...,
"message": ..., "traceback": ...}``. Whatever the tool prints goes to stderr (file descriptor 1
is pointed at 2 before the call), so it cannot corrupt the answer.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import sys
import traceback
from typing import Any


def _limit(memory_bytes: int | None, cpu_s: int | None) -> None:
    try:
        import resource
    except ImportError:  # not POSIX: no limits to set (the parent's wall time still applies)
        return
    if memory_bytes is not None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    if cpu_s is not None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))


def _resolve(ref: str) -> Any:
    module_name, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _failure(kind: str, exc: BaseException) -> dict[str, Any]:
    return {
        "ok": False,
        "kind": kind,
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


def _call(request: dict[str, Any]) -> dict[str, Any]:
    try:
        fn = _resolve(request["ref"])
    except MemoryError as exc:
        return _failure("memory", exc)
    except Exception as exc:
        return _failure("import", exc)
    try:
        result = fn(**request["arguments"])
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
    except MemoryError as exc:
        return _failure("memory", exc)
    except Exception as exc:
        return _failure("raised", exc)
    return {"ok": True, "result": result}


async def _await(awaitable: Any) -> Any:
    return await awaitable


def main() -> None:
    """Read the request, run the call, write the answer."""
    answer_fd = os.dup(1)
    os.dup2(2, 1)  # the tool's prints (Python's or C's) go to stderr
    sys.stdout = sys.stderr
    request = json.loads(sys.stdin.buffer.read())
    sys.path[:0] = [p for p in request.get("path", []) if p not in sys.path]
    _limit(request.get("memory_bytes"), request.get("cpu_s"))
    answer = _call(request)
    try:
        data = json.dumps(answer, allow_nan=False).encode()
    except MemoryError as exc:
        data = json.dumps(_failure("memory", exc)).encode()
    except (TypeError, ValueError) as exc:
        data = json.dumps(_failure("bad_result", exc)).encode()
    with os.fdopen(answer_fd, "wb") as out:
        out.write(data)


if __name__ == "__main__":
    main()
