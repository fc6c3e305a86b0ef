"""engine.core.planner.walk: the DAG walk, fan-out, failure and saga (pure, no I/O).

Specs are built from the dataclasses of ``dsl.spec`` with expression trees as dicts, so these tests
do not depend on the parser. A small in-memory store (``Run``) applies the planner's actions the way
the real store does and plays the workers' results.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any, Iterable

import pytest

from dsl.spec import Compensation, ForEach, Retry, StepSpec, WorkflowSpec
from engine.core.planner.view import (
    COMPENSATION,
    ON_FAILURE,
    STEP,
    Action,
    Dispatch,
    MarkCompensated,
    Record,
    RunView,
    SetRunStatus,
    TaskView,
)
from engine.core.planner.walk import next_actions
from engine.core.states import TERMINAL_RUN_STATUSES, RunStatus, TaskStatus, can_run

R = RunStatus
T = TaskStatus
IN_FLIGHT = {T.PENDING, T.PROCESSING, T.RETRYING}

# --- expression trees ---------------------------------------------------------------------------


def lit(value: Any) -> dict[str, Any]:
    return {"op": "lit", "value": value}


def ref(root: str, *keys: str) -> dict[str, Any]:
    node: dict[str, Any] = {"op": "name", "name": root}
    for key in keys:
        node = {"op": "get", "obj": node, "key": key}
    return node


def binary(operator: str, left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    return {"op": "binary", "operator": operator, "left": left, "right": right}


def obj(**entries: dict[str, Any]) -> dict[str, Any]:
    return {"op": "object", "entries": [[k, v] for k, v in entries.items()]}


# --- specs --------------------------------------------------------------------------------------

UNDO = Compensation(type="http", task_type="http_request", config={"url": lit("/undo")})


def step(name: str, *deps: str, **fields: Any) -> StepSpec:
    """An ``http`` step with a constant URL unless ``config`` says otherwise."""
    fields.setdefault("config", {"url": lit(f"/{name}")})
    return StepSpec(name=name, type="http", task_type="http_request", depends_on=tuple(deps), **fields)


def workflow(*steps: StepSpec, **fields: Any) -> WorkflowSpec:
    return WorkflowSpec(name="w", steps=tuple(steps), **fields)


# --- an in-memory store and workers -------------------------------------------------------------


class Run:
    """A run's tasks, changed only by the planner's actions and by worker results."""

    def __init__(self, spec: WorkflowSpec, params: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.view = RunView("run-1", R.PENDING, params or {}, {}, workflow_name="w")
        self.seq = itertools.count(1)
        self.ids = itertools.count(1)
        self.log: list[Action] = []
        self.statuses: list[RunStatus] = []

    def plan(self) -> list[Action]:
        """Plan once, check the planner's promises, and apply the actions like the store does."""
        before = self.view
        actions = next_actions(self.spec, before)
        assert next_actions(self.spec, before) == actions, "the planner is not deterministic"
        self.view = apply(self.view, actions, self.ids, self.seq)
        self.log.extend(actions)
        for a in actions:
            if isinstance(a, SetRunStatus):
                self.statuses.append(a.status)
        # Nothing happened since: planning again adds nothing (no duplicate, no lost action).
        assert next_actions(self.spec, self.view) == []
        return actions

    def task(self, step: str, item: int | None = None, kind: str = STEP) -> TaskView:
        [found] = [t for t in self.view.tasks if (t.kind, t.step, t.item) == (kind, step, item)]
        return found

    def finish(
        self, step: str, output: Any = None, *, item: int | None = None, kind: str = STEP,
        error: dict[str, Any] | None = None,
    ) -> list[Action]:
        """A worker reports the end of a task (failed when ``error`` is given), then re-plan."""
        target = self.task(step, item, kind)
        assert target.status in IN_FLIGHT
        self.view = set_task(self.view, target.id, output, error, next(self.seq))
        return self.plan()

    def fail(self, step: str, kind: str = STEP, item: int | None = None, **error: Any) -> list[Action]:
        error = {"type": "http.500", "message": "boom", **error}
        return self.finish(step, item=item, kind=kind, error=error)

    def dispatched(self, kind: str = STEP) -> list[tuple[str, int | None]]:
        return [(a.step, a.item) for a in self.log if isinstance(a, Dispatch) and a.kind == kind]


