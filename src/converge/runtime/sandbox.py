"""Running unsafe tools in a separate process, with limits.

The child gets none of the parent's secrets.

```python
def fetch_and_parse(url: str) -> dict: ...             # in an importable module

tool = SandboxedTool(fetch_and_parse, limits=SandboxLimits(wall_time_s=5, memory_bytes=2**28))
registry.register(tool)
# or: registry.register(FunctionTool(fetch_and_parse, unsafe=True)); SafeTools sandboxes it
```

Each call starts a fresh interpreter (``python -I`` running ``_sandbox_child.py`` by path, in a
new session) and ends it; nothing is shared between calls. What the child gets and may do:

- **The function by reference.** It is named ``"module:attr"`` and imported in the child, so it
  must live at the top level of an importable module: not a lambda, a closure, a method of an
  instance or something defined in ``__main__``. The child's ``sys.path`` is the parent's.
- **JSON in, JSON out.** Arguments are checked against the function's signature here, then sent
  as JSON; the function is called with JSON values (dicts, lists, str, int, float, bool, None)
  and must return one. Anything else is a ``ToolError`` (``error_type="bad_result"``). The
  answer is read back up to ``result_bytes`` (16 MiB by default); past that the child is killed
  and the call is a ``ToolError`` (``"result_too_large"``).
- **Output is noise.** What the tool prints (stdout or stderr, Python's or C's) is read as it
  comes and dropped, except the last 2,000 characters, shown in the error if the child ends
  without answering. It never reaches the answer, and never decides how a call ended.
- **A minimal environment.** Every environment variable is dropped except ``env_allow``
  (``PATH``, ``LANG``, ``LC_ALL``, ``LC_CTYPE``, ``TZ``, ``TMPDIR``, ``SYSTEMROOT`` by default),
  so API keys, tokens and passwords the parent holds never reach the tool. A tool that needs
  one is given it explicitly (``SandboxedTool(..., env={"API_KEY": key})``). ``-I`` also makes
  the child ignore ``PYTHON*`` variables and the user's site directory. The working directory
  is the parent's.
- **Wall time.** After ``wall_time_s`` the child is killed (``ToolTimeout``, ``killed=True``); a
  CPU-time limit of the same length backs it up (the child killed by ``SIGXCPU``: the same).
- **Memory.** ``memory_bytes`` limits the tool process's address space (``RLIMIT_AS``), set
  before the tool's module is imported; a ``MemoryError`` raised in the child is a
  ``ToolMemoryExceeded``. A child that exits or is killed by a signal without answering is a
  ``ToolError`` (``"crashed"``) naming the code or the signal, whatever it printed.
- **No processes left behind.** However a call ends (answered, failed, timed out, cancelled),
  the child's process group is killed before the call returns, and, with namespaces (below),
  every process the tool started, in whatever session or group.

**Isolation (Linux).** The tool runs in its own PID and mount namespaces (in a user namespace
too when converge is not root, or is root without ``CAP_SYS_ADMIN``, as in many containers),
under an init process of its own, with a ``/proc`` that shows only those processes, and with
no capabilities (``no_new_privs`` set: set-uid programs gain nothing). It keeps converge's
uid. So, whoever runs converge, root included:

- protected: converge's memory and environment (``/proc/<pid>/environ``, ``mem``, ``cmdline``
  of converge and of every process outside the call are not in the tool's ``/proc``), and
  every other process (not visible, cannot be signalled or traced); root's powers
  (capabilities) are gone, so a tool run by root cannot read or write another user's files
  that their modes forbid, load kernel modules, mount, or reach kernel memory;
- not protected: the file system (everything converge's uid may read or write, and root owns
  most of it), the network (including local and abstract Unix sockets), ``/tmp`` and
  ``/dev/shm``, System V IPC, a procfs mounted anywhere other than ``/proc``, and what
  converge hands the tool (its arguments, ``env``).

Where namespaces cannot be made (a seccomp profile or a kernel setting forbids them, no
``/proc`` can be mounted), the first call finds out before any tool code runs; from then on,
in this process, tools run unisolated, with no capabilities and ``no_new_privs``, and converge's
own process is made non-dumpable (``PR_SET_DUMPABLE`` 0: its ``/proc/<pid>/environ`` and
``mem`` cannot be read or traced by a process without ``CAP_SYS_PTRACE``, its core dumps are
off); a warning is logged once. Then a tool still cannot read converge's environment or
memory, but it sees every other process (converge's command line included), may read the
environment of, and signal, other processes of the same uid, and a process it starts in a new
session (``setsid``) is not in the killed process group and may outlive the call. On other
POSIX systems (macOS) none of this isolation applies: only the environment scrubbing, the limits
and the process-group kill do.

Not POSIX at all: a ``ToolError`` (``error_type="sandbox"``). When root, the tool is not dropped
to ``nobody``: the interpreter and the tool's modules may be unreadable to another uid (a
Python under ``/root``, as with pyenv), and the namespaces give more.

Defaults and costs: a call starts in ~40 ms (the child imports no converge); ``wall_time_s``
10 s, ``memory_bytes`` 512 MiB, ``RLIMIT_CPU`` the wall time + 1 s, no core files. The child
points its file descriptor 1 at stderr before anything runs, so the tool's prints never reach
the answer channel; the parent holds at most the last 2,000 characters of them plus one read.
How a call ended is decided from the child's exit and its answer, never from its output; the
child builds its memory answer before the tool runs, so reporting a ``MemoryError`` needs no
allocation. The parent kills the child's process group however the call ends, then reaps it
and closes the pipes even if cancelled (a descendant that escaped the kill cannot hold the call:
the pipes are waited for at most 5 s after the child exits).

What the sandbox is not: a security boundary against hostile code. Same uid, same files and
network: use a container or a VM for code you do not trust at all. It contains accidents —
runaway loops, memory blow-ups, output floods, crashes, leaked secrets, stray processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec

from converge.core.codec_errors import ENCODE_ERRORS
from converge.core.tools import FunctionTool
from converge.errors import ToolError, ToolMemoryExceeded, ToolTimeout, ValidationError

__all__ = ["DEFAULT_ENV_ALLOW", "SandboxLimits", "SandboxedTool", "run_in_sandbox"]

_CHILD = str(Path(__file__).with_name("_sandbox_child.py"))
_NOISE_TAIL = 2000  # characters of the tool's output kept for an error's detail
_NOISE_KEEP = 4 * _NOISE_TAIL  # bytes read back for them: up to 4 per character in UTF-8
_DRAIN_S = 5.0  # once the child has exited, how long its pipes may stay open (see _end)
_PR_SET_DUMPABLE = 4  # <sys/prctl.h>
_log = logging.getLogger(__name__)

DEFAULT_ENV_ALLOW: tuple[str, ...] = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "SYSTEMROOT",
)
"""The environment variables a sandboxed tool sees by default (when the parent has them)."""


class SandboxLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What one sandboxed call may use."""

    wall_time_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """Seconds from start to answer; then the child is killed."""
    memory_bytes: Annotated[int, msgspec.Meta(gt=0)] | None = 512 * 2**20
    """The tool process's address space (``RLIMIT_AS``); None: unlimited."""
    env_allow: tuple[str, ...] = DEFAULT_ENV_ALLOW
    """Environment variables passed through from the parent; every other one is dropped."""
    result_bytes: Annotated[int, msgspec.Meta(gt=0)] = 16 * 2**20
    """The largest answer (the result as JSON, with its envelope) read back; past it the child
    is killed and the call is a ``ToolError`` (``"result_too_large"``). The tool's output
    (prints) is not bounded by it: it is dropped as it comes, but for its last 2,000
    characters."""


