"""The rule-based agents ``graph.yaml`` names: an AST analyzer, three reviewers, an aggregator
and a Markdown reporter.

Every agent is an async function over its node's inputs. The analyzer's output carries the
source, so each reviewer works on its own from the same analysis. A finding is a dict::

    {"reviewer": "security", "rule": "eval", "severity": "high", "line": 12, "message": "..."}
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

SEVERITIES = ("critical", "high", "medium", "low", "info")
"""Most severe first; the report's sections follow this order."""

_LOOPS = (ast.For, ast.AsyncFor, ast.While)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


def _finding(reviewer: str, rule: str, severity: str, line: int, message: str) -> dict[str, Any]:
    return {
        "reviewer": reviewer,
        "rule": rule,
        "severity": severity,
        "line": line,
        "message": message,
    }


# -- analyzer --------------------------------------------------------------------------------------


def complexity(node: ast.AST) -> int:
    """McCabe complexity of a function: 1 + its branches, not counting nested functions."""
    score = 1
    stack = list(ast.iter_child_nodes(node))
    while stack:
        child = stack.pop()
        if isinstance(child, (*_SCOPES,)):
            continue
        if isinstance(child, (ast.If, ast.IfExp, ast.ExceptHandler, ast.Assert, *_LOOPS)):
            score += 1
        elif isinstance(child, ast.BoolOp):
            score += len(child.values) - 1
        elif isinstance(child, ast.comprehension):
            score += 1 + len(child.ifs)
        elif isinstance(child, ast.match_case):
            score += 1
        stack.extend(ast.iter_child_nodes(child))
    return score


async def code_analyzer(inputs: dict[str, Any]) -> dict[str, Any]:
    """Metrics of ``source_code``: lines, functions (with complexity), classes, imports."""
    source = str(inputs["source_code"])
    lines = source.splitlines()
    analysis: dict[str, Any] = {
        "source": source,
        "lines": len(lines),
        "code_lines": sum(1 for ln in lines if ln.strip() and not ln.strip().startswith("#")),
        "functions": [],
        "classes": [],
        "imports": [],
        "syntax_error": None,
    }
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        analysis["syntax_error"] = {"line": exc.lineno or 0, "message": exc.msg}
        return analysis
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            analysis["functions"].append(
                {
                    "name": node.name,
                    "line": node.lineno,
                    "length": (node.end_lineno or node.lineno) - node.lineno + 1,
                    "complexity": complexity(node),
                }
            )
        elif isinstance(node, ast.ClassDef):
            analysis["classes"].append({"name": node.name, "line": node.lineno})
        elif isinstance(node, ast.Import):
            analysis["imports"].extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            analysis["imports"].append(node.module)
    analysis["functions"].sort(key=lambda f: f["line"])
    analysis["classes"].sort(key=lambda c: c["line"])
    return analysis


def _tree(analysis: dict[str, Any]) -> ast.Module | None:
    if analysis["syntax_error"] is not None:
        return None
    return ast.parse(analysis["source"])


