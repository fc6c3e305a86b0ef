"""The task API's scheduler endpoints: one-off scheduled tasks and recurring (cron) tasks.

Both are schedules (``engine.store.schedules``) that start a standalone task when they fire; the
scheduler process fires them, at most once per fire time.
"""

from __future__ import annotations

from flask import Blueprint, Response, url_for

from web.api import schemas
from web.api.context import services
from web.api.operations import operation
from web.api.render import json_response
from web.api.timeparse import parse_time
from web.api.validation import json_body

bp = Blueprint("scheduler", __name__, url_prefix="/scheduler/tasks")

INVALID = {400: ("Malformed body", "Error"), 422: ("Bad time, cron expression or time zone", "Error")}


def _created(schedule_id: str) -> Response:
    schedule = services().schedules.get(schedule_id)
    return json_response(schedule, 201, {"Location": url_for(".list_scheduled")})


@bp.post("/scheduled")
@operation(
    "Schedule a task to run once at a given time",
    tag="scheduler", role="admin", body="ScheduledTask",
    responses={201: ("The schedule, with its fire time", "Schedule"), **INVALID},
    description="`scheduledAt` (or `run_at`) is ISO 8601; a time without an offset is taken as UTC.",
)
def create_scheduled() -> Response:
    body = json_body(schemas.SCHEDULED_TASK)
    run_at = parse_time(body.get("scheduledAt") or body["run_at"], "scheduledAt")
    schedule_id = services().schedules.create_scheduled_task(body["type"], body.get("payload") or {}, run_at)
    return _created(schedule_id)


@bp.post("/recurring")
@operation(
    "Create a recurring task from a cron expression (m h dom mon dow) in a time zone",
    tag="scheduler", role="admin", body="RecurringTask",
    responses={201: ("The schedule, with its next fire times", "Schedule"), **INVALID},
)
def create_recurring() -> Response:
    body = json_body(schemas.RECURRING_TASK)
    cron = body.get("cronExpression") or body["cron"]
    schedule_id = services().schedules.create_recurring_task(
        body["type"], body.get("payload") or {}, cron, body.get("timezone", "UTC")
    )
    return _created(schedule_id)


@bp.get("/scheduled")
@operation("Scheduled and recurring tasks, soonest first", tag="scheduler", role="viewer",
           responses={200: ("The scheduled tasks", "ScheduledList")})
def list_scheduled() -> Response:
    return json_response({"tasks": services().schedules.list_scheduled_tasks()})