def _child_env(limits: SandboxLimits, extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: os.environ[k] for k in limits.env_allow if k in os.environ}
    env.update(extra)
    return env


def reference(fn: Callable[..., Any], tool: str) -> str:
    """The ``"module:attr"`` the child imports ``fn`` by, checked to lead back to ``fn``.

    Raises:
        ValidationError: ``fn`` cannot be imported by name in another process.
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    why = None
    if not module or not qualname:
        why = "it has no module or name"
    elif module == "__main__":
        why = "it is defined in __main__, which the child cannot import"
    elif "<" in qualname:
        why = f"{qualname!r} is a lambda, a closure or local to a function"
    else:
        ref = f"{module}:{qualname}"
        try:
            found = _resolve(ref)
        except (ImportError, AttributeError):
            found = None
        if found is fn or getattr(found, "fn", None) is fn:
            return ref
        why = f"{ref!r} does not lead back to it"
    raise ValidationError(
        f"tool {tool!r} cannot run in a sandbox: {why}; define it at the top level of an "
        "importable module",
        field="fn",
    )


def _resolve(ref: str) -> Any:
    module_name, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


_unisolated: str | None = None if sys.platform == "linux" else f"{sys.platform} is not Linux"
"""Why sandboxed calls run without namespaces in this process; None: they run in their own."""


def _fall_back(why: str) -> None:
    """Run sandboxed calls without namespaces from now on, keeping this process's memory
    and environment unreadable to them: mark it non-dumpable."""
    global _unisolated
    if _unisolated is not None:
        return
    _unisolated = why
    if sys.platform == "linux":
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:  # pragma: no cover - cannot fail
            why += f"; and this process could not be made non-dumpable (errno {ctypes.get_errno()})"
    _log.warning(
        "sandboxed tools run without their own PID and mount namespaces (%s): they can see "
        "other processes, and a process a tool starts in a new session may outlive the call",
        why,
    )


async def run_in_sandbox(
    ref: str,
    arguments: Mapping[str, Any],
    *,
    tool: str,
    limits: SandboxLimits = SandboxLimits(),  # noqa: B008 - frozen, shared safely
    env: Mapping[str, str] | None = None,
) -> Any:
    """Call the function ``ref`` (``"module:attr"``) with ``arguments`` in a fresh child process.

    However the call ends (answered, failed, timed out, cancelled), the child and everything it
    started are killed before this returns (see the module doc for what escapes that where PID
    namespaces are unavailable).

    Raises:
        ToolTimeout: no answer within ``limits.wall_time_s`` (or past its CPU time); the child
            was killed.
        ToolMemoryExceeded: a ``MemoryError`` was raised in the child under
            ``limits.memory_bytes``.
        ToolError: the function raised (its type, message and traceback text are carried),
            could not be imported, returned something that is not JSON (``bad_result``) or
            larger than ``limits.result_bytes`` (``result_too_large``), or the child exited or
            was killed without answering (``crashed``); or this system has no process sandbox
            (``sandbox``: not POSIX).
        ValidationError: ``arguments`` cannot be encoded as JSON.
    """
    if os.name != "posix":  # pragma: no cover - Windows
        raise ToolError(tool, "the sandbox needs a POSIX system", error_type="sandbox")
    request = {
        "ref": ref,
        "arguments": dict(arguments),
        "path": _child_path(),
        "memory_bytes": limits.memory_bytes,
        "cpu_s": int(limits.wall_time_s) + 1,
        "isolate": _unisolated is None,
    }
    try:
        data = msgspec.json.encode(request)
    except ENCODE_ERRORS as exc:
        msg = f"arguments of tool {tool!r} cannot be sent as JSON: {exc}"
        raise ValidationError(msg, field="arguments") from None
    child_env = _child_env(limits, env or {})
    done = await _run_child(data, limits, child_env)
    answer = _decode(done.answer)
    if request["isolate"] and answer is not None and answer.get("kind") == "no_isolation":
        # Nothing of the tool ran. From now on, in this process, tools run without namespaces.
        _fall_back(str(answer.get("message", "")))
        data = msgspec.json.encode({**request, "isolate": False})
        done = await _run_child(data, limits, child_env)
        answer = _decode(done.answer)
    return _outcome(tool, ref, limits, done, answer)


class _Done(msgspec.Struct, frozen=True):
    """What one child process left behind."""

    code: int | None
    """Its exit code, negative for the signal that killed it."""
    timed_out: bool
    """Killed at the wall time."""
    answer: bytes
    """The answer channel, whole (empty if it went past ``result_bytes``)."""
    answer_too_large: bool
    """The answer went past ``result_bytes``; the child was killed."""
    noise: str
    """The last ``_NOISE_TAIL`` characters of the tool's output (stdout and stderr)."""
    noise_bytes: int
    """How many bytes of output the tool wrote in all."""


