"""What `flow check` accepts runs (issue 14, section 1).

The scope table of docs/language.md ("Scopes"), cell by cell: every ✓ cell compiles without error
and runs on the embedded default (`flow run --local`), every other cell is the E2xx of the table at
the line and column of the name. Then types where they are known, and a differential test:
generated workflows that the compiler accepts never fail with a failure it could have known.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dsl


def flow_cli() -> Any:
    """The `flow` click group (the one import of the CLI in this module; it moves with the layout)."""
    from flow.cli.main import main

    return main


@pytest.fixture
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Nothing configured: the embedded default, its data in ``tmp_path``, one secret set."""
    for name in ("DATABASE_URL", "BROKER_URL", "DB_HOST", "RABBITMQ_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FLOW_SECRET_TOKEN", "s3cret")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_local(directory: Path, source: str, name: str = "w") -> dict[str, Any]:
    """Deploy and run ``source`` in this process; the run document (`flow run --json`)."""
    path = directory / f"{name}.flow"
    path.write_text(source)
    result = CliRunner().invoke(flow_cli(), ["run", str(path), "--local", "--json", "--timeout", "60"],
                                catch_exceptions=False)
    document = result.stdout[result.stdout.index("{"):] if "{" in result.stdout else ""
    assert document, result.output
    run = json.loads(document)
    assert (result.exit_code == 0) == (run["status"] == "completed"), result.output
    return run  # type: ignore[no-any-return]


# ---- the scope table ------------------------------------------------------------------------------

# One expression per kind of name; `x` is a loop variable (of the cell's own step where it has one).
NAMES = {
    "params": "params.n", "steps": "steps.src.output.v", "self": "self.output", "error": "error.message",
    "loop": "x", "let": "k", "secret_let": "tok", "secrets": "secrets.TOKEN", "workflow": "workflow.name",
    "item": "item",
}
OK = None

# Where the expression E stands: (file let, workflow let, main steps, tail, on-failure steps).
PLACES: dict[str, dict[str, str]] = {
    "file_let": {"file": "let v_{i} = @E@"},
    "wf_let": {"wf": "let v_{i} = @E@"},
    "when": {"main": "step cell_{i}: noop {{ for each x in params.xs  when @E@ != null  output: 1 }}"},
    "items": {"main": "step cell_{i}: noop {{ for each x in [@E@]  output: 1 }}"},
    "where": {"main": "step cell_{i}: noop {{ for each x in params.xs where @E@ != null  output: 1 }}"},
    "concurrency": {"main": "step cell_{i}: noop {{ for each x in params.xs concurrency len([@E@])  output: 1 }}"},
    "config": {"main": "step cell_{i}: noop {{ for each x in params.xs  output: @E@ }}"},
    "per_element": {"main": "step cell_{i}: transform {{ for each x in params.xs  input: [1, 2], map: @E@ }}"},
    "compensate": {"main": "step cell_{i}: noop {{ for each x in params.xs  output: x  compensate noop {{ output: @E@ }} }}",
                   "tail": "step boom: filter {{ after {cells}  retry 1  input: [params.o], where: item.k > \"a\" }}"},
    "output": {"output": "v_{i}: @E@"},
    "failure_when": {"tail": "step boom: filter {{ retry 1  input: [params.o], where: item.k > \"a\" }}",
                     "failure": "step cell_{i}: noop {{ for each x in params.xs  when @E@ != null  output: 1 }}"},
    "failure_config": {"tail": "step boom: filter {{ retry 1  input: [params.o], where: item.k > \"a\" }}",
                       "failure": "step cell_{i}: noop {{ for each x in params.xs  output: @E@ }}"},
    "timeout": {"main": "step cell_{i}: noop {{ for each x in params.xs  timeout @E@  output: 1 }}"},
}

_COORDINATOR = dict(params=OK, steps=OK, self="E205", error="E206", loop="E207", let=OK, secret_let="E213",
                    secrets="E213", workflow=OK, item="E208")
_WORKER = dict(_COORDINATOR, loop=OK, secret_let=OK, secrets=OK)
_LET = dict(params=OK, steps="E212", self="E205", error="E206", loop="E204", let=OK, secret_let=OK, secrets=OK,
            workflow=OK, item="E208")
