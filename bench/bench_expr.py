"""Edge conditions (``when:``): converge's evaluator against three CEL implementations.

The contenders, each given the same condition in its own syntax (``and`` / ``&&``,
``exists(x)`` / ``has(x)``, ``len(x)`` / ``size(x)``):

- ``converge``: ``converge.orchestration._expr`` (``parse_expression(text).matches``);
- ``cel_rust``: ``common-expression-language`` (Rust ``cel`` crate, PyO3), module ``cel``;
- ``cel_cpp``: ``cel-expr-python`` (Google's cel-cpp), module ``cel_expr_python``;
- ``cel_python``: ``cel-python`` (pure Python on lark), module ``celpy``.

A CEL contender is handed only the roots the condition reads (``{"review": ...}``), which is
what an integration would do: the bindings convert every value they are given on each call.
One case gives ``cel_rust`` every node's output instead, to show what that conversion costs.

Cases, one JSON line each, every contender in the same invocation, with its ratio to converge:

- ``eval/...``: microseconds per evaluation (timed in alternating rounds, best round);
- ``compile/...``: microseconds to parse and compile the condition;
- ``import``: milliseconds to import each module in a fresh interpreter;
- ``syntax_error/...`` and ``eval_error/...``: what each says about a bad condition, and
  whether it gives a position (converge and cel-python: attributes; the two bindings: text
  in the message);
- ``semantics/...``: conditions whose answer differs (integers past 64 bits, ``/``,
  truthiness, a msgspec Struct as an output);
- ``hostile/...``: each contender in a child process (5 s, 4 GiB address space) on the
  inputs the fuzz tests of ``tests/orchestration/test_expr.py`` guard against — deep nesting,
  long chains, huge literals, comprehensions nested or over data, a regex that backtracks,
  an object's Python attributes. ``outcome`` is ``refused`` (the library's error at compile
  time), ``failed`` (its error at evaluation), ``value`` (it computed one), ``timeout`` or
  ``crashed``; ``error`` names the exception type when one escaped.

A contender whose package is not installed reports ``null``. ``.venv`` has none of them;
to run all four::

    python3 -m venv /tmp/cel && /tmp/cel/bin/pip install msgspec pyyaml \\
        common-expression-language cel-expr-python cel-python
    PYTHONPATH=src /tmp/cel/bin/python bench/bench_expr.py

Run: ``.venv/bin/python bench/bench_expr.py`` (converge's figures only)
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from _common import emit, interleaved
from converge.errors import ExpressionSyntaxError
from converge.orchestration._expr import parse_expression

BENCH = "expr"
CONTENDERS = ("converge", "cel_rust", "cel_cpp", "cel_python")
MODULES = {
    "converge": "converge.orchestration._expr",
    "cel_rust": "cel",
    "cel_cpp": "cel_expr_python.cel",
    "cel_python": "celpy",
}
PROBE_SECONDS = 5.0
PROBE_MEMORY = 4 << 30

Run = Callable[[Mapping[str, Any]], Any]


def _module(name: str) -> Any:
    try:
        return importlib.import_module(MODULES[name])
    except ImportError:
        return None


# -- the contenders: compile a condition, get a function of the values -------------------------


def compile_with(name: str, text: str, roots: frozenset[str], *, whole: bool = False) -> Run:
    """``text`` compiled by contender ``name``: a function from values to the result."""
    if name == "converge":
        return parse_expression(text).matches
    if name == "cel_rust":
        import cel

        program = cel.compile(text)
        execute = program.execute
        if whole:
            return execute
        names = tuple(roots)
        return lambda values: execute({r: values[r] for r in names})
    if name == "cel_cpp":
        from cel_expr_python import cel as cel_cpp

        env = cel_cpp.NewEnv(variables=dict.fromkeys(roots, cel_cpp.Type.DYN))
        expr = env.compile(text)
        names = tuple(roots)
        error = cel_cpp.Type.ERROR

        def evaluate(values: Mapping[str, Any]) -> Any:
            result = expr.eval(data={r: values[r] for r in names})
            if result.type() == error:  # cel-cpp returns an error as a value
                raise RuntimeError(str(result.value()))
            return result.value()

        return evaluate
    if name == "cel_python":
        import celpy
        from celpy.adapter import json_to_cel

        env = celpy.Environment()
        program = env.program(env.compile(text))
        names = tuple(roots)
        return lambda values: program.evaluate({r: json_to_cel(values[r]) for r in names})
    raise ValueError(name)


def available() -> dict[str, bool]:
    return {name: _module(name) is not None for name in CONTENDERS}


# -- typical conditions ------------------------------------------------------------------------


def _output(i: int) -> dict[str, Any]:
    """A node's output of ordinary size: 20 keys, a label, a score and a 100-item list."""
    return {
        "output": {
            "score": 0.5 + i / 100,
            "label": "noise",
            "items": list(range(100)),
            **{f"k{j}": f"value {j}" for j in range(17)},
        }
    }