class _Pipe(asyncio.Protocol):
    """One of the child's output pipes, read as it comes and never held beyond ``limit`` bytes.

    ``tail``: keep the last ``limit`` bytes (the tool's output, noise). Otherwise keep it all up
    to ``limit`` (the answer) and call ``on_overflow`` once past it, discarding the rest.
    """

    def __init__(
        self, limit: int, *, tail: bool, on_overflow: Callable[[], None] | None = None
    ) -> None:
        self.data = bytearray()
        self.total = 0
        self.overflowed = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._limit = limit
        self._tail = tail
        self._on_overflow = on_overflow

    def data_received(self, data: bytes) -> None:
        self.total += len(data)
        if self._tail:
            self.data += data
            del self.data[: -self._limit]
        elif self.overflowed:
            pass
        elif self.total > self._limit:
            self.overflowed = True
            self.data.clear()
            if self._on_overflow is not None:
                self._on_overflow()
        else:
            self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def _run_child(data: bytes, limits: SandboxLimits, env: Mapping[str, str]) -> _Done:
    """Start the child, send ``data``, read its pipes as they come, and end it whole."""
    loop = asyncio.get_running_loop()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    files = [os.fdopen(out_r, "rb", buffering=0), os.fdopen(err_r, "rb", buffering=0)]
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            _CHILD,
            stdin=asyncio.subprocess.PIPE,
            stdout=out_w,
            stderr=err_w,
            env=dict(env),
            start_new_session=True,
        )
    except BaseException:
        for f in files:
            f.close()
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    answer = _Pipe(limits.result_bytes, tail=False, on_overflow=lambda: _kill(proc))
    noise = _Pipe(_NOISE_KEEP, tail=True)
    transports: list[asyncio.BaseTransport] = []
    timed_out = False
    try:
        transport, _ = await loop.connect_read_pipe(lambda: answer, files[0])
        transports.append(transport)
        transport, _ = await loop.connect_read_pipe(lambda: noise, files[1])
        transports.append(transport)
        try:
            async with asyncio.timeout(limits.wall_time_s):
                await _send(proc, data)
                await proc.wait()
        except TimeoutError:
            timed_out = True
    finally:
        # Always, however the call ended (answered, timed out, cancelled): kill the child's
        # process group, reap the child and close the pipes, even while being cancelled.
        _kill(proc)
        await asyncio.shield(_end(proc, files, transports, (answer, noise)))
    tail = bytes(noise.data).decode(errors="replace")[-_NOISE_TAIL:]
    return _Done(
        code=proc.returncode,
        timed_out=timed_out,
        answer=bytes(answer.data),
        answer_too_large=answer.overflowed,
        noise=tail,
        noise_bytes=noise.total,
    )