def _dotted(node: ast.AST) -> str:
    """``subprocess.run`` for the call target ``subprocess.run``; '' when not a plain name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


# -- security --------------------------------------------------------------------------------------

_SECRET_NAME = re.compile(
    r"""(?ix)\b([a-z_]*(?:password|passwd|pwd|secret|token|api_?key|access_?key|private_?key)
    [a-z_]*)\s*[:=]\s*(['"])([^'"]{6,})\2"""
)
_SECRET_VALUE = re.compile(
    r"(AKIA[0-9A-Z]{16}|sk-[A-Za-z0-9_-]{20,}|ghp_[A-Za-z0-9]{36}|xox[bp]-[A-Za-z0-9-]{10,})"
)
_UNSAFE_LOADS = {"pickle.loads", "pickle.load", "marshal.loads", "marshal.load", "shelve.open"}


def _mask(secret: str) -> str:
    return secret[:2] + "…" if len(secret) > 4 else "…"


async def security_expert(inputs: dict[str, Any]) -> dict[str, Any]:
    """``eval``/``exec``, ``shell=True``, unpickling, and secrets written into the source."""
    analysis = inputs["analyzer.output"]
    findings: list[dict[str, Any]] = []
    tree = _tree(analysis)
    for node in ast.walk(tree) if tree is not None else ():
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name in ("eval", "exec"):
            findings.append(
                _finding(
                    "security",
                    name,
                    "high",
                    node.lineno,
                    f"`{name}()` runs arbitrary code; parse the data instead "
                    "(e.g. `ast.literal_eval`, `json.loads`)",
                )
            )
        elif name.startswith("subprocess.") and any(
            k.arg == "shell" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in node.keywords
        ):
            findings.append(
                _finding(
                    "security",
                    "shell-true",
                    "high",
                    node.lineno,
                    f"`{name}(..., shell=True)` lets input inject shell commands; "
                    "pass an argument list",
                )
            )
        elif name == "os.system":
            findings.append(
                _finding(
                    "security",
                    "os-system",
                    "medium",
                    node.lineno,
                    "`os.system()` runs a shell; use `subprocess.run([...])`",
                )
            )
        elif name in _UNSAFE_LOADS:
            findings.append(
                _finding(
                    "security",
                    "unsafe-deserialization",
                    "high",
                    node.lineno,
                    f"`{name}()` on untrusted bytes can execute code; use a data format "
                    "such as JSON",
                )
            )
        elif name == "yaml.load" and not any(k.arg == "Loader" for k in node.keywords):
            findings.append(
                _finding(
                    "security",
                    "yaml-load",
                    "medium",
                    node.lineno,
                    "`yaml.load()` without a Loader; use `yaml.safe_load()`",
                )
            )
    for number, line in enumerate(analysis["source"].splitlines(), start=1):
        named = _SECRET_NAME.search(line)
        if named:
            findings.append(
                _finding(
                    "security",
                    "hardcoded-secret",
                    "critical",
                    number,
                    f"hard-coded secret in `{named.group(1)}` "
                    f'("{_mask(named.group(3))}"); read it from the environment '
                    "or a secret store",
                )
            )
        elif (value := _SECRET_VALUE.search(line)) is not None:
            findings.append(
                _finding(
                    "security",
                    "hardcoded-secret",
                    "critical",
                    number,
                    f'a credential-shaped string ("{_mask(value.group(1))}") '
                    "is written into the source",
                )
            )
    return {"findings": findings}


# -- performance -----------------------------------------------------------------------------------

_HOISTABLE = {"len", "sorted", "list", "set", "dict", "tuple", "max", "min", "sum", "re.compile"}


def _loop_depth(node: ast.AST) -> tuple[int, ast.AST]:
    """The deepest nesting of loops under (and including) ``node``, and the innermost loop."""
    best: tuple[int, ast.AST] = (0, node)
    for child in ast.iter_child_nodes(node):
        if isinstance(child, _SCOPES):
            continue
        depth, inner = _loop_depth(child)
        if depth > best[0]:
            best = (depth, inner)
    if isinstance(node, _LOOPS):
        return best[0] + 1, best[1] if best[0] else node
    return best


def _outer_loops(node: ast.AST) -> Iterator[ast.For | ast.AsyncFor | ast.While]:
    """Loops under ``node`` not inside another loop, in the same function (or module)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, _LOOPS):
            yield child
        elif not isinstance(child, _SCOPES):
            yield from _outer_loops(child)


def _loops(node: ast.AST) -> Iterator[ast.For | ast.AsyncFor | ast.While]:
    """Every loop under ``node``, outer ones first, in the same function (or module)."""
    for loop in _outer_loops(node):
        yield loop
        yield from _loops(loop)


def _assigned(loop: ast.For | ast.AsyncFor | ast.While) -> set[str]:
    """Names the loop (re)binds: its target and every assignment in its body."""
    names: set[str] = set()
    for node in ast.walk(loop):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
    return names


def _string_names(scope: ast.AST) -> set[str]:
    """Names bound to a string literal somewhere in ``scope``."""
    names: set[str] = set()
    for node in ast.walk(scope):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, (ast.Constant, ast.JoinedStr))
            and (isinstance(node.value, ast.JoinedStr) or isinstance(node.value.value, str))
        ):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _is_stringy(value: ast.AST, strings: set[str]) -> bool:
    if isinstance(value, ast.JoinedStr):
        return True
    if isinstance(value, ast.Constant):
        return isinstance(value.value, str)
    if isinstance(value, ast.BinOp) and isinstance(value.op, ast.Add):
        return _is_stringy(value.left, strings) or _is_stringy(value.right, strings)
    return isinstance(value, ast.Name) and value.id in strings


def _loop_findings(
    loop: ast.For | ast.AsyncFor | ast.While, strings: set[str]
) -> Iterator[dict[str, Any]]:
    bound = _assigned(loop)
    body = [n for stmt in loop.body for n in ast.walk(stmt)]
    calls = [n for n in body if isinstance(n, ast.Call)]
    seen: Counter[str] = Counter(ast.dump(c) for c in calls)
    reported: set[str] = set()
    for call in calls:
        key = ast.dump(call)
        name = _dotted(call.func)
        used = {n.id for n in ast.walk(call) if isinstance(n, ast.Name)} - {name.split(".")[0]}
        if key in reported:
            continue
        if seen[key] > 1 and not used & bound:
            reported.add(key)
            yield _finding(
                "performance",
                "repeated-call",
                "medium",
                call.lineno,
                f"`{ast.unparse(call)}` is called {seen[key]} times in one loop "
                "body with the same arguments; compute it once",
            )
        elif name in _HOISTABLE and not used & bound and used:
            reported.add(key)
            yield _finding(
                "performance",
                "loop-invariant",
                "low",
                call.lineno,
                f"`{ast.unparse(call)}` does not change inside the loop "
                f"(line {loop.lineno}); hoist it out",
            )
    for node in body:
        if (
            isinstance(node, ast.AugAssign)
            and isinstance(node.op, ast.Add)
            and isinstance(node.target, ast.Name)
            and (node.target.id in strings or _is_stringy(node.value, strings))
        ) or (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.BinOp)
            and isinstance(node.value.op, ast.Add)
            and isinstance(node.value.left, ast.Name)
            and node.value.left.id == node.targets[0].id
            and (node.value.left.id in strings or _is_stringy(node.value.right, strings))
        ):
            yield _finding(
                "performance",
                "string-concat-in-loop",
                "medium",
                node.lineno,
                "string built with `+=` in a loop (quadratic); collect the parts "
                "in a list and `''.join()` them",
            )


async def performance_expert(inputs: dict[str, Any]) -> dict[str, Any]:
    """Nested loops, repeated or loop-invariant calls, string concatenation in loops."""
    analysis = inputs["analyzer.output"]
    tree = _tree(analysis)
    if tree is None:
        return {"findings": []}
    findings: list[dict[str, Any]] = []
    for scope in [tree, *(n for n in ast.walk(tree) if isinstance(n, _SCOPES))]:
        for loop in _outer_loops(scope):
            depth, inner = _loop_depth(loop)
            if depth >= 2:
                findings.append(
                    _finding(
                        "performance",
                        "nested-loops",
                        "high" if depth >= 3 else "medium",
                        getattr(inner, "lineno", loop.lineno),
                        f"loops nested {depth} deep (outer loop at line {loop.lineno}): "
                        f"O(n^{depth}); index with a dict or set instead",
                    )
                )
        strings = _string_names(scope)
        for loop in _loops(scope):
            findings.extend(_loop_findings(loop, strings))
    # A call in an inner loop is also in its outer loop: keep the outer (first) report.
    unique: dict[tuple[str, int], dict[str, Any]] = {}
    for f in findings:
        unique.setdefault((f["rule"], f["line"]), f)
    return {"findings": sorted(unique.values(), key=lambda f: f["line"])}


# -- style -----------------------------------------------------------------------------------------

_SNAKE = re.compile(r"^_{0,2}[a-z][a-z0-9_]*$|^__[a-z][a-z0-9_]*__$")
_CAPWORDS = re.compile(r"^_?[A-Z][A-Za-z0-9]*$")
MAX_LINE = 100
"""Lines longer than this are reported (low); longer than ``HARD_MAX_LINE``, medium."""
HARD_MAX_LINE = 120
MAX_COMPLEXITY = 10
"""Functions more complex than this are reported."""


async def style_checker(inputs: dict[str, Any]) -> dict[str, Any]:
    """PEP 8 names, long lines, missing docstrings, complex functions.

    Complexity is maintainability, so this reviewer also passes on the analyzer's metrics for
    the report (``metrics``).
    """
    analysis = inputs["analyzer.output"]
    findings: list[dict[str, Any]] = []
    for number, line in enumerate(analysis["source"].splitlines(), start=1):
        if len(line) > MAX_LINE:
            severity = "medium" if len(line) > HARD_MAX_LINE else "low"
            findings.append(
                _finding(
                    "style",
                    "line-too-long",
                    severity,
                    number,
                    f"line is {len(line)} characters (limit {MAX_LINE})",
                )
            )
    tree = _tree(analysis)
    if tree is None:
        error = analysis["syntax_error"]
        findings.append(
            _finding(
                "style",
                "syntax-error",
                "critical",
                error["line"],
                f"the file does not parse: {error['message']}",
            )
        )
        return {"findings": findings, "metrics": _metrics(analysis)}
    if ast.get_docstring(tree) is None:
        findings.append(
            _finding("style", "missing-docstring", "info", 1, "module has no docstring")
        )
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            kind, ok = "function", _SNAKE.match(node.name)
            args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            findings.extend(
                _finding(
                    "style",
                    "naming",
                    "low",
                    arg.lineno,
                    f"argument `{arg.arg}` of `{node.name}` is not snake_case",
                )
                for arg in args
                if not _SNAKE.match(arg.arg) and arg.arg not in ("self", "cls")
            )
        elif isinstance(node, ast.ClassDef):
            kind, ok = "class", _CAPWORDS.match(node.name)
        else:
            continue
        if not ok:
            want = "snake_case" if kind == "function" else "CapWords"
            findings.append(
                _finding(
                    "style",
                    "naming",
                    "low",
                    node.lineno,
                    f"{kind} `{node.name}` is not {want} (PEP 8)",
                )
            )
        if not node.name.startswith("_") and ast.get_docstring(node) is None:
            findings.append(
                _finding(
                    "style",
                    "missing-docstring",
                    "low",
                    node.lineno,
                    f"public {kind} `{node.name}` has no docstring",
                )
            )
    findings.extend(
        _finding(
            "style",
            "complexity",
            "medium",
            f["line"],
            f"`{f['name']}` has complexity {f['complexity']} (limit {MAX_COMPLEXITY}); split it",
        )
        for f in analysis["functions"]
        if f["complexity"] > MAX_COMPLEXITY
    )
    return {"findings": findings, "metrics": _metrics(analysis)}


def _metrics(analysis: dict[str, Any]) -> dict[str, Any]:
    return {k: analysis[k] for k in ("lines", "code_lines", "functions", "classes", "imports")}


# -- aggregator and reporter -----------------------------------------------------------------------


async def review_aggregator(inputs: dict[str, Any]) -> dict[str, Any]:
    """All findings, most severe first, with counts and a verdict."""
    findings = [f for key in sorted(inputs) for f in inputs[key]["findings"]]
    findings.sort(key=lambda f: (SEVERITIES.index(f["severity"]), f["line"], f["reviewer"]))
    counts = {s: sum(1 for f in findings if f["severity"] == s) for s in SEVERITIES}
    by_reviewer = {key.split("_")[0]: len(inputs[key]["findings"]) for key in sorted(inputs)}
    metrics = next((v["metrics"] for v in inputs.values() if "metrics" in v), None)
    if counts["critical"] or counts["high"]:
        verdict = "changes requested"
    elif counts["medium"]:
        verdict = "approve with comments"
    else:
        verdict = "approve"
    return {
        "findings": findings,
        "counts": counts,
        "by_reviewer": by_reviewer,
        "verdict": verdict,
        "metrics": metrics,
    }


def _count(items: list[Any], one: str, many: str = "") -> str:
    return f"{len(items)} {one if len(items) == 1 else many or one + 's'}"


async def report_generator(inputs: dict[str, Any]) -> str:
    """The review as Markdown: a summary table, then the findings by severity."""
    review = inputs["aggregator.output"]
    out = [
        "# Code review",
        "",
        f"**Verdict: {review['verdict']}** — {len(review['findings'])} findings.",
        "",
        "| Severity | Findings |",
        "| --- | ---: |",
        *(f"| {s} | {n} |" for s, n in review["counts"].items()),
        "",
        "| Reviewer | Findings |",
        "| --- | ---: |",
        *(f"| {r} | {n} |" for r, n in review["by_reviewer"].items()),
    ]
    metrics = review["metrics"]
    if metrics is not None:
        out += [
            "",
            f"{metrics['lines']} lines ({metrics['code_lines']} of code), "
            f"{_count(metrics['functions'], 'function')}, "
            f"{_count(metrics['classes'], 'class', 'classes')}.",
            "",
            "| Function | Line | Lines | Complexity |",
            "| --- | ---: | ---: | ---: |",
            *(
                f"| `{f['name']}` | {f['line']} | {f['length']} | {f['complexity']} |"
                for f in metrics["functions"]
            ),
        ]
    for severity in SEVERITIES:
        group = [f for f in review["findings"] if f["severity"] == severity]
        if not group:
            continue
        out += ["", f"## {severity.capitalize()} ({len(group)})", ""]
        out += [
            f"- **line {f['line']}** · {f['reviewer']} · `{f['rule']}`: {f['message']}"
            for f in group
        ]
    return "\n".join(out) + "\n"
