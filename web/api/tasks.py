"""The task API's task endpoints: create a standalone task, read it, retry it, compensate it."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, url_for

from web.api import schemas
from web.api.context import store
from web.api.errors import ApiError
from web.api.operations import operation
from web.api.render import json_response, plain
from web.api.validation import idempotency_key, json_body

bp = Blueprint("tasks", __name__, url_prefix="/task")

IDEMPOTENCY_HEADER = "Idempotency-Key"
TASK_ERRORS = {404: ("No such task", "Error")}


def task_document(task_id: str) -> dict[str, Any]:
    """The task as the API shows it: the store's view plus the task API's ``type`` field."""
    document = plain(store().get_task(task_id))
    if isinstance(document, dict) and "type" not in document and "task_type" in document:
        document["type"] = document["task_type"]
    return document  # type: ignore[no-any-return]


def max_attempts(body: dict[str, Any]) -> int:
    """``max_attempts``, or the task API's ``maxRetries`` + 1, or 3."""
    if "max_attempts" in body:
        return int(body["max_attempts"])
    if "maxRetries" in body:
        return int(body["maxRetries"]) + 1
    return 3


@bp.post("")
@operation(
    "Create a standalone task (the task API's body)",
    tag="tasks", role="operator", body="CreateTask",
    headers={IDEMPOTENCY_HEADER: "Repeat a create safely: the same key gives back the same task."},
    responses={201: ("The new task, pending", "Task"), 400: ("Malformed body", "Error")},
)
def create() -> Response:
    body = json_body(schemas.CREATE_TASK)
    task_id = store().create_task(body["type"], body.get("payload") or {}, max_attempts=max_attempts(body),
                                  idempotency_key=idempotency_key())
    location = url_for(".get", task_id=str(task_id))
    return json_response(task_document(str(task_id)), 201, {"Location": location})


@bp.get("/<task_id>")
@operation("A task with its status, attempts, output and error", tag="tasks", role="viewer",
           responses={200: ("The task", "Task"), **TASK_ERRORS})
def get(task_id: str) -> Response:
    return json_response(task_document(task_id))


@bp.post("/<task_id>/retry")
@operation(
    "Retry a failed task", tag="tasks", role="operator",
    responses={200: ("The task, pending again", "Task"), **TASK_ERRORS,
               409: ("The task is not failed (e.g. completed)", "Error")},
)
def retry(task_id: str) -> Response:
    store().retry_task(task_id)
    return json_response(task_document(task_id))


@bp.post("/<task_id>/compensate")
@operation(
    "Trigger the compensation of a task",
    tag="tasks", role="operator", body="CompensateTask", body_required=False,
    responses={202: ("The compensation was queued", "Task"), **TASK_ERRORS,
               409: ("The task cannot be compensated now", "Error"),
               422: ("A standalone task needs an undo action", "Error")},
    description="A task of a run compensates its whole run (the saga, in reverse completion order). "
                "A standalone task has no declared undo: send `{\"action\": {\"task_type\", \"config\"}}` "
                "and a `compensation` task runs it.",
)
def compensate(task_id: str) -> Response:
    body = json_body(schemas.COMPENSATE_TASK, optional=True)
    task = task_document(task_id)
    action = body.get("action")
    if not task.get("run_id") and action is None:
        raise ApiError(422, "no_compensation",
                       f"Task {task_id} is standalone and has no declared undo; send "
                       "{\"action\": {\"task_type\": ..., \"config\": {...}}} to run one.")
    # A task of a run: its run compensates (None). A standalone task: the new compensation task's id.
    result = store().compensate_task(task_id, action=action)
    return json_response(_compensation_answer(result, task_id), 202)


def _compensation_answer(result: Any, task_id: str) -> dict[str, Any]:
    if isinstance(result, str):
        return task_document(result)
    return task_document(task_id) if result is None else plain(result)