async def _send(proc: asyncio.subprocess.Process, data: bytes) -> None:
    stdin = proc.stdin
    assert stdin is not None
    # A child that dies before reading its request is reported by its exit, not by this pipe.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(data)
        await stdin.drain()
    stdin.close()


async def _end(
    proc: asyncio.subprocess.Process,
    files: list[Any],
    transports: list[asyncio.BaseTransport],
    pipes: tuple[_Pipe, _Pipe],
) -> None:
    if proc.stdin is not None:
        proc.stdin.close()  # cancelled while sending: the request is moot
    await proc.wait()
    if transports:
        # The pipes close when the last process holding them ends: at once, unless a
        # descendant escaped the kill (possible without PID namespaces); then stop reading.
        await asyncio.wait([p.closed for p in pipes], timeout=_DRAIN_S)
    for transport in transports:
        transport.close()
    for f in files[len(transports) :]:
        f.close()


def _decode(answer: bytes) -> dict[str, Any] | None:
    try:
        return msgspec.json.decode(answer, type=dict[str, Any])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _child_path() -> list[str]:
    """This process's ``sys.path``, made absolute (the child runs with ``-I``: no script dir)."""
    return [os.path.abspath(p) if p else os.getcwd() for p in sys.path]


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _outcome(
    tool: str, ref: str, limits: SandboxLimits, done: _Done, answer: dict[str, Any] | None
) -> Any:
    """The call's result, or the error it ended in, from the child's exit and answer only.

    Never from what the tool printed: the tool's output is noise, shown in a crash's detail.
    """
    if done.timed_out or done.code == -getattr(signal, "SIGXCPU", 0):
        raise ToolTimeout(tool, limits.wall_time_s, killed=True)
    if done.answer_too_large:
        raise ToolError(
            tool,
            f"its answer went past the {_size(limits.result_bytes)} limit (result_bytes); "
            "the sandbox process was killed",
            error_type="result_too_large",
        )
    if answer is None:
        code = done.code
        if code is not None and code < 0:
            how = f"was killed by signal {_signal_name(-code)}"
        else:
            how = f"exited with code {code}"
        detail = f"the sandbox process {how} and gave no answer"
        if done.noise:
            dropped = done.noise_bytes - len(done.noise.encode())
            more = f" (the last {len(done.noise)} characters of {done.noise_bytes} bytes)"
            detail += f"; its output{more if dropped > 0 else ''}: {done.noise.strip()}"
        raise ToolError(tool, detail, error_type="crashed")
    if answer.get("ok"):
        return answer.get("result")
    kind = str(answer.get("kind", "raised"))
    error_type = str(answer.get("type", ""))
    message = str(answer.get("message", ""))
    remote = answer.get("traceback")
    if kind == "memory" and limits.memory_bytes is not None:
        raise ToolMemoryExceeded(tool, limits.memory_bytes)
    if kind == "import":
        message = f"cannot import {ref!r} in the sandbox: {message}"
    elif kind == "bad_result":
        message = f"its result cannot be sent back as JSON: {message}"
        error_type = "bad_result"
    elif kind == "sandbox":
        message = f"the sandbox could not be set up: {message}"
        error_type = "sandbox"
    raise ToolError(tool, message, error_type=error_type, remote_traceback=remote)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _size(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n} bytes"


