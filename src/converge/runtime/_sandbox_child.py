"""The child side of the sandbox: one tool call, then exit.

One tool call in a fresh interpreter.

Run by path (``python -I .../_sandbox_child.py``), never imported by the child itself, so it uses
the standard library only and starts without importing converge. It reads one JSON request from
stdin::

    {"ref": "module:attr", "arguments": {...}, "path": [...sys.path of the parent...],
     "memory_bytes": 268435456 | null, "cpu_s": 3 | null, "isolate": true | false}

and writes one JSON answer to the stdout it was given (the *answer channel*):
``{"ok": true, "result": ...}`` or ``{"ok": false, "kind": ..., "type": ..., "message": ...,
"traceback": ...}``. Whatever the tool prints goes to stderr (file descriptor 1 is pointed at 2
before anything else runs), so it cannot corrupt the answer.

With ``"isolate": true`` (Linux) the call runs in three processes::

    this process (the parent's pid namespace)   unshare: new mount and PID namespaces
    └── init, pid 1 of the new namespace        mounts a fresh /proc, drops every capability
        └── the tool, pid 2                     limits its memory and CPU, runs the call

The init runs no tool code: it reaps orphans, and when the tool exits it reports the tool's
wait status and exits, and the kernel kills everything left in the namespace (descendants that
left the process group with ``setsid`` included). It dies with this process
(``PR_SET_PDEATHSIG``), which the parent kills at the wall time. This process mirrors the tool's
exit (its code, or the signal that killed it), so the parent classifies the outcome the same way
with and without isolation. Not root, or root without ``CAP_SYS_ADMIN``: a user namespace is
created too (the user's own uid and gid mapped to themselves). If any step fails, nothing of the
tool runs: the answer is ``{"ok": false, "kind": "no_isolation", "message": why}`` and the
parent falls back to ``"isolate": false``.

With ``"isolate": false`` this process drops its capabilities and runs the call itself.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import select
import signal
import sys
import traceback
from typing import Any, NoReturn

# Linux constants (<sched.h>, <sys/mount.h>, <sys/prctl.h>, <linux/capability.h>).
_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MS_REC, _MS_PRIVATE = 0x4000, 0x40000
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_CAPABILITY_VERSION_3 = 0x20080522

# Built before the tool runs: when memory is exhausted, this answer needs no allocation.
_MEMORY_ANSWER = json.dumps(
    {"ok": False, "kind": "memory", "type": "MemoryError", "message": "", "traceback": ""}
).encode()


def _limit(memory_bytes: int | None, cpu_s: int | None) -> None:
    try:
        import resource
    except ImportError:  # not POSIX: no limits to set (the parent's wall time still applies)
        return
    # A tool killed by SIGXCPU or SIGSEGV must not leave a core file in the working directory.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
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


def _failure(kind: str, exc: BaseException | str) -> dict[str, Any]:
    if isinstance(exc, str):
        return {"ok": False, "kind": kind, "type": "", "message": exc, "traceback": ""}
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


def _encode(answer: dict[str, Any]) -> bytes:
    try:
        return json.dumps(answer, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        return json.dumps(_failure("bad_result", exc)).encode()


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# -- isolation (Linux) ----------------------------------------------------------------------


def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _unshare(libc: Any) -> None:
    """New mount and PID namespaces, in a new user namespace unless we are privileged."""
    flags = _CLONE_NEWNS | _CLONE_NEWPID
    if os.geteuid() == 0 and libc.unshare(flags) == 0:
        return
    uid, gid = os.geteuid(), os.getegid()
    _check(libc.unshare(flags | _CLONE_NEWUSER), "unshare")
    for name, text in (
        ("setgroups", "deny"),
        ("uid_map", f"{uid} {uid} 1"),
        ("gid_map", f"{gid} {gid} 1"),
    ):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


def _drop_privileges(libc: Any) -> None:
    """No capabilities now, and none regained by ``execve`` (of a set-uid file, or as root)."""
    import ctypes

    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), 0, 0, 0), "no_new_privs")
    for cap in range(64):
        # Without CAP_SETPCAP (not root) the bounding set cannot shrink; no_new_privs already
        # keeps execve from granting anything. EINVAL: past the last capability.
        if libc.prctl(_PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0:
            break

    class Header(ctypes.Structure):
        _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))

    class Data(ctypes.Structure):
        _fields_ = (
            ("effective", ctypes.c_uint32),
            ("permitted", ctypes.c_uint32),
            ("inheritable", ctypes.c_uint32),
        )

    empty = (Data * 2)()
    _check(libc.capset(ctypes.byref(Header(_CAPABILITY_VERSION_3, 0)), empty), "capset")


def _mount_proc(libc: Any) -> None:
    """A /proc that shows this PID namespace only (the parent's /proc/<pid> are not in it)."""
    # Private first, so nothing mounted here propagates back to the parent's mount namespace.
    _check(libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "mount --make-rprivate /")
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    _check(libc.mount(b"proc", b"/proc", b"proc", flags, None), "mount /proc")


def _no_isolation(answer_fd: int, why: str) -> NoReturn:
    _write(answer_fd, _encode(_failure("no_isolation", why)))
    os._exit(0)


def _mirror(status: int) -> NoReturn:
    """Exit as the tool did: with its code, or killed by the same signal."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        sig = -code
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # dying as the tool did: no core file
        try:
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
        except (OSError, ValueError):  # SIGKILL's disposition cannot be set; the kill still works
            os.kill(os.getpid(), sig)
        code = 128 + sig  # only reached for a signal that does not end a process by default
    os._exit(code)


def _isolate(answer_fd: int) -> None:
    """Move the call into its own namespaces; returns in the tool's process only."""
    libc = _libc()
    try:
        _unshare(libc)
    except OSError as exc:
        _no_isolation(answer_fd, f"cannot create namespaces: {exc}")
    alive_r, alive_w = os.pipe()  # the init sees EOF here if this process is already gone
    status_r, status_w = os.pipe()  # the init reports the tool's wait status here
    init = os.fork()
    if init:
        os.close(answer_fd)
        os.close(alive_r)
        os.close(status_w)
        with os.fdopen(status_r, "rb") as f:
            reported = f.read()
        _, status = os.waitpid(init, 0)
        _mirror(int(reported) if reported else status)
    os.close(alive_w)
    os.close(status_r)
    try:
        _check(libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0), "pdeathsig")
        if select.select([alive_r], [], [], 0)[0]:
            os._exit(1)  # our parent died before PR_SET_PDEATHSIG took effect
        _mount_proc(libc)
        _drop_privileges(libc)
    except OSError as exc:
        _no_isolation(answer_fd, str(exc))
    tool = os.fork()
    if tool == 0:
        os.close(alive_r)
        os.close(status_w)
        return
    os.close(answer_fd)
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # the tool cannot trace the init to forge a status
    while True:
        pid, status = os.waitpid(-1, 0)  # reap orphans as they come, until the tool itself
        if pid == tool:
            break
    os.write(status_w, str(status).encode())
    os._exit(0)  # the kernel now kills whatever the tool left running in this namespace


def main() -> None:
    """Read the request, isolate, run the call, write the answer."""
    answer_fd = os.dup(1)
    os.dup2(2, 1)  # the tool's prints (Python's or C's) go to stderr
    sys.stdout = sys.stderr
    request = json.loads(sys.stdin.buffer.read())
    sys.path[:0] = [p for p in request.get("path", []) if p not in sys.path]
    if request.get("isolate"):
        _isolate(answer_fd)
    elif sys.platform == "linux":
        try:
            _drop_privileges(_libc())
        except OSError as exc:
            _write(answer_fd, _encode(_failure("sandbox", exc)))
            return
    _limit(request.get("memory_bytes"), request.get("cpu_s"))
    try:
        data = _encode(_call(request))
    except MemoryError:
        data = _MEMORY_ANSWER
    _write(answer_fd, data)
    os.close(answer_fd)


if __name__ == "__main__":
    main()
