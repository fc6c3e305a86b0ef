"""What the store does with the planner's actions, on an in-memory ``RunView`` (pure).

The planner uses it to see the effect of its own actions within one call: a ``Record`` (a skipped
step, an empty fan-out, a config error) produces no result message, so nothing would wake the
coordinator up to plan the steps behind it. It also serves as the reference of the store's
semantics for tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from engine.core.planner.view import (
    Action,
    Dispatch,
    MarkCompensated,
    Record,
    RunView,
    SetRunStatus,
    TaskView,
)
from engine.core.states import TaskStatus


def planned_task_id(kind: str, step: str, item: int | None) -> str:
    """The id given to a task the planner created in the same call (the store assigns real ids)."""
    return f"planned:{kind}:{step}:{'' if item is None else item}"


def apply_actions(run: RunView, actions: Iterable[Action]) -> RunView:
    """``run`` after the store applied ``actions`` in order.

    ``SetRunStatus`` keeps the run's output and error when the action carries ``None`` for them.
    """
    tasks = list(run.tasks)
    status, error = run.status, run.error
    for action in actions:
        if isinstance(action, Dispatch):
            task_id = planned_task_id(action.kind, action.step, action.item)
            tasks.append(
                TaskView(task_id, action.kind, action.step, action.item, TaskStatus.PENDING)
            )
        elif isinstance(action, Record):
            task_id = planned_task_id(action.kind, action.step, action.item)
            tasks.append(
                TaskView(
                    task_id, action.kind, action.step, action.item, action.status,
                    action.output, action.error,
                )
            )
        elif isinstance(action, MarkCompensated):
            tasks = [
                replace(t, status=TaskStatus.COMPENSATED) if t.id == action.task_id else t
                for t in tasks
            ]
        elif isinstance(action, SetRunStatus):
            status = action.status
            error = action.error if action.error is not None else error
    return replace(run, tasks=tuple(tasks), status=status, error=error)