# The table of docs/language.md, section 5, "Scopes".
TABLE: dict[str, dict[str, str | None]] = {
    "file_let": dict(_LET, params="E204"),
    "wf_let": _LET,
    "when": _COORDINATOR,
    "items": _COORDINATOR,
    "where": dict(_COORDINATOR, loop=OK),
    "concurrency": _COORDINATOR,
    "config": _WORKER,
    "per_element": dict(_WORKER, item=OK),
    "compensate": dict(_WORKER, self=OK),
    "output": _COORDINATOR,
    "failure_when": dict(_COORDINATOR, error=OK),
    "failure_config": dict(_WORKER, error=OK),
    "timeout": {name: "E214" for name in NAMES},
}
# `boom` fails at run time for a reason no compiler knows (the field `k` of an object param is a number).
# How each place's run ends, and the status its cells reach.
OUTCOME = {"compensate": "compensated", "failure_when": "failed", "failure_config": "failed"}


def workflow(place: str, exprs: list[str], places: dict[str, dict[str, str]] = PLACES) -> str:
    """A workflow with one cell per expression in ``exprs`` at ``place``."""
    shape = places[place]
    cells = ", ".join(f"cell_{i}" for i in range(len(exprs)))
    parts: dict[str, list[str]] = {key: [] for key in ("file", "wf", "main", "tail", "failure", "output")}
    for key, template in shape.items():
        if "{i}" not in template:
            parts[key].append(template.format(cells=cells))
            continue
        for i, expr in enumerate(exprs):
            parts[key].append(template.format(i=i, cells=cells).replace("@E@", expr))
    failure = "  on failure {\n    " + "\n    ".join(parts["failure"]) + "\n  }\n" if parts["failure"] else ""
    output = "  output { " + ", ".join(parts["output"]) + " }\n" if parts["output"] else ""
    return (
        "let k = 2\nlet tok = secrets.TOKEN\n" + "".join(f"{line}\n" for line in parts["file"])
        + "workflow w(n: int = 1, f: float = 2.5, s: string = \"ab\", b: bool = true, xs: list<int> = [1, 2], "
          "o: object = { k: 1 }) {\n"
        + "".join(f"  {line}\n" for line in parts["wf"])
        + "  step src: noop { output: { v: 1 } }\n"
        + "  step other: noop { for each x in params.xs  output: x }\n"
        + "".join(f"  {line}\n" for line in parts["main"] + parts["tail"])
        + failure + output + "}\n"
    )


CELLS = [(place, name) for place in PLACES for name in NAMES]


@pytest.mark.parametrize("place, name", CELLS, ids=[f"{p}-{n}" for p, n in CELLS])
def test_each_cell_compiles_as_the_table_says(place: str, name: str) -> None:
    expr = NAMES[name]
    source = workflow(place, [expr])
    result = dsl.compile_source(source, "t.flow")
    expected = TABLE[place][name]

    if expected is OK:
        assert result.ok, result.render()
        return
    errors = result.errors
    assert [d.code for d in errors] == [expected], result.render()
    # At the name: the marker's line and column are those of the expression in the source.
    marked = workflow(place, ["@@" + expr[2:]])
    offset = marked.index("@@")
    line, column = marked.count("\n", 0, offset) + 1, offset - marked.rfind("\n", 0, offset)
    assert errors[0].span.line == line and column <= errors[0].span.column < column + len(expr), result.render()


@pytest.mark.parametrize("place", [p for p in PLACES if any(code is OK for code in TABLE[p].values())])
def test_each_accepted_cell_runs_on_the_embedded_default(place: str, embedded: Path) -> None:
    accepted = [NAMES[name] for name, code in TABLE[place].items() if code is OK]
    source = workflow(place, accepted)
    assert dsl.compile_source(source, "t.flow").ok, dsl.compile_source(source, "t.flow").render()

    run = run_local(embedded, source)

    assert run["status"] == OUTCOME.get(place, "completed"), run["error"]
    steps = {s["name"]: s for s in run["steps"]}
    for i in range(len(accepted)):
        if f"cell_{i}" in steps:
            cell = steps[f"cell_{i}"]
            if place == "compensate":
                assert cell["compensation"]["status"] == "completed", cell
            else:
                assert cell["status"] == "completed", cell
    if place == "failure_when" or place == "failure_config":
        assert run["error"]["step"] == "boom"  # the cells ran in `on failure`, after the failure


