"""Compensate one task (the task API's ``POST /api/task/<id>/compensate``).

A task of a run compensates its whole run: the saga undoes the completed steps in reverse order
(``runs.compensate_run``). A standalone task has no declared undo, so the caller gives one,
``{"task_type", "config"}``, and a standalone ``compensation`` task runs it through the handler of
that type (``workers/handlers/compensation.py``), the same way a step's undo runs.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from engine.core.errors import IllegalTransition, InvalidParams, NotFound
from engine.store import runs
from engine.store.context import StoreContext, tasks
from engine.store.db import read_only

COMPENSATION_TYPE = "compensation"


def compensation_key(task_id: str) -> str:
    """The idempotency key of a standalone task's compensation: one per task, however often asked."""
    return f"compensate:{task_id}"


def compensate_task(ctx: StoreContext, task_id: str, action: dict[str, Any] | None = None) -> str | None:
    """Compensate ``task_id``: the id of the new ``compensation`` task, or None for a task of a run
    (its run is compensating). Asking again for a standalone task gives back the same compensation
    (retry that task if it failed).

    Raises:
        NotFound: no such task.
        InvalidParams: a standalone task without ``action``, or a malformed ``action``.
        IllegalTransition: the standalone task is not completed, or the run cannot compensate now.
    """
    with read_only(ctx.engine) as conn:
        row = conn.execute(
            select(tasks.c.id, tasks.c.run_id, tasks.c.status, tasks.c.task_type).where(tasks.c.id == task_id)
        ).mappings().first()
    if row is None:
        raise NotFound("task", task_id)
    if row["run_id"] is not None:
        runs.compensate_run(ctx, row["run_id"])
        return None
    undo = _undo_action(task_id, action)
    # ``completed`` is final for a standalone task (only a failed task can be retried), so checking
    # it outside the insert's transaction cannot race with a change of status.
    if row["status"] != "completed":
        raise IllegalTransition("task", task_id, row["status"], "compensated")
    payload = {"action": undo, "step": None, "item": None, "compensates": task_id}
    return runs.create_task(ctx, COMPENSATION_TYPE, payload, max_attempts=3,
                                      idempotency_key=compensation_key(task_id))


def _undo_action(task_id: str, action: dict[str, Any] | None) -> dict[str, Any]:
    if action is None:
        raise InvalidParams([f"task {task_id} is standalone and has no declared undo; "
                             "send an action {\"task_type\": ..., \"config\": {...}}"])
    task_type = action.get("task_type")
    config = action.get("config") or {}
    problems = []
    if not isinstance(task_type, str) or not task_type:
        problems.append("action.task_type: a task type is required")
    elif task_type == COMPENSATION_TYPE:
        problems.append("action.task_type: a compensation cannot wrap another compensation")
    if not isinstance(config, dict):
        problems.append("action.config: must be an object")
    if problems:
        raise InvalidParams(problems)
    return {"type": action.get("type") or task_type, "task_type": task_type, "config": config}