class SandboxedTool:
    """A function as a ``Tool`` that runs each call in a sandboxed child process.

    Args:
        fn: the function, or its ``"module:attr"`` reference; it must be importable by that
            reference in a fresh interpreter (top level of a module on ``sys.path``).
        name: the tool's name (default: the function's).
        description: what it does (default: the first paragraph of its docstring).
        limits: wall time, memory and environment of each call.
        env: variables given to the child on top of ``limits.env_allow`` (a key the tool needs).

    Raises:
        ValidationError: ``fn`` is not importable by reference, or its signature cannot be
            turned into a schema.
    """

    unsafe = True
    """A sandboxed tool is an unsafe one, already contained."""

    def __init__(
        self,
        fn: Callable[..., Any] | str,
        *,
        name: str | None = None,
        description: str | None = None,
        limits: SandboxLimits | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(fn, str):
            try:
                target = _resolve(fn)
            except (ImportError, AttributeError, ValueError) as exc:
                msg = f"cannot import the sandboxed tool {fn!r}: {exc}"
                raise ValidationError(msg, field="fn") from None
            ref = fn
        else:
            target, ref = fn, ""
        target = getattr(target, "fn", target)  # a FunctionTool: its function
        self._inner = FunctionTool(target, name=name, description=description)
        self.ref = ref or reference(target, self._inner.name)
        """The ``"module:attr"`` the child imports."""
        self.limits = limits or SandboxLimits()
        self.env = dict(env or {})

    @property
    def name(self) -> str:
        """The tool's name."""
        return self._inner.name

    @property
    def description(self) -> str:
        """What it does."""
        return self._inner.description

    @property
    def parameters(self) -> dict[str, Any]:
        """JSON Schema of its arguments, from the function's signature."""
        return self._inner.parameters

    def check(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments converted to the annotated types, or ``ValidationError``."""
        return self._inner.check(arguments)

    async def invoke(self, arguments: Mapping[str, Any]) -> Any:
        """Check ``arguments``, then run the call in a child process (see the module doc)."""
        kwargs = msgspec.to_builtins(self.check(arguments))
        return await run_in_sandbox(
            self.ref, kwargs, tool=self.name, limits=self.limits, env=self.env
        )

    def __repr__(self) -> str:
        return f"SandboxedTool({self.name!r}, ref={self.ref!r})"
