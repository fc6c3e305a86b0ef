"""``for each``: the elements a step fans out over, its concurrency, and its state from its items.

Item ``i`` is the ``i``-th element of the *filtered* list (input order), so the item indexes of a
step are always ``0 .. n-1``. The list is recomputed on every planning pass rather than stored: it
depends only on values that are fixed once the step's dependencies are done.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dsl import evaluator
from dsl.spec import StepSpec
from dsl.values import is_list, type_name
from engine.core.planner.step_state import IN_FLIGHT, StepState, condition, task_state
from engine.core.planner.view import TaskView
from engine.core.states import TaskStatus


def expand(step: StepSpec, env: Mapping[str, Any]) -> list[Any]:
    """The elements of ``step``'s ``for each`` that pass its ``where``, in input order.

    Raises ``EvaluationError`` when ``items`` is not a list or an expression fails.
    """
    fan = step.for_each
    assert fan is not None
    items = evaluator.evaluate(fan.items, env)
    if not is_list(items):
        raise evaluator.EvaluationError(
            f"for each {fan.var}: the items must be a list, not a {type_name(items)}"
        )
    if fan.where is None:
        return list(items)
    return [
        element
        for element in items
        if condition(evaluator.evaluate(fan.where, bind(env, step, element)), "where")
    ]


def bind(env: Mapping[str, Any], step: StepSpec, element: Any) -> dict[str, Any]:
    """``env`` with the loop variable of ``step`` bound to ``element``."""
    assert step.for_each is not None
    return {**env, step.for_each.var: element}


def concurrency(step: StepSpec, env: Mapping[str, Any]) -> int | None:
    """How many items of ``step`` may be in flight at once (``None``: no bound)."""
    assert step.for_each is not None
    if step.for_each.concurrency is None:
        return None
    value = evaluator.evaluate(step.for_each.concurrency, env)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise evaluator.EvaluationError(
            f"concurrency must be a positive integer, not {value!r}"
        )
    return value


def aggregate(step: StepSpec, items: Mapping[int, TaskView], total: int) -> StepState:
    """The state of fan-out ``step`` from its item tasks, given ``total`` elements to run.

    ``failed`` as soon as an item failed without ``allow_failure``, even while other items are in
    flight: the run must stop dispatching the remaining items at once (it still waits for the
    ones in flight before compensating). Else in flight while an item is or items remain, then
    ``completed`` with the outputs in input order. With ``allow_failure`` a failed item leaves
    ``null`` at its place and the other items go on.
    """
    states = {index: task_state(task) for index, task in items.items()}
    attempts = max((s.attempts for s in states.values()), default=0)
    failed = [states[i] for i in sorted(states) if states[i].status is TaskStatus.FAILED]
    if failed and not step.allow_failure:
        return StepState(TaskStatus.FAILED, None, failed[0].error, attempts)
    if len(states) < total or any(s.status in IN_FLIGHT for s in states.values()):
        return StepState(TaskStatus.PROCESSING, attempts=attempts)
    outputs = [states[i].output if i in states else None for i in range(total)]
    return StepState(TaskStatus.COMPLETED, outputs, failed[0].error if failed else None, attempts)