def apply(view: RunView, actions: Iterable[Action], ids: Iterable[int], seq: Iterable[int]) -> RunView:
    """The store's side of the contract, written independently of ``engine.core.planner.apply``."""
    tasks = list(view.tasks)
    keys = {(t.kind, t.step, t.item) for t in tasks}
    status, error = view.status, view.error
    ids, seq = iter(ids), iter(seq)
    for a in actions:
        assert status not in TERMINAL_RUN_STATUSES, "actions for a terminal run"
        if isinstance(a, (Dispatch, Record)):
            key = (a.kind, a.step, a.item)
            assert key not in keys, f"task {key} planned twice"
            keys.add(key)
            if isinstance(a, Dispatch):
                tasks.append(TaskView(f"t{next(ids)}", a.kind, a.step, a.item, T.PENDING))
            else:
                finished = next(seq) if a.status is T.COMPLETED else None
                tasks.append(
                    TaskView(f"t{next(ids)}", a.kind, a.step, a.item, a.status, a.output, a.error,
                             finished_seq=finished)
                )
        elif isinstance(a, MarkCompensated):
            [target] = [t for t in tasks if t.id == a.task_id]
            assert target.status is T.COMPLETED
            tasks = [replace(t, status=T.COMPENSATED) if t.id == a.task_id else t for t in tasks]
        else:
            assert can_run(status, a.status), f"illegal run transition {status} -> {a.status}"
            status = a.status
            error = a.error if a.error is not None else error
    return replace(view, tasks=tuple(tasks), status=status, error=error)


def set_task(view: RunView, task_id: str, output: Any, error: Any, finished_seq: int) -> RunView:
    status = T.FAILED if error else T.COMPLETED
    tasks = tuple(
        replace(t, status=status, output=None if error else output, error=error,
                finished_seq=finished_seq)
        if t.id == task_id else t
        for t in view.tasks
    )
    return replace(view, tasks=tasks)


def last_status(actions: list[Action]) -> SetRunStatus:
    return [a for a in actions if isinstance(a, SetRunStatus)][-1]


# --- scenarios ----------------------------------------------------------------------------------


def test_chain_runs_steps_one_after_another_and_completes_with_the_output() -> None:
    # Given a -> b whose output is b's output
    spec = workflow(
        step("a"), step("b", "a", config={"n": ref("steps", "a", "output")}),
        output=obj(result=ref("steps", "b", "output")),
    )
    run = Run(spec)
    # When the run starts
    first = run.plan()
    # Then it becomes running and only a is dispatched
    assert first[0] == SetRunStatus(R.RUNNING)
    assert run.dispatched() == [("a", None)]
    assert first[1] == Dispatch(STEP, "a", None, "http_request", {"url": "/a"}, Retry(), None)
    # When a completes, b is dispatched with a's output in its payload
    [dispatch_b] = run.finish("a", 41)
    assert isinstance(dispatch_b, Dispatch) and dispatch_b.payload == {"n": 41}
    # When b completes, the run completes with the evaluated output
    assert run.finish("b", 42) == [SetRunStatus(R.COMPLETED, output={"result": 42})]
    assert run.statuses == [R.RUNNING, R.COMPLETED]


