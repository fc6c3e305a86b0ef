"""The ``compensation`` handler: runs a step's undo action through the handler of its own type.

Payload ``{"action": {"type", "task_type", "config"}, "step", "item"}``. The action's ``config`` is
the payload of the wrapped handler, which sees the same message, deadline, secrets and log, so the
compensation keeps the attempt's idempotency key (an undo retried is sent with the same key).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from workers.handler_api import InvalidInput, TaskContext, UnknownTaskType


def handle(task: TaskContext) -> Any:
    """Dispatch ``action.config`` to the handler of ``action.task_type``; return its output."""
    action = task.payload.get("action")
    if not isinstance(action, Mapping):
        raise InvalidInput("compensation needs an 'action' object with 'task_type' and 'config'")
    task_type = action.get("task_type")
    if not isinstance(task_type, str) or not task_type:
        raise InvalidInput(f"compensation action of type {action.get('type')!r} has no task_type")
    if task_type == "compensation":
        raise InvalidInput("a compensation cannot wrap another compensation")
    if task.registry is None:
        raise InvalidInput("compensation needs a handler registry in its task context")
    try:
        handler = task.registry.get(task_type)
    except UnknownTaskType as exc:
        raise InvalidInput(str(exc), task_type=task_type) from None
    config = action.get("config") or {}
    if not isinstance(config, Mapping):
        raise InvalidInput("compensation action 'config' must be an object")
    raw_action = (task.raw_payload or {}).get("action")
    raw_config = raw_action.get("config") if isinstance(raw_action, Mapping) else None
    task.log("info", f"compensating step {task.payload.get('step')!r} with {task_type}",
             item=task.payload.get("item"))
    # replace() keeps the same log list, so the wrapped handler's entries come back with this task.
    inner = replace(task, payload=dict(config), raw_payload=dict(raw_config) if isinstance(raw_config, Mapping) else None)
    return handler(inner)
