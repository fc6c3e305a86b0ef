"""Fuzzing the front end: random and mutated sources never crash it.

``compile_source`` must return diagnostics for any input; ``parse`` may raise only FlowError.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dsl
from dsl.errors import FlowError
from dsl.parser import parse
from tests.unit.test_compiler import EXAMPLE

TOKENS = [
    "flow 1", "let", "workflow", "step", "after", "when", "for each", "in", "where", "concurrency", "retry",
    "timeout", "compensate", "none", "allow_failure", "defaults", "schedule", "cron", "every", "at", "output",
    "on failure", "doc", "and", "or", "not", "true", "false", "null", "x", "a", "params", "steps", "self", "item",
    "error", "http", "noop", "transform", "acme.email", "url:", "method:", "input:", "map:", "{", "}", "(", ")", "[",
    "]", ",", ":", ".", "=", "==", "!=", "<", ">=", "?", "??", "+", "-", "*", "/", "%", "&&", "||", "!", "1", "2.5",
    "1e3", "30s", "1h30m", "12abc", '"s"', '"${x}"', '"${', "'raw'", '"', "#c\n", "\n", " ", "\t", "\u202e", "\x00",
]
# FLOW_HYPOTHESIS_EXAMPLES=3000 for a longer run than the default suite's.
EXAMPLES = int(os.environ.get("FLOW_HYPOTHESIS_EXAMPLES", "300"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def never_raises(source: str | bytes) -> dsl.CompileResult:
    result = dsl.compile_source(source, "fuzz.flow")
    for diag in result.diagnostics:
        dsl.render_diagnostic(diag, result.source)  # rendering must not fail either
        assert diag.span.line >= 1 and diag.span.column >= 1
    return result


@SETTINGS
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map(" ".join))
def test_token_soup(source):
    never_raises(source)
    try:
        parse(source, "fuzz.flow")
    except FlowError:
        pass


@SETTINGS
@given(st.text(max_size=300))
def test_random_text(source):
    never_raises(source)


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes(data):
    never_raises(data)


@st.composite
def mutated_example(draw):
    text = EXAMPLE
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["delete", "insert", "replace"]))
        size = draw(st.integers(1, 8))
        piece = draw(st.sampled_from(TOKENS))
        if action == "delete":
            text = text[:pos] + text[pos + size:]
        elif action == "insert":
            text = text[:pos] + piece + text[pos:]
        else:
            text = text[:pos] + piece + text[pos + size:]
    return text


@SETTINGS
@given(mutated_example())
def test_mutated_reference_example(source):
    never_raises(source)
    try:
        parse(source, "fuzz.flow")
    except FlowError:
        pass


@st.composite
def steps_with_damage(draw):
    """A workflow of several steps, some of them damaged: step-level recovery must stay safe."""
    lines = ["workflow w(n: int = 1) {"]
    for i in range(draw(st.integers(1, 6))):
        body = f'output: {{ i: {i}, s: "${{params.n}}" }}'
        if draw(st.booleans()):
            pos = draw(st.integers(0, len(body)))
            body = body[:pos] + draw(st.sampled_from(TOKENS)) + body[pos + draw(st.integers(0, 4)):]
        lines.append(f"  step s{i}: {draw(st.sampled_from(['noop', 'acme.email']))} {{ {body} }}")
    lines.append("}")
    return "\n".join(lines)


@SETTINGS
@given(steps_with_damage())
def test_damaged_steps(source):
    result = never_raises(source)
    syntax = [d for d in result.diagnostics if d.code in ("E101", "E103", "E104")]
    # One per broken step, plus one for what follows a step whose `}` came too early (`{ o}utput: 1 }`).
    assert len(syntax) <= 2 * source.count("step ")


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["(", "[", "{", "-", "not ", "a.", "1 + ", '"${'] ), st.integers(50, 3000))
def test_deep_inputs(prefix, n):
    never_raises("let x = " + prefix * n + "1")