def test_secret_lets_are_resolved_on_the_worker_inside_expressions(embedded: Path) -> None:
    source = """
let tok = secrets.TOKEN
let bearer = "Bearer ${tok}"
workflow w() {
  step a: noop { output: { whole: tok, text: "Bearer ${tok}", plus: "x" + tok, up: upper(tok), let: bearer } }
}
"""
    run = run_local(embedded, source)

    assert run["status"] == "completed", run["error"]
    assert run["steps"][0]["output"] == {"whole": "s3cret", "text": "Bearer s3cret", "plus": "xs3cret", "up": "S3CRET",
                                         "let": "Bearer s3cret"}


# ---- types where they are known -------------------------------------------------------------------

TYPE_ERRORS = [
    ("step a: noop { for each x in params.n  output: x }", "E321",
     "the items of `for each` must be a list, but `params.n` is an int"),
    ("step a: noop { output: len(params.n) }", "E321",
     "argument 1 of len() must be a string, list or object, but `params.n` is an int"),
    ("step a: noop { when params.s > 3 }", "E321",
     "cannot compare string > int: `params.s` is a string, `3` is an int"),
    ("step a: noop { when params.s == 3 }", "W506", "`params.s` is a string and `3` is an int: `==` is always false"),
    ("step a: noop { output: params.n.field }", "E321", "cannot read field `field` of an int (`params.n`)"),
    ("step a: transform { input: params.o, map: item }", "E321",
     "config `input` of `transform` must be a list, but `params.o` is an object"),
    ("step a: noop { output: len(1, 2) }", "E323", "len() takes 1 argument, got 2"),
    ("step a: noop { output: join() }", "E323", "join() takes 1 to 2 arguments, got 0"),
    ("step a: noop { output: 1 / 0 }", "E322", "this expression always fails: division by zero"),
    ("step a: noop { output: int(\"abc\") }", "E322", "this expression always fails: int() cannot read 'abc' as an integer"),
    ("step a: noop { when params.s }", "E305", "`when` must be a bool, but `params.s` is a string"),
    ("step a: noop { output: -params.s }", "E321", "the operand of `-` must be a number, but `params.s` is a string"),
    ("step a: noop { output: upper(params.n) + 1 }", "E321", "argument 1 of upper() must be a string, but `params.n` is an int"),
    ("step a: noop { output: steps.b.output[0] }\n  step b: http { url: \"https://x.example\" }", "E321",
     "cannot index an object (`steps.b.output`) with an int"),  # an http output is {status, headers, body}
    ("step a: noop { output: steps.b.output[\"body\"] }\n  step b: http { url: \"https://x.example\" }", None, None),
    ("step a: noop { output: len(steps.b.output) }\n  step b: sleep { duration: 1s }", None, None),
    ("step a: noop { output: params.maybe + 1 }", None, None),  # int? may be an int
    ("step a: noop { for each x in steps.b.output  output: x }\n  step b: transform { input: [1], map: item }", None, None),
]


@pytest.mark.parametrize("body, code, message", TYPE_ERRORS)
def test_types_where_known_name_the_types(body: str, code: str | None, message: str | None) -> None:
    source = f"workflow w(n: int, s: string, o: object, maybe: int?) {{\n  {body}\n}}\n"
    diags = [d for d in dsl.compile_source(source, "t.flow").diagnostics if d.code != "W502"]

    if code is None:
        assert [d for d in diags if d.is_error] == []
    else:
        assert [(d.code, d.message) for d in diags][:1] == [(code, message)]
        assert diags[0].span.line == 2


# ---- the differential test ------------------------------------------------------------------------

# Failures the compiler could have known: a name, a constant's type, a function, its arity.
KNOWABLE = re.compile(r"undefined name|unknown function|takes \d|expects a|cannot (add|compare|negate|read field|index)"
                      r"|needs (numbers|true or false|a list)|must be (a list|true or false)|division by zero|modulo by zero")

_PARAMS = {"n": ("int", "3"), "f": ("float", "2.5"), "s": ("string", '"ab"'), "b": ("bool", "true"),
           "xs": ("list<int>", "[1, 2]"), "o": ("object", "{ k: 1 }")}
_ATOMS = ["params.n", "params.f", "params.s", "params.b", "params.xs", "params.o", "steps.src.output.v",
          "steps.src.output", "workflow.name", "k", "1", "0", "2.5", '"a"', "true", "null", "[1, 2]", "{ a: 1 }", "x",
          "item", "self.output", "error.message", "secrets.TOKEN", "tok", "steps.src.status", "steps.src.attempts"]
_FUNCTIONS = ["len", "upper", "lower", "string", "int", "float", "bool", "json", "abs", "keys", "values", "join", "sum",
              "min", "max", "round", "floor", "contains", "split", "merge"]