def test_diamond_dispatches_the_join_only_when_both_branches_are_done() -> None:
    spec = workflow(step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c"))
    run = Run(spec)
    run.plan()
    assert [a.step for a in run.finish("a") if isinstance(a, Dispatch)] == ["b", "c"]
    assert run.finish("c") == []  # d still waits for b
    assert [a.step for a in run.finish("b")] == ["d"]
    assert last_status(run.finish("d")).status is R.COMPLETED


def test_a_false_when_skips_the_step_with_null_output_and_its_dependents_run() -> None:
    # Given b runs only when a's output is big, and c reads b's status and output
    spec = workflow(
        step("a"),
        step("b", "a", when=binary(">", ref("steps", "a", "output"), lit(10))),
        step("c", "b", config={"b": ref("steps", "b", "output"), "s": ref("steps", "b", "status")}),
    )
    run = Run(spec)
    run.plan()
    # When a's output is small
    actions = run.finish("a", 3)
    # Then b is recorded skipped and c is dispatched in the same call
    assert actions[0] == Record(STEP, "b", None, T.SKIPPED)
    assert isinstance(actions[1], Dispatch) and actions[1].payload == {"b": None, "s": "skipped"}


def test_a_when_on_a_null_value_skips_rather_than_fails() -> None:
    spec = workflow(step("a", when=ref("params", "missing", "flag")))
    actions = Run(spec).plan()
    assert Record(STEP, "a", None, T.SKIPPED) in actions
    assert last_status(actions).status is R.COMPLETED


def test_allow_failure_leaves_null_output_and_the_run_goes_on() -> None:
    spec = workflow(
        step("a", allow_failure=True),
        step("b", "a", config={"a": ref("steps", "a", "output"), "e": ref("steps", "a", "error", "type")}),
    )
    run = Run(spec)
    run.plan()
    [dispatch_b] = run.fail("a", type="http.404")
    assert isinstance(dispatch_b, Dispatch) and dispatch_b.payload == {"a": None, "e": "http.404"}
    assert last_status(run.finish("b")).status is R.COMPLETED


def lines_spec(concurrency: int | None = 2, allow_failure: bool = False) -> WorkflowSpec:
    """``for each line in params.lines where line.qty > 0``, compensated, then ``ship``."""
    fan = ForEach(
        var="line",
        items=ref("params", "lines"),
        where=binary(">", ref("line", "qty"), lit(0)),
        concurrency=None if concurrency is None else lit(concurrency),
    )
    undo = Compensation(
        type="http", task_type="http_request",
        config={"id": ref("self", "output"), "sku": ref("line", "sku")},
    )
    reserve = step("reserve", config={"sku": ref("line", "sku")}, for_each=fan,
                   compensate=undo, allow_failure=allow_failure)
    ship = step("ship", "reserve", config={"lines": ref("steps", "reserve", "output")})
    return workflow(reserve, ship)


LINES = [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 0}, {"sku": "C", "qty": 2}, {"sku": "D", "qty": 5}]


def test_fan_out_filters_with_where_and_keeps_concurrency_in_flight() -> None:
    # Given three lines that pass the where, concurrency 2
    run = Run(lines_spec(concurrency=2), {"lines": LINES})
    # When the run starts, items 0 and 1 (A and C: B is filtered out) are dispatched
    run.plan()
    assert run.dispatched() == [("reserve", 0), ("reserve", 1)]
    assert run.task("reserve", 1).step == "reserve"
    assert [a.payload for a in run.log if isinstance(a, Dispatch)] == [{"sku": "A"}, {"sku": "C"}]
    # When item 1 completes first, item 2 (D) takes its place
    [d] = run.finish("reserve", "r-C", item=1)
    assert (d.item, d.payload) == (2, {"sku": "D"})
    # When the others complete in any order, ship gets the outputs in input order
    assert run.finish("reserve", "r-D", item=2) == []
    [ship] = run.finish("reserve", "r-A", item=0)
    assert isinstance(ship, Dispatch) and ship.payload == {"lines": ["r-A", "r-C", "r-D"]}


def test_fan_out_over_zero_items_completes_with_an_empty_list() -> None:
    run = Run(lines_spec(), {"lines": [{"sku": "B", "qty": 0}]})
    actions = run.plan()
    assert actions[1] == Record(STEP, "reserve", None, T.COMPLETED, output=[])
    assert isinstance(actions[2], Dispatch) and actions[2].payload == {"lines": []}


def test_fan_out_with_allow_failure_leaves_null_for_a_failed_item() -> None:
    run = Run(lines_spec(concurrency=None, allow_failure=True), {"lines": LINES})
    run.plan()
    run.fail("reserve", item=1)
    run.finish("reserve", "r-A", item=0)
    [ship] = run.finish("reserve", "r-D", item=2)
    assert isinstance(ship, Dispatch) and ship.payload == {"lines": ["r-A", None, "r-D"]}


def test_items_that_are_not_a_list_fail_the_step_with_invalid_input() -> None:
    run = Run(lines_spec(), {"lines": "oops"})
    actions = run.plan()
    [record] = [a for a in actions if isinstance(a, Record)]
    assert record.status is T.FAILED and record.error is not None
    assert record.error["type"] == "invalid_input" and record.error["step"] == "reserve"
    assert last_status(actions) == SetRunStatus(R.FAILED, error=record.error)


