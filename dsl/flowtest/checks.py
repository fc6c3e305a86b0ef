"""What a test may say about its workflow, checked before anything runs (codes T2xx and T3xx).

- T201 the test names no workflow its files declare (or names none when they declare several);
- T202 a mock or expectation names a step the workflow does not have ("did you mean");
- T203 a mock that cannot stand for its step (`approve` on an http step, `output` on an approval,
  an item of a step that is no fan-out,
  a `.compensate` mock of a step that compensates nothing, a mock of a `sleep` or `subflow`);
- T204 two mocks of the same step;
- T206 a `fail` with a class no worker reports (`http_503` for `http.503`);
- T205 a `fire schedule` the workflow has no schedule for (or with `params`: a fire brings its own);
- T301 an expectation that cannot be evaluated (an unknown root, a step field that does not exist,
  a run status that does not exist);
- T302 a mock output that does not fit what the workflow reads from it: a key the workflow reads
  is missing, or a value the workflow reads into is not an object.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from dsl.errors import Diagnostic, error
from dsl.flowtest.model import Expectation, FlowTest, Mock
from dsl.flowtest.reads import Path, output_reads
from dsl.names import did_you_mean
from dsl.spec import StepSpec, WorkflowSpec
from dsl.types import ERROR_CLASSES, is_error_class

# The names an expectation may read: the run, as the run document shows it.
ROOTS = ("status", "output", "error", "params", "steps", "elapsed")
STEP_FIELDS = ("status", "output", "error", "attempts", "compensation", "items")
RUN_STATUSES = ("pending", "running", "completed", "failed", "cancelled", "compensating", "compensated",
                "compensation_failed")
# What a failed attempt may say it is (the language's classes, plus a Python step's NonRetryable).
FAILURE_CLASSES = (*ERROR_CLASSES, "non_retryable")
# Steps the coordinator runs itself: nothing reaches a worker, so there is nothing to mock.
_NOT_MOCKABLE = {"sleep": "a sleep only waits, and the test's clock skips the wait",
                 "subflow": "its child run runs in the test too: mock the child's steps instead"}


def pick_workflow(test: FlowTest, specs: Mapping[str, WorkflowSpec]) -> tuple[WorkflowSpec | None, list[Diagnostic]]:
    """The workflow ``test`` runs: the one it names, else the only one its files declare."""
    if test.workflow is not None:
        if test.workflow in specs:
            return specs[test.workflow], []
        where = test.workflow_span or test.span
        return None, [error("T201", f"no workflow `{test.workflow}` in the files this test uses", where,
                            *did_you_mean(test.workflow, specs))]
    if len(specs) == 1:
        return next(iter(specs.values())), []
    names = ", ".join(f"`{n}`" for n in sorted(specs)) or "none"
    return None, [error("T201", f"say which workflow this test runs (`workflow NAME`); the files declare {names}",
                        test.span)]


def workflows_run(spec: WorkflowSpec, specs: Mapping[str, WorkflowSpec]) -> list[WorkflowSpec]:
    """``spec`` and the workflows its `subflow` steps start (by constant name), transitively:
    their steps run in the test too, and answer to its mocks."""
    found = {spec.name: spec}
    pending = [spec]
    while pending:
        for step in pending.pop().steps:
            child = step.config.get("workflow") if step.type == "subflow" else None
            name = child.get("value") if isinstance(child, dict) and child.get("op") == "lit" else None
            if isinstance(name, str) and name in specs and name not in found:
                found[name] = specs[name]
                pending.append(specs[name])
    return list(found.values())


def check(test: FlowTest, spec: WorkflowSpec, specs: Mapping[str, WorkflowSpec] | None = None) -> list[Diagnostic]:
    """Every problem of ``test`` against the workflow it runs (and the children it starts)."""
    family = workflows_run(spec, specs or {spec.name: spec})
    steps = {s.name: s for w in reversed(family) for s in (*w.steps, *w.on_failure)}
    diagnostics: list[Diagnostic] = []
    seen: set[tuple[str, str]] = set()
    for mock in test.mocks:
        if (mock.label, mock.target) in seen:
            diagnostics.append(error("T204", f"a second mock of `{mock.label}`", mock.step_span))
        seen.add((mock.label, mock.target))
        diagnostics.extend(_check_mock(mock, steps))
    if test.fire is not None:
        diagnostics.extend(_check_fire(test, spec))
    for expectation in test.expectations:
        diagnostics.extend(_check_expectation(expectation, steps))
    for workflow in family:
        diagnostics.extend(_check_fit(test.mocks, workflow, steps))
    return diagnostics


def _check_fire(test: FlowTest, spec: WorkflowSpec) -> Iterator[Diagnostic]:
    where = test.fire_span or test.span
    if not spec.schedules:
        yield error("T205", f"workflow `{spec.name}` has no schedule to fire", where)
    elif test.fire is not None and test.fire > len(spec.schedules):
        yield error("T205", f"workflow `{spec.name}` has {len(spec.schedules)} schedule(s), not {test.fire}", where)
    if test.params is not None:
        yield error("T205", "a fired run takes its schedule's params; remove `params`",
                    test.params_span or where, "note: give the params in the workflow's `schedule { params: ... }`")


def _unknown_step(name: str, where: Any, steps: Mapping[str, StepSpec]) -> Diagnostic:
    return error("T202", f"the workflow has no step `{name}`", where, *did_you_mean(name, steps))


def _check_mock(mock: Mock, steps: Mapping[str, StepSpec]) -> Iterator[Diagnostic]:
    step = steps.get(mock.step)
    if step is None:
        yield _unknown_step(mock.step, mock.step_span, steps)
        return
    if mock.item is not None and step.for_each is None:
        yield error("T203", f"step `{step.name}` is not a fan-out: it has no item {mock.item} to mock", mock.step_span)
    if mock.target == "compensate":
        if step.compensate is None or step.compensate.type is None:
            yield error("T203", f"step `{step.name}` has no compensation to mock", mock.step_span)
        kinds = {o.kind for o in mock.outcomes} - {"output", "fail"}
    elif step.type in _NOT_MOCKABLE:
        yield error("T203", f"step `{step.name}` is a {step.type} step and cannot be mocked", mock.step_span,
                    f"note: {_NOT_MOCKABLE[step.type]}")
        return
    elif step.type == "approval":
        kinds = {o.kind for o in mock.outcomes} - {"approve", "reject", "timeout"}
        if kinds:
            yield error("T203", f"step `{step.name}` is an approval: mock it with `approve`, `reject` or `timeout`",
                        mock.span)
        return
    else:
        kinds = {o.kind for o in mock.outcomes} - {"output", "fail"}
    if kinds:
        yield error("T203", f"`{sorted(kinds)[0]}` answers approvals; `{mock.label}` takes `output` or `fail`",
                    mock.span)
    if "." not in step.type:  # a plugin's handler may fail with classes of its own
        for outcome in mock.outcomes:
            if outcome.kind == "fail" and outcome.error_class not in FAILURE_CLASSES \
                    and not is_error_class(str(outcome.error_class)):
                spelled = _spelled(str(outcome.error_class))
                hint = (f"help: did you mean `{spelled}`?",) if is_error_class(spelled) \
                    else did_you_mean(spelled, FAILURE_CLASSES)
                yield error("T206", f"`{outcome.error_class}` is not an error class a worker reports", outcome.span,
                            *hint, "note: " + ", ".join(FAILURE_CLASSES) + ", http.NNN")


def _spelled(error_class: str) -> str:
    """`http_503` and `HTTP.503` as a user may write them, for "did you mean"."""
    return error_class.lower().replace("_", ".", 1) if error_class.lower().startswith("http") else error_class


def _check_expectation(expectation: Expectation, steps: Mapping[str, StepSpec]) -> Iterator[Diagnostic]:
    if expectation.kind == "status":
        if expectation.status not in RUN_STATUSES:
            yield error("T301", f"`{expectation.status}` is not a run status", expectation.span,
                        *did_you_mean(str(expectation.status), RUN_STATUSES),
                        "note: a run is " + ", ".join(RUN_STATUSES))
        return
    if expectation.kind in ("compensated", "skipped"):
        for name, where in expectation.steps:
            if name not in steps:
                yield _unknown_step(name, where, steps)
        return
    yield from _check_names(expectation.expr, expectation, steps)


def _check_names(tree: Any, expectation: Expectation, steps: Mapping[str, StepSpec]) -> Iterator[Diagnostic]:
    if isinstance(tree, list):
        for element in tree:
            yield from _check_names(element, expectation, steps)
        return
    if not isinstance(tree, dict):
        return
    if tree.get("op") == "name" and tree["name"] not in ROOTS:
        yield error("T301", f"an expectation cannot read `{tree['name']}`", expectation.span,
                    *did_you_mean(tree["name"], ROOTS), "note: it reads " + ", ".join(ROOTS))
        return
    if tree.get("op") == "get" and isinstance(tree.get("obj"), dict) and tree["obj"].get("op") == "get":
        inner = tree["obj"]
        if inner.get("obj") == {"op": "name", "name": "steps"}:
            name, field = inner["key"], tree["key"]
            if name not in steps:
                yield _unknown_step(name, expectation.span, steps)
            elif field not in STEP_FIELDS:
                yield error("T301", f"a step has no field `{field}`", expectation.span,
                            *did_you_mean(field, STEP_FIELDS), "note: a step has " + ", ".join(STEP_FIELDS))
            return
    for value in tree.values():
        if isinstance(value, (dict, list)):
            yield from _check_names(value, expectation, steps)


# -- mock outputs against what the workflow reads ---------------------------------------------------

_UNKNOWN = object()  # a part of a mock output computed at run time: not checked


def _shape(tree: Any) -> Any:
    """What is known of a mock output before it runs: constants, and the keys of objects."""
    if not isinstance(tree, dict):
        return _UNKNOWN
    if tree.get("op") == "lit":
        return tree["value"]
    if tree.get("op") == "object":
        return {key: _shape(value) for key, value in tree["entries"] if isinstance(key, str)}
    return _UNKNOWN


def _check_fit(mocks: tuple[Mock, ...], spec: WorkflowSpec, steps: Mapping[str, StepSpec]) -> Iterator[Diagnostic]:
    reads = output_reads(spec)
    for mock in mocks:
        step = steps.get(mock.step)
        if mock.target != "step" or step is None:
            continue
        fan_out = step.for_each is not None
        for outcome in mock.outcomes:
            if outcome.kind != "output":
                continue
            shape = _shape(outcome.output)
            reported: set[Path] = set()
            for read in reads:
                if read.step != mock.step:
                    continue
                path = read.path
                if fan_out and not read.own:
                    if not path or not isinstance(path[0], int):
                        continue  # the whole list, or a computed item: nothing known to check
                    path = path[1:]
                problem = _misfit(shape, path)
                if problem and path not in reported:
                    reported.add(path)
                    shown = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path)
                    yield error("T302", f"this output of `{mock.step}` {problem}, but {read.reader} reads "
                                        f"`output{shown}`", outcome.span)


def _misfit(shape: Any, path: Path) -> str | None:
    """Why ``shape`` cannot give ``path`` (None when it can, or when it is not known)."""
    walked = ""
    for key in path:
        if shape is _UNKNOWN:
            return None
        label = f"[{key}]" if isinstance(key, int) else f".{key}"
        if isinstance(key, str):
            if not isinstance(shape, dict):
                return f"has {_kind(shape)} at `output{walked}`" if walked else f"is {_kind(shape)}"
            if key not in shape:
                return f"has no `{key}`" + (f" in `output{walked}`" if walked else "")
            shape = shape[key]
        else:
            if not isinstance(shape, list):
                return f"has {_kind(shape)} at `output{walked}`" if walked else f"is {_kind(shape)}"
            if not -len(shape) <= key < len(shape):
                return f"has no item {key} in `output{walked}`"
            shape = shape[key]
        walked += label
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