def run_values() -> dict[str, Any]:
    """What conditions read in a run of 15 nodes: their outputs and one graph input."""
    values: dict[str, Any] = {f"n{i}": _output(i) for i in range(8)}
    values["topic"] = "billing disputes"
    values["review"] = {"output": {"score": 0.91, "reasons": ["clear", "sourced"]}}
    values["x"] = {"output": "a"}
    values["y"] = {"output": "c"}
    values["t"] = {"output": {"label": "Spam", "text": "this is urgent: " + "lorem ipsum " * 20}}
    values["assign"] = {"output": {"writer": "w-1", "coder": None}}
    values["triage"] = {"output": "general"}
    values["corpus"] = {"output": list(range(10_000))}
    return values


# (case, converge's text, CEL's text, cel_rust given every output)
EVAL_CASES: list[tuple[str, str, str, bool]] = [
    ("score", "review.output.score > 0.8", "review.output.score > 0.8", False),
    (
        "two_nodes",
        "x.output == 'a' and y.output in ['b', 'c']",
        "x.output == 'a' && y.output in ['b', 'c']",
        False,
    ),
    (
        "string_ops",
        "'urgent' in t.output.text and len(t.output.text) < 500 and t.output.label != 'ham'",
        "t.output.text.contains('urgent') && size(t.output.text) < 500 && t.output.label != 'ham'",
        False,
    ),
    ("exists", "exists(assign.output.writer)", "has(assign.output.writer)", False),
    (
        "router_fallback",
        "triage.output not in ['billing', 'technical']",
        "!(triage.output in ['billing', 'technical'])",
        False,
    ),
    ("reads_a_big_output", "len(corpus.output) > 0", "size(corpus.output) > 0", False),
    # What a binding costs when handed every value, as converge's evaluator is.
    ("score_given_every_output", "review.output.score > 0.8", "review.output.score > 0.8", True),
]


