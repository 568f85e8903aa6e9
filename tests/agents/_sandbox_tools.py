"""Functions the sandbox tests run in a child process (importable by ``module:attr``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def shout(text: str) -> str:
    """An async tool: the text in capitals, printed too (prints must not corrupt the answer)."""
    print("shouting", text)  # noqa: T201 - a tool that prints
    return text.upper()


def sleepy(seconds: float) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return "woke"


def hog(mib: int) -> int:
    """Allocate ``mib`` MiB at once."""
    block = bytearray(mib * 2**20)
    return len(block)


def env(name: str) -> str | None:
    """The value of the environment variable ``name`` in the process that runs the tool."""
    return os.environ.get(name)


def env_names() -> list[str]:
    """Every environment variable name the tool sees."""
    return sorted(os.environ)


def broken(key: str) -> Any:
    """Raise a KeyError."""
    return {}[key]


def not_json() -> Any:
    """Return something JSON cannot carry."""
    return {1, 2}


def crash() -> None:
    """Exit the process without answering."""
    os._exit(3)


def flood(mib: int, exit_code: int | None = None) -> str:
    """Write ``mib`` MiB to stdout and as much to stderr (Python's and C's), then answer, or
    exit with ``exit_code`` without answering."""
    line = "x" * 1023 + "\n"
    for _ in range(mib * 1024):
        print(line, end="")  # noqa: T201 - a tool that prints
    sys.stdout.flush()
    chunk = b"y" * 2**20
    for _ in range(mib):
        os.write(2, chunk)
    os.write(2, b"the end")
    if exit_code is not None:
        os._exit(exit_code)
    return "done"


def big(mib: int) -> str:
    """Answer with a string of ``mib`` MiB."""
    return "z" * (mib * 2**20)


def fake_memory_error() -> None:
    """Print what a MemoryError would print, then exit with code 3 (no MemoryError raised)."""
    print("Traceback (most recent call last):\nMemoryError", file=sys.stderr)  # noqa: T201
    print('{"ok": false, "kind": "memory"}')  # noqa: T201 - not the answer channel
    sys.stdout.flush()
    os._exit(3)


def kill_self(signal_name: str) -> None:
    """Die of the signal ``signal_name`` (e.g. ``"SIGKILL"``), answering nothing."""
    os.kill(os.getpid(), getattr(signal, signal_name))
    time.sleep(60)  # a signal that does not end the process: let the wall time end it


def start_helper(fifo: str, new_session: bool, then_sleep: float) -> str:
    """Start ``sh -c "sleep 300"`` holding the write end of ``fifo``, then write one byte to it
    and sleep ``then_sleep`` seconds. The helper starts its own session if ``new_session``
    (leaving the tool's process group). Answers the tool's PID namespace."""
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # the test holds the read end open
    subprocess.Popen(
        ["sh", "-c", "sleep 300"],
        pass_fds=(fd,),
        start_new_session=new_session,
    )
    os.write(fd, b"s")
    os.close(fd)
    time.sleep(then_sleep)
    return os.readlink("/proc/self/ns/pid")


def pid_namespace() -> str:
    """The PID namespace the tool runs in."""
    return os.readlink("/proc/self/ns/pid")


def snoop(secret: list[str], pids: list[int]) -> dict[str, str]:
    """Look for ``"".join(secret)`` in the environment and command line of every process in
    ``/proc``, of the tool's parent, of PID 1 and of each of ``pids``, and in the memory of the
    parent and of ``pids``; say, by path, ``"found"``, ``"read"`` (readable, without the
    secret), or why it could not be read. (The secret comes in parts so that no request
    carrying it contains it.)"""
    wanted = "".join(secret).encode()
    close = {str(os.getppid()), *map(str, pids)}
    seen = {p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()}
    seen |= {"1", *close}
    report: dict[str, str] = {}
    for pid in sorted(seen):
        for name in ("environ", "cmdline"):
            path = f"/proc/{pid}/{name}"
            try:
                with open(path, "rb") as f:
                    report[path] = "found" if wanted in f.read() else "read"
            except OSError as exc:
                report[path] = type(exc).__name__
        if pid in close:
            report[f"/proc/{pid}/mem"] = _scan_memory(pid, wanted)
    return report


def _scan_memory(pid: str, wanted: bytes) -> str:
    """Search the writable private memory of ``pid`` (its heap and stack: where a process
    keeps its environment) for ``wanted``."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            maps = f.read().splitlines()
        mem = open(f"/proc/{pid}/mem", "rb", buffering=0)
    except OSError as exc:
        return type(exc).__name__
    found = "read"
    with mem:
        for line in maps:
            fields = line.split()
            if not fields[1].startswith("rw") or (len(fields) > 5 and fields[5].startswith("/")):
                continue  # writable anonymous, heap and stack mappings only
            start, end = (int(x, 16) for x in fields[0].split("-"))
            for at in range(start, end, 2**20):
                try:
                    mem.seek(at)
                    data = mem.read(min(2**20 + len(wanted), end - at))
                except OSError as exc:
                    if found == "read":
                        found = type(exc).__name__
                    break
                if wanted in data:
                    return "found"
    return found