def test_a_config_evaluation_error_fails_the_step_and_the_run() -> None:
    # Given a step whose config divides by zero
    spec = workflow(step("a", config={"x": binary("/", lit(1), lit(0))}))
    actions = Run(spec).plan()
    # Then the step is recorded failed (invalid_input, naming the step) and the run fails
    record = actions[1]
    assert isinstance(record, Record) and record.status is T.FAILED
    assert record.error is not None and record.error["type"] == "invalid_input"
    assert record.error["step"] == "a"
    assert actions[-1] == SetRunStatus(R.FAILED, error=record.error)


def test_a_payload_over_one_mebibyte_fails_with_invalid_input() -> None:
    spec = workflow(step("a", config={"blob": ref("params", "blob")}))
    actions = Run(spec, {"blob": "x" * (1 << 20)}).plan()
    record = actions[1]
    assert isinstance(record, Record) and record.error is not None
    assert record.error["type"] == "invalid_input" and "1 MiB" in record.error["message"]


def test_data_processing_payload_carries_the_operation() -> None:
    transform = StepSpec(
        "t", "transform", "data_processing",
        config={"input": ref("params", "xs"), "map": {"op": "lambda", "param": "item",
                                                       "body": ref("item", "v")}},
    )
    [_, dispatch] = Run(workflow(transform), {"xs": [1]}).plan()
    assert isinstance(dispatch, Dispatch) and dispatch.task_type == "data_processing"
    assert dispatch.payload["operation"] == "transform"
    assert dispatch.payload["input"] == [1]
    assert "$expr" in dispatch.payload["map"]  # the lambda is evaluated per element by the worker


def test_secrets_stay_deferred_in_the_payload() -> None:
    header = {"op": "interp", "parts": ["Bearer ", ref("secrets", "token")]}
    spec = workflow(step("a", config={"headers": obj(auth=header), "id": ref("params", "id")}))
    [_, dispatch] = Run(spec, {"id": 7}).plan()
    assert isinstance(dispatch, Dispatch)
    assert dispatch.payload["id"] == 7
    deferred = dispatch.payload["headers"]["auth"]
    assert set(deferred) == {"$expr"} and "token" in str(deferred)


def test_an_output_that_cannot_be_evaluated_fails_the_run() -> None:
    spec = workflow(step("a"), output=binary("/", lit(1), lit(0)))
    run = Run(spec)
    run.plan()
    end = last_status(run.finish("a"))
    assert end.status is R.FAILED and end.error is not None
    assert end.error["type"] == "invalid_input" and end.error["step"] is None


def saga_spec() -> WorkflowSpec:
    """charge ‖ reserve[×3], then ship; charge and each item have an undo; alert on failure."""
    charge = step("charge", compensate=Compensation(
        type="http", task_type="http_request", config={"refund": ref("self", "output")},
        retry=Retry(attempts=9)))
    alert = StepSpec("alert", "http", "http_request", config={
        "text": {"op": "interp", "parts": [ref("error", "step"), ": ", ref("error", "message")]},
        "type": ref("error", "type"),
    })
    base = lines_spec(concurrency=None)
    reserve, ship = base.steps
    return workflow(charge, reserve, replace(ship, depends_on=("charge", "reserve")),
                    on_failure=(alert,))


