"""A `compensate` action must be of a type a worker runs (issue 16, section 2)."""

from __future__ import annotations

import pytest

import dsl


@pytest.mark.parametrize("action", ["sleep { duration: 1s }", 'approval { prompt: "undo?" }', 'subflow { workflow: "undo" }'])
def test_coordinator_step_types_cannot_compensate(action: str) -> None:
    source = f"workflow w() {{\n  step a: noop {{ compensate {action} }}\n}}\n"

    errors = dsl.compile_source(source, "t.flow").errors

    assert [(d.code, d.span.line, d.span.column) for d in errors] == [("E324", 2, 29)]
    assert action.split()[0] in errors[0].message


@pytest.mark.parametrize("action", ['http { method: "DELETE", url: "https://x.example/1" }', "noop { output: 1 }",
                                    "transform { input: [1], map: item }"])
def test_worker_step_types_compensate(action: str) -> None:
    result = dsl.compile_source(f"workflow w() {{ step a: noop {{ compensate {action} }} }}", "t.flow")

    assert result.ok, result.render()
    assert result.spec("w").step("a").compensate.task_type is not None