def bench_eval(have: dict[str, bool], rounds: int, n: int) -> None:
    values = run_values()
    for case, ours, theirs, whole in EVAL_CASES:
        roots = parse_expression(ours).references
        fns: dict[str, Callable[[], object]] = {}
        counts: dict[str, int] = {}
        results: dict[str, Any] = {}
        for name in CONTENDERS:
            if not have[name] or (whole and name not in ("converge", "cel_rust")):
                continue
            run = compile_with(name, ours if name == "converge" else theirs, roots, whole=whole)
            results[name] = run(values)
            count = n if name != "cel_python" else max(1, n // 50)
            if case == "reads_a_big_output" or whole:
                count = max(1, count // 20)  # converting 10,000 items is slow: fewer calls
            fns[name], counts[name] = _loop(run, values, count), count
        truth = bool(results["converge"])
        for name, result in results.items():
            if bool(result) is not truth:
                raise AssertionError(f"{case}: {name} gave {result!r}, converge {truth}")
        interleaved(fns, rounds=1)
        best = interleaved(fns, rounds=rounds)
        per = {k: round(best[k] / counts[k] * 1e6, 2) for k in fns}
        emit(
            bench=BENCH,
            case=f"eval/{case}",
            value=per["converge"],
            unit="us/eval",
            condition=ours,
            cel=theirs,
            cel_given="every output" if whole else "the roots it reads",
            **_versus(per, have),
        )


def _loop(run: Run, values: Mapping[str, Any], count: int) -> Any:
    def many() -> None:
        for _ in range(count):
            run(values)

    return many


def _versus(figures: Mapping[str, float | None], have: Mapping[str, bool]) -> dict[str, Any]:
    """Each CEL contender's figure and its ratio to converge's (null when not installed)."""
    out: dict[str, Any] = {}
    base = figures["converge"]
    for name in CONTENDERS[1:]:
        figure = figures.get(name) if have[name] else None
        out[name] = figure
        out[f"{name}_ratio"] = round(figure / base, 1) if figure is not None and base else None
    return out


def bench_compile(have: dict[str, bool], rounds: int) -> None:
    for case, ours, theirs, whole in EVAL_CASES:
        if whole:
            continue
        roots = parse_expression(ours).references
        fns: dict[str, Callable[[], object]] = {}
        counts: dict[str, int] = {}
        for name in CONTENDERS:
            if have[name]:
                text = ours if name == "converge" else theirs
                counts[name] = 200 if name != "cel_python" else 20
                fns[name] = _compiles(name, text, roots, counts[name])
        interleaved(fns, rounds=1)
        best = interleaved(fns, rounds=rounds)
        per = {k: round(best[k] / counts[k] * 1e6, 1) for k in fns}
        emit(
            bench=BENCH,
            case=f"compile/{case}",
            value=per["converge"],
            unit="us/compile",
            **_versus(per, have),
        )


def _compiles(name: str, text: str, roots: frozenset[str], count: int) -> Any:
    def many() -> None:
        for _ in range(count):
            compile_with(name, text, roots)

    return many


def bench_import(have: dict[str, bool]) -> None:
    figures: dict[str, float | None] = {}
    for name in CONTENDERS:
        if have[name]:
            figures[name] = round(min(_import_ms(MODULES[name]) for _ in range(3)), 1)
    # The CLI has imported typer and rich already; what `cel` adds on top of them.
    after_cli = None
    if have["cel_rust"]:
        after_cli = round(
            min(_import_ms("cel", before="import typer, rich.console") for _ in range(3)), 1
        )
    emit(
        bench=BENCH,
        case="import",
        value=figures["converge"],
        unit="ms",
        cel_rust_after_typer_and_rich=after_cli,
        **_versus(figures, have),
    )


def _import_ms(module: str, before: str = "") -> float:
    code = "\n".join(
        [
            before,
            "import time",
            "t = time.perf_counter()",
            f"import {module}",
            "print(time.perf_counter() - t)",
        ]
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout) * 1000


# -- errors ------------------------------------------------------------------------------------


SYNTAX_ERRORS: list[tuple[str, str, str]] = [
    ("missing_operand", "review.output.score >", "review.output.score >"),
    ("unclosed_list", "x.output in ['a', 'b'", "x.output in ['a', 'b'"),
    ("second_line", "x.output == 'a' and\n  y.output ==", "x.output == 'a' &&\n  y.output =="),
    ("wrong_operator", "x.output = 'a'", "x.output = 'a'"),
    ("unterminated_string", "x.output == 'a", "x.output == 'a"),
]
_POSITION = re.compile(r"<input>:(-?\d+):(-?\d+)")


def bench_errors(have: dict[str, bool]) -> None:
    for case, ours, theirs in SYNTAX_ERRORS:
        said: dict[str, Any] = {}
        for name in CONTENDERS:
            if not have[name]:
                continue
            text = ours if name == "converge" else theirs
            try:
                compile_with(name, text, frozenset({"x", "y", "review"}))
            except Exception as exc:
                said[name] = _described(name, exc)
            else:
                said[name] = {"accepted": True}
        emit(
            bench=BENCH, case=f"syntax_error/{case}", value=None, unit="message", text=ours, **said
        )
    values = {"n": {"output": {"label": "spam"}}}
    for case, ours, theirs in [
        ("missing_key", "n.output.score > 0.8", "n.output.score > 0.8"),
        ("wrong_type", "n.output.label > 3", "n.output.label > 3"),
    ]:
        said = {}
        for name in CONTENDERS:
            if not have[name]:
                continue
            run = compile_with(name, ours if name == "converge" else theirs, frozenset({"n"}))
            try:
                said[name] = {"value": repr(run(values))}
            except Exception as exc:
                said[name] = _described(name, exc)
        emit(bench=BENCH, case=f"eval_error/{case}", value=None, unit="message", text=ours, **said)


def _described(name: str, exc: Exception) -> dict[str, Any]:
    message = str(exc)
    if name == "converge" and isinstance(exc, ExpressionSyntaxError):
        position: str | None = f"col {exc.column} (attribute)"
    elif name == "converge":
        position = f"path {getattr(exc, 'path', None)!r} (attribute)"
    elif name == "cel_python" and getattr(exc, "line", None) is not None:
        position = f"{exc.line}:{exc.column} (attribute)"  # type: ignore[attr-defined]
    elif (m := _POSITION.search(message)) is not None:
        position = f"{m[1]}:{m[2]} (in the message text)"
    else:
        position = None
    first = message.strip().splitlines()[0] if message.strip() else ""
    return {"error": type(exc).__name__, "position": position, "message": first[:200]}


class Scored(msgspec.Struct):
    """An output an agent may return as a msgspec Struct."""

    score: float


# Conditions whose meaning differs: what each contender answers (same values for all).
SEMANTICS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("ints_past_64_bits", "x == y", "x == y", {"x": 2**70, "y": 2**70 + 1}),
    ("division", "x / 2", "x / 2", {"x": 7}),
    ("truthiness", "not x", "!x", {"x": []}),
    ("struct_output", "x.score > 0.8", "x.score > 0.8", {"x": Scored(0.9)}),
]


def bench_semantics(have: dict[str, bool]) -> None:
    for case, ours, theirs, values in SEMANTICS:
        said: dict[str, Any] = {}
        for name in CONTENDERS:
            if not have[name]:
                continue
            text = ours if name == "converge" else theirs
            try:
                if name == "converge":  # the value itself, not its truthiness
                    run = parse_expression(text).evaluate
                else:
                    run = compile_with(name, text, frozenset(values))
                said[name] = {"value": repr(run(values))}
            except Exception as exc:
                said[name] = _described(name, exc)
        emit(
            bench=BENCH,
            case=f"semantics/{case}",
            value=None,
            unit="answer",
            text=ours,
            values=repr(values),
            **said,
        )


# -- hostile conditions, each in a child process -----------------------------------------------


def _ten() -> str:
    return "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"


def _nested_maps(levels: int) -> str:
    text = "1"
    for i in range(levels):
        text = f"{_ten()}.map(v{i}, {text})"
    return f"size({text}) > 0"


class Obj:
    """An object an agent might return: converge reads its public data attributes only."""

    def __init__(self) -> None:
        self.score = 1


# (case, converge's text or None where it has no such construct, CEL's text, the values)
HOSTILE: list[tuple[str, str | None, str, Callable[[], dict[str, Any]]]] = [
    ("parens_2000_deep", "(" * 2000 + "1" + ")" * 2000, "(" * 2000 + "1" + ")" * 2000, dict),
    ("minus_4000", "-" * 4000 + "1", "-" * 4000 + "1", dict),
    ("not_1000", "not " * 1000 + "true", "!" * 1000 + "true", dict),
    ("flat_sum_1000", " + ".join(["1"] * 1000), " + ".join(["1"] * 1000), dict),
    ("int_literal_1000_digits", "9" * 1000, "9" * 1000, dict),
    ("huge_int_product", "x * x > 0", "x * x > 0", lambda: {"x": 10**300}),
    (
        "string_literal_1mb",
        "'" + "a" * 1_000_000 + "' == 'a'",
        "'" + "a" * 1_000_000 + "' == 'a'",
        dict,
    ),
    ("maps_nested_5", None, _nested_maps(5), dict),
    ("maps_nested_7", None, _nested_maps(7), dict),
    (
        "maps_over_data",
        None,
        "size(x.map(a, x.map(b, x.map(c, 1)))) > 0",
        lambda: {"x": list(range(300))},
    ),
    ("regex_backtracking", None, "x.matches('(a+)+$')", lambda: {"x": "a" * 5000 + "b"}),
    ("python_attribute", "o.__class__ == null", "o.__class__ == null", lambda: {"o": Obj()}),
]


def probe(name: str, case: str) -> None:
    """In the child: compile and evaluate one hostile case; print what happened as JSON."""
    _, ours, theirs, make_values = next(h for h in HOSTILE if h[0] == case)
    values = make_values()
    _module(name)  # imported before the clock starts
    start = time.perf_counter()
    stage = "compile"
    try:
        run = compile_with(name, ours if name == "converge" else theirs, frozenset(values))
        stage = "evaluate"
        result = run(values)
    except BaseException as exc:  # RecursionError, MemoryError: what escapes is the finding
        outcome, detail = ("refused" if stage == "compile" else "failed"), type(exc).__name__
        message = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
    else:
        outcome, detail, message = "value", None, repr(result)[:80]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(
        json.dumps(
            {
                "outcome": outcome,
                "error": detail,
                "message": message,
                "seconds": round(time.perf_counter() - start, 4),
                "max_rss_mb": rss,
            }
        )
    )


def bench_hostile(have: dict[str, bool]) -> None:
    for case, ours, _theirs, _values in HOSTILE:
        said: dict[str, Any] = {}
        for name in CONTENDERS:
            if not have[name]:
                continue
            if name == "converge" and ours is None:
                said[name] = {"outcome": "not expressible (no loops, no regex)"}
                continue
            said[name] = _child(name, case)
        emit(bench=BENCH, case=f"hostile/{case}", value=None, unit="outcome", **said)


def _child(name: str, case: str) -> dict[str, Any]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (PROBE_MEMORY, PROBE_MEMORY))

    try:
        done = subprocess.run(
            [sys.executable, __file__, "--probe", name, case],
            capture_output=True,
            text=True,
            timeout=PROBE_SECONDS,
            preexec_fn=limit,
        )
    except subprocess.TimeoutExpired:
        return {"outcome": "timeout", "seconds": f">{PROBE_SECONDS}"}
    if done.returncode != 0 or not done.stdout.strip():
        tail = done.stderr.strip().splitlines()[-1:] or [""]
        return {"outcome": "crashed", "returncode": done.returncode, "stderr": tail[0][:160]}
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evals", type=int, default=20_000, help="evaluations per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each contender")
    parser.add_argument("--probe", nargs=2, metavar=("CONTENDER", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe(*args.probe)
        return
    have = available()
    missing = [MODULES[k] for k, ok in have.items() if not ok]
    if missing:
        print(f"# not installed, reported as null: {', '.join(missing)}", file=sys.stderr)
    bench_eval(have, args.rounds, args.evals)
    bench_compile(have, args.rounds)
    bench_import(have)
    bench_errors(have)
    bench_semantics(have)
    bench_hostile(have)


if __name__ == "__main__":
    main()