def test_failure_compensates_in_reverse_completion_order_then_runs_on_failure_steps() -> None:
    # Given charge and three reservation items completed in a mixed order
    run = Run(saga_spec(), {"lines": LINES})
    run.plan()
    run.finish("reserve", "r-C", item=1)
    run.finish("charge", "ch-1")
    run.finish("reserve", "r-A", item=0)
    run.finish("reserve", "r-D", item=2)
    # When ship fails for good
    _, comp = run.fail("ship", message="no truck")
    # Then the run is compensating and the last completed task is undone first, one at a time
    assert run.statuses[-1] is R.COMPENSATING
    assert (comp.kind, comp.step, comp.item) == (COMPENSATION, "reserve", 2)
    assert comp.task_type == "compensation"
    assert comp.payload == {
        "action": {"type": "http", "task_type": "http_request", "config": {"id": "r-D", "sku": "D"}},
        "step": "reserve", "item": 2,
    }
    mark, nxt = run.finish("reserve", kind=COMPENSATION, item=2)
    assert mark == MarkCompensated(run.task("reserve", 2).id)
    assert (nxt.step, nxt.item) == ("reserve", 0)
    mark, nxt = run.finish("reserve", kind=COMPENSATION, item=0)
    # charge's compensation has its own retry policy
    assert isinstance(nxt, Dispatch) and nxt.step == "charge" and nxt.retry == Retry(attempts=9)
    assert nxt.payload["action"]["config"] == {"refund": "ch-1"}
    run.finish("charge", kind=COMPENSATION)
    [_, alert] = run.finish("reserve", kind=COMPENSATION, item=1)
    # Then the on failure step sees the error
    assert isinstance(alert, Dispatch) and alert.kind == ON_FAILURE
    assert alert.payload == {"text": "ship: no truck", "type": "http.500"}
    end = run.finish("alert", kind=ON_FAILURE)
    assert end == [SetRunStatus(R.COMPENSATED, error={"type": "http.500", "message": "no truck",
                                                      "step": "ship"})]
    assert run.dispatched(COMPENSATION) == [("reserve", 2), ("reserve", 0), ("charge", None),
                                            ("reserve", 1)]


def test_failure_waits_for_steps_in_flight_before_compensating() -> None:
    run = Run(saga_spec(), {"lines": LINES})
    run.plan()
    run.finish("charge", "ch-1")
    # When an item fails while the two others are in flight, nothing happens yet
    assert run.fail("reserve", item=0) == []
    assert run.finish("reserve", "r-C", item=1) == []
    # When the last one ends, the saga starts with the latest completion
    actions = run.finish("reserve", "r-D", item=2)
    assert actions[0].status is R.COMPENSATING  # type: ignore[union-attr]
    assert (actions[1].kind, actions[1].step, actions[1].item) == (COMPENSATION, "reserve", 2)  # type: ignore[union-attr]


def test_a_failed_compensation_ends_compensation_failed_but_the_others_still_run() -> None:
    run = Run(saga_spec(), {"lines": [{"sku": "A", "qty": 1}]})
    run.plan()
    run.finish("reserve", "r-A", item=0)
    run.finish("charge", "ch-1")
    run.fail("ship")
    [nxt] = run.fail("charge", kind=COMPENSATION)
    assert (nxt.step, nxt.item) == ("reserve", 0)  # type: ignore[union-attr]
    run.finish("reserve", kind=COMPENSATION, item=0)
    end = run.finish("alert", kind=ON_FAILURE, error={"type": "handler", "message": "x"})
    assert last_status(end).status is R.COMPENSATION_FAILED
    assert run.task("charge").status is T.COMPLETED
    assert run.task("reserve", 0).status is T.COMPENSATED


def test_failure_with_nothing_to_compensate_runs_on_failure_and_ends_failed() -> None:
    spec = workflow(step("a"), step("b", "a"),
                    on_failure=(step("alert"), step("page", "alert")))
    run = Run(spec)
    run.plan()
    run.finish("a")
    [alert] = run.fail("b")
    assert alert.kind == ON_FAILURE and alert.step == "alert"  # type: ignore[union-attr]
    # The on failure steps' own failures change nothing, and they run in dependency order
    [page] = run.fail("alert", kind=ON_FAILURE)
    assert page.step == "page"  # type: ignore[union-attr]
    end = run.finish("page", kind=ON_FAILURE)
    assert end == [SetRunStatus(R.FAILED, error={"type": "http.500", "message": "boom", "step": "b"})]
    assert R.COMPENSATING not in run.statuses


def test_timeout_fails_the_run_with_error_type_timeout() -> None:
    spec = workflow(step("a", compensate=UNDO), step("b", "a"), step("c", "b"), timeout=60.0)
    run = Run(spec)
    run.plan()
    run.finish("a")
    # When the coordinator marks the run timed out while b runs
    run.view = replace(run.view, timed_out=True)
    assert run.plan() == []  # b is still in flight
    # Then c is never dispatched, and a is compensated with the timeout as the error
    actions = run.finish("b")
    assert actions[0] == SetRunStatus(R.COMPENSATING, error={
        "type": "timeout", "message": "the run exceeded its timeout of 60s", "step": None})
    assert run.dispatched() == [("a", None), ("b", None)]
    assert last_status(run.finish("a", kind=COMPENSATION)).status is R.COMPENSATED


