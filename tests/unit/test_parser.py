"""The parser: source -> AST, positions, literals, and syntax errors as FlowSyntaxError."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsl import ast
from dsl.errors import FlowError, FlowLimitError, FlowSyntaxError
from dsl.parser import parse, parse_partial


def expr_of(source: str) -> ast.Expr:
    return parse(f"let x = {source}", "t.flow").lets[0].expr


def test_let_and_workflow_with_params():
    tree = parse('flow 1\nlet a = 1\nworkflow w(x: string, y: list<object>? = null, z: float = 1) { }', "t.flow")
    assert tree.version == 1
    assert [l.name for l in tree.lets] == ["a"]
    wf = tree.workflows[0]
    assert [(p.name, p.type.text()) for p in wf.params] == [("x", "string"), ("y", "list<object>?"), ("z", "float")]


@pytest.mark.parametrize("text, value", [
    ("1", 1), ("2.5", 2.5), ("1e3", 1000.0), ("1.5e-3", 0.0015), ("true", True), ("null", None),
    ('"a\\n\\"b\\u{41}"', 'a\n"bA'), ("'raw ${x} \\n'", "raw ${x} \\n"),
])
def test_literals(text, value):
    lit = expr_of(text)
    assert isinstance(lit, ast.Literal) and lit.value == value


@pytest.mark.parametrize("text, seconds", [("250ms", 0.25), ("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400), ("1h30m", 5400)])
def test_durations(text, seconds):
    node = expr_of(text)
    assert isinstance(node, ast.Duration) and node.seconds == seconds


def test_precedence():
    node = expr_of("a or b and not c == d ?? e + f * -g")
    assert isinstance(node, ast.Binary) and node.op == "or"
    right = node.right
    assert right.op == "and" and isinstance(right.right, ast.Unary) and right.right.op == "not"
    cmp = right.right.arg
    assert cmp.op == "==" and cmp.right.op == "??"
    assert cmp.right.right.op == "+" and cmp.right.right.right.op == "*"


def test_conditional_and_postfix():
    node = expr_of("c ? x.y[0] : len(z, 1)")
    assert isinstance(node, ast.Cond)
    assert isinstance(node.then, ast.Index) and isinstance(node.then.obj, ast.Member)
    assert isinstance(node.else_, ast.Call) and node.else_.fn == "len" and len(node.else_.args) == 2


def test_interpolation_parts_and_positions():
    node = expr_of('"a ${params.x} b ${1 + 2}"')
    assert isinstance(node, ast.Interp)
    assert node.parts[0] == "a " and node.parts[2] == " b "
    member = node.parts[1]
    assert isinstance(member, ast.Member) and (member.loc.line, member.loc.column) == (1, 14)
    assert isinstance(node.parts[3], ast.Binary)


def test_optional_commas_and_clauses():
    src = """workflow w() {
      step a: http { url: "u" method: "GET", when true for each x in [1] where x > 0 concurrency 2
                     retry 3 timeout 5s allow_failure doc "d" compensate none "why" }
      step b: noop { after a, c: 1 }
      schedule cron "0 3 * * *" { timezone: "UTC" }
      schedule every 5m
      schedule at "2026-12-01T09:00:00+01:00"
      on failure { step c: noop {} }
      output { r: steps.a.output }
    }"""
    wf = parse(src, "t.flow").workflows[0]
    step_a = wf.of_type(ast.Step)[0]
    kinds = [type(e).__name__ for e in step_a.entries]
    assert kinds == ["Config", "Config", "When", "ForEach", "RetryClause", "TimeoutClause", "AllowFailure", "Doc", "CompensateNone"]
    step_b = wf.of_type(ast.Step)[1]
    assert isinstance(step_b.entries[0], ast.After) and [n for n, _ in step_b.entries[0].names] == ["a"]
    assert isinstance(step_b.entries[1], ast.Config) and step_b.entries[1].key == "c"
    assert [s.kind for s in wf.of_type(ast.Schedule)] == ["cron", "every", "at"]


def test_keyword_config_keys_and_dotted_types():
    wf = parse('workflow w() { step f: filter { input: [1] where: item > 1 } step e: acme.email { to: "x" } }', "t").workflows[0]
    f, e = wf.of_type(ast.Step)
    assert [c.key for c in f.entries] == ["input", "where"]
    assert e.type == "acme.email"


def test_spans_are_one_based_end_exclusive():
    step = parse("workflow w() {\n  step abc: noop {}\n}", "t.flow").workflows[0].of_type(ast.Step)[0]
    assert (step.name_loc.line, step.name_loc.column, step.name_loc.end_column) == (2, 8, 11)
    assert (step.loc.line, step.loc.column, step.loc.end_line, step.loc.end_column) == (2, 3, 2, 20)


@pytest.mark.parametrize("source", ["let x = ", "workflow w( {", "let x = a && b", 'let x = "abc', "let x = 1 2"])
def test_syntax_errors_raise_flow_syntax_error(source):
    with pytest.raises(FlowSyntaxError):
        parse(source, "t.flow")


def test_recovers_to_report_errors_in_several_declarations():
    source = "let a = \nlet b = 1\nworkflow w( {\n}\nlet c = 2\n"
    tree, diags = parse_partial(source, "t.flow")
    assert [d.span.line for d in diags] == [1, 3]
    assert "end of the declaration" in diags[0].message
    assert [l.name for l in tree.lets] == ["b", "c"]


@pytest.mark.parametrize("source", [
    "let x = " + "[" * 65 + "]" * 65,
    "let x = " + "-" * 5000 + "1",
    "let x = " + "a." * 3000 + "b",
    "let x = " + " + ".join(["1"] * 3000),
    "let x = " + "not " * 3000 + "true",
    'let x = "${' + "[" * 200 + "]" * 200 + '}"',
])
def test_deep_nesting_is_a_limit_error_not_a_crash(source):
    with pytest.raises(FlowError):
        parse(source, "t.flow")


def test_limits_raise_limit_error():
    with pytest.raises(FlowLimitError):
        parse("#" * (256 * 1024 + 1), "t.flow")
    with pytest.raises(FlowLimitError):
        parse("let x = 1 \u202e", "t.flow")


def test_recovers_at_step_granularity_inside_a_workflow():
    source = 'workflow w() {\n  step a: noop { output: 1 + }\n  step b: noop { doc "step c: x {" output: ) }\n  step d: noop {}\n}\n'
    tree, diags = parse_partial(source, "t.flow")
    assert [(d.span.line, d.span.column) for d in diags] == [(2, 30), (3, 44)]
    assert tree.workflows == ()  # its good steps could refer to the broken ones: no semantic pass on it


def test_threads_parse_at_the_same_time():
    # One parser serves every thread; each parse keeps its own state (file name, diagnostics).
    from concurrent.futures import ThreadPoolExecutor

    sources = [(f"f{i}.flow", f'workflow w{i}() {{ step s: noop {{ output: "{i}${{params.x}}" }} }}\nlet when = {i}\n')
               for i in range(40)]

    def run(item: tuple[str, str]) -> tuple[str, list[str]]:
        tree, diags = parse_partial(item[1], item[0])
        return tree.workflows[0].name, [f"{d.span.file}:{d.code}" for d in diags]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, sources * 5))
    assert results == [(f"w{i}", [f"f{i}.flow:E107"]) for i in range(40)] * 5


def test_a_failed_interpolation_leaves_no_trace_on_later_nodes():
    # The nodes of a `${...}` that fails to parse are dropped; spans of later nodes stay their own.
    source = 'let a = "${(x) +}"\nlet b = (c) + [d]\nlet e = "${(f) )}"\n'
    tree, diags = parse_partial(source, "t.flow")
    assert [(d.span.line, d.span.column, d.message) for d in diags] == [
        (1, 17, "unexpected end of `${...}`; expected an expression"), (3, 16, "unexpected `)`")]
    b = tree.lets[1].expr
    assert (b.loc.column, b.loc.end_column) == (9, 18) and (b.left.loc.column, b.left.loc.end_column) == (10, 11)


def _both_ways(text: str):
    """(fast path result or "miss", lark result or the lark error's class), under one builder session."""
    from dsl import lalr, parser

    def parse_expr(inner, line, col):
        return parser._parse_tree(parser._pad(inner, line, col), "t.flow", "expr")

    results = []
    for use_fast in (True, False):
        with parser._BUILDER.session("t.flow", parse_expr) as state:
            try:
                tree = parser._FAST(text, "start") if use_fast else parser._LARK.parse(text, start="start")
            except lalr.NeedsLark:
                tree = "miss"
            except Exception as exc:  # lark's own errors, compared by class
                tree = type(exc).__name__
            results.append((tree, [d.message for d in state.diagnostics]))
    return results


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "workflows").glob("*.flow")), ids=lambda p: p.name)
def test_fast_path_builds_the_same_ast_as_lark(path):
    from dsl import parser

    assert parser._FAST is not None, "the fast path should work with the lark version in use"
    fast, slow = _both_ways(path.read_text())
    assert fast == slow


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["", "}", "{", ")", "(", "step", ",", ":", "1", '"${', "when", "x."]))
def test_fast_path_misses_exactly_where_lark_fails(position, piece):
    # Given a damaged example; when both parse it; then both build the same AST, or the fast path misses where lark raises.
    from tests.unit.test_compiler import EXAMPLE

    pos = position % (len(EXAMPLE) + 1)
    fast, slow = _both_ways(EXAMPLE[:pos] + piece + EXAMPLE[pos:])
    if fast[0] == "miss":
        assert isinstance(slow[0], str), "the fast path gave up on a text lark parses"
    else:
        assert fast == slow
