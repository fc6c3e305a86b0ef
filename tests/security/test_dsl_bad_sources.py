"""Bad `.flow` sources: clear errors, never a crash, and nothing executed (an audit hook records
every process/exec/system event while compiling and evaluating)."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from dsl import compile_source

EVENTS: list[str] = []
_WATCH = {"os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "ctypes.dlopen"}
# "exec" is not watched: dataclasses and lark generate code with exec while importing lazily.
_ACTIVE = threading.local()


def _hook(event: str, args: tuple) -> None:  # noqa: ARG001
    if getattr(_ACTIVE, "on", False) and event in _WATCH:
        EVENTS.append(event)


sys.addaudithook(_hook)
# Warm up: lazy imports (croniter asks `file` about the interpreter once) are not the sources' doing.
compile_source("flow 1\nworkflow warm() {\n  schedule cron \"0 3 * * *\" {}\n  step a: noop { v: 1 }\n}\n", "warm.flow")


def compile_watched(source: str):
    EVENTS.clear()
    _ACTIVE.on = True
    try:
        return compile_source(source, "bad.flow")
    finally:
        _ACTIVE.on = False


def errors(result) -> list[str]:
    return [f"{d.code} {d.message}" for d in result.diagnostics if d.is_error]


def wf(body: str) -> str:
    return f"flow 1\nworkflow w(x: int = 1) {{\n{body}\n}}\n"


BAD = {
    "huge": "flow 1\n" + "# " + "x" * (300 * 1024) + "\n",
    "deeply nested": wf("step a: noop { v: " + "[" * 5000 + "]" * 5000 + " }"),
    "deep parens": wf("step a: noop { v: " + "(" * 5000 + "1" + ")" * 5000 + " }"),
    "cycle": wf("step a: noop { after b }\nstep b: noop { after a }"),
    "unknown type": wf("step a: no_such_type { }"),
    "bidi": wf("step a: noop { v: \"ok\u202e\" }  # \u2066trojan\u2069"),
    "control char": wf("step a: noop { v: 1 }\x00\x1b[2J"),
    "__import__": wf("step a: noop { v: __import__(\"os\").system(\"touch /tmp/flow-pwned\") }"),
    "class escape": wf("step a: noop { v: ().__class__.__bases__[0].__subclasses__() }"),
    "dunder attribute": wf("step a: noop { v: params.__class__.__mro__ }"),
    "lambda": wf("step a: noop { v: lambda: 1 }"),
    "unterminated": wf("step a: noop { v: \"open"),
    "garbage bytes": "flow 1\n\udcff\udcfe workflow",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_source_gives_clear_errors_and_executes_nothing(name: str) -> None:
    result = compile_watched(BAD[name])
    assert not result.ok, f"{name}: should not compile"
    messages = errors(result)
    assert messages and all(len(m) < 2000 for m in messages), messages
    assert EVENTS == [], f"{name}: compiling executed {EVENTS}"
    assert not os.path.exists("/tmp/flow-pwned")


@pytest.mark.parametrize("expr", [
    "__import__(\"os\")", "().__class__", "params.__class__", "open(\"/etc/passwd\")",
    "eval(\"1\")", "exec(\"1\")", "getattr(params, \"__class__\")", "params.x.__globals__",
])
def test_expressions_cannot_reach_python(expr: str) -> None:
    result = compile_watched(wf(f"step a: noop {{ v: {expr} }}"))
    assert not result.ok and errors(result), expr
    assert EVENTS == []