def test_manual_compensate_of_a_completed_run() -> None:
    # Given a completed run with two compensable steps and one without
    spec = workflow(step("a", compensate=UNDO), step("b", "a", compensate=UNDO),
                    step("c", "b", compensate=Compensation(none_reason="read-only")),
                    on_failure=(step("alert"),))
    run = Run(spec)
    run.plan()
    for name in "abc":
        run.finish(name)
    assert run.statuses[-1] is R.COMPLETED
    assert next_actions(spec, run.view) == []  # terminal: no actions
    # When an operator asks to compensate
    run.view = replace(run.view, status=R.COMPENSATING)
    [first] = run.plan()
    # Then b then a are undone, no on failure step runs, and the run ends compensated
    assert (first.kind, first.step) == (COMPENSATION, "b")  # type: ignore[union-attr]
    run.finish("b", kind=COMPENSATION)
    assert run.finish("a", kind=COMPENSATION)[-1] == SetRunStatus(R.COMPENSATED)
    assert run.dispatched(ON_FAILURE) == []


def test_pending_and_cancelled_and_terminal_runs() -> None:
    spec = workflow(step("a"))
    for status in (R.CANCELLED, R.COMPLETED, R.FAILED, R.COMPENSATED, R.COMPENSATION_FAILED):
        assert next_actions(spec, RunView("r", status, {}, {})) == []
    # An empty workflow completes on its first call
    assert next_actions(workflow(), RunView("r", R.PENDING, {}, {})) == [
        SetRunStatus(R.RUNNING), SetRunStatus(R.COMPLETED)]


def test_the_environment_has_workflow_params_and_lets() -> None:
    spec = workflow(step("a", config={
        "wf": ref("workflow", "name"), "run": ref("workflow", "run_id"),
        "p": ref("params", "x"), "base": ref("base"),
    }))
    run = Run(spec, {"x": 1})
    run.view = replace(run.view, values={"base": "https://b"})
    [_, dispatch] = run.plan()
    assert dispatch.payload == {"wf": "w", "run": "run-1", "p": 1, "base": "https://b"}  # type: ignore[union-attr]


# --- exhaustive: every small DAG, every order of results ------------------------------------------

OK = "ok"
BAD = "bad"
TIMEOUT = "timeout"


def all_dags(max_steps: int) -> Iterable[tuple[int, frozenset[tuple[int, int]]]]:
    """Every DAG on 1..max_steps steps, as (n, edges i -> j with i < j) in topological order."""
    for n in range(1, max_steps + 1):
        pairs = [(i, j) for j in range(n) for i in range(j)]
        for mask in range(1 << len(pairs)):
            yield n, frozenset(p for k, p in enumerate(pairs) if mask >> k & 1)


def dag_spec(n: int, edges: frozenset[tuple[int, int]], flags: tuple[str, ...],
             on_failure: bool) -> WorkflowSpec:
    """Steps s0..s{n-1}; ``flags[i]`` is "" or a mix of "c" (compensate) and "a" (allow_failure)."""
    steps = [
        step(f"s{j}", *(f"s{i}" for i, k in sorted(edges) if k == j),
             compensate=UNDO if "c" in flags[j] else None, allow_failure="a" in flags[j])
        for j in range(n)
    ]
    handlers = (step("alert", config={"e": ref("error", "type")}),) if on_failure else ()
    return workflow(*steps, on_failure=handlers, timeout=10.0)


