"""The seed's scheduler endpoints: one-off scheduled tasks and recurring (cron) tasks."""

from __future__ import annotations

import importlib
import zoneinfo
from typing import Any

from flask import Blueprint, Response

from web.api import schemas
from web.api.context import store
from web.api.errors import ApiError
from web.api.operations import operation
from web.api.render import json_response, plain
from web.api.tasks import task_document
from web.api.timeparse import parse_time
from web.api.validation import json_body

bp = Blueprint("scheduler", __name__, url_prefix="/scheduler/tasks")


def _schedules() -> Any:
    """``engine.store_schedules`` when it is installed, else None."""
    try:
        return importlib.import_module("engine.store_schedules")
    except ImportError:
        return None


def _call(name: str, *args: Any, **kwargs: Any) -> Any:
    """Call the schedule-store function ``name`` on the store or in ``engine.store_schedules``."""
    function = getattr(store(), name, None)
    if function is None and (module := _schedules()) is not None:
        target = getattr(module, name, None)
        if target is not None:
            return target(store(), *args, **kwargs)
    if function is None:
        raise ApiError(503, "not_available", f"Scheduling is not available on this server ({name}).")
    return function(*args, **kwargs)


@bp.post("/scheduled")
@operation(
    "Schedule a task to run once at a given time",
    tag="scheduler", role="admin", body="ScheduledTask",
    responses={201: ("The scheduled task", "Task"), 400: ("Malformed body", "Error")},
    description="`scheduledAt` (or `run_at`) is ISO 8601; a time without an offset is taken as UTC.",
)
def create_scheduled() -> Response:
    body = json_body(schemas.SCHEDULED_TASK)
    run_at = parse_time(body.get("scheduledAt") or body["run_at"], "scheduledAt")
    payload = body.get("payload") or {}
    if hasattr(store(), "create_scheduled_task") or _has_schedules("create_scheduled_task"):
        created = _call("create_scheduled_task", body["type"], payload, run_at)
    else:
        created = store().create_task(body["type"], payload, max_attempts=body.get("max_attempts", 3), run_at=run_at)
    document = task_document(created) if isinstance(created, str) else plain(created)
    return json_response(document, 201)


@bp.post("/recurring")
@operation(
    "Create a recurring task from a cron expression",
    tag="scheduler", role="admin", body="RecurringTask",
    responses={201: ("The schedule", None), 400: ("Malformed body", "Error"),
               422: ("Bad cron expression or time zone", "Error")},
)
def create_recurring() -> Response:
    body = json_body(schemas.RECURRING_TASK)
    cron = body.get("cronExpression") or body["cron"]
    timezone = body.get("timezone", "UTC")
    _check_cron(cron)
    _check_timezone(timezone)
    created = _call("create_recurring_task", body["type"], body.get("payload") or {}, cron, timezone)
    return json_response(created if not isinstance(created, str) else {"id": created}, 201)


@bp.get("/scheduled")
@operation("Scheduled and recurring tasks", tag="scheduler", role="viewer",
           responses={200: ("The scheduled tasks", "ScheduledList")})
def list_scheduled() -> Response:
    return json_response({"tasks": list(_call("list_scheduled_tasks"))})


def _has_schedules(name: str) -> bool:
    module = _schedules()
    return module is not None and hasattr(module, name)


def _check_cron(cron: str) -> None:
    from croniter import croniter

    if len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise ApiError(422, "invalid_cron", f"{cron!r} is not a five-field cron expression (m h dom mon dow).")


def _check_timezone(name: str) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ApiError(422, "invalid_timezone", f"{name!r} is not a time zone like Europe/Berlin or UTC.") from None
