"""Object references: ``module:attr`` strings naming Python objects.

``"module:attr"`` strings that name a Python object, as graph files,
agents files and node kinds give agents, tools, providers and functions.

One parser decides what a reference may look like, and one importer turns it into the object,
so every place that reads one refuses the same mistakes the same way:

- ``check_object_ref(ref)``: a reference is ``module:attr`` where ``module`` is a dotted module
  name (``pkg.sub``: each part a Python identifier; never relative, as ``.os`` would be) and
  ``attr`` a dotted attribute path (``Class.method``), at most ``MAX_OBJECT_REF_LENGTH`` (1,000)
  characters (``.os:system`` once made ``importlib`` raise ``TypeError``). Nothing is imported;
  it runs where a reference is read (the loaders, every kind, ``resolve_agent``, ``agents
  run``), before anything is imported.
- ``import_object_ref(ref, ...)``: the object, after the same check. Every failure is a
  ``ValidationError`` at the reference's file and line, never the import's own traceback: a
  module not found (the reference's module itself, not one it imports) says where modules are
  looked up (the current directory when it is on ``sys.path``, as the ``converge`` command puts
  it, ``PYTHONPATH`` and the installed packages); a module that raises while it is imported (a
  ``SyntaxError``, a ``KeyError`` from ``os.environ[...]``, a missing dependency,
  ``SystemExit``…) names the error and the file and line it was raised at — the
  ``SyntaxError``'s own, or the deepest frame of the user's code (not the standard library's, an
  installed package's or converge's; else an installed package's) — and keeps it as
  ``__cause__``: ``agent 'name' (mod:fn): importing mod failed: KeyError: 'API_KEY'
  (mod.py:3)``. The error is at the line of the reference's ``agents:`` entry (the loader keeps
  each entry's line; an entry replaced by ``load_graph(agents=…)`` has none). The CLI prints
  it on one line, exit 2.

Importing runs the module's top-level code, as ``import`` does: ``converge validate`` and
``converge run`` import the modules a file names, and only ``check_object_ref`` is free of it.
"""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig
import traceback
from typing import Any

from converge.errors import ValidationError

__all__ = ["MAX_OBJECT_REF_LENGTH", "check_object_ref", "import_object_ref"]

MAX_OBJECT_REF_LENGTH = 1000
"""The longest reference accepted, in characters: module paths are far shorter."""


def check_object_ref(
    ref: object,
    *,
    field: str | None = None,
    source: str | None = None,
    line: int | None = None,
) -> tuple[str, str]:
    """``ref``'s module and attribute path, if it is a well-formed ``module:attr``.

    Raises:
        ValidationError: it is not (with ``field``, ``source`` and ``line``).
    """
    module, attr = _parts(ref)
    if module is None or attr is None:
        shown = repr(ref) if len(repr(ref)) <= 80 else repr(ref)[:77] + "..."
        raise ValidationError(
            "a reference is 'module:attr' (a dotted module name, a colon, a dotted attribute "
            f"path; never relative), not {shown}",
            field=field,
            source=source,
            line=line,
        )
    return module, attr


def _parts(ref: object) -> tuple[str | None, str | None]:
    if not isinstance(ref, str) or len(ref) > MAX_OBJECT_REF_LENGTH:
        return None, None
    module, sep, attr = ref.partition(":")
    if not sep or not _dotted(module) or not _dotted(attr):
        return None, None
    return module, attr


def _dotted(path: str) -> bool:
    return all(part.isidentifier() for part in path.split("."))


def import_object_ref(
    ref: object,
    *,
    field: str | None = None,
    source: str | None = None,
    line: int | None = None,
    what: str | None = None,
) -> Any:
    """What ``ref`` (``"module:attr"``) names, imported.

    Args:
        ref: the reference.
        field: the key it was read from, for errors (``agents.writer``).
        source: the file it was read from, for errors.
        line: the line it was read from, for errors.
        what: names the reference in messages (``"agent 'writer'"``).

    Raises:
        ValidationError: a malformed reference, or one that cannot be imported; the import's
            own error is the ``__cause__``.
    """
    module_name, attr = check_object_ref(ref, field=field, source=source, line=line)
    label = repr(ref) if what is None else f"{what} ({ref})"

    def fail(message: str) -> ValidationError:
        return ValidationError(f"{label}: {message}", field=field, source=source, line=line)

    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (
            module_name == exc.name or module_name.startswith(exc.name + ".")
        ):
            raise fail(f"no module named {exc.name!r}; {_search_path()}") from exc
        raise fail(f"importing {module_name} failed: {_describe(exc)}") from exc
    except (Exception, SystemExit) as exc:  # the module's own code failed while it was imported
        raise fail(f"importing {module_name} failed: {_describe(exc)}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise fail(f"{module_name} has no attribute {attr!r}") from None
    return obj


def _search_path() -> str:
    """Where ``import`` looks for a module, in words, for a "not found" message."""
    cwd = os.getcwd()
    pythonpath = os.environ.get("PYTHONPATH")
    env = f"PYTHONPATH ({pythonpath})" if pythonpath else "PYTHONPATH (not set)"
    if any(os.path.abspath(entry or os.curdir) == cwd for entry in sys.path):
        return (
            f"modules are looked up in the current directory ({cwd}), {env} and the "
            "installed packages"
        )
    return (
        f"modules are looked up in {env} and the installed packages, not in the current "
        f"directory ({cwd}): add the module's directory to PYTHONPATH"
    )


def _describe(exc: BaseException) -> str:
    """``KeyError: 'API_KEY' (mymod.py:3)``: the error and where it was raised."""
    if isinstance(exc, SyntaxError):
        text = exc.msg
        where = _location(exc.filename, exc.lineno) if exc.filename else _raised_at(exc)
    else:
        text = str(exc)
        where = _raised_at(exc)
    out = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return f"{out} ({where})" if where else out


def _raised_at(exc: BaseException) -> str | None:
    """The file:line an import's error was raised at: the deepest frame of the user's own code
    (not Python's, not an installed package's, not converge's), else of an installed package."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith("<") and not _under(f.filename, (_OWN,))
    ]
    for outside in (_LIBRARY_DIRS, _STDLIB_DIRS):
        for frame in reversed(frames):
            if not _under(frame.filename, outside):
                return _location(frame.filename, frame.lineno)
    return None


def _location(filename: str, lineno: int | None) -> str:
    path = os.path.abspath(filename)
    try:
        shown = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        shown = path
    if shown.startswith(os.pardir):
        shown = path
    return f"{shown}:{lineno}" if lineno else shown


def _under(filename: str, dirs: tuple[str, ...]) -> bool:
    path = os.path.abspath(filename)
    return any(path.startswith(d + os.sep) for d in dirs)


_OWN = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the converge package
_STDLIB_DIRS = tuple({os.path.abspath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")})
_LIBRARY_DIRS = tuple(
    {
        os.path.abspath(sysconfig.get_paths()[k])
        for k in ("stdlib", "platstdlib", "purelib", "platlib")
    }
)