class Explorer:
    """Depth-first search over every order of worker results (and a run timeout) for one spec.

    States are memoised on the tasks and run status: the invariants checked at a state depend
    only on it, so a state reached by two paths needs checking once.
    """

    def __init__(self, spec: WorkflowSpec, with_timeout: bool, items: int | None = None) -> None:
        self.spec = spec
        self.items = items  # the number of elements of the fan-out step, if there is one
        self.with_timeout = with_timeout
        self.seen: set[Any] = set()
        self.leaves = 0
        self.paths = 0

    def explore(self, params: dict[str, Any] | None = None) -> None:
        view = RunView("r", R.PENDING, params or {}, {}, workflow_name="w")
        self._visit(self._plan(view))

    def _key(self, view: RunView) -> Any:
        tasks = sorted((t.kind, t.step, t.item or 0, t.status.value, t.finished_seq or 0)
                       for t in view.tasks)
        return view.status, view.timed_out, tuple(tasks)

    def _visit(self, view: RunView) -> None:
        key = self._key(view)
        if key in self.seen:
            return
        self.seen.add(key)
        events = self._events(view)
        if not events:
            self._check_leaf(view)
            return
        for event in events:
            self._visit(self._plan(self._happen(view, event)))

    def _events(self, view: RunView) -> list[tuple[str, str | None]]:
        if view.status in TERMINAL_RUN_STATUSES:
            return []
        events = [(outcome, t.id) for t in view.tasks if t.status in IN_FLIGHT
                  for outcome in (OK, BAD)]
        if self.with_timeout and view.status is R.RUNNING and not view.timed_out:
            events.append((TIMEOUT, None))
        return events

    def _happen(self, view: RunView, event: tuple[str, str | None]) -> RunView:
        outcome, task_id = event
        if outcome == TIMEOUT:
            return replace(view, timed_out=True)
        [task] = [t for t in view.tasks if t.id == task_id]
        seq = 1 + max((t.finished_seq or 0 for t in view.tasks), default=0)
        error = {"type": "http.500", "message": f"{task.step} broke"} if outcome == BAD else None
        return set_task(view, task.id, f"{task.step}-out", error, seq)

    def _plan(self, view: RunView) -> RunView:
        actions = next_actions(self.spec, view)
        assert next_actions(self.spec, view) == actions
        if view.status in TERMINAL_RUN_STATUSES:
            assert actions == []
        self._check_dispatches(view, actions)
        seq = itertools.count(1 + max((t.finished_seq or 0 for t in view.tasks), default=0))
        after = apply(view, actions, (f"{len(view.tasks)}.{k}" for k in itertools.count()), seq)
        assert next_actions(self.spec, after) == []
        self._check_concurrency(after)
        return after

    def _stopped(self, view: RunView) -> bool:
        """Whether the run has a reason to stop dispatching main steps."""
        return view.timed_out or any(
            t.kind == STEP and t.status is T.FAILED and not self.spec.step(t.step).allow_failure
            for t in view.tasks
        )

    def _check_dispatches(self, view: RunView, actions: list[Action]) -> None:
        tasks = {(t.kind, t.step, t.item): t for t in view.tasks}
        in_flight_comps = sum(1 for t in view.tasks if t.kind == COMPENSATION and t.status in IN_FLIGHT)
        for a in actions:
            if isinstance(a, Dispatch) and a.kind == STEP:
                assert not self._stopped(view), "dispatched after the run failed"
                for dep in self.spec.step(a.step).depends_on:
                    self._check_done(dep, [t for k, t in tasks.items() if k[:2] == (STEP, dep)])
            if isinstance(a, Dispatch) and a.kind == COMPENSATION:
                in_flight_comps += 1
                assert in_flight_comps == 1, "two compensations at once"
                assert not any(t.kind == STEP and t.status in IN_FLIGHT for t in view.tasks)
            if isinstance(a, (Dispatch, Record)):
                tasks[(a.kind, a.step, a.item)] = TaskView(
                    "x", a.kind, a.step, a.item, a.status if isinstance(a, Record) else T.PENDING)

    def _check_done(self, dep: str, dep_tasks: list[TaskView]) -> None:
        assert dep_tasks, f"dispatched before {dep} started"
        allowed = self.spec.step(dep).allow_failure
        for t in dep_tasks:
            assert t.status in (T.COMPLETED, T.SKIPPED) or (t.status is T.FAILED and allowed), (
                f"dispatched before {dep} was done")
        if self.items is not None and self.spec.step(dep).for_each is not None:
            assert len(dep_tasks) == max(self.items, 1), f"dispatched before every {dep} item ran"

    def _check_concurrency(self, view: RunView) -> None:
        for s in self.spec.steps:
            if s.for_each is not None and s.for_each.concurrency is not None:
                running = sum(1 for t in view.tasks
                              if (t.kind, t.step) == (STEP, s.name) and t.status in IN_FLIGHT)
                assert running <= s.for_each.concurrency["value"]

    def _check_leaf(self, view: RunView) -> None:
        self.leaves += 1
        assert view.status in TERMINAL_RUN_STATUSES, f"stuck in {view.status}: {view.tasks}"
        assert not any(t.status in IN_FLIGHT for t in view.tasks)
        main = [t for t in view.tasks if t.kind == STEP]
        comps = sorted((t for t in view.tasks if t.kind == COMPENSATION),
                       key=lambda t: t.finished_seq or 0)
        handlers = [t for t in view.tasks if t.kind == ON_FAILURE]
        all_ran = {t.step for t in main} == {s.name for s in self.spec.steps}
        failed = self._stopped(view) and not (
            all_ran and all(t.status is not T.FAILED or self.spec.step(t.step).allow_failure
                            for t in main)
        )
        if not failed:
            assert view.status is R.COMPLETED
            assert comps == [] and handlers == []
            return
        # Exactly the completed steps with an undo action, latest completion first
        undoable = sorted(
            (t for t in main if t.status in (T.COMPLETED, T.COMPENSATED)
             and self.spec.step(t.step).compensate is not None
             and not (self.spec.step(t.step).for_each and t.item is None)),
            key=lambda t: t.finished_seq or 0, reverse=True,
        )
        assert [(t.step, t.item) for t in comps] == [(t.step, t.item) for t in undoable]
        for target, comp in zip(undoable, comps):
            assert (target.status is T.COMPENSATED) == (comp.status is T.COMPLETED)
        assert len(handlers) == len(self.spec.on_failure)
        if not comps:
            assert view.status is R.FAILED
        elif any(c.status is T.FAILED for c in comps):
            assert view.status is R.COMPENSATION_FAILED
        else:
            assert view.status is R.COMPENSATED
        assert view.error is not None and view.error["type"] in ("http.500", "timeout")


