"""The DAG walk: given a spec and a view of one run, the next actions (pure, deterministic).

See docs/internals.md, "Planner contract". Everything is derived from the run's tasks on each call:
the planner keeps no state, so calling it twice on the same view gives the same actions, and it
never plans a task whose key ``(kind, step, item)`` already exists.

One call plans until nothing more can happen without a result from a worker: its own ``Record``s
(skips, empty fan-outs, config errors) and status changes are applied to the view in memory
(``planner_apply``) and the walk goes on, because no message would wake the coordinator for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dsl import evaluator
from dsl.spec import StepSpec, WorkflowSpec
from engine.core.planner import fanout
from engine.core.planner.apply import apply_actions
from engine.core.planner.step_state import (
    IN_FLIGHT,
    SUCCEEDED,
    StepState,
    TaskKey,
    base_env,
    condition,
    evaluate_config,
    payload_error,
    task_key,
    task_state,
)
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
from engine.core.states import RunStatus, TaskStatus

R = RunStatus
T = TaskStatus

LIVE_RUN_STATUSES = frozenset({R.PENDING, R.RUNNING, R.COMPENSATING})
COMPENSATION_TASK_TYPE = "compensation"


def next_actions(spec: WorkflowSpec, run: RunView) -> list[Action]:
    """The actions that move ``run`` forward, for the store to apply in order.

    Returns ``[]`` when the run waits for workers, or is terminal or cancelled.
    """
    if run.status not in LIVE_RUN_STATUSES:
        return []
    actions: list[Action] = []
    if run.status is R.PENDING:
        actions.append(SetRunStatus(R.RUNNING))
        run = apply_actions(run, actions)
    # Each pass adds a task or ends the run, so this stops after at most a few passes per step.
    while batch := _Pass(spec, run).plan():
        actions.extend(batch)
        run = apply_actions(run, batch)
    return actions


class _Pass:
    """One walk over a fixed view: derives every step's state, then decides."""

    def __init__(self, spec: WorkflowSpec, run: RunView) -> None:
        self.spec = spec
        self.run = run
        self.tasks: dict[TaskKey, TaskView] = {task_key(t): t for t in run.tasks}
        self.items: dict[tuple[str, str], dict[int, TaskView]] = {}
        for t in run.tasks:
            if t.item is not None:
                self.items.setdefault((t.kind, t.step), {})[t.item] = t
        self.elements: dict[tuple[str, str], list[Any]] = {}
        self.by_name = {step.name: step for step in spec.steps + spec.on_failure}
        self.states: dict[str, StepState] = {}
        self._base_env: dict[str, Any] | None = None
        self._derive(spec.steps, STEP, {})

    # --- decisions ------------------------------------------------------------------------------

    def plan(self) -> list[Action]:
        if self.run.status is R.RUNNING:
            return self._running()
        if self.run.status is R.COMPENSATING:
            return self._compensating()
        return []

    def _running(self) -> list[Action]:
        failure = self._step_failure()
        if failure is None and not all(self._done(s) for s in self.spec.steps):
            if not self.run.timed_out:
                return self._walk(self.spec.steps, STEP, {})
            # A run past its deadline whose steps are all done still completes (below).
            failure = _error("timeout", self._timeout_message(), None)
        if failure is None:
            try:
                output = (
                    None if self.spec.output is None
                    else evaluator.evaluate(self.spec.output, self._env({}))
                )
            except evaluator.EvaluationError as exc:
                failure = _error("invalid_input", f"output: {exc}", None)
            else:
                return [SetRunStatus(R.COMPLETED, output=output)]
        return self._fail(failure)

    def _fail(self, failure: dict[str, Any]) -> list[Action]:
        """The run failed while ``running``: let in-flight steps finish, then the saga."""
        if self._main_in_flight():
            return []
        if self._compensations():
            # The error is stored now: it names the cause even after compensations change statuses.
            return [SetRunStatus(R.COMPENSATING, error=failure)]
        return self._after_saga(failure, R.FAILED)

    def _compensating(self) -> list[Action]:
        """Automatic saga after a failure, or a manual compensate of a finished run."""
        if self._main_in_flight():
            return []
        actions: list[Action] = []
        for task in self.run.tasks:
            if task.kind == COMPENSATION and task.status is T.COMPLETED:
                target = self.tasks.get((STEP, task.step, task.item))
                if target is not None and target.status is T.COMPLETED:
                    actions.append(MarkCompensated(target.id))
        for target in self._compensations():
            done = self.tasks.get((COMPENSATION, target.step, target.item))
            if done is None:
                return actions + [self._compensation_task(target)]
            if done.status in IN_FLIGHT:
                return actions  # one at a time
        if actions:
            return actions
        failed = any(t.kind == COMPENSATION and t.status is T.FAILED for t in self.run.tasks)
        end = R.COMPENSATION_FAILED if failed else R.COMPENSATED
        if self.run.error is None:  # a manual compensate of a completed (or cancelled) run
            return [SetRunStatus(end)]
        return self._after_saga(self.run.error, end)

    def _after_saga(self, failure: dict[str, Any], end: RunStatus) -> list[Action]:
        """Run the ``on failure`` steps, then end the run with ``end``."""
        error_env = {"error": dict(failure)}
        self._derive(self.spec.on_failure, ON_FAILURE, error_env)
        actions = self._walk(self.spec.on_failure, ON_FAILURE, error_env)
        if actions or not all(self._done(s, tolerant=True) for s in self.spec.on_failure):
            return actions
        return [SetRunStatus(end, error=failure)]

    # --- states ---------------------------------------------------------------------------------

    def _derive(self, steps: Sequence[StepSpec], kind: str, extra: dict[str, Any]) -> None:
        """Fill ``self.states`` for ``steps`` (in dependency order, as the spec lists them)."""
        for step in steps:
            self._base_env = None
            record = self.tasks.get((kind, step.name, None))
            items = self.items.get((kind, step.name))
            if record is not None:
                self.states[step.name] = task_state(record)
            elif step.for_each is None or not items:
                self.states[step.name] = StepState()
            else:
                try:
                    elements = fanout.expand(step, self._env(extra))
                except evaluator.EvaluationError as exc:
                    # Its items were computed when it started; only a changed evaluator gets here.
                    error = _error("invalid_input", f"for each: {exc}", step.name)
                    self.states[step.name] = StepState(T.FAILED, None, error)
                    continue
                self.elements[(kind, step.name)] = elements
                self.states[step.name] = fanout.aggregate(step, items, len(elements))
        # The cached env was built while the last fan-out was still being derived.
        self._base_env = None

    def _done(self, step: StepSpec, tolerant: bool = False) -> bool:
        state = self.states[step.name]
        if state.status in SUCCEEDED or state.status is T.SKIPPED:
            return True
        return state.status is T.FAILED and (step.allow_failure or tolerant)

    def _ready(self, step: StepSpec, tolerant: bool) -> bool:
        return all(
            self.states[dep].satisfies(self.by_name[dep], tolerant) for dep in step.depends_on
        )

    def _step_failure(self) -> dict[str, Any] | None:
        """The error of the first step (in spec order) that failed without ``allow_failure``."""
        for step in self.spec.steps:
            state = self.states[step.name]
            if state.status is T.FAILED and not step.allow_failure:
                error = state.error or {}
                return _error(
                    str(error.get("type") or "handler"), str(error.get("message") or ""), step.name
                )
        return None

    def _main_in_flight(self) -> bool:
        return any(t.kind == STEP and t.status in IN_FLIGHT for t in self.run.tasks)

    def _compensations(self) -> list[TaskView]:
        """Succeeded main tasks that have an undo action, latest ``finished_seq`` first."""
        order = {step.name: i for i, step in enumerate(self.spec.steps)}
        targets = [
            t for t in self.run.tasks
            if t.kind == STEP and t.status in SUCCEEDED and t.step in order
            and _undoable(self.by_name[t.step], t)
        ]
        # Ties (no sequence) fall back to the reverse of spec order, which is a topological order.
        return sorted(
            targets,
            key=lambda t: (
                -1 if t.finished_seq is None else t.finished_seq,
                order[t.step],
                -1 if t.item is None else t.item,
            ),
            reverse=True,
        )

    def _env(self, extra: dict[str, Any]) -> dict[str, Any]:
        # States only change in _derive, which drops the cache; building ``steps`` once per pass
        # keeps a wide DAG linear.
        if self._base_env is None:
            self._base_env = base_env(self.spec, self.run, self.states)
        return {**self._base_env, **extra}

    def _timeout_message(self) -> str:
        if self.spec.timeout is None:
            return "the run exceeded its deadline"
        return f"the run exceeded its timeout of {self.spec.timeout:g}s"

    # --- dispatching ----------------------------------------------------------------------------

    def _walk(self, steps: Sequence[StepSpec], kind: str, extra: dict[str, Any]) -> list[Action]:
        """Start every ready step and top up running fan-outs.

        ``on failure`` steps are ``tolerant``: their failures change nothing. If a main step's
        ``Record`` fails the run, only the records are returned, so that nothing is dispatched
        in the same call as the failure that stops the run.
        """
        tolerant = kind == ON_FAILURE
        actions: list[Action] = []
        for step in steps:
            state = self.states[step.name]
            if state.status is None and self._ready(step, tolerant):
                actions.extend(self._start(step, kind, extra))
            elif state.status is T.PROCESSING and (kind, step.name) in self.elements:
                actions.extend(self._more_items(step, kind, extra))
        stopping = [
            a for a in actions
            if isinstance(a, Record) and a.status is T.FAILED
            and not tolerant and not self.by_name[a.step].allow_failure
        ]
        if stopping:
            return [a for a in actions if isinstance(a, Record)]
        return actions

    def _start(self, step: StepSpec, kind: str, extra: dict[str, Any]) -> list[Action]:
        env = self._env(extra)
        try:
            if step.when is not None and not condition(evaluator.evaluate(step.when, env), "when"):
                return [Record(kind, step.name, None, T.SKIPPED)]
            if step.for_each is None:
                return [self._task(step, kind, None, env)]
            elements = fanout.expand(step, env)
            fanout.concurrency(step, env)  # checked before any item starts
        except evaluator.EvaluationError as exc:
            return [Record(kind, step.name, None, T.FAILED, error=_invalid(step, str(exc)))]
        if not elements:
            return [Record(kind, step.name, None, T.COMPLETED, output=[])]
        self.elements[(kind, step.name)] = elements
        return self._more_items(step, kind, extra)

    def _more_items(self, step: StepSpec, kind: str, extra: dict[str, Any]) -> list[Action]:
        env = self._env(extra)
        limit = fanout.concurrency(step, env)
        started = self.items.get((kind, step.name), {})
        in_flight = sum(1 for t in started.values() if t.status in IN_FLIGHT)
        room = len(self.elements[(kind, step.name)]) if limit is None else limit - in_flight
        actions: list[Action] = []
        for index, element in enumerate(self.elements[(kind, step.name)]):
            if room <= 0:
                break
            if index in started:
                continue
            action = self._task(step, kind, index, fanout.bind(env, step, element))
            actions.append(action)
            if isinstance(action, Dispatch):
                room -= 1
            elif not (step.allow_failure or kind == ON_FAILURE):
                break  # the failure stops the run: no more items
        return actions

    def _task(self, step: StepSpec, kind: str, item: int | None, env: dict[str, Any]) -> Action:
        """A dispatch of ``step`` (or one of its items), or a failed record if its input is bad."""
        try:
            config = evaluate_config(step.config, env)
        except evaluator.EvaluationError as exc:
            return Record(kind, step.name, item, T.FAILED, error=_invalid(step, str(exc), item))
        task_type = step.task_type or step.type  # coordinator-handled types keep their own name
        payload = {"operation": step.type, **config} if task_type == "data_processing" else config
        problem = payload_error(payload)
        if problem is not None:
            return Record(kind, step.name, item, T.FAILED, error=_invalid(step, problem, item))
        return Dispatch(kind, step.name, item, task_type, payload, step.retry, step.timeout)

    def _compensation_task(self, target: TaskView) -> Action:
        step = self.by_name[target.step]
        action = step.compensate
        assert action is not None and action.type is not None
        extra: dict[str, Any] = {"self": {"output": target.output}}
        elements = self.elements.get((STEP, step.name))
        if target.item is not None and elements is not None and target.item < len(elements):
            extra[step.for_each.var] = elements[target.item]  # type: ignore[union-attr]
        try:
            config = evaluate_config(action.config, self._env(extra))
        except evaluator.EvaluationError as exc:
            error = _invalid(step, f"compensate: {exc}", target.item)
            return Record(COMPENSATION, step.name, target.item, T.FAILED, error=error)
        payload = {
            "action": {"type": action.type, "task_type": action.task_type, "config": config},
            "step": step.name,
            "item": target.item,
        }
        problem = payload_error(payload)
        if problem is not None:
            error = _invalid(step, f"compensate: {problem}", target.item)
            return Record(COMPENSATION, step.name, target.item, T.FAILED, error=error)
        return Dispatch(
            COMPENSATION, step.name, target.item, COMPENSATION_TASK_TYPE, payload,
            action.retry or step.retry, step.timeout,
        )


def _undoable(step: StepSpec, task: TaskView) -> bool:
    """Whether ``task`` of ``step`` has something to undo.

    The record of a fan-out over zero items did nothing, so it is not compensated.
    """
    action = step.compensate
    if action is None or action.is_none:
        return False
    return step.for_each is None or task.item is not None


def _error(kind: str, message: str, step: str | None) -> dict[str, Any]:
    return {"type": kind, "message": message, "step": step}


def _invalid(step: StepSpec, message: str, item: int | None = None) -> dict[str, Any]:
    where = "" if item is None else f"item {item}: "
    return _error("invalid_input", where + message, step.name)
