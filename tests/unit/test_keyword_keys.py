"""Keywords as object keys and fields (issue 14, section 2): bare keys, `.field`, still reserved as names."""

from __future__ import annotations

import pytest

import dsl
from dsl import ast
from dsl.builder import KEYWORDS
from dsl.describe import describe
from dsl.evaluator import evaluate
from dsl.lowering import lower
from dsl.parser import _LARK, parse


def let_value(source: str) -> ast.Expr:
    return parse(source).lets[0].expr


@pytest.mark.parametrize("word", sorted(KEYWORDS))
def test_every_keyword_is_a_bare_object_key(word: str) -> None:
    expr = let_value(f"let x = {{ {word}: 1, other: 2 }}")

    assert isinstance(expr, ast.ObjectExpr)
    assert [e.key for e in expr.entries] == [word, "other"]


@pytest.mark.parametrize("word", sorted(KEYWORDS))
def test_every_keyword_is_a_field_after_a_dot(word: str) -> None:
    expr = let_value(f"let x = {{ a: 1 }}.{word}")

    assert isinstance(expr, ast.Member) and expr.key == word


@pytest.mark.parametrize("word", sorted(KEYWORDS))
def test_every_keyword_is_a_key_without_the_comma(word: str) -> None:
    # After a value the operator words (`in`, `and`, `or`) are expected too; `word:` still is a key.
    expr = let_value(f"let x = {{ a: 1 {word}: 2 }}")

    assert [e.key for e in expr.entries] == ["a", word]


def test_operators_after_a_value_stay_operators() -> None:
    expr = let_value("let x = { a: 1 in [1], b: true and false }")

    assert [type(e.value).__name__ for e in expr.entries] == ["Binary", "Binary"]
    assert [e.value.op for e in expr.entries] == ["in", "and"]


def test_the_issue_payload_compiles_and_evaluates() -> None:
    source = """
workflow w() {
  step fetch: noop { output: { step: 1, type: "x", in: 2, at: 3, every: 4, output: 5, timeout: 6, retry: 7 } }
  step use: noop { output: steps.fetch.output.timeout + steps.fetch.output.in }
  on failure { step alert: noop { output: { step: error.step, message: error.message } } }
}
"""
    result = dsl.compile_source(source, "t.flow")
    assert result.ok, result.render()
    spec = result.spec("w")
    fetch = spec.step("fetch").config["output"]["value"]
    assert fetch == {"step": 1, "type": "x", "in": 2, "at": 3, "every": 4, "output": 5, "timeout": 6, "retry": 7}
    env = {"steps": {"fetch": {"output": fetch}}}
    assert evaluate(spec.step("use").config["output"], env) == 8


@pytest.mark.parametrize("source, what", [
    ("let step = 1", "a `let` name"),
    ("let x = timeout + 1", "a name"),
    ("workflow w() { step after: noop {} }", "a step name"),
    ("workflow w(in: int) {}", "a parameter name"),
])
def test_keywords_stay_reserved_as_names(source: str, what: str) -> None:
    diags = dsl.compile_source(source, "t.flow").errors

    assert [d.code for d in diags][:1] == ["E107"]
    assert what in diags[0].message


def test_keywords_still_start_clauses_in_a_step() -> None:
    # `timeout 5s` is the clause; `timeout: 5` a config key (of a type that has it).
    source = 'workflow w() { step a: approval { timeout 5s  timeout: 2d  prompt: "ok?" } }'
    result = dsl.compile_source(source, "t.flow")
    assert result.ok, result.render()
    step = result.spec("w").step("a")
    assert step.timeout == 5.0 and step.config["timeout"]["value"] == 172800.0


@pytest.mark.parametrize("text", [
    '{step: 1, "a b": 2, in: [3]}',
    "x.timeout.in",
    'x.timeout["a b"].step',
])
def test_describe_writes_keyword_keys_bare_and_reads_back(text: str) -> None:
    tree = lower(let_value(f"let v = {text}"))
    shown = describe(tree)

    assert '"step"' not in shown and '["timeout"]' not in shown
    assert lower(let_value(f"let v = {shown}")) == tree


def test_grammar_is_still_conflict_free() -> None:
    # The parser is built with strict=True: a shift/reduce conflict or a terminal collision raises.
    assert _LARK.options.strict is True and _LARK.options.parser == "lalr"