FLAG_CHOICES = ("", "c", "a", "ca")


def test_exhaustive_small_dags_every_result_order() -> None:
    # Given every DAG of up to 4 steps, with every step compensable, and one on-failure handler
    # When every task completes or fails, in every order, and the run may time out at any point
    # Then the invariants of Explorer hold in every state
    dags = states = leaves = 0
    for n, edges in all_dags(4):
        explorer = Explorer(dag_spec(n, edges, ("c",) * n, on_failure=True), with_timeout=True)
        explorer.explore()
        dags += 1
        states += len(explorer.seen)
        leaves += explorer.leaves
    assert dags == 1 + 2 + 8 + 64
    print(f"{dags} DAGs, {states} states, {leaves} end states")


@pytest.mark.parametrize("n", [1, 2, 3])
def test_exhaustive_small_dags_every_flag_combination(n: int) -> None:
    # Every DAG of n steps, every mix of compensate / allow_failure per step, with and without an
    # on-failure handler; results in every order (the timeout is covered by the test above)
    count = 0
    for size, edges in all_dags(n):
        if size != n:
            continue
        for flags in itertools.product(FLAG_CHOICES, repeat=n):
            for handler in (False, True):
                Explorer(dag_spec(n, edges, flags, handler), with_timeout=False).explore()
                count += 1
    assert count == (1 << (n * (n - 1) // 2)) * len(FLAG_CHOICES) ** n * 2


@pytest.mark.parametrize("items", [0, 1, 2, 3])
@pytest.mark.parametrize("concurrency", [1, 2, 3])
@pytest.mark.parametrize("allow_failure", [False, True])
def test_exhaustive_fan_out_every_result_order(items: int, concurrency: int, allow_failure: bool) -> None:
    # Given pre -> reserve[x items] -> ship, all compensable, with an on-failure handler
    fan = ForEach(var="x", items=ref("params", "xs"), concurrency=lit(concurrency))
    spec = workflow(
        step("pre", compensate=UNDO),
        step("reserve", "pre", config={"x": ref("x")}, for_each=fan, compensate=UNDO,
             allow_failure=allow_failure),
        step("ship", "reserve", compensate=UNDO),
        on_failure=(step("alert"),), timeout=10.0,
    )
    # When every task (item, compensation, handler) completes or fails in every order, and the
    # run may time out at any point
    explorer = Explorer(spec, with_timeout=True, items=items)
    explorer.explore({"xs": list(range(items))})
    # Then the invariants hold, including "never more than `concurrency` items in flight"
    assert explorer.leaves > 0
