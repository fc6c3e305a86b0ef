"""Whether a finished run meets its test's expectations (pure: over the run document).

The environment of an expectation is the run as `flow run --json` shows it: `status`, `output`,
`error`, `params`, `steps.NAME.{status, output, error, attempts, compensation, items}` (a fan-out
step's `output` is the list of its items' outputs), and `elapsed`, the virtual seconds from the
run's start to its end (or to where the simulation stopped).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dsl import evaluator
from dsl.flowtest.model import Expectation
from dsl.spec import Span

_COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">=", "in"})


def environment(document: Mapping[str, Any], elapsed: float) -> dict[str, Any]:
    steps: dict[str, Any] = {}
    for step in document.get("steps") or []:
        entry = dict(step)
        if step.get("items") is not None:
            entry["output"] = [item.get("output") for item in step["items"]]
        steps[str(step["name"])] = entry
    return {"status": document.get("status"), "output": document.get("output"), "error": document.get("error"),
            "params": document.get("params"), "steps": steps, "elapsed": elapsed}


def failures(expectations: tuple[Expectation, ...], env: Mapping[str, Any]) -> list[str]:
    """A message for each expectation that does not hold, with its line:col."""
    found: list[str] = []
    for expectation in expectations:
        problem = _judge(expectation, env)
        if problem:
            found.append(f"{_where(expectation.span)}: expect {expectation.source}: {problem}")
    return found


def _where(span: Span) -> str:
    return f"{span.file}:{span.line}:{span.column}"


def _judge(expectation: Expectation, env: Mapping[str, Any]) -> str | None:
    steps: Mapping[str, Any] = env["steps"]
    if expectation.kind == "status":
        if env["status"] == expectation.status:
            return None
        error = env.get("error")
        why = f" ({error.get('type')} in {error.get('step') or 'the run'}: {error.get('message')})" \
            if isinstance(error, dict) else ""
        return f"the run is {env['status']}{why}"
    if expectation.kind in ("compensated", "skipped"):
        wanted = sorted(name for name, _ in expectation.steps)
        if expectation.kind == "compensated":
            actual = sorted(n for n, s in steps.items() if (s.get("compensation") or {}).get("status") == "completed")
        else:
            actual = sorted(n for n, s in steps.items() if s.get("status") == "skipped")
        if wanted == actual:
            return None
        return f"the steps {expectation.kind} are [{', '.join(actual)}]"
    tree = expectation.expr
    try:
        value = evaluator.evaluate(tree, env)
    except evaluator.EvaluationError as exc:
        return f"cannot be evaluated: {exc}"
    if value is True:
        return None
    if value is not False:
        return f"gives {evaluator_show(value)}, not true or false"
    return _explain(tree, env)


def _explain(tree: Any, env: Mapping[str, Any]) -> str:
    """For `a OP b`: the values of both sides, so that the author sees what the run did."""
    if isinstance(tree, dict) and tree.get("op") == "binary" and tree.get("operator") in _COMPARISONS:
        try:
            left = evaluator.evaluate(tree["left"], env)
            right = evaluator.evaluate(tree["right"], env)
        except evaluator.EvaluationError:
            return "is false"
        return f"is false: the left side is {evaluator_show(left)}, the right side {evaluator_show(right)}"
    return "is false"


def evaluator_show(value: Any) -> str:
    """A value as the language's `json()` writes it."""
    return str(evaluator.evaluate({"op": "call", "fn": "json", "args": [{"op": "lit", "value": value}]}, {}))
