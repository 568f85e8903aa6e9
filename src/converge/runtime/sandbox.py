"""Running unsafe tools in a separate process, with limits and without the parent's secrets.

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
  and must return one. Anything else is a ``ToolError`` (``error_type="bad_result"``).
- **A minimal environment.** Every environment variable is dropped except ``env_allow``
  (``PATH``, ``LANG``, ``LC_ALL``, ``LC_CTYPE``, ``TZ``, ``TMPDIR``, ``SYSTEMROOT`` by default),
  so API keys, tokens and passwords the parent holds never reach the tool. A tool that needs
  one is given it explicitly (``SandboxedTool(..., env={"API_KEY": key})``). ``-I`` also makes
  the child ignore ``PYTHON*`` variables and the user's site directory. The working directory
  is the parent's.
- **Wall time.** After ``wall_time_s`` the child's whole process group is killed
  (``ToolTimeout``, ``killed=True``); a CPU-time limit of the same length backs it up.
- **Memory.** ``memory_bytes`` limits the child's address space (``RLIMIT_AS``), set before the
  tool's module is imported; an allocation beyond it is a ``ToolMemoryExceeded``. POSIX only:
  where ``resource`` is missing, only the wall time applies.

What the sandbox is not: a security boundary against hostile code. The child runs as the same
user, with the same file system and network; use a container or a VM for code you do not trust
at all. It contains accidents — runaway loops, memory blow-ups, crashes, leaked secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec

from converge.core._codec_errors import ENCODE_ERRORS
from converge.core.tools import FunctionTool
from converge.errors import ValidationError
from converge.runtime._tool_errors import ToolError, ToolMemoryExceeded, ToolTimeout

__all__ = ["DEFAULT_ENV_ALLOW", "SandboxLimits", "SandboxedTool", "run_in_sandbox"]

_CHILD = str(Path(__file__).with_name("_sandbox_child.py"))
_STDERR_TAIL = 2000  # characters of the child's stderr kept in an error's detail

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
    """The child's address space (``RLIMIT_AS``); None: unlimited."""
    env_allow: tuple[str, ...] = DEFAULT_ENV_ALLOW
    """Environment variables passed through from the parent; every other one is dropped."""


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


async def run_in_sandbox(
    ref: str,
    arguments: Mapping[str, Any],
    *,
    tool: str,
    limits: SandboxLimits = SandboxLimits(),  # noqa: B008 - frozen, shared safely
    env: Mapping[str, str] | None = None,
) -> Any:
    """Call the function ``ref`` (``"module:attr"``) with ``arguments`` in a fresh child process.

    Raises:
        ToolTimeout: no answer within ``limits.wall_time_s``; the child was killed.
        ToolMemoryExceeded: the child went past ``limits.memory_bytes``.
        ToolError: the function raised (its type, message and traceback text are carried),
            could not be imported, returned something that is not JSON, or the child crashed.
        ValidationError: ``arguments`` cannot be encoded as JSON.
    """
    path = _child_path()
    cpu_s = int(limits.wall_time_s) + 1
    request = {
        "ref": ref,
        "arguments": dict(arguments),
        "path": path,
        "memory_bytes": limits.memory_bytes,
        "cpu_s": cpu_s,
    }
    try:
        data = msgspec.json.encode(request)
    except ENCODE_ERRORS as exc:
        msg = f"arguments of tool {tool!r} cannot be sent as JSON: {exc}"
        raise ValidationError(msg, field="arguments") from None
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        _CHILD,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_child_env(limits, env or {}),
        start_new_session=True,
    )
    timed_out = False
    try:
        try:
            async with asyncio.timeout(limits.wall_time_s):
                out, err = await proc.communicate(data)
        except TimeoutError:
            timed_out = True
    finally:
        if proc.returncode is None:
            # Timed out or cancelled: kill the child and anything it started, then reap it
            # and close its pipes even if we are being cancelled.
            _kill(proc)
            await asyncio.shield(proc.communicate())
    if timed_out:
        raise ToolTimeout(tool, limits.wall_time_s, killed=True)
    return _answer(tool, ref, limits, proc.returncode, out, err)


def _child_path() -> list[str]:
    """This process's ``sys.path``, made absolute (the child runs with ``-I``: no script dir)."""
    return [os.path.abspath(p) if p else os.getcwd() for p in sys.path]


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows
            proc.kill()


def _answer(
    tool: str, ref: str, limits: SandboxLimits, code: int | None, out: bytes, err: bytes
) -> Any:
    stderr = err.decode(errors="replace")[-_STDERR_TAIL:].strip()
    try:
        answer = msgspec.json.decode(out, type=dict[str, Any])
    except (msgspec.DecodeError, msgspec.ValidationError):
        if code == -getattr(signal, "SIGXCPU", 0):
            raise ToolTimeout(tool, limits.wall_time_s, killed=True) from None
        detail = f"the sandbox process exited with code {code} and no answer"
        if "MemoryError" in stderr and limits.memory_bytes is not None:
            raise ToolMemoryExceeded(tool, limits.memory_bytes) from None
        raise ToolError(
            tool, f"{detail}: {stderr}" if stderr else detail, error_type="crashed"
        ) from None
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
    raise ToolError(tool, message, error_type=error_type, remote_traceback=remote)


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
