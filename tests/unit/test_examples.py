"""The example workflows compile cleanly, survive JSON, and their expressions suit the evaluator."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dsl import compile_source
from dsl.evaluator import call_lambda, describe, evaluate, is_deferred, resolve
from dsl.graph import render
from dsl.task_definitions import compile_task_definition
from dsl.spec import StepSpec, WorkflowSpec

WORKFLOWS = Path(__file__).parents[2] / "workflows"
EXAMPLES = sorted(WORKFLOWS.glob("*.flow"))
REQUIRED = {"order_saga", "nightly_batch", "fan_out", "webhook_notifier", "order_processing"}


def compiled(path: Path) -> list[WorkflowSpec]:
    result = compile_source(path.read_text(), str(path))
    assert result.diagnostics == [], "\n".join(str(d) for d in result.diagnostics)
    assert result.specs
    return result.specs


def test_the_required_examples_exist() -> None:
    assert REQUIRED <= {p.stem for p in EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_compiles_without_diagnostics(path: Path) -> None:
    assert [spec.name for spec in compiled(path)] == [path.stem]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_spec_survives_json(path: Path) -> None:
    for spec in compiled(path):
        assert WorkflowSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def _exprs(step: StepSpec) -> Iterator[Any]:
    yield from step.config.values()
    if step.when:
        yield step.when
    if step.for_each:
        yield step.for_each.items
    if step.compensate and step.compensate.config:
        yield from step.compensate.config.values()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_expressions_suit_the_evaluator(path: Path) -> None:
    for spec in compiled(path):
        env: dict[str, Any] = {}
        for let in spec.lets:  # constants: each sees the ones before it
            env[let.name] = evaluate(let.expr, env, defer=("secrets",))
        for step in spec.steps + spec.on_failure:
            for expr in _exprs(step):
                assert describe(expr)
        if spec.output:
            assert describe(spec.output)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_graphs_render(path: Path) -> None:
    for spec in compiled(path):
        root = ET.fromstring(render(spec, "svg"))
        drawn = {g.get("data-step") for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("data-step")}
        assert drawn == {s.name for s in spec.steps + spec.on_failure}
        assert render(spec, "dot").startswith("digraph")
        assert render(spec, "mermaid").startswith("flowchart TD")


def test_secret_headers_are_deferred_to_the_worker() -> None:
    (spec,) = compiled(WORKFLOWS / "webhook_notifier.flow")
    env = {"params": {"targets": [], "event": {"type": "x"}}, "workflow": {"run_id": "r1"}}
    headers = evaluate(spec.step("chat").config["headers"], env, defer=("secrets",))
    assert headers["Idempotency-Key"] == "chat-r1"
    assert is_deferred(headers["Authorization"])
    assert describe(headers["Authorization"]) == '"Bearer ${secrets.CHAT_TOKEN}"'
    assert "CHAT_TOKEN" not in json.dumps(resolve(headers, {"secrets": {"CHAT_TOKEN": "s3"}}))


def test_saga_matches_the_reference_dag() -> None:
    (spec,) = compiled(WORKFLOWS / "order_saga.flow")
    deps = {s.name: set(s.depends_on) for s in spec.steps}
    assert deps == {
        "validate": set(), "totals": set(), "review": {"validate"},
        "charge": {"review", "validate"}, "reserve": {"review"}, "ship": {"charge", "reserve"},
    }
    assert spec.step("reserve").for_each is not None
    assert spec.step("charge").compensate is not None and not spec.step("charge").compensate.is_none
    assert [s.name for s in spec.on_failure] == ["alert"]


def test_seed_json_and_flow_versions_have_the_same_shape() -> None:
    seed = compile_task_definition(json.loads((WORKFLOWS / "order_processing.json").read_text()))
    (flow,) = compiled(WORKFLOWS / "order_processing.flow")
    assert [s.task_type for s in seed.steps] == [s.task_type for s in flow.steps]
    assert [len(s.depends_on) for s in seed.steps] == [len(s.depends_on) for s in flow.steps]


def test_per_element_expressions_are_lambdas_the_worker_can_call() -> None:
    (spec,) = compiled(WORKFLOWS / "nightly_batch.flow")
    lam = evaluate(spec.step("normalise").config["map"], {"params": {}}, defer=("secrets",))
    assert is_deferred(lam)
    order = {"id": "o1", "shipping": {"country": " de "}, "total_cents": 1999, "lines": [1, 2]}
    assert call_lambda(lam, order) == {"id": "o1", "country": "DE", "amount": 19.99, "lines": 2}
    where = evaluate(spec.step("real_orders").config["where"], {})
    assert call_lambda(where, {"id": "test-1", "amount": 5}) is False


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_has_workflow_tests_that_pass(path: Path) -> None:
    """`make test` collects them through the pytest plugin; here they must exist and pass."""
    from flow.testing.runner import Session, load

    tests = path.with_suffix(".flowtest")
    assert tests.exists(), f"{path.name} has no {tests.name} (docs/testing.md)"
    loaded = load(str(tests))
    assert loaded.ok and not loaded.test_problems, loaded.render()
    session = Session()
    try:
        verdicts = session.run(loaded)
    finally:
        session.close()
    assert len(verdicts) >= 2 and all(v.passed for v in verdicts), [v.problems for v in verdicts if not v.passed]