_BINARY = ["+", "-", "*", "/", "%", "==", "!=", "<", ">=", "??", "and", "or", "in"]


_SCOPED = ["x", "item", "self.output", "error.message", "secrets.TOKEN", "tok"]  # the names whose scope varies


def expressions() -> st.SearchStrategy[str]:
    # Half of the leaves are the names whose scope depends on the place: the mistakes to find.
    leaves = st.one_of(st.sampled_from(_ATOMS), st.sampled_from(_SCOPED))
    return st.recursive(leaves, lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(_BINARY), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(_FUNCTIONS), st.lists(inner, min_size=0, max_size=3))
        .map(lambda t: f"{t[0]}({', '.join(t[1])})"),
        inner.map(lambda e: f"not {e}"),
        inner.map(lambda e: f"[{e}]"),
        st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} ? {t[1]} : {t[2]})"),
    ), max_leaves=5)


_BOOM = "step boom: filter {{ retry 1  input: [params.o], where: item.k > \"a\" }}"
# The places of the table with the expression standing bare (no `!= null` around it).
GENERATED: dict[str, dict[str, str]] = {
    "wf_let": {"wf": "let v_{i} = @E@"},
    "when": {"main": "step cell_{i}: noop {{ for each x in params.xs  when @E@  output: 1 }}"},
    "items": {"main": "step cell_{i}: noop {{ for each x in @E@  output: 1 }}"},
    "where": {"main": "step cell_{i}: noop {{ for each x in params.xs where @E@  output: x }}"},
    "concurrency": {"main": "step cell_{i}: noop {{ for each x in params.xs concurrency @E@  output: x }}"},
    "config": {"main": "step cell_{i}: noop {{ for each x in params.xs  output: @E@ }}"},
    "per_element": {"main": "step cell_{i}: transform {{ for each x in params.xs  input: params.xs, map: @E@ }}"},
    "compensate": {"main": "step cell_{i}: noop {{ for each x in params.xs  output: x  compensate noop {{ output: @E@ }} }}",
                   "tail": "step boom: filter {{ after {cells}  retry 1  input: [params.o], where: item.k > \"a\" }}"},
    "output": {"output": "v_{i}: @E@"},
    "failure_config": {"tail": _BOOM, "failure": "step cell_{i}: noop {{ for each x in params.xs  output: @E@ }}"},
    "failure_when": {"tail": _BOOM, "failure": "step cell_{i}: noop {{ when @E@  output: 1 }}"},
}
PER_PLACE = 12


def _failures(run: dict[str, Any]) -> list[str]:
    messages = [str((run.get("error") or {}).get("message", ""))]
    for step in run["steps"]:
        messages.append(f"{step['name']}: " + str((step.get("error") or {}).get("message", "")))
        messages.append(f"{step['name']} (compensation): "
                        + str(((step.get("compensation") or {}).get("error") or {}).get("message", "")))
        for item in step.get("items") or []:
            messages.append(f"{step['name']}[{item['item']}]: " + str((item.get("error") or {}).get("message", "")))
    return [m for m in messages if m and not m.endswith(": ") and "filter: 'where' failed on item 0" not in m]


def accepted_cells() -> dict[str, list[str]]:
    """Up to PER_PLACE generated expressions per place that compile without error there (deterministic)."""
    found: dict[str, list[str]] = {place: [] for place in GENERATED}

    @settings(max_examples=3000, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(st.sampled_from(sorted(GENERATED)), expressions())
    def collect(place: str, expr: str) -> None:
        if len(found[place]) < PER_PLACE and expr not in found[place]:
            if dsl.compile_source(workflow(place, [expr], GENERATED), "t.flow").ok:
                found[place].append(expr)

    collect()
    return found


def test_differential_accepted_workflows_never_fail_for_a_knowable_reason(embedded: Path) -> None:
    # Given expressions generated from the grammar's building blocks, each accepted at its place;
    # when the accepted ones of each place run together on the embedded default,
    # then no step, item or compensation fails for a reason the compiler could have known.
    cells = accepted_cells()
    assert sum(map(len, cells.values())) >= 4 * len(GENERATED), cells
    bad = {}
    for place, exprs in cells.items():
        if not exprs:
            continue
        source = workflow(place, exprs, GENERATED)
        run = run_local(embedded, source, name=place)
        knowable = [m for m in _failures(run) if KNOWABLE.search(m)]
        if knowable:
            bad[place] = (exprs, knowable)
    assert bad == {}
